//! `GET /v1/events?after=SEQ[&instance=NAME][&follow=true][&heartbeat=S]`: the event
//! stream as NDJSON (docs/api.md §11).
//!
//! A task pages through the store ([`PAGE`] events a read) and hands the lines to the
//! response body. Without `follow` it stops at the last event committed when the
//! request came; with it, it waits on the store's event counter (moved by the write
//! thread after each commit), so a new event goes out within moments of its commit,
//! and writes a heartbeat `{}` after `heartbeat` seconds (default 15) without a line.
//! The task ends when the client hangs up or the daemon shuts down. The connection's
//! idle clock does not run while a response streams (src/api/conn.rs).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::view::event_view;
use super::AppState;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Events read from the store at a time.
const PAGE: i64 = 1000;
/// Seconds between heartbeats of a follow stream, unless `heartbeat` says otherwise.
pub const HEARTBEAT_SECS: u64 = 15;
const MAX_HEARTBEAT_SECS: u64 = 300;

/// The query's parameters, each given at most once.
#[derive(Debug, Default)]
pub struct EventsQuery {
    after: Option<String>,
    instance: Option<String>,
    follow: Option<String>,
    heartbeat: Option<String>,
}

impl EventsQuery {
    /// Takes the query's pairs: an unknown parameter (a typo such as `afer` would
    /// otherwise stream from the start) or one given twice is a 400 naming it.
    fn parse(pairs: Vec<(String, String)>) -> Result<EventsQuery, ApiError> {
        let mut q = EventsQuery::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "after" => &mut q.after,
                "instance" => &mut q.instance,
                "follow" => &mut q.follow,
                "heartbeat" => &mut q.heartbeat,
                _ => {
                    return Err(bad(format!(
                        "'{key}' is not a parameter of /v1/events \
                         (after, instance, follow, heartbeat)"
                    )))
                }
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("'{key}' is given twice")));
            }
        }
        Ok(q)
    }
}

/// What a stream asks for, checked.
struct Wanted {
    after: i64,
    instance: Option<String>,
    follow: bool,
    heartbeat: Duration,
}

fn bad(details: String) -> ApiError {
    ApiError::bad_request("invalid query", details)
}

fn wanted(state: &AppState, q: EventsQuery) -> Result<Wanted, ApiError> {
    let blank = |v: Option<String>| v.filter(|s| !s.is_empty());
    let after = match blank(q.after) {
        None => 0,
        Some(a) => a.parse::<i64>().ok().filter(|a| *a >= 0).ok_or_else(|| {
            bad(format!(
                "'after' must be an event's seq (0 or more), not '{a}'"
            ))
        })?,
    };
    let instance = blank(q.instance);
    if let Some(name) = &instance {
        if state.lines.get(name).is_none() {
            return Err(ApiError::UnknownInstance(name.clone()));
        }
    }
    let follow = match blank(q.follow).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(format!(
                "'follow' must be true or false, not '{other}'"
            )))
        }
    };
    let heartbeat = match blank(q.heartbeat) {
        None => HEARTBEAT_SECS,
        Some(h) => h
            .parse::<u64>()
            .ok()
            .filter(|h| (1..=MAX_HEARTBEAT_SECS).contains(h))
            .ok_or_else(|| {
                bad(format!(
                    "'heartbeat' must be seconds from 1 to {MAX_HEARTBEAT_SECS}, not '{h}'"
                ))
            })?,
    };
    Ok(Wanted {
        after,
        instance,
        follow,
        heartbeat: Duration::from_secs(heartbeat),
    })
}

pub async fn events(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let wanted = wanted(&state, EventsQuery::parse(pairs)?)?;
    let ends = state.store.stream_ends().await?;
    // Events after `after` were deleted by retention: the reader would miss them.
    if let Some(oldest) = ends.oldest {
        if wanted.after.saturating_add(1) < oldest {
            return Err(ApiError::EventsGone(oldest));
        }
    }
    let (lines, body) = mpsc::channel::<Chunk>(4);
    let until = (!wanted.follow).then_some(ends.last);
    tokio::spawn(pump(
        state.store.clone(),
        wanted,
        until,
        lines,
        state.shutdown.clone(),
    ));
    let chunks = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// A piece of the body, or the error that ends it: an error aborts the response, so a
/// reader never takes a stream cut short by a failed read for a complete one.
type Chunk = Result<Bytes, std::io::Error>;

/// Sends the events after `wanted.after` (up to `until`, or for ever) into `lines`.
async fn pump(
    store: Store,
    wanted: Wanted,
    until: Option<i64>,
    lines: mpsc::Sender<Chunk>,
    mut shutdown: Shutdown,
) {
    let mut committed = store.subscribe_events();
    let mut after = wanted.after;
    let mut last_line = tokio::time::Instant::now();
    loop {
        // Marked seen before the read: a commit after it wakes the wait below.
        let seen = *committed.borrow_and_update();
        let limit = until.map_or(PAGE, |u| (u - after).clamp(0, PAGE));
        let mut page = if limit == 0 {
            Vec::new()
        } else {
            match store
                .events_after(after, wanted.instance.as_deref(), limit)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "event stream: reading the events failed");
                    let _ = lines.send(Err(std::io::Error::other(error))).await;
                    return;
                }
            }
        };
        let full = page.len() as i64 == limit && limit > 0;
        if let Some(until) = until {
            page.retain(|e| e.seq <= until);
        }
        if let Some(last) = page.last() {
            after = last.seq;
            let mut chunk = Vec::with_capacity(page.len() * 512);
            for event in &page {
                match event_view(event) {
                    Ok(view) => {
                        let _ = serde_json::to_writer(&mut chunk, &view);
                        chunk.push(b'\n');
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event stream: an event cannot be shown");
                        let _ = lines
                            .send(Err(std::io::Error::other(error.to_string())))
                            .await;
                        return;
                    }
                }
            }
            if lines.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            last_line = tokio::time::Instant::now();
            if full {
                continue;
            }
        }
        let Some(heartbeat) = wanted.follow.then_some(wanted.heartbeat) else {
            return;
        };
        // With an instance filter, the other instances' events move the counter: this
        // read saw every event up to `seen` at least, so the next may start there.
        if wanted.instance.is_some() {
            after = after.max(seen);
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(last_line + heartbeat) => {
                if lines.send(Ok(Bytes::from_static(b"{}\n"))).await.is_err() {
                    return;
                }
                last_line = tokio::time::Instant::now();
            }
            _ = lines.closed() => return,
            _ = shutdown.recv() => return,
        }
    }
}
