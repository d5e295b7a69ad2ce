//! The user's and the drain's state changes other than claims and outcomes (cancel,
//! retry, pause and resume, the line's and the chats' quota holds), each run inside the
//! write thread's transaction by a closure that [`super::SqliteStore`] hands it.
//!
//! A refusal (not found, conflict) is returned before anything is written, so it never
//! leaves half a change in the group's transaction.

use rusqlite::{params, OptionalExtension, Transaction};

use super::rows::{self, ONE_MESSAGE};
use super::{events, stream};
use crate::event::EventKind;
use crate::store::error::StoreError;
use crate::store::model::MessageRow;

/// Cancels a queued card (?1 id, ?2 now).
pub const CANCEL: &str = "UPDATE messages SET state = 'cancelled', ended_at = ?2
    WHERE id = ?1 AND state = 'queued'";

/// Puts a failed or expired card back in line (?1 id, ?2 place, ?3 now, ?4 expiry).
pub const RETRY: &str = "UPDATE messages SET state = 'queued', line_seq = ?2, requeued_at = ?3,
    expires_at = ?4, ended_at = NULL, due_at = NULL WHERE id = ?1 AND state IN ('failed', 'expired')";

/// Pauses or resumes a line (?1 instance, ?2 paused).
pub const SET_PAUSED: &str = "INSERT INTO instances (name, paused) VALUES (?1, ?2)
    ON CONFLICT (name) DO UPDATE SET paused = ?2";

/// Holds a line until ?2 for reason ?3, or releases it with NULLs (?1 instance).
pub const SET_HOLD: &str =
    "INSERT INTO instances (name, hold_until, hold_reason) VALUES (?1, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET hold_until = ?2, hold_reason = ?3";

/// Holds one chat (?1 instance, ?2 chat id, ?3 until, ?4 reason).
pub const SET_CHAT_HOLD: &str = "INSERT INTO chat_holds (instance, chat_id, until, reason)
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (instance, chat_id) DO UPDATE SET until = ?3, reason = ?4";

/// Releases one chat's hold if it still ends at ?3 (?1 instance, ?2 chat id).
pub const END_CHAT_HOLD: &str =
    "DELETE FROM chat_holds WHERE instance = ?1 AND chat_id = ?2 AND until = ?3";

/// Releases every chat hold of an instance (?1).
pub const CLEAR_CHAT_HOLDS: &str = "DELETE FROM chat_holds WHERE instance = ?1";

/// Cancels a queued card; Conflict (with its state) if it is not queued.
pub(super) fn cancel(tx: &Transaction<'_>, id: &str, now: i64) -> Result<MessageRow, StoreError> {
    let changed = tx.prepare_cached(CANCEL)?.execute(params![id, now])?;
    changed_row(tx, id, changed, now, "cancelled", EventKind::Cancelled)
}

/// Puts a failed or expired card at place `line` with a fresh expiry, as if enqueued
/// now; `enqueued_at` keeps the first enqueue, `requeued_at` says when.
pub(super) fn retry(
    tx: &Transaction<'_>,
    id: &str,
    line: i64,
    now: i64,
    max_age_ms: i64,
) -> Result<MessageRow, StoreError> {
    let changed = tx.prepare_cached(RETRY)?.execute(params![
        id,
        line,
        now,
        now.saturating_add(max_age_ms)
    ])?;
    changed_row(tx, id, changed, now, "retried", EventKind::Queued)
}

/// The row after a state change of `changed` rows, with its history line and its event
/// `kind` in the stream; NotFound or Conflict (nothing was changed, so nothing is
/// written).
fn changed_row(
    tx: &Transaction<'_>,
    id: &str,
    changed: usize,
    now: i64,
    event: &str,
    kind: EventKind,
) -> Result<MessageRow, StoreError> {
    let row = tx
        .prepare_cached(ONE_MESSAGE)?
        .query_row([id], rows::message)
        .optional()?
        .ok_or(StoreError::NotFound)?;
    if changed == 0 {
        return Err(StoreError::Conflict(row.state));
    }
    events::add(tx, id, now, event, None, None, None)?;
    stream::add(tx, now, id, &row.instance, kind)?;
    Ok(row)
}

/// Pauses or resumes a line. `resume` also releases the quota holds, the line's and
/// every chat's ("held for `quota_retry` or until `contactq resume`", docs/api.md), in
/// the same transaction.
pub(super) fn set_paused(tx: &Transaction<'_>, name: &str, paused: bool) -> rusqlite::Result<()> {
    tx.prepare_cached(SET_PAUSED)?
        .execute(params![name, paused])?;
    if !paused {
        set_hold(tx, name, None, None)?;
        tx.prepare_cached(CLEAR_CHAT_HOLDS)?.execute([name])?;
    }
    Ok(())
}

pub(super) fn set_hold(
    tx: &Transaction<'_>,
    name: &str,
    until: Option<i64>,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(SET_HOLD)?
        .execute(params![name, until, reason])?;
    Ok(())
}

pub(super) fn set_chat_hold(
    tx: &Transaction<'_>,
    name: &str,
    chat_id: &str,
    until: i64,
    reason: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(SET_CHAT_HOLD)?
        .execute(params![name, chat_id, until, reason])?;
    Ok(())
}

pub(super) fn end_chat_hold(
    tx: &Transaction<'_>,
    name: &str,
    chat_id: &str,
    until: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(END_CHAT_HOLD)?
        .execute(params![name, chat_id, until])?;
    Ok(())
}
