//! Start-up and shutdown: connect and migrate, bind, serve HTTP, run the job workers, and stop
//! cleanly on SIGTERM/SIGINT.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::queue::{self, Registry, WorkerConfig};
use crate::state::AppState;
use crate::store;

/// How long background tasks may take to wind down after the HTTP server has stopped.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(20);

/// A service that is bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Application {
    /// Connects, migrates and binds `LISTEN_ADDR`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("LISTEN_ADDR: cannot bind {}", config.listen_addr))?;
        let workers = WorkerConfig::from(&config.queue);
        Self::build_with_listener(config, listener, workers).await
    }

    /// Like [`Application::build`] on an already bound listener (tests bind port 0).
    pub async fn build_with_listener(
        config: Config,
        listener: TcpListener,
        workers: WorkerConfig,
    ) -> anyhow::Result<Self> {
        let db = store::pool(&config.database_url, config.database_max_connections)
            .context("DATABASE_URL: invalid connection string")?;
        store::wait_until_reachable(&db, 30)
            .await
            .context("DATABASE_URL: database not reachable")?;
        store::migrate(&db).await.context("applying migrations")?;
        store::channels::ensure_configured(&db, &config.whatsapp.phone_number_ids)
            .await
            .context("registering configured WhatsApp numbers")?;
        // Work parked on a rejected WhatsApp token may succeed with this start's configuration.
        let resumed = queue::unpark(&db, crate::whatsapp::graph::TOKEN_PARK_TAG).await?;
        if resumed > 0 {
            tracing::info!(resumed, "resuming jobs parked on the WhatsApp access token");
        }

        // Deliveries parked for the CRM timeline hand their changes to it now, in order.
        let resumed = crate::timeline::resume_parked(&db).await?;
        if resumed > 0 {
            tracing::info!(resumed, "replaying deliveries parked for the CRM timeline");
        }

        let state = AppState::new(config, db, workers.retry);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let handlers = job_handlers(&state, workers.debounce);
        let dispatch = queue::spawn(state.db.clone(), handlers, workers, shutdown.clone(), &tasks);
        crate::whatsapp::ingest::spawn(
            state.db.clone(),
            state.inbox.clone(),
            state.ingest_wake.clone(),
            dispatch,
            shutdown.clone(),
            &tasks,
        );
        crate::whatsapp::retention::spawn(state.db.clone(), state.config.retention, shutdown.clone(), &tasks);
        queue::retention::spawn(state.db.clone(), shutdown.clone(), &tasks);
        tasks.spawn(metrics_upkeep(state.clone(), shutdown.clone()));
        Ok(Self {
            listener,
            state,
            shutdown,
            tasks,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Cancel it to stop the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The state shared by handlers and workers.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token is cancelled: stops accepting connections, lets in-flight
    /// requests finish, then lets the webhook inbox drain and workers finish or release their
    /// jobs.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            shutdown,
            tasks,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, public_url = %state.config.public_url, "serving");
        let inbox = state.inbox.clone();
        // As a make-service a `Router` copies its whole route table for every connection it
        // accepts (60 KB of memory each here); `into_make_service` shares one among them.
        let router = crate::http::router(state).into_make_service();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("HTTP server failed")?;
        shutdown.cancel();
        tasks.close();
        // Every request has been answered by now; bodies still queued in the inbox are those of
        // requests whose client hung up, and are stored all the same.
        let stopped = async {
            tokio::join!(inbox.close(), tasks.wait());
        };
        if tokio::time::timeout(SHUTDOWN_BOUND, stopped).await.is_err() {
            tracing::warn!("background tasks did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every job kind the service runs; `debounce` collects changes of a CRM timeline note.
fn job_handlers(state: &AppState, debounce: Duration) -> Registry {
    let mut registry = Registry::new();
    registry
        .register(
            crate::media::download::KIND,
            crate::media::download::Download {
                db: state.db.clone(),
                graph: state.graph.clone(),
                graph_host: state.config.whatsapp.graph_url.host_str().map(str::to_string),
            },
        )
        .register(
            crate::pipedrive::delivery::KIND,
            crate::pipedrive::delivery::Deliver {
                db: state.db.clone(),
                pipedrive: state.pipedrive.clone(),
                keys: state.keys.clone(),
                public_url: state.config.public_url.clone(),
                sink: state.config.timeline.sink,
                debounce,
            },
        )
        .register(
            crate::timeline::KIND,
            crate::timeline::WriteNotes {
                writer: crate::timeline::Writer::new(state),
                debounce,
            },
        )
        .register(
            crate::whatsapp::send::KIND,
            crate::whatsapp::send::Sender {
                db: state.db.clone(),
                graph: state.graph.clone(),
            },
        )
        .register(
            crate::whatsapp::inbound::APPLY_STATUS_KIND,
            crate::whatsapp::inbound::ApplyStatus { db: state.db.clone() },
        );
    registry
}

/// Histograms are aggregated periodically rather than on each scrape, bounding memory.
async fn metrics_upkeep(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => state.metrics.run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
