//! Drawing answers for humans: the `status` and `list` tables, `show`'s key: value
//! lines, and `--json`'s byte-for-byte echo of what the socket answered.
//!
//! Every function here takes an already-fetched value and a writer; nothing here
//! talks to the daemon, so `--json` and the table are two views of one answer.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::protocol::{HistoryEntry, InstanceStatus, MessageList, MessageView, StatusView};
use crate::state::{Delivery, MessageState};

use super::table::{
    ago, authorization_color, humanize_secs, paint, state_color, truncate, until, Cell, Table, RED,
};

/// How wide a free-text column (last error) may grow in a table.
const TEXT_WIDTH: usize = 48;

/// `--json`: the answer exactly as received, then a newline if it lacks one.
pub fn raw_json(out: &mut dyn Write, body: &[u8]) -> io::Result<()> {
    out.write_all(body)?;
    if !body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `contactq status`: a header line, then one row per instance, and under it, indented,
/// what does not fit a column: the rarer counts, why the line is held, the last error.
/// No line is wider than `width` (the terminal's, or 80 when stdout is not one).
pub fn status(
    out: &mut dyn Write,
    view: &StatusView,
    color: bool,
    now: DateTime<Utc>,
    width: usize,
) -> io::Result<()> {
    let header = format!(
        "contactq {}, up {}",
        view.version,
        humanize_secs(view.uptime_seconds)
    );
    writeln!(out, "{}", truncate(&header, width))?;
    // Several daemons on one database (docs/api.md §10): who is there.
    if view.nodes.len() > 1 {
        let nodes: Vec<String> = view
            .nodes
            .iter()
            .map(|n| format!("{} ({})", n.name, seen(&n.last_seen, now)))
            .collect();
        let line = format!("nodes: {}", nodes.join(", "));
        writeln!(out, "{}", truncate(&line, width))?;
    }
    // Said only when it is the weaker one: a fail-over may lose the last commits.
    if view.durability.as_deref() == Some("async") {
        let line = "durability: async (PostgreSQL streams to an asynchronous standby)";
        writeln!(out, "{}", truncate(line, width))?;
    }
    if view.instances.is_empty() {
        return writeln!(out, "no instances configured");
    }
    let mut table = Table::new(vec![
        "NAME",
        "AUTH",
        "QUEUED",
        "SENT",
        "FAILED",
        "OLDEST",
        "NEXT SEND",
    ]);
    for instance in &view.instances {
        table.push(instance_row(instance, now));
        for line in instance_details(instance, width) {
            table.push_line(line);
        }
    }
    table.write_within(out, color, width)?;
    consumers(out, view, color, width)
}

/// The stream's consumers under the instances: one row each with its lag, and its
/// last error while it is failing.
fn consumers(out: &mut dyn Write, view: &StatusView, color: bool, width: usize) -> io::Result<()> {
    if view.consumers.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let mut table = Table::new(vec!["HOOK", "KIND", "CURSOR", "LAG", "FAILURES"]);
    for c in &view.consumers {
        table.push(vec![
            truncate(&c.name, NAME_WIDTH).into(),
            c.kind.clone().into(),
            c.cursor.to_string().into(),
            c.lag.to_string().into(),
            Cell::colored(c.failures.to_string(), Some(RED).filter(|_| c.failures > 0)),
        ]);
        if let (true, Some(error)) = (c.failures > 0, &c.last_error) {
            let room = width.saturating_sub(2);
            table.push_line(format!(
                "  {}",
                truncate(&format!("last error: {error}"), room)
            ));
        }
    }
    table.write_within(out, color, width)
}

/// The longest instance name shown whole in the table (longer ones are cut with `…`).
const NAME_WIDTH: usize = 16;

fn instance_row(i: &InstanceStatus, now: DateTime<Utc>) -> Vec<Cell> {
    vec![
        truncate(&i.name, NAME_WIDTH).into(),
        Cell::colored(
            i.authorization.to_string(),
            authorization_color(&i.authorization),
        ),
        i.queued.to_string().into(),
        i.sent.to_string().into(),
        Cell::colored(i.failed.to_string(), Some(RED).filter(|_| i.failed > 0)),
        i.oldest_queued_age_seconds
            .map_or("-".into(), humanize_secs)
            .into(),
        i.next_send_at
            .as_deref()
            .map_or("-".into(), |t| until(t, now))
            .into(),
    ]
}

/// The indented lines under an instance's row: the non-zero counts without a column
/// (sending, expired, cancelled), the non-zero delivery counts, `held:` and
/// `last error:`, each cut to `width`.
fn instance_details(i: &InstanceStatus, width: usize) -> Vec<String> {
    const INDENT: &str = "  ";
    let room = width.saturating_sub(INDENT.len());
    let counts: Vec<String> = [
        (MessageState::Sending, i.sending),
        (MessageState::Expired, i.expired),
        (MessageState::Cancelled, i.cancelled),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(state, n)| format!("{state} {n}"))
    .collect();
    let held = match (&i.held, i.paused) {
        (Some(reason), _) => Some(format!("held: {reason}")),
        (None, true) => Some("held: paused".to_string()),
        (None, false) => None,
    };
    let mut lines = Vec::new();
    if !counts.is_empty() {
        lines.push(counts.join(", "));
    }
    let delivery: Vec<String> = i
        .delivery
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(d, n)| format!("{d} {n}"))
        .collect();
    if !delivery.is_empty() {
        lines.push(format!("delivery: {}", delivery.join(", ")));
    }
    // A take-over happened (epoch > 1), or the lease lapsed and no daemon holds it.
    match (&i.drained_by, i.lease_epoch) {
        (Some(node), Some(epoch)) if epoch > 1 => {
            lines.push(format!("drained by {node}, lease epoch {epoch}"))
        }
        (None, Some(epoch)) => lines.push(format!("drained by no daemon (lease epoch {epoch})")),
        _ => {}
    }
    lines.extend(held);
    lines.extend(
        i.last_error
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(|e| format!("last error: {e}")),
    );
    lines
        .into_iter()
        .map(|line| format!("{INDENT}{}", truncate(&line, room)))
        .collect()
}

