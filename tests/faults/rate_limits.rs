//! 429 storms with `Retry-After` and rate-limit headers, and answers slower than our timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::deployment::{Deployment, inbound, text};
use crate::fake_pipedrive::{Mode, Receive};
use crate::ledger::{Tally, report};

/// Posts `conversations` × `per_conversation` messages; returns their texts.
async fn send_messages(
    deployment: &Deployment,
    service: &crate::service::Service,
    conversations: usize,
    per_conversation: usize,
) -> Vec<String> {
    let mut expected = Vec::new();
    for m in 0..per_conversation {
        for c in 0..conversations {
            assert_eq!(deployment.post_webhook(service, &inbound(c, m)).await, Some(200));
            expected.push(text(c, m));
        }
    }
    expected
}

/// Per message id, its calls in arrival order.
fn calls_per_message(receives: &[Receive]) -> HashMap<&str, Vec<&Receive>> {
    let mut calls: HashMap<&str, Vec<&Receive>> = HashMap::new();
    for r in receives {
        calls.entry(r.id.as_str()).or_default().push(r);
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_as_long_as_pipedrive_asks() {
    const RETRY_AFTER: u64 = 2;
    let deployment = Deployment::new().await;
    let service = deployment.start().await;
    deployment.install(&service).await;

    deployment
        .pipedrive
        .set_mode(Mode::RateLimit { seconds: RETRY_AFTER });
    let storm = Duration::from_secs(8);
    let storm_started = Instant::now();
    let expected = send_messages(&deployment, &service, 5, 20).await;
    tokio::time::sleep(storm.saturating_sub(storm_started.elapsed())).await;
    // Read before the calm: a delivered job leaves no row. Every try refused with a 429 was
    // refunded to the deliveries waiting to try again.
    let (waiting, most_attempts): (i64, i32) = sqlx::query_as(
        "SELECT count(*), COALESCE(max(attempts), 0) FROM jobs
         WHERE kind = 'deliver_message' AND state = 'queued'",
    )
    .fetch_one(&deployment.db)
    .await
    .unwrap();
    deployment.pipedrive.set_mode(Mode::Accept);
    let calm_at = Instant::now();
    deployment
        .wait_delivered(&expected, Duration::from_secs(30))
        .await;
    let recovery = calm_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let receives = deployment.pipedrive.receives();
    let tally = Tally::of(&receives, &expected);
    let refused = receives.iter().filter(|r| r.answer == 429).count();
    // After a 429, the same delivery waits at least as long as Pipedrive asked.
    let mut shortest_wait = Duration::MAX;
    for calls in calls_per_message(&receives).values() {
        for pair in calls.windows(2).filter(|p| p[0].answer == 429) {
            shortest_wait = shortest_wait.min(pair[1].at - pair[0].at);
        }
    }
    report(
        "429 storm",
        format_args!(
            "storm {storm:?} with Retry-After {RETRY_AFTER}s: {refused} calls answered 429, shortest wait after a 429 {shortest_wait:?}, attempts charged at most {most_attempts} to the {waiting} deliveries waiting at its end; {tally}; all delivered {recovery:?} after the storm"
        ),
    );
    tally.assert_exact();
    assert!(refused > 0);
    assert!(
        shortest_wait >= Duration::from_secs(RETRY_AFTER) - Duration::from_millis(50),
        "a delivery came back {shortest_wait:?} after a 429 asking for {RETRY_AFTER}s"
    );
    assert!(waiting > 0, "deliveries were waiting out the storm");
    assert_eq!(most_attempts, 0, "rate limits spend no retry budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_our_timeout_are_retried_without_loss_or_reordering() {
    let mut deployment = Deployment::new().await;
    deployment.set("OUTBOUND_TIMEOUT_SECONDS", "1");
    let service = deployment.start().await;
    deployment.install(&service).await;

    deployment
        .pipedrive
        .set_mode(Mode::Slow(Duration::from_millis(1500)));
    let expected = send_messages(&deployment, &service, 3, 10).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    deployment.pipedrive.set_mode(Mode::Accept);
    deployment
        .wait_delivered(&expected, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let receives = deployment.pipedrive.receives();
    let tally = Tally::of(&receives, &expected);
    let repeated = receives.len() - tally.expected;
    // A call whose answer never came may have been taken: it is posted again, identical, and
    // Pipedrive keeps one message per id.
    for calls in calls_per_message(&receives).values() {
        assert!(
            calls
                .iter()
                .all(|c| c.message == calls[0].message && c.status == calls[0].status),
            "a repeated delivery carries the same message"
        );
    }
    report(
        "answers slower than the timeout",
        format_args!(
            "1.5 s answers against a 1 s timeout for 5 s: {repeated} calls repeated after a timeout (same id and content), messages shown once per id; {tally}"
        ),
    );
    assert!(tally.lost.is_empty(), "{tally}");
    assert_eq!(tally.out_of_order, 0, "{tally}");
    assert!(tally.duplicates > 0, "the slow answers did time out");
    let states = deployment.job_states("deliver_message").await;
    assert_eq!(states.get("dead"), None, "{states:?}");
}
