//! Bulk operations (docs/api.md §11), black-box against the built binary and the
//! sandbox: `POST /v1/messages:cancel` / `:retry` by each filter and their combination,
//! count and `more` past 10,000 cards, retried cards keeping their order, the CLI's
//! `--all`, a card cancelled in bulk never sent from the drain's held head, an id
//! given by its start, and `list` by chat and phone.

mod common;

use std::time::Duration;

use common::{card, eventually, received_names, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::cli::client::ApiRequest;
use serde_json::{json, Value};

crate::on_both_backends!(
    bulk_cancel_by_each_filter_and_their_combination_touches_only_queued_cards,
    a_bulk_call_takes_at_most_10000_cards_and_says_more_and_the_cli_loops,
    the_drain_never_sends_a_card_cancelled_in_bulk_from_its_held_head,
    bulk_retry_puts_failed_and_expired_cards_at_the_tail_in_their_order,
    an_id_is_found_by_its_start_in_any_case_and_an_ambiguous_start_lists_them,
    list_filters_by_chat_id_and_phone,
    bulk_changes_are_events_of_the_stream_one_per_card,
);

const CHAT_A: &str = "11001111111@c.us";
const CHAT_B: &str = "11002222222@c.us";

fn card_to(chat: &str, n: u64) -> Value {
    json!({"chatId": chat, "contact": {"phoneContact": 79_000_000_000u64 + n,
           "firstName": format!("card-{n}")}})
}

/// A loopback address nobody listens on right now.
fn free_loopback_addr() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("addr")
}

async fn pause(d: &TestDaemon, instance: &str) {
    let (status, body) = d
        .post(&format!("/v1/instances/{instance}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn enqueue_to(d: &TestDaemon, instance: &str, body: &Value) -> String {
    let (status, answer) = d
        .post(&format!("/v1/instances/{instance}/sendContact"), body)
        .await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

async fn state_of(d: &TestDaemon, id: &str) -> String {
    d.message(id).await["state"].as_str().unwrap().to_string()
}

async fn bulk_cancel_by_each_filter_and_their_combination_touches_only_queued_cards() {
    let sb = sandbox().await;
    let metrics = free_loopback_addr();
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            more_instances: vec![("second", "1101000002")],
            daemon_extra: format!("metrics_listen = \"{metrics}\""),
            ..Default::default()
        },
    )
    .await;
    let sent = enqueue_to(&d, "main", &card_to(CHAT_A, 0)).await;
    d.wait_state(&sent, "sent", Duration::from_secs(10)).await;
    pause(&d, "main").await;
    pause(&d, "second").await;
    let main_a1 = enqueue_to(&d, "main", &card_to(CHAT_A, 1)).await;
    let main_a2 = enqueue_to(&d, "main", &card_to(CHAT_A, 2)).await;
    let main_b = enqueue_to(&d, "main", &card_to(CHAT_B, 3)).await;
    let second_a = enqueue_to(&d, "second", &card_to(CHAT_A, 4)).await;
    let second_b = enqueue_to(&d, "second", &card_to(CHAT_B, 5)).await;

    // Bad filters change nothing and name what is wrong.
    for (filter, named) in [
        (json!({}), "at least one"),
        (json!({"instance": null}), "at least one"),
        (json!({"bogus": 1}), "'bogus'"),
        (json!({"state": "sent"}), "'state'"),
        (json!({"state": "loud"}), "'state'"),
        (json!({"chatId": 7}), "'chatId'"),
        (json!({"chatId": "11001234567@c.uss"}), "'chatId' must be"),
        (json!({"before": "yesterday"}), "'before'"),
    ] {
        let (status, body) = d.post("/v1/messages:cancel", &filter).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert!(
            body["details"].as_str().unwrap().contains(named),
            "{filter}: {body}"
        );
    }
    let (status, body) = d
        .post("/v1/messages:cancel", &json!({"instance": "nope"}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = d
        .post("/v1/messages:retry", &json!({"state": "queued"}))
        .await;
    assert_eq!(status, 400, "{body}");
    for id in [&main_a1, &main_a2, &main_b, &second_a, &second_b] {
        assert_eq!(state_of(&d, id).await, "queued");
    }

    // instance + chatId together.
    let (status, body) = d
        .post(
            "/v1/messages:cancel",
            &json!({"instance": "main", "chatId": CHAT_A}),
        )
        .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"count": 2, "more": false}))
    );
    assert_eq!(state_of(&d, &main_a1).await, "cancelled");
    assert_eq!(state_of(&d, &main_a2).await, "cancelled");
    assert_eq!(state_of(&d, &main_b).await, "queued");
    assert_eq!(state_of(&d, &second_a).await, "queued");
    // chatId alone: across instances.
    let (_, body) = d
        .post("/v1/messages:cancel", &json!({"chatId": CHAT_B}))
        .await;
    assert_eq!(body, json!({"count": 2, "more": false}));
    assert_eq!(state_of(&d, &main_b).await, "cancelled");
    assert_eq!(state_of(&d, &second_b).await, "cancelled");
    // before: compared with enqueuedAt, strictly.
    let enqueued = d.message(&second_a).await["enqueuedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, body) = d
        .post(
            "/v1/messages:cancel",
            &json!({"instance": "second", "before": enqueued}),
        )
        .await;
    assert_eq!(body, json!({"count": 0, "more": false}));
    let later = chrono::DateTime::parse_from_rfc3339(&enqueued).unwrap()
        + chrono::Duration::milliseconds(1);
    let (_, body) = d
        .post(
            "/v1/messages:cancel",
            &json!({"before": later.to_rfc3339(), "state": "queued"}),
        )
        .await;
    assert_eq!(body, json!({"count": 1, "more": false}));
    assert_eq!(state_of(&d, &second_a).await, "cancelled");
    // The sent card was never touched; each cancelled one has its history line.
    assert_eq!(state_of(&d, &sent).await, "sent");
    let (_, body) = d
        .post("/v1/messages:cancel", &json!({"instance": "main"}))
        .await;
    assert_eq!(body, json!({"count": 0, "more": false}));
    let history = d.message(&main_a1).await["history"].clone();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "cancelled"),
        "{history}"
    );
    // Counts and metrics follow.
    let (_, status) = d.get("/v1/status").await;
    let main = &status["instances"][0];
    assert_eq!(
        (main["name"].as_str(), main["cancelled"].as_i64()),
        (Some("main"), Some(3))
    );
    assert_eq!(main["queued"], 0);
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("contactq_cancelled_total{instance=\"main\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("contactq_cancelled_total{instance=\"second\"} 2"),
        "{text}"
    );
}

