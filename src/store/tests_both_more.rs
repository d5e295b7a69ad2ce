//! More of the store's tests that every backend must pass (see `tests_both.rs`):
//! idempotency, paging and places in line, expiry, retry and retention, outcomes and
//! their history, holds.

use std::time::Duration;

use super::tests::{card, created, request};
use super::tests_both::{both, pg_store, sqlite_store};
use super::*;
use crate::test_postgres::TestDatabase;

both!(
    idempotent_repeats_answer_the_original_and_a_new_body_is_refused,
    pages_places_in_line_and_counts_agree,
    expiry_retry_and_retention_keep_states_counts_and_keys,
    outcomes_write_their_history_in_order,
    line_and_chat_holds_are_kept_and_released_by_resume,
    a_sent_answer_counts_only_for_its_own_attempt,
);

fn keyed(instance: &str, key: &str, cards: Vec<crate::contact::Card>) -> EnqueueRequest {
    EnqueueRequest {
        idempotency_key: Some(key.into()),
        ..request(instance, cards)
    }
}

/// A key seen before answers the original rows (even from the same group of
/// commits), a key with another body is refused and writes nothing, and keys are per
/// instance.
async fn idempotent_repeats_answer_the_original_and_a_new_body_is_refused(store: Store) {
    let first = match store
        .enqueue(keyed("main", "k1", vec![card(1), card(2)]))
        .await
    {
        Ok(EnqueueOutcome::Created { rows, queued }) => {
            assert_eq!(queued, Some(2));
            rows
        }
        other => panic!("{other:?}"),
    };
    // Concurrent repeats: every one answers the same rows.
    let mut repeats = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        repeats.push(tokio::spawn(async move {
            store
                .enqueue(keyed("main", "k1", vec![card(1), card(2)]))
                .await
        }));
    }
    for repeat in repeats {
        match repeat.await.unwrap() {
            Ok(EnqueueOutcome::Repeated(rows)) => assert_eq!(rows, first),
            other => panic!("{other:?}"),
        }
    }
    let mismatch = store.enqueue(keyed("main", "k1", vec![card(3)])).await;
    assert!(
        matches!(mismatch, Err(StoreError::IdempotencyMismatch)),
        "{mismatch:?}"
    );
    // The same key on another instance is another key.
    assert!(matches!(
        store.enqueue(keyed("other", "k1", vec![card(3)])).await,
        Ok(EnqueueOutcome::Created { .. })
    ));
    // Two requests with one new key in flight together: one creates, one repeats.
    let (a, b) = tokio::join!(
        store.enqueue(keyed("main", "k2", vec![card(4)])),
        store.enqueue(keyed("main", "k2", vec![card(4)]))
    );
    let created = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(EnqueueOutcome::Created { .. })))
        .count();
    assert_eq!(created, 1, "{a:?} {b:?}");
    assert_eq!(store.counts("main").await.unwrap().get("queued"), 3);
}

