//! Settings: the `config` crate's layers (defaults < file < `CONTACTQ_…` environment),
//! durations, instances and their token files (SPEC §2).
//!
//! Everything is parsed here, once: the rest of the daemon sees typed values and never a
//! raw string. A bad key stops the daemon with one line naming it (exit 78 in `main`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the daemon looks when `--config` is not given.
pub const SYSTEM_CONFIG: &str = "/etc/contactq/contactq.toml";

/// A configuration problem; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {key}: {problem}")]
    Key { key: String, problem: String },
}

fn key_error(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The Green API token of an instance. It prints as `***` so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
    /// The token itself, for building request URLs and for cutting it out of texts.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub database: PathBuf,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    /// `max_database_size` in SQLite pages of 4 KiB: enqueues past it answer 503.
    pub max_database_pages: Option<u64>,
    /// `max_connections`: socket connections served at once (default 4096).
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub max_age: Duration,
    pub state_poll: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub reconcile_lag: Duration,
    pub quota_retry: Duration,
    pub keep_done: Duration,
    /// How long one upstream request may take before it counts as timed out.
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct InstanceSettings {
    pub name: String,
    pub api_url: String,
    pub id_instance: String,
    pub api_token: ApiToken,
    pub send_delay: Duration,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub daemon: DaemonSettings,
    pub queue: QueueSettings,
    pub instances: BTreeMap<String, InstanceSettings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    instances: BTreeMap<String, RawInstance>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<String>,
    socket_mode: Option<String>,
    database: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    #[serde(default)]
    allowed_uids: Vec<u32>,
    #[serde(default)]
    allowed_gids: Vec<u32>,
    max_database_size: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    max_age: Option<String>,
    state_poll: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    reconcile_lag: Option<String>,
    quota_retry: Option<String>,
    keep_done: Option<String>,
    request_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    api_url: Option<String>,
    id_instance: Option<String>,
    api_token: Option<String>,
    api_token_file: Option<String>,
    send_delay: Option<String>,
}

impl Settings {
    /// Loads defaults, then `file` (else [`SYSTEM_CONFIG`] if it exists), then the
    /// `CONTACTQ_<SECTION>__<KEY>` environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// [`Settings::load`] with the environment passed in (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Load(format!(
                        "{}: no such file",
                        path.display()
                    )));
                }
                builder =
                    builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
            }
            None if Path::new(SYSTEM_CONFIG).exists() => {
                builder = builder.add_source(
                    config::File::with_name(SYSTEM_CONFIG).format(config::FileFormat::Toml),
                );
            }
            None => {}
        }
        // Only `CONTACTQ_<SECTION>__<KEY>` variables are settings: CONTACTQ_CONFIG and
        // CONTACTQ_SOCKET belong to the command line and must not read as unknown keys.
        let layered: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("CONTACTQ_") && k.contains("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CONTACTQ")
                .prefix_separator("_")
                .separator("__")
                .source(Some(layered)),
        );
        let raw: RawSettings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(one_line(&e.to_string())))?;
        Self::from_raw(raw, env)
    }

    fn from_raw(
        raw: RawSettings,
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let d = raw.daemon;
        let socket_mode = match d.socket_mode.as_deref() {
            None => 0o660,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    key_error(
                        "daemon.socket_mode",
                        format!("'{m}' is not an octal mode like \"0660\""),
                    )
                })?,
        };
        let metrics_listen = d
            .metrics_listen
            .map(|a| {
                a.parse().map_err(|_| {
                    key_error(
                        "daemon.metrics_listen",
                        format!("'{a}' is not an address like 127.0.0.1:9464"),
                    )
                })
            })
            .transpose()?;
        let log_format = match d.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(key_error(
                    "daemon.log_format",
                    format!("'{other}' is not text or json"),
                ))
            }
        };
        let daemon = DaemonSettings {
            socket: d
                .socket
                .map(PathBuf::from)
                .unwrap_or_else(|| default_socket(env)),
            socket_mode,
            database: d
                .database
                .map(PathBuf::from)
                .unwrap_or_else(|| default_database(env)),
            metrics_listen,
            log_format,
            log_level: d.log_level,
            allowed_uids: d.allowed_uids,
            allowed_gids: d.allowed_gids,
            max_database_pages: d
                .max_database_size
                .map(|size| {
                    parse_size("daemon.max_database_size", &size).map(|b| (b / 4096).max(1))
                })
                .transpose()?,
            max_connections: match d.max_connections {
                None => 4096,
                Some(n @ 1..=1_000_000) => n,
                Some(n) => {
                    let why = format!("{n} is not between 1 and 1000000");
                    return Err(key_error("daemon.max_connections", why));
                }
            },
        };
        let q = raw.queue;
        let dur = |key: &str, v: Option<String>, default: &str| {
            parse_duration(&format!("queue.{key}"), v.as_deref().unwrap_or(default))
        };
        let queue = QueueSettings {
            max_age: dur("max_age", q.max_age, "24h")?,
            state_poll: dur("state_poll", q.state_poll, "30s")?.max(Duration::from_secs(1)),
            retry_initial: dur("retry_initial", q.retry_initial, "2s")?,
            retry_max: dur("retry_max", q.retry_max, "5m")?,
            reconcile_lag: dur("reconcile_lag", q.reconcile_lag, "2m")?,
            quota_retry: dur("quota_retry", q.quota_retry, "1h")?,
            keep_done: dur("keep_done", q.keep_done, "30d")?,
            request_timeout: dur("request_timeout", q.request_timeout, "30s")?,
        };
        let mut instances = BTreeMap::new();
        for (name, inst) in raw.instances {
            instances.insert(name.clone(), instance_from_raw(&name, inst)?);
        }
        Ok(Settings {
            daemon,
            queue,
            instances,
        })
    }
}

