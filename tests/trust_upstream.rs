//! Not trusting the API, black-box: a fresh authorization before every send, `flush`,
//! 401/403 said as what they are, the chats quota holding one chat, redirects never
//! followed, `Retry-After` capped, and answers read with a cap.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{card, eventually, received_names, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::cli::client::ApiRequest;
use contactq::sandbox::{KnobPatch, ScriptStep};
use serde_json::{json, Value};

const HELD_CHAT: &str = "11009999999@c.us";
const OPEN_CHAT: &str = "11001234567@c.us";

fn card_to(n: u64, chat: &str) -> Value {
    let mut c = card(n);
    c["chatId"] = json!(chat);
    c
}

fn waiting_for(m: &Value) -> String {
    m["waitingFor"].as_str().unwrap_or_default().to_string()
}

/// While a line drains, the instance turns `state`: the sends stop within
/// `state_poll`, the rest stays queued and says why.
async fn sends_stop_within_state_poll_when_the_instance_turns(state: &str) {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "100ms",
            state_poll: "1s",
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..80 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    eventually(Duration::from_secs(10), "a few cards sent", || async {
        sb.received(ID_INSTANCE).len() >= 5
    })
    .await;
    sb.set_state(Some(ID_INSTANCE), state);
    let at_flip = sb.received(ID_INSTANCE).len();
    // Sends stop within state_poll (1 s, 10 cards at 100 ms) plus the API's
    // one-call-per-second gap (1.1 s) and one card in flight: at most 13. Without the
    // fresh-authorization rule the 2.5 s would carry about 25.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let settled = sb.received(ID_INSTANCE).len();
    assert!(
        settled - at_flip <= 13,
        "{} sends after the instance turned {state}",
        settled - at_flip
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sb.received(ID_INSTANCE).len(),
        settled,
        "sends went on while {state}"
    );
    let last = d.message(ids.last().unwrap()).await;
    assert_eq!(last["state"], "queued", "{last}");
    assert!(
        waiting_for(&last).starts_with(&format!("instance {state} since ")),
        "{last}"
    );
    assert_eq!(d.status().await["authorization"], state);
    // Authorized again: the line goes on by itself within state_poll.
    sb.set_state(Some(ID_INSTANCE), "authorized");
    d.wait_state(ids.last().unwrap(), "sent", Duration::from_secs(20))
        .await;
    assert_eq!(sb.received(ID_INSTANCE).len(), 80, "each card once");
}

#[tokio::test]
async fn sends_stop_within_state_poll_when_the_instance_is_blocked_mid_drain() {
    sends_stop_within_state_poll_when_the_instance_turns("blocked").await;
}

#[tokio::test]
async fn sends_stop_within_state_poll_on_a_yellow_card() {
    sends_stop_within_state_poll_when_the_instance_turns("yellowCard").await;
}

#[tokio::test]
async fn sends_stop_within_state_poll_when_the_instance_is_suspended() {
    sends_stop_within_state_poll_when_the_instance_turns("suspended").await;
}

#[tokio::test]
async fn a_line_idle_longer_than_state_poll_asks_the_state_before_its_next_send() {
    let sb = sandbox().await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            state_poll: "1s",
            ..Default::default()
        },
    )
    .await;
    let first = d.enqueue_ok(&card(1)).await;
    d.wait_state(&first, "sent", Duration::from_secs(10)).await;
    let asked = sb.request_count(ID_INSTANCE, "getStateInstance");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sb.set_state(Some(ID_INSTANCE), "blocked");
    let second = d.enqueue_ok(&card(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received_names(&sb),
        ["card-1"],
        "sent into a blocked instance"
    );
    assert!(sb.request_count(ID_INSTANCE, "getStateInstance") > asked);
    let m = d.message(&second).await;
    assert!(waiting_for(&m).starts_with("instance blocked since"), "{m}");
}

#[tokio::test]
async fn flush_asks_the_state_now_so_a_reauthorized_instance_drains_at_once() {
    let sb = sandbox().await;
    sb.set_state(Some(ID_INSTANCE), "notAuthorized");
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            state_poll: "1h",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(5), "first state call", || async {
        sb.request_count(ID_INSTANCE, "getStateInstance") >= 1
    })
    .await;
    sb.set_state(Some(ID_INSTANCE), "authorized");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(d.message(&id).await["state"], "queued", "state_poll is 1 h");
    let out = d.command().args(["flush", "main"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("flushed main"));
    d.wait_state(&id, "sent", Duration::from_secs(4)).await;
}

