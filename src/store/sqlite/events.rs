//! A message's history lines, written in one place: every state change adds its line
//! with the same statement, inside the same transaction as the change.

/// A history line of the message with id ?1 (?2 at, ?3 event, ?4 attempt, ?5 HTTP
/// status, ?6 detail).
pub const INSERT_EVENT: &str =
    "INSERT INTO events (message_seq, at, event, attempt, http_status, detail)
    SELECT seq, ?2, ?3, ?4, ?5, ?6 FROM messages WHERE id = ?1";

/// A history line of the message whose `seq` is ?1, already known (an enqueue's row
/// just inserted, an expired card), so no lookup by id (?2 at, ?3 event, ?4 detail).
pub const INSERT_EVENT_BY_SEQ: &str =
    "INSERT INTO events (message_seq, at, event, detail) VALUES (?1, ?2, ?3, ?4)";

/// Adds a line to the history of the message with id `id`.
pub(super) fn add(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    at: i64,
    event: &str,
    attempt: Option<i64>,
    http_status: Option<u16>,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(INSERT_EVENT)?.execute(rusqlite::params![
        id,
        at,
        event,
        attempt,
        http_status,
        detail
    ])?;
    Ok(())
}
