//! The real `contactq daemon` speaks systemd's notify protocol the way
//! `Type=notify` + `WatchdogSec=` expect: READY=1 only once its socket listens,
//! WATCHDOG=1 pings at half the interval, STOPPING=1 on SIGTERM, then exit 0 with its
//! socket file removed. The test plays systemd with a datagram socket of its own, and
//! starts the daemon itself rather than with `tests/common` (whose start waits for
//! `/v1/health`, so it could not tell whether READY=1 came before the socket listened).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use contactq::sandbox::Sandbox;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

/// The daemon, started as systemd would (a clean environment, `$NOTIFY_SOCKET` and the
/// `watchdog` variables), with its socket and database in `dir`; its log goes to
/// `dir/daemon.log`.
fn start_daemon(
    dir: &Path,
    api_url: &str,
    notify_socket: &Path,
    watchdog: &[(&str, String)],
) -> Child {
    let config = dir.join("contactq.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
socket = "{socket}"
database = "{database}"

[instances.main]
api_url = "{api_url}"
id_instance = "1101000001"
api_token = "notify-test-token"
send_delay = "100ms"
"#,
            socket = dir.join("contactq.sock").display(),
            database = dir.join("queue.db").display(),
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_contactq"))
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .env_clear()
        .env("NOTIFY_SOCKET", notify_socket)
        .envs(watchdog.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the contactq binary starts")
}

/// systemd's side of `$NOTIFY_SOCKET`: every datagram, split into its `KEY=VALUE` lines.
struct Systemd {
    socket: UnixDatagram,
    log: PathBuf,
}

impl Systemd {
    /// Waits for a datagram holding `wanted`; returns every line seen until then.
    async fn wait_for(&self, wanted: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(received) = timeout(left, self.socket.recv(&mut buf)).await else {
                panic!(
                    "no {wanted} within {within:?}; got {seen:?}\ndaemon log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            };
            let n = received.expect("recv on the notify socket");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = text.lines().any(|l| l == wanted);
            seen.extend(text.lines().map(str::to_string));
            if found {
                return seen;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reports_ready_pings_the_watchdog_and_reports_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .expect("sandbox starts");
    let notify_path = dir.path().join("notify.sock");
    let systemd = Systemd {
        socket: UnixDatagram::bind(&notify_path).expect("bind the notify socket"),
        log: dir.path().join("daemon.log"),
    };
    let socket = dir.path().join("contactq.sock");
    let mut daemon = start_daemon(
        dir.path(),
        &sandbox.url(),
        &notify_path,
        &[("WATCHDOG_USEC", "2000000".to_string())],
    );
    let pid = daemon.id().expect("pid") as libc::pid_t;

    systemd.wait_for("READY=1", Duration::from_secs(30)).await;
    // READY means "clients may connect now", not "about to listen".
    assert!(
        socket.exists(),
        "READY=1 before {} exists",
        socket.display()
    );
    std::os::unix::net::UnixStream::connect(&socket).expect("READY=1, and the socket accepts");

    // WATCHDOG_USEC=2 s: a ping about every second, repeatedly.
    let started = Instant::now();
    for _ in 0..3 {
        systemd.wait_for("WATCHDOG=1", Duration::from_secs(5)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "three pings in {:?}: faster than half the interval",
        started.elapsed()
    );

    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    systemd
        .wait_for("STOPPING=1", Duration::from_secs(10))
        .await;
    let status = timeout(Duration::from_secs(45), daemon.wait())
        .await
        .expect("the daemon exits after SIGTERM")
        .expect("wait");
    let log = std::fs::read_to_string(&systemd.log).expect("the daemon log is readable");
    assert_eq!(status.code(), Some(0), "exit status {status}; log:\n{log}");
    assert!(
        !log.is_empty(),
        "the daemon logged nothing, so the token check below is void"
    );
    assert!(!socket.exists(), "the socket file is left behind");
    assert!(
        !log.contains("notify-test-token"),
        "the token reached the log"
    );
    sandbox.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_meant_for_another_process_is_not_pinged() {
    // systemd sets WATCHDOG_PID to the main process; a child that inherits the
    // environment must not ping on its behalf.
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .expect("sandbox starts");
    let notify_path = dir.path().join("notify.sock");
    let systemd = Systemd {
        socket: UnixDatagram::bind(&notify_path).expect("bind the notify socket"),
        log: dir.path().join("daemon.log"),
    };
    let mut daemon = start_daemon(
        dir.path(),
        &sandbox.url(),
        &notify_path,
        &[
            ("WATCHDOG_USEC", "200000".to_string()),
            ("WATCHDOG_PID", std::process::id().to_string()),
        ],
    );
    let seen = systemd.wait_for("READY=1", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut buf = [0u8; 4096];
    let mut later = Vec::new();
    while let Ok(n) = systemd.socket.try_recv(&mut buf) {
        later.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !seen.iter().chain(&later).any(|l| l.contains("WATCHDOG=1")),
        "pinged a watchdog meant for pid {}: {seen:?} {later:?}",
        std::process::id()
    );
    daemon.kill().await.expect("kill");
    sandbox.shutdown();
}
