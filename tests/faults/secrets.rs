//! A full run at debug level (handshake, install, webhooks, media, deliveries, a token refresh,
//! postMessage, signed links, refused requests) writes none of the deployment's secrets to its
//! logs.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deployment::{
    APP_SECRET, Deployment, PHONE_NUMBER_ID, SECRET_KEY, VERIFY_TOKEN, eventually, inbound, message_from,
};
use crate::fake_graph::ACCESS_TOKEN;
use crate::fake_pipedrive::{ACCESS_1, ACCESS_2, CLIENT_ID, CLIENT_SECRET, CODE, REFRESH_1, REFRESH_2};
use crate::ledger::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_debug_level_logs_no_secret() {
    let mut deployment = Deployment::new().await;
    deployment.set("RUST_LOG", "debug");
    let mut service = deployment.start().await;
    let client = &deployment.client;

    // Meta's handshake carries the verify token in the query string.
    let handshake = client
        .get(service.url(&format!(
            "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4711"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), 200);
    // Refused requests: a forged webhook, a wrong Basic password.
    let forged = client
        .post(service.url("/webhooks/whatsapp"))
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let wrong = client
        .get(service.url(&format!("/api/channels/{PHONE_NUMBER_ID}/conversations")))
        .basic_auth(CLIENT_ID, Some("not-the-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Install (authorization code, tokens), then a text and a photo (media download).
    deployment.install(&service).await;
    assert_eq!(deployment.post_webhook(&service, &inbound(0, 0)).await, Some(200));
    assert_eq!(
        deployment
            .post_webhook(
                &service,
                &message_from(
                    0,
                    "wamid.IMG",
                    "image",
                    json!({"id": "media-1", "mime_type": "image/png", "caption": "photo"}),
                )
            )
            .await,
        Some(200)
    );
    eventually(Duration::from_secs(20), "text and photo delivered", || async {
        (deployment.pipedrive.accepted().len() >= 2).then_some(())
    })
    .await;
    // An expired token is refreshed with the refresh token.
    sqlx::query("UPDATE installations SET token_expires_at = now() - interval '1 minute'")
        .execute(&deployment.db)
        .await
        .unwrap();
    assert_eq!(deployment.post_webhook(&service, &inbound(0, 1)).await, Some(200));
    eventually(Duration::from_secs(20), "delivered after a refresh", || async {
        (deployment.pipedrive.accepted().len() >= 3 && deployment.pipedrive.refreshes() == 1).then_some(())
    })
    .await;

    // Pipedrive reads the photo's message (a signed link) and sends a reply.
    let photo: Uuid = sqlx::query_scalar("SELECT id FROM messages WHERE wamid = 'wamid.IMG'")
        .fetch_one(&deployment.db)
        .await
        .unwrap();
    let message: Value = client
        .get(service.url(&format!("/api/channels/{PHONE_NUMBER_ID}/messages/{photo}")))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link = message["attachments"][0]["url"]
        .as_str()
        .expect("a signed link")
        .to_string();
    let signature = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 200);
    let sent = deployment
        .reply(&service, 0, "Thanks!")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);

    service.terminate();
    service
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the service stops");
    let logs = service.logs().join("\n");
    assert!(logs.contains(r#""level":"DEBUG""#), "debug logging was on");
    assert!(logs.contains("access token refreshed"), "the refresh happened");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let secrets = [
        ("WhatsApp access token", ACCESS_TOKEN),
        ("Meta app secret", APP_SECRET),
        ("webhook verify token", VERIFY_TOKEN),
        ("Pipedrive client secret", CLIENT_SECRET),
        ("Basic credentials", basic.as_str()),
        ("Pipedrive access token", ACCESS_1),
        ("refreshed access token", ACCESS_2),
        ("refresh token", REFRESH_1),
        ("rotated refresh token", REFRESH_2),
        ("OAuth authorization code", CODE),
        ("SECRET_KEY", SECRET_KEY),
        ("media link signature", signature.as_str()),
    ];
    let leaked: Vec<&str> = secrets
        .iter()
        .filter(|(_, secret)| logs.contains(secret))
        .map(|(name, _)| *name)
        .collect();
    report(
        "secrets in logs",
        format_args!(
            "{} log lines at debug level scanned for {} secrets: leaked {leaked:?}",
            logs.lines().count(),
            secrets.len()
        ),
    );
    assert!(leaked.is_empty(), "secrets in the logs: {leaked:?}");
}
