//! Plan: profile + request -> a concrete container and process spec. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::profile::Profile;

/// Labels every stockade container carries.
pub const LABEL_MANAGED: &str = "org.stockade.managed";
pub const LABEL_KIND: &str = "org.stockade.kind";
pub const LABEL_SESSION: &str = "org.stockade.session";
pub const LABEL_PROFILE: &str = "org.stockade.profile";
pub const LABEL_SPEC_DIGEST: &str = "org.stockade.spec-digest";
/// The execution a one-shot container belongs to (its in-flight marker has the same id).
pub const LABEL_EXEC: &str = "org.stockade.exec";
pub const LABEL_ELEVATED: &str = "org.stockade.elevated";
pub const LABEL_AGENT: &str = "org.stockade.agent";
/// Which state directory a container belongs to: sessions are scoped to one, so two users (or
/// test runs) on one engine never reuse or prune each other's sessions.
pub const LABEL_STATE: &str = "org.stockade.state";

pub const KIND_ONESHOT: &str = "oneshot";
pub const KIND_SESSION: &str = "session";

/// The container's own process tree: docker-init as PID 1 and a keeper as its child, which only
/// waits. It runs as root (with no capabilities) so that the sandbox user cannot kill it and end
/// a session. With the agent mounted the keeper is the agent binary, so no image needs `sleep`.
pub const KEEPER_CMD: &[&str] = &["sleep", "infinity"];
pub const KEEPER_USER: &str = "0:0";

const MAX_SESSION_ID: usize = 64;

/// Longest command the sandbox's shell can take: it is passed as one argument of `bash -c`,
/// and Linux caps a single argument at `MAX_ARG_STRLEN` (32 pages, 131072 bytes, including the
/// terminating NUL; include/uapi/linux/binfmts.h).
pub const MAX_COMMAND_BYTES: usize = 131_071;

/// Output beyond this many times the profile's cap means the command is flooding: it is
/// stopped (its process tree killed, as on timeout) and reported as `output_limit`.
pub const FLOOD_FACTOR: u64 = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    #[error("session id {id:?} is invalid: use 1-64 letters, digits, '-', '_' or '.'")]
    SessionId { id: String },
    #[error("--env {name}: not allowed by profile {profile:?} (env_allow: {allowed})")]
    EnvNotAllowed {
        name: String,
        profile: String,
        allowed: String,
    },
    #[error("--env {entry:?}: expected NAME=VALUE")]
    EnvSyntax { entry: String },
    #[error("--workdir {workdir:?}: must be an absolute path")]
    Workdir { workdir: String },
    #[error("--timeout: {timeout:?} exceeds 24h")]
    Timeout { timeout: Duration },
    #[error("the command contains a NUL byte, which no shell argument can carry")]
    NulByte,
    #[error("the command is {len} bytes; the sandbox's shell takes at most {max} bytes in one command (write a script to /workspace and run it instead)")]
    CommandTooLong { len: usize, max: usize },
}

/// What the caller asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecRequest {
    pub command: String,
    pub session: Option<String>,
    pub timeout: Option<Duration>,
    pub workdir: Option<String>,
    pub env: Vec<String>,
}

/// The container a command runs in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub read_only_root: bool,
    pub tmpfs: BTreeMap<String, String>,
    pub network_mode: String,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub pids_limit: i64,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub binds: Vec<String>,
    pub init: bool,
    /// stockade's agent is mounted (its binary and the sandbox's read-only `run/` directory).
    pub agent: bool,
}

/// The process run inside the container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSpec {
    pub cmd: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub env: Vec<String>,
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub output_cap: u64,
    /// Total output (both streams) past which the command is stopped: cap x [`FLOOD_FACTOR`].
    pub output_hard_limit: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub container: ContainerSpec,
    pub process: ProcessSpec,
    pub session: Option<String>,
}

/// A short, stable id for a state directory.
pub fn state_id(state_dir: &std::path::Path) -> String {
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    hex::encode(&Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..6])
}

pub fn validate_session_id(id: &str) -> Result<(), PlanError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SESSION_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(PlanError::SessionId { id: id.to_string() })
    }
}

/// Container name of a one-shot execution.
pub fn oneshot_container_name(exec_id: &str) -> String {
    format!("stockade-x-{exec_id}")
}

/// Container name of a session in the state directory `state_id`.
pub fn session_container_name(state_id: &str, session: &str) -> String {
    format!("stockade-s-{state_id}-{session}")
}

