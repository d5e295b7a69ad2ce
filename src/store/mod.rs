//! The store: contactq's only way to its database. The drain, the API and the CLI see
//! this interface ([`Store`] and the records of [`model`]), never a driver.
//!
//! Who owns what:
//! - this file: the interface, a [`Store`] handle whose methods are every read and
//!   write the daemon makes, named after what they mean;
//! - [`model`]: the records those methods take and give; [`error`]: the one error type;
//! - [`sqlite`]: the SQLite backend behind the interface. Every write there runs on
//!   one thread that owns the only writing connection (group-committed: several writes,
//!   one transaction, one fsync); every read on read-only connections;
//! - [`postgres`]: the PostgreSQL backend, one database shared by several daemons
//!   (enqueues group-committed by writer tasks, one drainer per instance);
//! - [`migrate`]: `contactq migrate-store`, a SQLite database copied into PostgreSQL;
//! - [`guard`]: what is checked about the database files (modes, `quick_check`, a file
//!   deleted or replaced under the daemon); `backup`: offline restore and the copy's check.
//!
//! Why an enum of backends rather than a trait object: the methods stay plain `async fn`
//! (no boxed future, no allocation on the enqueue and claim hot paths), and each
//! backend is a variant that every method must handle, checked by the compiler, not a
//! trait that can be implemented halfway.
//!
//! The imports run one way: this file → `sqlite`, `postgres`, `migrate` → `model`,
//! `error`, `guard`.

mod backup;
mod error;
pub(crate) mod guard;
pub mod migrate;
mod model;
mod postgres;
mod sqlite;

use std::path::Path;

pub use backup::{restore, verify_copy, RestoreReport};
pub use error::{Cause, StoreError};
pub use model::{
    BulkAction, BulkFilter, BulkOutcome, ChatHold, ConsumerRow, EnqueueOutcome, EnqueueRequest,
    EventRow, FollowedCard, InstanceCounts, InstanceRow, LeaseView, ListFilter, MessageRow,
    NodeSeen, SendOutcomeRecord, StreamEnds, StreamEvent, UncertainCard,
};
pub use postgres::hot_queries as pg_hot_queries;
pub use postgres::record::{Record, RecordedInstance};
pub use sqlite::{hot_queries, BULK_LIMIT, EXPIRY_BATCH, JOIN_BATCH};

