//! Group commit for enqueues: one writer task takes every enqueue that is waiting (no
//! timer), writes them in one transaction with one `INSERT … SELECT FROM json_each(?)`
//! statement, and answers each caller only after the commit's fsync.
//!
//! Why one statement: sqlx pays tens of microseconds per statement for the hop to its
//! worker thread (two context switches), so a batch costs the same whether it holds 1
//! card or 1,000. A group without idempotency keys goes further: `BEGIN`, the insert,
//! the read of the queued counts (for the answers' `position`) and `COMMIT` travel as
//! one multi-statement call, one hop per group.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{MessageRow, Store, StoreError};
use crate::clock::now_ms;
use crate::contact::Card;

/// Most cards one transaction takes; a bigger backlog is split over several commits.
const MAX_GROUP_CARDS: usize = 8192;

pub const INSERT_FROM_JSON: &str = "INSERT INTO messages
    (id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
     enqueued_at, expires_at)
    SELECT value->>'id', value->>'instance', 'queued', value->>'line', value->>'chat',
           value->>'phone', value->>'body', value->>'key', value->>'uid',
           value->>'at', value->>'exp'
    FROM json_each(?1)";

/// Adds the group's new rows to the queued counts (?2: `[["instance", added], …]`) and
/// returns the counts as of this transaction, for the answers' `position`. The writer
/// keeps these counts itself (migration 0002): one statement per group, not a trigger
/// per row.
pub const QUEUED_COUNTS: &str = "INSERT INTO counts (instance, state, n)
    SELECT value->>0, 'queued', value->>1 FROM json_each(?2) WHERE true
    ON CONFLICT (instance, state) DO UPDATE SET n = n + excluded.n
    RETURNING instance, n";

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

pub(super) struct Job {
    request: EnqueueRequest,
    reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
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
        self.enqueue_tx
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the enqueue writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the enqueue writer has stopped".into()))?
    }
}

/// The writer loop: waits for one job, then takes whatever else is already waiting.
pub(super) async fn writer(
    pool: SqlitePool,
    mut jobs_rx: mpsc::Receiver<Job>,
    line_counter: Arc<AtomicI64>,
) {
    let mut ids = ulid::Generator::new();
    while let Some(first) = jobs_rx.recv().await {
        let mut cards = first.request.cards.len();
        let mut group = vec![first];
        while cards < MAX_GROUP_CARDS {
            match jobs_rx.try_recv() {
                Ok(job) => {
                    cards += job.request.cards.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit_group(&pool, group, &line_counter, &mut ids).await;
    }
}

async fn commit_group(
    pool: &SqlitePool,
    group: Vec<Job>,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) {
    let now = now_ms();
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail_all(group, StoreError::from(e)),
    };
    let result = if group.iter().any(|j| j.request.idempotency_key.is_some()) {
        keyed_group(&mut conn, &group, now, line_counter, ids).await
    } else {
        plain_group(&mut conn, &group, now, line_counter, ids).await
    };
    let (mut outcomes, counts) = match result {
        Ok(done) => done,
        Err(e) => {
            // A failed multi-statement call may leave its transaction open.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return fail_all(group, e);
        }
    };
    drop(conn);
    fill_positions(&mut outcomes, &counts);
    for (job, outcome) in group.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
    }
}

type GroupResult = (Vec<Result<EnqueueOutcome, StoreError>>, Vec<(String, i64)>);

/// No idempotency keys: rows are made here and the whole transaction is one call.
async fn plain_group(
    conn: &mut SqliteConnection,
    group: &[Job],
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<GroupResult, StoreError> {
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        outcomes.push(
            new_rows(&job.request, now, line_counter, ids)
                .map(|rows| EnqueueOutcome::Created { rows, queued: None }),
        );
    }
    let rows = outcomes.iter().filter_map(|o| match o {
        Ok(EnqueueOutcome::Created { rows, .. }) => Some(rows.iter()),
        _ => None,
    });
    let payload = rows_json(rows.flatten());
    let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
        "BEGIN IMMEDIATE; {INSERT_FROM_JSON}; {QUEUED_COUNTS}; COMMIT;"
    ))
    .bind(payload)
    .bind(added_json(&outcomes))
    .fetch_all(&mut *conn)
    .await?;
    Ok((outcomes, counts))
}

/// Some idempotency keys: each keyed job is looked up and inserted in turn, so a repeat
/// later in this very group finds the rows of an earlier one.
async fn keyed_group(
    conn: &mut SqliteConnection,
    group: &[Job],
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<GroupResult, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut fresh = Vec::new();
    for job in group {
        let outcome = plan_job(&mut tx, &job.request, now, line_counter, ids).await;
        if let Ok(EnqueueOutcome::Created { rows, .. }) = &outcome {
            if job.request.idempotency_key.is_some() {
                insert_rows(&mut tx, rows).await?;
            } else {
                fresh.extend(rows.iter().cloned());
            }
        }
        outcomes.push(outcome);
    }
    insert_rows(&mut tx, &fresh).await?;
    let counts: Vec<(String, i64)> = sqlx::query_as(QUEUED_COUNTS)
        .bind("[]")
        .bind(added_json(&outcomes))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((outcomes, counts))
}

