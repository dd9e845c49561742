//! WhatsApp → Pipedrive end to end: signed webhooks in, `channels/messages/receive` calls out
//! to the fake Pipedrive, through the durable queue (order, retries, rate limits, tokens, the
//! retired Channels API).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::helpers::{
    PHONE_NUMBER_IDS, TestApp, channel_mode, eventually, inbound_webhook, mount_graph_media, spawn_app,
    status_webhook, text_message,
};
use crate::pipedrive_fake::{ACCESS_1, ACCESS_2, REFRESH_2, installed, token_body};

const CUSTOMER: &str = "5511987654321";
const RECEIVE: &str = "/api/v1/channels/messages/receive";

async fn mount_receive(app: &TestApp, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(response)
        .mount(&app.pipedrive)
        .await;
}

/// Bodies of the receive calls Pipedrive answered with 200.
async fn received(app: &TestApp) -> Vec<(Value, Request)> {
    let requests = app.pipedrive.received_requests().await.unwrap();
    requests
        .into_iter()
        .filter(|r| r.url.path() == RECEIVE)
        .map(|r| (serde_json::from_slice(&r.body).unwrap(), r))
        .collect()
}

async fn wait_for_receives(app: &TestApp, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), || async {
        let all = received(app).await;
        (all.len() >= n).then(|| all.into_iter().map(|(b, _)| b).collect::<Vec<_>>())
    })
    .await
}

/// Pipedrive answers the first receive with a 429 asking for two seconds, then 200.
async fn mount_one_429_then_200(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "2"))
        .up_to_n_times(1)
        .mount(&app.pipedrive)
        .await;
    mount_receive(app, ResponseTemplate::new(200)).await;
}

async fn installed_app() -> TestApp {
    let app = spawn_app().await;
    installed(&app).await;
    app
}

