//! The drain's side of the store: the head of an instance's line, the start of an
//! attempt and the recording of its outcome, each one transaction.
//!
//! A card is `sending` from the commit *before* its request goes out until its outcome
//! is recorded, so after a crash every `sending` card is one whose request may have
//! reached the API: the drain reconciles it before sending anything else.

use sqlx::SqliteConnection;
use tokio::sync::oneshot;

use super::writer::{Claim, Job};
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

/// The head of an instance's queued line (?1 instance, ?2 how many).
pub const HEAD_ROWS: &str = "SELECT id, instance, state, line_seq, chat_id, phone, body, \
    idempotency_key, peer_uid, enqueued_at, expires_at, attempts, attempt_started_at, \
    last_error, id_message, sent_at, ended_at, requeued_at FROM messages \
    WHERE instance = ?1 AND state = 'queued' ORDER BY line_seq LIMIT ?2";

/// The head of an instance's queued line without the cards of held chats (?1 instance,
/// ?2 how many, ?3 a JSON array of the held chat ids): used only while a chat is held.
pub const HEAD_ROWS_SKIPPING: &str = "SELECT id, instance, state, line_seq, chat_id, phone, \
    body, idempotency_key, peer_uid, enqueued_at, expires_at, attempts, attempt_started_at, \
    last_error, id_message, sent_at, ended_at, requeued_at FROM messages \
    WHERE instance = ?1 AND state = 'queued' \
    AND chat_id NOT IN (SELECT value FROM json_each(?3)) ORDER BY line_seq LIMIT ?2";

/// The card in flight on an instance (?1).
pub const IN_FLIGHT: &str = "SELECT id, chat_id, phone, attempt_started_at FROM messages
    WHERE instance = ?1 AND state = 'sending' ORDER BY line_seq LIMIT 1";

/// The claim of a card (?1 id, ?2 now): `sending`, the attempt counted.
pub const CLAIM: &str = "UPDATE messages SET state = 'sending', attempts = attempts + 1,
    attempt_started_at = ?2 WHERE id = ?1 AND state = 'queued' RETURNING attempts";

/// The claim's history line (?1 id, ?2 now, ?3 attempt).
pub const CLAIM_EVENT: &str = "INSERT INTO events (message_seq, at, event, attempt)
    SELECT seq, ?2, 'attempt', ?3 FROM messages WHERE id = ?1";

/// The instance's last send time, for pacing across restarts (?1 instance, ?2 now).
pub const LAST_SEND: &str = "INSERT INTO instances (name, last_send_at) VALUES (?1, ?2)
    ON CONFLICT (name) DO UPDATE SET last_send_at = excluded.last_send_at";

/// Outcome `sent` (?1 id, ?2 idMessage, ?3 now).
pub const OUTCOME_SENT: &str = "UPDATE messages SET state = 'sent', id_message = ?2, sent_at = ?3,
    ended_at = ?3, last_error = NULL WHERE id = ?1 AND state = 'sending'";

/// Outcome `failed` (?1 id, ?2 error, ?3 now).
pub const OUTCOME_FAILED: &str = "UPDATE messages SET state = 'failed', last_error = ?2,
    ended_at = ?3 WHERE id = ?1 AND state = 'sending'";

/// Outcome: back to `queued`, keeping its place (?1 id, ?2 error).
pub const OUTCOME_REQUEUE: &str = "UPDATE messages SET state = 'queued', last_error = ?2
    WHERE id = ?1 AND state = 'sending'";

/// Outcome: still uncertain (?1 id, ?2 error).
pub const OUTCOME_UNCERTAIN: &str =
    "UPDATE messages SET last_error = ?2 WHERE id = ?1 AND state = 'sending'";

/// An outcome's history line (?1 id, ?2 now, ?3 event, ?4 HTTP status, ?5 detail).
pub const OUTCOME_EVENT: &str = "INSERT INTO events (message_seq, at, event, http_status, detail)
    SELECT seq, ?2, ?3, ?4, ?5 FROM messages WHERE id = ?1";

/// Whether an idMessage is already stored (?1).
pub const ID_MESSAGE_TAKEN: &str = "SELECT 1 FROM messages WHERE id_message = ?1 LIMIT 1";

/// Claims a card for an attempt inside the write thread's transaction: `sending`, the
/// attempt counted and logged, the instance's last send time kept for pacing across
/// restarts. None when the card left the queue meanwhile (cancelled, expired).
pub(super) fn write_claim(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    instance: &str,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    let attempt: Option<i64> = tx
        .prepare_cached(CLAIM)?
        .query_row(rusqlite::params![id, now], |r| r.get(0))
        .optional()?;
    let Some(attempt) = attempt else {
        return Ok(None);
    };
    tx.prepare_cached(CLAIM_EVENT)?
        .execute(rusqlite::params![id, now, attempt])?;
    tx.prepare_cached(LAST_SEND)?
        .execute(rusqlite::params![instance, now])?;
    Ok(Some(attempt))
}

