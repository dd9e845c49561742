//! Health, readiness, metrics, manifests and the shared HTTP behaviour of every route.

use pipedrive_whatsapp::manifest::{self, Extension};
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_a_migrated_database() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["reachable"], true);
    assert_eq!(
        body["database"]["migrations_applied"],
        body["database"]["migrations_expected"]
    );
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.db)
        .await
        .unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    app.get("/healthz").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains(r#"route="/healthz""#)
            && l.contains(r#"status="200""#)),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn manifests_are_served_as_the_cli_renders_them() {
    let app = spawn_app().await;
    for (path, extension) in [
        ("/manifests/messaging.json", Extension::Messaging),
        ("/manifests/video-calling.json", Extension::Video),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200);
        let served: Value = response.json().await.unwrap();
        let expected = manifest::render(extension, &app.config.public_url, &app.config.pipedrive.client_id);
        assert_eq!(served, expected);
        let text = served.to_string();
        assert!(text.contains(&app.address), "{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    assert_error(app.get("/no/such/route").await, 404, "NOT_FOUND").await;
    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_propagated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    app.stop().await;
}

#[tokio::test]
async fn starting_up_calls_neither_pipedrive_nor_meta() {
    let app = spawn_app().await;
    app.get("/readyz").await;
    assert!(app.pipedrive.received_requests().await.unwrap().is_empty());
    assert!(app.graph.received_requests().await.unwrap().is_empty());
    app.stop().await;
}
