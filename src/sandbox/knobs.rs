//! The sandbox's steering knobs: how an instance behaves (state, failures, latency,
//! send delay, how fast its sent messages are delivered and read), as defaults for every instance plus per-instance overrides.
//!
//! A [`KnobPatch`] is what `POST /sandbox/control` carries: only the fields given
//! change. [`Knobs`] is the effective, complete set for one instance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::Authorization;

/// The statuses a random failure picks from when none were configured.
pub const DEFAULT_FAIL_STATUSES: [u16; 3] = [429, 500, 502];

/// A sent message shows `delivered` this long after it left the queue, by default:
/// long enough to be seen in the demo, short enough not to wait for.
pub const DEFAULT_DELIVER_AFTER_MS: u64 = 1500;
/// And `read` this long after `delivered`.
pub const DEFAULT_READ_AFTER_MS: u64 = 1500;

/// The complete behaviour of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// One of [`Authorization::API_STATES`] (a patch is checked before it applies).
    pub state: Authorization,
    pub fail_rate: f64,
    pub fail_statuses: Vec<u16>,
    pub retry_after_seconds: Option<u64>,
    pub latency: Duration,
    pub delay_send_ms: u64,
    /// How long a sent message stays out of `lastOutgoingMessages` (the real journal
    /// lags up to 2 minutes); 0 by default so tests see sends at once.
    pub journal_lag_ms: u64,
    /// Share (0.0–1.0) of `sendContact`s that are taken (recorded and queued, as a
    /// real server that did its work) and then answered by closing the connection
    /// without a byte: the client's request was written, its answer never comes.
    pub drop_after_write: f64,
    /// How far the instance's clock is from the real one (journal timestamps), as
    /// the API's hosts' clocks differ from the daemon's.
    pub clock_skew_ms: i64,
    /// Write the journal's vCard number in the grouped form some phones use,
    /// `item1.TEL;waid=N:+N` with an `item1.X-ABLabel` line, instead of
    /// `TEL;type=CELL;type=VOICE;waid=N:+N`.
    pub vcard_item_tel: bool,
    /// The chats quota: when not empty, only these chats can be reached and a
    /// `sendContact` to any other answers the chats-quota 466.
    pub allowed_chats: Vec<String>,
    /// Methods answering the method-quota 466 (e.g. `sendContact`).
    pub quota_methods: Vec<String>,
    /// 401 or 403 for every Green API request (a wrong token / instance id); 0 = off.
    pub refuse_status: u16,
    /// When not empty, `sendContact` answers 307 to this base URL + the request path.
    pub redirect_to: String,
    /// How long after leaving the queue a message's `statusMessage` turns `delivered`.
    pub deliver_after_ms: u64,
    /// How long after `delivered` it turns `read`.
    pub read_after_ms: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            state: Authorization::Authorized,
            fail_rate: 0.0,
            fail_statuses: DEFAULT_FAIL_STATUSES.to_vec(),
            retry_after_seconds: None,
            latency: Duration::ZERO,
            delay_send_ms: 0,
            journal_lag_ms: 0,
            drop_after_write: 0.0,
            clock_skew_ms: 0,
            vcard_item_tel: false,
            allowed_chats: Vec::new(),
            quota_methods: Vec::new(),
            refuse_status: 0,
            redirect_to: String::new(),
            deliver_after_ms: DEFAULT_DELIVER_AFTER_MS,
            read_after_ms: DEFAULT_READ_AFTER_MS,
        }
    }
}

