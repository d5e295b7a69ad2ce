//! The drain's side of the store: the head of an instance's line, the start of an
//! attempt and the recording of its outcome, each one transaction.
//!
//! A card is `sending` from the commit *before* its request goes out until its outcome
//! is recorded, so after a crash every `sending` card is one whose request may have
//! reached the API: the drain reconciles it before sending anything else.

use sqlx::SqliteConnection;

use super::messages::MESSAGE_COLUMNS;
use super::{MessageRow, Store, StoreError};

/// What became of an attempt, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcomeRecord {
    /// The API took the card: `sent` with its idMessage.
    Sent { id_message: String },
    /// Found in the API's journal after an uncertain attempt.
    Reconciled { id_message: String },
    /// Rejected for good (e.g. 400): `failed` with the API's text.
    Failed {
        error: String,
        http_status: Option<u16>,
    },
    /// Surely not taken: back to `queued`, keeping its place at the head.
    Requeue {
        error: String,
        http_status: Option<u16>,
    },
    /// May have been taken: stays `sending` until reconciled.
    Uncertain {
        error: String,
        http_status: Option<u16>,
    },
}

/// An attempt whose outcome is unknown, as the reconciler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UncertainCard {
    pub id: String,
    pub chat_id: String,
    pub phone: i64,
    pub attempt_started_at: i64,
}

pub(super) async fn add_event(
    conn: &mut SqliteConnection,
    id: &str,
    at: i64,
    event: &str,
    attempt: Option<i64>,
    http_status: Option<u16>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (message_seq, at, event, attempt, http_status, detail)
         SELECT seq, ?2, ?3, ?4, ?5, ?6 FROM messages WHERE id = ?1",
    )
    .bind(id)
    .bind(at)
    .bind(event)
    .bind(attempt)
    .bind(http_status)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The card in flight on an instance (state `sending`), if any: it must be resolved
    /// before anything else goes out.
    pub async fn in_flight(&self, instance: &str) -> Result<Option<UncertainCard>, StoreError> {
        let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, chat_id, phone, attempt_started_at FROM messages
             WHERE instance = ?1 AND state = 'sending' ORDER BY line_seq LIMIT 1",
        )
        .bind(instance)
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(|(id, chat_id, phone, started)| UncertainCard {
            id,
            chat_id,
            phone,
            attempt_started_at: started.unwrap_or(0),
        }))
    }

    /// The next queued card of an instance (FIFO by place in line).
    pub async fn head_of_line(&self, instance: &str) -> Result<Option<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE instance = ?1 AND state = 'queued' ORDER BY line_seq LIMIT 1"
        );
        Ok(sqlx::query_as(&sql)
            .bind(instance)
            .fetch_optional(&self.write)
            .await?)
    }

    /// Marks the card `sending` and the instance's last send time, committed before the
    /// request goes out. Returns the attempt number, or Conflict if the card left the
    /// queue meanwhile (cancelled, expired).
    pub async fn begin_attempt(
        &self,
        id: &str,
        instance: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.write.begin().await?;
        let attempt: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET state = 'sending', attempts = attempts + 1, attempt_started_at = ?2
             WHERE id = ?1 AND state = 'queued' RETURNING attempts",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(attempt) = attempt else {
            return Err(StoreError::Conflict("no longer queued".into()));
        };
        sqlx::query(
            "INSERT INTO instances (name, last_send_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_send_at = ?2",
        )
        .bind(instance)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        add_event(&mut tx, id, now, "attempt", Some(attempt), None, None).await?;
        tx.commit().await?;
        Ok(attempt)
    }

    /// Records the outcome of the card's current attempt.
    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: &SendOutcomeRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        let (event, status, detail) = match outcome {
            SendOutcomeRecord::Sent { id_message }
            | SendOutcomeRecord::Reconciled { id_message } => {
                sqlx::query(
                    "UPDATE messages SET state = 'sent', id_message = ?2, sent_at = ?3,
                         ended_at = ?3, last_error = NULL WHERE id = ?1 AND state = 'sending'",
                )
                .bind(id)
                .bind(id_message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let event = match outcome {
                    SendOutcomeRecord::Sent { .. } => "sent",
                    _ => "reconciled",
                };
                (event, Some(200), Some(id_message.as_str()))
            }
            SendOutcomeRecord::Failed { error, http_status } => {
                sqlx::query(
                    "UPDATE messages SET state = 'failed', last_error = ?2, ended_at = ?3
                     WHERE id = ?1 AND state = 'sending'",
                )
                .bind(id)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                ("failed", *http_status, Some(error.as_str()))
            }
            SendOutcomeRecord::Requeue { error, http_status } => {
                sqlx::query(
                    "UPDATE messages SET state = 'queued', last_error = ?2
                     WHERE id = ?1 AND state = 'sending'",
                )
                .bind(id)
                .bind(error)
                .execute(&mut *tx)
                .await?;
                ("requeued", *http_status, Some(error.as_str()))
            }
            SendOutcomeRecord::Uncertain { error, http_status } => {
                sqlx::query(
                    "UPDATE messages SET last_error = ?2 WHERE id = ?1 AND state = 'sending'",
                )
                .bind(id)
                .bind(error)
                .execute(&mut *tx)
                .await?;
                ("uncertain", *http_status, Some(error.as_str()))
            }
        };
        add_event(&mut tx, id, now, event, None, status, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether an idMessage is already stored for some card (a journal entry matches
    /// at most one card).
    pub async fn id_message_taken(&self, id_message: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM messages WHERE id_message = ?1 LIMIT 1")
                .bind(id_message)
                .fetch_optional(&self.write)
                .await?;
        Ok(found.is_some())
    }
}
