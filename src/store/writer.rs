//! The write thread: enqueues and the drains' claims and outcomes, group-committed.
//!
//! One thread owns a plain SQLite connection (rusqlite, the same bundled libsqlite3 as
//! sqlx) and takes whatever jobs are waiting (no timer) into one transaction, answering
//! each only after the commit's fsync. Why a thread of its own: these are the daemon's
//! hottest writes, and every sqlx call is a hop to sqlx's worker thread and back (two
//! context switches, which dominated the profiles). Here a group costs one hand-off in
//! and one answer out, and many instances' sends share one fsync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::enqueue::{self, EnqueueOutcome, EnqueueRequest, QUEUED_COUNTS};
use super::line::{self, SendOutcomeRecord};
use super::StoreError;
use crate::clock::now_ms;

/// Most cards one transaction takes; a bigger backlog is split over several commits.
const MAX_GROUP_CARDS: usize = 8192;

/// A card to claim for an attempt.
pub(super) struct Claim {
    pub id: String,
    pub instance: String,
    pub now: i64,
}

/// One unit of work for the thread.
pub(super) enum Job {
    Enqueue {
        request: EnqueueRequest,
        reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
    },
    /// An attempt's outcome and/or the claim of the next card; answers the claimed
    /// attempt's number, or None when there was no claim or the card left the queue.
    Line {
        finished: Option<(String, SendOutcomeRecord, i64)>,
        claim: Option<Claim>,
        reply: oneshot::Sender<Result<Option<i64>, StoreError>>,
    },
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Enqueue { request, .. } => request.cards.len(),
            Job::Line { .. } => 1,
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Job::Enqueue { reply, .. } => drop(reply.send(Err(error))),
            Job::Line { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

enum Answer {
    Enqueue(Result<EnqueueOutcome, StoreError>),
    Line(Option<i64>),
}

/// Starts the thread on the (already migrated) database. `gate` is the write gate
/// shared with the sqlx writes (see `Store`).
pub(super) fn spawn(
    path: &Path,
    max_page_count: Option<u64>,
    line_counter: Arc<AtomicI64>,
    gate: Arc<tokio::sync::Mutex<()>>,
    identity: Arc<super::guard::Identity>,
) -> Result<mpsc::Sender<Job>, StoreError> {
    let path = path.to_path_buf();
    let first = open(&path, max_page_count)?;
    let (jobs_tx, jobs_rx) = mpsc::channel(8192);
    let state = Thread {
        path,
        max_page_count,
        line_counter,
        gate,
        identity,
        ids: ulid::Generator::new(),
    };
    std::thread::Builder::new()
        .name("contactq-writer".into())
        .spawn(move || state.run(first, jobs_rx))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the write thread: {e}")))?;
    Ok(jobs_tx)
}

pub(super) fn open(path: &Path, max_page_count: Option<u64>) -> Result<Connection, StoreError> {
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
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

struct Thread {
    path: PathBuf,
    max_page_count: Option<u64>,
    line_counter: Arc<AtomicI64>,
    gate: Arc<tokio::sync::Mutex<()>>,
    identity: Arc<super::guard::Identity>,
    ids: ulid::Generator,
}

impl Thread {
    /// Waits for one job, then takes whatever else is already waiting.
    fn run(mut self, first_conn: Connection, mut jobs_rx: mpsc::Receiver<Job>) {
        let mut conn = Some(first_conn);
        while let Some(first) = jobs_rx.blocking_recv() {
            let mut weight = first.weight();
            let mut group = vec![first];
            while weight < MAX_GROUP_CARDS {
                match jobs_rx.try_recv() {
                    Ok(job) => {
                        weight += job.weight();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.identity.verify() {
                // Opening the path again would create a stray, empty database there.
                fail_all(group, e);
                continue;
            }
            let connection = match conn.take() {
                Some(c) => Ok(c),
                None => open(&self.path, self.max_page_count),
            };
            let mut connection = match connection {
                Ok(c) => c,
                Err(e) => {
                    fail_all(group, e);
                    continue;
                }
            };
            let gate = self.gate.clone();
            let held = gate.blocking_lock();
            let result = self.commit_group(&mut connection, &group);
            drop(held);
            // A commit into a database file deleted or replaced under us is durable
            // only in a file no restart reads: it is not acknowledged.
            let result = result.and_then(|answers| self.identity.verify().map(|()| answers));
            match result {
                Ok(answers) => {
                    conn = Some(connection);
                    for (job, answer) in group.into_iter().zip(answers) {
                        match (job, answer) {
                            (Job::Enqueue { reply, .. }, Answer::Enqueue(outcome)) => {
                                let _ = reply.send(outcome);
                            }
                            (Job::Line { reply, .. }, Answer::Line(attempt)) => {
                                let _ = reply.send(Ok(attempt));
                            }
                            (job, _) => job.fail(StoreError::Database("answer mismatch".into())),
                        }
                    }
                }
                // The connection is dropped (rolling back whatever was open) and a
                // fresh one opened for the next group: after SQLITE_FULL or an I/O
                // error a connection may still hold a transaction that would never
                // commit, and a later BEGIN must not nest inside it.
                Err(e) => fail_all(group, e),
            }
        }
    }

    fn commit_group(
        &mut self,
        conn: &mut Connection,
        group: &[Job],
    ) -> Result<Vec<Answer>, StoreError> {
        let now = now_ms();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error)?;
        let mut answers = Vec::with_capacity(group.len());
        let mut added: BTreeMap<&str, i64> = BTreeMap::new();
        for job in group {
            match job {
                Job::Enqueue { request, .. } => {
                    let outcome =
                        enqueue::write(&tx, request, now, &self.line_counter, &mut self.ids)?;
                    if let Ok(EnqueueOutcome::Created { rows, .. }) = &outcome {
                        *added.entry(request.instance.as_str()).or_default() += rows.len() as i64;
                    }
                    answers.push(Answer::Enqueue(outcome));
                }
                Job::Line {
                    finished, claim, ..
                } => {
                    if let Some((id, outcome, at)) = finished {
                        line::write_outcome(&tx, id, outcome, *at).map_err(store_error)?;
                    }
                    let attempt = match claim {
                        Some(c) => line::write_claim(&tx, &c.id, &c.instance, c.now)
                            .map_err(store_error)?,
                        None => None,
                    };
                    answers.push(Answer::Line(attempt));
                }
            }
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
        fill_positions(&mut answers, &counts);
        Ok(answers)
    }
}

/// Gives each created enqueue the queued count of its instance as of its last row: the
/// count at the commit, less the rows that later jobs of the group added to that line.
fn fill_positions(answers: &mut [Answer], counts: &[(String, i64)]) {
    let mut after: std::collections::HashMap<&str, i64> =
        counts.iter().map(|(name, n)| (name.as_str(), *n)).collect();
    for answer in answers.iter_mut().rev() {
        if let Answer::Enqueue(Ok(EnqueueOutcome::Created { rows, queued })) = answer {
            let Some(first) = rows.first() else { continue };
            if let Some(n) = after.get_mut(first.instance.as_str()) {
                *queued = Some(*n);
                *n -= rows.len() as i64;
            }
        }
    }
}

fn fail_all(group: Vec<Job>, error: StoreError) {
    tracing::warn!(%error, jobs = group.len(), "write transaction failed; nothing written");
    for job in group {
        job.fail(clone_error(&error));
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
pub(super) fn store_error(e: rusqlite::Error) -> StoreError {
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
