//! An enqueue inside the write thread's transaction: new rows with fresh ids and places
//! in line, or the original rows of an idempotent repeat. Called by [`super::writer`]
//! only; the caller's side (hand the request over, wait for the commit) is
//! [`super::SqliteStore::enqueue`].

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::json;

use super::rows::{self, ONE_MESSAGE};
use super::stream;
use crate::event::EventKind;
use crate::store::error::{Cause, StoreError};
use crate::store::model::{EnqueueOutcome, EnqueueRequest, MessageRow};

pub const INSERT_ROW: &str = "INSERT INTO messages
    (id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
     enqueued_at, expires_at, not_before, due_at)
    VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Adds a group's new not-yet-due rows (`notBefore` ahead) to an instance's count of
/// them (the pseudo-state 'scheduled' of migration 0006), returning the count.
pub const SCHEDULED_COUNTS: &str = "INSERT INTO counts (instance, state, n)
    VALUES (?1, 'scheduled', ?2)
    ON CONFLICT (instance, state) DO UPDATE SET n = n + excluded.n RETURNING n";

/// An instance's count of not-yet-due queued cards (?1).
pub const SCHEDULED_COUNT: &str =
    "SELECT n FROM counts WHERE instance = ?1 AND state = 'scheduled'";

/// Adds a group's new rows to an instance's queued count and returns the count as of
/// this transaction, for the answers' `position`. The writer keeps these counts itself
/// (migration 0002): one statement per instance and group, not a trigger per row.
pub const QUEUED_COUNTS: &str = "INSERT INTO counts (instance, state, n) VALUES (?1, 'queued', ?2)
    ON CONFLICT (instance, state) DO UPDATE SET n = n + excluded.n
    RETURNING n";

pub const FIND_KEY: &str =
    "SELECT body_hash, message_ids FROM idempotency WHERE instance = ?1 AND key = ?2";

pub const INSERT_KEY: &str = "INSERT INTO idempotency
    (instance, key, body_hash, message_ids, batch, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Writes one enqueue: new rows, or the original rows of an idempotent repeat. The
/// outer error fails the whole group (a database error); the inner one only this
/// request (a key reused with another body), which then wrote nothing.
pub(super) fn write(
    tx: &Transaction<'_>,
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
    tx: &Transaction<'_>,
    request: &EnqueueRequest,
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<Result<EnqueueOutcome, StoreError>, StoreError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(new_rows(request, now, line_counter, ids)
            .map(|rows| EnqueueOutcome::Created { rows, queued: None }));
    };
    let hash = crate::store::model::body_hash(&request.cards, request.not_before);
    let seen: Option<(String, String)> = tx
        .prepare_cached(FIND_KEY)?
        .query_row(params![request.instance, key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
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
    tx.prepare_cached(INSERT_KEY)?.execute(params![
        request.instance,
        key,
        hash,
        json!(message_ids).to_string(),
        request.cards.len() > 1,
        now
    ])?;
    Ok(Ok(EnqueueOutcome::Created { rows, queued: None }))
}

fn insert_rows(tx: &Transaction<'_>, rows: &[MessageRow]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_ROW)?;
    // Each card's `queued` event of the stream (docs/api.md §11): the one statement of
    // [`stream::ADD`], prepared once for the whole batch. No `enqueued` history row:
    // the history reads it from the card's own row.
    let mut event = tx.prepare_cached(stream::ADD)?;
    for r in rows {
        insert.execute(params![
            r.id,
            r.instance,
            r.line_seq,
            r.chat_id,
            r.phone,
            r.body,
            r.idempotency_key,
            r.peer_uid,
            r.enqueued_at,
            r.expires_at,
            r.not_before,
            r.due_at
        ])?;
        event.execute(params![
            r.enqueued_at,
            r.id,
            r.instance,
            EventKind::Queued.as_str()
        ])?;
    }
    Ok(())
}

/// The stored rows named in a JSON array of ids, in that order.
fn rows_by_ids(tx: &Transaction<'_>, ids_json: &str) -> Result<Vec<MessageRow>, StoreError> {
    let ids: Vec<String> = serde_json::from_str(ids_json)
        .map_err(|e| StoreError::Database(Cause::context("idempotency record", e)))?;
    let mut select = tx.prepare_cached(ONE_MESSAGE)?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        // A card of the key may already be gone (retention); the rest are answered.
        found.extend(select.query_row([id], rows::message).optional()?);
    }
    Ok(found)
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
            .map_err(|e| StoreError::Database(Cause::context("id generator", e)))?;
        rows.push(MessageRow::fresh(
            id.to_string(),
            &request.instance,
            first_line + i as i64,
            card,
            request.idempotency_key.clone(),
            request.peer_uid,
            now,
            request.not_before,
            request.max_age_ms,
        ));
    }
    Ok(rows)
}
