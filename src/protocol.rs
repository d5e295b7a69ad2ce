//! The socket API's request and response bodies (docs/api.md §3).
//!
//! Both the daemon (which answers) and the CLI (which asks and draws) use these types,
//! so the two sides cannot drift. Field names are docs/api.md's camelCase JSON names.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::EventKind;
use crate::ids::MessageId;
use crate::state::{Authorization, Delivery, MessageState};

/// One message as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: MessageId,
    pub instance: String,
    pub state: MessageState,
    pub chat_id: String,
    pub contact: Value,
    pub quoted_message_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// When the card was first enqueued; `retry` does not change it.
    pub enqueued_at: String,
    /// When `retry` last put the card back in line (absent if it never did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at: Option<String>,
    pub expires_at: String,
    /// The `notBefore` the enqueue asked for (absent if none): the card joined (or
    /// joins) its line at max(enqueuedAt, notBefore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub id_message: Option<String>,
    pub sent_at: Option<String>,
    /// What became of it on WhatsApp: null until it is sent (docs/api.md §11).
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// When it was first seen delivered (or read), and read (absent until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    /// Unix uid of the process that enqueued the card (SO_PEERCRED), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_uid: Option<u32>,
    /// Queued cards only: 1 = the next to go on its instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// Queued cards only: expected send time, null while the line is held.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    pub eta: Option<Option<String>>,
    /// Queued cards only: why it has not gone out yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The first of `warnings`, kept for clients written before `warnings` existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Every warning about the card: a phone length the API does not document,
    /// `"eta after expiry"` when the line ahead is too long for it. An enqueue answer
    /// always carries it (maybe empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// `GET /v1/messages/{id}` only: every attempt and state change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
}

/// One line of a message's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: String,
    /// `enqueued`, `attempt`, `sent`, `failed`, `expired`, `cancelled`, `retried`,
    /// `requeued`, `uncertain`, `reconciled`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /v1/messages` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageList {
    pub messages: Vec<MessageView>,
    /// Pass as `before=` to get the next (older) page; null on the last page.
    pub next: Option<String>,
}

/// `POST …/sendContact:batch` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAccepted {
    pub messages: Vec<MessageView>,
}

/// `GET /v1/status` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub version: String,
    pub uptime_seconds: f64,
    pub instances: Vec<InstanceStatus>,
    /// How an acknowledged enqueue is kept: "sync", or "async" with PostgreSQL
    /// streaming to an asynchronous standby (docs/api.md §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
    /// The event stream's ends (absent from daemons before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
    /// The stream's named consumers: the hooks and any outside ones.
    #[serde(default)]
    pub consumers: Vec<ConsumerView>,
    /// The daemons sharing the database, with their last heartbeat (docs/api.md §10);
    /// with SQLite, this daemon.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// One daemon in `GET /v1/status` `nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub last_seen: String,
}

/// One instance in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub name: String,
    pub authorization: Authorization,
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub expired: i64,
    pub cancelled: i64,
    pub oldest_queued_age_seconds: Option<f64>,
    pub send_delay_ms: u64,
    pub next_send_at: Option<String>,
    pub paused: bool,
    pub last_error: Option<String>,
    /// Why the line is held, when it is (paused, quota, back-off, authorization,
    /// quiet hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Of the `queued` cards, those whose `notBefore` is still ahead (not in line yet).
    #[serde(default)]
    pub scheduled: i64,
    /// The instance's quiet hours, e.g. "22:00-08:00 Europe/Moscow" (absent if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<String>,
    /// How many of its cards have each delivery value (every value, 0 included).
    #[serde(default)]
    pub delivery: std::collections::BTreeMap<Delivery, i64>,
    /// The node holding the instance's drain lease, null when none holds it live.
    #[serde(default)]
    pub drained_by: Option<String>,
    /// The lease's epoch (grows at every take-over); 1 with SQLite.
    #[serde(default)]
    pub lease_epoch: Option<i64>,
}

/// `POST /v1/messages:cancel` and `:retry` answer: how many cards changed, and whether
/// more match than one call takes (call again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkResult {
    pub count: u64,
    pub more: bool,
}

/// One numbered event of `GET /v1/events` (docs/api.md §11), one JSON object a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: i64,
    pub at: String,
    /// The card's id.
    pub id: MessageId,
    pub instance: String,
    pub event: EventKind,
    /// The card as stored when the event is read, with `state` as of the event; null
    /// once retention (`keep_done`) deleted the card.
    pub message: Option<MessageView>,
}

/// Where the stream stands: in `GET /v1/status` and `GET /v1/consumers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// The last committed event's `seq` (0 before the first).
    pub last_seq: i64,
    /// The oldest event kept (`keep_done`); null before the first.
    pub oldest_seq: Option<i64>,
}

/// A named consumer of the stream: a `[hooks.NAME]` of the daemon or an outside
/// `contactq follow --consumer NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub name: String,
    /// `exec` or `webhook` for a hook of the daemon, `outside` for any other.
    pub kind: String,
    /// Every event up to this `seq` that the consumer takes was delivered.
    pub cursor: i64,
    /// Events committed after the cursor (including those it does not take).
    pub lag: i64,
    /// Failed deliveries since the cursor last moved.
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub updated_at: String,
}

/// `GET /v1/consumers` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerList {
    pub stream: StreamStatus,
    pub consumers: Vec<ConsumerView>,
}

/// `POST /v1/instances/{name}/pause|resume` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseState {
    pub instance: String,
    pub paused: bool,
}

/// `POST /v1/instances/{name}/flush` answer: the drain was told to ask the state now
/// and end any back-off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlushState {
    pub instance: String,
    pub flushed: bool,
}

/// Every error answer: `{"error": "...", "details": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub details: String,
}

/// `GET /v1/health` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
}

/// Tells `"eta": null` (present, the line is held) from a missing `eta` (not queued).
fn present_or_null<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}
