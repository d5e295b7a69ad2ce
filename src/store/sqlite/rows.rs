//! Rows into records, in one place: the columns of a message, and how a row of either
//! driver (sqlx on the read connections, rusqlite inside the write thread's
//! transactions) becomes a [`MessageRow`] and the other records.

use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row};

use crate::state::{Delivery, UnknownDelivery};
use crate::store::model::{ChatHold, EventRow, FollowedCard, InstanceRow, MessageRow};

macro_rules! message_columns {
    () => {
        "id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid, \
         enqueued_at, expires_at, attempts, attempt_started_at, last_error, id_message, \
         sent_at, ended_at, requeued_at, not_before, due_at, delivery, delivered_at, read_at"
    };
}
pub(super) use message_columns;

/// The columns of a [`MessageRow`], in the order both mappings below read them.
pub(super) const MESSAGE_COLUMNS: &str = message_columns!();

/// One message by id (?1).
pub const ONE_MESSAGE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = ?1"
);

/// A message from a row of [`MESSAGE_COLUMNS`] read inside the write thread.
pub(super) fn message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        instance: r.get(1)?,
        state: r.get(2)?,
        line_seq: r.get(3)?,
        chat_id: r.get(4)?,
        phone: r.get(5)?,
        body: r.get(6)?,
        idempotency_key: r.get(7)?,
        peer_uid: r.get(8)?,
        enqueued_at: r.get(9)?,
        expires_at: r.get(10)?,
        attempts: r.get(11)?,
        attempt_started_at: r.get(12)?,
        last_error: r.get(13)?,
        id_message: r.get(14)?,
        sent_at: r.get(15)?,
        ended_at: r.get(16)?,
        requeued_at: r.get(17)?,
        not_before: r.get(18)?,
        due_at: r.get(19)?,
        delivery: parse_delivery(r.get(20)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(20, rusqlite::types::Type::Text, Box::new(e))
        })?,
        delivered_at: r.get(21)?,
        read_at: r.get(22)?,
    })
}

impl FromRow<'_, SqliteRow> for MessageRow {
    fn from_row(r: &SqliteRow) -> sqlx::Result<MessageRow> {
        Ok(MessageRow {
            id: r.try_get(0)?,
            instance: r.try_get(1)?,
            state: r.try_get(2)?,
            line_seq: r.try_get(3)?,
            chat_id: r.try_get(4)?,
            phone: r.try_get(5)?,
            body: r.try_get(6)?,
            idempotency_key: r.try_get(7)?,
            peer_uid: r.try_get(8)?,
            enqueued_at: r.try_get(9)?,
            expires_at: r.try_get(10)?,
            attempts: r.try_get(11)?,
            attempt_started_at: r.try_get(12)?,
            last_error: r.try_get(13)?,
            id_message: r.try_get(14)?,
            sent_at: r.try_get(15)?,
            ended_at: r.try_get(16)?,
            requeued_at: r.try_get(17)?,
            not_before: r.try_get(18)?,
            due_at: r.try_get(19)?,
            delivery: parse_delivery(r.try_get(20)?).map_err(|e| sqlx::Error::ColumnDecode {
                index: "delivery".into(),
                source: Box::new(e),
            })?,
            delivered_at: r.try_get(21)?,
            read_at: r.try_get(22)?,
        })
    }
}

/// The stored delivery text as its type; a text that is not one is an error, never a
/// guess (the store writes only [`Delivery`] wire names).
fn parse_delivery(text: Option<String>) -> Result<Option<Delivery>, UnknownDelivery> {
    text.map(|t| t.parse()).transpose()
}

impl FromRow<'_, SqliteRow> for FollowedCard {
    fn from_row(r: &SqliteRow) -> sqlx::Result<FollowedCard> {
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

impl FromRow<'_, SqliteRow> for EventRow {
    fn from_row(r: &SqliteRow) -> sqlx::Result<EventRow> {
        Ok(EventRow {
            at: r.try_get(0)?,
            event: r.try_get(1)?,
            attempt: r.try_get(2)?,
            http_status: r.try_get(3)?,
            detail: r.try_get(4)?,
        })
    }
}

impl FromRow<'_, SqliteRow> for InstanceRow {
    fn from_row(r: &SqliteRow) -> sqlx::Result<InstanceRow> {
        Ok(InstanceRow {
            name: r.try_get(0)?,
            paused: r.try_get(1)?,
            last_send_at: r.try_get(2)?,
            hold_until: r.try_get(3)?,
            hold_reason: r.try_get(4)?,
        })
    }
}

impl FromRow<'_, SqliteRow> for ChatHold {
    fn from_row(r: &SqliteRow) -> sqlx::Result<ChatHold> {
        Ok(ChatHold {
            chat_id: r.try_get(0)?,
            until: r.try_get(1)?,
            reason: r.try_get(2)?,
        })
    }
}
