//! A message's history lines, written in one place: every state change adds its line
//! with the same statement, inside the same transaction as the change.

use sqlx::PgConnection;

/// A history line of the message with id $1 ($2 at, $3 event, $4 attempt, $5 HTTP
/// status, $6 detail).
pub const INSERT_EVENT: &str =
    "INSERT INTO events (message_seq, at, event, attempt, http_status, detail)
    SELECT seq, $2, $3, $4, $5, $6 FROM messages WHERE id = $1";

/// The same line for many messages at once, by `seq` ($1 seqs, $2 at, $3 event,
/// $4 detail): an expiry batch.
pub const INSERT_EVENTS_BY_SEQ: &str =
    "INSERT INTO events (message_seq, at, event, detail) SELECT s, $2, $3, $4 FROM UNNEST($1::bigint[]) AS s";

/// Adds a line to the history of the message with id `id`.
pub(super) async fn add(
    tx: &mut PgConnection,
    id: &str,
    at: i64,
    event: &str,
    attempt: Option<i64>,
    http_status: Option<u16>,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(INSERT_EVENT)
        .bind(id)
        .bind(at)
        .bind(event)
        .bind(attempt.map(|a| a as i32))
        .bind(http_status.map(|s| s as i16))
        .bind(detail)
        .execute(tx)
        .await?;
    Ok(())
}