/// 10,001 cards on a paused line, in two batches (a batch holds 10,000).
async fn enqueue_10001(d: &TestDaemon) {
    let batch: Vec<Value> = (0..10_000).map(card).collect();
    let (status, body) = d
        .post("/v1/instances/main/sendContact:batch", &json!(batch))
        .await;
    assert_eq!(status, 202, "{body}");
    d.enqueue_ok(&card(10_000)).await;
}

async fn a_bulk_call_takes_at_most_10000_cards_and_says_more_and_the_cli_loops() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    pause(&d, "main").await;
    enqueue_10001(&d).await;
    let (status, body) = d
        .post("/v1/messages:cancel", &json!({"instance": "main"}))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"count": 10_000, "more": true}))
    );
    let (_, body) = d
        .post("/v1/messages:cancel", &json!({"instance": "main"}))
        .await;
    assert_eq!(body, json!({"count": 1, "more": false}));
    assert_eq!(d.status().await["cancelled"], 10_001);
    assert_eq!(d.status().await["queued"], 0);

    // The CLI: --all without a filter is a usage error; with one it loops to the end.
    let out = d.command().args(["cancel", "--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--instance"),
        "{out:?}"
    );
    let out = d
        .command()
        .args(["cancel", "ID", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "an id and --all: {out:?}");
    enqueue_10001(&d).await;
    let out = d
        .command()
        .args(["cancel", "--all", "--state", "queued"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cancelled 10001 messages\n"
    );
    assert_eq!(d.status().await["cancelled"], 20_002);
    assert!(sb.received(ID_INSTANCE).is_empty());
}

async fn the_drain_never_sends_a_card_cancelled_in_bulk_from_its_held_head() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "300ms",
            ..Default::default()
        },
    )
    .await;
    let batch: Vec<Value> = (0..20).map(card).collect();
    let (status, body) = d
        .post("/v1/instances/main/sendContact:batch", &json!(batch))
        .await;
    assert_eq!(status, 202, "{body}");
    let first = body["messages"][0]["id"].as_str().unwrap().to_string();
    // The drain has read the head of the line and sent its first card.
    d.wait_state(&first, "sent", Duration::from_secs(10)).await;
    let (_, answer) = d
        .post("/v1/messages:cancel", &json!({"instance": "main"}))
        .await;
    let cancelled = answer["count"].as_u64().unwrap();
    assert!(cancelled >= 15, "{answer}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = d.all_messages().await;
    let received = received_names(&sb);
    for m in &stored {
        let name = m["contact"]["firstName"].as_str().unwrap();
        match m["state"].as_str().unwrap() {
            "cancelled" => assert!(!received.contains(&name.to_string()), "{name} sent"),
            "sent" => assert!(received.contains(&name.to_string()), "{name}"),
            other => panic!("{name} is {other}"),
        }
    }
    assert_eq!(received.len() as u64 + cancelled, 20, "{received:?}");
}

