//! Reconcile of an uncertain card, black-box: the real daemon against the sandbox,
//! where the sandbox took the card but its answer was lost (a 500, a dropped
//! connection). Each test checks at the sandbox that every card went out exactly once
//! and that the stored `idMessage` is the one the sandbox issued.

mod common;

use std::time::{Duration, Instant};

use common::{assert_received_once_and_recorded, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::sandbox::{KnobPatch, Sandbox, ScriptStep};
use serde_json::{json, Value};

/// The API takes the card, then answers 500: the daemon cannot know it went out.
fn taken_then_500() -> ScriptStep {
    ScriptStep {
        status: 500,
        accept: true,
        ..ScriptStep::default()
    }
}

fn knobs(sb: &Sandbox, patch: KnobPatch) {
    sb.patch(Some(ID_INSTANCE), patch);
}

/// Enqueues `cards`, waits for each to be `sent`, and checks each went to the
/// sandbox exactly once with its idMessage stored. Returns the stored messages.
async fn all_sent_once(
    d: &TestDaemon,
    sb: &Sandbox,
    cards: &[Value],
    within: Duration,
) -> Vec<Value> {
    let mut ids = Vec::new();
    for card in cards {
        ids.push(d.enqueue_ok(card).await);
    }
    let mut stored = Vec::new();
    for id in &ids {
        stored.push(d.wait_state(id, "sent", within).await);
    }
    let received = sb.received(ID_INSTANCE);
    assert_eq!(
        received.len(),
        cards.len(),
        "each card reached the API once: {received:?}\n{}",
        d.logs()
    );
    assert_received_once_and_recorded(sb, &stored);
    // The sandbox answers a second call of a journal method within a second with a
    // 429: none came, so the daemon kept to the API's limits.
    let logs = d.logs();
    assert!(
        logs.contains("instance settings read"),
        "the log is read: {logs}"
    );
    for failure in ["journal look-up failed", "getSettings failed"] {
        assert!(!logs.contains(failure), "{failure}: {logs}");
    }
    stored
}

fn reconciled(m: &Value) -> bool {
    m["history"]
        .as_array()
        .is_some_and(|h| h.iter().any(|e| e["event"] == "reconciled"))
}

#[tokio::test]
async fn a_company_reading_waid_does_not_hide_a_sent_card() {
    // The reported bug: the first `waid=` of the vCard came from the ORG line, so the
    // sent card was not recognised and went out a second time.
    let sb = sandbox().await;
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let trap = json!({"chatId": "11001234567@c.us",
        "contact": {"phoneContact": 79001234568u64, "firstName": "trap",
                    "company": "see waid=79990000000"}});
    let stored = all_sent_once(&d, &sb, &[trap], Duration::from_secs(15)).await;
    assert_eq!(stored[0]["attempts"], 1, "{}", stored[0]);
    assert!(reconciled(&stored[0]), "{}", stored[0]);
}

#[tokio::test]
async fn the_grouped_item1_tel_form_is_read_past_a_hostile_company() {
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            vcard_item_tel: Some(true),
            ..KnobPatch::default()
        },
    );
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let trap = json!({"chatId": "11001234567@c.us",
        "contact": {"phoneContact": 79001234568u64, "firstName": "TEL;waid=79990000000:+79990000000",
                    "company": "item2.TEL;waid=79990000000:+79990000000"}});
    let stored = all_sent_once(&d, &sb, &[trap], Duration::from_secs(15)).await;
    assert!(reconciled(&stored[0]), "{}", stored[0]);
}

#[tokio::test]
async fn the_entry_sent_through_the_api_wins_over_the_same_card_typed_on_the_phone() {
    // In the same second as the API sent the card, the same contact went to the same
    // chat from the phone itself: the journal lists both; the API's is this card.
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            journal_lag_ms: Some(1_500),
            ..KnobPatch::default()
        },
    );
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "3s",
            ..Default::default()
        },
    )
    .await;
    let body = common::card(1);
    let id = d.enqueue_ok(&body).await;
    common::eventually(
        Duration::from_secs(5),
        "the sandbox took the card",
        || async { sb.received(ID_INSTANCE).len() == 1 },
    )
    .await;
    let taken = sb.received(ID_INSTANCE)[0].clone();
    let typed = sb
        .typed_on_phone(ID_INSTANCE, &body, taken.received_at_ms)
        .expect("a valid card");
    let sent = d.wait_state(&id, "sent", Duration::from_secs(15)).await;
    assert!(reconciled(&sent), "{sent}");
    assert_ne!(sent["idMessage"], json!(typed), "not the phone's message");
    assert_received_once_and_recorded(&sb, &[sent]);
    assert_eq!(sb.received(ID_INSTANCE).len(), 1);
}

#[tokio::test]
async fn an_api_clock_twenty_seconds_behind_still_finds_the_card() {
    // The journal's timestamp is the API host's clock: 20 s behind ours, the entry
    // reads as older than the attempt.
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            clock_skew_ms: Some(-20_000),
            ..KnobPatch::default()
        },
    );
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let stored = all_sent_once(&d, &sb, &[common::card(1)], Duration::from_secs(15)).await;
    assert!(reconciled(&stored[0]), "{}", stored[0]);
}

