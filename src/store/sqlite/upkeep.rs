//! Time-driven upkeep inside the write thread's transaction: expiry of queued cards
//! past their deadline, and retention (`keep_done`) of ended ones, in small batches so
//! no transaction is long.

use std::collections::BTreeMap;

use rusqlite::{params, Transaction};

use super::events::INSERT_EVENT_BY_SEQ;
use super::stream;
use crate::event::EventKind;

/// Rows deleted per retention transaction.
pub const RETENTION_BATCH: i64 = 500;

/// Cards expired per transaction.
pub const EXPIRY_BATCH: i64 = 1000;

/// The queued cards past their deadline (?1 now, ?2 how many), oldest deadline first.
pub const DUE_FOR_EXPIRY: &str = "SELECT seq FROM messages
    WHERE state = 'queued' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2";

/// One card expired (?1 seq, ?2 now); answers its instance and id.
pub const EXPIRE: &str = "UPDATE messages SET state = 'expired', ended_at = ?2
    WHERE seq = ?1 AND state = 'queued' RETURNING instance, id";

/// The cards that ended before ?1, oldest first, ?2 at most: their seq and key.
pub const ENDED_BEFORE: &str = "SELECT seq, instance, idempotency_key FROM messages
    WHERE ended_at IS NOT NULL AND ended_at < ?1 ORDER BY ended_at LIMIT ?2";

pub const DELETE_EVENTS: &str = "DELETE FROM events WHERE message_seq = ?1";

pub const DELETE_MESSAGE: &str = "DELETE FROM messages WHERE seq = ?1";

/// Forgets a key (?1 instance, ?2 key) once none of its messages is kept any more.
pub const FORGET_KEY: &str = "DELETE FROM idempotency WHERE instance = ?1 AND key = ?2
    AND NOT EXISTS (SELECT 1 FROM messages WHERE instance = ?1 AND idempotency_key = ?2)";

/// Expires one batch of queued cards whose deadline has passed, oldest deadline first;
/// returns how many per instance.
pub(super) fn expire_due(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<Vec<(String, u64)>> {
    let due: Vec<i64> = tx
        .prepare_cached(DUE_FOR_EXPIRY)?
        .query_map(params![now, EXPIRY_BATCH], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut expire = tx.prepare_cached(EXPIRE)?;
    let mut event = tx.prepare_cached(INSERT_EVENT_BY_SEQ)?;
    let mut by_instance: BTreeMap<String, u64> = BTreeMap::new();
    for seq in due {
        let (instance, id): (String, String) =
            expire.query_row(params![seq, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
        event.execute(params![seq, now, "expired", "not sent within max_age"])?;
        stream::add(tx, now, &id, &instance, EventKind::Expired)?;
        *by_instance.entry(instance).or_default() += 1;
    }
    Ok(by_instance.into_iter().collect())
}

/// Deletes one batch of cards that ended before `cutoff`, with their events and the
/// idempotency keys no kept card uses; returns how many cards went.
pub(super) fn delete_ended_batch(tx: &Transaction<'_>, cutoff: i64) -> rusqlite::Result<u64> {
    let doomed: Vec<(i64, String, Option<String>)> = tx
        .prepare_cached(ENDED_BEFORE)?
        .query_map(params![cutoff, RETENTION_BATCH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut events = tx.prepare_cached(DELETE_EVENTS)?;
    let mut message = tx.prepare_cached(DELETE_MESSAGE)?;
    let mut deleted = 0;
    for (seq, _, _) in &doomed {
        events.execute([seq])?;
        deleted += message.execute([seq])? as u64;
    }
    let keys: std::collections::BTreeSet<(&str, &str)> = doomed
        .iter()
        .filter_map(|(_, instance, key)| Some((instance.as_str(), key.as_deref()?)))
        .collect();
    let mut forget = tx.prepare_cached(FORGET_KEY)?;
    for (instance, key) in keys {
        forget.execute(params![instance, key])?;
    }
    Ok(deleted)
}
