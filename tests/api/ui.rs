//! The chat inside Pipedrive over HTTP: iframe tokens, the panel and floating window pages, the
//! page's API (threads, inbox, seen, templates) and replies reaching the fake Graph API.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    CLIENT_SECRET, PHONE_NUMBER_IDS, TestApp, WABA_ID, assert_error, eventually, inbound_webhook, spawn_app,
    text_message,
};
use crate::pipedrive_fake::{COMPANY_ID, USER_ID, installed};

/// The customer of the chat fixtures and the Pipedrive person carrying their number.
pub const CUSTOMER: &str = "5511987654321";
pub const PERSON_ID: i64 = 4242;
const DEAL_ID: i64 = 77;
/// What the customer wrote.
pub const GREETING: &str = "Olá! Is the <b>blue</b> model in stock?";

/// A token as Pipedrive signs it for the iframe, valid for `ttl` seconds (negative: expired).
pub fn ui_token(secret: &str, alg: Algorithm, company_id: i64, user_id: i64, ttl: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + ttl;
    jsonwebtoken::encode(
        &Header::new(alg),
        &json!({"userId": user_id, "companyId": company_id, "iat": exp - 300, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid token of the installing user.
pub fn token() -> String {
    ui_token(CLIENT_SECRET, Algorithm::HS256, COMPANY_ID, USER_ID, 300)
}

/// The panel's URL on the person's detail view, as Pipedrive builds it.
pub fn panel_path(token: &str) -> String {
    format!(
        "/ui/panel?resource=person&view=details&userId={USER_ID}&companyId={COMPANY_ID}&selectedIds={PERSON_ID}&id=ext-runtime-1&token={token}"
    )
}

/// An installed app whose customer wrote just now, and whose Pipedrive person has the
/// customer's number (written the way people type it). Returns the conversation id.
pub async fn chat_app() -> (TestApp, Uuid) {
    let app = spawn_app().await;
    installed(&app).await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/persons/{PERSON_ID}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {
            "id": PERSON_ID, "name": "Ana Souza",
            "phones": [{"value": "+55 (11) 98765-4321", "primary": true, "label": "mobile"}]}})),
        )
        .mount(&app.pipedrive)
        .await;
    let now = chrono::Utc::now().timestamp();
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.HELLO", CUSTOMER, now, GREETING)],
    ))
    .await;
    let conversation = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM conversations")
            .fetch_optional(&app.db)
            .await
            .unwrap()
    })
    .await;
    (app, conversation)
}

/// The Graph API accepts sends with `wamid`.
pub async fn accept_sends(app: &TestApp, wamid: &str) {
    Mock::given(method("POST"))
        .and(path(format!("/v25.0/{}/messages", PHONE_NUMBER_IDS[0])))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"messaging_product": "whatsapp",
            "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}], "messages": [{"id": wamid}]})),
        )
        .mount(&app.graph)
        .await;
}

/// The message bodies the fake Graph API received.
pub async fn sent_to_whatsapp(app: &TestApp) -> Vec<Value> {
    app.graph
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/messages"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// The customer last wrote 25 hours ago: only templates may be sent.
pub async fn close_window(app: &TestApp) {
    sqlx::query("UPDATE conversations SET last_inbound_at = now() - interval '25 hours'")
        .execute(&app.db)
        .await
        .unwrap();
}

/// The business account has two approved templates.
pub async fn offer_templates(app: &TestApp) {
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA_ID}/message_templates")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": "t1", "name": "order_followup", "language": "en_US", "status": "APPROVED",
             "components": [{"type": "BODY", "text": "Hello {{1}}, your order {{2}} has shipped."}]},
            {"id": "t2", "name": "welcome", "language": "en_US", "status": "APPROVED",
             "components": [{"type": "BODY", "text": "Welcome, {{1}}!"}]}]})))
        .mount(&app.graph)
        .await;
}

/// The template WhatsApp must receive for `order_followup` with `values`.
pub fn order_followup(values: [&str; 2]) -> Value {
    json!({"name": "order_followup", "language": {"code": "en_US", "policy": "deterministic"},
           "components": [{"type": "body", "parameters": [
               {"type": "text", "text": values[0]}, {"type": "text", "text": values[1]}]}]})
}

