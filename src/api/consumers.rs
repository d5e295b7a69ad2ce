//! `/v1/consumers[/{name}]`: the cursors of the stream's named consumers (docs/api.md
//! §11). The daemon's hooks keep theirs themselves; an outside consumer (`contactq
//! follow --consumer NAME`) reads its cursor here, reads the events after it from
//! `GET /v1/events`, and moves it on (`PUT`) after each delivery, or records a failure.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::view::consumer_view;
use super::AppState;
use crate::protocol::{ConsumerList, ConsumerView, StreamStatus};
use crate::store::ConsumerRow;

/// What `status` and this API call a consumer of `name`.
pub(super) fn kind_of(state: &AppState, name: &str) -> &'static str {
    state
        .settings
        .hooks
        .get(name)
        .map_or("outside", |hook| hook.target.kind())
}

/// Every consumer, hooks and outside ones, with the stream's ends.
pub(super) async fn all(state: &AppState) -> Result<(StreamStatus, Vec<ConsumerView>), ApiError> {
    let ends = state.store.stream_ends().await?;
    let stream = StreamStatus {
        last_seq: ends.last,
        oldest_seq: ends.oldest,
    };
    let views = state
        .store
        .consumers()
        .await?
        .iter()
        .map(|row| consumer_view(row, kind_of(state, &row.name), ends.last))
        .collect();
    Ok((stream, views))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<ConsumerList>, ApiError> {
    let (stream, consumers) = all(&state).await?;
    Ok(Json(ConsumerList { stream, consumers }))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if fine {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid consumer name",
            "a consumer name is 1 to 64 letters, digits, '_' and '-'",
        ))
    }
}

async fn view(state: &AppState, name: &str) -> Result<Json<ConsumerView>, ApiError> {
    let row: ConsumerRow = state
        .store
        .consumer(name)
        .await?
        .ok_or_else(|| ApiError::UnknownConsumer(name.to_string()))?;
    let last = state.store.stream_ends().await?.last;
    Ok(Json(consumer_view(&row, kind_of(state, name), last)))
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ConsumerView>, ApiError> {
    check_name(&name)?;
    view(&state, &name).await
}

/// A hook's cursor is the daemon's to move: an outside process moving it would make
/// the hook skip or repeat events behind the daemon's back.
fn not_a_hook(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.settings.hooks.contains_key(name) {
        return Err(ApiError::Conflict(format!(
            "'{name}' is a hook of the daemon ([hooks.{name}]); it moves its own cursor"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CursorBody {
    pub cursor: i64,
}

/// `PUT /v1/consumers/{name}` `{"cursor":N}`: sets (or creates) the cursor; its run of
/// failures ends. N may be any `seq` from 0 to the last committed (back to replay).
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<CursorBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ConsumerView>, ApiError> {
    check_name(&name)?;
    not_a_hook(&state, &name)?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid body",
            format!("expected {{\"cursor\": N}}: {}", e.body_text()),
        )
    })?;
    let last = state.store.stream_ends().await?.last;
    if !(0..=last).contains(&body.cursor) {
        return Err(ApiError::bad_request(
            "invalid cursor",
            format!("'cursor' must be a seq from 0 to the last event, {last}"),
        ));
    }
    state.store.set_consumer_cursor(&name, body.cursor).await?;
    view(&state, &name).await
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureBody {
    pub error: String,
}

/// Longest error text kept for a consumer.
const MAX_ERROR: usize = 2000;

/// `POST /v1/consumers/{name}/failure` `{"error":"…"}`: a failed delivery, counted
/// and shown in `status`; the cursor stays.
pub async fn failure(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<FailureBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ConsumerView>, ApiError> {
    check_name(&name)?;
    not_a_hook(&state, &name)?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(
            "invalid body",
            format!("expected {{\"error\": \"…\"}}: {}", e.body_text()),
        )
    })?;
    let error = super::error::truncated(body.error, MAX_ERROR);
    if !state.store.consumer_failed(&name, &error).await? {
        return Err(ApiError::UnknownConsumer(name));
    }
    view(&state, &name).await
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    name: String,
    deleted: bool,
}

/// `DELETE /v1/consumers/{name}`: forgets an outside consumer's cursor.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    check_name(&name)?;
    not_a_hook(&state, &name)?;
    if !state.store.delete_consumer(&name).await? {
        return Err(ApiError::UnknownConsumer(name));
    }
    Ok(Json(Deleted {
        name,
        deleted: true,
    }))
}
