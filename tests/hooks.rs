//! Hooks, black-box: the real daemon against the sandbox, with `[hooks.NAME]` exec
//! programs (shell scripts in the test's directory) and a webhook receiver on
//! 127.0.0.1. Each event goes out in `seq` order, at least once (across a failing hook
//! and a `kill -9`), signed when by webhook; a hook that hangs never holds the line; an
//! outside consumer's cursor outlives its process; mistakes in `[hooks]` exit 78.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{card, eventually, sandbox, test_postgres, DaemonConfig, TestDaemon};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

crate::on_both_backends!(
    an_exec_hook_fires_for_each_sent_card_in_seq_order_with_its_environment,
    a_failing_hook_is_retried_until_it_succeeds_keeping_the_order,
    a_hook_killed_with_the_daemon_still_fires_after_the_restart,
    a_hook_that_hangs_is_killed_and_never_holds_the_line,
    a_webhook_is_signed_and_retried_after_a_refusal,
    an_outside_consumer_goes_on_from_its_cursor_across_runs,
);

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn exec_hook(name: &str, program: &Path, extra: &str) -> String {
    format!(
        "[hooks.{name}]\nexec = [{:?}]\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\n{extra}\n",
        program.display().to_string()
    )
}

/// The consumer `name` in `GET /v1/status`.
async fn consumer(d: &TestDaemon, name: &str) -> Value {
    let (status, body) = d.get("/v1/status").await;
    assert_eq!(status, 200);
    body["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The seq of each `sent` event, in order.
async fn sent_seqs(d: &TestDaemon) -> Vec<(String, String)> {
    d.events_after(0)
        .await
        .into_iter()
        .filter(|e| e["event"] == "sent")
        .map(|e| (e["seq"].to_string(), e["id"].as_str().unwrap().to_string()))
        .collect()
}

async fn an_exec_hook_fires_for_each_sent_card_in_seq_order_with_its_environment() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let program = script(
        dir.path(),
        "hook.sh",
        &format!(
            "cat > {dir}/stdin-$CONTACTQ_SEQ.json\n\
             echo \"$CONTACTQ_SEQ $CONTACTQ_EVENT $CONTACTQ_MESSAGE_ID $CONTACTQ_INSTANCE $CONTACTQ_STATE $CONTACTQ_ID_MESSAGE\" >> {log}",
            dir = dir.path().display(),
            log = log.display()
        ),
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            tables: exec_hook("onsent", &program, "events = [\"sent\"]"),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    for id in &ids {
        d.wait_state(id, "sent", Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(10), "the hook ran 5 times", || async {
        lines(&log).len() >= 5
    })
    .await;
    let ran = lines(&log);
    assert_eq!(ran.len(), 5, "once each: {ran:?}");
    let sent = sent_seqs(&d).await;
    for ((line, (seq, id)), queued_id) in ran.iter().zip(&sent).zip(&ids) {
        let m = d.message(id).await;
        let expected = format!(
            "{seq} sent {id} main sent {}",
            m["idMessage"].as_str().unwrap()
        );
        assert_eq!(line, &expected);
        assert_eq!(id, queued_id, "in seq order, which is the line's order");
        let stdin: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("stdin-{seq}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(stdin["seq"].to_string(), *seq);
        assert_eq!(stdin["message"]["idMessage"], m["idMessage"]);
    }
    // The cursor moves once the program has exited, a moment after its last line.
    eventually(Duration::from_secs(5), "the cursor moved on", || async {
        consumer(&d, "onsent").await["lag"] == 0
    })
    .await;
    let c = consumer(&d, "onsent").await;
    assert_eq!(c["kind"], "exec");
    assert_eq!(c["failures"], 0, "{c}");
}

async fn a_failing_hook_is_retried_until_it_succeeds_keeping_the_order() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let (log, fail) = (dir.path().join("hook.log"), dir.path().join("fail"));
    std::fs::write(&fail, "").unwrap();
    let program = script(
        dir.path(),
        "hook.sh",
        &format!(
            "echo $CONTACTQ_SEQ >> {log}\nif [ -e {fail} ]; then echo 'receiver down' >&2; exit 3; fi",
            log = log.display(),
            fail = fail.display()
        ),
    );
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            tables: exec_hook("flaky", &program, ""),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    for id in &ids {
        d.wait_state(id, "sent", Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(10), "failures shown", || async {
        consumer(&d, "flaky").await["failures"].as_i64() >= Some(3)
    })
    .await;
    let c = consumer(&d, "flaky").await;
    let error = c["lastError"].as_str().unwrap();
    assert!(
        error.contains("exit 3") && error.contains("receiver down"),
        "{c}"
    );
    let sent: Vec<String> = sent_seqs(&d).await.into_iter().map(|(s, _)| s).collect();
    let first: i64 = sent[0].parse().unwrap();
    assert_eq!(
        c["cursor"].as_i64(),
        Some(first - 1),
        "waits at the first sent event: {c}"
    );
    assert_eq!(d.status().await["queued"], 0, "the line drained meanwhile");
    std::fs::remove_file(&fail).unwrap();
    eventually(
        Duration::from_secs(10),
        "every sent event delivered",
        || async { consumer(&d, "flaky").await["lag"] == 0 },
    )
    .await;
    let ran = lines(&log);
    // The first sent event was tried several times, then each once, in seq order.
    let mut deduped = ran.clone();
    deduped.dedup();
    assert_eq!(deduped, sent, "{ran:?}");
    assert!(ran.len() > sent.len(), "retried: {ran:?}");
    assert_eq!(consumer(&d, "flaky").await["failures"], 0);
}

async fn a_hook_killed_with_the_daemon_still_fires_after_the_restart() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let (log, block) = (dir.path().join("hook.log"), dir.path().join("block"));
    std::fs::write(&block, "").unwrap();
    let program = script(
        dir.path(),
        "hook.sh",
        &format!(
            "echo start $CONTACTQ_SEQ >> {log}\n\
             if [ -e {block} ]; then sleep 20; exit 1; fi\n\
             echo done $CONTACTQ_SEQ >> {log}",
            log = log.display(),
            block = block.display()
        ),
    );
    let mut d = TestDaemon::start(
        &sb,
        DaemonConfig {
            tables: exec_hook("blocking", &program, ""),
            ..Default::default()
        },
    )
    .await;
    let id = d.enqueue_ok(&card(1)).await;
    d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    let (seq, _) = sent_seqs(&d).await.remove(0);
    let start = format!("start {seq}");
    eventually(Duration::from_secs(10), "the hook is running", || async {
        lines(&log).contains(&start)
    })
    .await;
    // The event is committed; its delivery is under way: the daemon dies.
    d.kill9();
    std::fs::remove_file(&block).unwrap();
    d.start_again().await;
    let done = format!("done {seq}");
    eventually(
        Duration::from_secs(10),
        "delivered after the restart",
        || async { lines(&log).contains(&done) },
    )
    .await;
    eventually(Duration::from_secs(5), "the cursor moved on", || async {
        consumer(&d, "blocking").await["lag"] == 0
    })
    .await;
    assert_eq!(
        lines(&log),
        vec![start.clone(), start, done],
        "run again, once"
    );
}

async fn a_hook_that_hangs_is_killed_and_never_holds_the_line() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "hang.sh", "sleep 30");
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            send_delay: "20ms",
            tables: exec_hook(
                "hangs",
                &program,
                "timeout = \"1s\"\nevents = [\"queued\", \"sent\"]",
            ),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(d.enqueue_ok(&card(n)).await);
    }
    for id in &ids {
        d.wait_state(id, "sent", Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(10), "the time-out recorded", || async {
        consumer(&d, "hangs").await["failures"].as_i64() >= Some(1)
    })
    .await;
    let c = consumer(&d, "hangs").await;
    assert!(
        c["lastError"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1 s; killed"),
        "{c}"
    );
}

/// The requests a receiver got: headers and body.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1: answers `fail_first` requests 500, then 200, and
/// keeps every request's headers and body.
async fn receiver(fail_first: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let mut all = seen.lock().unwrap();
                    all.push((headers, body.to_vec()));
                    if all.len() <= fail_first {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn a_webhook_is_signed_and_retried_after_a_refusal() {
    const SECRET: &str = "s3cret-for-the-test-receiver";
    let sb = sandbox().await;
    let (url, got) = receiver(2).await;
    let d = TestDaemon::start(
        &sb,
        DaemonConfig {
            tables: format!(
                "[hooks.web]\nwebhook_url = {url:?}\nwebhook_secret = {SECRET:?}\n\
                 retry_initial = \"100ms\"\nevents = [\"sent\"]\n"
            ),
            ..Default::default()
        },
    )
    .await;
    let a = d.enqueue_ok(&card(1)).await;
    let b = d.enqueue_ok(&card(2)).await;
    d.wait_state(&b, "sent", Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "both delivered", || async {
        consumer(&d, "web").await["lag"] == 0
    })
    .await;
    let requests = got.lock().unwrap().clone();
    let bodies: Vec<Value> = requests
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).unwrap())
        .collect();
    let ids: Vec<&str> = bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
    // Two refusals of the first event, then the first again, then the second.
    assert_eq!(ids, vec![a.as_str(), a.as_str(), a.as_str(), b.as_str()]);
    for ((headers, body), parsed) in requests.iter().zip(&bodies) {
        let timestamp = headers["contactq-timestamp"].to_str().unwrap();
        assert_eq!(
            headers["contactq-seq"].to_str().unwrap(),
            parsed["seq"].to_string()
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            headers["contactq-signature"].to_str().unwrap(),
            format!("sha256={hex}")
        );
        assert_eq!(parsed["event"], "sent");
    }
    let c = consumer(&d, "web").await;
    assert_eq!(c["kind"], "webhook");
    assert!(c["lastError"].as_str().unwrap().contains("HTTP 500"), "{c}");
    assert!(!d.logs().contains(SECRET), "the secret is never logged");
}

async fn an_outside_consumer_goes_on_from_its_cursor_across_runs() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("consumer.log");
    let program = script(
        dir.path(),
        "consume.sh",
        &format!("echo $CONTACTQ_SEQ $1 >> {}", log.display()),
    );
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let run = || {
        d.command()
            .args(["follow", "--consumer", "outside", "--exec"])
            .arg(&program)
            .args(["--", "arg1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = run();
    eventually(Duration::from_secs(10), "the consumer started", || async {
        d.get("/v1/consumers/outside").await.0 == 200
    })
    .await;
    for n in 0..2 {
        let id = d.enqueue_ok(&card(n)).await;
        d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    }
    eventually(Duration::from_secs(10), "two delivered", || async {
        lines(&log).len() == 2
    })
    .await;
    eventually(Duration::from_secs(5), "the cursor stored", || async {
        d.get("/v1/consumers/outside").await.1["cursor"] == 4
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    for n in 2..4 {
        let id = d.enqueue_ok(&card(n)).await;
        d.wait_state(&id, "sent", Duration::from_secs(10)).await;
    }
    let mut second = run();
    eventually(
        Duration::from_secs(10),
        "the two new ones delivered",
        || async { lines(&log).len() == 4 },
    )
    .await;
    eventually(Duration::from_secs(5), "the cursor stored", || async {
        d.get("/v1/consumers/outside").await.1["lag"] == 0
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let sent: Vec<String> = sent_seqs(&d)
        .await
        .into_iter()
        .map(|(seq, _)| format!("{seq} arg1"))
        .collect();
    assert_eq!(
        lines(&log),
        sent,
        "each sent event once, in order, across runs"
    );
    let (_, c) = d.get("/v1/consumers/outside").await;
    assert_eq!(
        (c["kind"].as_str(), c["lag"].as_i64()),
        (Some("outside"), Some(0))
    );
    // A hook's cursor is the daemon's own; a bad cursor is refused.
    let put = |body: &str| contactq::cli::client::ApiRequest {
        method: hyper::Method::PUT,
        ..contactq::cli::client::ApiRequest::post("/v1/consumers/outside", Some(body.into()))
    };
    assert_eq!(d.request(put(r#"{"cursor": 99999}"#)).await.0, 400);
    assert_eq!(d.request(put(r#"{"cursor": 1}"#)).await.0, 200);
}

#[tokio::test]
async fn mistakes_in_a_hook_exit_78_naming_the_key() {
    let sb = sandbox().await;
    let d = TestDaemon::start(&sb, DaemonConfig::default()).await;
    let base = std::fs::read_to_string(&d.config).unwrap();
    let cases = [
        (
            "[hooks.h]\nexec = [\"/bin/true\"]\nwebhook_url = \"http://127.0.0.1:1/\"\n",
            "hooks.h.exec",
        ),
        ("[hooks.h]\nevents = [\"sent\"]\n", "hooks.h:"),
        (
            "[hooks.h]\nexec = [\"/bin/true\"]\nevents = [\"snet\"]\n",
            "hooks.h.events",
        ),
        (
            "[hooks.h]\nwebhook_url = \"ftp://x/\"\nwebhook_secret = \"0123456789abcdef\"\n",
            "hooks.h.webhook_url",
        ),
        (
            "[hooks.h]\nwebhook_url = \"http://127.0.0.1:1/\"\n",
            "hooks.h.webhook_secret",
        ),
    ];
    for (table, key) in cases {
        let file = d.dir.path().join("bad.toml");
        std::fs::write(&file, format!("{base}\n{table}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactq"))
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .env_remove("CONTACTQ_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{table}: {stderr}");
        assert!(stderr.contains(key), "{table}: {stderr}");
    }
}

/// A hook program does not inherit the daemon's environment (it may carry the API
/// token or a secret): it sees PATH and the like and its CONTACTQ_* variables only. And
/// whatever it prints on failure is stored with the token cut out.
#[tokio::test]
async fn a_hook_sees_none_of_the_daemons_environment_and_its_errors_hide_the_token() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let env_dump = dir.path().join("env.txt");
    let program = script(
        dir.path(),
        "hook.sh",
        &format!(
            "env | sort > {dump}\necho \"leaking {token}\" >&2\nexit 3",
            dump = env_dump.display(),
            token = common::TOKEN
        ),
    );
    let d = TestDaemon::start_with_env(
        &sb,
        DaemonConfig {
            tables: exec_hook("leaky", &program, "events = [\"queued\"]"),
            ..Default::default()
        },
        &[("SECRET_PROBE", "do-not-pass-me")],
    )
    .await;
    // A new hook starts at the newest event: enqueue once it has started.
    eventually(Duration::from_secs(10), "the hook started", || async {
        consumer(&d, "leaky").await.is_object()
    })
    .await;
    d.enqueue_ok(&card(0)).await;
    eventually(Duration::from_secs(10), "the hook failed once", || async {
        consumer(&d, "leaky").await["failures"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    let env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(!env.contains("SECRET_PROBE"), "{env}");
    assert!(!env.contains(common::TOKEN), "{env}");
    assert!(env.contains("CONTACTQ_EVENT=queued"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for name in names {
        assert!(
            name.starts_with("CONTACTQ_")
                || [
                    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "TMPDIR"
                ]
                .contains(&name)
                || name == "PWD" // set by the shell itself
                || name == "SHLVL"
                || name == "_",
            "{name} reached the hook: {env}"
        );
    }
    let error = consumer(&d, "leaky").await["lastError"].to_string();
    assert!(error.contains("leaking ***"), "{error}");
    assert!(!error.contains(common::TOKEN), "{error}");
    assert!(!d.logs().contains(common::TOKEN), "the log holds the token");
}

/// Two daemons on one PostgreSQL database with the same hook: one of them runs it, so
/// each `sent` event is delivered once, not once per daemon; when that daemon is killed
/// (-9) the other takes the hook over from its cursor in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_daemons_on_one_database_each_hook_runs_in_one_of_them() {
    let Some(pg) = test_postgres().await else {
        return;
    };
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    // $PPID: the daemon that ran the program.
    let program = script(
        dir.path(),
        "hook.sh",
        &format!("echo \"$CONTACTQ_SEQ $PPID\" >> {}", log.display()),
    );
    let config = |node: &str| DaemonConfig {
        postgres: Some(pg.clone()),
        daemon_extra: format!("node = {node:?}"),
        tables: exec_hook("onsent", &program, "events = [\"sent\"]"),
        ..DaemonConfig::default()
    };
    let mut daemons = [
        TestDaemon::start(&sb, config("node-a")).await,
        TestDaemon::start(&sb, config("node-b")).await,
    ];
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(daemons[n % 2].enqueue_ok(&card(n as u64)).await);
    }
    eventually(Duration::from_secs(20), "4 deliveries", || async {
        lines(&log).len() >= 4
    })
    .await;
    let runner: Vec<String> = lines(&log)
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert!(
        runner.iter().all(|p| *p == runner[0]),
        "two runners: {runner:?}"
    );
    eventually(
        Duration::from_secs(10),
        "the cursor moved past them",
        || async {
            consumer(&daemons[0], "onsent").await["cursor"].as_i64()
                == sent_seqs(&daemons[0])
                    .await
                    .last()
                    .map(|(s, _)| s.parse().unwrap())
        },
    )
    .await;
    let killed = daemons
        .iter()
        .position(|d| d.pid().to_string() == runner[0])
        .expect("the runner is one of the two daemons");
    daemons[killed].kill9();
    let survivor = &daemons[1 - killed];
    for n in 4..8 {
        ids.push(survivor.enqueue_ok(&card(n)).await);
    }
    for id in &ids {
        survivor
            .wait_state(id, "sent", Duration::from_secs(30))
            .await;
    }
    eventually(Duration::from_secs(20), "8 deliveries", || async {
        lines(&log).len() >= 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ran = lines(&log);
    let seqs: Vec<String> = ran
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let sent: Vec<String> = sent_seqs(survivor)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seqs, sent, "each sent event once, in order: {ran:?}");
    assert!(
        ran[4..]
            .iter()
            .all(|l| l.ends_with(&survivor.pid().to_string())),
        "{ran:?}"
    );
}
