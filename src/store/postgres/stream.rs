//! The event stream and its consumers' cursors (docs/api.md §11) on PostgreSQL, in one
//! place: the events a transaction buffers ([`Buffer`]) and writes with one final
//! statement ([`WRITE`]), retention of old events, the consumers' cursors, and the
//! reads (events after a `seq`, the stream's ends, the consumers).
//!
//! How `seq` stays gap-free and in order with many writers in many daemons (migration
//! 0002): every transaction that changes a card adds its events to a [`Buffer`], and
//! [`write`] runs as its LAST statement before COMMIT: one statement that moves
//! `stream_counter.last` by the number of events and inserts them numbered from the
//! old value. The counter row's lock is held until COMMIT, so the next transaction's
//! update waits for this one and numbers on from its committed value (or from the old
//! one if this one rolled back): seq N+1 never commits before N. Readers read only up
//! to the counter, which commits with the rows it counts.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool, Row};

use crate::event::EventKind;
use crate::store::error::StoreError;
use crate::store::model::{ConsumerRow, MessageRow, StreamEnds, StreamEvent};

/// A transaction's events, in order, not yet written.
#[derive(Default)]
pub(super) struct Buffer {
    at: Vec<i64>,
    ids: Vec<String>,
    instances: Vec<String>,
    kinds: Vec<&'static str>,
}

impl Buffer {
    /// Adds the event `kind` of card `id` on `instance`, changed at `at`.
    pub(super) fn add(&mut self, at: i64, id: &str, instance: &str, kind: EventKind) {
        self.at.push(at);
        self.ids.push(id.to_string());
        self.instances.push(instance.to_string());
        self.kinds.push(kind.as_str());
    }

    pub(super) fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// The transaction's last statement: the counter moves by $1 (the number of events)
/// and the events ($2 at, $3 ids, $4 instances, $5 kinds) are inserted numbered on from
/// its old value; answers the new value.
pub const WRITE: &str = "WITH c AS (
        UPDATE stream_counter SET last = last + $1 WHERE id = 1 RETURNING last),
    written AS (
        INSERT INTO stream (seq, at, message_id, instance, event)
        SELECT c.last - $1 + o.n, o.at, o.id, o.instance, o.event
          FROM c, UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[])
               WITH ORDINALITY AS o(at, id, instance, event, n))
    SELECT last FROM c";

/// The last committed `seq`.
pub const COUNTER: &str = "SELECT last FROM stream_counter WHERE id = 1";

/// The oldest events ($1 how many), for retention to find where the old ones end.
pub const OLDEST: &str = "SELECT seq, at FROM stream ORDER BY seq LIMIT $1";

/// Retention: the events up to $1 (a `seq` below the newest).
pub const DELETE_UP_TO: &str = "DELETE FROM stream WHERE seq <= $1";

/// The events after $1, up to the counter, of instance $2 (NULL: all), $3 at most,
/// with their cards as they are now (the card's columns NULL once retention took it).
pub const STREAM_AFTER: &str = concat!(
    "SELECT ",
    super::rows::message_columns!(),
    ", e_seq, e_at, e_id, e_instance, e_event FROM \
     (SELECT seq AS e_seq, at AS e_at, message_id AS e_id, instance AS e_instance, \
      event AS e_event FROM stream \
      WHERE seq > $1 AND seq <= (SELECT last FROM stream_counter WHERE id = 1) \
      AND ($2::text IS NULL OR instance = $2) ORDER BY seq LIMIT $3) e \
     LEFT JOIN messages ON messages.id = e.e_id ORDER BY e_seq"
);

/// The oldest kept `seq` and the counter.
pub const ENDS: &str =
    "SELECT (SELECT MIN(seq) FROM stream), (SELECT last FROM stream_counter WHERE id = 1)";

/// A consumer's first cursor ($1 name, $2 cursor, $3 now), unless it has one.
pub const CONSUMER_START: &str = "INSERT INTO consumers (name, cursor, updated_at)
    VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";

/// A consumer's cursor moved ($1 name, $2 cursor, $3 now): its failures end.
pub const CONSUMER_SET: &str = "INSERT INTO consumers (name, cursor, updated_at)
    VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET cursor = $2, updated_at = $3,
    failures = 0";

