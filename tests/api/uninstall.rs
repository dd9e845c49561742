//! Pipedrive's notices about installations (uninstall, sharing), `deleteChannelById`, and the
//! operator commands `channels list|delete` and `purge-company`.

use std::process::Command;

use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{bearer_token, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, PHONE_NUMBER_IDS, TestApp, assert_error, spawn_app, test_env,
};
use crate::pipedrive_fake::*;

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

async fn notice(
    app: &TestApp,
    method: reqwest::Method,
    auth: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url("/auth/pipedrive/callback"))
        .json(&body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

fn uninstall_body() -> Value {
    json!({"client_id": CLIENT_ID, "company_id": COMPANY_ID, "user_id": USER_ID,
           "timestamp": "2026-03-04T10:21:07.000Z"})
}

/// A conversation with one message on the first number, as history that must survive.
async fn add_history(app: &TestApp) -> Uuid {
    let channel: Uuid = sqlx::query_scalar("SELECT id FROM channels WHERE phone_number_id = $1")
        .bind(PHONE_NUMBER_IDS[0])
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (contact, conversation, message) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO contacts (id, wa_id) VALUES ($1, '4915112345678')")
        .bind(contact)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO conversations (id, channel_id, contact_id) VALUES ($1, $2, $3)")
        .bind(conversation)
        .bind(channel)
        .bind(contact)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, channel_id, direction, sender_id, kind, body, status, sent_at)
         VALUES ($1, $2, $3, 'inbound', 'wa_4915112345678', 'text', 'Hello', 'delivered', now())",
    )
    .bind(message)
    .bind(conversation)
    .bind(channel)
    .execute(&app.db)
    .await
    .unwrap();
    conversation
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn uninstall_deletes_tokens_and_disables_channels_but_keeps_history() {
    let app = spawn_app().await;
    let id = installed(&app).await;
    add_history(&app).await;
    sqlx::query("INSERT INTO video_links (id, installation_id, company_id, user_id) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::new_v4())
        .bind(id)
        .bind(COMPANY_ID)
        .bind(USER_ID)
        .execute(&app.db)
        .await
        .unwrap();

    let response = notice(
        &app,
        reqwest::Method::DELETE,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        uninstall_body(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"success": true}));
    let (status, access, refresh, uninstalled): (String, Option<Vec<u8>>, Option<Vec<u8>>, bool) = sqlx::query_as(
        "SELECT status, access_token_enc, refresh_token_enc, uninstalled_at IS NOT NULL FROM installations",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), access, refresh, uninstalled),
        ("uninstalled", None, None, true)
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM channels WHERE mode <> 'disabled'").await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM video_links WHERE removed_at IS NULL").await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM messages").await,
        1,
        "history stays"
    );

    // Work for it now waits for a re-install instead of calling Pipedrive.
    let result = client(&app)
        .request(id, reqwest::Method::GET, "/api/v1/deals", None)
        .await;
    assert!(matches!(
        result,
        Err(pipedrive_whatsapp::pipedrive::PipedriveError::NeedsReauth { .. })
    ));
    // A repeated notice is harmless.
    let again = notice(
        &app,
        reqwest::Method::DELETE,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        uninstall_body(),
    )
    .await;
    assert_eq!(again.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn uninstall_with_wrong_credentials_changes_nothing() {
    let app = spawn_app().await;
    installed(&app).await;
    for auth in [
        Some(basic(CLIENT_ID, "wrong-secret")),
        Some(basic("other", CLIENT_SECRET)),
        None,
    ] {
        let response = notice(&app, reqwest::Method::DELETE, auth.as_deref(), uninstall_body()).await;
        assert_error(response, 401, "UNAUTHORIZED").await;
    }
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM installations WHERE status = 'active' AND access_token_enc IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM channels WHERE mode = 'inbox'").await,
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn uninstall_of_an_unknown_company_is_acknowledged_and_bad_bodies_named() {
    let app = spawn_app().await;
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let unknown = json!({"client_id": CLIENT_ID, "company_id": "999", "user_id": 1, "timestamp": "x"});
    let response = notice(&app, reqwest::Method::DELETE, Some(&auth), unknown).await;
    assert_eq!(response.status(), 200);
    let response = notice(&app, reqwest::Method::DELETE, Some(&auth), json!({"user_id": 1})).await;
    let message = assert_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("company_id"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn the_sharing_state_is_recorded() {
    let app = spawn_app().await;
    installed(&app).await;
    let shared = json!({"company_id": COMPANY_ID, "user_id": USER_ID, "isShared": true});
    let response = notice(
        &app,
        reqwest::Method::POST,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        shared.clone(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        count(&app, "SELECT count(*) FROM installations WHERE is_shared").await,
        1
    );
    let response = notice(
        &app,
        reqwest::Method::POST,
        Some(&basic(CLIENT_ID, "nope")),
        json!({
        "company_id": COMPANY_ID, "user_id": USER_ID, "isShared": false}),
    )
    .await;
    assert_error(response, 401, "UNAUTHORIZED").await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM installations WHERE is_shared").await,
        1
    );
    // Pipedrive does not document credentials on this call: unauthenticated notices count too.
    let private = json!({"company_id": COMPANY_ID, "user_id": USER_ID, "isShared": false});
    assert_eq!(
        notice(&app, reqwest::Method::POST, None, private).await.status(),
        200
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM installations WHERE is_shared").await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn delete_channel_by_id_disables_the_channel() {
    let app = spawn_app().await;
    installed(&app).await;
    let url = app.url(&format!("/api/channels/{}", PHONE_NUMBER_IDS[1]));
    let response = app.client.delete(&url).send().await.unwrap();
    assert_error(response, 401, "UNAUTHORIZED").await;
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let response = app
        .client
        .delete(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"success": true}));
    let modes: Vec<String> = sqlx::query_scalar("SELECT mode FROM channels ORDER BY phone_number_id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(modes, ["inbox", "disabled"]);
    let response = app
        .client
        .delete(app.url("/api/channels/404404"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NOT_FOUND").await;
    app.stop().await;
}

/// Runs the binary against the app's database and fakes.
fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let env = test_env(
        app.config.database_url.expose_secret(),
        &app.address,
        &app.pipedrive.uri(),
        &app.graph.uri(),
    );
    Command::new(env!("CARGO_BIN_EXE_pipedrive-whatsapp"))
        .args(args)
        .env_clear()
        .envs(&env)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

#[tokio::test]
async fn channels_are_listed_and_deleted_from_the_command_line() {
    let app = spawn_app().await;
    installed(&app).await;
    let out = cli(&app, &["channels", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    for expected in [
        PHONE_NUMBER_IDS[0],
        DISPLAY_NUMBERS[1],
        "inbox",
        &channel_id(PHONE_NUMBER_IDS[0]),
        &COMPANY_ID.to_string(),
    ] {
        assert!(listing.contains(expected), "{expected} missing: {listing}");
    }

    Mock::given(method("DELETE"))
        .and(path(format!("/api/v1/channels/{}", PHONE_NUMBER_IDS[0])))
        .and(bearer_token(ACCESS_1))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .expect(1)
        .mount(&app.pipedrive)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/api/v1/channels/{}", PHONE_NUMBER_IDS[1])))
        .respond_with(ResponseTemplate::new(410))
        .expect(1)
        .mount(&app.pipedrive)
        .await;
    let out = cli(&app, &["channels", "delete", PHONE_NUMBER_IDS[0]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted in Pipedrive"));
    let out = cli(&app, &["channels", "delete", PHONE_NUMBER_IDS[1]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("retired"));
    assert_eq!(
        count(&app, "SELECT count(*) FROM channels WHERE mode = 'disabled'").await,
        2
    );
    let out = cli(&app, &["channels", "delete", "123"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel has phone number id 123"));
    app.pipedrive.verify().await;
    app.stop().await;
}

#[tokio::test]
async fn purge_company_asks_for_confirmation_then_deletes_its_data() {
    let app = spawn_app().await;
    installed(&app).await;
    add_history(&app).await;
    let company = COMPANY_ID.to_string();
    let out = cli(&app, &["purge-company", &company]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(
        count(&app, "SELECT count(*) FROM messages").await,
        1,
        "nothing deleted unconfirmed"
    );

    let out = cli(&app, &["purge-company", &company, "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        "installations: 1",
        "conversations: 1",
        "messages: 1",
        "contacts: 1",
    ] {
        assert!(report.contains(line), "{line} missing: {report}");
    }
    for table in ["installations", "conversations", "messages", "contacts"] {
        let sql = format!("SELECT count(*) FROM {table}");
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM channels WHERE mode = 'disabled' AND company_id IS NULL"
        )
        .await,
        2,
        "the configured numbers stay, detached"
    );
    app.stop().await;
}
