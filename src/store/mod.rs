//! The SQLite store: every SQL statement of contactq lives under this module.
//!
//! One write connection (SQLite has one writer anyway) and a small pool of readers, in
//! WAL mode with `synchronous=FULL`, so a committed row survives `kill -9` and power
//! loss. Enqueues go through a group-commit writer ([`enqueue`]); the drain's state
//! changes are short transactions named after what they mean ([`line`]).

mod backup;
mod enqueue;
pub mod guard;
mod instances;
mod line;
mod maintenance;
mod messages;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use tokio::sync::mpsc;

pub use backup::{restore, verify_copy, RestoreReport};
pub use enqueue::{EnqueueOutcome, EnqueueRequest};
pub use instances::{ChatHold, InstanceCounts, InstanceRow};
pub use line::{SendOutcomeRecord, UncertainCard};
pub use maintenance::EXPIRY_BATCH;
pub use messages::{EventRow, ListFilter, MessageRow};

/// A store failure the callers must tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database's size cap is full: nothing was written.
    #[error("database full: {0}")]
    Full(String),
    /// The database could not be reached or is locked: nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("no such message")]
    NotFound,
    /// The message is not in a state that allows the change.
    #[error("message is {0}")]
    Conflict(String),
    /// Same idempotency key, different body.
    #[error("idempotency key reused with a different body")]
    IdempotencyMismatch,
    /// The database cannot be trusted or written: the daemon must not start on it.
    #[error("{0}")]
    Refused(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(String),
}

/// Set when a statement failed; the write pool then replaces its connection before the
/// next use. After SQLITE_FULL or an I/O error SQLite may leave a transaction open on
/// the connection (COMMIT can fail and keep it active), and a later BEGIN would then
/// nest inside it as a savepoint whose "commit" is not durable. A fresh connection
/// guarantees every transaction starts from a clean state.
static WRITER_SUSPECT: AtomicBool = AtomicBool::new(false);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        WRITER_SUSPECT.store(true, Ordering::SeqCst);
        if let sqlx::Error::Database(db) = &e {
            // SQLite primary result codes: 13 SQLITE_FULL, 5 BUSY, 6 LOCKED, 10 IOERR,
            // 14 CANTOPEN, 8 READONLY.
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            return match code {
                Some(13) => StoreError::Full(db.message().to_string()),
                Some(5 | 6 | 8 | 10 | 14) => StoreError::Unavailable(db.message().to_string()),
                _ => StoreError::Database(db.message().to_string()),
            };
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Cap on the database size in pages of 4 KiB. Enqueues are refused (Full) past
    /// it while the drain can still record outcomes, so space is freed by retention;
    /// `PRAGMA max_page_count` is set a little above it as a hard backstop.
    pub max_page_count: Option<u64>,
    pub readers: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_page_count: None,
            readers: 4,
        }
    }
}

