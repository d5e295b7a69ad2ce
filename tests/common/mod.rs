//! Shared set-up for the black-box tests: a real `contactq daemon` process on a Unix
//! socket and SQLite file in a temp directory (or a fresh PostgreSQL database: see
//! [`on_postgres`] and [`on_both_backends!`]), talking to the in-process sandbox over
//! loopback HTTP.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use contactq::cli::client::{ApiRequest, Client};
use contactq::sandbox::{Sandbox, SandboxOptions};
use serde_json::{json, Value};

pub const TOKEN: &str = "tok3n-SECRET-4242";
pub const ID_INSTANCE: &str = "1101000001";

/// Knobs of the daemon's configuration a test may shorten.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub send_delay: &'static str,
    pub max_age: &'static str,
    pub state_poll: &'static str,
    pub retry_initial: &'static str,
    pub retry_max: &'static str,
    pub reconcile_lag: &'static str,
    pub quota_retry: &'static str,
    pub keep_done: &'static str,
    pub request_timeout: &'static str,
    /// Extra lines for the `[daemon]` table.
    pub daemon_extra: String,
    /// Extra lines for the `[instances.main]` table.
    pub instance_extra: String,
    /// Extra instances: (name, id_instance).
    pub more_instances: Vec<(&'static str, &'static str)>,
    /// The database file, when not in the daemon's temp directory.
    pub database: Option<PathBuf>,
    /// Tables appended after the instances (`[hooks.NAME]` …).
    pub tables: String,
    /// Extra lines for the `[queue]` table (`delivery_poll` …).
    pub queue_extra: String,
    /// A PostgreSQL database to share with other daemons (see [`TestPostgres`]); by
    /// default the one of [`on_postgres`], if the test runs under it.
    pub postgres: Option<TestPostgres>,
}

/// A test's PostgreSQL database, shared by the daemons that name it; dropped (with
/// `DROP DATABASE`) once the last of them is.
pub type TestPostgres = std::sync::Arc<contactq::test_postgres::TestDatabase>;

tokio::task_local! {
    /// The database of a test running under [`on_postgres`].
    static POSTGRES: TestPostgres;
}

/// A fresh PostgreSQL database for one test, or None when the server cannot be reached
/// (the test then fails under `CI=true`, and is skipped, saying so, elsewhere).
pub async fn test_postgres() -> Option<TestPostgres> {
    contactq::test_postgres::TestDatabase::create()
        .await
        .map(std::sync::Arc::new)
}

/// Runs a test body with every [`TestDaemon`] it starts on one fresh PostgreSQL
/// database instead of a SQLite file.
pub async fn on_postgres<F: std::future::Future<Output = ()>>(body: F) {
    let Some(db) = test_postgres().await else {
        return;
    };
    POSTGRES.scope(db, body).await;
}

/// Runs each listed test body (an `async fn NAME()`) as two tests, `NAME::sqlite` and
/// `NAME::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::on_postgres(super::$name()).await
            }
        }
    )*};
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            send_delay: "100ms",
            max_age: "24h",
            state_poll: "1s",
            retry_initial: "200ms",
            retry_max: "1s",
            reconcile_lag: "2s",
            quota_retry: "1h",
            keep_done: "30d",
            request_timeout: "5s",
            daemon_extra: String::new(),
            instance_extra: String::new(),
            more_instances: Vec::new(),
            database: None,
            tables: String::new(),
            postgres: None,
            queue_extra: String::new(),
        }
    }
}

pub async fn sandbox() -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxOptions::default())
        .await
        .expect("sandbox starts")
}

pub async fn sandbox_with(options: SandboxOptions) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("sandbox starts")
}

/// A daemon process and its files.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub database: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// The PostgreSQL database, if the daemon runs on one: kept until the daemon is
    /// gone (fields drop after `Drop::drop` killed it).
    pub postgres: Option<TestPostgres>,
}

impl TestDaemon {
    pub async fn start(sandbox: &Sandbox, config: DaemonConfig) -> TestDaemon {
        Self::start_with_env(sandbox, config, &[]).await
    }

