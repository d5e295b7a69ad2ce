//! The PostgreSQL backend: one database that any number of daemons share
//! (docs/api.md §10). Every commit is answered only after PostgreSQL flushed it with
//! `synchronous_commit` on.
//!
//! Who owns what, in one look:
//! - enqueues are group-committed by the writer tasks ([`writer`], SQL in [`enqueue`]);
//! - every other write runs in a transaction of its own opened here ([`transaction!`]):
//!   the drain's claims and outcomes ([`line`]), the user's changes ([`changes`]),
//!   bulk cancel and retry ([`bulk`]), the joining of cards whose `notBefore` came
//!   ([`due`]), expiry and retention ([`upkeep`]); a deadlock or serialization failure
//!   (rolled back whole by PostgreSQL) runs the transaction again;
//! - the numbered event stream, its counter and the consumers' cursors are
//!   [`stream`]'s: every write above buffers its events and [`transaction!`] (or the
//!   enqueue writer) writes them as the transaction's last statement before COMMIT;
//! - every read runs on the pool ([`reads`]); rows become records in [`rows`];
//!   history lines are written by [`events`]; errors are classified in [`error`];
//! - one drainer per instance across daemons: [`lease`]; one runner per hook:
//!   [`hook_locks`]; the `[instances]` record every daemon must match: [`record`].
//!
//! The imports run one way: this file → `writer` → `enqueue`; this file → `line`,
//! `changes`, `bulk`, `delivery`, `due`, `upkeep`, `reads`, `stream`, `lease`, `record`; all of them
//! → `rows`, `events`, `stream` and the records of `crate::store`.

mod bulk;
mod changes;
mod delivery;
mod due;
mod enqueue;
mod error;
mod events;
mod hook_locks;
mod lease;
mod line;
mod reads;
pub(crate) mod record;
mod rows;
mod stream;
mod upkeep;
mod writer;

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;

pub use error::classify;

use super::error::{Cause, StoreError};
use super::model::{
    BulkAction, BulkFilter, BulkOutcome, ChatHold, ConsumerRow, EnqueueOutcome, EnqueueRequest,
    EventRow, FollowedCard, InstanceCounts, InstanceRow, LeaseView, ListFilter, MessageRow,
    NodeSeen, SendOutcomeRecord, StreamEnds, StreamEvent, UncertainCard,
};
use super::StoreOptions;
use crate::clock::duration_ms;
use crate::state::Delivery;

/// How often a transaction that met a deadlock or serialization failure is tried.
const TRIES: u32 = 5;

/// Runs `$body` (which uses `$tx`, a `&mut PgConnection` inside a transaction, and
/// `$ev`, the transaction's `&mut stream::Buffer` of events) on `$store`'s pool, writes
/// the buffered events as the last statement ([`stream::write`]) and commits, then
/// tells the stream's subscribers; a refusal or failure rolls back. A deadlock or
/// serialization failure, after which PostgreSQL rolled everything back, runs it again
/// (at most [`TRIES`]) with an empty buffer.
macro_rules! transaction {
    ($store:expr, |$tx:ident, $ev:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            let mut open = $store.pool.begin().await.map_err(StoreError::from)?;
            let mut buffered = stream::Buffer::default();
            let result = {
                let $tx: &mut sqlx::PgConnection = &mut open;
                let $ev: &mut stream::Buffer = &mut buffered;
                $body
            };
            let result = match result {
                Ok(value) => match stream::write(&mut open, &buffered).await {
                    Ok(last) => open
                        .commit()
                        .await
                        .map(|()| (value, last))
                        .map_err(StoreError::from),
                    Err(e) => Err(StoreError::from(e)),
                },
                Err(e) => {
                    drop(open);
                    Err(e)
                }
            };
            match result {
                Err(e) if error::retryable(&e) && tries < TRIES => continue,
                Ok((value, last)) => {
                    $store.committed.heard(last);
                    break Ok(value);
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Renews the leases this daemon holds (each once lease/3 has passed since its last
/// renewal, looking every `every`), apart from the drains: a drain busy longer than that (a slow request, a long reconcile) keeps its
/// lease instead of letting it lapse. Ends when the store is gone.
fn renew_leases(leases: Weak<lease::Leases>, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(leases) = leases.upgrade() else {
                return;
            };
            for instance in leases.held_instances() {
                leases.try_lead(&instance).await;
            }
        }
    });
}

/// How often a daemon reads the stream's counter, to hear of other daemons' commits.
const LOOK_EVERY: Duration = Duration::from_millis(300);

/// The event stream's last committed `seq` as this daemon knows it: moved after each
/// of its own commits that added events, and by a task reading the counter every
/// [`LOOK_EVERY`] (other daemons' commits). Cheap to clone.
#[derive(Clone)]
pub(super) struct Committed(Arc<watch::Sender<i64>>);

impl Committed {
    /// A commit made the counter `last` (None: it added no events).
    pub(super) fn heard(&self, last: Option<i64>) {
        if let Some(last) = last {
            self.0.send_if_modified(|known| {
                let newer = last > *known;
                if newer {
                    *known = last;
                }
                newer
            });
        }
    }
}

/// Reads the counter every [`LOOK_EVERY`] until the store is gone or closed.
fn watch_counter(pool: PgPool, events: Weak<watch::Sender<i64>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            if pool.is_closed() {
                return;
            }
            let Some(sender) = events.upgrade() else {
                return;
            };
            if let Ok(last) = stream::counter(&pool).await {
                Committed(sender).heard(Some(last));
            }
        }
    });
}

