//! Delivery on PostgreSQL (docs/api.md §11), as `sqlite/delivery.rs`: a change moves a
//! sent card's `delivery` forward only (the current value is read under a row lock and
//! checked with [`Delivery::may_become`], and the UPDATE compares it again) and buffers
//! its events for the transaction's last statement: `delivered`, `read` (after
//! `delivered` when a card went straight from `sent` to `read`), `deliveryFailed` or
//! `unconfirmed`.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgPool, Row};

use super::stream::Buffer;
use crate::event::EventKind;
use crate::state::Delivery;
use crate::store::error::StoreError;
use crate::store::model::FollowedCard;

/// A card's instance and current delivery ($1 id), locked for the change.
pub const CURRENT: &str =
    "SELECT instance, delivery FROM messages WHERE id = $1 AND state = 'sent' FOR UPDATE";

/// The change ($1 id, $2 new value, $3 now, $4 the value it must still have):
/// `delivered_at` is kept from the first time it was seen delivered or read.
pub const RECORD: &str = "UPDATE messages SET delivery = $2,
    delivered_at = CASE WHEN $2 IN ('delivered', 'read') THEN COALESCE(delivered_at, $3)
                   ELSE delivered_at END,
    read_at = CASE WHEN $2 = 'read' THEN $3 ELSE read_at END
    WHERE id = $1 AND state = 'sent' AND delivery = $4";

/// The cards of instance $1 being followed (`sent` or `delivered`) sent at $2 or
/// later, oldest send first, $3 at most (the partial index `messages_following`).
pub const FOLLOWED: &str = "SELECT id, id_message, sent_at, delivery FROM messages
    WHERE instance = $1 AND delivery IN ('sent', 'delivered') AND sent_at >= $2
    ORDER BY sent_at LIMIT $3";

/// Moves card `id` to `next` at `at`, with its events, if that is forward; false when
/// it changed nothing (the card is gone, not sent, or already there or further).
pub(super) async fn record(
    tx: &mut PgConnection,
    events: &mut Buffer,
    id: &str,
    next: Delivery,
    at: i64,
) -> Result<bool, StoreError> {
    let current: Option<(String, Option<String>)> = sqlx::query_as(CURRENT)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((instance, Some(text))) = current else {
        return Ok(false);
    };
    let now: Delivery = text
        .parse()
        .map_err(|e| StoreError::database(format!("message {id}: stored {e}")))?;
    if !now.may_become(next) {
        return Ok(false);
    }
    let changed = sqlx::query(RECORD)
        .bind(id)
        .bind(next.as_str())
        .bind(at)
        .bind(now.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    // `read` implies `delivered`: a hook taking `delivered` hears of it too.
    if next == Delivery::Read && now == Delivery::Sent {
        events.add(at, id, &instance, EventKind::Delivered);
    }
    if let Some(kind) = EventKind::of_delivery(next) {
        events.add(at, id, &instance, kind);
    }
    Ok(true)
}

pub(super) async fn followed(
    pool: &PgPool,
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

impl FromRow<'_, PgRow> for FollowedCard {
    fn from_row(r: &PgRow) -> sqlx::Result<FollowedCard> {
        let delivery: String = r.try_get(3)?;
        Ok(FollowedCard {
            id: r.try_get(0)?,
            id_message: r.try_get(1)?,
            sent_at: r.try_get(2)?,
            delivery: delivery.parse().map_err(|e| sqlx::Error::ColumnDecode {
                index: "delivery".into(),
                source: Box::new(e),
            })?,
        })
    }
}
