//! Bulk cancel and retry by filter (docs/api.md §11), inside the write thread's
//! transaction: at most [`BULK_LIMIT`] cards a call, each changed with its history
//! line and its stream event (`cancelled`, or `queued` again), the counts kept by the
//! same triggers as a single cancel or retry. Retried cards go to the tail of their
//! line in their old order.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{params, Transaction};

use super::events::INSERT_EVENT_BY_SEQ;
use super::stream;
use crate::event::EventKind;
use crate::store::error::StoreError;
use crate::store::model::{BulkAction, BulkFilter, BulkOutcome};

/// The most cards one bulk call changes; the answer says whether more match.
pub const BULK_LIMIT: usize = 10_000;

/// The instances that have (or had) cards, from the `counts` table.
pub const BULK_INSTANCES: &str = "SELECT DISTINCT instance FROM counts ORDER BY instance";

/// Cards of one instance (?1) in one state (?2), optionally of one chat (?3) and
/// enqueued before a time (?4), in line order, at most ?5: their place, seq and id.
pub const BULK_SELECT: &str = "SELECT line_seq, seq, id FROM messages
    WHERE instance = ?1 AND state = ?2 AND (?3 IS NULL OR chat_id = ?3)
      AND (?4 IS NULL OR enqueued_at < ?4)
    ORDER BY line_seq LIMIT ?5";

/// Cancels one queued card (?1 seq, ?2 now).
pub const BULK_CANCEL: &str = "UPDATE messages SET state = 'cancelled', ended_at = ?2
    WHERE seq = ?1 AND state = 'queued'";

/// Puts one failed or expired card back in line (?1 seq, ?2 place, ?3 now, ?4 expiry).
pub const BULK_RETRY: &str = "UPDATE messages SET state = 'queued', line_seq = ?2,
    requeued_at = ?3, expires_at = ?4, ended_at = NULL, due_at = NULL
    WHERE seq = ?1 AND state IN ('failed', 'expired')";

/// Runs one bulk call: selects up to [`BULK_LIMIT`] matching cards (instance by
/// instance, each in line order) and changes them.
pub(super) fn run(
    tx: &Transaction<'_>,
    filter: &BulkFilter,
    action: BulkAction,
    now: i64,
    line_counter: &AtomicI64,
) -> Result<BulkOutcome, StoreError> {
    let instances: Vec<String> = match &filter.instance {
        Some(name) => vec![name.clone()],
        None => tx
            .prepare_cached(BULK_INSTANCES)?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?,
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
            if !select(tx, instance, &states, filter, 1)?.is_empty() {
                outcome.more = true;
                break;
            }
            continue;
        }
        let mut picked = select(tx, instance, &states, filter, budget + 1)?;
        if picked.len() > budget {
            outcome.more = true;
            picked.truncate(budget);
        }
        let changed = apply(tx, instance, &picked, action, now, line_counter)?;
        budget -= picked.len();
        if changed > 0 {
            outcome.by_instance.push((instance.clone(), changed));
        }
    }
    Ok(outcome)
}

/// Up to `limit` matching cards of one instance across `states`, in line order.
fn select(
    tx: &Transaction<'_>,
    instance: &str,
    states: &[&str],
    filter: &BulkFilter,
    limit: usize,
) -> rusqlite::Result<Vec<Picked>> {
    let mut statement = tx.prepare_cached(BULK_SELECT)?;
    let mut picked: Vec<Picked> = Vec::new();
    for state in states {
        let rows = statement.query_map(
            params![instance, state, filter.chat_id, filter.before, limit as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for row in rows {
            picked.push(row?);
        }
    }
    picked.sort_unstable();
    picked.truncate(limit);
    Ok(picked)
}

/// A selected card: its place in line, seq and id.
type Picked = (i64, i64, String);

/// Changes the picked cards of `instance` (in the order given), each with its history
/// line and stream event; returns how many changed.
fn apply(
    tx: &Transaction<'_>,
    instance: &str,
    picked: &[Picked],
    action: BulkAction,
    now: i64,
    line_counter: &AtomicI64,
) -> rusqlite::Result<u64> {
    let mut event = tx.prepare_cached(INSERT_EVENT_BY_SEQ)?;
    let mut changed = 0;
    match action {
        BulkAction::Cancel => {
            let mut cancel = tx.prepare_cached(BULK_CANCEL)?;
            for (_, seq, id) in picked {
                if cancel.execute(params![seq, now])? == 1 {
                    event.execute(params![seq, now, "cancelled", "bulk cancel"])?;
                    stream::add(tx, now, id, instance, EventKind::Cancelled)?;
                    changed += 1;
                }
            }
        }
        BulkAction::Retry { max_age_ms } => {
            let mut retry = tx.prepare_cached(BULK_RETRY)?;
            let expires = now.saturating_add(max_age_ms);
            for (_, seq, id) in picked {
                let line = line_counter.fetch_add(1, Ordering::SeqCst);
                if retry.execute(params![seq, line, now, expires])? == 1 {
                    event.execute(params![seq, now, "retried", "bulk retry"])?;
                    stream::add(tx, now, id, instance, EventKind::Queued)?;
                    changed += 1;
                }
            }
        }
    }
    Ok(changed)
}
