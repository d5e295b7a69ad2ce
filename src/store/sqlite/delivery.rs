//! Delivery (docs/api.md §11): the writes and the read of a sent card's WhatsApp
//! delivery, in one place. A change moves the card's `delivery` forward (never back:
//! the current value is read and checked with [`Delivery::may_become`] inside the same
//! transaction, and the UPDATE compares it again) and adds its events to the stream
//! in that transaction: `delivered`, `read` (after `delivered` when a card went
//! straight from `sent` to `read`), `deliveryFailed` or `unconfirmed`.

use rusqlite::{params, OptionalExtension, Transaction};
use sqlx::SqlitePool;

use super::stream;
use crate::event::EventKind;
use crate::state::Delivery;
use crate::store::error::StoreError;
use crate::store::model::FollowedCard;

/// A card's instance and current delivery (?1 id).
pub const CURRENT: &str =
    "SELECT instance, delivery FROM messages WHERE id = ?1 AND state = 'sent'";

/// The change (?1 id, ?2 new value, ?3 now, ?4 the value it must still have):
/// `delivered_at` is kept from the first time it was seen delivered or read.
pub const RECORD: &str = "UPDATE messages SET delivery = ?2,
    delivered_at = CASE WHEN ?2 IN ('delivered', 'read') THEN COALESCE(delivered_at, ?3)
                   ELSE delivered_at END,
    read_at = CASE WHEN ?2 = 'read' THEN ?3 ELSE read_at END
    WHERE id = ?1 AND state = 'sent' AND delivery = ?4";

/// The cards of instance ?1 being followed (`sent` or `delivered`) sent at ?2 or
/// later, oldest send first, ?3 at most (the partial index `messages_following`).
pub const FOLLOWED: &str = "SELECT id, id_message, sent_at, delivery FROM messages
    WHERE instance = ?1 AND delivery IN ('sent', 'delivered') AND sent_at >= ?2
    ORDER BY sent_at LIMIT ?3";

/// Moves card `id` to `next` at `at`, with its events, if that is forward; false when
/// it changed nothing (the card is gone, not sent, or already there or further).
pub(super) fn record(
    tx: &Transaction<'_>,
    id: &str,
    next: Delivery,
    at: i64,
) -> Result<bool, StoreError> {
    let current: Option<(String, Option<String>)> = tx
        .prepare_cached(CURRENT)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((instance, Some(text))) = current else {
        return Ok(false);
    };
    let now: Delivery = text
        .parse()
        .map_err(|e| StoreError::database(format!("message {id}: stored {e}")))?;
    if !now.may_become(next) {
        return Ok(false);
    }
    let changed =
        tx.prepare_cached(RECORD)?
            .execute(params![id, next.as_str(), at, now.as_str()])?;
    if changed == 0 {
        return Ok(false);
    }
    // `read` implies `delivered`: a hook taking `delivered` hears of it too.
    if next == Delivery::Read && now == Delivery::Sent {
        stream::add(tx, at, id, &instance, EventKind::Delivered)?;
    }
    if let Some(kind) = EventKind::of_delivery(next) {
        stream::add(tx, at, id, &instance, kind)?;
    }
    Ok(true)
}

pub(super) async fn followed(
    pool: &SqlitePool,
    instance: &str,
    sent_since: i64,
    limit: i64,
) -> Result<Vec<FollowedCard>, StoreError> {
    Ok(sqlx::query_as(FOLLOWED)
        .bind(instance)
        .bind(sent_since)
        .bind(limit)
        .fetch_all(pool)
        .await?)
}
