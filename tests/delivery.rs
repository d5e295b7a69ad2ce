//! Delivery, black-box: the real daemon follows each sent card's WhatsApp status in the
//! sandbox's `lastOutgoingMessages` (docs/api.md §11): sent -> delivered -> read with
//! their times and events, a final failure (failed, noAccount) that a `deliveryFailed`
//! hook hears of, `unconfirmed` when the window ends, forward only, within the API's
//! one `lastOutgoingMessages` a second (reconcile's calls included) while sends go on
//! paced by `send_delay`, and across a `kill -9`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::sandbox::{ScriptStep, StatusTarget};
use serde_json::{json, Value};

// Each runs on SQLite and on PostgreSQL (`NAME::sqlite`, `NAME::postgres`).
crate::on_both_backends!(
    a_card_goes_sent_then_delivered_then_read_with_its_times_and_events,
    a_failed_and_a_no_account_card_end_there_and_a_delivery_failed_hook_fires,
    a_card_never_confirmed_becomes_unconfirmed_when_its_window_ends,
    delivery_only_moves_forward_whatever_the_journal_says_next,
    a_card_still_followed_at_a_kill_9_reaches_read_after_the_restart,
);

const OTHER_CHAT: &str = "11001234999@c.us";

fn config(poll: &str, window: &str) -> DaemonConfig {
    DaemonConfig {
        queue_extra: format!("delivery_poll = {poll:?}\ndelivery_window = {window:?}\n"),
        ..DaemonConfig::default()
    }
}

fn card_to(chat: &str, n: u64) -> Value {
    let mut c = card(n);
    c["chatId"] = json!(chat);
    c
}

/// Waits until the card's `delivery` is `want`; returns the message.
async fn wait_delivery(d: &TestDaemon, id: &str, want: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        last = d.message(id).await;
        if last["delivery"] == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("delivery never became {want}: {last}\n{}", d.logs());
}

/// Every event of card `id`, in `seq` order.
async fn events_of(d: &TestDaemon, id: &str) -> Vec<String> {
    d.events_after(0)
        .await
        .into_iter()
        .filter(|e| e["id"] == id)
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn a_card_goes_sent_then_delivered_then_read_with_its_times_and_events() {
    let sb = sandbox().await;
    sb.set_delivery_delays(
        None,
        Duration::from_millis(1500),
        Duration::from_millis(1500),
    );
    let d = TestDaemon::start(&sb, config("1s", "24h")).await;
    let id = d.enqueue_ok(&card(1)).await;
    let queued = d.message(&id).await;
    assert!(queued["delivery"].is_null(), "not sent yet: {queued}");
    wait_delivery(&d, &id, "sent", Duration::from_secs(10)).await;
    let delivered = wait_delivery(&d, &id, "delivered", Duration::from_secs(10)).await;
    assert!(delivered["deliveredAt"].is_string(), "{delivered}");
    assert!(delivered.get("readAt").is_none(), "{delivered}");
    let read = wait_delivery(&d, &id, "read", Duration::from_secs(10)).await;
    let (at_d, at_r) = (
        read["deliveredAt"].as_str().unwrap(),
        read["readAt"].as_str().unwrap(),
    );
    assert_eq!(at_d, delivered["deliveredAt"].as_str().unwrap());
    assert!(at_d < at_r, "{read}");
    assert_eq!(
        events_of(&d, &id).await,
        ["queued", "sent", "delivered", "read"]
    );

    // status counts it, list shows it (API and CLI table).
    let main = &d.status().await;
    assert_eq!(main["delivery"]["read"], 1, "{main}");
    assert_eq!(main["delivery"]["delivered"], 0, "{main}");
    let (code, list) = d.get("/v1/messages").await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["messages"][0]["delivery"], "read");
    let out = d.command().args(["list"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("DELIVERY") && table.contains("read"),
        "{table}"
    );
    let out = d.command().args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains("read 1"), "{text}");
}

async fn a_failed_and_a_no_account_card_end_there_and_a_delivery_failed_hook_fires() {
    let sb = sandbox().await;
    sb.pin_status(
        ID_INSTANCE,
        StatusTarget::Chat(OTHER_CHAT.into()),
        Some("noAccount"),
    );
    sb.pin_status(
        ID_INSTANCE,
        StatusTarget::Chat("11001234567@c.us".into()),
        Some("failed"),
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let program = script(
        dir.path(),
        "hook.sh",
        &format!(
            "echo \"$CONTACTQ_EVENT $CONTACTQ_MESSAGE_ID\" >> {}",
            log.display()
        ),
    );
    let hooks = format!(
        "[hooks.failures]\nexec = [{:?}]\nevents = [\"deliveryFailed\"]\n",
        program.display().to_string()
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            tables: hooks,
            ..config("1s", "24h")
        },
    )
    .await;
    let failed = d.enqueue_ok(&card(1)).await;
    let no_account = d.enqueue_ok(&card_to(OTHER_CHAT, 2)).await;
    wait_delivery(&d, &failed, "failed", Duration::from_secs(10)).await;
    let m = wait_delivery(&d, &no_account, "noAccount", Duration::from_secs(10)).await;
    assert_eq!(m["state"], "sent", "the state stays sent: {m}");
    assert_eq!(
        events_of(&d, &no_account).await,
        ["queued", "sent", "deliveryFailed"]
    );
    eventually(Duration::from_secs(10), "the hook heard both", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains(&format!("deliveryFailed {failed}"))
            && text.contains(&format!("deliveryFailed {no_account}"))
    })
    .await;
    // Final: the journal moving on changes nothing.
    sb.pin_status(
        ID_INSTANCE,
        StatusTarget::Chat(OTHER_CHAT.into()),
        Some("read"),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(d.message(&no_account).await["delivery"], "noAccount");
}

