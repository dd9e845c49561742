//! postMessage as Pipedrive sends it (multipart), and what the fake Graph API receives.

use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::contract::PostMessageResponse;
use crate::helpers::{
    PHONE_NUMBER_IDS, TestApp, WABA_ID, assert_error, eventually, inbound_webhook, spawn_app, status_webhook,
    text_message,
};

const CUSTOMER: &str = "5511987654321";

/// An app with one conversation whose customer wrote just now (window open).
async fn conversation_app() -> (TestApp, Uuid, Uuid) {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.IN", CUSTOMER, now, "Hi")],
    ))
    .await;
    let (conversation, contact) = eventually(Duration::from_secs(10), || async {
        sqlx::query_as::<_, (Uuid, Uuid)>("SELECT id, contact_id FROM conversations")
            .fetch_optional(&app.db)
            .await
            .unwrap()
    })
    .await;
    (app, conversation, contact)
}

fn sends_path() -> String {
    format!("/v25.0/{}/messages", PHONE_NUMBER_IDS[0])
}

async fn mount_send(app: &TestApp, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(sends_path()))
        .respond_with(response)
        .mount(&app.graph)
        .await;
}

fn accepted(wamid: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}], "messages": [{"id": wamid}]}))
}

fn form(text: &str, conversation: Uuid, contact: Uuid) -> Form {
    Form::new()
        .text("message", text.to_string())
        .text("senderId", PHONE_NUMBER_IDS[0])
        .text("conversationId", conversation.to_string())
        .text("recipientIds[]", contact.to_string())
}

fn file(name: &str, mime: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str(mime)
        .unwrap()
}

async fn post(app: &TestApp, form: Form) -> reqwest::Response {
    app.provider(
        Method::POST,
        &format!("/api/channels/{}/messages", PHONE_NUMBER_IDS[0]),
    )
    .multipart(form)
    .send()
    .await
    .unwrap()
}

async fn sent_bodies(app: &TestApp) -> Vec<Value> {
    app.graph
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == sends_path())
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn message_state(app: &TestApp, id: &str) -> (String, Option<String>, Option<i32>) {
    sqlx::query_as("SELECT status, wamid, error_code FROM messages WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_text_is_stored_sent_and_its_statuses_update_the_returned_id() {
    let (app, conversation, contact) = conversation_app().await;
    mount_send(&app, accepted("wamid.OUT1")).await;
    let response = post(&app, form("Hello from Pipedrive", conversation, contact)).await;
    assert_eq!(response.status(), 200);
    let body: PostMessageResponse = response.json().await.unwrap();
    assert!(body.success);
    let id = body.data.id;
    let sent = sent_bodies(&app).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], CUSTOMER);
    assert_eq!(sent[0]["type"], "text");
    assert_eq!(sent[0]["text"]["body"], "Hello from Pipedrive");
    assert_eq!(sent[0]["biz_opaque_callback_data"], format!("out:{id}"));
    assert_eq!(
        message_state(&app, &id).await,
        ("sent".into(), Some("wamid.OUT1".into()), None)
    );

    let read = json!({"id": "wamid.OUT1", "status": "read", "timestamp": "9", "recipient_id": CUSTOMER});
    app.post_webhook(&status_webhook(PHONE_NUMBER_IDS[0], vec![read]))
        .await;
    eventually(Duration::from_secs(10), || async {
        (message_state(&app, &id).await.0 == "read").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn files_are_uploaded_and_sent_by_media_id_with_the_text_as_caption() {
    let (app, conversation, contact) = conversation_app().await;
    Mock::given(method("POST"))
        .and(path(format!("/v25.0/{}/media", PHONE_NUMBER_IDS[0])))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "media-1"})))
        .mount(&app.graph)
        .await;
    mount_send(&app, accepted("wamid.F")).await;
    let form = form("Your quote", conversation, contact)
        .part(
            "files",
            file("quote.pdf", "application/pdf", b"%PDF-1.7".to_vec()),
        )
        .part("files", file("photo.jpg", "image/jpeg", vec![0xFF, 0xD8, 0xFF]))
        .part("files", file("clip.mp4", "video/mp4", vec![0; 16]))
        .part(
            "files",
            file("note.ogg", "application/octet-stream", vec![1, 2, 3]),
        );
    let response = post(&app, form).await;
    assert_eq!(response.status(), 200);
    let id = response.json::<PostMessageResponse>().await.unwrap().data.id;
    let sent = eventually(Duration::from_secs(10), || async {
        let sent = sent_bodies(&app).await;
        (sent.len() == 4).then_some(sent)
    })
    .await;
    let kinds: Vec<&str> = sent.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["document", "image", "video", "audio"]);
    assert_eq!(
        sent[0]["document"],
        json!({"id": "media-1", "caption": "Your quote", "filename": "quote.pdf"})
    );
    assert!(
        sent[1]["image"].get("caption").is_none(),
        "the caption goes on the first file only"
    );
    let uploads: Vec<String> = app
        .graph
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path().ends_with("/media"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(uploads.len(), 4);
    assert!(
        uploads[3].contains("audio/ogg"),
        "the type of a generic upload comes from its name"
    );
    assert!(
        uploads
            .iter()
            .all(|u| u.contains("messaging_product") && u.contains("whatsapp"))
    );
    assert_eq!(message_state(&app, &id).await.0, "sent");
    app.stop().await;
}

