//! The journal side of the Green API client: `lastOutgoingMessages`,
//! `showMessagesQueue` and `getSettings`, read into what the reconciler needs, and the
//! journal's `statusMessage`s for delivery.
//!
//! Kept apart from the `sendContact` classification on purpose: the reconciler decides
//! from these entries whether a card whose answer was lost went out, so everything
//! here trusts only what the API itself wrote. The phone of a journal entry is read
//! from the vCard's `TEL` property alone: names and the company are free text a sender
//! controls (a company `see waid=79990000000` once made a card look like another one).

use serde_json::Value;

use super::{GreenApi, UpstreamError};

/// The most of a `getSettings` answer that is read (the real one is about 1 KiB).
pub const SETTINGS_CAP: usize = super::SMALL_ANSWER_CAP;

/// One outgoing message from `lastOutgoingMessages` or `showMessagesQueue`.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub id_message: String,
    pub chat_id: String,
    /// The phone of the contact card (its vCard's `TEL` line, or the queued body's
    /// `phoneContact`), when it is one.
    pub phone: Option<u64>,
    /// Unix seconds on the API's clock; None for entries still in the API's queue.
    pub timestamp: Option<i64>,
    /// Sent through the API (not typed on the phone). Entries of the API's own queue
    /// are always the API's.
    pub send_by_api: bool,
}

/// What contactq reads of `getSettings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceApiSettings {
    /// The API's own pacing of its send queue.
    pub delay_send_ms: u64,
}

impl GreenApi {
    /// `GET getSettings`, read with a 64 KiB cap: the instance's
    /// `delaySendMessagesMilliseconds`.
    pub async fn settings(&self) -> Result<InstanceApiSettings, UpstreamError> {
        const METHOD: &str = "getSettings";
        let (status, text) = self.get_text(METHOD, &[], SETTINGS_CAP).await?;
        if status != 200 {
            return Err(UpstreamError(format!(
                "{METHOD}: {status} {}",
                self.redactor.clean(&super::shorten(&text))
            )));
        }
        parse_settings(&text).ok_or_else(|| {
            UpstreamError(format!(
                "{METHOD}: no delaySendMessagesMilliseconds in the answer: {}",
                self.redactor.clean(&super::shorten(&text))
            ))
        })
    }
}

/// `delaySendMessagesMilliseconds` of a `getSettings` answer (a number, or a string
/// of digits), capped at the API's documented maximum of 600,000.
pub fn parse_settings(text: &str) -> Option<InstanceApiSettings> {
    let v: Value = serde_json::from_str(text).ok()?;
    let delay = v.get("delaySendMessagesMilliseconds")?;
    let ms = delay
        .as_u64()
        .or_else(|| delay.as_str().and_then(|s| s.trim().parse().ok()))?;
    Some(InstanceApiSettings {
        delay_send_ms: ms.min(600_000),
    })
}

