//! PostgreSQL restarted (`pg_ctl restart -m fast`) under load: webhooks arriving meanwhile are
//! refused with 5xx (Meta posts them again), none is acknowledged and lost, and the same service
//! process carries on once the database is back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::deployment::{Deployment, inbound, post_until_acknowledged, text};
use crate::ledger::{Tally, report};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing_and_needs_no_service_restart() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let deployment = Deployment::on_server(&cluster.url()).await;
    let mut service = deployment.start().await;
    let pid = service.pid();
    deployment.install(&service).await;
    deployment.pipedrive.set_latency(Duration::from_millis(10));

    let (conversations, per_conversation) = (10, 40);
    let expected: Vec<String> = (0..per_conversation)
        .flat_map(|m| (0..conversations).map(move |c| text(c, m)))
        .collect();
    // One sender per conversation, each posting its messages in order, as Meta does.
    let senders: Vec<_> = (0..conversations)
        .map(|c| {
            let client = deployment.client.clone();
            let url = service.url("/webhooks/whatsapp");
            tokio::spawn(async move {
                let mut refusals = Vec::new();
                for m in 0..per_conversation {
                    let body = inbound(c, m);
                    refusals
                        .extend(post_until_acknowledged(&client, &url, &body, Duration::from_secs(60)).await);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                refusals
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restart_at = Instant::now();
    let restart_took = cluster.restart().await;
    let mut refusals = Vec::new();
    for sender in senders {
        refusals.extend(sender.await.unwrap());
    }
    deployment
        .wait_delivered(&expected, Duration::from_secs(60))
        .await;
    let recovery = restart_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert!(service.is_running(), "the service survived the restart");
    assert_eq!(service.pid(), pid);
    let ready = reqwest::get(service.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let tally = Tally::of(&deployment.pipedrive.receives(), &expected);
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for status in &refusals {
        *by_status.entry(*status).or_default() += 1;
    }
    report(
        "postgres restart under load",
        format_args!(
            "pg_ctl restart -m fast took {restart_took:?}; webhooks refused meanwhile and posted again: {by_status:?}; {tally}; all delivered {recovery:?} after the restart began, same process"
        ),
    );
    tally.assert_exact();
    assert!(
        refusals.iter().all(|s| (500..600).contains(s)),
        "webhooks refused only with 5xx: {by_status:?}"
    );
    let states = deployment.job_states("deliver_message").await;
    assert_eq!(states.get("dead"), None, "{states:?}");
}
