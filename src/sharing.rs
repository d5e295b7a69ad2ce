//! What sharing one PostgreSQL database with other daemons takes, outside the store:
//! the record of this daemon's configuration they must all match, `contactq
//! adopt-config` that replaces it, and `contactq migrate-store` that moves a SQLite
//! queue into PostgreSQL (docs/api.md §10).

use std::path::Path;
use std::time::Duration;

use crate::clock::duration_ms;
use crate::config::Settings;
use crate::daemon::{lock_database, DaemonError};
use crate::store::{Store, StoreOptions};

/// `contactq adopt-config`: replaces the shared database's record with this
/// configuration's `[instances]` and `[queue]` keys. Refused for a SQLite file.
pub async fn adopt_config(settings: &Settings) -> Result<String, DaemonError> {
    if settings.daemon.database.sqlite_path().is_some() {
        return Err(DaemonError::Refused(
            "adopt-config is for a daemon.database shared in PostgreSQL; a SQLite file \
             records no configuration"
                .into(),
        ));
    }
    let store = Store::open_database(
        &settings.daemon.database,
        &settings.daemon.node,
        StoreOptions::default(),
    )
    .await?;
    let adopted = store.check_record(&record_of(settings), true).await;
    store.close().await;
    adopted?;
    Ok(format!(
        "recorded this configuration ({} instance{}) in {}: every daemon sharing it must now match it",
        settings.instances.len(),
        if settings.instances.len() == 1 { "" } else { "s" },
        settings.daemon.database
    ))
}

/// `contactq migrate-store`: copies the SQLite database at `from` into the empty
/// PostgreSQL database `to`, holding the daemon's lock on `from` meanwhile (refused
/// while a daemon runs on it), and marks `from` as moved.
pub async fn migrate_store(from: &Path, to: &str) -> Result<String, DaemonError> {
    if !crate::config::is_postgres_url(to) {
        return Err(DaemonError::Refused(format!(
            "--to must be a postgres:// URL, not '{to}'"
        )));
    }
    let target = crate::config::PostgresTarget::parse("--to", to, None)
        .map_err(|e| DaemonError::Refused(e.to_string()))?;
    if !from.is_file() {
        return Err(DaemonError::Refused(format!(
            "--from {}: no such SQLite database",
            from.display()
        )));
    }
    let _lock = lock_database(from).map_err(|e| match e {
        DaemonError::AlreadyRunning(_) => DaemonError::AlreadyRunning(format!(
            "a contactq daemon is running on {}: stop it first",
            from.display()
        )),
        other => other,
    })?;
    let report = crate::store::migrate::migrate(from, &target).await?;
    Ok(format!(
        "moved {} to {}: {} cards, {} history lines, {} idempotency keys, {} lines, {} chat holds, \
         {} stream events, {} consumers; the SQLite file is marked as moved (set \
         daemon.database to the new home)",
        from.display(),
        target.redacted(),
        report.cards,
        report.events,
        report.keys,
        report.instances,
        report.chat_holds,
        report.stream,
        report.consumers
    ))
}

/// What the database shared by several daemons records of this daemon's configuration
/// (docs/api.md §10): the instances and the `[queue]` keys, never a token.
pub fn record_of(settings: &Settings) -> crate::store::Record {
    let ms = |d: Duration| duration_ms(d).to_string();
    let q = &settings.queue;
    crate::store::Record {
        instances: settings
            .instances
            .values()
            .map(|i| {
                let recorded = crate::store::RecordedInstance {
                    id_instance: i.id_instance.clone(),
                    api_url: i.api_url.clone(),
                    send_delay_ms: duration_ms(i.send_delay),
                };
                (i.name.clone(), recorded)
            })
            .collect(),
        queue: [
            ("max_age", ms(q.max_age)),
            ("state_poll", ms(q.state_poll)),
            ("retry_initial", ms(q.retry_initial)),
            ("retry_max", ms(q.retry_max)),
            ("reconcile_lag", ms(q.reconcile_lag)),
            ("quota_retry", ms(q.quota_retry)),
            ("keep_done", ms(q.keep_done)),
            ("request_timeout", ms(q.request_timeout)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), format!("{v}ms")))
        .collect(),
    }
}
