//! `contactq daemon`: wires the store, the drains, the upkeep timer, the socket API,
//! metrics and systemd notification together, and takes them down in order on
//! SIGTERM/SIGINT (stop accepting, finish the in-flight sends, exit 0).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::task::JoinSet;

use crate::api::{self, AppState};
use crate::clock::duration_ms;
use crate::config::Settings;
use crate::drain::Drain;
use crate::lines::Lines;
use crate::shutdown::{self, Shutdown};
use crate::store::{guard, Store, StoreError, StoreOptions};
use crate::upstream::GreenApi;

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the database or serves the socket.
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The configuration names something the daemon must not use as it is (a socket
    /// path that is not a socket, a damaged or unwritable database): exit 78.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(why) => DaemonError::Refused(why),
            other => DaemonError::Store(other),
        }
    }
}

/// How long shutdown waits for an in-flight send before leaving it `sending` (it is
/// then reconciled at the next start).
fn drain_grace(settings: &Settings) -> Duration {
    settings.queue.request_timeout + Duration::from_secs(5)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let (trigger, shutdown) = shutdown::channel();
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        trigger.fire();
    });
    let result = run_until(settings, shutdown, |_| ()).await;
    signals.abort();
    result
}

/// Runs the daemon until `shutdown` fires; `ready` is called with the socket path once
/// it listens (tests and `demo` start the daemon in-process this way).
pub async fn run_until(
    settings: Settings,
    mut shutdown: Shutdown,
    ready: impl FnOnce(&Path),
) -> Result<(), DaemonError> {
    let settings = Arc::new(settings);
    // One daemon per SQLite file; a PostgreSQL database is shared (docs/api.md §10).
    let _lock = match settings.daemon.database.sqlite_path() {
        Some(path) => Some(lock_database(path)?),
        None => None,
    };
    let store = Store::open_database(
        &settings.daemon.database,
        &settings.daemon.node,
        StoreOptions {
            max_page_count: settings.daemon.max_database_pages,
            lease: settings.daemon.lease,
            ..StoreOptions::default()
        },
    )
    .await?;
    store
        .check_record(&crate::sharing::record_of(&settings), false)
        .await?;
    let (listener, socket_is_ours) =
        bind_socket(&settings.daemon.socket, settings.daemon.socket_mode)?;
    let lines = Arc::new(Lines::new(
        settings
            .instances
            .values()
            .map(|i| (i.name.as_str(), duration_ms(i.send_delay) as u64)),
    ));
    if let Some(addr) = settings.daemon.metrics_listen {
        let hooks = settings.hooks.keys().cloned().collect();
        crate::metrics::serve(addr, store.clone(), lines.clone(), hooks, shutdown.clone()).await?;
    }

    // A flush given to another daemon sharing the database reaches this one's drain.
    let flushed = lines.clone();
    store.on_forwarded_flush(move |instance| {
        if let Some(line) = flushed.get(instance) {
            line.request_flush();
        }
    });
    let http = GreenApi::http_client(settings.queue.request_timeout)
        .map_err(|e| std::io::Error::other(e.0))?;
    // One clock for every drain and the expiry: waits on the monotonic clock.
    let clock = crate::clock::system();
    let mut drains = JoinSet::new();
    for instance in settings.instances.values() {
        let line = lines
            .get(&instance.name)
            .cloned()
            .expect("a line per instance");
        let drain = Drain::new(instance, &settings.queue, store.clone(), http.clone(), line)
            .with_clock(clock.clone());
        drains.spawn(drain.run(shutdown.clone()));
    }
    // A new hook starts at the newest event as the daemon starts, before the socket
    // serves: no card enqueued through it is missed while its task gets going.
    for name in settings.hooks.keys() {
        crate::hooks::register(name, &store)
            .await
            .map_err(std::io::Error::other)?;
    }
    // The hooks run apart from the drains: none of them can hold a line.
    let mut hooks = crate::hooks::spawn_all(
        settings.hooks.values().cloned(),
        crate::hooks::Secrets::of(&settings),
        &store,
        &shutdown,
    )
    .map_err(std::io::Error::other)?;
    let expiry = crate::clock::ExpiryClock::new(clock);
    let upkeep = tokio::spawn(upkeep(
        store.clone(),
        settings.clone(),
        shutdown.clone(),
        expiry,
    ));
    let state = AppState {
        store: store.clone(),
        settings: settings.clone(),
        lines: lines.clone(),
        started: Instant::now(),
        shutdown: shutdown.clone(),
    };
    // A drain turns at least every 15 s, but one turn may wait out a whole request.
    let stale_after = settings.queue.request_timeout * 2 + Duration::from_secs(60);
    let watchdog = tokio::spawn(watchdog(
        store.clone(),
        lines.clone(),
        stale_after,
        shutdown.clone(),
    ));
    let mut stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.recv().await;
        crate::notify::notify("STOPPING=1\nSTATUS=finishing in-flight sends");
    });
    tracing::info!(socket = %settings.daemon.socket.display(), database = %settings.daemon.database, node = %settings.daemon.node,
        instances = settings.instances.len(), "contactq daemon listening");
    crate::notify::notify("READY=1\nSTATUS=accepting cards");
    ready(&settings.daemon.socket);

    let max_connections = fit_open_files(settings.daemon.max_connections);
    api::serve(listener, state, max_connections, shutdown.clone()).await?;
    shutdown.recv().await;
    tracing::info!("shutting down: no longer accepting; waiting for in-flight sends");
    let grace = drain_grace(&settings);
    if tokio::time::timeout(grace, async { while drains.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            "an in-flight send did not finish in time; it will be reconciled at the next start"
        );
        drains.abort_all();
    }
    upkeep.abort();
    watchdog.abort();
    // Each hook stops at the shutdown signal (a delivery under way is not finished: its
    // event goes out again after the restart); none is waited for longer than this.
    if tokio::time::timeout(Duration::from_secs(2), async {
        while hooks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        hooks.abort_all();
    }
    if socket_is_ours {
        // A socket passed by systemd stays: contactq.socket keeps listening on it.
        let _ = std::fs::remove_file(&settings.daemon.socket);
    }
    store.close().await;
    tracing::info!("contactq daemon stopped");
    Ok(())
}

