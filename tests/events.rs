//! The event stream, black-box: the real daemon against the sandbox. Every state change
//! of a card is one numbered event, `seq` has no gaps and is seen in order (also by a
//! reader following the stream while 32 clients enqueue and cancel and the line drains),
//! a follow stream carries a new event within a second and heartbeats, and events past
//! retention answer 410.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{card, eventually, sandbox, DaemonConfig, TestDaemon};
use contactq::cli::client::ApiRequest;
use serde_json::Value;

crate::on_both_backends!(
    event_seq_is_gap_free_and_in_order_under_32_enqueuers_a_drain_and_cancels,
    follow_carries_a_new_event_within_a_second_and_heartbeats,
    an_after_older_than_retention_answers_410_with_the_oldest_kept,
    follow_prints_each_event_as_one_json_line,
);

async fn pause(d: &TestDaemon) {
    let (status, body) = d.post("/v1/instances/main/pause", &Value::Null).await;
    assert_eq!(status, 200, "{body}");
}

/// The stream's events mapped to the history's names.
fn history_name(event: &str) -> &str {
    match event {
        "queued" => "enqueued",
        other => other,
    }
}

async fn event_seq_is_gap_free_and_in_order_under_32_enqueuers_a_drain_and_cancels() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "5ms",
            ..Default::default()
        },
    )
    .await;
    // A reader following from the start sees each seq once, one after the other.
    let follower = {
        let client = d.client();
        tokio::spawn(async move {
            let mut lines = client
                .lines("/v1/events?after=0&follow=true", Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            let mut seen: Vec<i64> = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                if let Some(seq) = v["seq"].as_i64() {
                    seen.push(seq);
                }
                if seen.len() >= 32 * 12 * 2 {
                    break;
                }
            }
            seen
        })
    };
    let mut clients = Vec::new();
    for c in 0..32u64 {
        let client = d.client();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..12u64 {
                let body = card(c * 100 + n).to_string().into_bytes();
                let r = client
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
            // A third of them cancelled, if the drain has not taken them yet.
            for id in ids.iter().step_by(3) {
                let _ = client
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
    eventually(Duration::from_secs(60), "the line drained", || async {
        d.status().await["queued"] == 0 && d.status().await["sending"] == 0
    })
    .await;
    let events = d.events_after(0).await;
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "seq is 1..N without a gap, in order");
    // Each card: queued, then sent or cancelled; the same as its history says.
    let mut by_card: HashMap<String, Vec<String>> = HashMap::new();
    for e in &events {
        assert_eq!(e["instance"], "main");
        assert_eq!(e["message"]["id"], e["id"], "{e}");
        assert_eq!(
            e["message"]["state"], e["event"],
            "state as of the event: {e}"
        );
        by_card
            .entry(e["id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["event"].as_str().unwrap().to_string());
    }
    assert_eq!(by_card.len(), ids.len());
    assert_eq!(events.len(), ids.len() * 2, "two events a card");
    for id in &ids {
        let m = d.message(id).await;
        let history: Vec<&str> = m["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["event"].as_str().unwrap())
            .filter(|e| ["enqueued", "sent", "cancelled", "failed", "expired"].contains(e))
            .collect();
        let stream: Vec<&str> = by_card[id].iter().map(|e| history_name(e)).collect();
        assert_eq!(stream, history, "{id}: {m}");
        assert_eq!(by_card[id].last().unwrap(), m["state"].as_str().unwrap());
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follower saw every event")
        .unwrap();
    let consecutive: Vec<i64> = (1..=seen.len() as i64).collect();
    assert_eq!(seen, consecutive, "the follower saw 1, 2, 3, … with no gap");
}

async fn follow_carries_a_new_event_within_a_second_and_heartbeats() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    pause(&d).await;
    let mut lines = d
        .client()
        .lines(
            "/v1/events?after=0&follow=true&heartbeat=1",
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .unwrap();
    let id = d.enqueue_ok(&card(1)).await;
    let answered = Instant::now();
    let line = lines.next_line().await.unwrap().unwrap();
    let arrived = answered.elapsed();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            event["seq"].as_i64(),
            event["event"].as_str(),
            event["id"].as_str()
        ),
        (Some(1), Some("queued"), Some(id.as_str()))
    );
    assert!(
        arrived < Duration::from_secs(1),
        "arrived after {arrived:?}"
    );
    // Nothing happens: heartbeats, one a second here (15 s by default).
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "{}");
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The stream goes on after them; an instance filter and a bad query.
    d.post("/v1/instances/main/resume", &Value::Null).await;
    let mut next = lines.next_line().await.unwrap().unwrap();
    while next == "{}" {
        next = lines.next_line().await.unwrap().unwrap();
    }
    let sent: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(
        (sent["seq"].as_i64(), sent["event"].as_str()),
        (Some(2), Some("sent"))
    );
    assert_eq!(
        sent["message"]["idMessage"],
        d.message(&id).await["idMessage"]
    );
    assert_eq!(d.get("/v1/events?after=x").await.0, 400);
    assert_eq!(d.get("/v1/events?follow=yes").await.0, 400);
    assert_eq!(d.get("/v1/events?instance=nope").await.0, 404);
}

async fn an_after_older_than_retention_answers_410_with_the_oldest_kept() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            keep_done: "1s",
            ..Default::default()
        },
    )
    .await;
    pause(&d).await;
    for n in 0..3 {
        let id = d.enqueue_ok(&card(n)).await;
        d.request(ApiRequest::delete(format!("/v1/messages/{id}")))
            .await;
    }
    assert_eq!(d.events_after(0).await.len(), 6);
    // Retention deletes the old events but keeps the newest: its seq goes on. It takes
    // them as each passes `keep_done`, so the first ones may go a moment before the rest.
    eventually(
        Duration::from_secs(15),
        "retention took the old events",
        || async {
            let (status, body) = d.get("/v1/events?after=0").await;
            status == 410 && body["oldest"] == 6
        },
    )
    .await;
    let (status, body) = d.get("/v1/events?after=2").await;
    assert_eq!(status, 410);
    assert_eq!(body["oldest"], 6, "{body}");
    let kept = d.events_after(5).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["seq"], 6);
    assert!(
        kept[0]["message"].is_null(),
        "the card is gone too: {}",
        kept[0]
    );
    d.enqueue_ok(&card(9)).await;
    assert_eq!(d.events_after(6).await[0]["seq"], 7);
    let status = d.get("/v1/status").await.1;
    assert_eq!(status["stream"]["lastSeq"], 7, "{status}");
}

