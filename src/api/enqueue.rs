//! `POST /v1/instances/{name}/sendContact` and `…/sendContact:batch`: validate, then
//! hand to the store's group-commit writer; answer 202 only after the commit.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::view::{fresh_views, not_due_views, queued_view};
use super::{AppState, PeerCred};
use crate::contact::{phone_warning, Card};
use crate::protocol::{BatchAccepted, MessageView};
use crate::store::{EnqueueOutcome, EnqueueRequest, MessageRow};

/// Largest single-card body (docs/api.md §4).
pub const MAX_BODY: usize = 100 * 1024;
/// Largest batch body.
pub const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;
/// Most cards one batch may hold; the parse stops at the next one, so a body of 16 MiB
/// of tiny items never becomes millions of JSON values in memory.
pub const MAX_BATCH_CARDS: usize = 10_000;
/// Most bad cards a batch's 400 lists (the first ones); it says how many there were.
/// An error answer stays small however bad the batch (see `error.rs`).
const MAX_LISTED_PROBLEMS: usize = 100;
/// Longest description of one bad card in that list.
const MAX_PROBLEM_CHARS: usize = 200;

pub async fn send_contact(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let body = admit(&state, &name, body, MAX_BODY)?;
    let not_before = not_before(&query)?;
    let value = parse_json(&body)?;
    let card = Card::parse(&value).map_err(|e| ApiError::bad_request(e.to_string(), e.detail))?;
    let asked = Asked {
        peer: &peer,
        headers: &headers,
        not_before,
    };
    let (status, rows, queued) = enqueue(&state, &name, &asked, vec![card]).await?;
    let views = views(&state, &rows, queued).await?;
    let view = views
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("enqueue returned no message".into()))?;
    Ok((status, Json(view)))
}

pub async fn send_contact_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let body = admit(&state, &name, body, MAX_BATCH_BODY)?;
    let not_before = not_before(&query)?;
    let Some(items) = parse_batch(&body)? else {
        return Err(ApiError::bad_request(
            "Validation failed. Details: 'value' must be an array",
            "'value' must be an array of sendContact bodies",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "Validation failed. Details: 'value' must contain at least 1 item",
            "'value' must contain at least 1 item",
        ));
    }
    let mut cards = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    let mut bad = 0usize;
    for (index, item) in items.iter().enumerate() {
        match Card::parse(item) {
            Ok(card) => cards.push(card),
            Err(e) => {
                bad += 1;
                if problems.len() < MAX_LISTED_PROBLEMS {
                    let detail = super::error::truncated(e.detail, MAX_PROBLEM_CHARS);
                    problems.push(format!("[{index}]: {detail}"));
                }
            }
        }
    }
    if bad > 0 {
        let mut details = problems.join("; ");
        if bad > problems.len() {
            details = format!(
                "{bad} of {} cards are invalid, the first {}: {details}",
                items.len(),
                problems.len()
            );
        }
        return Err(ApiError::bad_request(
            format!("Validation failed. Details: {details}"),
            details,
        ));
    }
    let asked = Asked {
        peer: &peer,
        headers: &headers,
        not_before,
    };
    let (status, rows, queued) = enqueue(&state, &name, &asked, cards).await?;
    let messages = views(&state, &rows, queued).await?;
    Ok((status, Json(BatchAccepted { messages })))
}

/// The checks before the body is read as JSON: instance and size.
fn admit(
    state: &AppState,
    name: &str,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    // The caller was authorized before its body was read (`caller_first` in mod.rs).
    if state.lines.get(name).is_none() {
        return Err(ApiError::UnknownInstance(name.to_string()));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::bad_request("invalid body", rejection.body_text())
        }
    })?;
    if body.len() > limit {
        return Err(ApiError::TooLarge(limit));
    }
    Ok(body)
}

/// The enqueue's query string: `notBefore` (docs/api.md §11) and nothing else.
fn not_before(query: &[(String, String)]) -> Result<Option<i64>, ApiError> {
    let mut found = None;
    for (key, value) in query {
        match key.as_str() {
            "notBefore" => {
                let at = super::params::not_before(value, crate::clock::now_ms())?;
                if found.replace(at).is_some() {
                    return Err(ApiError::bad_request(
                        "invalid query",
                        "'notBefore' is given twice",
                    ));
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid query",
                    format!("'{other}' is not allowed (the only query parameter is notBefore)"),
                ))
            }
        }
    }
    Ok(found)
}

/// What the caller asked besides the cards.
struct Asked<'a> {
    peer: &'a PeerCred,
    headers: &'a HeaderMap,
    not_before: Option<i64>,
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(invalid_json)
}

