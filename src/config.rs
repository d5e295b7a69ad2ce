//! Settings: the `config` crate's layers (defaults < file < `CONTACTQ_…` environment),
//! durations, instances and their token files (docs/api.md §2).
//!
//! Everything is parsed here, once: the rest of the daemon sees typed values and never a
//! raw string. A bad key stops the daemon with one line naming it (exit 78 in `main`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use hooks::{HookSettings, HookTarget, WebhookSecret};

#[path = "config_hooks.rs"]
mod hooks;

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
    pub database: Database,
    /// `daemon.node`: this daemon's name among those sharing a database (default the
    /// host name); PostgreSQL's `application_name` is `contactq/NODE`.
    pub node: String,
    /// `daemon.lease`: how long a drain lease on a shared database lasts unrenewed
    /// (default 10 s; docs/api.md §10). A dead drainer is replaced within it + 2 s.
    pub lease: Duration,
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
    /// How often a sent card's delivery is looked up while any is followed (≥ 1 s).
    pub delivery_poll: Duration,
    /// How long after its send a card's delivery is followed (> 0).
    pub delivery_window: Duration,
}

#[derive(Debug, Clone)]
pub struct InstanceSettings {
    pub name: String,
    pub api_url: String,
    pub id_instance: String,
    pub api_token: ApiToken,
    pub send_delay: Duration,
    /// `quiet_hours` in `timezone`: nothing is sent inside the window.
    pub quiet_hours: Option<crate::quiet::QuietHours>,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub daemon: DaemonSettings,
    pub queue: QueueSettings,
    pub instances: BTreeMap<String, InstanceSettings>,
    /// `[hooks.NAME]`: the daemon's consumers of the event stream (docs/api.md §11).
    pub hooks: BTreeMap<String, HookSettings>,
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
    #[serde(default)]
    hooks: BTreeMap<String, hooks::RawHook>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: Option<String>,
    socket_mode: Option<String>,
    database: Option<String>,
    database_password_file: Option<String>,
    node: Option<String>,
    lease: Option<String>,
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
    delivery_poll: Option<String>,
    delivery_window: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    api_url: Option<String>,
    id_instance: Option<String>,
    api_token: Option<String>,
    api_token_file: Option<String>,
    send_delay: Option<String>,
    quiet_hours: Option<String>,
    timezone: Option<String>,
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
        if let Some(level) = &d.log_level {
            check_log_level(level)?;
        }
        let database = match d.database {
            Some(url) if is_postgres_url(&url) => {
                let password = d
                    .database_password_file
                    .map(|file| read_token_file("daemon.database_password_file", Path::new(&file)))
                    .transpose()?;
                Database::Postgres(PostgresTarget::parse("daemon.database", &url, password)?)
            }
            other => {
                if d.database_password_file.is_some() {
                    return Err(key_error(
                        "daemon.database_password_file",
                        "only for a postgres:// daemon.database",
                    ));
                }
                let path = other
                    .map(PathBuf::from)
                    .unwrap_or_else(|| default_database(env));
                check_database_path(&path)?;
                Database::Sqlite(path)
            }
        };
        if matches!(database, Database::Postgres(_)) && d.max_database_size.is_some() {
            return Err(key_error(
                "daemon.max_database_size",
                "caps a SQLite file; a PostgreSQL database's room is the server's to manage",
            ));
        }
        let node = match d.node {
            Some(node) if node.is_empty() || node.len() > 48 || node.contains(char::is_control) => {
                return Err(key_error(
                    "daemon.node",
                    "a node name is 1 to 48 printable characters",
                ))
            }
            Some(node) => node,
            None => host_name(),
        };
        let lease = parse_duration("daemon.lease", d.lease.as_deref().unwrap_or("10s"))?;
        if !(Duration::from_secs(3)..=Duration::from_secs(600)).contains(&lease) {
            return Err(key_error(
                "daemon.lease",
                "a drain lease lasts between 3s and 10m",
            ));
        }
        let daemon = DaemonSettings {
            socket: d
                .socket
                .map(PathBuf::from)
                .unwrap_or_else(|| default_socket(env)),
            socket_mode,
            database,
            node,
            lease,
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
            delivery_poll: dur("delivery_poll", q.delivery_poll, "15s")?,
            delivery_window: dur("delivery_window", q.delivery_window, "24h")?,
        };
        // The API answers lastOutgoingMessages once a second: a faster poll is a mistake.
        if queue.delivery_poll < Duration::from_secs(1) {
            return Err(key_error(
                "queue.delivery_poll",
                "must be at least 1s (the API allows one lastOutgoingMessages a second)",
            ));
        }
        if queue.delivery_window.is_zero() {
            return Err(key_error(
                "queue.delivery_window",
                "must be more than 0 (how long a sent card's delivery is followed)",
            ));
        }
        // A daemon without an instance would take no card and send nothing: a mistake.
        if raw.instances.is_empty() {
            return Err(key_error(
                "instances",
                "no instance configured: add an [instances.NAME] table with id_instance and api_token",
            ));
        }
        let mut instances = BTreeMap::new();
        for (name, inst) in raw.instances {
            instances.insert(name.clone(), instance_from_raw(&name, inst)?);
        }
        let hooks = hooks::hooks_from_raw(raw.hooks)?;
        Ok(Settings {
            daemon,
            queue,
            instances,
            hooks,
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
    let (api_token, token_key) = match (raw.api_token, raw.api_token_file) {
        (Some(_), Some(_)) => {
            return Err(key_error(
                key("api_token"),
                "set api_token or api_token_file, not both",
            ))
        }
        (Some(t), None) => (t, key("api_token")),
        (None, Some(file)) => {
            let file_key = key("api_token_file");
            (read_token_file(&file_key, Path::new(&file))?, file_key)
        }
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
            token_key,
            "the token must be at least 8 characters, without '/', '?', '#' or spaces",
        ));
    }
    let send_delay = parse_duration(
        &key("send_delay"),
        raw.send_delay.as_deref().unwrap_or("5s"),
    )?;
    // The API's own minimum delaySendMessagesMilliseconds is 500 ms; lower only makes
    // sense against the loopback sandbox (docs/api.md §6).
    if send_delay < Duration::from_millis(500) && !is_loopback(&api_url) {
        return Err(key_error(
            key("send_delay"),
            "under 500ms is allowed only against a loopback sandbox (the Green API's minimum is 500ms)",
        ));
    }
    let quiet_hours = quiet_hours(name, raw.quiet_hours, raw.timezone)?;
    Ok(InstanceSettings {
        name: name.to_string(),
        api_url,
        id_instance,
        api_token: ApiToken::new(api_token),
        send_delay,
        quiet_hours,
    })
}

