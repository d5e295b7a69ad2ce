//! Fault paths, black-box: every upstream answer class of docs/api.md §6, expiry, retry, quota,
//! and the token kept out of everything the daemon writes.

mod common;

use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE, TOKEN};
use contactq::cli::client::ApiRequest;
use contactq::sandbox::ScriptStep;
use serde_json::json;

fn step(status: u16) -> ScriptStep {
    ScriptStep {
        status,
        ..ScriptStep::default()
    }
}

#[tokio::test]
async fn a_plain_400_fails_the_card_with_the_api_text_minus_the_token() {
    let sb = sandbox().await;
    sb.push_script(ID_INSTANCE, vec![ScriptStep {
        status: 400,
        body: Some(json!({"statusCode": 400, "path": format!("/waInstance{ID_INSTANCE}/sendContact/{TOKEN}"),
                          "message": "bad request data"})),
        ..ScriptStep::default()
    }]);
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let first = d.enqueue_ok(&card(1)).await;
    let second = d.enqueue_ok(&card(2)).await;
    let failed = d
        .wait_state(&first, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(failed["lastError"], "bad request data");
    d.wait_state(&second, "sent", Duration::from_secs(10)).await;
    assert!(!failed.to_string().contains(TOKEN));
    // retry puts it back at the tail with a fresh expiry, and it goes out
    let (status, retried) = d
        .request(ApiRequest::post(
            format!("/v1/messages/{first}/retry"),
            None,
        ))
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["state"], "queued");
    d.wait_state(&first, "sent", Duration::from_secs(10)).await;
}

/// Unix milliseconds now, on the clock the sandbox stamps `received_at_ms` with.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after_keeping_the_card_at_the_head() {
    const RETRY_AFTER_MS: i64 = 3000;
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            retry_after: Some(RETRY_AFTER_MS as u64 / 1000),
            ..step(429)
        }],
    );
    // The back-off alone would retry after ~100 ms: only honouring Retry-After waits 3 s.
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            retry_initial: "100ms",
            retry_max: "10s",
            ..Default::default()
        },
    )
    .await;
    let first = d.enqueue_ok(&card(1)).await;
    let second = d.enqueue_ok(&card(2)).await;
    // When the 429 was answered, as seen from here: never earlier than it really was,
    // so the gap measured from it is never longer than the real one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sb.request_count(ID_INSTANCE, "sendContact") == 0 {
        assert!(std::time::Instant::now() < deadline, "no sendContact");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let throttled_at = unix_ms();
    let sent = d.wait_state(&first, "sent", Duration::from_secs(8)).await;
    assert_eq!(sent["attempts"], 2);
    d.wait_state(&second, "sent", Duration::from_secs(6)).await;
    assert_eq!(
        common::received_names(&sb),
        ["card-1", "card-2"],
        "FIFO kept after a 429"
    );
    let retried_at = sb.received(ID_INSTANCE)[0].received_at_ms;
    let gap = retried_at - throttled_at;
    assert!(
        gap >= RETRY_AFTER_MS - 150,
        "retried {gap} ms after a 429 with Retry-After: 3"
    );
    assert!(
        gap <= RETRY_AFTER_MS + 1500,
        "retried {gap} ms after a 429 with Retry-After: 3, far later than asked"
    );
    // The daemon's own record agrees, to the millisecond: the second attempt began no
    // sooner than Retry-After after the 429 was recorded.
    let history = sent["history"].as_array().expect("history");
    let at = |event: &str, nth: usize| -> i64 {
        let h = history
            .iter()
            .filter(|h| h["event"] == event)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {event} #{nth} in {sent}"));
        chrono::DateTime::parse_from_rfc3339(h["at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let waited = at("attempt", 1) - at("requeued", 0);
    assert!(
        waited >= RETRY_AFTER_MS,
        "the daemon retried {waited} ms after recording the 429: {sent}"
    );
}

#[tokio::test]
async fn a_refused_connection_backs_off_and_loses_nothing() {
    let sb = sandbox().await;
    // The authorization asked before the sandbox goes away stays fresh for the whole
    // test (a send starts only with a fresh one), however slow the machine.
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            state_poll: "60s",
            ..Default::default()
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the instance authorized",
        || async { d.status().await["authorization"] == "authorized" },
    )
    .await;
    let url = sb.url();
    sb.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(
        Duration::from_secs(5),
        "a refused attempt recorded",
        || async {
            let m = d.message(&id).await;
            m["attempts"].as_i64().unwrap_or(0) >= 1 && m["state"] == "queued"
        },
    )
    .await;
    let m = d.message(&id).await;
    assert_eq!(m["state"], "queued", "{m}");
    assert!(m["lastError"].is_string());
    assert!(!m.to_string().contains(TOKEN));
    // the same port serves again: the card goes out
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let back = contactq::sandbox::Sandbox::start(([127, 0, 0, 1], port).into(), Default::default())
        .await
        .unwrap();
    d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    assert_eq!(back.received(ID_INSTANCE).len(), 1);
}

#[tokio::test]
async fn unauthorized_answers_hold_the_card_and_recheck_the_state() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![
            ScriptStep {
                status: 200,
                body: Some(json!({"code": 401, "description": "Unauthorized"})),
                ..ScriptStep::default()
            },
            step(401),
            ScriptStep {
                status: 400,
                body: Some(json!({"message": "instance in starting process try later"})),
                ..ScriptStep::default()
            },
        ],
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(15)).await;
    assert_eq!(sent["attempts"], 4, "{sent}");
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        1,
        "the 200-without-idMessage was not a send"
    );
    assert!(
        sb.request_count(ID_INSTANCE, "getStateInstance") >= 4,
        "re-checked after each"
    );
}