/// How long ago a node was seen, from its RFC 3339 `lastSeen`.
fn seen(last_seen: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(last_seen) {
        Ok(at) => {
            let secs = (now - at.with_timezone(&Utc)).num_milliseconds().max(0) as f64 / 1000.0;
            format!("seen {} ago", humanize_secs(secs))
        }
        Err(_) => last_seen.to_string(),
    }
}

/// `contactq list`: one row per message, then how to get the next page.
/// `filters` are the other options of this listing, repeated in the next-page hint.
pub fn message_list(
    out: &mut dyn Write,
    list: &MessageList,
    filters: &str,
    color: bool,
    now: DateTime<Utc>,
) -> io::Result<()> {
    if list.messages.is_empty() {
        writeln!(out, "no messages")?;
    } else {
        let mut table = Table::new(vec![
            "ID",
            "INSTANCE",
            "STATE",
            "DELIVERY",
            "CHAT",
            "PHONE",
            "NAME",
            "ENQUEUED",
            "ATTEMPTS",
            "ID MESSAGE / LAST ERROR",
        ]);
        for m in &list.messages {
            table.push(message_row(m, now));
        }
        table.write(out, color)?;
    }
    if let Some(cursor) = &list.next {
        writeln!(out, "next page: contactq list --before {cursor}{filters}")?;
    }
    Ok(())
}

fn message_row(m: &MessageView, now: DateTime<Utc>) -> Vec<Cell> {
    let outcome = m
        .id_message
        .clone()
        .or_else(|| m.last_error.as_deref().map(|e| truncate(e, TEXT_WIDTH)))
        .or_else(|| m.waiting_for.clone());
    vec![
        m.id.to_string().into(),
        m.instance.clone().into(),
        Cell::colored(m.state.as_str(), state_color(m.state)),
        m.delivery.map_or("-", Delivery::as_str).into(),
        m.chat_id.clone().into(),
        phone(&m.contact).into(),
        truncate(&contact_name(&m.contact), 32).into(),
        ago(&m.enqueued_at, now).into(),
        m.attempts.to_string().into(),
        or_dash(outcome).into(),
    ]
}

