//! The records the store hands out and takes in, the same whatever database is behind
//! it: messages and their history, an instance's persisted state and counts, an
//! enqueue request and its outcome, an attempt's outcome. No SQL here.

use std::collections::HashMap;

use crate::contact::Card;
use crate::state::Delivery;

/// A message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: String,
    pub instance: String,
    pub state: String,
    pub line_seq: i64,
    pub chat_id: String,
    pub phone: i64,
    /// The validated sendContact body, as JSON text.
    pub body: String,
    pub idempotency_key: Option<String>,
    pub peer_uid: Option<i64>,
    pub enqueued_at: i64,
    pub expires_at: i64,
    pub attempts: i64,
    pub attempt_started_at: Option<i64>,
    pub last_error: Option<String>,
    pub id_message: Option<String>,
    pub sent_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// When `retry` last put the card back in line (`enqueued_at` stays the first
    /// enqueue); None if it never was.
    pub requeued_at: Option<i64>,
    /// The `notBefore` the enqueue asked for (Unix ms), if any.
    pub not_before: Option<i64>,
    /// Set while the card is not yet due (it joins the tail of its line then); None
    /// once it is in line.
    pub due_at: Option<i64>,
    /// What became of it on WhatsApp once sent (None before).
    pub delivery: Option<Delivery>,
    /// When it was first seen delivered (or read), and read.
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
}

impl MessageRow {
    /// A card's row as an enqueue creates it: `queued` at place `line_seq`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fresh(
        id: String,
        instance: &str,
        line_seq: i64,
        card: &Card,
        idempotency_key: Option<String>,
        peer_uid: Option<u32>,
        now: i64,
        not_before: Option<i64>,
        max_age_ms: i64,
    ) -> MessageRow {
        // Its place in line, and its expiry, count from max(enqueuedAt, notBefore).
        let due_at = not_before.filter(|&at| at > now);
        let joins = due_at.unwrap_or(now);
        MessageRow {
            id,
            instance: instance.to_string(),
            state: "queued".to_string(),
            line_seq,
            chat_id: card.chat_id().to_string(),
            phone: card.contact().phone() as i64,
            body: card.canonical(),
            idempotency_key,
            peer_uid: peer_uid.map(i64::from),
            enqueued_at: now,
            expires_at: joins.saturating_add(max_age_ms),
            attempts: 0,
            attempt_started_at: None,
            last_error: None,
            id_message: None,
            sent_at: None,
            ended_at: None,
            requeued_at: None,
            not_before,
            due_at,
            delivery: None,
            delivered_at: None,
            read_at: None,
        }
    }

    /// Whether the card is queued but not yet due (waiting for its `notBefore`).
    pub fn not_yet_due(&self) -> bool {
        self.state == "queued" && self.due_at.is_some()
    }
}

/// A sent card whose delivery is being followed (docs/api.md §11).
#[derive(Debug, Clone, PartialEq)]
pub struct FollowedCard {
    pub id: String,
    pub id_message: String,
    pub sent_at: i64,
    /// `sent` or `delivered`.
    pub delivery: Delivery,
}

/// One line of a message's history.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at: i64,
    pub event: String,
    pub attempt: Option<i64>,
    pub http_status: Option<i64>,
    pub detail: Option<String>,
}

/// Filters of `GET /v1/messages`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub instance: Option<String>,
    pub state: Option<String>,
    pub chat_id: Option<String>,
    pub phone: Option<i64>,
    /// Only ids starting with this (canonical, upper-case) text.
    pub id_prefix: Option<String>,
    /// Only messages older than this id (the cursor).
    pub before: Option<String>,
    pub limit: u32,
}

/// The persisted state of one instance's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceRow {
    pub name: String,
    pub paused: bool,
    pub last_send_at: Option<i64>,
    pub hold_until: Option<i64>,
    pub hold_reason: Option<String>,
}

/// A chat held by a chats-quota 466: its cards step aside until `until` (Unix ms).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatHold {
    pub chat_id: String,
    pub until: i64,
    pub reason: Option<String>,
}

/// Counts of one instance's messages by state, and its oldest queued card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceCounts {
    pub by_state: HashMap<String, i64>,
    pub oldest_queued_at: Option<i64>,
}

impl InstanceCounts {
    pub fn get(&self, state: &str) -> i64 {
        self.by_state.get(state).copied().unwrap_or(0)
    }
}

