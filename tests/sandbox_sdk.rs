//! The sandbox against the official Green API Python SDK (whatsapp-api-client-python):
//! if the SDK can send a contact card and read it back from the journal, the
//! sandbox's paths and answers are those of the real API.
//!
//! Needs `CONTACTQ_SDK_PYTHON`, an interpreter with the SDK installed (.ci/run makes
//! one; see the README). Without it the test says it is skipped, and under `CI=true`
//! it fails instead.

mod common;

use std::time::Duration;

use contactq::sandbox::{Sandbox, SandboxOptions};

const ID: &str = "1101000001";

#[tokio::test]
async fn official_python_sdk_sends_a_contact_and_reads_the_journal() {
    let Ok(python) = std::env::var("CONTACTQ_SDK_PYTHON") else {
        common::skip_or_fail(
            "CONTACTQ_SDK_PYTHON is not set (an interpreter with whatsapp-api-client-python)",
        );
        return;
    };
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().expect("addr"),
        SandboxOptions::default(),
    )
    .await
    .expect("sandbox starts");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/check_sdk.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .arg(sandbox.url())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK check finishes within 2 minutes")
        .expect("the SDK interpreter runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_sdk.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("sdk check:"), "{stdout}");

    // Two valid cards went in, each once; the invalid one was refused.
    let received = sandbox.received(ID);
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1].body["contact"]["phoneContact"], "79001234569");
    assert_eq!(sandbox.request_count(ID, "sendContact"), 3);
    assert_eq!(sandbox.request_count(ID, "getStateInstance"), 2);
    sandbox.shutdown();
}
