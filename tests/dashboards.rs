//! The shipped Grafana dashboard (dashboards/contactq.json) and Prometheus alert rules
//! (dashboards/alerts.yml) use only metrics, and label values, that the real daemon
//! exports on `/metrics`; and the gauges and counters they rely on move as they should
//! (paused and held lines, enqueued cards, the send delay).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{card, sandbox, DaemonConfig, TestDaemon};
use contactq::cli::client::ApiRequest;
use serde_json::Value;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// A loopback address nobody listens on right now.
fn free_loopback_addr() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("addr")
}

/// An equality matcher `metric{label="value"}` with a literal value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Matcher {
    metric: String,
    label: String,
    value: String,
}

/// What a PromQL expression reads: its metric names, and its `label="literal"`
/// matchers. Functions, aggregation clauses (`by (…)`, `on (…)`, …), range selectors,
/// strings and numbers are skipped.
#[derive(Debug, Default)]
struct Uses {
    metrics: BTreeSet<String>,
    matchers: BTreeSet<Matcher>,
}

/// Operators, aggregations (which may precede `by (…)` instead of their parenthesis)
/// and the number words.
const KEYWORDS: [&str; 22] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index just past the bracket that closes the one at `i`.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!(
        "unbalanced {open}{close} in {:?}",
        chars.iter().collect::<String>()
    );
}

/// `label="value", label2=~"re"` → the `=` matchers with literal values.
fn parse_matchers(metric: &str, body: &str, uses: &mut Uses) {
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        assert!(
            i < chars.len() && chars[i] == '"',
            "cannot read the matchers {body:?}"
        );
        let end = skip_string(&chars, i);
        let value: String = chars[i + 1..end - 1].iter().collect();
        i = end;
        assert!(!label.is_empty(), "a matcher without a label in {body:?}");
        if op == "=" && !value.contains('$') {
            uses.matchers.insert(Matcher {
                metric: metric.to_string(),
                label,
                value,
            });
        }
    }
}

fn promql_uses(expr: &str, uses: &mut Uses) {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut last_metric: Option<String> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '{' {
            let end = skip_group(&chars, i, '{', '}');
            let body: String = chars[i + 1..end - 1].iter().collect();
            let metric = last_metric
                .take()
                .unwrap_or_else(|| panic!("a selector without a metric name in {expr:?}"));
            parse_matchers(&metric, &body, uses);
            i = end;
        } else if c.is_ascii_digit()
            || (c == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit())
        {
            // A number (1, 0.5, 1e3): never a metric.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            last_metric = None;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = next < chars.len() && chars[next] == '(';
            if LABEL_LISTS.contains(&word.as_str()) {
                if called {
                    i = skip_group(&chars, next, '(', ')');
                }
                last_metric = None;
            } else if called || KEYWORDS.contains(&word.to_lowercase().as_str()) {
                last_metric = None;
            } else {
                uses.metrics.insert(word.clone());
                last_metric = Some(word);
            }
        } else {
            if !c.is_whitespace() {
                last_metric = None;
            }
            i += 1;
        }
    }
}

/// Every `"expr"` of the dashboard, and the metric of each `label_values(METRIC, label)`
/// template variable.
fn dashboard_uses() -> (Uses, usize) {
    let dashboard: Value =
        serde_json::from_str(&read("dashboards/contactq.json")).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "contactq");
    let mut uses = Uses::default();
    let mut exprs = 0;
    fn walk(v: &Value, uses: &mut Uses, exprs: &mut usize) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(e)) => {
                            *exprs += 1;
                            promql_uses(e, uses);
                        }
                        ("definition", Value::String(d)) | ("query", Value::String(d))
                            if d.starts_with("label_values(") =>
                        {
                            let metric = d["label_values(".len()..]
                                .split(',')
                                .next()
                                .expect("label_values(METRIC, label)");
                            promql_uses(metric, uses);
                        }
                        _ => walk(value, uses, exprs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, uses, exprs)),
            _ => {}
        }
    }
    walk(&dashboard, &mut uses, &mut exprs);
    // Every panel has a query, and the instance variable is what they filter on.
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
    }
    (uses, exprs)
}

/// Every rule's `expr`, after checking each rule is complete.
fn alert_uses() -> (Uses, usize) {
    let docs = yaml_rust2::YamlLoader::load_from_str(&read("dashboards/alerts.yml"))
        .expect("alerts.yml is YAML");
    assert_eq!(docs.len(), 1);
    let mut uses = Uses::default();
    let mut rules = 0;
    let groups = docs[0]["groups"].as_vec().expect("groups:");
    for group in groups {
        assert!(group["name"].as_str().is_some(), "a group without name");
        for rule in group["rules"].as_vec().expect("rules:") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no expr"));
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name}: no severity label"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: no summary"
            );
            if let Some(wait) = rule["for"].as_str() {
                assert!(
                    humantime::parse_duration(wait).is_ok(),
                    "{name}: for: {wait:?}"
                );
            }
            rules += 1;
            promql_uses(expr, &mut uses);
        }
    }
    (uses, rules)
}

/// metric name → its series lines, from a Prometheus text exposition.
fn exposition(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut series: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line
            .split(['{', ' '])
            .next()
            .expect("a series line starts with its name");
        series
            .entry(name.to_string())
            .or_default()
            .push(line.to_string());
    }
    series
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.expect("metrics body")
}

fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

