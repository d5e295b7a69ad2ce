//! Group commit for enqueues: one writer thread takes every enqueue that is waiting (no
//! timer), writes them in one transaction, and answers each caller only after the
//! commit's fsync.
//!
//! Why a thread of its own with a plain SQLite connection (rusqlite, the same
//! libsqlite3 as sqlx): this is the daemon's hottest write path, and every sqlx call is
//! a hop to sqlx's worker thread and back (two context switches, which dominate the
//! profile on small machines). Here a group costs one hand-off in and one answer out,
//! and each row is a cached prepared statement, no JSON round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::messages::MESSAGE_COLUMNS;
use super::{MessageRow, Store, StoreError};
use crate::clock::now_ms;
use crate::contact::Card;

/// Most cards one transaction takes; a bigger backlog is split over several commits.
const MAX_GROUP_CARDS: usize = 8192;

pub const INSERT_ROW: &str = "INSERT INTO messages
    (id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid,
     enqueued_at, expires_at)
    VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Adds a group's new rows to an instance's queued count and returns the count as of
/// this transaction, for the answers' `position`. The writer keeps these counts itself
/// (migration 0002): one statement per instance and group, not a trigger per row.
pub const QUEUED_COUNTS: &str = "INSERT INTO counts (instance, state, n) VALUES (?1, 'queued', ?2)
    ON CONFLICT (instance, state) DO UPDATE SET n = n + excluded.n
    RETURNING n";

const FIND_KEY: &str =
    "SELECT body_hash, message_ids FROM idempotency WHERE instance = ?1 AND key = ?2";

