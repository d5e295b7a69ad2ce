//! Identifiers that are more than text: a [`MessageId`] is a ULID, parsed once.
//!
//! Ids are written in canonical form (26 upper-case Crockford base-32 characters, as
//! the store's ULID generator writes them) and accepted in any case from a user, so
//! `contactq show 01jd…` finds `01JD…`. It imports nothing else of ours.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The length of a ULID's text.
pub const ULID_LEN: usize = 26;
/// Crockford's base-32 alphabet (no I, L, O, U), as ULIDs use it.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Which bytes are in [`CROCKFORD`]: an id is parsed on every answer that carries one,
/// so the check is a table lookup, not a search of the alphabet.
const IS_CROCKFORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < CROCKFORD.len() {
        table[CROCKFORD[i] as usize] = true;
        i += 1;
    }
    table
};

/// A message's id: a ULID in canonical upper-case form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

/// A text that is not a message id (a 26-character ULID).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a message id (a 26-character ULID)")]
pub struct InvalidMessageId(pub String);

impl MessageId {
    /// The canonical (upper-case) text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    /// 26 Crockford base-32 characters in any case; the first at most `7` (a ULID is
    /// 128 bits, so a larger first character would not fit).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let canonical = text.to_ascii_uppercase();
        let bytes = canonical.as_bytes();
        let valid = bytes.len() == ULID_LEN
            && bytes[0] <= b'7'
            && bytes.iter().all(|&b| IS_CROCKFORD[b as usize]);
        if valid {
            Ok(MessageId(canonical))
        } else {
            Err(InvalidMessageId(text.to_string()))
        }
    }
}

impl From<ulid::Ulid> for MessageId {
    /// A freshly generated id (its text is already canonical).
    fn from(ulid: ulid::Ulid) -> Self {
        MessageId(ulid.to_string())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "01JD3W0000000000000000000A";

    #[test]
    fn an_id_is_accepted_in_any_case_and_kept_upper_case() {
        for text in [
            ID,
            "01jd3w0000000000000000000a",
            "01Jd3W0000000000000000000a",
        ] {
            let id: MessageId = text.parse().unwrap();
            assert_eq!(id.as_str(), ID);
            assert_eq!(id.to_string(), ID);
        }
    }

    #[test]
    fn a_generated_ulid_parses_to_itself() {
        let ulid = ulid::Ulid::new();
        let text = ulid.to_string();
        assert_eq!(text.parse::<MessageId>().unwrap().as_str(), text);
        assert_eq!(MessageId::from(ulid), text.parse::<MessageId>().unwrap());
        let largest = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ";
        assert_eq!(largest.parse::<MessageId>().unwrap().as_str(), largest);
    }

    #[test]
    fn what_is_not_a_ulid_is_refused_naming_it() {
        for bad in [
            "",
            "01NOSUCHMESSAGE0000000000",   // 25 characters, and O, U
            "01JD3W0000000000000000000",   // 25
            "01JD3W0000000000000000000AB", // 27
            "01JD3W000000000000000000IA",  // I is not Crockford
            "01JD3W000000000000000000-A",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", // over 128 bits
        ] {
            let err = bad.parse::<MessageId>().unwrap_err();
            assert_eq!(err.0, bad);
            assert!(err.to_string().contains("not a message id"), "{err}");
        }
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let id: MessageId = serde_json::from_value(json!(ID.to_lowercase())).unwrap();
        assert_eq!(serde_json::to_value(&id).unwrap(), json!(ID));
        let err = serde_json::from_value::<MessageId>(json!("nope")).unwrap_err();
        assert!(
            err.to_string().contains("'nope' is not a message id"),
            "{err}"
        );
    }
}
