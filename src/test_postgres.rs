//! A fresh PostgreSQL database per test, for the store's tests and the black-box tests
//! (docs: README "Tests"). The server comes from `CONTACTQ_TEST_POSTGRES` (a URL such
//! as `postgres://postgres@127.0.0.1:5432/postgres`), else the local server on
//! 127.0.0.1:5432 as `postgres`. Each test gets a database of its own with a random
//! name, dropped when the [`TestDatabase`] is (also when the test panics).
//!
//! A test that cannot reach its server fails under `CI=true` and is skipped, saying
//! so, elsewhere. Not part of the daemon: only tests and benchmarks use it.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// The variable naming the test server.
pub const VARIABLE: &str = "CONTACTQ_TEST_POSTGRES";

/// The server used when the variable is unset.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database made for one test; dropped with this value.
pub struct TestDatabase {
    /// The URL of the test's database.
    pub url: String,
    name: String,
    server: PgConnectOptions,
}

impl TestDatabase {
    /// Creates a fresh database, or None when no server can be reached (after failing
    /// the test under `CI=true`, or printing that it is skipped).
    pub async fn create() -> Option<TestDatabase> {
        let (server_url, from_variable) = match std::env::var(VARIABLE) {
            Ok(url) if !url.is_empty() => (url, true),
            _ => (DEFAULT_SERVER.to_string(), false),
        };
        let unreachable = |why: String| {
            let why = format!(
                "no PostgreSQL server at {server_url} ({}): {why}",
                if from_variable {
                    format!("from {VARIABLE}")
                } else {
                    format!("{VARIABLE} is unset")
                }
            );
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!in_ci, "CI=true and this test cannot run: {why}");
            eprintln!("skipped: {why} (under CI=true this test fails)");
            None
        };
        let server = match PgConnectOptions::from_str(&server_url) {
            Ok(options) => options,
            Err(e) => return unreachable(e.to_string()),
        };
        let mut admin = match server.connect().await {
            Ok(conn) => conn,
            Err(e) => return unreachable(e.to_string()),
        };
        let name = format!(
            "contactq_test_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server_url}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&server_url, &name);
        Some(TestDatabase { url, name, server })
    }
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDatabase({})", self.url)
    }
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // A runtime of its own on a thread of its own: Drop may run inside a runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut admin = server.connect().await.map_err(std::io::Error::other)?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(std::io::Error::other)?;
                let _ = admin.close().await;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}
