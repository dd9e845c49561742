//! The reading provider endpoints as Pipedrive calls them: shapes per the contract, Basic auth,
//! keyset pagination over random histories, cursors, senders, messages and templates.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::contract::{
    ConversationResponse, ConversationStatus, ConversationsResponse, Message, MessageStatus, SenderResponse,
    TemplatesResponse, assert_contract_time, assert_participants,
};
use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, PHONE_NUMBER_IDS, TestApp, WABA_ID, assert_error, assert_error_body,
    eventually, inbound_webhook, message_count, spawn_app, spawn_app_behind_proxy, text_message,
};

const CUSTOMER: &str = "5511987654321";

impl TestApp {
    /// A request as Pipedrive sends it (Basic client id and secret).
    pub fn provider(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
    }

    /// `GET path` as Pipedrive, as JSON of type `T`.
    pub async fn provider_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.provider(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("contract shape")
    }
}

/// Waits until the ingest loop has stored `n` messages.
async fn stored(db: &PgPool, n: i64) {
    eventually(Duration::from_secs(10), || async {
        (message_count(db).await >= n).then_some(())
    })
    .await;
}

/// A small xorshift generator: reproducible random histories without another dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Inserts `shape[i]` messages into conversation i (timestamps with many ties); returns each
/// conversation's message ids in chronological order, keyed by conversation id.
async fn seed(db: &PgPool, rng: &mut Rng, shape: &[usize]) -> HashMap<Uuid, Vec<Uuid>> {
    let channel: Uuid = sqlx::query_scalar("SELECT id FROM channels WHERE phone_number_id = $1")
        .bind(PHONE_NUMBER_IDS[0])
        .fetch_one(db)
        .await
        .unwrap();
    let mut expected = HashMap::new();
    for (i, &count) in shape.iter().enumerate() {
        let contact = Uuid::now_v7();
        sqlx::query("INSERT INTO contacts (id, wa_id, profile_name) VALUES ($1, $2, $3)")
            .bind(contact)
            .bind(format!("4915100000{i:03}"))
            .bind(format!("Customer {i}"))
            .execute(db)
            .await
            .unwrap();
        let conversation = Uuid::now_v7();
        let last = DateTime::<Utc>::from_timestamp(1_700_000_000 + rng.below(20) as i64, 0).unwrap();
        sqlx::query(
            "INSERT INTO conversations (id, channel_id, contact_id, last_message_at, last_inbound_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(conversation)
        .bind(channel)
        .bind(contact)
        .bind(last)
        .execute(db)
        .await
        .unwrap();
        let mut messages = Vec::new();
        for _ in 0..count {
            let id = Uuid::now_v7();
            let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + rng.below(8) as i64, 0).unwrap();
            sqlx::query(
                "INSERT INTO messages (id, conversation_id, channel_id, direction, sender_id, kind, body, status, sent_at)
                 VALUES ($1, $2, $3, 'inbound', $4, 'text', $5, 'sent', $6)",
            )
            .bind(id)
            .bind(conversation)
            .bind(channel)
            .bind(contact.to_string())
            .bind(format!("message {id}"))
            .bind(at)
            .execute(db)
            .await
            .unwrap();
            messages.push((at, id));
        }
        messages.sort();
        expected.insert(conversation, messages.into_iter().map(|(_, id)| id).collect());
    }
    expected
}

fn ids(messages: &[Message]) -> Vec<Uuid> {
    messages.iter().map(|m| Uuid::parse_str(&m.id).unwrap()).collect()
}

