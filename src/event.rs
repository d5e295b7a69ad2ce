//! The event stream's vocabulary (docs/api.md §11): what happened to a card, one
//! [`EventKind`] per numbered event, defined once. The store writes these names, the
//! API and the hooks read them back through [`EventKind::from_str`], and the
//! configuration's `events = [...]` lists are checked against them. It imports only
//! [`crate::state`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::state::{Delivery, MessageState};

/// One change of a card that the stream numbers: its state (`queued` at the enqueue and
/// again at a `retry`, `sent`, `failed`, `expired`, `cancelled`) or, after `sent`, its
/// WhatsApp delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    Queued,
    Sent,
    Failed,
    Expired,
    Cancelled,
    Delivered,
    Read,
    DeliveryFailed,
    Unconfirmed,
}

impl EventKind {
    /// Every kind, in the order of a card's life.
    pub const ALL: [EventKind; 9] = [
        EventKind::Queued,
        EventKind::Sent,
        EventKind::Failed,
        EventKind::Expired,
        EventKind::Cancelled,
        EventKind::Delivered,
        EventKind::Read,
        EventKind::DeliveryFailed,
        EventKind::Unconfirmed,
    ];

    /// What a hook takes when its `events` are not given: the outcomes a program
    /// usually acts on.
    pub const HOOK_DEFAULT: [EventKind; 4] = [
        EventKind::Sent,
        EventKind::Failed,
        EventKind::Expired,
        EventKind::DeliveryFailed,
    ];

    /// The event a delivery change writes; None for `sent`, which the state change
    /// `sent` already told.
    pub const fn of_delivery(delivery: Delivery) -> Option<EventKind> {
        match delivery {
            Delivery::Sent => None,
            Delivery::Delivered => Some(EventKind::Delivered),
            Delivery::Read => Some(EventKind::Read),
            Delivery::Failed | Delivery::NoAccount | Delivery::NotInGroup => {
                Some(EventKind::DeliveryFailed)
            }
            Delivery::Unconfirmed => Some(EventKind::Unconfirmed),
        }
    }

    /// The wire name, as the stream, the database and the configuration spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Sent => "sent",
            EventKind::Failed => "failed",
            EventKind::Expired => "expired",
            EventKind::Cancelled => "cancelled",
            EventKind::Delivered => "delivered",
            EventKind::Read => "read",
            EventKind::DeliveryFailed => "deliveryFailed",
            EventKind::Unconfirmed => "unconfirmed",
        }
    }

    /// Every wire name, in [`EventKind::ALL`]'s order.
    pub fn names() -> [&'static str; 9] {
        EventKind::ALL.map(EventKind::as_str)
    }

    /// The card's state once this event happened: a delivery event happens to a
    /// `sent` card and leaves it `sent`.
    pub const fn state(self) -> MessageState {
        match self {
            EventKind::Queued => MessageState::Queued,
            EventKind::Failed => MessageState::Failed,
            EventKind::Expired => MessageState::Expired,
            EventKind::Cancelled => MessageState::Cancelled,
            EventKind::Sent
            | EventKind::Delivered
            | EventKind::Read
            | EventKind::DeliveryFailed
            | EventKind::Unconfirmed => MessageState::Sent,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is not one of the event names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an event (one of: queued, sent, failed, expired, cancelled, delivered, read, deliveryFailed, unconfirmed)")]
pub struct UnknownEvent(pub String);

impl FromStr for EventKind {
    type Err = UnknownEvent;

    /// The exact wire name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEvent(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_serializes_as_itself() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert!("Sent".parse::<EventKind>().is_err());
        assert!("sending".parse::<EventKind>().is_err());
    }
}
