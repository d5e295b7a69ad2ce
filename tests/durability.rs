//! Restarts, crashes and faults of the machine, black-box: nothing acknowledged is
//! lost, nothing is sent twice, pacing and holds survive, one daemon per database.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::sandbox::ScriptStep;
use serde_json::json;

async fn pacing_survives_a_restart() {
    let sb = sandbox().await;
    let mut d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "3s",
            ..Default::default()
        },
    )
    .await;
    let first = d.enqueue_ok(&card(1)).await;
    d.wait_state(&first, "sent", Duration::from_secs(5)).await;
    d.restart().await;
    let second = d.enqueue_ok(&card(2)).await;
    let enqueued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    d.wait_state(&second, "sent", Duration::from_secs(8)).await;
    let received = sb.received(ID_INSTANCE);
    let gap = received[1].received_at_ms - received[0].received_at_ms;
    assert!(
        gap >= 2990,
        "sent {gap} ms apart across a restart; send_delay is 3 s"
    );
    // And no later than pacing asks: 3 s after the first send, or at once if the
    // restart took longer than that.
    let due = (received[0].received_at_ms + 3000).max(enqueued_at);
    let late = received[1].received_at_ms - due;
    assert!(
        late < 700,
        "sent {late} ms after it was due across a restart (gap {gap} ms)"
    );
}

async fn a_crash_mid_send_is_reconciled_not_sent_again() {
    let sb = sandbox().await;
    // The API takes the card at once but answers only after 5 s: the daemon dies first.
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 200,
            delay: Duration::from_secs(5),
            accept: true,
            ..ScriptStep::default()
        }],
    );
    let mut d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "3s",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    let next = d.enqueue_ok(&card(2)).await;
    d.wait_state(&id, "sending", Duration::from_secs(5)).await;
    eventually(
        Duration::from_secs(5),
        "the sandbox took the card",
        || async { sb.received(ID_INSTANCE).len() == 1 },
    )
    .await;
    d.kill9();
    d.start_again().await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    d.wait_state(&next, "sent", Duration::from_secs(10)).await;
    let received = sb.received(ID_INSTANCE);
    assert_eq!(received.len(), 2, "card-1 went to the API once");
    assert_eq!(sent["idMessage"], json!(received[0].id_message));
    assert_eq!(sent["attempts"], 1);
}

async fn sigterm_lets_the_in_flight_send_finish_and_exits_zero() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 200,
            delay: Duration::from_millis(1500),
            ..ScriptStep::default()
        }],
    );
    let mut d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "sending", Duration::from_secs(5)).await;
    let status = d.stop().await;
    assert!(status.success(), "exit {status}");
    assert!(!d.socket.exists(), "socket file removed");
    d.start_again().await;
    let m = d.message(&id).await;
    assert_eq!(
        m["state"], "sent",
        "the in-flight send was finished and recorded: {m}"
    );
    assert_eq!(
        m["idMessage"],
        json!(sb.received(ID_INSTANCE)[0].id_message)
    );
}

#[tokio::test]
async fn a_second_daemon_refuses_and_a_stale_socket_is_replaced() {
    let sb = sandbox().await;
    let mut d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let out = d.daemon_command().arg("daemon").output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another contactq daemon"), "{err}");
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "sent", Duration::from_secs(5)).await;
    d.kill9();
    assert!(d.socket.exists(), "a crash leaves the socket file");
    d.start_again().await;
    assert_eq!(d.message(&id).await["state"], "sent");
    // Another database on the same live socket is refused too.
    let other = d.dir.path().join("other.toml");
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("queue.db", "other.db");
    std::fs::write(&other, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactq"))
        .arg("--config")
        .arg(&other)
        .arg("daemon")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket"));
    assert_eq!(
        d.get("/v1/health").await.0,
        200,
        "the first daemon is undisturbed"
    );
}

