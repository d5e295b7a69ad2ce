//! Trust nothing, the local input side: validation that matches the real API (13-digit
//! phones and `@lid` chats taken with a warning, `typingTime` out of range refused),
//! every warning in the enqueue answer, `send --file` that checks every card before it
//! sends any, and configuration mistakes that stop the daemon (and `check-config`) with
//! exit 78 and one line naming the key or the file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{card, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::cli::client::{ApiRequest, Client};
use serde_json::{json, Value};

const BRAZIL: u64 = 5_511_912_345_678;
const BRAZIL_WARNING: &str = "phoneContact has 13 digits; the API documents 11 or 12";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every message the daemon holds; the list itself must answer 200, so an error can
/// never read as "nothing stored".
async fn stored(d: &TestDaemon) -> Vec<Value> {
    let (status, body) = d.get("/v1/messages?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().expect("a list").clone()
}

#[tokio::test]
async fn a_13_digit_brazilian_mobile_is_accepted_with_a_warning_and_sent() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let body = json!({"chatId": "5511912345678@c.us",
        "contact": {"phoneContact": BRAZIL, "firstName": "Joao"}});
    let (status, answer) = d.enqueue(&body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["warnings"], json!([BRAZIL_WARNING]), "{answer}");
    assert_eq!(answer["warning"], BRAZIL_WARNING, "{answer}");
    let id = answer["id"].as_str().unwrap();
    let sent = d.wait_state(id, "sent", Duration::from_secs(5)).await;
    assert_eq!(sent["contact"]["phoneContact"], json!(BRAZIL));
    assert_eq!(sb.received(ID_INSTANCE).len(), 1);
    // A documented length carries an empty list and no `warning`.
    let (status, answer) = d.enqueue(&card(1)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["warnings"], json!([]), "{answer}");
    assert!(answer.get("warning").is_none(), "{answer}");
}

#[tokio::test]
async fn a_lid_chat_id_is_accepted_and_sent() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let body = json!({"chatId": "123456789012345@lid",
        "contact": {"phoneContact": 79001234568u64, "firstName": "Lid"}});
    let id = d.enqueue_ok(&body).await;
    let sent = d.wait_state(&id, "sent", Duration::from_secs(5)).await;
    assert_eq!(sent["chatId"], "123456789012345@lid");
}

#[tokio::test]
async fn typing_time_outside_1000_to_20000_is_refused_naming_the_field_and_nothing_is_stored() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    for bad in [json!(-5), json!(999), json!(20001), json!(1.5), json!("x")] {
        let mut body = card(1);
        body["typingTime"] = bad.clone();
        let (status, answer) = d.enqueue(&body).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(
            answer["details"].as_str().unwrap().contains("'typingTime'"),
            "{bad}: {answer}"
        );
        // In a batch, with a good card before it: all or nothing.
        let (status, answer) = d
            .post(
                "/v1/instances/main/sendContact:batch",
                &json!([card(2), body]),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(
            answer["details"]
                .as_str()
                .unwrap()
                .contains("[1]: 'typingTime'"),
            "{bad}: {answer}"
        );
    }
    assert!(stored(&d).await.is_empty());
    for good in [1000, 20000] {
        let mut body = card(3);
        body["typingTime"] = json!(good);
        d.enqueue_ok(&body).await;
    }
    assert_eq!(stored(&d).await.len(), 2);
}

#[tokio::test]
async fn every_warning_is_in_the_answer_and_each_batch_card_carries_its_own() {
    let sb = sandbox().await;
    // One send every 10 s and a 2 s lifetime: the second card in line cannot make it.
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "10s",
            max_age: "2s",
            ..DaemonConfig::default()
        },
    )
    .await;
    let brazil = json!({"chatId": "11001234567@c.us",
        "contact": {"phoneContact": BRAZIL, "firstName": "Late"}});
    let (status, answer) = d
        .post(
            "/v1/instances/main/sendContact:batch",
            &json!([card(1), brazil]),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let messages = answer["messages"].as_array().unwrap();
    assert_eq!(messages[0]["warnings"], json!([]), "{answer}");
    assert_eq!(
        messages[1]["warnings"],
        json!([BRAZIL_WARNING, "eta after expiry"]),
        "{answer}"
    );
    assert_eq!(messages[1]["warning"], BRAZIL_WARNING, "the first one");
}

#[tokio::test]
async fn the_cli_prints_warnings_on_stderr_and_only_the_id_on_stdout() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut cmd = d.command();
    cmd.args([
        "send",
        "--chat-id",
        "5511912345678@c.us",
        "--phone",
        &BRAZIL.to_string(),
        "--first-name",
        "Joao",
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim().len(), 26, "one id: {}", stdout(&out));
    assert!(stderr(&out).contains(BRAZIL_WARNING), "{}", stderr(&out));
}

