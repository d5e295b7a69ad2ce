//! An enqueue inside the writer's group transaction: new rows with fresh ids and places
//! in line, or the original rows of an idempotent repeat. Called by [`super::writer`]
//! only. A group's new rows go in with one statement ([`INSERT_ROWS`], arrays bound),
//! its places in line come from one call of the shared sequence ([`TAKE_PLACES`]).

use sqlx::PgConnection;

use super::rows::MESSAGES_BY_IDS;
use crate::store::error::StoreError;
use crate::store::model::{EnqueueOutcome, EnqueueRequest, MessageRow};

/// $1 places in line from the sequence every daemon shares, in order.
pub const TAKE_PLACES: &str =
    "SELECT nextval('line_seq') FROM generate_series(1, $1::bigint) ORDER BY 1";

/// A group's new cards, one array per column.
pub const INSERT_ROWS: &str = "INSERT INTO messages
    (id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
     enqueued_at, expires_at, not_before, due_at)
    SELECT id, instance, 'queued', line_seq, chat_id, phone, body, idempotency_key, peer_uid,
           enqueued_at, expires_at, not_before, due_at
      FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                  $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                  $12::bigint[])
        AS t(id, instance, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
             enqueued_at, expires_at, not_before, due_at)";

/// Adds a group's new rows to the writer's shard of an instance's queued count ($1
/// instance, $2 rows, $3 shard) and of its not-yet-due count ($4 of those rows, the
/// pseudo-state 'scheduled' of migration 0002), and returns the count of its due
/// queued cards as this transaction sees it (its shard after the upserts, the others as
/// committed), for the answers' `position`. The statement's own snapshot does not see
/// its upserts: the other shards are summed from it, this shard's come from RETURNING.
pub const QUEUED_COUNTS: &str = "WITH mine AS (
        INSERT INTO counts (instance, state, shard, n) VALUES ($1, 'queued', $3, $2)
        ON CONFLICT (instance, state, shard) DO UPDATE SET n = counts.n + excluded.n
        RETURNING n),
    later AS (
        INSERT INTO counts (instance, state, shard, n)
        SELECT $1, 'scheduled', $3, $4::bigint WHERE $4::bigint > 0
        ON CONFLICT (instance, state, shard) DO UPDATE SET n = counts.n + excluded.n
        RETURNING n)
    SELECT ((SELECT n FROM mine)
        + COALESCE((SELECT SUM(n) FROM counts
            WHERE instance = $1 AND state = 'queued' AND shard <> $3), 0)
        - COALESCE((SELECT n FROM later), 0)
        - COALESCE((SELECT SUM(n) FROM counts
            WHERE instance = $1 AND state = 'scheduled' AND (shard <> $3 OR $4 = 0)), 0)
        )::bigint";

pub const FIND_KEY: &str =
    "SELECT body_hash, message_ids FROM idempotency WHERE instance = $1 AND key = $2";

/// Records a key unless another transaction (this daemon's or another's) did first:
/// then nothing is returned, and the key is read again once that one has committed.
pub const INSERT_KEY: &str = "INSERT INTO idempotency
    (instance, key, body_hash, message_ids, batch, created_at) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (instance, key) DO NOTHING RETURNING true";

/// The rows of a group not yet inserted, and the ids and places in line still free.
pub(super) struct Pending {
    pub rows: Vec<MessageRow>,
    pub ids: std::vec::IntoIter<String>,
    pub places: std::vec::IntoIter<i64>,
}

/// Places in line for `n` cards.
pub(super) async fn take_places(tx: &mut PgConnection, n: usize) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(TAKE_PLACES)
        .bind(n as i64)
        .fetch_all(tx)
        .await
}

