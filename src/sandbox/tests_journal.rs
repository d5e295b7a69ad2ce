//! Tests of the sandbox's journal realism over real HTTP: a send taken and then
//! dropped unanswered, the API host's clock skew, a queue held outside `authorized`,
//! and a vCard whose free text cannot start a line of its own.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::tests_api::{card, get_json, method_url, send, start, unlimited, ID};
use super::KnobPatch;

#[tokio::test]
async fn drop_after_write_takes_the_card_and_never_answers() {
    let (sb, c) = start(unlimited()).await;
    let control = format!("{}/sandbox/control", sb.url());
    let bad = json!({"instance": ID, "dropAfterWrite": 1.5});
    let resp = c.post(&control).json(&bad).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("dropAfterWrite"),
        "{body}"
    );
    let set = json!({"instance": ID, "dropAfterWrite": 1.0});
    assert_eq!(
        c.post(&control)
            .json(&set)
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::OK
    );

    let answer = c
        .post(method_url(&sb, "sendContact"))
        .json(&card())
        .send()
        .await;
    assert!(answer.is_err(), "no answer at all: {answer:?}");
    let received = sb.received(ID);
    assert_eq!(received.len(), 1, "the card was taken");
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    assert_eq!(journal[0]["idMessage"], json!(received[0].id_message));

    sb.patch(
        Some(ID),
        KnobPatch {
            drop_after_write: Some(0.0),
            ..KnobPatch::default()
        },
    );
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_journal_time_follows_the_instance_clock() {
    let (sb, c) = start(unlimited()).await;
    sb.patch(
        Some(ID),
        KnobPatch {
            clock_skew_ms: Some(-60_000),
            ..KnobPatch::default()
        },
    );
    let now = chrono::Utc::now().timestamp();
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    let ts = journal[0]["timestamp"].as_i64().expect("timestamp");
    assert!((now - 61..=now - 59).contains(&ts), "{ts} vs {now}");
}

#[tokio::test]
async fn a_yellow_card_or_blocked_instance_keeps_its_queue() {
    let (sb, c) = start(unlimited()).await;
    for state in ["yellowCard", "blocked"] {
        sb.set_state(None, state);
        assert_eq!(
            send(&sb, &c, &card()).await.status(),
            StatusCode::OK,
            "{state}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_json(&sb, &c, "lastOutgoingMessages").await.1, json!([]));
    let (_, queue) = get_json(&sb, &c, "showMessagesQueue").await;
    assert_eq!(queue.as_array().map(Vec::len), Some(2));
    sb.set_state(None, "authorized");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sb.queued(ID), 0);
}

#[tokio::test]
async fn free_text_cannot_add_a_line_to_the_vcard() {
    let (sb, c) = start(unlimited()).await;
    let hostile = json!({"chatId": "11001234567@c.us",
        "contact": {"phoneContact": 79001234568u64, "firstName": "A\nTEL;waid=79990000000:+79990000000",
                    "company": "see waid=79990000000"}});
    assert_eq!(send(&sb, &c, &hostile).await.status(), StatusCode::OK);
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    let vcard = journal[0]["contact"]["vcard"].as_str().expect("vcard");
    let tel: Vec<&str> = vcard.lines().filter(|l| l.starts_with("TEL")).collect();
    assert_eq!(
        tel,
        ["TEL;type=CELL;type=VOICE;waid=79001234568:+79001234568"],
        "{vcard}"
    );
    assert!(vcard.contains("ORG:see waid=79990000000\n"), "{vcard}");
    assert_eq!(crate::upstream::phone_in_vcard(vcard), Some(79001234568));
}

#[tokio::test]
async fn the_vcard_can_use_the_grouped_tel_form() {
    let (sb, c) = start(unlimited()).await;
    sb.patch(
        Some(ID),
        KnobPatch {
            vcard_item_tel: Some(true),
            ..KnobPatch::default()
        },
    );
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    let vcard = journal[0]["contact"]["vcard"].as_str().expect("vcard");
    assert!(
        vcard.ends_with("ORG:Bicycle\nitem1.TEL;waid=79001234568:+79001234568\nitem1.X-ABLabel:Mobile\nEND:VCARD"),
        "{vcard}"
    );
}

#[tokio::test]
async fn a_card_typed_on_the_phone_is_in_the_journal_not_sent_by_api() {
    let (sb, c) = start(unlimited()).await;
    let typed = format!("{}/sandbox/typed", sb.url());
    let bad = json!({"instance": ID, "body": {"chatId": "x"}});
    let resp = c.post(&typed).json(&bad).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let req = json!({"instance": ID, "body": card()});
    let answer: Value = c
        .post(&typed)
        .json(&req)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    assert_eq!(journal[0]["idMessage"], answer["idMessage"]);
    assert_eq!(journal[0]["sendByApi"], false);
    assert!(sb.received(ID).is_empty(), "not a send through the API");
}

/// The `statusMessage` of the first journal entry.
async fn first_status(sb: &super::Sandbox, c: &reqwest::Client) -> Value {
    let (_, journal) = get_json(sb, c, "lastOutgoingMessages").await;
    journal[0]["statusMessage"].clone()
}

#[tokio::test]
async fn a_sent_message_moves_to_delivered_then_read_unless_a_status_is_pinned() {
    let (sb, c) = start(unlimited()).await;
    sb.set_delivery_delays(None, Duration::from_millis(300), Duration::from_millis(300));
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    assert_eq!(first_status(&sb, &c).await, "sent");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(first_status(&sb, &c).await, "delivered");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(first_status(&sb, &c).await, "read");

    // A pin on the message wins; lifting it lets the delays speak again.
    let id = sb.received(ID)[0].id_message.clone();
    let status = format!("{}/sandbox/status", sb.url());
    let pin = json!({"instance": ID, "idMessage": id, "status": "failed"});
    let resp = c.post(&status).json(&pin).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(first_status(&sb, &c).await, "failed");
    let lift = json!({"instance": ID, "idMessage": id, "status": null});
    c.post(&status).json(&lift).send().await.expect("post");
    assert_eq!(first_status(&sb, &c).await, "read");

    // A chat pinned to noAccount: every message to it, sent before or after.
    let chat = json!({"instance": ID, "chatId": "11001234567@c.us", "status": "noAccount"});
    c.post(&status).json(&chat).send().await.expect("post");
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(first_status(&sb, &c).await, "noAccount");

    // Mistakes are refused naming what is wrong.
    for (bad, word) in [
        (
            json!({"instance": ID, "chatId": "x", "status": "lost"}),
            "lost",
        ),
        (json!({"instance": ID, "status": "read"}), "idMessage"),
    ] {
        let resp = c.post(&status).json(&bad).send().await.expect("post");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.expect("json");
        assert!(
            body["error"].as_str().unwrap_or("").contains(word),
            "{body}"
        );
    }
}
