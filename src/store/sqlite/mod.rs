//! The SQLite backend: one database file in WAL mode with `synchronous=FULL`, so a
//! committed row survives `kill -9` and power loss.
//!
//! Who owns what, in one look:
//! - every write runs on the write thread ([`writer`]), the one connection that
//!   writes, inside its group transaction: the enqueue ([`enqueue`]), claim and
//!   outcome ([`line`]) hot paths as jobs of their own, every other change ([`changes`],
//!   [`upkeep`]) as a closure the async methods below hand it;
//! - bulk cancel and retry by filter ([`bulk`]), the joining of cards whose
//!   `notBefore` came ([`due`]) and delivery changes ([`delivery`], which also reads the
//!   cards being followed) are closures of the write thread too;
//! - every read runs on a pool of read-only connections ([`reads`]);
//! - rows become records in [`rows`]; history lines are written by [`events`];
//! - the numbered event stream, its counter and the consumers' cursors are [`stream`]'s
//!   (every change above adds its event there, in its own transaction);
//! - SQLite's errors become the store's in [`error`].
//!
//! The imports run one way: this file → `writer` → `enqueue`, `line`; this file →
//! `changes`, `upkeep`, `reads`, `stream`; all of them → `rows`, `events`, `stream` and
//! the records of `crate::store`. The files that hold SQL never call back into this one.

mod bulk;
mod changes;
mod delivery;
mod due;
mod enqueue;
mod error;
mod events;
mod line;
mod reads;
mod rows;
mod stream;
mod upkeep;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use tokio::sync::watch;

pub use bulk::BULK_LIMIT;
pub use due::JOIN_BATCH;
pub use error::classify;
pub use upkeep::EXPIRY_BATCH;

use super::error::{Cause, StoreError};
use super::guard::{self, Identity};
use super::model::{
    BulkAction, BulkFilter, BulkOutcome, ChatHold, ConsumerRow, EnqueueOutcome, EnqueueRequest,
    EventRow, FollowedCard, InstanceCounts, InstanceRow, ListFilter, MessageRow, SendOutcomeRecord,
    StreamEnds, StreamEvent, UncertainCard,
};
use crate::state::Delivery;

/// `PRAGMA max_page_count` for a cap of `pages`: a little above it, as a hard backstop
/// behind the enqueue check (so the drain can still record outcomes at the cap).
fn backstop_pages(pages: u64) -> u64 {
    pages + pages / 4 + 64
}