impl TestApp {
    /// A call of the chat's API with a bearer token.
    fn ui_api(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(&format!("/ui/api/{path}")))
            .bearer_auth(token)
    }

    /// A reply sent from the chat's reply box as the viewer of `token`.
    async fn ui_reply(&self, conversation: Uuid, token: &str, form: Form) -> reqwest::Response {
        self.ui_api(
            reqwest::Method::POST,
            &format!("conversations/{conversation}/messages"),
            token,
        )
        .multipart(form)
        .send()
        .await
        .unwrap()
    }

    async fn ui_json(&self, path: &str) -> Value {
        let response = self
            .ui_api(reqwest::Method::GET, path, &token())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }
}

async fn page_text(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_panel_shows_the_persons_thread_framed_by_pipedrive_only() {
    let (app, conversation) = chat_app().await;
    let response = app.get(&panel_path(&token())).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers.get("x-frame-options").is_none());
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'self' https://*.pipedrive.com"),
        "{csp}"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page_text(response).await;
    assert!(html.contains(&format!("data-id=\"{conversation}\"")), "{html}");
    assert!(
        html.contains("Olá! Is the &lt;b&gt;blue&lt;/b&gt; model in stock?"),
        "message text is escaped: {html}"
    );
    assert!(html.contains("Reply window open until"));
    assert!(
        html.contains("data-phones=\"5511987654321,551187654321\""),
        "{html}"
    );
    assert!(html.contains("assets/sdk.js?v=") && html.contains("assets/chat.js?v="));

    // The page reads the person as the installation, with its token.
    let reads =
        crate::pipedrive_fake::requests_to(&app.pipedrive, &format!("/api/v2/persons/{PERSON_ID}")).await;
    assert_eq!(reads.len(), 1);
    assert!(
        reads[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer v1u:")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_deal_panel_shows_the_thread_of_the_deals_person() {
    let (app, conversation) = chat_app().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/deals/{DEAL_ID}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {
            "id": DEAL_ID, "title": "Blue model", "person_id": PERSON_ID}})),
        )
        .mount(&app.pipedrive)
        .await;
    let html = page_text(
        app.get(&format!(
            "/ui/panel?resource=deal&userId={USER_ID}&companyId={COMPANY_ID}&selectedIds={DEAL_ID}&token={}",
            token()
        ))
        .await,
    )
    .await;
    assert!(html.contains(&format!("data-id=\"{conversation}\"")), "{html}");

    // A person without a WhatsApp conversation: the panel says so.
    Mock::given(method("GET"))
        .and(path("/api/v2/persons/5"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {
            "id": 5, "name": "Bo", "phones": [{"value": "+49 151 12345678"}]}})),
        )
        .mount(&app.pipedrive)
        .await;
    let html = page_text(
        app.get(&format!(
            "/ui/panel?resource=person&selectedIds=5&token={}",
            token()
        ))
        .await,
    )
    .await;
    assert!(html.contains("No WhatsApp conversation with Bo yet"), "{html}");
    assert!(!html.contains(GREETING));
    app.stop().await;
}

