//! One drainer per instance across every daemon sharing the database: the drain lease
//! (docs/api.md §10), and the nodes table each daemon heartbeats into.
//!
//! A lease row names its holder (one daemon process), an epoch and an expiry. The
//! expiry is set and compared with `clock_timestamp()` only, the database's clock, so
//! no host's clock matters. The holder renews it every `lease`/3; anyone takes it once
//! it has expired, and every take-over (a re-take by the same process too) adds one to
//! the epoch.
//!
//! The holder's own deadline is the start of its last successful renewal + `lease` −
//! 1 s, measured on the boot clock ([`crate::clock::Clock::boot_ms`], which counts
//! suspended time). Past it [`Leases::token`] answers None: the drain writes no request
//! and every drain write that checks the lease ([`CHECK`], and the re-queue joined to the
//! lease row in [`super::line`]) is refused, so a
//! holder frozen past its lease (SIGSTOP, a VM pause) sends nothing on waking until it
//! has taken the lease again with a new epoch, and then it reconciles first.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;

use crate::clock::SharedClock;
use crate::store::error::StoreError;
use crate::store::model::{LeaseView, NodeSeen};

/// Takes or renews the lease of $1 for holder $2 (node $3) for $4 ms; $5 is the epoch
/// this holder renews (0 to take it afresh). Renewed (same epoch) only while unexpired
/// and still this holder's at that epoch; taken (epoch + 1) once expired. No row: another
/// holds it.
pub const TAKE: &str = "INSERT INTO leases AS l (instance, holder, node, epoch, expires_at)
    VALUES ($1, $2, $3, 1, clock_timestamp() + make_interval(secs => $4::float8 / 1000))
    ON CONFLICT (instance) DO UPDATE SET holder = excluded.holder, node = excluded.node,
      epoch = CASE WHEN l.holder = excluded.holder AND l.epoch = $5
                    AND l.expires_at > clock_timestamp() THEN l.epoch ELSE l.epoch + 1 END,
      expires_at = excluded.expires_at
    WHERE l.expires_at <= clock_timestamp() OR (l.holder = excluded.holder AND l.epoch = $5)
    RETURNING epoch";

/// Gives the lease up at once ($1 instance, $2 holder, $3 epoch).
pub const RELEASE: &str = "UPDATE leases SET expires_at = clock_timestamp()
    WHERE instance = $1 AND holder = $2 AND epoch = $3";

/// Inside a drain write's transaction: whether the lease of $1 is still holder $2's at
/// epoch $3 and unexpired. The row is share-locked, so a take-over commits after this
/// transaction, never during it.
pub const CHECK: &str = "SELECT 1 FROM leases WHERE instance = $1 AND holder = $2
    AND epoch = $3 AND expires_at > clock_timestamp() FOR SHARE";

/// Who drains $1 now: node and epoch, or none if the lease expired.
pub const VIEW: &str = "SELECT node, epoch, expires_at > clock_timestamp() AS live
    FROM leases WHERE instance = $1";

/// This node was here now ($1 node).
pub const HEARTBEAT: &str = "INSERT INTO nodes (name, last_seen) VALUES ($1, clock_timestamp())
    ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen";

/// Every node that ever shared the database, with its last heartbeat (Unix ms).
pub const NODES: &str = "SELECT name,
    (extract(epoch FROM last_seen) * 1000)::bigint AS last_seen FROM nodes ORDER BY name";

/// The channel on which a daemon tells the holder of a command it was given ($1 the
/// payload, `flush NAME`).
pub const NOTIFY: &str = "SELECT pg_notify('contactq', $1)";

/// The margin between the holder's own deadline and the lease's expiry.
const MARGIN_MS: i64 = 1000;

/// The leases a daemon holds, as a drain write joined to the lease rows binds them.
pub(super) struct HeldBy {
    pub holder: String,
    pub instances: Vec<String>,
    pub epochs: Vec<i64>,
}

