//! The forward-only rule of [`Delivery`] and the end of its window.

use super::Delivery;

#[test]
fn delivery_only_moves_forward() {
    use Delivery::*;
    for next in [Delivered, Read, Failed, NoAccount, NotInGroup, Unconfirmed] {
        assert!(Sent.may_become(next), "sent -> {next}");
    }
    assert!(!Sent.may_become(Sent));
    assert!(Delivered.may_become(Read));
    for next in [Sent, Delivered, Failed, NoAccount, NotInGroup, Unconfirmed] {
        assert!(!Delivered.may_become(next), "delivered -> {next}");
    }
    for done in [Read, Failed, NoAccount, NotInGroup, Unconfirmed] {
        assert!(done.is_final());
        for next in Delivery::ALL {
            assert!(!done.may_become(next), "{done} -> {next}");
        }
    }
    assert!(!Sent.is_final() && !Delivered.is_final());
}

#[test]
fn journal_statuses_map_to_delivery_values() {
    use Delivery::*;
    let cases = [
        ("pending", Some(Sent)),
        ("sent", Some(Sent)),
        ("delivered", Some(Delivered)),
        ("read", Some(Read)),
        ("failed", Some(Failed)),
        ("yellowCard", Some(Failed)),
        ("noAccount", Some(NoAccount)),
        ("notInGroup", Some(NotInGroup)),
        ("Read", None),
        ("", None),
    ];
    for (status, want) in cases {
        assert_eq!(Delivery::from_status_message(status), want, "{status}");
    }
    for d in Delivery::ALL {
        assert_eq!(d.as_str().parse::<Delivery>(), Ok(d));
        assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
    }
    assert!("noaccount".parse::<Delivery>().is_err());
}

#[test]
fn a_card_never_delivered_within_its_window_becomes_unconfirmed() {
    let window = 60_000;
    let sent_at = 1_000_000;
    assert_eq!(
        Delivery::Sent.when_window_ends(sent_at, window, sent_at + window - 1),
        None
    );
    assert_eq!(
        Delivery::Sent.when_window_ends(sent_at, window, sent_at + window),
        Some(Delivery::Unconfirmed)
    );
    // A delivered card keeps its value: it is only no longer followed.
    assert_eq!(
        Delivery::Delivered.when_window_ends(sent_at, window, sent_at + 10 * window),
        None
    );
    assert!(Delivery::Sent.may_become(Delivery::Unconfirmed));
}