#[tokio::test]
async fn flush_ends_a_back_off_at_once() {
    let sb = sandbox().await;
    // A 404 is a temporary failure: back-off of retry_initial (an hour here).
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 404,
            ..ScriptStep::default()
        }],
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            retry_initial: "1h",
            retry_max: "1h",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(5), "the 404", || async {
        sb.request_count(ID_INSTANCE, "sendContact") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = d.message(&id).await;
    assert!(waiting_for(&m).starts_with("back-off after 404"), "{m}");
    let (status, body) = d
        .request(ApiRequest::post("/v1/instances/main/flush", None))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"instance": "main", "flushed": true}));
    d.wait_state(&id, "sent", Duration::from_secs(4)).await;
}

#[tokio::test]
async fn flush_of_an_unknown_instance_is_404_and_exit_65() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let (status, body) = d
        .request(ApiRequest::post("/v1/instances/nope/flush", None))
        .await;
    assert_eq!(status, 404, "{body}");
    let out = d.command().args(["flush", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
}

async fn refused_shows_as(status: u16, text: &str) {
    let sb = sandbox().await;
    sb.patch(
        Some(ID_INSTANCE),
        KnobPatch {
            refuse_status: Some(status),
            ..KnobPatch::default()
        },
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(5), "the refusal in status", || async {
        d.status().await["lastError"] == text
    })
    .await;
    let m = d.message(&id).await;
    assert_eq!(m["state"], "queued");
    assert_eq!(waiting_for(&m), text);
    let out = d.command().arg("status").output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("connection error"), "{shown}");
    // Fixed: the line drains by itself at the next state call.
    sb.patch(
        Some(ID_INSTANCE),
        KnobPatch {
            refuse_status: Some(0),
            ..KnobPatch::default()
        },
    );
    d.wait_state(&id, "sent", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_refused_token_says_check_the_api_token() {
    refused_shows_as(
        401,
        "the API refused the token (401): check instances.main.api_token",
    )
    .await;
}

#[tokio::test]
async fn a_refused_instance_id_says_check_the_id_instance() {
    refused_shows_as(
        403,
        "the API refused the instance id (403): check instances.main.id_instance",
    )
    .await;
}

#[tokio::test]
async fn a_401_to_a_send_is_recorded_as_a_refused_token() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 401,
            ..ScriptStep::default()
        }],
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    let (_, shown) = d.get(&format!("/v1/messages/{id}")).await;
    let history = shown.to_string();
    assert!(
        history.contains("the API refused the token (401): check instances.main.api_token"),
        "{history}"
    );
}

