//! The store's tests that every backend must pass: each body runs once on SQLite and
//! once on a fresh PostgreSQL database ([`both!`]). More of them in `tests_both_more.rs`.

use std::time::Duration;

use super::tests::{card, created, request};
use super::*;
use crate::test_postgres::TestDatabase;

/// A store of each kind, for one test body.
pub(super) async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    super::tests::open(dir, None).await
}

/// Runs each listed body as two tests, `NAME::sqlite` and `NAME::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let store = sqlite_store(&dir).await;
                super::$name(store.clone()).await;
                store.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = TestDatabase::create().await else { return };
                let store = pg_store(&db).await;
                super::$name(store.clone()).await;
                store.close().await;
            }
        }
    )*};
}

pub(super) use both;

/// A PostgreSQL store on the test's own database, holding the drain leases of the
/// instances the tests drain ("main", "other"), as a daemon's drain would.
pub(super) async fn pg_store(db: &TestDatabase) -> Store {
    let target =
        crate::config::PostgresTarget::parse("test", &db.url, None).expect("a test database URL");
    let store = Store::open_database(
        &crate::config::Database::Postgres(target),
        "test",
        StoreOptions {
            lease: Duration::from_secs(600),
            ..StoreOptions::default()
        },
    )
    .await
    .expect("the PostgreSQL store opens");
    // The drain's writes need the lease: the first store on a database takes it (a
    // second one, or the same database reopened while the lease runs, may not; a test
    // that needs it then fails on the claim with a Conflict naming the lease).
    for instance in ["main", "other"] {
        let _ = store.try_lead(instance).await;
    }
    store
}

both!(
    state_changes_among_enqueues_and_claims_all_commit_without_busy,
    cancel_writes_the_state_and_its_history_line_together,
    a_paused_line_claims_nothing_until_resumed,
);

