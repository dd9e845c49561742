//! Meta's side of the load: signed `messages` webhooks with unique wamids, posted at a fixed
//! rate (open loop) or as fast as the service answers (closed loop), and the ledger that checks
//! what reached Pipedrive against what the service acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pipedrive_whatsapp::whatsapp::signature;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::clock;
use crate::deployment::{APP_SECRET, PHONE_NUMBER_ID};
use crate::fakes::Receive;
use crate::stats::Summary;

/// How webhooks are spread over conversations.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Distinct customers (one conversation each).
    pub conversations: u64,
    /// Makes wamids unique across runs on one database.
    pub run: u32,
}

impl Shape {
    /// The conversation load message `seq` belongs to.
    pub fn conversation(&self, seq: u64) -> u64 {
        seq % self.conversations
    }

    /// The signed webhook carrying load message `seq`: body and `X-Hub-Signature-256`.
    pub fn webhook(&self, seq: u64) -> (Vec<u8>, String) {
        let wa_id = format!("5511{:09}", self.conversation(seq));
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"200000000000001","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550100000","phone_number_id":"{PHONE_NUMBER_ID}"}},"contacts":[{{"profile":{{"name":"Customer {c}"}},"wa_id":"{wa_id}"}}],"messages":[{{"from":"{wa_id}","id":"wamid.LOAD.{run}.{seq}","timestamp":"{now}","type":"text","text":{{"body":"load {seq} hello, is the order on its way?"}}}}]}}}}]}}]}}"#,
            c = self.conversation(seq),
            run = self.run,
            now = chrono::Utc::now().timestamp(),
        )
        .into_bytes();
        let signature = signature::sign(APP_SECRET.as_bytes(), &body);
        (body, signature)
    }
}

/// The load sequence number in a delivered message text, if it is one of ours.
pub fn seq_of(text: &str) -> Option<u64> {
    text.strip_prefix("load ")?.split(' ').next()?.parse().ok()
}

/// One webhook post.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Which load message.
    pub seq: u64,
    /// When it was due (open loop) or sent (closed loop), on [`clock`].
    pub sent: u64,
    /// Until the answer, from `sent`.
    pub latency: Duration,
    /// 200 came back.
    pub acknowledged: bool,
}

/// What a run of posts did.
pub struct Posted {
    /// Every post.
    pub samples: Vec<Sample>,
    /// From the first post to the last answer.
    pub elapsed: Duration,
    /// How long after its due time each post of an open loop left (none for a closed loop):
    /// the generator's own error, which every latency of the run includes.
    pub lateness: Option<Summary>,
}

impl Posted {
    /// Acknowledged posts per second.
    pub fn throughput(&self) -> f64 {
        self.acknowledged() as f64 / self.elapsed.as_secs_f64()
    }

    /// Posts answered 200.
    pub fn acknowledged(&self) -> usize {
        self.samples.iter().filter(|s| s.acknowledged).count()
    }

    /// Acknowledgement latency of the answered posts.
    pub fn ack_latency(&self) -> Summary {
        Summary::of(self.samples.iter().filter(|s| s.acknowledged).map(|s| s.latency))
    }
}

/// An HTTP client for many concurrent posts to one host.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client without custom TLS settings builds")
}

async fn post(client: &reqwest::Client, url: &str, shape: Shape, seq: u64, sent: u64) -> Sample {
    let (body, signature) = shape.webhook(seq);
    let acknowledged = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200);
    Sample {
        seq,
        sent,
        latency: Duration::from_nanos(clock::now().saturating_sub(sent)),
        acknowledged,
    }
}

/// `rate` posts per second for `duration`, each at its due time whatever the answers before it
/// (so a slow service shows as latency, not as a slower sender). Latency counts from the due time.
pub async fn open_loop(url: &str, shape: Shape, first: u64, rate: u64, duration: Duration) -> Posted {
    let client = client();
    let start = clock::now();
    let url = url.to_string();
    let (samples, lateness) = at_rate(rate, duration, move |i, due| {
        let (client, url) = (client.clone(), url.clone());
        async move { post(&client, &url, shape, first + i, due).await }
    })
    .await;
    Posted {
        samples,
        elapsed: Duration::from_nanos(clock::now() - start),
        lateness: Some(lateness),
    }
}

/// `concurrency` posters, each posting as soon as its previous post was answered, until
/// `duration` passes or `limit` messages were posted. Poster `i` posts sequence numbers
/// `first + i, first + i + concurrency, …`; with `conversations` a multiple of `concurrency`,
/// every conversation belongs to one poster, so its messages are acknowledged in order.
pub async fn closed_loop(
    url: &str,
    shape: Shape,
    first: u64,
    concurrency: u64,
    duration: Duration,
    limit: u64,
) -> Posted {
    let client = client();
    let start = clock::now();
    let url = url.to_string();
    let samples = back_to_back(concurrency, duration, limit, move |n, sent| {
        let (client, url) = (client.clone(), url.clone());
        async move { post(&client, &url, shape, first + n, sent).await }
    })
    .await;
    Posted {
        samples,
        elapsed: Duration::from_nanos(clock::now() - start),
        lateness: None,
    }
}

