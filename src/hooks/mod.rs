//! Hooks: the daemon's named consumers of the event stream (`[hooks.NAME]`, docs/api.md
//! §11), one task each, apart from the drains, so a failing or hanging hook never holds
//! a line.
//!
//! Each hook has a cursor in the database (through the write thread): every event it
//! takes up to the cursor was delivered. The task reads the events after the cursor in
//! `seq` order and delivers them one at a time ([`Deliverer`]: [`exec`] or [`webhook`]);
//! the cursor moves on only after a delivery succeeded (exit 0, a 2xx), so a crash or
//! `kill -9` at any point delivers the event again after the restart: at least once.
//! On a PostgreSQL database several daemons share, each hook runs in one daemon at a
//! time (`Store::try_run_hook`, a lock per hook name); the others look every
//! [`OTHER_DAEMON_LOOK`] and take over, from the cursor in the database, when that
//! daemon is gone. A failure is recorded (`status`, metrics) and retried after a back-off that doubles
//! from `retry_initial` to `retry_max`. Events the hook does not take move the cursor
//! on without a delivery. A new hook starts at the newest event as the daemon starts
//! ([`register`], before the socket serves): it is told of what happens from then on.
//!
//! `contactq follow --consumer` runs the same [`Deliverer`] outside the daemon.

pub mod exec;
pub mod webhook;

use std::time::Duration;

use crate::config::{HookSettings, HookTarget};
use crate::event::EventKind;
use crate::protocol::EventView;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

/// Events read from the store at a time.
const PAGE: i64 = 200;
/// The wait after the store failed to answer.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How often a daemon that does not run a hook (another daemon on the shared
/// PostgreSQL database does) looks whether it should take it over.
const OTHER_DAEMON_LOOK: Duration = Duration::from_secs(1);

/// Delivers one event to an exec program or a webhook.
#[derive(Debug, Clone)]
pub struct Deliverer {
    pub target: HookTarget,
    pub timeout: Duration,
    http: reqwest::Client,
    secrets: Secrets,
}

impl Deliverer {
    pub fn new(target: HookTarget, timeout: Duration) -> Result<Deliverer, String> {
        Ok(Deliverer {
            target,
            timeout,
            http: webhook::client()?,
            secrets: Secrets::default(),
        })
    }

    /// The same deliverer, cutting `secrets` out of every error it reports (a hook's
    /// stderr is stored as its `lastError`, shown by `status` and logged).
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// One delivery of `event`: Ok once the program exited 0 or the URL answered 2xx.
    pub async fn deliver(&self, event: &EventView) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| format!("event {}: {e}", event.seq))?;
        let result = match &self.target {
            HookTarget::Exec(argv) => exec::run(argv, event, &body, self.timeout).await,
            HookTarget::Webhook { url, secret } => {
                webhook::post(&self.http, url, secret, event.seq, &body, self.timeout).await
            }
        };
        result.map_err(|error| self.secrets.clean(&error))
    }
}

/// Texts that must never reach a hook's recorded error: every instance's API token and
/// every webhook secret.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets of a daemon's configuration.
    pub fn of(settings: &crate::config::Settings) -> Secrets {
        let tokens = settings
            .instances
            .values()
            .map(|i| i.api_token.expose().to_string());
        let hook_secrets = settings.hooks.values().filter_map(|h| match &h.target {
            HookTarget::Webhook { secret, .. } => {
                Some(String::from_utf8_lossy(secret.expose()).into_owned())
            }
            HookTarget::Exec(_) => None,
        });
        Secrets(
            tokens
                .chain(hook_secrets)
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// `text` with every secret replaced by `***`.
    pub fn clean(&self, text: &str) -> String {
        self.0.iter().fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} kept out)", self.0.len())
    }
}

/// The wait before the next try after `failures` failures in a row.
pub fn back_off(initial: Duration, max: Duration, failures: u32) -> Duration {
    initial
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)))
        .min(max)
}

/// Starts one task per hook; each ends at shutdown.
pub fn spawn_all(
    hooks: impl Iterator<Item = HookSettings>,
    secrets: Secrets,
    store: &Store,
    shutdown: &Shutdown,
) -> Result<tokio::task::JoinSet<()>, String> {
    let mut tasks = tokio::task::JoinSet::new();
    for hook in hooks {
        let deliverer =
            Deliverer::new(hook.target.clone(), hook.timeout)?.with_secrets(secrets.clone());
        tasks.spawn(run(hook, deliverer, store.clone(), shutdown.clone()));
    }
    Ok(tasks)
}