#[tokio::test]
async fn pagination_visits_every_conversation_and_message_once_in_order() {
    let app = spawn_app().await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..6 {
        sqlx::query("DELETE FROM contacts")
            .execute(&app.db)
            .await
            .unwrap();
        let shape: Vec<usize> = (0..1 + rng.below(9)).map(|_| rng.below(9) as usize).collect();
        let expected = seed(&app.db, &mut rng, &shape).await;
        let (conversations_limit, messages_limit) = (1 + rng.below(4), 1 + rng.below(4));
        let mut seen: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        let mut order = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/channels/{}/conversations?conversations_limit={conversations_limit}&messages_limit={messages_limit}",
                PHONE_NUMBER_IDS[0]
            );
            if let Some(cursor) = &after {
                path.push_str(&format!("&after={cursor}"));
            }
            let page: ConversationsResponse = app.provider_get(&path).await;
            assert!(page.success && page.data.len() as u64 <= conversations_limit);
            for conversation in &page.data {
                assert_participants(conversation);
                let id = Uuid::parse_str(&conversation.id).unwrap();
                assert!(
                    !seen.contains_key(&id),
                    "round {round}: conversation {id} seen twice"
                );
                order.push(id);
                // Older pages come first in the walk, so messages are collected backwards.
                let mut chunks = vec![ids(conversation.messages.as_ref().unwrap())];
                assert!(chunks[0].len() as u64 <= messages_limit);
                let mut cursor = conversation
                    .next_messages_cursor
                    .clone()
                    .filter(|c| !c.is_empty());
                while let Some(c) = cursor {
                    let older: ConversationResponse = app
                        .provider_get(&format!(
                            "/api/channels/{}/conversations/{id}?messages_limit={messages_limit}&after={c}",
                            PHONE_NUMBER_IDS[0]
                        ))
                        .await;
                    assert!(older.success);
                    chunks.push(ids(older.data.messages.as_ref().unwrap()));
                    assert_eq!(
                        older.additional_data.and_then(|a| a.after),
                        older.data.next_messages_cursor.clone().filter(|c| !c.is_empty())
                    );
                    cursor = older.data.next_messages_cursor.filter(|c| !c.is_empty());
                }
                seen.insert(id, chunks.into_iter().rev().flatten().collect());
            }
            after = page
                .additional_data
                .and_then(|a| a.after)
                .filter(|a| !a.is_empty());
            if after.is_none() {
                break;
            }
        }
        assert_eq!(
            seen, expected,
            "round {round}: shape {shape:?}, limits {conversations_limit}/{messages_limit}"
        );
        let activity: Vec<(DateTime<Utc>, Uuid)> = sqlx::query_as(
            "SELECT last_message_at, id FROM conversations ORDER BY last_message_at DESC, id DESC",
        )
        .fetch_all(&app.db)
        .await
        .unwrap();
        assert_eq!(
            order,
            activity.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
            "most recent first"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn conversations_follow_the_contract_shape_and_defaults() {
    let app = spawn_app().await;
    let messages: Vec<_> = (0..35)
        .map(|i| {
            text_message(
                &format!("wamid.{i}"),
                CUSTOMER,
                1_763_800_000 + i,
                &format!("m{i}"),
            )
        })
        .collect();
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana Souza",
        messages,
    ))
    .await;
    stored(&app.db, 35).await;
    let page: ConversationsResponse = app
        .provider_get(&format!("/api/channels/{}/conversations", PHONE_NUMBER_IDS[0]))
        .await;
    assert_eq!(page.data.len(), 1);
    assert!(
        page.additional_data.unwrap().after.is_none(),
        "no cursor on the last page"
    );
    let conversation = &page.data[0];
    assert_eq!(conversation.link, "");
    assert_eq!(conversation.status, ConversationStatus::Open);
    assert!(!conversation.seen);
    assert_participants(conversation);
    let participants = conversation.participants.as_ref().unwrap();
    assert_eq!(participants[0].id, PHONE_NUMBER_IDS[0]);
    assert_eq!(participants[1].name, "Ana Souza");
    let avatar = app
        .client
        .get(participants[1].avatar_url.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(avatar.headers()["content-type"], "image/svg+xml");
    assert!(avatar.text().await.unwrap().contains(">AS<"));
    let messages = conversation.messages.as_ref().unwrap();
    assert_eq!(messages.len(), 30, "default messages_limit");
    assert_eq!(messages.first().unwrap().message, "m5");
    assert_eq!(messages.last().unwrap().message, "m34", "newest last");
    for m in messages {
        assert_eq!(m.status, MessageStatus::Sent);
        assert!(m.attachments.as_ref().is_some_and(|a| a.is_empty()));
        assert_contract_time(&m.created_at);
        assert_contract_time(m.reply_by.as_deref().unwrap());
        assert_eq!(m.sender_id, participants[1].id);
    }
    assert!(
        conversation
            .next_messages_cursor
            .as_deref()
            .is_some_and(|c| !c.is_empty())
    );
    app.stop().await;
}

