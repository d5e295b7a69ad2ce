//! `GET /v1/messages[/{id}]`, `DELETE /v1/messages/{id}`, `POST /v1/messages/{id}/retry`.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::view::{history_entry, queued_view};
use super::AppState;
use crate::protocol::{MessageList, MessageView};
use crate::store::{ListFilter, StoreError};

const STATES: [&str; 6] = [
    "queued",
    "sending",
    "sent",
    "failed",
    "expired",
    "cancelled",
];
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

fn not_found(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::UnknownMessage(id.to_string()),
        other => other.into(),
    }
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let row = state.store.message(&id).await.map_err(not_found(&id))?;
    let history = state.store.history(&id).await?;
    let mut view = queued_view(&state, &row, None).await;
    view.history = Some(history.iter().map(history_entry).collect());
    Ok(Json(view))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    instance: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let blank = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter_state = blank(q.state);
    if let Some(s) = &filter_state {
        if !STATES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "invalid query",
                format!("'state' must be one of {}", STATES.join(", ")),
            ));
        }
    }
    let limit = match blank(q.limit) {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid query",
                    format!("'limit' must be an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let filter = ListFilter {
        instance: blank(q.instance),
        state: filter_state,
        before: blank(q.before),
        limit,
    };
    let (rows, next) = state.store.list(&filter).await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        messages.push(queued_view(&state, row, None).await);
    }
    Ok(Json(MessageList { messages, next }))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let row = state.store.cancel(&id).await.map_err(not_found(&id))?;
    tracing::info!(message_id = %id, instance = %row.instance, "cancelled");
    crate::metrics::ended(&row.instance, "cancelled");
    Ok(Json(queued_view(&state, &row, None).await))
}

pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let max_age = crate::clock::duration_ms(state.settings.queue.max_age);
    let row = state
        .store
        .retry(&id, max_age)
        .await
        .map_err(not_found(&id))?;
    tracing::info!(message_id = %id, instance = %row.instance, "re-queued by retry");
    if let Some(line) = state.lines.get(&row.instance) {
        line.wake.notify_one();
    }
    Ok(Json(queued_view(&state, &row, None).await))
}
