//! The event stream at the store's interface: one numbered event per change, written
//! with the change, numbered without gaps, told to subscribers after the commit, and
//! numbered on after retention; each test on both backends ([`Where`]). On
//! PostgreSQL also with two stores (two daemons) writing one database at once.

use serde_json::json;

use super::*;
use crate::test_postgres::TestDatabase;

/// Where a test's store lives: reopened there as often as the test wants.
enum Where {
    Sqlite(tempfile::TempDir),
    Postgres(Box<TestDatabase>),
}

impl Where {
    async fn open(&self) -> Store {
        match self {
            Where::Sqlite(dir) => {
                Store::open(&dir.path().join("queue.db"), StoreOptions::default())
                    .await
                    .unwrap()
            }
            Where::Postgres(db) => super::tests_both::pg_store(db).await,
        }
    }
}

/// Runs each listed body (taking a [`Where`]) as `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Where::Sqlite(tempfile::tempdir().unwrap())).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = TestDatabase::create().await else { return };
                super::$name(Where::Postgres(Box::new(db))).await;
            }
        }
    )*};
}

on_both!(
    every_change_is_one_numbered_event_and_subscribers_hear_the_commit,
    retention_keeps_the_newest_event_so_numbers_go_on,
    a_consumer_starts_once_and_its_cursor_and_failures_are_kept,
    bulk_expiry_and_a_due_card_write_their_events,
    delivery_moves_forward_only_with_its_events_and_counts,
    a_card_that_came_due_goes_before_cards_enqueued_after_its_not_before,
);

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

async fn every_change_is_one_numbered_event_and_subscribers_hear_the_commit(at: Where) {
    let store = at.open().await;
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
        attempt: 1,
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

async fn retention_keeps_the_newest_event_so_numbers_go_on(at: Where) {
    let store = at.open().await;
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
    let store = at.open().await;
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

async fn a_consumer_starts_once_and_its_cursor_and_failures_are_kept(at: Where) {
    let store = at.open().await;
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

/// Bulk cancel and retry, expiry and the enqueue of a card due later write their events
/// (a card joining its line when due is not a state change: no event).
async fn bulk_expiry_and_a_due_card_write_their_events(at: Where) {
    let store = at.open().await;
    let rows = enqueue(&store, 2).await;
    let (a, b) = (&rows[0].id, &rows[1].id);
    let now = crate::clock::now_ms();
    let mut later = request(1);
    later.not_before = Some(now + 60_000);
    let c = match store.enqueue(later).await.unwrap() {
        EnqueueOutcome::Created { rows, .. } => rows[0].clone(),
        other => panic!("not created: {other:?}"),
    };
    assert_eq!(c.due_at, Some(now + 60_000));
    assert_eq!(store.counts("main").await.unwrap().get("scheduled"), 1);
    assert_eq!(store.next_due("main").await.unwrap(), Some(now + 60_000));
    let head = store.head_rows("main", 10).await.unwrap();
    assert_eq!(head.len(), 2, "a card not yet due is not in line");
    let all = BulkFilter {
        instance: Some("main".into()),
        ..BulkFilter::default()
    };
    let cancelled = store.bulk(&all, BulkAction::Cancel).await.unwrap();
    assert_eq!((cancelled.count(), cancelled.more), (3, false));
    assert_eq!(store.counts("main").await.unwrap().get("scheduled"), 0);
    let d = enqueue(&store, 1).await.remove(0);
    assert_eq!(
        store.expire_due(now + 86_400_000 * 2).await.unwrap().len(),
        1
    );
    let retried = store
        .bulk(&all, BulkAction::Retry { max_age_ms: 60_000 })
        .await
        .unwrap();
    assert_eq!(retried.count(), 1);
    let mut soon = request(1);
    soon.not_before = Some(now + 1_000);
    let e = match store.enqueue(soon).await.unwrap() {
        EnqueueOutcome::Created { rows, .. } => rows[0].clone(),
        other => panic!("not created: {other:?}"),
    };
    assert_eq!(store.join_due("main", now + 2_000).await.unwrap(), 1);
    let head: Vec<String> = store
        .head_rows("main", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(head, vec![d.id.clone(), e.id.clone()], "joined at the tail");
    let events = store.events_after(0, None, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        vec![
            (1, a.as_str(), "queued"),
            (2, b.as_str(), "queued"),
            (3, c.id.as_str(), "queued"),
            (4, a.as_str(), "cancelled"),
            (5, b.as_str(), "cancelled"),
            (6, c.id.as_str(), "cancelled"),
            (7, d.id.as_str(), "queued"),
            (8, d.id.as_str(), "expired"),
            (9, d.id.as_str(), "queued"),
            (10, e.id.as_str(), "queued"),
        ]
    );
    store.close().await;
}

/// Two stores on one PostgreSQL database (two daemons), eight writers enqueueing and
/// cancelling at once: a reader on the second store, reading all along, sees every
/// event numbered 1, 2, 3… with no gap and never one before an earlier number, and
/// the second store's subscribers hear the first one's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_postgres_database_number_events_without_gaps() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 12;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let stores = [
        super::tests_both::pg_store(&db).await,
        super::tests_both::pg_store(&db).await,
    ];
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = stores[1].clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                for e in store.events_after(after, None, 1000).await.unwrap() {
                    assert_eq!(e.seq, after + 1, "a gap, or an event out of order");
                    after = e.seq;
                }
                if finished {
                    return after;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut events = 0;
            for round in 0..ROUNDS {
                let rows = enqueue(&store, 1 + (w + round) % 3).await;
                events += rows.len();
                if round % 3 == 0 {
                    store.cancel(&rows[0].id).await.unwrap();
                    events += 1;
                }
            }
            events
        }));
    }
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap() as i64;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reader.await.unwrap(), total, "every event read, in order");
    assert_eq!(stores[0].stream_ends().await.unwrap().last, total);
    let mut heard = stores[1].subscribe_events();
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        heard.wait_for(|last| *last == total),
    )
    .await
    .expect("the other store's commits are heard within a second or so")
    .unwrap();
    for store in stores {
        store.close().await;
    }
}

async fn delivery_moves_forward_only_with_its_events_and_counts(at: Where) {
    use crate::state::Delivery;
    let store = at.open().await;
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
            attempt: 1,
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

/// A card's place in line is max(enqueuedAt, notBefore): once its time has come it goes
/// before cards enqueued after that time, even when no drain joined it to its line yet.
async fn a_card_that_came_due_goes_before_cards_enqueued_after_its_not_before(at: Where) {
    let store = at.open().await;
    let now = crate::clock::now_ms();
    let mut soon = request(1);
    soon.not_before = Some(now + 300);
    let due = match store.enqueue(soon).await.unwrap() {
        EnqueueOutcome::Created { rows, .. } => rows[0].id.clone(),
        other => panic!("not created: {other:?}"),
    };
    assert!(store.head_rows("main", 10).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let later = enqueue(&store, 1).await.remove(0).id;
    let head: Vec<String> = store
        .head_rows("main", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(head, vec![due, later], "the due card first");
    store.close().await;
}