/// One `lastOutgoingMessages` entry; None when it lacks an id or a chat.
pub fn journal_entry(v: &Value) -> Option<JournalEntry> {
    let vcard = v.pointer("/contact/vcard").and_then(Value::as_str);
    let timestamp = v.get("timestamp").and_then(|t| {
        t.as_i64()
            .or_else(|| t.as_f64().map(|f| f as i64))
            .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
    });
    Some(JournalEntry {
        id_message: v.get("idMessage")?.as_str()?.to_string(),
        chat_id: v.get("chatId")?.as_str()?.to_string(),
        phone: vcard.and_then(phone_in_vcard),
        timestamp,
        send_by_api: v.get("sendByApi").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The `idMessage` and `statusMessage` of one `lastOutgoingMessages` entry.
pub fn status_entry(v: &Value) -> Option<(String, String)> {
    Some((
        v.get("idMessage")?.as_str()?.to_string(),
        v.get("statusMessage")?.as_str()?.to_string(),
    ))
}

/// One `showMessagesQueue` entry (`{messageID, type, body}`); its phone is the queued
/// body's `phoneContact`.
pub fn queue_entry(v: &Value) -> Option<JournalEntry> {
    let body = v.get("body")?;
    let phone = body.pointer("/contact/phoneContact").and_then(|p| {
        p.as_u64()
            .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
    });
    Some(JournalEntry {
        id_message: v
            .get("messageID")
            .or_else(|| v.get("idMessage"))?
            .as_str()?
            .to_string(),
        chat_id: body.get("chatId")?.as_str()?.to_string(),
        phone,
        timestamp: None,
        send_by_api: true,
    })
}

/// The phone of a vCard, read from its `TEL` property only: the `waid=` parameter,
/// else the digits of the value (`+7 900 123-45-68`, `tel:+79001234568`).
///
/// Lines are unfolded first (a line starting with a space or tab continues the one
/// before), the property name may carry a group (`item1.TEL`), parameter values may be
/// quoted. When a card has several `TEL` lines the last one counts: the API writes the
/// number after the names and the company, so a line smuggled into a name comes first.
pub fn phone_in_vcard(vcard: &str) -> Option<u64> {
    let mut found = None;
    for line in unfold(vcard) {
        if let Some(phone) = tel_phone(&line) {
            found = Some(phone);
        }
    }
    found
}

/// The logical lines of a vCard (RFC 6350 section 3.2 unfolding).
fn unfold(vcard: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in vcard.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match (raw.strip_prefix([' ', '\t']), lines.last_mut()) {
            (Some(rest), Some(last)) => last.push_str(rest),
            _ => lines.push(raw.to_string()),
        }
    }
    lines
}

/// The phone of one content line, if it is a `TEL` property.
fn tel_phone(line: &str) -> Option<u64> {
    let (head, value) = split_outside_quotes(line, ':')?;
    let mut parts = split_all_outside_quotes(head, ';').into_iter();
    let name = parts.next()?;
    let name = name.rsplit_once('.').map_or(name, |(_, n)| n);
    if !name.trim().eq_ignore_ascii_case("TEL") {
        return None;
    }
    for param in parts {
        if let Some((key, v)) = param.split_once('=') {
            if key.trim().eq_ignore_ascii_case("waid") {
                let v = v.trim().trim_matches('"');
                if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
                    return v.parse().ok();
                }
            }
        }
    }
    let value = value.trim();
    let value = value
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("tel:"))
        .map_or(value, |_| &value[4..]);
    // A `tel:` URI may carry parameters (`;ext=12`): they are not the number.
    let number = value.split(';').next().unwrap_or_default();
    if !number
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return None;
    }
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.parse().ok()
}

/// Splits at the first `sep` that is not inside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

