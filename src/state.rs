//! The domain's vocabularies of state, each defined once: a message's
//! [`MessageState`] (docs/api.md §5), a sent message's WhatsApp [`Delivery`]
//! (docs/api.md §11) and an instance's [`Authorization`], the Green API's
//! `stateInstance` (docs/api.md §3, `status`).
//!
//! The daemon (API, drain, metrics), the CLI (`list --state`, colours) and the sandbox
//! (the states it answers) all use these types; the wire names live here and nowhere
//! else. It imports nothing else of ours.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a message is in its life. Serialized as the lowercase wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting in its instance's line.
    Queued,
    /// Claimed by the drain; the `sendContact` request is (or may be) under way.
    Sending,
    /// The API answered with an `idMessage`.
    Sent,
    /// The API refused it, or the attempts ran out.
    Failed,
    /// Older than `max_age` before it could be sent.
    Expired,
    /// `contactq cancel` took it out of the line.
    Cancelled,
}

impl MessageState {
    /// Every state, in the order of a message's life.
    pub const ALL: [MessageState; 6] = [
        MessageState::Queued,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Failed,
        MessageState::Expired,
        MessageState::Cancelled,
    ];

    /// The states a message ends in (each counted by `contactq_messages_total`).
    pub const ENDED: [MessageState; 4] = [
        MessageState::Sent,
        MessageState::Failed,
        MessageState::Expired,
        MessageState::Cancelled,
    ];

    /// The wire name: `queued`, `sending`, `sent`, `failed`, `expired`, `cancelled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Failed => "failed",
            MessageState::Expired => "expired",
            MessageState::Cancelled => "cancelled",
        }
    }

    /// Every wire name, in [`MessageState::ALL`]'s order.
    pub fn names() -> [&'static str; 6] {
        MessageState::ALL.map(MessageState::as_str)
    }

    /// Whether the message is done: no further send happens unless it is retried.
    pub const fn is_ended(self) -> bool {
        !matches!(self, MessageState::Queued | MessageState::Sending)
    }

    /// Whether `retry` may put it back in line (failed or expired only).
    pub const fn is_retryable(self) -> bool {
        matches!(self, MessageState::Failed | MessageState::Expired)
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not one of the six message states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a message state (one of: queued, sending, sent, failed, expired, cancelled)")]
pub struct UnknownMessageState(pub String);

impl FromStr for MessageState {
    type Err = UnknownMessageState;

    /// The exact wire name (lowercase), as the API and the database spell it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownMessageState(s.to_string()))
    }
}

/// An instance's `stateInstance`, as the Green API reports it, or `unknown` before
/// contactq has seen one.
///
/// A state the API reports that this list does not know is kept, text and all, as
/// [`Authorization::Other`]: `status` shows it as the API wrote it, the drain holds the
/// line (only `authorized` sends), and the `contactq_authorization` gauge counts it
/// under `unknown` (its label set stays fixed). Nothing the API says is lost or
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Authorization {
    Authorized,
    NotAuthorized,
    Blocked,
    SleepMode,
    Starting,
    YellowCard,
    Suspended,
    /// contactq has not had an answer yet (never from the API).
    #[default]
    Unknown,
    /// A `stateInstance` this list does not know, as the API wrote it.
    Other(String),
}

impl Authorization {
    /// The states the real API reports (the sandbox answers any of these).
    pub const API_STATES: [Authorization; 7] = [
        Authorization::Authorized,
        Authorization::NotAuthorized,
        Authorization::Starting,
        Authorization::YellowCard,
        Authorization::Blocked,
        Authorization::SleepMode,
        Authorization::Suspended,
    ];

    /// Every named state, [`Authorization::API_STATES`] and then `unknown`: the
    /// `contactq_authorization` gauge's label set.
    pub const KNOWN: [Authorization; 8] = [
        Authorization::Authorized,
        Authorization::NotAuthorized,
        Authorization::Blocked,
        Authorization::SleepMode,
        Authorization::Starting,
        Authorization::YellowCard,
        Authorization::Suspended,
        Authorization::Unknown,
    ];

    /// The wire name (`authorized`, `notAuthorized`, …), or the API's own text for
    /// [`Authorization::Other`].
    pub fn as_str(&self) -> &str {
        match self {
            Authorization::Other(text) => text,
            named => named.known_name().expect("every other variant is named"),
        }
    }

