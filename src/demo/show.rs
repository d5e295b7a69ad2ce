//! What the demo shows: the hold while the instance is not authorized, a live progress
//! view while the cards drain (an indicatif bar on a terminal, plain lines otherwise,
//! so a pipe or a test can read it), each card's delivery as it changes, the final
//! table of the cards and what the exec hook wrote.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::cards::Queued;
use super::{fetch, DemoError, HOLD, INSTANCE};
use crate::cli::client::{ApiRequest, Client};
use crate::protocol::{InstanceStatus, MessageList, MessageView, StatusView};
use crate::sandbox::Sandbox;
use crate::state::{Authorization, Delivery, MessageState};

/// How often the progress view asks the daemon for its status.
const POLL: Duration = Duration::from_millis(200);

/// The drain must be over this long after it began, or the demo gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

async fn instance_status(client: &Client) -> Result<InstanceStatus, DemoError> {
    let view: StatusView = fetch(client, ApiRequest::get("/v1/status"), 200, "status").await?;
    view.instances
        .into_iter()
        .find(|i| i.name == INSTANCE)
        .ok_or_else(|| DemoError::Stuck(format!("the daemon does not list instance {INSTANCE}")))
}

/// Waits for the daemon's first look at the instance, then shows that the line is held
/// and why, from the first card's `waitingFor`.
pub async fn hold(client: &Client, queued: &[Queued]) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = instance_status(client).await?;
        if status.authorization != Authorization::Unknown || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(POLL).await;
    };
    say!(
        "  instance {INSTANCE}: {}, {} queued, {} sent: nothing goes out while it is not authorized",
        status.authorization, status.queued, status.sent
    )?;
    let Some(first) = queued.first() else {
        return Ok(());
    };
    let path = format!("/v1/messages/{}", first.view.id);
    let card: MessageView = fetch(client, ApiRequest::get(path), 200, "the first card").await?;
    say!(
        "  card {} (position {}): waitingFor \"{}\", eta {}",
        card.id,
        card.position.map_or("-".into(), |p| p.to_string()),
        card.waiting_for.as_deref().unwrap_or("-"),
        match card.eta {
            Some(Some(eta)) => eta,
            _ => "none while the line is held".into(),
        }
    )?;
    Ok(())
}

