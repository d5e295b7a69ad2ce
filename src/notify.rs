//! systemd's notify protocol (`READY=1`, `STOPPING=1`, `WATCHDOG=1`) over the datagram
//! socket named in `$NOTIFY_SOCKET`; a no-op when the daemon was not started by systemd.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends one notification; returns whether a notify socket was there to take it.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let Ok(addr) = addr else { return false };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    // Never wait on systemd: a receiver that stopped reading (or a NOTIFY_SOCKET that
    // names some other program's socket) would otherwise block a runtime thread in
    // sendto for ever, and with it the shutdown. A notification that does not fit now
    // is dropped with a warning; the next watchdog ping tries again.
    if socket.set_nonblocking(true).is_err() {
        return false;
    }
    match socket.send_to_addr(state.as_bytes(), &addr) {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "cannot notify systemd");
            false
        }
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`), if it is meant for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    // Pinged every half interval: an absurdly short one would make that a busy loop.
    (usec > 0).then(|| Duration::from_micros(usec).max(Duration::from_millis(20)))
}
