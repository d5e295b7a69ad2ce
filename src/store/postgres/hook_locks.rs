//! One daemon runs each hook when several share the database (docs/api.md §11): a
//! session advisory lock per hook name (`pg_try_advisory_lock`), all of one daemon's
//! held on one connection of its own. The daemon holding a hook's lock delivers its
//! events; the others wait and try again. PostgreSQL drops the locks when that session
//! ends (the daemon died, the connection broke), and another daemon takes them at its
//! next try, reading the hook's cursor from the database.
//!
//! Kept apart from the drains' locks ([`super::lease`], which a lease with an epoch
//! replaces) so that change leaves the hooks alone; the keys are in another namespace
//! (`contactq-hook/NAME`), so they never collide with an instance's.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;

/// Takes the hook's lock if no other session holds it ($1 hook name).
pub const TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('contactq-hook/' || $1, 0))";

/// Whether the session is still there (and so its locks).
pub const STILL_HERE: &str = "SELECT 1";

/// How long a session that answered counts as alive without asking again.
const TRUST_FOR: Duration = Duration::from_millis(300);

/// This daemon's session for the hooks' locks, and the hooks it holds.
pub(super) struct HookLocks {
    connect: PgConnectOptions,
    session: Mutex<Option<Session>>,
}

struct Session {
    conn: PgConnection,
    held: HashSet<String>,
    answered: Instant,
}

impl HookLocks {
    pub(super) fn new(connect: PgConnectOptions) -> HookLocks {
        HookLocks {
            connect,
            session: Mutex::new(None),
        }
    }

    /// Whether this daemon runs hook `name`: it holds the lock (and its session is
    /// alive), or it took it now. A broken session is dropped: it lost every lock.
    pub(super) async fn try_hold(&self, name: &str) -> bool {
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
                    tracing::warn!(hook = name, %error, "cannot connect to take the hook's lock");
                    return false;
                }
            }
        }
        let session = guard.as_mut().expect("a session");
        if session.answered.elapsed() > TRUST_FOR {
            if sqlx::query(STILL_HERE)
                .execute(&mut session.conn)
                .await
                .is_err()
            {
                *guard = None;
                return false;
            }
            session.answered = Instant::now();
        }
        if session.held.contains(name) {
            return true;
        }
        match sqlx::query_scalar::<_, bool>(TRY_LOCK)
            .bind(name)
            .fetch_one(&mut session.conn)
            .await
        {
            Ok(taken) => {
                session.answered = Instant::now();
                if taken {
                    session.held.insert(name.to_string());
                    tracing::info!(hook = name, "this daemon runs the hook");
                }
                taken
            }
            Err(error) => {
                tracing::warn!(hook = name, %error, "cannot take the hook's lock");
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
