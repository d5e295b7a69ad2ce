//! The command line against a real daemon: what a script sees (stdout, stderr, exit
//! codes) for every client command.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{card, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use serde_json::{json, Value};

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("contactq runs")
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn send_with_flags_prints_the_id_and_the_card_goes_out() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    // --instance may be omitted: exactly one instance is configured.
    let mut cmd = d.command();
    cmd.args([
        "send",
        "--chat-id",
        "11001234567@c.us",
        "--phone",
        "79001234568",
        "--first-name",
        "Artem",
        "--company",
        "Bicycle",
    ]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let m = d.wait_state(&id, "sent", Duration::from_secs(5)).await;
    assert_eq!(
        m["contact"],
        json!({"phoneContact": 79001234568u64, "firstName": "Artem", "company": "Bicycle"})
    );

    let mut show = d.command();
    show.args(["show", &id]);
    let out = run(show);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(m["idMessage"].as_str().unwrap()) && text.contains("sent"),
        "{text}"
    );
}

async fn json_output_is_exactly_what_the_socket_answered() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    let mut list = d.command();
    list.args(["list", "--json", "--state", "queued"]);
    let out = run(list);
    let parsed: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(parsed["messages"][0]["id"], json!(id));
    assert!(parsed.get("next").is_some());
    let mut status = d.command();
    status.args(["status", "--json"]);
    let parsed: Value = serde_json::from_str(&stdout(&run(status))).expect("JSON");
    assert_eq!(parsed["instances"][0]["queued"], 1);
    assert!(parsed["version"].is_string() && parsed["uptimeSeconds"].is_number());
    let mut table = d.command();
    table.arg("status");
    let text = stdout(&run(table));
    assert!(
        text.contains("main") && text.contains("notAuthorized"),
        "{text}"
    );
}

async fn exit_codes_follow_sysexits() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut bad = d.command();
    bad.args([
        "send",
        "--chat-id",
        "11001234567@c.us",
        "--phone",
        "123",
        "--first-name",
        "A",
    ]);
    let out = run(bad);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("'contact.phoneContact'"),
        "{}",
        stderr(&out)
    );
    let mut unknown = d.command();
    unknown.args([
        "send",
        "--instance",
        "nope",
        "--chat-id",
        "11001234567@c.us",
        "--phone",
        "79001234568",
        "--first-name",
        "A",
    ]);
    assert_eq!(run(unknown).status.code(), Some(65));
    let mut show = d.command();
    show.args(["show", "01NOSUCHMESSAGE0000000000"]);
    let out = run(show);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such message"), "{}", stderr(&out));
    let mut usage = d.command();
    usage.args(["list", "--limit", "many"]);
    assert_eq!(run(usage).status.code(), Some(64));
    let mut gone = Command::new(env!("CARGO_BIN_EXE_contactq"));
    gone.args(["--socket", "/nonexistent/contactq.sock", "status"]);
    let out = run(gone);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        stderr(&out).contains("/nonexistent/contactq.sock"),
        "{}",
        stderr(&out)
    );
}

async fn send_file_takes_a_body_an_array_or_ndjson_from_stdin() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut one = d.command();
    one.args(["send", "--instance", "main", "--file", "-"]);
    let out = run_with_stdin(one, &card(1).to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let mut array = d.command();
    array.args(["send", "--file", "-"]);
    let out = run_with_stdin(array, &json!([card(2), card(3)]).to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);
    let mut ndjson = d.command();
    ndjson.args(["send", "-f", "-"]);
    let out = run_with_stdin(ndjson, &format!("{}\n{}\n", card(4), card(5)));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut bad = d.command();
    bad.args(["send", "-f", "-"]);
    let out = run_with_stdin(bad, &json!([card(6), {"chatId": "x"}]).to_string());
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("[1]"), "{}", stderr(&out));
    assert_eq!(d.status().await["queued"], 5);
}

async fn cancel_retry_pause_and_resume_from_the_command_line() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut pause = d.command();
    pause.args(["pause", "main"]);
    assert!(run(pause).status.success());
    let keep = d.enqueue_ok(&card(1)).await;
    let drop = d.enqueue_ok(&card(2)).await;
    let mut cancel = d.command();
    cancel.args(["cancel", &drop]);
    assert!(run(cancel).status.success());
    let mut again = d.command();
    again.args(["cancel", &drop]);
    assert_eq!(
        run(again).status.code(),
        Some(0),
        "already cancelled: a success"
    );
    let mut retry = d.command();
    retry.args(["retry", &drop]);
    assert_eq!(run(retry).status.code(), Some(65));
    let mut resume = d.command();
    resume.args(["resume", "main"]);
    assert!(run(resume).status.success());
    d.wait_state(&keep, "sent", Duration::from_secs(5)).await;
    assert_eq!(sb.received(ID_INSTANCE).len(), 1);
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_contactq"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("contactq"),
            "{shell}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_contactq"))
        .arg("manpage")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH"));
}

// Each of these runs on SQLite and on PostgreSQL (`NAME::sqlite`, `NAME::postgres`).
crate::on_both_backends!(
    send_with_flags_prints_the_id_and_the_card_goes_out,
    json_output_is_exactly_what_the_socket_answered,
    exit_codes_follow_sysexits,
    send_file_takes_a_body_an_array_or_ndjson_from_stdin,
    cancel_retry_pause_and_resume_from_the_command_line,
);
