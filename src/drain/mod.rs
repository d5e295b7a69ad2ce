//! One drain loop per instance: FIFO, one request in flight, paced by `send_delay`.
//!
//! [`Drain::step`] does exactly one unit of work (check the hold, check the
//! authorization, reconcile an uncertain card, or send the head of the line) and
//! returns an [`Outcome`]; [`Drain::run`] alone decides when to sleep.

mod backoff;
mod reconcile;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::clock::{duration_ms, now_ms};
use crate::config::{InstanceSettings, QueueSettings};
use crate::lines::{Hold, Line};
use crate::shutdown::Shutdown;
use crate::store::{MessageRow, SendOutcomeRecord, Store, StoreError};
use crate::upstream::{GreenApi, SendOutcome};

pub use backoff::Backoff;

/// The longest a loop sleeps without looking again (also its heartbeat period).
const MAX_WAIT: Duration = Duration::from_secs(15);
/// The API allows one `getStateInstance` (and journal call) per second per instance.
const STATE_CALL_GAP_MS: i64 = 1100;

/// What one step did, and so what the loop does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Something happened; step again at once.
    Progress,
    /// Nothing to do before this much time has passed (or a bell rings).
    Wait(Duration),
    /// Nothing to do until a bell rings (an enqueue, resume, retry).
    Idle,
}

/// The drain of one instance.
pub struct Drain {
    name: String,
    store: Store,
    api: GreenApi,
    line: Arc<Line>,
    queue: QueueSettings,
    send_delay: Duration,
    limiter: Option<DefaultDirectRateLimiter>,
    backoff: Backoff,
    backoff_until: i64,
    authorized: bool,
    next_state_check: i64,
    last_state_call: i64,
    reconcile: reconcile::Reconciler,
}

impl Drain {
    pub fn new(
        instance: &InstanceSettings,
        queue: &QueueSettings,
        store: Store,
        http: reqwest::Client,
        line: Arc<Line>,
    ) -> Self {
        // At most one send per `send_delay`, no burst (SPEC §6). A zero delay means no
        // pacing at all (sandbox and benchmarks only).
        let limiter = Quota::with_period(instance.send_delay)
            .map(|q| RateLimiter::direct(q.allow_burst(NonZeroU32::MIN)));
        Self {
            name: instance.name.clone(),
            store,
            api: GreenApi::new(instance, http),
            line,
            queue: queue.clone(),
            send_delay: instance.send_delay,
            limiter,
            backoff: Backoff::new(queue.retry_initial, queue.retry_max),
            backoff_until: 0,
            authorized: false,
            next_state_check: 0,
            last_state_call: 0,
            reconcile: reconcile::Reconciler::default(),
        }
    }

