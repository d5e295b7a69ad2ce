//! The sandbox's own `sendContact` validation: the real API's rules written the way its
//! Joi schema states them, independently of the daemon's [`crate::contact::Card::parse`].
//!
//! Two validators on purpose: if the sandbox reused the daemon's parser, a mistake in it
//! (refusing what the API takes, or taking what it refuses) would be invisible to every
//! test that drives the daemon against the sandbox. The data types are its own too: the
//! daemon's [`crate::contact::Card`] can only come out of the daemon's parser, and this
//! one takes bodies (a 6-digit phone) that the daemon refuses on purpose.
//!
//! The schema, as the API's texts reveal it:
//! `chatId` string matching `\d+@c.us | \d+@lid | \d+(-\d+)?@g.us`, required;
//! `contact` object, required, with `phoneContact` a positive safe integer (numeric
//! strings are converted; the length is not checked: the docs say 11 or 12 digits but
//! the API takes others) and at least one of four non-empty name strings;
//! `quotedMessageId` string; `typingTime` integer 1000..=20000; nothing else.

use serde::Serialize;
use serde_json::{Map, Value};

/// A `sendContact` body the emulated API took, by its own rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub chat_id: String,
    pub contact: Contact,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quoted_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing_time: Option<i64>,
}

impl Card {
    /// The body as the API keeps it in its queue: `phoneContact` a number.
    pub fn to_body(&self) -> Value {
        serde_json::to_value(self).expect("a Card always serializes")
    }
}

/// The contact object of an accepted body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub phone_contact: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

/// What Joi answers, after "Validation failed. Details: ".
type Detail = String;

const NAMES: [&str; 4] = ["firstName", "middleName", "lastName", "company"];
const SAFE: f64 = 9_007_199_254_740_991.0;

/// Validates a raw `sendContact` body; the error is the API's whole text.
pub fn send_contact(body: &[u8]) -> Result<Card, String> {
    let value: Result<Value, Detail> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"));
    value
        .and_then(|v| card(&v))
        .map_err(|detail| format!("Validation failed. Details: {detail}"))
}

fn card(value: &Value) -> Result<Card, Detail> {
    let Value::Object(body) = value else {
        return Err("'value' must be of type object".into());
    };
    if body.is_empty() {
        return Err("'value' must have at least 1 key".into());
    }
    only(
        body,
        &["chatId", "contact", "quotedMessageId", "typingTime"],
        "",
    )?;
    let chat_id = match body.get("chatId") {
        None => return Err("'chatId' is required".into()),
        Some(Value::String(s)) if chat_pattern(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(format!(
                "'chatId' with value '{s}' fails to match the required pattern: \
                 /^(\\d+@c\\.us|\\d+@lid|\\d+(-\\d+)?@g\\.us)$/"
            ))
        }
        Some(_) => return Err("'chatId' must be a string".into()),
    };
    let contact = match body.get("contact") {
        None => return Err("'contact' is required".into()),
        Some(Value::Object(c)) => contact(c)?,
        Some(_) => return Err("'contact' must be of type object".into()),
    };
    let quoted_message_id = match body.get("quotedMessageId") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("'quotedMessageId' must be a string".into()),
    };
    let typing_time = match body.get("typingTime") {
        None => None,
        Some(v) => {
            let ms = integer("typingTime", v)?;
            if ms < 1000.0 {
                return Err("'typingTime' must be greater than or equal to 1000".into());
            }
            if ms > 20000.0 {
                return Err("'typingTime' must be less than or equal to 20000".into());
            }
            Some(ms as i64)
        }
    };
    Ok(Card {
        chat_id,
        contact,
        quoted_message_id,
        typing_time,
    })
}

fn contact(c: &Map<String, Value>) -> Result<Contact, Detail> {
    let mut keys = vec!["phoneContact"];
    keys.extend(NAMES);
    only(c, &keys, "contact.")?;
    let phone = match c.get("phoneContact") {
        None => return Err("'contact.phoneContact' is required".into()),
        Some(v) => integer("contact.phoneContact", v)?,
    };
    if phone <= 0.0 {
        return Err("'contact.phoneContact' must be a positive number".into());
    }
    let mut names: Vec<Option<String>> = Vec::new();
    for field in NAMES {
        names.push(match c.get(field) {
            None => None,
            Some(Value::String(s)) if s.is_empty() => {
                return Err(format!("'contact.{field}' is not allowed to be empty"))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("'contact.{field}' must be a string")),
        });
    }
    if names.iter().all(Option::is_none) {
        return Err(
            "'contact' must contain at least one of [firstName, middleName, lastName, company]"
                .into(),
        );
    }
    let mut names = names.into_iter();
    Ok(Contact {
        phone_contact: phone as u64,
        first_name: names.next().flatten(),
        middle_name: names.next().flatten(),
        last_name: names.next().flatten(),
        company: names.next().flatten(),
    })
}

/// Joi's `number().integer()` with conversion: a JSON number, or a string that reads
/// as one; checked in Joi's order (number, safe, integer).
fn integer(field: &str, value: &Value) -> Result<f64, Detail> {
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
    .ok_or_else(|| format!("'{field}' must be a number"))?;
    // serde_json reads big integers exactly; a u64 above 2^53 is unsafe even when its
    // f64 rounding is not.
    let exact_unsafe = match value {
        Value::Number(n) => n.as_u64().is_some_and(|u| u > SAFE as u64),
        _ => false,
    };
    if n.abs() > SAFE || exact_unsafe {
        return Err(format!("'{field}' must be a safe number"));
    }
    if n.fract() != 0.0 {
        return Err(format!("'{field}' must be an integer"));
    }
    Ok(n)
}

