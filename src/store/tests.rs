//! Store tests of the SQLite backend: the single writer, its group transactions, and
//! its connection. The tests every backend must pass are in `tests_both.rs`.

use std::time::Duration;

use serde_json::json;

use super::*;

pub(super) async fn open(dir: &tempfile::TempDir, max_page_count: Option<u64>) -> Store {
    Store::open(
        &dir.path().join("queue.db"),
        StoreOptions {
            max_page_count,
            readers: 3,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
}

pub(super) fn card(n: u64) -> crate::contact::Card {
    crate::contact::Card::parse(&json!({"chatId": format!("{}@c.us", 11_000_000_000u64 + n),
        "contact": {"phoneContact": 79_000_000_000u64 + n, "firstName": "Artem"}}))
    .unwrap()
}

pub(super) fn request(instance: &str, cards: Vec<crate::contact::Card>) -> EnqueueRequest {
    EnqueueRequest {
        instance: instance.into(),
        cards,
        idempotency_key: None,
        peer_uid: None,
        max_age_ms: 86_400_000,
        not_before: None,
    }
}

pub(super) async fn created(store: &Store, instance: &str, n: u64) -> Vec<MessageRow> {
    match store
        .enqueue(request(instance, vec![card(n)]))
        .await
        .unwrap()
    {
        EnqueueOutcome::Created { rows, .. } => rows,
        other => panic!("not created: {other:?}"),
    }
}

/// `PRAGMA journal_mode` and `PRAGMA synchronous` (2 = FULL) of a connection.
fn pragmas(conn: &rusqlite::Connection) -> (String, i64) {
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    (mode, sync)
}

/// The one connection that writes is in WAL mode with `synchronous=FULL`, asked of the
/// very connection the write thread holds, before and after it was replaced following
/// a failed group. kill -9 keeps the page cache, so the crash tests cannot see a
/// weaker setting: this test does. The readers share the WAL.
#[tokio::test]
async fn every_write_connection_is_wal_with_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Some(1000)).await;
    let ask = || store.sqlite().write_for_test(|tx| Ok(pragmas(tx)));
    assert_eq!(
        ask().await.unwrap(),
        ("wal".to_string(), 2),
        "first connection"
    );
    let failed = store
        .sqlite()
        .write_for_test(|tx| Ok(tx.execute("INSERT INTO nowhere VALUES (1)", [])?))
        .await;
    assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
    assert_eq!(ask().await.unwrap(), ("wal".to_string(), 2), "replacement");
    // A replacement is opened as the first was.
    let fresh = sqlite::SqliteStore::open_write_connection_for_test(
        &dir.path().join("queue.db"),
        Some(1000),
    )
    .unwrap();
    assert_eq!(pragmas(&fresh), ("wal".to_string(), 2));
    drop(fresh);

    // Every reader connection at once, so none is checked twice; none can write.
    let pool = store.sqlite().read_pool_for_test();
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(pool.acquire().await.unwrap());
    }
    for conn in &mut readers {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal", "reader");
        let write = sqlx::query("INSERT INTO instances (name) VALUES ('x')")
            .execute(&mut **conn)
            .await;
        assert!(write.is_err(), "a reader wrote");
    }
    drop(readers);
    store.close().await;
}

/// A write that fails (here a constraint) rolls back its whole group, and only its
/// group: the enqueue that shared its transaction is answered with the error and is
/// not in the database; the writes before and after it commit, on a fresh connection.
#[tokio::test]
async fn a_failed_write_rolls_back_only_its_group_and_the_connection_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None).await;
    let before = created(&store, "main", 1).await;
    // A temporary table lives as long as the connection that made it: it tells whether
    // the next group runs on the same connection or on a new one.
    let marker = |store: Store| async move {
        store
            .sqlite()
            .write_for_test(|tx| {
                Ok(tx.query_row(
                    "SELECT COUNT(*) FROM sqlite_temp_master WHERE name = 'marker'",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await
            .unwrap()
    };
    store
        .sqlite()
        .write_for_test(|tx| Ok(tx.execute_batch("CREATE TEMP TABLE marker (x)")?))
        .await
        .unwrap();
    assert_eq!(
        marker(store.clone()).await,
        1,
        "same connection after a commit"
    );

    // A first job holds the thread inside its transaction until the enqueue and then
    // the failing job are queued behind it; those two then make the next group.
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .sqlite()
                .write_for_test(move |_tx| {
                    entered_tx.send(()).unwrap();
                    release_rx.recv_timeout(Duration::from_secs(10)).ok();
                    Ok(())
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the thread took the first job");
    let waiting = |n: usize| {
        let store = store.clone();
        async move {
            for _ in 0..1000 {
                if store.sqlite().waiting_writes_for_test() == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("{n} jobs never waited");
        }
    };
    let enqueue = {
        let store = store.clone();
        tokio::spawn(async move { store.enqueue(request("main", vec![card(2)])).await })
    };
    waiting(1).await;
    let failing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .sqlite()
                .write_for_test(|tx| {
                    // The message table's primary key: a second row with the same id.
                    Ok(tx.execute(
                        "INSERT INTO messages (id, instance, state, line_seq, chat_id, phone,
                             body, enqueued_at, expires_at)
                         SELECT id, instance, state, line_seq, chat_id, phone, body,
                             enqueued_at, expires_at FROM messages LIMIT 1",
                        [],
                    )?)
                })
                .await
        })
    };
    waiting(2).await;
    release_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let failed = failing.await.unwrap();
    assert!(
        matches!(&failed, Err(StoreError::Database(_))),
        "the constraint failure: {failed:?}"
    );
    // The cause is kept, not only its text.
    let cause = std::error::Error::source(failed.as_ref().unwrap_err())
        .expect("a cause")
        .to_string();
    assert!(cause.contains("UNIQUE"), "{cause}");
    let shared = enqueue.await.unwrap();
    assert!(
        shared.is_err(),
        "the enqueue in the failed group was answered as committed: {shared:?}"
    );
    let (rows, _) = store
        .list(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only the first card is stored: {rows:?}");
    assert_eq!(rows[0].id, before[0].id);
    assert_eq!(store.counts("main").await.unwrap().get("queued"), 1);

    // The next write commits, on a fresh connection.
    assert_eq!(
        marker(store.clone()).await,
        0,
        "the failed connection was kept"
    );
    let after = created(&store, "main", 3).await;
    assert_eq!(store.message(&after[0].id).await.unwrap().state, "queued");
    assert_eq!(store.counts("main").await.unwrap().get("queued"), 2);
    store.close().await;
}

/// An error with its context keeps the original error reachable through `source()`,
/// and its text names both (what callers print).
#[test]
fn an_error_keeps_its_cause_under_its_context() {
    let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry");
    let error = StoreError::Unavailable(Cause::context("/var/lib/queue.db", io));
    assert_eq!(
        error.to_string(),
        "database unavailable: /var/lib/queue.db: no entry"
    );
    let cause = std::error::Error::source(&error).expect("the cause");
    let io = std::error::Error::source(cause)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .expect("the io::Error itself");
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
}