#[tokio::test]
async fn limits_are_capped_and_bad_parameters_and_cursors_are_400() {
    let app = spawn_app().await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.1", CUSTOMER, 1, "x")],
    ))
    .await;
    stored(&app.db, 1).await;
    let base = format!("/api/channels/{}/conversations", PHONE_NUMBER_IDS[0]);
    let capped: ConversationsResponse = app
        .provider_get(&format!("{base}?conversations_limit=100000&messages_limit=999"))
        .await;
    assert_eq!(capped.data.len(), 1);
    for query in [
        "conversations_limit=0",
        "conversations_limit=-3",
        "messages_limit=ten",
        "conversations_limit=99999999999999999999",
        "after=not-a-cursor",
        "after=%27%20OR%201%3D1%20--",
    ] {
        let response = app
            .provider(Method::GET, &format!("{base}?{query}"))
            .send()
            .await
            .unwrap();
        let message = assert_error(response, 400, "BAD_REQUEST").await;
        let named = query.split('=').next().unwrap();
        assert!(message.contains(named), "{query}: {message}");
    }
    // A cursor of a conversation list used on a conversation's messages is foreign.
    let conversation: Uuid = sqlx::query_scalar("SELECT id FROM conversations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let foreign = pipedrive_whatsapp::pipedrive::cursor::encode(
        pipedrive_whatsapp::pipedrive::cursor::Kind::Conversations,
        conversation,
        pipedrive_whatsapp::pipedrive::cursor::Cursor {
            at: Utc::now(),
            id: conversation,
        },
    );
    let response = app
        .provider(Method::GET, &format!("{base}/{conversation}?after={foreign}"))
        .send()
        .await
        .unwrap();
    assert!(
        assert_error(response, 400, "BAD_REQUEST")
            .await
            .contains("another list")
    );
    app.stop().await;
}