#[tokio::test]
async fn an_inbound_text_reaches_pipedrive_in_the_contract_shape() {
    let app = installed_app().await;
    mount_receive(
        &app,
        ResponseTemplate::new(200).set_body_json(json!({"success": true})),
    )
    .await;
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.D1", CUSTOMER, 1_763_800_000, "Hi!")],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    let body = &wait_for_receives(&app, 1).await[0];
    let (id, conversation, contact): (uuid::Uuid, uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT m.id, m.conversation_id, c.contact_id FROM messages m JOIN conversations c ON c.id = m.conversation_id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        body,
        &json!({
            "id": id.to_string(),
            "channel_id": PHONE_NUMBER_IDS[0],
            "sender_id": contact.to_string(),
            "conversation_id": conversation.to_string(),
            "message": "Hi!",
            "status": "sent",
            "created_at": "2025-11-22 08:26",
            "reply_by": "2025-11-23 08:26",
            "conversation_link": "",
            "attachments": [],
        })
    );
    let (_, request) = &received(&app).await[0];
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {ACCESS_1}").as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn messages_of_a_conversation_arrive_in_order_even_when_pipedrive_is_slow() {
    let app = installed_app().await;
    mount_receive(
        &app,
        ResponseTemplate::new(200).set_delay(Duration::from_millis(30)),
    )
    .await;
    let messages: Vec<Value> = (0..8)
        .map(|i| text_message(&format!("wamid.O{i}"), CUSTOMER, 100 + i, &format!("m{i}")))
        .collect();
    for m in messages {
        app.post_webhook(&inbound_webhook(PHONE_NUMBER_IDS[0], CUSTOMER, "Ana", vec![m]))
            .await;
    }
    let bodies = wait_for_receives(&app, 8).await;
    let texts: Vec<&str> = bodies.iter().map(|b| b["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    app.stop().await;
}

#[tokio::test]
async fn a_new_message_waits_for_the_delivery_before_it_that_is_waiting_to_retry() {
    let app = installed_app().await;
    mount_one_429_then_200(&app).await;
    let say = |wamid: &str, at: i64, text: &str| {
        inbound_webhook(
            PHONE_NUMBER_IDS[0],
            CUSTOMER,
            "Ana",
            vec![text_message(wamid, CUSTOMER, at, text)],
        )
    };
    app.post_webhook(&say("wamid.W0", 1, "first")).await;
    wait_for_receives(&app, 1).await;
    // The first is queued again for two seconds; the second must not be run past it.
    app.post_webhook(&say("wamid.W1", 2, "second")).await;
    let bodies = wait_for_receives(&app, 3).await;
    let texts: Vec<&str> = bodies.iter().map(|b| b["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["first", "first", "second"]);
    app.stop().await;
}

#[tokio::test]
async fn pipedrive_errors_are_retried_until_it_recovers_and_nothing_is_lost() {
    let app = installed_app().await;
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .mount(&app.pipedrive)
        .await;
    mount_receive(&app, ResponseTemplate::new(200)).await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.R", CUSTOMER, 1, "retry me")],
    ))
    .await;
    let bodies = wait_for_receives(&app, 4).await;
    assert!(bodies.iter().all(|b| b["message"] == "retry me"));
    // The job is settled after Pipedrive answered (settles are written in groups), so its end
    // is waited for rather than read at once: a delivery that succeeded leaves no job behind.
    let left = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE kind = 'deliver_message'")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    eventually(Duration::from_secs(10), || async {
        (left().await == 0).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_429_is_honoured_without_spending_the_retry_budget() {
    let app = installed_app().await;
    mount_one_429_then_200(&app).await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.L", CUSTOMER, 1, "slow down")],
    ))
    .await;
    let started = Instant::now();
    wait_for_receives(&app, 1).await;
    // Queued again for later, its try refunded (a succeeded delivery leaves no row to read).
    let attempts: i32 = eventually(Duration::from_secs(2), || async {
        let (state, attempts): (String, i32) =
            sqlx::query_as("SELECT state, attempts FROM jobs WHERE kind = 'deliver_message'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        (state == "queued").then_some(attempts)
    })
    .await;
    assert_eq!(attempts, 0, "the rate-limited try was refunded");
    wait_for_receives(&app, 2).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "waited as asked"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_delivery_retried() {
    let app = installed_app().await;
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"success": false, "error": "unauthorized"})),
        )
        .up_to_n_times(1)
        .mount(&app.pipedrive)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(
            &app.pipedrive,
            ACCESS_2,
            REFRESH_2,
            "base,messengers-integration",
        )))
        .mount(&app.pipedrive)
        .await;
    mount_receive(&app, ResponseTemplate::new(200)).await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.A", CUSTOMER, 1, "auth")],
    ))
    .await;
    wait_for_receives(&app, 2).await;
    let calls = received(&app).await;
    assert_eq!(
        calls[0].1.headers["authorization"],
        format!("Bearer {ACCESS_1}").as_str()
    );
    assert_eq!(
        calls[1].1.headers["authorization"],
        format!("Bearer {ACCESS_2}").as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retired_channels_api_switches_the_channel_to_the_timeline_and_hands_it_its_work() {
    let app = installed_app().await;
    mount_receive(
        &app,
        ResponseTemplate::new(410).set_body_json(json!({"success": false, "error": "Gone"})),
    )
    .await;
    for i in 0..2 {
        let m = text_message(&format!("wamid.G{i}"), CUSTOMER, i, "hello?");
        app.post_webhook(&inbound_webhook(PHONE_NUMBER_IDS[0], CUSTOMER, "Ana", vec![m]))
            .await;
    }
    // Both messages stored and no delivery job left: both were handed over (a parked or dead
    // job would stay; a finished delivery leaves no row).
    eventually(Duration::from_secs(10), || async {
        let (stored, deliveries, timeline): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM messages WHERE wamid IN ('wamid.G0', 'wamid.G1')),
                    (SELECT count(*) FROM jobs WHERE kind = 'deliver_message'),
                    (SELECT count(*) FROM jobs WHERE kind = 'timeline_note')",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        // The CRM timeline writes them.
        (stored == 2 && deliveries == 0 && timeline >= 1).then_some(())
    })
    .await;
    let mode = channel_mode(&app, PHONE_NUMBER_IDS[0]).await;
    assert_eq!(mode, "timeline");
    assert_eq!(received(&app).await.len(), 1, "no more calls to a retired API");
    app.stop().await;
}

