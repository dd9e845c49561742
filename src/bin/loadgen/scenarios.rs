//! The scenarios: what each drives, waits for and prints. Every figure comes from one run; run
//! a scenario several times and take the median (scripts/loadgen-suite does).

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use base64::Engine;
use pipedrive_whatsapp::purge;
use pipedrive_whatsapp::queue;
use pipedrive_whatsapp::whatsapp::retention;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::deployment::{self, Deployment, Options};
use crate::fakes;
use crate::load::{self, Ledger, Posted, Shape};
use crate::service::Memory;
use crate::stats::Summary;

/// How webhooks are sent.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many per second, whatever the answers.
    Rate(u64),
    /// This many senders (posters, readers), each waiting for its answer.
    Posters(u64),
}

/// Rows past their retention stored before the load and purged during it, each kind by the
/// purge the service runs hourly, at its pace, on a connection of its own.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Aged {
    /// Processed webhooks received past their retention (bodies of the load's size).
    #[arg(long, default_value_t = 0)]
    pub aged_webhooks: u64,
    /// Done jobs finished past their week (status deliveries with their dedup keys).
    #[arg(long, default_value_t = 0)]
    pub aged_jobs: u64,
}

/// A purge running during the load: what it deletes, and its task, which gives how many went
/// and how long it took.
struct Purge {
    what: &'static str,
    stored: u64,
    task: tokio::task::JoinHandle<Result<(u64, Duration), sqlx::Error>>,
}

/// `ingest` and `e2e`: webhooks at a pace for a while, then every acknowledged message must reach
/// Pipedrive exactly once and in order, while the purges of `aged` run.
pub async fn webhooks(
    options: &Options,
    name: &str,
    pace: Pace,
    seconds: u64,
    conversations: u64,
    aged: Aged,
) -> anyhow::Result<bool> {
    let d = Deployment::start(options).await?;
    let idle = d.service.memory();
    let shape = shape_for(conversations, pace);
    let url = d.service.url("/webhooks/whatsapp");
    let duration = Duration::from_secs(seconds);
    let mut purges = Vec::new();
    if aged.aged_webhooks > 0 {
        purges.push(purge_webhooks_during_load(&d, aged.aged_webhooks).await?);
    }
    if aged.aged_jobs > 0 {
        purges.push(purge_jobs_during_load(&d, aged.aged_jobs).await?);
    }
    let posted = match pace {
        Pace::Rate(rate) => load::open_loop(&url, shape, 0, rate, duration).await,
        Pace::Posters(n) => load::closed_loop(&url, shape, 0, n, duration, u64::MAX).await,
    };
    let mut purged = Vec::new();
    for purge in purges {
        let (deleted, took) = purge.task.await??;
        purged.push((purge.what, purge.stored, deleted, took));
    }
    let acknowledged = posted.acknowledged();
    let last_ack = clock::now();
    let delivered = wait_for(Duration::from_secs(600), || d.pipedrive.taken() >= acknowledged).await;
    let drained_in = Duration::from_nanos(clock::now() - last_ack);
    // Late duplicates would arrive now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ledger = Ledger::of(&posted.samples, &d.pipedrive.receives(), shape);
    let memory = d.service.memory();

    println!(
        "scenario {name}: {pace:?} for {seconds} s over {} conversations",
        shape.conversations
    );
    print_posted(&posted);
    println!("  end to end (webhook → Pipedrive)  {}", ledger.end_to_end);
    println!(
        "  backlog at the end of the load     delivered {} s after the last post{}",
        fmt_secs(drained_in),
        if delivered {
            ""
        } else {
            " (NOT all delivered within 600 s)"
        }
    );
    for (what, stored, deleted, took) in purged {
        println!(
            "  purge during the load              {deleted} of {stored} {what} deleted in {} s",
            fmt_secs(took)
        );
    }
    println!("  ledger                             {ledger}");
    finish(d, idle, memory, delivered && ledger.clean()).await
}