#[tokio::test]
async fn every_provider_route_requires_the_apps_basic_credentials() {
    let app = spawn_app().await;
    let channel = PHONE_NUMBER_IDS[0];
    let id = Uuid::now_v7();
    let routes = [
        (Method::GET, format!("/api/channels/{channel}/conversations")),
        (Method::GET, format!("/api/channels/{channel}/conversations/{id}")),
        (
            Method::GET,
            format!("/api/channels/{channel}/conversations/{id}/messages/{id}"),
        ),
        (Method::GET, format!("/api/channels/{channel}/messages/{id}")),
        (Method::GET, format!("/api/channels/{channel}/senders/{id}")),
        (Method::GET, format!("/api/channels/{channel}/templates")),
        (Method::POST, format!("/api/channels/{channel}/messages")),
        (Method::DELETE, format!("/api/channels/{channel}")),
    ];
    for (verb, route) in routes {
        let anonymous = app
            .client
            .request(verb.clone(), app.url(&route))
            .send()
            .await
            .unwrap();
        assert_error(anonymous, 401, "UNAUTHORIZED").await;
        let wrong = app
            .client
            .request(verb, app.url(&route))
            .basic_auth(CLIENT_ID, Some("wrong-secret"))
            .send()
            .await
            .unwrap();
        assert_error(wrong, 401, "UNAUTHORIZED").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_disabled_channels_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    for route in [
        "/api/channels/999/conversations".to_string(),
        format!(
            "/api/channels/{}/conversations/{}",
            PHONE_NUMBER_IDS[0],
            Uuid::now_v7()
        ),
        format!("/api/channels/{}/conversations/not-a-uuid", PHONE_NUMBER_IDS[0]),
        format!(
            "/api/channels/{}/messages/{}",
            PHONE_NUMBER_IDS[0],
            Uuid::now_v7()
        ),
        format!("/api/channels/{}/senders/{}", PHONE_NUMBER_IDS[0], Uuid::now_v7()),
        format!("/api/channels/{}/senders/12345", PHONE_NUMBER_IDS[0]),
    ] {
        let response = app.provider(Method::GET, &route).send().await.unwrap();
        assert_error(response, 404, "NOT_FOUND").await;
    }
    // A conversation is found only through the channel it is on.
    let (conversation, messages) = seed(&app.db, &mut Rng(7), &[2]).await.into_iter().next().unwrap();
    let elsewhere = app
        .provider(
            Method::GET,
            &format!(
                "/api/channels/{}/conversations/{conversation}",
                PHONE_NUMBER_IDS[1]
            ),
        )
        .send()
        .await
        .unwrap();
    assert_error(elsewhere, 404, "NOT_FOUND").await;
    let own: ConversationResponse = app
        .provider_get(&format!(
            "/api/channels/{}/conversations/{conversation}",
            PHONE_NUMBER_IDS[0]
        ))
        .await;
    let mut served = ids(own.data.messages.as_deref().unwrap_or_default());
    served.sort();
    let mut expected = messages;
    expected.sort();
    assert_eq!(served, expected);
    let removed = app
        .provider(Method::DELETE, &format!("/api/channels/{}", PHONE_NUMBER_IDS[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(
        removed.json::<serde_json::Value>().await.unwrap(),
        json!({"success": true})
    );
    let after = app
        .provider(
            Method::GET,
            &format!("/api/channels/{}/conversations", PHONE_NUMBER_IDS[1]),
        )
        .send()
        .await
        .unwrap();
    assert_error(after, 404, "NOT_FOUND").await;
    app.stop().await;
}

#[tokio::test]
async fn messages_and_senders_are_served_by_id() {
    let app = spawn_app().await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana Souza",
        vec![text_message("wamid.M", CUSTOMER, 1_763_800_000, "Hello")],
    ))
    .await;
    stored(&app.db, 1).await;
    let (id, conversation, contact): (Uuid, Uuid, Uuid) = sqlx::query_as(
        "SELECT m.id, m.conversation_id, c.contact_id FROM messages m JOIN conversations c ON c.id = m.conversation_id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let channel = PHONE_NUMBER_IDS[0];
    let short: Message = app
        .provider_get(&format!("/api/channels/{channel}/messages/{id}"))
        .await;
    let long: Message = app
        .provider_get(&format!(
            "/api/channels/{channel}/conversations/{conversation}/messages/{id}"
        ))
        .await;
    assert_eq!(
        (short.id.as_str(), long.message.as_str()),
        (id.to_string().as_str(), "Hello")
    );
    let wrong_conversation = app
        .provider(
            Method::GET,
            &format!(
                "/api/channels/{channel}/conversations/{}/messages/{id}",
                Uuid::now_v7()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_error(wrong_conversation, 404, "NOT_FOUND").await;
    let customer: SenderResponse = app
        .provider_get(&format!("/api/channels/{channel}/senders/{contact}"))
        .await;
    assert_eq!(
        (customer.data.name.as_str(), customer.data.id),
        ("Ana Souza", contact.to_string())
    );
    let business: SenderResponse = app
        .provider_get(&format!("/api/channels/{channel}/senders/{channel}"))
        .await;
    assert!(
        business.success
            && business
                .data
                .avatar_url
                .ends_with(&format!("/avatars/{channel}.svg"))
    );
    app.stop().await;
}

#[tokio::test]
async fn templates_come_from_every_page_of_the_business_account_and_are_cached() {
    let app = spawn_app().await;
    let graph = app.graph.uri();
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA_ID}/message_templates")))
        .and(query_param("after", "PAGE2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": "t3", "name": "reminder", "language": "de", "status": "APPROVED",
             "components": [{"type": "BODY", "text": "Hallo {{1}}, wir sehen uns am {{2}}."}]}]})))
        .expect(1)
        .mount(&app.graph)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA_ID}/message_templates")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [
                {"id": "t1", "name": "order_followup", "language": "en_US", "status": "APPROVED",
                 "components": [{"type": "HEADER", "format": "TEXT", "text": "Order"},
                                {"type": "BODY", "text": "Hello {{1}}, your order {{2}} has shipped."}]},
                {"id": "t2", "name": "draft", "language": "en_US", "status": "PENDING",
                 "components": [{"type": "BODY", "text": "not yet"}]}],
            "paging": {"cursors": {"after": "PAGE2"},
                       "next": format!("{graph}/v25.0/{WABA_ID}/message_templates?after=PAGE2")}})))
        .expect(1)
        .mount(&app.graph)
        .await;
    let route = format!("/api/channels/{}/templates", PHONE_NUMBER_IDS[0]);
    let first: TemplatesResponse = app.provider_get(&route).await;
    let second: TemplatesResponse = app.provider_get(&route).await;
    for list in [&first, &second] {
        assert!(list.success);
        let names: Vec<(&str, &str, &str)> = list
            .data
            .templates
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str(), t.language.as_str()))
            .collect();
        assert_eq!(
            names,
            [("t1", "order_followup", "en_US"), ("t3", "reminder", "de")]
        );
    }
    assert_eq!(
        first.data.templates[0].content,
        "Hello {{1}}, your order {{2}} has shipped."
    );
    app.stop().await;
}

