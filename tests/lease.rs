//! The drain lease on a shared PostgreSQL database (docs/api.md §10), black-box: three
//! daemons draining one queue through repeated kill -9 of the lease holder, a holder
//! frozen (SIGSTOP) past its lease that sends nothing when thawed, the take-over time,
//! `status` (`drainedBy`, `leaseEpoch`, `nodes`), and a pause given to a daemon that
//! does not drain reaching the one that does. Each test has a fresh database; the
//! daemons run with `lease = "3s"` (tests/common).

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_received_once_and_recorded, card, eventually, sandbox, test_postgres, DaemonConfig,
    TestDaemon, TestPostgres, ID_INSTANCE,
};
use contactq::sandbox::Sandbox;
use serde_json::json;
use sqlx::{Connection, PgConnection};

const LEASE: Duration = Duration::from_secs(3);
const SEND_DELAY_MS: i64 = 300;

fn on(pg: &TestPostgres, node: &str) -> DaemonConfig {
    DaemonConfig {
        postgres: Some(pg.clone()),
        daemon_extra: format!("node = {node:?}"),
        send_delay: "300ms",
        ..DaemonConfig::default()
    }
}

/// The node holding `main`'s live lease and its epoch, as the database says.
async fn holder(pg: &TestPostgres) -> Option<(String, i64)> {
    let mut conn = PgConnection::connect(&pg.url).await.unwrap();
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT node, epoch FROM leases
         WHERE instance = 'main' AND expires_at > clock_timestamp()",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    row
}

/// Waits for a live holder other than `not` (None: any); answers it and how long it took.
async fn next_holder(
    pg: &TestPostgres,
    not: Option<&str>,
    within: Duration,
) -> (String, i64, Duration) {
    let start = Instant::now();
    loop {
        if let Some((node, epoch)) = holder(pg).await {
            if Some(node.as_str()) != not {
                return (node, epoch, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < within,
            "no new lease holder within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn index_of(node: &str) -> usize {
    ["node-a", "node-b", "node-c"]
        .iter()
        .position(|n| *n == node)
        .unwrap_or_else(|| panic!("unknown node {node}"))
}

/// No two cards reached the sandbox closer than `send_delay`.
fn assert_paced(sb: &Sandbox) {
    let received = sb.received(ID_INSTANCE);
    for pair in received.windows(2) {
        let gap = pair[1].received_at_ms - pair[0].received_at_ms;
        assert!(
            gap >= SEND_DELAY_MS - 5,
            "two sends {gap} ms apart; send_delay is {SEND_DELAY_MS} ms"
        );
    }
}

/// The `sendContact` requests a daemon's log says it made.
fn sends_logged(d: &TestDaemon) -> usize {
    d.logs().matches("sendContact answered").count()
}

/// Three daemons on one database, cards enqueued through all three; the lease holder
/// is killed (-9) four times mid-drain. Each time another daemon holds the lease within
/// `lease` + 2 s, at a higher epoch; every card reaches the sandbox exactly once, no
/// two closer than `send_delay`; status shows drainedBy, leaseEpoch and the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_drain_a_shared_queue_through_repeated_kill_9_of_the_holder() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let mut daemons = [
        TestDaemon::start(&sb, on(&pg, "node-a")).await,
        TestDaemon::start(&sb, on(&pg, "node-b")).await,
        TestDaemon::start(&sb, on(&pg, "node-c")).await,
    ];
    let mut n = 0;
    let mut last_epoch = 0;
    for round in 0..4 {
        for _ in 0..9 {
            daemons[n % 3].enqueue_ok(&card(n as u64)).await;
            n += 1;
        }
        let before = sb.received(ID_INSTANCE).len();
        eventually(Duration::from_secs(30), "a send after the enqueues", || {
            let sb = &sb;
            async move { sb.received(ID_INSTANCE).len() > before + 1 }
        })
        .await;
        let (victim, epoch, _) = next_holder(&pg, None, Duration::from_secs(10)).await;
        assert!(
            epoch >= last_epoch,
            "round {round}: epoch {epoch} after {last_epoch}"
        );
        let i = index_of(&victim);
        daemons[i].kill9();
        let (taker, epoch, took) = next_holder(&pg, Some(&victim), LEASE * 3).await;
        assert!(
            epoch > last_epoch,
            "round {round}: a take-over at epoch {epoch}"
        );
        assert!(
            took <= LEASE + Duration::from_secs(2),
            "round {round}: {taker} took over {took:?} after the kill; lease is {LEASE:?}"
        );
        last_epoch = epoch;
        daemons[i].start_again().await;
    }
    eventually(Duration::from_secs(90), "every card sent", || {
        let d = &daemons[0];
        async move { d.all_messages().await.iter().all(|m| m["state"] == "sent") }
    })
    .await;
    assert_eq!(daemons[1].all_messages().await.len(), n);
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        n,
        "a card went out twice or never"
    );
    assert_received_once_and_recorded(&sb, &daemons[2].all_messages().await);
    assert_paced(&sb);

    // Every daemon's status names the holder and its epoch, and all three nodes.
    let (node, epoch) = holder(&pg).await.expect("a holder");
    for d in &daemons {
        let (code, status) = d.get("/v1/status").await;
        assert_eq!(code, 200);
        let main = &status["instances"][0];
        assert_eq!(main["drainedBy"], json!(node), "{status}");
        assert_eq!(main["leaseEpoch"], json!(epoch), "{status}");
        assert!(epoch >= 5, "{status}");
        let mut nodes: Vec<&str> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["node-a", "node-b", "node-c"], "{status}");
        assert!(status["nodes"][0]["lastSeen"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }
}

/// The holder is frozen (SIGSTOP) mid-drain past its lease: another daemon takes over
/// within `lease` + 2 s and drains the rest; thawed (SIGCONT), the frozen one writes no
/// request more (its log and the sandbox agree), and every card went out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_sends_nothing_when_thawed() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let daemons = [
        TestDaemon::start(&sb, on(&pg, "node-a")).await,
        TestDaemon::start(&sb, on(&pg, "node-b")).await,
    ];
    for n in 0..30 {
        daemons[n % 2].enqueue_ok(&card(n as u64)).await;
    }
    eventually(Duration::from_secs(20), "the drain under way", || {
        let sb = &sb;
        async move { sb.received(ID_INSTANCE).len() >= 3 }
    })
    .await;
    let (frozen, epoch, _) = next_holder(&pg, None, Duration::from_secs(5)).await;
    let f = index_of(&frozen);
    unsafe { libc::kill(daemons[f].pid(), libc::SIGSTOP) };
    let stopped = Instant::now();
    let sent_before = sends_logged(&daemons[f]);
    let (taker, new_epoch, took) = next_holder(&pg, Some(&frozen), LEASE * 3).await;
    assert!(
        took <= LEASE + Duration::from_secs(2),
        "{taker} took over {took:?} after SIGSTOP; lease is {LEASE:?}"
    );
    assert!(new_epoch > epoch);
    // The other drains a few cards, then the frozen one wakes, well past its lease.
    let at_take = sb.received(ID_INSTANCE).len();
    eventually(Duration::from_secs(20), "the new holder sending", || {
        let sb = &sb;
        async move { sb.received(ID_INSTANCE).len() >= at_take + 3 }
    })
    .await;
    assert!(stopped.elapsed() > LEASE);
    unsafe { libc::kill(daemons[f].pid(), libc::SIGCONT) };
    eventually(Duration::from_secs(60), "every card sent", || {
        let d = &daemons[1 - f];
        async move { d.all_messages().await.iter().all(|m| m["state"] == "sent") }
    })
    .await;
    // Give the thawed daemon time to act on anything it had in hand.
    tokio::time::sleep(LEASE).await;
    assert_eq!(
        sends_logged(&daemons[f]),
        sent_before,
        "the thawed daemon wrote a request"
    );
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        30,
        "a card went out twice or never"
    );
    assert_received_once_and_recorded(&sb, &daemons[f].all_messages().await);
    assert_paced(&sb);
}

