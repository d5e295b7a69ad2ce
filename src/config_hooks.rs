//! `[hooks.NAME]` (docs/api.md §11): the daemon's named consumers of the event stream,
//! each an `exec` program or a `webhook_url` with its `webhook_secret`, parsed and
//! checked here once. A mistake names its key (exit 78, and `check-config` says so).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::{key_error, parse_duration, ConfigError};
use crate::event::EventKind;

/// The secret a webhook's signature is made with. It prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a hook delivers its events.
#[derive(Debug, Clone, PartialEq)]
pub enum HookTarget {
    /// A program and its arguments, run once per event (the event on stdin).
    Exec(Vec<String>),
    /// An HTTP(S) URL the event is POSTed to, signed with the secret.
    Webhook { url: String, secret: WebhookSecret },
}

impl HookTarget {
    /// `exec` or `webhook`, as `status` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            HookTarget::Exec(_) => "exec",
            HookTarget::Webhook { .. } => "webhook",
        }
    }
}

/// One `[hooks.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSettings {
    pub name: String,
    pub target: HookTarget,
    /// The events it takes; the others only move its cursor on.
    pub events: Vec<EventKind>,
    /// How long one delivery may take (the program is killed, the request dropped):
    /// a failure, retried.
    pub timeout: Duration,
    /// The first wait after a failed delivery, doubled after each until `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    exec: Option<Vec<String>>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    events: Option<Vec<String>>,
    timeout: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
}

/// Every `[hooks.NAME]`, checked.
pub(super) fn hooks_from_raw(
    raw: BTreeMap<String, RawHook>,
) -> Result<BTreeMap<String, HookSettings>, ConfigError> {
    raw.into_iter()
        .map(|(name, hook)| Ok((name.clone(), hook_from_raw(&name, hook)?)))
        .collect()
}

fn hook_from_raw(name: &str, raw: RawHook) -> Result<HookSettings, ConfigError> {
    let key = |k: &str| format!("hooks.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(key_error(
            format!("hooks.{name}"),
            "a hook name may hold only letters, digits, '_' and '-'",
        ));
    }
    let target = match (raw.exec, raw.webhook_url) {
        (Some(_), Some(_)) => {
            return Err(key_error(key("exec"), "set exec or webhook_url, not both"))
        }
        (None, None) => {
            return Err(key_error(
                format!("hooks.{name}"),
                "set exec = [\"/path/to/program\", ...] or webhook_url",
            ))
        }
        (Some(exec), None) => {
            if raw.webhook_secret.is_some() {
                return Err(key_error(
                    key("webhook_secret"),
                    "only a webhook_url hook has a secret",
                ));
            }
            if exec.first().is_none_or(|program| program.trim().is_empty()) {
                return Err(key_error(
                    key("exec"),
                    "must name a program: [\"/path/to/program\", \"arg\", ...]",
                ));
            }
            HookTarget::Exec(exec)
        }
        (None, Some(url)) => {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || reqwest::Url::parse(&url).is_err() {
                return Err(key_error(
                    key("webhook_url"),
                    format!("'{url}' is not an http:// or https:// URL"),
                ));
            }
            let secret = raw.webhook_secret.ok_or_else(|| {
                key_error(
                    key("webhook_secret"),
                    "missing (the requests are signed with it)",
                )
            })?;
            if secret.len() < 16 {
                return Err(key_error(
                    key("webhook_secret"),
                    "must be at least 16 characters",
                ));
            }
            HookTarget::Webhook {
                url,
                secret: WebhookSecret::new(secret),
            }
        }
    };
    let events = match raw.events {
        None => EventKind::HOOK_DEFAULT.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(key_error(key("events"), "lists no event"));
        }
        Some(names) => {
            let mut events = names
                .iter()
                .map(|n| n.parse::<EventKind>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| key_error(key("events"), e.to_string()))?;
            events.sort();
            events.dedup();
            events
        }
    };
    let dur = |k: &str, v: Option<String>, default: &str| {
        parse_duration(&key(k), v.as_deref().unwrap_or(default))
    };
    let timeout = dur("timeout", raw.timeout, "30s")?;
    if timeout.is_zero() {
        return Err(key_error(key("timeout"), "must be more than 0"));
    }
    let retry_initial =
        dur("retry_initial", raw.retry_initial, "1s")?.max(Duration::from_millis(10));
    let retry_max = dur("retry_max", raw.retry_max, "5m")?.max(retry_initial);
    Ok(HookSettings {
        name: name.to_string(),
        target,
        events,
        timeout,
        retry_initial,
        retry_max,
    })
}