/// `connect` with application_name `contactq/NODE` and `synchronous_commit = on`.
fn named(connect: PgConnectOptions, node: &str) -> PgConnectOptions {
    connect
        .application_name(&format!("contactq/{node}"))
        .options([("synchronous_commit", "on")])
}

/// A pool of `connections` to the database, migrated to this version's schema (one
/// migrator at a time: sqlx takes an advisory lock while it migrates).
pub(crate) async fn connect_and_migrate(
    connect: PgConnectOptions,
    node: &str,
    connections: u32,
) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(named(connect, node))
        .await?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| StoreError::Migrate(Cause::new(e)))?;
    Ok(pool)
}

/// The open PostgreSQL database: the pool, the enqueue writer, the leases. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    writer: writer::Handle,
    leases: Arc<lease::Leases>,
    hooks: Arc<hook_locks::HookLocks>,
    committed: Committed,
}

/// Connections of the pool beyond the writer tasks' (the drains, the API's reads).
const POOL_CONNECTIONS: u32 = 8;

impl PgStore {
    /// Connects with `connect` (application_name `contactq/NODE` and
    /// `synchronous_commit = on` are set here), migrates, and starts the writer.
    pub async fn open(
        connect: PgConnectOptions,
        node: &str,
        options: &StoreOptions,
    ) -> Result<PgStore, StoreError> {
        let connect = named(connect, node);
        let connections = options.readers.max(1) + POOL_CONNECTIONS + writer::WRITERS as u32;
        let pool = connect_and_migrate(connect.clone(), node, connections).await?;
        let last = stream::counter(&pool).await?;
        let committed = Committed(Arc::new(watch::channel(last).0));
        watch_counter(pool.clone(), Arc::downgrade(&committed.0));
        let writer = writer::spawn(pool.clone(), committed.clone());
        let leases = lease::Leases::new(
            pool.clone(),
            node,
            duration_ms(options.lease),
            options.clock.clone(),
        );
        let leases = Arc::new(leases);
        // Looks twice per renewal period: a lease is renewed within lease/2 at worst.
        renew_leases(Arc::downgrade(&leases), options.lease / 6);
        Ok(PgStore {
            pool,
            writer,
            leases,
            hooks: Arc::new(hook_locks::HookLocks::new(connect)),
            committed,
        })
    }