/// Turn a profile and a request into the container and process to run. `exec_id` names a
/// one-shot container; `state_id` ([`state_id`]) marks whose it is; `agent` are the agent's
/// mounts when the agent is used (a local engine).
pub fn plan(
    profile: &Profile,
    request: &ExecRequest,
    exec_id: &str,
    state_id: &str,
    agent: Option<&crate::agent::Mounts>,
) -> Result<Plan, PlanError> {
    if request.command.contains('\0') {
        return Err(PlanError::NulByte);
    }
    if request.command.len() > MAX_COMMAND_BYTES {
        return Err(PlanError::CommandTooLong {
            len: request.command.len(),
            max: MAX_COMMAND_BYTES,
        });
    }
    if let Some(session) = &request.session {
        validate_session_id(session)?;
    }
    let env = request
        .env
        .iter()
        .map(|entry| {
            let (name, _) = entry
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| PlanError::EnvSyntax {
                    entry: entry.clone(),
                })?;
            if !profile.env_allowed(name) {
                return Err(PlanError::EnvNotAllowed {
                    name: name.to_string(),
                    profile: profile.name.clone(),
                    allowed: profile.env_allow.join(", "),
                });
            }
            Ok(entry.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let working_dir = match &request.workdir {
        Some(w) if !w.starts_with('/') => return Err(PlanError::Workdir { workdir: w.clone() }),
        Some(w) => w.clone(),
        None => profile.workdir.clone(),
    };
    let timeout = request.timeout.unwrap_or(profile.timeout);
    if timeout > Duration::from_secs(24 * 3600) {
        return Err(PlanError::Timeout { timeout });
    }

    let container = container_spec(
        profile,
        request.session.as_deref(),
        exec_id,
        state_id,
        agent,
    );
    let process = ProcessSpec {
        cmd: vec!["bash".into(), "-c".into(), request.command.clone()],
        user: profile.user.clone(),
        working_dir,
        env,
        timeout,
        kill_grace: profile.kill_grace,
        output_cap: profile.output_cap,
        output_hard_limit: profile.output_cap.saturating_mul(FLOOD_FACTOR),
    };
    Ok(Plan {
        container,
        process,
        session: request.session.clone(),
    })
}

fn container_spec(
    profile: &Profile,
    session: Option<&str>,
    exec_id: &str,
    state_id: &str,
    agent: Option<&crate::agent::Mounts>,
) -> ContainerSpec {
    let mut security_opt = vec![format!("seccomp={}", profile.seccomp.json)];
    if profile.no_new_privileges {
        security_opt.push("no-new-privileges".to_string());
    }
    // uid/gid: the engine gives a tmpfs over an image directory that directory's mode but
    // not always its owner, so the sandbox user is made the owner explicitly.
    let (uid, gid) = profile
        .user
        .split_once(':')
        .unwrap_or((&profile.user, &profile.user));
    let tmpfs = profile
        .tmpfs
        .iter()
        .map(|t| {
            let exec = if t.exec { "exec" } else { "noexec" };
            (
                t.path.clone(),
                format!(
                    "rw,nosuid,nodev,{exec},size={},mode={:o},uid={uid},gid={gid}",
                    t.size_bytes, t.mode
                ),
            )
        })
        .collect();
    let mut binds: Vec<String> = profile
        .binds
        .iter()
        .map(|b| {
            format!(
                "{}:{}:{}",
                b.source,
                b.target,
                if b.read_only { "ro" } else { "rw" }
            )
        })
        .collect();
    let keeper: Vec<String> = match agent {
        Some(mounts) => {
            binds.extend(mounts.binds());
            vec![crate::agent::AGENT_IN_CONTAINER.into(), "keep".into()]
        }
        None => KEEPER_CMD.iter().map(|s| s.to_string()).collect(),
    };
    let mut spec = ContainerSpec {
        name: String::new(),
        image: profile.image.clone(),
        cmd: keeper,
        user: KEEPER_USER.to_string(),
        working_dir: "/".to_string(),
        labels: BTreeMap::new(),
        read_only_root: profile.read_only_root,
        tmpfs,
        network_mode: profile.network.clone(),
        cap_drop: profile.cap_drop.clone(),
        cap_add: profile.cap_add.clone(),
        security_opt,
        pids_limit: profile.pids_limit,
        memory_bytes: profile.memory_bytes,
        nano_cpus: (profile.cpus * 1e9) as i64,
        binds,
        init: true,
        agent: agent.is_some(),
    };
    // The digest covers everything that shapes the container, so a session container created
    // under a different profile is never silently reused.
    let digest = spec_digest(&spec);
    let labels = &mut spec.labels;
    labels.insert(LABEL_MANAGED.into(), "1".into());
    labels.insert(LABEL_PROFILE.into(), profile.name.clone());
    labels.insert(LABEL_SPEC_DIGEST.into(), digest);
    labels.insert(LABEL_ELEVATED.into(), profile.elevated.to_string());
    labels.insert(LABEL_STATE.into(), state_id.to_string());
    if agent.is_some() {
        labels.insert(LABEL_AGENT.into(), "1".into());
    }
    match session {
        Some(s) => {
            labels.insert(LABEL_KIND.into(), KIND_SESSION.into());
            labels.insert(LABEL_SESSION.into(), s.to_string());
            spec.name = session_container_name(state_id, s);
        }
        None => {
            labels.insert(LABEL_KIND.into(), KIND_ONESHOT.into());
            labels.insert(LABEL_EXEC.into(), exec_id.to_string());
            spec.name = oneshot_container_name(exec_id);
        }
    }
    spec
}

/// Digest of everything that shapes the container except its labels.
fn spec_digest(spec: &ContainerSpec) -> String {
    let mut unlabelled = spec.clone();
    unlabelled.labels.clear();
    // Serializing a plain struct of strings and maps cannot fail.
    let bytes = serde_json::to_vec(&unlabelled).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..12])
}

