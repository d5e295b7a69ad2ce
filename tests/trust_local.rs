//! The local side trusts nothing: the socket path, the database file under a running
//! daemon, the umask, a damaged or unwritable database, slow or idle connections and
//! oversized bodies. Black-box, against the built `contactq` binary.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{card, DaemonConfig, TestDaemon};
use contactq::cli::client::{ApiRequest, Client};
use serde_json::{json, Value};

const EX_CONFIG: i32 = 78;

/// A daemon run by hand: our own config, our own process set-up (umask, rlimit).
struct Hand {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    database: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Hand {
    /// A config for a daemon whose database is `database` (relative to the temp dir).
    fn new(database: &str, daemon_extra: &str) -> Hand {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("contactq.sock");
        let database = dir.path().join(database);
        let config = dir.path().join("contactq.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = {socket:?}\ndatabase = {database:?}\n{daemon_extra}\n\
                 [instances.main]\napi_url = \"http://127.0.0.1:9\"\n\
                 id_instance = \"1101000001\"\napi_token = \"tok3n-SECRET-4242\"\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("daemon.log");
        Hand {
            _dir: dir,
            socket,
            database,
            config,
            log,
            child: None,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.arg("--config").arg(&self.config).arg("daemon");
        cmd.env_remove("CONTACTQ_CONFIG")
            .env_remove("CONTACTQ_SOCKET")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        cmd
    }

    /// Runs the daemon expecting it to refuse to start: its exit code and stderr.
    fn refused(&self) -> (i32, String) {
        let _ = std::fs::remove_file(&self.log);
        let mut child = self.command().spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the daemon did not refuse to start: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code().unwrap_or(-1), self.logs())
    }

    async fn start(&mut self, mut cmd: Command) {
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client().send(ApiRequest::get("/v1/health")).await {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({status}): {}", self.logs());
            }
            assert!(Instant::now() < deadline, "no start: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn enqueue(&self, body: &Value) -> u16 {
        let path = "/v1/instances/main/sendContact";
        let request = ApiRequest::post(path, Some(body.to_string().into_bytes()));
        self.client().send(request).await.unwrap().status
    }

    async fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Hand {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A test that needs what this machine may lack fails under CI, never passes by skipping.
fn cannot_run(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test cannot run here: {why}");
    }
    eprintln!("SKIPPED (would fail under CI=true): {why}");
}

/// Makes a file immutable for the guard's life (root writes through any mode, not
/// through `chattr +i`).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn regular_file_at_the_socket_path_is_refused_and_kept() {
    let hand = Hand::new("queue.db", "");
    let content = b"precious notes, not a socket\n".repeat(100);
    std::fs::write(&hand.socket, &content).unwrap();
    let (code, stderr) = hand.refused();
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(
        stderr.contains(&hand.socket.display().to_string()) && stderr.contains("not a socket"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&hand.socket).unwrap(), content);
}

#[tokio::test]
async fn a_stale_socket_is_still_replaced() {
    let mut hand = Hand::new("queue.db", "");
    drop(std::os::unix::net::UnixListener::bind(&hand.socket).unwrap());
    hand.start(hand.command()).await;
    hand.stop().await;
}

#[tokio::test]
async fn database_files_are_private_whatever_the_umask() {
    let mut hand = Hand::new("data/deeper/queue.db", "");
    let mut cmd = hand.command();
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    hand.start(cmd).await;
    assert_eq!(hand.enqueue(&card(1)).await, 202);
    let db = hand.database.clone();
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        assert_eq!(mode(Path::new(&p)), 0o640, "{}", Path::new(&p).display());
    }
    assert_eq!(mode(db.parent().unwrap()), 0o750);
    assert_eq!(mode(db.parent().unwrap().parent().unwrap()), 0o750);
    hand.stop().await;
}

#[tokio::test]
async fn the_socket_directory_is_writable_by_the_owner_only_whatever_the_umask() {
    let mut hand = Hand::new("queue.db", "");
    // A socket two directories down that do not exist yet.
    let socket = hand._dir.path().join("run/contactq/contactq.sock");
    let text = std::fs::read_to_string(&hand.config).unwrap().replace(
        &format!("socket = {:?}", hand.socket),
        &format!("socket = {socket:?}"),
    );
    std::fs::write(&hand.config, text).unwrap();
    hand.socket = socket.clone();
    let mut cmd = hand.command();
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    hand.start(cmd).await;
    assert_eq!(mode(socket.parent().unwrap()), 0o755);
    assert_eq!(mode(socket.parent().unwrap().parent().unwrap()), 0o755);
    assert_eq!(mode(&socket), 0o660);
    hand.stop().await;
}

/// A database with cards, closed cleanly (its WAL folded into the file).
async fn database_with_cards(hand: &mut Hand, n: u64) {
    hand.start(hand.command()).await;
    for i in 0..n {
        assert_eq!(hand.enqueue(&card(i)).await, 202);
    }
    hand.stop().await;
}

#[tokio::test]
async fn damaged_database_is_refused_untouched() {
    let mut hand = Hand::new("queue.db", "");
    database_with_cards(&mut hand, 200).await;
    let len = std::fs::metadata(&hand.database).unwrap().len();
    assert!(len >= 8 * 4096, "a database of several pages: {len}");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&hand.database)
            .unwrap();
        use std::io::Seek;
        // Whole pages of garbage, past page 1 (the header and schema).
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for page in [2u64, 4, 5] {
            f.seek(std::io::SeekFrom::Start(page * 4096)).unwrap();
            f.write_all(&garbage).unwrap();
        }
    }
    let before = sha(&hand.database);
    let (code, stderr) = hand.refused();
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(
        stderr.contains(&hand.database.display().to_string()) && stderr.contains("quick_check"),
        "{stderr}"
    );
    assert_eq!(sha(&hand.database), before, "the damaged file was changed");
}