const INSERT_KEY: &str = "INSERT INTO idempotency
    (instance, key, body_hash, message_ids, batch, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

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

/// Starts the writer thread on the (already migrated) database.
pub(super) fn spawn_writer(
    path: &Path,
    max_page_count: Option<u64>,
    line_counter: Arc<AtomicI64>,
    gate: Arc<tokio::sync::Mutex<()>>,
) -> Result<mpsc::Sender<Job>, StoreError> {
    let path = path.to_path_buf();
    let first = open(&path, max_page_count)?;
    let (jobs_tx, jobs_rx) = mpsc::channel(8192);
    std::thread::Builder::new()
        .name("contactq-enqueue".into())
        .spawn(move || writer(path, max_page_count, first, jobs_rx, line_counter, gate))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the enqueue writer: {e}")))?;
    Ok(jobs_tx)
}

fn open(path: &Path, max_page_count: Option<u64>) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(store_error)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(store_error)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(store_error)?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;")
        .map_err(store_error)?;
    if let Some(pages) = max_page_count {
        // The same backstop as the sqlx connections (see StoreOptions).
        let backstop = pages + pages / 4 + 64;
        conn.query_row(&format!("PRAGMA max_page_count = {backstop}"), [], |_| {
            Ok(())
        })
        .map_err(store_error)?;
    }
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

/// The writer loop: waits for one job, then takes whatever else is already waiting.
fn writer(
    path: PathBuf,
    max_page_count: Option<u64>,
    first_conn: Connection,
    mut jobs_rx: mpsc::Receiver<Job>,
    line_counter: Arc<AtomicI64>,
    gate: Arc<tokio::sync::Mutex<()>>,
) {
    let mut conn = Some(first_conn);
    let mut ids = ulid::Generator::new();
    while let Some(first) = jobs_rx.blocking_recv() {
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
        let connection = match conn.take() {
            Some(c) => Ok(c),
            None => open(&path, max_page_count),
        };
        let mut connection = match connection {
            Ok(c) => c,
            Err(e) => {
                fail_all(group, e);
                continue;
            }
        };
        let held = gate.blocking_lock();
        let result = commit_group(&mut connection, &group, &line_counter, &mut ids);
        drop(held);
        match result {
            Ok((mut outcomes, counts)) => {
                conn = Some(connection);
                fill_positions(&mut outcomes, &counts);
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            // The connection is dropped (rolling back whatever was open) and a fresh
            // one is opened for the next group: after SQLITE_FULL or an I/O error a
            // connection may still hold a transaction that was never going to commit.
            Err(e) => fail_all(group, e),
        }
    }
}

type GroupResult = (Vec<Result<EnqueueOutcome, StoreError>>, Vec<(String, i64)>);

fn commit_group(
    conn: &mut Connection,
    group: &[Job],
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<GroupResult, StoreError> {
    let now = now_ms();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut added: BTreeMap<&str, i64> = BTreeMap::new();
    for job in group {
        let outcome = plan_job(&tx, &job.request, now, line_counter, ids)?;
        if let Ok(EnqueueOutcome::Created { rows, .. }) = &outcome {
            insert_rows(&tx, rows)?;
            *added.entry(job.request.instance.as_str()).or_default() += rows.len() as i64;
        }
        outcomes.push(outcome);
    }
    let mut counts = Vec::with_capacity(added.len());
    {
        let mut upsert = tx.prepare_cached(QUEUED_COUNTS).map_err(store_error)?;
        for (instance, n) in added {
            let queued: i64 = upsert
                .query_row(params![instance, n], |r| r.get(0))
                .map_err(store_error)?;
            counts.push((instance.to_string(), queued));
        }
    }
    tx.commit().map_err(store_error)?;
    Ok((outcomes, counts))
}

/// Decides one job: new rows to insert, or the original rows of an idempotent repeat.
/// The outer error fails the whole group (a database error); the inner one only this
/// job (an idempotency key reused with another body).
fn plan_job(
    tx: &rusqlite::Transaction<'_>,
    request: &EnqueueRequest,
    now: i64,
    line_counter: &AtomicI64,
    ids: &mut ulid::Generator,
) -> Result<Result<EnqueueOutcome, StoreError>, StoreError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(new_rows(request, now, line_counter, ids)
            .map(|rows| EnqueueOutcome::Created { rows, queued: None }));
    };
    let hash = hash_cards(&request.cards);
    let seen: Option<(String, String)> = tx
        .prepare_cached(FIND_KEY)
        .and_then(|mut s| {
            s.query_row(params![request.instance, key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(store_error)?;
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
    tx.prepare_cached(INSERT_KEY)
        .and_then(|mut s| {
            s.execute(params![
                request.instance,
                key,
                hash,
                json!(message_ids).to_string(),
                request.cards.len() > 1,
                now
            ])
        })
        .map_err(store_error)?;
    Ok(Ok(EnqueueOutcome::Created { rows, queued: None }))
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, rows: &[MessageRow]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_ROW).map_err(store_error)?;
    for r in rows {
        insert
            .execute(params![
                r.id,
                r.instance,
                r.line_seq,
                r.chat_id,
                r.phone,
                r.body,
                r.idempotency_key,
                r.peer_uid,
                r.enqueued_at,
                r.expires_at
            ])
            .map_err(store_error)?;
    }
    Ok(())
}

/// The stored rows named in a JSON array of ids, in that order.
fn rows_by_ids(
    tx: &rusqlite::Transaction<'_>,
    ids_json: &str,
) -> Result<Vec<MessageRow>, StoreError> {
    let ids: Vec<String> = serde_json::from_str(ids_json)
        .map_err(|e| StoreError::Database(format!("idempotency record: {e}")))?;
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    let mut select = tx.prepare_cached(&sql).map_err(store_error)?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let row = select
            .query_row([id], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    instance: r.get(1)?,
                    state: r.get(2)?,
                    line_seq: r.get(3)?,
                    chat_id: r.get(4)?,
                    phone: r.get(5)?,
                    body: r.get(6)?,
                    idempotency_key: r.get(7)?,
                    peer_uid: r.get(8)?,
                    enqueued_at: r.get(9)?,
                    expires_at: r.get(10)?,
                    attempts: r.get(11)?,
                    attempt_started_at: r.get(12)?,
                    last_error: r.get(13)?,
                    id_message: r.get(14)?,
                    sent_at: r.get(15)?,
                    ended_at: r.get(16)?,
                })
            })
            .optional()
            .map_err(store_error)?;
        // A card of the key may already be gone (retention); the rest are answered.
        rows.extend(row);
    }
    Ok(rows)
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

/// A rusqlite error as the store's error (the same classes as sqlx's, in mod.rs).
fn store_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DiskFull => StoreError::Full(e.to_string()),
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        },
        _ => StoreError::Database(e.to_string()),
    }
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

fn hash_cards(cards: &[Card]) -> String {
    let mut hasher = Sha256::new();
    for card in cards {
        hasher.update(card.canonical().as_bytes());
        hasher.update(b"\n");
    }
    format!("{:x}", hasher.finalize())
}
