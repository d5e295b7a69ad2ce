//! What `contactq send` sends: a body built from flags, or a file told apart as one
//! card, a JSON array or NDJSON.
//!
//! The daemon is the one validator (SPEC §4). We pass the user's bytes through
//! unchanged whenever we can, so its error names exactly what the user wrote; we parse
//! only to tell one card from many, and to split very large batches.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::args::SendArgs;
use super::error::CliError;

/// At most this many cards go in one `:batch` request; a larger file becomes several.
pub const BATCH_CHUNK: usize = 10_000;

/// One `:batch` request's worth of cards.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The JSON array to send.
    pub body: Vec<u8>,
    /// Index of the chunk's first card in the whole input.
    pub first: usize,
    /// Number of cards; 0 when the array could not be parsed (sent as is for the
    /// daemon to reject).
    pub len: usize,
}

/// What the input turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// One `sendContact` body, bytes as given.
    Single(Vec<u8>),
    /// One or more `:batch` requests.
    Batch(Vec<Chunk>),
}

impl Payload {
    /// Total number of cards in a batch (0 for an unparsable one).
    pub fn card_count(&self) -> usize {
        match self {
            Payload::Single(_) => 1,
            Payload::Batch(chunks) => chunks.iter().map(|c| c.len).sum(),
        }
    }
}

/// Reads `--file`; `-` is stdin.
pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let result = if path == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    result.map_err(|source| CliError::Input {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes)
}

/// Tells one card from a batch. A JSON array is a batch (sent unchanged if it fits one
/// request); several JSON values on separate lines (NDJSON) are a batch; anything
/// else, including malformed JSON, is one body for the daemon to judge.
pub fn classify(bytes: Vec<u8>) -> Result<Payload, CliError> {
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(Payload::Single(bytes));
    };
    let start = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if start.starts_with('[') {
        return Ok(match serde_json::from_str::<Vec<Value>>(start) {
            Ok(cards) if cards.len() <= BATCH_CHUNK => {
                let len = cards.len();
                Payload::Batch(vec![Chunk {
                    body: bytes,
                    first: 0,
                    len,
                }])
            }
            Ok(cards) => Payload::Batch(chunks(&cards)?),
            Err(_) => Payload::Batch(vec![Chunk {
                body: bytes,
                first: 0,
                len: 0,
            }]),
        });
    }
    if serde_json::from_str::<Value>(text).is_ok() {
        return Ok(Payload::Single(bytes));
    }
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let first_is_json = lines
        .first()
        .is_some_and(|(_, line)| serde_json::from_str::<Value>(line).is_ok());
    if lines.len() < 2 || !first_is_json {
        return Ok(Payload::Single(bytes));
    }
    let mut cards = Vec::with_capacity(lines.len());
    for (number, line) in lines {
        let card = serde_json::from_str::<Value>(line).map_err(|err| {
            CliError::BadInput(format!(
                "invalid JSON: line {number} of the NDJSON input: {err}"
            ))
        })?;
        cards.push(card);
    }
    Ok(Payload::Batch(chunks(&cards)?))
}

fn chunks(cards: &[Value]) -> Result<Vec<Chunk>, CliError> {
    cards
        .chunks(BATCH_CHUNK)
        .enumerate()
        .map(|(i, part)| {
            let body = serde_json::to_vec(part)
                .map_err(|err| CliError::BadInput(format!("cannot encode cards: {err}")))?;
            Ok(Chunk {
                body,
                first: i * BATCH_CHUNK,
                len: part.len(),
            })
        })
        .collect()
}

/// The `sendContact` body for `send --chat-id … --phone …`: only the flags given.
pub fn body_from_flags(args: &SendArgs) -> Value {
    let mut contact = Map::new();
    if let Some(phone) = &args.phone {
        contact.insert("phoneContact".into(), phone_value(phone));
    }
    let names = [
        ("firstName", &args.first_name),
        ("middleName", &args.middle_name),
        ("lastName", &args.last_name),
        ("company", &args.company),
    ];
    for (key, value) in names {
        if let Some(value) = value {
            contact.insert(key.into(), Value::String(value.clone()));
        }
    }
    let mut body = Map::new();
    if let Some(chat_id) = &args.chat_id {
        body.insert("chatId".into(), Value::String(chat_id.clone()));
    }
    body.insert("contact".into(), Value::Object(contact));
    if let Some(quoted) = &args.quoted_message_id {
        body.insert("quotedMessageId".into(), Value::String(quoted.clone()));
    }
    Value::Object(body)
}

