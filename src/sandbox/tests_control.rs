//! Tests of the steering side: scripted answers, random failures, latency, the
//! `/sandbox/*` endpoints and shutdown.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::tests_api::{card, get_json, send, start, unlimited, ID};
use super::ScriptStep;

#[tokio::test]
async fn script_steps_answer_the_next_sends_in_order() {
    let (sb, c) = start(unlimited()).await;
    sb.push_script(
        ID,
        vec![
            ScriptStep {
                status: 500,
                accept: true,
                ..ScriptStep::default()
            },
            ScriptStep {
                status: 200,
                body: Some(json!({"code": 401, "description": "Unauthorized"})),
                ..ScriptStep::default()
            },
            ScriptStep {
                status: 429,
                retry_after: Some(3),
                ..ScriptStep::default()
            },
        ],
    );
    let first = send(&sb, &c, &card()).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The API took the card even though the answer was an error.
    assert_eq!(sb.received(ID).len(), 1);
    let (_, journal) = get_json(&sb, &c, "lastOutgoingMessages").await;
    assert_eq!(
        journal[0]["idMessage"].as_str(),
        Some(sb.received(ID)[0].id_message.as_str())
    );

    let second = send(&sb, &c, &card()).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        second.json::<Value>().await.expect("json"),
        json!({"code": 401, "description": "Unauthorized"})
    );
    let third = send(&sb, &c, &card()).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "3");
    // The script is used up: back to normal.
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    assert_eq!(sb.received(ID).len(), 2);
}

#[tokio::test]
async fn a_dropped_connection_gets_no_answer_but_may_keep_the_card() {
    let (sb, c) = start(unlimited()).await;
    let step = json!({"instance": ID, "steps": [
        {"status": 500, "dropConnection": true, "accept": true, "delayMs": 50},
        {"status": 466}
    ]});
    let resp = c
        .post(format!("{}/sandbox/script", sb.url()))
        .json(&step)
        .send()
        .await;
    assert_eq!(resp.expect("script").status(), StatusCode::OK);
    let dropped = c
        .post(super::tests_api::method_url(&sb, "sendContact"))
        .json(&card())
        .send()
        .await;
    assert!(dropped.is_err(), "expected no answer, got {dropped:?}");
    assert_eq!(sb.received(ID).len(), 1);
    let quota = send(&sb, &c, &card()).await;
    assert_eq!(quota.status().as_u16(), 466);
    let body: Value = quota.json().await.expect("json");
    // A plain scripted 466 is the method quota: the real API's shape.
    assert_eq!(body["invokeStatus"]["status"], "QUOTE_EXCEEDED");
    assert_eq!(body["invokeStatus"]["method"], "sendcontact");
    assert_eq!(sb.received(ID).len(), 1);
}

