//! `contactq migrate-store`: a SQLite database copied into an empty PostgreSQL one
//! (docs/api.md §10). Every card (with its `seq`, so history lines keep pointing at
//! it), history line, idempotency key, line state (pause, holds, pacing time) and chat
//! hold goes over in one PostgreSQL transaction, in chunks; the counts of both sides
//! are compared before it commits; then the SQLite file gets a `moved` row naming the
//! new home, and nothing else in it changes. A daemon refuses to start on a moved file.
//!
//! The caller holds the daemon's lock on the SQLite file throughout (no daemon writes
//! it meanwhile).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sqlx::{PgConnection, PgPool};

use super::error::{Cause, StoreError};
use crate::config::PostgresTarget;

/// Rows copied per statement.
const CHUNK: i64 = 5000;

/// The marker a moved SQLite database carries.
pub const MOVED_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS moved (home TEXT NOT NULL, at INTEGER NOT NULL)";
pub const MARK_MOVED: &str = "INSERT INTO moved (home, at) VALUES (?1, ?2)";
pub const HAS_MOVED_TABLE: &str =
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'moved'";
pub const MOVED_TO: &str = "SELECT home FROM moved LIMIT 1";

const SOURCE_MESSAGES: &str = "SELECT seq, id, instance, state, line_seq, chat_id, phone, body,
    idempotency_key, peer_uid, enqueued_at, expires_at, attempts, attempt_started_at,
    last_error, id_message, sent_at, ended_at, requeued_at, not_before, due_at, delivery,
    delivered_at, read_at
    FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2";
const SOURCE_EVENTS: &str = "SELECT rowid, message_seq, at, event, attempt, http_status, detail
    FROM events WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";
const SOURCE_KEYS: &str =
    "SELECT instance, key, body_hash, message_ids, batch, created_at FROM idempotency";
const SOURCE_INSTANCES: &str =
    "SELECT name, paused, last_send_at, hold_until, hold_reason FROM instances";
const SOURCE_CHAT_HOLDS: &str = "SELECT instance, chat_id, until, reason FROM chat_holds";
const SOURCE_STREAM: &str = "SELECT seq, at, message_id, instance, event FROM stream
    WHERE seq > ?1 AND seq <= (SELECT last FROM stream_counter WHERE id = 1)
    ORDER BY seq LIMIT ?2";
const SOURCE_STREAM_LAST: &str = "SELECT last FROM stream_counter WHERE id = 1";
const SOURCE_CONSUMERS: &str =
    "SELECT name, cursor, updated_at, failures, last_error, last_error_at FROM consumers";
const SOURCE_COUNT: [(&str, &str); 7] = [
    ("messages", "SELECT COUNT(*) FROM messages"),
    ("events", "SELECT COUNT(*) FROM events"),
    ("idempotency", "SELECT COUNT(*) FROM idempotency"),
    ("instances", "SELECT COUNT(*) FROM instances"),
    ("chat_holds", "SELECT COUNT(*) FROM chat_holds"),
    (
        "stream",
        "SELECT COUNT(*) FROM stream WHERE seq <= (SELECT last FROM stream_counter WHERE id = 1)",
    ),
    ("consumers", "SELECT COUNT(*) FROM consumers"),
];
const TARGET_COUNT: [&str; 7] = [
    "SELECT COUNT(*) FROM messages",
    "SELECT COUNT(*) FROM events",
    "SELECT COUNT(*) FROM idempotency",
    "SELECT COUNT(*) FROM instances",
    "SELECT COUNT(*) FROM chat_holds",
    "SELECT COUNT(*) FROM stream",
    "SELECT COUNT(*) FROM consumers",
];
/// Whether the target holds anything a daemon wrote.
const TARGET_USED: &str = "SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM events)
    + (SELECT COUNT(*) FROM idempotency) + (SELECT COUNT(*) FROM instances)
    + (SELECT COUNT(*) FROM chat_holds) + (SELECT COUNT(*) FROM config_record)
    + (SELECT COUNT(*) FROM stream) + (SELECT COUNT(*) FROM consumers)";