fn split_all_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((part, tail)) = split_outside_quotes(rest, sep) {
        out.push(part);
        rest = tail;
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTEM: &str =
        "BEGIN:VCARD\nVERSION:3.0\nN:Evpatoriysky;Artem;;;\nFN:Artem Evpatoriysky\n";

    fn card_with(lines: &str) -> String {
        format!("{ARTEM}{lines}\nEND:VCARD")
    }

    #[test]
    fn the_phone_comes_from_the_tel_line_in_each_of_its_forms() {
        for (tel, phone) in [
            (
                "TEL;type=CELL;type=VOICE;waid=79001234568:+79001234568",
                79001234568,
            ),
            ("TEL;waid=79001234568:+7 900 123-45-68", 79001234568),
            (
                "item1.TEL;waid=79001234568:+79001234568\nitem1.X-ABLabel:Mobile",
                79001234568,
            ),
            ("tel;TYPE=cell:+1 (555) 123-45678", 155512345678),
            ("TEL;VALUE=uri:tel:+79001234568;ext=12", 79001234568),
            (
                "TEL;TYPE=\"cell:voice\";waid=79001234568:+79001234568",
                79001234568,
            ),
            // Folded: the parameter goes on on the next line.
            (
                "TEL;type=CELL;wa\n id=79001234568:+79001234568",
                79001234568,
            ),
            ("TEL;waid=79001234568:+79001234568\r", 79001234568),
        ] {
            assert_eq!(phone_in_vcard(&card_with(tel)), Some(phone), "{tel}");
        }
    }

    #[test]
    fn names_and_the_company_never_give_the_phone() {
        // The reported bug: the first `waid=` of the card came from the ORG line.
        let vcard =
            card_with("ORG:see waid=79990000000\nTEL;type=CELL;waid=79001234568:+79001234568");
        assert_eq!(phone_in_vcard(&vcard), Some(79001234568));
        for hostile in [
            "N:waid=79990000000;TEL;waid=79990000000:+79990000000;;",
            "FN:TEL;waid=79990000000:+79990000000",
            "ORG:TEL:+79990000000",
            "X-TEL;waid=79990000000:+79990000000",
            "TELEX;waid=79990000000:+79990000000",
            "NOTE:item1.TEL;waid=79990000000:+79990000000",
        ] {
            let vcard = card_with(&format!("{hostile}\nTEL;waid=79001234568:+79001234568"));
            assert_eq!(phone_in_vcard(&vcard), Some(79001234568), "{hostile}");
            // Without a TEL line there is no phone at all.
            assert_eq!(phone_in_vcard(&card_with(hostile)), None, "{hostile}");
        }
        // A TEL line smuggled in through a name (a raw newline) comes before the real one.
        let vcard = card_with(
            "ORG:x\nTEL;waid=79990000000:+79990000000\nTEL;waid=79001234568:+79001234568",
        );
        assert_eq!(phone_in_vcard(&vcard), Some(79001234568));
        // A value that is not a number is not read as one.
        assert_eq!(phone_in_vcard(&card_with("TEL:call 7900 at home")), None);
        assert_eq!(phone_in_vcard(&card_with("TEL;waid=:")), None);
    }

    #[test]
    fn journal_entries_carry_phone_time_and_send_by_api() {
        let v: Value = serde_json::json!({"idMessage":"ABC","chatId":"11001234567@c.us",
            "timestamp":1700000000,"typeMessage":"contactMessage","sendByApi":true,
            "contact":{"displayName":"A","vcard": card_with("ORG:see waid=79990000000\nTEL;waid=79001234568:+79001234568")}});
        let e = journal_entry(&v).unwrap();
        assert_eq!(e.phone, Some(79001234568));
        assert_eq!(e.timestamp, Some(1700000000));
        assert!(e.send_by_api);
        let typed: Value = serde_json::json!({"idMessage":"P","chatId":"11001234567@c.us","timestamp":"1700000001"});
        let e = journal_entry(&typed).unwrap();
        assert_eq!(
            (e.phone, e.timestamp, e.send_by_api),
            (None, Some(1700000001), false)
        );
        assert_eq!(journal_entry(&serde_json::json!({"chatId":"1@c.us"})), None);
    }

    #[test]
    fn queue_entries_carry_the_body_phone() {
        let v: Value = serde_json::json!({"messageID":"Q1","type":"sendContact",
            "body":{"chatId":"11001234567@c.us","contact":{"phoneContact":"79001234568","company":"waid=79990000000"}}});
        let e = queue_entry(&v).unwrap();
        assert_eq!((e.id_message.as_str(), e.phone), ("Q1", Some(79001234568)));
        assert!(e.send_by_api && e.timestamp.is_none());
    }

    /// Serves one HTTP answer with `body` on 127.0.0.1 and returns the base URL.
    async fn serve_once(body: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
        format!("http://{addr}")
    }

    fn api(url: String) -> GreenApi {
        let instance = crate::config::InstanceSettings {
            name: "main".into(),
            api_url: url,
            id_instance: "1101000001".into(),
            api_token: crate::config::ApiToken::new("s3cr3t-token"),
            send_delay: std::time::Duration::from_millis(500),
            quiet_hours: None,
        };
        GreenApi::new(&instance, reqwest::Client::new())
    }

    #[tokio::test]
    async fn get_settings_is_read_with_a_64_kib_cap() {
        let small = serve_once(r#"{"delaySendMessagesMilliseconds":3000}"#.into()).await;
        assert_eq!(
            api(small).settings().await.expect("read").delay_send_ms,
            3000
        );
        let padding = "x".repeat(SETTINGS_CAP);
        let big = format!(r#"{{"webhookUrl":"{padding}","delaySendMessagesMilliseconds":3000}}"#);
        let error = api(serve_once(big).await)
            .settings()
            .await
            .expect_err("over the cap");
        assert!(error.0.contains("longer than 65536 bytes"), "{error}");
        assert!(!error.0.contains("s3cr3t-token"), "{error}");
    }

    #[test]
    fn settings_give_the_send_delay() {
        let s = |t: &str| parse_settings(t).map(|s| s.delay_send_ms);
        assert_eq!(
            s(r#"{"wid":"1@c.us","delaySendMessagesMilliseconds":5000}"#),
            Some(5000)
        );
        assert_eq!(s(r#"{"delaySendMessagesMilliseconds":"1500"}"#), Some(1500));
        assert_eq!(
            s(r#"{"delaySendMessagesMilliseconds":99999999}"#),
            Some(600_000)
        );
        assert_eq!(s(r#"{"wid":"1@c.us"}"#), None);
        assert_eq!(s("<html>"), None);
    }
}
