//! Time-driven upkeep: expiry of queued cards past their deadline, and retention
//! (`keep_done`) of ended ones, deleted in small batches so no transaction is long.

use super::{Store, StoreError};

/// Rows deleted per retention transaction.
const RETENTION_BATCH: i64 = 500;

/// Cards expired per transaction.
pub const EXPIRY_BATCH: i64 = 1000;

/// The queued cards past their deadline (?1 now, ?2 how many), oldest deadline first.
pub const DUE_FOR_EXPIRY: &str = "SELECT seq FROM messages
    WHERE state = 'queued' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2";

impl Store {
    /// Expires one batch of queued cards whose deadline has passed, oldest deadline
    /// first; returns how many per instance. Call until fewer than [`EXPIRY_BATCH`]
    /// went, so a million cards expiring at once never make one long transaction.
    pub async fn expire_due(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let _gate = self.gate().await;
        let mut tx = self.write.begin().await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS expiring (seq INTEGER PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM expiring")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("INSERT INTO expiring {DUE_FOR_EXPIRY}"))
            .bind(now)
            .bind(EXPIRY_BATCH)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO events (message_seq, at, event, detail)
             SELECT seq, ?1, 'expired', 'not sent within max_age' FROM expiring",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let instances: Vec<(String,)> = sqlx::query_as(
            "UPDATE messages SET state = 'expired', ended_at = ?1
             WHERE seq IN (SELECT seq FROM expiring) RETURNING instance",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut by_instance: std::collections::BTreeMap<String, u64> = Default::default();
        for (instance,) in instances {
            *by_instance.entry(instance).or_default() += 1;
        }
        Ok(by_instance.into_iter().collect())
    }

    /// Deletes one batch of cards that ended before `cutoff`, with their events and
    /// idempotency keys; returns how many cards went. Call until it returns 0.
    pub async fn delete_ended_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        let _gate = self.gate().await;
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY, instance TEXT, key TEXT)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM doomed").execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO doomed SELECT seq, instance, idempotency_key FROM messages
             WHERE ended_at IS NOT NULL AND ended_at < ?1 ORDER BY ended_at LIMIT ?2",
        )
        .bind(cutoff)
        .bind(RETENTION_BATCH)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM events WHERE message_seq IN (SELECT seq FROM doomed)")
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM messages WHERE seq IN (SELECT seq FROM doomed)")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // A key is forgotten once none of its messages is kept any more.
        sqlx::query(
            "DELETE FROM idempotency WHERE (instance, key) IN
                 (SELECT DISTINCT instance, key FROM doomed WHERE key IS NOT NULL)
             AND NOT EXISTS (SELECT 1 FROM messages m
                 WHERE m.instance = idempotency.instance AND m.idempotency_key = idempotency.key)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
