//! Two service processes on one database, webhooks arriving at both: every message is delivered
//! once, in order, and both processes do part of the work.

use std::time::Duration;

use crate::deployment::{Deployment, inbound, post_until_acknowledged, text};
use crate::ledger::{Tally, report};
use crate::service::Service;

/// Deliveries a process finished, from its `/metrics`.
async fn deliveries_done(service: &Service) -> u64 {
    let metrics = reqwest::get(service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("jobs_finished_total{")
                && l.contains(r#"kind="deliver_message""#)
                && l.contains(r#"outcome="done""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_deliver_every_message_once_in_order() {
    let mut deployment = Deployment::new().await;
    // Few jobs at a time per process, so that neither can take every conversation.
    deployment.set("QUEUE_CONCURRENCY", "4");
    let (a, b) = tokio::join!(deployment.start(), deployment.start());
    deployment.install(&a).await;
    deployment.pipedrive.set_latency(Duration::from_millis(10));

    let (conversations, per_conversation) = (10, 20);
    let expected: Vec<String> = (0..per_conversation)
        .flat_map(|m| (0..conversations).map(move |c| text(c, m)))
        .collect();
    let urls = [a.url("/webhooks/whatsapp"), b.url("/webhooks/whatsapp")];
    // Each conversation's messages alternate between the two processes.
    let senders: Vec<_> = (0..conversations)
        .map(|c| {
            let client = deployment.client.clone();
            let urls = urls.clone();
            tokio::spawn(async move {
                for m in 0..per_conversation {
                    let url = &urls[(c + m) % 2];
                    post_until_acknowledged(&client, url, &inbound(c, m), Duration::from_secs(30)).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    deployment
        .wait_delivered(&expected, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let tally = Tally::of(&deployment.pipedrive.receives(), &expected);
    let (done_a, done_b) = (deliveries_done(&a).await, deliveries_done(&b).await);
    report(
        "two processes, one database",
        format_args!("{tally}; deliveries made by process A {done_a}, by process B {done_b}"),
    );
    tally.assert_exact();
    assert_eq!(done_a + done_b, expected.len() as u64);
    assert!(done_a > 0 && done_b > 0, "both processes worked the queue");
}
