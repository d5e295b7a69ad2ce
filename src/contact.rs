//! The domain: a validated contact card, parsed once at the edge.
//!
//! [`Card::parse`] applies the Green API's own `sendContact` rules (docs/api.md,
//! section 4) and returns the API's error texts, so a card that reaches the store is one
//! the API would accept. What the API accepts but documents otherwise (a phone of 7 to
//! 15 digits outside the documented 11–12) passes with a warning ([`Card::warnings`]).
//! The daemon and the CLI (`send --file` checks every card before it sends any) use this
//! module; the sandbox has its own, independent validator. It imports nothing else of
//! ours.
//!
//! A [`Card`] (and its [`Contact`]) can only come out of [`Card::parse`]: every field is
//! private and read through accessors, and no constructor skips the rules.

use serde::Serialize;
use serde_json::{Map, Value};

/// The largest integer a JavaScript number holds exactly (the API is written in JS).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

const NAME_FIELDS: [&str; 4] = ["firstName", "middleName", "lastName", "company"];

/// The phone lengths E.164 allows; the API documents only 11 and 12 but takes others
/// (Brazilian mobiles have 13 digits).
pub const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
/// The phone lengths the API documents; others pass with a warning.
pub const DOCUMENTED_PHONE_DIGITS: std::ops::RangeInclusive<usize> = 11..=12;
/// `typingTime`'s documented range, in milliseconds.
pub const TYPING_TIME_MS: std::ops::RangeInclusive<i64> = 1000..=20000;

/// A validation failure, carrying the Green API's text (which names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Validation failed. Details: {detail}")]
pub struct ValidationError {
    /// The part after "Details: ", e.g. `'chatId' is required`.
    pub detail: String,
}

impl ValidationError {
    fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }
}

/// The contact object of a card, with the phone as a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    phone_contact: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    middle_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company: Option<String>,
}

impl Contact {
    /// `phoneContact`: 7 to 15 digits, a safe integer.
    pub fn phone(&self) -> u64 {
        self.phone_contact
    }

    pub fn first_name(&self) -> Option<&str> {
        self.first_name.as_deref()
    }

    pub fn middle_name(&self) -> Option<&str> {
        self.middle_name.as_deref()
    }

    pub fn last_name(&self) -> Option<&str> {
        self.last_name.as_deref()
    }

    pub fn company(&self) -> Option<&str> {
        self.company.as_deref()
    }
}

/// A `sendContact` body that passed validation; [`Card::parse`] is the only way to
/// get one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    chat_id: String,
    contact: Contact,
    #[serde(skip_serializing_if = "Option::is_none")]
    quoted_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    typing_time: Option<i64>,
}

impl Card {
    /// `<digits>@c.us`, `<digits>@lid`, `<digits>@g.us` or `<digits>-<digits>@g.us`.
    pub fn chat_id(&self) -> &str {
        &self.chat_id
    }

    pub fn contact(&self) -> &Contact {
        &self.contact
    }

    pub fn quoted_message_id(&self) -> Option<&str> {
        self.quoted_message_id.as_deref()
    }

    /// Milliseconds, 1000 to 20000.
    pub fn typing_time(&self) -> Option<i64> {
        self.typing_time
    }

    /// Parses raw JSON text; a syntax error is reported like the API's body parser.
    pub fn parse_json(text: &[u8]) -> Result<Card, ValidationError> {
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| ValidationError::new(format!("invalid JSON: {e}")))?;
        Card::parse(&value)
    }

    /// Validates a JSON value as a `sendContact` body.
    pub fn parse(value: &Value) -> Result<Card, ValidationError> {
        let body = value
            .as_object()
            .ok_or_else(|| ValidationError::new("'value' must be of type object"))?;
        if body.is_empty() {
            return Err(ValidationError::new("'value' must have at least 1 key"));
        }
        let chat_id = parse_chat_id(body.get("chatId"))?;
        let contact = parse_contact(body.get("contact"))?;
        let quoted_message_id = match body.get("quotedMessageId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ValidationError::new("'quotedMessageId' must be a string")),
        };
        let typing_time = match body.get("typingTime") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_typing_time(v)?),
        };
        reject_unknown(
            body,
            &["chatId", "contact", "quotedMessageId", "typingTime"],
            "",
        )?;
        Ok(Card {
            chat_id,
            contact,
            quoted_message_id,
            typing_time,
        })
    }

    /// What the API accepts but does not document: said in the enqueue answer's
    /// `warnings`, never a refusal.
    pub fn warnings(&self) -> Vec<String> {
        phone_warning(self.contact.phone_contact)
            .into_iter()
            .collect()
    }

    /// The body as sent to the API: `phoneContact` always a JSON number.
    pub fn to_body(&self) -> Value {
        serde_json::to_value(self).expect("a Card always serializes")
    }

    /// A stable text form of the body, used to compare idempotent repeats.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a Card always serializes")
    }
}