#[tokio::test]
async fn random_failures_and_latency() {
    let (sb, c) = start(unlimited()).await;
    sb.set_failures(Some(ID), 1.0, vec![502]);
    let resp = send(&sb, &c, &card()).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.text().await.expect("text").contains("502 Bad Gateway"));
    sb.set_failures(Some(ID), 1.0, vec![429]);
    let resp = send(&sb, &c, &card()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(sb.received(ID).is_empty());

    sb.set_failures(Some(ID), 0.0, vec![]);
    sb.set_latency(None, Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(send(&sb, &c, &card()).await.status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn control_endpoint_steers_one_instance_or_all() {
    let (sb, c) = start(unlimited()).await;
    let control = format!("{}/sandbox/control", sb.url());
    let set =
        json!({"instance": ID, "state": "notAuthorized", "delaySendMessagesMilliseconds": 1000});
    let resp = c.post(&control).json(&set).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        get_json(&sb, &c, "getStateInstance").await.1["stateInstance"],
        "notAuthorized"
    );
    let other = format!("{}/waInstance42/getStateInstance/t", sb.url());
    let other: Value = c
        .get(other)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(other["stateInstance"], "authorized");

    let shown: Value = c
        .get(&control)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["defaults"]["state"], "authorized");
    assert_eq!(shown["instances"][ID]["state"], "notAuthorized");
    assert_eq!(
        shown["instances"][ID]["delaySendMessagesMilliseconds"],
        1000
    );
    assert_eq!(shown["rateLimits"], false);

    for bad in [
        json!({"state": "sleeping"}),
        json!({"failRate": 2}),
        json!({"bogus": 1}),
    ] {
        let resp = c.post(&control).json(&bad).send().await.expect("post");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.expect("json");
        assert!(body["error"].is_string());
    }
    // `unknown` is contactq's word for "not asked yet", not a state the API answers.
    for bad in ["sleeping", "unknown", "Authorized"] {
        let resp = c
            .post(&control)
            .json(&json!({ "state": bad }))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body["error"],
            format!("unknown state '{bad}' (one of: authorized, notAuthorized, starting, yellowCard, blocked, sleepMode, suspended)")
        );
    }
    let all = json!({"failRate": 1.0, "failStatuses": [500], "rateLimits": true});
    assert_eq!(
        c.post(&control)
            .json(&all)
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::OK
    );
    let resp = c
        .post(format!("{}/waInstance9/sendContact/t", sb.url()))
        .json(&card())
        .send();
    assert_eq!(
        resp.await.expect("send").status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn sent_endpoint_lists_every_accepted_card() {
    let (sb, c) = start(unlimited()).await;
    let r1: Value = send(&sb, &c, &card()).await.json().await.expect("json");
    let sent: Value = c
        .get(format!("{}/sandbox/sent?instance={ID}", sb.url()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(sent[0]["idMessage"], r1["idMessage"]);
    assert_eq!(sent[0]["chatId"], "11001234567@c.us");
    assert_eq!(sent[0]["body"], card());
    assert!(sent[0]["receivedAt"].as_i64().expect("ms") > 1_600_000_000_000);
    let none: Value = c
        .get(format!("{}/sandbox/sent?instance=404", sb.url()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (sb, c) = start(unlimited()).await;
    assert_eq!(
        get_json(&sb, &c, "getStateInstance").await.0,
        StatusCode::OK
    );
    sb.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = reqwest::Client::new();
    let url = super::tests_api::method_url(&sb, "getStateInstance");
    assert!(fresh.get(url).send().await.is_err());
}

#[tokio::test]
async fn quota_refusal_and_redirect_knobs_answer_like_the_real_api() {
    let (sb, c) = start(unlimited()).await;
    let control = |body: Value| {
        let c = c.clone();
        let url = format!("{}/sandbox/control", sb.url());
        async move { c.post(url).json(&body).send().await.expect("control") }
    };
    // The chats quota: only the listed chats; others get the chats-quota 466.
    let set = control(json!({"instance": ID, "allowedChats": ["11000000001@c.us"]})).await;
    assert_eq!(set.status(), StatusCode::OK);
    let refused = send(&sb, &c, &card()).await;
    assert_eq!(refused.status().as_u16(), 466);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(
        body["correspondentsStatus"]["status"],
        "CORRESPONDENTS_QUOTE_EXCEEDED"
    );
    assert_eq!(body["invokeStatus"]["status"], "QUOTE_ALLOWED");
    assert!(sb.received(ID).is_empty());
    let mut allowed = card();
    allowed["chatId"] = json!("11000000001@c.us");
    assert_eq!(send(&sb, &c, &allowed).await.status(), StatusCode::OK);
    control(json!({"instance": ID, "allowedChats": []})).await;
    // The method quota.
    control(json!({"instance": ID, "quotaMethods": ["sendContact"]})).await;
    let over = send(&sb, &c, &card()).await;
    assert_eq!(over.status().as_u16(), 466);
    let body: Value = over.json().await.expect("json");
    assert_eq!(body["invokeStatus"]["status"], "QUOTE_EXCEEDED");
    control(json!({"instance": ID, "quotaMethods": []})).await;
    // 401 / 403 for every method.
    control(json!({"instance": ID, "refuseStatus": 403})).await;
    let (status, _) = get_json(&sb, &c, "getStateInstance").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    control(json!({"instance": ID, "refuseStatus": 0})).await;
    let bad = control(json!({"refuseStatus": 402})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // A redirect, never with the card taken.
    control(json!({"instance": ID, "redirectTo": "http://127.0.0.1:9"})).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let moved = send(&sb, &no_follow, &card()).await;
    assert_eq!(moved.status().as_u16(), 307);
    assert!(moved.headers()["location"]
        .to_str()
        .expect("ascii")
        .starts_with("http://127.0.0.1:9/waInstance"));
    assert_eq!(sb.received(ID).len(), 1);
    // `suspended` is a state.
    let set = control(json!({"state": "suspended"})).await;
    assert_eq!(set.status(), StatusCode::OK);
}
