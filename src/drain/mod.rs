//! One drain loop per instance: FIFO, one request in flight, paced by `send_delay`.
//!
//! [`Drain::step`] does exactly one unit of work (check the hold, check the
//! authorization, reconcile an uncertain card, or send the head of the line) and
//! returns an [`Outcome`]; [`Drain::run`] alone decides when to sleep.
//!
//! A send starts only while the drain holds an `authorized` answer from a
//! `getStateInstance` call that started less than `state_poll` ago: the API takes
//! sends while the instance is logged out, blocked or on a yellow card and drops them
//! a day later, so a 200 from `sendContact` proves nothing about the instance.
//!
//! Every wait (pacing, back-off, holds) is measured on the monotonic clock of
//! [`crate::clock`]; wall times are only stored and shown.
//!
//! A drain reads and writes the database as little as it can, because a thousand of
//! them share the store's one writer (every write is a job of its write thread): it keeps its instance's row (read again after a bell, which
//! the API rings on pause and resume), a few cards from the head of its line (claimed
//! one by one; a card that left the line meanwhile is simply skipped), and looks for a
//! card in flight only when one may exist (at start, after an uncertain outcome or a
//! failed write). A `sent` outcome is committed together with the claim of the next
//! card when that follows at once, so a steady drain pays one fsync per send.
//!
//! Timing ([`timing`]): cards whose `notBefore` comes join the tail of the line (the
//! loop wakes for it), and nothing goes out inside the instance's quiet hours.
//!
//! Delivery ([`delivery`]): after `sent`, the drain follows each card's WhatsApp status
//! in `lastOutgoingMessages` every `delivery_poll`, looking only while it would
//! otherwise wait, so delivery never holds the line.

mod backoff;
mod delivery;
mod holds;
mod reconcile;
mod timing;

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::{duration_ms, remaining_ms, SharedClock};
use crate::config::{InstanceSettings, QueueSettings};
use crate::lines::{refused_text, Hold, Line};
use crate::shutdown::Shutdown;
use crate::state::{Authorization, MessageState};
use crate::store::{InstanceRow, MessageRow, SendOutcomeRecord, Store, StoreError};
use crate::upstream::{GreenApi, SendOutcome, StateError};

pub use backoff::Backoff;

/// The longest a loop sleeps without looking again (also its heartbeat period).
const MAX_WAIT: Duration = Duration::from_secs(15);
/// Extra wait before the first send after a start, over the persisted pacing.
const RESTART_MARGIN_MS: i64 = 250;
/// The API allows one `getStateInstance` (and journal call) per second per instance.
const STATE_CALL_GAP_MS: i64 = 1100;
/// On a database several daemons share: how often a follower tries to take the
/// instance, and the longest a drainer waits before reading its line again.
const SHARED_LOOK_EVERY: Duration = Duration::from_secs(1);
/// Cards read from the head of the line at a time.
const HEAD_BATCH: i64 = 32;
/// On a shared database: a drainer that has had only 401/403 or connection failures
/// from its instance this long gives its lease up (another daemon's key or network
/// may do better) and keeps off it for [`KEEP_OFF`].
const REFUSED_FOR: Duration = Duration::from_secs(120);
const KEEP_OFF: Duration = Duration::from_secs(300);

/// The `send_delay` limiter, reading the drain's monotonic clock.
type Limiter = RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Nanos>>;

/// The drain's clock as `governor` reads it.
#[derive(Debug, Clone)]
struct LimiterClock(SharedClock);

impl governor::clock::Clock for LimiterClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(
            u64::try_from(self.0.mono_ms())
                .unwrap_or(0)
                .saturating_mul(1_000_000),
        )
    }
}

