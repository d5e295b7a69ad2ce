//! The write thread: the one owner of every write to the database.
//!
//! One thread owns the only connection that writes (rusqlite, the same bundled
//! libsqlite3 as sqlx) and takes whatever jobs are waiting (no timer) into one
//! transaction, answering each only after the commit's fsync: enqueues, the drains'
//! claims and outcomes, and every other change (cancel, retry, pause and resume, holds,
//! expiry, retention) as a closure run on the transaction. With one writer nothing
//! ever waits at SQLite's lock (no SQLITE_BUSY, no busy handler's sleeps), and many
//! writes share one fsync.
//!
//! Why a thread of its own rather than an async pool: these are the daemon's hottest
//! writes, and every sqlx call is a hop to sqlx's worker thread and back (two context
//! switches, which dominated the profiles). Here a group costs one hand-off in and one
//! answer out.
//!
//! A failed group is rolled back whole (each of its jobs answered with the error) and
//! the connection dropped: after SQLITE_FULL or an I/O error a connection may still
//! hold a transaction that would never commit, and a later BEGIN must not nest inside
//! it. The next group opens a fresh connection with the same settings ([`open`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, watch};

use super::due;
use super::enqueue::{self, QUEUED_COUNTS, SCHEDULED_COUNT, SCHEDULED_COUNTS};
use super::line;
use super::stream;
use crate::clock::now_ms;
use crate::store::error::StoreError;
use crate::store::guard::Identity;
use crate::store::model::{EnqueueOutcome, EnqueueRequest, SendOutcomeRecord};

/// Most cards one transaction takes; a bigger backlog is split over several commits.
const MAX_GROUP_CARDS: usize = 8192;

/// A card to claim for an attempt.
pub(super) struct Claim {
    pub id: String,
    pub instance: String,
    pub now: i64,
}

/// Work run on the write transaction, with its own answer: [`Handle::run`]'s closures.
trait Work: Send {
    /// Runs the work; an error that [`StoreError::is_failure`] fails the whole group,
    /// a refusal only this job (which must then have written nothing).
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError>;
    /// Answers the caller once the group committed (or failed with `committed`'s error).
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

/// One unit of work for the thread. The hot paths (enqueue, claim and outcome) have
/// variants of their own, so they cost no allocation beyond their request.
enum Job {
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
    Run(Box<dyn Work>),
    /// Finish the jobs before this one, close the connection, stop.
    Stop(oneshot::Sender<()>),
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Enqueue { request, .. } => request.cards.len(),
            Job::Line { .. } | Job::Run(_) | Job::Stop(_) => 1,
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Job::Enqueue { reply, .. } => drop(reply.send(Err(error))),
            Job::Line { reply, .. } => drop(reply.send(Err(error))),
            Job::Run(work) => work.answer(Err(error)),
            Job::Stop(_) => {}
        }
    }
}

enum Answer {
    Enqueue(Result<EnqueueOutcome, StoreError>),
    Line(Option<i64>),
    Run,
}

/// The closure of [`Handle::run`] and, once run, its result.
struct Closure<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for Closure<T, F>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        let work = self.work.take().expect("a job runs once");
        match work(tx) {
            Err(e) if e.is_failure() => Err(e),
            result => {
                self.result = Some(result);
                Ok(())
            }
        }
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let Closure { result, reply, .. } = *self;
        let result = committed.and_then(|()| {
            result.unwrap_or_else(|| Err(StoreError::database("the job was not run")))
        });
        let _ = reply.send(result);
    }
}

/// The async side's hold on the thread: hands jobs over and waits for their answers.
#[derive(Clone)]
pub(super) struct Handle {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::unavailable("the write thread has stopped")
}

