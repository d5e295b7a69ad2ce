//! Cards enqueued with a `notBefore` ahead (docs/api.md §11) join their line when they
//! come due: the drain calls [`join_due`] in a transaction of its own, which gives each
//! due card the next place at the tail (from the shared sequence), in the order they
//! came due, and clears its `due_at`. Until then the card is `queued` but out of line,
//! so it holds nobody back.

use sqlx::PgConnection;

use super::enqueue::take_places;
use super::events::INSERT_EVENTS_BY_SEQ;

/// Cards joined per transaction; the drain calls again while some are left.
pub const JOIN_BATCH: i64 = crate::store::JOIN_BATCH;

/// The not-yet-due cards of an instance ($1) due by $2, in the order they came due
/// (then their order of enqueue), at most $3; a card another transaction holds (a
/// cancel in progress) is left for the next call.
pub const DUE_NOW: &str = "SELECT seq FROM messages
    WHERE instance = $1 AND state = 'queued' AND due_at IS NOT NULL AND due_at <= $2
    ORDER BY due_at, line_seq LIMIT $3 FOR UPDATE SKIP LOCKED";

/// The cards among $1 (seqs) join the tail of their line at the places $2 (same
/// order); answers the seqs that joined.
pub const JOIN_LINE: &str = "UPDATE messages m SET due_at = NULL, line_seq = t.place
    FROM UNNEST($1::bigint[], $2::bigint[]) AS t(seq, place)
    WHERE m.seq = t.seq AND m.state = 'queued' AND m.due_at IS NOT NULL RETURNING m.seq";

/// Puts an instance's cards that are due by `now` at the tail of its line; returns
/// how many joined (fewer than [`JOIN_BATCH`] means none is left).
pub(super) async fn join_due(tx: &mut PgConnection, instance: &str, now: i64) -> sqlx::Result<u64> {
    let due: Vec<i64> = sqlx::query_scalar(DUE_NOW)
        .bind(instance)
        .bind(now)
        .bind(JOIN_BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let places = take_places(tx, due.len()).await?;
    let joined: std::collections::HashSet<i64> = sqlx::query_scalar::<_, i64>(JOIN_LINE)
        .bind(&due)
        .bind(&places)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let seqs: Vec<i64> = due.into_iter().filter(|s| joined.contains(s)).collect();
    sqlx::query(INSERT_EVENTS_BY_SEQ)
        .bind(&seqs)
        .bind(now)
        .bind("due")
        .bind("notBefore reached: joined the line")
        .execute(&mut *tx)
        .await?;
    Ok(seqs.len() as u64)
}
