//! Backends that run a planned command. Docker (through the Engine API) is the one backend.

pub mod docker;
pub mod output;

use std::time::Duration;

use crate::engine::EngineError;

pub use docker::{Container, DockerBackend};
pub use output::Capture;

/// Name of the backend as recorded in the audit log.
pub const BACKEND_DOCKER: &str = "docker";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("session {session:?} already runs under a different profile or profile version ({profile:?}); remove it with `stockade session rm {session}` or use the same profile")]
    SessionMismatch { session: String, profile: String },
    #[error("output stream from the engine broke: {reason}")]
    Stream { reason: String },
    #[error("unexpected engine behaviour: {what}")]
    Protocol { what: String },
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code the engine reported; `None` when the command was killed on timeout.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub duration: Duration,
}

impl Outcome {
    /// The signal that ended the process, from the shell convention of exit code 128+N.
    pub fn signal(&self) -> Option<i32> {
        match self.exit_code {
            Some(code) if (129..=128 + 64).contains(&code) => Some((code - 128) as i32),
            _ => None,
        }
    }
}
