//! Every read, on the pool outside any write transaction: a message, a page, a
//! history, a place in line, an instance's state and counts, the drain's head of line.
//! Each statement sees every commit answered before it started, whichever daemon made it.

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::rows::{MESSAGE_COLUMNS, ONE_MESSAGE};
use crate::store::error::StoreError;
use crate::store::model::{
    ChatHold, EventRow, InstanceCounts, InstanceRow, ListFilter, MessageRow, UncertainCard,
};

/// Whether the database answers (health).
pub const ALIVE: &str = "SELECT 1";

/// Whether the server streams to a standby asynchronously.
pub const ASYNC_STANDBY: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('async', 'potential'))";

/// The head of an instance's queued line ($1 instance, $2 how many): cards already
/// due only (a card whose `notBefore` is ahead is not in line yet).
pub const HEAD_ROWS: &str = concat!(
    "SELECT ",
    super::rows::message_columns!(),
    " FROM messages WHERE instance = $1 AND state = 'queued' AND due_at IS NULL \
     ORDER BY line_seq LIMIT $2"
);

/// The head of an instance's queued line without the cards of held chats ($1 instance,
/// $2 how many, $3 the held chat ids): used only while a chat is held.
pub const HEAD_ROWS_SKIPPING: &str = concat!(
    "SELECT ",
    super::rows::message_columns!(),
    " FROM messages WHERE instance = $1 AND state = 'queued' AND due_at IS NULL \
     AND chat_id <> ALL($3) ORDER BY line_seq LIMIT $2"
);

/// The card in flight on an instance ($1).
pub const IN_FLIGHT: &str = "SELECT id, chat_id, phone, attempt_started_at FROM messages
    WHERE instance = $1 AND state = 'sending' ORDER BY line_seq LIMIT 1";

/// Whether an idMessage is already stored ($1).
pub const ID_MESSAGE_TAKEN: &str = "SELECT 1 FROM messages WHERE id_message = $1 LIMIT 1";

/// A message's history ($1 id), oldest first, starting with `enqueued` read from the
/// card's own row (as the SQLite store does: no event row is written for it).
pub const HISTORY: &str = "SELECT at, event, attempt, http_status, detail FROM (
        SELECT enqueued_at AS at, 'enqueued' AS event, NULL::integer AS attempt,
               NULL::smallint AS http_status, NULL::text AS detail, 0 AS part, 0::bigint AS n
          FROM messages WHERE id = $1
        UNION ALL
        SELECT at, event, attempt, http_status, detail, 1, n FROM events
         WHERE message_seq = (SELECT seq FROM messages WHERE id = $1)) h
    ORDER BY part, n";

/// Due queued cards of an instance ($1) ahead of a place in line ($2).
pub const CARDS_AHEAD: &str = "SELECT COUNT(*) FROM messages
    WHERE instance = $1 AND state = 'queued' AND due_at IS NULL AND line_seq < $2";

/// When the first not-yet-due card of an instance ($1) comes due.
pub const NEXT_DUE: &str = "SELECT due_at FROM messages
    WHERE instance = $1 AND state = 'queued' AND due_at IS NOT NULL
    ORDER BY due_at LIMIT 1";

/// An instance's persisted state ($1).
pub const INSTANCE: &str =
    "SELECT name, paused, last_send_at, hold_until, hold_reason FROM instances WHERE name = $1";

/// The chats of an instance ($1) held by a chats-quota 466.
pub const CHAT_HOLDS: &str =
    "SELECT chat_id, until, reason FROM chat_holds WHERE instance = $1 ORDER BY chat_id";

/// `status`: the counts by state of one instance ($1), from the `counts` table (the
/// sum of each count's shards).
pub const COUNTS: &str =
    "SELECT state, SUM(n)::bigint FROM counts WHERE instance = $1 GROUP BY state";

/// `status`: the oldest queued card of an instance ($1), the head of its line of due
/// cards; a retried card counts from its retry (it went back in line as if enqueued
/// then), one enqueued with a `notBefore` from that time.
pub const OLDEST_QUEUED: &str = "SELECT GREATEST(COALESCE(requeued_at, enqueued_at),
    COALESCE(not_before, 0)) FROM messages
    WHERE instance = $1 AND state = 'queued' AND due_at IS NULL ORDER BY line_seq LIMIT 1";

