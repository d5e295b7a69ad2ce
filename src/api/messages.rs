//! `GET /v1/messages[/{id}]`, `DELETE /v1/messages/{id}`, `POST /v1/messages/{id}/retry`.
//! The list filters by instance, state, chat, phone and id prefix (the CLI finds a
//! message by the start of its id that way).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::view::{history_entry, queued_view};
use super::AppState;
use crate::ids::MessageId;
use crate::protocol::{MessageList, MessageView};
use crate::state::MessageState;
use crate::store::{ListFilter, StoreError};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

fn not_found(id: &MessageId) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::UnknownMessage(id.to_string()),
        other => other.into(),
    }
}

/// The id in the path, in any case. A text that is not a ULID names no message: it
/// is answered like an unknown id (404), as before ids were parsed.
fn message_id(text: &str) -> Result<MessageId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::UnknownMessage(text.to_string()))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = message_id(&id)?;
    let row = state
        .store
        .message(id.as_str())
        .await
        .map_err(not_found(&id))?;
    let history = state.store.history(id.as_str()).await?;
    let mut view = queued_view(&state, &row, None).await?;
    view.history = Some(history.iter().map(history_entry).collect());
    Ok(Json(view))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    instance: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    #[serde(rename = "chatId")]
    chat_id: Option<String>,
    phone: Option<String>,
    #[serde(rename = "idPrefix")]
    id_prefix: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let blank = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter_state: Option<MessageState> =
        blank(q.state).map(|s| s.parse()).transpose().map_err(|_| {
            ApiError::bad_request(
                "invalid query",
                format!(
                    "'state' must be one of {}",
                    MessageState::names().join(", ")
                ),
            )
        })?;
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
        state: filter_state.map(|s| s.as_str().to_string()),
        chat_id: blank(q.chat_id)
            .map(|c| super::params::chat_id("invalid query", c))
            .transpose()?,
        phone: blank(q.phone)
            .map(|p| super::params::phone(&p))
            .transpose()?,
        id_prefix: blank(q.id_prefix)
            .map(|p| super::params::id_prefix(&p))
            .transpose()?,
        before: blank(q.before),
        limit,
    };
    let (rows, next) = state.store.list(&filter).await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        messages.push(queued_view(&state, row, None).await?);
    }
    Ok(Json(MessageList { messages, next }))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = message_id(&id)?;
    let row = state
        .store
        .cancel(id.as_str())
        .await
        .map_err(not_found(&id))?;
    tracing::info!(message_id = %id, instance = %row.instance, "cancelled");
    crate::metrics::ended(&row.instance, MessageState::Cancelled);
    Ok(Json(queued_view(&state, &row, None).await?))
}

pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    let id = message_id(&id)?;
    let max_age = crate::clock::duration_ms(state.settings.queue.max_age);
    let row = state
        .store
        .retry(id.as_str(), max_age)
        .await
        .map_err(not_found(&id))?;
    tracing::info!(message_id = %id, instance = %row.instance, "re-queued by retry");
    if let Some(line) = state.lines.get(&row.instance) {
        line.wake.notify_one();
    }
    Ok(Json(queued_view(&state, &row, None).await?))
}