fn instance_from_raw(name: &str, raw: RawInstance) -> Result<InstanceSettings, ConfigError> {
    let key = |k: &str| format!("instances.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(key_error(
            format!("instances.{name}"),
            "an instance name may hold only letters, digits, '_' and '-'",
        ));
    }
    let id_instance = raw
        .id_instance
        .ok_or_else(|| key_error(key("id_instance"), "missing"))?;
    if id_instance.is_empty() || !id_instance.bytes().all(|b| b.is_ascii_digit()) {
        return Err(key_error(
            key("id_instance"),
            "must be the instance's digits",
        ));
    }
    let api_url = raw
        .api_url
        .unwrap_or_else(|| "https://api.green-api.com".to_string())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        return Err(key_error(
            key("api_url"),
            "must start with http:// or https://",
        ));
    }
    let api_token = match (raw.api_token, raw.api_token_file) {
        (Some(_), Some(_)) => {
            return Err(key_error(
                key("api_token"),
                "set api_token or api_token_file, not both",
            ))
        }
        (Some(t), None) => t,
        (None, Some(file)) => std::fs::read_to_string(&file)
            .map_err(|e| key_error(key("api_token_file"), format!("cannot read {file}: {e}")))?
            .trim()
            .to_string(),
        (None, None) => {
            return Err(key_error(
                key("api_token"),
                "missing (set api_token or api_token_file)",
            ))
        }
    };
    // Short tokens are refused: the token is cut out of every log line and error, and
    // cutting a 1-character "token" out of text would mangle it (real ones are ~50).
    if api_token.len() < 8 || api_token.contains(['/', '?', '#', ' ']) {
        return Err(key_error(
            key("api_token"),
            "must be at least 8 characters, without '/', '?', '#' or spaces",
        ));
    }
    let send_delay = parse_duration(
        &key("send_delay"),
        raw.send_delay.as_deref().unwrap_or("5s"),
    )?;
    // The API's own minimum delaySendMessagesMilliseconds is 500 ms; lower only makes
    // sense against the loopback sandbox (SPEC section 6).
    if send_delay < Duration::from_millis(500) && !is_loopback(&api_url) {
        return Err(key_error(
            key("send_delay"),
            "under 500ms is allowed only against a loopback sandbox (the Green API's minimum is 500ms)",
        ));
    }
    Ok(InstanceSettings {
        name: name.to_string(),
        api_url,
        id_instance,
        api_token: ApiToken::new(api_token),
        send_delay,
    })
}

/// Whether an API URL points at this machine (the sandbox).
fn is_loopback(api_url: &str) -> bool {
    let rest = api_url.split_once("://").map_or(api_url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A multi-line parser message (TOML errors draw the line) as one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses `"5s"`, `"500ms"`, `"24h"`, `"30d"`; the error names the key.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim())
        .map_err(|e| key_error(key, format!("'{text}' is not a duration like \"5s\" ({e})")))
}

/// Parses `"512MiB"`, `"1GiB"`, `"100000KiB"` or plain bytes; the error names the key.
pub fn parse_size(key: &str, text: &str) -> Result<u64, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| multiplier > 0)
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| key_error(key, format!("'{text}' is not a size like \"512MiB\"")))
}

fn default_socket(env: &std::collections::HashMap<String, String>) -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    socket_path_from(
        env.get("RUNTIME_DIRECTORY").map(String::as_str),
        env.get("XDG_RUNTIME_DIR").map(String::as_str),
        uid,
    )
}

/// The default socket (SPEC section 2), shared by the daemon and the CLI:
/// `$RUNTIME_DIRECTORY/contactq.sock` under systemd, else
/// `$XDG_RUNTIME_DIR/contactq.sock`, else `/tmp/contactq-<uid>.sock`.
pub fn socket_path_from(runtime: Option<&str>, xdg: Option<&str>, uid: u32) -> PathBuf {
    // systemd joins several RuntimeDirectory= entries with ':'; the first is ours.
    if let Some(dir) = runtime
        .and_then(|d| d.split(':').next())
        .filter(|d| !d.is_empty())
    {
        return Path::new(dir).join("contactq.sock");
    }
    if let Some(dir) = xdg.filter(|d| !d.is_empty()) {
        return Path::new(dir).join("contactq.sock");
    }
    PathBuf::from(format!("/tmp/contactq-{uid}.sock"))
}

fn default_database(env: &std::collections::HashMap<String, String>) -> PathBuf {
    if let Some(dir) = env.get("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        return Path::new(dir.split(':').next().unwrap_or(dir)).join("queue.db");
    }
    let state_home = env
        .get("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state_home.join("contactq").join("queue.db")
}

/// The `[daemon] socket` a client should use, as the daemon would read it:
/// `CONTACTQ_DAEMON__SOCKET` over the file (`file`, else the system config). None when
/// neither sets it (the client then uses the built-in default).
pub fn socket_from_config(file: Option<&Path>) -> Option<PathBuf> {
    if let Some(socket) = std::env::var_os("CONTACTQ_DAEMON__SOCKET").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(socket));
    }
    let file = file.or_else(|| Some(Path::new(SYSTEM_CONFIG)).filter(|p| p.exists()))?;
    config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .build()
        .ok()?
        .get_string("daemon.socket")
        .ok()
        .map(PathBuf::from)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
