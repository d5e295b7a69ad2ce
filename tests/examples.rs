//! The client examples in docs/examples/ run as printed against the real daemon's
//! socket: each enqueues (and reads its answer), and its cards reach the sandbox.
//! A missing interpreter skips an example here but fails it under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, received_names, sandbox, DaemonConfig, TestDaemon};
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(name)
}

/// The interpreter on PATH, or None (after saying so) outside CI; under `CI=true` a
/// missing one fails the test: .ci/ship-deps installs them.
fn interpreter(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed (CI=true: run .ci/ship-deps)"
        );
        eprintln!("{name} is not installed: skipped");
    }
    found
}

/// Runs `interpreter example` against a fresh daemon; returns its stdout and the
/// sandbox's received first names once `expect` cards have arrived.
/// `runs` > 1 runs it again against the same daemon (the single-card examples send an
/// Idempotency-Key).
async fn run_example(tool: &str, script: &str, runs: usize, expect: &[&str]) -> Option<String> {
    // The shell examples are curl commands.
    let needed: &[&str] = if tool == "sh" {
        &["sh", "curl"]
    } else {
        &[tool]
    };
    let tools: Vec<PathBuf> = needed
        .iter()
        .map(|t| interpreter(t))
        .collect::<Option<Vec<_>>>()?;
    let sandbox = sandbox().await;
    let mut daemon = TestDaemon::start(&sandbox, DaemonConfig::default()).await;
    let mut outputs = Vec::new();
    for _ in 0..runs {
        let out = Command::new(&tools[0])
            .arg(example(script))
            .env("CONTACTQ_SOCKET", &daemon.socket)
            .env("CONTACTQ_INSTANCE", "main")
            .output()
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{script} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(stdout);
    }
    // A second run repeats the Idempotency-Key: the same message, no second card.
    let first_line = |out: &String| out.lines().next().map(str::to_string);
    assert!(
        outputs
            .iter()
            .all(|o| first_line(o) == first_line(&outputs[0])),
        "{outputs:?}"
    );
    let stdout = outputs.swap_remove(0);
    eventually(
        Duration::from_secs(30),
        "the example's cards arrive",
        || {
            let names = received_names(&sandbox);
            async move { expect.iter().all(|e| names.iter().any(|n| n == e)) }
        },
    )
    .await;
    assert_eq!(
        daemon.all_messages().await.len(),
        expect.len(),
        "one stored message per card, however often the example ran"
    );
    assert_eq!(
        received_names(&sandbox).len(),
        expect.len(),
        "each card arrives once"
    );
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    sandbox.shutdown();
    Some(stdout)
}

/// The single-card examples print the id, then the message read back by that id.
fn assert_id_then_message(stdout: &str, first_name: &str) {
    let mut lines = stdout.lines();
    let id = lines.next().expect("the id line").trim();
    assert_eq!(id.len(), 26, "a ULID, not {id:?}");
    let message: Value = serde_json::from_str(lines.next().expect("the message line"))
        .unwrap_or_else(|e| panic!("the message is not JSON ({e}):\n{stdout}"));
    assert_eq!(message["id"], id);
    assert_eq!(message["instance"], "main");
    assert_eq!(message["contact"]["firstName"], first_name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_curl_example_enqueues_and_reads_back() {
    if let Some(out) = run_example("sh", "enqueue.sh", 2, &["Shell"]).await {
        assert_id_then_message(&out, "Shell");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_example_is_valid_as_printed() {
    if let Some(out) = run_example("sh", "batch.sh", 1, &["Batch-1", "Batch-2"]).await {
        let answer: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
        let messages = answer["messages"].as_array().expect("messages");
        let names: Vec<&str> = messages
            .iter()
            .map(|m| m["contact"]["firstName"].as_str().expect("firstName"))
            .collect();
        assert_eq!(names, ["Batch-1", "Batch-2"], "in the order sent");
        assert_eq!(messages[1]["contact"]["company"], "Example");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stdlib_example_enqueues_and_reads_back() {
    if let Some(out) = run_example("python3", "enqueue.py", 2, &["Python"]).await {
        assert_id_then_message(&out, "Python");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stdlib_example_enqueues_and_reads_back() {
    if let Some(out) = run_example("node", "enqueue.js", 2, &["Node"]).await {
        assert_id_then_message(&out, "Node");
    }
}

#[test]
fn every_example_is_run_by_this_file() {
    let this = include_str!("examples.rs");
    for entry in std::fs::read_dir(example("")).expect("docs/examples") {
        let name = entry.expect("entry").file_name();
        let name = name.to_str().expect("utf-8");
        assert!(
            this.contains(&format!("\"{name}\"")),
            "docs/examples/{name} is not run by tests/examples.rs"
        );
    }
}
