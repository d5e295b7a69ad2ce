//! Group commit for enqueues: one writer task takes every enqueue that is waiting (no
//! timer), writes them in one transaction with one `INSERT … SELECT FROM json_each(?)`
//! statement, and answers each caller only after the commit's fsync.
//!
//! Why one statement: sqlx pays tens of microseconds per statement for the hop to its
//! worker thread, so a batch costs the same whether it holds 1 card or 1,000.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{MessageRow, Store, StoreError};
use crate::clock::now_ms;
use crate::contact::Card;

/// Most cards one transaction takes; a bigger backlog is split over several commits.
const MAX_GROUP_CARDS: usize = 8192;

const INSERT_FROM_JSON: &str = "INSERT INTO messages
    (id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
     enqueued_at, expires_at)
    SELECT value->>'id', value->>'instance', 'queued', value->>'line', value->>'chat',
           value->>'phone', value->>'body', value->>'key', value->>'uid',
           value->>'at', value->>'exp'
    FROM json_each(?1)";

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
    /// New messages, durably committed.
    Created(Vec<MessageRow>),
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
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(group, StoreError::from(e)),
    };
    let mut outcomes = Vec::with_capacity(group.len());
    let mut fresh = Vec::new();
    for job in &group {
        let outcome = plan_job(&mut tx, &job.request, now, line_counter, ids).await;
        if let Ok(EnqueueOutcome::Created(rows)) = &outcome {
            if job.request.idempotency_key.is_some() {
                // Keyed jobs are inserted at once, so a repeat later in this very
                // group finds them.
                if let Err(e) = insert_rows(&mut tx, rows).await {
                    return fail_all(group, e);
                }
            } else {
                fresh.extend(rows.iter().cloned());
            }
        }
        outcomes.push(outcome);
    }
    if let Err(e) = insert_rows(&mut tx, &fresh).await {
        return fail_all(group, e);
    }
    if let Err(e) = tx.commit().await {
        return fail_all(group, StoreError::from(e));
    }
    for (job, outcome) in group.into_iter().zip(outcomes) {
        let _ = job.reply.send(outcome);
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
    Ok(EnqueueOutcome::Created(rows))
}

async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[MessageRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({"id": r.id, "instance": r.instance, "line": r.line_seq, "chat": r.chat_id,
                   "phone": r.phone, "body": r.body, "key": r.idempotency_key,
                   "uid": r.peer_uid, "at": r.enqueued_at, "exp": r.expires_at})
        })
        .collect();
    sqlx::query(INSERT_FROM_JSON)
        .bind(serde_json::Value::Array(values).to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn hash_cards(cards: &[Card]) -> String {
    let mut hasher = Sha256::new();
    for card in cards {
        hasher.update(card.canonical().as_bytes());
        hasher.update(b"\n");
    }
    format!("{:x}", hasher.finalize())
}