/// Stores `n` processed webhooks received a day before the load, then starts the inbox's purge
/// with a retention that ends when the load starts.
async fn purge_webhooks_during_load(d: &Deployment, n: u64) -> anyhow::Result<Purge> {
    let seeded_at = std::time::Instant::now();
    let received = chrono::Utc::now() - chrono::TimeDelta::days(1);
    // A body of the load's size; its content is never read again.
    sqlx::query(
        "INSERT INTO webhook_events (received_at, body, state, processed_at)
         SELECT $1, convert_to(repeat('x', 620), 'UTF8'), 'processed', $1
         FROM generate_series(1, $2)",
    )
    .bind(received)
    .bind(n as i64)
    .execute(&d.db)
    .await?;
    settle_seed(d, "VACUUM ANALYZE webhook_events").await?;
    let db = d.db.clone();
    Ok(start_purge("aged webhooks", n, seeded_at, async move {
        let now = chrono::Utc::now();
        let cutoffs = retention::Cutoffs {
            processed: now,
            parked: now,
        };
        let purged = retention::purge(&db, cutoffs, 0, purge::PACE, &CancellationToken::new()).await?;
        Ok(purged.deleted.processed)
    }))
}

/// Stores `n` done jobs finished eight days before the load, as the status deliveries of a busy
/// number leave them (the most numerous jobs kept once done), then starts the queue's purge of
/// done jobs with a retention that ends when the load starts.
async fn purge_jobs_during_load(d: &Deployment, n: u64) -> anyhow::Result<Purge> {
    let seeded_at = std::time::Instant::now();
    let finished = chrono::Utc::now() - chrono::TimeDelta::days(8);
    sqlx::query(
        "INSERT INTO jobs (kind, payload, ordering_key, dedup_key, state, attempts, run_at,
                           created_at, updated_at, finished_at)
         SELECT 'deliver_message', jsonb_build_object('message_id', m, 'change', 'delivered'),
                'conversation:' || c, 'deliver:' || m || ':delivered', 'done', 1, $1, $1, $1, $1
         FROM (SELECT gen_random_uuid() AS m, gen_random_uuid() AS c
               FROM generate_series(1, $2)) AS aged",
    )
    .bind(finished)
    .bind(n as i64)
    .execute(&d.db)
    .await?;
    settle_seed(d, "VACUUM ANALYZE jobs").await?;
    let db = d.db.clone();
    Ok(start_purge("aged jobs", n, seeded_at, async move {
        let before = chrono::Utc::now();
        queue::retention::purge(&db, before, purge::PACE, &CancellationToken::new()).await
    }))
}

/// Reports `stored` rows of `what` seeded since `seeded_at`, and starts `purge`, which gives
/// how many it deleted, timing it.
fn start_purge(
    what: &'static str,
    stored: u64,
    seeded_at: std::time::Instant,
    purge: impl Future<Output = Result<u64, sqlx::Error>> + Send + 'static,
) -> Purge {
    println!(
        "  {what:<35}{stored} stored in {} s",
        fmt_secs(seeded_at.elapsed())
    );
    let task = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let deleted = purge.await?;
        Ok((deleted, started.elapsed()))
    });
    Purge { what, stored, task }
}

/// Leaves a seeded table as a long-running database would have it: vacuumed, its statistics
/// current and its pages written out, so the load does not pay for the seeding.
async fn settle_seed(d: &Deployment, vacuum: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(vacuum).execute(&d.db).await?;
    sqlx::query("CHECKPOINT").execute(&d.db).await?;
    Ok(())
}