impl Knobs {
    /// Applies the given fields of `patch`, leaving the others as they are.
    pub fn apply(&mut self, patch: &KnobPatch) {
        if let Some(state) = &patch.state {
            self.state.clone_from(state);
        }
        if let Some(rate) = patch.fail_rate {
            self.fail_rate = rate;
        }
        if let Some(statuses) = &patch.fail_statuses {
            self.fail_statuses.clone_from(statuses);
        }
        if let Some(secs) = patch.retry_after_seconds {
            self.retry_after_seconds = Some(secs);
        }
        if let Some(ms) = patch.latency_ms {
            self.latency = Duration::from_millis(ms);
        }
        if let Some(ms) = patch.delay_send_messages_milliseconds {
            self.delay_send_ms = ms;
        }
        if let Some(ms) = patch.journal_lag_ms {
            self.journal_lag_ms = ms;
        }
        if let Some(rate) = patch.drop_after_write {
            self.drop_after_write = rate;
        }
        if let Some(ms) = patch.clock_skew_ms {
            self.clock_skew_ms = ms;
        }
        if let Some(on) = patch.vcard_item_tel {
            self.vcard_item_tel = on;
        }
        if let Some(chats) = &patch.allowed_chats {
            self.allowed_chats.clone_from(chats);
        }
        if let Some(methods) = &patch.quota_methods {
            self.quota_methods.clone_from(methods);
        }
        if let Some(status) = patch.refuse_status {
            self.refuse_status = status;
        }
        if let Some(url) = &patch.redirect_to {
            self.redirect_to.clone_from(url);
        }
        if let Some(ms) = patch.deliver_after_ms {
            self.deliver_after_ms = ms;
        }
        if let Some(ms) = patch.read_after_ms {
            self.read_after_ms = ms;
        }
    }

    /// Whether `method` answers the method-quota 466.
    pub fn method_over_quota(&self, method: &str) -> bool {
        self.quota_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
    }

    /// Whether the chats quota refuses `chat_id`.
    pub fn chat_over_quota(&self, chat_id: &str) -> bool {
        !self.allowed_chats.is_empty() && !self.allowed_chats.iter().any(|c| c == chat_id)
    }

    /// Whether the emulated instance moves messages out of its queue in this state.
    /// The real service sends only while authorized: on a yellow card, blocked or
    /// logged out it keeps taking sends into its queue and sends none of them.
    pub fn drains(&self) -> bool {
        self.state.is_authorized()
    }

    /// The JSON view shown by `GET /sandbox/control`.
    pub fn view(&self) -> KnobPatch {
        KnobPatch {
            state: Some(self.state.clone()),
            fail_rate: Some(self.fail_rate),
            fail_statuses: Some(self.fail_statuses.clone()),
            retry_after_seconds: self.retry_after_seconds,
            latency_ms: Some(u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX)),
            delay_send_messages_milliseconds: Some(self.delay_send_ms),
            journal_lag_ms: Some(self.journal_lag_ms),
            drop_after_write: Some(self.drop_after_write),
            clock_skew_ms: Some(self.clock_skew_ms),
            vcard_item_tel: Some(self.vcard_item_tel),
            allowed_chats: Some(self.allowed_chats.clone()),
            quota_methods: Some(self.quota_methods.clone()),
            refuse_status: Some(self.refuse_status),
            redirect_to: Some(self.redirect_to.clone()),
            deliver_after_ms: Some(self.deliver_after_ms),
            read_after_ms: Some(self.read_after_ms),
        }
    }
}

/// Some knobs to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnobPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_statuses: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_send_messages_milliseconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_lag_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_after_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcard_item_tel: Option<bool>,
    /// The chats quota (see [`Knobs::allowed_chats`]); `[]` lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_chats: Option<Vec<String>>,
    /// Methods over the method quota; `[]` lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_methods: Option<Vec<String>>,
    /// 401 or 403 for every request; 0 lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_status: Option<u16>,
    /// Base URL `sendContact` redirects to; `""` stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// Milliseconds from leaving the queue to `delivered` (see [`Knobs::deliver_after_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_after_ms: Option<u64>,
    /// Milliseconds from `delivered` to `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_after_ms: Option<u64>,
}

impl KnobPatch {
    /// Folds `other` into `self` (for per-instance overrides that accumulate).
    pub fn merge(&mut self, other: &KnobPatch) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f.clone_from(&other.$f); } )* };
        }
        take!(
            state,
            fail_rate,
            fail_statuses,
            retry_after_seconds,
            latency_ms,
            delay_send_messages_milliseconds,
            journal_lag_ms,
            drop_after_write,
            clock_skew_ms,
            vcard_item_tel,
            allowed_chats,
            quota_methods,
            refuse_status,
            redirect_to,
            deliver_after_ms,
            read_after_ms
        );
    }
}
