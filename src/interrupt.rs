//! Signals to stockade during an execution (SIGINT, SIGTERM, SIGHUP): instead of dying with the
//! command still running in the sandbox, stockade ends the command's processes inside the
//! container, removes a one-shot container, writes the `finish` record, and exits 128+N.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The signals that interrupt an execution. SIGKILL cannot be caught; what it leaves behind is
/// found by the next invocation (see [`crate::inflight`]).
const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Resolves when stockade receives one of the interrupting signals.
#[derive(Debug, Clone)]
pub struct Interrupt {
    rx: watch::Receiver<Option<i32>>,
    // Kept so that `wait` stays pending (rather than failing) while nothing has fired.
    _tx: std::sync::Arc<watch::Sender<Option<i32>>>,
}

impl Interrupt {
    /// Replaces the default disposition of SIGINT, SIGTERM and SIGHUP for this process with
    /// one that records the signal. Must be called inside a Tokio runtime. A signal that cannot
    /// be hooked keeps its default disposition (stockade dies; the next invocation cleans up).
    pub fn install() -> Interrupt {
        let (tx, rx) = watch::channel(None);
        let tx = std::sync::Arc::new(tx);
        for number in SIGNALS {
            match signal(SignalKind::from_raw(number)) {
                Ok(mut stream) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if stream.recv().await.is_some() {
                            // First signal wins; later ones do not change the exit status.
                            tx.send_if_modified(|v| v.is_none() && v.replace(number).is_none());
                        }
                    });
                }
                Err(e) => tracing::warn!(signal = number, error = %e, "cannot handle signal"),
            }
        }
        Interrupt { rx, _tx: tx }
    }

    /// An interrupt that never fires (for callers that handle signals themselves).
    pub fn never() -> Interrupt {
        let (tx, rx) = watch::channel(None);
        Interrupt {
            rx,
            _tx: std::sync::Arc::new(tx),
        }
    }

    /// The signal received so far, if any.
    pub fn fired(&self) -> Option<i32> {
        *self.rx.borrow()
    }

    /// Waits for an interrupting signal and returns its number.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.rx.clone();
        let fired = rx.wait_for(Option::is_some).await.map(|v| *v);
        match fired {
            Ok(signal) => signal.unwrap_or(0),
            // The sender lives as long as `self`; without it nothing can fire.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The conventional exit status of a process ended by `signal`.
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// A signal's name for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_stays_pending_and_statuses_follow_the_shell() {
        let i = Interrupt::never();
        assert_eq!(i.fired(), None);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), i.wait()).await;
        assert!(waited.is_err());
        assert_eq!(exit_status(libc::SIGINT), 130);
        assert_eq!(exit_status(libc::SIGTERM), 143);
        assert_eq!(name(libc::SIGHUP), "SIGHUP");
    }
}