/// At most one send per `send_delay`, no burst. A zero delay means no pacing at all
/// (sandbox and benchmarks only).
fn limiter(send_delay: Duration, clock: &SharedClock) -> Option<Limiter> {
    Quota::with_period(send_delay).map(|q| {
        RateLimiter::direct_with_clock(q.allow_burst(NonZeroU32::MIN), LimiterClock(clock.clone()))
    })
}

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
    limiter: Option<Limiter>,
    clock: SharedClock,
    backoff: Backoff,
    /// Monotonic ms: no request before this (after a temporary failure).
    backoff_until: i64,
    /// Whether the last `getStateInstance` answer was `authorized`.
    authorized: bool,
    /// Monotonic ms: when the `getStateInstance` call that answered `authorized`
    /// started; a send needs it less than `state_poll` old.
    authorized_at: Option<i64>,
    /// Monotonic ms: the state is not asked again before this.
    next_state_check: i64,
    last_state_call: i64,
    /// The line's persisted quota hold (wall end) and its monotonic end.
    line_hold: Option<(i64, i64)>,
    /// Chats held by a chats-quota 466.
    chat_holds: holds::ChatHolds,
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
    /// Monotonic ms: pacing allows the next request from this moment; None until it
    /// is first computed from the persisted last send time.
    next_send: Option<i64>,
    /// When the first card not yet due (`notBefore` ahead) comes due, wall ms; None
    /// until read (again).
    next_due: Option<Option<i64>>,
    /// The instance's quiet hours.
    quiet: Option<crate::quiet::QuietHours>,
    /// The lease epoch at which this daemon drained the instance at the last turn
    /// (always 1 on SQLite; on a shared database only while it holds the instance's
    /// lease: [`Store::try_lead`]).
    leading: Option<i64>,
    /// Monotonic ms since when the API has answered nothing but 401/403 or connection
    /// failures (None: it answered otherwise since); see [`REFUSED_FOR`].
    refused_since: Option<i64>,
    /// The cards whose delivery is followed.
    follower: delivery::Follower,
    /// The one `lastOutgoingMessages` gate (delivery and reconcile share it).
    journal_gate: delivery::JournalGate,
}

impl Drain {
    pub fn new(
        instance: &InstanceSettings,
        queue: &QueueSettings,
        store: Store,
        http: reqwest::Client,
        line: Arc<Line>,
    ) -> Self {
        let clock = crate::clock::system();
        line.update(|s| s.quiet = instance.quiet_hours.clone());
        Self {
            name: instance.name.clone(),
            store,
            api: GreenApi::new(instance, http),
            line,
            queue: queue.clone(),
            send_delay: instance.send_delay,
            limiter: limiter(instance.send_delay, &clock),
            clock,
            backoff: Backoff::new(queue.retry_initial, queue.retry_max),
            backoff_until: i64::MIN,
            authorized: false,
            authorized_at: None,
            next_state_check: i64::MIN,
            last_state_call: i64::MIN / 2,
            line_hold: None,
            chat_holds: holds::ChatHolds::default(),
            reconcile: reconcile::Reconciler::default(),
            persisted: None,
            head: VecDeque::new(),
            check_in_flight: true,
            pending: None,
            next_send: None,
            next_due: None,
            quiet: instance.quiet_hours.clone(),
            leading: None,
            refused_since: None,
            follower: delivery::Follower::default(),
            journal_gate: delivery::JournalGate::default(),
        }
    }