async fn a_card_never_confirmed_becomes_unconfirmed_when_its_window_ends() {
    let sb = sandbox().await;
    sb.pin_status(
        ID_INSTANCE,
        StatusTarget::Chat("11001234567@c.us".into()),
        Some("pending"),
    );
    let d = TestDaemon::start(&sb, config("1s", "4s")).await;
    let id = d.enqueue_ok(&card(1)).await;
    wait_delivery(&d, &id, "sent", Duration::from_secs(10)).await;
    let m = wait_delivery(&d, &id, "unconfirmed", Duration::from_secs(15)).await;
    assert!(m.get("deliveredAt").is_none(), "{m}");
    assert_eq!(events_of(&d, &id).await, ["queued", "sent", "unconfirmed"]);
    // No longer followed: the journal is not asked for it any more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = sb.request_count(ID_INSTANCE, "lastOutgoingMessages");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(sb.request_count(ID_INSTANCE, "lastOutgoingMessages"), calls);
}

async fn delivery_only_moves_forward_whatever_the_journal_says_next() {
    let sb = sandbox().await;
    sb.set_delivery_delays(None, Duration::from_secs(3600), Duration::from_secs(3600));
    let d = TestDaemon::start(&sb, config("1s", "24h")).await;
    let id = d.enqueue_ok(&card(1)).await;
    wait_delivery(&d, &id, "sent", Duration::from_secs(10)).await;
    let id_message = sb.received(ID_INSTANCE)[0].id_message.clone();
    let pin = |status: &str| {
        assert!(sb.pin_status(
            ID_INSTANCE,
            StatusTarget::Message(id_message.clone()),
            Some(status)
        ));
    };
    pin("read");
    let read = wait_delivery(&d, &id, "read", Duration::from_secs(10)).await;
    for back in ["delivered", "sent", "pending", "failed"] {
        pin(back);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let now = d.message(&id).await;
        assert_eq!(now["delivery"], "read", "after {back}: {now}");
        assert_eq!(now["readAt"], read["readAt"]);
    }
    assert_eq!(
        events_of(&d, &id).await,
        ["queued", "sent", "delivered", "read"]
    );
}

#[tokio::test]
async fn journal_calls_stay_within_one_a_second_with_reconcile_and_sends_keep_their_pace() {
    let sb = sandbox().await;
    // Followed all along: never delivered within the test.
    sb.set_delivery_delays(None, Duration::from_secs(3600), Duration::from_secs(3600));
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "400ms",
            ..config("1s", "24h")
        },
    )
    .await;
    // A card whose answer is lost: the reconciler looks it up in the same journal
    // while delivery follows the first one.
    let first = d.enqueue_ok(&card(0)).await;
    wait_delivery(&d, &first, "sent", Duration::from_secs(10)).await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            accept: true,
            drop_connection: true,
            ..ScriptStep::default()
        }],
    );
    let lost = d.enqueue_ok(&card(1)).await;
    d.wait_state(&lost, "sent", Duration::from_secs(20)).await;
    let before = sb.received(ID_INSTANCE).len();
    let mut ids = Vec::new();
    for n in 2..14 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    for id in &ids {
        d.wait_state(id, "sent", Duration::from_secs(30)).await;
    }
    let received = sb.received(ID_INSTANCE);
    let times: Vec<i64> = received[before..]
        .iter()
        .map(|r| r.received_at_ms)
        .collect();
    assert_eq!(times.len(), 12);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 350, "sends closer than send_delay: {times:?}");
        assert!(gap < 1200, "a delivery look held the line: {times:?}");
    }
    let calls = sb.request_count(ID_INSTANCE, "lastOutgoingMessages");
    assert!(calls >= 5, "delivery and reconcile looked: {calls}");
    assert_eq!(
        sb.limited_count(ID_INSTANCE, "lastOutgoingMessages"),
        0,
        "a lastOutgoingMessages came within a second of another"
    );
    assert!(d.logs().contains("uncertain send found"), "reconcile ran");
}

async fn a_card_still_followed_at_a_kill_9_reaches_read_after_the_restart() {
    let sb = sandbox().await;
    sb.set_delivery_delays(None, Duration::from_millis(300), Duration::from_millis(300));
    let chat = StatusTarget::Chat("11001234567@c.us".into());
    sb.pin_status(ID_INSTANCE, chat.clone(), Some("sent"));
    let mut d = TestDaemon::start(&sb, config("1s", "24h")).await;
    let id = d.enqueue_ok(&card(1)).await;
    wait_delivery(&d, &id, "sent", Duration::from_secs(10)).await;
    d.kill9();
    sb.pin_status(ID_INSTANCE, chat, None);
    d.start_again().await;
    let m = wait_delivery(&d, &id, "read", Duration::from_secs(15)).await;
    assert!(
        m["deliveredAt"].is_string() && m["readAt"].is_string(),
        "{m}"
    );
    assert_eq!(
        events_of(&d, &id).await,
        ["queued", "sent", "delivered", "read"]
    );
}
