//! The event stream at the store's interface: one numbered event per change, written
//! with the change, numbered without gaps, told to subscribers after the commit, and
//! numbered on after retention.

use serde_json::json;

use super::*;

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("queue.db"), StoreOptions::default())
        .await
        .unwrap()
}

fn request(n: usize) -> EnqueueRequest {
    let cards = (0..n)
        .map(|i| {
            crate::contact::Card::parse(&json!({"chatId": "11001234567@c.us",
                "contact": {"phoneContact": 79_000_000_000u64 + i as u64, "firstName": "A"}}))
            .unwrap()
        })
        .collect();
    EnqueueRequest {
        instance: "main".into(),
        cards,
        idempotency_key: None,
        peer_uid: None,
        max_age_ms: 86_400_000,
        not_before: None,
    }
}

async fn enqueue(store: &Store, n: usize) -> Vec<MessageRow> {
    match store.enqueue(request(n)).await.unwrap() {
        EnqueueOutcome::Created { rows, .. } => rows,
        other => panic!("not created: {other:?}"),
    }
}

fn kinds(events: &[StreamEvent]) -> Vec<(i64, &str, &str)> {
    events
        .iter()
        .map(|e| (e.seq, e.id.as_str(), e.event.as_str()))
        .collect()
}

#[tokio::test]
async fn every_change_is_one_numbered_event_and_subscribers_hear_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut last = store.subscribe_events();
    assert_eq!(*last.borrow_and_update(), 0);
    let rows = enqueue(&store, 3).await;
    assert_eq!(
        *last.borrow_and_update(),
        3,
        "told after the enqueue's commit"
    );
    let (a, b, c) = (&rows[0].id, &rows[1].id, &rows[2].id);
    let now = crate::clock::now_ms();
    store.begin_attempt(a, "main", now).await.unwrap();
    let sent = SendOutcomeRecord::Sent {
        id_message: "X1".into(),
    };
    store.record_outcome(a, &sent, now).await.unwrap();
    // An outcome that changes nothing (the card is no longer sending) adds no event.
    store.record_outcome(a, &sent, now).await.unwrap();
    store.cancel(b).await.unwrap();
    store.begin_attempt(c, "main", now).await.unwrap();
    let failed = SendOutcomeRecord::Failed {
        error: "400".into(),
        http_status: Some(400),
    };
    store.record_outcome(c, &failed, now).await.unwrap();
    store.retry(c, 86_400_000).await.unwrap();
    assert!(store
        .record_delivery(a, crate::state::Delivery::Delivered, now)
        .await
        .unwrap());
    let events = store.events_after(0, None, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        vec![
            (1, a.as_str(), "queued"),
            (2, b.as_str(), "queued"),
            (3, c.as_str(), "queued"),
            (4, a.as_str(), "sent"),
            (5, b.as_str(), "cancelled"),
            (6, c.as_str(), "failed"),
            (7, c.as_str(), "queued"),
            (8, a.as_str(), "delivered"),
        ]
    );
    assert_eq!(*last.borrow_and_update(), 8);
    assert_eq!(
        events[3].message.as_ref().unwrap().id_message.as_deref(),
        Some("X1")
    );
    assert_eq!(
        store.stream_ends().await.unwrap(),
        StreamEnds {
            oldest: Some(1),
            last: 8
        }
    );
    assert_eq!(
        kinds(&store.events_after(6, None, 1).await.unwrap()),
        vec![(7, c.as_str(), "queued")]
    );
    assert!(store
        .events_after(0, Some("other"), 100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn retention_keeps_the_newest_event_so_numbers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    enqueue(&store, 5).await;
    let future = crate::clock::now_ms() + 60_000;
    assert_eq!(store.delete_old_events(future).await.unwrap(), 4);
    assert_eq!(store.delete_old_events(future).await.unwrap(), 0);
    assert_eq!(
        store.stream_ends().await.unwrap(),
        StreamEnds {
            oldest: Some(5),
            last: 5
        }
    );
    store.close().await;
    let store = open(&dir).await;
    assert_eq!(*store.subscribe_events().borrow(), 5, "read back at open");
    enqueue(&store, 1).await;
    let seqs: Vec<i64> = store
        .events_after(0, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![5, 6]);
}

#[tokio::test]
async fn a_consumer_starts_once_and_its_cursor_and_failures_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.start_consumer("h", 7).await.unwrap();
    store.start_consumer("h", 9).await.unwrap();
    assert_eq!(store.consumer("h").await.unwrap().unwrap().cursor, 7);
    assert!(store.consumer_failed("h", "exit 1").await.unwrap());
    assert!(store.consumer_failed("h", "exit 2").await.unwrap());
    let h = store.consumer("h").await.unwrap().unwrap();
    assert_eq!((h.failures, h.last_error.as_deref()), (2, Some("exit 2")));
    store.set_consumer_cursor("h", 8).await.unwrap();
    let h = store.consumer("h").await.unwrap().unwrap();
    assert_eq!((h.cursor, h.failures), (8, 0));
    assert!(!store.consumer_failed("nobody", "x").await.unwrap());
    assert_eq!(store.consumers().await.unwrap().len(), 1);
    assert!(store.delete_consumer("h").await.unwrap());
    assert!(store.consumer("h").await.unwrap().is_none());
}