#[tokio::test]
async fn get_message_by_id_hands_out_fresh_working_attachment_links() {
    let app = spawn_app().await;
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.P", CUSTOMER, 1, "photo")],
    ))
    .await;
    stored(&app.db, 1).await;
    let (message, conversation): (Uuid, Uuid) = sqlx::query_as("SELECT id, conversation_id FROM messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let mut conn = app.db.acquire().await.unwrap();
    let attachment = pipedrive_whatsapp::store::attachments::insert_stored(
        &mut conn,
        message,
        0,
        "image/png",
        Some("p.png"),
        b"\x89PNG",
    )
    .await
    .unwrap();
    let route = format!("/api/channels/{}/messages/{message}", PHONE_NUMBER_IDS[0]);
    let first: Message = app.provider_get(&route).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second: Message = app.provider_get(&route).await;
    let (a, b) = (&first.attachments.unwrap()[0], &second.attachments.unwrap()[0]);
    assert_ne!(a.url, b.url, "each call signs a new link");
    assert_eq!(
        (a.id.as_str(), a.mime_type.as_str(), a.name.as_deref(), a.size),
        (
            attachment.to_string().as_str(),
            "image/png",
            Some("p.png"),
            Some(4.0)
        )
    );
    assert_eq!(a.link_expires, Some(true));
    assert_eq!(a.preview_url.as_deref(), Some(a.url.as_str()));
    let bytes = app
        .client
        .get(&b.url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), b"\x89PNG");
    assert_eq!(first.status, MessageStatus::Sent);

    // The pages of conversations carry the same attachments, in position order.
    let second_file = pipedrive_whatsapp::store::attachments::insert_stored(
        &mut conn,
        message,
        1,
        "application/pdf",
        Some("invoice.pdf"),
        b"%PDF",
    )
    .await
    .unwrap();
    let by_id: ConversationResponse = app
        .provider_get(&format!(
            "/api/channels/{}/conversations/{conversation}",
            PHONE_NUMBER_IDS[0]
        ))
        .await;
    let listed: ConversationsResponse = app
        .provider_get(&format!("/api/channels/{}/conversations", PHONE_NUMBER_IDS[0]))
        .await;
    for conversation in [&by_id.data, &listed.data[0]] {
        let files = conversation.messages.as_ref().unwrap()[0]
            .attachments
            .as_ref()
            .unwrap();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.id.as_str(), f.mime_type.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                (attachment.to_string().as_str(), "image/png"),
                (second_file.to_string().as_str(), "application/pdf")
            ]
        );
    }
    app.stop().await;
}

