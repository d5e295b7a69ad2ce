//! The `[instances]` record: every daemon sharing a database must have the same
//! instances (names, `id_instance`, `api_url`, `send_delay`) and the `[queue]` keys that
//! shape a line (docs/api.md §10). The first daemon writes the record; a later one whose
//! configuration differs is refused, the first difference named; `contactq
//! adopt-config` replaces it. Tokens are never part of it.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::store::error::StoreError;

/// What is recorded of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInstance {
    pub id_instance: String,
    pub api_url: String,
    pub send_delay_ms: i64,
}

/// A daemon's `[instances]` and line-shaping `[queue]` keys, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub instances: BTreeMap<String, RecordedInstance>,
    pub queue: BTreeMap<String, String>,
}

pub const READ_INSTANCES: &str =
    "SELECT instance, id_instance, api_url, send_delay_ms FROM config_record";
pub const READ_QUEUE: &str = "SELECT key, value FROM config_queue";
pub const CLEAR_INSTANCES: &str = "DELETE FROM config_record";
pub const CLEAR_QUEUE: &str = "DELETE FROM config_queue";
pub const WRITE_INSTANCE: &str = "INSERT INTO config_record
    (instance, id_instance, api_url, send_delay_ms) VALUES ($1, $2, $3, $4)";
pub const WRITE_QUEUE: &str = "INSERT INTO config_queue (key, value) VALUES ($1, $2)";
/// One record-keeper at a time: the check and the write of the first record happen
/// under this transaction-scoped lock, so two daemons starting together agree.
pub const LOCK_RECORD: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('contactq/record', 0))";

/// Compares `mine` with the recorded one: writes it if none is recorded or `adopt`;
/// Refused naming the first difference otherwise.
pub(super) async fn check(pool: &PgPool, mine: &Record, adopt: bool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_RECORD).execute(&mut *tx).await?;
    let instances: Vec<(String, String, String, i64)> =
        sqlx::query_as(READ_INSTANCES).fetch_all(&mut *tx).await?;
    let queue: Vec<(String, String)> = sqlx::query_as(READ_QUEUE).fetch_all(&mut *tx).await?;
    let recorded = Record {
        instances: instances
            .into_iter()
            .map(|(name, id_instance, api_url, send_delay_ms)| {
                let i = RecordedInstance {
                    id_instance,
                    api_url,
                    send_delay_ms,
                };
                (name, i)
            })
            .collect(),
        queue: queue.into_iter().collect(),
    };
    if !adopt && !recorded.instances.is_empty() {
        if let Some(difference) = first_difference(&recorded, mine) {
            return Err(StoreError::Refused(format!(
                "this daemon's configuration differs from the one recorded in the database \
                 shared by its other daemons: {difference}; make them agree, or run \
                 `contactq adopt-config` to record this one"
            )));
        }
        return Ok(());
    }
    sqlx::query(CLEAR_INSTANCES).execute(&mut *tx).await?;
    sqlx::query(CLEAR_QUEUE).execute(&mut *tx).await?;
    for (name, i) in &mine.instances {
        sqlx::query(WRITE_INSTANCE)
            .bind(name)
            .bind(&i.id_instance)
            .bind(&i.api_url)
            .bind(i.send_delay_ms)
            .execute(&mut *tx)
            .await?;
    }
    for (key, value) in &mine.queue {
        sqlx::query(WRITE_QUEUE)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The first difference between the recorded configuration and this daemon's, in
/// words naming the key; None if they agree.
pub fn first_difference(recorded: &Record, mine: &Record) -> Option<String> {
    for (name, theirs) in &recorded.instances {
        let Some(ours) = mine.instances.get(name) else {
            return Some(format!(
                "instances.{name} is recorded but not configured here"
            ));
        };
        if ours.id_instance != theirs.id_instance {
            return Some(format!(
                "instances.{name}.id_instance is {} here, {} in the record",
                ours.id_instance, theirs.id_instance
            ));
        }
        if ours.api_url != theirs.api_url {
            return Some(format!(
                "instances.{name}.api_url is {} here, {} in the record",
                ours.api_url, theirs.api_url
            ));
        }
        if ours.send_delay_ms != theirs.send_delay_ms {
            return Some(format!(
                "instances.{name}.send_delay is {}ms here, {}ms in the record",
                ours.send_delay_ms, theirs.send_delay_ms
            ));
        }
    }
    if let Some(name) = mine
        .instances
        .keys()
        .find(|n| !recorded.instances.contains_key(*n))
    {
        return Some(format!(
            "instances.{name} is configured here but not recorded"
        ));
    }
    for (key, theirs) in &recorded.queue {
        match mine.queue.get(key) {
            Some(ours) if ours == theirs => {}
            Some(ours) => {
                return Some(format!(
                    "queue.{key} is {ours} here, {theirs} in the record"
                ))
            }
            None => return Some(format!("queue.{key} is recorded but not set here")),
        }
    }
    mine.queue
        .keys()
        .find(|k| !recorded.queue.contains_key(*k))
        .map(|key| format!("queue.{key} is set here but not recorded"))
}
