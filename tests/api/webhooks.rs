//! Meta's side: the verification handshake, signatures, persist-before-ack, and processing of
//! every message type and status into the store.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    APP_SECRET, PHONE_NUMBER_IDS, TestApp, VERIFY_TOKEN, assert_error, eventually, fresh_database,
    inbound_webhook, message_count, spawn_app, spawn_app_behind_proxy, spawn_app_on_database, status_webhook,
    text_message,
};

const CUSTOMER: &str = "5511987654321";

async fn event_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(db)
        .await
        .unwrap()
}

/// Waits until every stored webhook is processed and returns the states.
async fn processed(db: &PgPool) -> Vec<(String, Option<String>)> {
    eventually(Duration::from_secs(10), || async {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT state, note FROM webhook_events ORDER BY id")
                .fetch_all(db)
                .await
                .unwrap();
        (!rows.is_empty() && rows.iter().all(|(s, _)| s != "pending")).then_some(rows)
    })
    .await
}

/// Posts a text message from the customer to the first number; the answer's status.
async fn text_from_customer(app: &TestApp, wamid: &str, timestamp: i64, text: &str) -> u16 {
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message(wamid, CUSTOMER, timestamp, text)],
    );
    app.post_webhook(&hook).await.status().as_u16()
}

/// A counter's value on `/metrics`, 0 when it was never counted.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |count| count.parse().unwrap())
}

