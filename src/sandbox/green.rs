//! The emulated Green API methods, at `/waInstance{idInstance}/{method}/{apiTokenInstance}`:
//! `sendContact`, `getStateInstance`, `getSettings`, `lastOutgoingMessages`,
//! `showMessagesQueue`.
//!
//! Every request is counted, then checked in the real API's order: token (401, or the
//! `refuseStatus` knob's 401/403), the per-second limits (429), the method quota
//! (466), latency; `sendContact` then answers the `redirectTo` knob's 307, else takes a
//! scripted answer if one is queued, else the chats quota's 466 for a chat not in
//! `allowedChats`, else maybe a random failure, else the real validation and state
//! checks.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde_json::{json, Value};

use super::conn::ConnHandle;
use super::knobs::Knobs;
use super::replies;
use super::types::ScriptStep;
use super::validate;
use super::world::{now_ms, Shared};
use crate::state::Authorization;

const METHODS: [&str; 5] = [
    "sendContact",
    "getStateInstance",
    "getSettings",
    "lastOutgoingMessages",
    "showMessagesQueue",
];

/// The one handler behind `/{instance}/{method}/{token}`.
pub async fn handle(
    State(world): State<Shared>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path((instance, method, token)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    verb: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some(id) = instance
        .strip_prefix("waInstance")
        .filter(|s| !s.is_empty())
    else {
        return not_found(&verb, path);
    };
    let knobs = {
        let mut w = world.lock();
        w.count(id, &method);
        if !METHODS.contains(&method.as_str()) {
            return not_found(&verb, path);
        }
        if !w.token_ok(id, &token) {
            return replies::unauthorized();
        }
        let knobs = w.knobs(id);
        match knobs.refuse_status {
            401 => return replies::unauthorized(),
            403 => return replies::forbidden(path),
            _ => {}
        }
        if let Err(wait) = w.rate_check(id, &method) {
            return replies::too_many(Some(wait.as_secs_f64().ceil().max(1.0) as u64));
        }
        if knobs.method_over_quota(&method) {
            return replies::method_quota_exceeded(&method);
        }
        knobs
    };
    let resp = match (verb.clone(), method.as_str()) {
        (Method::POST, "sendContact") => send_contact(&world, id, &knobs, &conn, path, &body).await,
        (Method::GET, "getStateInstance") => {
            Json(json!({ "stateInstance": knobs.state })).into_response()
        }
        (Method::GET, "getSettings") => Json(settings(id, &knobs)).into_response(),
        (Method::GET, "lastOutgoingMessages") => {
            let minutes = query
                .get("minutes")
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or(1440);
            let mut w = world.lock();
            let now = now_ms();
            w.drain_due(id, now);
            Json(w.journal(id, minutes, now)).into_response()
        }
        (Method::GET, "showMessagesQueue") => {
            let mut w = world.lock();
            w.drain_due(id, now_ms());
            Json(w.queue_view(id)).into_response()
        }
        _ => not_found(&verb, path),
    };
    // Latency delays the answer, not the effect (see `scripted`).
    if !knobs.latency.is_zero() {
        tokio::time::sleep(knobs.latency).await;
    }
    tracing::debug!(
        instance = id,
        method,
        status = resp.status().as_u16(),
        "sandbox answered"
    );
    resp
}

async fn send_contact(
    world: &Shared,
    id: &str,
    knobs: &Knobs,
    conn: &ConnHandle,
    path: &str,
    body: &[u8],
) -> Response {
    if !knobs.redirect_to.is_empty() {
        return replies::redirect(&knobs.redirect_to, path);
    }
    let step = world.lock().instance(id).script.pop_front();
    if let Some(step) = step {
        return scripted(world, id, knobs, conn, path, body, step).await;
    }
    if let Ok(card) = validate::send_contact(body) {
        if knobs.chat_over_quota(&card.chat_id) {
            return replies::chats_quota_exceeded(&knobs.allowed_chats);
        }
    }
    if knobs.fail_rate > 0.0 && rand::rng().random::<f64>() < knobs.fail_rate {
        let statuses = &knobs.fail_statuses;
        let status = match statuses.len() {
            0 => 500,
            n => statuses[rand::rng().random_range(0..n)],
        };
        let chat_id = validate::send_contact(body).ok().map(|c| c.chat_id);
        let retry = (status == 429).then(|| knobs.retry_after_seconds.unwrap_or(1));
        return replies::default_for(status, path, chat_id.as_deref(), retry);
    }
    if knobs.drop_after_write > 0.0 && rand::rng().random::<f64>() < knobs.drop_after_write {
        // The request is handled as usual (a valid card is taken and recorded), then
        // the connection is closed before a byte of the answer: the client cannot
        // know whether its card went out.
        let answer = answer_normally(world, id, knobs, path, body);
        tracing::debug!(
            instance = id,
            status = answer.status().as_u16(),
            "sandbox drops the connection after the request"
        );
        conn.cut();
        return answer;
    }
    answer_normally(world, id, knobs, path, body)
}

/// The real API's behaviour: validate, check the state, take the card into the queue.
fn answer_normally(world: &Shared, id: &str, knobs: &Knobs, path: &str, body: &[u8]) -> Response {
    let card = match validate::send_contact(body) {
        Ok(card) => card,
        Err(text) => return replies::nest_error(400, path, &text),
    };
    // The real API queues cards for 24 h while unauthorized; these two answers are
    // what it gives meanwhile on some paths, and what the daemon must wait through.
    match knobs.state {
        Authorization::NotAuthorized => {
            return replies::nest_error(400, path, "instance account not authorized")
        }
        Authorization::Starting => {
            return replies::nest_error(400, path, "instance in starting process try later")
        }
        _ => {}
    }
    let raw: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id_message = world.lock().accept(id, &raw, card, now_ms());
    replies::accepted(&id_message)
}

async fn scripted(
    world: &Shared,
    id: &str,
    knobs: &Knobs,
    conn: &ConnHandle,
    path: &str,
    body: &[u8],
    step: ScriptStep,
) -> Response {
    // The effect (a card taken) happens on receipt, like a real server that keeps
    // working after its client hung up; only the answer waits for the delay.
    let response = scripted_effect(world, id, knobs, conn, path, body, &step);
    if !step.delay.is_zero() {
        tokio::time::sleep(step.delay).await;
    }
    if step.drop_connection {
        // Never written: the cut stream fails hyper's first write, so hyper drops the
        // connection and the client sees the socket close with no answer.
        conn.cut();
    }
    response
}

fn scripted_effect(
    world: &Shared,
    id: &str,
    knobs: &Knobs,
    _conn: &ConnHandle,
    path: &str,
    body: &[u8],
    step: &ScriptStep,
) -> Response {
    if step.status == 200 && step.body.is_none() && !step.drop_connection {
        return answer_normally(world, id, knobs, path, body);
    }
    let card = validate::send_contact(body).ok();
    let chat_id = card.as_ref().map(|c| c.chat_id.clone());
    if let (true, Some(card)) = (step.accept, card) {
        let raw: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        world.lock().accept(id, &raw, card, now_ms());
    }
    if step.drop_connection {
        return replies::nest_error(500, path, "dropped");
    }
    match &step.body {
        Some(body) => replies::custom(step.status, body, step.retry_after),
        None => replies::default_for(step.status, path, chat_id.as_deref(), step.retry_after),
    }
}

/// `getSettings`: the real keys, with the emulated send delay.
fn settings(id: &str, knobs: &Knobs) -> Value {
    let no = "no";
    let yes = "yes";
    json!({
        "wid": format!("{id}@c.us"),
        "countryInstance": "",
        "typeAccount": "",
        "webhookUrl": "",
        "webhookUrlToken": "",
        "delaySendMessagesMilliseconds": knobs.delay_send_ms,
        "markIncomingMessagesReaded": no,
        "markIncomingMessagesReadedOnReply": no,
        "sharedSession": no,
        "outgoingWebhook": yes,
        "outgoingMessageWebhook": no,
        "outgoingAPIMessageWebhook": yes,
        "incomingWebhook": yes,
        "deviceWebhook": no,
        "statusInstanceWebhook": no,
        "stateWebhook": no,
        "enableMessagesHistory": no,
        "keepOnlineStatus": no,
        "pollMessageWebhook": no,
        "incomingBlockWebhook": yes,
        "incomingCallWebhook": yes,
        "editedMessageWebhook": no,
        "deletedMessageWebhook": no,
    })
}

/// NestJS's answer to a route it does not have.
pub fn not_found(verb: &Method, path: &str) -> Response {
    replies::nest_error(404, path, &format!("Cannot {verb} {path}"))
}