#[tokio::test]
async fn unwritable_database_is_refused_at_start() {
    let mut hand = Hand::new("queue.db", "");
    database_with_cards(&mut hand, 3).await;
    let Some(_immutable) = Immutable::set(&hand.database) else {
        return cannot_run("chattr +i is not available (needs root and ext4-like fs)");
    };
    let (code, stderr) = hand.refused();
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(
        stderr.contains(&hand.database.display().to_string()) && stderr.contains("written"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unwritable_wal_is_refused_at_start() {
    let mut hand = Hand::new("queue.db", "");
    hand.start(hand.command()).await;
    assert_eq!(hand.enqueue(&card(1)).await, 202);
    // kill -9 leaves the WAL behind, holding the committed card.
    hand.kill9();
    let wal = PathBuf::from(format!("{}-wal", hand.database.display()));
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let Some(_immutable) = Immutable::set(&wal) else {
        return cannot_run("chattr +i is not available (needs root and ext4-like fs)");
    };
    let (code, stderr) = hand.refused();
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(stderr.contains(&wal.display().to_string()), "{stderr}");
}

/// Health answers 503 within a second of `broken`, and every enqueue after it is
/// refused (a 202 now would be a card that lives only in an unlinked file).
async fn writes_stop_when(daemon: &TestDaemon, broken: impl FnOnce()) {
    assert_eq!(daemon.get("/v1/health").await.0, 200);
    broken();
    let at = Instant::now();
    let (status, body) = daemon.enqueue(&card(900)).await;
    assert_eq!(status, 503, "{body}");
    loop {
        let (status, _) = daemon.get("/v1/health").await;
        if status == 503 {
            break;
        }
        assert!(
            at.elapsed() < Duration::from_secs(1),
            "health still {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(at.elapsed() < Duration::from_secs(1));
    for i in 0..5 {
        assert_eq!(daemon.enqueue(&card(901 + i)).await.0, 503);
    }
    let (status, body) = daemon
        .post("/v1/instances/main/sendContact:batch", &json!([card(950)]))
        .await;
    assert_eq!(status, 503, "{body}");
}

fn paused() -> DaemonConfig {
    // Nothing drains (an instance nobody answers), so cards stay put for counting.
    DaemonConfig {
        request_timeout: "1s",
        ..DaemonConfig::default()
    }
}

#[tokio::test]
async fn deleting_the_database_under_the_daemon_stops_writes() {
    let sb = common::sandbox().await;
    let mut daemon = TestDaemon::start(&sb, paused()).await;
    daemon.enqueue_ok(&card(1)).await;
    let db = daemon.database.clone();
    writes_stop_when(&daemon, || std::fs::remove_file(&db).unwrap()).await;
    assert!(daemon.logs().contains("deleted"), "{}", daemon.logs());
    daemon.restart().await;
    // The deleted file took its cards with it; nothing acknowledged since is missing
    // because nothing was acknowledged since.
    assert_eq!(daemon.all_messages().await.len(), 0);
    daemon.enqueue_ok(&card(2)).await;
}

#[tokio::test]
async fn deleting_the_wal_under_the_daemon_stops_writes() {
    let sb = common::sandbox().await;
    let daemon = TestDaemon::start(&sb, paused()).await;
    daemon.enqueue_ok(&card(1)).await;
    let wal = PathBuf::from(format!("{}-wal", daemon.database.display()));
    writes_stop_when(&daemon, || std::fs::remove_file(&wal).unwrap()).await;
}

#[tokio::test]
async fn replacing_the_database_under_the_daemon_stops_writes() {
    let sb = common::sandbox().await;
    // Another database, with cards of its own.
    let mut other = TestDaemon::start(&sb, paused()).await;
    let kept: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(other.enqueue_ok(&card(100 + i)).await);
        }
        ids
    };
    other.stop().await;
    // Fold its WAL into the file, so the file alone holds those cards.
    rusqlite::Connection::open(&other.database)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let mut daemon = TestDaemon::start(&sb, paused()).await;
    daemon.enqueue_ok(&card(1)).await;
    let db = daemon.database.clone();
    let replacement = other.database.clone();
    writes_stop_when(&daemon, || std::fs::rename(&replacement, &db).unwrap()).await;
    assert!(daemon.logs().contains("replaced"), "{}", daemon.logs());
    daemon.restart().await;
    let ids: Vec<String> = daemon
        .all_messages()
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected = kept.clone();
    expected.sort();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, expected, "the replacement's cards, and nothing else");
    let aside = std::fs::read_dir(daemon.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("queue.db-wal.orphaned-")
        });
    assert!(aside, "the lost database's WAL is kept aside");
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// One raw HTTP/1.1 exchange: writes `request`, reads until the daemon closes or
/// `within` passes. Returns the status code and the whole answer's length.
fn raw_exchange(socket: &Path, request: &[u8], within: Duration) -> (u16, usize, String) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer.len(), text)
}

fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: contactq\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn a_batch_of_bad_cards_gets_a_small_answer() {
    let mut hand = Hand::new("queue.db", "");
    hand.start(hand.command()).await;
    let socket = hand.socket.clone();
    let path = "/v1/instances/main/sendContact:batch";
    // 10,000 bad cards: the most a batch holds, each one invalid.
    let body = format!("[{}1]", "1,".repeat(9_999));
    let (status, len, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &socket,
            &post_request(path, body.as_bytes()),
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 400, "{text:.300}");
    assert!(len <= 64 * 1024, "an error answer of {len} bytes");
    assert!(
        text.contains("10000 of 10000 cards are invalid"),
        "{text:.500}"
    );
    assert!(
        text.contains("[99]:") && !text.contains("[100]:"),
        "{text:.500}"
    );
    // 16 MiB of `1,`: far more than 10,000 items; refused without building them.
    let socket = hand.socket.clone();
    let mut body = "[".to_string() + &"1,".repeat(8 * 1024 * 1024 - 2);
    body.push('1');
    body.push(']');
    assert!(body.len() <= 16 * 1024 * 1024);
    let (status, len, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &socket,
            &post_request(path, body.as_bytes()),
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 400, "{text:.300}");
    assert!(len <= 64 * 1024, "an error answer of {len} bytes");
    assert!(text.contains("at most 10000 cards"), "{text:.500}");
    let peak = peak_rss_mib(hand.pid());
    assert!(peak < 150, "the daemon's peak RSS reached {peak} MiB");
    assert_eq!(hand.enqueue(&card(1)).await, 202);
}

