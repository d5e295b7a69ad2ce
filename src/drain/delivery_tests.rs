//! Delivery in the drain on a manual clock: a look is made only while the drain waits
//! (it changes no pacing wait), within the journal gate, and none at all while no card
//! is followed.

use std::time::Duration;

use super::{step_until_wait, World};
use crate::drain::{Drain, Outcome};
use crate::state::Delivery;

const JOURNAL: &str = "lastOutgoingMessages";

/// Steps while there is progress; the first other outcome.
async fn settle(drain: &mut Drain) -> Outcome {
    for _ in 0..20 {
        match drain.step().await.unwrap() {
            Outcome::Progress => continue,
            other => return other,
        }
    }
    panic!("no rest in 20 steps");
}

#[tokio::test]
async fn a_look_goes_between_sends_changes_no_pacing_and_stops_when_nothing_is_followed() {
    let mut w = World::new(2).await;
    w.queue.delivery_poll = Duration::from_secs(1);
    // Not delivered yet.
    let hour = Duration::from_secs(3600);
    w.sandbox.set_delivery_delays(None, hour, hour);
    let mut drain = w.drain();
    // The first card goes; while the line waits for its pacing, the look a start owes
    // (cards may be followed from before) finds it `sent`: nothing changes.
    assert_eq!(step_until_wait(&mut drain).await, super::SEND_DELAY);
    assert_eq!(w.sent(), 1);
    assert_eq!(w.sandbox.request_count("1101000001", JOURNAL), 1);

    // Read now. A delivery_poll on, the journal gate (1.1 s) still shut: no look.
    w.sandbox
        .set_delivery_delays(None, Duration::ZERO, Duration::ZERO);
    w.clock.advance(Duration::from_secs(1));
    step_until_wait(&mut drain).await;
    assert_eq!(w.sandbox.request_count("1101000001", JOURNAL), 1);
    // Once it opens, inside the pacing wait: one look, and the wait is what it was.
    w.clock.advance(Duration::from_millis(100));
    let wait = step_until_wait(&mut drain).await;
    assert_eq!(w.sandbox.request_count("1101000001", JOURNAL), 2);
    assert_eq!(
        wait,
        Duration::from_millis(3900),
        "the look took none of the pacing"
    );
    let head = w.store.head_rows("main", 10).await.unwrap();
    assert_eq!(head.len(), 1, "the second card still waits its turn");
    let all = crate::store::ListFilter {
        limit: 10,
        ..Default::default()
    };
    let first = w.store.list(&all).await.unwrap().0;
    let sent: Vec<_> = first.iter().filter(|m| m.state == "sent").collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].delivery, Some(Delivery::Read));
    assert!(sent[0].delivered_at.is_some() && sent[0].read_at.is_some());

    // Nothing followed any more: no look while the line waits out its pacing.
    w.clock.advance(Duration::from_secs(2));
    step_until_wait(&mut drain).await;
    assert_eq!(w.sandbox.request_count("1101000001", JOURNAL), 2);

    // The second card goes at its time; a poll later it is looked up too.
    w.clock.advance(Duration::from_millis(1900));
    assert_eq!(
        settle(&mut drain).await,
        Outcome::Idle,
        "an empty line is idle"
    );
    assert_eq!(w.sent(), 2);
    assert_eq!(w.sandbox.request_count("1101000001", JOURNAL), 2);
    w.clock.advance(Duration::from_millis(1100));
    assert_eq!(settle(&mut drain).await, Outcome::Idle, "and stays idle");
    assert_eq!(w.sandbox.request_count("1101000001", JOURNAL), 3);
}
