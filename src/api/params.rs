//! Parameters the API reads from query strings and filters, parsed once and refused
//! with a 400 that names the field: times (RFC 3339), `notBefore`, an id prefix, a
//! phone number.

use chrono::DateTime;

use super::error::ApiError;

/// The furthest ahead a `notBefore` may be (docs/api.md §11).
pub const MAX_NOT_BEFORE_MS: i64 = 30 * 24 * 3_600_000;

/// An RFC 3339 time (`2026-11-24T10:00:00Z`, any offset) as Unix ms.
pub fn time(field: &str, text: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ApiError::bad_request(
                format!("invalid '{field}'"),
                format!("'{field}' must be an RFC 3339 time like 2026-11-24T10:00:00Z ({e})"),
            )
        })
}

/// `notBefore`: at most [`MAX_NOT_BEFORE_MS`] after `now`. A time already past is
/// kept as given (the card is due at once); it still counts for idempotency.
pub fn not_before(text: &str, now: i64) -> Result<i64, ApiError> {
    let at = time("notBefore", text)?;
    if at > now.saturating_add(MAX_NOT_BEFORE_MS) {
        return Err(ApiError::bad_request(
            "invalid 'notBefore'",
            "'notBefore' must be at most 30 days ahead",
        ));
    }
    Ok(at)
}

/// The ULID alphabet (Crockford base 32).
const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `idPrefix`: 1 to 26 characters of a message id, in any case; canonical upper case.
pub fn id_prefix(text: &str) -> Result<String, ApiError> {
    let upper = text.trim().to_ascii_uppercase();
    let valid = (1..=crate::ids::ULID_LEN).contains(&upper.len())
        && upper.chars().all(|c| CROCKFORD.contains(c));
    if !valid {
        return Err(ApiError::bad_request(
            "invalid query",
            "'idPrefix' must be 1 to 26 characters of a message id (0-9, A-Z without I, L, O, U)",
        ));
    }
    Ok(upper)
}

/// `phone`: the card's phone number, digits only.
/// A `chatId` filter: a chat id a card could have (a typo would match nothing and look
/// like "no such cards"), refused naming the key otherwise.
pub fn chat_id(context: &'static str, text: String) -> Result<String, ApiError> {
    if crate::contact::is_valid_chat_id(&text) {
        Ok(text)
    } else {
        Err(ApiError::bad_request(
            context,
            format!(
                "'chatId' must be <digits>@c.us, <digits>@lid, <digits>@g.us or \
                 <digits>-<digits>@g.us, not '{text}'"
            ),
        ))
    }
}

pub fn phone(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    text.parse::<i64>()
        .ok()
        .filter(|p| *p > 0 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::bad_request("invalid query", "'phone' must be the card's phone digits")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_before_is_an_rfc3339_time_at_most_30_days_ahead() {
        let now = time("t", "2026-11-24T10:00:00Z").unwrap();
        assert_eq!(
            not_before("2026-11-24T13:00:00+03:00", now).unwrap(),
            now,
            "any offset"
        );
        assert!(not_before("2026-12-24T10:00:00Z", now).is_ok(), "30 days");
        let far = not_before("2026-12-24T10:00:01Z", now).unwrap_err();
        assert!(far.to_string().contains("'notBefore'"), "{far}");
        let bad = not_before("tomorrow", now).unwrap_err();
        assert!(bad.to_string().contains("'notBefore'"), "{bad}");
        assert!(not_before("2020-01-01T00:00:00Z", now).is_ok(), "past: now");
    }

    #[test]
    fn id_prefixes_are_read_in_any_case_and_must_be_ulid_characters() {
        assert_eq!(id_prefix("01jd3w").unwrap(), "01JD3W");
        assert!(id_prefix("").is_err());
        assert!(id_prefix("01JDI").is_err(), "no I in a ULID");
        assert!(id_prefix(&"0".repeat(27)).is_err());
    }
}
