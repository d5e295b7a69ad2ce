//! The normal path, black-box: cards enqueued over the socket go out to the sandbox one
//! by one, FIFO, paced by `send_delay`, and end `sent` with the API's idMessage.

mod common;

use std::time::Duration;

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::cli::client::ApiRequest;
use serde_json::json;

async fn enqueued_card_is_sent_with_id_message() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let (status, answer) = d.enqueue(&json!({"chatId": "11001234567@c.us",
        "contact": {"phoneContact": "79001234568", "firstName": "Артём", "lastName": "Евпаторийский"}})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["state"], "queued");
    assert_eq!(answer["instance"], "main");
    assert_eq!(answer["contact"]["phoneContact"], json!(79001234568u64));
    let id = answer["id"].as_str().unwrap();
    let sent = d.wait_state(id, "sent", Duration::from_secs(10)).await;
    let received = sb.received(ID_INSTANCE);
    assert_eq!(received.len(), 1);
    assert_eq!(sent["idMessage"], json!(received[0].id_message));
    assert_eq!(sent["attempts"], 1);
    assert!(sent["sentAt"].is_string());
    assert_eq!(
        received[0].body["contact"]["phoneContact"],
        json!(79001234568u64),
        "sent as a number"
    );
    assert_eq!(received[0].body["contact"]["firstName"], "Артём");
    let history = sent["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["event"] == "sent"), "{sent}");
}

async fn cards_go_out_in_fifo_order_no_closer_than_send_delay() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "300ms",
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    d.wait_state(&ids[4], "sent", Duration::from_secs(15)).await;
    let received = sb.received(ID_INSTANCE);
    assert_eq!(
        common::received_names(&sb),
        (0..5).map(|n| format!("card-{n}")).collect::<Vec<_>>()
    );
    let gaps: Vec<i64> = received
        .windows(2)
        .map(|pair| pair[1].received_at_ms - pair[0].received_at_ms)
        .collect();
    for gap in &gaps {
        // Arrival times carry a few ms of loopback jitter on top of the daemon's pacing.
        assert!(
            *gap >= 290,
            "sends {gap} ms apart, send_delay is 300 ms: {gaps:?}"
        );
        // And the drain does not wait much longer than asked: a ready card goes out
        // when send_delay has passed (one slow moment on a busy machine is allowed for,
        // a drain that waits twice send_delay or polls each second is not).
        assert!(
            *gap < 600,
            "sends {gap} ms apart, send_delay is 300 ms: {gaps:?}"
        );
    }
    let mean = gaps.iter().sum::<i64>() / gaps.len() as i64;
    assert!(
        mean < 400,
        "sends {mean} ms apart on average, send_delay is 300 ms: {gaps:?}"
    );
    for (id, r) in ids.iter().zip(&received) {
        assert_eq!(d.message(id).await["idMessage"], json!(r.id_message));
    }
}

async fn nothing_is_sent_while_not_authorized_and_drains_once_authorized() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(5), "notAuthorized seen", || async {
        d.status().await["authorization"] == "notAuthorized"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sb.received(ID_INSTANCE).is_empty());
    assert_eq!(
        sb.request_count(ID_INSTANCE, "sendContact"),
        0,
        "not even tried"
    );
    let m = d.message(&id).await;
    assert_eq!(m["state"], "queued");
    assert_eq!(m["position"], 1);
    assert!(m["eta"].is_null(), "{m}");
    assert!(
        m["waitingFor"]
            .as_str()
            .unwrap()
            .contains("notAuthorized since"),
        "{m}"
    );
    sb.set_state(None, "authorized");
    d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    assert_eq!(d.status().await["authorization"], "authorized");
}

async fn every_validation_rule_is_a_400_naming_the_field_and_stores_nothing() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let chat = "11001234567@c.us";
    let ok_contact = json!({"phoneContact": 79001234568u64, "firstName": "A"});
    let cases = [
        (json!({}), "'value' must have at least 1 key"),
        (json!([1, 2]), "'value' must be of type object"),
        (json!({"contact": ok_contact}), "'chatId' is required"),
        (
            json!({"chatId": 5, "contact": ok_contact}),
            "'chatId' must be a string",
        ),
        (
            json!({"chatId": "12345", "contact": ok_contact}),
            "'chatId'",
        ),
        (
            json!({"chatId": "1-2@c.us", "contact": ok_contact}),
            "'chatId'",
        ),
        (json!({"chatId": chat}), "'contact' is required"),
        (
            json!({"chatId": chat, "contact": []}),
            "'contact' must be of type object",
        ),
        (
            json!({"chatId": chat, "contact": {"firstName": "A"}}),
            "'contact.phoneContact' is required",
        ),
        (
            json!({"chatId": chat, "contact": {"phoneContact": "x1", "firstName": "A"}}),
            "'contact.phoneContact' must be a number",
        ),
        (
            json!({"chatId": chat, "contact": {"phoneContact": 9007199254740993u64, "firstName": "A"}}),
            "'contact.phoneContact' must be a safe number",
        ),
        (
            json!({"chatId": chat, "contact": {"phoneContact": 790012, "firstName": "A"}}),
            "'contact.phoneContact' must be a positive integer of 7 to 15 digits",
        ),
        (
            json!({"chatId": chat, "contact": {"phoneContact": 79001234568u64}}),
            "at least one of",
        ),
        (
            json!({"chatId": chat, "contact": {"phoneContact": 79001234568u64, "firstName": 7}}),
            "'contact.firstName' must be a string",
        ),
        (
            json!({"chatId": chat, "contact": ok_contact, "quotedMessageId": 1}),
            "'quotedMessageId' must be a string",
        ),
        (
            json!({"chatId": chat, "contact": ok_contact, "typingTime": "soon"}),
            "'typingTime'",
        ),
        (
            json!({"chatId": chat, "contact": ok_contact, "message": "hi"}),
            "'message' is not allowed",
        ),
        (
            json!({"chatId": chat, "contact": {"phoneContact": 79001234568u64, "firstName": "A", "email": "e"}}),
            "'contact.email' is not allowed",
        ),
    ];
    for (body, detail) in cases {
        let (status, answer) = d.enqueue(&body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(
            answer["details"].as_str().unwrap().contains(detail),
            "{body} -> {answer}"
        );
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("Validation failed"),
            "{answer}"
        );
    }
    let (status, answer) = d
        .request(ApiRequest::post(
            "/v1/instances/main/sendContact",
            Some(b"{not json".to_vec()),
        ))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(d.all_messages().await.is_empty(), "nothing stored");
    assert_eq!(d.status().await["queued"], 0);
}

