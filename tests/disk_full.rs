//! A real full disk: the database on a 1 MiB tmpfs. Enqueues answer 503 with nothing
//! half-written, the daemon keeps answering, and enqueues work again once space returns.
//! Needs permission to mount (root): elsewhere it says it is skipped, and under
//! `CI=true` (where .ci/run runs as root) it fails instead.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{card, sandbox, DaemonConfig, TestDaemon};
use serde_json::json;

struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_loses_nothing_and_recovers() {
    let disk = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(disk.path(), "1m") else {
        common::skip_or_fail("cannot mount a tmpfs here (not root?)");
        return;
    };
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let mut d = TestDaemon::start(
        &sb,
        DaemonConfig {
            database: Some(disk.path().join("queue.db")),
            ..Default::default()
        },
    )
    .await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for n in 0..400 {
        let mut body = card(n);
        body["contact"]["company"] = json!("x".repeat(4000));
        let (status, answer) = d.enqueue(&body).await;
        match status {
            202 => accepted.push(answer["id"].as_str().unwrap().to_string()),
            503 => {
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk filled up after {} cards",
        accepted.len()
    );
    assert_eq!(d.get("/v1/health").await.0, 200, "still answering");
    let mut cli = d.command();
    cli.args([
        "send",
        "--chat-id",
        "11001234567@c.us",
        "--phone",
        "79001234568",
        "--first-name",
        "A",
        "--company",
    ])
    .arg("y".repeat(4000));
    let out = cli.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    tmpfs.resize("16m");
    let (status, answer) = d.enqueue(&card(10_000)).await;
    assert_eq!(status, 202, "recovers once space returns: {answer}");
    accepted.push(answer["id"].as_str().unwrap().to_string());

    // Everything acknowledged survives a crash, and nothing else was half-written.
    d.kill9();
    d.start_again().await;
    let stored = d.all_messages_paged().await;
    assert_eq!(stored.len(), accepted.len());
    for id in &accepted {
        assert!(stored.iter().any(|m| m["id"] == id.as_str()), "{id} lost");
    }
    sb.set_state(None, "authorized");
    d.wait_state(accepted.last().unwrap(), "sent", Duration::from_secs(60))
        .await;
}

/// Lowers (or raises) the running daemon's RLIMIT_FSIZE: past it every write of the
/// process fails in the kernel (EFBIG, or a short write), as on a full disk. Needs no
/// root: a process may set the soft limit of another process of the same user up to
/// its hard limit.
fn set_file_size_limit(pid: i32, bytes: libc::rlim_t) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let ok = unsafe {
        libc::prlimit(
            pid,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut old as *mut libc::rlimit,
        )
    };
    assert_eq!(ok, 0, "prlimit get: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: bytes.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    let ok = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(ok, 0, "prlimit set: {}", std::io::Error::last_os_error());
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The same promise without root: SQLite's own writes really fail (the kernel refuses
/// to grow the database and WAL files past the daemon's file size limit), on both write
/// connections: the enqueue thread's and the pool that pauses and cancels. While full,
/// enqueues and a pause answer 503 and nothing is half-written; once space returns
/// both work again; after kill -9 every acknowledged card (and the cancel and pause
/// made after the failures) is there. A connection left inside a failed transaction
/// would lose these later commits.
#[tokio::test]
async fn sqlite_write_failures_answer_503_lose_nothing_and_recover() {
    // The daemon inherits the ignored SIGXFSZ: past the limit a write fails instead of
    // killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let mut d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut accepted = Vec::new();
    for n in 0..5 {
        accepted.push(d.enqueue_ok(&card(n)).await);
    }
    let wal = d.database.with_extension("db-wal");
    let limit = file_len(&d.database).max(file_len(&wal)) + 256 * 1024;
    set_file_size_limit(d.pid(), limit);

    let mut refused = Vec::new();
    for n in 5..1000 {
        let mut body = card(n);
        body["contact"]["company"] = json!("x".repeat(4000));
        let (status, answer) = d.enqueue(&body).await;
        match status {
            202 => accepted.push(answer["id"].as_str().unwrap().to_string()),
            503 => {
                refused.push(answer);
                if refused.len() >= 5 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(
        refused.len() >= 5,
        "writes never failed ({} cards accepted past a {limit}-byte file limit)",
        accepted.len()
    );
    // The refusals come from SQLite failing the write, not from a size estimate.
    for answer in &refused {
        let details = answer["details"].as_str().unwrap_or_default();
        assert!(
            details.contains("database full") || details.contains("database unavailable"),
            "{answer}"
        );
        assert!(!details.contains("max_database_size"), "{answer}");
    }
    // No room at all: small writes fail too (a pause and a cancel, like an enqueue,
    // are jobs of the store's one write thread).
    set_file_size_limit(d.pid(), 4096);
    let (status, answer) = d.post("/v1/instances/main/pause", &json!({})).await;
    assert_eq!(status, 503, "pause while full: {answer}");
    let (status, answer) = d
        .request(contactq::cli::client::ApiRequest::delete(format!(
            "/v1/messages/{}",
            accepted[1]
        )))
        .await;
    assert_eq!(status, 503, "cancel while full: {answer}");
    let (status, answer) = d.enqueue(&card(1500)).await;
    assert_eq!(status, 503, "a small enqueue while full: {answer}");
    assert_eq!(d.get("/v1/health").await.0, 200, "still answering");
    let (status, answer) = d.get("/v1/messages?limit=1000").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["messages"].as_array().unwrap().len(),
        accepted.len(),
        "exactly the acknowledged cards are stored, nothing half-written"
    );

    // Space returns: both write paths work again, and what they commit is durable.
    set_file_size_limit(d.pid(), libc::RLIM_INFINITY);
    for n in 2000..2010 {
        let (status, answer) = d.enqueue(&card(n)).await;
        assert_eq!(status, 202, "enqueue once space returns: {answer}");
        accepted.push(answer["id"].as_str().unwrap().to_string());
    }
    let (status, answer) = d
        .post(
            "/v1/instances/main/sendContact:batch",
            &json!([card(3000), card(3001)]),
        )
        .await;
    assert_eq!(status, 202, "batch once space returns: {answer}");
    for m in answer["messages"]
        .as_array()
        .expect("batch answer lists messages")
    {
        accepted.push(m["id"].as_str().unwrap().to_string());
    }
    let cancelled = accepted[0].clone();
    let (status, answer) = d
        .request(contactq::cli::client::ApiRequest::delete(format!(
            "/v1/messages/{cancelled}"
        )))
        .await;
    assert_eq!(status, 200, "cancel once space returns: {answer}");
    let (status, answer) = d.post("/v1/instances/main/pause", &json!({})).await;
    assert_eq!(status, 200, "pause once space returns: {answer}");

    d.kill9();
    d.start_again().await;
    let stored = d.all_messages_paged().await;
    assert_eq!(stored.len(), accepted.len(), "nothing lost, nothing extra");
    for id in &accepted {
        let m = stored
            .iter()
            .find(|m| m["id"] == id.as_str())
            .unwrap_or_else(|| panic!("acknowledged card {id} lost"));
        let want = if *id == cancelled {
            "cancelled"
        } else {
            "queued"
        };
        assert_eq!(m["state"], want, "{m}");
    }
    assert_eq!(d.status().await["paused"], true, "the pause survived");
}