/// A pause given to the daemon that does not drain stops the one that does within a
/// second; a resume through it lets the drain go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_through_a_daemon_that_does_not_drain_stops_the_holder_within_a_second() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let daemons = [
        TestDaemon::start(&sb, on(&pg, "node-a")).await,
        TestDaemon::start(&sb, on(&pg, "node-b")).await,
    ];
    for n in 0..40 {
        daemons[n % 2].enqueue_ok(&card(n as u64)).await;
    }
    eventually(Duration::from_secs(20), "the drain under way", || {
        let sb = &sb;
        async move { sb.received(ID_INSTANCE).len() >= 2 }
    })
    .await;
    let (drainer, _, _) = next_holder(&pg, None, Duration::from_secs(5)).await;
    let other = &daemons[1 - index_of(&drainer)];
    let (status, _) = other.post("/v1/instances/main/pause", &json!({})).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_a_second = sb.received(ID_INSTANCE).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        after_a_second,
        "the holder sent more than a second after the pause"
    );
    assert!(after_a_second < 40);
    let (status, _) = other.post("/v1/instances/main/resume", &json!({})).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(60), "every card sent", || {
        let sb = &sb;
        async move { sb.received(ID_INSTANCE).len() == 40 }
    })
    .await;
    assert_received_once_and_recorded(&sb, &daemons[0].all_messages().await);
}

/// A flush given to the daemon that does not drain reaches the holder: it asks the
/// state at once (state_poll is an hour) and the re-authorized instance drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_through_a_daemon_that_does_not_drain_reaches_the_holder() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    sb.set_state(Some(ID_INSTANCE), "notAuthorized");
    let config = |node| DaemonConfig {
        state_poll: "1h",
        ..on(&pg, node)
    };
    let daemons = [
        TestDaemon::start(&sb, config("node-a")).await,
        TestDaemon::start(&sb, config("node-b")).await,
    ];
    let id = daemons[0].enqueue_ok(&card(1)).await;
    let (drainer, _, _) = next_holder(&pg, None, Duration::from_secs(10)).await;
    eventually(
        Duration::from_secs(5),
        "the holder's first state call",
        || {
            let sb = &sb;
            async move { sb.request_count(ID_INSTANCE, "getStateInstance") >= 1 }
        },
    )
    .await;
    sb.set_state(Some(ID_INSTANCE), "authorized");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let other = &daemons[1 - index_of(&drainer)];
    assert_eq!(
        other.message(&id).await["state"],
        "queued",
        "state_poll is 1 h"
    );
    let (status, _) = other.post("/v1/instances/main/flush", &json!({})).await;
    assert_eq!(status, 200);
    other.wait_state(&id, "sent", Duration::from_secs(4)).await;
}
