//! What `contactq send` sends: a body built from flags, or a file told apart as one
//! card, a JSON array or NDJSON.
//!
//! One card goes to the daemon as the user's bytes, unchanged, so its error names
//! exactly what the user wrote. A batch is checked here first, card by card, with the
//! daemon's own validation ([`crate::contact::Card`]): one bad card stops the command
//! before anything is sent, whatever the file's size, so a file larger than one request
//! is never half-enqueued for a bad card (the daemon checks every card again). Only
//! then is it split into requests that each fit the batch endpoint's limits.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::args::SendArgs;
use super::error::CliError;
use crate::contact::Card;

/// At most this many cards go in one `:batch` request; a larger file becomes several.
pub const BATCH_CHUNK: usize = 10_000;
/// At most this many bytes go in one `:batch` request (the daemon's limit is 16 MiB;
/// the margin covers the commas and brackets of re-encoding).
pub const BATCH_BYTES: usize = 15 * 1024 * 1024;
/// The largest `--file` read: the whole file is parsed and checked before anything is
/// sent, so it is held in memory; past this the command refuses to read on.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;
/// The daemon's limit for one card's body (100 KiB): a card over it in a batch would be
/// refused there, after earlier requests went in, so it is refused here first.
pub const CARD_BYTES: usize = 100 * 1024;
/// How many bad cards the error lists (it says how many there were in all).
const LISTED_PROBLEMS: usize = 10;

/// One `:batch` request's worth of cards.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The JSON array to send.
    pub body: Vec<u8>,
    /// Index of the chunk's first card in the whole input.
    pub first: usize,
    /// Number of cards.
    pub len: usize,
}

/// What the input turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// One `sendContact` body, bytes as given.
    Single(Vec<u8>),
    /// One or more `:batch` requests, every card already checked.
    Batch(Vec<Chunk>),
}

#[cfg(test)]
impl Payload {
    /// Total number of cards.
    pub fn card_count(&self) -> usize {
        match self {
            Payload::Single(_) => 1,
            Payload::Batch(chunks) => chunks.iter().map(|c| c.len).sum(),
        }
    }
}

/// Reads `--file`; `-` is stdin. More than [`MAX_FILE`] bytes is refused (exit 65)
/// after reading at most one byte past the cap.
pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let io_error = |source| CliError::Input {
        path: path.to_path_buf(),
        source,
    };
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(io_error)?)
    };
    reader
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(CliError::BadInput(format!(
            "{} is larger than {} MiB, the most `send --file` reads: split it into several files",
            path.display(),
            MAX_FILE >> 20
        )));
    }
    Ok(bytes)
}

/// Tells one card from a batch. A JSON array is a batch; several JSON values on
/// separate lines (NDJSON) are a batch; anything else, including malformed JSON that
/// does not start like an array, is one body for the daemon to judge. Every card of a
/// batch is validated here; the first problems are named by index and nothing is sent.
pub fn classify(bytes: Vec<u8>) -> Result<Payload, CliError> {
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(Payload::Single(bytes));
    };
    let start = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if start.starts_with('[') {
        let cards = serde_json::from_str::<Vec<Value>>(start).map_err(|err| {
            CliError::BadInput(format!(
                "invalid JSON: the array is not a list of JSON values: {err}; nothing was enqueued"
            ))
        })?;
        validate(&cards, None)?;
        if cards.len() <= BATCH_CHUNK && bytes.len() <= BATCH_BYTES {
            // Fits one request: sent as written.
            let len = cards.len();
            return Ok(Payload::Batch(vec![Chunk {
                body: bytes,
                first: 0,
                len,
            }]));
        }
        return Ok(Payload::Batch(chunks(&cards)?));
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
    for (number, line) in &lines {
        let card = serde_json::from_str::<Value>(line).map_err(|err| {
            CliError::BadInput(format!(
                "invalid JSON: line {number} of the NDJSON input: {err}; nothing was enqueued"
            ))
        })?;
        cards.push(card);
    }
    let numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
    validate(&cards, Some(&numbers))?;
    Ok(Payload::Batch(chunks(&cards)?))
}

