//! Everything a client command can fail with, and the exit code each one means.
//!
//! The codes are BSD sysexits (docs/api.md §1); the mapping lives here, in one match, so a
//! new failure cannot be added without deciding what a script will see. [`check`]
//! reads an answer's status once for all commands: 2xx is success, 400/409/413 and an
//! unknown instance are the user's input (65), an unknown message id is 1, 503 is
//! "try again" (75), anything else is unexpected (70).

use std::path::PathBuf;

use crate::protocol::ErrorBody;

use super::client::{ApiResponse, ClientError};

/// EX_USAGE: the command line was wrong.
pub const EX_USAGE: i32 = 64;
/// EX_DATAERR: the daemon (or we, reading the file) rejected the input.
pub const EX_DATAERR: i32 = 65;
/// EX_NOINPUT: the `--file` could not be read.
pub const EX_NOINPUT: i32 = 66;
/// EX_UNAVAILABLE: the daemon is not reachable.
pub const EX_UNAVAILABLE: i32 = 69;
/// EX_SOFTWARE: an answer we did not expect.
pub const EX_SOFTWARE: i32 = 70;
/// EX_IOERR: writing our own output failed.
pub const EX_IOERR: i32 = 74;
/// EX_CANTCREAT: the output file (`backup DEST`) cannot be created.
pub const EX_CANTCREAT: i32 = 73;
/// EX_TEMPFAIL: try again later (503).
pub const EX_TEMPFAIL: i32 = 75;

/// A failed client command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Talking to the socket failed (unreachable, connection lost, time-out).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command line was not enough to act on (e.g. which instance?).
    #[error("{0}")]
    Usage(String),
    /// `--file` could not be read.
    #[error("cannot read {path}: {source}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input file is not JSON we can split into cards.
    #[error("{0}")]
    BadInput(String),
    /// 400 / 409 / 413, or a 404 naming an unknown instance: the daemon said no.
    #[error("{error}: {details}")]
    Rejected { error: String, details: String },
    /// `show` / `cancel` / `retry` of an id the daemon does not know.
    #[error("no such message: {0}")]
    NoSuchMessage(String),
    /// The start of an id that several messages share.
    #[error("'{prefix}' is the start of several message ids: {}{}; give more of it", candidates.join(", "), if *more { ", …" } else { "" })]
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
        more: bool,
    },
    /// 503: the daemon is busy or its disk is full; nothing was written.
    #[error("{error}: {details}")]
    Unavailable { error: String, details: String },
    /// Writing to stdout failed (a closed pipe is handled quietly by `run_client`).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// `backup DEST`: DEST exists or cannot be written.
    #[error("cannot create {path}: {reason}")]
    CannotCreate { path: PathBuf, reason: String },
    /// `restore` while a daemon holds the database.
    #[error("{0}")]
    DaemonRunning(String),
    /// Any other answer: a status we do not expect, or a body we cannot read.
    #[error("unexpected answer from the daemon (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Client(ClientError::Unreachable { .. })
            | CliError::Client(ClientError::Connect { .. }) => EX_UNAVAILABLE,
            CliError::Client(ClientError::TimedOut { .. }) => EX_TEMPFAIL,
            CliError::Client(ClientError::Http(_)) => EX_SOFTWARE,
            CliError::Client(ClientError::Write(_)) => EX_IOERR,
            CliError::CannotCreate { .. } => EX_CANTCREAT,
            CliError::DaemonRunning(_) => EX_TEMPFAIL,
            CliError::Client(ClientError::Request(_)) | CliError::Usage(_) => EX_USAGE,
            CliError::Input { .. } => EX_NOINPUT,
            CliError::BadInput(_) | CliError::Rejected { .. } => EX_DATAERR,
            CliError::NoSuchMessage(_) => 1,
            CliError::Ambiguous { .. } => EX_USAGE,
            CliError::Unavailable { .. } => EX_TEMPFAIL,
            CliError::Unexpected { .. } => EX_SOFTWARE,
            CliError::Output(_) => EX_IOERR,
        }
    }
}

/// What a 404 means for the request at hand.
#[derive(Debug, Clone, Copy)]
pub enum NotFound<'a> {
    /// The message id in the path is unknown: exit 1.
    Message(&'a str),
    /// The instance is unknown (or the route is): the input was rejected, exit 65.
    Instance,
}

/// Turns a non-success answer into the error that carries its exit code.
pub fn check(response: ApiResponse, not_found: NotFound<'_>) -> Result<ApiResponse, CliError> {
    if response.is_success() {
        return Ok(response);
    }
    let text = String::from_utf8_lossy(&response.body).trim().to_string();
    let (error, details) = match serde_json::from_slice::<ErrorBody>(&response.body) {
        Ok(body) => (body.error, body.details),
        Err(_) => (format!("HTTP {}", response.status), text.clone()),
    };
    // "Validation failed. Details: X" with details X would print X twice.
    let error = match error.split_once(". Details: ") {
        Some((head, tail)) if tail == details => head.to_string(),
        _ => error,
    };
    Err(match (response.status, not_found) {
        (404, NotFound::Message(id)) => CliError::NoSuchMessage(id.to_string()),
        (400 | 409 | 413 | 404, _) => CliError::Rejected { error, details },
        (503, _) => CliError::Unavailable { error, details },
        (status, _) => CliError::Unexpected {
            status,
            body: super::table::truncate(&text, 300),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_sysexits_code() {
        let rejected = CliError::Rejected {
            error: "validation failed".into(),
            details: "x".into(),
        };
        assert_eq!(rejected.exit_code(), 65);
        assert_eq!(rejected.to_string(), "validation failed: x");
        assert_eq!(CliError::NoSuchMessage("01J".into()).exit_code(), 1);
        assert_eq!(
            CliError::NoSuchMessage("01J".into()).to_string(),
            "no such message: 01J"
        );
        let busy = CliError::Unavailable {
            error: "busy".into(),
            details: "disk full".into(),
        };
        assert_eq!(busy.exit_code(), 75);
        assert_eq!(CliError::Usage("which instance?".into()).exit_code(), 64);
        assert_eq!(
            CliError::Unexpected {
                status: 500,
                body: String::new()
            }
            .exit_code(),
            70
        );
        let gone = ClientError::Unreachable {
            path: "/tmp/x.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(CliError::from(gone).exit_code(), 69);
    }

    fn answer(status: u16, body: &str) -> ApiResponse {
        ApiResponse {
            status,
            body: body.to_string().into(),
        }
    }

    #[test]
    fn each_answer_status_means_one_exit_code() {
        let body = r#"{"error":"conflict","details":"message is sent"}"#;
        let code = |status, not_found| {
            check(answer(status, body), not_found)
                .unwrap_err()
                .exit_code()
        };
        assert_eq!(code(409, NotFound::Message("01J")), 65);
        assert_eq!(code(413, NotFound::Instance), 65);
        assert_eq!(code(404, NotFound::Instance), 65);
        assert_eq!(code(404, NotFound::Message("01J")), 1);
        assert_eq!(code(503, NotFound::Instance), 75);
        assert_eq!(code(500, NotFound::Instance), 70);
        assert_eq!(code(422, NotFound::Instance), 70);
        assert!(check(answer(202, "{}"), NotFound::Instance).is_ok());
        let err = check(answer(409, body), NotFound::Instance).unwrap_err();
        assert_eq!(err.to_string(), "conflict: message is sent");
        let err = check(answer(400, "plain words"), NotFound::Instance).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 400: plain words");
    }
}