/// All digits → a JSON number, as the API expects. Anything else stays a string, so
/// the daemon (not we) says what is wrong with it.
pub fn phone_value(phone: &str) -> Value {
    if !phone.is_empty() && phone.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(number) = phone.parse::<u64>() {
            return Value::from(number);
        }
    }
    Value::String(phone.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_build_a_send_contact_body_with_only_what_was_given() {
        let args = SendArgs {
            chat_id: Some("11001234567@c.us".into()),
            phone: Some("79001234568".into()),
            first_name: Some("Artem".into()),
            company: Some("Green".into()),
            ..Default::default()
        };
        assert_eq!(
            body_from_flags(&args),
            json!({"chatId":"11001234567@c.us",
                   "contact":{"phoneContact":79001234568u64,"firstName":"Artem","company":"Green"}})
        );
        let args = SendArgs {
            quoted_message_id: Some("3EB0".into()),
            ..args
        };
        assert_eq!(body_from_flags(&args)["quotedMessageId"], json!("3EB0"));
    }

    #[test]
    fn a_phone_that_is_not_all_digits_stays_a_string_for_the_daemon_to_reject() {
        assert_eq!(phone_value("79001234568"), json!(79001234568u64));
        assert_eq!(phone_value("+79001234568"), json!("+79001234568"));
        assert_eq!(phone_value("7900abc"), json!("7900abc"));
        assert_eq!(
            phone_value("99999999999999999999999"),
            json!("99999999999999999999999")
        );
        assert_eq!(phone_value(""), json!(""));
    }

    #[test]
    fn one_object_is_sent_unchanged_even_pretty_printed() {
        let body = b"{\n  \"chatId\": \"1@c.us\",\n  \"contact\": {}\n}\n".to_vec();
        assert_eq!(classify(body.clone()).unwrap(), Payload::Single(body));
    }

    #[test]
    fn malformed_json_goes_to_the_daemon_as_one_body() {
        for body in [&b"{\"chatId\": "[..], b"", b"not json", b"{\"a\":1\n"] {
            assert_eq!(
                classify(body.to_vec()).unwrap(),
                Payload::Single(body.to_vec())
            );
        }
    }

    #[test]
    fn an_array_is_a_batch_sent_unchanged() {
        let body = b"  [{\"chatId\":\"1@c.us\"}, {\"chatId\":\"2@c.us\"}]".to_vec();
        let expected = Payload::Batch(vec![Chunk {
            body: body.clone(),
            first: 0,
            len: 2,
        }]);
        assert_eq!(classify(body).unwrap(), expected);
        let broken = b"[{\"chatId\":".to_vec();
        assert_eq!(
            classify(broken.clone()).unwrap(),
            Payload::Batch(vec![Chunk {
                body: broken,
                first: 0,
                len: 0
            }])
        );
    }

    #[test]
    fn ndjson_with_several_lines_is_a_batch() {
        let body = b"{\"chatId\":\"1@c.us\"}\n\n{\"chatId\":\"2@c.us\"}\n".to_vec();
        let Payload::Batch(chunks) = classify(body).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len, 2);
        let sent: Value = serde_json::from_slice(&chunks[0].body).unwrap();
        assert_eq!(sent, json!([{"chatId":"1@c.us"},{"chatId":"2@c.us"}]));
    }

    #[test]
    fn a_bad_ndjson_line_is_named() {
        let err = classify(b"{\"a\":1}\n{\"b\":\n".to_vec()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(err.exit_code(), 65);
    }

    #[test]
    fn arrays_over_the_chunk_size_are_split() {
        let cards: Vec<Value> = (0..BATCH_CHUNK + 5).map(|i| json!({"n": i})).collect();
        let payload = classify(serde_json::to_vec(&cards).unwrap()).unwrap();
        assert_eq!(payload.card_count(), BATCH_CHUNK + 5);
        let Payload::Batch(chunks) = payload else {
            panic!("not a batch")
        };
        assert_eq!(
            chunks.iter().map(|c| (c.first, c.len)).collect::<Vec<_>>(),
            [(0, BATCH_CHUNK), (BATCH_CHUNK, 5)]
        );
        let last: Value = serde_json::from_slice(&chunks[1].body).unwrap();
        assert_eq!(last[0], json!({"n": BATCH_CHUNK}));
    }
}
