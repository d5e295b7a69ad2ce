//! Turning stored rows into the API's message objects, with `position`, `eta` and
//! `waitingFor` for queued cards computed from the live line state, the quiet hours
//! and, for a card not yet due, its `notBefore`; and the stream's events and consumers
//! into theirs (the hooks send the very same event objects).
//!
//! The store hands over ids and states as text; they are parsed into [`MessageId`] and
//! [`MessageState`] here, once, and a row that does not parse is an internal error
//! (the store writes only ULIDs and the six states), never a guess.

use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::clock::{format_ms, now_ms};
use crate::event::EventKind;
use crate::ids::MessageId;
use crate::protocol::{ConsumerView, EventView, HistoryEntry, MessageView};
use crate::state::MessageState;
use crate::store::{ConsumerRow, EventRow, MessageRow, StreamEvent};

/// A stored row's state, parsed.
pub fn row_state(row: &MessageRow) -> Result<MessageState, ApiError> {
    row.state
        .parse()
        .map_err(|e| ApiError::Internal(format!("message {}: stored {e}", row.id)))
}

/// The plain view of a row (no queue position).
pub fn message_view(row: &MessageRow) -> Result<MessageView, ApiError> {
    let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
    let id: MessageId = row
        .id
        .parse()
        .map_err(|e| ApiError::Internal(format!("stored {e}")))?;
    Ok(MessageView {
        id,
        instance: row.instance.clone(),
        state: row_state(row)?,
        chat_id: row.chat_id.clone(),
        contact: body.get("contact").cloned().unwrap_or(Value::Null),
        quoted_message_id: body
            .get("quotedMessageId")
            .and_then(Value::as_str)
            .map(str::to_string),
        idempotency_key: row.idempotency_key.clone(),
        enqueued_at: format_ms(row.enqueued_at),
        requeued_at: row.requeued_at.map(format_ms),
        expires_at: format_ms(row.expires_at),
        not_before: row.not_before.map(format_ms),
        attempts: row.attempts,
        last_error: row.last_error.clone(),
        id_message: row.id_message.clone(),
        sent_at: row.sent_at.map(format_ms),
        delivery: row.delivery,
        delivered_at: row.delivered_at.map(format_ms),
        read_at: row.read_at.map(format_ms),
        peer_uid: row.peer_uid.and_then(|u| u32::try_from(u).ok()),
        position: None,
        eta: None,
        waiting_for: None,
        warning: None,
        warnings: None,
        history: None,
    })
}

/// The view with `position`, `eta`, `waitingFor` (and the expiry warning) for a queued
/// card. `position` may be given when the caller already knows it (a fresh enqueue).
pub async fn queued_view(
    state: &AppState,
    row: &MessageRow,
    known_position: Option<i64>,
) -> Result<MessageView, ApiError> {
    if row_state(row)? != MessageState::Queued {
        return message_view(row);
    }
    if row.not_yet_due() {
        return not_due_views(state, std::slice::from_ref(row))
            .await
            .map(|mut views| views.remove(0));
    }
    let Some(line) = state.lines.get(&row.instance) else {
        return message_view(row);
    };
    let position = match known_position {
        Some(p) => p,
        None => match state.store.position(&row.instance, row.line_seq).await {
            Ok(p) => p,
            Err(_) => return message_view(row),
        },
    };
    let line = LineView::new(&line.status(), now_ms());
    line.view(row, position)
}

/// Views of freshly enqueued queued rows of one instance with known positions: the
/// line's state is read once for all of them (a batch may hold 10,000 cards).
pub fn fresh_views(
    state: &AppState,
    rows: &[MessageRow],
    positions: impl Iterator<Item = i64>,
) -> Result<Vec<MessageView>, ApiError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let Some(line) = state.lines.get(&first.instance) else {
        return rows.iter().map(message_view).collect();
    };
    let line = LineView::new(&line.status(), now_ms());
    rows.iter()
        .zip(positions)
        .map(|(row, position)| {
            if row_state(row)? == MessageState::Queued {
                line.view(row, position)
            } else {
                message_view(row)
            }
        })
        .collect()
}

/// Views of queued rows of one instance that are not yet due (`notBefore` ahead):
/// no `position` yet (they are not in line), an `eta` from when they come due and
/// the due cards that will be ahead of them, `waitingFor` saying `notBefore`. The
/// line's state and its counts are read once for all of them.
pub async fn not_due_views(
    state: &AppState,
    rows: &[MessageRow],
) -> Result<Vec<MessageView>, ApiError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let Some(line) = state.lines.get(&first.instance) else {
        return rows.iter().map(message_view).collect();
    };
    let counts = state.store.counts(&first.instance).await?;
    let due_ahead = (counts.get("queued") - counts.get("scheduled")).max(0);
    let line = LineView::new(&line.status(), now_ms());
    rows.iter()
        .map(|row| match row.due_at {
            Some(due) if row_state(row)? == MessageState::Queued => {
                line.not_due_view(row, due, due_ahead)
            }
            _ => message_view(row),
        })
        .collect()
}

