//! One drain loop per instance: FIFO, one request in flight, paced by `send_delay`.
//!
//! [`Drain::step`] does exactly one unit of work (check the hold, check the
//! authorization, reconcile an uncertain card, or send the head of the line) and
//! returns an [`Outcome`]; [`Drain::run`] alone decides when to sleep.
//!
//! A drain reads the database as little as it can, because a thousand of them share
//! one write connection: it keeps its instance's row (read again after a bell, which
//! the API rings on pause and resume), a few cards from the head of its line (claimed
//! one by one; a card that left the line meanwhile is simply skipped), and looks for a
//! card in flight only when one may exist (at start, after an uncertain outcome or a
//! failed write). A `sent` outcome is committed together with the claim of the next
//! card when that follows at once, so a steady drain pays one fsync per send.

mod backoff;
mod reconcile;

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::clock::{duration_ms, now_ms};
use crate::config::{InstanceSettings, QueueSettings};
use crate::lines::{Hold, Line};
use crate::shutdown::Shutdown;
use crate::store::{InstanceRow, MessageRow, SendOutcomeRecord, Store, StoreError};
use crate::upstream::{GreenApi, SendOutcome};

pub use backoff::Backoff;

/// The longest a loop sleeps without looking again (also its heartbeat period).
const MAX_WAIT: Duration = Duration::from_secs(15);
/// Extra wait before the first send after a start, over the persisted pacing.
const RESTART_MARGIN_MS: i64 = 250;
/// The API allows one `getStateInstance` (and journal call) per second per instance.
const STATE_CALL_GAP_MS: i64 = 1100;
/// Cards read from the head of the line at a time.
const HEAD_BATCH: i64 = 32;

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
    /// The instance's persisted row, None until read (again).
    persisted: Option<InstanceRow>,
    /// Cards from the head of the line, in order, not yet claimed.
    head: VecDeque<MessageRow>,
    /// Whether a card may be `sending` (in flight or uncertain) in the database.
    check_in_flight: bool,
    /// A `sent`/`failed` outcome not yet written: it goes with the next claim, or is
    /// written at the end of the step that does not send.
    pending: Option<(String, SendOutcomeRecord, i64)>,
    /// When the latest request went out (after its claim was committed), for pacing.
    last_request: Option<Instant>,
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
            persisted: None,
            head: VecDeque::new(),
            check_in_flight: true,
            pending: None,
            last_request: None,
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
                _ = self.line.wake.notified() => self.persisted = None,
                _ = shutdown.recv() => {}
            }
        }
        if let Err(error) = self.flush().await {
            // The card stays `sending`; the next start reconciles it.
            tracing::warn!(instance = %self.name, %error, "could not record the last outcome");
        }
        tracing::info!(instance = %self.name, "drain stopped");
    }

    /// One unit of work.
    pub async fn step(&mut self) -> Result<Outcome, StoreError> {
        let result = self.step_inner().await;
        // A sent or failed outcome rides with the claim of the next card when the line
        // goes straight on (one commit, one fsync per send); otherwise it is written
        // now. Until then the card reads `sending`; a crash in between leaves it for
        // reconciliation, which finds it in the API's journal.
        let goes_straight_on = matches!(result, Ok(Outcome::Progress));
        let result = match self.pending.take() {
            Some(pending) if goes_straight_on => {
                self.pending = Some(pending);
                result
            }
            None => result,
            Some((id, record, at)) => {
                let recorded = self.store.record_outcome(&id, &record, at).await;
                result.and_then(|outcome| recorded.map(|()| outcome))
            }
        };
        if result.is_err() {
            // Whatever the database holds now is read afresh.
            self.forget();
        }
        result
    }

    /// Drops what the drain keeps of the database, so the next step reads it again.
    fn forget(&mut self) {
        self.persisted = None;
        self.head.clear();
        self.check_in_flight = true;
    }

    /// Whether the bell rang while the loop was busy (it is only awaited when idle):
    /// a pause or resume must not wait for the line to run dry.
    fn bell_rang(&self) -> bool {
        let notified = self.line.wake.notified();
        let mut notified = std::pin::pin!(notified);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(notified.as_mut(), &mut cx).is_ready()
    }

    async fn step_inner(&mut self) -> Result<Outcome, StoreError> {
        let now = now_ms();
        if self.bell_rang() {
            self.persisted = None;
        }
        let persisted = match &self.persisted {
            Some(row) => row.clone(),
            None => {
                let row = self.store.instance(&self.name).await?;
                self.persisted = Some(row.clone());
                row
            }
        };
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
            self.persisted = None;
        }
        if self.backoff_until > now {
            return Ok(wait_until(now, self.backoff_until));
        }
        if !self.authorized {
            if let Some(wait) = self.check_authorization(now).await {
                return Ok(wait);
            }
        }
        if self.check_in_flight {
            self.flush().await?;
            if let Some(card) = self.store.in_flight(&self.name).await? {
                // The card may go back to the head of the line.
                self.head.clear();
                return self.reconcile_card(card).await;
            }
            self.check_in_flight = false;
        }
        if self.head.is_empty() {
            self.head = self.store.head_rows(&self.name, HEAD_BATCH).await?.into();
        }
        let Some(row) = self.head.front().cloned() else {
            self.set_hold(None);
            return Ok(Outcome::Idle);
        };
        // The persisted time is the claim's, a little before its request left; after a
        // restart (no request of ours yet) keep a margin so the API never sees two
        // requests closer than `send_delay`.
        let margin = if self.last_request.is_none() && !self.send_delay.is_zero() {
            RESTART_MARGIN_MS
        } else {
            0
        };
        let earliest = persisted.last_send_at.map_or(0, |t| {
            t.saturating_add(duration_ms(self.send_delay) + margin)
        });
        if earliest > now {
            self.line.update(|s| s.next_send_at = Some(earliest));
            self.set_hold(None);
            return Ok(wait_until(now, earliest));
        }
        // The persisted time is taken before the claim's commit; the request goes out
        // after it, so pace from the request too: never two requests closer than
        // `send_delay` as the API sees them.
        if let Some(last) = self.last_request {
            let since = last.elapsed();
            if since < self.send_delay {
                return Ok(Outcome::Wait(self.send_delay - since));
            }
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
                // The API's own send delay, for the reconciler (reconcile.rs).
                self.refresh_api_settings().await;
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
                let retry = self.backoff.next_delay();
                self.next_state_check = now + duration_ms(retry).min(poll);
                let until_ms = self.next_state_check;
                self.line.update(|s| {
                    s.last_error = Some(error.to_string());
                    // Nothing goes out until the state is known; say when it is asked again.
                    s.hold = Some(Hold::BackOff {
                        status: None,
                        until_ms,
                    });
                });
                Some(wait_until(now, self.next_state_check))
            }
        }
    }

    /// Writes a held-back outcome now.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if let Some((id, record, at)) = self.pending.take() {
            self.store.record_outcome(&id, &record, at).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(instance = %self.name, message_id = %row.id))]
    async fn send(&mut self, row: MessageRow, now: i64) -> Result<Outcome, StoreError> {
        let pending = self.pending.take();
        let finished = pending.as_ref().map(|(id, r, at)| (id.as_str(), r, *at));
        let claimed = self
            .store
            .finish_and_begin(finished, &row.id, &self.name, now)
            .await;
        self.head.pop_front();
        let attempt = match claimed {
            Ok(a) => a,
            // Cancelled or expired between the look and the claim: look again.
            Err(StoreError::Conflict(_)) => return Ok(Outcome::Progress),
            Err(e) => {
                // Nothing of the transaction was written: the outcome is still to record.
                self.pending = pending;
                return Err(e);
            }
        };
        self.last_request = Some(Instant::now());
        if let Some(persisted) = &mut self.persisted {
            persisted.last_send_at = Some(now);
        }
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
                self.persisted = None;
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
        match record {
            // Final outcomes may ride with the next claim (see the module doc).
            SendOutcomeRecord::Sent { .. } | SendOutcomeRecord::Failed { .. } => {
                self.pending = Some((row.id.clone(), record, now));
            }
            _ => {
                // The card stays at the head (requeued) or in flight (uncertain).
                self.head.clear();
                self.check_in_flight = true;
                self.store.record_outcome(&row.id, &record, now).await?;
            }
        }
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
