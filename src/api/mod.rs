//! The local API: HTTP/1.1 + JSON on the Unix socket (docs/api.md §3).
//!
//! One file per route group; [`error::ApiError`] is the one mapping to status codes.
//! The API only talks to the store and rings the drains' bells; it never calls the
//! Green API.

mod backup;
mod enqueue;
mod error;
mod instances;
mod messages;
mod view;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::connect_info::Connected;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::Router;
use tokio::net::UnixListener;

pub use error::ApiError;
pub use view::message_view;

use crate::config::Settings;
use crate::lines::Lines;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub lines: Arc<Lines>,
    pub started: Instant,
}

impl AppState {
    /// `allowed_uids` / `allowed_gids`: when either is set, only those may enqueue.
    fn authorize(&self, peer: &PeerCred) -> Result<(), ApiError> {
        let d = &self.settings.daemon;
        if d.allowed_uids.is_empty() && d.allowed_gids.is_empty() {
            return Ok(());
        }
        let uid_ok = peer.uid.is_some_and(|u| d.allowed_uids.contains(&u));
        let gid_ok = peer.gid.is_some_and(|g| d.allowed_gids.contains(&g));
        if uid_ok || gid_ok {
            Ok(())
        } else {
            Err(ApiError::Forbidden(peer.uid.unwrap_or(u32::MAX)))
        }
    }
}

/// The peer's credentials (SO_PEERCRED) of a socket connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerCred {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(cred) => PeerCred {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
            },
            Err(_) => PeerCred::default(),
        }
    }
}

/// The routes of docs/api.md §3.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/instances/{name}/sendContact",
            post(enqueue::send_contact).layer(DefaultBodyLimit::max(enqueue::MAX_BODY)),
        )
        .route(
            "/v1/instances/{name}/sendContact:batch",
            post(enqueue::send_contact_batch).layer(DefaultBodyLimit::max(enqueue::MAX_BATCH_BODY)),
        )
        .route("/v1/instances/{name}/pause", post(instances::pause))
        .route("/v1/instances/{name}/resume", post(instances::resume))
        .route("/v1/instances/{name}/flush", post(instances::flush))
        .route("/v1/messages", get(messages::list))
        .route(
            "/v1/messages/{id}",
            get(messages::get).delete(messages::cancel),
        )
        .route("/v1/messages/{id}/retry", post(messages::retry))
        .route("/v1/status", get(instances::status))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/health", get(instances::health))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::WrongMethod })
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets open requests end.
pub async fn serve(
    listener: UnixListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<PeerCred>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
