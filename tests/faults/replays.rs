//! Meta's at-least-once delivery: every webhook posted three times (the replays shuffled), and
//! the statuses of our messages arriving shuffled and repeated. Pipedrive sees each message
//! once, and each message's statuses only ever move forward.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::deployment::{Deployment, customer, eventually, inbound, status, text};
use crate::ledger::{Tally, report};

/// A fixed-seed Fisher–Yates shuffle (xorshift), so a failure can be replayed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_webhooks_and_shuffled_statuses_change_nothing_twice() {
    const SEED: u64 = 0x5eed_cafe;
    let deployment = Deployment::new().await;
    let service = deployment.start().await;
    deployment.install(&service).await;

    let (conversations, per_conversation) = (4, 5);
    let mut hooks: Vec<Value> = Vec::new();
    let mut expected = Vec::new();
    for c in 0..conversations {
        for m in 0..per_conversation {
            hooks.push(inbound(c, m));
            expected.push(text(c, m));
        }
    }
    let mut replays: Vec<Value> = hooks.iter().chain(&hooks).cloned().collect();
    shuffle(&mut replays, SEED);
    for hook in hooks.iter().chain(&replays) {
        assert_eq!(deployment.post_webhook(&service, hook).await, Some(200));
    }
    deployment
        .wait_delivered(&expected, Duration::from_secs(30))
        .await;

    // Our replies from Pipedrive, two per conversation.
    let mut outbound = Vec::new();
    for c in 0..conversations {
        for k in 0..2 {
            let response = deployment
                .reply(&service, c, &format!("reply {c}-{k}"))
                .await
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            outbound.push((body["data"]["id"].as_str().unwrap().to_string(), customer(c)));
        }
    }
    let wamids: HashMap<String, String> = eventually(Duration::from_secs(30), "replies sent", || async {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id::text, wamid FROM messages WHERE direction = 'outbound' AND status = 'sent'",
        )
        .fetch_all(&deployment.db)
        .await
        .unwrap();
        (rows.len() == outbound.len()).then(|| {
            rows.into_iter()
                .map(|(id, wamid)| (id, wamid.expect("a sent message has its wamid")))
                .collect()
        })
    })
    .await;
    let mut statuses: Vec<Value> = Vec::new();
    for (id, recipient) in &outbound {
        for value in ["sent", "delivered", "read"] {
            for _ in 0..3 {
                statuses.push(status(&wamids[id], value, recipient));
            }
        }
    }
    shuffle(&mut statuses, SEED.rotate_left(17));
    for hook in &statuses {
        assert_eq!(deployment.post_webhook(&service, hook).await, Some(200));
    }
    eventually(
        Duration::from_secs(30),
        "every reply read in Pipedrive",
        || async {
            let receives = deployment.pipedrive.accepted();
            outbound
                .iter()
                .all(|(id, _)| {
                    receives
                        .iter()
                        .rev()
                        .find(|r| &r.id == id)
                        .is_some_and(|r| r.status == "read")
                })
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let receives = deployment.pipedrive.receives();
    let tally = Tally::of(&receives, &expected);
    let mut updates_per_reply = Vec::new();
    for (id, _) in &outbound {
        let ranks: Vec<u8> = receives
            .iter()
            .filter(|r| &r.id == id)
            .map(|r| rank(&r.status))
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "statuses of {id} move forward only: {ranks:?}"
        );
        assert_eq!(ranks.last(), Some(&3));
        updates_per_reply.push(ranks.len());
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&deployment.db)
        .await
        .unwrap();
    report(
        "replays and shuffled statuses",
        format_args!(
            "{} webhooks posted 3x (replays shuffled), {} status webhooks (3 statuses x 3 copies, shuffled): {stored} messages stored; {tally}; Pipedrive updates per reply {updates_per_reply:?}, never backwards or twice",
            hooks.len(),
            statuses.len()
        ),
    );
    tally.assert_exact();
    assert_eq!(stored as usize, expected.len() + outbound.len());
}