#[tokio::test]
async fn a_late_journal_entry_is_found_on_a_later_look_not_sent_again() {
    // The journal lists the card 2.5 s late; reconcile_lag is 1 s, but the API's own
    // send delay (3 s, from getSettings) is waited out too before sending again.
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            journal_lag_ms: Some(2_500),
            delay_send_messages_milliseconds: Some(3_000),
            ..KnobPatch::default()
        },
    );
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "1s",
            ..Default::default()
        },
    )
    .await;
    let stored = all_sent_once(&d, &sb, &[common::card(1)], Duration::from_secs(15)).await;
    assert!(reconciled(&stored[0]), "{}", stored[0]);
    assert!(
        sb.request_count(ID_INSTANCE, "lastOutgoingMessages") >= 2,
        "found on a second look, not the first"
    );
    assert!(sb.request_count(ID_INSTANCE, "getSettings") >= 1);
}

#[tokio::test]
async fn the_cards_typing_time_is_waited_out_before_sending_again() {
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            journal_lag_ms: Some(2_500),
            ..KnobPatch::default()
        },
    );
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "1s",
            ..Default::default()
        },
    )
    .await;
    let mut typing = common::card(1);
    typing["typingTime"] = json!(3000);
    let stored = all_sent_once(&d, &sb, &[typing], Duration::from_secs(15)).await;
    assert!(reconciled(&stored[0]), "{}", stored[0]);
}

#[tokio::test]
async fn a_card_missed_by_two_looks_goes_out_again_once() {
    // The card was not taken: after reconcile_lag and two missed looks it is sent
    // again, exactly once, and not before the lag.
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 502,
            ..ScriptStep::default()
        }],
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let started = Instant::now();
    let stored = all_sent_once(&d, &sb, &[common::card(1)], Duration::from_secs(15)).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(stored[0]["attempts"], 2, "{}", stored[0]);
    assert!(sb.request_count(ID_INSTANCE, "lastOutgoingMessages") >= 2);
    assert!(sb.request_count(ID_INSTANCE, "showMessagesQueue") >= 2);
}

#[tokio::test]
async fn a_card_found_only_in_the_api_queue_is_sent_once() {
    // The instance logs out after the daemon saw it authorized: the API takes the
    // card into its own queue and sends nothing, so the journal never lists it.
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            state_poll: "1h",
            ..Default::default()
        },
    )
    .await;
    common::eventually(
        Duration::from_secs(5),
        "the daemon saw the instance authorized",
        || async { d.status().await["authorization"] == "authorized" },
    )
    .await;
    sb.set_state(Some(ID_INSTANCE), "notAuthorized");
    sb.push_script(ID_INSTANCE, vec![taken_then_500()]);
    let stored = all_sent_once(&d, &sb, &[common::card(1)], Duration::from_secs(15)).await;
    assert!(reconciled(&stored[0]), "{}", stored[0]);
    assert_eq!(
        sb.queued(ID_INSTANCE),
        1,
        "still in the API's queue, not its journal"
    );
}

#[tokio::test]
async fn two_uncertain_cards_with_the_same_phone_each_get_their_own_id() {
    let sb = sandbox().await;
    sb.push_script(ID_INSTANCE, vec![taken_then_500(), taken_then_500()]);
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let same = |name: &str| {
        json!({"chatId": "11001234567@c.us",
               "contact": {"phoneContact": 79001234568u64, "firstName": name}})
    };
    let stored = all_sent_once(
        &d,
        &sb,
        &[same("first"), same("second")],
        Duration::from_secs(20),
    )
    .await;
    assert_ne!(stored[0]["idMessage"], stored[1]["idMessage"]);
    assert!(stored.iter().all(reconciled), "{stored:?}");
}

#[tokio::test]
async fn connections_dropped_after_the_request_was_written_are_reconciled() {
    // Every send is taken by the API and its connection closed without an answer.
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            drop_after_write: Some(1.0),
            ..KnobPatch::default()
        },
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "2s",
            ..Default::default()
        },
    )
    .await;
    let cards: Vec<Value> = (1..=3).map(common::card).collect();
    let stored = all_sent_once(&d, &sb, &cards, Duration::from_secs(20)).await;
    for m in &stored {
        assert_eq!(m["attempts"], 1, "{m}");
        assert!(reconciled(m), "{m}");
    }
    assert_eq!(sb.request_count(ID_INSTANCE, "sendContact"), 3);
}

#[tokio::test]
async fn after_a_restart_a_first_miss_is_looked_at_again_a_send_delay_later() {
    // The daemon dies mid-send; the API took the card, and its journal lists it 7 s
    // late. Restarted after reconcile_lag + the API's send delay (4 s) have passed,
    // the first look misses it: only a second look at least 4 s later may send again,
    // and that one finds it.
    let sb = sandbox().await;
    knobs(
        &sb,
        KnobPatch {
            journal_lag_ms: Some(7_000),
            delay_send_messages_milliseconds: Some(4_000),
            ..KnobPatch::default()
        },
    );
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 200,
            delay: Duration::from_secs(30),
            accept: true,
            ..ScriptStep::default()
        }],
    );
    let mut d = TestDaemon::start(
        &sb,
        DaemonConfig {
            reconcile_lag: "1s",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&common::card(1)).await;
    common::eventually(
        Duration::from_secs(5),
        "the sandbox took the card",
        || async { sb.received(ID_INSTANCE).len() == 1 },
    )
    .await;
    let taken_at = Instant::now();
    d.kill9();
    tokio::time::sleep(Duration::from_millis(5_500).saturating_sub(taken_at.elapsed())).await;
    d.start_again().await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(15)).await;
    assert!(reconciled(&sent), "{sent}");
    assert!(
        taken_at.elapsed() >= Duration::from_secs(7),
        "found only once the journal listed it"
    );
    let received = sb.received(ID_INSTANCE);
    assert_eq!(received.len(), 1, "card-1 went to the API once");
    assert_eq!(sent["idMessage"], json!(received[0].id_message));
    assert_eq!(sent["attempts"], 1);
}
