//! SIGTERM: the service stops accepting connections, finishes the requests in flight, hands
//! its leased jobs back to the queue and exits 0 within a bound.

use std::time::{Duration, Instant};

use crate::deployment::{Deployment, eventually, inbound};
use crate::ledger::report;

/// How long the process may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_releases_jobs_and_exits_0() {
    let mut deployment = Deployment::new().await;
    deployment.set("SHUTDOWN_GRACE_SECONDS", "1");
    let mut service = deployment.start().await;
    deployment.install(&service).await;
    assert_eq!(deployment.post_webhook(&service, &inbound(0, 0)).await, Some(200));
    eventually(Duration::from_secs(20), "first message delivered", || async {
        (deployment.pipedrive.accepted().len() == 1).then_some(())
    })
    .await;

    // Deliveries that hang in Pipedrive: leased and in flight at the signal.
    deployment.pipedrive.set_latency(Duration::from_secs(60));
    for c in 1..=5 {
        assert_eq!(deployment.post_webhook(&service, &inbound(c, 0)).await, Some(200));
    }
    eventually(Duration::from_secs(20), "five deliveries in flight", || async {
        (deployment.pipedrive.receives().len() == 6).then_some(())
    })
    .await;

    // A request in flight: postMessage waits for a slow Graph API.
    deployment.graph.set_send_latency(Duration::from_secs(3));
    let request = deployment
        .reply(&service, 0, "answer while stopping")
        .await
        .send();
    let in_flight = tokio::spawn(request);
    eventually(
        Duration::from_secs(10),
        "the send reached the Graph API",
        || async { (deployment.graph.sends() > 0).then_some(()) },
    )
    .await;

    let signalled = Instant::now();
    service.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", service.port))
        .await
        .is_err();
    let answer = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    let answered_after = signalled.elapsed();
    let answer_status = answer.status();
    let (status, exited_after) = service
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|| panic!("no exit within {EXIT_BOUND:?}:\n{}", service.log_tail(30)));

    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'running'")
        .fetch_one(&deployment.db)
        .await
        .unwrap();
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'deliver_message' AND state = 'queued' AND attempts = 0",
    )
    .fetch_one(&deployment.db)
    .await
    .unwrap();
    report(
        "SIGTERM",
        format_args!(
            "new connections refused 300 ms after the signal: {refused}; request in flight answered {answer_status} after {answered_after:?}; exit {status} after {exited_after:?}; {released} leased deliveries handed back, {running} jobs left running"
        ),
    );
    assert!(refused, "no new connections after SIGTERM");
    assert_eq!(answer_status, 200);
    assert!(status.success(), "exit status {status}");
    assert_eq!(running, 0, "no job keeps its lease");
    assert!(
        released >= 5,
        "the hanging deliveries are queued again with their attempt refunded"
    );
    assert!(
        service
            .logs()
            .iter()
            .any(|l| l.contains("releasing unfinished job") || l.contains("released leased jobs")),
        "{}",
        service.log_tail(30)
    );
}