impl Handle {
    pub(super) async fn enqueue(
        &self,
        request: EnqueueRequest,
    ) -> Result<EnqueueOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Enqueue { request, reply }).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Records `finished` (if any) and claims `claim` (if any) in one transaction.
    pub(super) async fn line(
        &self,
        finished: Option<(String, SendOutcomeRecord, i64)>,
        claim: Option<Claim>,
    ) -> Result<Option<i64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Line {
            finished,
            claim,
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` on the write transaction of the next group and answers its result
    /// once that committed.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let closure = Closure {
            work: Some(work),
            result: None,
            reply,
        };
        self.send(Job::Run(Box::new(closure))).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the jobs already handed over finish, then closes the connection.
    pub(super) async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        if self.jobs.send(Job::Stop(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Jobs handed over and not yet taken by the thread.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    pub(super) fn is_alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).await.map_err(|_| stopped())
    }
}

/// Starts the thread on `first`, a connection from [`open`] to the migrated database.
pub(super) fn spawn(
    path: &Path,
    first: Connection,
    max_page_count: Option<u64>,
    line_counter: Arc<AtomicI64>,
    identity: Arc<Identity>,
    events: watch::Sender<i64>,
) -> Result<Handle, StoreError> {
    let (jobs_tx, jobs_rx) = mpsc::channel(8192);
    let state = Thread {
        path: path.to_path_buf(),
        max_page_count,
        line_counter,
        identity,
        ids: ulid::Generator::new(),
        events,
        sealed: None,
    };
    std::thread::Builder::new()
        .name("contactq-writer".into())
        .spawn(move || state.run(first, jobs_rx))
        .map_err(|e| StoreError::Unavailable(crate::store::error::Cause::new(e)))?;
    Ok(Handle { jobs: jobs_tx })
}

/// The write connection: WAL, `synchronous=FULL` (a committed row survives `kill -9`
/// and power loss), and the size cap's backstop. Every connection the thread writes
/// with, the first and each replacement, comes from here.
pub(super) fn open(path: &Path, max_page_count: Option<u64>) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;")?;
    if let Some(pages) = max_page_count {
        conn.query_row(
            &format!("PRAGMA max_page_count = {}", super::backstop_pages(pages)),
            [],
            |_| Ok(()),
        )?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

struct Thread {
    path: PathBuf,
    max_page_count: Option<u64>,
    line_counter: Arc<AtomicI64>,
    identity: Arc<Identity>,
    ids: ulid::Generator,
    /// The event stream's last committed `seq`, told to its readers after each commit
    /// that moved it (`GET /v1/events?follow=true`, the hooks).
    events: watch::Sender<i64>,
    /// The counter the group being written sealed, if it added events.
    sealed: Option<i64>,
}

impl Thread {
    /// Waits for one job, then takes whatever else is already waiting.
    fn run(mut self, first_conn: Connection, mut jobs_rx: mpsc::Receiver<Job>) {
        let mut conn = Some(first_conn);
        let mut stop = None;
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
            if let Some(at) = group.iter().position(|j| matches!(j, Job::Stop(_))) {
                // Jobs after the stop are dropped: their callers hear "stopped".
                group.truncate(at + 1);
                if let Some(Job::Stop(reply)) = group.pop() {
                    stop = Some(reply);
                }
            }
            if !group.is_empty() {
                self.write_group(&mut conn, group);
            }
            if stop.is_some() {
                break;
            }
        }
        drop(conn);
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    /// Commits one group on `conn` (opening one if the last was dropped) and answers
    /// its jobs; a failure answers all of them and drops the connection.
    fn write_group(&mut self, conn: &mut Option<Connection>, mut group: Vec<Job>) {
        if let Err(e) = self.identity.verify() {
            // Opening the path again would create a stray, empty database there.
            return fail_all(group, e);
        }
        let mut connection = match conn.take() {
            Some(c) => c,
            None => match open(&self.path, self.max_page_count) {
                Ok(c) => c,
                Err(e) => return fail_all(group, e),
            },
        };
        let result = self.commit_group(&mut connection, &mut group);
        // A commit into a database file deleted or replaced under us is durable only
        // in a file no restart reads: it is not acknowledged.
        match result.and_then(|answers| self.identity.verify().map(|()| answers)) {
            Ok(answers) => {
                *conn = Some(connection);
                // Readers see the commit before they hear of it.
                if let Some(last) = self.sealed.take() {
                    self.events.send_replace(last);
                }
                for (job, answer) in group.into_iter().zip(answers) {
                    match (job, answer) {
                        (Job::Enqueue { reply, .. }, Answer::Enqueue(outcome)) => {
                            let _ = reply.send(outcome);
                        }
                        (Job::Line { reply, .. }, Answer::Line(attempt)) => {
                            let _ = reply.send(Ok(attempt));
                        }
                        (Job::Run(work), Answer::Run) => work.answer(Ok(())),
                        (job, _) => job.fail(StoreError::database("answer mismatch")),
                    }
                }
            }
            // `connection` is dropped here, rolling back whatever was open (see the
            // module doc); the next group opens a fresh one.
            Err(e) => fail_all(group, e),
        }
    }

    fn commit_group(
        &mut self,
        conn: &mut Connection,
        group: &mut [Job],
    ) -> Result<Vec<Answer>, StoreError> {
        let now = now_ms();
        self.sealed = None;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut answers = Vec::with_capacity(group.len());
        // A card's place in line is max(enqueuedAt, notBefore) (docs/api.md §11): cards
        // of these lines that came due join before the new ones take their places,
        // even while their drain is busy and has not looked yet.
        let lines: std::collections::BTreeSet<String> = group
            .iter()
            .filter_map(|job| match job {
                Job::Enqueue { request, .. } => Some(request.instance.clone()),
                _ => None,
            })
            .collect();
        for instance in &lines {
            due::join_due(&tx, instance, now, &self.line_counter)?;
        }
        // Per instance: the cards added, and how many of them are not yet due.
        let mut added: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for job in group.iter_mut() {
            match job {
                Job::Enqueue { request, .. } => {
                    let request: &EnqueueRequest = request;
                    let outcome =
                        enqueue::write(&tx, request, now, &self.line_counter, &mut self.ids)?;
                    if let Ok(EnqueueOutcome::Created { rows, .. }) = &outcome {
                        let later = rows.iter().filter(|r| r.due_at.is_some()).count();
                        let sum = added.entry(request.instance.as_str()).or_default();
                        sum.0 += rows.len() as i64;
                        sum.1 += later as i64;
                    }
                    answers.push(Answer::Enqueue(outcome));
                }
                Job::Line {
                    finished, claim, ..
                } => {
                    if let Some((id, outcome, at)) = finished {
                        line::outcome(&tx, id, outcome, *at)?;
                    }
                    let attempt = match claim {
                        Some(c) => line::claim(&tx, &c.id, &c.instance, c.now)?,
                        None => None,
                    };
                    answers.push(Answer::Line(attempt));
                }
                Job::Run(work) => {
                    work.run(&tx)?;
                    answers.push(Answer::Run);
                }
                Job::Stop(_) => unreachable!("a stop never joins a group"),
            }
        }
        let mut counts = Vec::with_capacity(added.len());
        {
            let mut upsert = tx.prepare_cached(QUEUED_COUNTS)?;
            let mut later = tx.prepare_cached(SCHEDULED_COUNTS)?;
            let mut later_count = tx.prepare_cached(SCHEDULED_COUNT)?;
            for (instance, (n, not_due)) in added {
                let queued: i64 = upsert.query_row(params![instance, n], |r| r.get(0))?;
                let not_due: i64 = if not_due > 0 {
                    later.query_row(params![instance, not_due], |r| r.get(0))?
                } else {
                    later_count
                        .query_row([instance], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0)
                };
                // Positions count only the cards already due (docs/api.md §11).
                counts.push((instance.to_string(), queued - not_due));
            }
        }
        // The last statement before COMMIT (docs/api.md §11): the counter readers stop at.
        let sealed = stream::seal(&tx)?;
        tx.commit()?;
        self.sealed = sealed;
        fill_positions(&mut answers, &counts);
        Ok(answers)
    }
}

/// Gives each created enqueue the count of its instance's due queued cards as of its
/// last row: the count at the commit, less the rows that later jobs of the group added
/// to that line. Cards not yet due have no place in line yet: they get none.
fn fill_positions(answers: &mut [Answer], counts: &[(String, i64)]) {
    let mut after: std::collections::HashMap<&str, i64> =
        counts.iter().map(|(name, n)| (name.as_str(), *n)).collect();
    for answer in answers.iter_mut().rev() {
        if let Answer::Enqueue(Ok(EnqueueOutcome::Created { rows, queued })) = answer {
            let Some(first) = rows.first() else { continue };
            if first.due_at.is_some() {
                continue;
            }
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
        job.fail(error.clone());
    }
}