/// The open SQLite database: the write thread's handle and the read pool. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    writer: writer::Handle,
    /// The next place in line; only the write thread and `retry` take places (this
    /// process holds the database's lock, so no other process writes it).
    line_counter: Arc<AtomicI64>,
    /// Soft cap on the pages in use, for enqueues only.
    enqueue_page_cap: Option<u64>,
    /// The database and WAL files as opened; checked before a write is answered.
    identity: Arc<Identity>,
    /// The event stream's last committed `seq`, moved by the write thread after each
    /// commit that added events.
    events: watch::Receiver<i64>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, and starts the write thread.
    pub async fn open(
        path: &Path,
        max_page_count: Option<u64>,
        readers: u32,
    ) -> Result<SqliteStore, StoreError> {
        guard::prepare(path)?;
        crate::store::migrate::refuse_if_moved(path)?;
        let mut connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory")
            .statement_cache_capacity(64);
        if let Some(pages) = max_page_count {
            connect = connect.pragma("max_page_count", backstop_pages(pages).to_string());
        }
        // Migrations run on a connection of their own (a pool of one: sqlx's migrator
        // wants one), before the write thread starts; it stays open until the thread's
        // connection and the readers are, so the WAL file is never removed in between.
        let migrator = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await?;
        sqlx::migrate!("./migrations")
            .run(&migrator)
            .await
            .map_err(|e| StoreError::Migrate(Cause::new(e)))?;
        let next_line: i64 = sqlx::query_scalar(reads::NEXT_LINE)
            .fetch_one(&migrator)
            .await?;
        let last_event: i64 = sqlx::query_scalar(stream::COUNTER)
            .fetch_one(&migrator)
            .await?;
        let (events_tx, events) = watch::channel(last_event);
        let write_conn = writer::open(path, max_page_count)?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect.read_only(true))
            .await?;
        let identity = Arc::new(Identity::record(path)?);
        let line_counter = Arc::new(AtomicI64::new(next_line));
        let writer = writer::spawn(
            path,
            write_conn,
            max_page_count,
            line_counter.clone(),
            identity.clone(),
            events_tx,
        )?;
        migrator.close().await;
        watch_identity(Arc::downgrade(&identity));
        Ok(SqliteStore {
            read,
            writer,
            line_counter,
            enqueue_page_cap: max_page_count,
            identity,
            events,
        })
    }

    pub fn verify_files(&self) -> Result<(), StoreError> {
        self.identity.verify()
    }

    pub async fn healthy(&self) -> bool {
        self.identity.verify().is_ok()
            && self.writer.is_alive()
            && sqlx::query(reads::ALIVE).execute(&self.read).await.is_ok()
    }

    pub async fn close(&self) {
        self.writer.stop().await;
        self.read.close().await;
    }

    /// Refuses an enqueue of about `bytes` that would take the database past its cap.
    async fn check_room(&self, bytes: usize) -> Result<(), StoreError> {
        let Some(cap) = self.enqueue_page_cap else {
            return Ok(());
        };
        let used = reads::pages_in_use(&self.read).await?;
        // A row costs about its size twice over (table and index pages), plus a page.
        let needed = (bytes as u64 * 2) / 4096 + 1;
        if used.max(0) as u64 + needed > cap {
            return Err(StoreError::full(format!(
                "max_database_size reached ({used} of {cap} pages in use)"
            )));
        }
        Ok(())
    }

    /// Runs `work` on the write thread's transaction, as the writes below do; for the
    /// store's tests, which need a write the API has no name for (a failing one).
    #[cfg(test)]
    pub(crate) async fn write_for_test<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.run(work).await
    }

    /// A connection opened as the write thread opens each of its own.
    #[cfg(test)]
    pub(crate) fn open_write_connection_for_test(
        path: &Path,
        max_page_count: Option<u64>,
    ) -> Result<rusqlite::Connection, StoreError> {
        writer::open(path, max_page_count)
    }

    /// Jobs handed to the write thread and not yet taken into a group.
    #[cfg(test)]
    pub(crate) fn waiting_writes_for_test(&self) -> usize {
        self.writer.waiting()
    }

    #[cfg(test)]
    pub(crate) fn read_pool_for_test(&self) -> &SqlitePool {
        &self.read
    }

    // --- writes: each one job of the write thread ---

    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        let bytes = request
            .cards
            .iter()
            .map(|c| c.chat_id().len() + 200)
            .sum::<usize>();
        self.check_room(bytes).await?;
        self.writer.enqueue(request).await
    }

    pub async fn finish_and_begin(
        &self,
        finished: Option<(&str, &SendOutcomeRecord, i64)>,
        id: &str,
        instance: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let claim = writer::Claim {
            id: id.to_string(),
            instance: instance.to_string(),
            now,
        };
        let finished = finished.map(|(id, outcome, at)| (id.to_string(), outcome.clone(), at));
        self.writer
            .line(finished, Some(claim))
            .await?
            .ok_or_else(|| StoreError::Conflict("no longer queued".into()))
    }

    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: &SendOutcomeRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let finished = Some((id.to_string(), outcome.clone(), now));
        self.writer.line(finished, None).await.map(|_| ())
    }

    pub async fn cancel(&self, id: &str, now: i64) -> Result<MessageRow, StoreError> {
        let id = id.to_string();
        self.writer
            .run(move |tx| changes::cancel(tx, &id, now))
            .await
    }

    pub async fn retry(
        &self,
        id: &str,
        now: i64,
        max_age_ms: i64,
    ) -> Result<MessageRow, StoreError> {
        let id = id.to_string();
        let lines = self.line_counter.clone();
        self.writer
            .run(move |tx| {
                let line = lines.fetch_add(1, Ordering::SeqCst);
                changes::retry(tx, &id, line, now, max_age_ms)
            })
            .await
    }

    pub async fn bulk(
        &self,
        filter: &BulkFilter,
        action: BulkAction,
        now: i64,
    ) -> Result<BulkOutcome, StoreError> {
        let filter = filter.clone();
        let lines = self.line_counter.clone();
        self.writer
            .run(move |tx| bulk::run(tx, &filter, action, now, &lines))
            .await
    }

    pub async fn join_due(&self, instance: &str, now: i64) -> Result<u64, StoreError> {
        let instance = instance.to_string();
        let lines = self.line_counter.clone();
        self.writer
            .run(move |tx| Ok(due::join_due(tx, &instance, now, &lines)?))
            .await
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), StoreError> {
        let name = name.to_string();
        self.writer
            .run(move |tx| Ok(changes::set_paused(tx, &name, paused)?))
            .await
    }

    pub async fn set_hold(
        &self,
        name: &str,
        until: Option<i64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let (name, reason) = (name.to_string(), reason.map(str::to_string));
        self.writer
            .run(move |tx| Ok(changes::set_hold(tx, &name, until, reason.as_deref())?))
            .await
    }

    pub async fn set_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (name, chat_id, reason) = (name.to_string(), chat_id.to_string(), reason.to_string());
        self.writer
            .run(move |tx| Ok(changes::set_chat_hold(tx, &name, &chat_id, until, &reason)?))
            .await
    }

    pub async fn end_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        let (name, chat_id) = (name.to_string(), chat_id.to_string());
        self.writer
            .run(move |tx| Ok(changes::end_chat_hold(tx, &name, &chat_id, until)?))
            .await
    }

    pub async fn expire_due(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.writer
            .run(move |tx| Ok(upkeep::expire_due(tx, now)?))
            .await
    }

    pub async fn delete_ended_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.writer
            .run(move |tx| Ok(upkeep::delete_ended_batch(tx, cutoff)?))
            .await
    }

    // --- the event stream and its consumers ---

    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.events.clone()
    }

    pub async fn record_delivery(
        &self,
        id: &str,
        delivery: Delivery,
        at: i64,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.writer
            .run(move |tx| delivery::record(tx, &id, delivery, at))
            .await
    }

    pub async fn followed(
        &self,
        instance: &str,
        sent_since: i64,
        limit: i64,
    ) -> Result<Vec<FollowedCard>, StoreError> {
        delivery::followed(&self.read, instance, sent_since, limit).await
    }

    pub async fn delete_old_events(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.writer
            .run(move |tx| Ok(stream::delete_old(tx, cutoff, upkeep::RETENTION_BATCH)?))
            .await
    }

    pub async fn start_consumer(&self, name: &str, start: i64) -> Result<(), StoreError> {
        let name = name.to_string();
        let now = crate::clock::now_ms();
        self.writer
            .run(move |tx| Ok(stream::start_consumer(tx, &name, start, now)?))
            .await
    }

    pub async fn set_consumer_cursor(&self, name: &str, cursor: i64) -> Result<(), StoreError> {
        let name = name.to_string();
        let now = crate::clock::now_ms();
        self.writer
            .run(move |tx| Ok(stream::set_cursor(tx, &name, cursor, now)?))
            .await
    }

    pub async fn consumer_failed(&self, name: &str, error: &str) -> Result<bool, StoreError> {
        let (name, error) = (name.to_string(), error.to_string());
        let now = crate::clock::now_ms();
        self.writer
            .run(move |tx| Ok(stream::consumer_failed(tx, &name, &error, now)?))
            .await
    }

    pub async fn delete_consumer(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.writer
            .run(move |tx| Ok(stream::delete_consumer(tx, &name)?))
            .await
    }

    pub async fn events_after(
        &self,
        after: i64,
        instance: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        stream::after(&self.read, after, instance, limit).await
    }

    pub async fn stream_ends(&self) -> Result<StreamEnds, StoreError> {
        stream::ends(&self.read).await
    }

    pub async fn consumer(&self, name: &str) -> Result<Option<ConsumerRow>, StoreError> {
        stream::consumer(&self.read, name).await
    }

    pub async fn consumers(&self) -> Result<Vec<ConsumerRow>, StoreError> {
        stream::consumers(&self.read).await
    }

    // --- reads: the read-only pool ---

    pub async fn message(&self, id: &str) -> Result<MessageRow, StoreError> {
        reads::message(&self.read, id).await
    }

    pub async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        reads::history(&self.read, id).await
    }

    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<MessageRow>, Option<String>), StoreError> {
        reads::list(&self.read, filter).await
    }

    pub async fn position(&self, instance: &str, line_seq: i64) -> Result<i64, StoreError> {
        reads::position(&self.read, instance, line_seq).await
    }

    pub async fn instance(&self, name: &str) -> Result<InstanceRow, StoreError> {
        reads::instance(&self.read, name).await
    }

    pub async fn chat_holds(&self, name: &str) -> Result<Vec<ChatHold>, StoreError> {
        reads::chat_holds(&self.read, name).await
    }

    pub async fn counts(&self, name: &str) -> Result<InstanceCounts, StoreError> {
        reads::counts(&self.read, name).await
    }

    pub async fn in_flight(&self, instance: &str) -> Result<Option<UncertainCard>, StoreError> {
        reads::in_flight(&self.read, instance).await
    }

    pub async fn head_rows(
        &self,
        instance: &str,
        limit: i64,
        skip: &[String],
    ) -> Result<Vec<MessageRow>, StoreError> {
        reads::head_rows(&self.read, instance, limit, skip).await
    }

    pub async fn id_message_taken(&self, id_message: &str) -> Result<bool, StoreError> {
        reads::id_message_taken(&self.read, id_message).await
    }

    pub async fn next_due(&self, instance: &str) -> Result<Option<i64>, StoreError> {
        reads::next_due(&self.read, instance).await
    }

    /// `VACUUM INTO` on a read connection: a consistent copy of the last committed
    /// state, taken while the write thread goes on committing (it writes only `dest`).
    pub async fn backup_into(&self, dest: &Path) -> Result<(), StoreError> {
        let dest = dest
            .to_str()
            .ok_or_else(|| StoreError::database(format!("{} is not UTF-8", dest.display())))?;
        sqlx::query(VACUUM_INTO)
            .bind(dest)
            .execute(&self.read)
            .await?;
        Ok(())
    }
}

