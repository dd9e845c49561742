//! The CRM timeline taking over and catching up: the switch away from a retired Channels API
//! with deliveries parked by an earlier version replayed once and in order, the API budget and
//! 429s, the `backfill` command, and the viewer links of files in notes.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::crm_fake::{
    CUSTOMER, PERSON_ID, calls, created_notes, installed_after_retirement, mount_crm, mount_search,
    rewritten_notes,
};
use crate::helpers::{
    PHONE_NUMBER_IDS, TestApp, channel_mode, eventually, inbound_webhook, mount_graph_media, spawn_app,
    spawn_app_on_database, spawn_app_with, test_env, text_message,
};
use crate::pipedrive_fake::{COMPANY_ID, installed};

const RECEIVE: &str = "/api/v1/channels/messages/receive";
/// 2025-11-22 08:26:40 UTC.
const T0: i64 = 1_763_800_000;

async fn say(app: &TestApp, wamid: &str, at: i64, text: &str) {
    let hook = inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message(wamid, CUSTOMER, at, text)],
    );
    assert_eq!(app.post_webhook(&hook).await.status(), 200);
}

async fn quiet(db: &sqlx::PgPool) {
    eventually(Duration::from_secs(20), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind IN ('deliver_message', 'timeline_note') AND state <> 'done'",
        )
        .fetch_one(db)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
}

/// The latest content Pipedrive holds for the day's note.
async fn latest_content(server: &MockServer) -> String {
    let put = rewritten_notes(server).await.pop().map(|(_, body)| body);
    let body = match put {
        Some(body) => body,
        None => created_notes(server).await.pop().expect("a note"),
    };
    body["content"].as_str().unwrap().to_string()
}

fn in_order(content: &str, texts: &[&str]) -> bool {
    let positions: Vec<usize> = texts.iter().map(|t| content.find(t).expect(t)).collect();
    positions.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn a_retired_inbox_switches_to_the_timeline_and_replays_parked_deliveries_once_in_order() {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({"success": false, "error": "Gone"})))
        .mount(&app.pipedrive)
        .await;
    installed(&app).await;
    for i in 0..3 {
        say(&app, &format!("wamid.W{i}"), T0 + i, &format!("message {i}")).await;
    }
    eventually(Duration::from_secs(15), || async {
        let content = latest_content_if_any(&app.pipedrive).await?;
        (content.contains("message 2")).then_some(())
    })
    .await;
    quiet(&app.db).await;
    assert!(in_order(
        &latest_content(&app.pipedrive).await,
        &["message 0", "message 1", "message 2"]
    ));
    assert_eq!(created_notes(&app.pipedrive).await.len(), 1);
    assert_eq!(
        calls(&app.pipedrive, "POST", RECEIVE).await.len(),
        1,
        "the inbox is asked once"
    );
    let mode = channel_mode(&app, PHONE_NUMBER_IDS[0]).await;
    assert_eq!(mode, "timeline");

    // An earlier version parked later deliveries for the timeline; the upgrade replays them.
    let database_url = app.config.database_url.expose_secret().to_string();
    app.stop().await;
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    for i in 3..5 {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, channel_id, direction, wamid, sender_id, kind, body, status, sent_at)
             SELECT $1, conversation_id, channel_id, 'inbound', $2, sender_id, 'text', $3, 'sent', sent_at + make_interval(secs => $4)
             FROM messages WHERE wamid = 'wamid.W0'",
        )
        .bind(id)
        .bind(format!("wamid.W{i}"))
        .bind(format!("message {i}"))
        .bind(i as f64)
        .execute(&db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO jobs (kind, payload, ordering_key, dedup_key, state, parked_on, last_error)
             SELECT 'deliver_message', jsonb_build_object('message_id', m.id), 'conversation:' || m.conversation_id,
                    'deliver:' || m.id || ':new', 'parked', 'timeline:' || m.channel_id,
                    'the channel delivers to the CRM timeline'
             FROM messages m WHERE m.id = $1",
        )
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    }
    let crm = MockServer::start().await;
    mount_search(&crm, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&crm).await;
    sqlx::query("UPDATE installations SET api_domain = $1")
        .bind(crm.uri())
        .execute(&db)
        .await
        .unwrap();
    let app = spawn_app_on_database(&database_url, |_| {}).await;
    quiet(&app.db).await;
    let puts = rewritten_notes(&crm).await;
    assert_eq!(puts.len(), 1, "replayed once: {puts:?}");
    assert_eq!(puts[0].0, 9001, "into the day's existing note");
    let content = puts[0].1["content"].as_str().unwrap();
    assert!(
        in_order(
            content,
            &["message 0", "message 1", "message 2", "message 3", "message 4"]
        ),
        "{content}"
    );
    assert!(created_notes(&crm).await.is_empty());
    assert!(calls(&crm, "POST", RECEIVE).await.is_empty());
    // Every delivery completed, none parked or dead: the replayed two carry dedup keys and are
    // kept as done; the first three had none and left no row when they succeeded.
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM jobs WHERE kind = 'deliver_message' GROUP BY state")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(states, vec![("done".to_string(), 2)]);
    app.stop().await;
}

