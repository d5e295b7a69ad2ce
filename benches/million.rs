//! `cargo bench --bench million`: a daemon with a million queued cards. Measures the
//! enqueue rate on an empty queue, fills the queue through the batch endpoint, then
//! `status` latency, RSS, the enqueue rate at a million, and a restart (time until
//! `/v1/health` answers, RSS, `status` again).
//!
//! `BENCH_CARDS` changes the fill (default 1,000,000), `BENCH_SECONDS` the windows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::body::Bytes;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

const ENQUEUE: &str = "/v1/instances/main/sendContact";
const BATCH: &str = "/v1/instances/main/sendContact:batch";

async fn run() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let target: u64 = std::env::var("BENCH_CARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let window = Duration::from_secs(seconds);
    let warmup = Duration::from_secs(1);
    println!(
        "# contactq: a million queued cards\n\nmachine: {}\n",
        machine()
    );
    println!("| figure | value |\n| --- | --- |");

    let dir = work_dir();
    let mut daemon = Daemon::configure(dir.path(), &[InstanceConf::never_drains()]);
    let start_empty = daemon.start().await;
    println!(
        "| daemon start, empty database | {:.0} ms |",
        ms(start_empty)
    );
    let mut status_conn = Conn::open(&daemon.socket).await.expect("connect");
    let empty = enqueue_rate(&daemon, warmup, window).await;
    println!(
        "| enqueue, 32 clients, near-empty queue | {:.0} cards/s, p99 {:.2} ms |",
        empty.0,
        ms(empty.1)
    );

    let queued = queued_count(&mut status_conn).await;
    let fill = target.saturating_sub(queued);
    let batch = 10_000u64;
    let requests = fill.div_ceil(batch);
    let started = Instant::now();
    let body = batch_body(batch as usize);
    let mut tasks = Vec::new();
    for client in 0..2u64 {
        let socket = daemon.socket.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&socket).await.expect("connect");
            for _ in (client..requests).step_by(2) {
                let (status, _) = conn.post(BATCH, body.clone()).await.expect("batch");
                assert_eq!(status, 202);
            }
        }));
    }
    for t in tasks {
        t.await.expect("filler");
    }
    let filled = started.elapsed();
    let queued = queued_count(&mut status_conn).await;
    println!(
        "| fill by batches of 10,000 (2 clients) | {} cards in {:.1} s = {:.0} cards/s |",
        requests * batch,
        filled.as_secs_f64(),
        (requests * batch) as f64 / filled.as_secs_f64()
    );
    println!("| queued cards | {queued} |");
    println!(
        "| daemon RSS after the fill (peak) | {} MiB ({} MiB) |",
        status_kib(daemon.pid(), "VmRSS") / 1024,
        status_kib(daemon.pid(), "VmHWM") / 1024
    );
    let (p50, max) = status_latency(&mut status_conn).await;
    println!(
        "| status at {queued} queued | p50 {:.2} ms, max {:.2} ms |",
        ms(p50),
        ms(max)
    );
    let full = enqueue_rate(&daemon, warmup, window).await;
    println!(
        "| enqueue, 32 clients, {queued} queued | {:.0} cards/s = {:.0}% of the empty queue's, p99 {:.2} ms |",
        full.0,
        100.0 * full.0 / empty.0,
        ms(full.1)
    );
    tail_position(&mut status_conn).await;
    drop(status_conn);

    daemon.stop();
    let restart = daemon.start().await;
    println!(
        "| daemon start with {queued} queued (until /v1/health answers) | {:.0} ms |",
        ms(restart)
    );
    let mut status_conn = Conn::open(&daemon.socket).await.expect("connect");
    let (p50, max) = status_latency(&mut status_conn).await;
    println!(
        "| status after the restart | p50 {:.2} ms, max {:.2} ms |",
        ms(p50),
        ms(max)
    );
    println!(
        "| daemon RSS after the restart and 50 status calls | {} MiB |",
        status_kib(daemon.pid(), "VmRSS") / 1024
    );
    let after = enqueue_rate(&daemon, warmup, window).await;
    println!(
        "| enqueue, 32 clients, after the restart | {:.0} cards/s = {:.0}% of the empty queue's, p99 {:.2} ms |",
        after.0,
        100.0 * after.0 / empty.0,
        ms(after.1)
    );
    println!(
        "| daemon RSS after that (peak since the restart) | {} MiB ({} MiB) |",
        status_kib(daemon.pid(), "VmRSS") / 1024,
        status_kib(daemon.pid(), "VmHWM") / 1024
    );
    daemon.stop();
}

async fn enqueue_rate(daemon: &Daemon, warmup: Duration, window: Duration) -> (f64, Duration) {
    let mut r = hammer(
        &daemon.socket,
        32,
        warmup,
        window,
        ENQUEUE,
        Bytes::from_static(CARD.as_bytes()),
        1,
    )
    .await;
    (r.per_second(), r.percentile(0.99))
}

async fn queued_count(conn: &mut Conn) -> u64 {
    let (_, body) = conn.get("/v1/status").await.expect("status");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("status JSON");
    v["instances"][0]["queued"].as_u64().unwrap_or(0)
}

/// 50 `GET /v1/status`, one after another: (p50, max).
async fn status_latency(conn: &mut Conn) -> (Duration, Duration) {
    let mut times = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        let (status, _) = conn.get("/v1/status").await.expect("status");
        assert_eq!(status, 200);
        times.push(t0.elapsed());
    }
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

/// `GET /v1/messages/{id}` of the newest card (the tail: its position counts the line).
async fn tail_position(conn: &mut Conn) {
    let (_, body) = conn.get("/v1/messages?limit=1").await.expect("list");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("list JSON");
    let Some(id) = v["messages"][0]["id"].as_str() else {
        return;
    };
    let t0 = Instant::now();
    let (_, body) = conn.get(&format!("/v1/messages/{id}")).await.expect("get");
    let took = t0.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("message JSON");
    println!(
        "| GET one message at the tail (position {}) | {:.2} ms |",
        v["position"],
        ms(took)
    );
}
