//! Time-driven upkeep: expiry of queued cards past their deadline, and retention
//! (`keep_done`) of ended ones, deleted in small batches so no transaction is long.

use super::{Store, StoreError};

/// Rows deleted per retention transaction.
const RETENTION_BATCH: i64 = 500;

impl Store {
    /// Expires every queued card whose deadline has passed; returns how many.
    pub async fn expire_due(&self, now: i64) -> Result<u64, StoreError> {
        let _gate = self.gate().await;
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO events (message_seq, at, event, detail)
             SELECT seq, ?1, 'expired', 'not sent within max_age' FROM messages
             WHERE state = 'queued' AND expires_at <= ?1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let expired = sqlx::query(
            "UPDATE messages SET state = 'expired', ended_at = ?1
             WHERE state = 'queued' AND expires_at <= ?1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(expired)
    }

    /// The earliest deadline among queued cards, to know when to wake for expiry.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT expires_at FROM messages WHERE state = 'queued' ORDER BY expires_at LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?)
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