/// `drain`: `messages` webhooks stored and queued while Pipedrive is down; then Pipedrive comes
/// back and the backlog is delivered, in order per conversation.
pub async fn drain(
    options: &Options,
    messages: u64,
    conversations: u64,
    posters: u64,
) -> anyhow::Result<bool> {
    let d = Deployment::start(options).await?;
    let idle = d.service.memory();
    let shape = shape_for(conversations, Pace::Posters(posters));
    d.pipedrive.set_up(false);
    let url = d.service.url("/webhooks/whatsapp");
    let posted = load::closed_loop(&url, shape, 0, posters, Duration::from_secs(3600), messages).await;
    let acknowledged = posted.acknowledged() as i64;
    let queued = wait_for_async(Duration::from_secs(600), || async {
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'deliver_message' AND state IN ('queued', 'running')",
        )
        .fetch_one(&d.db)
        .await
        .unwrap_or(0);
        (queued >= acknowledged && d.pending_webhooks().await.unwrap_or(1) == 0).then_some(queued)
    })
    .await;
    let Some(queued) = queued else {
        bail!("the backlog was not queued within 600 s");
    };
    let refused_while_down = d.pipedrive.refused();
    let back = clock::now();
    d.pipedrive.set_up(true);
    let delivered = wait_for(Duration::from_secs(900), || {
        d.pipedrive.taken() >= acknowledged as usize
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let receives = d.pipedrive.receives();
    let ledger = Ledger::of(&posted.samples, &receives, shape);
    let memory = d.service.memory();
    let first = receives.first().map_or(back, |r| r.at);
    let last = receives.iter().map(|r| r.at).max().unwrap_or(back);
    let span = Duration::from_nanos(last.saturating_sub(first));

    println!(
        "scenario drain: {messages} messages over {} conversations",
        shape.conversations
    );
    print_posted(&posted);
    println!(
        "  backlog                            {queued} deliveries queued; {refused_while_down} attempts refused while Pipedrive was down"
    );
    println!(
        "  first delivery after the return    {} s",
        fmt_secs(Duration::from_nanos(first.saturating_sub(back)))
    );
    println!(
        "  drain                              {} deliveries in {} s → {:.0} msg/s{}",
        receives.len(),
        fmt_secs(span),
        receives.len() as f64 / span.as_secs_f64().max(1e-9),
        if delivered {
            ""
        } else {
            " (NOT all delivered within 900 s)"
        }
    );
    println!("  ledger                             {ledger}");
    finish(d, idle, memory, delivered && ledger.clean()).await
}

/// `history`: a store of `messages` messages in `conversations` conversations, read the way
/// Pipedrive reads it, with default limits (30 conversations × 30 messages, 30 messages), each
/// endpoint at its pace for `warm_up` seconds and then the measured `seconds`; every
/// `media_every`th message of a conversation carries a photo (0: none).
pub async fn history(
    options: &Options,
    messages: u64,
    conversations: u64,
    [by_id_pace, list_pace]: [Pace; 2],
    [warm_up, seconds]: [u64; 2],
    media_every: u32,
) -> anyhow::Result<bool> {
    let d = Deployment::start(options).await?;
    let idle = d.service.memory();
    let seeded_at = std::time::Instant::now();
    let ids = Arc::new(seed_history(&d, messages, conversations, media_every).await?);
    let media = match media_every {
        0 => String::new(),
        n => format!(", every {n}th with a photo"),
    };
    println!(
        "scenario history: seeded {messages} messages in {conversations} conversations{media} in {:.1} s",
        seeded_at.elapsed().as_secs_f64()
    );
    let base = d.service.url(&format!(
        "/api/channels/{}/conversations",
        deployment::PHONE_NUMBER_ID
    ));
    let list = base.clone();
    let by_id = measure_reads("getConversationById", by_id_pace, [warm_up, seconds], move |i| {
        format!("{base}/{}", ids[(i as usize * 7919) % ids.len()])
    })
    .await;
    let list = measure_reads("getConversations", list_pace, [warm_up, seconds], move |_| {
        list.clone()
    })
    .await;
    let memory = d.service.memory();
    finish(d, idle, memory, by_id && list).await
}

/// Reads `what` at `pace`, unmeasured for `warm_up` seconds and then for `seconds`, and prints
/// both; whether every read succeeded.
async fn measure_reads(
    what: &str,
    pace: Pace,
    [warm_up, seconds]: [u64; 2],
    url_of: impl Fn(u64) -> String + Send + Sync + Clone + 'static,
) -> bool {
    let mut clean = true;
    let phases = [
        (format!("{what} ({pace:?}, warm-up)"), warm_up),
        (format!("{what} ({pace:?})"), seconds),
    ];
    for (label, seconds) in phases.into_iter().filter(|(_, seconds)| *seconds > 0) {
        let duration = Duration::from_secs(seconds);
        let reads = read(pace, duration, url_of.clone()).await;
        println!(
            "  {label:<34} {:.0} req/s ({} ok, {} failed) · {}",
            reads.ok as f64 / duration.as_secs_f64(),
            reads.ok,
            reads.failed,
            reads.latency
        );
        clean &= reads.failed == 0;
    }
    clean
}

/// Prints the service's memory, stops the deployment and passes `clean` on.
async fn finish(d: Deployment, idle: Memory, memory: Memory, clean: bool) -> anyhow::Result<bool> {
    println!(
        "  service memory                     idle {:.1} MiB · peak {:.1} MiB",
        idle.rss_mib, memory.peak_mib
    );
    d.finish().await?;
    Ok(clean)
}

/// `baseline`: the ceilings of this machine. A no-op axum route in its own process, driven like
/// the service is, and bare single-row autocommit INSERTs of a webhook-sized body.
pub async fn baseline(options: &Options, concurrency: u64, seconds: u64) -> anyhow::Result<bool> {
    let duration = Duration::from_secs(seconds);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .args(["noop-server", "--port", &port.to_string()])
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}/");
    let client = load::client();
    wait_for_async(Duration::from_secs(10), || async {
        client.get(&url).send().await.ok()
    })
    .await;
    let noop = read(Pace::Posters(concurrency), duration, move |_| url.clone()).await;
    let _ = server.kill();
    let _ = server.wait();

    let (pool_server, database, database_url) =
        deployment::scratch_database(&options.server_url, "pw_baseline").await?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(&database_url)
        .await?;
    sqlx::query("CREATE TABLE baseline (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        .execute(&db)
        .await?;
    let body = load::Shape {
        conversations: 1,
        run: 0,
    }
    .webhook(0)
    .0;
    let start = clock::now();
    let deadline = start + duration.as_nanos() as u64;
    let mut writers = JoinSet::new();
    for _ in 0..concurrency {
        let (db, body) = (db.clone(), body.clone());
        writers.spawn(async move {
            let mut latencies = Vec::new();
            while clock::now() < deadline {
                let sent = clock::now();
                if sqlx::query("INSERT INTO baseline (body) VALUES ($1)")
                    .bind(&body)
                    .execute(&db)
                    .await
                    .is_ok()
                {
                    latencies.push(Duration::from_nanos(clock::now() - sent));
                }
            }
            latencies
        });
    }
    let inserts: Vec<Duration> = writers.join_all().await.into_iter().flatten().collect();
    let elapsed = Duration::from_nanos(clock::now() - start);
    db.close().await;
    deployment::drop_database(&pool_server, &database).await?;

    println!("scenario baseline: {concurrency} concurrent clients for {seconds} s");
    println!(
        "  no-op axum route                   {:.0} req/s · {}",
        noop.ok as f64 / duration.as_secs_f64(),
        noop.latency
    );
    println!(
        "  single-row INSERT, autocommit      {:.0} rows/s · {}",
        inserts.len() as f64 / elapsed.as_secs_f64(),
        Summary::of(inserts.iter().copied())
    );
    Ok(noop.failed == 0)
}

/// Serves `GET /` with an empty 200 until killed: the `baseline` ceiling.
pub async fn noop_server(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "" }));
    axum::serve(listener, app).await?;
    Ok(())
}

