//! Per-instance state that outlives a restart (paused, quota hold, last send time) and
//! the per-state counts behind `status`.

use std::collections::HashMap;

use super::{Store, StoreError};

/// The persisted state of one instance's line.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct InstanceRow {
    pub name: String,
    pub paused: bool,
    pub last_send_at: Option<i64>,
    pub hold_until: Option<i64>,
    pub hold_reason: Option<String>,
}

/// Counts of one instance's messages by state, and its oldest queued card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceCounts {
    pub by_state: HashMap<String, i64>,
    pub oldest_queued_at: Option<i64>,
}

impl InstanceCounts {
    pub fn get(&self, state: &str) -> i64 {
        self.by_state.get(state).copied().unwrap_or(0)
    }
}

/// `status`: the trigger-kept counts of one instance (?1).
pub const COUNTS: &str = "SELECT state, n FROM counts WHERE instance = ?1";

/// `status`: the oldest queued card of an instance (?1), the head of its line; a
/// retried card counts from its retry (it went back in line as if enqueued then).
pub const OLDEST_QUEUED: &str = "SELECT COALESCE(requeued_at, enqueued_at) FROM messages
    WHERE instance = ?1 AND state = 'queued' ORDER BY line_seq LIMIT 1";

impl Store {
    pub async fn instance(&self, name: &str) -> Result<InstanceRow, StoreError> {
        let row: Option<InstanceRow> = sqlx::query_as(
            "SELECT name, paused, last_send_at, hold_until, hold_reason FROM instances WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.unwrap_or_else(|| InstanceRow {
            name: name.to_string(),
            ..InstanceRow::default()
        }))
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), StoreError> {
        let gate = self.gate().await;
        sqlx::query(
            "INSERT INTO instances (name, paused) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET paused = ?2",
        )
        .bind(name)
        .bind(paused)
        .execute(&self.write)
        .await?;
        drop(gate);
        if !paused {
            // `resume` also releases a quota hold (SPEC §6: "or until `contactq resume`").
            self.set_hold(name, None, None).await?;
        }
        Ok(())
    }

    /// Holds the line until `until` (ms) for `reason`, or releases it with None.
    pub async fn set_hold(
        &self,
        name: &str,
        until: Option<i64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let _gate = self.gate().await;
        sqlx::query(
            "INSERT INTO instances (name, hold_until, hold_reason) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET hold_until = ?2, hold_reason = ?3",
        )
        .bind(name)
        .bind(until)
        .bind(reason)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Counts by state for one instance, from the trigger-kept `counts` table.
    pub async fn counts(&self, name: &str) -> Result<InstanceCounts, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(COUNTS)
            .bind(name)
            .fetch_all(&self.read)
            .await?;
        let oldest_queued_at: Option<i64> = sqlx::query_scalar(OLDEST_QUEUED)
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        Ok(InstanceCounts {
            by_state: rows.into_iter().collect(),
            oldest_queued_at,
        })
    }
}