    /// The same drain reading `clock` (tests step it).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.limiter = limiter(self.send_delay, &clock);
        self.clock = clock;
        self
    }

    /// Steps until shutdown; an in-flight send is always finished first.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        tracing::info!(instance = %self.name, "drain started");
        // On a database other daemons share, their enqueues, pauses and cancels ring no
        // bell here: the line is read again at least this often.
        let shared = self.store.is_shared();
        while !shutdown.is_shutdown() {
            self.line.update(|s| s.heartbeat = Some(Instant::now()));
            if !self.lead().await {
                tokio::select! {
                    _ = tokio::time::sleep(SHARED_LOOK_EVERY) => {}
                    _ = shutdown.recv() => {}
                }
                continue;
            }
            if shared {
                self.persisted = None;
            }
            let outcome = match self.step().await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::warn!(instance = %self.name, %error, "drain step failed; retrying");
                    self.line.update(|s| s.last_error = Some(error.to_string()));
                    Outcome::Wait(Duration::from_secs(1))
                }
            };
            let most = if shared { SHARED_LOOK_EVERY } else { MAX_WAIT };
            let wait = match outcome {
                Outcome::Progress => continue,
                Outcome::Wait(d) => d.min(most),
                Outcome::Idle => most,
            };
            let wait = self.cap_wait(wait);
            let wait = match self.next_delivery_look() {
                Some(at) => {
                    let left = at.saturating_sub(self.clock.mono_ms()).max(1);
                    wait.min(Duration::from_millis(left as u64))
                }
                None => wait,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.line.wake.notified() => {}
                _ = shutdown.recv() => {}
            }
        }
        if let Err(error) = self.flush().await {
            // The card stays `sending`; the next start reconciles it.
            tracing::warn!(instance = %self.name, %error, "could not record the last outcome");
        }
        tracing::info!(instance = %self.name, "drain stopped");
    }

    /// Whether this daemon drains the instance now. On taking it over (a new epoch,
    /// also when it takes back a lease it let lapse), everything kept of the database
    /// is read afresh: a card another daemon left `sending` is reconciled first, and
    /// pacing starts from the persisted last send.
    async fn lead(&mut self) -> bool {
        let leading = self.store.try_lead(&self.name).await;
        match (leading, self.leading) {
            (Some(now), before) if before != Some(now) => {
                self.record_pending().await;
                self.forget();
                self.next_send = None;
            }
            (None, Some(_)) => {
                tracing::warn!(instance = %self.name, "another daemon drains this instance now");
                self.record_pending().await;
                self.head.clear();
            }
            _ => {}
        }
        self.leading = leading;
        leading.is_some()
    }

    /// A held-back outcome is written when the lease changes hands: an outcome is
    /// recorded whoever holds the lease (docs/api.md §10). If it cannot be, the card
    /// stays `sending` and the holder reconciles it.
    async fn record_pending(&mut self) {
        if let Err(error) = self.flush().await {
            tracing::warn!(instance = %self.name, %error, "could not record the last outcome");
        }
    }

    /// On a shared database: gives the lease up after [`REFUSED_FOR`] of nothing but
    /// refusals (401/403) or connection failures from the API.
    async fn refused_by_api(&mut self, refused: bool) {
        if !refused {
            self.refused_since = None;
            return;
        }
        let now = self.clock.mono_ms();
        let since = *self.refused_since.get_or_insert(now);
        if self.store.is_shared() && now - since >= duration_ms(REFUSED_FOR) {
            tracing::warn!(instance = %self.name, "only refusals or connection failures from the API for 2 minutes; giving the drain lease to another daemon for 5 minutes");
            self.store
                .give_up_lead(&self.name, duration_ms(KEEP_OFF))
                .await;
            self.refused_since = None;
        }
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
        // Delivery is looked at between sends, never instead of one (delivery.rs).
        if let Ok(outcome) = &result {
            if self.delivery_look_now(outcome) {
                if let Err(error) = self.look_at_deliveries().await {
                    tracing::warn!(instance = %self.name, %error, "delivery look failed; looking again at the next poll");
                    self.follow_new_send();
                }
                // A wait was measured before the look: measure it again. An idle line
                // stays idle (a bell wakes it; the loop's wait is cut to the next look).
                if outcome != &Outcome::Idle {
                    return Ok(Outcome::Progress);
                }
            }
        }
        result
    }

    /// Drops what the drain keeps of the database, so the next step reads it again.
    fn forget(&mut self) {
        self.persisted = None;
        self.head.clear();
        self.check_in_flight = true;
    }

    async fn step_inner(&mut self) -> Result<Outcome, StoreError> {
        let now = self.clock.mono_ms();
        let wall = self.clock.wall_ms();
        if self.line.take_flush() {
            self.flush_requested();
        }
        // A pause or resume is read at the next step, even mid-drain; an enqueue's
        // bell changes nothing stored about the line, so it costs no read.
        if self.line.take_instance_changed() {
            self.persisted = None;
        }
        // Chat holds are read at start and after `resume`, not after every bell.
        if self.line.take_holds_changed() {
            let chats = match self.store.chat_holds(&self.name).await {
                Ok(chats) => chats,
                Err(e) => {
                    self.line.holds_changed();
                    return Err(e);
                }
            };
            let quota = duration_ms(self.queue.quota_retry);
            self.chat_holds.load(&chats, wall, now, quota);
            self.head.clear();
            self.show_chat_holds();
        }
        // Cards whose `notBefore` came join the tail, on a held line too: their place
        // is the moment they came due.
        if let Some(outcome) = self.join_due().await? {
            return Ok(outcome);
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
            let end = match self.line_hold {
                Some((w, m)) if w == until => m,
                _ => now + remaining_ms(until, wall, duration_ms(self.queue.quota_retry)),
            };
            self.line_hold = Some((until, end));
            if end > now {
                self.set_hold(Some(Hold::Quota {
                    until_ms: wall + (end - now),
                }));
                return Ok(wait_until(now, end));
            }
            self.store.set_hold(&self.name, None, None).await?;
            self.line_hold = None;
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
        let ended = self.chat_holds.take_ended(now);
        if !ended.is_empty() {
            for (chat, until) in &ended {
                self.store.end_chat_hold(&self.name, chat, *until).await?;
            }
            // The held chats' cards are at the head again, in their places.
            self.head.clear();
            self.show_chat_holds();
        }
        if self.head.is_empty() {
            let skip = self.chat_holds.chats();
            self.head = self
                .store
                .head_rows_skipping(&self.name, HEAD_BATCH, &skip)
                .await?
                .into();
        }
        let Some(row) = self.head.front().cloned() else {
            self.set_hold(None);
            return Ok(match self.chat_holds.next_end() {
                Some(end) => wait_until(now, end),
                None => Outcome::Idle,
            });
        };
        if let Some(wait) = self.quiet_hours(now) {
            return Ok(wait);
        }
        // After a start, pace from the persisted time of the last claim (a little
        // before its request left, hence the margin), clamped to `send_delay` so a
        // wall clock stepped back cannot stall the line; from then on, from our own
        // requests on the monotonic clock.
        let next_send = *self.next_send.get_or_insert_with(|| {
            let delay = duration_ms(self.send_delay);
            let margin = if delay == 0 { 0 } else { RESTART_MARGIN_MS };
            now + holds::restart_wait_ms(persisted.last_send_at, wall, delay, margin)
        });
        if next_send > now {
            self.line
                .update(|s| s.next_send_at = Some(wall + (next_send - now)));
            self.set_hold(None);
            return Ok(wait_until(now, next_send));
        }
        // The authorization must be fresh when the request starts (see the module doc);
        // an answer that took longer than `state_poll` to come is already stale.
        if !self.authorization_fresh(now) {
            if let Some(wait) = self.check_authorization(now).await {
                return Ok(wait);
            }
            if !self.authorization_fresh(self.clock.mono_ms()) {
                return Ok(Outcome::Progress);
            }
        }
        if let Some(limiter) = &self.limiter {
            if let Err(not_until) = limiter.check() {
                let now = governor::clock::Clock::now(&LimiterClock(self.clock.clone()));
                return Ok(Outcome::Wait(not_until.wait_time_from(now)));
            }
        }
        // The state call above may have taken a while: a window that began meanwhile
        // still holds this send.
        if let Some(wait) = self.quiet_hours(self.clock.mono_ms()) {
            return Ok(wait);
        }
        self.send(row, wall).await
    }

    /// Whether an `authorized` answer from a call started less than `state_poll` ago
    /// is held.
    fn authorization_fresh(&self, now: i64) -> bool {
        self.authorized_at
            .is_some_and(|at| now - at < duration_ms(self.queue.state_poll))
    }

    /// `contactq flush NAME`: ask the state at once (within the API's one call per
    /// second) and end any back-off. Quota holds stay: they end with `quota_retry` or
    /// `resume`.
    fn flush_requested(&mut self) {
        tracing::info!(instance = %self.name, "flush: asking the state now, back-off ended");
        self.backoff.reset();
        self.backoff_until = i64::MIN;
        self.next_state_check = i64::MIN;
        self.authorized = false;
        self.authorized_at = None;
        self.persisted = None;
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
        self.authorized_at = None;
        let poll = duration_ms(self.queue.state_poll);
        let wall = self.clock.wall_ms();
        let started = Instant::now();
        let answer = self.api.state().await;
        let refused = matches!(
            answer,
            Err(StateError::Refused {
                status: 401 | 403,
                ..
            }) | Err(StateError::Other(_))
        );
        self.refused_by_api(refused).await;
        let status = match &answer {
            Ok(_) => "200".to_string(),
            Err(StateError::Refused { status, .. }) => status.to_string(),
            Err(StateError::Other(_)) => "error".to_string(),
        };
        crate::metrics::upstream_request(
            &self.name,
            "getStateInstance",
            &status,
            started.elapsed(),
        );
        match answer {
            Ok(state) if state.is_authorized() => {
                if !self.authorized {
                    tracing::info!(instance = %self.name, "instance authorized");
                }
                self.authorized = true;
                self.authorized_at = Some(now);
                // The API's own send delay, for the reconciler (reconcile.rs).
                self.refresh_api_settings().await;
                self.line.update(|s| {
                    s.authorization = state;
                    s.hold = None;
                });
                None
            }
            Ok(state) => {
                if let Authorization::Other(text) = &state {
                    tracing::warn!(instance = %self.name, state = %text, "the API reported a stateInstance contactq does not know; holding the line as for any state but authorized");
                }
                tracing::info!(instance = %self.name, state = %state, "instance not authorized; holding the line");
                self.authorized = false;
                let since = match self.line.status().hold {
                    Some(Hold::NotAuthorized { since_ms, state: s }) if s == state => since_ms,
                    _ => wall,
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
            Err(StateError::Refused { status, error }) => {
                let text = refused_text(&self.name, status);
                tracing::warn!(instance = %self.name, status, api = %error, "{text}");
                self.authorized = false;
                self.next_state_check = now + poll;
                let name = self.name.clone();
                self.line.update(|s| {
                    s.last_error = Some(text);
                    s.hold = Some(Hold::Refused {
                        status,
                        instance: name,
                    });
                });
                Some(Outcome::Wait(self.queue.state_poll))
            }
            Err(StateError::Other(error)) => {
                tracing::warn!(instance = %self.name, %error, "getStateInstance failed");
                let retry = self.backoff.next_delay();
                self.next_state_check = now + duration_ms(retry).min(poll);
                let until_ms = wall + (self.next_state_check - now);
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

    /// Sends the head of the line; `now` is the wall time the claim records.
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
            // Cancelled or expired between the look and the claim, or the line paused:
            // look again, from the line's state and its head (the card may still be
            // queued, and must keep its place).
            Err(StoreError::Conflict(_)) => {
                self.persisted = None;
                self.head.clear();
                return Ok(Outcome::Progress);
            }
            Err(e) => {
                // Nothing of the transaction was written: the outcome is still to record.
                self.pending = pending;
                return Err(e);
            }
        };
        // Paced from the request, which leaves after the claim's commit: never two
        // requests closer than `send_delay` as the API sees them.
        let delay = duration_ms(self.send_delay);
        self.next_send = Some(self.clock.mono_ms().saturating_add(delay));
        if let Some(persisted) = &mut self.persisted {
            persisted.last_send_at = Some(now);
        }
        let next = self.clock.wall_ms().saturating_add(delay);
        self.line.update(|s| s.next_send_at = Some(next));
        // The holder writes no request past its own deadline (a process frozen between
        // the claim and here wakes up past it): the card stays `sending`, and whoever
        // holds the lease next (this daemon, at a new epoch) reconciles it first.
        if !self.store.may_send(&self.name) {
            tracing::warn!(instance = %self.name, "the drain lease's own deadline passed before the request; not sending");
            self.forget();
            return Ok(Outcome::Progress);
        }
        let started = Instant::now();
        let outcome = self.api.send_contact(&row.body).await;
        let refused = matches!(
            outcome,
            SendOutcome::NotAuthorized {
                status: 401 | 403,
                ..
            } | SendOutcome::RetryLater { status: None, .. }
                | SendOutcome::Uncertain { status: None, .. }
        );
        self.refused_by_api(refused).await;
        let elapsed = started.elapsed();
        let status = outcome_status(&outcome);
        crate::metrics::upstream_request(&self.name, "sendContact", &status, elapsed);
        tracing::info!(attempt, upstream_status = %status, latency_ms = elapsed.as_millis() as u64, "sendContact answered");
        self.apply(&row, outcome, attempt).await
    }

    /// Records what the API answered and decides what the line does next.
    async fn apply(
        &mut self,
        row: &MessageRow,
        outcome: SendOutcome,
        attempt: i64,
    ) -> Result<Outcome, StoreError> {
        let now = self.clock.wall_ms();
        let mono = self.clock.mono_ms();
        let (record, next) = match outcome {
            SendOutcome::Sent { id_message } => {
                self.backoff.reset();
                self.line.update(|s| {
                    s.last_error = None;
                    s.hold = None;
                });
                crate::metrics::ended(&self.name, MessageState::Sent);
                self.follow_new_send();
                (
                    SendOutcomeRecord::Sent {
                        id_message,
                        attempt,
                    },
                    Outcome::Progress,
                )
            }
            SendOutcome::Rejected { status, error } => {
                crate::metrics::ended(&self.name, MessageState::Failed);
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
                self.authorized_at = None;
                self.next_state_check = mono;
                // 401 / 403 say which key is wrong, not "not authorized".
                let (error, hold) = match status {
                    401 | 403 => (
                        refused_text(&self.name, status),
                        Hold::Refused {
                            status,
                            instance: self.name.clone(),
                        },
                    ),
                    _ => (
                        error,
                        Hold::NotAuthorized {
                            state: Authorization::NotAuthorized,
                            since_ms: now,
                        },
                    ),
                };
                self.line.update(|s| {
                    s.last_error = Some(error.clone());
                    s.hold = Some(hold);
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
                // A `Retry-After` wins over our back-off, but never waits past
                // `retry_max`: the header is the server's word, not a promise we keep.
                let wait = match retry_after {
                    Some(after) => after.min(self.queue.retry_max),
                    None => self.backoff.next_delay(),
                };
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
            SendOutcome::ChatQuotaExceeded { error } => {
                // Only this chat is refused this month: its cards step aside, the
                // other chats' go on in order.
                let quota = duration_ms(self.queue.quota_retry);
                let until = now.saturating_add(quota);
                self.store
                    .set_chat_hold(&self.name, &row.chat_id, until, &error)
                    .await?;
                self.chat_holds
                    .insert(&row.chat_id, until, mono.saturating_add(quota));
                self.show_chat_holds();
                self.line.update(|s| s.last_error = Some(error.clone()));
                tracing::warn!(instance = %self.name, chat_id = %row.chat_id, "chat over the monthly chats quota (466); holding its cards");
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

    /// Holds the line for `wait`, measured on the monotonic clock (`_now`, a wall
    /// time, is not used for the deadline).
    fn back_off(&mut self, _now: i64, status: Option<u16>, wait: Duration, error: &str) {
        let wait = duration_ms(wait);
        self.backoff_until = self.clock.mono_ms().saturating_add(wait);
        let until = self.clock.wall_ms().saturating_add(wait);
        tracing::warn!(instance = %self.name, error, wait_ms = wait, "temporary failure; backing off");
        self.line.update(|s| {
            s.last_error = Some(error.to_string());
            s.hold = Some(Hold::BackOff {
                status,
                until_ms: until,
            });
        });
    }

    /// Publishes the chat holds for `waitingFor`.
    fn show_chat_holds(&self) {
        let shown = self
            .chat_holds
            .to_show(self.clock.wall_ms(), self.clock.mono_ms());
        self.line.update(|s| s.chat_holds = shown);
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
        SendOutcome::QuotaExceeded { .. } | SendOutcome::ChatQuotaExceeded { .. } => "466".into(),
        SendOutcome::RetryLater { status, .. } | SendOutcome::Uncertain { status, .. } => {
            status.map_or_else(|| "error".to_string(), |s| s.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
