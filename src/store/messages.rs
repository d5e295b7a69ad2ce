//! Reading messages (one, a page, a history) and the user's state changes on them
//! (cancel, retry).

use sqlx::{QueryBuilder, Sqlite};

use super::{Store, StoreError};
use crate::clock::now_ms;
use crate::contact::Card;

/// A message as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub instance: String,
    pub state: String,
    pub line_seq: i64,
    pub chat_id: String,
    pub phone: i64,
    /// The validated sendContact body, as JSON text.
    pub body: String,
    pub idempotency_key: Option<String>,
    pub peer_uid: Option<i64>,
    pub enqueued_at: i64,
    pub expires_at: i64,
    pub attempts: i64,
    pub attempt_started_at: Option<i64>,
    pub last_error: Option<String>,
    pub id_message: Option<String>,
    pub sent_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// When `retry` last put the card back in line (`enqueued_at` stays the first
    /// enqueue); None if it never was.
    pub requeued_at: Option<i64>,
}

macro_rules! message_columns {
    () => {
        "id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid, \
         enqueued_at, expires_at, attempts, attempt_started_at, last_error, id_message, \
         sent_at, ended_at, requeued_at"
    };
}

pub(super) const MESSAGE_COLUMNS: &str = message_columns!();

/// The ends of an instance's queued line (?1): its first and last place.
pub const LINE_ENDS: &str =
    "SELECT (SELECT line_seq FROM messages WHERE instance = ?1 AND state = 'queued'
             ORDER BY line_seq LIMIT 1),
            (SELECT line_seq FROM messages WHERE instance = ?1 AND state = 'queued'
             ORDER BY line_seq DESC LIMIT 1)";

/// Queued cards of an instance (?1) ahead of a place in line (?2).
pub const CARDS_AHEAD: &str = "SELECT COUNT(*) FROM messages
    WHERE instance = ?1 AND state = 'queued' AND line_seq < ?2";

/// Queued cards of an instance (?1) behind a place in line (?2).
pub const CARDS_BEHIND: &str = "SELECT COUNT(*) FROM messages
    WHERE instance = ?1 AND state = 'queued' AND line_seq > ?2";

/// One message by id (?1).
pub const ONE_MESSAGE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = ?1"
);

impl MessageRow {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fresh(
        id: String,
        instance: &str,
        line_seq: i64,
        card: &Card,
        idempotency_key: Option<String>,
        peer_uid: Option<u32>,
        now: i64,
        expires_at: i64,
    ) -> MessageRow {
        MessageRow {
            id,
            instance: instance.to_string(),
            state: "queued".to_string(),
            line_seq,
            chat_id: card.chat_id.clone(),
            phone: card.contact.phone_contact as i64,
            body: card.canonical(),
            idempotency_key,
            peer_uid: peer_uid.map(i64::from),
            enqueued_at: now,
            expires_at,
            attempts: 0,
            attempt_started_at: None,
            last_error: None,
            id_message: None,
            sent_at: None,
            ended_at: None,
            requeued_at: None,
        }
    }
}

/// One line of a message's history.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub at: i64,
    pub event: String,
    pub attempt: Option<i64>,
    pub http_status: Option<i64>,
    pub detail: Option<String>,
}

/// Filters of `GET /v1/messages`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub instance: Option<String>,
    pub state: Option<String>,
    /// Only messages older than this id (the cursor).
    pub before: Option<String>,
    pub limit: u32,
}

impl Store {
    pub async fn message(&self, id: &str) -> Result<MessageRow, StoreError> {
        sqlx::query_as(ONE_MESSAGE)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, event, attempt, http_status, detail FROM events
             WHERE message_seq = (SELECT seq FROM messages WHERE id = ?1) ORDER BY rowid",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?)
    }

    /// A page of messages, newest first; the cursor is the last id of the page.
    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<MessageRow>, Option<String>), StoreError> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE 1"));
        if let Some(instance) = &filter.instance {
            q.push(" AND instance = ").push_bind(instance.clone());
        }
        if let Some(state) = &filter.state {
            q.push(" AND state = ").push_bind(state.clone());
        }
        if let Some(before) = &filter.before {
            q.push(" AND id < ").push_bind(before.clone());
        }
        let limit = filter.limit.max(1);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let mut rows: Vec<MessageRow> = q.build_query_as().fetch_all(&self.read).await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Place in line of a queued card (1 = next); a card in flight is not counted.
    ///
    /// SQLite counts a range by walking it, so the shorter side of the line is counted:
    /// the cards ahead for one near the head, the cards behind for one near the tail
    /// (the total comes from the trigger-kept `counts`). A page of the newest cards in
    /// a million-card queue stays cheap.
    pub async fn position(&self, instance: &str, line_seq: i64) -> Result<i64, StoreError> {
        let (head, tail): (Option<i64>, Option<i64>) = sqlx::query_as(LINE_ENDS)
            .bind(instance)
            .fetch_one(&self.read)
            .await?;
        let (Some(head), Some(tail)) = (head, tail) else {
            return Ok(1);
        };
        if line_seq - head <= tail - line_seq {
            let ahead: i64 = sqlx::query_scalar(CARDS_AHEAD)
                .bind(instance)
                .bind(line_seq)
                .fetch_one(&self.read)
                .await?;
            return Ok(ahead + 1);
        }
        let behind: i64 = sqlx::query_scalar(CARDS_BEHIND)
            .bind(instance)
            .bind(line_seq)
            .fetch_one(&self.read)
            .await?;
        let total = self.counts(instance).await?.get("queued");
        Ok((total - behind).max(1))
    }

    /// Cancels a queued message.
    pub async fn cancel(&self, id: &str) -> Result<MessageRow, StoreError> {
        let now = now_ms();
        let _gate = self.gate().await;
        let mut tx = self.write.begin().await?;
        let changed = sqlx::query(
            "UPDATE messages SET state = 'cancelled', ended_at = ?2 WHERE id = ?1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = self
            .state_change_result(&mut tx, id, changed, now, "cancelled")
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Puts a failed or expired message at the tail of its line with a fresh expiry, as
    /// if enqueued now; `enqueued_at` keeps the first enqueue, `requeued_at` says when.
    pub async fn retry(&self, id: &str, max_age_ms: i64) -> Result<MessageRow, StoreError> {
        let now = now_ms();
        let line = self.next_line_seq();
        let _gate = self.gate().await;
        let mut tx = self.write.begin().await?;
        let changed = sqlx::query(
            "UPDATE messages SET state = 'queued', line_seq = ?2, requeued_at = ?3,
                 expires_at = ?4, ended_at = NULL
             WHERE id = ?1 AND state IN ('failed', 'expired')",
        )
        .bind(id)
        .bind(line)
        .bind(now)
        .bind(now.saturating_add(max_age_ms))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = self
            .state_change_result(&mut tx, id, changed, now, "retried")
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn state_change_result(
        &self,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        id: &str,
        changed: u64,
        now: i64,
        event: &str,
    ) -> Result<MessageRow, StoreError> {
        let row: MessageRow = sqlx::query_as(ONE_MESSAGE)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if changed == 0 {
            return Err(StoreError::Conflict(row.state));
        }
        super::line::add_event(tx, id, now, event, None, None, None).await?;
        Ok(row)
    }
}