#[tokio::test]
async fn configuration_errors_exit_78_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[daemon]\nsocket = \"/tmp/x.sock\"\ndatabase = \"/tmp/x.db\"\n[instances.main]\nid_instance = \"1101\"\napi_token = \"t0k3nXYZ\"\n";
    let cases = [
        (
            base.replace("[daemon]", "[daemon]\nsokcet = \"/x\""),
            "sokcet",
        ),
        (
            format!("{base}[queue]\nmax_age = \"a day\"\n"),
            "queue.max_age",
        ),
        (
            base.replace("api_token = \"t0k3nXYZ\"\n", ""),
            "instances.main.api_token",
        ),
        (
            base.replace(
                "api_token = \"t0k3nXYZ\"",
                "api_token_file = \"/nonexistent/token\"",
            ),
            "instances.main.api_token_file",
        ),
        ("[daemon\n".to_string(), "configuration"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactq"))
            .arg("--config")
            .arg(&path)
            .arg("daemon")
            .env_remove("CONTACTQ_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{key}: {err}");
        assert!(err.contains(key), "{key}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("t0k3nXYZ"));
    }
}

#[tokio::test]
async fn a_full_database_answers_503_keeps_running_and_recovers() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let config = DaemonConfig {
        daemon_extra: "max_database_size = \"600KiB\"".into(),
        keep_done: "1s",
        ..Default::default()
    };
    let d = TestDaemon::start(&sb, config).await;
    let mut accepted = Vec::new();
    let mut full = None;
    for n in 0..2000 {
        let mut body = card(n);
        body["contact"]["company"] = json!("x".repeat(4000));
        let (status, answer) = d.enqueue(&body).await;
        match status {
            202 => accepted.push(answer["id"].as_str().unwrap().to_string()),
            503 => {
                full = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let full = full.expect("the database filled up");
    assert!(full["details"].as_str().unwrap().contains("full"), "{full}");
    // The CLI reports it as a temporary failure.
    let out = d
        .command()
        .args([
            "send",
            "--instance",
            "main",
            "--chat-id",
            "11001234567@c.us",
            "--phone",
            "79001234568",
            "--company",
        ])
        .arg("y".repeat(4000))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing half-written: exactly the acknowledged cards are there.
    assert_eq!(
        d.status().await["queued"].as_u64().unwrap() as usize,
        accepted.len()
    );
    // Space comes back once sent cards are past keep_done and deleted.
    sb.set_state(None, "authorized");
    d.wait_state(accepted.last().unwrap(), "sent", Duration::from_secs(60))
        .await;
    eventually(Duration::from_secs(30), "enqueue works again", || async {
        d.enqueue(&card(99_999)).await.0 == 202
    })
    .await;
    assert_eq!(sb.received(ID_INSTANCE).len(), accepted.len());
}

/// Clients that enqueue in waves from the wave clock; answers what was acknowledged.
struct Clients {
    waves: tokio::sync::watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(String, String)>>>,
}

/// Concurrent clients of a kill -9 loop: on each wave every client sends at once, a
/// single card or a batch of three (so the write thread commits them as a group);
/// each keeps (id, first name) of every card it was answered 202 for.
fn start_clients(socket: &std::path::Path, clients: u64) -> Clients {
    use contactq::cli::client::{ApiRequest, Client};
    let (waves, wave_rx) = tokio::sync::watch::channel(0u64);
    let tasks = (0..clients)
        .map(|client| {
            let mut wave_rx = wave_rx.clone();
            let socket = socket.to_path_buf();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while wave_rx.changed().await.is_ok() {
                    let wave = *wave_rx.borrow_and_update();
                    if wave == u64::MAX {
                        break;
                    }
                    let batch = (client + wave) % 3 == 0;
                    let cards: Vec<serde_json::Value> = (0..if batch { 3 } else { 1 })
                        .map(|_| {
                            n += 1;
                            card(client * 1_000_000 + n)
                        })
                        .collect();
                    let request = if batch {
                        ApiRequest::post(
                            "/v1/instances/main/sendContact:batch",
                            Some(json!(cards).to_string().into_bytes()),
                        )
                    } else {
                        ApiRequest::post(
                            "/v1/instances/main/sendContact",
                            Some(cards[0].to_string().into_bytes()),
                        )
                    };
                    // A request cut by the kill is not acknowledged (it may or may not
                    // have been committed): only 202s count.
                    let Ok(answer) = Client::new(&socket).send(request).await else {
                        continue;
                    };
                    if answer.status != 202 {
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
                    let rows = if batch {
                        v["messages"].as_array().unwrap().clone()
                    } else {
                        vec![v]
                    };
                    assert_eq!(rows.len(), cards.len(), "one answer per card");
                    for (row, sent) in rows.iter().zip(&cards) {
                        acked.push((
                            row["id"].as_str().unwrap().to_string(),
                            sent["contact"]["firstName"].as_str().unwrap().to_string(),
                        ));
                    }
                }
                acked
            })
        })
        .collect();
    Clients { waves, tasks }
}

/// 24 clients enqueue at the same moments (single cards and batches, so the write
/// thread group-commits them) while the daemon is SIGKILLed 8 times, right as a wave
/// starts, against a server that sometimes fails: every card answered 202 exists once
/// and ends `sent`, every card the server took is `sent` with its idMessage, none was
/// received twice, and the stored cards are exactly the ones the server received.
async fn kill_9_loop_loses_nothing_and_sends_nothing_twice() {
    let started = std::time::Instant::now();
    let sb = common::sandbox_with(contactq::sandbox::SandboxOptions {
        rate_limits: false,
        latency: Duration::from_millis(15),
        ..Default::default()
    })
    .await;
    sb.set_failures(None, 0.1, vec![500, 502]);
    let config = DaemonConfig {
        send_delay: "0s",
        reconcile_lag: "1s",
        retry_initial: "100ms",
        retry_max: "300ms",
        ..Default::default()
    };
    let mut d = TestDaemon::start(&sb, config).await;
    let clients = start_clients(&d.socket, 24);
    let mut wave = 0u64;
    for round in 0..8u64 {
        // Two waves the daemon answers, then one it is killed in: 0–14 ms after the
        // clients fire, while their requests are being read, grouped and committed.
        for _ in 0..2 {
            wave += 1;
            clients.waves.send(wave).unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        wave += 1;
        clients.waves.send(wave).unwrap();
        tokio::time::sleep(Duration::from_millis(2 * (round % 8))).await;
        d.kill9();
        d.start_again().await;
    }
    // A last wave against the running daemon, then the clients stop.
    wave += 1;
    clients.waves.send(wave).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    clients.waves.send(u64::MAX).unwrap();
    let mut acked = Vec::new();
    for task in clients.tasks {
        acked.extend(task.await.unwrap());
    }
    assert!(acked.len() > 200, "enough traffic: {}", acked.len());
    sb.set_failures(None, 0.0, vec![]);
    eventually(Duration::from_secs(40), "every card ended", || async {
        let s = d.status().await;
        s["queued"] == 0 && s["sending"] == 0
    })
    .await;
    let messages = d.all_messages_paged().await;
    let mut by_id: HashMap<String, serde_json::Value> = HashMap::new();
    for m in &messages {
        assert!(
            by_id
                .insert(m["id"].as_str().unwrap().to_string(), m.clone())
                .is_none(),
            "id twice: {m}"
        );
    }
    for (id, name) in &acked {
        let m = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged card {id} ({name}) lost"));
        assert_eq!(m["contact"]["firstName"], name.as_str(), "{m}");
        assert_eq!(m["state"], "sent", "{m}");
    }
    common::assert_received_once_and_recorded(&sb, &messages);
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        messages.len(),
        "every stored card went out exactly once"
    );
    eprintln!(
        "{} cards acknowledged, {} stored, in {:?}",
        acked.len(),
        messages.len(),
        started.elapsed()
    );
}

/// At `send_delay = 0` an outcome is committed with the next claim; a crash between
/// the API's answer and that commit must still end with every card sent once.
async fn a_crash_while_draining_back_to_back_sends_nothing_twice() {
    let sb = common::sandbox_with(contactq::sandbox::SandboxOptions {
        rate_limits: false,
        latency: Duration::from_millis(5),
        ..Default::default()
    })
    .await;
    let config = DaemonConfig {
        send_delay: "0s",
        reconcile_lag: "1s",
        ..Default::default()
    };
    let mut d = TestDaemon::start(&sb, config).await;
    let cards: Vec<serde_json::Value> = (0..300).map(card).collect();
    let (status, answer) = d
        .post("/v1/instances/main/sendContact:batch", &json!(cards))
        .await;
    assert_eq!(status, 202, "{answer}");
    eventually(
        Duration::from_secs(10),
        "the drain is under way",
        || async { sb.received(ID_INSTANCE).len() >= 40 },
    )
    .await;
    d.kill9();
    let at_crash = sb.received(ID_INSTANCE).len();
    assert!(at_crash < 300, "killed mid-drain");
    d.start_again().await;
    eventually(Duration::from_secs(30), "all sent", || async {
        d.status().await["sent"] == 300
    })
    .await;
    assert_eq!(sb.received(ID_INSTANCE).len(), 300);
    let stored = d.all_messages_paged().await;
    common::assert_received_once_and_recorded(&sb, &stored);
}

// Each of these runs on SQLite and on PostgreSQL (`NAME::sqlite`, `NAME::postgres`).
crate::on_both_backends!(
    pacing_survives_a_restart,
    a_crash_mid_send_is_reconciled_not_sent_again,
    sigterm_lets_the_in_flight_send_finish_and_exits_zero,
    kill_9_loop_loses_nothing_and_sends_nothing_twice,
    a_crash_while_draining_back_to_back_sends_nothing_twice,
);