    /// Steps until shutdown; an in-flight send is always finished first.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        tracing::info!(instance = %self.name, "drain started");
        while !shutdown.is_shutdown() {
            self.line.update(|s| s.heartbeat = Some(Instant::now()));
            let outcome = match self.step().await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::warn!(instance = %self.name, %error, "drain step failed; retrying");
                    self.line.update(|s| s.last_error = Some(error.to_string()));
                    Outcome::Wait(Duration::from_secs(1))
                }
            };
            let wait = match outcome {
                Outcome::Progress => continue,
                Outcome::Wait(d) => d.min(MAX_WAIT),
                Outcome::Idle => MAX_WAIT,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.line.wake.notified() => {}
                _ = shutdown.recv() => {}
            }
        }
        tracing::info!(instance = %self.name, "drain stopped");
    }

    /// One unit of work.
    pub async fn step(&mut self) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let persisted = self.store.instance(&self.name).await?;
        if persisted.paused {
            self.set_hold(Some(Hold::Paused));
            return Ok(Outcome::Idle);
        }
        if let Some(until) = persisted.hold_until {
            if until > now {
                self.set_hold(Some(Hold::Quota { until_ms: until }));
                return Ok(wait_until(now, until));
            }
            self.store.set_hold(&self.name, None, None).await?;
        }
        if self.backoff_until > now {
            return Ok(wait_until(now, self.backoff_until));
        }
        if !self.authorized {
            if let Some(wait) = self.check_authorization(now).await {
                return Ok(wait);
            }
        }
        if let Some(card) = self.store.in_flight(&self.name).await? {
            return self.reconcile_card(card).await;
        }
        let Some(row) = self.store.head_of_line(&self.name).await? else {
            self.set_hold(None);
            return Ok(Outcome::Idle);
        };
        let earliest = persisted
            .last_send_at
            .map_or(0, |t| t.saturating_add(duration_ms(self.send_delay)));
        if earliest > now {
            self.line.update(|s| s.next_send_at = Some(earliest));
            self.set_hold(None);
            return Ok(wait_until(now, earliest));
        }
        if let Some(limiter) = &self.limiter {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                return Ok(Outcome::Wait(wait));
            }
        }
        self.send(row, now).await
    }

    /// Asks `getStateInstance` when due; None when the instance is authorized.
    async fn check_authorization(&mut self, now: i64) -> Option<Outcome> {
        let due = self
            .next_state_check
            .max(self.last_state_call + STATE_CALL_GAP_MS);
        if due > now {
            return Some(wait_until(now, due));
        }
        self.last_state_call = now;
        let poll = duration_ms(self.queue.state_poll);
        let started = Instant::now();
        let answer = self.api.state().await;
        let status = if answer.is_ok() { "200" } else { "error" };
        crate::metrics::upstream_request(&self.name, "getStateInstance", status, started.elapsed());
        match answer {
            Ok(state) if state == "authorized" => {
                tracing::info!(instance = %self.name, "instance authorized");
                self.authorized = true;
                self.line.update(|s| {
                    s.authorization = state;
                    s.hold = None;
                });
                None
            }
            Ok(state) => {
                tracing::info!(instance = %self.name, state = %state, "instance not authorized; holding the line");
                let since = match self.line.status().hold {
                    Some(Hold::NotAuthorized { since_ms, .. }) => since_ms,
                    _ => now,
                };
                self.line.update(|s| {
                    s.authorization = state.clone();
                    s.hold = Some(Hold::NotAuthorized {
                        state,
                        since_ms: since,
                    });
                });
                self.next_state_check = now + poll;
                Some(Outcome::Wait(self.queue.state_poll))
            }
            Err(error) => {
                tracing::warn!(instance = %self.name, %error, "getStateInstance failed");
                self.line.update(|s| s.last_error = Some(error.to_string()));
                let retry = self.backoff.next_delay();
                self.next_state_check = now + duration_ms(retry).min(poll);
                Some(wait_until(now, self.next_state_check))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(instance = %self.name, message_id = %row.id))]
    async fn send(&mut self, row: MessageRow, now: i64) -> Result<Outcome, StoreError> {
        let attempt = match self.store.begin_attempt(&row.id, &self.name, now).await {
            Ok(a) => a,
            // Cancelled or expired between the look and the claim: look again.
            Err(StoreError::Conflict(_)) => return Ok(Outcome::Progress),
            Err(e) => return Err(e),
        };
        let next = now.saturating_add(duration_ms(self.send_delay));
        self.line.update(|s| s.next_send_at = Some(next));
        let started = Instant::now();
        let outcome = self.api.send_contact(&row.body).await;
        let elapsed = started.elapsed();
        let status = outcome_status(&outcome);
        crate::metrics::upstream_request(&self.name, "sendContact", &status, elapsed);
        tracing::info!(attempt, upstream_status = %status, latency_ms = elapsed.as_millis() as u64, "sendContact answered");
        self.apply(&row, outcome).await
    }

    /// Records what the API answered and decides what the line does next.
    async fn apply(
        &mut self,
        row: &MessageRow,
        outcome: SendOutcome,
    ) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let (record, next) = match outcome {
            SendOutcome::Sent { id_message } => {
                self.backoff.reset();
                self.line.update(|s| {
                    s.last_error = None;
                    s.hold = None;
                });
                crate::metrics::ended(&self.name, "sent");
                (SendOutcomeRecord::Sent { id_message }, Outcome::Progress)
            }
            SendOutcome::Rejected { status, error } => {
                crate::metrics::ended(&self.name, "failed");
                self.line.update(|s| s.last_error = Some(error.clone()));
                (
                    SendOutcomeRecord::Failed {
                        error,
                        http_status: Some(status),
                    },
                    Outcome::Progress,
                )
            }
            SendOutcome::NotAuthorized { status, error } => {
                self.authorized = false;
                self.next_state_check = now;
                self.line.update(|s| {
                    s.last_error = Some(error.clone());
                    s.hold = Some(Hold::NotAuthorized {
                        state: "notAuthorized".into(),
                        since_ms: now,
                    });
                });
                (
                    SendOutcomeRecord::Requeue {
                        error,
                        http_status: Some(status),
                    },
                    Outcome::Progress,
                )
            }
            SendOutcome::RetryLater {
                status,
                error,
                retry_after,
            } => {
                let wait = retry_after.unwrap_or_else(|| self.backoff.next_delay());
                self.back_off(now, status, wait, &error);
                (
                    SendOutcomeRecord::Requeue {
                        error,
                        http_status: status,
                    },
                    Outcome::Progress,
                )
            }
            SendOutcome::QuotaExceeded { error } => {
                let until = now.saturating_add(duration_ms(self.queue.quota_retry));
                self.store
                    .set_hold(&self.name, Some(until), Some(&error))
                    .await?;
                self.line.update(|s| {
                    s.last_error = Some(error.clone());
                    s.hold = Some(Hold::Quota { until_ms: until });
                });
                tracing::warn!(instance = %self.name, "monthly quota exceeded (466); holding the line");
                (
                    SendOutcomeRecord::Requeue {
                        error,
                        http_status: Some(466),
                    },
                    Outcome::Progress,
                )
            }
            SendOutcome::Uncertain { status, error } => {
                let wait = self.backoff.next_delay();
                self.back_off(now, status, wait, &error);
                (
                    SendOutcomeRecord::Uncertain {
                        error,
                        http_status: status,
                    },
                    Outcome::Progress,
                )
            }
        };
        self.store.record_outcome(&row.id, &record, now).await?;
        Ok(next)
    }

    fn back_off(&mut self, now: i64, status: Option<u16>, wait: Duration, error: &str) {
        let until = now.saturating_add(duration_ms(wait));
        self.backoff_until = until;
        tracing::warn!(instance = %self.name, error, wait_ms = wait.as_millis() as u64, "temporary failure; backing off");
        self.line.update(|s| {
            s.last_error = Some(error.to_string());
            s.hold = Some(Hold::BackOff {
                status,
                until_ms: until,
            });
        });
    }

    fn set_hold(&self, hold: Option<Hold>) {
        self.line.update(|s| {
            if s.hold != hold {
                s.hold = hold;
            }
        });
    }
}

fn wait_until(now: i64, until: i64) -> Outcome {
    Outcome::Wait(Duration::from_millis(
        until.saturating_sub(now).max(1) as u64
    ))
}

fn outcome_status(outcome: &SendOutcome) -> String {
    match outcome {
        SendOutcome::Sent { .. } => "200".into(),
        SendOutcome::Rejected { status, .. } | SendOutcome::NotAuthorized { status, .. } => {
            status.to_string()
        }
        SendOutcome::QuotaExceeded { .. } => "466".into(),
        SendOutcome::RetryLater { status, .. } | SendOutcome::Uncertain { status, .. } => {
            status.map_or_else(|| "error".to_string(), |s| s.to_string())
        }
    }
}
