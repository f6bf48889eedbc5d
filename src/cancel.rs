//! Cancellation of a running execution: what a face (the CLI's signal handlers, a server's
//! client disconnect or kill request) fires, and what every wait of the flow gives way to. A
//! cancelled command is ended inside its sandbox (the kill rule), its `finish` is written, and
//! the outcome says why.

use std::sync::Arc;

use tokio::sync::watch;

/// Why an execution was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The process running stockade received this signal (SIGINT, SIGTERM, SIGHUP).
    Signal(i32),
    /// The client that asked went away.
    Disconnected,
    /// The client asked for it to be ended.
    Killed,
    /// The service is shutting down.
    Shutdown,
}

impl Reason {
    /// The signal, for a cancellation by signal.
    pub fn signal(self) -> Option<i32> {
        match self {
            Reason::Signal(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Signal(s) => f.write_str(signal_name(*s)),
            Reason::Disconnected => f.write_str("the client disconnected"),
            Reason::Killed => f.write_str("a kill request"),
            Reason::Shutdown => f.write_str("the service shutting down"),
        }
    }
}

/// A signal's name for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The conventional exit status of a process ended by `signal`.
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// Fires a [`Cancel`]. The first reason wins.
#[derive(Debug, Clone)]
pub struct Canceller {
    tx: Arc<watch::Sender<Option<Reason>>>,
}

impl Canceller {
    pub fn cancel(&self, reason: Reason) {
        self.tx
            .send_if_modified(|v| v.is_none() && v.replace(reason).is_none());
    }
}

/// Resolves once cancelled; clone it freely.
#[derive(Debug, Clone)]
pub struct Cancel {
    rx: watch::Receiver<Option<Reason>>,
    // Kept so that `wait` stays pending (rather than failing) while nothing has fired.
    _tx: Arc<watch::Sender<Option<Reason>>>,
}

impl Cancel {
    pub fn new() -> (Canceller, Cancel) {
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        (Canceller { tx: tx.clone() }, Cancel { rx, _tx: tx })
    }

    /// A cancellation that never fires.
    pub fn never() -> Cancel {
        Cancel::new().1
    }

    /// Why it was cancelled, if it was.
    pub fn fired(&self) -> Option<Reason> {
        *self.rx.borrow()
    }

    /// Waits for the cancellation.
    pub async fn wait(&self) -> Reason {
        let mut rx = self.rx.clone();
        let fired = rx.wait_for(Option::is_some).await.map(|v| *v);
        match fired {
            Ok(Some(reason)) => reason,
            // The sender lives as long as `self`; without it nothing can fire.
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_never_stays_pending() {
        let never = Cancel::never();
        assert_eq!(never.fired(), None);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), never.wait()).await;
        assert!(waited.is_err());
        let (canceller, cancel) = Cancel::new();
        canceller.cancel(Reason::Signal(libc::SIGTERM));
        canceller.cancel(Reason::Killed);
        assert_eq!(cancel.wait().await, Reason::Signal(libc::SIGTERM));
        assert_eq!(cancel.clone().fired(), Some(Reason::Signal(libc::SIGTERM)));
        assert_eq!(exit_status(libc::SIGINT), 130);
        assert_eq!(exit_status(libc::SIGTERM), 143);
        assert_eq!(Reason::Signal(libc::SIGHUP).to_string(), "SIGHUP");
    }
}