#[test]
fn the_promql_reader_finds_metrics_and_matchers() {
    let mut uses = Uses::default();
    promql_uses(
        r#"sum by (instance, le) (rate(a_total{x="1", y=~"$v", z!="2"}[5m] offset 1h)) / on (instance) group_left(le) max(b) > 0.5 and c_seconds{s="ok"} unless 1e3"#,
        &mut uses,
    );
    assert_eq!(
        uses.metrics.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a_total", "b", "c_seconds"]
    );
    let matchers: Vec<String> = uses
        .matchers
        .iter()
        .map(|m| format!("{}:{}={}", m.metric, m.label, m.value))
        .collect();
    assert_eq!(matchers, ["a_total:x=1", "c_seconds:s=ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let (dashboard, panels_exprs) = dashboard_uses();
    let (alerts, rules) = alert_uses();
    assert!(
        panels_exprs >= 9 && rules >= 6,
        "{panels_exprs} exprs, {rules} rules"
    );
    // The operator's questions, each answered by at least one of the two files.
    for needed in [
        "contactq_held",                                    // is a line held, and why
        "contactq_oldest_queued_age_seconds",               // queue age
        "contactq_sent_total",                              // send rate ...
        "contactq_send_delay_seconds",                      // ... vs send_delay
        "contactq_upstream_request_duration_seconds_count", // upstream errors by class
        "contactq_expired_total",                           // expiries
    ] {
        assert!(
            dashboard.metrics.contains(needed) && alerts.metrics.contains(needed),
            "{needed} is missing from the dashboard or the alerts"
        );
    }

    // The real daemon, one card sent through the sandbox so every histogram has a
    // sample, then one scrape.
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
    let text = scrape(metrics).await;
    let exported = exposition(&text);

    for (file, uses) in [("contactq.json", &dashboard), ("alerts.yml", &alerts)] {
        for metric in &uses.metrics {
            assert!(
                exported.contains_key(metric),
                "dashboards/{file} uses {metric}, which /metrics does not have:\n{text}"
            );
        }
        for m in &uses.matchers {
            let wanted = format!("{}=\"{}\"", m.label, m.value);
            assert!(
                exported[&m.metric].iter().any(|l| l.contains(&wanted)),
                "dashboards/{file} selects {}{{{wanted}}}, which /metrics does not have:\n{text}",
                m.metric
            );
        }
    }
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    sandbox.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_held_enqueued_and_send_delay_move_with_the_line() {
    let sandbox = sandbox().await;
    let metrics = free_loopback_addr();
    let mut daemon = TestDaemon::start(
        &sandbox,
        DaemonConfig {
            daemon_extra: format!("metrics_listen = \"{metrics}\""),
            send_delay: "250ms",
            ..DaemonConfig::default()
        },
    )
    .await;
    let before = scrape(metrics).await;
    assert_eq!(value_of(&before, "contactq_paused{instance=\"main\"}"), 0.0);
    assert_eq!(
        value_of(&before, "contactq_enqueued_total{instance=\"main\"}"),
        0.0
    );
    assert_eq!(
        value_of(&before, "contactq_send_delay_seconds{instance=\"main\"}"),
        0.25
    );
    for reason in contactq::metrics::HOLD_REASONS {
        assert_eq!(
            value_of(
                &before,
                &format!("contactq_held{{instance=\"main\",reason=\"{reason}\"}}")
            ),
            0.0,
            "{reason}"
        );
    }

    let (status, body) = daemon
        .request(ApiRequest::post("/v1/instances/main/pause", None))
        .await;
    assert_eq!(status, 200, "{body}");
    daemon.enqueue_ok(&card(1)).await;
    daemon.enqueue_ok(&card(2)).await;
    // An idempotent repeat is no new card.
    let keyed = ApiRequest::post(
        "/v1/instances/main/sendContact",
        Some(card(3).to_string().into_bytes()),
    )
    .with_idempotency_key(Some("dashboards-1".to_string()));
    assert_eq!(daemon.request(keyed.clone()).await.0, 202);
    assert_eq!(daemon.request(keyed).await.0, 200);

    let paused = scrape(metrics).await;
    assert_eq!(value_of(&paused, "contactq_paused{instance=\"main\"}"), 1.0);
    assert_eq!(
        value_of(
            &paused,
            "contactq_held{instance=\"main\",reason=\"paused\"}"
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &paused,
            "contactq_held{instance=\"main\",reason=\"back_off\"}"
        ),
        0.0
    );
    assert_eq!(
        value_of(&paused, "contactq_enqueued_total{instance=\"main\"}"),
        3.0
    );
    assert_eq!(value_of(&paused, "contactq_queued{instance=\"main\"}"), 3.0);

    let (status, body) = daemon
        .request(ApiRequest::post("/v1/instances/main/resume", None))
        .await;
    assert_eq!(status, 200, "{body}");
    let resumed = scrape(metrics).await;
    assert_eq!(
        value_of(&resumed, "contactq_paused{instance=\"main\"}"),
        0.0
    );
    assert_eq!(
        value_of(
            &resumed,
            "contactq_held{instance=\"main\",reason=\"paused\"}"
        ),
        0.0
    );
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    sandbox.shutdown();
}

/// Every dashboard query, with Grafana's variables replaced as Grafana would.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&read("dashboards/contactq.json")).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    exprs
}

#[test]
fn promtool_accepts_the_rules_and_every_dashboard_query() {
    // Prometheus' own parser (promtool, Debian package `prometheus`); under CI=true a
    // missing promtool fails the test: .ci/ship-deps installs it.
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is not installed (CI=true: run .ci/ship-deps)"
        );
        eprintln!("promtool is not installed: skipped");
        return;
    }
    let check = |file: &Path| {
        let out = std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(file)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool check rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/alerts.yml"));
    // The dashboard's queries as recording rules, so promtool parses each one.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: contactq:dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).expect("a JSON string is a YAML string")
        ));
    }
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, rules).expect("write");
    check(&file);
}
