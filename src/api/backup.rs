//! `GET /v1/backup`: a consistent copy of the database, streamed to the client.
//!
//! The daemon takes the copy (`VACUUM INTO` a file beside the database, which only it
//! may write under systemd's sandboxing), unlinks the file at once and streams it from
//! the open descriptor, so a client that hangs up leaves nothing behind. The client
//! (`contactq backup DEST`) writes DEST with its own rights.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;

use super::error::ApiError;
use super::AppState;
use crate::store::StoreError;

/// The size of one streamed chunk.
const CHUNK: usize = 256 * 1024;

pub async fn backup(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(database) = state.settings.daemon.database.sqlite_path() else {
        // PostgreSQL: the store says what to use instead.
        return Err(state
            .store
            .backup_into(std::path::Path::new(""))
            .await
            .err()
            .map_or_else(
                || ApiError::Internal("no backup for this database".into()),
                ApiError::from,
            ));
    };
    let dir = database
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let copy = dir.join(format!(".contactq-backup-{}.db", ulid::Ulid::new()));
    let taken = state.store.backup_into(&copy).await;
    let opened = match taken {
        Ok(()) => tokio::fs::File::open(&copy).await,
        Err(e) => {
            let _ = tokio::fs::remove_file(&copy).await;
            return Err(e.into());
        }
    };
    // Unlinked at once: the open descriptor keeps the data until the stream ends.
    let _ = tokio::fs::remove_file(&copy).await;
    let unavailable =
        |e: std::io::Error| ApiError::from(StoreError::unavailable(format!("backup copy: {e}")));
    let file = opened.map_err(unavailable)?;
    let len = file.metadata().await.map_err(unavailable)?.len();
    tracing::info!(bytes = len, "backup taken");
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
