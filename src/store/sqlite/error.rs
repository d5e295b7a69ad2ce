//! SQLite's errors as the store's: the primary result code decides the class (full,
//! unavailable, other), and the driver's error is kept as the cause.

use crate::store::error::{Cause, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let code = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
            _ => None,
        };
        match code {
            Some(ErrorCode::DiskFull) => StoreError::Full(Cause::new(e)),
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen,
            ) => StoreError::Unavailable(Cause::new(e)),
            _ => StoreError::Database(Cause::new(e)),
        }
    }
}

/// sqlx's error on a SQLite connection as the store's (called by the one
/// `From<sqlx::Error>` in `crate::store::error`).
pub fn classify(e: sqlx::Error) -> StoreError {
    {
        if let sqlx::Error::Database(db) = &e {
            // SQLite primary result codes: 13 SQLITE_FULL, 5 BUSY, 6 LOCKED, 10 IOERR,
            // 14 CANTOPEN, 8 READONLY.
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            return match code {
                Some(13) => StoreError::Full(Cause::new(e)),
                Some(5 | 6 | 8 | 10 | 14) => StoreError::Unavailable(Cause::new(e)),
                _ => StoreError::Database(Cause::new(e)),
            };
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(Cause::new(e))
            }
            other => StoreError::Database(Cause::new(other)),
        }
    }
}
