//! The client against a tiny stand-in daemon (axum on a Unix socket in a tempdir):
//! what the user sees, and the exit code, for each kind of answer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::args::parse_from;
use super::error::CliError;
use super::{execute, Cli};

/// What the stand-in daemon saw: (path with query, Idempotency-Key, body).
type Seen = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

fn message(id: &str) -> Value {
    json!({"id":id, "instance":"main", "state":"queued", "chatId":"11001234567@c.us",
           "contact":{"phoneContact":79001234568u64,"firstName":"Artem"},
           "quotedMessageId":null, "idempotencyKey":null,
           "enqueuedAt":"2026-11-24T10:00:00.000Z", "expiresAt":"2026-11-25T10:00:00.000Z",
           "attempts":0, "lastError":null, "idMessage":null, "sentAt":null, "position":1})
}

async fn enqueue(
    State(seen): State<Seen>,
    Path(op): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let (instance, method) = op;
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_string());
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push((
        format!("/v1/instances/{instance}/{method}"),
        key,
        value.clone(),
    ));
    if instance != "main" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error":"unknown instance","details":instance})),
        );
    }
    if value["contact"]["phoneContact"].is_string() {
        let details = "'contact.phoneContact' must be a number";
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error":"validation failed","details":details})),
        );
    }
    match method.as_str() {
        "sendContact" => (
            StatusCode::ACCEPTED,
            Json(message("01JD3W0000000000000000000A")),
        ),
        _ => (
            StatusCode::ACCEPTED,
            Json(
                json!({"messages":[message("01JD3W00000000000000000B01"), message("01JD3W00000000000000000B02")]}),
            ),
        ),
    }
}