/// File descriptors kept for everything but client connections: the database and its
/// WAL/shm per connection, the lock, the listener, upstream HTTP, metrics, logs.
const RESERVED_FDS: u64 = 256;

/// Raises this process's open-files soft limit (usually 1024) to fit
/// `max_connections` connections, up to the hard limit.
/// Returns how many connections fit: fewer than asked only if the limit could not go up.
fn fit_open_files(max_connections: usize) -> usize {
    let needed = max_connections as u64 + RESERVED_FDS;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return max_connections;
    }
    if limit.rlim_cur >= needed {
        return max_connections;
    }
    // The hard limit is the operator's (LimitNOFILE=, ulimit -Hn): only the soft one
    // moves, up to it.
    let raised = libc::rlimit {
        rlim_cur: needed.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    let fits = limit.rlim_cur.saturating_sub(RESERVED_FDS).max(16);
    if fits < max_connections as u64 {
        tracing::warn!(
            max_connections,
            open_files = limit.rlim_cur,
            "daemon.max_connections does not fit the open-files limit; serving {fits} connections at once"
        );
        return fits as usize;
    }
    tracing::debug!(open_files = limit.rlim_cur, "raised the open-files limit");
    max_connections
}

/// One daemon per database: an exclusive `flock` on `<database>.lock`, and a lock on
/// the database file itself (see [`lock_database_file`]), both held for life. The
/// lock file is created 0640 whatever the umask and never through a symlink; its
/// content is never read.
pub fn lock_database(database: &Path) -> Result<(File, File), DaemonError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = database.parent() {
        guard::create_private_dir(dir)?;
    }
    let lock_path = guard::sidecar(database, ".lock");
    let refuse =
        |e: std::io::Error| DaemonError::Refused(format!("lock file {}: {e}", lock_path.display()));
    guard::create_private_file(&lock_path, guard::FILE_MODE).map_err(refuse)?;
    // O_NONBLOCK: a FIFO planted at the path must not hang the start.
    let file = File::options()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&lock_path)
        .map_err(refuse)?;
    if !file.metadata().map_err(refuse)?.is_file() {
        return Err(DaemonError::Refused(format!(
            "lock file {} is not a regular file",
            lock_path.display()
        )));
    }
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(DaemonError::AlreadyRunning(format!(
            "database {} is in use by another contactq daemon",
            database.display()
        )));
    }
    Ok((file, lock_database_file(database)?))
}