    /// The names of [`Authorization::API_STATES`].
    pub fn api_names() -> Vec<&'static str> {
        Authorization::API_STATES
            .iter()
            .map(|state| state.known_name().expect("API_STATES are named"))
            .collect()
    }

    /// The wire name of a named state; None for [`Authorization::Other`].
    pub fn known_name(&self) -> Option<&'static str> {
        match self {
            Authorization::Other(_) => None,
            Authorization::Authorized => Some("authorized"),
            Authorization::NotAuthorized => Some("notAuthorized"),
            Authorization::Blocked => Some("blocked"),
            Authorization::SleepMode => Some("sleepMode"),
            Authorization::Starting => Some("starting"),
            Authorization::YellowCard => Some("yellowCard"),
            Authorization::Suspended => Some("suspended"),
            Authorization::Unknown => Some("unknown"),
        }
    }

    /// Only `authorized` lets cards go out.
    pub fn is_authorized(&self) -> bool {
        matches!(self, Authorization::Authorized)
    }

    /// Whether the real API reports this state (not `unknown`, not an unlisted one).
    pub fn is_api_state(&self) -> bool {
        Authorization::API_STATES.contains(self)
    }

    /// The state for a text: a named one by its exact wire name, else
    /// [`Authorization::Other`] keeping the text.
    pub fn parse(text: &str) -> Authorization {
        Authorization::KNOWN
            .into_iter()
            .find(|state| state.as_str() == text)
            .unwrap_or_else(|| Authorization::Other(text.to_string()))
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Authorization {
    type Err = std::convert::Infallible;

    /// Never fails: an unlisted text becomes [`Authorization::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Authorization::parse(s))
    }
}

impl From<&str> for Authorization {
    fn from(text: &str) -> Self {
        Authorization::parse(text)
    }
}

impl Serialize for Authorization {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Authorization {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Authorization::parse(&text))
    }
}

/// What became of a sent card on WhatsApp, followed through the `statusMessage` of
/// `lastOutgoingMessages` (docs/api.md §11). A card not sent yet has none (`null`).
///
/// It only moves forward: `sent`, then `delivered`, then `read`; or from `sent` to a
/// final failure (`failed`, `noAccount`, `notInGroup`) or to `unconfirmed` (still not
/// delivered when `delivery_window` ended). `read` implies `delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    Sent,
    Delivered,
    Read,
    Failed,
    NoAccount,
    NotInGroup,
    Unconfirmed,
}

impl Delivery {
    /// Every value, in the order of a card's life.
    pub const ALL: [Delivery; 7] = [
        Delivery::Sent,
        Delivery::Delivered,
        Delivery::Read,
        Delivery::Failed,
        Delivery::NoAccount,
        Delivery::NotInGroup,
        Delivery::Unconfirmed,
    ];