#[tokio::test]
async fn files_outside_whatsapps_types_and_limits_are_refused_before_calling_meta() {
    let (app, conversation, contact) = conversation_app().await;
    let big = post(
        &app,
        form("", conversation, contact).part(
            "files",
            file("huge.jpg", "image/jpeg", vec![0; 5 * 1024 * 1024 + 1]),
        ),
    )
    .await;
    assert!(
        assert_error(big, 400, "BAD_REQUEST")
            .await
            .contains("at most 5 MB")
    );
    let odd = post(
        &app,
        form("", conversation, contact).part("files", file("pic.heic", "image/heic", vec![1])),
    )
    .await;
    assert!(assert_error(odd, 400, "BAD_REQUEST").await.contains("image/heic"));
    assert!(sent_bodies(&app).await.is_empty());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'outbound'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    app.stop().await;
}

#[tokio::test]
async fn missing_fields_unknown_conversations_and_empty_messages_are_400() {
    let (app, conversation, contact) = conversation_app().await;
    let no_conversation = Form::new()
        .text("message", "hi")
        .text("senderId", PHONE_NUMBER_IDS[0]);
    assert!(
        assert_error(post(&app, no_conversation).await, 400, "BAD_REQUEST")
            .await
            .contains("conversationId")
    );
    let no_sender = Form::new()
        .text("message", "hi")
        .text("conversationId", conversation.to_string());
    assert!(
        assert_error(post(&app, no_sender).await, 400, "BAD_REQUEST")
            .await
            .contains("senderId")
    );
    let unknown = form("hi", Uuid::now_v7(), contact);
    assert!(
        assert_error(post(&app, unknown).await, 400, "BAD_REQUEST")
            .await
            .contains("conversationId")
    );
    let empty = form("   ", conversation, contact);
    assert!(
        assert_error(post(&app, empty).await, 400, "BAD_REQUEST")
            .await
            .starts_with("message")
    );
    let json_body = app
        .provider(
            Method::POST,
            &format!("/api/channels/{}/messages", PHONE_NUMBER_IDS[0]),
        )
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_error(json_body, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    assert!(sent_bodies(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_closed_window_refuses_free_text_but_sends_a_matching_template() {
    let (app, conversation, contact) = conversation_app().await;
    sqlx::query("UPDATE conversations SET last_inbound_at = now() - interval '25 hours'")
        .execute(&app.db)
        .await
        .unwrap();
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA_ID}/message_templates")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": "t1", "name": "order_followup", "language": "en_US", "status": "APPROVED",
             "components": [{"type": "BODY", "text": "Hello {{1}}, your order {{2}} has shipped."}]}]})))
        .mount(&app.graph)
        .await;
    let refused = post(&app, form("Are you still there?", conversation, contact)).await;
    let message = assert_error(refused, 400, "BAD_REQUEST").await;
    assert!(
        message.contains("24-hour") && message.contains("template"),
        "{message}"
    );
    assert!(sent_bodies(&app).await.is_empty(), "refused before calling Meta");

    mount_send(&app, accepted("wamid.T")).await;
    let response = post(
        &app,
        form(
            "Hello Ana Souza, your order #42 has shipped.",
            conversation,
            contact,
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    let sent = sent_bodies(&app).await;
    assert_eq!(sent[0]["type"], "template");
    assert_eq!(
        sent[0]["template"],
        json!({"name": "order_followup", "language": {"code": "en_US", "policy": "deterministic"},
               "components": [{"type": "body", "parameters": [
                   {"type": "text", "text": "Ana Souza"}, {"type": "text", "text": "#42"}]}]})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_transient_failure_still_answers_with_the_id_and_the_queue_sends_it() {
    let (app, conversation, contact) = conversation_app().await;
    Mock::given(method("POST"))
        .and(path(sends_path()))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"error": {"code": 131000, "message": "Something went wrong"}})),
        )
        .up_to_n_times(2)
        .mount(&app.graph)
        .await;
    mount_send(&app, accepted("wamid.LATER")).await;
    let response = post(&app, form("eventually", conversation, contact)).await;
    assert_eq!(response.status(), 200);
    let id = response.json::<PostMessageResponse>().await.unwrap().data.id;
    eventually(Duration::from_secs(15), || async {
        (message_state(&app, &id).await == ("sent".into(), Some("wamid.LATER".into()), None)).then_some(())
    })
    .await;
    assert_eq!(
        sent_bodies(&app).await.len(),
        3,
        "two refusals, one success, no duplicate"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_refusal_is_a_400_with_metas_reason_and_a_failed_message() {
    let (app, conversation, contact) = conversation_app().await;
    mount_send(
        &app,
        ResponseTemplate::new(400).set_body_json(json!({"error": {"code": 131026,
            "message": "(#131026) Message undeliverable", "error_data": {"details": "Recipient is not on WhatsApp"}}})),
    )
    .await;
    let response = post(&app, form("hello?", conversation, contact)).await;
    let message = assert_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("Recipient is not on WhatsApp"), "{message}");
    let (status, code, detail): (String, Option<i32>, Option<String>) =
        sqlx::query_as("SELECT status, error_code, error_detail FROM messages WHERE direction = 'outbound'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), code), ("failed", Some(131026)));
    assert_eq!(detail.as_deref(), Some("Recipient is not on WhatsApp"));
    assert_eq!(sent_bodies(&app).await.len(), 1, "never retried");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_access_token_fails_the_message_at_once() {
    let (app, conversation, contact) = conversation_app().await;
    mount_send(
        &app,
        ResponseTemplate::new(401).set_body_json(json!({"error": {"code": 190,
            "message": "Error validating access token: Session has expired", "type": "OAuthException"}})),
    )
    .await;
    let response = post(&app, form("hello", conversation, contact)).await;
    let message = assert_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("access token"), "{message}");
    assert!(
        !message.contains(crate::helpers::ACCESS_TOKEN),
        "the token itself is never shown"
    );
    let (status, code): (String, Option<i32>) =
        sqlx::query_as("SELECT status, error_code FROM messages WHERE direction = 'outbound'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), code), ("failed", Some(190)));
    app.stop().await;
}
