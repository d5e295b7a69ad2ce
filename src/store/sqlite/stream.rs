//! The event stream and its consumers' cursors (docs/api.md §11), in one place: the
//! numbered event row every state or delivery change adds inside its own transaction,
//! the counter row the write thread seals each group with, retention of old events,
//! and the reads (events after a `seq`, the stream's ends, the consumers).
//!
//! How `seq` stays gap-free and in order (migration 0005): it is the row's INTEGER
//! PRIMARY KEY, one more than the largest, handed out by the one writer; a rolled-back
//! group gives its numbers back; retention keeps the newest row, so none is reused.
//! [`seal`] then sets `stream_counter.last` as the group's last statement before
//! COMMIT, and [`STREAM_AFTER`] reads only up to it.

use rusqlite::{params, OptionalExtension, Transaction};
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};

use crate::event::EventKind;
use crate::store::error::StoreError;
use crate::store::model::{ConsumerRow, MessageRow, StreamEnds, StreamEvent};

/// One event (?1 at, ?2 message id, ?3 instance, ?4 event); its `seq` is the next.
pub const ADD: &str =
    "INSERT INTO stream (at, message_id, instance, event) VALUES (?1, ?2, ?3, ?4)";

/// The group's last statement: the counter moves to the largest `seq` written, when
/// the group wrote any; answers the new value.
pub const SEAL: &str = "UPDATE stream_counter SET last = (SELECT MAX(seq) FROM stream)
    WHERE id = 1 AND last < (SELECT MAX(seq) FROM stream) RETURNING last";

/// The sealed counter: the last committed `seq`.
pub const COUNTER: &str = "SELECT last FROM stream_counter WHERE id = 1";

/// The oldest events (?1 how many), for retention to find where the old ones end.
pub const OLDEST: &str =
    "SELECT seq, at FROM stream WHERE seq >= (SELECT MIN(seq) FROM stream) ORDER BY seq LIMIT ?1";

/// Retention: the events up to ?1 (a `seq` below the newest).
pub const DELETE_UP_TO: &str = "DELETE FROM stream WHERE seq <= ?1";

/// The events after ?1, up to the sealed counter, of instance ?2 (NULL: all), ?3 at
/// most, with their cards as they are now (the card's columns NULL once retention took
/// it).
pub const STREAM_AFTER: &str = concat!(
    "SELECT ",
    super::rows::message_columns!(),
    ", e_seq, e_at, e_id, e_instance, e_event FROM \
     (SELECT seq AS e_seq, at AS e_at, message_id AS e_id, instance AS e_instance, \
      event AS e_event FROM stream \
      WHERE seq > ?1 AND seq <= (SELECT last FROM stream_counter WHERE id = 1) \
      AND (?2 IS NULL OR instance = ?2) ORDER BY seq LIMIT ?3) \
     LEFT JOIN messages ON messages.id = e_id ORDER BY e_seq"
);

/// The oldest kept `seq` and the sealed counter.
pub const ENDS: &str =
    "SELECT (SELECT MIN(seq) FROM stream), (SELECT last FROM stream_counter WHERE id = 1)";

/// A consumer's first cursor (?1 name, ?2 cursor, ?3 now), unless it has one.
pub const CONSUMER_START: &str = "INSERT INTO consumers (name, cursor, updated_at)
    VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING";

/// A consumer's cursor moved (?1 name, ?2 cursor, ?3 now): its failures end.
pub const CONSUMER_SET: &str = "INSERT INTO consumers (name, cursor, updated_at)
    VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET cursor = ?2, updated_at = ?3,
    failures = 0";

/// A failed delivery (?1 name, ?2 error, ?3 now).
pub const CONSUMER_FAILED: &str = "UPDATE consumers SET failures = failures + 1,
    last_error = ?2, last_error_at = ?3 WHERE name = ?1";

pub const CONSUMER_DELETE: &str = "DELETE FROM consumers WHERE name = ?1";

pub const CONSUMER: &str =
    "SELECT name, cursor, updated_at, failures, last_error, last_error_at FROM consumers WHERE name = ?1";

pub const CONSUMERS: &str =
    "SELECT name, cursor, updated_at, failures, last_error, last_error_at FROM consumers ORDER BY name";