/// `contactq show`: one `key: value` line per field, then the history.
pub fn message_detail(out: &mut dyn Write, m: &MessageView, color: bool) -> io::Result<()> {
    let name = contact_name(&m.contact);
    let mut lines: Vec<(&str, String)> = vec![
        ("id", m.id.to_string()),
        ("instance", m.instance.clone()),
        (
            "state",
            paint(m.state.as_str(), state_color(m.state), color),
        ),
        ("chatId", m.chat_id.clone()),
        ("phone", phone(&m.contact)),
        ("name", if name.is_empty() { "-".into() } else { name }),
    ];
    let optional = [
        ("quotedMessageId", m.quoted_message_id.clone()),
        ("idempotencyKey", m.idempotency_key.clone()),
        ("enqueuedAt", Some(m.enqueued_at.clone())),
        ("requeuedAt", m.requeued_at.clone()),
        ("expiresAt", Some(m.expires_at.clone())),
        ("attempts", Some(m.attempts.to_string())),
        ("lastError", m.last_error.clone()),
        ("idMessage", m.id_message.clone()),
        ("sentAt", m.sent_at.clone()),
        ("delivery", m.delivery.map(|d| d.to_string())),
        ("deliveredAt", m.delivered_at.clone()),
        ("readAt", m.read_at.clone()),
        ("peerUid", m.peer_uid.map(|u| u.to_string())),
        ("position", m.position.map(|p| p.to_string())),
        ("eta", eta(m)),
        ("waitingFor", m.waiting_for.clone()),
        (
            "warning",
            m.warnings
                .as_ref()
                .filter(|all| !all.is_empty())
                .map(|all| all.join("; "))
                .or_else(|| m.warning.clone()),
        ),
    ];
    lines.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    // A fixed width (the longest key, `quotedMessageId:`), so every message lines up alike.
    for (key, value) in &lines {
        writeln!(out, "{:<16} {value}", format!("{key}:"))?;
    }
    if let Some(history) = &m.history {
        writeln!(out, "history:")?;
        for entry in history {
            writeln!(out, "  {}", history_line(entry))?;
        }
    }
    Ok(())
}

/// A queued card's eta. `"eta": null` means the line is held; serde reads that null as
/// an absent field, so a card with a position but no eta is a held one.
fn eta(m: &MessageView) -> Option<String> {
    match (&m.eta, m.position) {
        (Some(Some(eta)), _) => Some(eta.clone()),
        (Some(None), _) | (None, Some(_)) => Some("- (line held)".into()),
        (None, None) => None,
    }
}

fn history_line(entry: &HistoryEntry) -> String {
    let mut line = format!("{}  {}", entry.at, entry.event);
    if let Some(attempt) = entry.attempt {
        line.push_str(&format!("  attempt {attempt}"));
    }
    if let Some(status) = entry.http_status {
        line.push_str(&format!("  HTTP {status}"));
    }
    if let Some(detail) = &entry.detail {
        line.push_str(&format!("  {}", truncate(detail, 200)));
    }
    line
}

/// `contactq send`: the new ids, one per line.
pub fn sent_ids(out: &mut dyn Write, messages: &[MessageView]) -> io::Result<()> {
    for m in messages {
        writeln!(out, "{}", m.id)?;
    }
    Ok(())
}

/// The card's phone, as stored (a number) or as given.
fn phone(contact: &Value) -> String {
    match &contact["phoneContact"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "-".to_string(),
    }
}

/// `First Middle Last`, or the company when the card has no person's name.
fn contact_name(contact: &Value) -> String {
    let part = |key: &str| contact[key].as_str().filter(|s| !s.is_empty());
    let person: Vec<&str> = ["firstName", "middleName", "lastName"]
        .into_iter()
        .filter_map(part)
        .collect();
    match (person.is_empty(), part("company")) {
        (false, Some(company)) => format!("{} ({company})", person.join(" ")),
        (false, None) => person.join(" "),
        (true, Some(company)) => company.to_string(),
        (true, None) => String::new(),
    }
}

fn or_dash(text: Option<String>) -> String {
    text.filter(|t| !t.is_empty()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
#[path = "display_tests.rs"]
mod tests;
