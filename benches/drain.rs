//! `cargo bench --bench drain`: the drain against the loopback sandbox (in this
//! process; the daemon is a subprocess so its CPU is its own).
//!
//! 1. A thousand instances, each `send_delay = "1s"`: the gaps between one instance's
//!    consecutive sends as the sandbox saw them, and the daemon's CPU meanwhile.
//! 2. One instance with `send_delay = "0s"` and the sandbox's request limits off: cards
//!    per second from the first send to the last, every one then `sent` with its
//!    idMessage in the database.
//!
//! `BENCH_INSTANCES` (default 1000), `BENCH_ROUNDS` (cards per instance, default 15),
//! `BENCH_FAST_CARDS` (default 20,000).

mod common;

use std::time::{Duration, Instant};

use common::*;
use contactq::sandbox::{Sandbox, SandboxOptions};
use hyper::body::Bytes;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

async fn run() {
    println!("# contactq drain benchmark\n\nmachine: {}\n", machine());
    println!("| figure | value |\n| --- | --- |");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "pacing" {
        pacing(
            env_or("BENCH_INSTANCES", 1000) as usize,
            env_or("BENCH_ROUNDS", 15) as usize,
        )
        .await;
    }
    if only.is_empty() || only == "fast" {
        fast(env_or("BENCH_FAST_CARDS", 20_000) as usize).await;
    }
}

fn id_instance(i: usize) -> String {
    format!("1101{i:06}")
}

async fn pacing(instances: usize, rounds: usize) {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default())
        .await
        .expect("sandbox");
    let dir = work_dir();
    let confs: Vec<InstanceConf> = (0..instances)
        .map(|i| InstanceConf {
            name: format!("i{i:04}"),
            id_instance: id_instance(i),
            api_url: sandbox.url(),
            send_delay: "1s".into(),
        })
        .collect();
    let mut daemon = Daemon::configure(dir.path(), &confs);
    let start = daemon.start().await;
    println!(
        "| daemon start with {instances} instances | {:.0} ms |",
        ms(start)
    );
    // Every instance gets its cards in one batch; 8 connections share the work.
    let body = batch_body(rounds);
    let mut tasks = Vec::new();
    for client in 0..8 {
        let socket = daemon.socket.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&socket).await.expect("connect");
            for i in (client..instances).step_by(8) {
                let path = format!("/v1/instances/i{i:04}/sendContact:batch");
                let (status, _) = conn.post(&path, body.clone()).await.expect("batch");
                assert_eq!(status, 202);
            }
        }));
    }
    for t in tasks {
        t.await.expect("enqueuer");
    }
    // Steady state: from 3 s in until 2 s before the last round.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let measure = Duration::from_secs(rounds.saturating_sub(5).max(2) as u64);
    let cpu0 = cpu_time(daemon.pid());
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    let cpu = cpu_time(daemon.pid()) - cpu0;
    let wall = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut deviations = Vec::new();
    let mut sent = 0usize;
    let mut starved = 0usize;
    for i in 0..instances {
        let received = sandbox.received(&id_instance(i));
        sent += received.len();
        if received.len() < rounds {
            starved += 1;
        }
        for pair in received.windows(2) {
            deviations.push(pair[1].received_at_ms - pair[0].received_at_ms - 1000);
        }
    }
    deviations.sort_unstable();
    let pct = |p: f64| deviations[((deviations.len() - 1) as f64 * p).round() as usize];
    let within = deviations.iter().filter(|d| d.abs() <= 50).count();
    println!(
        "| {instances} instances x send_delay 1s: gap - 1000 ms | min {} ms, p1 {} ms, p50 {} ms, p99 {} ms, max {} ms; {:.2}% of {} gaps within ±50 ms |",
        deviations[0],
        pct(0.01),
        pct(0.5),
        pct(0.99),
        deviations[deviations.len() - 1],
        100.0 * within as f64 / deviations.len() as f64,
        deviations.len()
    );
    println!(
        "| {instances} instances: cards sent | {sent} of {} ({starved} instances short) |",
        instances * rounds
    );
    println!(
        "| {instances} instances: daemon CPU while sending {:.0} cards/s | {:.1}% of one core |",
        instances as f64,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    println!(
        "| {instances} instances: daemon RSS | {} MiB |",
        status_kib(daemon.pid(), "VmRSS") / 1024
    );
    daemon.stop();
    sandbox.shutdown();
}

async fn fast(cards: usize) {
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxOptions {
            rate_limits: false,
            ..SandboxOptions::default()
        },
    )
    .await
    .expect("sandbox");
    let dir = work_dir();
    let mut daemon = Daemon::configure(
        dir.path(),
        &[InstanceConf {
            name: "main".into(),
            id_instance: id_instance(1),
            api_url: sandbox.url(),
            send_delay: "0s".into(),
        }],
    );
    daemon.start().await;
    let mut conn = Conn::open(&daemon.socket).await.expect("connect");
    // Hold the line while the cards go in, so the run measures sending alone.
    let (status, _) = conn
        .post("/v1/instances/main/pause", Bytes::new())
        .await
        .expect("pause");
    assert_eq!(status, 200);
    let mut left = cards;
    while left > 0 {
        let n = left.min(10_000);
        let (status, _) = conn
            .post("/v1/instances/main/sendContact:batch", batch_body(n))
            .await
            .expect("batch");
        assert_eq!(status, 202);
        left -= n;
    }
    let cpu0 = cpu_time(daemon.pid());
    let t0 = Instant::now();
    conn.post("/v1/instances/main/resume", Bytes::new())
        .await
        .expect("resume");
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sandbox.received(&id_instance(1)).len() >= cards
            || t0.elapsed() > Duration::from_secs(300)
        {
            break;
        }
    }
    // Wait for the last outcome to be committed too.
    loop {
        let (_, body) = conn.get("/v1/status").await.expect("status");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("status JSON");
        if v["instances"][0]["sent"].as_u64().unwrap_or(0) >= cards as u64
            || t0.elapsed() > Duration::from_secs(300)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    let cpu = cpu_time(daemon.pid()) - cpu0;
    drop(conn);
    daemon.stop();
    let db = rusqlite::Connection::open(&daemon.database).expect("open database");
    let recorded: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE state = 'sent' AND id_message IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    println!(
        "| 1 instance, send_delay 0s, limits off | {:.0} cards/s ({cards} cards in {:.2} s); {recorded} recorded sent with idMessage; daemon CPU {:.0}% of one core |",
        cards as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / took.as_secs_f64()
    );
    sandbox.shutdown();
}
