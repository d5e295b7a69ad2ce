//! PostgreSQL's errors as the store's: the SQLSTATE class decides (disk full,
//! unavailable, other), the driver's error is kept as the cause; and which failures
//! only rolled a transaction back and may be run again (a deadlock, a serialization
//! failure).

use sqlx::postgres::PgDatabaseError;

use crate::store::error::{Cause, StoreError};

/// SQLSTATEs after which the transaction was rolled back whole and running it again is
/// safe: `serialization_failure` and `deadlock_detected`.
const RETRYABLE: [&str; 2] = ["40001", "40P01"];

/// sqlx's error on a PostgreSQL connection as the store's (called by the one
/// `From<sqlx::Error>` in `crate::store::error`).
pub fn classify(e: sqlx::Error) -> StoreError {
    let code = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
        .map(|d| d.code().to_string());
    match code.as_deref() {
        // disk_full, and out of memory / too many connections: nothing was written.
        Some("53100") => StoreError::Full(Cause::new(e)),
        Some(c)
            if c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "25006"
                || RETRYABLE.contains(&c) =>
        {
            StoreError::Unavailable(Cause::new(e))
        }
        Some(_) => StoreError::Database(Cause::new(e)),
        None => match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(Cause::new(e)),
            other => StoreError::Database(Cause::new(other)),
        },
    }
}

/// Whether `e` rolled its transaction back and the transaction may simply run again.
pub(super) fn retryable(e: &StoreError) -> bool {
    let StoreError::Unavailable(cause) = e else {
        return false;
    };
    cause
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
        .is_some_and(|d| RETRYABLE.contains(&d.code()))
}
