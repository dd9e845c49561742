//! The CRM timeline end to end: WhatsApp webhooks in, persons, deals, leads and notes out to the
//! fake Pipedrive, through the durable queue (debounce, rewrites in place, deleted notes, the
//! sink modes and the switch away from a retired Channels API).

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::crm_fake::{
    CUSTOMER, PERSON_ID, calls, created_notes, installed_after_retirement, mount_crm, mount_deals,
    mount_leads, mount_search, rewritten_notes,
};
use crate::helpers::{
    PHONE_NUMBER_IDS, TestApp, channel_mode, eventually, inbound_webhook, message_count, spawn_app,
    spawn_app_with, text_message,
};
use crate::pipedrive_fake::installed;

const RECEIVE: &str = "/api/v1/channels/messages/receive";
/// 2025-11-22 08:26:40 UTC.
const T0: i64 = 1_763_800_000;

async fn say(app: &TestApp, from: &str, name: &str, wamid: &str, at: i64, text: &str) {
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        from,
        name,
        vec![text_message(wamid, from, at, text)],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
}

async fn wait_for_notes(app: &TestApp, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(15), || async {
        let notes = created_notes(&app.pipedrive).await;
        (notes.len() >= n).then_some(notes)
    })
    .await
}

async fn wait_for_rewrites(app: &TestApp, n: usize) -> Vec<(i64, Value)> {
    eventually(Duration::from_secs(15), || async {
        let puts = rewritten_notes(&app.pipedrive).await;
        (puts.len() >= n).then_some(puts)
    })
    .await
}

