//! A webhook delivery: the event JSON POSTed to the hook's URL, signed so the receiver
//! can tell it came from this daemon and was not replayed long after (docs/api.md §11).
//!
//! Headers: `Contactq-Seq: N`, `Contactq-Timestamp: <Unix seconds>`,
//! `Contactq-Signature: sha256=<hex HMAC-SHA256 of "TIMESTAMP.BODY" with the secret>`.
//! A 2xx answer is a delivery; anything else (a redirect too) is a failure.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookSecret;

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The HTTP client of the webhooks: no redirects (a 3xx is not a delivery).
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("contactq/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the webhooks' HTTP client: {e}"))
}

/// An error and its causes, on one line (reqwest's own text leaves out why).
/// A reqwest error's text and causes, without the URL (it may carry a credential; the
/// hook's name says which URL it was).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Most bytes of a refusal's body kept in the error.
const MAX_ERROR_BODY: usize = 300;

/// POSTs event `seq`'s `body` to `url`; Ok on a 2xx within `timeout`.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: &WebhookSecret,
    seq: i64,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let timestamp = crate::clock::now_ms() / 1000;
    let answer = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Contactq-Seq", seq.to_string())
        .header("Contactq-Timestamp", timestamp.to_string())
        .header("Contactq-Signature", signature(secret, timestamp, body))
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} s", timeout.as_secs_f64())
            } else {
                format!("request failed: {}", chain(e))
            }
        })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    // Only the start of a refusal's body is read: a receiver answering gigabytes costs
    // the daemon no more than this.
    let mut answer = answer;
    let mut start = Vec::new();
    while start.len() < MAX_ERROR_BODY * 4 {
        match answer.chunk().await {
            Ok(Some(chunk)) => start.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&start);
    let mut text: String = text.chars().take(MAX_ERROR_BODY).collect();
    text = text.replace(['\n', '\r'], " ");
    Err(format!("HTTP {}: {}", status.as_u16(), text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently:
        //   printf '1700000000.{"seq":1}' | openssl dgst -sha256 -hmac 0123456789abcdef
        let secret = WebhookSecret::new("0123456789abcdef");
        assert_eq!(
            signature(&secret, 1_700_000_000, br#"{"seq":1}"#),
            "sha256=e08bda826cf051c0f1f919531cf4fec45eca56a374d4a56a26f82fcfb9101386"
        );
    }
}
