//! Tokens in use: the Pipedrive client refreshes before expiry and after a 401, single-flight
//! in a process and across replicas; a refused refresh token parks work until re-install.

use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use pipedrive_whatsapp::config::Config;
use pipedrive_whatsapp::pipedrive::install;
use pipedrive_whatsapp::pipedrive::{PipedriveClient, PipedriveError};
use pipedrive_whatsapp::queue::{self, Handler, Job, JobError, NewJob, Registry};
use pipedrive_whatsapp::state::AppState;
use pipedrive_whatsapp::store;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use wiremock::matchers::{bearer_token, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, eventually, fast_workers, fresh_database, spawn_app, test_env};
use crate::pipedrive_fake::*;

/// Answers `grant_type=refresh_token` for `old` with new tokens, after `delay`.
async fn mount_refresh(
    server: &MockServer,
    old: &str,
    access: &str,
    refresh: &str,
    delay: Duration,
    times: u64,
) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains(format!("refresh_token={}", form(old))))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body(server, access, refresh, "base,messengers-integration"))
                .set_delay(delay),
        )
        .expect(times)
        .mount(server)
        .await;
}

/// Pipedrive's answer to a dead refresh token (not the RFC 6749 shape).
async fn mount_dead_refresh_token(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "success": false, "message": "Invalid grant: refresh_token is invalid"
        })))
        .expect(1)
        .mount(server)
        .await;
}

/// `GET /api/v1/deals` answers 200 for `token`.
async fn mount_deals(server: &MockServer, token: &str) {
    Mock::given(method("GET"))
        .and(path("/api/v1/deals"))
        .and(bearer_token(token))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true, "data": []}))
                .insert_header("x-ratelimit-remaining", "79")
                .insert_header("x-ratelimit-reset", "2"),
        )
        .mount(server)
        .await;
}

async fn deals(client: &PipedriveClient, id: Uuid) -> Result<Value, PipedriveError> {
    client
        .request(id, Method::GET, "/api/v1/deals", None)
        .await
        .map(|r| r.body)
}

async fn stored_tokens(app: &TestApp, id: Uuid) -> (String, String, bool) {
    let (access, refresh, fresh): (Vec<u8>, Vec<u8>, bool) = sqlx::query_as(
        "SELECT access_token_enc, refresh_token_enc, token_expires_at > now() + interval '50 minutes'
         FROM installations WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let keys = pipedrive_whatsapp::crypto::Keys::new(&app.config.secret_key);
    (
        keys.open(&access).unwrap().expose_secret().to_string(),
        keys.open(&refresh).unwrap().expose_secret().to_string(),
        fresh,
    )
}

async fn status(db: &sqlx::PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM installations WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_rotated_refresh_token_kept() {
    let app = spawn_app().await;
    let id = installed(&app).await;
    expire_token(&app, id).await;
    mount_refresh(&app.pipedrive, REFRESH_1, ACCESS_2, REFRESH_2, Duration::ZERO, 1).await;
    mount_deals(&app.pipedrive, ACCESS_2).await;
    let client = client(&app);
    let response = client
        .request(id, Method::GET, "/api/v1/deals", None)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body["success"], true);
    assert_eq!(response.rate_limit.remaining, Some(79));
    assert_eq!(response.rate_limit.reset, Some(Duration::from_secs(2)));
    assert_eq!(
        stored_tokens(&app, id).await,
        (ACCESS_2.to_string(), REFRESH_2.to_string(), true)
    );
    // The fresh token is used as it is: no second refresh.
    deals(&client, id).await.unwrap();
    app.pipedrive.verify().await;
    app.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_call_retried() {
    let app = spawn_app().await;
    let id = installed(&app).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/deals"))
        .and(bearer_token(ACCESS_1))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "success": false, "error": "Invalid token: access_token is invalid"
        })))
        .mount(&app.pipedrive)
        .await;
    mount_deals(&app.pipedrive, ACCESS_2).await;
    mount_refresh(&app.pipedrive, REFRESH_1, ACCESS_2, REFRESH_2, Duration::ZERO, 1).await;
    deals(&client(&app), id).await.unwrap();
    assert_eq!(stored_tokens(&app, id).await.0, ACCESS_2);
    app.pipedrive.verify().await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_refused_even_after_refresh_means_reauth() {
    let app = spawn_app().await;
    let id = installed(&app).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/deals"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&app.pipedrive)
        .await;
    mount_refresh(&app.pipedrive, REFRESH_1, ACCESS_2, REFRESH_2, Duration::ZERO, 1).await;
    let error = deals(&client(&app), id).await.unwrap_err();
    assert!(matches!(error, PipedriveError::NeedsReauth { installation_id, .. } if installation_id == id));
    assert_eq!(status(&app.db, id).await, "needs_reauth");
    app.pipedrive.verify().await;
    app.stop().await;
}

