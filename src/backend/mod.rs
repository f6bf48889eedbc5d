//! Stage 3: running a planned process in a sandbox, behind one boundary.
//!
//! [`Backend`] speaks stockade's own vocabulary: a [`SandboxSpec`] (what sandbox) and a
//! [`ProcessSpec`] (what process), both produced by `plan`; a [`Sandbox`] (one ready to run
//! processes); a [`Ran`] (how a process ended, with what the runner vouches for). Each backend
//! lives in its own folder and renders these into its own terms: `docker/` into the Engine API
//! through bollard (which appears nowhere else), `fake` into a script for unit tests.
//!
//! The kill rule is the same for every backend: when a process must be ended (timeout, output
//! flood, cancellation, or because it exited and left processes behind), every process of the
//! sandbox user but the sandbox's own init and keeper gets TERM, then after the profile's
//! `kill_grace` KILL until none is left; if that cannot be confirmed, the sandbox is reset
//! (a one-shot removed, a session restarted) and the outcome says so.

mod any;
pub mod docker;
#[cfg(test)]
pub mod fake;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod native;
pub mod output;
mod spec;

use std::future::Future;

pub use output::{Capture, Sink, Stream, Streams};
pub use spec::{
    BindMount, Limits, Network, ProcessSpec, SandboxKind, SandboxSpec, TmpfsMount, User,
};
pub use stockade_proto::cgroup::Hits as LimitsHit;
/// The sandbox's cgroup counters of limits hit (cumulative over its life).
pub use stockade_proto::Counters;

pub use any::{AnyBackend, Choice, KUBERNETES_STATE};

use crate::cancel::{Cancel, Reason};

/// Which backend ran something (in results, audit records and `profile show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    Docker,
    /// Namespaces, cgroups and seccomp applied by stockade itself: no daemon.
    Native,
    /// Pods on a cluster (cargo feature `kubernetes`).
    Kubernetes,
    /// The scripted backend of unit tests.
    Fake,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Native => "native",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Fake => "fake",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error(transparent)]
    Engine(#[from] docker::engine::EngineError),
    #[error(transparent)]
    Image(#[from] docker::image::ImageError),
    #[error(transparent)]
    Native(#[from] native::NativeError),
    #[error("session {session:?} already runs under a different profile or profile version ({profile:?}); remove it with `stockade session rm {session}` or use the same profile")]
    SessionMismatch { session: String, profile: String },
    #[error("session {session:?} was created by stockade {theirs}; this is stockade {ours}, which does not run commands in it: remove it with `stockade session rm {session}`")]
    SessionVersion {
        session: String,
        theirs: String,
        ours: String,
    },
    #[error("the output stream from the engine broke ({reason}); the engine may have stopped or restarted. The next call cleans up what this command left running")]
    Stream { reason: String },
    #[error("the engine stopped answering while the command ran ({source}); the next call cleans up what this command left running")]
    EngineLost {
        #[source]
        source: docker::engine::EngineError,
    },
    #[error(transparent)]
    Agent(#[from] crate::agent::client::AgentError),
    #[error(
        "the working directory {workdir:?} does not exist in the sandbox, or is not a directory"
    )]
    Workdir { workdir: String },
    #[error("{what}")]
    Files { what: String },
    #[error("unexpected engine behaviour: {what}")]
    Protocol { what: String },
    /// The cluster refused, or could not do, what a pod sandbox needs; `what` says what to do.
    #[error("{what}")]
    Cluster { what: String },
    /// `source` broke the run before the command could be confirmed ended, so the sandbox was
    /// reset (or resetting it failed: `failed`).
    #[error("{source}; {}", match failed {
        None => "the command could not be confirmed ended, so the sandbox was reset (a session's /workspace and other tmpfs contents are gone)".to_string(),
        Some(why) => format!("the command could not be confirmed ended and resetting the sandbox failed ({why}): remove it with `stockade session rm`"),
    })]
    Reset {
        source: Box<BackendError>,
        failed: Option<String>,
    },
}

impl BackendError {
    /// The error beneath any reset that followed it.
    pub fn cause(&self) -> &BackendError {
        match self {
            BackendError::Reset { source, .. } => source.cause(),
            other => other,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The exit code (128 + N for a signal); `None` when the process was ended by stockade
    /// (timeout, flood, interrupt) or never started.
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// Stopped because its output passed the hard limit (`ProcessSpec::output_hard_limit`).
    pub flooded: bool,
    /// Stopped because it was cancelled, and why.
    pub interrupted: Option<Reason>,
    /// The process was stopped but ending everything could not be confirmed: the sandbox must
    /// be reset ([`Backend::reset`]).
    pub kill_incomplete: bool,
    pub duration: std::time::Duration,
    /// The limits the process hit, when the runner measured them around it; `None`: not
    /// measured.
    pub hits: Option<LimitsHit>,
    /// Processes it left running when it exited, which were ended.
    pub leftovers: u32,
    /// IPC objects (System V, message queues) it left, which were removed.
    pub ipc_removed: u32,
}

impl Ended {
    /// The signal that ended the process, from the shell convention of exit code 128+N.
    pub fn signal(&self) -> Option<i32> {
        match self.exit_code {
            Some(code) if (129..=128 + 64).contains(&code) => Some((code - 128) as i32),
            _ => None,
        }
    }
}

/// Which way a process ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// Through stockade's agent in the sandbox (results under its MAC).
    #[default]
    Agent,
    /// As the engine's own exec (no agent: a remote engine, or `STOCKADE_NO_AGENT`).
    Exec,
}

/// How a process was run, and what the runner vouches for.
#[derive(Debug, Clone)]
pub struct Ran {
    pub ended: Ended,
    pub runner: Runner,
    /// The agent's verified digests of the whole output (`None` on the exec path).
    pub stdout_sha256: Option<[u8; 32]>,
    pub stderr_sha256: Option<[u8; 32]>,
    /// What the caller must be told about how it ran.
    pub warnings: Vec<String>,
}

/// A sandbox ready to run processes.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The backend's own handle (a container id).
    pub id: String,
    pub name: String,
    pub kind: SandboxKind,
    /// The agent's channel, when the agent is used.
    pub channel: Option<crate::agent::Channel>,
    /// What happened to an existing session's sandbox before it could be used.
    pub recovered: Option<Recovered>,
    /// Where on a cluster it runs (the Kubernetes backend), for the audit.
    pub placement: Option<Placement>,
}