async fn follow_prints_each_event_as_one_json_line() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let first = d.enqueue_ok(&card(1)).await;
    d.wait_state(&first, "sent", Duration::from_secs(10)).await;
    let mut child = d
        .command()
        .args(["follow", "--after", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(4)
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let second = d.enqueue_ok(&card(2)).await;
    d.wait_state(&second, "sent", Duration::from_secs(10)).await;
    let lines = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let seen: Vec<(i64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["seq"].as_i64().unwrap(),
                l["event"].as_str().unwrap(),
                l["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "queued", first.as_str()),
            (2, "sent", first.as_str()),
            (3, "queued", second.as_str()),
            (4, "sent", second.as_str()),
        ]
    );
}

/// A mistyped or repeated parameter of `/v1/events` is refused naming it, rather than
/// streaming from the start; an `after` at the top of the range is no overflow.
#[tokio::test]
async fn the_events_query_refuses_unknown_and_repeated_parameters() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    d.enqueue_ok(&card(0)).await;
    for (query, named) in [
        ("afer=0", "'afer' is not a parameter"),
        ("after=1&after=2", "'after' is given twice"),
        ("after=-1", "'after' must be"),
        ("follow=yes", "'follow' must be true or false"),
    ] {
        let (status, body) = d.get(&format!("/v1/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(named), "{query}: {body}");
    }
    let r = d
        .client()
        .send(ApiRequest::get(format!("/v1/events?after={}", i64::MAX)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body.is_empty());
}