/// A consistent copy of the database at one commit (?1 the new file).
pub const VACUUM_INTO: &str = "VACUUM INTO ?1";

/// Compares the files' identity every [`guard::WATCH_EVERY`] until the store is gone or
/// the files are, so a deletion is logged (and health turns 503) even with no write.
fn watch_identity(identity: std::sync::Weak<Identity>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(guard::WATCH_EVERY).await;
            match identity.upgrade() {
                Some(id) if id.verify().is_ok() => {}
                _ => return,
            }
        }
    });
}

/// The statements on the hot paths (enqueue, next to send, claim, outcome, expiry,
/// retention, status, reconcile, one message and its place in line), named: none may
/// scan `messages` (`tests/query_plans.rs`). These are the very constants the store
/// runs, so the test checks what runs.
pub fn hot_queries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("enqueue: insert a card", enqueue::INSERT_ROW),
        ("enqueue: queued count", enqueue::QUEUED_COUNTS),
        ("enqueue: idempotency key", enqueue::FIND_KEY),
        ("enqueue: record the key", enqueue::INSERT_KEY),
        ("history line by id", events::INSERT_EVENT),
        ("history line by seq", events::INSERT_EVENT_BY_SEQ),
        ("stream: event", stream::ADD),
        ("delivery: current", delivery::CURRENT),
        ("delivery: record", delivery::RECORD),
        ("delivery: cards followed", delivery::FOLLOWED),
        ("stream: seal", stream::SEAL),
        ("stream: after", stream::STREAM_AFTER),
        ("stream: ends", stream::ENDS),
        ("stream: oldest", stream::OLDEST),
        ("stream: retention", stream::DELETE_UP_TO),
        ("next to send", reads::HEAD_ROWS),
        ("next to send, chats held", reads::HEAD_ROWS_SKIPPING),
        ("card in flight", reads::IN_FLIGHT),
        ("claim", line::CLAIM),
        ("claim: last send time", line::LAST_SEND),
        ("outcome: sent", line::OUTCOME_SENT),
        ("outcome: failed", line::OUTCOME_FAILED),
        ("outcome: requeue", line::OUTCOME_REQUEUE),
        ("outcome: uncertain", line::OUTCOME_UNCERTAIN),
        ("reconcile: idMessage taken", reads::ID_MESSAGE_TAKEN),
        ("cancel", changes::CANCEL),
        ("retry", changes::RETRY),
        ("status counts", reads::COUNTS),
        ("status oldest queued", reads::OLDEST_QUEUED),
        ("expiry: due", upkeep::DUE_FOR_EXPIRY),
        ("expiry: one card", upkeep::EXPIRE),
        ("retention: ended", upkeep::ENDED_BEFORE),
        ("retention: events", upkeep::DELETE_EVENTS),
        ("retention: message", upkeep::DELETE_MESSAGE),
        ("retention: key", upkeep::FORGET_KEY),
        ("one message", rows::ONE_MESSAGE),
        ("history", reads::HISTORY),
        ("position: line ends", reads::LINE_ENDS),
        ("position: cards ahead", reads::CARDS_AHEAD),
        ("position: cards behind", reads::CARDS_BEHIND),
        ("enqueue: not-yet-due count", enqueue::SCHEDULED_COUNTS),
        ("enqueue: not-yet-due count read", enqueue::SCHEDULED_COUNT),
        ("notBefore: next due", reads::NEXT_DUE),
        ("notBefore: due now", due::DUE_NOW),
        ("notBefore: join the line", due::JOIN_LINE),
        // `bulk::BULK_INSTANCES` reads the `counts` table whole: a few rows per
        // instance, never `messages`.
        ("bulk: select", bulk::BULK_SELECT),
        ("bulk: cancel", bulk::BULK_CANCEL),
        ("bulk: retry", bulk::BULK_RETRY),
    ]
}