/// Where a sandbox runs on a cluster, and what the operator asserted for it: recorded in the
/// audit record of every execution in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The API server's URL.
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub node: String,
    /// SHA-256 of the seccomp profile object the pod runs under.
    pub seccomp_sha256: String,
    /// The image the pod runs, as its spec names it and as the node resolved it.
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// Taken from a warm pool (else created for this execution or session).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_pool: bool,
    /// The operator's assertions the cluster could not prove (`network_enforcement=trusted`,
    /// `node_pids_limit=N`, `allow_looser_pids`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asserted: Vec<String>,
}

impl Sandbox {
    pub fn is_session(&self) -> bool {
        matches!(self.kind, SandboxKind::Session { .. })
    }
}

/// A session's sandbox that had to be brought back: its tmpfs contents are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// It had stopped (an engine restart, `docker stop`) and was started again.
    Restarted,
    /// It was gone (removed behind stockade's back) and was created again.
    Recreated,
}

impl Recovered {
    pub fn note(self) -> &'static str {
        match self {
            Recovered::Restarted => {
                "the session's sandbox had stopped (an engine restart, or stopped from outside) and was started again: /workspace and the other tmpfs contents are gone"
            }
            Recovered::Recreated => {
                "the session's sandbox was gone (removed from outside, or lost with the engine) and was created again: /workspace and the other tmpfs contents are gone"
            }
        }
    }
}

/// A sandbox as a backend lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub name: String,
    pub kind: SandboxKind,
    /// The state directory it belongs to ([`crate::plan::state_id`]).
    pub owner: String,
    pub profile: String,
    /// The backend's own word for its state (`running`, `exited`...).
    pub state: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// The stockade version that created it.
    pub version: Option<String>,
}

/// A file copied into or out of a sandbox: its size and SHA-256, as both ends agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// What a process reads on stdin.
pub type Stdin<'a> = Option<&'a mut (dyn tokio::io::AsyncRead + Unpin + Send)>;

/// Runs processes in sandboxes. Methods return futures that are `Send`, so a server can run
/// many at once.
pub trait Backend: Clone + Send + Sync + 'static {
    fn kind(&self) -> BackendKind;

    /// Whether stockade's agent runs this backend's sandboxes' processes (then the plan mounts
    /// it and its channel).
    fn uses_agent(&self) -> bool;

    /// Creates and starts the sandbox for `spec`, or for a session finds the running one with
    /// the same spec digest (starting or recreating it, and saying so, when it had stopped or
    /// gone; `known` says whether the session existed before).
    fn acquire(
        &self,
        spec: &SandboxSpec,
        known: bool,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<Sandbox, BackendError>> + Send;

    /// Runs `process` in `sandbox`, feeding output to `streams`, until it ends, its timeout
    /// passes, its output floods, or `cancel` fires; the kill rule ends what it leaves.
    fn run(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        stdin: Stdin<'_>,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> impl Future<Output = Result<Ran, BackendError>> + Send;

    /// Ends every process of `process.user` in the sandbox (the kill rule) from outside the
    /// process that ran it. `Ok(false)`: not confirmed, reset the sandbox.
    fn kill_all(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Ends everything in the sandbox when the kill rule could not: a one-shot is removed, a
    /// session restarted (losing its tmpfs contents).
    fn reset(&self, sandbox: &Sandbox) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Removes a sandbox (by id or name) and everything in it. Gone already is not an error.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The sandboxes of state directory `owner` (`None`: every stockade sandbox).
    fn list(
        &self,
        owner: Option<&str>,
    ) -> impl Future<Output = Result<Vec<SandboxInfo>, BackendError>> + Send;

    /// Every sandbox the backend can see on this host, stockade's or not: (id, made by
    /// stockade). The host canaries look for sandboxes an escape made.
    fn census(&self) -> impl Future<Output = Result<Vec<(String, bool)>, BackendError>> + Send;

    /// Copies `source` (streamed, byte-exact; `size` bytes when known) to `path` in the
    /// sandbox, as `process.user` with the sandbox's view of the filesystem.
    fn copy_in(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        path: &str,
        source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        size: Option<u64>,
    ) -> impl Future<Output = Result<Copied, BackendError>> + Send;

    /// Copies `path` in the sandbox to `sink` (streamed, byte-exact).
    fn copy_out(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        path: &str,
        sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> impl Future<Output = Result<Copied, BackendError>> + Send;
}
