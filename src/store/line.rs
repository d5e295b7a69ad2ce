//! The drain's side of the store: the head of an instance's line, the start of an
//! attempt and the recording of its outcome, each one transaction.
//!
//! A card is `sending` from the commit *before* its request goes out until its outcome
//! is recorded, so after a crash every `sending` card is one whose request may have
//! reached the API: the drain reconciles it before sending anything else.

use sqlx::sqlite::SqliteArguments;
use sqlx::{Sqlite, SqliteConnection};

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

/// The head of an instance's queued line (?1 instance, ?2 how many).
pub const HEAD_ROWS: &str = "SELECT id, instance, state, line_seq, chat_id, phone, body, \
    idempotency_key, peer_uid, enqueued_at, expires_at, attempts, attempt_started_at, \
    last_error, id_message, sent_at, ended_at FROM messages \
    WHERE instance = ?1 AND state = 'queued' ORDER BY line_seq LIMIT ?2";

/// The card in flight on an instance (?1).
pub const IN_FLIGHT: &str = "SELECT id, chat_id, phone, attempt_started_at FROM messages
    WHERE instance = ?1 AND state = 'sending' ORDER BY line_seq LIMIT 1";

/// Claims a card for an attempt (?1 id, ?2 now, ?3 instance): `sending`, the attempt
/// counted and logged, the instance's last send time kept for pacing across restarts.
/// The later statements act only if the claim took (the card is now `sending` since
/// ?2), so a card that left the queue meanwhile changes nothing; RETURNING tells the
/// caller which happened.
///
/// Numbering: the claim's parameters are ?1-?3 and the outcome's ?4-?9 because sqlx
/// binds a statement's unused lower slots positionally and stops at the last argument:
/// every statement that follows one with gaps must use only numbers without gaps
/// below them, so the gap-free claim statements come last.
const BEGIN_ATTEMPT: &str = "UPDATE messages SET state = 'sending', attempts = attempts + 1,
        attempt_started_at = ?2 WHERE id = ?1 AND state = 'queued' RETURNING attempts;
    INSERT INTO events (message_seq, at, event, attempt)
        SELECT seq, ?2, 'attempt', attempts FROM messages
        WHERE id = ?1 AND state = 'sending' AND attempt_started_at = ?2;
    INSERT INTO instances (name, last_send_at) SELECT ?3, ?2 WHERE EXISTS
        (SELECT 1 FROM messages WHERE id = ?1 AND state = 'sending' AND attempt_started_at = ?2)
        ON CONFLICT (name) DO UPDATE SET last_send_at = ?2;";

/// An attempt's outcome (?4 id, ?5 idMessage or error, ?6 now, ?7 event, ?8 HTTP
/// status, ?9 detail): the state change and its history line.
fn outcome_sql(outcome: &SendOutcomeRecord) -> String {
    let change = match outcome {
        SendOutcomeRecord::Sent { .. } | SendOutcomeRecord::Reconciled { .. } => {
            "UPDATE messages SET state = 'sent', id_message = ?5, sent_at = ?6, ended_at = ?6,
                 last_error = NULL WHERE id = ?4 AND state = 'sending';"
        }
        SendOutcomeRecord::Failed { .. } => {
            "UPDATE messages SET state = 'failed', last_error = ?5, ended_at = ?6
                 WHERE id = ?4 AND state = 'sending';"
        }
        SendOutcomeRecord::Requeue { .. } => {
            "UPDATE messages SET state = 'queued', last_error = ?5
                 WHERE id = ?4 AND state = 'sending';"
        }
        SendOutcomeRecord::Uncertain { .. } => {
            "UPDATE messages SET last_error = ?5 WHERE id = ?4 AND state = 'sending';"
        }
    };
    format!(
        "{change} INSERT INTO events (message_seq, at, event, attempt, http_status, detail)
             SELECT seq, ?6, ?7, NULL, ?8, ?9 FROM messages WHERE id = ?4;"
    )
}

