//! Several daemons on one PostgreSQL database (docs/api.md §10): one queue seen
//! through every daemon's socket, one drainer per instance (a crashed drainer's
//! instance taken over by another daemon, nothing sent twice), the `[instances]`
//! record that refuses a daemon configured otherwise, and `migrate-store`.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{
    assert_received_once_and_recorded, card, eventually, sandbox, test_postgres, DaemonConfig,
    TestDaemon, TestPostgres, ID_INSTANCE,
};
use contactq::cli::client::ApiRequest;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

fn on(pg: &TestPostgres, node: &str) -> DaemonConfig {
    DaemonConfig {
        postgres: Some(pg.clone()),
        daemon_extra: format!("node = {node:?}"),
        ..DaemonConfig::default()
    }
}

async fn state_of(d: &TestDaemon, id: &str) -> String {
    d.message(id).await["state"].as_str().unwrap().to_string()
}

/// The PostgreSQL sessions' application names.
async fn application_names(pg: &TestPostgres) -> Vec<String> {
    let mut conn = PgConnection::connect(&pg.url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    names
}

/// An enqueue through one daemon's socket is shown, listed, cancelled, paused and
/// resumed through the other's; the cards go out once each, and both daemons' status
/// agree. Each daemon connects as `contactq/NODE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_one_queue() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let a = TestDaemon::start(&sb, on(&pg, "node-a")).await;
    let b = TestDaemon::start(&sb, on(&pg, "node-b")).await;
    let names = application_names(&pg).await;
    for node in ["contactq/node-a", "contactq/node-b"] {
        assert!(names.iter().any(|n| n == node), "{node} not in {names:?}");
    }
    let (status, _) = b.post("/v1/instances/main/pause", &json!({})).await;
    assert_eq!(status, 200);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(a.enqueue_ok(&card(n)).await);
    }
    assert_eq!(b.message(&ids[0]).await["state"], "queued");
    let listed: Vec<Value> = b.all_messages().await;
    assert_eq!(listed.len(), 5);
    let (status, body) = b
        .request(ApiRequest::delete(format!("/v1/messages/{}", ids[4])))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_of(&a, &ids[4]).await, "cancelled");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        sb.received(ID_INSTANCE).is_empty(),
        "sent while paused through the other daemon"
    );
    assert_eq!(a.status().await["paused"], true, "{}", a.status().await);
    // No standby here: every acknowledged enqueue was committed on this server.
    let (_, whole) = a.get("/v1/status").await;
    assert_eq!(whole["durability"], "sync", "{whole}");
    let (status, _) = b.post("/v1/instances/main/resume", &json!({})).await;
    assert_eq!(status, 200);
    for id in &ids[..4] {
        a.wait_state(id, "sent", Duration::from_secs(20)).await;
    }
    assert_eq!(sb.received(ID_INSTANCE).len(), 4);
    assert_received_once_and_recorded(&sb, &b.all_messages().await);
    let (sa, sb_) = (a.status().await, b.status().await);
    assert_eq!(sa["counts"], sb_["counts"], "{sa} / {sb_}");
}

/// The node holding the instance's live drain lease, if any, as `contactq/NODE`.
async fn drainer(pg: &TestPostgres) -> Option<String> {
    let mut conn = PgConnection::connect(&pg.url).await.unwrap();
    let name: Option<String> = sqlx::query_scalar(
        "SELECT 'contactq/' || node FROM leases
         WHERE instance = 'main' AND expires_at > clock_timestamp()",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    name
}

/// The daemon draining the instance is killed (-9) again and again, mid-drain, while
/// cards flow in through both sockets: the other daemon takes the instance over,
/// reconciles the card left in flight, paces from the persisted last send, and every
/// card is sent exactly once, never two closer than `send_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_drainer_is_taken_over_and_nothing_is_sent_twice() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let mut daemons = [
        TestDaemon::start(&sb, on(&pg, "node-a")).await,
        TestDaemon::start(&sb, on(&pg, "node-b")).await,
    ];
    let mut n = 0;
    for round in 0..6 {
        for _ in 0..6 {
            daemons[n % 2].enqueue_ok(&card(n as u64)).await;
            n += 1;
        }
        let before = sb.received(ID_INSTANCE).len();
        eventually(Duration::from_secs(20), "a send after the enqueues", || {
            let sb = &sb;
            async move { sb.received(ID_INSTANCE).len() > before }
        })
        .await;
        // Kill the drainer (the daemon holding the instance's lease).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut holder = drainer(&pg).await;
        while holder.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no drainer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            holder = drainer(&pg).await;
        }
        let victim = match holder.as_deref() {
            Some("contactq/node-a") => 0,
            Some("contactq/node-b") => 1,
            other => panic!("round {round}: unexpected drainer {other:?}"),
        };
        daemons[victim].kill9();
        daemons[victim].start_again().await;
    }
    let all = daemons[0].all_messages().await;
    assert_eq!(all.len(), n);
    eventually(Duration::from_secs(60), "every card sent", || {
        let d = &daemons[1];
        async move { d.all_messages().await.iter().all(|m| m["state"] == "sent") }
    })
    .await;
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        n,
        "a card went out twice or never"
    );
    assert_received_once_and_recorded(&sb, &daemons[0].all_messages().await);
}

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().expect("contactq runs")
}

