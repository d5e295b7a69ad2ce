//! The drain with a manual clock: a wall clock stepped back or forward changes no wait,
//! because every wait runs on the monotonic clock. Real parts otherwise: a SQLite file
//! in a temp directory and the in-process sandbox on loopback.

use std::sync::Arc;
use std::time::Duration;

use super::{Drain, Outcome};
use crate::clock::ManualClock;
use crate::config::{ApiToken, InstanceSettings, QueueSettings};
use crate::contact::Card;
use crate::lines::Lines;
use crate::sandbox::{Sandbox, SandboxOptions, ScriptStep};
use crate::store::{EnqueueRequest, Store, StoreOptions};
use crate::upstream::GreenApi;

#[path = "timing_tests.rs"]
mod timing_tests;

#[path = "delivery_tests.rs"]
mod delivery_tests;

#[path = "lease_tests.rs"]
mod lease_tests;

const SEND_DELAY: Duration = Duration::from_secs(5);
const HOUR_MS: i64 = 3_600_000;

pub(super) struct World {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub sandbox: Sandbox,
    lines: Arc<Lines>,
    pub clock: Arc<ManualClock>,
    queue: QueueSettings,
    pub instance: InstanceSettings,
}

impl World {
    pub async fn new(cards: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("queue.db"), StoreOptions::default())
            .await
            .unwrap();
        let sandbox = Sandbox::start(
            "127.0.0.1:0".parse().unwrap(),
            SandboxOptions {
                rate_limits: false,
                ..SandboxOptions::default()
            },
        )
        .await
        .unwrap();
        let cards = (0..cards)
            .map(|n| {
                let body = format!(
                    r#"{{"chatId":"11001234567@c.us","contact":{{"phoneContact":{},"firstName":"c{n}"}}}}"#,
                    79_000_000_000u64 + n
                );
                Card::parse_json(body.as_bytes()).unwrap()
            })
            .collect();
        store
            .enqueue(EnqueueRequest {
                instance: "main".into(),
                cards,
                idempotency_key: None,
                peer_uid: None,
                max_age_ms: 24 * HOUR_MS,
                not_before: None,
            })
            .await
            .unwrap();
        let queue = QueueSettings {
            max_age: Duration::from_secs(86_400),
            state_poll: Duration::from_secs(30),
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(10),
            reconcile_lag: Duration::from_secs(120),
            quota_retry: Duration::from_secs(3600),
            keep_done: Duration::from_secs(86_400),
            request_timeout: Duration::from_secs(5),
            delivery_poll: Duration::from_secs(3600),
            delivery_window: Duration::from_secs(86_400),
        };
        let instance = InstanceSettings {
            name: "main".into(),
            api_url: sandbox.url(),
            id_instance: "1101000001".into(),
            api_token: ApiToken::new("tok3n-SECRET-4242"),
            send_delay: SEND_DELAY,
            quiet_hours: None,
        };
        World {
            _dir: dir,
            store,
            sandbox,
            lines: Arc::new(Lines::new([("main", 5000)])),
            clock: ManualClock::new(1_800_000_000_000),
            queue,
            instance,
        }
    }

    pub fn drain(&self) -> Drain {
        Drain::new(
            &self.instance,
            &self.queue,
            self.store.clone(),
            GreenApi::http_client(Duration::from_secs(5)).unwrap(),
            self.lines.get("main").unwrap().clone(),
        )
        .with_clock(self.clock.clone())
    }

    pub fn sent(&self) -> usize {
        self.sandbox.received("1101000001").len()
    }
}

/// Steps until a step waits; returns that wait.
pub(super) async fn step_until_wait(drain: &mut Drain) -> Duration {
    for _ in 0..20 {
        match drain.step().await.unwrap() {
            Outcome::Progress => continue,
            Outcome::Wait(d) => return d,
            Outcome::Idle => panic!("idle with cards queued"),
        }
    }
    panic!("no wait in 20 steps");
}

#[tokio::test]
async fn a_wall_clock_step_changes_no_pacing_wait() {
    let w = World::new(3).await;
    let mut drain = w.drain();
    let wait = step_until_wait(&mut drain).await;
    assert_eq!(w.sent(), 1);
    assert_eq!(wait, SEND_DELAY, "paced from the first send");
    // An hour back: the line waits what is left of send_delay, not an hour more.
    w.clock.step_wall(-HOUR_MS);
    assert_eq!(step_until_wait(&mut drain).await, SEND_DELAY);
    // A day forward: the pacing is not cut short.
    w.clock.step_wall(24 * HOUR_MS);
    assert_eq!(step_until_wait(&mut drain).await, SEND_DELAY);
    w.clock.advance(Duration::from_secs(2));
    assert_eq!(step_until_wait(&mut drain).await, Duration::from_secs(3));
    assert_eq!(w.sent(), 1);
}

#[tokio::test]
async fn after_a_restart_a_wall_clock_stepped_back_stalls_at_most_send_delay() {
    let w = World::new(2).await;
    let mut first = w.drain();
    step_until_wait(&mut first).await;
    assert_eq!(w.sent(), 1);
    drop(first);
    // Restarted after the clock went back an hour: the persisted last send time is
    // an hour "in the future".
    w.clock.step_wall(-HOUR_MS);
    let mut second = w.drain();
    let wait = step_until_wait(&mut second).await;
    assert!(wait <= SEND_DELAY, "stalled {wait:?}");
    assert!(wait >= SEND_DELAY - Duration::from_millis(1), "{wait:?}");
}

#[tokio::test]
async fn a_back_off_is_not_stretched_by_a_wall_clock_step_back() {
    let w = World::new(2).await;
    w.sandbox.push_script(
        "1101000001",
        vec![ScriptStep {
            status: 429,
            retry_after: Some(8),
            ..ScriptStep::default()
        }],
    );
    let mut drain = w.drain();
    assert_eq!(step_until_wait(&mut drain).await, Duration::from_secs(8));
    w.clock.step_wall(-HOUR_MS);
    assert_eq!(step_until_wait(&mut drain).await, Duration::from_secs(8));
    w.clock.advance(Duration::from_secs(8));
    // The back-off is over: the card goes (then the pacing wait).
    step_until_wait(&mut drain).await;
    assert_eq!(w.sent(), 1);
}

#[tokio::test]
async fn a_stale_authorization_is_asked_again_before_a_send() {
    let w = World::new(3).await;
    let mut drain = w.drain();
    step_until_wait(&mut drain).await;
    let asked = w.sandbox.request_count("1101000001", "getStateInstance");
    assert_eq!(asked, 1);
    // Past state_poll on the monotonic clock (the wall clock went back meanwhile, which
    // must not make the old answer look fresh), the instance was blocked.
    w.clock.advance(Duration::from_secs(31));
    w.clock.step_wall(-HOUR_MS);
    w.sandbox.set_state(Some("1101000001"), "blocked");
    let wait = step_until_wait(&mut drain).await;
    assert_eq!(w.sandbox.request_count("1101000001", "getStateInstance"), 2);
    assert_eq!(wait, Duration::from_secs(30), "state_poll");
    assert_eq!(w.sent(), 1, "nothing sent into a blocked instance");
}
