//! The Green API client: typed requests, and every answer classified into one enum.
//!
//! This module does I/O and classification only, no SQL. The token lives in request
//! paths, so every text that leaves this module (errors, API bodies that echo the
//! path) goes through [`Redactor`] first, and reqwest errors are stripped of their URL.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ApiToken, InstanceSettings};
use crate::state::Authorization;

// ---- The journal side (lastOutgoingMessages, showMessagesQueue, getSettings) lives in
// ---- `upstream/journal.rs`, apart from the sendContact classification below.
mod journal;
#[cfg(test)]
pub use journal::phone_in_vcard;
pub use journal::{journal_entry, queue_entry, JournalEntry};

/// What became of one `sendContact` request. `drain` matches on it exhaustively.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// 200 with an `idMessage`.
    Sent { id_message: String },
    /// The API rejected the card for good (a 400 other than the instance's state).
    Rejected { status: u16, error: String },
    /// The instance is starting or not authorized (400 saying so, 401, 403, or a 200
    /// carrying `{"code":401}`): the card surely was not taken; re-check the state.
    NotAuthorized { status: u16, error: String },
    /// Throttled or unreachable before the request was written (429, connection
    /// refused, other 4xx): surely not taken; back off.
    RetryLater {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// 466 for the method or of an unknown kind: the monthly quota is used up; hold
    /// the whole line.
    QuotaExceeded { error: String },
    /// 466 whose `correspondentsStatus` is `CORRESPONDENTS_QUOTE_EXCEEDED`: this month
    /// only the chats already written to can be reached, so this card's chat is
    /// refused, not the line.
    ChatQuotaExceeded { error: String },
    /// 499, 5xx, a time-out, a connection lost mid-request, or a 200 without an
    /// `idMessage`: the API may have taken the card; reconcile before going on.
    Uncertain { status: Option<u16>, error: String },
}

/// A failure of one of the helper calls (state, journal, queue).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

/// Why `getStateInstance` gave no state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// 401 (the token) or 403 (the instance id): asking again will not help until the
    /// configuration is fixed.
    #[error("getStateInstance: {status} {error}")]
    Refused { status: u16, error: String },
    /// Anything else (unreachable, 5xx, a strange answer): a temporary failure.
    #[error("{0}")]
    Other(String),
}

/// The longest answer read from `sendContact`, `getStateInstance` and `getSettings`:
/// a real one is a few hundred bytes, so anything longer is not the API's answer.
pub const SMALL_ANSWER_CAP: usize = 64 * 1024;
/// The longest journal (`lastOutgoingMessages`) or queue (`showMessagesQueue`) read: a
/// day of a busy instance's entries fits many times over.
pub const LIST_ANSWER_CAP: usize = 32 * 1024 * 1024;

/// Why an answer's body could not be read.
#[derive(Debug)]
enum BodyError {
    /// Longer than the cap: reading stopped there.
    TooLong(usize),
    /// The connection failed mid-body.
    Lost(reqwest::Error),
}

/// Cuts the token out of any text.
#[derive(Clone)]
pub struct Redactor(ApiToken);

impl Redactor {
    pub fn new(token: &ApiToken) -> Self {
        Self(token.clone())
    }
    pub fn clean(&self, text: &str) -> String {
        let token = self.0.expose();
        if token.is_empty() {
            text.to_string()
        } else {
            text.replace(token, "***")
        }
    }
}

/// The client of one instance.
#[derive(Clone)]
pub struct GreenApi {
    http: reqwest::Client,
    api_url: String,
    id_instance: String,
    token: ApiToken,
    redactor: Redactor,
}

impl GreenApi {
    pub fn new(instance: &InstanceSettings, http: reqwest::Client) -> Self {
        Self {
            http,
            api_url: instance.api_url.clone(),
            id_instance: instance.id_instance.clone(),
            token: instance.api_token.clone(),
            redactor: Redactor::new(&instance.api_token),
        }
    }