/// `quiet_hours = "22:00-08:00"` needs `timezone = "Europe/Moscow"` (an IANA name):
/// a window without a zone would silently mean the server's. A zone alone is allowed
/// (it says nothing without a window) but must still be a zone.
fn quiet_hours(
    name: &str,
    window: Option<String>,
    zone: Option<String>,
) -> Result<Option<crate::quiet::QuietHours>, ConfigError> {
    use crate::quiet::{QuietError, QuietHours};
    let key = |k: &str| format!("instances.{name}.{k}");
    let checked = |window: &str, zone: &str| {
        QuietHours::parse(window, zone).map_err(|e| match e {
            QuietError::Window(_) => key_error(key("quiet_hours"), e.to_string()),
            QuietError::Zone(_) => key_error(key("timezone"), e.to_string()),
        })
    };
    match (window, zone) {
        (Some(window), Some(zone)) => checked(&window, &zone).map(Some),
        (Some(_), None) => Err(key_error(
            key("timezone"),
            "missing: quiet_hours needs the IANA time zone it is read in, like \"Europe/Moscow\"",
        )),
        (None, Some(zone)) => checked("00:00-00:01", &zone).map(|_| None),
        (None, None) => Ok(None),
    }
}

/// The levels a `log_level` directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `log_level`: a level, or comma-separated `LEVEL` / `TARGET=LEVEL` directives. A word
/// that is not a level (`"verbose"`) would read as a target and silence every log line,
/// so it is refused rather than passed to the filter.
fn check_log_level(text: &str) -> Result<(), ConfigError> {
    let bad = |why: String| key_error("daemon.log_level", why);
    let is_level = |l: &str| LOG_LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    for directive in text.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if directive.is_empty() || !is_level(level) {
            return Err(bad(format!(
                "'{directive}' is not a level ({}) or TARGET=LEVEL",
                LOG_LEVELS.join(", ")
            )));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| ())
        .map_err(|e| bad(format!("'{text}' is not a log filter ({e})")))
}