/// Every card through the daemon's own validation; the error lists the first bad
/// cards as the batch endpoint does (`[index]: detail`, with the NDJSON line number).
fn validate(cards: &[Value], line_numbers: Option<&[usize]>) -> Result<(), CliError> {
    if cards.is_empty() {
        return Err(CliError::BadInput(
            "Validation failed. Details: 'value' must contain at least 1 item".into(),
        ));
    }
    let mut bad = 0usize;
    let mut listed = Vec::new();
    let mut first = None;
    for (index, card) in cards.iter().enumerate() {
        let problem = match Card::parse(card) {
            Err(err) => Some(err.detail),
            Ok(_) => {
                let size = serde_json::to_vec(card).map_or(usize::MAX, |b| b.len());
                (size > CARD_BYTES).then(|| {
                    format!("the card is {size} bytes; one card may have at most {CARD_BYTES}")
                })
            }
        };
        if let Some(detail) = problem {
            bad += 1;
            first.get_or_insert(index);
            if listed.len() < LISTED_PROBLEMS {
                let line = line_numbers
                    .and_then(|n| n.get(index))
                    .map(|n| format!(" (line {n})"))
                    .unwrap_or_default();
                listed.push(format!("[{index}]{line}: {detail}"));
            }
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(CliError::BadInput(format!(
            "Validation failed. Details: {} ({bad} bad card{} of {}, the first at index {first}; nothing was enqueued)",
            listed.join("; "),
            if bad == 1 { "" } else { "s" },
            cards.len()
        ))),
    }
}

/// Splits checked cards into requests of at most [`BATCH_CHUNK`] cards and
/// [`BATCH_BYTES`] bytes.
fn chunks(cards: &[Value]) -> Result<Vec<Chunk>, CliError> {
    let mut out = Vec::new();
    let mut body = Vec::from(&b"["[..]);
    let mut first = 0;
    let mut len = 0;
    for (index, card) in cards.iter().enumerate() {
        let encoded = serde_json::to_vec(card)
            .map_err(|err| CliError::BadInput(format!("cannot encode cards: {err}")))?;
        if len > 0 && (len == BATCH_CHUNK || body.len() + 1 + encoded.len() + 1 > BATCH_BYTES) {
            body.push(b']');
            out.push(Chunk {
                body: std::mem::replace(&mut body, Vec::from(&b"["[..])),
                first,
                len,
            });
            first = index;
            len = 0;
        }
        if len > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&encoded);
        len += 1;
    }
    body.push(b']');
    out.push(Chunk { body, first, len });
    Ok(out)
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

    fn good(n: usize) -> Value {
        json!({"chatId": "11001234567@c.us",
               "contact": {"phoneContact": 79001234568u64, "firstName": format!("N{n}")}})
    }

    #[test]
    fn an_array_of_good_cards_is_a_batch_sent_unchanged() {
        let body = format!("  [{}, {}]", good(1), good(2)).into_bytes();
        let expected = Payload::Batch(vec![Chunk {
            body: body.clone(),
            first: 0,
            len: 2,
        }]);
        assert_eq!(classify(body).unwrap(), expected);
    }

    #[test]
    fn a_broken_array_is_refused_here() {
        let err = classify(b"[{\"chatId\":".to_vec()).unwrap_err();
        assert_eq!(err.exit_code(), 65);
        assert!(err.to_string().contains("nothing was enqueued"), "{err}");
    }

    #[test]
    fn ndjson_with_several_lines_is_a_batch() {
        let body = format!("{}\n\n{}\n", good(1), good(2)).into_bytes();
        let Payload::Batch(chunks) = classify(body).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len, 2);
        let sent: Value = serde_json::from_slice(&chunks[0].body).unwrap();
        assert_eq!(sent, json!([good(1), good(2)]));
    }

    #[test]
    fn a_bad_ndjson_line_is_named() {
        let err = classify(format!("{}\n{{\"b\":\n", good(1)).into_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(err.exit_code(), 65);
    }

    #[test]
    fn one_bad_card_anywhere_refuses_the_whole_file_naming_index_and_field() {
        let mut cards: Vec<Value> = (0..25_000).map(good).collect();
        cards[15_000]["typingTime"] = json!(-5);
        cards[20_000]["contact"]["phoneContact"] = json!("abc");
        let err = classify(serde_json::to_vec(&cards).unwrap()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.exit_code(), 65);
        assert!(
            text.contains("[15000]: 'typingTime' must be greater than or equal to 1000"),
            "{text}"
        );
        assert!(
            text.contains("[20000]: 'contact.phoneContact' must be a number"),
            "{text}"
        );
        assert!(
            text.contains("2 bad cards of 25000, the first at index 15000"),
            "{text}"
        );
        // NDJSON names the line as well.
        let ndjson: String = cards.iter().map(|c| format!("{c}\n")).collect();
        let text = classify(ndjson.into_bytes()).unwrap_err().to_string();
        assert!(
            text.contains("[15000] (line 15001): 'typingTime'"),
            "{text}"
        );
    }

    #[test]
    fn arrays_over_the_chunk_size_are_split() {
        let cards: Vec<Value> = (0..BATCH_CHUNK + 5).map(good).collect();
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
        assert_eq!(last[0], good(BATCH_CHUNK));
    }

    #[test]
    fn chunks_also_stay_under_the_batch_byte_limit() {
        // 300 cards of ~90 KiB: fewer than BATCH_CHUNK cards, but ~26 MiB.
        let big = "x".repeat(90 * 1024);
        let cards: Vec<Value> = (0..300)
            .map(|_| {
                json!({"chatId": "11001234567@c.us",
                "contact": {"phoneContact": 79001234568u64, "company": big}})
            })
            .collect();
        let Payload::Batch(chunks) = classify(serde_json::to_vec(&cards).unwrap()).unwrap() else {
            panic!("not a batch")
        };
        assert!(chunks.len() >= 2, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.body.len() <= BATCH_BYTES));
        assert_eq!(chunks.iter().map(|c| c.len).sum::<usize>(), 300);
        let all: Vec<Value> = chunks
            .iter()
            .flat_map(|c| serde_json::from_slice::<Vec<Value>>(&c.body).unwrap())
            .collect();
        assert_eq!(all, cards, "every card once, in order");
    }

    #[test]
    fn a_card_over_100_kib_is_refused_before_anything_is_sent() {
        let mut cards: Vec<Value> = (0..3).map(good).collect();
        cards[2]["contact"]["company"] = json!("x".repeat(CARD_BYTES));
        let err = classify(serde_json::to_vec(&cards).unwrap()).unwrap_err();
        assert!(err.to_string().contains("[2]: the card is"), "{err}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_without_reading_it_all() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(MAX_FILE + 4096).unwrap();
        let err = read_file(f.path()).unwrap_err();
        assert_eq!(err.exit_code(), 65);
        assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
    }
}
