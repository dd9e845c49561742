//! The status machine of our messages (`store::messages::advance_status`): a pure model of its
//! rules, properties of that model (shuffled or repeated statuses end the same), and the SQL
//! checked against the model on PostgreSQL.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::PgPool;
use uuid::Uuid;

use pipedrive_whatsapp::store::messages::{self, Direction, Failure, MessageStatus, NewMessage};
use pipedrive_whatsapp::store::{channels, contacts, conversations};

use crate::database::{fresh_database, server_url};

use MessageStatus::{Delivered, Failed, Queued, Read, Sending, Sent};

const ALL: [MessageStatus; 6] = [Queued, Sending, Sent, Delivered, Read, Failed];

/// The rules: positive statuses only move forward; failed is terminal and cannot follow read.
fn model(current: MessageStatus, new: MessageStatus) -> Option<MessageStatus> {
    let rank = |s: MessageStatus| ALL.iter().position(|a| *a == s).expect("listed");
    match (current, new) {
        (Failed, _) => None,
        (Read, Failed) => None,
        (_, Failed) => Some(Failed),
        _ if rank(new) > rank(current) => Some(new),
        _ => None,
    }
}

fn apply(start: MessageStatus, steps: &[MessageStatus]) -> MessageStatus {
    steps.iter().fold(start, |s, n| model(s, *n).unwrap_or(s))
}

fn status() -> impl Strategy<Value = MessageStatus> {
    prop::sample::select(ALL.to_vec())
}

proptest! {
    #[test]
    fn without_failures_the_order_of_statuses_does_not_matter(
        start in status(),
        steps in prop::collection::vec(prop::sample::select(vec![Sent, Delivered, Read]), 0..12),
        seed in any::<u64>(),
    ) {
        prop_assume!(start != Failed);
        let mut shuffled = steps.clone();
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let end = apply(start, &steps);
        prop_assert_eq!(end, apply(start, &shuffled));
        prop_assert_eq!(end, steps.iter().copied().chain([start]).max().unwrap());
    }

    #[test]
    fn a_repeated_status_changes_nothing(start in status(), next in status()) {
        let after = model(start, next).unwrap_or(start);
        prop_assert_eq!(model(after, next), None);
    }

    #[test]
    fn statuses_never_go_back_and_failed_is_final(start in status(), steps in prop::collection::vec(status(), 0..12)) {
        let mut current = start;
        for step in steps {
            if let Some(next) = model(current, step) {
                prop_assert!(current != Failed);
                prop_assert!(next == Failed || next > current);
                current = next;
            }
        }
    }
}

/// A database with one conversation to put messages in.
async fn conversation() -> (PgPool, Uuid, Uuid) {
    let db = PgPool::connect(&fresh_database(&server_url()).await)
        .await
        .unwrap();
    pipedrive_whatsapp::store::migrate(&db).await.unwrap();
    channels::ensure_configured(&db, &["1000".to_string()])
        .await
        .unwrap();
    let channel = channels::find_by_phone_number_id(&db, "1000")
        .await
        .unwrap()
        .unwrap();
    let mut conn = db.acquire().await.unwrap();
    let contact = contacts::upsert(
        &mut conn,
        &contacts::Identity {
            wa_id: Some("5511999990000"),
            bsuid: None,
            profile_name: None,
        },
    )
    .await
    .unwrap();
    let conversation = conversations::upsert(&mut conn, channel.id, contact, chrono::Utc::now())
        .await
        .unwrap();
    (db, channel.id, conversation)
}

#[test]
fn the_sql_follows_the_model() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (db, channel_id, conversation_id) = runtime.block_on(conversation());
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    let cases = (status(), prop::collection::vec(status(), 1..10));
    let result = runner.run(&cases, |(start, steps)| {
        runtime.block_on(async {
            let id = Uuid::now_v7();
            let mut conn = db.acquire().await.unwrap();
            messages::insert(
                &mut conn,
                &NewMessage {
                    id,
                    conversation_id,
                    channel_id,
                    direction: Direction::Outbound,
                    wamid: None,
                    sender_id: "1000",
                    kind: "text",
                    body: "hello",
                    raw: None,
                    status: start,
                    reply_to_wamid: None,
                    sent_at: chrono::Utc::now(),
                },
            )
            .await
            .unwrap();
            let mut expected = start;
            for step in steps {
                let changed = messages::advance_status(&mut conn, id, step, &Failure::default())
                    .await
                    .unwrap();
                let next = model(expected, step);
                prop_assert_eq!(
                    changed.is_some(),
                    next.is_some(),
                    "{:?} then {:?}",
                    expected,
                    step
                );
                if let Some(conversation) = changed {
                    prop_assert_eq!(conversation, conversation_id);
                }
                expected = next.unwrap_or(expected);
                let stored: MessageStatus = sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                prop_assert_eq!(stored, expected);
            }
            Ok::<(), TestCaseError>(())
        })
    });
    result.unwrap();
}