/// A failed delivery ($1 name, $2 error, $3 now).
pub const CONSUMER_FAILED: &str = "UPDATE consumers SET failures = failures + 1,
    last_error = $2, last_error_at = $3 WHERE name = $1";

pub const CONSUMER_DELETE: &str = "DELETE FROM consumers WHERE name = $1";

pub const CONSUMER: &str =
    "SELECT name, cursor, updated_at, failures, last_error, last_error_at FROM consumers WHERE name = $1";

pub const CONSUMERS: &str =
    "SELECT name, cursor, updated_at, failures, last_error, last_error_at FROM consumers ORDER BY name";

/// Writes the buffered events as the transaction's last statement before COMMIT;
/// Some(the new last seq) when there were any.
pub(super) async fn write(tx: &mut PgConnection, events: &Buffer) -> sqlx::Result<Option<i64>> {
    if events.is_empty() {
        return Ok(None);
    }
    let last: i64 = sqlx::query_scalar(WRITE)
        .bind(events.at.len() as i64)
        .bind(&events.at)
        .bind(&events.ids)
        .bind(&events.instances)
        .bind(&events.kinds)
        .fetch_one(tx)
        .await?;
    Ok(Some(last))
}

/// Deletes up to `batch` of the oldest events older than `cutoff`, never the newest
/// one; returns how many went.
pub(super) async fn delete_old(
    tx: &mut PgConnection,
    cutoff: i64,
    batch: i64,
) -> sqlx::Result<u64> {
    let last: i64 = sqlx::query_scalar(COUNTER).fetch_one(&mut *tx).await?;
    let oldest: Vec<(i64, i64)> = sqlx::query_as(OLDEST)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
    let upto = oldest
        .iter()
        .take_while(|(seq, at)| *at < cutoff && *seq < last)
        .last()
        .map(|(seq, _)| *seq);
    match upto {
        Some(seq) => Ok(sqlx::query(DELETE_UP_TO)
            .bind(seq)
            .execute(tx)
            .await?
            .rows_affected()),
        None => Ok(0),
    }
}

/// Gives consumer `name` its first cursor, `start`, unless it has one.
pub(super) async fn start_consumer(
    tx: &mut PgConnection,
    name: &str,
    start: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(CONSUMER_START)
        .bind(name)
        .bind(start)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

pub(super) async fn set_cursor(
    tx: &mut PgConnection,
    name: &str,
    cursor: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(CONSUMER_SET)
        .bind(name)
        .bind(cursor)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// Records a failed delivery; false if the consumer has no cursor.
pub(super) async fn consumer_failed(
    tx: &mut PgConnection,
    name: &str,
    error: &str,
    now: i64,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(CONSUMER_FAILED)
        .bind(name)
        .bind(error)
        .bind(now)
        .execute(tx)
        .await?
        .rows_affected()
        > 0)
}

pub(super) async fn delete_consumer(tx: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query(CONSUMER_DELETE)
        .bind(name)
        .execute(tx)
        .await?
        .rows_affected()
        > 0)
}

// --- reads ---

pub(super) async fn counter(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(COUNTER).fetch_one(pool).await
}

pub(super) async fn after(
    pool: &PgPool,
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

pub(super) async fn ends(pool: &PgPool) -> Result<StreamEnds, StoreError> {
    let (oldest, last): (Option<i64>, Option<i64>) = sqlx::query_as(ENDS).fetch_one(pool).await?;
    Ok(StreamEnds {
        oldest,
        last: last.unwrap_or(0),
    })
}

pub(super) async fn consumer(pool: &PgPool, name: &str) -> Result<Option<ConsumerRow>, StoreError> {
    Ok(sqlx::query_as(CONSUMER)
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

pub(super) async fn consumers(pool: &PgPool) -> Result<Vec<ConsumerRow>, StoreError> {
    Ok(sqlx::query_as(CONSUMERS).fetch_all(pool).await?)
}

impl FromRow<'_, PgRow> for StreamEvent {
    fn from_row(r: &PgRow) -> sqlx::Result<StreamEvent> {
        let message_id: Option<String> = r.try_get(0)?;
        let message = match message_id {
            Some(_) => Some(MessageRow::from_row(r)?),
            None => None,
        };
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

impl FromRow<'_, PgRow> for ConsumerRow {
    fn from_row(r: &PgRow) -> sqlx::Result<ConsumerRow> {
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
