//! `POST /v1/messages:cancel` and `POST /v1/messages:retry`: many cards at once, by a
//! filter (docs/api.md §11). The filter is checked whole before anything is touched;
//! each call is one transaction of at most 10,000 cards, answered `{"count","more"}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::AppState;
use crate::protocol::BulkResult;
use crate::state::MessageState;
use crate::store::{BulkAction, BulkFilter};

/// The keys a filter may hold.
const KEYS: [&str; 4] = ["instance", "state", "chatId", "before"];

pub async fn cancel(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let filter = filter(&state, &body, &[MessageState::Queued])?;
    let outcome = state.store.bulk(&filter, BulkAction::Cancel).await?;
    for (instance, n) in &outcome.by_instance {
        crate::metrics::ended_many(instance, MessageState::Cancelled, *n);
        tracing::info!(instance = %instance, cards = n, "cancelled in bulk");
    }
    Ok(Json(BulkResult {
        count: outcome.count(),
        more: outcome.more,
    }))
}

pub async fn retry(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let filter = filter(
        &state,
        &body,
        &[MessageState::Failed, MessageState::Expired],
    )?;
    let max_age_ms = crate::clock::duration_ms(state.settings.queue.max_age);
    let outcome = state
        .store
        .bulk(&filter, BulkAction::Retry { max_age_ms })
        .await?;
    for (instance, n) in &outcome.by_instance {
        tracing::info!(instance = %instance, cards = n, "re-queued in bulk");
        if let Some(line) = state.lines.get(instance) {
            line.wake.notify_one();
        }
    }
    Ok(Json(BulkResult {
        count: outcome.count(),
        more: outcome.more,
    }))
}

/// The filter of a bulk call: a JSON object of [`KEYS`], at least one given (null
/// counts as not given), `state` one of `allowed`.
fn filter(state: &AppState, body: &[u8], allowed: &[MessageState]) -> Result<BulkFilter, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid JSON",
            format!("the body is not a JSON filter: {e}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(
            "invalid filter",
            "the body must be a JSON object like {\"instance\":\"main\",\"state\":\"queued\"}",
        ));
    };
    if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid filter",
            format!(
                "'{unknown}' is not allowed (the filter keys are {})",
                KEYS.join(", ")
            ),
        ));
    }
    let instance = text(&object, "instance")?;
    if let Some(name) = &instance {
        if state.lines.get(name).is_none() {
            return Err(ApiError::UnknownInstance(name.clone()));
        }
    }
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    let message_state = text(&object, "state")?
        .map(|s| {
            s.parse::<MessageState>()
                .ok()
                .filter(|s| allowed.contains(s))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid filter",
                        format!("'state' must be {} here, not '{s}'", names.join(" or ")),
                    )
                })
        })
        .transpose()?;
    let chat_id = text(&object, "chatId")?
        .map(|c| super::params::chat_id("invalid filter", c))
        .transpose()?;
    let before = text(&object, "before")?
        .map(|t| super::params::time("before", &t))
        .transpose()?;
    let filter = BulkFilter {
        instance,
        state: message_state.map(|s| s.as_str().to_string()),
        chat_id,
        before,
    };
    if filter == BulkFilter::default() {
        return Err(ApiError::bad_request(
            "invalid filter",
            format!("the filter must name at least one of {}", KEYS.join(", ")),
        ));
    }
    Ok(filter)
}

/// A filter key's text: absent or null is None, a non-empty string its value.
fn text(object: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(
            "invalid filter",
            format!("'{key}' must be a non-empty string"),
        )),
    }
}
