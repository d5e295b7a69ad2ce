//! The shutdown signal every long-running task holds: "stop accepting, finish what is
//! in flight, exit" is visible in the types (after mini-redis's `shutdown.rs`).

use tokio::sync::watch;

/// Held by the daemon's entry point; dropping or firing it tells every task to stop.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Held by each task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger and the first receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been asked for (at once if it already was).
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