#[tokio::test]
async fn forged_expired_unsigned_and_mismatching_tokens_get_the_401_page() {
    let (app, _) = chat_app().await;
    let unsigned = {
        use base64::Engine;
        let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            part(json!({"alg": "none", "typ": "JWT"})),
            part(json!({"userId": USER_ID, "companyId": COMPANY_ID, "exp": 4_000_000_000i64}))
        )
    };
    let refused = [
        (
            "forged",
            ui_token("not-the-secret", Algorithm::HS256, COMPANY_ID, USER_ID, 300),
        ),
        (
            "expired",
            ui_token(CLIENT_SECRET, Algorithm::HS256, COMPANY_ID, USER_ID, -120),
        ),
        (
            "HS512",
            ui_token(CLIENT_SECRET, Algorithm::HS512, COMPANY_ID, USER_ID, 300),
        ),
        ("alg none", unsigned),
        ("garbage", "abc.def.ghi".to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in &refused {
        let response = app.get(&panel_path(token)).await;
        assert_eq!(response.status(), 401, "{what}");
        assert!(response.headers().get("x-frame-options").is_none());
        let html = page_text(response).await;
        assert!(html.contains("Not authorised"), "{what}: {html}");
        assert!(!html.contains("blue"), "{what}: no detail of the thread");
        let api = app
            .ui_api(reqwest::Method::GET, "conversations", token)
            .send()
            .await
            .unwrap();
        assert_error(api, 401, "UNAUTHORIZED").await;
    }
    // A valid token of another user than the URL names.
    let other_user = ui_token(CLIENT_SECRET, Algorithm::HS256, COMPANY_ID, USER_ID + 1, 300);
    assert_eq!(app.get(&panel_path(&other_user)).await.status(), 401);
    let no_token = app
        .client
        .get(app.url("/ui/api/conversations"))
        .send()
        .await
        .unwrap();
    assert_error(no_token, 401, "UNAUTHORIZED").await;
    assert_eq!(app.get("/ui/floating").await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_separate_extension_secret_replaces_the_client_secret() {
    let app = spawn_app_with_ui_secret("extension-secret-123").await;
    let signed = ui_token("extension-secret-123", Algorithm::HS256, COMPANY_ID, USER_ID, 300);
    let response = app
        .ui_api(reqwest::Method::GET, "conversations", &signed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let with_client_secret = app
        .ui_api(reqwest::Method::GET, "conversations", &token())
        .send()
        .await
        .unwrap();
    assert_error(with_client_secret, 401, "UNAUTHORIZED").await;
    app.stop().await;
}

async fn spawn_app_with_ui_secret(secret: &str) -> TestApp {
    let secret = secret.to_string();
    crate::helpers::spawn_app_with(move |env| {
        env.insert("PIPEDRIVE_UI_JWT_SECRET".into(), secret);
    })
    .await
}

#[tokio::test]
async fn the_thread_json_polls_cheaply_and_a_reply_reaches_whatsapp() {
    let (app, conversation) = chat_app().await;
    accept_sends(&app, "wamid.REPLY1").await;
    let first = app.ui_json(&format!("threads?phones={CUSTOMER}")).await;
    assert_eq!(first["changed"], true);
    let thread = &first["threads"][0];
    assert_eq!(thread["id"], conversation.to_string());
    assert_eq!(thread["customer"], "Ana");
    assert_eq!(thread["phone"], format!("+{CUSTOMER}"));
    assert_eq!(thread["window_open"], true);
    assert!(thread["window_ends_at"].is_string());
    assert_eq!(thread["messages"][0]["text"], GREETING);
    assert_eq!(thread["messages"][0]["direction"], "inbound");
    let version = first["version"].as_str().unwrap().to_string();
    let again = app
        .ui_json(&format!("threads?phones={CUSTOMER}&since={version}"))
        .await;
    assert_eq!(again, json!({"version": version, "changed": false}));

    let form = Form::new().text("text", "Yes, we have it: R$ 120.");
    let response = app.ui_reply(conversation, &token(), form).await;
    assert_eq!(response.status(), 200);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = sent_to_whatsapp(&app).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], CUSTOMER);
    assert_eq!(sent[0]["text"]["body"], "Yes, we have it: R$ 120.");

    let after = app
        .ui_json(&format!("threads?phones={CUSTOMER}&since={version}"))
        .await;
    assert_eq!(after["changed"], true);
    let reply = &after["threads"][0]["messages"][1];
    assert_eq!(reply["id"], id);
    assert_eq!(reply["direction"], "outbound");
    assert_eq!(reply["status"], "sent");
    assert!(after["threads"][0]["html"].as_str().unwrap().contains("✓ sent"));

    let other_company = ui_token(CLIENT_SECRET, Algorithm::HS256, COMPANY_ID + 1, USER_ID, 300);
    let foreign = app
        .ui_reply(conversation, &other_company, Form::new().text("text", "hi"))
        .await;
    assert_error(foreign, 404, "NOT_FOUND").await;
    assert_eq!(
        sent_to_whatsapp(&app).await.len(),
        1,
        "nothing sent for another company"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_file_reply_is_uploaded_and_linked_in_the_thread() {
    let (app, conversation) = chat_app().await;
    Mock::given(method("POST"))
        .and(path(format!("/v25.0/{}/media", PHONE_NUMBER_IDS[0])))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "media-77"})))
        .mount(&app.graph)
        .await;
    accept_sends(&app, "wamid.FILE").await;
    let bytes = b"%PDF-1.7 price list".to_vec();
    let form = Form::new().text("text", "").part(
        "file",
        Part::bytes(bytes.clone())
            .file_name("prices.pdf")
            .mime_str("application/octet-stream")
            .unwrap(),
    );
    let response = app.ui_reply(conversation, &token(), form).await;
    assert_eq!(response.status(), 200);
    let sent = sent_to_whatsapp(&app).await;
    assert_eq!(sent[0]["type"], "document");
    assert_eq!(sent[0]["document"]["filename"], "prices.pdf");

    let thread = app.ui_json(&format!("conversations/{conversation}")).await;
    let file = &thread["thread"]["messages"][1]["files"][0];
    assert_eq!(file["name"], "prices.pdf");
    assert_eq!(file["mime_type"], "application/pdf");
    let url = file["url"].as_str().unwrap();
    let served = app.client.get(url).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().to_vec(), bytes);
    app.stop().await;
}