async fn bodies_over_100_kib_are_413_and_unknown_instances_404() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let big = json!({"chatId": "11001234567@c.us",
        "contact": {"phoneContact": 79001234568u64, "firstName": "x".repeat(101 * 1024)}});
    let (status, answer) = d.enqueue(&big).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "request entity too large");
    let (status, answer) = d.post("/v1/instances/nope/sendContact", &card(1)).await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["details"].as_str().unwrap().contains("nope"));
    let (status, _) = d.get("/v1/messages/01NOSUCHMESSAGE").await;
    assert_eq!(status, 404);
    let (status, answer) = d.get("/v1/instances/main/sendContact").await;
    assert_eq!(status, 405);
    assert!(answer["error"].is_string(), "errors are JSON: {answer}");
    assert!(d.all_messages().await.is_empty());
}

async fn a_repeat_with_the_same_idempotency_key_returns_the_original() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let send = |body: serde_json::Value, key: &str| {
        ApiRequest::post(
            "/v1/instances/main/sendContact",
            Some(body.to_string().into_bytes()),
        )
        .with_idempotency_key(Some(key.to_string()))
    };
    let (s1, first) = d.request(send(card(1), "order-42")).await;
    let (s2, again) = d.request(send(card(1), "order-42")).await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["idempotencyKey"], "order-42");
    let (s3, conflict) = d.request(send(card(2), "order-42")).await;
    assert_eq!(s3, 409, "{conflict}");
    assert_eq!(d.all_messages().await.len(), 1);
    let id = first["id"].as_str().unwrap();
    d.wait_state(id, "sent", Duration::from_secs(10)).await;
    assert_eq!(sb.received(ID_INSTANCE).len(), 1);
}

async fn a_queued_card_can_be_cancelled_once() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    let (status, answer) = d
        .request(ApiRequest::delete(format!("/v1/messages/{id}")))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "cancelled");
    let (status, _) = d
        .request(ApiRequest::delete(format!("/v1/messages/{id}")))
        .await;
    assert_eq!(status, 409);
    let (status, _) = d
        .request(ApiRequest::post(format!("/v1/messages/{id}/retry"), None))
        .await;
    assert_eq!(status, 409, "a cancelled card is not retried");
    sb.set_state(None, "authorized");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sb.received(ID_INSTANCE).is_empty());
    assert_eq!(d.status().await["cancelled"], 1);
}

async fn list_pages_newest_first_with_filters() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    let (_, page1) = d.get("/v1/messages?limit=2").await;
    let got: Vec<&str> = page1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let next = page1["next"].as_str().unwrap();
    let (_, page2) = d.get(&format!("/v1/messages?limit=2&before={next}")).await;
    assert_eq!(page2["messages"][0]["id"], json!(ids[2]));
    let (_, page3) = d
        .get(&format!(
            "/v1/messages?limit=2&before={}",
            page2["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page3["messages"].as_array().unwrap().len(), 1);
    assert!(page3["next"].is_null());
    let (_, queued) = d.get("/v1/messages?state=queued&instance=main").await;
    assert_eq!(queued["messages"].as_array().unwrap().len(), 5);
    assert_eq!(queued["messages"][0]["position"], 5);
    let (_, none) = d.get("/v1/messages?state=sent").await;
    assert!(none["messages"].as_array().unwrap().is_empty());
    let (status, _) = d.get("/v1/messages?state=bogus").await;
    assert_eq!(status, 400);
}

async fn batch_enqueue_is_all_or_nothing() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let bad = json!([card(1), {"chatId": "x"}, card(3), {}]);
    let (status, answer) = d.post("/v1/instances/main/sendContact:batch", &bad).await;
    assert_eq!(status, 400, "{answer}");
    let details = answer["details"].as_str().unwrap();
    assert!(
        details.contains("[1]") && details.contains("[3]") && !details.contains("[0]"),
        "{details}"
    );
    assert!(d.all_messages().await.is_empty());
    let (status, answer) = d
        .post(
            "/v1/instances/main/sendContact:batch",
            &json!([card(1), card(2), card(3)]),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let positions: Vec<i64> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3]);
}

// Each of these runs on SQLite and on PostgreSQL (`NAME::sqlite`, `NAME::postgres`).
crate::on_both_backends!(
    enqueued_card_is_sent_with_id_message,
    cards_go_out_in_fifo_order_no_closer_than_send_delay,
    nothing_is_sent_while_not_authorized_and_drains_once_authorized,
    every_validation_rule_is_a_400_naming_the_field_and_stores_nothing,
    bodies_over_100_kib_are_413_and_unknown_instances_404,
    a_repeat_with_the_same_idempotency_key_returns_the_original,
    a_queued_card_can_be_cancelled_once,
    list_pages_newest_first_with_filters,
    batch_enqueue_is_all_or_nothing,
);