use crate::clock::now_ms;
use crate::config::Database;
use crate::state::Delivery;
use postgres::PgStore;
use sqlite::SqliteStore;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Cap on the database size in pages of 4 KiB. Enqueues are refused (Full) past
    /// it while the drain can still record outcomes, so space is freed by retention;
    /// `PRAGMA max_page_count` is set a little above it as a hard backstop.
    pub max_page_count: Option<u64>,
    /// Read-only connections.
    pub readers: u32,
    /// `daemon.lease`: how long a drain lease on a shared database lasts unrenewed.
    pub lease: std::time::Duration,
    /// The clock the lease's own deadline is measured on (its boot clock).
    pub clock: crate::clock::SharedClock,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_page_count: None,
            readers: 4,
            lease: std::time::Duration::from_secs(10),
            clock: crate::clock::system(),
        }
    }
}

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Calls the same method on whichever backend is open.
macro_rules! on_backend {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite database at `path`, and
    /// starts its write thread.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let sqlite = SqliteStore::open(path, options.max_page_count, options.readers).await?;
        Ok(Store {
            backend: Backend::Sqlite(sqlite),
        })
    }

    /// Opens the database `daemon.database` names: the SQLite file, or the PostgreSQL
    /// database (connecting as `contactq/NODE`, migrating, starting the writer).
    pub async fn open_database(
        database: &Database,
        node: &str,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        match database {
            Database::Sqlite(path) => Store::open(path, options).await,
            Database::Postgres(target) => {
                let connect = target.connect_options().map_err(|e| {
                    StoreError::Refused(format!("daemon.database {}: {e}", target.redacted()))
                })?;
                let pg = PgStore::open(connect, node, &options).await?;
                Ok(Store {
                    backend: Backend::Postgres(pg),
                })
            }
        }
    }

    /// Whether several daemons may share this store (PostgreSQL): another daemon's
    /// changes are seen only by reading the database again.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Whether the database files are still the ones the store opened (see
    /// [`guard::Identity`]); an error once either was deleted or replaced. PostgreSQL
    /// has no files of ours.
    pub fn verify_files(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.verify_files(),
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// The lease epoch at which this daemon drains `instance` now, or None: always 1
    /// with SQLite (one daemon per file); with PostgreSQL only while it holds the
    /// instance's lease (docs/api.md §10), so two daemons never drain one instance at
    /// once. A new epoch means another may have drained it meanwhile.
    pub async fn try_lead(&self, instance: &str) -> Option<i64> {
        match &self.backend {
            Backend::Sqlite(_) => Some(1),
            Backend::Postgres(b) => b.try_lead(instance).await,
        }
    }

    /// Whether the drain may write a request to the API for `instance` now: with
    /// PostgreSQL, only before the lease holder's own deadline.
    pub fn may_send(&self, instance: &str) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => true,
            Backend::Postgres(b) => b.may_send(instance),
        }
    }

    /// `daemon.lease` in ms on a shared database (None with SQLite).
    pub fn lease_ms(&self) -> Option<i64> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.lease_ms()),
        }
    }

    /// Gives up draining `instance` for `off_ms` (its API refuses this daemon): with
    /// PostgreSQL another daemon may take it; nothing to do with SQLite.
    pub async fn give_up_lead(&self, instance: &str, off_ms: i64) {
        if let Backend::Postgres(b) = &self.backend {
            b.give_up_lead(instance, off_ms).await
        }
    }

    /// Who drains `instance` (status `drainedBy`, `leaseEpoch`): with SQLite, this
    /// daemon's `node` at epoch 1.
    pub async fn lease_view(&self, instance: &str, node: &str) -> Result<LeaseView, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(LeaseView {
                drained_by: Some(node.to_string()),
                epoch: Some(1),
            }),
            Backend::Postgres(b) => b.lease_view(instance).await,
        }
    }

    /// Forwards a flush given to this daemon to whichever daemon drains `instance`
    /// (PostgreSQL NOTIFY); nothing to forward with SQLite.
    pub async fn forward_flush(&self, instance: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(b) => b.notify_flush(instance).await,
        }
    }

    /// Calls `flush(instance)` for every flush another daemon forwards (a task of its
    /// own, for the daemon's life); nothing with SQLite.
    pub fn on_forwarded_flush(&self, flush: impl Fn(&str) + Send + 'static) {
        if let Backend::Postgres(b) = &self.backend {
            b.listen_flushes(flush)
        }
    }

    /// How an acknowledged enqueue is kept (status `durability`, docs/api.md §10):
    /// `"sync"` when the commit it waited for is on disk here (SQLite with
    /// `synchronous=FULL`; PostgreSQL with `synchronous_commit` on and no asynchronous
    /// standby), `"async"` when PostgreSQL streams to a standby asynchronously (a
    /// fail-over to it may lose the last commits).
    pub async fn durability(&self) -> Result<&'static str, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok("sync"),
            Backend::Postgres(b) => b.durability().await,
        }
    }

    /// The daemons sharing the database (status `nodes`): with SQLite, this one, now.
    pub async fn nodes(&self, node: &str) -> Result<Vec<NodeSeen>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(vec![NodeSeen {
                name: node.to_string(),
                last_seen_ms: now_ms(),
            }]),
            Backend::Postgres(b) => b.nodes().await,
        }
    }

    /// Whether this daemon runs hook `name` now: always with SQLite (one daemon per
    /// file); with PostgreSQL only while it holds the hook's lock, so one daemon of
    /// those sharing the database delivers each hook's events.
    pub async fn try_run_hook(&self, name: &str) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => true,
            Backend::Postgres(b) => b.try_run_hook(name).await,
        }
    }

    /// Checks this daemon's `[instances]` against the record of a shared database
    /// (Refused, naming the first difference), writing it when there is none yet;
    /// `adopt` replaces it (`contactq adopt-config`). Nothing to check with SQLite.
    pub async fn check_record(&self, mine: &Record, adopt: bool) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(b) => b.check_record(mine, adopt).await,
        }
    }

    /// Whether the database answers and its writer is alive (if it died, the watchdog
    /// stops pinging and systemd restarts the daemon).
    pub async fn healthy(&self) -> bool {
        on_backend!(self, b => b.healthy().await)
    }

    /// Lets the writes already handed over commit, then closes every connection.
    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }

    // --- enqueue, and the drain's line ---

    /// Enqueues cards; returns once they are committed (or known not to be).
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        on_backend!(self, b => b.enqueue(request).await)
    }

    /// The card in flight on an instance (state `sending`), if any: it must be resolved
    /// before anything else goes out.
    pub async fn in_flight(&self, instance: &str) -> Result<Option<UncertainCard>, StoreError> {
        on_backend!(self, b => b.in_flight(instance).await)
    }

    /// The first `limit` queued cards of an instance, in line (FIFO) order: the drain
    /// keeps them and claims them one by one with [`Store::begin_attempt`], which tells
    /// it when one has left the line meanwhile.
    pub async fn head_rows(
        &self,
        instance: &str,
        limit: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        on_backend!(self, b => b.head_rows(instance, limit, &[]).await)
    }

    /// Like [`Store::head_rows`], leaving out the cards to the chats in `skip` (held by
    /// a chats-quota 466): they keep their place and go first once the hold ends.
    pub async fn head_rows_skipping(
        &self,
        instance: &str,
        limit: i64,
        skip: &[String],
    ) -> Result<Vec<MessageRow>, StoreError> {
        on_backend!(self, b => b.head_rows(instance, limit, skip).await)
    }

    /// Marks the card `sending` and the instance's last send time, committed before the
    /// request goes out. Returns the attempt number, or Conflict if the card left the
    /// queue meanwhile (cancelled, expired) or its line was paused.
    pub async fn begin_attempt(
        &self,
        id: &str,
        instance: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.finish_and_begin(None, id, instance, now).await
    }

    /// Records the outcome of one card's attempt (if any) and begins the attempt of the
    /// next in one transaction, so a steady drain pays one commit (one fsync) per send:
    /// the outcome is still durable before the next request goes out.
    pub async fn finish_and_begin(
        &self,
        finished: Option<(&str, &SendOutcomeRecord, i64)>,
        id: &str,
        instance: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        on_backend!(self, b => b.finish_and_begin(finished, id, instance, now).await)
    }

    /// Records the outcome of the card's current attempt.
    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: &SendOutcomeRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.record_outcome(id, outcome, now).await)
    }

    /// Whether an idMessage is already stored for some card (a journal entry matches
    /// at most one card).
    pub async fn id_message_taken(&self, id_message: &str) -> Result<bool, StoreError> {
        on_backend!(self, b => b.id_message_taken(id_message).await)
    }

    // --- messages ---

    pub async fn message(&self, id: &str) -> Result<MessageRow, StoreError> {
        on_backend!(self, b => b.message(id).await)
    }

    pub async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        on_backend!(self, b => b.history(id).await)
    }

    /// A page of messages, newest first; the cursor is the last id of the page.
    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<MessageRow>, Option<String>), StoreError> {
        on_backend!(self, b => b.list(filter).await)
    }

    /// Place in line of a queued card (1 = next); a card in flight is not counted.
    pub async fn position(&self, instance: &str, line_seq: i64) -> Result<i64, StoreError> {
        on_backend!(self, b => b.position(instance, line_seq).await)
    }

    /// Cancels a queued message; Conflict (with its state) if it is not queued.
    pub async fn cancel(&self, id: &str) -> Result<MessageRow, StoreError> {
        on_backend!(self, b => b.cancel(id, now_ms()).await)
    }

    /// Puts a failed or expired message at the tail of its line with a fresh expiry, as
    /// if enqueued now; `enqueued_at` keeps the first enqueue, `requeued_at` says when.
    pub async fn retry(&self, id: &str, max_age_ms: i64) -> Result<MessageRow, StoreError> {
        on_backend!(self, b => b.retry(id, now_ms(), max_age_ms).await)
    }

    /// Cancels (`queued` only) or retries (`failed` / `expired` only) the cards that
    /// match `filter`, at most [`BULK_LIMIT`] in one transaction; retried cards go to
    /// the tail of their line in their old order.
    pub async fn bulk(
        &self,
        filter: &BulkFilter,
        action: BulkAction,
    ) -> Result<BulkOutcome, StoreError> {
        on_backend!(self, b => b.bulk(filter, action, now_ms()).await)
    }

    // --- notBefore ---

    /// When the first card of an instance that is not yet due (its `notBefore` ahead)
    /// comes due (Unix ms), if there is one.
    pub async fn next_due(&self, instance: &str) -> Result<Option<i64>, StoreError> {
        on_backend!(self, b => b.next_due(instance).await)
    }

    /// Puts the cards of an instance due by `now` at the tail of its line, in the
    /// order they came due; returns how many (call again while it is [`JOIN_BATCH`]).
    pub async fn join_due(&self, instance: &str, now: i64) -> Result<u64, StoreError> {
        on_backend!(self, b => b.join_due(instance, now).await)
    }

    // --- instances ---

    /// The persisted state of an instance's line (defaults if never written).
    pub async fn instance(&self, name: &str) -> Result<InstanceRow, StoreError> {
        on_backend!(self, b => b.instance(name).await)
    }

    /// Pauses or resumes a line; `resume` also releases the quota holds, the line's
    /// and every chat's ("held for `quota_retry` or until `contactq resume`",
    /// docs/api.md), in the same transaction.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), StoreError> {
        on_backend!(self, b => b.set_paused(name, paused).await)
    }

    /// Holds the line until `until` (ms) for `reason`, or releases it with None.
    pub async fn set_hold(
        &self,
        name: &str,
        until: Option<i64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.set_hold(name, until, reason).await)
    }

    /// The chats of an instance held by a chats-quota 466.
    pub async fn chat_holds(&self, name: &str) -> Result<Vec<ChatHold>, StoreError> {
        on_backend!(self, b => b.chat_holds(name).await)
    }

    /// Holds one chat of an instance until `until` (ms).
    pub async fn set_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.set_chat_hold(name, chat_id, until, reason).await)
    }

    /// Releases one chat's hold, if it is still the one that ends at `until`.
    pub async fn end_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.end_chat_hold(name, chat_id, until).await)
    }

    /// Counts by state for one instance, and its oldest queued card.
    pub async fn counts(&self, name: &str) -> Result<InstanceCounts, StoreError> {
        on_backend!(self, b => b.counts(name).await)
    }

    // --- the event stream (docs/api.md §11) and its consumers ---

    /// The last committed event's `seq`, changing after each commit that adds events
    /// (the follow stream and the hooks wait on it).
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<i64> {
        on_backend!(self, b => b.subscribe_events())
    }

    /// Moves a sent card's delivery forward to `delivery` at `at` (Unix ms), with its
    /// events (delivered, read, deliveryFailed, unconfirmed) in the same transaction;
    /// `deliveredAt` / `readAt` are set when first seen. False when it changed nothing:
    /// the card is gone or not sent, or already there or further (it never goes back).
    pub async fn record_delivery(
        &self,
        id: &str,
        delivery: Delivery,
        at: i64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, b => b.record_delivery(id, delivery, at).await)
    }

    /// The cards of `instance` whose delivery is followed (`sent` or `delivered`), sent
    /// at `sent_since` (Unix ms) or later, oldest send first, `limit` at most.
    pub async fn followed(
        &self,
        instance: &str,
        sent_since: i64,
        limit: i64,
    ) -> Result<Vec<FollowedCard>, StoreError> {
        on_backend!(self, b => b.followed(instance, sent_since, limit).await)
    }

    /// Events after `after` (up to `limit`), of one instance or all, in `seq` order.
    pub async fn events_after(
        &self,
        after: i64,
        instance: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        on_backend!(self, b => b.events_after(after, instance, limit).await)
    }

    /// The oldest kept and the last committed `seq`.
    pub async fn stream_ends(&self) -> Result<StreamEnds, StoreError> {
        on_backend!(self, b => b.stream_ends().await)
    }

    /// Deletes one batch of events older than `cutoff` (never the newest); returns how
    /// many went. Call until it returns 0.
    pub async fn delete_old_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        on_backend!(self, b => b.delete_old_events(cutoff).await)
    }

    /// Gives the consumer `name` the cursor `start` unless it already has one.
    pub async fn start_consumer(&self, name: &str, start: i64) -> Result<(), StoreError> {
        on_backend!(self, b => b.start_consumer(name, start).await)
    }

    /// Moves a consumer's cursor (creating it), ending its run of failures.
    pub async fn set_consumer_cursor(&self, name: &str, cursor: i64) -> Result<(), StoreError> {
        on_backend!(self, b => b.set_consumer_cursor(name, cursor).await)
    }

    /// Records a failed delivery of a consumer; false if it has no cursor.
    pub async fn consumer_failed(&self, name: &str, error: &str) -> Result<bool, StoreError> {
        on_backend!(self, b => b.consumer_failed(name, error).await)
    }

    /// Forgets a consumer's cursor; false if it had none.
    pub async fn delete_consumer(&self, name: &str) -> Result<bool, StoreError> {
        on_backend!(self, b => b.delete_consumer(name).await)
    }

    pub async fn consumer(&self, name: &str) -> Result<Option<ConsumerRow>, StoreError> {
        on_backend!(self, b => b.consumer(name).await)
    }

    pub async fn consumers(&self) -> Result<Vec<ConsumerRow>, StoreError> {
        on_backend!(self, b => b.consumers().await)
    }

    // --- upkeep and backup ---

    /// Expires one batch of queued cards whose deadline has passed, oldest deadline
    /// first; returns how many per instance. Call until fewer than [`EXPIRY_BATCH`]
    /// went, so a million cards expiring at once never make one long transaction.
    pub async fn expire_due(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        on_backend!(self, b => b.expire_due(now).await)
    }

    /// Deletes one batch of cards that ended before `cutoff`, with their events and
    /// idempotency keys; returns how many cards went. Call until it returns 0.
    pub async fn delete_ended_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        on_backend!(self, b => b.delete_ended_batch(cutoff).await)
    }

    /// Writes a consistent copy of the database to `dest` (which must not exist), while
    /// writes go on.
    pub async fn backup_into(&self, dest: &Path) -> Result<(), StoreError> {
        on_backend!(self, b => b.backup_into(dest).await)
    }

    #[cfg(test)]
    fn sqlite(&self) -> &SqliteStore {
        match &self.backend {
            Backend::Sqlite(b) => b,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "stream_tests.rs"]
mod stream_tests;
#[cfg(test)]
mod tests_both;
#[cfg(test)]
mod tests_both_more;