/// Reads done by [`read`].
struct Reads {
    ok: usize,
    failed: usize,
    latency: Summary,
}

/// Reads of `url_of(i)` at `pace` for `duration`: `Posters(n)` readers back to back, or
/// `Rate(n)` a second, each at its due time whatever the answers before it, its latency counted
/// from then (as the open loop of webhooks does).
async fn read(
    pace: Pace,
    duration: Duration,
    url_of: impl Fn(u64) -> String + Send + Sync + Clone + 'static,
) -> Reads {
    let reader = Reader::new();
    let send = move |i, sent| {
        let (reader, url) = (reader.clone(), url_of(i));
        async move { reader.get(&url, sent).await }
    };
    let results = match pace {
        Pace::Posters(concurrency) => load::back_to_back(concurrency, duration, u64::MAX, send).await,
        Pace::Rate(rate) => load::at_rate(rate, duration, send).await.0,
    };
    let failed = results.iter().filter(|r| r.is_none()).count();
    let latencies: Vec<Duration> = results.into_iter().flatten().collect();
    Reads {
        ok: latencies.len(),
        failed,
        latency: Summary::of(latencies.into_iter()),
    }
}

/// Sends GETs with the app's Basic credentials, as Pipedrive does.
#[derive(Clone)]
struct Reader {
    client: reqwest::Client,
    auth: String,
}

impl Reader {
    fn new() -> Self {
        let credentials = format!("{}:{}", fakes::CLIENT_ID, fakes::CLIENT_SECRET);
        Self {
            client: load::client(),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        }
    }

    /// The time from `sent` until a 200 was read in full; `None` for any other answer.
    async fn get(&self, url: &str, sent: u64) -> Option<Duration> {
        let response = self
            .client
            .get(url)
            .header("authorization", &self.auth)
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.bytes().await.ok()?;
        Some(Duration::from_nanos(clock::now().saturating_sub(sent)))
    }
}

