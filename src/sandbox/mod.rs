//! The sandbox: an in-memory Green API emulator on loopback HTTP (docs/api.md §8), for
//! trying the daemon without a WhatsApp account and for tests.
//!
//! It serves the methods contactq uses with the real API's validation (its own, in
//! `validate`, independent of the daemon's, so tests can catch a mistake in either),
//! answers and limits, runs each
//! instance's own send queue paced by `delaySendMessagesMilliseconds`, and can be
//! steered (state, failures, latency, scripted answers, the `statusMessage` its sent
//! messages move through) in-process through
//! [`Sandbox`] or over HTTP through `/sandbox/*` (see `control.rs`).
//!
//! Files: `types` (public data), `knobs` (steering values), `world` (instances,
//! queue, journal), `limits` (per-second limits), `green` (the API methods),
//! `replies` (the API's answer bodies), `control` (steering endpoints), `conn`
//! (connections a script can cut), `cli` (`contactq sandbox`).

mod cli;
mod conn;
mod control;
mod green;
mod knobs;
mod limits;
mod replies;
mod types;
mod validate;
mod world;

#[cfg(test)]
mod tests_api;
#[cfg(test)]
mod tests_control;
#[cfg(test)]
mod tests_journal;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cli::{run, SandboxArgs};
pub use knobs::KnobPatch;
pub use types::{ReceivedCard, SandboxOptions, ScriptStep};

use crate::state::Authorization;
use conn::{ConnHandle, CuttableListener};
use knobs::Knobs;
pub use world::StatusTarget;
use world::{now_ms, Shared, World};

/// How often the emulated send queues are looked at.
const PUMP_TICK: Duration = Duration::from_millis(20);

/// A running sandbox; clones share it.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    world: Shared,
    stop: watch::Sender<bool>,
}

impl Sandbox {
    /// Binds `addr` (port 0 picks a free one) and serves in a background task.
    pub async fn start(addr: SocketAddr, opts: SandboxOptions) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let defaults = Knobs {
            state: opts.state,
            fail_rate: opts.fail_rate,
            fail_statuses: opts.fail_statuses,
            retry_after_seconds: opts.retry_after_seconds,
            latency: opts.latency,
            delay_send_ms: opts.delay_send_ms,
            deliver_after_ms: opts.deliver_after_ms,
            read_after_ms: opts.read_after_ms,
            ..Knobs::default()
        };
        let mut world = World::new(defaults, opts.rate_limits);
        for (id, token) in opts.tokens {
            world.instance(&id).token = Some(token);
        }
        let world = Shared::new(world);
        let (stop, stopped) = watch::channel(false);

