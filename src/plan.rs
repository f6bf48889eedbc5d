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
/// The pid of the stockade process that owns a one-shot container (for orphan cleanup).
pub const LABEL_OWNER_PID: &str = "org.stockade.owner-pid";
pub const LABEL_OWNER_BOOT: &str = "org.stockade.owner-boot";
pub const LABEL_ELEVATED: &str = "org.stockade.elevated";
pub const LABEL_AGENT: &str = "org.stockade.agent";
/// Which state directory a container belongs to: sessions are scoped to one, so two users (or
/// test runs) on one engine never reuse or prune each other's sessions.
pub const LABEL_STATE: &str = "org.stockade.state";

pub const KIND_ONESHOT: &str = "oneshot";
pub const KIND_SESSION: &str = "session";

/// The container's own process tree: docker-init as PID 1 and this keeper as its child. It runs as
/// root (with no capabilities) so that the sandbox user cannot kill it and end a session.
pub const KEEPER_CMD: &[&str] = &["sleep", "infinity"];
pub const KEEPER_USER: &str = "0:0";

const MAX_SESSION_ID: usize = 64;

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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub container: ContainerSpec,
    pub process: ProcessSpec,
    pub session: Option<String>,
}

/// Owner of a one-shot container: used to tell orphans from containers still in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Boot id of the host, so a pid reused after a reboot is not mistaken for the owner.
    pub boot_id: String,
    /// [`state_id`] of the state directory in use.
    pub state_id: String,
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

/// Container name of a session in the state directory `state_id`.
pub fn session_container_name(state_id: &str, session: &str) -> String {
    format!("stockade-s-{state_id}-{session}")
}

/// Turn a profile and a request into the container and process to run. `exec_id` names a
/// one-shot container; `owner` marks it for orphan cleanup.
pub fn plan(
    profile: &Profile,
    request: &ExecRequest,
    exec_id: &str,
    owner: &Owner,
) -> Result<Plan, PlanError> {
    if request.command.contains('\0') {
        return Err(PlanError::NulByte);
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

    let container = container_spec(profile, request.session.as_deref(), exec_id, owner);
    let process = ProcessSpec {
        cmd: vec!["bash".into(), "-c".into(), request.command.clone()],
        user: profile.user.clone(),
        working_dir,
        env,
        timeout,
        kill_grace: profile.kill_grace,
        output_cap: profile.output_cap,
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
    owner: &Owner,
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
    let binds = profile
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
    let mut spec = ContainerSpec {
        name: String::new(),
        image: profile.image.clone(),
        cmd: KEEPER_CMD.iter().map(|s| s.to_string()).collect(),
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
    };
    // The digest covers everything that shapes the container, so a session container created
    // under a different profile is never silently reused.
    let digest = spec_digest(&spec);
    let labels = &mut spec.labels;
    labels.insert(LABEL_MANAGED.into(), "1".into());
    labels.insert(LABEL_PROFILE.into(), profile.name.clone());
    labels.insert(LABEL_SPEC_DIGEST.into(), digest);
    labels.insert(LABEL_ELEVATED.into(), profile.elevated.to_string());
    labels.insert(LABEL_STATE.into(), owner.state_id.clone());
    match session {
        Some(s) => {
            labels.insert(LABEL_KIND.into(), KIND_SESSION.into());
            labels.insert(LABEL_SESSION.into(), s.to_string());
            spec.name = session_container_name(&owner.state_id, s);
        }
        None => {
            labels.insert(LABEL_KIND.into(), KIND_ONESHOT.into());
            labels.insert(LABEL_OWNER_PID.into(), owner.pid.to_string());
            labels.insert(LABEL_OWNER_BOOT.into(), owner.boot_id.clone());
            spec.name = format!("stockade-x-{exec_id}");
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

/// Adds the session agent's binds (see `agent`) to a session container spec.
pub fn attach_agent(spec: &mut ContainerSpec, binds: Vec<String>) {
    spec.binds.extend(binds);
    spec.labels.insert(LABEL_AGENT.into(), "1".into());
    let digest = spec_digest(spec);
    spec.labels.insert(LABEL_SPEC_DIGEST.into(), digest);
}

/// The script that ends a command's processes inside the container: TERM to every process
/// except PID 1 (docker-init), the keeper and itself, wait up to the grace period for them to
/// go, then KILL what is left. It runs as the command's user, so it reaches exactly the
/// processes that user could start, including ones that detached or called setsid.
///
/// The keeper is the oldest child of PID 1: exec'd commands have parent 0 (they enter the
/// container from outside), and orphans re-parented to PID 1 are all younger than the keeper.
pub fn kill_script(grace: Duration) -> Vec<String> {
    let polls = (grace.as_millis() / 50).max(1);
    let script = format!(
        r#"ppid() {{ while read -r k v _; do [ "$k" = PPid: ] && {{ echo "$v"; return; }}; done < "$1/status"; }}
keeper=; for d in /proc/[0-9]*; do p=${{d#/proc/}}
  [ "$(ppid "$d" 2>/dev/null)" = 1 ] && {{ [ -z "$keeper" ] || [ "$p" -lt "$keeper" ]; }} && keeper=$p; done
others() {{ read -r me _ < /proc/self/stat
  for d in /proc/[0-9]*; do p=${{d#/proc/}}; case $p in 1|$$|$me|$keeper) continue;; esac
  st=; while read -r k v _; do [ "$k" = State: ] && {{ st=$v; break; }}; done < "$d/status" 2>/dev/null
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] && kill -0 "$p" 2>/dev/null && echo "$p"; done; }}
for p in $(others); do kill -TERM "$p" 2>/dev/null; done
i=0; while [ $i -lt {polls} ]; do [ -z "$(others)" ] && exit 0; sleep 0.05; i=$((i+1)); done
for p in $(others); do kill -KILL "$p" 2>/dev/null; done
exit 0"#
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