/// Starts the stand-in daemon; the tempdir must live as long as the test.
async fn stand_in(instances: &[&str]) -> (tempfile::TempDir, PathBuf, Seen) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("contactq.sock");
    let seen = Seen::default();
    let status = json!({"version":"0.1.0","uptimeSeconds":5.0,"instances":instances.iter().map(|name| json!({
        "name":name,"authorization":"authorized","queued":0,"sending":0,"sent":0,"failed":0,"expired":0,
        "cancelled":0,"oldestQueuedAgeSeconds":null,"sendDelayMs":5000,"nextSendAt":null,"paused":false,"lastError":null
    })).collect::<Vec<_>>()});
    let seen_list = seen.clone();
    let app = Router::new()
        .route("/v1/instances/{instance}/{method}", post(enqueue))
        .route("/v1/status", get(move || async move { Json(status) }))
        .route(
            "/v1/messages",
            get(move |Query(q): Query<Vec<(String, String)>>| async move {
                seen_list
                    .lock()
                    .unwrap()
                    .push((format!("{q:?}"), None, Value::Null));
                Json(json!({"messages":[], "next":null}))
            }),
        )
        .route(
            "/v1/messages/{id}",
            get(|Path(id): Path<String>| async move {
                match id.as_str() {
                    "01JD3W0000000000000000000A" => (StatusCode::OK, Json(message(&id))),
                    "busy" => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error":"database unavailable","details":"disk full"})),
                    ),
                    _ => (
                        StatusCode::NOT_FOUND,
                        Json(json!({"error":"not found","details":id})),
                    ),
                }
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (dir, socket, seen)
}

fn cli(socket: &std::path::Path, args: &[&str]) -> Cli {
    let socket = socket.to_str().unwrap();
    parse_from(["contactq", "--socket", socket].iter().chain(args)).unwrap()
}

async fn run(socket: &std::path::Path, args: &[&str]) -> (Result<(), CliError>, String) {
    let mut out = Vec::new();
    let result = execute(&cli(socket, args), &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn send_with_flags_prints_the_new_id_and_json_prints_the_answer() {
    let (_dir, socket, seen) = stand_in(&["main"]).await;
    let flags = [
        "send",
        "--instance",
        "main",
        "--chat-id",
        "11001234567@c.us",
        "--phone",
        "79001234568",
        "--first-name",
        "Artem",
        "--idempotency-key",
        "k1",
    ];
    let (result, out) = run(&socket, &flags).await;
    result.unwrap();
    assert_eq!(out, "01JD3W0000000000000000000A\n");
    let (path, key, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/v1/instances/main/sendContact");
    assert_eq!(key.as_deref(), Some("k1"));
    assert_eq!(
        body,
        json!({"chatId":"11001234567@c.us","contact":{"phoneContact":79001234568u64,"firstName":"Artem"}})
    );

    let (result, out) = run(&socket, &[&flags[..], &["--json"]].concat()).await;
    result.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        message("01JD3W0000000000000000000A")
    );
}

#[tokio::test]
async fn a_rejected_card_exits_65_with_the_daemons_words() {
    let (_dir, socket, _) = stand_in(&["main"]).await;
    let (result, _) = run(
        &socket,
        &["send", "--chat-id", "1@c.us", "--phone", "+7900"],
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 65);
    assert_eq!(
        err.to_string(),
        "validation failed: 'contact.phoneContact' must be a number"
    );
    let (result, _) = run(
        &socket,
        &[
            "send",
            "--instance",
            "nope",
            "--chat-id",
            "1@c.us",
            "--phone",
            "1",
        ],
    )
    .await;
    assert_eq!(result.unwrap_err().exit_code(), 65);
}

#[tokio::test]
async fn send_without_instance_needs_exactly_one() {
    let (_dir, socket, seen) = stand_in(&["main"]).await;
    let (result, _) = run(
        &socket,
        &[
            "send",
            "--chat-id",
            "1@c.us",
            "--phone",
            "79001234568",
            "--company",
            "G",
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(seen.lock().unwrap()[0].0, "/v1/instances/main/sendContact");

    let (_dir2, socket, _) = stand_in(&["main", "backup"]).await;
    let (result, _) = run(
        &socket,
        &["send", "--chat-id", "1@c.us", "--phone", "79001234568"],
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("main, backup"), "{err}");
}

#[tokio::test]
async fn an_ndjson_file_goes_to_the_batch_endpoint() {
    let (dir, socket, seen) = stand_in(&["main"]).await;
    let file = dir.path().join("cards.ndjson");
    let cards = [1, 2].map(|n| {
        json!({"chatId": format!("{n}@c.us"),
               "contact": {"phoneContact": 79001234568u64, "firstName": "A"}})
    });
    std::fs::write(&file, format!("{}\n{}\n", cards[0], cards[1])).unwrap();
    let (result, out) = run(&socket, &["send", "-f", file.to_str().unwrap()]).await;
    result.unwrap();
    assert_eq!(
        out,
        "01JD3W00000000000000000B01\n01JD3W00000000000000000B02\n"
    );
    let (path, _, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/v1/instances/main/sendContact:batch");
    assert_eq!(body, json!(cards));
}

#[tokio::test]
async fn show_of_an_unknown_id_exits_1_and_503_exits_75() {
    let (_dir, socket, _) = stand_in(&["main"]).await;
    let (result, out) = run(&socket, &["show", "01JD3W0000000000000000000A"]).await;
    result.unwrap();
    assert!(
        out.starts_with("id:              01JD3W0000000000000000000A\n"),
        "{out}"
    );
    let (result, _) = run(&socket, &["show", "01UNKNOWN"]).await;
    let err = result.unwrap_err();
    assert_eq!(
        (err.exit_code(), err.to_string()),
        (1, "no such message: 01UNKNOWN".to_string())
    );
    let (result, _) = run(&socket, &["show", "busy"]).await;
    assert_eq!(result.unwrap_err().exit_code(), 75);
}

#[tokio::test]
async fn list_percent_encodes_its_filters() {
    let (_dir, socket, seen) = stand_in(&["main"]).await;
    let (result, out) = run(
        &socket,
        &[
            "list",
            "--instance",
            "a b&c",
            "--state",
            "sent",
            "--limit",
            "3",
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(out, "no messages\n");
    let query = seen.lock().unwrap()[0].0.clone();
    assert_eq!(
        query,
        r#"[("instance", "a b&c"), ("state", "sent"), ("limit", "3")]"#
    );
}

#[tokio::test]
async fn a_missing_socket_exits_69_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gone.sock");
    let (result, _) = run(&socket, &["status"]).await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 69);
    assert!(err.to_string().contains(socket.to_str().unwrap()), "{err}");
    assert!(err.to_string().contains("contactq daemon"), "{err}");
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    // No `--socket`: these commands do not talk to the daemon.
    let offline = |args: &[&str]| parse_from(["contactq"].iter().chain(args)).unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let mut out = Vec::new();
        execute(&offline(&["completions", shell]), &mut out)
            .await
            .unwrap();
        assert!(
            String::from_utf8(out).unwrap().contains("contactq"),
            "{shell}"
        );
    }
    let mut out = Vec::new();
    execute(&offline(&["manpage"]), &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(".TH"), "{out}");
}
