//! The command line's rough edges, black-box against the built binary and a real
//! daemon: `status` in 80 columns, `enqueuedAt` and the history across a retry, bad
//! flag values as usage errors, a second cancel as a success, `--socket` only where it
//! means something, help text on every positional.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{card, sandbox, DaemonConfig, TestDaemon, ID_INSTANCE};
use contactq::sandbox::ScriptStep;
use serde_json::{json, Value};

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("contactq runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `contactq ARGS` with no configuration or socket inherited from the environment.
fn bare(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
    cmd.args(args)
        .env_remove("CONTACTQ_SOCKET")
        .env_remove("CONTACTQ_CONFIG");
    run(cmd)
}

fn events(message: &Value) -> Vec<String> {
    message["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["event"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn status_lines_fit_80_columns_when_stdout_is_not_a_terminal() {
    let sb = sandbox().await;
    sb.set_state(None, "notAuthorized");
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            more_instances: vec![("support-asia", "1101000002")],
            ..DaemonConfig::default()
        },
    )
    .await;
    let mut pause = d.command();
    pause.args(["pause", "support-asia"]);
    assert!(run(pause).status.success());
    for n in 0..3 {
        d.enqueue_ok(&card(n)).await;
    }
    let mut status = d.command();
    status.arg("status");
    let out = run(status);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("support-asia") && text.contains("notAuthorized"),
        "{text}"
    );
    assert!(text.contains("  held: paused"), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "{line:?}\n{text}");
    }
}

#[tokio::test]
async fn the_history_starts_with_enqueued_and_retry_keeps_enqueued_at() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 400,
            body: Some(json!({"statusCode": 400, "message": "bad request data"})),
            ..ScriptStep::default()
        }],
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    let failed = d.wait_state(&id, "failed", Duration::from_secs(10)).await;
    let history = events(&failed);
    assert_eq!(history[0], "enqueued", "{failed}");
    assert_eq!(
        failed["history"][0]["at"], failed["enqueuedAt"],
        "the enqueued event is the enqueue itself: {failed}"
    );
    assert!(failed.get("requeuedAt").is_none(), "{failed}");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut retry = d.command();
    retry.args(["retry", &id]);
    let out = run(retry);
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    assert_eq!(sent["enqueuedAt"], failed["enqueuedAt"], "{sent}");
    let requeued = sent["requeuedAt"].as_str().expect("requeuedAt");
    assert!(
        requeued > failed["enqueuedAt"].as_str().unwrap(),
        "{requeued} after the enqueue"
    );
    let history = events(&sent);
    assert_eq!(
        history.iter().filter(|e| *e == "enqueued").count(),
        1,
        "{history:?}"
    );
    let retried = history
        .iter()
        .position(|e| e == "retried")
        .expect("retried");
    let failed_at = history.iter().position(|e| e == "failed").expect("failed");
    assert!(failed_at < retried, "{history:?}");
    assert_eq!(
        history.last().map(String::as_str),
        Some("sent"),
        "{history:?}"
    );
    // `show` prints both times.
    let mut show = d.command();
    show.args(["show", &id]);
    let text = stdout(&run(show));
    assert!(
        text.contains("requeuedAt:") && text.contains("enqueued"),
        "{text}"
    );
    // A batch gets one enqueued event per card too.
    let (status, batch) = d
        .post(
            "/v1/instances/main/sendContact:batch",
            &json!([card(2), card(3)]),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    for m in batch["messages"].as_array().unwrap() {
        let one = d.message(m["id"].as_str().unwrap()).await;
        assert_eq!(events(&one)[0], "enqueued", "{one}");
    }
}

#[tokio::test]
async fn out_of_range_flag_values_are_usage_errors_before_the_daemon_is_asked() {
    // No daemon at all: a usage error is found first (64), not "unreachable" (69).
    let socket = "/nonexistent/contactq.sock";
    for args in [
        vec!["list", "--limit", "0"],
        vec!["list", "--limit", "1001"],
        vec!["list", "--limit", "-1"],
        vec!["list", "--instance", ""],
        vec!["list", "--before", ""],
        vec!["show", ""],
        vec!["cancel", ""],
        vec!["pause", ""],
    ] {
        let mut all = vec!["--socket", socket];
        all.extend(&args);
        let out = bare(&all);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    let out = bare(&["--socket", socket, "list", "--limit", "1000"]);
    assert_eq!(out.status.code(), Some(69), "in range: asks the daemon");
}

#[tokio::test]
async fn cancelling_twice_succeeds_and_a_sent_card_stays_an_error() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let mut pause = d.command();
    pause.args(["pause", "main"]);
    assert!(run(pause).status.success());
    let id = d.enqueue_ok(&card(1)).await;
    let cancel = |json: bool| {
        let mut cmd = d.command();
        cmd.args(["cancel", &id]);
        if json {
            cmd.arg("--json");
        }
        run(cmd)
    };
    let first = cancel(false);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first).trim(), format!("cancelled {id}"));
    let second = cancel(false);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(stdout(&second).trim(), format!("already cancelled {id}"));
    let third = cancel(true);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    let answer: Value = serde_json::from_str(&stdout(&third)).unwrap();
    assert_eq!(answer["state"], "cancelled");
    // The socket API keeps its answer to a second DELETE: 409, the state named.
    let (status, body) = d
        .request(contactq::cli::client::ApiRequest::delete(format!(
            "/v1/messages/{id}"
        )))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["details"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    // Only one cancelled event: the repeats changed nothing.
    let m = d.message(&id).await;
    assert_eq!(
        events(&m).iter().filter(|e| *e == "cancelled").count(),
        1,
        "{m}"
    );

    // A sent card cannot be cancelled: 65, the state named.
    let mut resume = d.command();
    resume.args(["resume", "main"]);
    assert!(run(resume).status.success());
    let sent = d.enqueue_ok(&card(2)).await;
    d.wait_state(&sent, "sent", Duration::from_secs(10)).await;
    let mut cmd = d.command();
    cmd.args(["cancel", &sent]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("the message is sent"),
        "{}",
        stderr(&out)
    );
    // Retrying a card that is queued (or sent) is refused: it did not fail or expire.
    let mut pause = d.command();
    pause.args(["pause", "main"]);
    assert!(run(pause).status.success());
    let queued = d.enqueue_ok(&card(3)).await;
    let mut cmd = d.command();
    cmd.args(["retry", &queued]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("the message is queued"),
        "{}",
        stderr(&out)
    );
    // An unknown id stays exit 1.
    let mut cmd = d.command();
    cmd.args(["cancel", "01NOSUCHMESSAGE0000000000"]);
    assert_eq!(run(cmd).status.code(), Some(1));
}