/// What a queued card's `eta` and `waitingFor` come from, taken once.
struct LineView {
    /// When the first card in line goes out; None while the line is held.
    start: Option<i64>,
    delay: i64,
    waiting_for: String,
    /// Chats held by a chats-quota 466 and when their holds end (ms).
    chat_holds: std::collections::BTreeMap<String, i64>,
    /// The line's state, for its quiet hours.
    status: crate::lines::LineStatus,
}

impl LineView {
    fn new(status: &crate::lines::LineStatus, now: i64) -> LineView {
        let waiting_for = match (&status.hold, status.quiet_until(now), &status.quiet) {
            (Some(hold), _, _) => hold.describe(),
            // Inside quiet hours even if the drain has not said so yet.
            (None, Some(until), Some(quiet)) => crate::lines::quiet_text(&quiet.to_string(), until),
            _ => "send_delay".to_string(),
        };
        LineView {
            start: status.first_send_at(now),
            delay: status.send_delay_ms as i64,
            waiting_for,
            chat_holds: status.chat_holds.clone(),
            status: status.clone(),
        }
    }

    /// A card not yet due: it joins the line at `due` behind the `due_ahead` cards
    /// in line now (fewer by then, if the line moves).
    fn not_due_view(
        &self,
        row: &MessageRow,
        due: i64,
        due_ahead: i64,
    ) -> Result<MessageView, ApiError> {
        let mut view = message_view(row)?;
        view.waiting_for = Some(crate::lines::not_before_text(due));
        view.eta = Some(self.start.map(|start| {
            let line_done = self
                .status
                .after_quiet(start, self.delay.saturating_mul(due_ahead));
            let eta = self.status.after_quiet(line_done.max(due), 0);
            self.warn_if_late(&mut view, row, eta);
            format_ms(eta)
        }));
        Ok(view)
    }

    fn warn_if_late(&self, view: &mut MessageView, row: &MessageRow, eta: i64) {
        if eta > row.expires_at {
            view.warning = Some("eta after expiry".to_string());
            view.warnings = Some(vec!["eta after expiry".to_string()]);
        }
    }

    fn view(&self, row: &MessageRow, position: i64) -> Result<MessageView, ApiError> {
        let mut view = message_view(row)?;
        view.position = Some(position);
        // A held chat's card steps aside: no eta until its hold ends (or `resume`),
        // unless the whole line is held, which says more.
        if let (Some(&until), Some(_)) = (self.chat_holds.get(&row.chat_id), self.start) {
            view.waiting_for = Some(crate::lines::chat_hold_text(&row.chat_id, until));
            view.eta = Some(None);
            return Ok(view);
        }
        view.waiting_for = Some(self.waiting_for.clone());
        match self.start {
            None => view.eta = Some(None),
            Some(start) => {
                let work = self.delay.saturating_mul(position - 1);
                let eta = self.status.after_quiet(start, work);
                view.eta = Some(Some(format_ms(eta)));
                self.warn_if_late(&mut view, row, eta);
            }
        }
        Ok(view)
    }
}

/// A history line.
pub fn history_entry(event: &EventRow) -> HistoryEntry {
    HistoryEntry {
        at: format_ms(event.at),
        event: event.event.clone(),
        attempt: event.attempt,
        http_status: event.http_status.and_then(|s| u16::try_from(s).ok()),
        detail: event.detail.clone(),
    }
}

/// An event of the stream as `GET /v1/events` and the hooks send it: the card as it is
/// now, with its state as of the event.
pub(crate) fn event_view(event: &StreamEvent) -> Result<EventView, ApiError> {
    let kind: EventKind = event
        .event
        .parse()
        .map_err(|e| ApiError::Internal(format!("event {}: stored {e}", event.seq)))?;
    let id: MessageId = event
        .id
        .parse()
        .map_err(|e| ApiError::Internal(format!("event {}: stored {e}", event.seq)))?;
    let message = match &event.message {
        Some(row) => {
            let mut view = message_view(row)?;
            view.state = kind.state();
            Some(view)
        }
        None => None,
    };
    Ok(EventView {
        seq: event.seq,
        at: format_ms(event.at),
        id,
        instance: event.instance.clone(),
        event: kind,
        message,
    })
}

/// A consumer's cursor as `status` and `GET /v1/consumers` show it; `kind` is `exec`
/// or `webhook` for a hook of the daemon, `outside` for any other.
pub fn consumer_view(row: &ConsumerRow, kind: &str, last_seq: i64) -> ConsumerView {
    ConsumerView {
        name: row.name.clone(),
        kind: kind.to_string(),
        cursor: row.cursor,
        lag: (last_seq - row.cursor).max(0),
        failures: row.failures,
        last_error: row.last_error.clone(),
        last_error_at: row.last_error_at.map(format_ms),
        updated_at: format_ms(row.updated_at),
    }
}