#[tokio::test]
async fn quota_exceeded_holds_the_line_until_resume() {
    let sb = sandbox().await;
    sb.push_script(ID_INSTANCE, vec![step(466)]);
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(5), "quota hold in status", || async {
        d.status().await["held"]
            .as_str()
            .is_some_and(|h| h.contains("466"))
    })
    .await;
    let m = d.message(&id).await;
    assert_eq!(m["state"], "queued");
    assert!(m["eta"].is_null(), "{m}");
    assert!(d.status().await["lastError"]
        .as_str()
        .unwrap()
        .contains("466"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sb.received(ID_INSTANCE).is_empty());
    let (status, _) = d
        .request(ApiRequest::post("/v1/instances/main/resume", None))
        .await;
    assert_eq!(status, 200);
    d.wait_state(&id, "sent", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pause_holds_the_line_across_a_restart_and_resume_releases_it() {
    let sb = sandbox().await;
    let mut d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let (status, answer) = d
        .request(ApiRequest::post("/v1/instances/main/pause", None))
        .await;
    assert_eq!((status, answer["paused"].as_bool()), (200, Some(true)));
    let id = d.enqueue_ok(&card(1)).await;
    d.restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let m = d.message(&id).await;
    assert_eq!(
        (m["state"].as_str(), m["waitingFor"].as_str()),
        (Some("queued"), Some("paused")),
        "{m}"
    );
    assert_eq!(d.status().await["paused"], true);
    assert!(sb.received(ID_INSTANCE).is_empty());
    d.request(ApiRequest::post("/v1/instances/main/resume", None))
        .await;
    d.wait_state(&id, "sent", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn queued_cards_expire_on_a_timer_and_retry_gives_a_fresh_expiry() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            max_age: "2s",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    let expired = d.wait_state(&id, "expired", Duration::from_secs(6)).await;
    assert_eq!(d.status().await["expired"], 1);
    let (status, retried) = d
        .request(ApiRequest::post(format!("/v1/messages/{id}/retry"), None))
        .await;
    assert_eq!(status, 200);
    assert!(retried["expiresAt"].as_str() > expired["expiresAt"].as_str());
    sb.set_state(None, "authorized");
    d.wait_state(&id, "sent", Duration::from_secs(6)).await;
}

#[tokio::test]
async fn a_5xx_whose_card_was_taken_is_reconciled_not_sent_twice() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            accept: true,
            ..step(500)
        }],
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "3s",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    let second = d.enqueue_ok(&card(2)).await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    d.wait_state(&second, "sent", Duration::from_secs(10)).await;
    let received = sb.received(ID_INSTANCE);
    assert_eq!(received.len(), 2, "card-1 received once");
    assert_eq!(sent["idMessage"], json!(received[0].id_message));
    assert_eq!(sent["attempts"], 1);
    assert!(
        sent["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "reconciled"),
        "{sent}"
    );
}

#[tokio::test]
async fn a_5xx_whose_card_was_not_taken_is_sent_again_after_reconcile_lag() {
    let sb = sandbox().await;
    sb.push_script(ID_INSTANCE, vec![step(502)]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    let second = d.enqueue_ok(&card(2)).await;
    eventually(Duration::from_secs(3), "uncertain card", || async {
        d.message(&id).await["attempts"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        sb.received(ID_INSTANCE).is_empty(),
        "nothing else goes out while card-1 is unresolved"
    );
    let sent = d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    assert_eq!(sent["attempts"], 2);
    d.wait_state(&second, "sent", Duration::from_secs(10)).await;
    assert_eq!(common::received_names(&sb), ["card-1", "card-2"]);
}

#[tokio::test]
async fn a_time_out_is_uncertain_and_reconciled() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            delay: Duration::from_secs(3),
            accept: true,
            ..step(200)
        }],
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            request_timeout: "1s",
            reconcile_lag: "5s",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(15)).await;
    assert_eq!(sent["attempts"], 1, "{sent}");
    assert_eq!(sb.received(ID_INSTANCE).len(), 1);
    assert_eq!(
        sent["idMessage"],
        json!(sb.received(ID_INSTANCE)[0].id_message)
    );
}

