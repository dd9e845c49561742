//! Inbound media: downloaded from the (fake) Graph API with the token, checked, stored in
//! PostgreSQL and served back through expiring signed links.

use std::time::Duration;

use chrono::Utc;
use pipedrive_whatsapp::config::SecretKey;
use pipedrive_whatsapp::crypto::Keys;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    ACCESS_TOKEN, PHONE_NUMBER_IDS, SECRET_KEY, TestApp, eventually, inbound_webhook, spawn_app,
};

const CUSTOMER: &str = "5511987654321";

fn image_message(wamid: &str, media_id: &str) -> serde_json::Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": "1763800000", "type": "image",
        "image": {"id": media_id, "mime_type": "image/jpeg", "sha256": "opaque", "caption": "broken part"}})
}

/// The Graph API describes `media_id` and serves `bytes` (announcing `announced_sha` if given).
async fn serve_media(app: &TestApp, media_id: &str, bytes: &[u8], announced_sha: Option<String>) {
    let sha = announced_sha.unwrap_or_else(|| hex::encode(Sha256::digest(bytes)));
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{media_id}")))
        .and(header("authorization", format!("Bearer {ACCESS_TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp", "id": media_id, "mime_type": "image/jpeg",
            "url": format!("{}/cdn/{media_id}", app.graph.uri()), "sha256": sha, "file_size": bytes.len(),
        })))
        .mount(&app.graph)
        .await;
}

async fn mount_cdn(app: &TestApp, media_id: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/cdn/{media_id}")))
        .and(header("authorization", format!("Bearer {ACCESS_TOKEN}").as_str()))
        .respond_with(response)
        .mount(&app.graph)
        .await;
}

async fn attachment(db: &PgPool) -> (Uuid, String, Option<String>) {
    sqlx::query_as("SELECT id, status, error FROM attachments")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn wait_status(db: &PgPool, wanted: &str) -> Uuid {
    eventually(Duration::from_secs(15), || async {
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM attachments")
            .fetch_optional(db)
            .await
            .unwrap()
            .filter(|(_, s)| s == wanted)
            .map(|(id, _)| id)
    })
    .await
}

fn keys() -> Keys {
    Keys::new(&SecretKey::parse(SECRET_KEY).unwrap())
}

#[tokio::test]
async fn media_is_downloaded_checked_stored_and_served_identically() {
    let app = spawn_app().await;
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    serve_media(&app, "m-1", &bytes, None).await;
    mount_cdn(
        &app,
        "m-1",
        ResponseTemplate::new(200).set_body_bytes(bytes.clone()),
    )
    .await;
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![image_message("wamid.IMG", "m-1")],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    let id = wait_status(&app.db, "stored").await;

    let (size, sha): (i64, String) =
        sqlx::query_as("SELECT size_bytes, sha256 FROM attachments WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        (size, sha),
        (bytes.len() as i64, hex::encode(Sha256::digest(&bytes)))
    );

    let url = pipedrive_whatsapp::media::signed_url(&keys(), &app.config.public_url, id, 60);
    let served = app.client.get(&url).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/jpeg");
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.unwrap().to_vec(), bytes);
    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn tampered_unsigned_and_expired_links_are_refused() {
    let app = spawn_app().await;
    serve_media(&app, "m-2", b"secret file", None).await;
    mount_cdn(
        &app,
        "m-2",
        ResponseTemplate::new(200).set_body_bytes(b"secret file".to_vec()),
    )
    .await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![image_message("wamid.IMG2", "m-2")],
    ))
    .await;
    let id = wait_status(&app.db, "stored").await;
    let url = pipedrive_whatsapp::media::signed_url(&keys(), &app.config.public_url, id, 60);
    let other = Uuid::now_v7();
    let expired_query = keys().sign_link(&format!("/media/{id}"), Utc::now().timestamp() - 1);
    for bad in [
        url.replace(&id.to_string(), &other.to_string()),
        format!("{}x", url),
        url.split('?').next().unwrap().to_string(),
        format!("{}/media/{id}?{expired_query}", app.address),
        format!(
            "{}/media/..%2F..%2Fetc%2Fpasswd?exp=9999999999&sig=abc",
            app.address
        ),
    ] {
        let response = app.client.get(&bad).send().await.unwrap();
        assert_eq!(response.status(), 403, "{bad}");
        assert!(!response.text().await.unwrap().contains("secret file"));
    }
    let head = app
        .client
        .head(format!("{}/media/{id}?{expired_query}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 403, "HEAD reflects expiry");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_cdn_link_is_retried_with_a_fresh_one() {
    let app = spawn_app().await;
    serve_media(&app, "m-3", b"late bytes", None).await;
    Mock::given(method("GET"))
        .and(path("/cdn/m-3"))
        .respond_with(ResponseTemplate::new(404))
        .up_to_n_times(1)
        .mount(&app.graph)
        .await;
    mount_cdn(
        &app,
        "m-3",
        ResponseTemplate::new(200).set_body_bytes(b"late bytes".to_vec()),
    )
    .await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![image_message("wamid.IMG3", "m-3")],
    ))
    .await;
    wait_status(&app.db, "stored").await;
    let lookups = app
        .graph
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v25.0/m-3")
        .count();
    assert_eq!(lookups, 2, "a new URL was asked for after the first one failed");
    app.stop().await;
}

#[tokio::test]
async fn a_checksum_mismatch_is_retried_then_flagged_and_healed_by_a_later_success() {
    let app = spawn_app().await;
    serve_media(
        &app,
        "m-4",
        b"real bytes",
        Some(hex::encode(Sha256::digest(b"other bytes"))),
    )
    .await;
    mount_cdn(
        &app,
        "m-4",
        ResponseTemplate::new(200).set_body_bytes(b"real bytes".to_vec()),
    )
    .await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![image_message("wamid.IMG4", "m-4")],
    ))
    .await;
    wait_status(&app.db, "failed").await;
    let (_, _, error) = attachment(&app.db).await;
    assert!(error.unwrap().contains("sha256 mismatch"));

    // Meta fixes its side; the background retry stores the file after all.
    app.graph.reset().await;
    serve_media(&app, "m-4", b"real bytes", None).await;
    mount_cdn(
        &app,
        "m-4",
        ResponseTemplate::new(200).set_body_bytes(b"real bytes".to_vec()),
    )
    .await;
    wait_status(&app.db, "stored").await;
    app.stop().await;
}

#[tokio::test]
async fn media_whatsapp_no_longer_has_is_marked_failed_at_once() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v25.0/m-5"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"error": {"code": 100,
            "message": "Unsupported get request", "type": "GraphMethodException"}})),
        )
        .mount(&app.graph)
        .await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![image_message("wamid.IMG5", "m-5")],
    ))
    .await;
    wait_status(&app.db, "failed").await;
    let lookups = app.graph.received_requests().await.unwrap().len();
    assert_eq!(lookups, 1, "no pointless retries");
    app.stop().await;
}
