//! Per-instance state that outlives a restart (paused, quota hold, per-chat quota
//! holds, last send time) and the per-state counts behind `status`.

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

/// A chat held by a chats-quota 466: its cards step aside until `until` (Unix ms).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChatHold {
    pub chat_id: String,
    pub until: i64,
    pub reason: Option<String>,
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
            // `resume` also releases the quota holds, the line's and every chat's
            // ("held for `quota_retry` or until `contactq resume`", docs/api.md).
            self.set_hold(name, None, None).await?;
            self.clear_chat_holds(name).await?;
        }
        Ok(())
    }

    /// The chats of an instance held by a chats-quota 466.
    pub async fn chat_holds(&self, name: &str) -> Result<Vec<ChatHold>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT chat_id, until, reason FROM chat_holds WHERE instance = ?1 ORDER BY chat_id",
        )
        .bind(name)
        .fetch_all(&self.read)
        .await?)
    }

    /// Holds one chat of an instance until `until` (ms).
    pub async fn set_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let _gate = self.gate().await;
        sqlx::query(
            "INSERT INTO chat_holds (instance, chat_id, until, reason) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (instance, chat_id) DO UPDATE SET until = ?3, reason = ?4",
        )
        .bind(name)
        .bind(chat_id)
        .bind(until)
        .bind(reason)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Releases one chat's hold, if it is still the one that ends at `until`.
    pub async fn end_chat_hold(
        &self,
        name: &str,
        chat_id: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        let _gate = self.gate().await;
        sqlx::query("DELETE FROM chat_holds WHERE instance = ?1 AND chat_id = ?2 AND until = ?3")
            .bind(name)
            .bind(chat_id)
            .bind(until)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Releases every chat hold of an instance (`resume`).
    pub async fn clear_chat_holds(&self, name: &str) -> Result<(), StoreError> {
        let _gate = self.gate().await;
        sqlx::query("DELETE FROM chat_holds WHERE instance = ?1")
            .bind(name)
            .execute(&self.write)
            .await?;
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