/// A daemon whose `[instances]` differ from the shared database's record is refused
/// (exit 78, the first difference named); `adopt-config` records its configuration,
/// and then the daemon configured the old way is the one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_configured_otherwise_is_refused_until_adopt_config() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let mut a = TestDaemon::start(&sb, on(&pg, "node-a")).await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace(
            a.socket.to_str().unwrap(),
            dir.path().join("c.sock").to_str().unwrap(),
        )
        .replace("send_delay = \"100ms\"", "send_delay = \"300ms\"");
    std::fs::write(&other, text).unwrap();
    let contactq = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.env_remove("CONTACTQ_CONFIG")
            .env_remove("CONTACTQ_SOCKET");
        cmd.arg("--config").arg(&other);
        cmd
    };
    let refused = run(contactq().arg("daemon"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("instances.main.send_delay is 300ms here, 100ms in the record"),
        "{stderr}"
    );
    assert!(stderr.contains("adopt-config"), "{stderr}");
    assert!(!stderr.contains(common::TOKEN), "{stderr}");

    let adopted = run(contactq().arg("adopt-config"));
    assert!(
        adopted.status.success(),
        "{}",
        String::from_utf8_lossy(&adopted.stderr)
    );
    // The record holds no token.
    let mut conn = PgConnection::connect(&pg.url).await.unwrap();
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(r)::text FROM config_record r UNION ALL SELECT row_to_json(q)::text FROM config_queue q",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!dump.is_empty());
    assert!(
        dump.iter().all(|row| !row.contains(common::TOKEN)),
        "{dump:?}"
    );
    let _ = conn.close().await;

    // The first daemon's configuration is now the one that differs.
    a.stop().await;
    let old = run(a.daemon_command().arg("daemon"));
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert_eq!(old.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("instances.main.send_delay is 100ms here, 300ms in the record"),
        "{stderr}"
    );
}

