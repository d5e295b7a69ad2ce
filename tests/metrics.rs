//! `metrics_listen`: the real daemon, one card enqueued over its socket and sent to
//! the sandbox, then a Prometheus scrape that shows the queue, the send, the upstream
//! and enqueue latencies and the authorization state, and never the API token.

mod common;

use std::time::Duration;

use common::{card, sandbox, DaemonConfig, TestDaemon, TOKEN};

/// A loopback address nobody listens on right now.
fn free_loopback_addr() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_queue_the_send_and_latencies_but_not_the_token() {
    let sandbox = sandbox().await;
    let metrics = free_loopback_addr();
    let mut daemon = TestDaemon::start(
        &sandbox,
        DaemonConfig {
            daemon_extra: format!("metrics_listen = \"{metrics}\""),
            ..DaemonConfig::default()
        },
    )
    .await;
    let id = daemon.enqueue_ok(&card(1)).await;
    daemon
        .wait_state(&id, "sent", Duration::from_secs(30))
        .await;

    let scrape = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .expect("GET /metrics");
    assert!(scrape.status().is_success(), "{}", scrape.status());
    let text = scrape.text().await.expect("metrics body");
    for wanted in [
        "contactq_queued{instance=\"main\"} 0",
        "contactq_sent_total{instance=\"main\"} 1",
        "contactq_expired_total{instance=\"main\"} 0",
        "contactq_cancelled_total{instance=\"main\"} 0",
        "contactq_failed_total{instance=\"main\"} 0",
        "contactq_upstream_request_duration_seconds_bucket{",
        "contactq_enqueue_duration_seconds_count 1",
        "contactq_authorization{instance=\"main\",state=\"authorized\"} 1",
        "contactq_authorization{instance=\"main\",state=\"notAuthorized\"} 0",
    ] {
        assert!(text.contains(wanted), "no {wanted:?} in /metrics:\n{text}");
    }
    let upstream = text
        .lines()
        .find(|l| {
            l.starts_with("contactq_upstream_request_duration_seconds_count{")
                && l.contains("method=\"sendContact\"")
        })
        .unwrap_or_else(|| panic!("no upstream request count in /metrics:\n{text}"));
    assert!(
        text.contains("method=\"getStateInstance\""),
        "state checks are counted too"
    );
    assert!(
        upstream.contains("instance=\"main\"")
            && upstream.contains("method=\"sendContact\"")
            && upstream.contains("status=\"200\"")
            && upstream.ends_with(" 1"),
        "{upstream}"
    );
    assert!(
        !text.contains(TOKEN),
        "the API token is in /metrics:\n{text}"
    );

    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    assert!(
        !daemon.logs().contains(TOKEN),
        "the API token is in the log"
    );
    sandbox.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_delivery_change() {
    let sandbox = sandbox().await;
    sandbox.set_delivery_delays(None, Duration::from_millis(200), Duration::from_millis(200));
    let metrics = free_loopback_addr();
    let daemon = TestDaemon::start(
        &sandbox,
        DaemonConfig {
            daemon_extra: format!("metrics_listen = \"{metrics}\""),
            queue_extra: "delivery_poll = \"1s\"".into(),
            ..DaemonConfig::default()
        },
    )
    .await;
    let id = daemon.enqueue_ok(&card(1)).await;
    common::eventually(Duration::from_secs(15), "the card is read", || async {
        daemon.message(&id).await["delivery"] == "read"
    })
    .await;
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for wanted in [
        "contactq_delivery_total{instance=\"main\",delivery=\"delivered\"} 1",
        "contactq_delivery_total{instance=\"main\",delivery=\"read\"} 1",
        "contactq_delivery_total{instance=\"main\",delivery=\"noAccount\"} 0",
        "contactq_delivery_total{instance=\"main\",delivery=\"unconfirmed\"} 0",
    ] {
        assert!(text.contains(wanted), "no {wanted:?} in /metrics:\n{text}");
    }
    assert!(text.contains("method=\"lastOutgoingMessages\""), "{text}");
    sandbox.shutdown();
}