pub(super) async fn message(pool: &PgPool, id: &str) -> Result<MessageRow, StoreError> {
    sqlx::query_as(ONE_MESSAGE)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

pub(super) async fn history(pool: &PgPool, id: &str) -> Result<Vec<EventRow>, StoreError> {
    Ok(sqlx::query_as(HISTORY).bind(id).fetch_all(pool).await?)
}

/// A page of messages, newest first; the cursor is the last id of the page.
pub(super) async fn list(
    pool: &PgPool,
    filter: &ListFilter,
) -> Result<(Vec<MessageRow>, Option<String>), StoreError> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE true"));
    if let Some(instance) = &filter.instance {
        q.push(" AND instance = ").push_bind(instance.clone());
    }
    if let Some(state) = &filter.state {
        q.push(" AND state = ").push_bind(state.clone());
    }
    if let Some(chat_id) = &filter.chat_id {
        q.push(" AND chat_id = ").push_bind(chat_id.clone());
    }
    if let Some(phone) = filter.phone {
        q.push(" AND phone = ").push_bind(phone);
    }
    if let Some(prefix) = &filter.id_prefix {
        // A range of the id index: every id that starts with the prefix sorts
        // between the prefix and the prefix followed by the highest character.
        q.push(" AND id >= ").push_bind(prefix.clone());
        q.push(" AND id < ").push_bind(format!("{prefix}\u{7f}"));
    }
    if let Some(before) = &filter.before {
        q.push(" AND id < ").push_bind(before.to_ascii_uppercase());
    }
    let limit = filter.limit.max(1);
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut rows: Vec<MessageRow> = q.build_query_as().fetch_all(pool).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok((rows, next))
}

/// Place in line of a queued card (1 = next); a card in flight is not counted. An
/// index-only count of the cards ahead.
pub(super) async fn position(
    pool: &PgPool,
    instance: &str,
    line_seq: i64,
) -> Result<i64, StoreError> {
    let ahead: i64 = sqlx::query_scalar(CARDS_AHEAD)
        .bind(instance)
        .bind(line_seq)
        .fetch_one(pool)
        .await?;
    Ok(ahead + 1)
}

pub(super) async fn instance(pool: &PgPool, name: &str) -> Result<InstanceRow, StoreError> {
    let row: Option<InstanceRow> = sqlx::query_as(INSTANCE)
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(row.unwrap_or_else(|| InstanceRow {
        name: name.to_string(),
        ..InstanceRow::default()
    }))
}

pub(super) async fn chat_holds(pool: &PgPool, name: &str) -> Result<Vec<ChatHold>, StoreError> {
    Ok(sqlx::query_as(CHAT_HOLDS)
        .bind(name)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn counts(pool: &PgPool, name: &str) -> Result<InstanceCounts, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(COUNTS).bind(name).fetch_all(pool).await?;
    let oldest_queued_at: Option<i64> = sqlx::query_scalar(OLDEST_QUEUED)
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(InstanceCounts {
        by_state: rows.into_iter().collect(),
        oldest_queued_at,
    })
}

pub(super) async fn in_flight(
    pool: &PgPool,
    instance: &str,
) -> Result<Option<UncertainCard>, StoreError> {
    let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(IN_FLIGHT)
        .bind(instance)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(id, chat_id, phone, started)| UncertainCard {
        id,
        chat_id,
        phone,
        attempt_started_at: started.unwrap_or(0),
    }))
}

/// The first `limit` queued cards of an instance in line order, leaving out the cards
/// to the chats in `skip` (held by a chats-quota 466).
pub(super) async fn head_rows(
    pool: &PgPool,
    instance: &str,
    limit: i64,
    skip: &[String],
) -> Result<Vec<MessageRow>, StoreError> {
    if skip.is_empty() {
        return Ok(sqlx::query_as(HEAD_ROWS)
            .bind(instance)
            .bind(limit)
            .fetch_all(pool)
            .await?);
    }
    Ok(sqlx::query_as(HEAD_ROWS_SKIPPING)
        .bind(instance)
        .bind(limit)
        .bind(skip)
        .fetch_all(pool)
        .await?)
}

pub(super) async fn id_message_taken(pool: &PgPool, id_message: &str) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar(ID_MESSAGE_TAKEN)
        .bind(id_message)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

pub(super) async fn next_due(pool: &PgPool, instance: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(NEXT_DUE)
        .bind(instance)
        .fetch_optional(pool)
        .await?)
}