/// How long the kill script keeps sending KILL and checking that everything is gone, after the
/// grace period: KILL is delivered when a process is next scheduled, which under CPU pressure
/// (a fork bomb on one CPU) takes a moment.
pub const KILL_CONFIRM: Duration = Duration::from_secs(2);
/// Exit status of the kill script (and of `stockade-agent kill`) when processes survived KILL
/// (stuck in the kernel, or a fork race it lost): the caller must fall back to resetting the
/// container.
pub const KILL_INCOMPLETE: i64 = stockade_proto::KILL_INCOMPLETE as i64;

/// The script that ends a command's processes inside the container: TERM to every process
/// except PID 1 (docker-init), the keeper and itself, wait up to the grace period for them to
/// go, then KILL what is left until nothing is, and exit 0; or [`KILL_INCOMPLETE`] if something
/// survived [`KILL_CONFIRM`]. It runs as the command's user, so it reaches exactly the processes
/// that user could start, including ones that detached or called setsid.
///
/// The keeper is the oldest child of PID 1: exec'd commands have parent 0 (they enter the
/// container from outside), and orphans re-parented to PID 1 are all younger than the keeper.
///
/// It never forks: under a fork bomb the pids limit is exhausted, and bash retries a failed
/// fork with a backoff of seconds, so a script that needed a subshell or `sleep` would stall.
/// It waits with `read -t` on its standard input, which the caller keeps open and silent
/// (`sleep` only if that input is closed). For a non-root user `kill -1` signals all of that
/// user's processes in one system call, which the kernel performs under the task list lock, so
/// a fork bomb cannot slip a new child past it (kill(2), kernel/signal.c
/// `kill_something_info`); the keeper runs as root and is not hit.
pub fn kill_script(grace: Duration) -> Vec<String> {
    const POLL_MS: u128 = 50;
    let grace_us = grace.as_micros();
    let confirm_us = KILL_CONFIRM.as_micros();
    let polls = (grace.as_millis() / POLL_MS).max(1);
    let confirm_polls = (KILL_CONFIRM.as_millis() / POLL_MS).max(1);
    // Loops are bounded by time (bash 5's EPOCHREALTIME) and by a count of polls, since under
    // CPU pressure one pass over /proc can take longer than a poll.
    let script = format!(
        r#"nap() {{ read -r -t 0.05 _; [ $? -gt 128 ] || sleep 0.05; }}
now() {{ t=${{EPOCHREALTIME/./}}; t=${{t:-0}}; }}
field() {{ v=; while read -r k x _; do [ "$k" = "$1" ] && {{ v=$x; return; }}; done < "$2"; }}
field Uid: /proc/self/status; uid=$v
keeper=; [ "$uid" = 0 ] && for d in /proc/[0-9]*; do p=${{d#/proc/}}; v=; field PPid: "$d/status" 2>/dev/null
  [ "$v" = 1 ] && {{ [ -z "$keeper" ] || [ "$p" -lt "$keeper" ]; }} && keeper=$p; done
sweep() {{ n=0; for d in /proc/[0-9]*; do p=${{d#/proc/}}; case $p in 1|$$|$keeper) continue;; esac
  [ -O "$d" ] || continue; v=; field State: "$d/status" 2>/dev/null; case $v in ''|Z|X) continue;; esac
  kill -$1 "$p" 2>/dev/null && n=$((n+1)); done; }}
all() {{ if [ "$uid" = 0 ]; then sweep $1; else kill -$1 -1 2>/dev/null; fi; }}
all TERM
now; end=$((t+{grace_us})); i=0
while [ $i -lt {polls} ] && [ $t -le $end ]; do sweep 0; [ $n = 0 ] && exit 0; nap; now; i=$((i+1)); done
now; end=$((t+{confirm_us})); i=0
while [ $i -lt {confirm_polls} ] && [ $t -le $end ]; do all KILL; nap; sweep 0; [ $n = 0 ] && exit 0; now; i=$((i+1)); done
exit {KILL_INCOMPLETE}"#
    );
    vec!["bash".into(), "-c".into(), script]
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
