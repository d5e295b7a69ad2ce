//! The sandbox's public data types: options to start it with, scripted answers, and
//! the record of every card it accepted.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::knobs::{DEFAULT_DELIVER_AFTER_MS, DEFAULT_FAIL_STATUSES, DEFAULT_READ_AFTER_MS};
use crate::state::Authorization;

/// How a sandbox starts; every instance begins with these (see `POST /sandbox/control`
/// to change them later).
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// `stateInstance` of every instance: `authorized` by default.
    pub state: Authorization,
    /// The real API's per-instance request limits (answered with 429); on by default.
    pub rate_limits: bool,
    /// Slept before every Green API answer.
    pub latency: Duration,
    /// Share of `sendContact` requests answered with a random failure (0.0–1.0).
    pub fail_rate: f64,
    /// The statuses a random failure picks from.
    pub fail_statuses: Vec<u16>,
    /// `Retry-After` of a failure 429; 1 s when unset.
    pub retry_after_seconds: Option<u64>,
    /// `delaySendMessagesMilliseconds`: the instance sends one queued message per this.
    pub delay_send_ms: u64,
    /// A sent message's `statusMessage` turns `delivered` this long after it left the
    /// queue, then `read` `read_after_ms` later.
    pub deliver_after_ms: u64,
    pub read_after_ms: u64,
    /// idInstance → the only token accepted for it; other instances take any token.
    pub tokens: HashMap<String, String>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            state: Authorization::Authorized,
            rate_limits: true,
            latency: Duration::ZERO,
            fail_rate: 0.0,
            fail_statuses: DEFAULT_FAIL_STATUSES.to_vec(),
            retry_after_seconds: None,
            delay_send_ms: 0,
            deliver_after_ms: DEFAULT_DELIVER_AFTER_MS,
            read_after_ms: DEFAULT_READ_AFTER_MS,
            tokens: HashMap::new(),
        }
    }
}

/// One scripted answer for the next `sendContact` of an instance.
///
/// `status: 200` without a `body` answers like a normal send (validated, accepted).
/// Any other step answers `status` with `body` (or the API's usual body for that
/// status); with `accept: true` the card is taken into the queue all the same, as if
/// the API had taken it and the answer was lost.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScriptStep {
    pub status: u16,
    /// A JSON answer, or a JSON string sent as plain text.
    pub body: Option<Value>,
    #[serde(rename = "delayMs", deserialize_with = "millis")]
    pub delay: Duration,
    pub accept: bool,
    /// `Retry-After` header in seconds.
    pub retry_after: Option<u64>,
    /// Close the connection without answering (after `delay`).
    pub drop_connection: bool,
}

impl Default for ScriptStep {
    fn default() -> Self {
        Self {
            status: 200,
            body: None,
            delay: Duration::ZERO,
            accept: false,
            retry_after: None,
            drop_connection: false,
        }
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A `sendContact` the sandbox accepted into an instance's queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedCard {
    pub id_message: String,
    pub chat_id: String,
    /// The request body exactly as received.
    pub body: Value,
    /// Unix milliseconds.
    #[serde(rename = "receivedAt")]
    pub received_at_ms: i64,
}
