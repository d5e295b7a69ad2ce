//! Bulk cancel and retry by filter (docs/api.md §11) inside the transaction
//! [`super::PgStore`] opens for one call: at most [`BULK_LIMIT`] cards, each changed
//! with its history line and its stream event (`cancelled`, or `queued` again), the
//! counts kept by the same trigger as a single cancel or retry. Retried cards go to the
//! tail of their line in their old order, their places taken from the shared sequence.
//! Each instance's cards change with one statement (arrays bound), not one per card.

use sqlx::PgConnection;

use super::enqueue::take_places;
use super::events::INSERT_EVENTS_BY_SEQ;
use super::stream::Buffer;
use crate::event::EventKind;
use crate::store::error::StoreError;
use crate::store::model::{BulkAction, BulkFilter, BulkOutcome};

/// The most cards one bulk call changes; the answer says whether more match.
pub const BULK_LIMIT: usize = crate::store::BULK_LIMIT;

/// The instances that have (or had) cards, from the `counts` table.
pub const BULK_INSTANCES: &str = "SELECT DISTINCT instance FROM counts ORDER BY instance";

/// Cards of one instance ($1) in one state ($2), optionally of one chat ($3) and
/// enqueued before a time ($4), in line order, at most $5: their place, seq and id.
pub const BULK_SELECT: &str = "SELECT line_seq, seq, id FROM messages
    WHERE instance = $1 AND state = $2 AND ($3::text IS NULL OR chat_id = $3)
      AND ($4::bigint IS NULL OR enqueued_at < $4)
    ORDER BY line_seq LIMIT $5";

/// Cancels the queued cards among $1 (seqs) at $2; answers the seqs changed.
pub const BULK_CANCEL: &str = "UPDATE messages SET state = 'cancelled', ended_at = $2
    WHERE seq = ANY($1) AND state = 'queued' RETURNING seq";

/// Puts the failed or expired cards among $1 (seqs) back in line at the places $2
/// (same order), at $3 with expiry $4; answers the seqs changed.
pub const BULK_RETRY: &str = "UPDATE messages m SET state = 'queued', line_seq = t.place,
    requeued_at = $3, expires_at = $4, ended_at = NULL, due_at = NULL
    FROM UNNEST($1::bigint[], $2::bigint[]) AS t(seq, place)
    WHERE m.seq = t.seq AND m.state IN ('failed', 'expired') RETURNING m.seq";

/// Runs one bulk call: selects up to [`BULK_LIMIT`] matching cards (instance by
/// instance, each in line order) and changes them.
pub(super) async fn run(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    filter: &BulkFilter,
    action: BulkAction,
    now: i64,
) -> Result<BulkOutcome, StoreError> {
    let instances: Vec<String> = match &filter.instance {
        Some(name) => vec![name.clone()],
        None => {
            sqlx::query_scalar(BULK_INSTANCES)
                .fetch_all(&mut *tx)
                .await?
        }
    };
    let states: Vec<&str> = match (&filter.state, action) {
        (Some(state), _) => vec![state.as_str()],
        (None, BulkAction::Cancel) => vec!["queued"],
        (None, BulkAction::Retry { .. }) => vec!["failed", "expired"],
    };
    let mut outcome = BulkOutcome::default();
    let mut budget = BULK_LIMIT;
    for instance in &instances {
        if budget == 0 {
            // The call is full: is there anything left for another one?
            if !select(tx, instance, &states, filter, 1).await?.is_empty() {
                outcome.more = true;
                break;
            }
            continue;
        }
        let mut picked = select(tx, instance, &states, filter, budget + 1).await?;
        if picked.len() > budget {
            outcome.more = true;
            picked.truncate(budget);
        }
        let changed = apply(tx, stream, instance, &picked, action, now).await?;
        budget -= picked.len();
        if changed > 0 {
            outcome.by_instance.push((instance.clone(), changed));
        }
    }
    Ok(outcome)
}

/// A selected card: its place in line, seq and id.
type Picked = (i64, i64, String);

/// Up to `limit` matching cards of one instance across `states`, in line order.
async fn select(
    tx: &mut PgConnection,
    instance: &str,
    states: &[&str],
    filter: &BulkFilter,
    limit: usize,
) -> sqlx::Result<Vec<Picked>> {
    let mut picked: Vec<Picked> = Vec::new();
    for state in states {
        let rows: Vec<Picked> = sqlx::query_as(BULK_SELECT)
            .bind(instance)
            .bind(*state)
            .bind(filter.chat_id.as_deref())
            .bind(filter.before)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
        picked.extend(rows);
    }
    picked.sort_unstable();
    picked.truncate(limit);
    Ok(picked)
}

/// Changes the picked cards of `instance`, each with its history line and stream event
/// in the order picked; returns how many changed (a card that changed state meanwhile,
/// sent or cancelled by another call, is left as it is).
async fn apply(
    tx: &mut PgConnection,
    stream: &mut Buffer,
    instance: &str,
    picked: &[Picked],
    action: BulkAction,
    now: i64,
) -> sqlx::Result<u64> {
    if picked.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = picked.iter().map(|(_, seq, _)| *seq).collect();
    let (changed, event, detail, kind): (Vec<i64>, _, _, _) = match action {
        BulkAction::Cancel => (
            sqlx::query_scalar(BULK_CANCEL)
                .bind(&seqs)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?,
            "cancelled",
            "bulk cancel",
            EventKind::Cancelled,
        ),
        BulkAction::Retry { max_age_ms } => {
            let places = take_places(tx, seqs.len()).await?;
            (
                sqlx::query_scalar(BULK_RETRY)
                    .bind(&seqs)
                    .bind(&places)
                    .bind(now)
                    .bind(now.saturating_add(max_age_ms))
                    .fetch_all(&mut *tx)
                    .await?,
                "retried",
                "bulk retry",
                EventKind::Queued,
            )
        }
    };
    let changed: std::collections::HashSet<i64> = changed.into_iter().collect();
    let in_order: Vec<&Picked> = picked
        .iter()
        .filter(|(_, seq, _)| changed.contains(seq))
        .collect();
    let seqs: Vec<i64> = in_order.iter().map(|(_, seq, _)| *seq).collect();
    sqlx::query(INSERT_EVENTS_BY_SEQ)
        .bind(&seqs)
        .bind(now)
        .bind(event)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    for (_, _, id) in in_order {
        stream.add(now, id, instance, kind);
    }
    Ok(seqs.len() as u64)
}
