//! The enqueue writer: group commits on PostgreSQL. Concurrent enqueues share one
//! transaction: a writer task takes every request waiting (no timer), plans them,
//! inserts their rows with one statement, commits once, and only then answers each,
//! so many enqueues cost one commit (one WAL flush) instead of one each.
//!
//! [`WRITERS`] tasks take groups in turn from one queue. One is best since the event
//! stream: every transaction that writes events ends by moving the stream's counter
//! row (docs/api.md §11), whose lock is held until the commit is flushed, so groups
//! commit one after the other whatever the number of tasks; one task makes each group
//! as big as the backlog instead (32 clients: 7,441 cards/s with 4 tasks, 10,705 with
//! one, BENCHMARKS.md). A failed group is rolled back whole and each of its requests answered
//! with the error; a commit whose outcome is unknown (the connection dropped before
//! the answer) is answered as a failure too: nothing is acknowledged that was not seen
//! committed, and the drain sends only what it reads back from the database.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::due;
use super::enqueue::{self, Pending, QUEUED_COUNTS};
use super::stream;
use super::Committed;
use crate::clock::now_ms;
use crate::event::EventKind;
use crate::store::error::{Cause, StoreError};
use crate::store::model::{EnqueueOutcome, EnqueueRequest};

/// Writer tasks, each with its group in flight (see the module doc: one).
pub const WRITERS: usize = 1;

/// Most cards one transaction takes; a bigger backlog is split over several commits.
const MAX_GROUP_CARDS: usize = 8192;

type Reply = oneshot::Sender<Result<EnqueueOutcome, StoreError>>;

enum Job {
    Enqueue {
        request: EnqueueRequest,
        reply: Reply,
    },
    /// Finish, then stop this task.
    Stop(oneshot::Sender<()>),
}

/// The async side's hold on the writer tasks.
#[derive(Clone)]
pub(super) struct Handle {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::unavailable("the enqueue writer has stopped")
}

impl Handle {
    pub(super) async fn enqueue(
        &self,
        request: EnqueueRequest,
    ) -> Result<EnqueueOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Enqueue { request, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the enqueues already handed over commit, then stops every task.
    pub(super) async fn stop(&self) {
        let mut done = Vec::new();
        for _ in 0..WRITERS {
            let (reply, stopped) = oneshot::channel();
            if self.jobs.send(Job::Stop(reply)).await.is_ok() {
                done.push(stopped);
            }
        }
        for stopped in done {
            let _ = stopped.await;
        }
    }

    pub(super) fn is_alive(&self) -> bool {
        !self.jobs.is_closed()
    }
}

/// Starts the writer tasks on `pool`; each commit that added events is told to
/// `committed`.
pub(super) fn spawn(pool: PgPool, committed: Committed) -> Handle {
    let (jobs, rx) = mpsc::channel(8192);
    let rx = Arc::new(Mutex::new(rx));
    // One generator for every task: ids sort in the order groups were taken, as with
    // SQLite's one writer (within one daemon; daemons' ids interleave by time).
    let ids = Arc::new(std::sync::Mutex::new(ulid::Generator::new()));
    for shard in 0..WRITERS {
        // Shard 0 is the trigger's: the tasks count in 1..=WRITERS.
        tokio::spawn(run(
            pool.clone(),
            committed.clone(),
            rx.clone(),
            ids.clone(),
            shard as i16 + 1,
        ));
    }
    Handle { jobs }
}

type Ids = Arc<std::sync::Mutex<ulid::Generator>>;

async fn run(
    pool: PgPool,
    committed: Committed,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    ids: Ids,
    shard: i16,
) {
    loop {
        let (group, stop, fresh) = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut group = Vec::new();
            let mut stop = None;
            let mut cards = 0;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Stop(reply) => {
                        stop = Some(reply);
                        break;
                    }
                    Job::Enqueue { request, reply } => {
                        cards += request.cards.len();
                        group.push((request, reply));
                    }
                }
                if cards < MAX_GROUP_CARDS {
                    next = rx.try_recv().ok();
                }
            }
            // Ids taken while the queue is still held: the next group's come after.
            let fresh = fresh_ids(&ids, group.iter().map(|(r, _)| r.cards.len()).sum());
            (group, stop, fresh)
        };
        if !group.is_empty() {
            write_group(&pool, &committed, shard, fresh, group).await;
        }
        if let Some(reply) = stop {
            let _ = reply.send(());
            return;
        }
    }
}