/// `migrate-store` copies a SQLite queue (sent, failed, queued and cancelled cards,
/// their history, an idempotency key, a paused line) into an empty PostgreSQL
/// database with counts checked; the SQLite file then refuses a daemon (exit 78,
/// naming the new home), and a daemon on PostgreSQL serves and drains the same cards,
/// with the same event stream, delivery values and cards not yet due.
/// A non-empty target and a source a daemon holds are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_sqlite_queue_into_postgres() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let mut old = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let sent = old.enqueue_ok(&card(1)).await;
    old.wait_state(&sent, "sent", Duration::from_secs(10)).await;
    let (status, _) = old.post("/v1/instances/main/pause", &json!({})).await;
    assert_eq!(status, 200);
    let keyed = {
        let body = card(2).to_string().into_bytes();
        let request = ApiRequest::post("/v1/instances/main/sendContact", Some(body))
            .with_idempotency_key(Some("k-1".into()));
        let (status, answer) = old.request(request).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    };
    let cancelled = old.enqueue_ok(&card(3)).await;
    let (status, _) = old
        .request(ApiRequest::delete(format!("/v1/messages/{cancelled}")))
        .await;
    assert_eq!(status, 200);
    // A card due in an hour: it stays scheduled, with its notBefore, in the new home.
    let later = {
        let at = chrono::Utc::now() + chrono::Duration::hours(1);
        let body = card(4).to_string().into_bytes();
        let path = format!(
            "/v1/instances/main/sendContact?notBefore={}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let (status, answer) = old.request(ApiRequest::post(path, Some(body))).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    };
    let before = old.all_messages().await;
    let history = old.message(&sent).await["history"].clone();
    let delivery = old.message(&sent).await["delivery"].clone();
    let later_view = old.message(&later).await;
    let events_before = events_of(&old).await;
    assert!(events_before.len() >= 6, "{events_before:?}");

    let migrate = |from: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.arg("migrate-store")
            .arg("--from")
            .arg(from)
            .arg("--to")
            .arg(&pg.url);
        run(&mut cmd)
    };
    let busy = migrate(&old.database);
    assert_eq!(
        busy.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    old.stop().await;
    let moved = migrate(&old.database);
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(said.contains("4 cards"), "{said}");

    let refused = run(old.daemon_command().arg("daemon"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("moved to postgres://"), "{stderr}");

    let again = migrate(&old.database);
    assert_ne!(again.status.code(), Some(0));

    let new = TestDaemon::start(&sb, on(&pg, "new-home")).await;
    let after = new.all_messages().await;
    let strip = |ms: &[Value]| -> Vec<(Value, Value)> {
        ms.iter()
            .map(|m| (m["id"].clone(), m["state"].clone()))
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(new.message(&sent).await["history"], history);
    assert_eq!(new.message(&sent).await["delivery"], delivery);
    // The stream keeps its numbers (consumers' cursors still point where they did).
    assert_eq!(events_of(&new).await, events_before);
    let later_now = new.message(&later).await;
    assert_eq!(
        later_now["notBefore"], later_view["notBefore"],
        "{later_now}"
    );
    assert_eq!(later_now["state"], "queued");
    assert_eq!(new.status().await["scheduled"], 1);
    assert_eq!(new.status().await["paused"], true);
    // The key still answers its card.
    let body = card(2).to_string().into_bytes();
    let request = ApiRequest::post("/v1/instances/main/sendContact", Some(body))
        .with_idempotency_key(Some("k-1".into()));
    let (status, answer) = new.request(request).await;
    assert_eq!(
        (status, answer["id"].as_str()),
        (200, Some(keyed.as_str())),
        "{answer}"
    );
    new.post("/v1/instances/main/resume", &json!({})).await;
    new.wait_state(&keyed, "sent", Duration::from_secs(10))
        .await;
    assert_eq!(sb.received(ID_INSTANCE).len(), 2);

    // A target that is not empty is refused.
    let other = tempfile::tempdir().unwrap();
    let mut fresh = TestDaemon::start(
        &sb,
        DaemonConfig {
            database: Some(other.path().join("q.db")),
            ..DaemonConfig::default()
        },
    )
    .await;
    fresh.stop().await;
    let full = migrate(&other.path().join("q.db"));
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
}

/// 16 clients enqueue through both daemons at once and cancel through the other one
/// while the line drains: a follow stream opened on daemon B sees every event of
/// either daemon numbered 1, 2, 3… with no gap and none out of order, each card's
/// `queued` then `cancelled` or `sent`; and a card enqueued later through A reaches
/// B's stream within about a second (B reads the counter every 300 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_through_daemon_a_reach_daemon_b_follow_stream_gap_free() {
    const CLIENTS: u64 = 16;
    const CARDS: u64 = 8;
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let fast = |node: &str| DaemonConfig {
        send_delay: "5ms",
        ..on(&pg, node)
    };
    let a = TestDaemon::start(&sb, fast("node-a")).await;
    let b = TestDaemon::start(&sb, fast("node-b")).await;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let follower = {
        let client = b.client();
        tokio::spawn(async move {
            let mut lines = client
                .lines("/v1/events?after=0&follow=true", Duration::from_secs(60))
                .await
                .unwrap()
                .unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v.get("seq").is_some() && tx.send(v).is_err() {
                    return;
                }
            }
        })
    };
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (through, other) = if c % 2 == 0 {
            (a.client(), b.client())
        } else {
            (b.client(), a.client())
        };
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..CARDS {
                let body = card(c * 100 + n).to_string().into_bytes();
                let r = through
                    .send(ApiRequest::post(
                        "/v1/instances/main/sendContact",
                        Some(body),
                    ))
                    .await
                    .unwrap();
                assert_eq!(r.status, 202);
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                ids.push(v["id"].as_str().unwrap().to_string());
            }
            for id in ids.iter().step_by(3) {
                let _ = other
                    .send(ApiRequest::delete(format!("/v1/messages/{id}")))
                    .await
                    .unwrap();
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    // Every card: `queued`, then `cancelled` or `sent`.
    let expected = ids.len() * 2;
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("B's follow stream stalled")
            .expect("B's follow stream ended");
        seen.push(next);
    }
    let seqs: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=expected as i64).collect::<Vec<_>>());
    for id in &ids {
        let mine: Vec<&str> = seen
            .iter()
            .filter(|e| e["id"] == id.as_str())
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert!(
            mine == ["queued", "cancelled"] || mine == ["queued", "sent"],
            "{id}: {mine:?}"
        );
    }
    // One more through A: B's stream carries it within about a second (plus slack
    // for a loaded machine).
    let started = std::time::Instant::now();
    let late = a.enqueue_ok(&card(9_999)).await;
    let next = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("B's follow stream carries A's event")
        .unwrap();
    assert_eq!(
        (next["seq"].as_i64(), next["id"].as_str()),
        (Some(expected as i64 + 1), Some(late.as_str()))
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    follower.abort();
}

/// Every event of the stream, as `(seq, event, id)`.
async fn events_of(d: &TestDaemon) -> Vec<(i64, String, String)> {
    d.events_after(0)
        .await
        .into_iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["event"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