const TARGET_MESSAGES: &str = "INSERT INTO messages (seq, id, instance, state, line_seq,
    chat_id, phone, body, idempotency_key, peer_uid, enqueued_at, expires_at, attempts,
    attempt_started_at, last_error, id_message, sent_at, ended_at, requeued_at, not_before,
    due_at, delivery, delivered_at, read_at)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
        $6::text[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[],
        $12::bigint[], $13::integer[], $14::bigint[], $15::text[], $16::text[], $17::bigint[],
        $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], $22::text[],
        $23::bigint[], $24::bigint[])";
const TARGET_EVENTS: &str = "INSERT INTO events (n, message_seq, at, event, attempt,
    http_status, detail)
    SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::integer[],
        $6::smallint[], $7::text[])";
const TARGET_KEY: &str = "INSERT INTO idempotency
    (instance, key, body_hash, message_ids, batch, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
const TARGET_INSTANCE: &str = "INSERT INTO instances
    (name, paused, last_send_at, hold_until, hold_reason) VALUES ($1, $2, $3, $4, $5)";
const TARGET_CHAT_HOLD: &str =
    "INSERT INTO chat_holds (instance, chat_id, until, reason) VALUES ($1, $2, $3, $4)";
/// The counts table from the copied cards (states, the `scheduled` queued cards not yet
/// due, the delivery values), and the identities and the line past them.
const TARGET_COUNTS: &str = "INSERT INTO counts (instance, state, n)
     SELECT instance, state, COUNT(*) FROM messages GROUP BY instance, state
     UNION ALL
     SELECT instance, 'scheduled', COUNT(*) FROM messages
         WHERE state = 'queued' AND due_at IS NOT NULL GROUP BY instance
     UNION ALL
     SELECT instance, 'delivery:' || delivery, COUNT(*) FROM messages
         WHERE delivery IS NOT NULL GROUP BY instance, delivery";
const TARGET_STREAM: &str = "INSERT INTO stream (seq, at, message_id, instance, event)
    SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])";
const TARGET_STREAM_LAST: &str = "UPDATE stream_counter SET last = $1 WHERE id = 1";
const TARGET_CONSUMER: &str = "INSERT INTO consumers
    (name, cursor, updated_at, failures, last_error, last_error_at) VALUES ($1, $2, $3, $4, $5, $6)";
const TARGET_SEQUENCES: &str = "SELECT
    setval(pg_get_serial_sequence('messages', 'seq'), COALESCE((SELECT MAX(seq) FROM messages), 0) + 1, false),
    setval(pg_get_serial_sequence('events', 'n'), COALESCE((SELECT MAX(n) FROM events), 0) + 1, false),
    setval('line_seq', COALESCE((SELECT MAX(line_seq) FROM messages), 0) + 1, false)";

/// What was copied.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub cards: i64,
    pub events: i64,
    pub keys: i64,
    pub instances: i64,
    pub chat_holds: i64,
    /// Events of the stream (numbers kept).
    pub stream: i64,
    pub consumers: i64,
}

fn source_error(e: rusqlite::Error) -> StoreError {
    StoreError::Refused(format!(
        "the SQLite database cannot be read as a contactq database of this version \
         (start this version's daemon on it once first): {e}"
    ))
}

/// Where a moved SQLite database went, if it was moved (a daemon refuses it).
pub(super) fn moved_home(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let has_table = conn
        .query_row(HAS_MOVED_TABLE, [], |_| Ok(()))
        .optional()?
        .is_some();
    if !has_table {
        return Ok(None);
    }
    conn.query_row(MOVED_TO, [], |r| r.get(0)).optional()
}