#[tokio::test]
async fn an_oversized_body_is_refused_while_it_streams_in() {
    let mut hand = Hand::new("queue.db", "");
    hand.start(hand.command()).await;
    let socket = hand.socket.clone();
    // 64 MiB announced and sent as one card: refused at 100 KiB, never held whole.
    let status = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "POST /v1/instances/main/sendContact HTTP/1.1\r\nHost: c\r\n\
             Content-Length: {}\r\n\r\n",
            64 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                break; // the daemon stopped reading: what we want
            }
        }
        let mut answer = vec![0; 4096];
        let n = s.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let peak = peak_rss_mib(hand.pid());
    assert!(peak < 60, "the daemon's peak RSS reached {peak} MiB");
}

#[tokio::test]
async fn a_caller_who_may_not_enqueue_is_refused_before_the_body() {
    let mut hand = Hand::new("queue.db", "allowed_uids = [4242]\n");
    hand.start(hand.command()).await;
    let socket = hand.socket.clone();
    let started = Instant::now();
    // The headers promise a body that never comes.
    let (status, _, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &socket,
            b"POST /v1/instances/main/sendContact HTTP/1.1\r\nHost: c\r\nContent-Length: 5000\r\n\r\n",
            Duration::from_secs(5),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Reads until the daemon closes the connection; how long that took (None: still open
/// after `within`).
fn closed_after(s: &mut std::os::unix::net::UnixStream, within: Duration) -> Option<Duration> {
    use std::io::Read;
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[tokio::test]
async fn half_sent_headers_are_closed_after_10_s_and_idle_keep_alive_after_60_s() {
    let mut hand = Hand::new("queue.db", "");
    hand.start(hand.command()).await;
    let socket = hand.socket.clone();
    let half = tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: c\r\n")
            .unwrap();
        closed_after(&mut s, Duration::from_secs(20))
    });
    let socket = hand.socket.clone();
    let idle = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: c\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Idle, not half-sent: still open well past the header timeout...
        assert_eq!(closed_after(&mut s, Duration::from_secs(20)), None);
        // ...and closed at 60 s of idleness.
        closed_after(&mut s, Duration::from_secs(50)).map(|d| d + Duration::from_secs(20))
    });
    let half = half
        .await
        .unwrap()
        .expect("half-sent headers still open after 20 s");
    assert!(
        half >= Duration::from_millis(9_500) && half <= Duration::from_secs(12),
        "closed after {half:?}"
    );
    let idle = idle
        .await
        .unwrap()
        .expect("an idle connection open after 70 s");
    assert!(
        idle >= Duration::from_secs(59) && idle <= Duration::from_secs(63),
        "closed after {idle:?}"
    );
}

