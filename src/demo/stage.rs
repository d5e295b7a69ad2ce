//! The demo's stage: a temporary directory holding a real TOML config, the socket, the
//! database and a small exec hook (a shell script appending each event it is given to
//! `hook.log`); a sandbox Green API that starts `notAuthorized`; and a daemon started
//! in-process from that config. `stop` takes them down in order and removes the
//! directory, so nothing outlives the demo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{DemoError, INSTANCE};
use crate::config::Settings;
use crate::daemon::{self, DaemonError};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::shutdown::{self, ShutdownTrigger};

/// Everything the demo started.
pub struct Stage {
    dir: TempDir,
    pub sandbox: Sandbox,
    pub socket: PathBuf,
    trigger: ShutdownTrigger,
    daemon: JoinHandle<Result<(), DaemonError>>,
}

impl Stage {
    /// Makes the directory, starts the sandbox and the daemon, and returns once the
    /// daemon's socket listens.
    pub async fn start() -> Result<Stage, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("contactq-demo-")
            .tempdir_in(temp_base())
            .map_err(DemoError::io("cannot make a temporary directory"))?;
        say!("contactq demo: working in {}", dir.path().display())?;

        let options = SandboxOptions {
            state: crate::state::Authorization::NotAuthorized,
            ..SandboxOptions::default()
        };
        let addr = "127.0.0.1:0".parse().map_err(|e| DemoError::Io {
            what: "sandbox address".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let sandbox = Sandbox::start(addr, options)
            .await
            .map_err(DemoError::io("cannot start the sandbox"))?;

        match start_daemon(dir.path(), &sandbox).await {
            Ok((socket, trigger, daemon)) => Ok(Stage {
                dir,
                sandbox,
                socket,
                trigger,
                daemon,
            }),
            Err(e) => {
                sandbox.shutdown();
                Err(e)
            }
        }
    }

    /// The file the demo's exec hook appends one line per event to.
    pub fn hook_log(&self) -> PathBuf {
        self.dir.path().join(HOOK_LOG)
    }

    /// Stops the daemon (it finishes an in-flight send), then the sandbox, and removes
    /// the directory. Returns the directory's path, now gone.
    pub async fn stop(self) -> Result<PathBuf, DemoError> {
        self.trigger.fire();
        let stopped = self.daemon.await;
        self.sandbox.shutdown();
        let path = self.dir.path().to_path_buf();
        self.dir
            .close()
            .map_err(DemoError::io(format!("cannot remove {}", path.display())))?;
        match stopped {
            Ok(result) => result?,
            Err(join) => return Err(DemoError::Stuck(format!("the daemon task failed: {join}"))),
        }
        Ok(path)
    }
}

/// `$TMPDIR`, unless the socket path under it would not fit a Unix socket address
/// (about 108 bytes); then `/tmp`.
fn temp_base() -> PathBuf {
    let base = std::env::temp_dir();
    let socket_len = base.as_os_str().len() + "/contactq-demo-XXXXXX/contactq.sock".len();
    if socket_len < 100 {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// The hook's script and its log, in the demo's directory.
const HOOK_SCRIPT: &str = "hook.sh";
const HOOK_LOG: &str = "hook.log";

/// Writes the exec hook: one line per event, from the environment the daemon gives it.
fn write_hook(dir: &Path) -> Result<(), DemoError> {
    let script = dir.join(HOOK_SCRIPT);
    let text = format!(
        "#!/bin/sh
# written by `contactq demo`: one line per event it is given
         echo \"$CONTACTQ_SEQ $CONTACTQ_EVENT $CONTACTQ_MESSAGE_ID\" >> \"$(dirname \"$0\")/{HOOK_LOG}\"
"
    );
    std::fs::write(&script, text)
        .map_err(DemoError::io(format!("cannot write {}", script.display())))
}

type Started = (
    PathBuf,
    ShutdownTrigger,
    JoinHandle<Result<(), DaemonError>>,
);

/// Writes the config, loads it the way `contactq daemon` does, and starts the daemon.
async fn start_daemon(dir: &Path, sandbox: &Sandbox) -> Result<Started, DemoError> {
    let config = dir.join("contactq.toml");
    std::fs::write(&config, config_text(dir, &sandbox.url())?)
        .map_err(DemoError::io(format!("cannot write {}", config.display())))?;
    write_hook(dir)?;
    // An empty environment: CONTACTQ_* variables of the user's shell must not leak in.
    let settings = Settings::load_from(Some(&config), &HashMap::new())?;

    let (trigger, shutdown) = shutdown::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let daemon = tokio::spawn(daemon::run_until(settings, shutdown, move |socket| {
        let _ = ready_tx.send(socket.to_path_buf());
    }));
    match ready_rx.await {
        Ok(socket) => Ok((socket, trigger, daemon)),
        // The daemon dropped the callback without calling it: it stopped on an error.
        Err(_) => match daemon.await {
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => Err(DemoError::Stuck(
                "the daemon stopped before listening".into(),
            )),
            Err(join) => Err(DemoError::Stuck(format!("the daemon task failed: {join}"))),
        },
    }
}

/// The config file: socket and database in `dir`, quick polling and pacing so the demo
/// is over in seconds (a real instance's `send_delay` is 500 ms at least).
fn config_text(dir: &Path, api_url: &str) -> Result<String, DemoError> {
    let quoted = |path: PathBuf| -> Result<String, DemoError> {
        let text = path.to_str().ok_or_else(|| DemoError::Io {
            what: format!("{} is not UTF-8", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        // A JSON string is a valid TOML basic string (same escapes).
        Ok(serde_json::Value::from(text).to_string())
    };
    let socket = quoted(dir.join("contactq.sock"))?;
    let database = quoted(dir.join("queue.db"))?;
    let hook = quoted(dir.join(HOOK_SCRIPT))?;
    let api_url = serde_json::Value::from(api_url).to_string();
    Ok(format!(
        r#"# written by `contactq demo`
[daemon]
socket = {socket}
database = {database}

[queue]
state_poll = "1s"
retry_initial = "500ms"
delivery_poll = "1s"

[instances.{INSTANCE}]
api_url = {api_url}
id_instance = "1101000001"
api_token = "demo-token"
send_delay = "1s"

[hooks.demo]
exec = ["/bin/sh", {hook}]
events = ["delivered", "read"]
"#
    ))
}
