//! Tests of the emulated Green API methods, over real HTTP on 127.0.0.1: validation
//! answers, idMessage format, states, limits, tokens and the paced send queue.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{Sandbox, SandboxOptions};

pub(super) const ID: &str = "1101000001";

pub(super) async fn start(opts: SandboxOptions) -> (Sandbox, reqwest::Client) {
    let sb = Sandbox::start("127.0.0.1:0".parse().expect("addr"), opts)
        .await
        .expect("sandbox starts");
    (sb, reqwest::Client::new())
}

pub(super) fn unlimited() -> SandboxOptions {
    SandboxOptions {
        rate_limits: false,
        ..SandboxOptions::default()
    }
}

pub(super) fn card() -> Value {
    json!({
        "chatId": "11001234567@c.us",
        "contact": {"phoneContact": 79001234568u64, "firstName": "Artem",
                    "middleName": "Petrovich", "lastName": "Evpatoriysky", "company": "Bicycle"}
    })
}

pub(super) fn method_url(sb: &Sandbox, method: &str) -> String {
    format!("{}/waInstance{ID}/{method}/TOKEN", sb.url())
}

pub(super) async fn send(sb: &Sandbox, c: &reqwest::Client, body: &Value) -> reqwest::Response {
    c.post(method_url(sb, "sendContact"))
        .json(body)
        .send()
        .await
        .expect("request")
}

pub(super) async fn get_json(
    sb: &Sandbox,
    c: &reqwest::Client,
    method: &str,
) -> (StatusCode, Value) {
    let resp = c.get(method_url(sb, method)).send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn accepted_card_gets_fresh_upper_hex_id_message() {
    let (sb, c) = start(unlimited()).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = send(&sb, &c, &card()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        let id = body["idMessage"].as_str().expect("idMessage").to_owned();
        assert_eq!(id.len(), 20);
        assert!(id
            .chars()
            .all(|ch| ch.is_ascii_digit() || ('A'..='F').contains(&ch)));
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let received = sb.received(ID);
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].id_message, ids[0]);
    assert_eq!(received[0].chat_id, "11001234567@c.us");
    assert_eq!(received[0].body, card());
    assert_eq!(sb.request_count(ID, "sendContact"), 2);
}

#[tokio::test]
async fn invalid_card_is_400_echoing_the_path_with_token() {
    let (sb, c) = start(unlimited()).await;
    let resp = send(
        &sb,
        &c,
        &json!({"contact": {"phoneContact": 79001234568u64}}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["statusCode"], 400);
    assert_eq!(body["path"], format!("/waInstance{ID}/sendContact/TOKEN"));
    assert_eq!(
        body["message"],
        "Validation failed. Details: 'chatId' is required"
    );
    let ts = body["timestamp"].as_str().expect("timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");

    let resp = c
        .post(method_url(&sb, "sendContact"))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("Validation failed."));
    assert!(sb.received(ID).is_empty());
    assert_eq!(sb.request_count(ID, "sendContact"), 2);
}

#[tokio::test]
async fn unauthorized_and_starting_instances_refuse_cards() {
    let (sb, c) = start(unlimited()).await;
    for (state, text) in [
        ("notAuthorized", "instance account not authorized"),
        ("starting", "instance in starting process try later"),
    ] {
        sb.set_state(None, state);
        let (_, st) = get_json(&sb, &c, "getStateInstance").await;
        assert_eq!(st, json!({"stateInstance": state}));
        let resp = send(&sb, &c, &card()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["message"], text);
    }
    sb.set_state(Some(ID), "yellowCard");
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    assert_eq!(sb.received(ID).len(), 1);
}

#[tokio::test]
async fn second_get_state_within_a_second_is_429() {
    let (sb, c) = start(SandboxOptions::default()).await;
    let (first, body) = get_json(&sb, &c, "getStateInstance").await;
    assert_eq!(first, StatusCode::OK);
    assert_eq!(body["stateInstance"], "authorized");
    let resp = c
        .get(method_url(&sb, "getStateInstance"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"message": "Too Many Requests"})
    );
    // Each method has its own limit, and the limit passes.
    assert_eq!(get_json(&sb, &c, "getSettings").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        get_json(&sb, &c, "getStateInstance").await.0,
        StatusCode::OK
    );
    assert_eq!(sb.request_count(ID, "getStateInstance"), 3);
}