/// Most requests an open loop keeps in flight, short of the process's file descriptors; a
/// request due while they are all taken waits, and its latency still counts from its due time.
const MOST_IN_FLIGHT: usize = 8192;

/// The open loop: `rate` requests a second for `duration`, request `i` sent by `send(i, due)` at
/// its due time whatever the answers before it; their results in order of `i`, and how late
/// each left (the generator's own error, which every latency counted from `due` includes).
pub async fn at_rate<T, F, Fut>(rate: u64, duration: Duration, send: F) -> (Vec<T>, Summary)
where
    T: Send + 'static,
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval_ns = 1_000_000_000 / rate.max(1);
    let in_flight = Arc::new(Semaphore::new(MOST_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut due_times = pace(clock::now(), interval_ns, total);
    let mut lateness = Vec::with_capacity(total as usize);
    while let Some((i, due)) = due_times.recv().await {
        lateness.push(Duration::from_nanos(clock::now().saturating_sub(due)));
        let permit = in_flight.clone().acquire_owned().await.expect("never closed");
        let request = send(i, due);
        tasks.spawn(async move {
            let result = request.await;
            drop(permit);
            result
        });
    }
    (tasks.join_all().await, Summary::of(lateness.into_iter()))
}

/// The sequence numbers of `total` posts and their due times, each handed over when it is due
/// by a thread of its own. Tokio's timers round up to whole milliseconds: paced by them, posts
/// left 0.4 ms late at the median and 1.3 ms at p99, and every latency counted that lateness of
/// the generator as the service's.
fn pace(start: u64, interval_ns: u64, total: u64) -> mpsc::UnboundedReceiver<(u64, u64)> {
    let (due_times, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for i in 0..total {
            let due = start + i * interval_ns;
            if let Some(wait) = due.checked_sub(clock::now()) {
                std::thread::sleep(Duration::from_nanos(wait));
            }
            if due_times.send((i, due)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The closed loop: `concurrency` senders, each sending its next request as soon as the
/// previous one was answered, until `duration` passes or `limit` requests were sent. Sender `s`
/// sends `s, s + concurrency, …`, request `n` by `send(n, sent)`; every sender's results.
pub async fn back_to_back<T, F, Fut>(concurrency: u64, duration: Duration, limit: u64, send: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    let deadline = clock::now() + duration.as_nanos() as u64;
    let mut senders = JoinSet::new();
    for first in 0..concurrency {
        let send = send.clone();
        senders.spawn(async move {
            let mut results = Vec::new();
            let mut n = first;
            while n < limit && clock::now() < deadline {
                results.push(send(n, clock::now()).await);
                n += concurrency;
            }
            results
        });
    }
    senders.join_all().await.into_iter().flatten().collect()
}

/// Acknowledged messages checked against Pipedrive's deliveries.
pub struct Ledger {
    /// Acknowledged but never delivered.
    pub lost: usize,
    /// Deliveries beyond the first of a message.
    pub duplicates: usize,
    /// Deliveries arriving after a later message of their conversation.
    pub out_of_order: usize,
    /// Delivered that were never acknowledged (a post that timed out but was stored).
    pub unacknowledged_delivered: usize,
    /// From the webhook's due/sent time to Pipedrive's receipt.
    pub end_to_end: Summary,
}

impl Ledger {
    /// Compares `samples` with `receives`.
    pub fn of(samples: &[Sample], receives: &[Receive], shape: Shape) -> Self {
        let sent: HashMap<u64, &Sample> = samples.iter().map(|s| (s.seq, s)).collect();
        let mut first_receipt: HashMap<u64, u64> = HashMap::with_capacity(receives.len());
        let mut duplicates = 0;
        let mut out_of_order = 0;
        let mut newest: HashMap<u64, u64> = HashMap::new();
        for r in receives {
            if first_receipt.insert(r.seq, r.at).is_some() {
                duplicates += 1;
                continue;
            }
            let newest = newest.entry(shape.conversation(r.seq)).or_insert(r.seq);
            if r.seq < *newest {
                out_of_order += 1;
            }
            *newest = (*newest).max(r.seq);
        }
        let lost = samples
            .iter()
            .filter(|s| s.acknowledged && !first_receipt.contains_key(&s.seq))
            .count();
        let unacknowledged_delivered = first_receipt
            .keys()
            .filter(|seq| sent.get(seq).is_none_or(|s| !s.acknowledged))
            .count();
        let end_to_end = Summary::of(first_receipt.iter().filter_map(|(seq, at)| {
            sent.get(seq)
                .map(|s| Duration::from_nanos(at.saturating_sub(s.sent)))
        }));
        Self {
            lost,
            duplicates,
            out_of_order,
            unacknowledged_delivered,
            end_to_end,
        }
    }

    /// True when nothing was lost or duplicated and order held.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost {} · duplicates {} · out of order {} · delivered without ack {}",
            self.lost, self.duplicates, self.out_of_order, self.unacknowledged_delivered
        )
    }
}