/// Binds ?4..?9 of [`outcome_sql`] (NULLs when there is no outcome to record).
fn bind_outcome<'q, O>(query: O, finished: Option<(&'q str, &'q SendOutcomeRecord, i64)>) -> O
where
    O: BindSix<'q>,
{
    let Some((id, outcome, now)) = finished else {
        return query.six(None, None, None, None, None, None);
    };
    let (text, event, status, detail) = match outcome {
        SendOutcomeRecord::Sent { id_message } => (
            id_message.as_str(),
            "sent",
            Some(200),
            Some(id_message.as_str()),
        ),
        SendOutcomeRecord::Reconciled { id_message } => (
            id_message.as_str(),
            "reconciled",
            Some(200),
            Some(id_message.as_str()),
        ),
        SendOutcomeRecord::Failed { error, http_status } => {
            (error.as_str(), "failed", *http_status, Some(error.as_str()))
        }
        SendOutcomeRecord::Requeue { error, http_status } => (
            error.as_str(),
            "requeued",
            *http_status,
            Some(error.as_str()),
        ),
        SendOutcomeRecord::Uncertain { error, http_status } => (
            error.as_str(),
            "uncertain",
            *http_status,
            Some(error.as_str()),
        ),
    };
    query.six(Some(id), Some(text), Some(now), Some(event), status, detail)
}

/// Binding the six outcome parameters on either kind of sqlx query.
trait BindSix<'q> {
    fn six(
        self,
        id: Option<&'q str>,
        text: Option<&'q str>,
        now: Option<i64>,
        event: Option<&'q str>,
        status: Option<u16>,
        detail: Option<&'q str>,
    ) -> Self;
}

impl<'q> BindSix<'q> for sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
    fn six(
        self,
        id: Option<&'q str>,
        text: Option<&'q str>,
        now: Option<i64>,
        event: Option<&'q str>,
        status: Option<u16>,
        detail: Option<&'q str>,
    ) -> Self {
        self.bind(id)
            .bind(text)
            .bind(now)
            .bind(event)
            .bind(status)
            .bind(detail)
    }
}

impl<'q, O> BindSix<'q> for sqlx::query::QueryScalar<'q, Sqlite, O, SqliteArguments<'q>> {
    fn six(
        self,
        id: Option<&'q str>,
        text: Option<&'q str>,
        now: Option<i64>,
        event: Option<&'q str>,
        status: Option<u16>,
        detail: Option<&'q str>,
    ) -> Self {
        self.bind(id)
            .bind(text)
            .bind(now)
            .bind(event)
            .bind(status)
            .bind(detail)
    }
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
        let sql = match finished {
            Some((_, outcome, _)) => format!(
                "BEGIN IMMEDIATE; {} {BEGIN_ATTEMPT} COMMIT;",
                outcome_sql(outcome)
            ),
            None => format!("BEGIN IMMEDIATE; {BEGIN_ATTEMPT} COMMIT;"),
        };
        let query = sqlx::query_scalar(&sql).bind(id).bind(now).bind(instance);
        let query = bind_outcome(query, finished);
        let _gate = self.gate().await;
        let mut conn = self.write.acquire().await?;
        let attempt: Vec<i64> = match query.fetch_all(&mut *conn).await {
            Ok(rows) => rows,
            Err(e) => {
                // A failed multi-statement call may leave its transaction open.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
        };
        attempt
            .first()
            .copied()
            .ok_or_else(|| StoreError::Conflict("no longer queued".into()))
    }

    /// Records the outcome of the card's current attempt.
    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: &SendOutcomeRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = format!("BEGIN IMMEDIATE; {} COMMIT;", outcome_sql(outcome));
        let query = sqlx::query(&sql)
            .bind(None::<&str>)
            .bind(None::<i64>)
            .bind(None::<&str>);
        let query = bind_outcome(query, Some((id, outcome, now)));
        let _gate = self.gate().await;
        let mut conn = self.write.acquire().await?;
        if let Err(e) = query.execute(&mut *conn).await {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(e.into());
        }
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