fn parse_chat_id(value: Option<&Value>) -> Result<String, ValidationError> {
    let chat_id = match value {
        None | Some(Value::Null) => return Err(ValidationError::new("'chatId' is required")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(ValidationError::new("'chatId' must be a string")),
    };
    if is_valid_chat_id(chat_id) {
        Ok(chat_id.clone())
    } else {
        Err(ValidationError::new(format!(
            "'chatId' with value '{chat_id}' fails to match the required pattern: \
             <digits>@c.us, <digits>@lid, <digits>@g.us or <digits>-<digits>@g.us"
        )))
    }
}

/// `<digits>@c.us` (personal), `<digits>@lid` (a personal chat by its linked id) or
/// `<digits>@g.us` / `<digits>-<digits>@g.us` (group).
pub fn is_valid_chat_id(chat_id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(user) = chat_id
        .strip_suffix("@c.us")
        .or_else(|| chat_id.strip_suffix("@lid"))
    {
        digits(user)
    } else if let Some(group) = chat_id.strip_suffix("@g.us") {
        match group.split_once('-') {
            Some((owner, stamp)) => digits(owner) && digits(stamp),
            None => digits(group),
        }
    } else {
        false
    }
}

fn parse_contact(value: Option<&Value>) -> Result<Contact, ValidationError> {
    let contact = match value {
        None | Some(Value::Null) => return Err(ValidationError::new("'contact' is required")),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ValidationError::new("'contact' must be of type object")),
    };
    let phone_contact = parse_phone(contact.get("phoneContact"))?;
    let mut names: [Option<String>; 4] = Default::default();
    for (slot, field) in names.iter_mut().zip(NAME_FIELDS) {
        *slot = match contact.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => {
                return Err(ValidationError::new(format!(
                    "'contact.{field}' is not allowed to be empty"
                )))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ValidationError::new(format!(
                    "'contact.{field}' must be a string"
                )))
            }
        };
    }
    if names.iter().all(Option::is_none) {
        return Err(ValidationError::new(
            "'contact' must contain at least one of [firstName, middleName, lastName, company]",
        ));
    }
    let mut allowed = vec!["phoneContact"];
    allowed.extend(NAME_FIELDS);
    reject_unknown(contact, &allowed, "contact.")?;
    let [first_name, middle_name, last_name, company] = names;
    Ok(Contact {
        phone_contact,
        first_name,
        middle_name,
        last_name,
        company,
    })
}

/// A number, or a string of digits (the API converts numeric strings).
fn parse_phone(value: Option<&Value>) -> Result<u64, ValidationError> {
    const FIELD: &str = "'contact.phoneContact'";
    let not_number = || ValidationError::new(format!("{FIELD} must be a number"));
    let unsafe_number = || ValidationError::new(format!("{FIELD} must be a safe number"));
    let phone = match value {
        None | Some(Value::Null) => {
            return Err(ValidationError::new(format!("{FIELD} is required")))
        }
        Some(Value::Number(n)) => number_to_u64(n, FIELD)?,
        Some(Value::String(s)) => {
            // Like JavaScript's Number(): surrounding blanks and a leading '+' are fine.
            let digits = s.trim();
            let digits = digits.strip_prefix('+').unwrap_or(digits);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_number());
            }
            digits.parse::<u64>().map_err(|_| unsafe_number())?
        }
        Some(_) => return Err(not_number()),
    };
    if phone > MAX_SAFE_INTEGER {
        return Err(unsafe_number());
    }
    if !PHONE_DIGITS.contains(&digit_count(phone)) {
        return Err(out_of_range(FIELD));
    }
    Ok(phone)
}

fn out_of_range(field: &str) -> ValidationError {
    ValidationError::new(format!(
        "{field} must be a positive integer of {} to {} digits",
        PHONE_DIGITS.start(),
        PHONE_DIGITS.end()
    ))
}

fn digit_count(phone: u64) -> usize {
    phone.to_string().len()
}