#[test]
fn socket_is_listed_only_on_client_commands() {
    for command in [
        "daemon",
        "sandbox",
        "demo",
        "completions",
        "restore",
        "check-config",
    ] {
        let out = bare(&[command, "--help"]);
        assert!(out.status.success(), "{command}");
        let help = stdout(&out);
        assert!(!help.contains("--socket"), "{command} --help:\n{help}");
    }
    for command in [
        "send", "status", "list", "show", "cancel", "retry", "pause", "resume", "backup",
    ] {
        let out = bare(&[command, "--help"]);
        assert!(out.status.success(), "{command}");
        let help = stdout(&out);
        assert!(
            help.contains("--socket <PATH>"),
            "{command} --help:\n{help}"
        );
    }
    // After a command that does not use it: an unknown option (before the command, the
    // top-level option is for client commands and the others leave it alone).
    for args in [
        vec!["restore", "/tmp/backup.db", "--socket", "/tmp/x.sock"],
        vec!["sandbox", "--socket", "/tmp/x.sock"],
        vec!["completions", "bash", "--socket", "/tmp/x.sock"],
    ] {
        let out = bare(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--socket"), "{}", stderr(&out));
    }
}

#[tokio::test]
async fn client_commands_take_the_socket_before_or_after_the_command_or_from_the_env() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let socket = d.socket.to_str().unwrap().to_string();
    let before = bare(&["--socket", &socket, "status", "--json"]);
    assert!(before.status.success(), "{}", stderr(&before));
    let after = bare(&["status", "--json", "--socket", &socket]);
    assert!(after.status.success(), "{}", stderr(&after));
    // After the command wins over CONTACTQ_SOCKET.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
    cmd.args(["list", "--socket", &socket])
        .env("CONTACTQ_SOCKET", "/nonexistent/contactq.sock")
        .env_remove("CONTACTQ_CONFIG");
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
    cmd.args(["status"])
        .env("CONTACTQ_SOCKET", &socket)
        .env_remove("CONTACTQ_CONFIG");
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("main"), "{}", stdout(&out));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
    cmd.args(["status"])
        .env("CONTACTQ_SOCKET", "/nonexistent/contactq.sock")
        .env_remove("CONTACTQ_CONFIG");
    assert_eq!(run(cmd).status.code(), Some(69), "the variable is used");
}

#[test]
fn every_positional_has_help_text() {
    for (command, positional) in [
        (vec!["show"], "<ID>"),
        // Optional since `--all` may stand in for it.
        (vec!["cancel"], "[ID]"),
        (vec!["retry"], "[ID]"),
        (vec!["pause"], "<NAME>"),
        (vec!["resume"], "<NAME>"),
        (vec!["backup"], "<DEST>"),
        (vec!["restore"], "<BACKUP>"),
        (vec!["completions"], "<SHELL>"),
    ] {
        let mut args = command.clone();
        args.push("--help");
        let out = bare(&args);
        let help = stdout(&out);
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(positional))
            .unwrap_or_else(|| panic!("{command:?}: no {positional} line:\n{help}"));
        let text = line.trim_start()[positional.len()..].trim();
        assert!(
            text.len() > 10,
            "{command:?} {positional} has no help:\n{help}"
        );
    }
}

#[tokio::test]
async fn a_retried_card_counts_its_queue_age_from_the_retry() {
    let sb = sandbox().await;
    sb.push_script(
        ID_INSTANCE,
        vec![ScriptStep {
            status: 400,
            body: Some(json!({"statusCode": 400, "message": "bad request data"})),
            ..ScriptStep::default()
        }],
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "failed", Duration::from_secs(10)).await;
    let mut pause = d.command();
    pause.args(["pause", "main"]);
    assert!(run(pause).status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut retry = d.command();
    retry.args(["retry", &id]);
    let out = run(retry);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = d.status().await;
    let age = status["oldestQueuedAgeSeconds"]
        .as_f64()
        .expect("a queued card");
    assert!(
        age < 1.0,
        "counted from the retry, not the enqueue 1.5 s ago: {status}"
    );
}
