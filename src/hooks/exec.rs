//! An exec delivery: the hook's program run once per event, the event JSON on its
//! stdin and its fields in the environment (docs/api.md §11). Exit 0 is a delivery;
//! another exit, a signal, or running past the hook's `timeout` is a failure. A program
//! still running at the time-out is killed with its whole process group (it runs in a
//! group of its own), so a hook that hangs, and whatever it started, cannot pile up.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::protocol::EventView;

/// Most bytes of the program's stderr kept in the error.
const MAX_STDERR: usize = 2000;

/// The environment a hook program gets besides the daemon's own.
pub fn environment(event: &EventView) -> Vec<(&'static str, String)> {
    let state = event
        .message
        .as_ref()
        .map_or(event.event.state(), |m| m.state);
    let id_message = event
        .message
        .as_ref()
        .and_then(|m| m.id_message.clone())
        .unwrap_or_default();
    vec![
        ("CONTACTQ_EVENT", event.event.as_str().to_string()),
        ("CONTACTQ_SEQ", event.seq.to_string()),
        ("CONTACTQ_MESSAGE_ID", event.id.to_string()),
        ("CONTACTQ_INSTANCE", event.instance.clone()),
        ("CONTACTQ_STATE", state.as_str().to_string()),
        ("CONTACTQ_ID_MESSAGE", id_message),
    ]
}

/// Kills the program's process group unless it ended: on a time-out, and when the
/// delivery is dropped (the daemon shuts down meanwhile).
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) on a process group this delivery started; no memory shared.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// The variables a hook program inherits from the daemon; nothing else of its
/// environment reaches the program.
pub const INHERITED: [&str; 8] = [
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "TMPDIR",
];

/// Runs `argv` with `event` (whose JSON is `body`) within `timeout`.
pub async fn run(
    argv: &[String],
    event: &EventView,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("exec names no program")?;
    // The daemon's own environment stays out (it may carry the API token, a webhook
    // secret or the credentials directory): the program gets a few neutral variables
    // and the event's.
    let inherited = INHERITED
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (*name, value)));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(inherited)
        .envs(environment(event))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut group = Group(child.id().map(|pid| pid as i32));
    let mut stdin = child.stdin.take();
    // Read all along, so a talkative program never blocks on a full pipe.
    let stderr = child.stderr.take().map(|err| tokio::spawn(read_some(err)));
    let outcome = tokio::time::timeout(timeout, async {
        if let Some(mut input) = stdin.take() {
            // A program that does not read its stdin may exit first: not a failure.
            let _ = input.write_all(body).await;
        }
        child.wait().await
    })
    .await;
    let status = match outcome {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("waiting for {program} failed: {e}")),
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            return Err(format!(
                "{program} did not finish within {} s; killed",
                timeout.as_secs_f64()
            ));
        }
    };
    // The program ended: whatever it left running in its group goes too.
    drop(std::mem::replace(&mut group, Group(None)));
    if status.success() {
        return Ok(());
    }
    let said = match stderr {
        Some(reader) => match tokio::time::timeout(Duration::from_millis(200), reader).await {
            Ok(Ok(said)) => said,
            _ => String::new(),
        },
        None => String::new(),
    };
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "failed".to_string(),
    };
    if said.is_empty() {
        Err(format!("{program}: {how}"))
    } else {
        Err(format!("{program}: {how}: {said}"))
    }
}

/// What the program wrote on stderr until it closed it: the first [`MAX_STDERR`]
/// bytes, on one line (the rest is read and dropped).
async fn read_some(mut err: tokio::process::ChildStderr) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match err.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) if buf.len() < MAX_STDERR => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
        }
    }
    buf.truncate(MAX_STDERR);
    String::from_utf8_lossy(&buf)
        .replace(['\n', '\r'], " ")
        .trim()
        .to_string()
}