        let app = router(world.clone()).into_make_service_with_connect_info::<ConnHandle>();
        let serve = axum::serve(CuttableListener(listener), app)
            .with_graceful_shutdown(stop_signal(stopped.clone()));
        tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        tokio::spawn(pump(world.clone(), stopped));
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            inner: Arc::new(Inner { addr, world, stop }),
        })
    }

    /// The base URL to use as `api_url`, e.g. `http://127.0.0.1:7880`.
    pub fn url(&self) -> String {
        let mut addr = self.inner.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Sets `stateInstance` for one instance, or the default for all (`None`).
    pub fn set_state(&self, instance: Option<&str>, state: impl Into<Authorization>) {
        self.patch(
            instance,
            KnobPatch {
                state: Some(state.into()),
                ..KnobPatch::default()
            },
        );
    }

    /// Answers a share of `sendContact`s with a status picked from `statuses`.
    pub fn set_failures(&self, instance: Option<&str>, fail_rate: f64, statuses: Vec<u16>) {
        self.patch(
            instance,
            KnobPatch {
                fail_rate: Some(fail_rate),
                fail_statuses: Some(statuses),
                ..KnobPatch::default()
            },
        );
    }

    /// Sleeps this long before every Green API answer.
    pub fn set_latency(&self, instance: Option<&str>, latency: Duration) {
        self.patch(
            instance,
            KnobPatch {
                latency_ms: Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)),
                ..KnobPatch::default()
            },
        );
    }

    /// Sets `delaySendMessagesMilliseconds`: the emulated queue sends one per this.
    pub fn set_delay_send(&self, instance: Option<&str>, delay_ms: u64) {
        self.patch(
            instance,
            KnobPatch {
                delay_send_messages_milliseconds: Some(delay_ms),
                ..KnobPatch::default()
            },
        );
    }

    /// Changes any knobs at once (what `POST /sandbox/control` does).
    pub fn patch(&self, instance: Option<&str>, patch: KnobPatch) {
        self.inner.world.lock().patch(instance, &patch);
    }

    /// Queues answers for the next `sendContact` requests of `instance`, in order.
    pub fn push_script(&self, instance: &str, steps: Vec<ScriptStep>) {
        self.inner
            .world
            .lock()
            .instance(instance)
            .script
            .extend(steps);
    }

    /// Every `sendContact` the sandbox accepted for `instance`, in order (scripted
    /// `accept: true` ones included).
    pub fn received(&self, instance: &str) -> Vec<ReceivedCard> {
        let w = self.inner.world.lock();
        w.instances
            .get(instance)
            .map(|i| i.received.clone())
            .unwrap_or_default()
    }

    /// Puts a card sent from the phone (not through the API: `sendByApi: false`) into
    /// `instance`'s journal as if it went out at `at_ms`; returns its `idMessage`.
    pub fn typed_on_phone(
        &self,
        instance: &str,
        body: &serde_json::Value,
        at_ms: i64,
    ) -> Option<String> {
        let card = validate::send_contact(body.to_string().as_bytes()).ok()?;
        Some(
            self.inner
                .world
                .lock()
                .typed_on_phone(instance, card, at_ms),
        )
    }

    /// How many cards wait in `instance`'s own send queue (`showMessagesQueue`).
    pub fn queued(&self, instance: &str) -> usize {
        self.inner.world.lock().queue_len(instance)
    }

    /// How many `method` requests reached `instance`, rejected ones included.
    pub fn request_count(&self, instance: &str, method: &str) -> usize {
        let w = self.inner.world.lock();
        w.instances
            .get(instance)
            .and_then(|i| i.requests.get(method).copied())
            .unwrap_or(0)
    }

    /// How many `method` requests of `instance` the per-second limits refused (429).
    pub fn limited_count(&self, instance: &str, method: &str) -> usize {
        let w = self.inner.world.lock();
        w.instances
            .get(instance)
            .and_then(|i| i.limited.get(method).copied())
            .unwrap_or(0)
    }

    /// Pins the `statusMessage` `lastOutgoingMessages` shows for one message or every
    /// message to one chat (one of `pending`, `sent`, `delivered`, `read`, `failed`,
    /// `noAccount`, `notInGroup`, `yellowCard`), or lifts the pin (None); false for a
    /// status the journal never shows.
    pub fn pin_status(&self, instance: &str, target: StatusTarget, status: Option<&str>) -> bool {
        if status.is_some_and(|s| control::check_journal_status(s).is_err()) {
            return false;
        }
        self.inner
            .world
            .lock()
            .pin_status(instance, &target, status.map(str::to_owned));
        true
    }

    /// Sets how long a sent message takes to show `delivered`, and then `read`.
    pub fn set_delivery_delays(&self, instance: Option<&str>, deliver: Duration, read: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.patch(
            instance,
            KnobPatch {
                deliver_after_ms: Some(ms(deliver)),
                read_after_ms: Some(ms(read)),
                ..KnobPatch::default()
            },
        );
    }

    /// Stops accepting connections and stops the emulated queues.
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
    }
}

fn router(world: Shared) -> Router {
    Router::new()
        .route("/sandbox/control", get(control::show).post(control::update))
        .route("/sandbox/script", post(control::script))
        .route("/sandbox/sent", get(control::sent))
        .route("/sandbox/typed", post(control::typed))
        .route("/sandbox/status", post(control::status))
        .route("/{instance}/{method}/{token}", any(green::handle))
        .fallback(
            |verb: axum::http::Method, uri: axum::http::Uri| async move {
                green::not_found(&verb, uri.path())
            },
        )
        .with_state(world)
}

/// Moves due messages out of every instance's queue until the sandbox stops.
async fn pump(world: Shared, stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PUMP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => world.lock().drain_all(now_ms()),
            _ = stop_signal(stopped.clone()) => return,
        }
    }
}

/// Resolves once `shutdown` is called. Dropping every `Sandbox` handle does not stop
/// it: it serves until `shutdown` or the end of the runtime, so a caller that keeps
/// only the URL still has a sandbox.
async fn stop_signal(mut stopped: watch::Receiver<bool>) {
    if stopped.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
