//! The steering endpoints on the sandbox's own listener, for tests and demos:
//! `GET|POST /sandbox/control` (knobs), `POST /sandbox/script` (scripted answers for
//! the next `sendContact`s), `GET /sandbox/sent?instance=ID` (every accepted card),
//! `POST /sandbox/typed` (a card sent from the phone, into the journal),
//! `POST /sandbox/status` (pin the `statusMessage` of a message or a chat).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::knobs::KnobPatch;
use super::types::ScriptStep;
use super::world::{Shared, StatusTarget, STATUSES};
use crate::state::Authorization;

/// Why a steering request was refused (answered 400 `{"error": …}`).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown state '{0}' (one of: {names})", names = Authorization::api_names().join(", "))]
    State(String),
    #[error("failRate must be between 0 and 1, got {0}")]
    FailRate(f64),
    #[error("dropAfterWrite must be between 0 and 1, got {0}")]
    DropAfterWrite(f64),
    #[error("status {0} is not an HTTP status (100-999)")]
    Status(u16),
    #[error("refuseStatus must be 401, 403 or 0 (off), got {0}")]
    RefuseStatus(u16),
    #[error("redirectTo must be an http:// URL or empty, got '{0}'")]
    RedirectTo(String),
    #[error("'token' needs an 'instance'")]
    TokenWithoutInstance,
    #[error("unknown field '{0}'")]
    UnknownField(String),
    #[error("body: {0}")]
    Card(String),
    #[error("unknown status '{0}' (one of: {names}; null lifts the pin)", names = STATUSES.join(", "))]
    UnknownStatus(String),
    #[error("give exactly one of 'idMessage' and 'chatId'")]
    StatusTarget,
}

/// Every key `POST /sandbox/control` understands.
const CONTROL_KEYS: [&str; 19] = [
    "instance",
    "state",
    "failRate",
    "failStatuses",
    "retryAfterSeconds",
    "latencyMs",
    "delaySendMessagesMilliseconds",
    "journalLagMs",
    "rateLimits",
    "token",
    "allowedChats",
    "quotaMethods",
    "refuseStatus",
    "redirectTo",
    "dropAfterWrite",
    "clockSkewMs",
    "vcardItemTel",
    "deliverAfterMs",
    "readAfterMs",
];

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// `POST /sandbox/control`: knobs plus the global and per-instance extras.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ControlRequest {
    #[serde(default)]
    instance: Option<String>,
    #[serde(flatten)]
    knobs: KnobPatch,
    /// Switches the per-second request limits on or off (for every instance).
    #[serde(default)]
    rate_limits: Option<bool>,
    /// The only token `instance` accepts from now on.
    #[serde(default)]
    token: Option<String>,
}

/// Checks a patch before it is applied, so a typo cannot half-apply.
pub fn check_patch(patch: &KnobPatch) -> Result<(), ControlError> {
    if let Some(state) = &patch.state {
        if !state.is_api_state() {
            return Err(ControlError::State(state.to_string()));
        }
    }
    if let Some(rate) = patch.fail_rate {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ControlError::FailRate(rate));
        }
    }
    if let Some(rate) = patch.drop_after_write {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ControlError::DropAfterWrite(rate));
        }
    }
    for &status in patch.fail_statuses.iter().flatten() {
        check_status(status)?;
    }
    if let Some(status) = patch.refuse_status {
        if !matches!(status, 0 | 401 | 403) {
            return Err(ControlError::RefuseStatus(status));
        }
    }
    if let Some(url) = &patch.redirect_to {
        if !url.is_empty() && !url.starts_with("http://") {
            return Err(ControlError::RedirectTo(url.clone()));
        }
    }
    Ok(())
}

fn check_status(status: u16) -> Result<(), ControlError> {
    if (100..=999).contains(&status) {
        Ok(())
    } else {
        Err(ControlError::Status(status))
    }
}

pub async fn update(State(world): State<Shared>, body: Bytes) -> Result<Json<Value>, ControlError> {
    // serde's `deny_unknown_fields` does not work together with `flatten`, so a
    // misspelt knob is caught here rather than silently ignored.
    let raw: Value = serde_json::from_slice(&body)?;
    if let Some(key) = raw
        .as_object()
        .and_then(|o| o.keys().find(|k| !CONTROL_KEYS.contains(&k.as_str())))
    {
        return Err(ControlError::UnknownField(key.clone()));
    }
    let req: ControlRequest = serde_json::from_value(raw)?;
    check_patch(&req.knobs)?;
    if req.token.is_some() && req.instance.is_none() {
        return Err(ControlError::TokenWithoutInstance);
    }
    {
        let mut w = world.lock();
        w.patch(req.instance.as_deref(), &req.knobs);
        if let Some(on) = req.rate_limits {
            w.rate_limits = on;
        }
        if let (Some(id), Some(token)) = (req.instance.as_deref(), req.token) {
            w.instance(id).token = Some(token);
        }
    }
    Ok(Json(view(&world)))
}

