//! A real full disk: the database on a 1 MiB tmpfs. Enqueues answer 503 with nothing
//! half-written, the daemon keeps answering, and enqueues work again once space returns.
//! Needs permission to mount (root); skipped with a message otherwise.

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
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
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