/// Commits one group and answers its requests; a failure answers all of them. A
/// deadlock or serialization failure (rolled back whole) is run again, a few times.
/// `n` new ids in order, or why not.
fn fresh_ids(ids: &Ids, n: usize) -> Result<Vec<String>, StoreError> {
    let mut generator = ids.lock().unwrap_or_else(|e| e.into_inner());
    (0..n)
        .map(|_| {
            generator
                .generate()
                .map(|id| id.to_string())
                .map_err(|e| StoreError::Database(Cause::context("id generator", e)))
        })
        .collect()
}

async fn write_group(
    pool: &PgPool,
    committed: &Committed,
    shard: i16,
    fresh: Result<Vec<String>, StoreError>,
    group: Vec<(EnqueueRequest, Reply)>,
) {
    let requests: Vec<&EnqueueRequest> = group.iter().map(|(r, _)| r).collect();
    let mut tries = 0;
    let result = loop {
        tries += 1;
        let ids = match &fresh {
            Ok(ids) => ids.clone(),
            Err(e) => break Err(e.clone()),
        };
        match commit_group(pool, committed, shard, ids, &requests).await {
            Err(e) if super::error::retryable(&e) && tries < super::TRIES => continue,
            other => break other,
        }
    };
    match result {
        Ok(answers) => {
            for ((_, reply), answer) in group.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            tracing::warn!(%error, jobs = group.len(), "enqueue transaction failed; nothing written");
            for (_, reply) in group {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

async fn commit_group(
    pool: &PgPool,
    committed: &Committed,
    shard: i16,
    ids: Vec<String>,
    requests: &[&EnqueueRequest],
) -> Result<Vec<Result<EnqueueOutcome, StoreError>>, StoreError> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    // A card's place in line is max(enqueuedAt, notBefore) (docs/api.md §11): cards of
    // these lines that came due join before the new ones take their places, even while
    // their drain is busy and has not looked yet.
    let lines: std::collections::BTreeSet<&str> =
        requests.iter().map(|r| r.instance.as_str()).collect();
    for instance in lines {
        due::join_due(&mut tx, instance, now).await?;
    }
    let cards: usize = requests.iter().map(|r| r.cards.len()).sum();
    let mut pending = Pending {
        rows: Vec::with_capacity(cards),
        ids: ids.into_iter(),
        places: enqueue::take_places(&mut tx, cards).await?.into_iter(),
    };
    let mut answers = Vec::with_capacity(requests.len());
    // Per instance: the cards added, and how many of them are not yet due.
    let mut added: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    // Each new card's `queued` event (docs/api.md §11), in the order they were planned
    // (the order of their places in line).
    let mut events = stream::Buffer::default();
    for request in requests {
        let outcome = enqueue::plan(&mut tx, request, now, &mut pending).await?;
        if let Ok(EnqueueOutcome::Created { rows, .. }) = &outcome {
            let sum = added.entry(request.instance.as_str()).or_default();
            sum.0 += rows.len() as i64;
            sum.1 += rows.iter().filter(|r| r.due_at.is_some()).count() as i64;
            for r in rows {
                events.add(r.enqueued_at, &r.id, &r.instance, EventKind::Queued);
            }
        }
        answers.push(outcome);
    }
    enqueue::insert_rows(&mut tx, &pending.rows).await?;
    // In name order, so two groups never wait on each other's counts in a cycle (only
    // another daemon's task of the same shard shares these rows).
    let mut counts = Vec::with_capacity(added.len());
    for (instance, (n, not_due)) in added {
        // Positions count only the cards already due (docs/api.md §11).
        let due: i64 = sqlx::query_scalar(QUEUED_COUNTS)
            .bind(instance)
            .bind(n)
            .bind(shard)
            .bind(not_due)
            .fetch_one(&mut *tx)
            .await?;
        counts.push((instance.to_string(), due));
    }
    // The last statement before COMMIT (see `stream`): numbers the group's events.
    let last = stream::write(&mut tx, &events).await?;
    tx.commit().await?;
    committed.heard(last);
    fill_positions(&mut answers, &counts);
    Ok(answers)
}

/// Gives each created enqueue the count of its instance's due queued cards as of its
/// last row: the count at the commit, less the rows that later requests of the group
/// added to that line. Cards not yet due have no place in line yet: they get none.
fn fill_positions(answers: &mut [Result<EnqueueOutcome, StoreError>], counts: &[(String, i64)]) {
    let mut after: std::collections::HashMap<&str, i64> =
        counts.iter().map(|(name, n)| (name.as_str(), *n)).collect();
    for answer in answers.iter_mut().rev() {
        if let Ok(EnqueueOutcome::Created { rows, queued }) = answer {
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