#[tokio::test]
async fn a_closed_window_offers_templates_and_sends_a_filled_one() {
    let (app, conversation) = chat_app().await;
    close_window(&app).await;
    offer_templates(&app).await;
    accept_sends(&app, "wamid.TEMPLATE").await;

    let thread = app.ui_json(&format!("conversations/{conversation}")).await;
    assert_eq!(thread["thread"]["window_open"], false);
    assert!(
        thread["thread"]["html"]
            .as_str()
            .unwrap()
            .contains("window-closed")
    );
    let templates = app.ui_json("templates").await;
    assert_eq!(
        templates["templates"][0],
        json!({"id": "t1", "name": "order_followup", "language": "en_US",
               "body": "Hello {{1}}, your order {{2}} has shipped.", "placeholders": ["1", "2"]})
    );

    let token = token();
    let post = |form: Form| app.ui_reply(conversation, &token, form);
    let free_text = post(Form::new().text("text", "Still there?")).await;
    let message = assert_error(free_text, 400, "BAD_REQUEST").await;
    assert!(message.contains("24-hour"), "{message}");
    let missing = post(Form::new().text("template", "t1").text("param.1", "Ana")).await;
    assert!(assert_error(missing, 400, "BAD_REQUEST").await.contains("{{2}}"));
    assert!(sent_to_whatsapp(&app).await.is_empty());

    let filled = post(
        Form::new()
            .text("template", "t1")
            .text("param.1", "Ana")
            .text("param.2", "#42"),
    )
    .await;
    assert_eq!(filled.status(), 200);
    let sent = sent_to_whatsapp(&app).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["template"], order_followup(["Ana", "#42"]));
    app.stop().await;
}

#[tokio::test]
async fn the_floating_window_lists_unseen_first_and_opening_marks_seen() {
    let (app, first) = chat_app().await;
    let now = chrono::Utc::now().timestamp();
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[1],
        "4915112345678",
        "Jonas",
        vec![text_message("wamid.SECOND", "4915112345678", now, "Guten Tag")],
    ))
    .await;
    let second = eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM conversations WHERE id <> $1")
            .bind(first)
            .fetch_optional(&app.db)
            .await
            .unwrap()
    })
    .await;
    let page = page_text(
        app.get(&format!(
            "/ui/floating?userId={USER_ID}&companyId={COMPANY_ID}&id=fw-1&token={}",
            token()
        ))
        .await,
    )
    .await;
    assert!(page.contains("data-unseen=\"2\""), "{page}");
    assert!(page.contains(&format!("data-open=\"{second}\"")) && page.contains("Guten Tag"));

    let inbox = app.ui_json("conversations").await;
    assert_eq!(inbox["unseen"], 2);
    let seen = app
        .ui_api(
            reqwest::Method::POST,
            &format!("conversations/{second}/seen"),
            &token(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200);
    let inbox = app
        .ui_json(&format!(
            "conversations?since={}",
            inbox["version"].as_str().unwrap()
        ))
        .await;
    assert_eq!(inbox["changed"], true);
    assert_eq!(inbox["unseen"], 1);
    let order: Vec<&str> = inbox["inbox"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["Ana", "Jonas"], "unseen first");

    // Another company sees none of it.
    let stranger = ui_token(CLIENT_SECRET, Algorithm::HS256, COMPANY_ID + 1, 9, 300);
    let theirs: Value = app
        .ui_api(reqwest::Method::GET, "conversations", &stranger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["unseen"], 0);
    assert_eq!(theirs["inbox"]["conversations"], json!([]));
    let peek = app
        .ui_api(reqwest::Method::GET, &format!("conversations/{first}"), &stranger)
        .send()
        .await
        .unwrap();
    assert_error(peek, 404, "NOT_FOUND").await;
    app.stop().await;
}