/// 25,000 cards, every one good but `bad`.
fn big_file(bad: Option<(usize, &str, Value)>) -> Vec<Value> {
    let mut cards: Vec<Value> = (0..25_000u64).map(card).collect();
    if let Some((index, field, value)) = bad {
        cards[index][field] = value;
    }
    cards
}

fn send_file(d: &TestDaemon, path: &Path) -> Output {
    let mut cmd = d.command();
    cmd.args(["send", "--instance", "main", "--file"]).arg(path);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().unwrap()
}

#[tokio::test]
async fn send_file_with_one_bad_card_of_25000_enqueues_nothing() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let cards = big_file(Some((15_000, "typingTime", json!(-5))));
    let array = d.dir.path().join("cards.json");
    std::fs::write(&array, serde_json::to_vec(&cards).unwrap()).unwrap();
    let ndjson = d.dir.path().join("cards.ndjson");
    let lines: String = cards.iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(&ndjson, lines).unwrap();
    for (path, marker) in [(&array, "[15000]: "), (&ndjson, "[15000] (line 15001): ")] {
        let out = send_file(&d, path);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(65), "{err}");
        assert!(
            err.contains(&format!(
                "{marker}'typingTime' must be greater than or equal to 1000"
            )),
            "{err}"
        );
        assert!(err.contains("nothing was enqueued"), "{err}");
        assert!(stdout(&out).is_empty(), "no id printed: {}", stdout(&out));
        assert!(stored(&d).await.is_empty(), "{}", path.display());
        assert_eq!(d.status().await["queued"], 0);
    }
}

#[tokio::test]
async fn send_file_of_25000_good_cards_goes_as_several_batches() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let path = d.dir.path().join("cards.json");
    std::fs::write(&path, serde_json::to_vec(&big_file(None)).unwrap()).unwrap();
    let out = send_file(&d, &path);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 25_000);
    assert_eq!(d.status().await["queued"], 25_000);
}

#[tokio::test]
async fn send_file_over_the_size_cap_is_refused_before_anything_is_sent() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let path = d.dir.path().join("huge.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(65 * 1024 * 1024).unwrap(); // sparse: costs no disk
    let out = send_file(&d, &path);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("larger than 64 MiB"),
        "{}",
        stderr(&out)
    );
    assert!(stored(&d).await.is_empty());
}

// ---- configuration ----

const TOKEN_VALUE: &str = "t0k3n-from-a-file-42";

