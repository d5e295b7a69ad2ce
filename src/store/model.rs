//! The records the store hands out and takes in, the same whatever database is behind
//! it: messages and their history, an instance's persisted state and counts, an
//! enqueue request and its outcome, an attempt's outcome. No SQL here.

use std::collections::HashMap;

use crate::contact::Card;

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
        expires_at: i64,
    ) -> MessageRow {
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
            expires_at,
            attempts: 0,
            attempt_started_at: None,
            last_error: None,
            id_message: None,
            sent_at: None,
            ended_at: None,
            requeued_at: None,
        }
    }
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
    /// The API took the card: `sent` with its idMessage.
    Sent { id_message: String },
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

/// The hash an idempotency key records of its request's cards (the same on every
/// backend, so a key copied by `migrate-store` still recognizes its body).
pub(super) fn body_hash(cards: &[Card]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for card in cards {
        hasher.update(card.canonical().as_bytes());
        hasher.update(b"\n");
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