async fn bulk_retry_puts_failed_and_expired_cards_at_the_tail_in_their_order() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            max_age: "3s",
            ..Default::default()
        },
    )
    .await;
    // card-0 and card-1 fail for good (400), card-2 and card-3 expire on a paused line.
    sb.set_failures(None, 1.0, vec![400]);
    let failed = [d.enqueue_ok(&card(0)).await, d.enqueue_ok(&card(1)).await];
    for id in &failed {
        d.wait_state(id, "failed", Duration::from_secs(10)).await;
    }
    sb.set_failures(None, 0.0, vec![]);
    pause(&d, "main").await;
    let expired = [d.enqueue_ok(&card(2)).await, d.enqueue_ok(&card(3)).await];
    for id in &expired {
        d.wait_state(id, "expired", Duration::from_secs(10)).await;
    }
    // card-4 is still queued: the retried cards go behind it.
    let waiting = d.enqueue_ok(&card(4)).await;
    let out = d
        .command()
        .args(["retry", "--all", "--instance", "main"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "re-queued 4 messages\n"
    );
    let m = d.message(&failed[0]).await;
    assert_eq!(m["state"], "queued");
    assert!(m["requeuedAt"].is_string(), "{m}");
    assert!(
        m["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "retried"),
        "{m}"
    );
    let (status, _) = d.post("/v1/instances/main/resume", &json!({})).await;
    assert_eq!(status, 200);
    d.wait_state(&expired[1], "sent", Duration::from_secs(10))
        .await;
    assert_eq!(state_of(&d, &waiting).await, "sent");
    assert_eq!(
        received_names(&sb),
        ["card-4", "card-0", "card-1", "card-2", "card-3"]
    );
    // Nothing left to retry.
    let (_, body) = d
        .post("/v1/messages:retry", &json!({"instance": "main"}))
        .await;
    assert_eq!(body, json!({"count": 0, "more": false}));
}

async fn an_id_is_found_by_its_start_in_any_case_and_an_ambiguous_start_lists_them() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    pause(&d, "main").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    // The shortest start of ids[0] that no other id shares.
    let unique = (1..=26)
        .map(|len| &ids[0][..len])
        .find(|p| ids[1..].iter().all(|other| !other.starts_with(p)))
        .unwrap()
        .to_ascii_lowercase();
    let out = d
        .command()
        .args(["show", &unique, "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], ids[0].as_str());
    // A full id in lower case, through the CLI and the API.
    let out = d
        .command()
        .args(["show", &ids[1].to_ascii_lowercase(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (status, _) = d
        .request(ApiRequest::delete(format!(
            "/v1/messages/{}",
            ids[2].to_ascii_lowercase()
        )))
        .await;
    assert_eq!(status, 200);
    // Ambiguous: every id starts with the same time; the candidates are listed.
    let out = d.command().args(["cancel", &ids[0][..4]]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for id in &ids {
        assert!(err.contains(id.as_str()), "{err}");
    }
    assert_eq!(state_of(&d, &ids[0]).await, "queued");
    // None: exit 1, as for an unknown id.
    let out = d.command().args(["retry", "7ZZZZ"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such message"));
    // A unique start cancels.
    let out = d.command().args(["cancel", &unique]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(state_of(&d, &ids[0]).await, "cancelled");
    // The API: the prefix in any case, and a bad one named.
    let (status, body) = d
        .get(&format!(
            "/v1/messages?idPrefix={}",
            &ids[1][..25].to_ascii_lowercase()
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == ids[1].as_str()),
        "{body}"
    );
    let (status, body) = d.get("/v1/messages?idPrefix=01J!").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["details"].as_str().unwrap().contains("'idPrefix'"),
        "{body}"
    );
}

async fn list_filters_by_chat_id_and_phone() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    pause(&d, "main").await;
    let a1 = d.enqueue_ok(&card_to(CHAT_A, 1)).await;
    let a2 = d.enqueue_ok(&card_to(CHAT_A, 2)).await;
    let b3 = d.enqueue_ok(&card_to(CHAT_B, 3)).await;
    let ids = |body: &Value| -> Vec<String> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = d
        .get(&format!(
            "/v1/messages?chatId={}",
            CHAT_A.replace('@', "%40")
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), [a2.clone(), a1.clone()], "newest first");
    let (_, body) = d.get("/v1/messages?phone=79000000003").await;
    assert_eq!(ids(&body), vec![b3.clone()]);
    let (_, body) = d
        .get(&format!(
            "/v1/messages?chatId={}&phone=79000000003",
            CHAT_A.replace('@', "%40")
        ))
        .await;
    assert!(ids(&body).is_empty(), "{body}");
    let (status, body) = d.get("/v1/messages?chatId=11001234567").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["details"]
            .as_str()
            .unwrap()
            .contains("'chatId' must be"),
        "{body}"
    );
    let (status, body) = d.get("/v1/messages?phone=79x").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["details"].as_str().unwrap().contains("'phone'"),
        "{body}"
    );
    // The CLI.
    let out = d
        .command()
        .args(["list", "--chat-id", CHAT_B, "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&listed), vec![b3]);
    let out = d
        .command()
        .args(["list", "--phone", "79000000001", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&listed), [a1]);
    eventually(
        Duration::from_secs(1),
        "nothing sent on a paused line",
        || async { sb.received(ID_INSTANCE).is_empty() },
    )
    .await;
}

/// Every card changed in bulk is one event of the stream, in the same transaction: a
/// bulk cancel writes `cancelled` for each card it took, a bulk retry `queued` again.
async fn bulk_changes_are_events_of_the_stream_one_per_card() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    // Two cards fail for good (400); then three wait on a paused line.
    sb.set_failures(None, 1.0, vec![400]);
    let failed = [d.enqueue_ok(&card(0)).await, d.enqueue_ok(&card(1)).await];
    for id in &failed {
        d.wait_state(id, "failed", Duration::from_secs(10)).await;
    }
    pause(&d, "main").await;
    let mut waiting = Vec::new();
    for n in 2..5 {
        waiting.push(d.enqueue_ok(&card(n)).await);
    }
    let (status, body) = d
        .post("/v1/messages:cancel", &json!({"instance": "main"}))
        .await;
    assert_eq!((status, &body), (200, &json!({"count": 3, "more": false})));
    let (status, body) = d
        .post("/v1/messages:retry", &json!({"state": "failed"}))
        .await;
    assert_eq!((status, &body), (200, &json!({"count": 2, "more": false})));

    let events = d.events_after(0).await;
    let of_card = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["id"] == id)
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    };
    for id in &waiting {
        assert_eq!(of_card(id), ["queued", "cancelled"], "{events:?}");
    }
    for id in &failed {
        assert_eq!(of_card(id), ["queued", "failed", "queued"], "{events:?}");
    }
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
}
