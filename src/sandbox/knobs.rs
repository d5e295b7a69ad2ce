//! The sandbox's steering knobs: how an instance behaves (state, failures, latency,
//! send delay), as defaults for every instance plus per-instance overrides.
//!
//! A [`KnobPatch`] is what `POST /sandbox/control` carries: only the fields given
//! change. [`Knobs`] is the effective, complete set for one instance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `stateInstance` values the real API reports.
pub const STATES: [&str; 6] = [
    "authorized",
    "notAuthorized",
    "starting",
    "yellowCard",
    "blocked",
    "sleepMode",
];

/// The statuses a random failure picks from when none were configured.
pub const DEFAULT_FAIL_STATUSES: [u16; 3] = [429, 500, 502];

/// The complete behaviour of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    pub state: String,
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
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            state: "authorized".to_owned(),
            fail_rate: 0.0,
            fail_statuses: DEFAULT_FAIL_STATUSES.to_vec(),
            retry_after_seconds: None,
            latency: Duration::ZERO,
            delay_send_ms: 0,
            journal_lag_ms: 0,
            drop_after_write: 0.0,
            clock_skew_ms: 0,
            vcard_item_tel: false,
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
    }

    /// Whether the emulated instance moves messages out of its queue in this state.
    /// The real service sends only while authorized: on a yellow card, blocked or
    /// logged out it keeps taking sends into its queue and sends none of them.
    pub fn drains(&self) -> bool {
        self.state == "authorized"
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
        }
    }
}

/// Some knobs to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnobPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
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
            vcard_item_tel
        );
    }
}
