//! The drain's writes inside the write thread's transaction: the claim of a card for an
//! attempt and the recording of an attempt's outcome. Called by [`super::writer`] only.
//!
//! A card is `sending` from the commit *before* its request goes out until its outcome
//! is recorded, so after a crash every `sending` card is one whose request may have
//! reached the API: the drain reconciles it before sending anything else.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{events, stream};
use crate::event::EventKind;
use crate::store::model::SendOutcomeRecord;

/// The claim of a card (?1 id, ?2 now): `sending`, the attempt counted. Never on a
/// paused line: the pause and the claim are ordered by the one writer, so a card is
/// not claimed once `pause` has been answered, whatever the drain last read.
pub const CLAIM: &str = "UPDATE messages SET state = 'sending', attempts = attempts + 1,
    attempt_started_at = ?2 WHERE id = ?1 AND state = 'queued'
    AND NOT EXISTS (SELECT 1 FROM instances WHERE name = messages.instance AND paused)
    RETURNING attempts";

/// The instance's last send time, for pacing across restarts (?1 instance, ?2 now).
pub const LAST_SEND: &str = "INSERT INTO instances (name, last_send_at) VALUES (?1, ?2)
    ON CONFLICT (name) DO UPDATE SET last_send_at = excluded.last_send_at";

/// Outcome `sent` (?1 id, ?2 idMessage, ?3 now, ?4 the attempt it answers, NULL for a
/// card found by reconcile); answers the instance if it changed.
/// Its delivery is followed from then on (`delivery` 'sent').
pub const OUTCOME_SENT: &str = "UPDATE messages SET state = 'sent', id_message = ?2, sent_at = ?3,
    ended_at = ?3, last_error = NULL, delivery = 'sent'
    WHERE id = ?1 AND state = 'sending' AND (?4 IS NULL OR attempts = ?4) RETURNING instance";

/// Outcome `failed` (?1 id, ?2 error, ?3 now); answers the instance if it changed.
pub const OUTCOME_FAILED: &str = "UPDATE messages SET state = 'failed', last_error = ?2,
    ended_at = ?3 WHERE id = ?1 AND state = 'sending' RETURNING instance";

/// Outcome: back to `queued`, keeping its place (?1 id, ?2 error).
pub const OUTCOME_REQUEUE: &str = "UPDATE messages SET state = 'queued', last_error = ?2
    WHERE id = ?1 AND state = 'sending'";

/// Outcome: still uncertain (?1 id, ?2 error).
pub const OUTCOME_UNCERTAIN: &str =
    "UPDATE messages SET last_error = ?2 WHERE id = ?1 AND state = 'sending'";

/// Claims a card for an attempt: `sending`, the attempt counted and logged, the
/// instance's last send time kept for pacing across restarts. None when the card left
/// the queue meanwhile (cancelled, expired) or its line is paused.
pub(super) fn claim(
    tx: &Transaction<'_>,
    id: &str,
    instance: &str,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let attempt: Option<i64> = tx
        .prepare_cached(CLAIM)?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?;
    let Some(attempt) = attempt else {
        return Ok(None);
    };
    events::add(tx, id, now, "attempt", Some(attempt), None, None)?;
    tx.prepare_cached(LAST_SEND)?
        .execute(params![instance, now])?;
    Ok(Some(attempt))
}

/// Records an attempt's outcome: the state change (only from `sending`), its history
/// line and, for `sent` and `failed`, its event in the stream.
pub(super) fn outcome(
    tx: &Transaction<'_>,
    id: &str,
    outcome: &SendOutcomeRecord,
    now: i64,
) -> rusqlite::Result<()> {
    let (event, status, detail) = match outcome {
        SendOutcomeRecord::Sent { id_message, .. }
        | SendOutcomeRecord::Reconciled { id_message } => {
            let attempt = match outcome {
                SendOutcomeRecord::Sent { attempt, .. } => Some(*attempt),
                _ => None,
            };
            let changed: Option<String> = tx
                .prepare_cached(OUTCOME_SENT)?
                .query_row(params![id, id_message, now, attempt], |r| r.get(0))
                .optional()?;
            if let Some(instance) = changed {
                stream::add(tx, now, id, &instance, EventKind::Sent)?;
            }
            let event = match outcome {
                SendOutcomeRecord::Sent { .. } => "sent",
                _ => "reconciled",
            };
            (event, Some(200), id_message.as_str())
        }
        SendOutcomeRecord::Failed { error, http_status } => {
            let changed: Option<String> = tx
                .prepare_cached(OUTCOME_FAILED)?
                .query_row(params![id, error, now], |r| r.get(0))
                .optional()?;
            if let Some(instance) = changed {
                stream::add(tx, now, id, &instance, EventKind::Failed)?;
            }
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
    events::add(tx, id, now, event, None, status, Some(detail))
}
