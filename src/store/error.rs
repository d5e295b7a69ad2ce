//! The store's one error type, the same for every backend: what callers must tell apart
//! (full, unavailable, not found, conflict, …), each failure keeping its cause.

use std::sync::Arc;

/// The underlying failure of a [`StoreError`]: the driver's error (or a message), kept
/// whole so `source()` reaches it. Shared, so one failed transaction can answer every
/// job of its group with the same cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// `error` with what was being done when it happened ("path: error"), the error
    /// itself kept as the source.
    pub fn context(
        context: impl Into<String>,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause::new(Context {
            context: context.into(),
            source: Box::new(error),
        })
    }

    /// The driver's error of this cause, if it is one of type `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }

    /// A cause that is only a message (no driver error behind it).
    pub fn msg(message: impl Into<String>) -> Cause {
        let boxed: Box<dyn std::error::Error + Send + Sync> = message.into().into();
        Cause(Arc::from(boxed))
    }
}

/// An error and what was being done when it happened.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
struct Context {
    context: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A store failure the callers must tell apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk or the database's size cap is full: nothing was written.
    #[error("database full: {0}")]
    Full(#[source] Cause),
    /// The database could not be reached or is locked: nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Cause),
    #[error("no such message")]
    NotFound,
    /// The message is not in a state that allows the change.
    #[error("message is {0}")]
    Conflict(String),
    /// Same idempotency key, different body.
    #[error("idempotency key reused with a different body")]
    IdempotencyMismatch,
    /// The database cannot be trusted or written: the daemon must not start on it.
    #[error("{0}")]
    Refused(String),
    #[error("migration failed: {0}")]
    Migrate(#[source] Cause),
    #[error("database error: {0}")]
    Database(#[source] Cause),
    /// The operation does not exist for this backend (a file backup of PostgreSQL):
    /// the text says what to use instead.
    #[error("{0}")]
    Unsupported(String),
}

impl StoreError {
    pub fn full(message: impl Into<String>) -> StoreError {
        StoreError::Full(Cause::msg(message))
    }

    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError::Unavailable(Cause::msg(message))
    }

    pub fn database(message: impl Into<String>) -> StoreError {
        StoreError::Database(Cause::msg(message))
    }

    /// Whether the database itself failed (so the transaction it happened in is rolled
    /// back), rather than the request being refused (not found, conflict, a reused key),
    /// which writes nothing and leaves the transaction's other work alone.
    pub fn is_failure(&self) -> bool {
        match self {
            StoreError::Full(_)
            | StoreError::Unavailable(_)
            | StoreError::Refused(_)
            | StoreError::Migrate(_)
            | StoreError::Database(_) => true,
            StoreError::NotFound
            | StoreError::Conflict(_)
            | StoreError::IdempotencyMismatch
            | StoreError::Unsupported(_) => false,
        }
    }
}

/// sqlx's errors, from whichever backend: PostgreSQL's SQLSTATEs are told apart by
/// [`super::postgres`], SQLite's result codes by [`super::sqlite`].
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let is_pg = e
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
            .is_some();
        if is_pg {
            super::postgres::classify(e)
        } else {
            super::sqlite::classify(e)
        }
    }
}
