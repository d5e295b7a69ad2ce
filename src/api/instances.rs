//! `POST /v1/instances/{name}/pause|resume|flush`, `GET /v1/status`, `GET /v1/health`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::ApiError;
use super::AppState;
use crate::clock::{format_ms, now_ms};
use crate::lines::{quiet_text, LineStatus};
use crate::protocol::{FlushState, Health, InstanceStatus, NodeStatus, PauseState, StatusView};
use crate::state::{Delivery, MessageState};

pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    set_paused(state, name, true).await
}

pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    set_paused(state, name, false).await
}

async fn set_paused(
    state: AppState,
    name: String,
    paused: bool,
) -> Result<Json<PauseState>, ApiError> {
    let line = state
        .lines
        .get(&name)
        .ok_or_else(|| ApiError::UnknownInstance(name.clone()))?;
    state.store.set_paused(&name, paused).await?;
    line.instance_changed();
    if !paused {
        // `resume` cleared the chat holds too.
        line.holds_changed();
    }
    tracing::info!(instance = %name, paused, "line {}", if paused { "paused" } else { "resumed" });
    line.wake.notify_one();
    Ok(Json(PauseState {
        instance: name,
        paused,
    }))
}

/// `POST /v1/instances/{name}/flush`: the drain asks `getStateInstance` now and ends
/// any back-off, so a re-authorized instance drains at once. Quota holds stay (they
/// end with `quota_retry` or `resume`); a paused line stays paused.
pub async fn flush(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FlushState>, ApiError> {
    let line = state
        .lines
        .get(&name)
        .ok_or_else(|| ApiError::UnknownInstance(name.clone()))?;
    // Every change is checked against the database files by the write thread after its
    // commit; a flush writes nothing, so it checks them here: a daemon whose database
    // is gone answers 503 rather than promise a drain.
    state.store.verify_files()?;
    line.request_flush();
    // On a shared database the drainer may be another daemon: tell it.
    state.store.forward_flush(&name).await?;
    tracing::info!(instance = %name, "flush asked");
    Ok(Json(FlushState {
        instance: name,
        flushed: true,
    }))
}

pub async fn status(State(state): State<AppState>) -> Result<Json<StatusView>, ApiError> {
    let now = now_ms();
    let mut instances = Vec::with_capacity(state.lines.len());
    for (name, line) in state.lines.iter() {
        let counts = state.store.counts(name).await?;
        let persisted = state.store.instance(name).await?;
        let live = line.status();
        let quiet_now = match (&live.quiet, live.quiet_until(now)) {
            (Some(quiet), Some(until)) => Some(quiet_text(&quiet.to_string(), until)),
            _ => None,
        };
        let lease = state
            .store
            .lease_view(name, &state.settings.daemon.node)
            .await?;
        let held = if persisted.paused {
            Some("paused".to_string())
        } else {
            live.hold.as_ref().map(|h| h.describe()).or(quiet_now)
        };
        let scheduled = counts.get("scheduled");
        // The store counts by its state text; the names come from the one enum.
        let count = |state: MessageState| counts.get(state.as_str());
        instances.push(InstanceStatus {
            name: name.clone(),
            authorization: live.authorization.clone(),
            queued: count(MessageState::Queued),
            sending: count(MessageState::Sending),
            sent: count(MessageState::Sent),
            failed: count(MessageState::Failed),
            expired: count(MessageState::Expired),
            cancelled: count(MessageState::Cancelled),
            oldest_queued_age_seconds: counts
                .oldest_queued_at
                .map(|at| ((now - at).max(0) as f64) / 1000.0),
            send_delay_ms: live.send_delay_ms,
            next_send_at: next_send_at(
                &live,
                count(MessageState::Queued) - scheduled,
                persisted.paused,
                now,
            ),
            paused: persisted.paused,
            last_error: live.last_error.clone(),
            held,
            scheduled,
            quiet_hours: live.quiet.as_ref().map(ToString::to_string),
            delivery: Delivery::ALL
                .into_iter()
                .map(|d| (d, counts.get(&format!("delivery:{d}"))))
                .collect(),
            drained_by: lease.drained_by,
            lease_epoch: lease.epoch,
        });
    }
    let (stream, consumers) = super::consumers::all(&state).await?;
    let nodes = state
        .store
        .nodes(&state.settings.daemon.node)
        .await?
        .into_iter()
        .map(|n| NodeStatus {
            name: n.name,
            last_seen: format_ms(n.last_seen_ms),
        })
        .collect();
    Ok(Json(StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        instances,
        durability: Some(state.store.durability().await?.to_string()),
        stream: Some(stream),
        consumers,
        nodes,
    }))
}

/// When the next card is expected to go: null with nothing due in line or the line
/// held.
fn next_send_at(live: &LineStatus, queued: i64, paused: bool, now: i64) -> Option<String> {
    if queued == 0 || paused {
        return None;
    }
    live.first_send_at(now).map(format_ms)
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.store.healthy().await {
        (StatusCode::OK, Json(Health { ok: true }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { ok: false }))
    }
}
