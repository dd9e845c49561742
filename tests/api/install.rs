//! The install flow against a fake Pipedrive: consent redirect, state checks, token exchange,
//! sealed tokens, channel registration (created, admin-only, retired API), video link, page.

use pipedrive_whatsapp::crypto::{Keys, Purpose};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{CLIENT_ID, PHONE_NUMBER_IDS, TestApp, spawn_app};
use crate::pipedrive_fake::*;

fn html_headers_are_secure(response: &reqwest::Response) {
    let headers = response.headers();
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

async fn token_calls(app: &TestApp) -> usize {
    requests_to(&app.pipedrive, "/oauth/token").await.len()
}

#[tokio::test]
async fn start_redirects_to_the_consent_screen_with_a_signed_state() {
    let app = spawn_app().await;
    let response = app.get("/auth/pipedrive").await;
    assert_eq!(response.status(), 303);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!("{}{}", location.origin().ascii_serialization(), location.path()),
        format!("{}/oauth/authorize", app.pipedrive.uri())
    );
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], app.url("/auth/pipedrive/callback"));
    let state = &query["state"];
    let (message, signature) = state.rsplit_once('.').unwrap();
    let keys = Keys::new(&app.config.secret_key);
    assert!(keys.verify(Purpose::OAuthState, message.as_bytes(), signature));
    assert_ne!(
        start_install(&app).await,
        *state,
        "every start gets its own state"
    );
    app.stop().await;
}

