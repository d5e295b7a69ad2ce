//! Rows into records, in one place: the columns of a message and how a PostgreSQL row
//! becomes a [`MessageRow`] and the other records.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use crate::store::model::{ChatHold, EventRow, InstanceRow, MessageRow};

macro_rules! message_columns {
    () => {
        "id, instance, state, line_seq, chat_id, phone, body, idempotency_key, peer_uid, \
         enqueued_at, expires_at, attempts, attempt_started_at, last_error, id_message, \
         sent_at, ended_at, requeued_at, not_before, due_at, delivery, delivered_at, read_at"
    };
}
pub(super) use message_columns;

/// The columns of a [`MessageRow`], in the order the mapping below reads them.
pub(super) const MESSAGE_COLUMNS: &str = message_columns!();

/// One message by id ($1).
pub const ONE_MESSAGE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = $1"
);

/// The messages whose ids are in $1 (any order; the caller orders them).
pub const MESSAGES_BY_IDS: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = ANY($1)"
);

impl FromRow<'_, PgRow> for MessageRow {
    fn from_row(r: &PgRow) -> sqlx::Result<MessageRow> {
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
            attempts: i64::from(r.try_get::<i32, _>(11)?),
            attempt_started_at: r.try_get(12)?,
            last_error: r.try_get(13)?,
            id_message: r.try_get(14)?,
            sent_at: r.try_get(15)?,
            ended_at: r.try_get(16)?,
            requeued_at: r.try_get(17)?,
            not_before: r.try_get(18)?,
            due_at: r.try_get(19)?,
            delivery: r
                .try_get::<Option<String>, _>(20)?
                .map(|text| text.parse())
                .transpose()
                .map_err(|e| sqlx::Error::ColumnDecode {
                    index: "delivery".into(),
                    source: Box::new(e),
                })?,
            delivered_at: r.try_get(21)?,
            read_at: r.try_get(22)?,
        })
    }
}

impl FromRow<'_, PgRow> for EventRow {
    fn from_row(r: &PgRow) -> sqlx::Result<EventRow> {
        Ok(EventRow {
            at: r.try_get(0)?,
            event: r.try_get(1)?,
            attempt: r.try_get::<Option<i32>, _>(2)?.map(i64::from),
            http_status: r.try_get::<Option<i16>, _>(3)?.map(i64::from),
            detail: r.try_get(4)?,
        })
    }
}

impl FromRow<'_, PgRow> for InstanceRow {
    fn from_row(r: &PgRow) -> sqlx::Result<InstanceRow> {
        Ok(InstanceRow {
            name: r.try_get(0)?,
            paused: r.try_get(1)?,
            last_send_at: r.try_get(2)?,
            hold_until: r.try_get(3)?,
            hold_reason: r.try_get(4)?,
        })
    }
}

impl FromRow<'_, PgRow> for ChatHold {
    fn from_row(r: &PgRow) -> sqlx::Result<ChatHold> {
        Ok(ChatHold {
            chat_id: r.try_get(0)?,
            until: r.try_get(1)?,
            reason: r.try_get(2)?,
        })
    }
}
