//! Structured logging: JSON lines for log collectors, or a readable format for terminals.
//! Which events are written comes from `RUST_LOG` (default `info`).

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// A log filter: a default level and `target=level` directives, e.g.
/// `info,pipedrive_whatsapp=debug`. Decided once per call site: the filter that could also
/// match spans by name and field checked, under a lock, every span entered, and sqlx enters
/// the request's span at every row it reads (4–6 % of the machine in the reads' profiles).
#[derive(Clone, Debug)]
pub struct LogFilter {
    targets: Targets,
    text: String,
}

impl FromStr for LogFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let targets = text.parse().map_err(|e| format!("not a log filter: {e}"))?;
        Ok(Self {
            targets,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Installs the global subscriber; later calls (tests spawning several apps) are no-ops.
pub fn init(format: LogFormat, filter: &LogFilter) {
    let registry = tracing_subscriber::registry().with(filter.targets.clone());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(layer.compact()).try_init(),
    };
}