/// One hook until shutdown.
async fn run(hook: HookSettings, deliverer: Deliverer, store: Store, mut shutdown: Shutdown) {
    let mut committed = store.subscribe_events();
    // Read from the store each time this daemon (re)takes the hook: while another
    // daemon on a shared database ran it, that one moved the cursor.
    let mut cursor: Option<i64> = None;
    loop {
        if !store.try_run_hook(&hook.name).await {
            if cursor.take().is_some() {
                tracing::info!(hook = %hook.name, "hook: another daemon runs it now");
            }
            tokio::select! {
                _ = tokio::time::sleep(OTHER_DAEMON_LOOK) => continue,
                _ = shutdown.recv() => return,
            }
        }
        let position = match cursor.as_mut() {
            Some(position) => position,
            None => match start(&hook.name, &store).await {
                Ok(position) => {
                    tracing::info!(hook = %hook.name, kind = hook.target.kind(), cursor = position, "hook started");
                    cursor.insert(position)
                }
                Err(error) => {
                    tracing::warn!(hook = %hook.name, %error, "hook: cannot read its cursor; will try again");
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_RETRY) => continue,
                        _ = shutdown.recv() => return,
                    }
                }
            },
        };
        committed.borrow_and_update();
        let step = tokio::select! {
            step = turn(&hook, &deliverer, &store, position) => step,
            _ = shutdown.recv() => return,
        };
        match step {
            Ok(true) => continue,
            Ok(false) => {
                tokio::select! {
                    changed = committed.changed() => if changed.is_err() { return },
                    // Another daemon may take the hook over meanwhile: look again.
                    _ = tokio::time::sleep(OTHER_DAEMON_LOOK) => {}
                    _ = shutdown.recv() => return,
                }
            }
            Err(error) => {
                tracing::warn!(hook = %hook.name, %error, "hook: the store did not answer; will try again");
                tokio::select! {
                    _ = tokio::time::sleep(STORE_RETRY) => {}
                    _ = shutdown.recv() => return,
                }
            }
        }
    }
}

/// The hook's cursor, created at the newest event the first time.
/// Gives hook `name` its cursor, at the newest event, unless it has one already.
pub async fn register(name: &str, store: &Store) -> Result<(), StoreError> {
    let last = store.stream_ends().await?.last;
    store.start_consumer(name, last).await
}

async fn start(name: &str, store: &Store) -> Result<i64, StoreError> {
    register(name, store).await?;
    match store.consumer(name).await? {
        Some(row) => Ok(row.cursor),
        None => Err(StoreError::database("the hook's cursor was not kept")),
    }
}

/// Delivers the next page of events after `cursor`; true if there may be more.
async fn turn(
    hook: &HookSettings,
    deliverer: &Deliverer,
    store: &Store,
    cursor: &mut i64,
) -> Result<bool, StoreError> {
    let ends = store.stream_ends().await?;
    if let Some(oldest) = ends.oldest.filter(|oldest| *cursor + 1 < *oldest) {
        let error = format!(
            "events {} to {} were deleted by retention (queue.keep_done) before delivery",
            *cursor + 1,
            oldest - 1
        );
        tracing::error!(hook = %hook.name, %error, "hook: events lost");
        store.consumer_failed(&hook.name, &error).await?;
        *cursor = oldest - 1;
        store.set_consumer_cursor(&hook.name, *cursor).await?;
    }
    let page = store.events_after(*cursor, None, PAGE).await?;
    let mut skipped = false;
    for event in &page {
        let view = match crate::api::event_view(event) {
            Ok(view) => view,
            Err(error) => {
                tracing::error!(hook = %hook.name, seq = event.seq, %error, "hook: an event cannot be read; skipped");
                *cursor = event.seq;
                skipped = true;
                continue;
            }
        };
        if !takes(hook, view.event) {
            *cursor = event.seq;
            skipped = true;
            continue;
        }
        if skipped {
            // So `status` shows where the hook waits while this delivery fails.
            store.set_consumer_cursor(&hook.name, *cursor).await?;
        }
        deliver_until_done(hook, deliverer, store, &view).await?;
        *cursor = event.seq;
        skipped = false;
        store.set_consumer_cursor(&hook.name, *cursor).await?;
    }
    if skipped {
        store.set_consumer_cursor(&hook.name, *cursor).await?;
    }
    crate::metrics::hook_lag(&hook.name, (ends.last - *cursor).max(0));
    Ok(page.len() as i64 == PAGE)
}

fn takes(hook: &HookSettings, kind: EventKind) -> bool {
    hook.events.contains(&kind)
}

/// Delivers `event`, retrying after each failure (recorded) until it succeeds.
async fn deliver_until_done(
    hook: &HookSettings,
    deliverer: &Deliverer,
    store: &Store,
    event: &EventView,
) -> Result<(), StoreError> {
    let mut failures = 0u32;
    loop {
        match deliverer.deliver(event).await {
            Ok(()) => {
                crate::metrics::hook_delivered(&hook.name);
                tracing::debug!(hook = %hook.name, seq = event.seq, "hook delivered");
                return Ok(());
            }
            Err(error) => {
                failures += 1;
                crate::metrics::hook_failed(&hook.name);
                let wait = back_off(hook.retry_initial, hook.retry_max, failures);
                tracing::warn!(hook = %hook.name, seq = event.seq, event = %event.event,
                    %error, retry_in_ms = wait.as_millis() as u64, "hook delivery failed");
                store.consumer_failed(&hook.name, &error).await?;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_the_first_wait_up_to_the_cap() {
        let s = Duration::from_secs;
        let waits: Vec<_> = (1..=6).map(|n| back_off(s(1), s(10), n)).collect();
        assert_eq!(waits, vec![s(1), s(2), s(4), s(8), s(10), s(10)]);
        assert_eq!(back_off(s(1), s(300), 1000), s(300));
    }
}