#[tokio::test]
async fn the_chats_quota_holds_only_the_refused_chat_across_a_restart_until_resume() {
    let sb = sandbox().await;
    sb.patch(
        Some(ID_INSTANCE),
        KnobPatch {
            allowed_chats: Some(vec![OPEN_CHAT.to_string()]),
            ..KnobPatch::default()
        },
    );
    let mut d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let held_1 = d.enqueue_ok(&card_to(1, HELD_CHAT)).await;
    let open_2 = d.enqueue_ok(&card_to(2, OPEN_CHAT)).await;
    let held_3 = d.enqueue_ok(&card_to(3, HELD_CHAT)).await;
    let open_4 = d.enqueue_ok(&card_to(4, OPEN_CHAT)).await;
    d.wait_state(&open_4, "sent", Duration::from_secs(10)).await;
    d.wait_state(&open_2, "sent", Duration::from_secs(1)).await;
    assert_eq!(received_names(&sb), ["card-2", "card-4"]);
    // One refused request for the held chat, not one per card.
    assert_eq!(sb.request_count(ID_INSTANCE, "sendContact"), 3);
    for id in [&held_1, &held_3] {
        let m = d.message(id).await;
        assert_eq!(m["state"], "queued", "{m}");
        let why = waiting_for(&m);
        assert!(
            why.starts_with(&format!(
                "chat {HELD_CHAT} over the monthly chats quota (466) until "
            )),
            "{m}"
        );
        assert_eq!(m["eta"], Value::Null, "{m}");
    }
    // Other chats go on while the hold lasts.
    let open_5 = d.enqueue_ok(&card_to(5, OPEN_CHAT)).await;
    d.wait_state(&open_5, "sent", Duration::from_secs(10)).await;
    // The hold survives a restart: nothing more is sent to the held chat.
    d.restart().await;
    let open_6 = d.enqueue_ok(&card_to(6, OPEN_CHAT)).await;
    d.wait_state(&open_6, "sent", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sb.request_count(ID_INSTANCE, "sendContact"), 5);
    assert!(waiting_for(&d.message(&held_1).await).contains("chats quota (466)"));
    // The quota lifted and `resume`: the held cards go, in their order.
    sb.patch(
        Some(ID_INSTANCE),
        KnobPatch {
            allowed_chats: Some(vec![]),
            ..KnobPatch::default()
        },
    );
    let out = d.command().args(["resume", "main"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    d.wait_state(&held_3, "sent", Duration::from_secs(10)).await;
    d.wait_state(&held_1, "sent", Duration::from_secs(1)).await;
    assert_eq!(
        received_names(&sb),
        ["card-2", "card-4", "card-5", "card-6", "card-1", "card-3"]
    );
}

#[tokio::test]
async fn the_method_quota_holds_the_whole_line() {
    let sb = sandbox().await;
    sb.patch(
        Some(ID_INSTANCE),
        KnobPatch {
            quota_methods: Some(vec!["sendContact".to_string()]),
            ..KnobPatch::default()
        },
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let first = d.enqueue_ok(&card_to(1, HELD_CHAT)).await;
    let second = d.enqueue_ok(&card_to(2, OPEN_CHAT)).await;
    eventually(Duration::from_secs(5), "the line held", || async {
        d.status().await["held"]
            .as_str()
            .is_some_and(|h| h.starts_with("quota exceeded (466)"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sb.request_count(ID_INSTANCE, "sendContact"), 1);
    for id in [&first, &second] {
        let m = d.message(id).await;
        assert_eq!(m["state"], "queued");
        assert!(waiting_for(&m).starts_with("quota exceeded (466)"), "{m}");
    }
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let sb = sandbox().await;
    let elsewhere = sandbox().await;
    sb.patch(
        Some(ID_INSTANCE),
        KnobPatch {
            redirect_to: Some(elsewhere.url()),
            ..KnobPatch::default()
        },
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            retry_initial: "200ms",
            retry_max: "400ms",
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    eventually(Duration::from_secs(10), "a few 307s", || async {
        sb.request_count(ID_INSTANCE, "sendContact") >= 3
    })
    .await;
    assert_eq!(elsewhere.request_count(ID_INSTANCE, "sendContact"), 0);
    assert!(elsewhere.received(ID_INSTANCE).is_empty());
    let m = d.message(&id).await;
    assert_eq!(m["state"], "queued", "{m}");
    assert!(
        m["lastError"]
            .as_str()
            .unwrap_or_default()
            .starts_with("307"),
        "{m}"
    );
    assert!(waiting_for(&m).starts_with("back-off after 307"), "{m}");
}

#[tokio::test]
async fn a_retry_after_longer_than_retry_max_is_cut_to_retry_max() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 429,
            retry_after: Some(99_999_999_999),
            ..ScriptStep::default()
        }],
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            retry_initial: "1s",
            retry_max: "1s",
            ..Default::default()
        },
    )
    .await;
    let started = Instant::now();
    let id = d.enqueue_ok(&card(1)).await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(6)).await;
    assert_eq!(sent["attempts"], 2);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// A loopback "API" that answers `getStateInstance` with `authorized`, the journal
/// and queue with `[]`, and `sendContact` with a 200 whose body never ends (600 MB
/// without a Content-Length, generated as it is written, for at most 20 s). Counts the
/// body bytes written.
fn endless_api() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                if stream.read_exact(&mut body).is_err() {
                    return;
                }
                let answer = |s: &mut std::net::TcpStream, body: &str| {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                };
                if head.contains("/getStateInstance/") {
                    answer(&mut stream, r#"{"stateInstance":"authorized"}"#);
                } else if head.contains("/sendContact/") {
                    let total: usize = 600 * 1024 * 1024;
                    // No Content-Length: the body runs until the connection closes,
                    // so only a cap enforced while streaming stops it.
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Connection: close\r\n\r\n"
                    );
                    let chunk = vec![b' '; 64 * 1024];
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let mut sent = 0;
                    while sent < total && Instant::now() < deadline {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                        sent += chunk.len();
                        counter.fetch_add(chunk.len(), Ordering::SeqCst);
                    }
                } else {
                    answer(&mut stream, "[]");
                }
            });
        }
    });
    (url, written)
}

fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_64_kib_and_the_card_is_uncertain() {
    let (url, written) = endless_api();
    let sb = sandbox().await;
    let config = DaemonConfig {
        reconcile_lag: "1h",
        ..Default::default()
    };
    let mut d = TestDaemon::start(&sb, config).await;
    d.repoint(&sb, &url).await;
    let id = d.enqueue_ok(&card(1)).await;
    let m = d.wait_state(&id, "sending", Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), "the cut recorded", || async {
        d.message(&id).await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("longer than 65536 bytes"))
    })
    .await;
    assert_eq!(
        m["state"], "sending",
        "uncertain: reconciled, never marked sent"
    );
    let peak = peak_rss_kib(d.pid());
    assert!(peak < 200 * 1024, "daemon peak RSS {peak} KiB");
    assert!(
        written.load(Ordering::SeqCst) < 300 * 1024 * 1024,
        "the daemon kept reading: {} bytes",
        written.load(Ordering::SeqCst)
    );
}
