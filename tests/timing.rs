//! Timing (docs/api.md §11), black-box against the built binary and the sandbox:
//! `notBefore` (a card due later neither goes before it nor holds the cards behind
//! it; `position`, `eta`, expiry, idempotency and the 30-day limit), `send --at`, and
//! quiet hours (a window around now sends nothing and says so; config mistakes exit
//! 78 naming the key).

mod common;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use common::{card, received_names, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::cli::client::ApiRequest;
use serde_json::{json, Value};

crate::on_both_backends!(
    a_card_due_later_does_not_go_before_it_and_holds_nobody_behind_it,
    not_before_is_checked_compared_by_the_idempotency_key_and_taken_by_send_at,
    inside_quiet_hours_nothing_is_sent_and_waiting_for_says_until_when,
);

fn ms(text: &Value) -> i64 {
    DateTime::parse_from_rfc3339(text.as_str().unwrap_or_else(|| panic!("{text}")))
        .unwrap()
        .timestamp_millis()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `?notBefore=` for a time, escaped for a query string.
fn not_before_query(at: &str) -> String {
    format!("?notBefore={}", at.replace('+', "%2B").replace(':', "%3A"))
}

async fn a_card_due_later_does_not_go_before_it_and_holds_nobody_behind_it() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            max_age: "1h",
            ..Default::default()
        },
    )
    .await;
    let due = Utc::now() + chrono::Duration::seconds(2);
    let path = format!(
        "/v1/instances/main/sendContact{}",
        not_before_query(&rfc3339(due))
    );
    let (status, later) = d.post(&path, &card(0)).await;
    assert_eq!(status, 202, "{later}");
    assert_eq!(later["state"], "queued");
    assert_eq!(ms(&later["notBefore"]), due.timestamp_millis());
    assert!(later.get("position").is_none(), "not in line yet: {later}");
    assert!(
        later["waitingFor"]
            .as_str()
            .unwrap()
            .starts_with("notBefore "),
        "{later}"
    );
    assert!(ms(&later["eta"]) >= due.timestamp_millis(), "{later}");
    // Its expiry counts from notBefore.
    assert_eq!(
        ms(&later["expiresAt"]),
        due.timestamp_millis() + 3_600_000,
        "{later}"
    );
    let later_id = later["id"].as_str().unwrap().to_string();
    // The cards behind it go first; positions count only cards already due (one
    // batch, so the drain cannot take card-1 before card-2's position is counted).
    let (status, behind) = d
        .post(
            "/v1/instances/main/sendContact:batch",
            &json!([card(1), card(2)]),
        )
        .await;
    assert_eq!(status, 202, "{behind}");
    let (one, two) = (&behind["messages"][0], &behind["messages"][1]);
    assert_eq!(one["position"], 1, "{one}");
    assert_eq!(two["position"], 2, "{two}");
    let two_id = two["id"].as_str().unwrap();
    d.wait_state(two_id, "sent", Duration::from_secs(5)).await;
    assert!(
        Utc::now() < due,
        "the cards behind it went out before its notBefore"
    );
    let m = d.message(&later_id).await;
    assert_eq!(m["state"], "queued", "{m}");
    assert_eq!(d.status().await["scheduled"], 1);
    // It goes once due (the drain wakes for it rather than at its next poll).
    let sent = d
        .wait_state(&later_id, "sent", Duration::from_secs(10))
        .await;
    let sent_at = ms(&sent["sentAt"]);
    assert!(sent_at >= due.timestamp_millis(), "{sent}");
    assert!(
        sent_at < due.timestamp_millis() + 5_000,
        "woke long after notBefore: {sent}"
    );
    assert!(
        sent["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["event"] == "due"),
        "{sent}"
    );
    assert_eq!(received_names(&sb), ["card-1", "card-2", "card-0"]);
    assert_eq!(d.status().await["scheduled"], 0);
}

