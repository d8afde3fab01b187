//! One shutdown signal, fanned out: a `watch` channel that flips to `true`
//! on SIGINT/SIGTERM (or when a test drops its handle), cloned into every
//! server and background task.

use tokio::sync::watch;

/// Receiving side: every long-lived task holds a clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// Sending side: flip it (or drop it) to stop everything.
#[derive(Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

/// A new, untriggered shutdown pair.
pub fn channel() -> (ShutdownHandle, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownHandle(tx), Shutdown(rx))
}

impl ShutdownHandle {
    /// Ask every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown was triggered or the handle dropped.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

/// A [`Shutdown`] that triggers on Ctrl-C or SIGTERM, for binaries.
pub fn on_signals() -> Shutdown {
    let (handle, shutdown) = channel();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler works on unix");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        handle.trigger();
    });
    shutdown
}
