//! Cards enqueued with a `notBefore` ahead (docs/api.md §11) join their line when they
//! come due: the drain hands the write thread [`join_due`], which gives each due card
//! the next place at the tail, in the order they came due, and clears its `due_at`.
//! Until then the card is `queued` but out of line, so it holds nobody back.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{params, Transaction};

use super::events::INSERT_EVENT_BY_SEQ;

/// Cards joined per transaction; the drain calls again while some are left.
pub const JOIN_BATCH: i64 = 1000;

/// The not-yet-due cards of an instance (?1) due by ?2, in the order they came due
/// (then their order of enqueue), at most ?3.
pub const DUE_NOW: &str = "SELECT seq FROM messages
    WHERE instance = ?1 AND state = 'queued' AND due_at IS NOT NULL AND due_at <= ?2
    ORDER BY due_at, line_seq LIMIT ?3";

/// One card joins the tail of its line (?1 seq, ?2 place).
pub const JOIN_LINE: &str = "UPDATE messages SET due_at = NULL, line_seq = ?2
    WHERE seq = ?1 AND state = 'queued' AND due_at IS NOT NULL";

/// Puts an instance's cards that are due by `now` at the tail of its line; returns
/// how many joined (fewer than [`JOIN_BATCH`] means none is left).
pub(super) fn join_due(
    tx: &Transaction<'_>,
    instance: &str,
    now: i64,
    line_counter: &AtomicI64,
) -> rusqlite::Result<u64> {
    let due: Vec<i64> = tx
        .prepare_cached(DUE_NOW)?
        .query_map(params![instance, now, JOIN_BATCH], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut join = tx.prepare_cached(JOIN_LINE)?;
    let mut event = tx.prepare_cached(INSERT_EVENT_BY_SEQ)?;
    let mut joined = 0;
    for seq in due {
        let line = line_counter.fetch_add(1, Ordering::SeqCst);
        if join.execute(params![seq, line])? == 1 {
            event.execute(params![
                seq,
                now,
                "due",
                "notBefore reached: joined the line"
            ])?;
            joined += 1;
        }
    }
    Ok(joined)
}