/// A batch body: its items (at most [`MAX_BATCH_CARDS`]), or None when it is valid
/// JSON but not an array. Nothing but the items kept is allocated.
fn parse_batch(body: &[u8]) -> Result<Option<Vec<Value>>, ApiError> {
    use serde::de::{Deserializer, Error, IgnoredAny, SeqAccess, Visitor};
    struct Items<'a>(&'a std::cell::Cell<bool>);
    impl<'de> Visitor<'de> for Items<'_> {
        type Value = Vec<Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<Value>()? {
                if out.len() == MAX_BATCH_CARDS {
                    self.0.set(true);
                    return Err(A::Error::custom("too many cards"));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array {
        return serde_json::from_slice::<IgnoredAny>(body)
            .map(|_| None)
            .map_err(invalid_json);
    }
    let too_many = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = de
        .deserialize_seq(Items(&too_many))
        .and_then(|items| de.end().map(|()| items));
    match items {
        Ok(items) => Ok(Some(items)),
        Err(_) if too_many.get() => Err(ApiError::bad_request(
            format!("Validation failed. Details: a batch holds at most {MAX_BATCH_CARDS} cards"),
            format!("a batch holds at most {MAX_BATCH_CARDS} cards: split it"),
        )),
        Err(e) => Err(invalid_json(e)),
    }
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_request("invalid JSON", format!("the body is not valid JSON: {e}"))
}

async fn enqueue(
    state: &AppState,
    name: &str,
    asked: &Asked<'_>,
    cards: Vec<Card>,
) -> Result<(StatusCode, Vec<MessageRow>, Option<i64>), ApiError> {
    let idempotency_key = match asked.headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 256);
            Some(
                key.ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid Idempotency-Key",
                        "'Idempotency-Key' must be 1 to 256 visible ASCII characters",
                    )
                })?
                .to_string(),
            )
        }
    };
    let started = std::time::Instant::now();
    let outcome = state
        .store
        .enqueue(EnqueueRequest {
            instance: name.to_string(),
            cards,
            idempotency_key,
            peer_uid: asked.peer.uid,
            max_age_ms: crate::clock::duration_ms(state.settings.queue.max_age),
            not_before: asked.not_before,
        })
        .await?;
    crate::metrics::enqueue_latency(started.elapsed());
    match outcome {
        EnqueueOutcome::Created { rows, queued } => {
            crate::metrics::enqueued(name, rows.len() as u64);
            if let Some(line) = state.lines.get(name) {
                if rows.iter().any(|r| r.due_at.is_some()) {
                    line.due_changed();
                }
                line.wake.notify_one();
            }
            tracing::debug!(instance = name, cards = rows.len(), first = %rows[0].id, "enqueued");
            Ok((StatusCode::ACCEPTED, rows, queued))
        }
        EnqueueOutcome::Repeated(rows) => Ok((StatusCode::OK, rows, None)),
    }
}

/// Views of enqueued rows. Fresh ones take their positions from the queued count the
/// writer read at the commit (the new cards are at the tail), so an enqueue costs no
/// read of its own; an idempotent repeat looks its positions up.
async fn views(
    state: &AppState,
    rows: &[MessageRow],
    queued: Option<i64>,
) -> Result<Vec<MessageView>, ApiError> {
    let mut views = positioned_views(state, rows, queued).await?;
    views.iter_mut().for_each(with_warnings);
    Ok(views)
}

/// Every warning of an enqueue answer, the card's own (from validation) first;
/// `warning` holds the first of them.
fn with_warnings(view: &mut MessageView) {
    let mut warnings: Vec<String> = view.contact["phoneContact"]
        .as_u64()
        .and_then(phone_warning)
        .into_iter()
        .collect();
    warnings.extend(view.warnings.take().unwrap_or_default());
    view.warning = warnings.first().cloned();
    view.warnings = Some(warnings);
}

async fn positioned_views(
    state: &AppState,
    rows: &[MessageRow],
    queued: Option<i64>,
) -> Result<Vec<MessageView>, ApiError> {
    if rows.first().is_some_and(MessageRow::not_yet_due) {
        return not_due_views(state, rows).await;
    }
    match queued {
        Some(q) => {
            let n = rows.len() as i64;
            let positions = (0..n).map(|i| (q - n + i + 1).max(1));
            fresh_views(state, rows, positions)
        }
        None => {
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(queued_view(state, row, None).await?);
            }
            Ok(out)
        }
    }
}
