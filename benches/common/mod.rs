//! Shared pieces of the benchmark harness (BENCHMARKS.md): the daemon as a subprocess
//! (so its CPU and RSS are its own), the load generator (hyper HTTP/1.1 keep-alive
//! connections over tokio `UnixStream`s, one task per client), the raw-SQLite baseline,
//! and /proc readings.
//!
//! Benchmarks print figures; they never assert on speed, so CI cannot fail on it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A single card, as a client program would post it.
pub const CARD: &str = r#"{"chatId":"11001234567@c.us","contact":{"phoneContact":79001234568,"firstName":"Artem","lastName":"Bench"}}"#;

/// The `contactq` binary: `$CONTACTQ_BIN`, else the one cargo built with the bench.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("CONTACTQ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_contactq")))
}

/// A bench's working directory: `$CONTACTQ_BENCH_DIR` (to put the database on another
/// disk), else a temp dir.
pub fn work_dir() -> tempfile::TempDir {
    match std::env::var_os("CONTACTQ_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// One configured instance.
pub struct InstanceConf {
    pub name: String,
    pub id_instance: String,
    pub api_url: String,
    pub send_delay: String,
}

impl InstanceConf {
    /// One instance, "main", whose API address has nothing listening: it is never
    /// authorized, nothing drains, and a benchmark measures enqueueing alone.
    pub fn never_drains() -> Self {
        Self {
            name: "main".into(),
            id_instance: "1101000001".into(),
            api_url: "http://127.0.0.1:9".into(),
            send_delay: "1s".into(),
        }
    }
}

/// The daemon process and its files.
pub struct Daemon {
    pub socket: PathBuf,
    pub database: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Writes the config under `dir` (the database is `dir/queue.db`).
    pub fn configure(dir: &Path, instances: &[InstanceConf]) -> Daemon {
        let database = dir.join("queue.db");
        Self::configure_on(dir, instances, &database.display().to_string())
    }

    /// Writes the config under `dir` for the database `database` (a path, or a
    /// `postgres://` URL).
    pub fn configure_on(dir: &Path, instances: &[InstanceConf], database_key: &str) -> Daemon {
        let socket = dir.join("contactq.sock");
        let database = dir.join("queue.db");
        let config = dir.join("contactq.toml");
        let mut text = format!(
            "[daemon]\nsocket = {socket:?}\ndatabase = {database_key:?}\nlog_level = \"warn\"\n\n\
             [queue]\nmax_age = \"24h\"\nstate_poll = \"1s\"\n"
        );
        for i in instances {
            text.push_str(&format!(
                "\n[instances.{}]\napi_url = {:?}\nid_instance = {:?}\napi_token = \"bench-token\"\nsend_delay = {:?}\n",
                i.name, i.api_url, i.id_instance, i.send_delay
            ));
        }
        std::fs::write(&config, text).expect("config written");
        Daemon {
            log: dir.join("daemon.log"),
            socket,
            database,
            config,
            child: None,
        }
    }

    /// Starts the process; returns how long until `/v1/health` answered 200.
    pub async fn start(&mut self) -> Duration {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let started = Instant::now();
        let child = Command::new(daemon_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("daemon")
            .env_remove("CONTACTQ_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon starts");
        self.child = Some(child);
        loop {
            if let Ok(mut conn) = Conn::open(&self.socket).await {
                if let Ok((200, _)) = conn.get("/v1/health").await {
                    return started.elapsed();
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited ({status}): {}", self.logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "daemon did not come up"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15: indices 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(total * 1_000_000 / hz)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One persistent HTTP/1.1 keep-alive connection to the daemon's socket.
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(socket: &Path) -> std::io::Result<Conn> {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { tx })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), hyper::Error> {
        self.tx.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let response = self.tx.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), hyper::Error> {
        self.request("GET", path, Bytes::new()).await
    }

    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<(u16, Bytes), hyper::Error> {
        self.request("POST", path, body).await
    }
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests answered 2xx within the measured window.
    pub requests: u64,
    /// Items those requests carried (cards).
    pub items: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// `clients` connections, each posting `body` to `path` back to back; requests that
/// start within the `measure` window after `warmup` are counted.
pub async fn hammer(
    socket: &Path,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    path: &str,
    body: Bytes,
    items_per_request: u64,
) -> LoadResult {
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.to_path_buf();
        let path = path.to_string();
        let body = body.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&socket).await.expect("connect");
            let mut out = LoadResult::default();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let result = conn.post(&path, body.clone()).await;
                let latency = t0.elapsed();
                if t0 < from {
                    continue;
                }
                match result {
                    Ok((s, _)) if (200..300).contains(&s) => {
                        out.requests += 1;
                        out.items += items_per_request;
                        out.latencies.push(latency);
                    }
                    Ok(_) => out.errors += 1,
                    Err(_) => {
                        out.errors += 1;
                        conn = Conn::open(&socket).await.expect("reconnect");
                    }
                }
            }
            out
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t.await.expect("client task");
        total.requests += r.requests;
        total.items += r.items;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
    }
    // The window closes when the last request that started in it has answered.
    total.elapsed = (Instant::now().min(until + Duration::from_secs(60))) - from;
    total.elapsed = total.elapsed.max(measure);
    total
}

/// The raw-SQLite baseline: rows of the `messages` shape (the table and its indexes
/// from migration 0001, no triggers), WAL, `synchronous=FULL`, `rows_per_tx` rows per
/// transaction with a prepared statement, for `measure`. Returns rows per second.
pub fn raw_sqlite(dir: &Path, rows_per_tx: usize, measure: Duration) -> f64 {
    let path = dir.join(format!("raw-{rows_per_tx}.db"));
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    let schema = include_str!("../../migrations/0001_init.sql");
    let messages = schema
        .split("CREATE TABLE events")
        .next()
        .expect("messages part");
    conn.execute_batch(messages).expect("schema");
    let mut stmt = conn
        .prepare(
            "INSERT INTO messages (id, instance, state, line_seq, chat_id, phone, body,
                 idempotency_key, peer_uid, enqueued_at, expires_at)
             VALUES (?1, 'main', 'queued', ?2, '11001234567@c.us', 79001234568, ?3, NULL, 1000, ?4, ?5)",
        )
        .expect("prepare");
    let mut ids = ulid::Generator::new();
    let started = Instant::now();
    let mut rows = 0u64;
    let mut line = 0i64;
    while started.elapsed() < measure {
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..rows_per_tx {
            line += 1;
            let now = contactq::clock::now_ms();
            stmt.execute(rusqlite::params![
                ids.generate().unwrap().to_string(),
                line,
                CARD,
                now,
                now + 86_400_000
            ])
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        rows += rows_per_tx as u64;
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// A JSON array of `n` cards, for the batch endpoint.
pub fn batch_body(n: usize) -> Bytes {
    let mut s = String::with_capacity(n * (CARD.len() + 1) + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(CARD);
    }
    s.push(']');
    Bytes::from(s)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The machine, for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, {model}, Linux {}", kernel.trim())
}

/// `pgbench` from this machine: single-row INSERT commits (one transaction each, as
/// `-f` runs a script of one statement) by `clients` clients for `seconds` against
/// `url`, into a table made for it. Answers transactions per second, or why not.
pub fn pgbench_insert(url: &str, clients: usize, seconds: u64) -> Result<f64, String> {
    let dir = work_dir();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO pgbench_cards (body) VALUES (repeat('x', 200));\n",
    )
    .map_err(|e| e.to_string())?;
    let psql = Command::new("psql")
        .arg(url)
        .arg("-qc")
        .arg("CREATE TABLE IF NOT EXISTS pgbench_cards (seq bigserial PRIMARY KEY, body text NOT NULL)")
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if !psql.status.success() {
        return Err(String::from_utf8_lossy(&psql.stderr).into_owned());
    }
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(8).to_string(),
        ])
        .args(["-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            format!(
                "no tps in pgbench's output: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
