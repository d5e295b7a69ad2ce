//! One drainer per instance across every daemon sharing the database, for now with a
//! session advisory lock per instance (`pg_try_advisory_lock`), all of one daemon's
//! held on one connection of their own: the daemon that holds an instance's lock drains
//! it, the others serve its cards to the API but send nothing. PostgreSQL drops the
//! locks when that session ends (the daemon died, the connection broke), and another
//! daemon takes them at its next try.
//!
//! This is the whole of the interface the drain sees ([`Leases::try_lead`]); a lease
//! with an expiry on the database's clock and an epoch (docs/api.md §10) replaces it
//! behind the same method.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;

/// Takes the instance's lock if no other session holds it ($1 instance).
pub const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('contactq/' || $1, 0))";

/// Whether the session is still there (and so its locks).
pub const STILL_HERE: &str = "SELECT 1";

/// How long a session that answered counts as alive without asking again: a lost
/// session is noticed this much later at most (its locks are then already another's).
const TRUST_FOR: Duration = Duration::from_millis(300);

/// This daemon's session for the locks, and the instances it holds.
pub(super) struct Leases {
    connect: PgConnectOptions,
    session: Mutex<Option<Session>>,
}

struct Session {
    conn: PgConnection,
    held: HashSet<String>,
    answered: Instant,
}

impl Leases {
    pub(super) fn new(connect: PgConnectOptions) -> Leases {
        Leases {
            connect,
            session: Mutex::new(None),
        }
    }

    /// Whether this daemon drains `instance`: it holds the lock (and its session is
    /// alive), or it took it now. A broken session is dropped: it lost every lock.
    pub(super) async fn try_lead(&self, instance: &str) -> bool {
        let mut guard = self.session.lock().await;
        if guard.is_none() {
            match self.connect.connect().await {
                Ok(conn) => {
                    *guard = Some(Session {
                        conn,
                        held: HashSet::new(),
                        answered: Instant::now(),
                    })
                }
                Err(error) => {
                    tracing::warn!(instance, %error, "cannot connect to take the drain's lock");
                    return false;
                }
            }
        }
        let session = guard.as_mut().expect("a session");
        if session.answered.elapsed() > TRUST_FOR {
            if let Err(error) = sqlx::query(STILL_HERE).execute(&mut session.conn).await {
                if !session.held.is_empty() {
                    tracing::warn!(%error, held = ?session.held, "lost the database session that held the drains' locks");
                }
                *guard = None;
                return false;
            }
            session.answered = Instant::now();
        }
        if session.held.contains(instance) {
            return true;
        }
        match sqlx::query_scalar::<_, bool>(TRY_LOCK)
            .bind(instance)
            .fetch_one(&mut session.conn)
            .await
        {
            Ok(taken) => {
                session.answered = Instant::now();
                if taken {
                    session.held.insert(instance.to_string());
                    tracing::info!(instance, "this daemon drains the instance");
                }
                taken
            }
            Err(error) => {
                tracing::warn!(instance, %error, "cannot take the drain's lock");
                *guard = None;
                false
            }
        }
    }

    /// Ends the session, releasing every lock at once (at shutdown).
    pub(super) async fn release_all(&self) {
        if let Some(session) = self.session.lock().await.take() {
            let _ = session.conn.close().await;
        }
    }
}