    /// `"async"` while the server streams to a standby asynchronously, else `"sync"`.
    pub async fn durability(&self) -> Result<&'static str, StoreError> {
        let async_standby: bool = sqlx::query_scalar(reads::ASYNC_STANDBY)
            .fetch_one(&self.pool)
            .await?;
        Ok(if async_standby { "async" } else { "sync" })
    }

    pub async fn healthy(&self) -> bool {
        self.writer.is_alive() && sqlx::query(reads::ALIVE).execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.writer.stop().await;
        self.leases.release_all().await;
        self.hooks.release_all().await;
        self.pool.close().await;
    }

    /// The epoch at which this daemon drains `instance` now (see [`lease`]).
    pub async fn try_lead(&self, instance: &str) -> Option<i64> {
        self.leases.try_lead(instance).await
    }

    /// Whether this daemon runs hook `name` now (see [`hook_locks`]).
    pub async fn try_run_hook(&self, name: &str) -> bool {
        self.hooks.try_hold(name).await
    }

    /// Whether a request may go out for `instance`: its lease is held and the holder's
    /// own deadline has not passed.
    pub fn may_send(&self, instance: &str) -> bool {
        self.leases.token(instance).is_some()
    }

    pub fn lease_ms(&self) -> i64 {
        self.leases.lease_ms()
    }

    pub async fn give_up_lead(&self, instance: &str, off_ms: i64) {
        self.leases.give_up(instance, off_ms).await
    }

    pub async fn lease_view(&self, instance: &str) -> Result<LeaseView, StoreError> {
        lease::view(&self.pool, instance).await
    }

    pub async fn notify_flush(&self, instance: &str) -> Result<(), StoreError> {
        lease::notify_flush(&self.pool, instance).await
    }

    pub fn listen_flushes(&self, flush: impl Fn(&str) + Send + 'static) {
        tokio::spawn(lease::listen_flushes(self.pool.clone(), flush));
    }

    pub async fn nodes(&self) -> Result<Vec<NodeSeen>, StoreError> {
        lease::nodes(&self.pool).await
    }

    /// Conflict unless `instance`'s lease is still this daemon's at the epoch it holds
    /// and unexpired, checked inside the caller's transaction `tx`.
    async fn check_lease(
        &self,
        tx: &mut sqlx::PgConnection,
        instance: &str,
    ) -> Result<(), StoreError> {
        let held = match self.leases.token(instance) {
            Some(epoch) => lease::check(tx, instance, self.leases.holder(), epoch).await?,
            None => false,
        };
        if held {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "the drain lease is not this daemon's".into(),
            ))
        }
    }

    /// Checks the daemon's `[instances]` against the database's record (writing it if
    /// there is none yet), or replaces the record with `adopt`.
    pub async fn check_record(&self, mine: &record::Record, adopt: bool) -> Result<(), StoreError> {
        record::check(&self.pool, mine, adopt).await
    }

    // --- writes ---

    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        self.writer.enqueue(request).await
    }

    pub async fn finish_and_begin(
        &self,
        finished: Option<(&str, &SendOutcomeRecord, i64)>,
        id: &str,
        instance: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        transaction!(self, |tx, ev| async {
            if let Some((done, outcome, at)) = finished {
                line::outcome(tx, ev, done, outcome, at, &self.leases.held_by()).await?;
            }
            // The outcome is recorded whoever holds the lease; the claim (and the
            // pacing time it writes) only under it.
            if self.check_lease(tx, instance).await.is_err() {
                return Ok(None);
            }
            Ok::<_, StoreError>(line::claim(tx, id, instance, now).await?)
        }
        .await)?
        .ok_or_else(|| StoreError::Conflict("no longer queued".into()))
    }

    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: &SendOutcomeRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let held = self.leases.held_by();
        transaction!(self, |tx, ev| line::outcome(
            tx, ev, id, outcome, now, &held
        )
        .await
        .map_err(StoreError::from))
    }

    pub async fn cancel(&self, id: &str, now: i64) -> Result<MessageRow, StoreError> {
        transaction!(self, |tx, ev| changes::cancel(tx, ev, id, now).await)
    }

    pub async fn retry(
        &self,
        id: &str,
        now: i64,
        max_age_ms: i64,
    ) -> Result<MessageRow, StoreError> {
        transaction!(self, |tx, ev| changes::retry(tx, ev, id, now, max_age_ms)
            .await)
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), StoreError> {
        transaction!(self, |tx, _ev| changes::set_paused(tx, name, paused)
            .await
            .map_err(StoreError::from))
    }

    pub async fn set_hold(
        &self,
        name: &str,
        until: Option<i64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        transaction!(self, |tx, _ev| async {
            // Releasing the line's hold lets it send: only under the lease.
            if until.is_none() {
                self.check_lease(tx, name).await?;
            }
            changes::set_hold(tx, name, until, reason)
                .await
                .map_err(StoreError::from)
        }
        .await)
    }

    pub async fn set_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        transaction!(self, |tx, _ev| changes::set_chat_hold(
            tx, name, chat_id, until, reason
        )
        .await
        .map_err(StoreError::from))
    }

    pub async fn end_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        transaction!(self, |tx, _ev| async {
            self.check_lease(tx, name).await?;
            changes::end_chat_hold(tx, name, chat_id, until)
                .await
                .map_err(StoreError::from)
        }
        .await)
    }

    pub async fn expire_due(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        transaction!(self, |tx, ev| upkeep::expire_due(tx, ev, now)
            .await
            .map_err(StoreError::from))
    }

    pub async fn delete_ended_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        transaction!(self, |tx, _ev| upkeep::delete_ended_batch(tx, cutoff)
            .await
            .map_err(StoreError::from))
    }

    pub async fn bulk(
        &self,
        filter: &BulkFilter,
        action: BulkAction,
        now: i64,
    ) -> Result<BulkOutcome, StoreError> {
        transaction!(self, |tx, ev| bulk::run(tx, ev, filter, action, now).await)
    }

    pub async fn join_due(&self, instance: &str, now: i64) -> Result<u64, StoreError> {
        transaction!(self, |tx, _ev| due::join_due(tx, instance, now)
            .await
            .map_err(StoreError::from))
    }

    // --- the event stream and its consumers ---

    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.committed.0.subscribe()
    }

    pub async fn record_delivery(
        &self,
        id: &str,
        next: Delivery,
        at: i64,
    ) -> Result<bool, StoreError> {
        transaction!(self, |tx, ev| delivery::record(tx, ev, id, next, at).await)
    }

    pub async fn followed(
        &self,
        instance: &str,
        sent_since: i64,
        limit: i64,
    ) -> Result<Vec<FollowedCard>, StoreError> {
        delivery::followed(&self.pool, instance, sent_since, limit).await
    }

    pub async fn delete_old_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        transaction!(self, |tx, _ev| stream::delete_old(
            tx,
            cutoff,
            upkeep::RETENTION_BATCH
        )
        .await
        .map_err(StoreError::from))
    }

    pub async fn start_consumer(&self, name: &str, start: i64) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        transaction!(self, |tx, _ev| stream::start_consumer(tx, name, start, now)
            .await
            .map_err(StoreError::from))
    }

    pub async fn set_consumer_cursor(&self, name: &str, cursor: i64) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        transaction!(self, |tx, _ev| stream::set_cursor(tx, name, cursor, now)
            .await
            .map_err(StoreError::from))
    }

    pub async fn consumer_failed(&self, name: &str, error: &str) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        transaction!(self, |tx, _ev| stream::consumer_failed(
            tx, name, error, now
        )
        .await
        .map_err(StoreError::from))
    }

    pub async fn delete_consumer(&self, name: &str) -> Result<bool, StoreError> {
        transaction!(self, |tx, _ev| stream::delete_consumer(tx, name)
            .await
            .map_err(StoreError::from))
    }

    pub async fn events_after(
        &self,
        after: i64,
        instance: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        stream::after(&self.pool, after, instance, limit).await
    }

    pub async fn stream_ends(&self) -> Result<StreamEnds, StoreError> {
        stream::ends(&self.pool).await
    }

    pub async fn consumer(&self, name: &str) -> Result<Option<ConsumerRow>, StoreError> {
        stream::consumer(&self.pool, name).await
    }

    pub async fn consumers(&self) -> Result<Vec<ConsumerRow>, StoreError> {
        stream::consumers(&self.pool).await
    }

    // --- reads ---

    pub async fn message(&self, id: &str) -> Result<MessageRow, StoreError> {
        reads::message(&self.pool, id).await
    }

    pub async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        reads::history(&self.pool, id).await
    }

    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<MessageRow>, Option<String>), StoreError> {
        reads::list(&self.pool, filter).await
    }

    pub async fn position(&self, instance: &str, line_seq: i64) -> Result<i64, StoreError> {
        reads::position(&self.pool, instance, line_seq).await
    }

    pub async fn instance(&self, name: &str) -> Result<InstanceRow, StoreError> {
        reads::instance(&self.pool, name).await
    }

    pub async fn chat_holds(&self, name: &str) -> Result<Vec<ChatHold>, StoreError> {
        reads::chat_holds(&self.pool, name).await
    }

    pub async fn counts(&self, name: &str) -> Result<InstanceCounts, StoreError> {
        reads::counts(&self.pool, name).await
    }

    pub async fn in_flight(&self, instance: &str) -> Result<Option<UncertainCard>, StoreError> {
        reads::in_flight(&self.pool, instance).await
    }

    pub async fn head_rows(
        &self,
        instance: &str,
        limit: i64,
        skip: &[String],
    ) -> Result<Vec<MessageRow>, StoreError> {
        reads::head_rows(&self.pool, instance, limit, skip).await
    }

    pub async fn id_message_taken(&self, id_message: &str) -> Result<bool, StoreError> {
        reads::id_message_taken(&self.pool, id_message).await
    }

    pub async fn next_due(&self, instance: &str) -> Result<Option<i64>, StoreError> {
        reads::next_due(&self.pool, instance).await
    }

    /// A file copy is SQLite's; PostgreSQL has its own tools for a consistent copy.
    pub async fn backup_into(&self, _dest: &std::path::Path) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "the queue is in PostgreSQL: back it up with pg_dump (docs/operations.md, \
             \"PostgreSQL\"), not contactq backup"
                .into(),
        ))
    }
}