/// The database file must be creatable: its nearest existing ancestor is a directory we
/// may write in (the daemon creates the missing directories), and the file, if present,
/// is a regular file. Checked without creating anything, so `check-config` may use it.
fn check_database_path(database: &Path) -> Result<(), ConfigError> {
    let bad = |why: String| {
        key_error(
            "daemon.database",
            format!("cannot create {}: {why}", database.display()),
        )
    };
    // Missing, or under a file (ENOTDIR): walk up to say which part is wrong.
    let absent = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
    };
    match std::fs::metadata(database) {
        Ok(meta) if meta.is_file() => return Ok(()),
        Ok(_) => return Err(bad("it exists and is not a regular file".into())),
        Err(e) if absent(&e) => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    if database.file_name().is_none() {
        return Err(bad("the path names no file".into()));
    }
    let mut dir = database.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        match std::fs::metadata(d) {
            Ok(meta) if meta.is_dir() => {
                return if writable(d) {
                    Ok(())
                } else {
                    Err(bad(format!("{} is not writable", d.display())))
                };
            }
            Ok(_) => return Err(bad(format!("{} is not a directory", d.display()))),
            Err(e) if absent(&e) => dir = d.parent(),
            Err(e) => return Err(bad(format!("{}: {e}", d.display()))),
        }
    }
    Err(bad("no existing parent directory".into()))
}

/// This machine's host name (the default `daemon.node`).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if ok && !name.is_empty() => name.chars().take(48).collect(),
        _ => "localhost".to_string(),
    }
}

/// Whether this process may create entries in `dir` (access(2), so root passes).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Largest token file read: real tokens are ~50 bytes; a bigger file is a wrong path
/// (and `/dev/zero` must not be read forever).
const MAX_TOKEN_FILE: u64 = 4096;

/// Reads `api_token_file`: a regular file, not readable or writable by others nor
/// writable by its group (mode 0640 or tighter), not empty. The error names the key and
/// the file, never the content.
fn read_token_file(key: &str, file: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let bad = |why: String| key_error(key, format!("{}: {why}", file.display()));
    let meta = std::fs::metadata(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file".into()),
        _ => bad(format!("cannot read it: {e}")),
    })?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o037 != 0 {
        return Err(bad(format!(
            "mode {mode:04o} lets others read or change the token: chmod 0600 (0640 at most)"
        )));
    }
    if meta.len() > MAX_TOKEN_FILE {
        return Err(bad(format!(
            "{} bytes; a token file holds one token (at most {MAX_TOKEN_FILE} bytes)",
            meta.len()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_TOKEN_FILE).read_to_string(&mut text))
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    Ok(token.to_string())
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

/// The default socket (docs/api.md §2), shared by the daemon and the CLI:
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
    daemon_path_from_config(file, "socket")
}

/// The `[daemon] database` an offline command (`contactq restore`) works on, read the
/// same lenient way as [`socket_from_config`] (no token is needed to find it), else the
/// daemon's default.
pub fn database_from_config(file: Option<&Path>) -> PathBuf {
    daemon_path_from_config(file, "database").unwrap_or_else(|| {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        default_database(&env)
    })
}

/// `CONTACTQ_DAEMON__<KEY>` over `[daemon] <key>` in the file (`file`, else the system
/// config).
fn daemon_path_from_config(file: Option<&Path>, key: &str) -> Option<PathBuf> {
    let var = format!("CONTACTQ_DAEMON__{}", key.to_ascii_uppercase());
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(value));
    }
    let file = file.or_else(|| Some(Path::new(SYSTEM_CONFIG)).filter(|p| p.exists()))?;
    config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .build()
        .ok()?
        .get_string(&format!("daemon.{key}"))
        .ok()
        .map(PathBuf::from)
}

#[path = "config_database.rs"]
mod database;
pub use database::{is_postgres_url, Database, PostgresTarget};

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
