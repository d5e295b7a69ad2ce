//! The socket's connections: accepting at most `daemon.max_connections` at once, and
//! the clocks that keep a slow, idle or hostile client from holding one for ever.
//!
//! A connection is in one of three phases. Waiting for the headers of its first
//! request (from accept) or of a later one (from that request's first byte): closed
//! after [`HEADER_TIMEOUT`]. Serving a request (from its headers until its response
//! body is gone; the request body has [`BODY_TIMEOUT`] to arrive): no clock, so a
//! streaming response can stay open as long as it streams. Idle between keep-alive
//! requests: closed after [`IDLE_TIMEOUT`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::PeerCred;
use crate::shutdown::Shutdown;

/// The headers of a request must arrive within this: on a local socket they take
/// microseconds, so a client still sending them after 10 s is stalled or hostile, and
/// each such connection holds a slot and a file descriptor.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A body must arrive within this of its headers: the largest allowed (16 MiB) takes
/// milliseconds on a Unix socket; an enqueue whose body stalls is answered 400 and its
/// connection closed (nothing of it was stored).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A keep-alive connection with no request in flight is closed after this, so idle
/// clients give their slots back.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At shutdown, how long requests already in flight may take to finish; a connection
/// still open after it is dropped (a request whose body never came was not answered,
/// so nothing of it was acknowledged). Bounds how long one slow client delays SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A listening socket the API (or the metrics endpoint) is served on.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
    /// The peer's credentials (only a Unix socket has them).
    fn peer(io: &Self::Io) -> PeerCred;
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(io, _)| io)
    }
    fn peer(io: &Self::Io) -> PeerCred {
        PeerCred::of(io)
    }
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(io, _)| io)
    }
    fn peer(_: &Self::Io) -> PeerCred {
        PeerCred::default()
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets open requests end
/// within [`SHUTDOWN_GRACE`].
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    max_connections: usize,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    // Why a semaphore: past the limit the daemon stops accepting (new clients wait in
    // the listen backlog) instead of running out of file descriptors, which would
    // also stop the database and the drains from opening theirs.
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.recv() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept_one() => match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    // EMFILE and friends: the pending client stays in the backlog;
                    // pause instead of spinning, and say so now and then.
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(%error, "cannot accept a connection; retrying");
                        last_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let peer = L::peer(&stream);
        let router = router.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, router, stop).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let all_done = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), all_done).await;
    connections.abort_all();
    Ok(())
}

/// One connection until it ends, times out, or shutdown's grace runs out.
async fn serve_connection<S>(stream: S, peer: PeerCred, router: Router, mut stop: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let hyper_service = TowerToHyperService::new(router);
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = RequestGuard::start(service_activity.clone());
        let mut request = request.map(|body| Body::new(Timed::new(body)));
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = hyper::service::Service::call(&hyper_service, request);
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Guarded {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // Our own clocks (above): hyper's header timer would also run while a
        // keep-alive connection idles, closing it after 10 s instead of 60 s.
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    loop {
        let deadline = activity.deadline();
        let changed = activity.changed.notified();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = changed => {}
            _ = sleep_until(deadline) => {
                if activity.deadline().is_some_and(|d| d <= Instant::now()) {
                    // No request is in flight (deadlines exist only then): dropping
                    // the connection loses nothing.
                    tracing::debug!("closing a connection that sent no request in time");
                    return;
                }
            }
            _ = stop.recv() => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

const NONE: u64 = u64::MAX;

/// What a connection's clocks need to know, updated by its reads and its requests.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `opened` when the last response ended (NONE: none yet, so
    /// the first request's headers are due [`HEADER_TIMEOUT`] after the accept).
    idle_since: AtomicU64,
    /// Milliseconds since `opened` of the first byte read while no request was in
    /// flight: a request has begun and its headers are due.
    request_began: AtomicU64,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(NONE),
            request_began: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// When the connection is to be closed if nothing changes; None while serving.
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let began = self.request_began.load(Ordering::SeqCst);
        if began != NONE {
            return Some(self.at(began) + HEADER_TIMEOUT);
        }
        match self.idle_since.load(Ordering::SeqCst) {
            NONE => Some(self.opened + HEADER_TIMEOUT),
            idle => Some(self.at(idle) + IDLE_TIMEOUT),
        }
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.request_began.load(Ordering::Relaxed) == NONE
        {
            self.request_began.store(self.now_ms(), Ordering::SeqCst);
            self.changed.notify_one();
        }
    }
}

/// Held from a request's headers until its response body is dropped (sent, or the
/// connection gone): the connection is not idle meanwhile.
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn start(activity: Arc<Activity>) -> RequestGuard {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.request_began.store(NONE, Ordering::SeqCst);
        activity.changed.notify_one();
        RequestGuard(activity)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
        a.changed.notify_one();
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails if it has not fully arrived [`BODY_TIMEOUT`] after the
/// headers. The timer starts only if the body is not already there.
struct Timed {
    inner: Incoming,
    headers_at: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timed {
    fn new(inner: Incoming) -> Timed {
        Timed {
            inner,
            headers_at: Instant::now(),
            timer: None,
        }
    }
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let due = this.headers_at + BODY_TIMEOUT;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the body did not arrive within {} s of its headers",
                BODY_TIMEOUT.as_secs()
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Guarded {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