async fn not_before_is_checked_compared_by_the_idempotency_key_and_taken_by_send_at() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let (status, _) = d.post("/v1/instances/main/pause", &json!({})).await;
    assert_eq!(status, 200);
    let in_an_hour = rfc3339(Utc::now() + chrono::Duration::hours(1));
    let in_two_hours = rfc3339(Utc::now() + chrono::Duration::hours(2));
    let keyed = |at: &str| {
        ApiRequest::post(
            format!("/v1/instances/main/sendContact{}", not_before_query(at)),
            Some(card(1).to_string().into_bytes()),
        )
        .with_idempotency_key(Some("K-1".into()))
    };
    let (status, first) = d.request(keyed(&in_an_hour)).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = d.request(keyed(&in_an_hour)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (status, other) = d.request(keyed(&in_two_hours)).await;
    assert_eq!(status, 409, "another notBefore is another request: {other}");
    let plain = ApiRequest::post(
        "/v1/instances/main/sendContact",
        Some(card(1).to_string().into_bytes()),
    )
    .with_idempotency_key(Some("K-1".into()));
    assert_eq!(d.request(plain).await.0, 409, "no notBefore either");

    // At most 30 days ahead, an RFC 3339 time, and the only query parameter.
    let too_far = rfc3339(Utc::now() + chrono::Duration::days(31));
    for query in [
        not_before_query(&too_far),
        "?notBefore=tomorrow".to_string(),
        "?when=now".to_string(),
        format!(
            "{}&notBefore={}",
            not_before_query(&in_an_hour),
            &not_before_query(&in_two_hours)["?notBefore=".len()..]
        ),
    ] {
        for endpoint in ["sendContact", "sendContact:batch"] {
            let body = if endpoint == "sendContact" {
                card(2)
            } else {
                json!([card(2)])
            };
            let (status, answer) = d
                .post(&format!("/v1/instances/main/{endpoint}{query}"), &body)
                .await;
            assert_eq!(status, 400, "{endpoint}{query}: {answer}");
            let details = answer["details"].as_str().unwrap();
            assert!(
                details.contains("'notBefore'") || details.contains("'when'"),
                "{answer}"
            );
        }
    }
    assert_eq!(
        d.all_messages().await.len(),
        1,
        "nothing stored by a refusal"
    );
    // In the past: due at once, first in line.
    let (status, past) = d
        .post(
            &format!(
                "/v1/instances/main/sendContact{}",
                not_before_query("2020-01-01T00:00:00Z")
            ),
            &card(3),
        )
        .await;
    assert_eq!(status, 202, "{past}");
    assert_eq!(past["position"], 1, "{past}");
    // A batch: every card waits.
    let (status, batch) = d
        .post(
            &format!(
                "/v1/instances/main/sendContact:batch{}",
                not_before_query(&in_an_hour)
            ),
            &json!([card(4), card(5)]),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    for m in batch["messages"].as_array().unwrap() {
        assert!(
            m["notBefore"].is_string() && m.get("position").is_none(),
            "{m}"
        );
    }
    // `send --at`.
    let out = d
        .command()
        .args([
            "send",
            "--chat-id",
            "11001234567@c.us",
            "--phone",
            "79001234568",
            "--first-name",
            "At",
            "--at",
            &in_two_hours,
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ms(&sent["notBefore"]), ms(&json!(in_two_hours)), "{sent}");
    let out = d
        .command()
        .args([
            "send",
            "--chat-id",
            "11001234567@c.us",
            "--phone",
            "79001234568",
            "--first-name",
            "At",
            "--at",
            "soon",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notBefore"),
        "{out:?}"
    );
    assert_eq!(d.status().await["scheduled"], 4);
}

/// A quiet-hours window around now, in UTC: from an hour ago to an hour ahead (on a
/// whole minute), so the test never depends on the hour it runs.
fn window_around_now() -> (String, DateTime<Utc>) {
    let now = Utc::now();
    let start = now - chrono::Duration::hours(1);
    let end = (now + chrono::Duration::hours(1))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    (
        format!("{}-{}", start.format("%H:%M"), end.format("%H:%M")),
        end,
    )
}

async fn inside_quiet_hours_nothing_is_sent_and_waiting_for_says_until_when() {
    let sb = sandbox().await;
    let (window, end) = window_around_now();
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            instance_extra: format!("quiet_hours = {window:?}\ntimezone = \"UTC\"\n"),
            ..Default::default()
        },
    )
    .await;
    let (status, answer) = d.enqueue(&card(0)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    assert!(
        answer["waitingFor"]
            .as_str()
            .unwrap()
            .starts_with("quiet hours"),
        "{answer}"
    );
    assert_eq!(ms(&answer["eta"]), end.timestamp_millis(), "{answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sb.received(ID_INSTANCE).is_empty(), "sent in quiet hours");
    let m = d.message(&id).await;
    assert_eq!(m["state"], "queued", "{m}");
    let waiting = m["waitingFor"].as_str().unwrap();
    assert!(
        waiting.starts_with(&format!("quiet hours ({window} UTC) until ")),
        "{m}"
    );
    assert_eq!(ms(&m["eta"]), end.timestamp_millis(), "{m}");
    let status = d.status().await;
    assert_eq!(status["quietHours"], format!("{window} UTC"));
    assert!(
        status["held"].as_str().unwrap().starts_with("quiet hours"),
        "{status}"
    );
    assert_eq!(
        ms(&status["nextSendAt"]),
        end.timestamp_millis(),
        "{status}"
    );
    let out = d.command().arg("status").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("quiet hours"),
        "{out:?}"
    );
}

#[tokio::test]
async fn quiet_hours_mistakes_stop_the_daemon_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("quiet_hours = \"22:00-08:00\"\n", "instances.main.timezone"),
        (
            "quiet_hours = \"22:00-25:00\"\ntimezone = \"UTC\"\n",
            "instances.main.quiet_hours",
        ),
        (
            "quiet_hours = \"22:00-22:00\"\ntimezone = \"UTC\"\n",
            "instances.main.quiet_hours",
        ),
        (
            "quiet_hours = \"22:00-08:00\"\ntimezone = \"Mars/Olympus\"\n",
            "instances.main.timezone",
        ),
        ("timezone = \"Europe/Nowhere\"\n", "instances.main.timezone"),
    ] {
        let config = dir.path().join("contactq.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\ndatabase = {:?}\n[instances.main]\nid_instance = \"1101000001\"\n\
                 api_token = \"tok3n-SECRET-4242\"\n{extra}",
                dir.path().join("queue.db")
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactq"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env_remove("CONTACTQ_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{extra}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{extra}: {err}");
    }
}