/// Refuses a SQLite database that `migrate-store` moved: exit 78 naming its new home.
pub(super) fn refuse_if_moved(path: &Path) -> Result<(), StoreError> {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Ok(());
    };
    match moved_home(&conn) {
        Ok(Some(home)) => Err(StoreError::Refused(format!(
            "database {} was moved to {home} by contactq migrate-store: set daemon.database \
             to it",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database `to`,
/// checks the counts, and marks `from` as moved.
pub async fn migrate(from: &Path, to: &PostgresTarget) -> Result<MigrateReport, StoreError> {
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(source_error)?;
    if let Some(home) = moved_home(&source).map_err(source_error)? {
        return Err(StoreError::Refused(format!(
            "{} was already moved to {home}",
            from.display()
        )));
    }
    let mut expected = Vec::new();
    for (table, count) in SOURCE_COUNT {
        let n: i64 = source
            .query_row(count, [], |r| r.get(0))
            .map_err(source_error)?;
        expected.push((table, n));
    }
    let connect = to
        .connect_options()
        .map_err(|e| StoreError::Refused(format!("--to {}: {e}", to.redacted())))?;
    let pool = super::postgres::connect_and_migrate(connect, "migrate-store", 2).await?;
    let copied = copy(&source, &pool, &expected).await;
    pool.close().await;
    let report = copied?;
    source
        .execute_batch(MOVED_TABLE)
        .and_then(|()| {
            source.execute(
                MARK_MOVED,
                rusqlite::params![to.redacted(), crate::clock::now_ms()],
            )
        })
        .map_err(|e| {
            StoreError::Database(Cause::context(
                "copied and checked, but the SQLite file could not be marked as moved; \
                 do not start a daemon on it",
                e,
            ))
        })?;
    Ok(report)
}

async fn copy(
    source: &Connection,
    pool: &PgPool,
    expected: &[(&str, i64)],
) -> Result<MigrateReport, StoreError> {
    let mut tx = pool.begin().await?;
    let used: i64 = sqlx::query_scalar(TARGET_USED).fetch_one(&mut *tx).await?;
    if used > 0 {
        return Err(StoreError::Refused(
            "the PostgreSQL database is not empty: migrate-store copies only into a new \
             database (its daemons' queue would be mixed with this one)"
                .into(),
        ));
    }
    let cards = copy_messages(source, &mut tx).await?;
    let events = copy_events(source, &mut tx).await?;
    let keys = copy_small(source, &mut tx).await?;
    let stream = copy_stream(source, &mut tx).await?;
    sqlx::query(TARGET_COUNTS).execute(&mut *tx).await?;
    sqlx::query(TARGET_SEQUENCES).execute(&mut *tx).await?;
    for ((table, want), count) in expected.iter().zip(TARGET_COUNT) {
        let got: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await?;
        if got != *want {
            return Err(StoreError::database(format!(
                "{table}: {want} rows in SQLite, {got} copied; nothing was committed"
            )));
        }
    }
    tx.commit().await?;
    let count = |t: &str| {
        expected
            .iter()
            .find(|(n, _)| *n == t)
            .map_or(0, |(_, n)| *n)
    };
    Ok(MigrateReport {
        cards,
        events,
        keys,
        instances: count("instances"),
        chat_holds: count("chat_holds"),
        stream,
        consumers: count("consumers"),
    })
}

/// A stream event: seq, at, message id, instance, event.
type SourceStreamEvent = (i64, i64, String, String, String);
/// A consumer: name, cursor, updated_at, failures, last error and when.
type SourceConsumer = (String, i64, i64, i64, Option<String>, Option<i64>);

/// The event stream up to its sealed counter (its numbers kept, so every consumer's
/// cursor still points where it did), the counter itself, and the consumers.
async fn copy_stream(source: &Connection, tx: &mut PgConnection) -> Result<i64, StoreError> {
    let mut after = 0i64;
    let mut total = 0;
    let mut select = source.prepare(SOURCE_STREAM).map_err(source_error)?;
    loop {
        let rows: Vec<SourceStreamEvent> = select
            .query_map(rusqlite::params![after, CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(source_error)?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        total += rows.len() as i64;
        sqlx::query(TARGET_STREAM)
            .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    let last: i64 = source
        .query_row(SOURCE_STREAM_LAST, [], |r| r.get(0))
        .map_err(source_error)?;
    sqlx::query(TARGET_STREAM_LAST)
        .bind(last)
        .execute(&mut *tx)
        .await?;
    let consumers: Vec<SourceConsumer> = source
        .prepare(SOURCE_CONSUMERS)
        .and_then(|mut st| {
            st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(source_error)?;
    for (name, cursor, updated_at, failures, last_error, last_error_at) in consumers {
        sqlx::query(TARGET_CONSUMER)
            .bind(name)
            .bind(cursor)
            .bind(updated_at)
            .bind(failures)
            .bind(last_error)
            .bind(last_error_at)
            .execute(&mut *tx)
            .await?;
    }
    Ok(total)
}

type SourceMessage = (
    (
        i64,
        String,
        String,
        String,
        i64,
        String,
        i64,
        String,
        Option<String>,
        Option<i64>,
    ),
    (
        i64,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ),
    (
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<i64>,
    ),
);

async fn copy_messages(source: &Connection, tx: &mut PgConnection) -> Result<i64, StoreError> {
    let mut after = 0i64;
    let mut total = 0;
    let mut select = source.prepare(SOURCE_MESSAGES).map_err(source_error)?;
    loop {
        let rows: Vec<SourceMessage> = select
            .query_map(rusqlite::params![after, CHUNK], |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ),
                    (
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                        r.get(13)?,
                        r.get(14)?,
                        r.get(15)?,
                        r.get(16)?,
                        r.get(17)?,
                        r.get(18)?,
                    ),
                    (r.get(19)?, r.get(20)?, r.get(21)?, r.get(22)?, r.get(23)?),
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(source_error)?;
        let Some(last) = rows.last() else { break };
        after = last.0 .0;
        total += rows.len() as i64;
        macro_rules! column {
            ($part:tt, $i:tt) => {
                rows.iter().map(|r| r.$part.$i.clone()).collect::<Vec<_>>()
            };
        }
        sqlx::query(TARGET_MESSAGES)
            .bind(column!(0, 0))
            .bind(column!(0, 1))
            .bind(column!(0, 2))
            .bind(column!(0, 3))
            .bind(column!(0, 4))
            .bind(column!(0, 5))
            .bind(column!(0, 6))
            .bind(column!(0, 7))
            .bind(column!(0, 8))
            .bind(column!(0, 9))
            .bind(column!(1, 0))
            .bind(column!(1, 1))
            .bind(rows.iter().map(|r| r.1 .2 as i32).collect::<Vec<i32>>())
            .bind(column!(1, 3))
            .bind(column!(1, 4))
            .bind(column!(1, 5))
            .bind(column!(1, 6))
            .bind(column!(1, 7))
            .bind(column!(1, 8))
            .bind(column!(2, 0))
            .bind(column!(2, 1))
            .bind(column!(2, 2))
            .bind(column!(2, 3))
            .bind(column!(2, 4))
            .execute(&mut *tx)
            .await?;
    }
    Ok(total)
}

type SourceEvent = (
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

async fn copy_events(source: &Connection, tx: &mut PgConnection) -> Result<i64, StoreError> {
    let mut after = 0i64;
    let mut total = 0;
    let mut select = source.prepare(SOURCE_EVENTS).map_err(source_error)?;
    loop {
        let rows: Vec<SourceEvent> = select
            .query_map(rusqlite::params![after, CHUNK], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(source_error)?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        total += rows.len() as i64;
        sqlx::query(TARGET_EVENTS)
            .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.4.map(|a| a as i32))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.5.map(|s| s as i16))
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.6.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    Ok(total)
}

/// The idempotency keys, the lines' state and the chat holds; answers the keys copied.
async fn copy_small(source: &Connection, tx: &mut PgConnection) -> Result<i64, StoreError> {
    type Key = (String, String, String, String, bool, i64);
    let keys: Vec<Key> = source
        .prepare(SOURCE_KEYS)
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(source_error)?;
    for (instance, key, hash, ids, batch, created) in &keys {
        let ids: Vec<String> = serde_json::from_str(ids)
            .map_err(|e| StoreError::Database(Cause::context("idempotency record", e)))?;
        sqlx::query(TARGET_KEY)
            .bind(instance)
            .bind(key)
            .bind(hash)
            .bind(ids)
            .bind(batch)
            .bind(created)
            .execute(&mut *tx)
            .await?;
    }
    type Line = (String, bool, Option<i64>, Option<i64>, Option<String>);
    let lines: Vec<Line> = source
        .prepare(SOURCE_INSTANCES)
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(source_error)?;
    for (name, paused, last_send, hold_until, hold_reason) in lines {
        sqlx::query(TARGET_INSTANCE)
            .bind(name)
            .bind(paused)
            .bind(last_send)
            .bind(hold_until)
            .bind(hold_reason)
            .execute(&mut *tx)
            .await?;
    }
    type Hold = (String, String, i64, Option<String>);
    let holds: Vec<Hold> = source
        .prepare(SOURCE_CHAT_HOLDS)
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(source_error)?;
    for (instance, chat_id, until, reason) in holds {
        sqlx::query(TARGET_CHAT_HOLD)
            .bind(instance)
            .bind(chat_id)
            .bind(until)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
    }
    Ok(keys.len() as i64)
}
