//! What an operator asks first: who enqueued a card, when it will go out and why not
//! yet, how long ended cards are kept, and logs a machine can read.

mod common;

use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon, TOKEN};
use serde_json::{json, Value};

#[tokio::test]
async fn the_enqueuing_uid_is_recorded_and_others_can_be_refused() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    let uid = unsafe { libc::getuid() };
    assert_eq!(d.message(&id).await["peerUid"], json!(uid));

    let other = uid.wrapping_add(4242);
    let locked = TestDaemon::start(
        &sb,
        DaemonConfig {
            daemon_extra: format!("allowed_uids = [{other}]"),
            ..Default::default()
        },
    )
    .await;
    let (status, answer) = locked.enqueue(&card(2)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(locked.all_messages().await.is_empty());
    let gid = unsafe { libc::getgid() };
    let by_group = TestDaemon::start(
        &sb,
        DaemonConfig {
            daemon_extra: format!("allowed_uids = [{other}]\nallowed_gids = [{gid}]"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_group.enqueue(&card(3)).await.0, 202);
}

#[tokio::test]
async fn queued_cards_show_position_eta_and_a_warning_when_they_cannot_make_it() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "10s",
            max_age: "25s",
            ..Default::default()
        },
    )
    .await;
    let mut answers: Vec<Value> = Vec::new();
    for n in 0..5 {
        answers.push(d.enqueue(&card(n)).await.1);
    }
    // The first goes out at once; the rest wait for send_delay, 10 s apart.
    let last = &answers[4];
    assert_eq!(last["waitingFor"], "send_delay", "{last}");
    assert_eq!(last["warning"], "eta after expiry", "{last}");
    assert!(answers[1].get("warning").is_none(), "{}", answers[1]);
    let second = d.message(answers[2]["id"].as_str().unwrap()).await;
    assert_eq!(second["position"], 2, "{second}");
    let eta = chrono::DateTime::parse_from_rfc3339(second["eta"].as_str().unwrap()).unwrap();
    let ahead = eta.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    // The line's first card goes out 10 s after the send now under way, the second 10 s
    // after it: 20 s from the first send, less the few ms since (a one-place error in
    // the position or a forgotten send_delay is 10 s off).
    assert!(
        (18_000..=20_050).contains(&ahead),
        "eta {ahead} ms ahead, about 20 s expected: {second}"
    );
}

#[tokio::test]
async fn ended_cards_are_deleted_after_keep_done_with_their_idempotency_keys() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            keep_done: "1s",
            ..Default::default()
        },
    )
    .await;
    let req = || {
        contactq::cli::client::ApiRequest::post(
            "/v1/instances/main/sendContact",
            Some(card(1).to_string().into_bytes()),
        )
        .with_idempotency_key(Some("k-1".into()))
    };
    let (status, first) = d.request(req()).await;
    assert_eq!(status, 202);
    let id = first["id"].as_str().unwrap().to_string();
    d.wait_state(&id, "sent", Duration::from_secs(5)).await;
    eventually(
        Duration::from_secs(10),
        "the sent card is deleted",
        || async { d.get(&format!("/v1/messages/{id}")).await.0 == 404 },
    )
    .await;
    assert_eq!(d.status().await["sent"], 0, "counts follow deletions");
    let (status, again) = d.request(req()).await;
    assert_eq!(status, 202, "the key was forgotten with its card: {again}");
    assert_ne!(again["id"], json!(id));
}

#[tokio::test]
async fn json_logs_carry_structured_fields_and_no_token() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            daemon_extra: "log_format = \"json\"".into(),
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "sent", Duration::from_secs(5)).await;
    eventually(Duration::from_secs(3), "send logged", || async {
        d.logs().contains("sendContact answered")
    })
    .await;
    let logs = d.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let send = lines
        .iter()
        .find(|l| l["message"] == "sendContact answered")
        .expect("a send line");
    assert_eq!(send["upstream_status"], "200", "{send}");
    assert_eq!(send["attempt"], 1);
    assert!(send["latency_ms"].is_number());
    let span = send["span"].to_string() + &send["spans"].to_string();
    assert!(span.contains(&id) && span.contains("main"), "{send}");
    assert!(!logs.contains(TOKEN));
}
