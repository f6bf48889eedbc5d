//! What `plan` asks a backend for, in stockade's own terms.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::Mounts;
use crate::profile::SeccompPolicy;
pub use crate::profile::User;

/// The sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Only loopback.
    None,
    /// A network of the backend's, by name.
    Named(String),
}

/// A writable memory-backed mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TmpfsMount {
    pub path: String,
    pub size_bytes: u64,
    pub mode: u32,
    /// Programs may be run from it.
    pub exec: bool,
    /// Owner of its root (the sandbox user).
    pub owner: User,
}

/// A host path bound into the sandbox (the profile's own binds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// The sandbox's cgroup limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub pids: i64,
    /// Memory, swap disabled (memory + swap = memory).
    pub memory_bytes: i64,
    /// CPU in billionths of a CPU.
    pub nano_cpus: i64,
}

/// One-shot (one execution, then removed) or a session's warm sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SandboxKind {
    Oneshot { exec: String },
    Session { name: String },
}

/// A sandbox to create (or, for a session, to find).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxSpec {
    /// Unique among this backend's sandboxes.
    pub name: String,
    pub kind: SandboxKind,
    /// The state directory that owns it ([`crate::plan::state_id`]).
    pub owner: String,
    /// The profile it comes from, and whether that is an elevated one.
    pub profile: String,
    pub elevated: bool,
    pub image: String,
    /// The user its processes run as (the profile's).
    pub user: User,
    pub read_only_root: bool,
    pub tmpfs: Vec<TmpfsMount>,
    pub binds: Vec<BindMount>,
    pub network: Network,
    /// The capabilities processes in it may hold (none for the default profile).
    pub capabilities: BTreeSet<String>,
    pub no_new_privileges: bool,
    /// Applied to every process in it.
    #[serde(skip)]
    pub seccomp: Arc<SeccompPolicy>,
    pub limits: Limits,
    /// stockade's agent and its channel, when the agent runs the sandbox's processes.
    pub agent: Option<Mounts>,
    /// A digest of everything above: a session's sandbox is reused only by the same spec.
    pub digest: String,
}

/// A process to run in a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSpec {
    /// The program and its arguments (`bash -c COMMAND` for a shell command).
    pub argv: Vec<String>,
    pub user: User,
    pub working_dir: String,
    /// `NAME=VALUE` entries.
    pub env: Vec<String>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// Bytes kept per stream.
    pub output_cap: u64,
    /// Total output (both streams) past which the process is stopped.
    pub output_hard_limit: u64,
    /// Whether its stdin is fed (else /dev/null).
    pub stdin: bool,
}
