//! Turning stored rows into the API's message objects, with `position`, `eta` and
//! `waitingFor` for queued cards computed from the live line state.

use serde_json::Value;

use super::AppState;
use crate::clock::{format_ms, now_ms};
use crate::protocol::{HistoryEntry, MessageView};
use crate::store::{EventRow, MessageRow};

/// The plain view of a row (no queue position).
pub fn message_view(row: &MessageRow) -> MessageView {
    let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
    MessageView {
        id: row.id.clone(),
        instance: row.instance.clone(),
        state: row.state.clone(),
        chat_id: row.chat_id.clone(),
        contact: body.get("contact").cloned().unwrap_or(Value::Null),
        quoted_message_id: body
            .get("quotedMessageId")
            .and_then(Value::as_str)
            .map(str::to_string),
        idempotency_key: row.idempotency_key.clone(),
        enqueued_at: format_ms(row.enqueued_at),
        expires_at: format_ms(row.expires_at),
        attempts: row.attempts,
        last_error: row.last_error.clone(),
        id_message: row.id_message.clone(),
        sent_at: row.sent_at.map(format_ms),
        peer_uid: row.peer_uid.and_then(|u| u32::try_from(u).ok()),
        position: None,
        eta: None,
        waiting_for: None,
        warning: None,
        history: None,
    }
}

/// The view with `position`, `eta`, `waitingFor` (and the expiry warning) for a queued
/// card. `position` may be given when the caller already knows it (a fresh enqueue).
pub async fn queued_view(
    state: &AppState,
    row: &MessageRow,
    known_position: Option<i64>,
) -> MessageView {
    let mut view = message_view(row);
    if row.state != "queued" {
        return view;
    }
    let Some(line) = state.lines.get(&row.instance) else {
        return view;
    };
    let position = match known_position {
        Some(p) => p,
        None => match state.store.position(&row.instance, row.line_seq).await {
            Ok(p) => p,
            Err(_) => return view,
        },
    };
    let status = line.status();
    let now = now_ms();
    let delay = status.send_delay_ms as i64;
    view.position = Some(position);
    match &status.hold {
        Some(hold) if hold.blocks_eta() => {
            view.eta = Some(None);
            view.waiting_for = Some(hold.describe());
        }
        hold => {
            let mut start = status.next_send_at.unwrap_or(now).max(now);
            if let Some(h @ crate::lines::Hold::BackOff { until_ms, .. }) = hold {
                start = start.max(*until_ms);
                view.waiting_for = Some(h.describe());
            } else {
                view.waiting_for = Some("send_delay".to_string());
            }
            let eta = start.saturating_add(delay.saturating_mul(position - 1));
            view.eta = Some(Some(format_ms(eta)));
            if eta > row.expires_at {
                view.warning = Some("eta after expiry".to_string());
            }
        }
    }
    view
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