    /// A shared HTTP client with the request time-out (well under the watchdog).
    ///
    /// Redirects are never followed: the token is in the path, so following a 3xx
    /// would hand it (and the card) to whatever host the answer names; a 3xx is
    /// classified as a temporary failure instead. A client that cannot be built is an
    /// error, never a silent fallback to a client without time-outs.
    pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, UpstreamError> {
        reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("contactq/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError(format!("cannot build the HTTP client: {e}")))
    }

    fn url(&self, method: &str) -> String {
        format!(
            "{}/waInstance{}/{}/{}",
            self.api_url,
            self.id_instance,
            method,
            self.token.expose()
        )
    }

    /// `POST sendContact` with a stored body, classified.
    pub async fn send_contact(&self, body: &str) -> SendOutcome {
        let request = self
            .http
            .post(self.url("sendContact"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return self.classify_transport(e),
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let text = match read_capped(response, SMALL_ANSWER_CAP).await {
            Ok(t) => t,
            // The request was written and an answer began: the API may have taken it.
            Err(BodyError::TooLong(cap)) => {
                return SendOutcome::Uncertain {
                    status: Some(status),
                    error: format!("answer {status} longer than {cap} bytes; not read"),
                }
            }
            Err(BodyError::Lost(e)) => {
                return SendOutcome::Uncertain {
                    status: Some(status),
                    error: format!("answer {status} lost: {}", self.error_text(e)),
                }
            }
        };
        classify(status, &self.redactor.clean(&text), retry_after)
    }

    fn classify_transport(&self, e: reqwest::Error) -> SendOutcome {
        let surely_not_sent = e.is_connect() || e.is_builder();
        let error = self.error_text(e);
        if surely_not_sent {
            SendOutcome::RetryLater {
                status: None,
                error,
                retry_after: None,
            }
        } else {
            SendOutcome::Uncertain {
                status: None,
                error,
            }
        }
    }

    /// A reqwest error as text with its causes, without its URL (which carries the token).
    fn error_text(&self, e: reqwest::Error) -> String {
        let timeout = e.is_timeout();
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if timeout && !text.contains("timed out") {
            text.push_str(" (timed out)");
        }
        self.redactor.clean(&text)
    }

    /// `GET getStateInstance`: the `stateInstance`, kept even when unlisted.
    pub async fn state(&self) -> Result<Authorization, StateError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct State {
            state_instance: Option<String>,
            code: Option<u16>,
        }
        let (status, text) = self
            .get_text("getStateInstance", &[], SMALL_ANSWER_CAP)
            .await
            .map_err(|e| StateError::Other(e.0))?;
        let parsed: Option<State> = serde_json::from_str(&text).ok();
        // A 200 carrying {"code":401} is the API's other way of saying 401.
        let refused = match (status, parsed.as_ref().and_then(|s| s.code)) {
            (401 | 403, _) => Some(status),
            (200, Some(code @ (401 | 403))) => Some(code),
            _ => None,
        };
        if let Some(status) = refused {
            return Err(StateError::Refused {
                status,
                error: api_message(&self.redactor.clean(&text)),
            });
        }
        match (status, parsed.and_then(|s| s.state_instance)) {
            (200, Some(state)) => Ok(Authorization::parse(&state)),
            _ => Err(StateError::Other(self.unexpected(
                "getStateInstance",
                status,
                &text,
            ))),
        }
    }

    /// `GET lastOutgoingMessages?minutes=N`.
    pub async fn last_outgoing(&self, minutes: u32) -> Result<Vec<JournalEntry>, UpstreamError> {
        let entries: Vec<Value> = self
            .get_json(
                "lastOutgoingMessages",
                &[("minutes", minutes.to_string())],
                LIST_ANSWER_CAP,
            )
            .await?;
        Ok(entries.iter().filter_map(journal_entry).collect())
    }

    /// `GET lastOutgoingMessages?minutes=N`, read for delivery: each entry's
    /// `idMessage` and `statusMessage` (entries without either are left out).
    pub async fn last_outgoing_statuses(
        &self,
        minutes: u32,
    ) -> Result<Vec<(String, String)>, UpstreamError> {
        let entries: Vec<Value> = self
            .get_json(
                "lastOutgoingMessages",
                &[("minutes", minutes.to_string())],
                LIST_ANSWER_CAP,
            )
            .await?;
        Ok(entries.iter().filter_map(journal::status_entry).collect())
    }

    /// `GET showMessagesQueue`: messages the API accepted but has not sent yet.
    pub async fn queue(&self) -> Result<Vec<JournalEntry>, UpstreamError> {
        let entries: Vec<Value> = self
            .get_json("showMessagesQueue", &[], LIST_ANSWER_CAP)
            .await?;
        Ok(entries.iter().filter_map(queue_entry).collect())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        query: &[(&str, String)],
        cap: usize,
    ) -> Result<T, UpstreamError> {
        let (status, text) = self.get_text(method, query, cap).await?;
        if status != 200 {
            return Err(UpstreamError(self.unexpected(method, status, &text)));
        }
        serde_json::from_str(&text).map_err(|e| {
            UpstreamError(format!(
                "{method}: unexpected answer ({e}): {}",
                self.redactor.clean(&shorten(&text))
            ))
        })
    }

    /// A GET's status and body, the body read up to `cap` bytes.
    async fn get_text(
        &self,
        method: &str,
        query: &[(&str, String)],
        cap: usize,
    ) -> Result<(u16, String), UpstreamError> {
        let response = self
            .http
            .get(self.url(method))
            .query(query)
            .send()
            .await
            .map_err(|e| UpstreamError(format!("{method}: {}", self.error_text(e))))?;
        let status = response.status().as_u16();
        let text = read_capped(response, cap).await.map_err(|e| match e {
            BodyError::TooLong(cap) => UpstreamError(format!(
                "{method}: answer {status} longer than {cap} bytes; not read"
            )),
            BodyError::Lost(e) => UpstreamError(format!("{method}: {}", self.error_text(e))),
        })?;
        Ok((status, text))
    }

    fn unexpected(&self, method: &str, status: u16, text: &str) -> String {
        format!("{method}: {status} {}", self.redactor.clean(&shorten(text)))
    }
}

/// Reads an answer's body chunk by chunk, stopping (and dropping the connection) as
/// soon as it passes `cap`: a hostile or broken server cannot make the daemon buffer
/// more than that.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<String, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLong(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Lost)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLong(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Classifies an HTTP answer to `sendContact` (the text already redacted).
pub fn classify(status: u16, text: &str, retry_after: Option<Duration>) -> SendOutcome {
    let message = api_message(text);
    match status {
        200 => {
            let json: Option<Value> = serde_json::from_str(text).ok();
            let id = json
                .as_ref()
                .and_then(|v| v.get("idMessage"))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty());
            match (
                id,
                json.as_ref()
                    .and_then(|v| v.get("code"))
                    .and_then(Value::as_u64),
            ) {
                (Some(id), _) => SendOutcome::Sent {
                    id_message: id.to_string(),
                },
                // The API sometimes answers {"code":401,"description":"Unauthorized"}
                // with status 200: nothing was sent.
                (None, Some(code @ (401 | 403))) => SendOutcome::NotAuthorized {
                    status: code as u16,
                    error: format!("200 without idMessage: {message}"),
                },
                (None, _) => SendOutcome::Uncertain {
                    status: Some(200),
                    error: format!("200 without idMessage: {message}"),
                },
            }
        }
        400 => {
            let lower = message.to_lowercase();
            if lower.contains("starting") || lower.contains("not authorized") {
                SendOutcome::NotAuthorized {
                    status,
                    error: message,
                }
            } else {
                SendOutcome::Rejected {
                    status,
                    error: message,
                }
            }
        }
        401 | 403 => SendOutcome::NotAuthorized {
            status,
            error: format!("{status} {message}"),
        },
        429 => SendOutcome::RetryLater {
            status: Some(status),
            error: format!("429 {message}"),
            retry_after,
        },
        466 if chats_quota_exceeded(text) => SendOutcome::ChatQuotaExceeded {
            error: format!("466 {message}"),
        },
        466 => SendOutcome::QuotaExceeded {
            error: format!("466 {message}"),
        },
        499..=599 => SendOutcome::Uncertain {
            status: Some(status),
            error: format!("{status} {message}"),
        },
        _ => SendOutcome::RetryLater {
            status: Some(status),
            error: format!("{status} {message}"),
            retry_after,
        },
    }
}

/// Whether a 466 body is the chats quota (`correspondentsStatus.status` is
/// `CORRESPONDENTS_QUOTE_EXCEEDED`) and not the method quota (`invokeStatus.status` is
/// `QUOTE_EXCEEDED`): only the former refuses one chat rather than the instance.
fn chats_quota_exceeded(text: &str) -> bool {
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let status = |p: &str| json.pointer(p).and_then(Value::as_str);
    status("/correspondentsStatus/status") == Some("CORRESPONDENTS_QUOTE_EXCEEDED")
        && status("/invokeStatus/status") != Some("QUOTE_EXCEEDED")
}

/// The API's own words from an error body: `message`, `description`, or the text.
fn api_message(text: &str) -> String {
    let json: Option<Value> = serde_json::from_str(text).ok();
    let field = |k: &str| {
        json.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let quota = |k: &str| {
        json.as_ref()
            .and_then(|v| v.pointer(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message = field("message")
        .or_else(|| field("description"))
        .or_else(|| quota("/correspondentsStatus/description"))
        .or_else(|| quota("/invokeStatus/description"))
        .or_else(|| {
            json.as_ref()
                .and_then(|v| v.get("correspondentsStatus"))
                .map(|c| c.to_string())
        });
    shorten(&message.unwrap_or_else(|| text.trim().to_string()))
}

fn shorten(text: &str) -> String {
    const MAX: usize = 500;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

/// `Retry-After` is seconds, or an HTTP date (RFC 9110 section 10.2.3).
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