/// The statements on the hot paths, named, for the query-plan test (none may scan
/// `messages`).
pub fn hot_queries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("enqueue: insert the group's cards", enqueue::INSERT_ROWS),
        ("enqueue: queued count", enqueue::QUEUED_COUNTS),
        ("enqueue: idempotency key", enqueue::FIND_KEY),
        ("enqueue: record the key", enqueue::INSERT_KEY),
        ("history line by id", events::INSERT_EVENT),
        ("next to send", reads::HEAD_ROWS),
        ("next to send, chats held", reads::HEAD_ROWS_SKIPPING),
        ("card in flight", reads::IN_FLIGHT),
        ("claim: lock the line", line::LOCK_LINE),
        ("claim: the lease", lease::CHECK),
        ("claim", line::CLAIM),
        ("claim: last send time", line::LAST_SEND),
        ("outcome: sent", line::OUTCOME_SENT),
        ("outcome: failed", line::OUTCOME_FAILED),
        ("outcome: requeue", line::OUTCOME_REQUEUE),
        ("lease: take or renew", lease::TAKE),
        ("outcome: uncertain", line::OUTCOME_UNCERTAIN),
        ("reconcile: idMessage taken", reads::ID_MESSAGE_TAKEN),
        ("cancel", changes::CANCEL),
        ("retry", changes::RETRY),
        ("status counts", reads::COUNTS),
        ("status oldest queued", reads::OLDEST_QUEUED),
        ("expiry", upkeep::EXPIRE_DUE),
        ("retention: ended", upkeep::ENDED_BEFORE),
        ("retention: events", upkeep::DELETE_EVENTS),
        ("retention: messages", upkeep::DELETE_MESSAGES),
        ("retention: key", upkeep::FORGET_KEY),
        ("one message", rows::ONE_MESSAGE),
        ("history", reads::HISTORY),
        ("position: cards ahead", reads::CARDS_AHEAD),
        ("enqueue: the group's events", stream::WRITE),
        ("stream: after", stream::STREAM_AFTER),
        ("stream: ends", stream::ENDS),
        ("stream: oldest", stream::OLDEST),
        ("stream: retention", stream::DELETE_UP_TO),
        ("notBefore: next due", reads::NEXT_DUE),
        ("notBefore: due now", due::DUE_NOW),
        ("notBefore: join the line", due::JOIN_LINE),
        ("delivery: current", delivery::CURRENT),
        ("delivery: record", delivery::RECORD),
        ("delivery: cards followed", delivery::FOLLOWED),
        // `bulk::BULK_INSTANCES` reads the `counts` table whole: a few rows per
        // instance, never `messages`.
        ("bulk: select", bulk::BULK_SELECT),
        ("bulk: cancel", bulk::BULK_CANCEL),
        ("bulk: retry", bulk::BULK_RETRY),
    ]
}
