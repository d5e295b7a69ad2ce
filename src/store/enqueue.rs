//! Enqueues: what the write thread ([`super::writer`]) does for one request (new rows
//! with fresh ids and places in line, or the original rows of an idempotent repeat),
//! and the caller's side that hands the request over and waits for the commit.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{params, OptionalExtension};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::messages::ONE_MESSAGE;
use super::writer::{store_error, Job};
use super::{MessageRow, Store, StoreError};
use crate::contact::Card;

pub const INSERT_ROW: &str = "INSERT INTO messages
    (id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
     enqueued_at, expires_at)
    VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// The first line of a card's history, written with its row (?1 the row's `seq`, just
/// inserted; ?2 the enqueue time).
pub const INSERT_ENQUEUED: &str =
    "INSERT INTO events (message_seq, at, event) VALUES (?1, ?2, 'enqueued')";

/// Adds a group's new rows to an instance's queued count and returns the count as of
/// this transaction, for the answers' `position`. The writer keeps these counts itself
/// (migration 0002): one statement per instance and group, not a trigger per row.
pub const QUEUED_COUNTS: &str = "INSERT INTO counts (instance, state, n) VALUES (?1, 'queued', ?2)
    ON CONFLICT (instance, state) DO UPDATE SET n = n + excluded.n
    RETURNING n";

pub const FIND_KEY: &str =
    "SELECT body_hash, message_ids FROM idempotency WHERE instance = ?1 AND key = ?2";

const INSERT_KEY: &str = "INSERT INTO idempotency
    (instance, key, body_hash, message_ids, batch, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

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

impl Store {
    /// Enqueues cards; returns once they are committed (or known not to be).
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        let bytes = request
            .cards
            .iter()
            .map(|c| c.chat_id.len() + 200)
            .sum::<usize>();
        self.check_room(bytes).await?;
        let (reply, answer) = oneshot::channel();
        self.writer_tx
            .send(Job::Enqueue { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the write thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the write thread has stopped".into()))?
    }
}

/// Writes one enqueue inside the write thread's transaction: new rows, or the original
/// rows of an idempotent repeat. The outer error fails the whole group (a database
/// error); the inner one only this request (a key reused with another body).
pub(super) fn write(
    tx: &rusqlite::Transaction<'_>,
    request: &EnqueueRequest,
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<Result<EnqueueOutcome, StoreError>, StoreError> {
    let outcome = plan_job(tx, request, now, line_counter, ids)?;
    if let Ok(EnqueueOutcome::Created { rows, .. }) = &outcome {
        insert_rows(tx, rows)?;
    }
    Ok(outcome)
}

/// Decides one request: new rows to insert, or the original rows of an idempotent
/// repeat (recording the key of new ones).
fn plan_job(
    tx: &rusqlite::Transaction<'_>,
    request: &EnqueueRequest,
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<Result<EnqueueOutcome, StoreError>, StoreError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(new_rows(request, now, line_counter, ids)
            .map(|rows| EnqueueOutcome::Created { rows, queued: None }));
    };
    let hash = hash_cards(&request.cards);
    let seen: Option<(String, String)> = tx
        .prepare_cached(FIND_KEY)
        .and_then(|mut s| {
            s.query_row(params![request.instance, key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(store_error)?;
    if let Some((seen_hash, message_ids)) = seen {
        if seen_hash != hash {
            return Ok(Err(StoreError::IdempotencyMismatch));
        }
        return Ok(Ok(EnqueueOutcome::Repeated(rows_by_ids(tx, &message_ids)?)));
    }
    let rows = match new_rows(request, now, line_counter, ids) {
        Ok(rows) => rows,
        Err(e) => return Ok(Err(e)),
    };
    let message_ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    tx.prepare_cached(INSERT_KEY)
        .and_then(|mut s| {
            s.execute(params![
                request.instance,
                key,
                hash,
                json!(message_ids).to_string(),
                request.cards.len() > 1,
                now
            ])
        })
        .map_err(store_error)?;
    Ok(Ok(EnqueueOutcome::Created { rows, queued: None }))
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, rows: &[MessageRow]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_ROW).map_err(store_error)?;
    let mut event = tx.prepare_cached(INSERT_ENQUEUED).map_err(store_error)?;
    for r in rows {
        insert
            .execute(params![
                r.id,
                r.instance,
                r.line_seq,
                r.chat_id,
                r.phone,
                r.body,
                r.idempotency_key,
                r.peer_uid,
                r.enqueued_at,
                r.expires_at
            ])
            .map_err(store_error)?;
        event
            .execute(params![tx.last_insert_rowid(), r.enqueued_at])
            .map_err(store_error)?;
    }
    Ok(())
}

/// The stored rows named in a JSON array of ids, in that order.
fn rows_by_ids(
    tx: &rusqlite::Transaction<'_>,
    ids_json: &str,
) -> Result<Vec<MessageRow>, StoreError> {
    let ids: Vec<String> = serde_json::from_str(ids_json)
        .map_err(|e| StoreError::Database(format!("idempotency record: {e}")))?;
    let mut select = tx.prepare_cached(ONE_MESSAGE).map_err(store_error)?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let row = select
            .query_row([id], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    instance: r.get(1)?,
                    state: r.get(2)?,
                    line_seq: r.get(3)?,
                    chat_id: r.get(4)?,
                    phone: r.get(5)?,
                    body: r.get(6)?,
                    idempotency_key: r.get(7)?,
                    peer_uid: r.get(8)?,
                    enqueued_at: r.get(9)?,
                    expires_at: r.get(10)?,
                    attempts: r.get(11)?,
                    attempt_started_at: r.get(12)?,
                    last_error: r.get(13)?,
                    id_message: r.get(14)?,
                    sent_at: r.get(15)?,
                    ended_at: r.get(16)?,
                    requeued_at: r.get(17)?,
                })
            })
            .optional()
            .map_err(store_error)?;
        // A card of the key may already be gone (retention); the rest are answered.
        rows.extend(row);
    }
    Ok(rows)
}

/// The rows of a job's cards: fresh ids and the next places in line.
fn new_rows(
    request: &EnqueueRequest,
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<Vec<MessageRow>, StoreError> {
    let first_line = line_counter.fetch_add(request.cards.len() as i64, Ordering::SeqCst);
    let mut rows = Vec::with_capacity(request.cards.len());
    for (i, card) in request.cards.iter().enumerate() {
        let id = ids
            .generate()
            .map_err(|e| StoreError::Database(format!("id generator: {e}")))?;
        rows.push(MessageRow::fresh(
            id.to_string(),
            &request.instance,
            first_line + i as i64,
            card,
            request.idempotency_key.clone(),
            request.peer_uid,
            now,
            now.saturating_add(request.max_age_ms),
        ));
    }
    Ok(rows)
}

fn hash_cards(cards: &[Card]) -> String {
    let mut hasher = Sha256::new();
    for card in cards {
        hasher.update(card.canonical().as_bytes());
        hasher.update(b"\n");
    }
    format!("{:x}", hasher.finalize())
}
