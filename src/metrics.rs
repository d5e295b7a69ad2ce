//! Prometheus metrics: recorded through the `metrics` facade everywhere, exported on
//! `metrics_listen` when it is configured (a no-op otherwise).

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::{Authorization, Delivery, MessageState};

/// Enqueue latency, from the request being parsed to its commit.
pub fn enqueue_latency(elapsed: Duration) {
    metrics::histogram!("contactq_enqueue_duration_seconds").record(elapsed.as_secs_f64());
}

/// Cards accepted by an enqueue (an idempotent repeat adds none).
pub fn enqueued(instance: &str, n: u64) {
    metrics::counter!("contactq_enqueued_total", "instance" => instance.to_string()).increment(n);
}

/// The reasons `contactq_held` can show: the `reason` label's values.
pub const HOLD_REASONS: [&str; 6] = [
    "paused",
    "not_authorized",
    "back_off",
    "quota",
    "refused",
    "quiet_hours",
];

/// Why a line is held, as the `reason` label of `contactq_held`.
fn hold_reason(paused: bool, hold: Option<&crate::lines::Hold>) -> Option<&'static str> {
    use crate::lines::Hold;
    if paused {
        return Some("paused");
    }
    match hold? {
        // The store says the line is not paused: a resume the drain has not seen yet.
        Hold::Paused => None,
        Hold::NotAuthorized { .. } => Some("not_authorized"),
        Hold::BackOff { .. } => Some("back_off"),
        Hold::Quota { .. } => Some("quota"),
        // The API refused the token (401) or the instance id (403).
        Hold::Refused { .. } => Some("refused"),
        Hold::Quiet { .. } => Some("quiet_hours"),
    }
}

/// The `state` label of `contactq_authorization`: the state's name, or `unknown` for a
/// state the API reports that contactq does not know (the label set stays fixed).
fn authorization_label(state: &Authorization) -> &'static str {
    state.known_name().unwrap_or("unknown")
}

/// A card reached an end state.
pub fn ended(instance: &str, state: MessageState) {
    ended_many(instance, state, 1);
}

/// Several cards of one instance reached an end state (`contactq_sent_total`, …).
pub fn ended_many(instance: &str, state: MessageState, n: u64) {
    debug_assert!(state.is_ended(), "{state} is not an end state");
    metrics::counter!(format!("contactq_{state}_total"), "instance" => instance.to_string())
        .increment(n);
}

/// A sent card's delivery moved to `delivery` (`contactq_delivery_total`).
pub fn delivery(instance: &str, delivery: Delivery) {
    delivery_many(instance, delivery, 1);
}

fn delivery_many(instance: &str, delivery: Delivery, n: u64) {
    metrics::counter!("contactq_delivery_total",
        "instance" => instance.to_string(), "delivery" => delivery.as_str())
    .increment(n);
}

/// A hook delivered an event (`contactq_hook_delivered_total`).
pub fn hook_delivered(hook: &str) {
    metrics::counter!("contactq_hook_delivered_total", "hook" => hook.to_string()).increment(1);
}

/// A hook's delivery failed (`contactq_hook_failures_total`).
pub fn hook_failed(hook: &str) {
    metrics::counter!("contactq_hook_failures_total", "hook" => hook.to_string()).increment(1);
}

/// Events committed after a consumer's cursor (`contactq_consumer_lag`).
pub fn hook_lag(consumer: &str, lag: i64) {
    metrics::gauge!("contactq_consumer_lag", "consumer" => consumer.to_string()).set(lag as f64);
}

/// One upstream request and its outcome.
pub fn upstream_request(instance: &str, method: &'static str, status: &str, elapsed: Duration) {
    metrics::histogram!("contactq_upstream_request_duration_seconds",
        "instance" => instance.to_string(), "method" => method, "status" => status.to_string())
    .record(elapsed.as_secs_f64());
}

/// How often recorded histogram samples are folded into their buckets. The exporter
/// does it on a scrape too, but without this a daemon nobody scrapes would keep every
/// sample of every send in memory.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use. The `metrics` facade
/// takes one global recorder per process and refuses a second, so a daemon started
/// again in the same process (tests, `demo`) must reuse it instead of failing.
fn recorder() -> std::io::Result<PrometheusHandle> {
    static HANDLE: std::sync::Mutex<Option<PrometheusHandle>> = std::sync::Mutex::new(None);
    let mut slot = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ])
        .map_err(std::io::Error::other)?
        .install_recorder()
        .map_err(std::io::Error::other)?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Scrapers served at once; more wait in the backlog.
