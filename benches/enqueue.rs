//! `cargo bench --bench enqueue`: the raw-SQLite baseline (1 and 256 rows per
//! transaction), group commit over the socket with 32 and 64 clients (rate, ratio to the
//! baseline of this very run, p50/p99 latency), and the batch endpoint (cards/s).
//! Then the same socket enqueue on PostgreSQL (1 and 32 clients, a daemon on a fresh
//! database of the server `CONTACTQ_TEST_POSTGRES` names, else 127.0.0.1:5432) beside
//! `pgbench -c 1` and `-c 32` single-row INSERT commits on the same server, in this run.
//!
//! Set `BENCH_SECONDS` to lengthen each measured window (default 5), and
//! `BENCH_SKIP_POSTGRES=1` to leave out the PostgreSQL figures.

mod common;

use std::time::Duration;

use common::*;
use hyper::body::Bytes;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let window = Duration::from_secs(seconds);
    let warmup = Duration::from_secs(1);
    println!("# contactq enqueue benchmark\n\nmachine: {}\n", machine());

    let dir = work_dir();
    let raw_dir = dir.path().to_path_buf();
    let (raw1, raw256) = tokio::task::spawn_blocking(move || {
        (
            raw_sqlite(&raw_dir, 1, window),
            raw_sqlite(&raw_dir, 256, window),
        )
    })
    .await
    .expect("baseline");
    println!("| figure | value |\n| --- | --- |");
    println!("| raw SQLite, 1 row/transaction | {raw1:.0} rows/s |");
    println!("| raw SQLite, 256 rows/transaction | {raw256:.0} rows/s |");

    let mut daemon = Daemon::configure(dir.path(), &[InstanceConf::never_drains()]);
    daemon.start().await;
    let path = "/v1/instances/main/sendContact";
    for clients in [1usize, 32, 64] {
        let cpu0 = cpu_time(daemon.pid());
        let mut r = hammer(
            &daemon.socket,
            clients,
            warmup,
            window,
            path,
            Bytes::from_static(CARD.as_bytes()),
            1,
        )
        .await;
        let cpu = cpu_time(daemon.pid()) - cpu0;
        println!(
            "| socket enqueue, {clients} clients | {:.0} cards/s = {:.2}x raw 1-row; p50 {:.2} ms, p99 {:.2} ms; daemon CPU {:.0}%; errors {} |",
            r.per_second(),
            r.per_second() / raw1,
            ms(r.percentile(0.50)),
            ms(r.percentile(0.99)),
            100.0 * cpu.as_secs_f64() / (window + warmup).as_secs_f64(),
            r.errors,
        );
    }

    let batch_path = "/v1/instances/main/sendContact:batch";
    for (clients, size) in [(1usize, 1000usize), (2, 1000), (2, 10_000)] {
        let mut r = hammer(
            &daemon.socket,
            clients,
            warmup,
            window,
            batch_path,
            batch_body(size),
            size as u64,
        )
        .await;
        println!(
            "| batch enqueue, {clients} clients x {size} cards | {:.0} cards/s; p50 {:.1} ms per batch; errors {} |",
            r.per_second(),
            ms(r.percentile(0.50)),
            r.errors,
        );
    }
    println!(
        "| daemon RSS after the run | {} MiB |",
        status_kib(daemon.pid(), "VmRSS") / 1024
    );
    daemon.stop();
    // An older binary (`CONTACTQ_BIN`) may not speak PostgreSQL: BENCH_SKIP_POSTGRES=1.
    if std::env::var_os("BENCH_SKIP_POSTGRES").is_none() {
        postgres(window, warmup).await;
    }
}

/// The PostgreSQL figures: pgbench's single-row INSERT commits and the socket enqueue
/// of a daemon on the same server, each at 1 and 32 clients.
async fn postgres(window: Duration, warmup: Duration) {
    let Some(db) = contactq::test_postgres::TestDatabase::create().await else {
        println!("\n(no PostgreSQL server: the PostgreSQL figures are left out)");
        return;
    };
    println!("\n| PostgreSQL figure | value |\n| --- | --- |");
    let seconds = window.as_secs().max(1);
    let mut pgbench = Vec::new();
    for clients in [1usize, 32] {
        match pgbench_insert(&db.url, clients, seconds) {
            Ok(tps) => {
                pgbench.push((clients, tps));
                println!("| pgbench -c {clients}, single-row INSERT commits | {tps:.0} tps |");
            }
            Err(why) => println!("| pgbench -c {clients} | failed: {why} |"),
        }
    }
    let dir = work_dir();
    let mut daemon = Daemon::configure_on(dir.path(), &[InstanceConf::never_drains()], &db.url);
    daemon.start().await;
    for clients in [1usize, 32] {
        let cpu0 = cpu_time(daemon.pid());
        let mut r = hammer(
            &daemon.socket,
            clients,
            warmup,
            window,
            "/v1/instances/main/sendContact",
            Bytes::from_static(CARD.as_bytes()),
            1,
        )
        .await;
        let cpu = cpu_time(daemon.pid()) - cpu0;
        let versus = pgbench
            .iter()
            .find(|(c, _)| *c == clients)
            .map_or(String::new(), |(_, tps)| {
                format!(" = {:.2}x pgbench -c {clients}", r.per_second() / tps)
            });
        println!(
            "| socket enqueue on PostgreSQL, {clients} clients | {:.0} cards/s{versus}; p50 {:.2} ms, p99 {:.2} ms; daemon CPU {:.0}%; errors {} |",
            r.per_second(),
            ms(r.percentile(0.50)),
            ms(r.percentile(0.99)),
            100.0 * cpu.as_secs_f64() / (window + warmup).as_secs_f64(),
            r.errors,
        );
    }
    daemon.stop();
}