pub async fn show(State(world): State<Shared>) -> Json<Value> {
    Json(view(&world))
}

/// The current settings: the defaults and each known instance's effective knobs.
fn view(world: &Shared) -> Value {
    let w = world.lock();
    let instances: BTreeMap<&str, Value> = w
        .instances
        .iter()
        .map(|(id, inst)| {
            let mut v = serde_json::to_value(w.knobs(id).view()).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("overrides".into(), json!(inst.overrides));
                obj.insert("tokenConfigured".into(), json!(inst.token.is_some()));
                obj.insert("queued".into(), json!(w.queue_len(id)));
                obj.insert("sent".into(), json!(w.sent_len(id)));
                obj.insert("accepted".into(), json!(inst.received.len()));
                obj.insert("scriptStepsLeft".into(), json!(inst.script.len()));
                obj.insert("requests".into(), json!(inst.requests));
                obj.insert("limited".into(), json!(inst.limited));
                obj.insert("pinnedMessages".into(), json!(inst.pinned_messages));
                obj.insert("pinnedChats".into(), json!(inst.pinned_chats));
            }
            (id.as_str(), v)
        })
        .collect();
    json!({
        "defaults": w.defaults.view(),
        "rateLimits": w.rate_limits,
        "instances": instances,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScriptRequest {
    instance: String,
    steps: Vec<ScriptStep>,
}

pub async fn script(State(world): State<Shared>, body: Bytes) -> Result<Json<Value>, ControlError> {
    let req: ScriptRequest = serde_json::from_slice(&body)?;
    for step in &req.steps {
        check_status(step.status)?;
    }
    let mut w = world.lock();
    let script = &mut w.instance(&req.instance).script;
    script.extend(req.steps);
    Ok(Json(
        json!({ "instance": req.instance, "stepsLeft": script.len() }),
    ))
}

pub async fn sent(
    State(world): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let w = world.lock();
    let cards: Vec<Value> = match query.get("instance") {
        Some(id) => w
            .instances
            .get(id)
            .map(|i| i.received.iter().map(|c| json!(c)).collect())
            .unwrap_or_default(),
        None => {
            let mut all: Vec<Value> = w
                .instances
                .iter()
                .flat_map(|(id, i)| {
                    i.received.iter().map(move |c| {
                        let mut v = json!(c);
                        if let Some(obj) = v.as_object_mut() {
                            obj.insert("instance".into(), json!(id));
                        }
                        v
                    })
                })
                .collect();
            all.sort_by_key(|v| v["receivedAt"].as_i64());
            all
        }
    };
    Json(Value::Array(cards))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TypedRequest {
    instance: String,
    /// A `sendContact` body: what was sent from the phone.
    body: Value,
    /// When it went out (Unix ms); now when absent.
    #[serde(default)]
    at_ms: Option<i64>,
}

/// `POST /sandbox/typed`: a contact card sent from the phone itself, listed in the
/// journal with `sendByApi: false`, as the real journal lists everything the account
/// sent. Answers its `idMessage`.
pub async fn typed(State(world): State<Shared>, body: Bytes) -> Result<Json<Value>, ControlError> {
    let req: TypedRequest = serde_json::from_slice(&body)?;
    let card = super::validate::send_contact(req.body.to_string().as_bytes())
        .map_err(ControlError::Card)?;
    let at = req.at_ms.unwrap_or_else(super::world::now_ms);
    let id_message = world.lock().typed_on_phone(&req.instance, card, at);
    Ok(Json(json!({ "idMessage": id_message })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusRequest {
    instance: String,
    #[serde(default)]
    id_message: Option<String>,
    #[serde(default)]
    chat_id: Option<String>,
    /// The `statusMessage` to show from now on; null lifts the pin.
    status: Option<String>,
}

/// `POST /sandbox/status`: pins what `lastOutgoingMessages` reports as the
/// `statusMessage` of one message (`idMessage`) or of every message to one chat
/// (`chatId`, e.g. `noAccount` for a number without WhatsApp, or `pending` / `sent` for
/// a message that never confirms); `"status": null` lets it move on by the delays again.
pub async fn status(State(world): State<Shared>, body: Bytes) -> Result<Json<Value>, ControlError> {
    let req: StatusRequest = serde_json::from_slice(&body)?;
    let target = match (req.id_message, req.chat_id) {
        (Some(m), None) => StatusTarget::Message(m),
        (None, Some(c)) => StatusTarget::Chat(c),
        _ => return Err(ControlError::StatusTarget),
    };
    if let Some(s) = &req.status {
        check_journal_status(s)?;
    }
    world
        .lock()
        .pin_status(&req.instance, &target, req.status.clone());
    Ok(Json(
        json!({ "instance": req.instance, "status": req.status }),
    ))
}

/// Whether `status` is one of the journal's `statusMessage` values.
pub fn check_journal_status(status: &str) -> Result<(), ControlError> {
    if STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(ControlError::UnknownStatus(status.to_owned()))
    }
}
