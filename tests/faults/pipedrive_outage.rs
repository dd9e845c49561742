//! Pipedrive answers 5xx for a while as messages keep arriving, then recovers: every message
//! reaches the inbox once, in order, without dead letters.

use std::time::{Duration, Instant};

use crate::deployment::{Deployment, inbound, text};
use crate::fake_pipedrive::Mode;
use crate::ledger::{Tally, report};

/// Length of the outage; `FAULT_OUTAGE_SECONDS` lengthens it (e.g. 180 for minutes).
fn outage_length() -> Duration {
    let seconds = std::env::var("FAULT_OUTAGE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    Duration::from_secs_f64(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipedrive_outage_loses_nothing_and_duplicates_nothing() {
    let deployment = Deployment::new().await;
    let service = deployment.start().await;
    deployment.install(&service).await;

    let outage = outage_length();
    let (conversations, per_conversation) = (10, 20);
    let gap = outage.mul_f64(0.75) / (conversations * per_conversation) as u32;
    let failures = [500, 502, 503, 504];
    deployment.pipedrive.set_mode(Mode::Fail(503));
    let down_at = Instant::now();
    let mut expected = Vec::new();
    for m in 0..per_conversation {
        for c in 0..conversations {
            assert_eq!(deployment.post_webhook(&service, &inbound(c, m)).await, Some(200));
            expected.push(text(c, m));
            deployment
                .pipedrive
                .set_mode(Mode::Fail(failures[(c + m) % failures.len()]));
            tokio::time::sleep(gap).await;
        }
    }
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    let calls_during_outage = deployment.pipedrive.receives().len();
    assert_eq!(deployment.pipedrive.accepted().len(), 0);

    deployment.pipedrive.set_mode(Mode::Accept);
    let up_at = Instant::now();
    deployment
        .wait_delivered(&expected, Duration::from_secs(60))
        .await;
    let recovery = up_at.elapsed();
    // Anything still queued would show up as a late duplicate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = Tally::of(&deployment.pipedrive.receives(), &expected);
    report(
        "pipedrive 5xx outage",
        format_args!(
            "outage {outage:?}, {calls_during_outage} refused calls during it; {tally}; all delivered {recovery:?} after recovery"
        ),
    );
    tally.assert_exact();
    let states = deployment.job_states("deliver_message").await;
    // A delivery that succeeded leaves no row (or, with a dedup key, a done one); any other
    // state would be work not done.
    assert!(states.keys().all(|state| state == "done"), "{states:?}");
}
