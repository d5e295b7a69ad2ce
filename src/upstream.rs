//! The Green API client: typed requests, and every answer classified into one enum.
//!
//! This module does I/O and classification only, no SQL. The token lives in request
//! paths, so every text that leaves this module (errors, API bodies that echo the
//! path) goes through [`Redactor`] first, and reqwest errors are stripped of their URL.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ApiToken, InstanceSettings};

// ---- The journal side (lastOutgoingMessages, showMessagesQueue, getSettings) lives in
// ---- `upstream/journal.rs`, apart from the sendContact classification below.
mod journal;
pub use journal::{
    journal_entry, parse_settings, phone_in_vcard, queue_entry, InstanceApiSettings, JournalEntry,
};

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
    /// 466: the monthly quota is used up; hold the line.
    QuotaExceeded { error: String },
    /// 499, 5xx, a time-out, a connection lost mid-request, or a 200 without an
    /// `idMessage`: the API may have taken the card; reconcile before going on.
    Uncertain { status: Option<u16>, error: String },
}

/// A failure of one of the helper calls (state, journal, queue).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

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
    pub fn http_client(request_timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("contactq/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
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
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => {
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

    /// `GET getStateInstance`: the `stateInstance` text.
    pub async fn state(&self) -> Result<String, UpstreamError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct State {
            state_instance: String,
        }
        let state: State = self.get_json("getStateInstance", &[]).await?;
        Ok(state.state_instance)
    }

    /// `GET lastOutgoingMessages?minutes=N`.
    pub async fn last_outgoing(&self, minutes: u32) -> Result<Vec<JournalEntry>, UpstreamError> {
        let entries: Vec<Value> = self
            .get_json("lastOutgoingMessages", &[("minutes", minutes.to_string())])
            .await?;
        Ok(entries.iter().filter_map(journal_entry).collect())
    }

    /// `GET showMessagesQueue`: messages the API accepted but has not sent yet.
    pub async fn queue(&self) -> Result<Vec<JournalEntry>, UpstreamError> {
        let entries: Vec<Value> = self.get_json("showMessagesQueue", &[]).await?;
        Ok(entries.iter().filter_map(queue_entry).collect())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        query: &[(&str, String)],
    ) -> Result<T, UpstreamError> {
        let response = self
            .http
            .get(self.url(method))
            .query(query)
            .send()
            .await
            .map_err(|e| UpstreamError(format!("{method}: {}", self.error_text(e))))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| UpstreamError(format!("{method}: {}", self.error_text(e))))?;
        if status != 200 {
            return Err(UpstreamError(format!(
                "{method}: {status} {}",
                self.redactor.clean(&shorten(&text))
            )));
        }
        serde_json::from_str(&text).map_err(|e| {
            UpstreamError(format!(
                "{method}: unexpected answer ({e}): {}",
                self.redactor.clean(&shorten(&text))
            ))
        })
    }
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

/// The API's own words from an error body: `message`, `description`, or the text.
fn api_message(text: &str) -> String {
    let json: Option<Value> = serde_json::from_str(text).ok();
    let field = |k: &str| {
        json.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message = field("message")
        .or_else(|| field("description"))
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