/// Plans one enqueue: its new rows join `pending`, or the original rows of a repeat
/// are answered. The outer error fails the whole group (a database error); the inner
/// one only this request (a key reused with another body), which then wrote nothing.
pub(super) async fn plan(
    tx: &mut PgConnection,
    request: &EnqueueRequest,
    now: i64,
    pending: &mut Pending,
) -> Result<Result<EnqueueOutcome, StoreError>, StoreError> {
    let Some(key) = &request.idempotency_key else {
        let rows = new_rows(request, now, pending)?;
        pending.rows.extend(rows.iter().cloned());
        return Ok(Ok(EnqueueOutcome::Created { rows, queued: None }));
    };
    let hash = crate::store::model::body_hash(&request.cards, request.not_before);
    if let Some(seen) = find_key(tx, request, key, &hash, pending).await? {
        return Ok(seen);
    }
    let rows = new_rows(request, now, pending)?;
    let message_ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let recorded: Option<bool> = sqlx::query_scalar(INSERT_KEY)
        .bind(&request.instance)
        .bind(key)
        .bind(&hash)
        .bind(&message_ids)
        .bind(request.cards.len() > 1)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    if recorded.is_none() {
        // Another daemon committed this key meanwhile: answer as a repeat of it.
        return match find_key(tx, request, key, &hash, pending).await? {
            Some(seen) => Ok(seen),
            None => Err(StoreError::database(
                "idempotency key vanished while recorded",
            )),
        };
    }
    pending.rows.extend(rows.iter().cloned());
    Ok(Ok(EnqueueOutcome::Created { rows, queued: None }))
}

/// The answer to a key already recorded: its original rows, or a mismatch.
async fn find_key(
    tx: &mut PgConnection,
    request: &EnqueueRequest,
    key: &str,
    hash: &str,
    pending: &mut Pending,
) -> Result<Option<Result<EnqueueOutcome, StoreError>>, StoreError> {
    let seen: Option<(String, Vec<String>)> = sqlx::query_as(FIND_KEY)
        .bind(&request.instance)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((seen_hash, message_ids)) = seen else {
        return Ok(None);
    };
    if seen_hash != hash {
        return Ok(Some(Err(StoreError::IdempotencyMismatch)));
    }
    // The key may be this group's own, its rows not yet inserted: insert them first.
    insert_rows(tx, &std::mem::take(&mut pending.rows)).await?;
    let found: Vec<MessageRow> = sqlx::query_as(MESSAGES_BY_IDS)
        .bind(&message_ids)
        .fetch_all(&mut *tx)
        .await?;
    // In the key's order; a card already gone (retention) is left out.
    let rows = message_ids
        .iter()
        .filter_map(|id| found.iter().find(|r| &r.id == id).cloned())
        .collect();
    Ok(Some(Ok(EnqueueOutcome::Repeated(rows))))
}

/// Inserts rows with one statement.
pub(super) async fn insert_rows(tx: &mut PgConnection, rows: &[MessageRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&MessageRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let num = |f: fn(&MessageRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    sqlx::query(INSERT_ROWS)
        .bind(col(|r| r.id.clone()))
        .bind(col(|r| r.instance.clone()))
        .bind(num(|r| r.line_seq))
        .bind(col(|r| r.chat_id.clone()))
        .bind(num(|r| r.phone))
        .bind(col(|r| r.body.clone()))
        .bind(
            rows.iter()
                .map(|r| r.idempotency_key.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.peer_uid)
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(num(|r| r.enqueued_at))
        .bind(num(|r| r.expires_at))
        .bind(
            rows.iter()
                .map(|r| r.not_before)
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(rows.iter().map(|r| r.due_at).collect::<Vec<Option<i64>>>())
        .execute(tx)
        .await?;
    Ok(())
}

/// The rows of a request's cards: fresh ids and the next places in line.
fn new_rows(
    request: &EnqueueRequest,
    now: i64,
    pending: &mut Pending,
) -> Result<Vec<MessageRow>, StoreError> {
    let mut rows = Vec::with_capacity(request.cards.len());
    for card in &request.cards {
        let id = pending
            .ids
            .next()
            .ok_or_else(|| StoreError::database("fewer ids than cards"))?;
        let line = pending
            .places
            .next()
            .ok_or_else(|| StoreError::database("fewer places in line than cards"))?;
        rows.push(MessageRow::fresh(
            id,
            &request.instance,
            line,
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