/// The lock file is only a name: deleted under a running daemon, it would let a second
/// daemon lock a new one and write the same database (and send its cards a second
/// time). So the database file itself is locked too, with an open-file-description
/// lock on one byte far past anything SQLite locks or writes (its locks sit at 1 GiB);
/// an OFD lock is not dropped when SQLite closes a descriptor of the same file.
fn lock_database_file(database: &Path) -> Result<File, DaemonError> {
    use std::os::unix::fs::OpenOptionsExt;
    let unwritable = |e: std::io::Error| {
        DaemonError::Refused(format!(
            "database file {} cannot be written: {e}",
            database.display()
        ))
    };
    guard::create_private_file(database, guard::FILE_MODE).map_err(unwritable)?;
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(database)
        .map_err(unwritable)?;
    if !file.metadata().map_err(unwritable)?.is_file() {
        return Err(DaemonError::Refused(format!(
            "database {} is not a regular file",
            database.display()
        )));
    }
    // SAFETY: a zeroed flock struct, filled, passed to fcntl on a descriptor we own.
    let locked = unsafe {
        let mut lock: libc::flock = std::mem::zeroed();
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = i64::MAX - 1;
        lock.l_len = 1;
        libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock)
    };
    if locked != 0 {
        return Err(DaemonError::AlreadyRunning(format!(
            "database {} is in use by another contactq daemon (its lock file was removed)",
            database.display()
        )));
    }
    Ok(file)
}

