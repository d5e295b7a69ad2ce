//! The user's and the drain's state changes other than claims and outcomes (cancel,
//! retry, pause and resume, the line's and the chats' quota holds), each inside the
//! transaction [`super::PgStore`] opens for it.
//!
//! A refusal (not found, conflict) is returned before anything is written, so the
//! caller's rollback leaves nothing of it.

use sqlx::PgConnection;

use super::events;
use super::rows::ONE_MESSAGE;
use super::stream::Buffer;
use crate::event::EventKind;
use crate::store::error::StoreError;
use crate::store::model::MessageRow;

/// Cancels a queued card ($1 id, $2 now).
pub const CANCEL: &str = "UPDATE messages SET state = 'cancelled', ended_at = $2
    WHERE id = $1 AND state = 'queued'";

/// Puts a failed or expired card back at the tail of its line, the next place taken
/// from the shared sequence ($1 id, $2 now, $3 expiry).
pub const RETRY: &str = "UPDATE messages SET state = 'queued', line_seq = nextval('line_seq'),
    requeued_at = $2, expires_at = $3, ended_at = NULL, due_at = NULL
    WHERE id = $1 AND state IN ('failed', 'expired')";

/// Pauses or resumes a line ($1 instance, $2 paused).
pub const SET_PAUSED: &str = "INSERT INTO instances (name, paused) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused";

/// Holds a line until $2 for reason $3, or releases it with NULLs ($1 instance).
pub const SET_HOLD: &str =
    "INSERT INTO instances (name, hold_until, hold_reason) VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET hold_until = excluded.hold_until,
    hold_reason = excluded.hold_reason";

/// Holds one chat ($1 instance, $2 chat id, $3 until, $4 reason).
pub const SET_CHAT_HOLD: &str = "INSERT INTO chat_holds (instance, chat_id, until, reason)
    VALUES ($1, $2, $3, $4) ON CONFLICT (instance, chat_id)
    DO UPDATE SET until = excluded.until, reason = excluded.reason";

/// Releases one chat's hold if it still ends at $3 ($1 instance, $2 chat id).
pub const END_CHAT_HOLD: &str =
    "DELETE FROM chat_holds WHERE instance = $1 AND chat_id = $2 AND until = $3";

/// Releases every chat hold of an instance ($1).
pub const CLEAR_CHAT_HOLDS: &str = "DELETE FROM chat_holds WHERE instance = $1";

/// Cancels a queued card; Conflict (with its state) if it is not queued.
pub(super) async fn cancel(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    id: &str,
    now: i64,
) -> Result<MessageRow, StoreError> {
    let changed = sqlx::query(CANCEL)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    changed_row(
        tx,
        stream,
        id,
        changed,
        now,
        "cancelled",
        EventKind::Cancelled,
    )
    .await
}

/// Puts a failed or expired card at the tail of its line with a fresh expiry, as if
/// enqueued now; `enqueued_at` keeps the first enqueue, `requeued_at` says when.
pub(super) async fn retry(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    id: &str,
    now: i64,
    max_age_ms: i64,
) -> Result<MessageRow, StoreError> {
    let changed = sqlx::query(RETRY)
        .bind(id)
        .bind(now)
        .bind(now.saturating_add(max_age_ms))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    changed_row(tx, stream, id, changed, now, "retried", EventKind::Queued).await
}

/// The row after a state change of `changed` rows, with its history line and its event
/// `kind` in the stream; NotFound or Conflict (nothing was changed, so nothing is
/// written).
async fn changed_row(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    id: &str,
    changed: u64,
    now: i64,
    event: &str,
    kind: EventKind,
) -> Result<MessageRow, StoreError> {
    let row: MessageRow = sqlx::query_as(ONE_MESSAGE)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    if changed == 0 {
        return Err(StoreError::Conflict(row.state));
    }
    events::add(tx, id, now, event, None, None, None).await?;
    stream.add(now, id, &row.instance, kind);
    Ok(row)
}

/// Pauses or resumes a line. `resume` also releases the quota holds, the line's and
/// every chat's, in the same transaction.
pub(super) async fn set_paused(
    tx: &mut PgConnection,
    name: &str,
    paused: bool,
) -> sqlx::Result<()> {
    sqlx::query(SET_PAUSED)
        .bind(name)
        .bind(paused)
        .execute(&mut *tx)
        .await?;
    if !paused {
        set_hold(tx, name, None, None).await?;
        sqlx::query(CLEAR_CHAT_HOLDS)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn set_hold(
    tx: &mut PgConnection,
    name: &str,
    until: Option<i64>,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(SET_HOLD)
        .bind(name)
        .bind(until)
        .bind(reason)
        .execute(tx)
        .await?;
    Ok(())
}

pub(super) async fn set_chat_hold(
    tx: &mut PgConnection,
    name: &str,
    chat_id: &str,
    until: i64,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(SET_CHAT_HOLD)
        .bind(name)
        .bind(chat_id)
        .bind(until)
        .bind(reason)
        .execute(tx)
        .await?;
    Ok(())
}

pub(super) async fn end_chat_hold(
    tx: &mut PgConnection,
    name: &str,
    chat_id: &str,
    until: i64,
) -> sqlx::Result<()> {
    sqlx::query(END_CHAT_HOLD)
        .bind(name)
        .bind(chat_id)
        .bind(until)
        .execute(tx)
        .await?;
    Ok(())
}