#[tokio::test]
async fn full_install_connects_the_company_user_and_every_number() {
    let app = spawn_app().await;
    mount_install(&app).await;
    let response = install_with(&app, CODE).await;
    assert_eq!(response.status(), 200);
    html_headers_are_secure(&response);
    let page = response.text().await.unwrap();
    for expected in [
        "Acme &lt;Sales&gt;",
        &COMPANY_ID.to_string(),
        "Jonas Weber",
        DISPLAY_NUMBERS[0],
        DISPLAY_NUMBERS[1],
        &channel_id(PHONE_NUMBER_IDS[0]),
        &channel_id(PHONE_NUMBER_IDS[1]),
        "Mode: inbox",
        "What next",
        "Messaging inbox",
    ] {
        assert!(page.contains(expected), "{expected} missing from {page}");
    }
    assert!(!page.contains("<Sales>"), "company name is escaped");

    // The code exchange: Basic auth (checked by the mock), our redirect URI, the code.
    let exchange = &requests_to(&app.pipedrive, "/oauth/token").await[0];
    let form = String::from_utf8_lossy(&exchange.body);
    assert!(form.contains(&format!(
        "redirect_uri={}",
        super::pipedrive_fake::form(&app.url("/auth/pipedrive/callback"))
    )));
    let me = &requests_to(&app.pipedrive, "/api/v1/users/me").await[0];
    assert_eq!(me.headers["authorization"], format!("Bearer {ACCESS_1}"));

    let row = sqlx::query!(
        r#"SELECT company_name, user_name, user_email, api_domain, scopes, status, is_shared,
                  token_expires_at > now() + interval '50 minutes' AS "fresh!"
           FROM installations"#
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(row.company_name.as_deref(), Some("Acme <Sales>"));
    assert_eq!(row.user_name.as_deref(), Some("Jonas Weber"));
    assert_eq!(row.user_email.as_deref(), Some("jonas@acme.test"));
    assert_eq!(row.api_domain, app.pipedrive.uri());
    assert_eq!(row.scopes, ["base", "messengers-integration"]);
    assert_eq!(row.status, "active");
    assert!(!row.is_shared);
    assert!(row.fresh);

    let created = requests_to(&app.pipedrive, "/api/v1/channels").await;
    assert_eq!(created.len(), 2);
    for (request, (id, display)) in created.iter().zip(PHONE_NUMBER_IDS.iter().zip(DISPLAY_NUMBERS)) {
        assert_eq!(request.headers["authorization"], format!("Bearer {ACCESS_1}"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"name": format!("WhatsApp {display}"), "provider_channel_id": id,
                   "provider_type": "whatsapp", "template_support": true,
                   "avatar_url": app.url("/static/whatsapp-channel.png")})
        );
    }
    let installation = installation_id(&app).await;
    for (id, display) in PHONE_NUMBER_IDS.iter().zip(DISPLAY_NUMBERS) {
        let channel = sqlx::query!(
            "SELECT display_phone_number, verified_name, installation_id, company_id, pipedrive_channel_id, mode
             FROM channels WHERE phone_number_id = $1",
            id
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(channel.display_phone_number.as_deref(), Some(display));
        assert_eq!(channel.verified_name.as_deref(), Some("Acme Support"));
        assert_eq!(channel.installation_id, Some(installation));
        assert_eq!(channel.company_id, Some(COMPANY_ID));
        assert_eq!(channel.pipedrive_channel_id, Some(channel_id(id)));
        assert_eq!(channel.mode, "inbox");
    }
    assert!(
        requests_to(&app.pipedrive, "/api/v1/meetings/userProviderLinks")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_channel_icon_is_served_with_long_caching() {
    let app = spawn_app().await;
    let response = app.get("/static/whatsapp-channel.png").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    app.stop().await;
}

#[tokio::test]
async fn forged_expired_replayed_or_missing_states_are_refused_without_calling_pipedrive() {
    let app = spawn_app().await;
    mount_install(&app).await;
    let keys = Keys::new(&app.config.secret_key);
    let valid = start_install(&app).await;
    let forged = format!(
        "{}{}",
        if valid.starts_with('A') { 'B' } else { 'A' },
        &valid[1..]
    );
    let expired = {
        let message = format!("nonce-of-an-old-state.{}", chrono::Utc::now().timestamp() - 60);
        format!("{message}.{}", keys.sign(Purpose::OAuthState, message.as_bytes()))
    };
    let foreign = {
        let message = format!("nonce-x.{}", chrono::Utc::now().timestamp() + 600);
        format!("{message}.{}", keys.sign(Purpose::Link, message.as_bytes()))
    };
    for (state, why) in [
        (forged.as_str(), "not issued by this service"),
        (foreign.as_str(), "not issued by this service"),
        (expired.as_str(), "expired"),
        ("", "no state"),
    ] {
        let response = callback(&app, CODE, state).await;
        assert_eq!(response.status(), 400, "{state}");
        html_headers_are_secure(&response);
        let page = response.text().await.unwrap();
        assert!(page.contains(why), "{why}: {page}");
        assert!(
            page.contains("/auth/pipedrive"),
            "the page says how to start again"
        );
    }
    let response = app
        .client
        .get(app.url(&format!("/auth/pipedrive/callback?code={CODE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(token_calls(&app).await, 0, "no token call for a refused state");

    // The valid state works once; replaying it is refused before any token call.
    assert_eq!(callback(&app, CODE, &valid).await.status(), 200);
    assert_eq!(token_calls(&app).await, 1);
    let replay = callback(&app, CODE, &valid).await;
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already been used"));
    assert_eq!(token_calls(&app).await, 1, "no token call for a replayed state");
    app.stop().await;
}

#[tokio::test]
async fn cancelling_consent_shows_a_neutral_page() {
    let app = spawn_app().await;
    let state = start_install(&app).await;
    let response = app
        .client
        .get(app.url(&format!(
            "/auth/pipedrive/callback?error=user_denied&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Nothing was installed"), "{page}");
    assert_eq!(token_calls(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_refused_code_shows_the_cause() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "Invalid grant: authorization_code has expired"
        })))
        .mount(&app.pipedrive)
        .await;
    let response = install_with(&app, "stale-code").await;
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("authorization_code has expired"), "{page}");
    assert!(!page.contains("stale-code"), "the code is not echoed");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM installations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    app.stop().await;
}

#[tokio::test]
async fn no_column_holds_a_token_in_clear() {
    let app = spawn_app().await;
    installed(&app).await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_name = 'installations' AND data_type IN ('bytea', 'text', 'ARRAY', 'character varying')",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(columns.iter().any(|(c, _)| c == "access_token_enc"));
    for (column, data_type) in &columns {
        let values: Vec<Option<Vec<u8>>> = if data_type == "bytea" {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {column} FROM installations")))
        } else {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT convert_to({column}::text, 'UTF8') FROM installations"
            )))
        }
        .fetch_all(&app.db)
        .await
        .unwrap();
        for value in values.into_iter().flatten() {
            for token in [ACCESS_1, REFRESH_1] {
                assert!(
                    !value.windows(token.len()).any(|w| w == token.as_bytes()),
                    "{column} holds a token in clear"
                );
            }
        }
    }
    // Sealed tokens open to the real ones with the key, and differ per write (fresh nonce).
    let (access, refresh): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT access_token_enc, refresh_token_enc FROM installations")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let keys = Keys::new(&app.config.secret_key);
    use secrecy::ExposeSecret;
    assert_eq!(keys.open(&access).unwrap().expose_secret(), ACCESS_1);
    assert_eq!(keys.open(&refresh).unwrap().expose_secret(), REFRESH_1);
    app.stop().await;
}

#[tokio::test]
async fn reinstalling_is_idempotent() {
    let app = spawn_app().await;
    let first = installed(&app).await;
    let before: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT phone_number_id, pipedrive_channel_id FROM channels ORDER BY phone_number_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let response = install_with(&app, CODE).await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("already registered"), "{page}");
    assert_eq!(installation_id(&app).await, first);
    let installations: i64 = sqlx::query_scalar("SELECT count(*) FROM installations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(installations, 1);
    let after: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT phone_number_id, pipedrive_channel_id FROM channels ORDER BY phone_number_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(before, after);
    assert_eq!(
        requests_to(&app.pipedrive, "/api/v1/channels").await.len(),
        PHONE_NUMBER_IDS.len(),
        "no duplicate channel is created"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_channel_pipedrive_already_knows_is_not_duplicated() {
    let app = spawn_app().await;
    mount_consent(&app, "base").await;
    Mock::given(method("POST"))
        .and(path("/api/v1/channels"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "success": false, "error": "Channel with this provider_channel_id already exists"
        })))
        .mount(&app.pipedrive)
        .await;
    let response = install_with(&app, CODE).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("already registered"));
    let registered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM channels WHERE installation_id IS NOT NULL AND mode = 'inbox'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(registered, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_non_admin_install_is_kept_and_the_page_explains_the_403() {
    let app = spawn_app().await;
    mount_consent(&app, "base,messengers-integration").await;
    Mock::given(method("POST"))
        .and(path("/api/v1/channels"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "success": false, "error": "Only admins can register channels",
            "additional_data": {"code": "ADMIN_ONLY"}
        })))
        .mount(&app.pipedrive)
        .await;
    let response = install_with(&app, CODE).await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("only Pipedrive admins can add messaging channels"),
        "{page}"
    );
    assert!(page.contains("Only admins can register channels"), "{page}");
    assert!(page.contains("Ask an admin"), "{page}");
    let status: String = sqlx::query_scalar("SELECT status FROM installations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "active", "the installation is kept");
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM channels WHERE installation_id IS NOT NULL")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(registered, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_retired_channels_api_switches_to_timeline_mode() {
    let app = spawn_app().await;
    mount_consent(&app, "base,contacts:full").await;
    Mock::given(method("POST"))
        .and(path("/api/v1/channels"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({"success": false, "error": "Gone"})))
        .mount(&app.pipedrive)
        .await;
    let response = install_with(&app, CODE).await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Mode: timeline"), "{page}");
    assert!(page.contains("retired"), "{page}");
    let installation = installation_id(&app).await;
    let modes: Vec<(String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT mode, installation_id FROM channels ORDER BY phone_number_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(modes, vec![("timeline".to_string(), Some(installation)); 2]);
    // Re-installing does not probe the retired API again.
    install_with(&app, CODE).await;
    assert_eq!(requests_to(&app.pipedrive, "/api/v1/channels").await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_video_scope_registers_one_link_and_follows_the_redirect() {
    let app = spawn_app().await;
    let scope = "base,messengers-integration,video-calls";
    mount_consent(&app, scope).await;
    mount_channel_creation(&app.pipedrive).await;
    let landing = "https://app.pipedrive.com/settings/video-integration?done=1";
    Mock::given(method("POST"))
        .and(path("/api/v1/meetings/userProviderLinks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "data": {"message": "The user was added successfully", "redirectUrl": landing}
        })))
        .mount(&app.pipedrive)
        .await;
    for _ in 0..2 {
        let response = install_with(&app, CODE).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], landing);
    }
    let installation = installation_id(&app).await;
    let links: Vec<(uuid::Uuid, Option<uuid::Uuid>, i64, i64)> = sqlx::query_as(
        "SELECT id, installation_id, company_id, user_id FROM video_links WHERE removed_at IS NULL",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(links.len(), 1, "one live link per installation");
    let (link_id, owner, company, user) = links[0];
    assert_eq!((owner, company, user), (Some(installation), COMPANY_ID, USER_ID));
    assert_eq!(link_id.get_version_num(), 4);
    let calls = requests_to(&app.pipedrive, "/api/v1/meetings/userProviderLinks").await;
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(call.headers["authorization"], format!("Bearer {ACCESS_1}"));
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(
            body,
            json!({"user_provider_id": link_id, "user_id": USER_ID, "company_id": COMPANY_ID,
                   "marketplace_client_id": CLIENT_ID})
        );
    }
    app.stop().await;
}