    pub async fn start_with_env(
        sandbox: &Sandbox,
        config: DaemonConfig,
        env: &[(&str, &str)],
    ) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("contactq.sock");
        let database = config
            .database
            .clone()
            .unwrap_or_else(|| dir.path().join("queue.db"));
        let postgres = config
            .postgres
            .clone()
            .or_else(|| POSTGRES.try_with(|db| db.clone()).ok())
            .filter(|_| config.database.is_none());
        let database_key = match &postgres {
            Some(db) => db.url.clone(),
            None => database.display().to_string(),
        };
        let config_path = dir.path().join("contactq.toml");
        // On PostgreSQL a short drain lease, so a killed drainer is replaced quickly.
        let extra = if postgres.is_some() && !config.daemon_extra.contains("lease =") {
            format!("{}\nlease = \"3s\"", config.daemon_extra)
        } else {
            config.daemon_extra.clone()
        };
        let mut text = format!(
            "[daemon]\nsocket = {socket:?}\ndatabase = {database_key:?}\n{extra}\n\
             [queue]\nmax_age = {max_age:?}\nstate_poll = {poll:?}\nretry_initial = {ri:?}\n\
             retry_max = {rm:?}\nreconcile_lag = {lag:?}\nquota_retry = {quota:?}\n\
             keep_done = {keep:?}\nrequest_timeout = {timeout:?}\n{queue_extra}\n\n\
             [instances.main]\napi_url = {url:?}\nid_instance = {ID_INSTANCE:?}\n\
             api_token = {TOKEN:?}\nsend_delay = {delay:?}\n{instance_extra}\n",
            extra = extra,
            instance_extra = config.instance_extra,
            queue_extra = config.queue_extra,
            max_age = config.max_age,
            poll = config.state_poll,
            ri = config.retry_initial,
            rm = config.retry_max,
            lag = config.reconcile_lag,
            quota = config.quota_retry,
            keep = config.keep_done,
            timeout = config.request_timeout,
            url = sandbox.url(),
            delay = config.send_delay,
        );
        for (name, id) in &config.more_instances {
            text.push_str(&format!(
                "\n[instances.{name}]\napi_url = {url:?}\nid_instance = {id:?}\napi_token = {TOKEN:?}\nsend_delay = {delay:?}\n",
                url = sandbox.url(),
                delay = config.send_delay
            ));
        }
        text.push('\n');
        text.push_str(&config.tables);
        std::fs::write(&config_path, text).unwrap();
        let mut daemon = TestDaemon {
            log: dir.path().join("daemon.log"),
            socket,
            database,
            config: config_path,
            dir,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            postgres,
        };
        daemon.spawn().await;
        daemon
    }

    /// A `contactq` command with this daemon's config and socket.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket);
        cmd.env_remove("CONTACTQ_CONFIG")
            .env_remove("CONTACTQ_SOCKET");
        cmd
    }

    /// `contactq` with this daemon's config only: the daemon refuses `--socket` (a
    /// client option), its socket is `daemon.socket` in the config.
    pub fn daemon_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contactq"));
        cmd.arg("--config").arg(&self.config);
        cmd.env_remove("CONTACTQ_CONFIG")
            .env_remove("CONTACTQ_SOCKET");
        cmd
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = self.daemon_command();
        cmd.arg("daemon").stdout(Stdio::null()).stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("daemon starts"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client().send(ApiRequest::get("/v1/health")).await {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({status}): {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// The daemon's log so far. Panics if it cannot be read, so "not in the logs"
    /// checks cannot pass on a missing file.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| panic!("cannot read the daemon log {}: {e}", self.log.display()))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGKILL, as a crash or power loss would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn().await;
    }

    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    pub async fn request(&self, request: ApiRequest) -> (u16, Value) {
        let r = self.client().send(request).await.expect("daemon answers");
        let body = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or(Value::Null)
        };
        (r.status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(ApiRequest::get(path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(ApiRequest::post(path, Some(body.to_string().into_bytes())))
            .await
    }

    pub async fn enqueue(&self, body: &Value) -> (u16, Value) {
        self.post("/v1/instances/main/sendContact", body).await
    }

    /// Enqueues a valid card and returns its id.
    pub async fn enqueue_ok(&self, body: &Value) -> String {
        let (status, answer) = self.enqueue(body).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    pub async fn message(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The first page of messages (up to 1000). Panics unless the daemon answers 200
    /// with a `messages` array, so "nothing stored" checks cannot pass on an error.
    pub async fn all_messages(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/messages?limit=1000").await;
        messages_of(status, &body)
    }

    /// Every message, following the `next` cursor (panics on any error answer).
    pub async fn all_messages_paged(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = "/v1/messages?limit=1000".to_string();
        loop {
            let (status, body) = self.get(&path).await;
            out.extend(messages_of(status, &body));
            match body["next"].as_str() {
                Some(next) => path = format!("/v1/messages?limit=1000&before={next}"),
                None => return out,
            }
        }
    }

    /// The first instance's status. Panics unless the daemon answers 200 with it.
    /// Every event after `after` (`GET /v1/events`, not following: up to the last
    /// committed), one JSON value per NDJSON line.
    pub async fn events_after(&self, after: i64) -> Vec<Value> {
        let r = self
            .client()
            .send(ApiRequest::get(format!("/v1/events?after={after}")))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        String::from_utf8(r.body.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub async fn status(&self) -> Value {
        let (status, body) = self.get("/v1/status").await;
        assert_eq!(status, 200, "GET /v1/status: {body}");
        let first = body["instances"][0].clone();
        assert!(first.is_object(), "GET /v1/status has no instance: {body}");
        first
    }

    /// Waits until the message reaches `state`, or panics with its last view.
    pub async fn wait_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let m = self.message(id).await;
            if m["state"] == state {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not {state} in {within:?}: {m}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `messages` array of a list answer; panics on anything else.
fn messages_of(status: u16, body: &Value) -> Vec<Value> {
    assert_eq!(status, 200, "GET /v1/messages: {body}");
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/messages has no messages array: {body}"))
        .clone()
}

/// Whether the tests run under CI (`CI=true`), where no test may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test that cannot run here: under `CI=true` it fails with `why`; elsewhere it
/// prints that it is skipped (the caller then returns).
pub fn skip_or_fail(why: &str) {
    assert!(!in_ci(), "CI=true and this test cannot run: {why}");
    eprintln!("skipped: {why} (under CI=true this test fails)");
}

/// A valid card; `n` makes it distinguishable (first name and phone).
pub fn card(n: u64) -> Value {
    json!({"chatId": "11001234567@c.us",
           "contact": {"phoneContact": 79_000_000_000u64 + n, "firstName": format!("card-{n}")}})
}

/// The first names (`card-N`) of the cards the sandbox accepted, in arrival order.
pub fn received_names(sb: &Sandbox) -> Vec<String> {
    sb.received(ID_INSTANCE)
        .iter()
        .map(|r| r.body["contact"]["firstName"].as_str().unwrap().to_string())
        .collect()
}

/// Every card the sandbox accepted arrived once, and its stored message is `sent` with
/// the idMessage the sandbox gave it.
pub fn assert_received_once_and_recorded(sb: &Sandbox, stored: &[Value]) {
    let mut seen = std::collections::HashSet::new();
    for r in sb.received(ID_INSTANCE) {
        let name = r.body["contact"]["firstName"].as_str().unwrap().to_string();
        assert!(seen.insert(name.clone()), "{name} received twice");
        let m = stored
            .iter()
            .find(|m| m["contact"]["firstName"] == name.as_str())
            .unwrap_or_else(|| panic!("received card {name} is not stored"));
        assert_eq!(m["state"], "sent", "{m}");
        assert_eq!(m["idMessage"], json!(r.id_message), "{name}");
    }
}

/// Polls `check` until it holds.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestDaemon {
    /// Restarts the daemon talking to `api_url` instead of the sandbox `from` (for a
    /// hand-made loopback API).
    pub async fn repoint(&mut self, from: &Sandbox, api_url: &str) {
        self.stop().await;
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace(&from.url(), api_url);
        std::fs::write(&self.config, text).unwrap();
        self.start_again().await;
    }
}