/// Authorizes the instance after [`HOLD`] and follows the drain until no card is left
/// queued or sending.
pub async fn drain(client: &Client, sandbox: &Sandbox, total: usize) -> Result<(), DemoError> {
    let started = Instant::now();
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("  {spinner} [{bar:20}] {pos}/{len} sent  {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    // indicatif draws nothing when stdout is not a terminal: then plain lines instead.
    let plain = bar.is_hidden();
    if !plain {
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    let note = |line: &str| {
        if plain {
            say!("{line}")
        } else {
            bar.println(line);
            Ok(())
        }
    };

    let authorize_at = Instant::now() + HOLD;
    let deadline = authorize_at + DRAIN_LIMIT;
    let mut authorized = false;
    let mut last_key = None;
    loop {
        if !authorized && Instant::now() >= authorize_at {
            sandbox.set_state(None, Authorization::Authorized);
            authorized = true;
            note("  sandbox: the instance is authorized now (as if its QR code had been scanned)")?;
        }
        let status = instance_status(client).await?;
        let message = describe(&status);
        bar.set_position(status.sent.max(0) as u64);
        bar.set_message(message.clone());
        let line = format!("{}/{total} sent, {message}", status.sent);
        // A plain line per change of the counts, not per tick of the countdown.
        let key = (
            status.authorization.clone(),
            status.queued,
            status.sending,
            status.sent,
        );
        if plain && last_key.as_ref() != Some(&key) {
            say!("  [{:>4.1}s] {line}", started.elapsed().as_secs_f64())?;
            last_key = Some(key);
        }
        if authorized && status.queued + status.sending == 0 {
            bar.finish_with_message(format!(
                "done: {} sent, {} failed",
                status.sent, status.failed
            ));
            return Ok(());
        }
        if Instant::now() >= deadline {
            bar.abandon();
            return Err(DemoError::Stuck(format!(
                "the cards did not drain within {}s: {line}",
                DRAIN_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Follows the sent cards until each one's delivery is final (read, for the
/// sandbox's cards), one line per change.
pub async fn delivery(client: &Client, queued: &[Queued]) -> Result<(), DemoError> {
    let started = Instant::now();
    let deadline = started + DRAIN_LIMIT;
    let mut seen: std::collections::HashMap<String, Option<Delivery>> = Default::default();
    loop {
        let path = format!("/v1/messages?instance={INSTANCE}&limit=50");
        let list: MessageList = fetch(client, ApiRequest::get(path), 200, "the card list").await?;
        let sent: Vec<&MessageView> = list
            .messages
            .iter()
            .rev()
            .filter(|m| m.state == MessageState::Sent)
            .collect();
        for m in &sent {
            let id = m.id.to_string();
            if seen.get(&id) != Some(&m.delivery) {
                let label = queued
                    .iter()
                    .find(|q| q.view.id == m.id)
                    .map_or("", |q| q.label);
                say!(
                    "  [{:>4.1}s] {id} {:<10} {label}",
                    started.elapsed().as_secs_f64(),
                    m.delivery.map_or("-", Delivery::as_str),
                )?;
                seen.insert(id, m.delivery);
            }
        }
        if !sent.is_empty()
            && sent
                .iter()
                .all(|m| m.delivery.is_some_and(Delivery::is_final))
        {
            let read = sent
                .iter()
                .filter(|m| m.delivery == Some(Delivery::Read))
                .count();
            say!(
                "  {read} of {} sent cards delivered and read; each card's events in the stream:",
                sent.len()
            )?;
            return stories(client, &sent).await;
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Stuck(format!(
                "the sent cards were not all read within {}s",
                DRAIN_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Each card's life as the event stream numbered it: `queued → sent → delivered → read`.
async fn stories(client: &Client, cards: &[&MessageView]) -> Result<(), DemoError> {
    let path = format!("/v1/events?after=0&instance={INSTANCE}");
    let answer = super::call(client, ApiRequest::get(path), 200, "the event stream").await?;
    let events: Vec<crate::protocol::EventView> = String::from_utf8_lossy(&answer.body)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|source| DemoError::Json {
            what: "the event stream".into(),
            source,
        })?;
    for card in cards {
        let story: Vec<&str> = events
            .iter()
            .filter(|e| e.id == card.id)
            .map(|e| e.event.as_str())
            .collect();
        say!("  {} {}", card.id, story.join(" → "))?;
    }
    Ok(())
}

/// Waits until the hook has taken every `delivered` and `read` event (its cursor at the
/// stream's end), then prints the lines it wrote.
pub async fn hook_output(log: &std::path::Path, client: &Client) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view: StatusView = fetch(client, ApiRequest::get("/v1/status"), 200, "status").await?;
        let caught_up = view
            .consumers
            .iter()
            .find(|c| c.name == "demo")
            .is_some_and(|c| c.lag == 0);
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Stuck(
                "the hook did not take every event within 10s".into(),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let text = std::fs::read_to_string(log)
        .map_err(DemoError::io(format!("cannot read {}", log.display())))?;
    for line in text.lines() {
        say!("  hook: {line}")?;
    }
    Ok(())
}

/// One line about the instance: authorization, what waits, when the next send is.
fn describe(status: &InstanceStatus) -> String {
    let mut text = format!("{}, {} queued", status.authorization, status.queued);
    if status.sending > 0 {
        text.push_str(&format!(", {} sending", status.sending));
    }
    if status.failed > 0 {
        text.push_str(&format!(", {} failed", status.failed));
    }
    if let Some(held) = &status.held {
        text.push_str(&format!(" (held: {held})"));
    } else if let Some(next) = status.next_send_at.as_deref().and_then(parse_time) {
        let wait = (next - Utc::now()).num_milliseconds().max(0);
        if status.queued > 0 {
            text.push_str(&format!(", next send in {:.1}s", wait as f64 / 1000.0));
        }
    }
    text
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The cards in enqueue order: id, state, chat, name, idMessage (or the last error),
/// and which example each one is.
pub async fn table(client: &Client, queued: &[Queued]) -> Result<(), DemoError> {
    let path = format!("/v1/messages?instance={INSTANCE}&limit=50");
    let list: MessageList = fetch(client, ApiRequest::get(path), 200, "the card list").await?;
    let color = std::io::stdout().is_terminal();
    let header = [
        "ID",
        "STATE",
        "DELIVERY",
        "CHAT",
        "PHONE",
        "NAME",
        "ID MESSAGE",
        "EXAMPLE",
    ];
    let mut rows: Vec<(MessageState, [String; 8])> = Vec::new();
    // The API lists newest first; the story reads oldest first.
    for m in list.messages.iter().rev() {
        let label = queued
            .iter()
            .find(|q| q.view.id == m.id)
            .map_or("", |q| q.label);
        let outcome = m
            .id_message
            .clone()
            .or_else(|| m.last_error.clone())
            .unwrap_or_else(|| "-".into());
        rows.push((
            m.state,
            [
                m.id.to_string(),
                m.state.to_string(),
                m.delivery.map_or("-", Delivery::as_str).to_string(),
                m.chat_id.clone(),
                m.contact["phoneContact"].to_string(),
                name(&m.contact),
                outcome,
                label.to_string(),
            ],
        ));
    }
    let mut widths = header.map(|h| h.chars().count());
    for (_, row) in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 8], state_code: Option<&str>| {
        let mut out = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            match (i, state_code) {
                (1, Some(code)) => out.push_str(&format!(" {code}{cell}\x1b[0m{pad} ")),
                _ => out.push_str(&format!(" {cell}{pad} ")),
            }
        }
        say!("{}", out.trim_end())
    };
    line(header, None)?;
    for (state, row) in &rows {
        let code = match state {
            MessageState::Sent => "\x1b[32m",
            MessageState::Queued | MessageState::Sending => "\x1b[33m",
            _ => "\x1b[31m",
        };
        let cells = row.each_ref().map(String::as_str);
        line(cells, Some(code).filter(|_| color))?;
    }
    let sent = rows
        .iter()
        .filter(|(state, _)| *state == MessageState::Sent)
        .count();
    say!(
        "  {sent} of {} cards sent, each with the idMessage the API returned; the invalid ones were never stored",
        rows.len()
    )?;
    Ok(())
}

/// `First Middle Last`, else the company.
fn name(contact: &Value) -> String {
    let parts: Vec<&str> = ["firstName", "middleName", "lastName"]
        .into_iter()
        .filter_map(|k| contact[k].as_str())
        .collect();
    match (parts.is_empty(), contact["company"].as_str()) {
        (true, Some(company)) => company.to_string(),
        _ => parts.join(" "),
    }
}