async fn latest_content_if_any(server: &MockServer) -> Option<String> {
    if created_notes(server).await.is_empty() {
        return None;
    }
    Some(latest_content(server).await)
}

#[tokio::test]
async fn api_tokens_are_counted_and_a_429_is_waited_out_without_spending_an_attempt() {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    Mock::given(method("PUT"))
        .and(path_regex(r"^/api/v1/notes/\d+$"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.pipedrive)
        .await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    say(&app, "wamid.R1", T0, "one").await;
    eventually(Duration::from_secs(15), || async {
        (!created_notes(&app.pipedrive).await.is_empty()).then_some(())
    })
    .await;
    quiet(&app.db).await;
    let started = std::time::Instant::now();
    say(&app, "wamid.R2", T0 + 1, "two").await;
    eventually(Duration::from_secs(15), || async {
        (rewritten_notes(&app.pipedrive).await.len() == 2).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    quiet(&app.db).await;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE kind = 'timeline_note' ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "the rate-limited try was refunded");
    let (tokens, calls_made): (i64, i32) =
        sqlx::query_as("SELECT tokens, calls FROM timeline_budget WHERE company_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date")
            .bind(COMPANY_ID)
            .fetch_one(&app.db)
            .await
            .unwrap();
    // search 20 + deals 10 + leads 20 + note 10, then one rewrite of 10 (the 429 costs nothing).
    assert_eq!((tokens, calls_made), (70, 5));
    app.stop().await;
}

#[tokio::test]
async fn writes_pause_until_tomorrow_when_the_daily_budget_is_nearly_spent() {
    let app = spawn_app_with(|env| {
        env.insert("PIPEDRIVE_DAILY_TOKEN_BUDGET".into(), "1000".into());
    })
    .await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    sqlx::query(
        "INSERT INTO timeline_budget (company_id, day, tokens) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 880)",
    )
    .bind(COMPANY_ID)
    .execute(&app.db)
    .await
    .unwrap();
    say(&app, "wamid.P1", T0, "still fits").await;
    eventually(Duration::from_secs(15), || async {
        (!created_notes(&app.pipedrive).await.is_empty()).then_some(())
    })
    .await;
    quiet(&app.db).await;
    let (tokens, warned): (i64, bool) = sqlx::query_as("SELECT tokens, warned FROM timeline_budget")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((tokens, warned), (940, true), "warned once past 75 %");

    say(&app, "wamid.P2", T0 + 1, "waits for tomorrow").await;
    let (run_at_tomorrow, reason): (bool, String) = eventually(Duration::from_secs(15), || async {
        sqlx::query_as(
            "SELECT run_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day',
                    last_error
             FROM jobs WHERE kind = 'timeline_note' AND state = 'queued' AND last_error IS NOT NULL",
        )
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await;
    assert!(run_at_tomorrow);
    assert!(reason.contains("budget"), "{reason}");
    assert!(rewritten_notes(&app.pipedrive).await.is_empty());
    app.stop().await;
}

fn backfill(app: &TestApp, args: &[&str]) -> (bool, String) {
    let mut env: HashMap<String, String> = test_env(
        app.config.database_url.expose_secret(),
        &app.address,
        &app.pipedrive.uri(),
        &app.graph.uri(),
    );
    env.insert("PIPEDRIVE_SINK".into(), "inbox".into());
    let output = Command::new(env!("CARGO_BIN_EXE_pipedrive-whatsapp"))
        .arg("backfill")
        .args(args)
        .env_clear()
        .envs(&env)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn backfill_writes_stored_history_once() {
    let app = spawn_app_with(|env| {
        env.insert("PIPEDRIVE_SINK".into(), "inbox".into());
    })
    .await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    Mock::given(method("POST"))
        .and(path(RECEIVE))
        .respond_with(ResponseTemplate::new(200))
        .mount(&app.pipedrive)
        .await;
    installed(&app).await;
    say(&app, "wamid.H1", T0, "monday morning").await;
    say(&app, "wamid.H2", T0 + 60, "monday later").await;
    say(&app, "wamid.H3", T0 + 86_400, "tuesday").await;
    eventually(Duration::from_secs(15), || async {
        (calls(&app.pipedrive, "POST", RECEIVE).await.len() == 3).then_some(())
    })
    .await;
    quiet(&app.db).await;
    assert!(
        created_notes(&app.pipedrive).await.is_empty(),
        "the inbox sink writes no notes"
    );

    let (ok, out) = backfill(&app, &["--company", &COMPANY_ID.to_string()]);
    assert!(ok, "{out}");
    assert!(out.contains("backfill: 2/2 conversation-days"), "{out}");
    assert!(out.contains("backfill finished: 2 conversation-day(s)"), "{out}");
    assert!(out.contains("notes created: 2"), "{out}");
    let notes = created_notes(&app.pipedrive).await;
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["add_time"], "2025-11-22 08:26:40");
    assert!(in_order(
        notes[0]["content"].as_str().unwrap(),
        &["monday morning", "monday later"]
    ));
    assert_eq!(notes[1]["add_time"], "2025-11-23 08:26:40");

    let (ok, out) = backfill(&app, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("notes created: 0"), "{out}");
    assert!(out.contains("notes already up to date: 2"), "{out}");
    assert_eq!(created_notes(&app.pipedrive).await.len(), 2, "no second write");
    assert!(rewritten_notes(&app.pipedrive).await.is_empty());

    let (ok, out) = backfill(&app, &["--since", "2025-11-23"]);
    assert!(
        ok && out.contains("backfill finished: 1 conversation-day(s)"),
        "{out}"
    );
    let (ok, out) = backfill(&app, &["--company", "1"]);
    assert!(
        ok && out.contains("backfill finished: 0 conversation-day(s)"),
        "{out}"
    );
    app.stop().await;
}

#[tokio::test]
async fn files_in_notes_open_through_a_long_lived_viewer_link() {
    let app = spawn_app().await;
    mount_search(&app.pipedrive, "+5511987654321", &[PERSON_ID]).await;
    mount_crm(&app.pipedrive).await;
    installed_after_retirement(&app).await;
    let bytes = b"%PDF-1.7 quote".to_vec();
    mount_graph_media(&app, "doc-1", "application/pdf", &bytes).await;
    let document = json!({"from": CUSTOMER, "id": "wamid.DOC", "timestamp": T0.to_string(), "type": "document",
        "document": {"id": "doc-1", "mime_type": "application/pdf", "filename": "quote.pdf"}});
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![document],
    ))
    .await;
    let notes: Vec<Value> = eventually(Duration::from_secs(15), || async {
        let notes = created_notes(&app.pipedrive).await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    let content = notes[0]["content"].as_str().unwrap();
    let link = href(content).expect("a link to the file");
    assert!(link.contains("/view?exp="), "{link}");
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Download quote.pdf"), "{html}");
    let file_link = href(&html).expect("a download link");
    let served = app.client.get(&file_link).send().await.unwrap();
    assert_eq!(served.bytes().await.unwrap().to_vec(), bytes);

    let forged = link.replace("sig=", "sig=AAAA");
    let refused = app.client.get(&forged).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("not valid"));
    app.stop().await;
}

/// The first `href` of an HTML text, unescaped.
fn href(html: &str) -> Option<String> {
    let start = html.find("href=\"")? + 6;
    let end = start + html[start..].find('"')?;
    Some(html[start..end].replace("&amp;", "&"))
}