#[tokio::test]
async fn panels_explain_what_they_cannot_show() {
    let app = spawn_app().await;
    let not_installed = app.get(&panel_path(&token())).await;
    assert_eq!(not_installed.status(), 403);
    assert!(page_text(not_installed).await.contains("/auth/pipedrive"));
    installed(&app).await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v2/persons/{PERSON_ID}")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"success": false, "error": "not found"})),
        )
        .mount(&app.pipedrive)
        .await;
    let gone = app.get(&panel_path(&token())).await;
    assert_eq!(gone.status(), 404);
    assert!(page_text(gone).await.contains("no longer has this person"));
    let organization = app
        .get(&format!(
            "/ui/panel?resource=organization&selectedIds=3&token={}",
            token()
        ))
        .await;
    assert_eq!(organization.status(), 200);
    assert!(page_text(organization).await.contains("person and deal pages"));
    let assets = app.get("/ui/assets/chat.js").await;
    assert_eq!(assets.status(), 200);
    assert!(
        assets.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(app.get("/ui/assets/nope.js").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn the_inbox_lists_unseen_first_then_newest_across_the_companys_live_channels_only() {
    let db = sqlx::PgPool::connect(&crate::helpers::fresh_database().await)
        .await
        .unwrap();
    pipedrive_whatsapp::store::migrate(&db).await.unwrap();
    // Two live channels of the company, a disabled one, and another company's. Conversation n
    // of a channel had its last message n minutes ago; every third is unseen.
    let channels = [
        ("live-a", 7, "inbox"),
        ("live-b", 7, "timeline"),
        ("off", 7, "disabled"),
        ("theirs", 8, "inbox"),
    ];
    for (number, company, mode) in channels {
        sqlx::query(
            "INSERT INTO channels (id, phone_number_id, company_id, mode) VALUES (gen_random_uuid(), $1, $2, $3)",
        )
        .bind(number)
        .bind(company)
        .bind(mode)
        .execute(&db)
        .await
        .unwrap();
        sqlx::query(
            "WITH customers AS (
                 INSERT INTO contacts (id, wa_id)
                 SELECT gen_random_uuid(), $1 || ':' || n FROM generate_series(1, 40) AS n
                 RETURNING id, wa_id)
             INSERT INTO conversations (id, channel_id, contact_id, seen, last_message_at)
             SELECT gen_random_uuid(), ch.id, ct.id, split_part(ct.wa_id, ':', 2)::int % 3 <> 0,
                    now() - make_interval(mins => split_part(ct.wa_id, ':', 2)::int)
             FROM customers ct, channels ch WHERE ch.phone_number_id = $1",
        )
        .bind(number)
        .execute(&db)
        .await
        .unwrap();
    }
    let listed = |limit| {
        let db = db.clone();
        async move {
            pipedrive_whatsapp::store::conversations::recent_in_company(&db, 7, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.wa_id.unwrap())
                .collect::<Vec<_>>()
        }
    };
    // What sorting every conversation of the company's live channels gives.
    let everything: Vec<String> = sqlx::query_scalar(
        "SELECT ct.wa_id FROM conversations c
         JOIN contacts ct ON ct.id = c.contact_id JOIN channels ch ON ch.id = c.channel_id
         WHERE ch.company_id = 7 AND ch.mode <> 'disabled'
         ORDER BY c.seen, c.last_message_at DESC, c.id DESC",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(everything.len(), 80);
    // Fewer unseen than listed (26), as many, and more conversations than there are.
    for limit in [5, 26, 50, 100] {
        let expected: Vec<String> = everything.iter().take(limit).cloned().collect();
        assert_eq!(listed(limit as i64).await, expected, "limit {limit}");
    }
    assert_eq!(
        pipedrive_whatsapp::store::conversations::count_unseen_in_company(&db, 7)
            .await
            .unwrap(),
        26
    );
}
