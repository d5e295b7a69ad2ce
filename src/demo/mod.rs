//! `contactq demo`: the whole system on one screen, with no config file and no account.
//!
//! It starts a sandbox Green API (not authorized at first) and a daemon in a temporary
//! directory, enqueues the seed's example cards and a few invalid ones over the
//! daemon's socket, authorizes the instance a few seconds later and shows the cards
//! drain, then follows them on WhatsApp (the sandbox delivers and reads them: queued ->
//! sent -> delivered -> read) while an exec hook hears of each delivery, then prints a
//! table of them and the hook's output, and removes everything it made.
//!
//! Files: `stage` (temp dir, sandbox, config, daemon: up and down), `cards` (the
//! example and invalid cards, and enqueueing them), `show` (the live progress and the
//! final table). Like the CLI, the demo talks to the daemon only through its socket.

/// `println!` that returns an error instead of panicking when stdout is closed
/// (`contactq demo | head`), so the demo still stops the daemon and cleans up.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::demo::write_line(format_args!($($arg)*))
    };
}

mod cards;
mod show;
mod stage;

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::cli::client::{ApiRequest, ApiResponse, Client, ClientError};
use crate::config::{ConfigError, LogFormat};
use crate::daemon::DaemonError;

use stage::Stage;

/// The instance name the demo configures.
const INSTANCE: &str = "demo";

/// How long the instance stays `notAuthorized`, so the hold can be seen.
const HOLD: Duration = Duration::from_secs(3);

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("daemon: {0}")]
    Daemon(#[from] DaemonError),
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The daemon answered something the demo did not expect.
    #[error("{what}: the daemon answered {status}: {body}")]
    Answer {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: cannot read the daemon's answer: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Stuck(String),
    #[error("interrupted; cleaned up")]
    Interrupted,
}

impl DemoError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
        let what = what.into();
        move |source| DemoError::Io { what, source }
    }
}

/// Runs the demo; everything it started is stopped and removed on success and on error.
pub async fn run() -> Result<(), DemoError> {
    // Only warnings reach the screen (on stderr), so the demo's own output stays readable.
    crate::logging::init(LogFormat::Text, Some("warn"));
    let started = Instant::now();
    let stage = Stage::start().await?;
    // Ctrl-C still stops the daemon and removes the directory.
    let outcome = tokio::select! {
        outcome = script(&stage) => outcome,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    };
    let cleaned = stage.stop().await;
    outcome?;
    let path = cleaned?;
    say!(
        "cleaned up {} (daemon and sandbox stopped) after {:.1}s",
        path.display(),
        started.elapsed().as_secs_f64()
    )
}

/// One line on stdout; see [`say!`].
fn write_line(args: fmt::Arguments) -> Result<(), DemoError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}")
        .and_then(|()| out.flush())
        .map_err(DemoError::io("cannot write to stdout"))
}

/// The story: enqueue while held, show the hold, authorize, watch the drain, tabulate.
async fn script(stage: &Stage) -> Result<(), DemoError> {
    say!(
        "sandbox Green API at {} (instance state: notAuthorized)",
        stage.sandbox.url()
    )?;
    say!("daemon listening on {}", stage.socket.display())?;
    let client = Client::new(&stage.socket);
    say!("\n== enqueue the example cards (the instance is not authorized yet)")?;
    let queued = cards::enqueue_examples(&client).await?;
    say!("\n== invalid cards are refused before anything is stored")?;
    cards::enqueue_invalid(&client).await?;

    say!("\n== the hold")?;
    show::hold(&client, &queued).await?;

    say!(
        "\n== authorizing the instance in {}s; then the cards drain, one per send_delay (1s)",
        HOLD.as_secs()
    )?;
    show::drain(&client, &stage.sandbox, queued.len()).await?;

    say!("\n== on WhatsApp: each sent card is followed until it is read (delivery_poll 1s)")?;
    show::delivery(&client, &queued).await?;

    say!("\n== the cards")?;
    show::table(&client, &queued).await?;

    say!("\n== the exec hook [hooks.demo] (events delivered, read) wrote, one line per event:")?;
    show::hook_output(&stage.hook_log(), &client).await?;
    Ok(())
}

/// Sends one request and insists on `expect`ed status; `what` names the step in errors.
async fn call(
    client: &Client,
    request: ApiRequest,
    expect: u16,
    what: &str,
) -> Result<ApiResponse, DemoError> {
    let answer = client.send(request).await?;
    if answer.status != expect {
        return Err(DemoError::Answer {
            what: what.to_string(),
            status: answer.status,
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        });
    }
    Ok(answer)
}

/// [`call`], then reads the JSON answer as `T`.
async fn fetch<T: serde::de::DeserializeOwned>(
    client: &Client,
    request: ApiRequest,
    expect: u16,
    what: &str,
) -> Result<T, DemoError> {
    let answer = call(client, request, expect, what).await?;
    serde_json::from_slice(&answer.body).map_err(|source| DemoError::Json {
        what: what.to_string(),
        source,
    })
}
