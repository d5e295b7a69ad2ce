//! The drain's timing on a manual clock: a card not yet due holds nobody, the loop
//! sleeps until it comes due (not past it, without spinning), and quiet hours hold the
//! line until they end.

use std::time::Duration;

use super::{step_until_wait, World};
use crate::clock::{Clock, ManualClock};
use crate::contact::Card;
use crate::drain::Drain;
use crate::drain::Outcome;
use crate::quiet::QuietHours;
use crate::store::EnqueueRequest;

fn card(name: &str) -> Card {
    let body = format!(
        r#"{{"chatId":"11001234567@c.us","contact":{{"phoneContact":79001234568,"firstName":"{name}"}}}}"#
    );
    Card::parse_json(body.as_bytes()).unwrap()
}

async fn enqueue(w: &World, name: &str, not_before: Option<i64>) {
    w.store
        .enqueue(EnqueueRequest {
            instance: "main".into(),
            cards: vec![card(name)],
            idempotency_key: None,
            peer_uid: None,
            max_age_ms: 3_600_000,
            not_before,
        })
        .await
        .unwrap();
}

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
async fn a_card_not_yet_due_is_slept_for_not_past_and_joins_the_line_when_due() {
    let w = World::new(0).await;
    // The store stamps enqueues with the real time: the drain's clock starts there.
    let clock = ManualClock::new(crate::clock::now_ms());
    let due = clock.wall_ms() + 5_000;
    enqueue(&w, "later", Some(due)).await;
    let mut drain = w.drain().with_clock(clock.clone());
    // Nothing due: idle, and the loop's wait is cut to when the card comes due.
    assert_eq!(drain.step().await.unwrap(), Outcome::Idle);
    let wait = drain.cap_wait(Duration::from_secs(15));
    assert!(wait <= Duration::from_secs(5), "{wait:?}");
    assert!(wait > Duration::from_secs(4), "{wait:?}");
    // Asked again before then: still idle (no spin), nothing sent.
    assert_eq!(drain.step().await.unwrap(), Outcome::Idle);
    assert_eq!(w.sent(), 0);
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        drain.cap_wait(Duration::from_secs(15)),
        Duration::from_millis(1)
    );
    assert_eq!(settle(&mut drain).await, Outcome::Idle, "sent, line empty");
    assert_eq!(w.sent(), 1);
    assert_eq!(w.store.next_due("main").await.unwrap(), None);
    assert_eq!(
        drain.cap_wait(Duration::from_secs(15)),
        Duration::from_secs(15)
    );
}

#[tokio::test]
async fn quiet_hours_hold_the_line_until_they_end() {
    let mut w = World::new(1).await;
    // The world's clock reads 2027-01-15T08:00:00Z.
    assert_eq!(w.clock.wall_ms(), 1_800_000_000_000);
    w.instance.quiet_hours = Some(QuietHours::parse("07:00-09:00", "UTC").unwrap());
    let mut drain = w.drain();
    assert_eq!(
        step_until_wait(&mut drain).await,
        Duration::from_secs(3600),
        "until 09:00"
    );
    assert_eq!(w.sent(), 0);
    let shown = w
        .lines
        .get("main")
        .unwrap()
        .status()
        .hold
        .unwrap()
        .describe();
    assert_eq!(shown, "quiet hours (07:00-09:00 UTC) until 09:00:00");
    w.clock.advance(Duration::from_secs(3599));
    assert_eq!(step_until_wait(&mut drain).await, Duration::from_secs(1));
    assert_eq!(w.sent(), 0);
    w.clock.advance(Duration::from_secs(1));
    assert_eq!(settle(&mut drain).await, Outcome::Idle, "sent, line empty");
    assert_eq!(w.sent(), 1);
}