/// One enqueue: a single card or a whole batch, committed all or nothing.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    pub instance: String,
    pub cards: Vec<Card>,
    pub idempotency_key: Option<String>,
    pub peer_uid: Option<u32>,
    pub max_age_ms: i64,
    /// `notBefore` (Unix ms): the cards join the line then, not before.
    pub not_before: Option<i64>,
}

/// What an enqueue did.
#[derive(Debug)]
pub enum EnqueueOutcome {
    /// New messages, durably committed, and how many cards of the instance were queued
    /// at the commit up to and including the last of them (so the new cards' positions
    /// are `queued - len + 1 ..= queued`); None if it could not be told.
    Created {
        rows: Vec<MessageRow>,
        queued: Option<i64>,
    },
    /// The same idempotency key and body were seen before: the original messages.
    Repeated(Vec<MessageRow>),
}

/// What became of an attempt, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcomeRecord {
    /// The API took the card: `sent` with its idMessage. Recorded only if the card is
    /// still `sending` at this `attempt` (docs/api.md §10): a late answer to an earlier
    /// attempt never counts for a later one.
    Sent { id_message: String, attempt: i64 },
    /// Found in the API's journal after an uncertain attempt.
    Reconciled { id_message: String },
    /// Rejected for good (e.g. 400): `failed` with the API's text.
    Failed {
        error: String,
        http_status: Option<u16>,
    },
    /// Surely not taken: back to `queued`, keeping its place at the head.
    Requeue {
        error: String,
        http_status: Option<u16>,
    },
    /// May have been taken: stays `sending` until reconciled.
    Uncertain {
        error: String,
        http_status: Option<u16>,
    },
}

/// An attempt whose outcome is unknown, as the reconciler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UncertainCard {
    pub id: String,
    pub chat_id: String,
    pub phone: i64,
    pub attempt_started_at: i64,
}

/// Which cards a bulk cancel or retry touches (docs/api.md §11): every given field
/// must match. The state is checked against the action by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkFilter {
    pub instance: Option<String>,
    /// One state; None means every state the action may touch.
    pub state: Option<String>,
    pub chat_id: Option<String>,
    /// Only cards enqueued before this time (Unix ms).
    pub before: Option<i64>,
}

/// What a bulk operation does to each card it selects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BulkAction {
    /// `queued` → `cancelled`.
    Cancel,
    /// `failed` / `expired` → `queued` at the tail, in their old order, with a fresh
    /// expiry of `max_age_ms`.
    Retry { max_age_ms: i64 },
}

/// What one bulk call did: how many cards changed, per instance, and whether more
/// cards match than one call takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkOutcome {
    pub by_instance: Vec<(String, u64)>,
    pub more: bool,
}

impl BulkOutcome {
    pub fn count(&self) -> u64 {
        self.by_instance.iter().map(|(_, n)| n).sum()
    }
}

/// One numbered event of the stream (docs/api.md §11), with its card as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub seq: i64,
    pub at: i64,
    /// The card's id.
    pub id: String,
    pub instance: String,
    /// The event's wire name (an [`crate::event::EventKind`]).
    pub event: String,
    /// The card's row as it is when the event is read; None once retention took it.
    pub message: Option<MessageRow>,
}

/// Where the stream begins and ends: the oldest `seq` kept (None before the first
/// event) and the last one committed (0 before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamEnds {
    pub oldest: Option<i64>,
    pub last: i64,
}

/// A named consumer of the stream and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerRow {
    pub name: String,
    /// Every event up to this `seq` that the consumer takes was delivered.
    pub cursor: i64,
    pub updated_at: i64,
    /// Failed deliveries since the cursor last moved.
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// The hash an idempotency key records of its request: the cards and the `notBefore`
/// asked for (as given, so a repeat after that time has passed still matches); the
/// same on every backend, so a key copied by `migrate-store` still recognizes its
/// body. A request without `notBefore` hashes as it did before the field existed.
pub(super) fn body_hash(cards: &[Card], not_before: Option<i64>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for card in cards {
        hasher.update(card.canonical().as_bytes());
        hasher.update(b"\n");
    }
    if let Some(at) = not_before {
        hasher.update(format!("notBefore={at}\n").as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// Who drains an instance (docs/api.md §10): the node holding its lease, None when no
/// lease is live; the lease's epoch, None when it never had one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseView {
    pub drained_by: Option<String>,
    pub epoch: Option<i64>,
}

/// A daemon sharing the database and its last heartbeat (Unix ms).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    pub name: String,
    pub last_seen_ms: i64,
}