    /// The wire name, as the API, the database and the metrics spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Delivered => "delivered",
            Delivery::Read => "read",
            Delivery::Failed => "failed",
            Delivery::NoAccount => "noAccount",
            Delivery::NotInGroup => "notInGroup",
            Delivery::Unconfirmed => "unconfirmed",
        }
    }

    /// The value a journal `statusMessage` means, None for one contactq does not know.
    /// `pending` (not out of the phone yet) is still `sent` for contactq; a
    /// `yellowCard` (the account was flagged, the message not sent) is a failure.
    pub fn from_status_message(status: &str) -> Option<Delivery> {
        Some(match status {
            "pending" | "sent" => Delivery::Sent,
            "delivered" => Delivery::Delivered,
            "read" => Delivery::Read,
            "failed" | "yellowCard" => Delivery::Failed,
            "noAccount" => Delivery::NoAccount,
            "notInGroup" => Delivery::NotInGroup,
            _ => return None,
        })
    }

    /// Whether nothing follows: the card is no longer followed.
    pub const fn is_final(self) -> bool {
        !matches!(self, Delivery::Sent | Delivery::Delivered)
    }

    /// Whether it is a final failure (the `deliveryFailed` event).
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Delivery::Failed | Delivery::NoAccount | Delivery::NotInGroup
        )
    }

    /// Whether a card at `self` may move to `next`: forward only. From `sent` to
    /// anything else; from `delivered` only to `read` (a delivered card neither fails
    /// nor becomes unconfirmed); nothing after a final value.
    pub const fn may_become(self, next: Delivery) -> bool {
        match self {
            Delivery::Sent => !matches!(next, Delivery::Sent),
            Delivery::Delivered => matches!(next, Delivery::Read),
            _ => false,
        }
    }

    /// What a card still at `self` becomes when its `delivery_window` has ended at
    /// `now` (it was sent at `sent_at`, all Unix ms): `unconfirmed` for one never
    /// delivered; a `delivered` one keeps its value and is no longer followed.
    pub fn when_window_ends(self, sent_at: i64, window_ms: i64, now: i64) -> Option<Delivery> {
        let ended = now >= sent_at.saturating_add(window_ms);
        (ended && self == Delivery::Sent).then_some(Delivery::Unconfirmed)
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not one of the delivery values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a delivery value (one of: sent, delivered, read, failed, noAccount, notInGroup, unconfirmed)")]
pub struct UnknownDelivery(pub String);

impl FromStr for Delivery {
    type Err = UnknownDelivery;

    /// The exact wire name, as the API and the database spell it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Delivery::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDelivery(s.to_string()))
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod delivery_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_states_round_trip_through_their_wire_names() {
        for state in MessageState::ALL {
            let text = state.as_str();
            assert_eq!(text.parse::<MessageState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), json!(text));
            assert_eq!(
                serde_json::from_value::<MessageState>(json!(text)).unwrap(),
                state
            );
            assert_eq!(state.to_string(), text);
        }
        assert_eq!(
            MessageState::names(),
            [
                "queued",
                "sending",
                "sent",
                "failed",
                "expired",
                "cancelled"
            ]
        );
    }

    #[test]
    fn an_unknown_message_state_is_refused_by_name() {
        for bad in ["Queued", "QUEUED", "done", "", " sent"] {
            let err = bad.parse::<MessageState>().unwrap_err();
            assert_eq!(err.0, bad);
            assert!(err.to_string().contains("one of: queued, sending"), "{err}");
            assert!(serde_json::from_value::<MessageState>(json!(bad)).is_err());
        }
    }

    #[test]
    fn ended_and_retryable_states() {
        let ended: Vec<_> = MessageState::ALL
            .into_iter()
            .filter(|s| s.is_ended())
            .collect();
        assert_eq!(ended, MessageState::ENDED);
        let retryable: Vec<_> = MessageState::ALL
            .into_iter()
            .filter(|s| s.is_retryable())
            .collect();
        assert_eq!(retryable, [MessageState::Failed, MessageState::Expired]);
    }

    #[test]
    fn authorization_round_trips_through_its_wire_names() {
        let names = [
            "authorized",
            "notAuthorized",
            "blocked",
            "sleepMode",
            "starting",
            "yellowCard",
            "suspended",
            "unknown",
        ];
        for (state, name) in Authorization::KNOWN.iter().zip(names) {
            assert_eq!(state.as_str(), name);
            assert_eq!(&Authorization::parse(name), state);
            assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
            assert_eq!(
                &serde_json::from_value::<Authorization>(json!(name)).unwrap(),
                state
            );
        }
        assert!(Authorization::Authorized.is_authorized());
        assert!(!Authorization::NotAuthorized.is_authorized());
        assert_eq!(Authorization::default(), Authorization::Unknown);
    }

    #[test]
    fn an_unlisted_authorization_keeps_the_apis_text() {
        let odd = Authorization::parse("pendingMigration");
        assert_eq!(odd, Authorization::Other("pendingMigration".to_string()));
        assert_eq!(odd.as_str(), "pendingMigration");
        assert_eq!(
            serde_json::to_value(&odd).unwrap(),
            json!("pendingMigration")
        );
        assert!(!odd.is_authorized());
        assert!(!odd.is_api_state());
        assert_eq!(odd.known_name(), None);
        // Names are exact: another case is not `authorized`, and cannot send.
        assert!(!Authorization::parse("Authorized").is_authorized());
    }

    #[test]
    fn api_states_are_the_seven_the_real_api_reports() {
        assert_eq!(
            Authorization::api_names(),
            [
                "authorized",
                "notAuthorized",
                "starting",
                "yellowCard",
                "blocked",
                "sleepMode",
                "suspended"
            ]
        );
        assert!(!Authorization::Unknown.is_api_state());
        assert!(Authorization::YellowCard.is_api_state());
    }
}
