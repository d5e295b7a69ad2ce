//! Store tests.

use super::*;

/// `PRAGMA journal_mode` and `PRAGMA synchronous` (2 = FULL) of a sqlx connection.
async fn pragmas(conn: &mut sqlx::SqliteConnection) -> (String, i64) {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    (mode, sync)
}

/// Every connection the daemon writes with is in WAL mode with `synchronous=FULL`:
/// the write thread's (its first one and every replacement come from
/// `writer::open`) and the sqlx write pool's. kill -9 keeps the page cache, so the
/// crash tests cannot see a weaker setting: this test does. The readers share the WAL.
#[tokio::test]
async fn every_write_connection_is_wal_with_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let store = Store::open(
        &path,
        StoreOptions {
            max_page_count: Some(1000),
            readers: 3,
        },
    )
    .await
    .unwrap();

    // The enqueue/line write thread's connection, as the thread opens it.
    let thread_conn = writer::open(&path, Some(1000)).unwrap();
    let mode: String = thread_conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = thread_conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2), "write thread connection");

    // The sqlx write pool (one connection), also after it was replaced following an
    // error (see WRITER_SUSPECT).
    for round in 0..2 {
        let mut conn = store.write.acquire().await.unwrap();
        let (mode, sync) = pragmas(&mut conn).await;
        assert_eq!(
            (mode.as_str(), sync),
            ("wal", 2),
            "sqlx write pool, round {round}"
        );
        drop(conn);
        WRITER_SUSPECT.store(true, Ordering::SeqCst);
    }

    // Every reader connection at once, so none is checked twice.
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(store.read.acquire().await.unwrap());
    }
    for conn in &mut readers {
        let (mode, _) = pragmas(conn).await;
        assert_eq!(mode, "wal", "reader");
    }
    drop(readers);

    store.close().await;
}