#[tokio::test]
async fn status_changes_reach_pipedrive_under_the_same_message_id() {
    let app = installed_app().await;
    mount_receive(&app, ResponseTemplate::new(200)).await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.IN", CUSTOMER, 1, "hi")],
    ))
    .await;
    wait_for_receives(&app, 1).await;
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, channel_id, direction, wamid, sender_id, kind, body, status, sent_at)
         SELECT $1, conversation_id, channel_id, 'outbound', 'wamid.OUT', $2, 'text', 'Our offer', 'sent', now()
         FROM messages WHERE wamid = 'wamid.IN'",
    )
    .bind(id)
    .bind(PHONE_NUMBER_IDS[0])
    .execute(&app.db)
    .await
    .unwrap();
    for value in ["delivered", "read"] {
        let status = json!({"id": "wamid.OUT", "status": value, "timestamp": "5", "recipient_id": CUSTOMER});
        app.post_webhook(&status_webhook(PHONE_NUMBER_IDS[0], vec![status]))
            .await;
    }
    // Each delivery sends the message's state at that moment; a delivered already overtaken by the
    // read is not sent at all. The last one is read and nothing ever goes backwards or twice.
    let bodies = eventually(Duration::from_secs(10), || async {
        let bodies: Vec<Value> = received(&app).await.into_iter().map(|(b, _)| b).collect();
        (bodies.last().is_some_and(|b| b["status"] == "read")).then_some(bodies)
    })
    .await;
    let id = id.to_string();
    let updates = &bodies[1..];
    assert!(updates.iter().all(|b| b["id"] == id.as_str()));
    assert!(updates.len() <= 2, "one delivery per change");
    assert!(
        updates
            .windows(2)
            .all(|w| w[0]["status"] == "delivered" && w[1]["status"] == "read")
    );
    // The first update may already carry "read", so it can be the only one seen so far.
    assert_eq!(updates[0]["sender_id"], PHONE_NUMBER_IDS[0]);
    assert!(
        updates[0].get("reply_by").is_none(),
        "no reply window on our own messages"
    );
    app.stop().await;
}

#[tokio::test]
async fn media_is_delivered_with_a_working_signed_link() {
    let app = installed_app().await;
    mount_receive(&app, ResponseTemplate::new(200)).await;
    let bytes = b"%PDF-1.7 quote".to_vec();
    mount_graph_media(&app, "doc-1", "application/pdf", &bytes).await;
    let document = json!({"from": CUSTOMER, "id": "wamid.DOC", "timestamp": "7", "type": "document",
        "document": {"id": "doc-1", "mime_type": "application/pdf", "filename": "quote.pdf"}});
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![document],
    ))
    .await;
    let body = &wait_for_receives(&app, 1).await[0];
    assert_eq!(body["message"], "📄 quote.pdf");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["type"], "application/pdf");
    assert_eq!(attachment["name"], "quote.pdf");
    assert_eq!(attachment["size"], bytes.len());
    assert_eq!(attachment["link_expires"], true);
    assert!(
        attachment.get("preview_url").is_none(),
        "previews only for images"
    );
    let served = app
        .client
        .get(attachment["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(served.bytes().await.unwrap().to_vec(), bytes);
    app.stop().await;
}

#[tokio::test]
async fn media_that_cannot_be_fetched_is_forwarded_with_a_visible_note() {
    let app = installed_app().await;
    mount_receive(&app, ResponseTemplate::new(200)).await;
    Mock::given(method("GET"))
        .and(path("/v25.0/img-x"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.graph)
        .await;
    let image = json!({"from": CUSTOMER, "id": "wamid.IMGX", "timestamp": "7", "type": "image",
        "image": {"id": "img-x", "mime_type": "image/jpeg", "caption": "see this"}});
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![image],
    ))
    .await;
    let body = &wait_for_receives(&app, 1).await[0];
    let text = body["message"].as_str().unwrap();
    assert!(
        text.starts_with("see this\n⚠️ A file (image/jpeg) could not be fetched"),
        "{text}"
    );
    assert_eq!(body["attachments"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn messages_before_the_install_wait_and_go_out_once_the_channel_exists() {
    let app = spawn_app().await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.EARLY", CUSTOMER, 1, "anyone?")],
    ))
    .await;
    eventually(Duration::from_secs(10), || async {
        let parked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'deliver_message' AND state = 'parked'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        (parked == 1).then_some(())
    })
    .await;
    mount_receive(&app, ResponseTemplate::new(200)).await;
    installed(&app).await;
    let body = &wait_for_receives(&app, 1).await[0];
    assert_eq!(body["message"], "anyone?");
    app.stop().await;
}