/// Fills the store with `conversations` customers and `messages` messages spread evenly over
/// them (two inbound to one outbound, a minute apart, each with its raw payload; every
/// `media_every`th a photo whose attachment is stored, its bytes left out as the reads never
/// touch them); the conversation ids.
async fn seed_history(
    d: &Deployment,
    messages: u64,
    conversations: u64,
    media_every: u32,
) -> anyhow::Result<Vec<String>> {
    let per_conversation = (messages / conversations).max(1) as i32;
    let mut tx = d.db.begin().await?;
    sqlx::query(
        "INSERT INTO contacts (id, wa_id, profile_name)
         SELECT gen_random_uuid(), '4420' || lpad(g::text, 9, '0'), 'Customer ' || g FROM generate_series(1, $1) g",
    )
    .bind(conversations as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO conversations (id, channel_id, contact_id, last_inbound_at, last_message_at)
         SELECT gen_random_uuid(), $1, id, t, t
         FROM (SELECT id, now() - random() * interval '90 days' AS t FROM contacts WHERE wa_id LIKE '4420%') k",
    )
    .bind(d.channel_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, channel_id, direction, wamid, sender_id, kind, body, raw, status,
                               sent_at, has_files)
         SELECT gen_random_uuid(), c.id, c.channel_id,
                CASE WHEN m % 3 = 0 THEN 'outbound' ELSE 'inbound' END,
                'wamid.HISTORY.' || c.id || '.' || m,
                CASE WHEN m % 3 = 0 THEN $2 ELSE c.contact_id::text END,
                CASE WHEN $4 > 0 AND m % $4 = 0 THEN 'image' ELSE 'text' END,
                'Message ' || m || ' of this conversation: could you confirm the delivery date and the invoice address?',
                CASE WHEN m % 3 = 0 THEN NULL ELSE jsonb_build_object(
                    'from', k.wa_id, 'id', 'wamid.HISTORY.' || c.id || '.' || m, 'type', 'text',
                    'timestamp', extract(epoch FROM c.last_message_at)::bigint::text,
                    'text', jsonb_build_object('body', 'Message ' || m)) END,
                CASE WHEN m % 3 = 0 THEN 'read' ELSE 'sent' END,
                c.last_message_at - make_interval(mins => $3 - m),
                $4 > 0 AND m % $4 = 0
         FROM conversations c JOIN contacts k ON k.id = c.contact_id
         CROSS JOIN generate_series(1, $3) m
         WHERE c.channel_id = $1",
    )
    .bind(d.channel_id)
    .bind(deployment::PHONE_NUMBER_ID)
    .bind(per_conversation)
    .bind(media_every as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO attachments (id, message_id, media_id, mime_type, filename, size_bytes, sha256, status)
         SELECT gen_random_uuid(), id, 'media.' || id, 'image/jpeg', 'photo.jpg', 48213,
                md5(id::text) || md5(wamid), 'stored'
         FROM messages WHERE has_files",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("VACUUM ANALYZE messages").execute(&d.db).await?;
    sqlx::query("VACUUM ANALYZE conversations").execute(&d.db).await?;
    sqlx::query("VACUUM ANALYZE contacts").execute(&d.db).await?;
    sqlx::query("VACUUM ANALYZE attachments").execute(&d.db).await?;
    // The seed is a gigabyte of WAL and dirty pages: written out now, not by the checkpointer
    // and the kernel while the reads are measured.
    sqlx::query("CHECKPOINT").execute(&d.db).await?;
    Ok(
        sqlx::query_scalar("SELECT id::text FROM conversations WHERE channel_id = $1")
            .bind(d.channel_id)
            .fetch_all(&d.db)
            .await?,
    )
}

/// Conversations rounded up to a multiple of the posters, so each conversation has one poster
/// and its messages are acknowledged in order.
fn shape_for(conversations: u64, pace: Pace) -> Shape {
    let conversations = match pace {
        Pace::Posters(n) => conversations.div_ceil(n) * n,
        Pace::Rate(_) => conversations,
    };
    Shape {
        conversations: conversations.max(1),
        run: std::process::id(),
    }
}

fn print_posted(posted: &Posted) {
    println!(
        "  webhooks acknowledged              {} of {} in {} s → {:.0} msg/s",
        posted.acknowledged(),
        posted.samples.len(),
        fmt_secs(posted.elapsed),
        posted.throughput()
    );
    println!("  ack latency                        {}", posted.ack_latency());
    if let Some(lateness) = &posted.lateness {
        println!("  posts left after their due time    {lateness}");
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Waits until `check` is true, for at most `bound`; whether it became true.
async fn wait_for(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    wait_for_async(bound, || std::future::ready(check().then_some(())))
        .await
        .is_some()
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `bound`.
async fn wait_for_async<T, F, Fut>(bound: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
