//! A fake Pipedrive (OAuth server and company API) and fake Graph numbers on the test app's
//! wiremock servers, and a browser walking through the install.

use std::sync::Arc;

use pipedrive_whatsapp::crypto::Keys;
use pipedrive_whatsapp::pipedrive::PipedriveClient;
use pipedrive_whatsapp::pipedrive::oauth::PipedriveOAuth;
use pipedrive_whatsapp::state::outbound_client;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{basic_auth, body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{CLIENT_ID, CLIENT_SECRET, PHONE_NUMBER_IDS, TestApp};

/// Tokens of the first exchange.
pub const ACCESS_1: &str = "v1u:AQIBAHj-access-one-7f3c2a9e";
pub const REFRESH_1: &str = "1:88417:refresh-one-6f0c0a4b1d2e";
/// Tokens of a refresh or a second install.
pub const ACCESS_2: &str = "v1u:AQIBAHj-access-two-91b2c3d4";
pub const REFRESH_2: &str = "1:88417:refresh-two-a1b2c3d4e5f6";
/// The installing user.
pub const COMPANY_ID: i64 = 7720311;
pub const USER_ID: i64 = 13554862;
/// The authorization code the fake consent screen hands out.
pub const CODE: &str = "auth-code-123";
/// Display numbers the fake Graph API reports, in `PHONE_NUMBER_IDS` order.
pub const DISPLAY_NUMBERS: [&str; 2] = ["+1 555-000-0001", "+1 555-000-0002"];

/// The body of a token response.
pub fn token_body(server: &MockServer, access: &str, refresh: &str, scope: &str) -> Value {
    json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3599,
        "refresh_token": refresh,
        "scope": scope,
        "api_domain": server.uri(),
    })
}

/// Answers `grant_type=authorization_code` for `code` with the given tokens.
pub async fn mount_code_exchange(server: &MockServer, code: &str, access: &str, refresh: &str, scope: &str) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(basic_auth(CLIENT_ID, CLIENT_SECRET))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains(format!("code={code}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(server, access, refresh, scope)))
        .mount(server)
        .await;
}

/// Form encoding of a token value, as it appears in a token request body.
pub fn form(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `GET /api/v1/users/me` for the installing user.
pub async fn mount_users_me(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v1/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true,
            "data": {"id": USER_ID, "company_id": COMPANY_ID, "company_name": "Acme <Sales>",
                     "company_domain": "acme", "name": "Jonas Weber", "email": "jonas@acme.test",
                     "is_admin": 1}
        })))
        .mount(server)
        .await;
}

/// The Graph API describes every configured number.
pub async fn mount_graph_numbers(graph: &MockServer) {
    for (id, display) in PHONE_NUMBER_IDS.iter().zip(DISPLAY_NUMBERS) {
        Mock::given(method("GET"))
            .and(path(format!("/v25.0/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": id, "display_phone_number": display, "verified_name": "Acme Support"
            })))
            .mount(graph)
            .await;
    }
}

/// Creates channels like Pipedrive: answers with a channel id derived from the provider id.
pub struct CreateChannel;

impl Respond for CreateChannel {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let provider_id = body["provider_channel_id"].as_str().unwrap_or_default();
        ResponseTemplate::new(200).set_body_json(json!({
            "success": true,
            "data": {"id": channel_id(provider_id), "name": body["name"],
                     "provider_channel_id": provider_id, "pd_company_id": COMPANY_ID}
        }))
    }
}

/// Pipedrive's channel id for one of our numbers, in the fake.
pub fn channel_id(phone_number_id: &str) -> String {
    format!("pd-channel-{phone_number_id}")
}

/// `POST /api/v1/channels` succeeds.
pub async fn mount_channel_creation(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/api/v1/channels"))
        .respond_with(CreateChannel)
        .mount(server)
        .await;
}

/// An install granting `scope`, up to the channel registration (which each test answers).
pub async fn mount_consent(app: &TestApp, scope: &str) {
    mount_code_exchange(&app.pipedrive, CODE, ACCESS_1, REFRESH_1, scope).await;
    mount_users_me(&app.pipedrive).await;
    mount_graph_numbers(&app.graph).await;
}

/// Everything a first install needs: code exchange, profile, numbers, channel creation.
pub async fn mount_install(app: &TestApp) {
    mount_consent(app, "base,messengers-integration").await;
    mount_channel_creation(&app.pipedrive).await;
}

/// The `state` of the consent redirect issued by `GET /auth/pipedrive`.
pub async fn start_install(app: &TestApp) -> String {
    let response = app.get("/auth/pipedrive").await;
    assert_eq!(response.status(), 303);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("the redirect carries a state")
}

/// The browser coming back from the consent screen with `code` and `state`.
pub async fn callback(app: &TestApp, code: &str, state: &str) -> reqwest::Response {
    let mut url = url::Url::parse(&app.url("/auth/pipedrive/callback")).unwrap();
    url.query_pairs_mut()
        .append_pair("code", code)
        .append_pair("state", state);
    app.client.get(url).send().await.unwrap()
}

/// Walks through the whole install with `code`.
pub async fn install_with(app: &TestApp, code: &str) -> reqwest::Response {
    let state = start_install(app).await;
    callback(app, code, &state).await
}

/// Mounts the fakes, installs, and returns the installation id.
pub async fn installed(app: &TestApp) -> Uuid {
    mount_install(app).await;
    let response = install_with(app, CODE).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    installation_id(app).await
}

/// The one installation of the test company's user.
pub async fn installation_id(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM installations WHERE company_id = $1 AND user_id = $2")
        .bind(COMPANY_ID)
        .bind(USER_ID)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// A Pipedrive client of its own on the app's database, as another replica would have.
pub fn client(app: &TestApp) -> PipedriveClient {
    let http = outbound_client(app.config.outbound_timeout);
    let oauth = PipedriveOAuth::new(&app.config.pipedrive, &app.config.public_url, http.clone());
    PipedriveClient::new(
        app.db.clone(),
        http,
        Arc::new(Keys::new(&app.config.secret_key)),
        oauth,
    )
}

/// Makes the installation's access token expired.
pub async fn expire_token(app: &TestApp, installation_id: Uuid) {
    sqlx::query("UPDATE installations SET token_expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(installation_id)
        .execute(&app.db)
        .await
        .unwrap();
}

/// Requests the fake Pipedrive received on `path`.
pub async fn requests_to(server: &MockServer, path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .collect()
}