/// Cancel, retry, pause/resume, holds and expiry run while enqueues and the drain's
/// claims and outcomes stream in: every one commits, none meets SQLITE_BUSY (one
/// connection writes, so nothing waits at SQLite's lock), and the counts add up.
async fn state_changes_among_enqueues_and_claims_all_commit_without_busy(store: Store) {
    const ROUNDS: u64 = 60;

    let enqueuer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..ROUNDS {
                let cards = vec![card(n), card(n + 1000)];
                match store.enqueue(request("main", cards)).await {
                    Ok(EnqueueOutcome::Created { rows, .. }) => ids.extend(rows),
                    other => panic!("enqueue {n}: {other:?}"),
                }
            }
            ids
        })
    };
    let drain = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut last: Option<String> = None;
            let sent_record = SendOutcomeRecord::Sent {
                id_message: "X".into(),
                attempt: 1,
            };
            for _ in 0..ROUNDS * 4 {
                let head = store.head_rows("other", 1).await.unwrap();
                let Some(row) = head.into_iter().next() else {
                    if let Some(id) = last.take() {
                        store.record_outcome(&id, &sent_record, 1).await.unwrap();
                        sent += 1;
                    }
                    tokio::task::yield_now().await;
                    continue;
                };
                let finished = last.as_deref().map(|id| (id, &sent_record, 1));
                match store.finish_and_begin(finished, &row.id, "other", 2).await {
                    Ok(_) => {
                        if last.is_some() {
                            sent += 1;
                        }
                        last = Some(row.id);
                    }
                    Err(e) => panic!("claim: {e}"),
                }
            }
            if let Some(id) = last.take() {
                store.record_outcome(&id, &sent_record, 1).await.unwrap();
                sent += 1;
            }
            sent
        })
    };
    // The drain's own line is fed by a second stream of enqueues.
    let feeder = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..ROUNDS {
                store
                    .enqueue(request("other", vec![card(5000 + n)]))
                    .await
                    .unwrap();
            }
        })
    };
    let changes = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut cancelled = 0;
            for n in 0..ROUNDS {
                store.set_paused("main", n % 2 == 0).await.unwrap();
                store
                    .set_hold("main", Some(n as i64), Some("quota"))
                    .await
                    .unwrap();
                store
                    .set_chat_hold("main", "1@c.us", n as i64, "chats quota")
                    .await
                    .unwrap();
                store
                    .end_chat_hold("main", "1@c.us", n as i64)
                    .await
                    .unwrap();
                store.expire_due(0).await.unwrap();
                let (page, _) = store
                    .list(&ListFilter {
                        instance: Some("main".into()),
                        state: Some("queued".into()),
                        limit: 1,
                        ..ListFilter::default()
                    })
                    .await
                    .unwrap();
                if let Some(row) = page.first() {
                    store.cancel(&row.id).await.unwrap();
                    cancelled += 1;
                    // A cancelled card cannot be retried: a refusal, not a failure.
                    let refused = store.retry(&row.id, 1000).await;
                    assert!(
                        matches!(refused, Err(StoreError::Conflict(_))),
                        "{refused:?}"
                    );
                }
            }
            store.set_paused("main", false).await.unwrap();
            cancelled
        })
    };
    let limit = Duration::from_secs(60);
    let enqueued = tokio::time::timeout(limit, enqueuer)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(limit, feeder).await.unwrap().unwrap();
    let sent = tokio::time::timeout(limit, drain).await.unwrap().unwrap();
    let cancelled = tokio::time::timeout(limit, changes).await.unwrap().unwrap();

    assert_eq!(enqueued.len() as u64, ROUNDS * 2);
    assert!(cancelled > 0, "nothing was cancelled");
    let main = store.counts("main").await.unwrap();
    assert_eq!(main.get("cancelled"), cancelled);
    assert_eq!(
        main.get("queued") + main.get("cancelled"),
        ROUNDS as i64 * 2
    );
    let other = store.counts("other").await.unwrap();
    assert_eq!(other.get("sent") as u64, sent);
    assert_eq!(other.get("sent") + other.get("queued"), ROUNDS as i64);
    // The last resume released the holds.
    let line = store.instance("main").await.unwrap();
    assert!(!line.paused);
    assert_eq!(line.hold_until, None);
    assert!(store.chat_holds("main").await.unwrap().is_empty());
}

/// A cancelled card goes to `cancelled` with its history line in the same transaction;
/// cancelling an unknown id is NotFound and writes nothing.
async fn cancel_writes_the_state_and_its_history_line_together(store: Store) {
    let rows = created(&store, "main", 1).await;
    let row = store.cancel(&rows[0].id).await.unwrap();
    assert_eq!(row.state, "cancelled");
    let events: Vec<String> = store
        .history(&rows[0].id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["enqueued", "cancelled"]);
    assert!(matches!(
        store.cancel("01NOSUCHMESSAGE").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.counts("main").await.unwrap().get("cancelled"), 1);
}

/// A paused line's cards are not claimed, whatever the drain last read of the line:
/// the pause and the claim are ordered by the one writer. Resuming lets the claim go.
async fn a_paused_line_claims_nothing_until_resumed(store: Store) {
    store.set_paused("main", true).await.unwrap();
    let rows = created(&store, "main", 1).await;
    let refused = store.begin_attempt(&rows[0].id, "main", 1000).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let row = store.message(&rows[0].id).await.unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("queued", 0));
    assert_eq!(store.instance("main").await.unwrap().last_send_at, None);
    // Another line is not affected.
    let other = created(&store, "other", 2).await;
    assert_eq!(
        store
            .begin_attempt(&other[0].id, "other", 1000)
            .await
            .unwrap(),
        1
    );
    store.set_paused("main", false).await.unwrap();
    assert_eq!(
        store
            .begin_attempt(&rows[0].id, "main", 2000)
            .await
            .unwrap(),
        1
    );
}
