//! The drain's writes: the claim of a card for an attempt and the recording of an
//! attempt's outcome, each inside the transaction [`super::PgStore`] opens for them.
//!
//! A card is `sending` from the commit *before* its request goes out until its outcome
//! is recorded, so after a crash every `sending` card is one whose request may have
//! reached the API: the drain reconciles it before sending anything else.
//!
//! Pause and claim are ordered by the instance's row: the claim locks it first
//! ([`LOCK_LINE`]) and reads `paused` from the latest committed version, and `pause`
//! updates that row; so once `pause` has been answered no claim of that line commits.

use sqlx::PgConnection;

use super::events;
use super::lease::HeldBy;
use super::stream::Buffer;
use crate::event::EventKind;
use crate::store::model::SendOutcomeRecord;

/// Locks an instance's row (creating it) and answers whether the line is paused ($1).
pub const LOCK_LINE: &str = "INSERT INTO instances (name) VALUES ($1)
    ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING paused";

/// The claim of a card ($1 id, $2 now): `sending`, the attempt counted. A card another
/// transaction holds (a cancel in progress) is skipped, not waited for.
pub const CLAIM: &str = "UPDATE messages SET state = 'sending', attempts = attempts + 1,
    attempt_started_at = $2
    WHERE seq = (SELECT seq FROM messages WHERE id = $1 AND state = 'queued'
                 FOR UPDATE SKIP LOCKED)
    RETURNING attempts";

/// The instance's last send time, for pacing across restarts ($1 instance, $2 now).
pub const LAST_SEND: &str = "UPDATE instances SET last_send_at = $2 WHERE name = $1";

/// Outcome `sent` ($1 id, $2 idMessage, $3 now, $4 the attempt it answers, NULL for a
/// card found by reconcile); answers the instance if it changed.
/// Its delivery is followed from then on (`delivery` 'sent').
pub const OUTCOME_SENT: &str = "UPDATE messages SET state = 'sent', id_message = $2, sent_at = $3,
    ended_at = $3, last_error = NULL, delivery = 'sent'
    WHERE id = $1 AND state = 'sending' AND ($4::integer IS NULL OR attempts = $4)
    RETURNING instance";

/// Outcome `failed` ($1 id, $2 error, $3 now); answers the instance if it changed.
pub const OUTCOME_FAILED: &str = "UPDATE messages SET state = 'failed', last_error = $2,
    ended_at = $3 WHERE id = $1 AND state = 'sending' RETURNING instance";

/// Outcome: back to `queued`, keeping its place ($1 id, $2 error), only while its
/// instance's lease is holder $3's at the epoch this daemon holds it and unexpired
/// ($4 instances, $5 their epochs): a re-queued card is sent again, so only the drainer
/// may re-queue (docs/api.md §10). Otherwise the card stays `sending` for the holder to
/// reconcile.
pub const OUTCOME_REQUEUE: &str = "UPDATE messages m SET state = 'queued', last_error = $2
    WHERE m.id = $1 AND m.state = 'sending'
    AND EXISTS (SELECT 1 FROM leases l WHERE l.instance = m.instance
        AND l.holder = $3 AND l.expires_at > clock_timestamp()
        AND (l.instance, l.epoch) IN (SELECT * FROM UNNEST($4::text[], $5::bigint[])))";

/// Outcome: still uncertain ($1 id, $2 error).
pub const OUTCOME_UNCERTAIN: &str =
    "UPDATE messages SET last_error = $2 WHERE id = $1 AND state = 'sending'";

/// Claims a card for an attempt: `sending`, the attempt counted and logged, the
/// instance's last send time kept for pacing across restarts. None when the card left
/// the queue meanwhile (cancelled, expired) or its line is paused: the caller then
/// rolls back, so nothing of the claim stays.
pub(super) async fn claim(
    tx: &mut PgConnection,
    id: &str,
    instance: &str,
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let paused: bool = sqlx::query_scalar(LOCK_LINE)
        .bind(instance)
        .fetch_one(&mut *tx)
        .await?;
    if paused {
        return Ok(None);
    }
    let attempt: Option<i32> = sqlx::query_scalar(CLAIM)
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(attempt) = attempt.map(i64::from) else {
        return Ok(None);
    };
    events::add(tx, id, now, "attempt", Some(attempt), None, None).await?;
    sqlx::query(LAST_SEND)
        .bind(instance)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(Some(attempt))
}

/// Records an attempt's outcome: the state change (only from `sending`), its history
/// line and, for `sent` and `failed`, its event in the stream. A `sent` answer is
/// recorded whoever holds the lease; one that comes after the card left `sending`
/// (another daemon reconciled it meanwhile) is kept in its history as a `late answer`.
/// A re-queue needs the lease (`held`); without it nothing is written.
pub(super) async fn outcome(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    id: &str,
    outcome: &SendOutcomeRecord,
    now: i64,
    held: &HeldBy,
) -> sqlx::Result<()> {
    let (event, status, detail) = match outcome {
        SendOutcomeRecord::Sent { id_message, .. }
        | SendOutcomeRecord::Reconciled { id_message } => {
            let attempt = match outcome {
                SendOutcomeRecord::Sent { attempt, .. } => i32::try_from(*attempt).ok(),
                _ => None,
            };
            let changed: Option<String> = sqlx::query_scalar(OUTCOME_SENT)
                .bind(id)
                .bind(id_message)
                .bind(now)
                .bind(attempt)
                .fetch_optional(&mut *tx)
                .await?;
            let changed = match changed {
                Some(instance) => {
                    stream.add(now, id, &instance, EventKind::Sent);
                    1
                }
                None => 0,
            };
            let event = match outcome {
                _ if changed == 0 => "late answer",
                SendOutcomeRecord::Sent { .. } => "sent",
                _ => "reconciled",
            };
            (event, Some(200), id_message.as_str())
        }
        SendOutcomeRecord::Failed { error, http_status } => {
            let changed: Option<String> = sqlx::query_scalar(OUTCOME_FAILED)
                .bind(id)
                .bind(error)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(instance) = changed {
                stream.add(now, id, &instance, EventKind::Failed);
            }
            ("failed", *http_status, error.as_str())
        }
        SendOutcomeRecord::Requeue { error, http_status } => {
            let changed = sqlx::query(OUTCOME_REQUEUE)
                .bind(id)
                .bind(error)
                .bind(&held.holder)
                .bind(&held.instances)
                .bind(&held.epochs)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 0 {
                tracing::warn!(message_id = id, "not re-queued: the drain lease is not this daemon's (the holder reconciles it)");
                return Ok(());
            }
            ("requeued", *http_status, error.as_str())
        }
        SendOutcomeRecord::Uncertain { error, http_status } => {
            sqlx::query(OUTCOME_UNCERTAIN)
                .bind(id)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            ("uncertain", *http_status, error.as_str())
        }
    };
    events::add(tx, id, now, event, None, status, Some(detail)).await
}