async fn message_body(db: &PgPool, wamid: &str) -> String {
    sqlx::query_scalar("SELECT body FROM messages WHERE wamid = $1")
        .bind(wamid)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn handshake_echoes_the_challenge_only_for_our_token() {
    let app = spawn_app().await;
    let ok = app
        .get(&format!(
            "/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
        ))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "text/plain");
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=test-verify-token",
        "hub.mode=subscribe&hub.verify_token=test-verify-token",
        "",
    ] {
        let response = app.get(&format!("/webhooks/whatsapp?{query}")).await;
        assert_eq!(response.status(), 403, "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn unsigned_or_badly_signed_webhooks_are_refused_and_not_stored() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&inbound_webhook(PHONE_NUMBER_IDS[0], CUSTOMER, "Ana", vec![])).unwrap();
    let good = pipedrive_whatsapp::whatsapp::signature::sign(APP_SECRET.as_bytes(), &body);
    let other_body = pipedrive_whatsapp::whatsapp::signature::sign(APP_SECRET.as_bytes(), b"{}");
    let wrong_key = pipedrive_whatsapp::whatsapp::signature::sign(b"not-the-secret", &body);
    for signature in [
        None,
        Some("sha256=00"),
        Some(other_body.as_str()),
        Some(wrong_key.as_str()),
    ] {
        let mut request = app.client.post(app.url("/webhooks/whatsapp")).body(body.clone());
        if let Some(s) = signature {
            request = request.header("x-hub-signature-256", s);
        }
        assert_error(request.send().await.unwrap(), 401, "UNAUTHORIZED").await;
    }
    assert_eq!(event_count(&app.db).await, 0);
    let accepted = app
        .client
        .post(app.url("/webhooks/whatsapp"))
        .header("x-hub-signature-256", good)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    assert_eq!(event_count(&app.db).await, 1, "stored before the 200");
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_with_a_good_signature_is_a_400_and_nothing_else() {
    let app = spawn_app().await;
    let body = b"{\"object\": \"whatsapp_business_account\", ";
    let response = app
        .client
        .post(app.url("/webhooks/whatsapp"))
        .header(
            "x-hub-signature-256",
            pipedrive_whatsapp::whatsapp::signature::sign(APP_SECRET.as_bytes(), body),
        )
        .body(&body[..])
        .send()
        .await
        .unwrap();
    let message = assert_error(response, 400, "BAD_REQUEST").await;
    assert!(message.contains("JSON"), "{message}");
    assert_eq!(event_count(&app.db).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn bodies_up_to_3_mb_are_accepted_and_larger_ones_refused() {
    let app = spawn_app().await;
    let padding = "x".repeat(3 * 1024 * 1024);
    let big = json!({"object": "whatsapp_business_account", "entry": [], "padding": padding});
    assert_eq!(app.post_webhook(&big).await.status(), 200);
    let huge =
        json!({"object": "whatsapp_business_account", "entry": [], "padding": "y".repeat(5 * 1024 * 1024)});
    assert_error(app.post_webhook(&huge).await, 413, "PAYLOAD_TOO_LARGE").await;
    app.stop().await;
}

#[tokio::test]
async fn concurrent_webhooks_are_each_stored_exactly_once_before_their_200() {
    let app = spawn_app().await;
    let hooks: Vec<Value> = (0..200)
        .map(|i| {
            inbound_webhook(
                PHONE_NUMBER_IDS[0],
                CUSTOMER,
                "Ana",
                vec![text_message(
                    &format!("wamid.BURST-{i}"),
                    CUSTOMER,
                    i,
                    &format!("message {i}"),
                )],
            )
        })
        .collect();
    let statuses = join_all(
        hooks
            .iter()
            .map(|hook| async { app.post_webhook(hook).await.status() }),
    )
    .await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let mut stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM webhook_events")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let mut posted: Vec<Vec<u8>> = hooks
        .iter()
        .map(|hook| serde_json::to_vec(hook).unwrap())
        .collect();
    assert_eq!(stored.len(), posted.len(), "one row per webhook");
    stored.sort();
    posted.sort();
    assert!(stored == posted, "every body is stored byte for byte");
    app.stop().await;
}

#[tokio::test]
async fn a_text_message_becomes_contact_conversation_message_and_delivery_job() {
    let app = spawn_app().await;
    let ts = 1_763_800_000;
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana Souza",
        vec![text_message("wamid.T1", CUSTOMER, ts, "Hi!")],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    assert_eq!(processed(&app.db).await, [("processed".to_string(), None)]);

    let (name, wa_id): (String, String) = sqlx::query_as("SELECT profile_name, wa_id FROM contacts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((name.as_str(), wa_id.as_str()), ("Ana Souza", CUSTOMER));
    let (direction, status, body, sent_at): (String, String, String, i64) = sqlx::query_as(
        "SELECT direction, status, body, extract(epoch from sent_at)::bigint FROM messages WHERE wamid = 'wamid.T1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (direction.as_str(), status.as_str(), body.as_str(), sent_at),
        ("inbound", "sent", "Hi!", ts)
    );
    let (last_inbound, seen): (i64, bool) =
        sqlx::query_as("SELECT extract(epoch from last_inbound_at)::bigint, seen FROM conversations")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((last_inbound, seen), (ts, false));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'deliver_message'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_same_webhook_three_times_stores_one_message_and_one_delivery() {
    let app = spawn_app().await;
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.DUP", CUSTOMER, 1_763_800_000, "once")],
    );
    for _ in 0..3 {
        assert_eq!(app.post_webhook(&hook).await.status(), 200);
    }
    let states = processed(&app.db).await;
    assert_eq!(states.len(), 3);
    let (messages, deliveries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM jobs WHERE kind = 'deliver_message')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((messages, deliveries), (1, 1));
    app.stop().await;
}

#[tokio::test]
async fn every_entry_change_and_message_of_a_batch_is_processed() {
    let app = spawn_app().await;
    let mut hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![
            text_message("wamid.B1", CUSTOMER, 1, "one"),
            text_message("wamid.B2", CUSTOMER, 2, "two"),
        ],
    );
    let second = inbound_webhook(
        PHONE_NUMBER_IDS[1],
        "4915112345678",
        "Jonas",
        vec![text_message("wamid.B3", "4915112345678", 3, "drei")],
    );
    let extra_change = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        "4915112345678",
        "Jonas",
        vec![text_message("wamid.B4", "4915112345678", 4, "vier")],
    );
    hook["entry"]
        .as_array_mut()
        .unwrap()
        .push(second["entry"][0].clone());
    hook["entry"][0]["changes"]
        .as_array_mut()
        .unwrap()
        .push(extra_change["entry"][0]["changes"][0].clone());
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    processed(&app.db).await;
    let wamids: Vec<String> = sqlx::query_scalar("SELECT wamid FROM messages ORDER BY wamid")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(wamids, ["wamid.B1", "wamid.B2", "wamid.B3", "wamid.B4"]);
    let conversations: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(conversations, 3, "two numbers × customers");
    app.stop().await;
}

#[tokio::test]
async fn a_new_customer_known_by_two_identifiers_in_one_batch_is_one_contact() {
    let app = spawn_app().await;
    let mut with_bsuid = text_message("wamid.ID2", CUSTOMER, 2, "two");
    with_bsuid["from_user_id"] = json!("BR.1234567890");
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.ID1", CUSTOMER, 1, "one"), with_bsuid],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    assert_eq!(processed(&app.db).await, [("processed".to_string(), None)]);
    let contacts: Vec<(Option<String>, Option<String>)> = sqlx::query_as("SELECT wa_id, bsuid FROM contacts")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        contacts,
        [(Some(CUSTOMER.to_string()), Some("BR.1234567890".to_string()))]
    );
    let (conversations, messages): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(DISTINCT conversation_id) FROM messages)",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((conversations, messages), (1, 1));
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_for_an_unknown_number_is_acknowledged_and_parked() {
    let app = spawn_app().await;
    let hook = inbound_webhook(
        "999000111",
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.X", CUSTOMER, 1, "lost?")],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
    let states = processed(&app.db).await;
    assert_eq!(states[0].0, "parked");
    assert!(states[0].1.as_deref().unwrap().contains("999000111"));
    let messages = message_count(&app.db).await;
    assert_eq!(messages, 0, "never attached to another number's channel");
    // The recorder is the test process's, and other tests park webhooks too.
    assert!(counter(&app, "webhook_unknown_number_total").await >= 1);
    app.stop().await;
}

#[tokio::test]
async fn every_message_type_is_stored_with_a_readable_rendering() {
    let app = spawn_app().await;
    let m = |id: &str, ts: i64, rest: Value| {
        let mut item = json!({"from": CUSTOMER, "id": id, "timestamp": ts.to_string()});
        item.as_object_mut()
            .unwrap()
            .extend(rest.as_object().unwrap().clone());
        item
    };
    let items = vec![
        m(
            "w.text",
            1,
            json!({"type": "text", "text": {"body": "Is the offer valid?"}}),
        ),
        m(
            "w.loc",
            2,
            json!({"type": "location", "location": {"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Berlin"}}),
        ),
        m(
            "w.contact",
            3,
            json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Bruno"}, "phones": [{"phone": "+55 11 91234"}]}]}),
        ),
        m(
            "w.button",
            4,
            json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "s1", "title": "09:30", "description": "Tuesday"}}}),
        ),
        m(
            "w.quick",
            5,
            json!({"type": "button", "button": {"text": "Call me back", "payload": "CB"}}),
        ),
        m(
            "w.react",
            6,
            json!({"type": "reaction", "reaction": {"message_id": "w.text", "emoji": "👍"}}),
        ),
        m(
            "w.reply",
            7,
            json!({"type": "text", "text": {"body": "Still?"}, "context": {"from": CUSTOMER, "id": "w.text"}}),
        ),
        m(
            "w.edit",
            8,
            json!({"type": "edit", "edit": {"original_message_id": "w.reply", "message": {"type": "text", "text": {"body": "Still valid?"}}}}),
        ),
        m(
            "w.revoke",
            9,
            json!({"type": "revoke", "revoke": {"original_message_id": "w.quick"}}),
        ),
        m(
            "w.ad",
            10,
            json!({"type": "text", "text": {"body": "Saw your ad"}, "referral": {"source_type": "ad", "headline": "Spring sale", "source_url": "https://fb.me/x"}}),
        ),
        m(
            "w.unsup",
            11,
            json!({"type": "unsupported", "unsupported": {"type": "poll"}, "errors": [{"code": 131051, "title": "Message type unknown"}]}),
        ),
        m("w.future", 12, json!({"type": "hologram", "hologram": {}})),
        m(
            "w.unreact",
            13,
            json!({"type": "reaction", "reaction": {"message_id": "w.text", "emoji": ""}}),
        ),
        m(
            "w.order",
            14,
            json!({"type": "order", "order": {"catalog_id": "c", "product_items": [{"product_retailer_id": "SKU1", "quantity": 2, "item_price": 9.5, "currency": "EUR"}]}}),
        ),
    ];
    assert_eq!(
        app.post_webhook(&inbound_webhook(PHONE_NUMBER_IDS[0], CUSTOMER, "Ana", items))
            .await
            .status(),
        200
    );
    processed(&app.db).await;
    let expect = [
        ("w.text", "Is the offer valid?"),
        (
            "w.loc",
            "📍 Office\nBerlin\n52.520000, 13.405000\nhttps://www.google.com/maps/search/?api=1&query=52.520000,13.405000",
        ),
        ("w.contact", "👤 Shared contact: Bruno\nPhone: +55 11 91234"),
        ("w.button", "Selected “09:30” (Tuesday)"),
        ("w.react", "Reacted 👍 to: “Is the offer valid?”"),
        ("w.unreact", "Removed a reaction from: “Is the offer valid?”"),
        (
            "w.edit",
            "✏️ Edited “↩️ Reply to “Is the offer valid?” Still?” to: Still valid?",
        ),
        ("w.reply", "Still valid?\n(edited)"),
        ("w.quick", "🗑️ Deleted by the customer: “Tapped “Call me back””"),
        ("w.revoke", "🗑️ Deleted the message “Tapped “Call me back””"),
        (
            "w.ad",
            "Saw your ad\n📣 Came from ad: Spring sale (https://fb.me/x)",
        ),
        ("w.order", "🛒 Order with 1 item(s)\n2 × SKU1 at 9.5 EUR"),
    ];
    for (wamid, body) in expect {
        assert_eq!(message_body(&app.db, wamid).await, body, "{wamid}");
    }
    assert!(message_body(&app.db, "w.unsup").await.contains("(poll)"));
    assert!(message_body(&app.db, "w.future").await.contains("“hologram”"));
    let raw: Value = sqlx::query_scalar("SELECT raw FROM messages WHERE wamid = 'w.future'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(raw["type"], "hologram", "raw JSON kept");
    app.stop().await;
}

