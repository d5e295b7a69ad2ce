//! The hot-path statements use indexes: `EXPLAIN QUERY PLAN` of each shows no full
//! scan of any table (a `SCAN` of `json_each` or a `SEARCH … USING INDEX` is fine), so
//! next-to-send, expiry and status stay O(log n) with a million queued cards. The
//! statements come from `contactq::store::hot_queries()`, which lists the very
//! constants the store runs (not copies that could drift). And the drain's claim of the
//! next card and the outcome of the last share one transaction, with every parameter
//! bound where it belongs.

use contactq::store::{
    EnqueueOutcome, EnqueueRequest, SendOutcomeRecord, Store, StoreError, StoreOptions,
};
use serde_json::json;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("queue.db"), StoreOptions::default())
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn hot_queries_never_scan_messages() {
    let (dir, _store) = store().await;
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.path().join("queue.db").display()))
            .await
            .unwrap();
    for (name, sql) in contactq::store::hot_queries() {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let steps: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
        // A single-row `INSERT … VALUES` has no plan steps: nothing to scan.
        let values_insert = sql.trim_start().starts_with("INSERT") && sql.contains("VALUES");
        assert!(values_insert || !steps.is_empty(), "{name}: no plan");
        for step in &steps {
            // An index walked in order that stops at the LIMIT is O(log n) too; a
            // `json_each` or a constant row is not a table.
            let ordered_walk =
                step.contains("USING") && step.contains("INDEX") && sql.contains("LIMIT");
            let not_a_table = step.starts_with("SCAN json_each")
                || step.starts_with("SCAN CONSTANT ROW")
                || step.starts_with("SCAN (subquery");
            assert!(
                !step.starts_with("SCAN ") || ordered_walk || not_a_table,
                "{name} scans a table: {steps:?}\n{sql}"
            );
        }
    }
}

#[tokio::test]
async fn a_sent_outcome_and_the_next_claim_share_one_transaction() {
    let (_dir, store) = store().await;
    let card = |phone: u64| {
        contactq::contact::Card::parse(&json!({"chatId": "11001234567@c.us",
            "contact": {"phoneContact": phone, "firstName": "Artem"}}))
        .unwrap()
    };
    let outcome = store
        .enqueue(EnqueueRequest {
            instance: "main".into(),
            cards: vec![card(79001234568), card(79001234569)],
            idempotency_key: None,
            peer_uid: None,
            max_age_ms: 86_400_000,
            not_before: None,
        })
        .await
        .unwrap();
    let EnqueueOutcome::Created { rows, queued } = outcome else {
        panic!("created")
    };
    assert_eq!(queued, Some(2));
    assert_eq!(
        store
            .begin_attempt(&rows[0].id, "main", 1000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.instance("main").await.unwrap().last_send_at,
        Some(1000)
    );
    let sent = SendOutcomeRecord::Sent {
        id_message: "3EB0C767D097B7C7C030".into(),
        attempt: 1,
    };
    let attempt = store
        .finish_and_begin(Some((&rows[0].id, &sent, 1500)), &rows[1].id, "main", 2000)
        .await
        .unwrap();
    assert_eq!(attempt, 1);
    let first = store.message(&rows[0].id).await.unwrap();
    assert_eq!(first.state, "sent");
    assert_eq!(first.id_message.as_deref(), Some("3EB0C767D097B7C7C030"));
    assert_eq!(store.message(&rows[1].id).await.unwrap().state, "sending");
    assert_eq!(
        store.instance("main").await.unwrap().last_send_at,
        Some(2000)
    );
    let events: Vec<String> = store
        .history(&rows[0].id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["enqueued", "attempt", "sent"]);
    // A card that left the line is not claimed, and nothing else changes.
    let again = store.begin_attempt(&rows[1].id, "main", 3000).await;
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "a card in flight is claimed again: {again:?}"
    );
    assert_eq!(
        store.instance("main").await.unwrap().last_send_at,
        Some(2000)
    );
}

/// The same on PostgreSQL: each hot statement of the PostgreSQL store, planned as a
/// generic plan (whatever the parameters) with sequential scans priced out, reads every
/// table through an index. A table the planner can only scan would still show a `Seq
/// Scan` here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hot_queries_never_scan_a_table() {
    use sqlx::{Connection, Executor};
    let Some(db) = contactq::test_postgres::TestDatabase::create().await else {
        return;
    };
    let target = contactq::config::PostgresTarget::parse("test", &db.url, None).unwrap();
    let store = Store::open_database(
        &contactq::config::Database::Postgres(target),
        "plans",
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    conn.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
        .await
        .unwrap();
    for (name, sql) in contactq::store::pg_hot_queries() {
        let params = (1..=20)
            .rev()
            .find(|n| sql.contains(&format!("${n}")))
            .unwrap_or(0);
        conn.execute(format!("PREPARE hot AS {sql}").as_str())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
        let nulls = vec!["NULL"; params].join(", ");
        let execute = if params == 0 {
            "EXPLAIN EXECUTE hot".to_string()
        } else {
            format!("EXPLAIN EXECUTE hot({nulls})")
        };
        let plan: Vec<String> = sqlx::query_scalar(&execute)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        conn.execute("DEALLOCATE hot").await.unwrap();
        assert!(
            plan.iter().all(|step| !step.contains("Seq Scan")),
            "{name} scans a table:\n{}\n{sql}",
            plan.join("\n")
        );
    }
    let _ = conn.close().await;
    store.close().await;
}
