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
    #[error("the output stream from the engine broke ({reason}); the engine may have stopped or restarted. The next call cleans up what this command left running")]
    Stream { reason: String },
    #[error("the engine stopped answering while the command ran ({source}); the next call cleans up what this command left running")]
    EngineLost {
        #[source]
        source: EngineError,
    },
    #[error("unexpected engine behaviour: {what}")]
    Protocol { what: String },
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code the engine reported; `None` when the command was killed on timeout.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// Stopped because its output passed the hard limit (`ProcessSpec::output_hard_limit`).
    pub flooded: bool,
    /// Stopped because stockade itself received this signal.
    pub interrupted: Option<i32>,
    /// The command was stopped but the kill inside the container could not confirm that every
    /// process ended (the kill script failed, or an engine call did): the container must be
    /// reset ([`DockerBackend::reset`]).
    pub kill_incomplete: bool,
    pub duration: Duration,
    /// The limits the command hit, when the runner measured them around it (the agent does);
    /// `None`: not measured, read the counters another way.
    pub hits: Option<LimitsHit>,
    /// Processes the command left running when it exited, which were ended.
    pub leftovers: u32,
    /// IPC objects (System V, message queues) the command left, which were removed.
    pub ipc_removed: u32,
}

/// Which of the sandbox's limits a command hit.
pub use stockade_proto::cgroup::Hits as LimitsHit;

/// The sandbox's cgroup counters of limits hit (cumulative over its life).
pub use stockade_proto::Counters;

impl Outcome {
    /// The signal that ended the process, from the shell convention of exit code 128+N.
    pub fn signal(&self) -> Option<i32> {
        match self.exit_code {
            Some(code) if (129..=128 + 64).contains(&code) => Some((code - 128) as i32),
            _ => None,
        }
    }
}