/// Binds the socket (or takes it from systemd socket activation), replacing a stale
/// file from a crashed run but never one a live daemon serves. The flag says whether
/// the file is ours to remove at exit.
fn bind_socket(path: &Path, mode: u32) -> Result<(UnixListener, bool), DaemonError> {
    if let Some(listener) = activated_socket()? {
        return Ok((listener, false));
    }
    let socket_err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket is ours to replace: a regular file, a directory or a symlink
        // there is someone's mistake or someone's data, never deleted.
        if !meta.file_type().is_socket() {
            return Err(DaemonError::Refused(format!(
                "daemon.socket {} exists and is not a socket; refusing to replace it \
                 (move it away or choose another path)",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(format!(
                "socket {} is served by another contactq daemon",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(socket_err)?;
    }
    if let Some(dir) = path.parent() {
        // Writable by the owner only, whatever the umask: whoever can write the
        // directory can put their own socket where clients expect the daemon's.
        guard::create_dirs(dir, SOCKET_DIR_MODE, "daemon.socket")?;
    }
    let listener = bind_with_mode(path, mode).map_err(socket_err)?;
    // The umask may have narrowed the mode at bind: now exactly `mode`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(socket_err)?;
    Ok((listener, true))
}

/// Binds a listening socket whose file never has a wider mode than `mode`, not even
/// for the moment between bind and chmod (under umask 000 it would be 0777 then, and a
/// client connecting in that moment would be served). Linux creates the socket file
/// from the socket's own inode mode, less the umask, so the mode is set before bind.
fn bind_with_mode(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let last_error = std::io::Error::last_os_error;
    // SAFETY: plain syscalls on a descriptor this function owns (OwnedFd closes it on
    // every error path); the address is a zeroed sockaddr_un filled within its bounds.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(last_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if libc::fchmod(fd.as_raw_fd(), mode) != 0 {
            return Err(last_error());
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path is too long for a socket (at most 107 bytes)",
            ));
        }
        for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
            *to = *from as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
        let addr_ptr = std::ptr::addr_of!(addr).cast::<libc::sockaddr>();
        if libc::bind(fd.as_raw_fd(), addr_ptr, len as libc::socklen_t) != 0 {
            return Err(last_error());
        }
        if libc::listen(fd.as_raw_fd(), 1024) != 0 {
            return Err(last_error());
        }
        UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
    }
}

/// Mode of a directory contactq creates for its socket: anyone may pass through (the
/// socket's own `socket_mode` says who may connect), only the owner may change it.
const SOCKET_DIR_MODE: u32 = 0o755;

/// The listening socket passed by systemd (`contactq.socket`), if any.
fn activated_socket() -> Result<Option<UnixListener>, DaemonError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let fds: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !ours || fds < 1 {
        return Ok(None);
    }
    use std::os::fd::FromRawFd;
    // SAFETY: systemd passes the listening socket as fd 3 (SD_LISTEN_FDS_START) and
    // nothing else in this process owns it.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    std_listener.set_nonblocking(true)?;
    Ok(Some(UnixListener::from_std(std_listener)?))
}

/// Expiry every second, whether or not any instance is authorized; retention every
/// minute (sooner for a short `keep_done`), in small batches.
async fn upkeep(
    store: Store,
    settings: Arc<Settings>,
    mut shutdown: Shutdown,
    expiry: crate::clock::ExpiryClock,
) {
    let keep_done = duration_ms(settings.queue.keep_done);
    let retention_every =
        (settings.queue.keep_done / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut last_retention = Instant::now() - Duration::from_secs(3600);
    loop {
        // Never ahead of real time since start: a wall clock stepped forward does not
        // expire cards early.
        let now = expiry.now_ms();
        loop {
            match store.expire_due(now).await {
                Ok(batch) => {
                    let total: u64 = batch.iter().map(|(_, n)| n).sum();
                    for (instance, n) in batch {
                        tracing::info!(instance = %instance, expired = n, "expired cards not sent within max_age");
                        crate::metrics::ended_many(
                            &instance,
                            crate::state::MessageState::Expired,
                            n,
                        );
                    }
                    if total < crate::store::EXPIRY_BATCH as u64 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "expiry failed; will try again");
                    break;
                }
            }
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = Instant::now();
            loop {
                match store.delete_ended_batch(now - keep_done).await {
                    Ok(500..) => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "retention failed; will try again");
                        break;
                    }
                }
            }
            // The event stream keeps `keep_done` too (docs/api.md §11).
            loop {
                match store.delete_old_events(now - keep_done).await {
                    Ok(500..) => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "event retention failed; will try again");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// Pings systemd's watchdog only while the store answers and every drain loop has
/// turned recently, so a stuck drain gets the daemon restarted.
async fn watchdog(store: Store, lines: Arc<Lines>, stale_after: Duration, mut shutdown: Shutdown) {
    let Some(interval) = crate::notify::watchdog_interval() else {
        return;
    };
    loop {
        let drains_alive = lines.iter().all(|(_, line)| {
            line.status()
                .heartbeat
                .is_none_or(|beat| beat.elapsed() < stale_after)
        });
        if drains_alive && store.healthy().await {
            crate::notify::notify("WATCHDOG=1");
        } else {
            tracing::error!(drains_alive, "unhealthy: withholding the watchdog ping");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval / 2) => {}
            _ = shutdown.recv() => return,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
