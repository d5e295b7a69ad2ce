//! Time-driven upkeep: expiry of queued cards past their deadline, and retention
//! (`keep_done`) of ended ones, in small batches so no transaction is long. Every
//! daemon sharing the database runs it; the batches take their rows with
//! `FOR UPDATE SKIP LOCKED`, so two daemons never wait on, or count, the same card.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::events::INSERT_EVENTS_BY_SEQ;
use super::stream::Buffer;
use crate::event::EventKind;

/// Rows deleted per retention transaction.
pub const RETENTION_BATCH: i64 = 500;

/// Cards expired per transaction (the same batch as SQLite's: `crate::store::EXPIRY_BATCH`).
pub const EXPIRY_BATCH: i64 = crate::store::EXPIRY_BATCH;

/// Expires the queued cards past their deadline ($1 now, $2 how many), oldest deadline
/// first; answers each card's seq, instance and id.
pub const EXPIRE_DUE: &str = "UPDATE messages SET state = 'expired', ended_at = $1
    WHERE seq IN (SELECT seq FROM messages WHERE state = 'queued' AND expires_at <= $1
                  ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING seq, instance, id, expires_at";

/// The cards that ended before $1, oldest first, $2 at most: their seq and key.
pub const ENDED_BEFORE: &str = "SELECT seq, instance, idempotency_key FROM messages
    WHERE ended_at IS NOT NULL AND ended_at < $1 ORDER BY ended_at LIMIT $2
    FOR UPDATE SKIP LOCKED";

pub const DELETE_EVENTS: &str = "DELETE FROM events WHERE message_seq = ANY($1)";

pub const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE seq = ANY($1)";

/// Forgets a key ($1 instance, $2 key) once none of its messages is kept any more.
pub const FORGET_KEY: &str = "DELETE FROM idempotency WHERE instance = $1 AND key = $2
    AND NOT EXISTS (SELECT 1 FROM messages WHERE instance = $1 AND idempotency_key = $2)";

/// Expires one batch; returns how many per instance.
pub(super) async fn expire_due(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    now: i64,
) -> sqlx::Result<Vec<(String, u64)>> {
    let mut expired: Vec<(i64, String, String, i64)> = sqlx::query_as(EXPIRE_DUE)
        .bind(now)
        .bind(EXPIRY_BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    // Events in the order the cards expired: by deadline, then place in the table.
    expired.sort_by_key(|(seq, _, _, expires_at)| (*expires_at, *seq));
    let seqs: Vec<i64> = expired.iter().map(|(seq, ..)| *seq).collect();
    sqlx::query(INSERT_EVENTS_BY_SEQ)
        .bind(&seqs)
        .bind(now)
        .bind("expired")
        .bind("not sent within max_age")
        .execute(&mut *tx)
        .await?;
    let mut by_instance: BTreeMap<String, u64> = BTreeMap::new();
    for (_, instance, id, _) in expired {
        stream.add(now, &id, &instance, EventKind::Expired);
        *by_instance.entry(instance).or_default() += 1;
    }
    Ok(by_instance.into_iter().collect())
}

/// Deletes one batch of cards that ended before `cutoff`, with their events and the
/// idempotency keys no kept card uses; returns how many cards went.
pub(super) async fn delete_ended_batch(tx: &mut PgConnection, cutoff: i64) -> sqlx::Result<u64> {
    let doomed: Vec<(i64, String, Option<String>)> = sqlx::query_as(ENDED_BEFORE)
        .bind(cutoff)
        .bind(RETENTION_BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = doomed.iter().map(|(seq, _, _)| *seq).collect();
    sqlx::query(DELETE_EVENTS)
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query(DELETE_MESSAGES)
        .bind(&seqs)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let keys: std::collections::BTreeSet<(&str, &str)> = doomed
        .iter()
        .filter_map(|(_, instance, key)| Some((instance.as_str(), key.as_deref()?)))
        .collect();
    for (instance, key) in keys {
        sqlx::query(FORGET_KEY)
            .bind(instance)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    Ok(deleted)
}