/// `phoneContact has N digits; the API documents 11 or 12` for an accepted phone
/// outside the documented lengths.
pub fn phone_warning(phone: u64) -> Option<String> {
    let digits = digit_count(phone);
    (!DOCUMENTED_PHONE_DIGITS.contains(&digits))
        .then(|| format!("phoneContact has {digits} digits; the API documents 11 or 12"))
}

fn number_to_u64(n: &serde_json::Number, field: &str) -> Result<u64, ValidationError> {
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    if n.as_i64().is_some() {
        return Err(out_of_range(field));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.abs() > MAX_SAFE_INTEGER as f64 {
        Err(ValidationError::new(format!(
            "{field} must be a safe number"
        )))
    } else if f.fract() != 0.0 {
        Err(ValidationError::new(format!("{field} must be an integer")))
    } else if f < 0.0 {
        Err(out_of_range(field))
    } else {
        Ok(f as u64)
    }
}

fn parse_integer(field: &str, value: &Value) -> Result<i64, ValidationError> {
    let Value::Number(n) = value else {
        return Err(ValidationError::new(format!("'{field}' must be a number")));
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 => Ok(f as i64),
        Some(f) if f.fract() == 0.0 => Err(ValidationError::new(format!(
            "'{field}' must be a safe number"
        ))),
        _ => Err(ValidationError::new(format!(
            "'{field}' must be an integer"
        ))),
    }
}

/// `typingTime`: an integer of milliseconds in the documented range, with Joi's texts.
fn parse_typing_time(value: &Value) -> Result<i64, ValidationError> {
    const FIELD: &str = "typingTime";
    let ms = parse_integer(FIELD, value)?;
    if ms < *TYPING_TIME_MS.start() {
        return Err(ValidationError::new(format!(
            "'{FIELD}' must be greater than or equal to {}",
            TYPING_TIME_MS.start()
        )));
    }
    if ms > *TYPING_TIME_MS.end() {
        return Err(ValidationError::new(format!(
            "'{FIELD}' must be less than or equal to {}",
            TYPING_TIME_MS.end()
        )));
    }
    Ok(ms)
}

fn reject_unknown(
    object: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
) -> Result<(), ValidationError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ValidationError::new(format!(
            "'{prefix}{unknown}' is not allowed"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(v: Value) -> String {
        Card::parse(&v).unwrap_err().detail
    }

    fn card(v: Value) -> Card {
        Card::parse(&v).unwrap()
    }

    #[test]
    fn personal_chat_example_is_accepted() {
        let c = card(json!({"chatId": "11001234567@c.us", "contact": {
            "phoneContact": 79001234568u64, "firstName": "Artem", "middleName": "Petrovich",
            "lastName": "Evpatoriysky", "company": "Bicycle"}}));
        assert_eq!(c.contact().phone(), 79001234568);
        assert_eq!(c.contact().company(), Some("Bicycle"));
    }

    #[test]
    fn group_chat_example_is_accepted() {
        let c = card(json!({"chatId": "11001234567-1581234048@g.us",
            "contact": {"phoneContact": 79001234568u64, "firstName": "Artem"}}));
        assert_eq!(c.chat_id(), "11001234567-1581234048@g.us");
        card(json!({"chatId": "120363043968066561@g.us",
            "contact": {"phoneContact": 79001234568u64, "company": "Bicycle"}}));
    }

    #[test]
    fn quoted_message_example_is_accepted() {
        let c = card(json!({"chatId": "11001234567@c.us",
            "quotedMessageId": "361B0E63F2FDF95903B6A9C9A102F34B",
            "contact": {"phoneContact": 79001234568u64, "firstName": "Artem"}}));
        assert_eq!(
            c.quoted_message_id(),
            Some("361B0E63F2FDF95903B6A9C9A102F34B")
        );
    }

    #[test]
    fn cyrillic_names_are_accepted_and_kept() {
        let c = card(json!({"chatId": "11001234567@c.us", "contact": {
            "phoneContact": 79001234568u64, "firstName": "Артём", "lastName": "Евпаторийский"}}));
        assert_eq!(c.contact().first_name(), Some("Артём"));
        assert!(c.canonical().contains("Евпаторийский"));
    }

    #[test]
    fn numeric_string_phone_is_accepted_and_sent_as_number() {
        let c = card(json!({"chatId": "11001234567@c.us",
            "contact": {"phoneContact": "79001234568", "firstName": "Artem"}}));
        assert_eq!(
            c.to_body()["contact"]["phoneContact"],
            json!(79001234568u64)
        );
    }

    #[test]
    fn typing_time_passes_through() {
        let c = card(json!({"chatId": "11001234567@c.us", "typingTime": 3000,
            "contact": {"phoneContact": 79001234568u64, "firstName": "A"}}));
        assert_eq!(c.to_body()["typingTime"], json!(3000));
        assert_eq!(
            detail(json!({"chatId": "11001234567@c.us", "typingTime": "x",
                "contact": {"phoneContact": 79001234568u64, "firstName": "A"}})),
            "'typingTime' must be a number"
        );
        assert_eq!(
            detail(json!({"chatId": "11001234567@c.us", "typingTime": 1.5,
                "contact": {"phoneContact": 79001234568u64, "firstName": "A"}})),
            "'typingTime' must be an integer"
        );
    }

    #[test]
    fn a_parsed_card_reads_back_through_its_accessors_and_sends_only_api_fields() {
        let body = json!({"chatId": "11001234567@c.us", "typingTime": 3000,
            "quotedMessageId": "361B0E63F2FDF95903B6A9C9A102F34B",
            "contact": {"phoneContact": "79001234568", "firstName": "Artem",
                "middleName": "P", "lastName": "E", "company": "Bicycle"}});
        let c = card(body.clone());
        assert_eq!(c.chat_id(), "11001234567@c.us");
        assert_eq!(c.typing_time(), Some(3000));
        assert_eq!(
            c.quoted_message_id(),
            Some("361B0E63F2FDF95903B6A9C9A102F34B")
        );
        let contact = c.contact();
        assert_eq!(contact.phone(), 79001234568);
        assert_eq!(
            [
                contact.first_name(),
                contact.middle_name(),
                contact.last_name(),
                contact.company()
            ],
            [Some("Artem"), Some("P"), Some("E"), Some("Bicycle")]
        );
        // The body sent is the one parsed (the phone as a number), nothing added.
        let mut expected = body;
        expected["contact"]["phoneContact"] = json!(79001234568u64);
        assert_eq!(c.to_body(), expected);
        assert_eq!(Card::parse(&c.to_body()).unwrap(), c);
    }

    #[test]
    fn body_must_be_a_non_empty_object() {
        assert_eq!(detail(json!({})), "'value' must have at least 1 key");
        assert_eq!(detail(json!([1])), "'value' must be of type object");
        assert_eq!(
            Card::parse(&json!({})).unwrap_err().to_string(),
            "Validation failed. Details: 'value' must have at least 1 key"
        );
    }

    #[test]
    fn chat_id_rules() {
        let c = json!({"phoneContact": 79001234568u64, "firstName": "A"});
        assert_eq!(detail(json!({"contact": c})), "'chatId' is required");
        assert_eq!(
            detail(json!({"chatId": 11001234567u64, "contact": c})),
            "'chatId' must be a string"
        );
        for bad in [
            "1100@x.us",
            "@c.us",
            "abc@c.us",
            "1-2@c.us",
            "1-@g.us",
            "11001234567",
        ] {
            assert!(
                detail(json!({"chatId": bad, "contact": c})).starts_with("'chatId' with value"),
                "{bad}"
            );
        }
    }

    #[test]
    fn contact_rules() {
        let chat = "11001234567@c.us";
        assert_eq!(detail(json!({"chatId": chat})), "'contact' is required");
        assert_eq!(
            detail(json!({"chatId": chat, "contact": "x"})),
            "'contact' must be of type object"
        );
        assert_eq!(
            detail(json!({"chatId": chat, "contact": {"firstName": "A"}})),
            "'contact.phoneContact' is required"
        );
        assert!(
            detail(json!({"chatId": chat, "contact": {"phoneContact": 79001234568u64}}))
                .contains("at least one of [firstName, middleName, lastName, company]")
        );
        assert_eq!(
            detail(
                json!({"chatId": chat, "contact": {"phoneContact": 79001234568u64, "lastName": 5}})
            ),
            "'contact.lastName' must be a string"
        );
        assert_eq!(
            detail(
                json!({"chatId": chat, "contact": {"phoneContact": 79001234568u64, "company": ""}})
            ),
            "'contact.company' is not allowed to be empty"
        );
    }

    #[test]
    fn phone_rules() {
        let with = |p: Value| json!({"chatId": "11001234567@c.us", "contact": {"phoneContact": p, "firstName": "A"}});
        assert_eq!(
            detail(with(json!("abc"))),
            "'contact.phoneContact' must be a number"
        );
        assert_eq!(
            detail(json!(with(json!(true)))),
            "'contact.phoneContact' must be a number"
        );
        assert_eq!(
            detail(with(json!(9007199254740992u64))),
            "'contact.phoneContact' must be a safe number"
        );
        assert_eq!(
            detail(with(json!("123456789012345678901234"))),
            "'contact.phoneContact' must be a safe number"
        );
        assert_eq!(
            detail(with(json!(1e30))),
            "'contact.phoneContact' must be a safe number"
        );
        assert_eq!(
            detail(with(json!(79001234568.5))),
            "'contact.phoneContact' must be an integer"
        );
        for refused in [
            json!(790012u64),
            json!(7900123456812345u64),
            json!(-79001234568i64),
            json!(0),
            json!(-5.0),
            json!("000"),
        ] {
            assert_eq!(
                detail(with(refused.clone())),
                "'contact.phoneContact' must be a positive integer of 7 to 15 digits",
                "{refused}"
            );
        }
        assert_eq!(
            card(with(json!(790012345681u64))).contact().phone(),
            790012345681
        );
        assert_eq!(
            card(with(json!(79001234568.0))).contact().phone(),
            79001234568
        );
    }

    #[test]
    fn phones_of_7_to_15_digits_pass_with_a_warning_outside_11_or_12() {
        let with = |p: Value| json!({"chatId": "11001234567@c.us", "contact": {"phoneContact": p, "firstName": "A"}});
        // A Brazilian mobile: 13 digits, as a number and as a string.
        for brazil in [json!(5511912345678u64), json!("5511912345678")] {
            let c = card(with(brazil));
            assert_eq!(c.contact().phone(), 5511912345678);
            assert_eq!(
                c.warnings(),
                ["phoneContact has 13 digits; the API documents 11 or 12"]
            );
        }
        for (phone, digits) in [(1234567u64, 7), (123456789012345, 15), (1234567890, 10)] {
            let c = card(with(json!(phone)));
            assert_eq!(
                c.warnings(),
                [format!(
                    "phoneContact has {digits} digits; the API documents 11 or 12"
                )]
            );
        }
        for documented in [79001234568u64, 790012345681] {
            assert!(card(with(json!(documented))).warnings().is_empty());
        }
    }

    #[test]
    fn lid_chat_ids_are_accepted() {
        let c = card(json!({"chatId": "123456789012345@lid",
            "contact": {"phoneContact": 79001234568u64, "firstName": "A"}}));
        assert_eq!(c.chat_id(), "123456789012345@lid");
        for bad in ["@lid", "12a@lid", "1-2@lid", "12@lid.us"] {
            assert!(
                detail(json!({"chatId": bad,
                    "contact": {"phoneContact": 79001234568u64, "firstName": "A"}}))
                .starts_with("'chatId' with value"),
                "{bad}"
            );
        }
    }

    #[test]
    fn typing_time_must_be_an_integer_from_1000_to_20000() {
        let with = |t: Value| {
            json!({"chatId": "11001234567@c.us", "typingTime": t,
            "contact": {"phoneContact": 79001234568u64, "firstName": "A"}})
        };
        for ok in [1000, 20000, 5000] {
            assert_eq!(card(with(json!(ok))).typing_time(), Some(ok));
        }
        let cases = [
            (
                json!(-5),
                "'typingTime' must be greater than or equal to 1000",
            ),
            (
                json!(999),
                "'typingTime' must be greater than or equal to 1000",
            ),
            (
                json!(0),
                "'typingTime' must be greater than or equal to 1000",
            ),
            (
                json!(20001),
                "'typingTime' must be less than or equal to 20000",
            ),
            (json!(1e300), "'typingTime' must be a safe number"),
            (json!(1.5), "'typingTime' must be an integer"),
            (json!("x"), "'typingTime' must be a number"),
            (json!(true), "'typingTime' must be a number"),
        ];
        for (value, text) in cases {
            assert_eq!(detail(with(value.clone())), text, "{value}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let c = json!({"phoneContact": 79001234568u64, "firstName": "A"});
        assert_eq!(
            detail(json!({"chatId": "11001234567@c.us", "contact": c, "message": "hi"})),
            "'message' is not allowed"
        );
        assert_eq!(
            detail(json!({"chatId": "11001234567@c.us",
                "contact": {"phoneContact": 79001234568u64, "firstName": "A", "email": "x"}})),
            "'contact.email' is not allowed"
        );
        assert_eq!(
            detail(json!({"chatId": "11001234567@c.us", "contact": c, "quotedMessageId": 5})),
            "'quotedMessageId' must be a string"
        );
    }
}