/// Records an attempt's outcome inside the write thread's transaction: the state change
/// (only from `sending`) and its history line.
pub(super) fn write_outcome(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    outcome: &SendOutcomeRecord,
    now: i64,
) -> rusqlite::Result<()> {
    use rusqlite::params;
    let (event, status, detail) = match outcome {
        SendOutcomeRecord::Sent { id_message } | SendOutcomeRecord::Reconciled { id_message } => {
            tx.prepare_cached(OUTCOME_SENT)?
                .execute(params![id, id_message, now])?;
            let event = match outcome {
                SendOutcomeRecord::Sent { .. } => "sent",
                _ => "reconciled",
            };
            (event, Some(200), id_message.as_str())
        }
        SendOutcomeRecord::Failed { error, http_status } => {
            tx.prepare_cached(OUTCOME_FAILED)?
                .execute(params![id, error, now])?;
            ("failed", *http_status, error.as_str())
        }
        SendOutcomeRecord::Requeue { error, http_status } => {
            tx.prepare_cached(OUTCOME_REQUEUE)?
                .execute(params![id, error])?;
            ("requeued", *http_status, error.as_str())
        }
        SendOutcomeRecord::Uncertain { error, http_status } => {
            tx.prepare_cached(OUTCOME_UNCERTAIN)?
                .execute(params![id, error])?;
            ("uncertain", *http_status, error.as_str())
        }
    };
    tx.prepare_cached(OUTCOME_EVENT)?
        .execute(params![id, now, event, status, detail])?;
    Ok(())
}

impl Store {
    /// The card in flight on an instance (state `sending`), if any: it must be resolved
    /// before anything else goes out.
    pub async fn in_flight(&self, instance: &str) -> Result<Option<UncertainCard>, StoreError> {
        let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(IN_FLIGHT)
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

    /// The first `limit` queued cards of an instance, in line (FIFO) order: the drain
    /// keeps them and claims them one by one with [`Store::begin_attempt`], which tells
    /// it when one has left the line meanwhile.
    pub async fn head_rows(
        &self,
        instance: &str,
        limit: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        Ok(sqlx::query_as(HEAD_ROWS)
            .bind(instance)
            .bind(limit)
            .fetch_all(&self.write)
            .await?)
    }

    /// Like [`Store::head_rows`], leaving out the cards to the chats in `skip` (held by
    /// a chats-quota 466): they keep their place and go first once the hold ends.
    pub async fn head_rows_skipping(
        &self,
        instance: &str,
        limit: i64,
        skip: &[String],
    ) -> Result<Vec<MessageRow>, StoreError> {
        if skip.is_empty() {
            return self.head_rows(instance, limit).await;
        }
        let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_as(HEAD_ROWS_SKIPPING)
            .bind(instance)
            .bind(limit)
            .bind(skip)
            .fetch_all(&self.write)
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
        self.finish_and_begin(None, id, instance, now).await
    }

    /// Records the outcome of one card's attempt (if any) and begins the attempt of the
    /// next in one transaction, so a steady drain pays one commit (one fsync) per send:
    /// the outcome is still durable before the next request goes out.
    pub async fn finish_and_begin(
        &self,
        finished: Option<(&str, &SendOutcomeRecord, i64)>,
        id: &str,
        instance: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let claim = Claim {
            id: id.to_string(),
            instance: instance.to_string(),
            now,
        };
        self.line_job(finished, Some(claim))
            .await?
            .ok_or_else(|| StoreError::Conflict("no longer queued".into()))
    }

    /// Records the outcome of the card's current attempt.
    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: &SendOutcomeRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        self.line_job(Some((id, outcome, now)), None)
            .await
            .map(|_| ())
    }

    async fn line_job(
        &self,
        finished: Option<(&str, &SendOutcomeRecord, i64)>,
        claim: Option<Claim>,
    ) -> Result<Option<i64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Line {
            finished: finished.map(|(id, outcome, at)| (id.to_string(), outcome.clone(), at)),
            claim,
            reply,
        };
        let stopped = || StoreError::Unavailable("the write thread has stopped".into());
        self.writer_tx.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Whether an idMessage is already stored for some card (a journal entry matches
    /// at most one card).
    pub async fn id_message_taken(&self, id_message: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(ID_MESSAGE_TAKEN)
            .bind(id_message)
            .fetch_optional(&self.write)
            .await?;
        Ok(found.is_some())
    }
}
