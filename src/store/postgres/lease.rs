//! One drainer per instance across every daemon sharing the database, for now with a
//! session advisory lock per instance (`pg_try_advisory_lock`) held on a connection of
//! its own: the daemon that holds it drains the instance, the others serve its cards
//! to the API but send nothing. PostgreSQL drops the lock when that session ends (the
//! daemon died, the connection broke), and another daemon takes it at its next try.
//!
//! This is the whole of the interface the drain sees ([`Leases::try_lead`]); a lease
//! with an expiry on the database's clock and an epoch (docs/api.md §10) replaces it
//! behind the same method.

use std::collections::HashMap;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;

/// Takes the instance's lock if no other session holds it ($1 instance).
pub const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('contactq/' || $1, 0))";

/// Whether the session is still there (and so its locks).
pub const STILL_HERE: &str = "SELECT 1";

/// The connections that hold (or try for) each instance's lock.
pub(super) struct Leases {
    connect: PgConnectOptions,
    held: Mutex<HashMap<String, Session>>,
}

struct Session {
    conn: PgConnection,
    leading: bool,
}

impl Leases {
    pub(super) fn new(connect: PgConnectOptions) -> Leases {
        Leases {
            connect,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this daemon drains `instance`: it holds the lock (and its session is
    /// alive), or it took it now. A broken session is dropped: it lost its lock.
    pub(super) async fn try_lead(&self, instance: &str) -> bool {
        let mut held = self.held.lock().await;
        if let Some(session) = held.get_mut(instance) {
            let alive = sqlx::query(STILL_HERE)
                .execute(&mut session.conn)
                .await
                .is_ok();
            if !alive {
                if session.leading {
                    tracing::warn!(
                        instance,
                        "lost the database session that held the drain's lock"
                    );
                }
                held.remove(instance);
                return false;
            }
            if session.leading {
                return true;
            }
        } else {
            match self.connect.connect().await {
                Ok(conn) => {
                    held.insert(
                        instance.to_string(),
                        Session {
                            conn,
                            leading: false,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(instance, %error, "cannot connect to take the drain's lock");
                    return false;
                }
            }
        }
        let Some(session) = held.get_mut(instance) else {
            return false;
        };
        match sqlx::query_scalar::<_, bool>(TRY_LOCK)
            .bind(instance)
            .fetch_one(&mut session.conn)
            .await
        {
            Ok(true) => {
                session.leading = true;
                tracing::info!(instance, "this daemon drains the instance");
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(instance, %error, "cannot take the drain's lock");
                held.remove(instance);
                false
            }
        }
    }

    /// Ends every session, releasing their locks at once (at shutdown).
    pub(super) async fn release_all(&self) {
        let sessions: Vec<Session> = self.held.lock().await.drain().map(|(_, s)| s).collect();
        for session in sessions {
            let _ = session.conn.close().await;
        }
    }
}