/// This daemon's leases.
pub(super) struct Leases {
    pool: PgPool,
    /// This process, in the `holder` column: a restarted daemon is a new holder.
    holder: String,
    node: String,
    lease_ms: i64,
    clock: SharedClock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: HashMap<String, Held>,
    /// Instances this daemon keeps off until a boot time (given up after 401/403).
    off: HashMap<String, i64>,
    last_heartbeat: Option<i64>,
}

#[derive(Clone, Copy)]
struct Held {
    epoch: i64,
    /// Boot-clock ms when the last successful renewal started.
    renewed: i64,
}

impl Leases {
    pub(super) fn new(pool: PgPool, node: &str, lease_ms: i64, clock: SharedClock) -> Leases {
        Leases {
            pool,
            holder: ulid::Ulid::new().to_string(),
            node: node.to_string(),
            lease_ms,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    pub(super) fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    pub(super) fn holder(&self) -> &str {
        &self.holder
    }

    /// The epoch at which this daemon drains `instance` now, renewing or taking the
    /// lease when due; None when another holds it (or the database cannot be reached
    /// and the own deadline has passed).
    pub(super) async fn try_lead(&self, instance: &str) -> Option<i64> {
        let now = self.clock.boot_ms();
        let (mine, heartbeat_due) = {
            let state = self.state.lock().expect("lease state");
            if state.off.get(instance).is_some_and(|until| *until > now) {
                return None;
            }
            let held = state.held.get(instance).copied();
            if let Some(h) = held {
                if now < h.renewed + self.lease_ms / 3 {
                    return Some(h.epoch);
                }
            }
            let due = state
                .last_heartbeat
                .is_none_or(|at| now >= at + self.lease_ms / 3);
            (held, due)
        };
        if heartbeat_due {
            self.heartbeat().await;
        }
        // Past the own deadline the epoch is not renewed: the lease is taken afresh.
        let renewing = mine
            .filter(|h| now < self.deadline(h))
            .map_or(0, |h| h.epoch);
        let started = self.clock.boot_ms();
        let taken = sqlx::query_scalar::<_, i64>(TAKE)
            .bind(instance)
            .bind(&self.holder)
            .bind(&self.node)
            .bind(self.lease_ms as f64)
            .bind(renewing)
            .fetch_optional(&self.pool)
            .await;
        let mut state = self.state.lock().expect("lease state");
        match taken {
            Ok(Some(epoch)) => {
                if mine.map(|h| h.epoch) != Some(epoch) {
                    tracing::info!(instance, epoch, "this daemon drains the instance");
                }
                state.held.insert(
                    instance.to_string(),
                    Held {
                        epoch,
                        renewed: started,
                    },
                );
                Some(epoch)
            }
            Ok(None) => {
                if state.held.remove(instance).is_some() {
                    tracing::warn!(instance, "the drain lease is another daemon's now");
                }
                None
            }
            Err(error) => {
                tracing::warn!(instance, %error, "cannot renew the drain lease");
                let now = self.clock.boot_ms();
                match state.held.get(instance) {
                    Some(h) if now < self.deadline(h) => Some(h.epoch),
                    _ => None,
                }
            }
        }
    }

    /// The instances whose lease this daemon holds now.
    pub(super) fn held_instances(&self) -> Vec<String> {
        let state = self.state.lock().expect("lease state");
        state.held.keys().cloned().collect()
    }

    /// The holder's own deadline for a lease renewed at `h.renewed`.
    fn deadline(&self, h: &Held) -> i64 {
        h.renewed + self.lease_ms - MARGIN_MS
    }

    /// The epoch of `instance`'s lease, while this daemon holds it and its own deadline
    /// has not passed: a request may be written, a drain write may be tried.
    pub(super) fn token(&self, instance: &str) -> Option<i64> {
        let now = self.clock.boot_ms();
        let state = self.state.lock().expect("lease state");
        state
            .held
            .get(instance)
            .filter(|h| now < self.deadline(h))
            .map(|h| h.epoch)
    }

    /// Every lease this daemon may write under now, for a statement joined to the
    /// lease rows.
    pub(super) fn held_by(&self) -> HeldBy {
        let now = self.clock.boot_ms();
        let state = self.state.lock().expect("lease state");
        let (instances, epochs) = state
            .held
            .iter()
            .filter(|(_, h)| now < self.deadline(h))
            .map(|(name, h)| (name.clone(), h.epoch))
            .unzip();
        HeldBy {
            holder: self.holder.clone(),
            instances,
            epochs,
        }
    }

    /// Gives `instance`'s lease up and keeps off it for `off_ms` (the instance refuses
    /// this daemon's key: another daemon may do better).
    pub(super) async fn give_up(&self, instance: &str, off_ms: i64) {
        let held = {
            let mut state = self.state.lock().expect("lease state");
            state
                .off
                .insert(instance.to_string(), self.clock.boot_ms() + off_ms);
            state.held.remove(instance)
        };
        if let Some(h) = held {
            self.release(instance, h.epoch).await;
        }
    }

    /// Gives every lease up (SIGTERM): another daemon takes them at once.
    pub(super) async fn release_all(&self) {
        let held: Vec<(String, Held)> = {
            let mut state = self.state.lock().expect("lease state");
            state.held.drain().collect()
        };
        for (instance, h) in held {
            self.release(&instance, h.epoch).await;
        }
    }

    async fn release(&self, instance: &str, epoch: i64) {
        let released = sqlx::query(RELEASE)
            .bind(instance)
            .bind(&self.holder)
            .bind(epoch)
            .execute(&self.pool)
            .await;
        match released {
            Ok(_) => tracing::info!(instance, epoch, "drain lease released"),
            Err(error) => tracing::warn!(instance, %error, "could not release the drain lease"),
        }
    }

    async fn heartbeat(&self) {
        let now = self.clock.boot_ms();
        match sqlx::query(HEARTBEAT)
            .bind(&self.node)
            .execute(&self.pool)
            .await
        {
            Ok(_) => self.state.lock().expect("lease state").last_heartbeat = Some(now),
            Err(error) => tracing::warn!(%error, "could not record this node's heartbeat"),
        }
    }
}

/// Whether the lease of `instance` is still `holder`'s at `epoch` (in a transaction).
pub(super) async fn check(
    tx: &mut sqlx::PgConnection,
    instance: &str,
    holder: &str,
    epoch: i64,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(CHECK)
        .bind(instance)
        .bind(holder)
        .bind(epoch)
        .fetch_optional(tx)
        .await?
        .is_some())
}

/// Who drains `instance` now, as the database says.
pub(super) async fn view(pool: &PgPool, instance: &str) -> Result<LeaseView, StoreError> {
    let row: Option<(String, i64, bool)> = sqlx::query_as(VIEW)
        .bind(instance)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some((node, epoch, live)) => LeaseView {
            drained_by: live.then_some(node),
            epoch: Some(epoch),
        },
        None => LeaseView::default(),
    })
}

/// The nodes sharing the database.
pub(super) async fn nodes(pool: &PgPool) -> Result<Vec<NodeSeen>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(NODES).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(name, last_seen_ms)| NodeSeen { name, last_seen_ms })
        .collect())
}

/// Tells every daemon on the database that `instance` was asked to flush (the holder acts).
pub(super) async fn notify_flush(pool: &PgPool, instance: &str) -> Result<(), StoreError> {
    sqlx::query(NOTIFY)
        .bind(format!("flush {instance}"))
        .execute(pool)
        .await?;
    Ok(())
}

/// Listens for the flushes given to other daemons; calls `flush(instance)` for each.
/// PostgreSQL delivers a NOTIFY within milliseconds; a lost connection is re-made.
pub(super) async fn listen_flushes(pool: PgPool, flush: impl Fn(&str) + Send + 'static) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for other daemons' commands");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen("contactq").await {
            tracing::warn!(%error, "cannot listen for other daemons' commands");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        while let Ok(note) = listener.recv().await {
            if let Some(instance) = note.payload().strip_prefix("flush ") {
                flush(instance);
            }
        }
    }
}