/// Waits until no timeline or delivery work is left in the queue.
async fn settled(app: &TestApp) {
    eventually(Duration::from_secs(15), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind IN ('deliver_message', 'timeline_note') AND state <> 'done'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
}

async fn timeline_app() -> TestApp {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    app
}

#[tokio::test]
async fn a_conversation_day_is_one_note_rewritten_in_place() {
    let app = timeline_app().await;
    say(&app, CUSTOMER, "Ana", "wamid.T1", T0, "Hello <there>").await;
    let notes = wait_for_notes(&app, 1).await;
    let note = &notes[0];
    assert_eq!(note["person_id"], PERSON_ID);
    assert!(
        note.get("deal_id").is_none() && note.get("lead_id").is_none(),
        "{note}"
    );
    assert_eq!(note["add_time"], "2025-11-22 08:26:40");
    let content = note["content"].as_str().unwrap();
    assert!(
        content.starts_with(
            "<p><b>WhatsApp: Ana (+5511987654321) ↔ Acme Support</b><br><small>2025-11-22 (UTC)</small></p>"
        ),
        "{content}"
    );
    assert!(
        content.contains("<small>08:26</small> ← <b>Ana</b><br>Hello &lt;there&gt;</p>"),
        "{content}"
    );

    say(&app, CUSTOMER, "Ana", "wamid.T2", T0 + 60, "Are you there?").await;
    let puts = wait_for_rewrites(&app, 1).await;
    assert_eq!(puts[0].0, 9001, "the same note, rewritten");
    let content = puts[0].1["content"].as_str().unwrap();
    let (first, second) = (
        content.find("Hello").unwrap(),
        content.find("Are you there?").unwrap(),
    );
    assert!(first < second, "in order: {content}");
    settled(&app).await;
    assert_eq!(
        created_notes(&app.pipedrive).await.len(),
        1,
        "never a second note for the day"
    );
    assert!(
        calls(&app.pipedrive, "POST", RECEIVE).await.is_empty(),
        "nothing goes to the retired inbox"
    );
    let stored: (i64, String) = sqlx::query_as("SELECT note_id, content_hash FROM timeline_notes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.0, 9001);
    app.stop().await;
}

#[tokio::test]
async fn changes_within_the_debounce_interval_become_one_write() {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    let messages: Vec<Value> = (0..5)
        .map(|i| text_message(&format!("wamid.B{i}"), CUSTOMER, T0 + i, &format!("burst {i}")))
        .collect();
    app.post_webhook(&inbound_webhook(PHONE_NUMBER_IDS[0], CUSTOMER, "Ana", messages))
        .await;
    let notes = wait_for_notes(&app, 1).await;
    settled(&app).await;
    let content = notes[0]["content"].as_str().unwrap();
    assert!(
        (0..5).all(|i| content.contains(&format!("burst {i}"))),
        "{content}"
    );
    assert_eq!(created_notes(&app.pipedrive).await.len(), 1);
    assert!(
        rewritten_notes(&app.pipedrive).await.is_empty(),
        "five changes, one write"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_customer_nobody_has_becomes_a_person_named_after_the_profile() {
    let app = spawn_app().await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    say(&app, CUSTOMER, "Ana Souza", "wamid.N1", T0, "Oi").await;
    let notes = wait_for_notes(&app, 1).await;
    assert_eq!(notes[0]["person_id"], 501);
    let searches: Vec<String> = calls(&app.pipedrive, "GET", "/api/v2/persons/search")
        .await
        .iter()
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "term")
                .unwrap()
                .1
                .into_owned()
        })
        .collect();
    assert_eq!(
        searches,
        ["+5511987654321", "5511987654321", "+551187654321", "551187654321"],
        "the number and its national variant, with and without +"
    );
    let created = calls(&app.pipedrive, "POST", "/api/v2/persons").await;
    assert_eq!(created.len(), 1);
    let body: Value = serde_json::from_slice(&created[0].body).unwrap();
    assert_eq!(
        body,
        json!({"name": "Ana Souza", "phones": [{"value": "+5511987654321", "primary": true, "label": "mobile"}]})
    );

    // The mapping is cached: the next day's note needs no search and no new person.
    say(&app, CUSTOMER, "Ana Souza", "wamid.N2", T0 + 86_400, "Tchau").await;
    let notes = wait_for_notes(&app, 2).await;
    assert_eq!(notes[1]["person_id"], 501);
    assert_eq!(
        calls(&app.pipedrive, "GET", "/api/v2/persons/search").await.len(),
        4
    );
    assert_eq!(calls(&app.pipedrive, "POST", "/api/v2/persons").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_person_found_under_the_national_variant_is_used() {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "551187654321", &[77]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.V1", T0, "old number format").await;
    let notes = wait_for_notes(&app, 1).await;
    assert_eq!(notes[0]["person_id"], 77);
    assert!(calls(&app.pipedrive, "POST", "/api/v2/persons").await.is_empty());
    app.stop().await;
}

/// The state of the only conversation-day.
async fn day_state(app: &TestApp) -> (String, Option<String>) {
    eventually(Duration::from_secs(15), || async {
        let row: Option<(String, Option<String>)> = sqlx::query_as("SELECT state, reason FROM timeline_days")
            .fetch_optional(&app.db)
            .await
            .unwrap();
        row.filter(|(state, _)| state != "pending")
    })
    .await
}

#[tokio::test]
async fn an_ambiguous_number_gets_no_note_and_no_new_person() {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "+5511987654321", &[11, 12]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.A1", T0, "who am I?").await;
    let (state, reason) = day_state(&app).await;
    assert_eq!(state, "no_person");
    assert!(reason.unwrap().contains("several"));
    settled(&app).await;
    assert!(created_notes(&app.pipedrive).await.is_empty());
    assert!(calls(&app.pipedrive, "POST", "/api/v2/persons").await.is_empty());
    let (state, candidates): (String, Vec<i64>) =
        sqlx::query_as("SELECT state, candidates FROM timeline_persons")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((state.as_str(), candidates), ("ambiguous", vec![11, 12]));
    let kept = message_count(&app.db).await;
    assert_eq!(kept, 1, "the message stays with us");
    app.stop().await;
}

#[tokio::test]
async fn without_create_persons_an_unknown_number_gets_no_note() {
    let app = spawn_app_with(|env| {
        env.insert("CREATE_PERSONS".into(), "false".into());
    })
    .await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.C1", T0, "hi").await;
    let (state, reason) = day_state(&app).await;
    assert_eq!(state, "no_person");
    assert!(reason.unwrap().contains("CREATE_PERSONS"));
    settled(&app).await;
    assert!(created_notes(&app.pipedrive).await.is_empty());
    assert!(calls(&app.pipedrive, "POST", "/api/v2/persons").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn notes_link_the_one_open_deal_else_the_one_open_lead() {
    let app = spawn_app().await;
    let customers = [("5511911110001", 1), ("5511911110002", 2), ("5511911110003", 3)];
    for (number, person) in customers {
        mount_search(&app.pipedrive, &format!("+{number}"), &[person]).await;
    }
    mount_deals(&app.pipedrive, 1, &[101]).await;
    mount_deals(&app.pipedrive, 2, &[201, 202]).await;
    mount_leads(&app.pipedrive, 3, &["3f1c6a2e-0000-4000-8000-000000000003"]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    for (i, (number, _)) in customers.iter().enumerate() {
        say(&app, number, "Customer", &format!("wamid.L{i}"), T0, "hello").await;
    }
    wait_for_notes(&app, 3).await;
    settled(&app).await;
    let notes = created_notes(&app.pipedrive).await;
    let of = |person: i64| notes.iter().find(|n| n["person_id"] == person).unwrap().clone();
    assert_eq!(of(1)["deal_id"], 101, "exactly one open deal");
    assert!(of(1).get("lead_id").is_none());
    assert!(of(2).get("deal_id").is_none(), "two open deals: no guess");
    assert!(of(2).get("lead_id").is_none());
    assert!(of(3).get("deal_id").is_none());
    assert_eq!(
        of(3)["lead_id"],
        "3f1c6a2e-0000-4000-8000-000000000003",
        "no deal, one lead"
    );
    assert_eq!(
        calls(&app.pipedrive, "GET", "/api/v1/leads").await.len(),
        2,
        "leads are not looked up when there is a single deal"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_note_deleted_in_pipedrive_is_written_again_once() {
    let app = timeline_app().await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/notes/9001"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({"success": false, "error": "Gone"})))
        .with_priority(1)
        .mount(&app.pipedrive)
        .await;
    say(&app, CUSTOMER, "Ana", "wamid.D1", T0, "first").await;
    wait_for_notes(&app, 1).await;
    settled(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.D2", T0 + 1, "second").await;
    let notes = wait_for_notes(&app, 2).await;
    let content = notes[1]["content"].as_str().unwrap();
    assert!(
        content.contains("first") && content.contains("second"),
        "{content}"
    );
    settled(&app).await;
    let note_id: i64 = sqlx::query_scalar("SELECT note_id FROM timeline_notes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(note_id, 9002);

    say(&app, CUSTOMER, "Ana", "wamid.D3", T0 + 2, "third").await;
    let puts = wait_for_rewrites(&app, 2).await;
    assert_eq!(puts[1].0, 9002, "the new note is rewritten from then on");
    settled(&app).await;
    assert_eq!(
        created_notes(&app.pipedrive).await.len(),
        2,
        "recreated once, no loop"
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'dead'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_timeline_sink_never_posts_to_the_inbox() {
    let app = spawn_app_with(|env| {
        env.insert("PIPEDRIVE_SINK".into(), "timeline".into());
    })
    .await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    installed(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.S1", T0, "timeline only").await;
    wait_for_notes(&app, 1).await;
    settled(&app).await;
    assert!(calls(&app.pipedrive, "POST", RECEIVE).await.is_empty());
    let mode = channel_mode(&app, PHONE_NUMBER_IDS[0]).await;
    assert_eq!(mode, "inbox", "the channel itself is untouched");
    app.stop().await;
}

#[tokio::test]
async fn both_sends_every_change_to_the_inbox_and_the_timeline() {
    let app = spawn_app_with(|env| {
        env.insert("PIPEDRIVE_SINK".into(), "both".into());
    })
    .await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .mount(&app.pipedrive)
        .await;
    installed(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.BO1", T0, "to both").await;
    let notes = wait_for_notes(&app, 1).await;
    assert!(notes[0]["content"].as_str().unwrap().contains("to both"));
    settled(&app).await;
    let received = calls(&app.pipedrive, "POST", RECEIVE).await;
    assert_eq!(received.len(), 1);
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["message"], "to both");
    app.stop().await;
}

#[tokio::test]
async fn the_inbox_sink_never_switches_to_the_timeline() {
    let app = spawn_app_with(|env| {
        env.insert("PIPEDRIVE_SINK".into(), "inbox".into());
    })
    .await;
    mount_crm(&app.pipedrive).await;
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(ResponseTemplate::new(410))
        .mount(&app.pipedrive)
        .await;
    installed(&app).await;
    say(&app, CUSTOMER, "Ana", "wamid.I1", T0, "inbox or nothing").await;
    let error: String = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE kind = 'deliver_message' AND state = 'dead'")
            .fetch_optional(&app.db)
            .await
            .unwrap()
    })
    .await;
    assert!(error.contains("410"), "{error}");
    assert!(
        calls(&app.pipedrive, "POST", RECEIVE).await.len() > 1,
        "retried before giving up"
    );
    let mode = channel_mode(&app, PHONE_NUMBER_IDS[0]).await;
    assert_eq!(mode, "inbox");
    assert!(created_notes(&app.pipedrive).await.is_empty());
    app.stop().await;
}