#[tokio::test]
async fn an_unfinished_body_does_not_delay_sigterm() {
    let mut hand = Hand::new("queue.db", "");
    hand.start(hand.command()).await;
    let socket = hand.socket.clone();
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s.write_all(
        b"POST /v1/instances/main/sendContact HTTP/1.1\r\nHost: c\r\nContent-Length: 500\r\n\r\n{\"chatId\"",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    hand.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
    drop(s);
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_after_30_s() {
    let mut hand = Hand::new("queue.db", "");
    hand.start(hand.command()).await;
    let socket = hand.socket.clone();
    let started = Instant::now();
    let (status, _, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &socket,
            b"POST /v1/instances/main/sendContact HTTP/1.1\r\nHost: c\r\nContent-Length: 500\r\n\r\n{\"chatId\"",
            Duration::from_secs(45),
        )
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(29) && took <= Duration::from_secs(33),
        "answered after {took:?}: {text}"
    );
    assert_eq!(status, 400, "{text}");
    assert!(hand.logs().len() < 100_000);
}

/// Raises this test process's own open-files limit to its hard limit.
fn raise_own_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_starve_the_api() {
    if raise_own_nofile() < 4096 {
        return cannot_run("this test process cannot open 2,000 sockets");
    }
    let mut hand = Hand::new("queue.db", "");
    let mut cmd = hand.command();
    // The usual soft limit a hand-started daemon gets.
    unsafe {
        cmd.pre_exec(|| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur = 1024;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    hand.start(cmd).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(std::os::unix::net::UnixStream::connect(&hand.socket).unwrap());
    }
    // Every one of them accepted and held by the daemon, past its old limit of 1024.
    let pid = hand.pid();
    common::eventually(
        Duration::from_secs(5),
        "2,000 connections accepted",
        || async {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count()
                > 2000
        },
    )
    .await;
    let timed = |what: &'static str, started: Instant| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    };
    let started = Instant::now();
    let health = hand.client().send(ApiRequest::get("/v1/health")).await;
    assert_eq!(health.unwrap().status, 200);
    timed("health", started);
    let started = Instant::now();
    assert_eq!(hand.enqueue(&card(1)).await, 202);
    timed("an enqueue", started);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_contactq"))
        .arg("--socket")
        .arg(&hand.socket)
        .arg("status")
        .env_remove("CONTACTQ_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    timed("contactq status", started);
    drop(idle);
}

#[tokio::test]
async fn a_notify_socket_that_is_never_read_does_not_hold_the_daemon() {
    let hand = Hand::new("queue.db", "");
    // A datagram socket nobody reads: its queue fills after a few hundred pings.
    let full = hand._dir.path().join("notify.sock");
    let _receiver = std::os::unix::net::UnixDatagram::bind(&full).unwrap();
    let mut hand = hand;
    let mut cmd = hand.command();
    cmd.env("NOTIFY_SOCKET", &full)
        .env("WATCHDOG_USEC", "40000")
        .env_remove("WATCHDOG_PID");
    hand.start(cmd).await;
    // 20 ms pings: well past any queue length (/proc/sys/net/unix/max_dgram_qlen).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let client = hand.client();
    let health = client.send(ApiRequest::get("/v1/health"));
    let health = tokio::time::timeout(Duration::from_secs(5), health).await;
    assert_eq!(health.expect("health answers").unwrap().status, 200);
    assert_eq!(hand.enqueue(&card(1)).await, 202);
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    hand.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "SIGTERM took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_metrics_port_closes_half_sent_headers_too() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut hand = Hand::new(
        "queue.db",
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    hand.start(hand.command()).await;
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: c\r\n")
            .unwrap();
        let started = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) | Err(_) if started.elapsed() < Duration::from_secs(19) => {
                Some(started.elapsed())
            }
            _ => None,
        }
    })
    .await
    .unwrap()
    .expect("half-sent headers on the metrics port still open after 20 s");
    assert!(
        closed >= Duration::from_millis(9_500) && closed <= Duration::from_secs(12),
        "closed after {closed:?}"
    );
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_planted_beside_the_database_is_refused_not_waited_on() {
    for suffix in [".lock", "-wal"] {
        let hand = Hand::new("queue.db", "");
        // An existing database, so its WAL is looked at.
        rusqlite::Connection::open(&hand.database)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA journal_mode = DELETE;")
            .unwrap();
        let fifo = PathBuf::from(format!("{}{suffix}", hand.database.display()));
        mkfifo(&fifo);
        let started = Instant::now();
        let (code, stderr) = hand.refused();
        assert_eq!(code, EX_CONFIG, "{suffix}: {stderr}");
        assert!(stderr.contains(&fifo.display().to_string()), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn a_wal_that_cannot_be_created_is_refused_at_start() {
    let mut hand = Hand::new("data/queue.db", "");
    database_with_cards(&mut hand, 3).await;
    // Fold the WAL into the file and let SQLite remove it (and the shm).
    rusqlite::Connection::open(&hand.database)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let wal = PathBuf::from(format!("{}-wal", hand.database.display()));
    assert!(!wal.exists());
    let dir = hand.database.parent().unwrap().to_path_buf();
    let Some(_immutable) = Immutable::set(&dir) else {
        return cannot_run("chattr +i is not available (needs root and ext4-like fs)");
    };
    let (code, stderr) = hand.refused();
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(stderr.contains(&wal.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn past_max_connections_a_client_waits_for_a_free_slot() {
    let mut hand = Hand::new("queue.db", "max_connections = 3\n");
    hand.start(hand.command()).await;
    let mut idle: Vec<_> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(&hand.socket).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fourth client is not served while three connections hold the slots...
    let client = hand.client();
    let health = client.send(ApiRequest::get("/v1/health"));
    tokio::pin!(health);
    let early = tokio::time::timeout(Duration::from_secs(1), health.as_mut()).await;
    assert!(early.is_err(), "served past max_connections");
    // ...and is, as soon as one of them goes.
    drop(idle.pop());
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(2), health).await;
    assert_eq!(
        answer.expect("served once a slot is free").unwrap().status,
        200
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// The pids of `contactq` processes started with `config`.
fn daemons_with(config: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_contactq = args.first().is_some_and(|a| a.ends_with(b"contactq"));
        let with_config = args.contains(&config.as_os_str().as_encoded_bytes());
        if is_contactq && with_config {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn the_socket_is_never_wider_than_socket_mode_even_while_binding() {
    // strace must be there and allowed to trace (ptrace may be refused in a container).
    let strace = Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .output();
    if !strace.is_ok_and(|o| o.status.success()) {
        return cannot_run("strace (with ptrace allowed) is needed to hold the daemon in bind()");
    }
    let hand = Hand::new("queue.db", "socket_mode = \"0600\"\n");
    // The daemon under strace, its bind() returning only after 2 s: the socket file
    // exists meanwhile with whatever mode bind gave it, before any chmod.
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-o", "/dev/null", "-e", "trace=bind"])
        .args(["-e", "inject=bind:delay_exit=2000000"])
        .arg(env!("CARGO_BIN_EXE_contactq"))
        .arg("--config")
        .arg(&hand.config)
        .arg("daemon")
        .env_remove("CONTACTQ_CONFIG")
        .env_remove("CONTACTQ_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_mode = loop {
        if let Ok(meta) = std::fs::symlink_metadata(&hand.socket) {
            break meta.permissions().mode() & 0o777;
        }
        assert!(Instant::now() < deadline, "no socket: {}", hand.logs());
        std::thread::sleep(Duration::from_millis(5));
    };
    // Killing strace would leave the daemon running, detached: kill the daemon by
    // pid first, then reap strace.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let daemons = daemons_with(&hand.config);
        for pid in &daemons {
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if !daemons.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    assert_eq!(
        first_mode, 0o600,
        "the socket existed with mode {first_mode:o}"
    );
}

#[tokio::test]
async fn a_deleted_lock_file_does_not_let_a_second_daemon_in() {
    let mut first = Hand::new("queue.db", "");
    first.start(first.command()).await;
    std::fs::remove_file(format!("{}.lock", first.database.display())).unwrap();
    // A second daemon on the same database, on a socket of its own.
    let second = Hand::new("unused.db", "");
    let text = std::fs::read_to_string(&second.config).unwrap().replace(
        &format!("database = {:?}", second.database),
        &format!("database = {:?}", first.database),
    );
    std::fs::write(&second.config, text).unwrap();
    let (code, stderr) = second.refused();
    assert_eq!(code, 75, "{stderr}");
    assert!(
        stderr.contains("in use by another contactq daemon"),
        "{stderr}"
    );
    assert_eq!(first.enqueue(&card(1)).await, 202);
}