#[tokio::test]
async fn delivery_moves_forward_only_with_its_events_and_counts() {
    use crate::state::Delivery;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let rows = enqueue(&store, 3).await;
    let (a, b, c) = (&rows[0].id, &rows[1].id, &rows[2].id);
    let now = crate::clock::now_ms();
    // Not sent yet: no delivery, nothing followed, nothing recorded.
    assert_eq!(store.message(a).await.unwrap().delivery, None);
    assert!(!store
        .record_delivery(a, Delivery::Delivered, now)
        .await
        .unwrap());
    for (id, idm) in [(a, "XA"), (b, "XB"), (c, "XC")] {
        store.begin_attempt(id, "main", now).await.unwrap();
        let sent = SendOutcomeRecord::Sent {
            id_message: idm.into(),
        };
        store.record_outcome(id, &sent, now).await.unwrap();
    }
    let followed = store.followed("main", 0, 10).await.unwrap();
    assert_eq!(followed.len(), 3);
    assert_eq!(followed[0].delivery, Delivery::Sent);
    assert_eq!(followed[0].id_message, "XA");

    // a: straight to read (delivered implied, both events); back to delivered: nothing.
    assert!(store
        .record_delivery(a, Delivery::Read, now + 5)
        .await
        .unwrap());
    assert!(!store
        .record_delivery(a, Delivery::Delivered, now + 6)
        .await
        .unwrap());
    let row = store.message(a).await.unwrap();
    assert_eq!(row.delivery, Some(Delivery::Read));
    assert_eq!(
        (row.delivered_at, row.read_at),
        (Some(now + 5), Some(now + 5))
    );
    // b: delivered, then read later: deliveredAt stays the first sighting.
    assert!(store
        .record_delivery(b, Delivery::Delivered, now + 1)
        .await
        .unwrap());
    assert!(!store
        .record_delivery(b, Delivery::Failed, now + 2)
        .await
        .unwrap());
    assert!(store
        .record_delivery(b, Delivery::Read, now + 3)
        .await
        .unwrap());
    let row = store.message(b).await.unwrap();
    assert_eq!(
        (row.delivered_at, row.read_at),
        (Some(now + 1), Some(now + 3))
    );
    // c: noAccount is final.
    assert!(store
        .record_delivery(c, Delivery::NoAccount, now + 1)
        .await
        .unwrap());
    assert!(!store
        .record_delivery(c, Delivery::Read, now + 2)
        .await
        .unwrap());
    assert!(store.followed("main", 0, 10).await.unwrap().is_empty());

    let events = store.events_after(6, None, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        vec![
            (7, a.as_str(), "delivered"),
            (8, a.as_str(), "read"),
            (9, b.as_str(), "delivered"),
            (10, b.as_str(), "read"),
            (11, c.as_str(), "deliveryFailed"),
        ]
    );
    let counts = store.counts("main").await.unwrap();
    assert_eq!(counts.get("delivery:read"), 2);
    assert_eq!(counts.get("delivery:noAccount"), 1);
    assert_eq!(counts.get("delivery:sent"), 0);
    assert_eq!(counts.get("delivery:delivered"), 0);
}