/// The list pages newest first with a cursor, a card's place in line counts only the
/// queued cards ahead of it, and the counts follow every change.
async fn pages_places_in_line_and_counts_agree(store: Store) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(created(&store, "main", n).await[0].id.clone());
    }
    created(&store, "other", 100).await;
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (page, next) = store
            .list(&ListFilter {
                instance: Some("main".into()),
                before: before.clone(),
                limit: 3,
                ..ListFilter::default()
            })
            .await
            .unwrap();
        seen.extend(page.into_iter().map(|r| r.id));
        match next {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let third = store.message(&ids[2]).await.unwrap();
    assert_eq!(store.position("main", third.line_seq).await.unwrap(), 3);
    store.cancel(&ids[0]).await.unwrap();
    assert_eq!(store.begin_attempt(&ids[1], "main", 5).await.unwrap(), 1);
    assert_eq!(store.position("main", third.line_seq).await.unwrap(), 1);
    let counts = store.counts("main").await.unwrap();
    assert_eq!(
        (
            counts.get("queued"),
            counts.get("sending"),
            counts.get("cancelled")
        ),
        (5, 1, 1)
    );
    let in_flight = store.in_flight("main").await.unwrap().unwrap();
    assert_eq!(
        (in_flight.id.as_str(), in_flight.attempt_started_at),
        (ids[1].as_str(), 5)
    );
    assert_eq!(store.instance("main").await.unwrap().last_send_at, Some(5));
    let head: Vec<String> = store
        .head_rows("main", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(head, [ids[2].clone(), ids[3].clone()]);
    let state = Some("queued".to_string());
    let (queued, _) = store
        .list(&ListFilter {
            state,
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 6, "five of main's, one of other's");
}

/// Cards past their deadline expire (with a history line), `retry` puts one at the tail
/// with a fresh deadline, retention deletes ended cards with their history and forgets
/// a key once none of its cards is kept.
async fn expiry_retry_and_retention_keep_states_counts_and_keys(store: Store) {
    let short = EnqueueRequest {
        max_age_ms: 1,
        ..keyed("main", "short", vec![card(1)])
    };
    let expiring = match store.enqueue(short).await.unwrap() {
        EnqueueOutcome::Created { rows, .. } => rows[0].clone(),
        other => panic!("{other:?}"),
    };
    let kept = created(&store, "main", 2).await[0].clone();
    let far = expiring.expires_at + 10;
    assert_eq!(
        store.expire_due(far).await.unwrap(),
        [("main".to_string(), 1)]
    );
    assert_eq!(store.expire_due(far).await.unwrap(), []);
    let expired = store.message(&expiring.id).await.unwrap();
    assert_eq!(
        (expired.state.as_str(), expired.ended_at),
        ("expired", Some(far))
    );
    let events: Vec<String> = store
        .history(&expiring.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["enqueued", "expired"]);
    let retried = store.retry(&expiring.id, 60_000).await.unwrap();
    assert_eq!(retried.state, "queued");
    assert!(
        retried.line_seq > kept.line_seq,
        "a retried card goes to the tail"
    );
    assert_eq!(retried.enqueued_at, expiring.enqueued_at);
    assert!(retried.requeued_at.is_some());
    assert_eq!(store.position("main", retried.line_seq).await.unwrap(), 2);
    assert!(
        matches!(store.retry(&kept.id, 1).await, Err(StoreError::Conflict(s)) if s == "queued")
    );
    assert!(matches!(
        store.retry("01NOSUCH", 1).await,
        Err(StoreError::NotFound)
    ));

    // Retention: both end, only those ended before the cutoff go.
    store.cancel(&expiring.id).await.unwrap();
    let ended = store.message(&expiring.id).await.unwrap().ended_at.unwrap();
    assert_eq!(store.delete_ended_batch(ended).await.unwrap(), 0);
    assert_eq!(store.delete_ended_batch(ended + 1).await.unwrap(), 1);
    assert!(matches!(
        store.message(&expiring.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.history(&expiring.id).await.unwrap().is_empty());
    // Its key is forgotten: the same key with another body is a new enqueue.
    assert!(matches!(
        store.enqueue(keyed("main", "short", vec![card(9)])).await,
        Ok(EnqueueOutcome::Created { .. })
    ));
    let counts = store.counts("main").await.unwrap();
    assert_eq!(
        (
            counts.get("queued"),
            counts.get("cancelled"),
            counts.get("expired")
        ),
        (2, 0, 0)
    );
    assert!(counts.oldest_queued_at.is_some());
}

/// Every outcome changes the state only from `sending` and writes its history line;
/// an uncertain attempt stays `sending`; idMessages are found.
async fn outcomes_write_their_history_in_order(store: Store) {
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..4 {
            ids.push(created(&store, "main", n).await[0].id.clone());
        }
        ids
    };
    let fail = SendOutcomeRecord::Failed {
        error: "bad".into(),
        http_status: Some(400),
    };
    let requeue = SendOutcomeRecord::Requeue {
        error: "busy".into(),
        http_status: Some(502),
    };
    let uncertain = SendOutcomeRecord::Uncertain {
        error: "timeout".into(),
        http_status: None,
    };
    let sent = SendOutcomeRecord::Sent {
        id_message: "ID-1".into(),
        attempt: 1,
    };
    store.begin_attempt(&ids[0], "main", 10).await.unwrap();
    store
        .finish_and_begin(Some((&ids[0], &sent, 11)), &ids[1], "main", 12)
        .await
        .unwrap();
    store
        .finish_and_begin(Some((&ids[1], &fail, 13)), &ids[2], "main", 14)
        .await
        .unwrap();
    store.record_outcome(&ids[2], &requeue, 15).await.unwrap();
    assert_eq!(store.begin_attempt(&ids[2], "main", 16).await.unwrap(), 2);
    store.record_outcome(&ids[2], &uncertain, 17).await.unwrap();
    // An outcome for a card no longer sending changes nothing but its history.
    store.record_outcome(&ids[1], &sent, 18).await.unwrap();
    let states: Vec<String> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(store.message(id).await.unwrap().state);
        }
        v
    };
    assert_eq!(states, ["sent", "failed", "sending", "queued"]);
    let first = store.message(&ids[0]).await.unwrap();
    assert_eq!(
        (first.id_message.as_deref(), first.sent_at),
        (Some("ID-1"), Some(11))
    );
    assert_eq!(
        store.message(&ids[1]).await.unwrap().last_error.as_deref(),
        Some("bad")
    );
    let history = store.history(&ids[2]).await.unwrap();
    let lines: Vec<(String, Option<i64>, Option<i64>)> = history
        .iter()
        .map(|e| (e.event.clone(), e.attempt, e.http_status))
        .collect();
    assert_eq!(
        lines,
        [
            ("enqueued".into(), None, None),
            ("attempt".into(), Some(1), None),
            ("requeued".into(), None, Some(502)),
            ("attempt".into(), Some(2), None),
            ("uncertain".into(), None, None),
        ]
    );
    assert!(store.id_message_taken("ID-1").await.unwrap());
    assert!(!store.id_message_taken("ID-2").await.unwrap());
    let reconciled = SendOutcomeRecord::Reconciled {
        id_message: "ID-2".into(),
    };
    store
        .record_outcome(&ids[2], &reconciled, 19)
        .await
        .unwrap();
    assert!(store.id_message_taken("ID-2").await.unwrap());
    let counts = store.counts("main").await.unwrap();
    assert_eq!(
        (
            counts.get("sent"),
            counts.get("failed"),
            counts.get("queued")
        ),
        (2, 1, 1)
    );
}

/// The line's quota hold and the chats' holds are kept, a chat's hold ends only if it
/// is still the one that ends then, the head skips held chats, and `resume` releases
/// them all.
async fn line_and_chat_holds_are_kept_and_released_by_resume(store: Store) {
    let a = created(&store, "main", 1).await[0].clone();
    let b = created(&store, "main", 2).await[0].clone();
    store
        .set_hold("main", Some(1000), Some("quota"))
        .await
        .unwrap();
    let line = store.instance("main").await.unwrap();
    assert_eq!(
        (line.hold_until, line.hold_reason.as_deref()),
        (Some(1000), Some("quota"))
    );
    store
        .set_chat_hold("main", &a.chat_id, 500, "chats quota")
        .await
        .unwrap();
    store.end_chat_hold("main", &a.chat_id, 499).await.unwrap();
    let holds = store.chat_holds("main").await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(
        (holds[0].until, holds[0].reason.as_deref()),
        (500, Some("chats quota"))
    );
    let head = store
        .head_rows_skipping("main", 10, std::slice::from_ref(&a.chat_id))
        .await
        .unwrap();
    let head: Vec<&str> = head.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(head, [b.id.as_str()]);
    store.set_paused("main", true).await.unwrap();
    assert!(store.instance("main").await.unwrap().paused);
    store.set_paused("main", false).await.unwrap();
    let line = store.instance("main").await.unwrap();
    assert!(!line.paused);
    assert_eq!(line.hold_until, None);
    assert!(store.chat_holds("main").await.unwrap().is_empty());
    assert_eq!(store.instance("never").await.unwrap().name, "never");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A `sent` answer is recorded only for the attempt it answers: a late answer to
/// attempt 1, arriving while attempt 2 is in flight, leaves the card `sending` for
/// attempt 2's own answer (docs/api.md §10).
async fn a_sent_answer_counts_only_for_its_own_attempt(store: Store) {
    let id = created(&store, "main", 0).await[0].id.clone();
    let requeue = SendOutcomeRecord::Requeue {
        error: "busy".into(),
        http_status: Some(502),
    };
    assert_eq!(store.begin_attempt(&id, "main", 10).await.unwrap(), 1);
    store.record_outcome(&id, &requeue, 11).await.unwrap();
    assert_eq!(store.begin_attempt(&id, "main", 12).await.unwrap(), 2);
    let late = SendOutcomeRecord::Sent {
        id_message: "FROM-ATTEMPT-1".into(),
        attempt: 1,
    };
    store.record_outcome(&id, &late, 13).await.unwrap();
    let row = store.message(&id).await.unwrap();
    assert_eq!(row.state, "sending", "attempt 2 is still in flight");
    assert_eq!(row.id_message, None);
    let own = SendOutcomeRecord::Sent {
        id_message: "FROM-ATTEMPT-2".into(),
        attempt: 2,
    };
    store.record_outcome(&id, &own, 14).await.unwrap();
    let row = store.message(&id).await.unwrap();
    assert_eq!(row.state, "sent");
    assert_eq!(row.id_message.as_deref(), Some("FROM-ATTEMPT-2"));
}