#[tokio::test]
async fn the_token_never_reaches_logs_errors_status_or_the_database() {
    let sb = sandbox().await;
    sb.push_script(ID_INSTANCE, vec![
        step(500), step(502),
        ScriptStep { status: 400, body: Some(json!({"path": format!("/waInstance{ID_INSTANCE}/sendContact/{TOKEN}"), "message": format!("echo {TOKEN}")})), ..ScriptStep::default() },
    ]);
    let d = TestDaemon::start_with_env(
        &sb,
        DaemonConfig {
            reconcile_lag: "1s",
            ..Default::default()
        },
        &[("RUST_LOG", "trace")],
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "failed", Duration::from_secs(20)).await;
    let (_, list) = d.get("/v1/messages").await;
    let (_, status) = d.get("/v1/status").await;
    let shown = format!("{list}{status}{}", d.message(&id).await);
    assert!(!shown.contains(TOKEN), "{shown}");
    let logs = d.logs();
    assert!(logs.contains("sendContact"), "logs were captured: {logs}");
    assert!(!logs.contains(TOKEN), "token in logs");
    for file in ["queue.db", "queue.db-wal"] {
        // Both exist while the daemon runs (WAL mode): a read error is a failure, not
        // an empty file that trivially holds no token.
        let bytes = std::fs::read(d.dir.path().join(file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        assert!(!bytes.is_empty(), "{file} is empty");
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token in {file}"
        );
    }
}

#[tokio::test]
async fn thousands_of_cards_expire_in_batches() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            max_age: "1s",
            ..Default::default()
        },
    )
    .await;
    let cards: Vec<serde_json::Value> = (0..2500).map(card).collect();
    let (status, _) = d
        .post("/v1/instances/main/sendContact:batch", &json!(cards))
        .await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(10), "all 2,500 expired", || async {
        d.status().await["expired"] == 2500
    })
    .await;
    assert_eq!(d.status().await["queued"], 0);
    let (_, page) = d.get("/v1/messages?state=expired&limit=1").await;
    let id = page["messages"][0]["id"].as_str().unwrap().to_string();
    let history = d.message(&id).await["history"].clone();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "expired"),
        "{history}"
    );
}

#[tokio::test]
async fn an_unreachable_api_at_start_holds_the_line_and_says_why() {
    let sb = sandbox().await;
    sb.shutdown();
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(5), "the hold is explained", || async {
        let m = d.message(&id).await;
        m["waitingFor"]
            .as_str()
            .is_some_and(|w| w.starts_with("back-off after connection error"))
    })
    .await;
    let status = d.status().await;
    assert_eq!(status["authorization"], "unknown");
    assert!(
        status["lastError"]
            .as_str()
            .unwrap()
            .contains("getStateInstance"),
        "{status}"
    );
    assert!(!status.to_string().contains(TOKEN));
    assert_eq!(
        d.message(&id).await["attempts"],
        0,
        "nothing is sent before the state is known"
    );
}