/// Sends `request` and checks that it is refused as the contract throttles: 429
/// `RATE_LIMIT_EXCEEDED` with a message containing `why`, `Retry-After: seconds`, and a
/// `retry_by` that many seconds after the refusal, written to the millisecond.
async fn assert_throttled(request: reqwest::RequestBuilder, seconds: i64, why: &str) {
    let sent = Utc::now();
    let refused = request.send().await.unwrap();
    let answered = Utc::now();
    assert_eq!(refused.headers()["retry-after"], seconds.to_string().as_str());
    let body = assert_error_body(refused, 429, "RATE_LIMIT_EXCEEDED").await;
    assert!(body["data"]["message"].as_str().unwrap().contains(why), "{body}");
    let retry_by: DateTime<Utc> = body["data"]["retry_by"].as_str().unwrap().parse().unwrap();
    let wait = chrono::TimeDelta::seconds(seconds);
    assert!(
        retry_by >= sent + wait - chrono::TimeDelta::milliseconds(1),
        "{body}"
    );
    assert!(retry_by <= answered + wait, "{body}");
}

#[tokio::test]
async fn reads_past_the_limit_in_flight_are_refused_at_once_and_the_rest_answered() {
    let app = spawn_app().await;
    // Every read below waits on Meta for the templates, holding its place: long enough that
    // the last of them gets there before the first is answered, on a busy machine too.
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA_ID}/message_templates")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": []}))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&app.graph)
        .await;
    let limit = app.config.database_max_connections as usize
        * pipedrive_whatsapp::http::read_limit::READS_PER_CONNECTION;
    let route = format!("/api/channels/{}/templates", PHONE_NUMBER_IDS[0]);
    let in_flight: Vec<_> = (0..limit)
        .map(|_| tokio::spawn(app.provider(Method::GET, &route).send()))
        .collect();
    eventually(Duration::from_secs(10), || async {
        let reached = app.graph.received_requests().await.unwrap_or_default().len();
        (reached == limit).then_some(())
    })
    .await;

    // The contract's way of saying "later": 429 with the time to try again.
    assert_throttled(app.provider(Method::GET, &route), 1, "Too many reads").await;
    // Writes are not held back by the reads.
    let unknown = app
        .provider(Method::DELETE, "/api/channels/999999")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    for read in in_flight {
        assert_eq!(read.await.unwrap().unwrap().status(), 200);
    }
    let after: TemplatesResponse = app.provider_get(&route).await;
    assert!(after.success);
    app.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_answered_as_the_contracts_429_and_reads_resume() {
    let (app, proxy, _) = spawn_app_behind_proxy().await;
    let conversations = format!("/api/channels/{}/conversations", PHONE_NUMBER_IDS[0]);
    let _: ConversationsResponse = app.provider_get(&conversations).await;

    proxy.cut();
    // The contract has no 5xx: the outage is throttling, with the time to try again.
    for request in [
        app.provider(Method::GET, &conversations),
        app.provider(Method::DELETE, &format!("/api/channels/{}", PHONE_NUMBER_IDS[0])),
    ] {
        assert_throttled(request, 5, "database is unavailable").await;
    }

    proxy.restore();
    eventually(Duration::from_secs(15), || async {
        let response = app.provider(Method::GET, &conversations).send().await.unwrap();
        (response.status() == 200).then_some(())
    })
    .await;
    app.stop().await;
}
