//! The drain's give-up on a shared database (docs/api.md §10), on a manual clock against
//! a real PostgreSQL server: two minutes of nothing but refusals (401/403) or connection
//! failures give the instance's lease up, and the daemon keeps off it for five minutes,
//! so a healthy daemon can drain it.

use std::time::Duration;

use super::World;
use crate::store::{Store, StoreOptions};

#[tokio::test]
async fn two_minutes_of_refusals_give_the_lease_up_for_five_minutes() {
    let Some(db) = crate::test_postgres::TestDatabase::create().await else {
        return;
    };
    let world = World::new(1).await;
    let target = crate::config::PostgresTarget::parse("test", &db.url, None).unwrap();
    let store = Store::open_database(
        &crate::config::Database::Postgres(target),
        "test",
        StoreOptions {
            lease: Duration::from_secs(600),
            clock: world.clock.clone(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.try_lead("main").await, Some(1));
    let mut drain = super::super::Drain::new(
        &world.instance,
        &world.queue,
        store.clone(),
        crate::upstream::GreenApi::http_client(Duration::from_secs(5)).unwrap(),
        world.lines.get("main").unwrap().clone(),
    )
    .with_clock(world.clock.clone());

    // 119 s of refusals: still the holder.
    drain.refused_by_api(true).await;
    world.clock.advance(Duration::from_secs(119));
    drain.refused_by_api(true).await;
    assert!(store.may_send("main"), "not yet after 119 s");
    // An answer of another kind starts the two minutes over.
    drain.refused_by_api(false).await;
    drain.refused_by_api(true).await;
    world.clock.advance(Duration::from_secs(119));
    drain.refused_by_api(true).await;
    assert!(store.may_send("main"), "119 s since the last other answer");
    world.clock.advance(Duration::from_secs(2));
    drain.refused_by_api(true).await;
    assert!(!store.may_send("main"), "given up after two minutes");
    let view = store.lease_view("main", "test").await.unwrap();
    assert_eq!(
        view.drained_by, None,
        "the lease row is released for another daemon"
    );
    // Kept off for five minutes, then it may lead again (a take-over: a new epoch).
    assert_eq!(store.try_lead("main").await, None);
    world.clock.advance(Duration::from_secs(298));
    assert_eq!(
        store.try_lead("main").await,
        None,
        "still within five minutes"
    );
    world.clock.advance(Duration::from_secs(3));
    assert_eq!(store.try_lead("main").await, Some(2));
    store.close().await;
}

/// The leases held are renewed apart from the drains: a drain that does not turn for
/// longer than its lease's own deadline (a slow request) still holds it, at its epoch.
#[tokio::test]
async fn a_lease_is_renewed_while_its_drain_is_busy() {
    let Some(db) = crate::test_postgres::TestDatabase::create().await else {
        return;
    };
    let target = crate::config::PostgresTarget::parse("test", &db.url, None).unwrap();
    let store = Store::open_database(
        &crate::config::Database::Postgres(target),
        "test",
        StoreOptions {
            lease: Duration::from_secs(6),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.try_lead("main").await, Some(1));
    // Past the own deadline of a lease never renewed (6 s − 1 s), no drain turn between.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert!(
        store.may_send("main"),
        "renewed by the daemon, not the drain"
    );
    let view = store.lease_view("main", "test").await.unwrap();
    assert_eq!(
        (view.drained_by.as_deref(), view.epoch),
        (Some("test"), Some(1))
    );
    store.close().await;
}