/// An installed app whose token has expired; the refresh takes 300 ms, wide enough for races.
async fn expiring_with_a_slow_refresh() -> (TestApp, Uuid) {
    let app = spawn_app().await;
    let id = installed(&app).await;
    expire_token(&app, id).await;
    let delay = Duration::from_millis(300);
    mount_refresh(&app.pipedrive, REFRESH_1, ACCESS_2, REFRESH_2, delay, 1).await;
    mount_deals(&app.pipedrive, ACCESS_2).await;
    (app, id)
}

#[tokio::test]
async fn twenty_concurrent_calls_during_expiry_share_exactly_one_refresh() {
    let (app, id) = expiring_with_a_slow_refresh().await;
    let client = client(&app);
    let results = join_all((0..20).map(|_| deals(&client, id))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    app.pipedrive.verify().await;
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_never_refresh_the_same_installation_twice() {
    let (app, id) = expiring_with_a_slow_refresh().await;
    let (one, two) = (client(&app), client(&app));
    let calls = (0..10).flat_map(|_| [deals(&one, id), deals(&two, id)]);
    let results = join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(stored_tokens(&app, id).await.1, REFRESH_2);
    app.pipedrive.verify().await;
    app.stop().await;
}

#[tokio::test]
async fn failures_are_told_apart() {
    let app = spawn_app().await;
    let id = installed(&app).await;
    for (route, status, header) in [
        ("/api/v1/limited", 429, Some(("retry-after", "7"))),
        ("/api/v1/channels/123", 410, None),
        ("/api/v1/broken", 503, None),
        ("/api/v1/invalid", 400, None),
    ] {
        let mut template = ResponseTemplate::new(status)
            .set_body_json(json!({"success": false, "error": "field name is required"}));
        if let Some((name, value)) = header {
            template = template.insert_header(name, value);
        }
        Mock::given(path(route))
            .respond_with(template)
            .mount(&app.pipedrive)
            .await;
    }
    let client = client(&app);
    let call = |path: &'static str| client.request(id, Method::GET, path, None);
    assert!(matches!(
        call("/api/v1/limited").await,
        Err(PipedriveError::RateLimited { after }) if after == Duration::from_secs(7)
    ));
    assert!(matches!(
        call("/api/v1/channels/123").await,
        Err(PipedriveError::Gone { status: 410 })
    ));
    assert!(matches!(
        call("/api/v1/broken").await,
        Err(PipedriveError::Server { status: 503, .. })
    ));
    assert!(matches!(
        call("/api/v1/invalid").await,
        Err(PipedriveError::Rejected { status: 400, ref message, .. }) if message == "field name is required"
    ));
    let unknown = client
        .request(Uuid::now_v7(), Method::GET, "/api/v1/deals", None)
        .await;
    assert!(matches!(unknown, Err(PipedriveError::NeedsReauth { .. })));
    app.stop().await;
}

#[tokio::test]
async fn readyz_names_the_installations_that_need_reauth() {
    let app = spawn_app().await;
    let id = installed(&app).await;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["installations"], json!({"active": 1, "needs_reauth": []}));

    expire_token(&app, id).await;
    mount_dead_refresh_token(&app.pipedrive).await;
    let client = client(&app);
    assert!(matches!(
        deals(&client, id).await,
        Err(PipedriveError::NeedsReauth { .. })
    ));
    // Later calls fail fast, without spending the dead refresh token again.
    assert!(matches!(
        deals(&client, id).await,
        Err(PipedriveError::NeedsReauth { .. })
    ));
    let response = app.get("/readyz").await;
    assert_eq!(
        response.status(),
        200,
        "one installation needing reauth is not an outage"
    );
    let ready: Value = response.json().await.unwrap();
    assert_eq!(
        ready["installations"],
        json!({"active": 0, "needs_reauth": [{"company_id": COMPANY_ID, "user_id": USER_ID}]})
    );
    app.pipedrive.verify().await;
    app.stop().await;
}

/// Posts a note as the installation named in the payload.
struct PostNote(PipedriveClient);

impl Handler for PostNote {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let id: Uuid = serde_json::from_value(job.payload["installation_id"].clone()).unwrap();
            let note = json!({"content": job.payload["content"]});
            self.0
                .request(id, Method::POST, "/api/v1/notes", Some(&note))
                .await?;
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_refused_refresh_token_parks_work_until_the_install_is_run_again() {
    // The real install and queue on a database of this test's own, so that only this test's
    // workers claim the job.
    let pipedrive = MockServer::start().await;
    let graph = MockServer::start().await;
    let database_url = fresh_database().await;
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    store::migrate(&db).await.unwrap();
    let env = test_env(
        &database_url,
        "http://127.0.0.1:9",
        &pipedrive.uri(),
        &graph.uri(),
    );
    let config = Config::load(&env).unwrap();
    store::channels::ensure_configured(&db, &config.whatsapp.phone_number_ids)
        .await
        .unwrap();
    let state = AppState::new(
        config,
        db.clone(),
        pipedrive_whatsapp::queue::RetryPolicy::default(),
    );
    mount_code_exchange(
        &pipedrive,
        CODE,
        ACCESS_1,
        REFRESH_1,
        "base,messengers-integration",
    )
    .await;
    mount_users_me(&pipedrive).await;
    mount_graph_numbers(&graph).await;
    mount_channel_creation(&pipedrive).await;
    let id = install::complete(&state, CODE).await.unwrap().installation_id;

    sqlx::query("UPDATE installations SET token_expires_at = now() WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    mount_dead_refresh_token(&pipedrive).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/notes"))
        .and(bearer_token(ACCESS_2))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"success": true, "data": {"id": 1}})))
        .expect(1)
        .mount(&pipedrive)
        .await;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut registry = Registry::new();
    registry.register("test.post_note", PostNote(state.pipedrive.clone()));
    queue::spawn(db.clone(), registry, fast_workers(), shutdown.clone(), &tracker);
    let mut conn = db.acquire().await.unwrap();
    let payload = json!({"installation_id": id, "content": "Call back tomorrow"});
    let job = queue::enqueue(&mut conn, NewJob::new("test.post_note", &payload))
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let job_state = |wanted: &'static str| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move {
                let row: Option<(String, Option<String>)> =
                    sqlx::query_as("SELECT state, parked_on FROM jobs WHERE id = $1")
                        .bind(job)
                        .fetch_optional(&db)
                        .await
                        .unwrap();
                // A job without a dedup key leaves no row once it succeeded.
                let (state, parked_on) = row.unwrap_or(("done".to_string(), None));
                (state == wanted).then_some(parked_on)
            }
        }
    };
    let parked_on = eventually(Duration::from_secs(10), job_state("parked")).await;
    assert_eq!(parked_on, Some(format!("installation:{id}")));
    assert_eq!(status(&db, id).await, "needs_reauth");

    mount_code_exchange(
        &pipedrive,
        "code-2",
        ACCESS_2,
        REFRESH_2,
        "base,messengers-integration",
    )
    .await;
    let report = install::complete(&state, "code-2").await.unwrap();
    assert_eq!(report.installation_id, id);
    assert!(report.healed);
    eventually(Duration::from_secs(10), job_state("done")).await;
    assert_eq!(status(&db, id).await, "active");
    pipedrive.verify().await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}
