//! `daemon.database`: a SQLite file or a PostgreSQL URL (docs/api.md §2, §10), and the
//! PostgreSQL password, which never prints.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{key_error, ApiToken, ConfigError};

/// Where the queue lives (`daemon.database`): a SQLite file (the default, one daemon)
/// or a PostgreSQL database that several daemons share (docs/api.md §10).
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(PostgresTarget),
}

impl Database {
    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl fmt::Display for Database {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(target) => f.write_str(&target.redacted()),
        }
    }
}

/// Whether `daemon.database` (or a command's argument) names a PostgreSQL database.
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// A `postgres://` URL and the password from `daemon.database_password_file`, if any.
/// The password never prints (Debug and Display hide it, in the URL too).
#[derive(Clone, PartialEq)]
pub struct PostgresTarget {
    url: String,
    password: Option<ApiToken>,
}

impl PostgresTarget {
    /// Parses `url` (the error names `key`); `password` overrides the URL's.
    pub fn parse(key: &str, url: &str, password: Option<String>) -> Result<Self, ConfigError> {
        let target = PostgresTarget {
            url: url.to_string(),
            password: password.map(ApiToken::new),
        };
        target.connect_options().map_err(|e| {
            key_error(
                key,
                format!("'{}' is not a PostgreSQL URL: {e}", target.redacted()),
            )
        })?;
        Ok(target)
    }

    /// The connection options: the URL's, then the usual `PG*` variables and
    /// `~/.pgpass` for what it leaves out (libpq's conventions), then the password file.
    pub fn connect_options(&self) -> Result<sqlx::postgres::PgConnectOptions, sqlx::Error> {
        use std::str::FromStr;
        let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)?;
        Ok(match &self.password {
            Some(password) => options.password(password.expose()),
            None => options,
        })
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                let hidden = if userinfo.contains(':') { ":***" } else { "" };
                format!("{scheme}://{user}{hidden}@{host}{tail}")
            }
            None => self.url.clone(),
        }
    }
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