/// The open database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    writer_tx: mpsc::Sender<writer::Job>,
    /// The next place in line; only this process writes the database (it holds the lock).
    line_counter: Arc<AtomicI64>,
    /// Soft cap on the pages in use, for enqueues only (see [`StoreOptions`]).
    enqueue_page_cap: Option<u64>,
    /// Taken around every write transaction, by the sqlx writes and the enqueue thread
    /// alike. Two connections write this database; without the gate they would meet
    /// at SQLite's lock, whose busy handler sleeps 1, 2, 5, 10… ms: a drain's claim
    /// could wait ~100 ms behind a stream of batches. The gate is fair (FIFO).
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// The database and WAL files as opened; checked before a write is answered.
    identity: Arc<guard::Identity>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database, and starts the enqueue writer.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        guard::prepare(path)?;
        let mut connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| StoreError::Database(e.to_string()))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory")
            .statement_cache_capacity(64);
        if let Some(pages) = options.max_page_count {
            let backstop = pages + pages / 4 + 64;
            connect = connect.pragma("max_page_count", backstop.to_string());
        }
        let write = SqlitePoolOptions::new()
            .before_acquire(|_conn, _meta| {
                Box::pin(async move { Ok(!WRITER_SUSPECT.swap(false, Ordering::SeqCst)) })
            })
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect.clone())
            .await?;
        sqlx::migrate!("./migrations")
            .run(&write)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect.read_only(true))
            .await?;
        let next_line: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(line_seq), 0) + 1 FROM messages")
                .fetch_one(&write)
                .await?;
        let line_counter = Arc::new(AtomicI64::new(next_line));
        let write_gate = Arc::new(tokio::sync::Mutex::new(()));
        let identity = Arc::new(guard::Identity::record(path)?);
        let writer_tx = writer::spawn(
            path,
            options.max_page_count,
            line_counter.clone(),
            write_gate.clone(),
            identity.clone(),
        )?;
        watch_identity(Arc::downgrade(&identity));
        Ok(Store {
            write,
            read,
            writer_tx,
            line_counter,
            enqueue_page_cap: options.max_page_count,
            write_gate,
            identity,
        })
    }

    /// Whether the database and WAL files are still the ones the store opened (see
    /// [`guard::Identity`]); an error once either was deleted or replaced.
    pub fn verify_files(&self) -> Result<(), StoreError> {
        self.identity.verify()
    }

    /// Whether the database answers and the write thread is alive (if it died, the
    /// watchdog stops pinging and systemd restarts the daemon).
    pub async fn healthy(&self) -> bool {
        self.identity.verify().is_ok()
            && !self.writer_tx.is_closed()
            && sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    /// Closes both pools (the write thread stops when the last Store is dropped).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// Refuses an enqueue of about `bytes` that would take the database past its cap.
    pub(crate) async fn check_room(&self, bytes: usize) -> Result<(), StoreError> {
        let Some(cap) = self.enqueue_page_cap else {
            return Ok(());
        };
        let used: i64 = sqlx::query_scalar(
            "SELECT (SELECT page_count FROM pragma_page_count())
                  - (SELECT freelist_count FROM pragma_freelist_count())",
        )
        .fetch_one(&self.read)
        .await?;
        // A row costs about its size twice over (table and index pages), plus a page.
        let needed = (bytes as u64 * 2) / 4096 + 1;
        if used.max(0) as u64 + needed > cap {
            return Err(StoreError::Full(format!(
                "max_database_size reached ({used} of {cap} pages in use)"
            )));
        }
        Ok(())
    }

    /// The write gate (see the field); hold the guard for the whole transaction.
    pub(super) async fn gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_gate.lock().await
    }

    fn next_line_seq(&self) -> i64 {
        self.line_counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Compares the files' identity every [`guard::WATCH_EVERY`] until the store is gone or
/// the files are, so a deletion is logged (and health turns 503) even with no write.
fn watch_identity(identity: std::sync::Weak<guard::Identity>) {
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
/// status, reconcile, one message and its place in line), named, for
/// `tests/query_plans.rs`: none may scan `messages`. These are the very constants the
/// store runs, so the test checks what runs.
pub fn hot_queries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("enqueue: insert a card", enqueue::INSERT_ROW),
        ("enqueue: queued count", enqueue::QUEUED_COUNTS),
        ("enqueue: idempotency key", enqueue::FIND_KEY),
        ("next to send", line::HEAD_ROWS),
        ("card in flight", line::IN_FLIGHT),
        ("claim", line::CLAIM),
        ("claim: history", line::CLAIM_EVENT),
        ("claim: last send time", line::LAST_SEND),
        ("outcome: sent", line::OUTCOME_SENT),
        ("outcome: failed", line::OUTCOME_FAILED),
        ("outcome: requeue", line::OUTCOME_REQUEUE),
        ("outcome: uncertain", line::OUTCOME_UNCERTAIN),
        ("outcome: history", line::OUTCOME_EVENT),
        ("reconcile: idMessage taken", line::ID_MESSAGE_TAKEN),
        ("status counts", instances::COUNTS),
        ("status oldest queued", instances::OLDEST_QUEUED),
        ("expiry", maintenance::DUE_FOR_EXPIRY),
        ("one message", messages::ONE_MESSAGE),
        ("position: line ends", messages::LINE_ENDS),
        ("position: cards ahead", messages::CARDS_AHEAD),
        ("position: cards behind", messages::CARDS_BEHIND),
    ]
}

#[cfg(test)]
mod tests;