/// How many rows each instance gains in this group, as `[["instance", added], …]`.
fn added_json(outcomes: &[Result<EnqueueOutcome, StoreError>]) -> String {
    let mut added: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for outcome in outcomes {
        if let Ok(EnqueueOutcome::Created { rows, .. }) = outcome {
            if let Some(first) = rows.first() {
                *added.entry(first.instance.as_str()).or_default() += rows.len() as i64;
            }
        }
    }
    json!(added.into_iter().collect::<Vec<_>>()).to_string()
}

/// Gives each created outcome the queued count of its instance as of its last row: the
/// count at the commit, less the rows that later jobs of the group added to that line.
fn fill_positions(outcomes: &mut [Result<EnqueueOutcome, StoreError>], counts: &[(String, i64)]) {
    let mut after: std::collections::HashMap<&str, i64> =
        counts.iter().map(|(name, n)| (name.as_str(), *n)).collect();
    for outcome in outcomes.iter_mut().rev() {
        if let Ok(EnqueueOutcome::Created { rows, queued }) = outcome {
            let Some(first) = rows.first() else { continue };
            if let Some(n) = after.get_mut(first.instance.as_str()) {
                *queued = Some(*n);
                *n -= rows.len() as i64;
            }
        }
    }
}

fn fail_all(group: Vec<Job>, error: StoreError) {
    tracing::warn!(%error, jobs = group.len(), "enqueue transaction failed; nothing written");
    for job in group {
        let _ = job.reply.send(Err(clone_error(&error)));
    }
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full(m) => StoreError::Full(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Database(other.to_string()),
    }
}

/// Decides one job: new rows to insert, or the original rows of an idempotent repeat.
async fn plan_job(
    tx: &mut Transaction<'_, Sqlite>,
    request: &EnqueueRequest,
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<EnqueueOutcome, StoreError> {
    let body_hash = request
        .idempotency_key
        .as_ref()
        .map(|_| hash_cards(&request.cards));
    if let (Some(key), Some(hash)) = (&request.idempotency_key, &body_hash) {
        let seen: Option<(String, String)> = sqlx::query_as(
            "SELECT body_hash, message_ids FROM idempotency WHERE instance = ?1 AND key = ?2",
        )
        .bind(&request.instance)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((seen_hash, message_ids)) = seen {
            if &seen_hash != hash {
                return Err(StoreError::IdempotencyMismatch);
            }
            let rows = super::messages::rows_by_ids(tx, &message_ids).await?;
            return Ok(EnqueueOutcome::Repeated(rows));
        }
    }
    let rows = new_rows(request, now, line_counter, ids)?;
    if let (Some(key), Some(hash)) = (&request.idempotency_key, &body_hash) {
        let message_ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        sqlx::query(
            "INSERT INTO idempotency (instance, key, body_hash, message_ids, batch, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&request.instance)
        .bind(key)
        .bind(hash)
        .bind(json!(message_ids).to_string())
        .bind(request.cards.len() > 1)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(EnqueueOutcome::Created { rows, queued: None })
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

async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[MessageRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(INSERT_FROM_JSON)
        .bind(rows_json(rows.iter()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One row as the JSON object `INSERT_FROM_JSON` reads (borrowed: no `Value` tree).
#[derive(Serialize)]
struct RowJson<'a> {
    id: &'a str,
    instance: &'a str,
    line: i64,
    chat: &'a str,
    phone: i64,
    body: &'a str,
    key: Option<&'a str>,
    uid: Option<i64>,
    at: i64,
    exp: i64,
}

fn rows_json<'a>(rows: impl Iterator<Item = &'a MessageRow>) -> String {
    let rows: Vec<RowJson<'a>> = rows
        .map(|r| RowJson {
            id: &r.id,
            instance: &r.instance,
            line: r.line_seq,
            chat: &r.chat_id,
            phone: r.phone,
            body: &r.body,
            key: r.idempotency_key.as_deref(),
            uid: r.peer_uid,
            at: r.enqueued_at,
            exp: r.expires_at,
        })
        .collect();
    serde_json::to_string(&rows).expect("rows always serialize")
}

fn hash_cards(cards: &[Card]) -> String {
    let mut hasher = Sha256::new();
    for card in cards {
        hasher.update(card.canonical().as_bytes());
        hasher.update(b"\n");
    }
    format!("{:x}", hasher.finalize())
}