const METRICS_CONNECTIONS: usize = 64;

/// Installs the Prometheus recorder and serves `GET /metrics` on `addr` until shutdown.
/// Gauges (queued, sending, oldest age, authorization, paused, held, send delay) are
/// read at scrape time.
pub async fn serve(
    addr: std::net::SocketAddr,
    store: crate::store::Store,
    lines: std::sync::Arc<crate::lines::Lines>,
    hooks: Vec<String>,
    shutdown: crate::shutdown::Shutdown,
) -> std::io::Result<()> {
    let handle = recorder()?;
    // Every instance's counters exist from the start, at 0, so a rate() over them
    // works before the first event.
    for (name, _) in lines.iter() {
        for state in MessageState::ENDED {
            ended_many(name, state, 0);
        }
        enqueued(name, 0);
        for value in Delivery::ALL {
            delivery_many(name, value, 0);
        }
    }
    for hook in hooks {
        metrics::counter!("contactq_hook_delivered_total", "hook" => hook.clone()).increment(0);
        metrics::counter!("contactq_hook_failures_total", "hook" => hook.clone()).increment(0);
    }
    let upkeep_handle = handle.clone();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, store, lines) = (handle.clone(), store.clone(), lines.clone());
            async move {
                record_gauges(&store, &lines).await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    let mut upkeep_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP) => upkeep_handle.run_upkeep(),
                _ = upkeep_shutdown.recv() => return,
            }
        }
    });
    tokio::spawn(async move {
        // The socket API's connection handling (timeouts, a connection limit): a
        // scraper that stalls or hoards connections cannot exhaust the daemon's files.
        let _ = crate::api::serve_router(listener, app, METRICS_CONNECTIONS, shutdown).await;
    });
    Ok(())
}

async fn record_gauges(store: &crate::store::Store, lines: &crate::lines::Lines) {
    let now = crate::clock::now_ms();
    if let (Ok(ends), Ok(consumers)) = (store.stream_ends().await, store.consumers().await) {
        metrics::gauge!("contactq_event_last_seq").set(ends.last as f64);
        for consumer in consumers {
            hook_lag(&consumer.name, (ends.last - consumer.cursor).max(0));
            metrics::gauge!("contactq_consumer_failures", "consumer" => consumer.name.clone())
                .set(consumer.failures as f64);
        }
    }
    for (name, line) in lines.iter() {
        let status = line.status();
        if let Ok(counts) = store.counts(name).await {
            let label = name.to_string();
            metrics::gauge!("contactq_queued", "instance" => label.clone())
                .set(counts.get(MessageState::Queued.as_str()) as f64);
            metrics::gauge!("contactq_sending", "instance" => label.clone())
                .set(counts.get(MessageState::Sending.as_str()) as f64);
            let age = counts
                .oldest_queued_at
                .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            metrics::gauge!("contactq_oldest_queued_age_seconds", "instance" => label.clone())
                .set(age);
        }
        // The pause is the store's (it survives restarts); the other holds are live.
        let paused = match store.instance(name).await {
            Ok(row) => row.paused,
            Err(_) => matches!(status.hold, Some(crate::lines::Hold::Paused)),
        };
        metrics::gauge!("contactq_paused", "instance" => name.to_string()).set(if paused {
            1.0
        } else {
            0.0
        });
        let reason = hold_reason(paused, status.hold.as_ref());
        for candidate in HOLD_REASONS {
            let value = if reason == Some(candidate) { 1.0 } else { 0.0 };
            metrics::gauge!("contactq_held", "instance" => name.to_string(), "reason" => candidate)
                .set(value);
        }
        metrics::gauge!("contactq_send_delay_seconds", "instance" => name.to_string())
            .set(status.send_delay_ms as f64 / 1000.0);
        let current = authorization_label(&status.authorization);
        for label in Authorization::KNOWN.iter().map(authorization_label) {
            let value = if label == current { 1.0 } else { 0.0 };
            metrics::gauge!("contactq_authorization", "instance" => name.to_string(), "state" => label).set(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authorization_has_one_of_eight_fixed_labels() {
        let labels: Vec<_> = Authorization::KNOWN
            .iter()
            .map(authorization_label)
            .collect();
        assert_eq!(
            labels,
            [
                "authorized",
                "notAuthorized",
                "blocked",
                "sleepMode",
                "starting",
                "yellowCard",
                "suspended",
                "unknown"
            ]
        );
        let unlisted = Authorization::Other("pendingMigration".into());
        assert_eq!(authorization_label(&unlisted), "unknown");
    }
}