/// A directory with a working configuration; `edit` changes its text.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new() -> ConfigDir {
        let cd = ConfigDir {
            dir: tempfile::tempdir().unwrap(),
        };
        cd.write_token(TOKEN_VALUE, 0o600);
        cd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_token(&self, text: &str, mode: u32) {
        let token = self.path("token");
        std::fs::write(&token, text).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn good_text(&self) -> String {
        format!(
            "[daemon]\nsocket = {socket:?}\ndatabase = {db:?}\n\n\
             [instances.main]\napi_url = \"http://127.0.0.1:9\"\nid_instance = \"1101000001\"\n\
             api_token_file = {token:?}\nsend_delay = \"1s\"\n",
            socket = self.path("contactq.sock"),
            db = self.path("state/queue.db"),
            token = self.path("token"),
        )
    }

    fn write(&self, text: &str) -> PathBuf {
        let path = self.path("contactq.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn contactq(&self, config: &Path, command: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.arg("--config")
            .arg(config)
            .arg(command)
            .env_remove("CONTACTQ_CONFIG")
            .env_remove("CONTACTQ_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }
}

/// Runs `cmd` to its exit; a daemon that is still running after 20 s (the mistake did
/// not stop it) is killed and the test fails, rather than hang.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 20 s: the mistake did not stop it: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `daemon` (and `check-config`) on a bad configuration: both exit 78 with one
/// line that names `key` (and `also`), and nothing is created.
fn assert_refused(cd: &ConfigDir, text: &str, key: &str, also: &str) {
    let config = cd.write(text);
    for command in ["daemon", "check-config"] {
        let out = run_bounded(cd.contactq(&config, command));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{command} {key}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{command} names {key}: {err}");
        assert!(err.contains(also), "{command} says {also}: {err}");
        assert!(!err.contains(TOKEN_VALUE), "{err}");
    }
    assert!(!cd.path("state").exists(), "nothing created");
    assert!(!cd.path("contactq.sock").exists(), "nothing created");
}

#[test]
fn an_unknown_log_level_stops_the_daemon_naming_the_key() {
    let cd = ConfigDir::new();
    let text = cd
        .good_text()
        .replace("[daemon]\n", "[daemon]\nlog_level = \"verbose\"\n");
    assert_refused(&cd, &text, "daemon.log_level", "'verbose'");
}

#[test]
fn a_database_path_that_cannot_be_created_stops_the_daemon_naming_it() {
    let cd = ConfigDir::new();
    // A regular file where a directory would have to be: not even root can create it.
    std::fs::write(cd.path("file"), "x").unwrap();
    let db = cd.path("file/sub/queue.db");
    let text = cd.good_text().replace(
        &format!("{:?}", cd.path("state/queue.db")),
        &format!("{db:?}"),
    );
    assert_refused(&cd, &text, "daemon.database", &db.display().to_string());
}

#[test]
fn a_missing_token_file_stops_the_daemon_naming_the_key_and_file() {
    let cd = ConfigDir::new();
    std::fs::remove_file(cd.path("token")).unwrap();
    let file = cd.path("token").display().to_string();
    assert_refused(
        &cd,
        &cd.good_text(),
        "instances.main.api_token_file",
        &format!("{file}: no such file"),
    );
}

#[test]
fn an_empty_token_file_is_called_empty_not_short() {
    let cd = ConfigDir::new();
    cd.write_token("\n", 0o600);
    assert_refused(
        &cd,
        &cd.good_text(),
        "instances.main.api_token_file",
        "is empty",
    );
}

#[test]
fn a_token_file_readable_by_others_stops_the_daemon() {
    let cd = ConfigDir::new();
    for mode in [0o644, 0o604, 0o660] {
        cd.write_token(TOKEN_VALUE, mode);
        assert_refused(
            &cd,
            &cd.good_text(),
            "instances.main.api_token_file",
            &format!("mode {mode:04o}"),
        );
    }
}

#[test]
fn a_daemon_without_an_instance_stops_naming_the_key() {
    let cd = ConfigDir::new();
    let text = cd.good_text();
    let text = &text[..text.find("[instances.main]").unwrap()];
    assert_refused(&cd, text, "instances", "no instance configured");
}

#[test]
fn check_config_says_ok_and_starts_nothing() {
    let cd = ConfigDir::new();
    cd.write_token(TOKEN_VALUE, 0o640);
    let config = cd.write(&cd.good_text());
    let out = run_bounded(cd.contactq(&config, "check-config"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ok: "), "{text}");
    assert!(text.contains("1 instance (main)"), "{text}");
    assert!(!text.contains(TOKEN_VALUE), "{text}");
    assert!(!cd.path("state").exists(), "no database created");
    assert!(!cd.path("contactq.sock").exists(), "no socket created");
}

/// Waits for `/v1/health` on `socket` to answer 200 (or the process to exit).
async fn wait_healthy(child: &mut std::process::Child, socket: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = Client::new(socket)
            .send(ApiRequest::get("/v1/health"))
            .await
        {
            if r.status == 200 {
                return true;
            }
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn the_daemon_refuses_the_socket_option_and_a_contactq_socket_that_disagrees() {
    let cd = ConfigDir::new();
    let config = cd.write(&cd.good_text());
    let socket = cd.path("contactq.sock");
    // --socket, before or after the subcommand, even naming the configured socket.
    for args in [
        vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "daemon".into(),
        ],
        vec![
            "daemon".into(),
            "--socket".into(),
            "/tmp/elsewhere.sock".into(),
        ],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.arg("--config")
            .arg(&config)
            .args(&args)
            .env_remove("CONTACTQ_SOCKET")
            .env_remove("CONTACTQ_CONFIG");
        let out = run_bounded(cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("--socket"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // CONTACTQ_SOCKET naming another socket: refused, naming both.
    let mut cmd = cd.contactq(&config, "daemon");
    cmd.env("CONTACTQ_SOCKET", "/tmp/elsewhere.sock");
    let out = run_bounded(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("CONTACTQ_SOCKET=/tmp/elsewhere.sock") && err.contains("daemon.socket"),
        "{err}"
    );
    assert!(!socket.exists());
    // Inherited and agreeing with daemon.socket (a shell that exported it for the
    // client): the daemon starts.
    let mut child = cd
        .contactq(&config, "daemon")
        .env("CONTACTQ_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = wait_healthy(&mut child, &socket).await;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(healthy, "the daemon started ({status})");
    assert!(status.success(), "{status}");
}

#[test]
fn mistakes_in_delivery_poll_and_window_stop_the_daemon_naming_the_key() {
    for (line, key, also) in [
        (
            "delivery_poll = \"500ms\"",
            "queue.delivery_poll",
            "at least 1s",
        ),
        ("delivery_poll = \"often\"", "queue.delivery_poll", "often"),
        (
            "delivery_window = \"0s\"",
            "queue.delivery_window",
            "more than 0",
        ),
        (
            "delivery_window = \"a day\"",
            "queue.delivery_window",
            "a day",
        ),
    ] {
        let cd = ConfigDir::new();
        let text = format!("{}\n[queue]\n{line}\n", cd.good_text());
        assert_refused(&cd, &text, key, also);
    }
}
