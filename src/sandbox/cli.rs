//! `contactq sandbox`: the command-line flags and the foreground run that serves until
//! Ctrl-C or SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::knobs::{DEFAULT_DELIVER_AFTER_MS, DEFAULT_FAIL_STATUSES, DEFAULT_READ_AFTER_MS};
use super::types::SandboxOptions;
use super::Sandbox;
use crate::state::Authorization;

/// Flags of `contactq sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7880")]
    pub listen: SocketAddr,
    /// stateInstance every instance reports.
    #[arg(long, default_value_t = Authorization::Authorized, value_parser = api_state())]
    pub state: Authorization,
    /// Share of sendContact requests answered with a random failure (0.0-1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Statuses a random failure picks from, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_FAIL_STATUSES)]
    pub fail_statuses: Vec<u16>,
    /// Retry-After (seconds) sent with a failure 429 (default 1).
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Sleep before every answer, e.g. "200ms".
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// delaySendMessagesMilliseconds: milliseconds ("500") or a duration ("5s").
    #[arg(long, value_parser = parse_delay_ms)]
    pub delay_send: Option<u64>,
    /// How long after leaving its queue a sent message shows `delivered` in the journal,
    /// in milliseconds ("1500") or a duration ("2s").
    #[arg(long, value_parser = parse_delay_ms)]
    pub deliver_after: Option<u64>,
    /// How long after `delivered` it shows `read`.
    #[arg(long, value_parser = parse_delay_ms)]
    pub read_after: Option<u64>,
    /// Switch off the per-instance request limits (for benchmarks).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Only accept TOKEN for instance ID (repeatable); others accept any token.
    #[arg(long = "token", value_name = "ID=TOKEN", value_parser = parse_token)]
    pub tokens: Vec<(String, String)>,
}

impl SandboxArgs {
    pub fn options(&self) -> SandboxOptions {
        SandboxOptions {
            state: self.state.clone(),
            rate_limits: !self.no_rate_limits,
            latency: self.latency.unwrap_or_default(),
            fail_rate: self.fail_rate,
            fail_statuses: self.fail_statuses.clone(),
            retry_after_seconds: self.retry_after,
            delay_send_ms: self.delay_send.unwrap_or(0),
            deliver_after_ms: self.deliver_after.unwrap_or(DEFAULT_DELIVER_AFTER_MS),
            read_after_ms: self.read_after.unwrap_or(DEFAULT_READ_AFTER_MS),
            tokens: self.tokens.iter().cloned().collect::<HashMap<_, _>>(),
        }
    }
}

/// `--state`: one of the states the real API reports.
fn api_state() -> impl clap::builder::TypedValueParser<Value = Authorization> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Authorization::api_names())
        .map(|name| Authorization::parse(&name))
}

/// Serves until Ctrl-C or SIGTERM; prints `sandbox listening on http://…` once bound.
pub async fn run(args: SandboxArgs) -> std::io::Result<()> {
    let sandbox = Sandbox::start(args.listen, args.options()).await?;
    println!("sandbox listening on {}", sandbox.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    sandbox.shutdown();
    Ok(())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

fn parse_delay_ms(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    u64::try_from(d.as_millis()).map_err(|e| e.to_string())
}

fn parse_token(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, token)) if !id.is_empty() && !token.is_empty() => {
            Ok((id.to_owned(), token.to_owned()))
        }
        _ => Err("expected ID=TOKEN".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn flags_become_options() {
        let cli = Cli::try_parse_from([
            "x",
            "--state",
            "notAuthorized",
            "--fail-statuses",
            "500,466",
            "--latency",
            "200ms",
            "--delay-send",
            "5s",
            "--no-rate-limits",
            "--deliver-after",
            "2s",
            "--read-after",
            "250",
            "--token",
            "1101=abc",
        ])
        .expect("valid flags");
        let o = cli.args.options();
        assert_eq!(o.state, Authorization::NotAuthorized);
        assert_eq!(o.fail_statuses, vec![500, 466]);
        assert_eq!(o.latency, Duration::from_millis(200));
        assert_eq!(o.delay_send_ms, 5000);
        assert!(!o.rate_limits);
        assert_eq!((o.deliver_after_ms, o.read_after_ms), (2000, 250));
        assert_eq!(o.tokens.get("1101").map(String::as_str), Some("abc"));
        assert_eq!(parse_delay_ms("750"), Ok(750));
        assert!(Cli::try_parse_from(["x", "--state", "nope"]).is_err());
        assert!(Cli::try_parse_from(["x", "--token", "nope"]).is_err());
    }
}
