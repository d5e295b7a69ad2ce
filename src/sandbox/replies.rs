//! The answers the real Green API gives, byte for byte where it matters: NestJS-style
//! error bodies (which echo the request path, token included), the plain-text 401,
//! the 466 quota bodies (method and chats quota), a redirect, nginx's 502/504 pages, and journal entries with their vCard.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::validate::Card;

/// `{"statusCode":…,"timestamp":…,"path":…,"message":…}` as the API's NestJS layer
/// answers; `path` is the request path with the token in it, as the real API does.
pub fn nest_error(status: u16, path: &str, message: &str) -> Response {
    let body = json!({
        "statusCode": status,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "path": path,
        "message": message,
    });
    with_status(status, Json(body).into_response())
}

/// A wrong token: 401 with the plain text `Unauthorized`.
pub fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "Unauthorized").into_response()
}

/// Over a request limit (or a scripted / random 429).
pub fn too_many(retry_after: Option<u64>) -> Response {
    let resp = with_status(
        429,
        Json(json!({"message": "Too Many Requests"})).into_response(),
    );
    with_retry_after(resp, retry_after)
}

/// The method quota (Developer plan) is used up: the whole method is refused.
pub fn method_quota_exceeded(method: &str) -> Response {
    let body = json!({
        "invokeStatus": {
            "method": method.to_lowercase(),
            "used": 100,
            "total": 100,
            "status": "QUOTE_EXCEEDED",
            "description": "Monthly quota has been exceeded. To continue, please go to your \
                            personal account and upgrade your plan.",
        }
    });
    with_status(466, Json(body).into_response())
}

/// The chats quota (Developer plan) is used up: only the `allowed` chats can be
/// reached this month, every other chat is refused.
pub fn chats_quota_exceeded(allowed: &[String]) -> Response {
    let body = json!({
        "invokeStatus": {
            "method": "sendcontact",
            "used": 67,
            "total": 0,
            "status": "QUOTE_ALLOWED",
        },
        "correspondentsStatus": {
            "method": "correspondents",
            "used": allowed.len(),
            "total": allowed.len(),
            "status": "CORRESPONDENTS_QUOTE_EXCEEDED",
            "description": format!(
                "Monthly quota has been exceeded. You can only send or receive messages \
                 from these numbers: {}. Please go to your personal account and upgrade \
                 your plan.",
                allowed.join(",")
            ),
        }
    });
    with_status(466, Json(body).into_response())
}

/// A wrong idInstance: the API answers 403.
pub fn forbidden(path: &str) -> Response {
    nest_error(403, path, "Forbidden")
}

/// A redirect to `base` + the request path (token included), as a misconfigured
/// proxy might answer: the daemon must not follow it.
pub fn redirect(base: &str, path: &str) -> Response {
    let mut resp = with_status(307, "moved".into_response());
    if let Ok(location) = HeaderValue::from_str(&format!("{base}{path}")) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

/// The body the real API gives with `status` when nothing more specific is known.
///
/// A 466 is the method quota (the whole line); the chats quota is the `allowedChats`
/// knob.
pub fn default_for(
    status: u16,
    path: &str,
    _chat_id: Option<&str>,
    retry: Option<u64>,
) -> Response {
    let resp = match status {
        401 => unauthorized(),
        429 => too_many(Some(retry.unwrap_or(1))),
        466 => method_quota_exceeded("sendContact"),
        400 => nest_error(400, path, "Bad Request"),
        403 => forbidden(path),
        502 | 504 => nginx_page(status),
        _ => nest_error(status, path, reason(status)),
    };
    with_retry_after(resp, retry)
}

/// A scripted body: a JSON string is sent as plain text, anything else as JSON.
pub fn custom(status: u16, body: &Value, retry: Option<u64>) -> Response {
    let resp = match body {
        Value::String(text) => text.clone().into_response(),
        other => Json(other.clone()).into_response(),
    };
    with_retry_after(with_status(status, resp), retry)
}

/// A successful send.
pub fn accepted(id_message: &str) -> Response {
    Json(json!({ "idMessage": id_message })).into_response()
}

/// What nginx in front of the API answers when the backend is down or slow.
fn nginx_page(status: u16) -> Response {
    let title = format!("{status} {}", reason(status));
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>\
         </center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = with_status(status, html.into_response());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

fn with_status(status: u16, mut resp: Response) -> Response {
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// One `lastOutgoingMessages` entry for a sent contact card.
pub fn journal_entry(id_message: &str, card: &Card, timestamp: i64, item_tel: bool) -> Value {
    let (display_name, vcard) = vcard(card, item_tel);
    let mut entry = json!({
        "type": "outgoing",
        "idMessage": id_message,
        "timestamp": timestamp,
        "typeMessage": "contactMessage",
        "chatId": card.chat_id,
        "contact": { "displayName": display_name, "vcard": vcard },
        "statusMessage": "sent",
        "sendByApi": true,
    });
    if let (Some(quoted), Some(obj)) = (&card.quoted_message_id, entry.as_object_mut()) {
        obj.insert("quotedMessageId".to_owned(), json!(quoted));
    }
    entry
}

/// The display name and vCard WhatsApp makes of a contact, e.g.
/// `N:Evpatoriysky;Artem;Petrovich;;` and `FN:Artem Evpatoriysky`.
pub fn vcard(card: &Card, item_tel: bool) -> (String, String) {
    let c = &card.contact;
    // Free text goes in as it is (a company may read `see waid=79990000000`), with
    // line breaks escaped as vCard text requires, so no value starts a line of its own.
    let part = |s: &Option<String>| escape(s.as_deref().unwrap_or_default());
    let names: Vec<&str> = [&c.first_name, &c.last_name]
        .into_iter()
        .filter_map(|s| s.as_deref())
        .filter(|s| !s.is_empty())
        .collect();
    let display = if names.is_empty() {
        c.middle_name
            .clone()
            .or_else(|| c.company.clone())
            .unwrap_or_default()
    } else {
        names.join(" ")
    };
    let mut lines = vec![
        "BEGIN:VCARD".to_owned(),
        "VERSION:3.0".to_owned(),
        format!(
            "N:{};{};{};;",
            part(&c.last_name),
            part(&c.first_name),
            part(&c.middle_name)
        ),
        format!("FN:{}", escape(&display)),
    ];
    if let Some(company) = &c.company {
        lines.push(format!("ORG:{}", escape(company)));
    }
    let phone = c.phone_contact;
    if item_tel {
        lines.push(format!("item1.TEL;waid={phone}:+{phone}"));
        lines.push("item1.X-ABLabel:Mobile".to_owned());
    } else {
        lines.push(format!("TEL;type=CELL;type=VOICE;waid={phone}:+{phone}"));
    }
    lines.push("END:VCARD".to_owned());
    (display, lines.join("\n"))
}

/// vCard text escaping of a backslash and line breaks.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace("\r\n", "\\n")
        .replace(['\n', '\r'], "\\n")
}
