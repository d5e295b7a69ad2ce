//! The local API: HTTP/1.1 + JSON on the Unix socket (docs/api.md §3).
//!
//! One file per route group; [`error::ApiError`] is the one mapping to status codes.
//! The API only talks to the store and rings the drains' bells; it never calls the
//! Green API.

mod backup;
mod bulk;
mod conn;
mod consumers;
mod enqueue;
mod error;
mod events;
mod instances;
mod messages;
mod params;
mod view;

pub(crate) use view::event_view;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::{UnixListener, UnixStream};

pub use conn::serve as serve_router;
pub use error::ApiError;

use crate::config::Settings;
use crate::lines::Lines;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub lines: Arc<Lines>,
    pub started: Instant,
    /// Ends the follow streams of `GET /v1/events` at shutdown.
    pub shutdown: Shutdown,
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

impl PeerCred {
    fn of(stream: &UnixStream) -> Self {
        match stream.peer_cred() {
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
            post(enqueue::send_contact)
                .layer(DefaultBodyLimit::max(enqueue::MAX_BODY))
                .layer(middleware::from_fn_with_state(state.clone(), caller_first)),
        )
        .route(
            "/v1/instances/{name}/sendContact:batch",
            post(enqueue::send_contact_batch)
                .layer(DefaultBodyLimit::max(enqueue::MAX_BATCH_BODY))
                .layer(middleware::from_fn_with_state(state.clone(), caller_first)),
        )
        .route("/v1/instances/{name}/pause", post(instances::pause))
        .route("/v1/instances/{name}/resume", post(instances::resume))
        .route("/v1/instances/{name}/flush", post(instances::flush))
        .route("/v1/messages", get(messages::list))
        .route("/v1/messages:cancel", post(bulk::cancel))
        .route("/v1/messages:retry", post(bulk::retry))
        .route(
            "/v1/messages/{id}",
            get(messages::get).delete(messages::cancel),
        )
        .route("/v1/messages/{id}/retry", post(messages::retry))
        .route("/v1/status", get(instances::status))
        .route("/v1/events", get(events::events))
        .route("/v1/consumers", get(consumers::list))
        .route(
            "/v1/consumers/{name}",
            get(consumers::get)
                .put(consumers::put)
                .delete(consumers::delete),
        )
        .route("/v1/consumers/{name}/failure", post(consumers::failure))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/health", get(instances::health))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::WrongMethod })
        .with_state(state)
}

/// The caller's uid is checked before a byte of an enqueue's body is read: a caller
/// who may not enqueue cannot make the daemon take in 16 MiB first.
async fn caller_first(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<PeerCred>>()
        .map(|c| c.0)
        .unwrap_or_default();
    match state.authorize(&peer) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Serves the API on `listener` until `shutdown` fires, then lets open requests end
/// (within [`conn::SHUTDOWN_GRACE`]). At most `max_connections` are served at once.
pub async fn serve(
    listener: UnixListener,
    state: AppState,
    max_connections: usize,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    conn::serve(listener, router(state), max_connections, shutdown).await
}