fn chat_pattern(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(p) = s.strip_suffix("@c.us").or_else(|| s.strip_suffix("@lid")) {
        return digits(p);
    }
    match s.strip_suffix("@g.us") {
        Some(p) => match p.split_once('-') {
            Some((a, b)) => digits(a) && digits(b),
            None => digits(p),
        },
        None => false,
    }
}

fn only(object: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), Detail> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("'{prefix}{k}' is not allowed")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(v: Value) -> String {
        send_contact(v.to_string().as_bytes()).unwrap_err()
    }

    fn with(extra: Value) -> Value {
        let mut body = json!({"chatId": "11001234567@c.us",
            "contact": {"phoneContact": 79001234568u64, "firstName": "A"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    #[test]
    fn what_the_real_api_accepts() {
        for body in [
            with(json!({})),
            with(json!({"chatId": "123456789@lid"})),
            with(json!({"chatId": "11001234567-1581234048@g.us"})),
            with(json!({"typingTime": 1000})),
            with(json!({"typingTime": "20000"})),
            with(json!({"contact": {"phoneContact": 5511912345678u64, "company": "B"}})),
            with(json!({"contact": {"phoneContact": "79001234568", "lastName": "B"}})),
            with(json!({"contact": {"phoneContact": 12345, "lastName": "B"}})),
        ] {
            send_contact(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn what_the_real_api_refuses_with_its_texts() {
        let cases = [
            (json!({}), "'value' must have at least 1 key"),
            (
                with(json!({"typingTime": -5})),
                "'typingTime' must be greater than or equal to 1000",
            ),
            (
                with(json!({"typingTime": 20001})),
                "'typingTime' must be less than or equal to 20000",
            ),
            (
                with(json!({"typingTime": 1.5})),
                "'typingTime' must be an integer",
            ),
            (
                with(json!({"typingTime": "x"})),
                "'typingTime' must be a number",
            ),
            (
                with(json!({"contact": {"phoneContact": "abc", "firstName": "A"}})),
                "'contact.phoneContact' must be a number",
            ),
            (
                with(json!({"contact": {"phoneContact": 9007199254740993u64, "firstName": "A"}})),
                "'contact.phoneContact' must be a safe number",
            ),
            (
                with(json!({"contact": {"phoneContact": -79001234568i64, "firstName": "A"}})),
                "'contact.phoneContact' must be a positive number",
            ),
            (with(json!({"message": "hi"})), "'message' is not allowed"),
            (
                with(json!({"chatId": "1-2@c.us"})),
                "'chatId' with value '1-2@c.us' fails",
            ),
        ];
        for (body, text) in cases {
            let got = detail(body.clone());
            assert!(
                got.starts_with(&format!("Validation failed. Details: {text}")),
                "{body}: {got}"
            );
        }
    }

    /// The daemon's validator and this one agree on every body, save where the daemon
    /// is stricter on purpose (a phone outside 7..15 digits, E.164's range; a
    /// numeric-string typingTime), so a slip in either shows here.
    #[test]
    fn the_daemons_validation_agrees_with_the_apis() {
        use crate::contact::Card as DaemonCard;
        let bodies = [
            with(json!({})),
            with(json!({"chatId": "123456789@lid"})),
            with(json!({"chatId": "1@g.us"})),
            with(json!({"chatId": "1-2@g.us"})),
            with(json!({"chatId": "1-2@c.us"})),
            with(json!({"chatId": "@lid"})),
            with(json!({"chatId": "1@lid.us"})),
            with(json!({"chatId": 5})),
            with(json!({"typingTime": 999})),
            with(json!({"typingTime": 1000})),
            with(json!({"typingTime": 20000})),
            with(json!({"typingTime": 20001})),
            with(json!({"typingTime": -5})),
            with(json!({"typingTime": 1.5})),
            with(json!({"typingTime": "x"})),
            with(json!({"quotedMessageId": "ABC"})),
            with(json!({"quotedMessageId": 1})),
            with(json!({"message": "hi"})),
            with(json!({"contact": {"phoneContact": 5511912345678u64, "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": 1234567, "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": "79001234568", "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": "abc", "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": 79001234568.5, "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": 9007199254740993u64, "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": -79001234568i64, "firstName": "A"}})),
            with(json!({"contact": {"phoneContact": 79001234568u64}})),
            with(json!({"contact": {"phoneContact": 79001234568u64, "company": ""}})),
            with(json!({"contact": {"phoneContact": 79001234568u64, "lastName": 5}})),
            with(json!({"contact": {"phoneContact": 79001234568u64, "firstName": "A", "e": 1}})),
            with(json!({"contact": "x"})),
            json!({}),
            json!([1]),
        ];
        for body in bodies {
            let daemon = DaemonCard::parse(&body);
            let api = card(&body);
            assert_eq!(daemon.is_ok(), api.is_ok(), "{body}: {daemon:?} / {api:?}");
            if let (Ok(d), Ok(a)) = (&daemon, &api) {
                let a = serde_json::to_value(a).unwrap();
                assert_eq!(d.to_body(), a, "{body}: the same card");
            }
            if let (Err(d), Err(a)) = (&daemon, &api) {
                // Both name the same field first.
                let field = |t: &str| t.split('\'').nth(1).map(str::to_string);
                assert_eq!(field(&d.detail), field(a), "{body}");
            }
        }
        // Stricter on purpose: E.164 lengths only.
        let short = with(json!({"contact": {"phoneContact": 123456, "firstName": "A"}}));
        assert!(DaemonCard::parse(&short).is_err() && card(&short).is_ok());
    }
}
