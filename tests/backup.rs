//! `contactq backup` and `contactq restore`: a consistent copy taken while cards stream
//! in, and a restore that refuses to run under a daemon and pauses every line so that
//! nothing is sent twice before an operator has looked.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon};
use serde_json::json;

/// The ids in a database file, read directly.
fn ids_in(path: &std::path::Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(path).expect("open the copy");
    let mut stmt = conn.prepare("SELECT id FROM messages").unwrap();
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<HashSet<_>, _>>()
        .unwrap();
    ids
}

#[tokio::test]
async fn a_backup_taken_while_cards_stream_in_holds_every_card_acknowledged_before_it() {
    let sb = sandbox().await;
    // Not authorized: the cards stay queued, as they would behind a logged-out phone.
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    for n in 0..200 {
        d.enqueue_ok(&card(n)).await;
    }
    let before_backup: HashSet<String> = d
        .all_messages_paged()
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before_backup.len(), 200);

    // Eight clients keep enqueueing batches while the copy is taken.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let client = d.client();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 10_000 + w * 100_000;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let batch: Vec<_> = (0..20).map(|i| card(n + i)).collect();
                n += 20;
                let request = contactq::cli::client::ApiRequest::post(
                    "/v1/instances/main/sendContact:batch",
                    Some(serde_json::to_vec(&batch).unwrap()),
                );
                let answer = client.send(request).await.expect("daemon answers");
                assert_eq!(answer.status, 202);
                let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
                let mut acked = acked.lock().unwrap();
                for m in body["messages"].as_array().unwrap() {
                    acked.push(m["id"].as_str().unwrap().to_string());
                }
            }
        }));
    }
    eventually(Duration::from_secs(10), "writers under way", || async {
        acked.lock().unwrap().len() > 500
    })
    .await;
    let acked_before = acked.lock().unwrap().clone();
    let dest = d.dir.path().join("copy.db");
    let out = d.command().arg("backup").arg(&dest).output().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("backup written to"), "{stdout}");

    let copy = ids_in(&dest);
    for id in before_backup.iter().chain(&acked_before) {
        assert!(
            copy.contains(id),
            "{id} was acknowledged before the backup but is not in it"
        );
    }
    // Consistent: every id in the copy was acknowledged by then (no half-written batch),
    // and batches are whole.
    let all_acked: HashSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .chain(before_backup.clone())
        .collect();
    assert!(copy.is_subset(&all_acked));
    assert_eq!(
        (copy.len() - before_backup.len()) % 20,
        0,
        "a batch was split by the backup"
    );
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the copy holds phone numbers: {mode:o}");
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    // Never overwrites: a second backup to the same file fails and leaves it alone.
    let again = d.command().arg("backup").arg(&dest).output().unwrap();
    assert_eq!(
        again.status.code(),
        Some(73),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(ids_in(&dest), copy);
}

#[tokio::test]
async fn restore_refuses_a_running_daemon_then_brings_the_copy_back_with_lines_paused() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let mut d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let kept: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(d.enqueue_ok(&card(n)).await);
        }
        ids
    };
    let dest = d.dir.path().join("copy.db");
    let out = d.command().arg("backup").arg(&dest).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Cards after the backup: the restore rolls the queue back to before them.
    let later = d.enqueue_ok(&card(99)).await;

    let refused = d
        .command()
        .arg("restore")
        .arg(&dest)
        .arg("--database")
        .arg(&d.database)
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop it first"));
    d.stop().await;
    assert!(
        ids_in(&d.database).contains(&later),
        "a refused restore changed nothing"
    );

    // A corrupt or foreign file is refused and nothing changes.
    let junk = d.dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let bad = d
        .command()
        .arg("restore")
        .arg(&junk)
        .arg("--database")
        .arg(&d.database)
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(ids_in(&d.database).contains(&later));

    let out = d
        .command()
        .arg("restore")
        .arg(&dest)
        .arg("--database")
        .arg(&d.database)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("5 cards were queued or in flight"),
        "{stderr}"
    );
    assert!(stderr.contains("every line is paused (main)"), "{stderr}");
    let replaced: Vec<_> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("queue.db.before-restore-")
        })
        .collect();
    assert_eq!(replaced.len(), 1, "the replaced database is kept");

    // The daemon starts on the copy: the cards are back, the later one is gone, and the
    // line stays paused even once the instance is authorized.
    sb.set_state(None, "authorized");
    d.start_again().await;
    let ids: HashSet<String> = d
        .all_messages_paged()
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, kept.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(d.status().await["paused"], json!(true));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        sb.received(common::ID_INSTANCE).is_empty(),
        "nothing goes out before resume"
    );
    let resumed = d.command().arg("resume").arg("main").output().unwrap();
    assert!(resumed.status.success());
    for id in &kept {
        d.wait_state(id, "sent", Duration::from_secs(10)).await;
    }
}