#[tokio::test]
async fn a_configured_token_is_required_for_its_instance_only() {
    let mut opts = unlimited();
    opts.tokens.insert(ID.to_owned(), "secret".to_owned());
    let (sb, c) = start(opts).await;
    let resp = c
        .get(method_url(&sb, "getStateInstance"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text().await.expect("text"), "Unauthorized");
    let good = format!("{}/waInstance{ID}/getStateInstance/secret", sb.url());
    assert_eq!(
        c.get(good).send().await.expect("request").status(),
        StatusCode::OK
    );
    let other = format!("{}/waInstance7/getStateInstance/anything", sb.url());
    assert_eq!(
        c.get(other).send().await.expect("request").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_method_is_404_and_settings_carry_the_delay() {
    let mut opts = unlimited();
    opts.delay_send_ms = 1500;
    let (sb, c) = start(opts).await;
    assert_eq!(
        get_json(&sb, &c, "sendMessageNope").await.0,
        StatusCode::NOT_FOUND
    );
    let bare = format!("{}/nothing", sb.url());
    assert_eq!(
        c.get(bare).send().await.expect("req").status(),
        StatusCode::NOT_FOUND
    );
    let (status, s) = get_json(&sb, &c, "getSettings").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["wid"], format!("{ID}@c.us"));
    assert_eq!(s["delaySendMessagesMilliseconds"], 1500);
    assert_eq!(s["webhookUrl"], "");
}

#[tokio::test]
async fn queue_sends_one_card_per_delay_into_the_journal() {
    let mut opts = unlimited();
    opts.delay_send_ms = 400;
    let (sb, c) = start(opts).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let body: Value = send(&sb, &c, &card()).await.json().await.expect("json");
        ids.push(body["idMessage"].as_str().expect("id").to_owned());
    }
    // The first goes at once, the other two wait their turn.
    let (_, queue) = get_json(&sb, &c, "showMessagesQueue").await;
    let queued: Vec<&str> = queue
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["messageID"].as_str())
        .collect();
    assert_eq!(queued, vec![ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(queue[0]["type"], "sendContact");
    assert_eq!(queue[0]["body"]["chatId"], "11001234567@c.us");
    assert_eq!(queue[0]["body"]["contact"]["phoneContact"], 79001234568u64);
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    assert_eq!(journal.as_array().map(Vec::len), Some(1));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    let sent: Vec<&str> = journal
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["idMessage"].as_str())
        .collect();
    assert_eq!(
        sent,
        vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()],
        "newest first"
    );
    let (_, queue) = get_json(&sb, &c, "showMessagesQueue").await;
    assert_eq!(queue, json!([]));
}

#[tokio::test]
async fn journal_entry_has_the_real_contact_message_shape() {
    let (sb, c) = start(unlimited()).await;
    let mut body = card();
    body["quotedMessageId"] = json!("BAE557AE1AB1719C");
    let before = chrono::Utc::now().timestamp();
    let id: Value = send(&sb, &c, &body).await.json().await.expect("json");
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    let entry = &journal[0];
    assert_eq!(entry["idMessage"], id["idMessage"]);
    assert_eq!(entry["type"], "outgoing");
    assert_eq!(entry["typeMessage"], "contactMessage");
    assert_eq!(entry["statusMessage"], "sent");
    assert_eq!(entry["sendByApi"], true);
    assert_eq!(entry["chatId"], "11001234567@c.us");
    assert_eq!(entry["quotedMessageId"], "BAE557AE1AB1719C");
    assert!(entry["timestamp"].as_i64().expect("ts") >= before);
    assert_eq!(entry["contact"]["displayName"], "Artem Evpatoriysky");
    assert_eq!(
        entry["contact"]["vcard"],
        "BEGIN:VCARD\nVERSION:3.0\nN:Evpatoriysky;Artem;Petrovich;;\nFN:Artem Evpatoriysky\n\
         ORG:Bicycle\nTEL;type=CELL;type=VOICE;waid=79001234568:+79001234568\nEND:VCARD"
    );
    let old = format!("{}?minutes=0", method_url(&sb, "lastOutgoingMessages"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let empty: Value = c
        .get(old)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(empty, json!([]));
}

#[tokio::test]
async fn nothing_leaves_the_queue_while_not_authorized() {
    let (sb, c) = start(unlimited()).await;
    sb.set_state(None, "sleepMode");
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_json(&sb, &c, "lastOutgoingMessages").await.1, json!([]));
    sb.set_state(None, "authorized");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    assert_eq!(journal.as_array().map(Vec::len), Some(1));
}