/// Adds the event `kind` of message `id` on `instance`, in the caller's transaction.
pub(super) fn add(
    tx: &Transaction<'_>,
    at: i64,
    id: &str,
    instance: &str,
    kind: EventKind,
) -> rusqlite::Result<()> {
    tx.prepare_cached(ADD)?
        .execute(params![at, id, instance, kind.as_str()])?;
    Ok(())
}

/// Seals the group: the counter row moves to the last `seq` written (the transaction's
/// last statement before COMMIT). Some(last) when the group added events.
pub(super) fn seal(tx: &Transaction<'_>) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached(SEAL)?
        .query_row([], |r| r.get(0))
        .optional()
}

/// Deletes up to `batch` of the oldest events older than `cutoff`, never the newest
/// one (so no `seq` is handed out twice); returns how many went.
pub(super) fn delete_old(tx: &Transaction<'_>, cutoff: i64, batch: i64) -> rusqlite::Result<u64> {
    let last: i64 = tx.prepare_cached(COUNTER)?.query_row([], |r| r.get(0))?;
    let oldest: Vec<(i64, i64)> = tx
        .prepare_cached(OLDEST)?
        .query_map([batch], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let upto = oldest
        .iter()
        .take_while(|(seq, at)| *at < cutoff && *seq < last)
        .last()
        .map(|(seq, _)| *seq);
    match upto {
        Some(seq) => Ok(tx.prepare_cached(DELETE_UP_TO)?.execute([seq])? as u64),
        None => Ok(0),
    }
}

/// Gives consumer `name` its first cursor, `start`, unless it has one.
pub(super) fn start_consumer(
    tx: &Transaction<'_>,
    name: &str,
    start: i64,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(CONSUMER_START)?
        .execute(params![name, start, now])?;
    Ok(())
}

pub(super) fn set_cursor(
    tx: &Transaction<'_>,
    name: &str,
    cursor: i64,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(CONSUMER_SET)?
        .execute(params![name, cursor, now])?;
    Ok(())
}

/// Records a failed delivery; false if the consumer has no cursor.
pub(super) fn consumer_failed(
    tx: &Transaction<'_>,
    name: &str,
    error: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(CONSUMER_FAILED)?
        .execute(params![name, error, now])?
        > 0)
}

pub(super) fn delete_consumer(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    Ok(tx.prepare_cached(CONSUMER_DELETE)?.execute([name])? > 0)
}

// --- reads ---

pub(super) async fn after(
    pool: &SqlitePool,
    after: i64,
    instance: Option<&str>,
    limit: i64,
) -> Result<Vec<StreamEvent>, StoreError> {
    Ok(sqlx::query_as(STREAM_AFTER)
        .bind(after)
        .bind(instance)
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn ends(pool: &SqlitePool) -> Result<StreamEnds, StoreError> {
    let (oldest, last): (Option<i64>, Option<i64>) = sqlx::query_as(ENDS).fetch_one(pool).await?;
    Ok(StreamEnds {
        oldest,
        last: last.unwrap_or(0),
    })
}

pub(super) async fn consumer(
    pool: &SqlitePool,
    name: &str,
) -> Result<Option<ConsumerRow>, StoreError> {
    Ok(sqlx::query_as(CONSUMER)
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn consumers(pool: &SqlitePool) -> Result<Vec<ConsumerRow>, StoreError> {
    Ok(sqlx::query_as(CONSUMERS).fetch_all(pool).await?)
}

impl FromRow<'_, SqliteRow> for StreamEvent {
    fn from_row(r: &SqliteRow) -> sqlx::Result<StreamEvent> {
        let message_id: Option<String> = r.try_get(0)?;
        let message = match message_id {
            Some(_) => Some(MessageRow::from_row(r)?),
            None => None,
        };
        // The event's own columns come after the card's (by name, so a column added to
        // the card's list moves nothing here).
        Ok(StreamEvent {
            seq: r.try_get("e_seq")?,
            at: r.try_get("e_at")?,
            id: r.try_get("e_id")?,
            instance: r.try_get("e_instance")?,
            event: r.try_get("e_event")?,
            message,
        })
    }
}

impl FromRow<'_, SqliteRow> for ConsumerRow {
    fn from_row(r: &SqliteRow) -> sqlx::Result<ConsumerRow> {
        Ok(ConsumerRow {
            name: r.try_get(0)?,
            cursor: r.try_get(1)?,
            updated_at: r.try_get(2)?,
            failures: r.try_get(3)?,
            last_error: r.try_get(4)?,
            last_error_at: r.try_get(5)?,
        })
    }
}