/// An outbound message stored as the send path stores it, for status tests.
async fn outbound_message(app: &crate::helpers::TestApp, wamid: &str) -> uuid::Uuid {
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.IN", CUSTOMER, 1, "hi")],
    );
    app.post_webhook(&hook).await;
    processed(&app.db).await;
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, channel_id, direction, wamid, sender_id, kind, body, status, sent_at)
         SELECT $1, conversation_id, channel_id, 'outbound', $2, '109876543210001', 'text', 'Hello', 'sent', now()
         FROM messages WHERE wamid = 'wamid.IN'",
    )
    .bind(id)
    .bind(wamid)
    .execute(&app.db)
    .await
    .unwrap();
    id
}

async fn status_of(db: &PgPool, id: uuid::Uuid) -> (String, Option<i32>, Option<String>) {
    sqlx::query_as("SELECT status, error_code, error_detail FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

fn status(wamid: &str, value: &str, ts: i64) -> Value {
    json!({"id": wamid, "status": value, "timestamp": ts.to_string(), "recipient_id": CUSTOMER})
}

#[tokio::test]
async fn statuses_out_of_order_never_move_a_message_backwards() {
    let app = spawn_app().await;
    let id = outbound_message(&app, "wamid.OUT1").await;
    for value in ["read", "delivered", "sent", "failed"] {
        app.post_webhook(&status_webhook(
            PHONE_NUMBER_IDS[0],
            vec![status("wamid.OUT1", value, 10)],
        ))
        .await;
    }
    processed(&app.db).await;
    assert_eq!(status_of(&app.db, id).await, ("read".into(), None, None));
    let updates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'deliver_message' AND payload->>'message_id' = $1",
    )
    .bind(id.to_string())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(updates, 1, "only the one real change is sent to Pipedrive");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_status_keeps_metas_error_and_is_terminal() {
    let app = spawn_app().await;
    let id = outbound_message(&app, "wamid.OUT2").await;
    let mut failed = status("wamid.OUT2", "failed", 11);
    failed["errors"] = json!([{"code": 131047, "title": "Re-engagement message",
        "error_data": {"details": "Message failed to send because more than 24 hours have passed"}}]);
    app.post_webhook(&status_webhook(PHONE_NUMBER_IDS[0], vec![failed]))
        .await;
    app.post_webhook(&status_webhook(
        PHONE_NUMBER_IDS[0],
        vec![status("wamid.OUT2", "delivered", 12)],
    ))
    .await;
    processed(&app.db).await;
    let (state, code, detail) = status_of(&app.db, id).await;
    assert_eq!((state.as_str(), code), ("failed", Some(131047)));
    assert!(detail.unwrap().contains("24 hours"));
    app.stop().await;
}

#[tokio::test]
async fn a_status_that_overtakes_its_message_is_applied_once_the_message_is_known() {
    let app = spawn_app().await;
    app.post_webhook(&status_webhook(
        PHONE_NUMBER_IDS[0],
        vec![status("wamid.LATE", "delivered", 10)],
    ))
    .await;
    processed(&app.db).await;
    let id = outbound_message(&app, "wamid.LATE").await;
    eventually(Duration::from_secs(10), || async {
        (status_of(&app.db, id).await.0 == "delivered").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_status_is_matched_by_our_callback_data_before_the_wamid_is_stored() {
    let app = spawn_app().await;
    let id = outbound_message(&app, "wamid.KNOWN").await;
    sqlx::query("UPDATE messages SET wamid = NULL WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    let mut read = status("wamid.NOT-YET-STORED", "read", 10);
    read["biz_opaque_callback_data"] = json!(format!("out:{id}"));
    app.post_webhook(&status_webhook(PHONE_NUMBER_IDS[0], vec![read]))
        .await;
    processed(&app.db).await;
    assert_eq!(status_of(&app.db, id).await.0, "read");
    app.stop().await;
}

#[tokio::test]
async fn the_database_being_down_gives_503_and_the_service_recovers() {
    let (app, proxy, database) = spawn_app_behind_proxy().await;
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.DOWN", CUSTOMER, 1, "hello?")],
    );
    proxy.cut();
    assert_error(app.post_webhook(&hook).await, 503, "SERVICE_UNAVAILABLE").await;
    proxy.restore();
    eventually(Duration::from_secs(15), || async {
        (app.post_webhook(&hook).await.status() == 200).then_some(())
    })
    .await;
    let direct = PgPool::connect(&database).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE wamid = 'wamid.DOWN'")
            .fetch_one(&direct)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_channel_removed_after_an_earlier_batch_found_it_is_not_written_to() {
    let app = spawn_app().await;
    assert_eq!(text_from_customer(&app, "wamid.BEFORE", 1, "hi").await, 200);
    assert_eq!(processed(&app.db).await, [("processed".to_string(), None)]);
    // The ingest loop remembers the channels it found; this one goes behind its back.
    sqlx::query("DELETE FROM channels WHERE phone_number_id = $1")
        .bind(PHONE_NUMBER_IDS[0])
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        text_from_customer(&app, "wamid.AFTER", 2, "still there?").await,
        200
    );
    let states = processed(&app.db).await;
    assert_eq!(states[1].0, "parked", "{states:?}");
    assert!(states[1].1.as_deref().unwrap().contains(PHONE_NUMBER_IDS[0]));
    let messages = message_count(&app.db).await;
    assert_eq!(messages, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_customer_removed_after_an_earlier_batch_found_them_is_stored_again() {
    let app = spawn_app().await;
    assert_eq!(text_from_customer(&app, "wamid.KNOWN", 1, "hi").await, 200);
    assert_eq!(processed(&app.db).await, [("processed".to_string(), None)]);
    // As a purge of the company's data does, behind the back of the ingest loop, which
    // remembers the customers it met.
    sqlx::query("DELETE FROM conversations")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM contacts")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        text_from_customer(&app, "wamid.AGAIN", 2, "hello again").await,
        200
    );
    let states = processed(&app.db).await;
    assert_eq!(states[1], ("processed".to_string(), None));
    let (contacts, conversations, stored): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM contacts WHERE wa_id = $1),
                (SELECT count(*) FROM conversations),
                (SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
                 WHERE m.wamid = 'wamid.AGAIN')",
    )
    .bind(CUSTOMER)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((contacts, conversations, stored), (1, 1, 1));
    app.stop().await;
}

#[tokio::test]
async fn the_retention_settings_decide_what_the_purge_at_start_up_deletes() {
    let database = fresh_database().await;
    let db = PgPool::connect(&database).await.unwrap();
    pipedrive_whatsapp::store::migrate(&db).await.unwrap();
    // In arrival order: state and age in hours. With the defaults (7 and 30 days) all would stay.
    let stored = [
        ("parked", 120),
        ("processed", 72),
        ("parked", 72),
        ("processed", 60),
        ("failed", 60),
        ("processed", 24),
        ("processed", 0),
    ];
    for (state, hours) in stored {
        sqlx::query(
            "INSERT INTO webhook_events (body, state, received_at, processed_at)
             VALUES ('{}', $1, now() - make_interval(hours => $2), now())",
        )
        .bind(state)
        .bind(hours)
        .execute(&db)
        .await
        .unwrap();
    }

    let app = spawn_app_on_database(&database, |env| {
        env.insert("WEBHOOK_RETENTION_DAYS".into(), "2".into());
        env.insert("PARKED_WEBHOOK_RETENTION_DAYS".into(), "4".into());
    })
    .await;
    // Processed ones go after two days, parked ones after four, failed ones stay; the walk
    // stops at the first webhook younger than two days.
    let left = eventually(Duration::from_secs(10), || async {
        let left: Vec<(String, i32)> = sqlx::query_as(
            "SELECT state, round(EXTRACT(EPOCH FROM now() - received_at) / 3600)::int
             FROM webhook_events ORDER BY id",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        (left.len() < stored.len()).then_some(left)
    })
    .await;
    let left: Vec<(&str, i32)> = left.iter().map(|(s, h)| (s.as_str(), *h)).collect();
    assert_eq!(
        left,
        [
            ("parked", 72),
            ("failed", 60),
            ("processed", 24),
            ("processed", 0)
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn webhooks_are_deleted_after_their_retention_parked_ones_after_30_days() {
    use pipedrive_whatsapp::whatsapp::retention;
    let app = spawn_app().await;
    // Oldest first: a webhook for a number not served, which is parked, then five messages.
    let parked = inbound_webhook(
        "555000111",
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.PARKED", CUSTOMER, 1, "hi")],
    );
    app.post_webhook(&parked).await;
    for n in 0..5 {
        assert_eq!(
            text_from_customer(&app, &format!("wamid.KEPT-{n}"), n + 2, "hello").await,
            200
        );
    }
    assert_eq!(processed(&app.db).await.len(), 6);
    // The parked webhook and the first three messages arrived eight days ago.
    sqlx::query(
        "UPDATE webhook_events SET received_at = now() - interval '8 days'
         WHERE id IN (SELECT id FROM webhook_events ORDER BY id LIMIT 4)",
    )
    .execute(&app.db)
    .await
    .unwrap();

    // Two looked at per statement: the walk steps over the parked webhook, deletes the three
    // old processed ones, and stops at the first recent one, resting between statements.
    let pace = pipedrive_whatsapp::purge::Pace { scan: 2, rest: 1 };
    let running = tokio_util::sync::CancellationToken::new();
    let now = chrono::Utc::now();
    let purged = retention::purge(
        &app.db,
        retention::Cutoffs::at(&app.config.retention, now),
        0,
        pace,
        &running,
    )
    .await
    .unwrap();
    assert_eq!((purged.deleted.processed, purged.deleted.parked), (3, 0));
    let left: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM webhook_events ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let states: Vec<&str> = left.iter().map(|(_, state)| state.as_str()).collect();
    assert_eq!(states, ["parked", "processed", "processed"]);
    // What they carried stays in the history.
    assert_eq!(message_count(&app.db).await, 5);
    // The next purge goes on behind the parked webhook, and finds nothing to delete.
    assert!(purged.resume_after >= left[0].0, "{purged:?} {left:?}");
    let again = retention::purge(
        &app.db,
        retention::Cutoffs::at(&app.config.retention, now),
        purged.resume_after,
        pace,
        &running,
    )
    .await
    .unwrap();
    assert_eq!((again.deleted.processed, again.deleted.parked), (0, 0));

    // A parked webhook goes 30 days after it arrived (by default), in a walk from the oldest.
    assert_eq!(
        app.config.retention.parked_webhooks,
        Duration::from_secs(30 * 86_400)
    );
    let a_month_later = now + chrono::TimeDelta::days(22) + chrono::TimeDelta::minutes(1);
    let cutoffs = retention::Cutoffs {
        parked: retention::Cutoffs::at(&app.config.retention, a_month_later).parked,
        processed: retention::Cutoffs::at(&app.config.retention, now).processed,
    };
    let late = retention::purge(&app.db, cutoffs, 0, pace, &running)
        .await
        .unwrap();
    assert_eq!((late.deleted.processed, late.deleted.parked), (0, 1));
    assert_eq!(processed(&app.db).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn parked_webhooks_are_processed_once_replayed_after_the_number_is_served() {
    let app = spawn_app().await;
    let hook = inbound_webhook(
        "555000111",
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.LATE-NUMBER", CUSTOMER, 1, "hi")],
    );
    app.post_webhook(&hook).await;
    assert_eq!(processed(&app.db).await[0].0, "parked");
    sqlx::query("INSERT INTO channels (id, phone_number_id) VALUES ($1, '555000111')")
        .bind(uuid::Uuid::now_v7())
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        pipedrive_whatsapp::store::webhook_events::requeue(&app.db, "parked")
            .await
            .unwrap(),
        1
    );
    assert_eq!(processed(&app.db).await[0].0, "processed");
    assert_eq!(message_body(&app.db, "wamid.LATE-NUMBER").await, "hi");
    app.stop().await;
}

#[tokio::test]
async fn an_inbox_far_behind_gives_way_to_arrivals_and_still_works_through_them() {
    let app = spawn_app().await;
    // Another replica works through the inbox, and the webhooks pile up behind it.
    let holder = pipedrive_whatsapp::store::webhook_events::begin_holding_inbox(&app.db)
        .await
        .unwrap();
    for n in 0..300 {
        assert_eq!(
            text_from_customer(&app, &format!("wamid.B{n}"), n, "waiting").await,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    holder.rollback().await.unwrap();
    // Webhooks keep arriving while this process catches up.
    for n in 300..400 {
        assert_eq!(
            text_from_customer(&app, &format!("wamid.B{n}"), n, "arriving").await,
            200
        );
    }
    let states = processed(&app.db).await;
    assert_eq!(states.len(), 400);
    assert!(states.iter().all(|(state, _)| state == "processed"), "{states:?}");
    let stored = message_count(&app.db).await;
    assert_eq!(stored, 400);
    // Its first batch, which waited for the hold, found 300 webhooks committed since it
    // started, the oldest 600 ms old.
    assert!(counter(&app, "webhook_ingest_gave_way_total").await >= 1);
    app.stop().await;
}
