//! Sessions: one warm, labelled container per session id, used by one command at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use bollard::models::ContainerSummary;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::backend::{BackendError, Container, DockerBackend};
use crate::plan::{
    self, LABEL_KIND, LABEL_OWNER_BOOT, LABEL_OWNER_PID, LABEL_PROFILE, LABEL_SESSION,
};
use crate::state;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error("cannot lock session {session:?} at {path}: {source}")]
    Lock {
        session: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("no session {session:?}")]
    NotFound { session: String },
}

/// Held while a command runs in a session: commands of one session run one at a time, so a
/// timeout can end every process of the command without touching another command's.
#[derive(Debug)]
pub struct SessionLock {
    _lock: Flock<File>,
}

fn sessions_dir(state_dir: &Path) -> Result<PathBuf, SessionError> {
    let dir = state_dir.join("sessions");
    state::ensure_private_dir(state_dir)?;
    state::ensure_private_dir(&dir)?;
    Ok(dir)
}

fn lock_file(state_dir: &Path, session: &str) -> Result<(PathBuf, File), SessionError> {
    plan::validate_session_id(session)?;
    let path = sessions_dir(state_dir)?.join(format!("{session}.lock"));
    let file = state::open_private_file(
        &path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CREAT,
    )?;
    Ok((path, file))
}

/// Waits for and takes the session's lock.
pub fn lock(state_dir: &Path, session: &str) -> Result<SessionLock, SessionError> {
    let (path, file) = lock_file(state_dir, session)?;
    let lock =
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| SessionError::Lock {
            session: session.to_string(),
            path,
            source: errno.into(),
        })?;
    Ok(SessionLock { _lock: lock })
}

/// Takes the lock only if no command holds it.
fn try_lock(state_dir: &Path, session: &str) -> Result<Option<SessionLock>, SessionError> {
    let (_, file) = lock_file(state_dir, session)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(SessionLock { _lock: lock })),
        Err(_) => Ok(None),
    }
}

/// This boot of the host (`/proc/sys/kernel/random/boot_id`), to tell a live owner pid from a
/// reused one.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether the stockade process that created a one-shot container is gone.
pub fn owner_is_gone(labels: &std::collections::HashMap<String, String>) -> bool {
    let Some(pid) = labels
        .get(LABEL_OWNER_PID)
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return true;
    };
    if labels.get(LABEL_OWNER_BOOT).map(String::as_str) != Some(boot_id().as_str()) {
        return true;
    }
    // ESRCH: no such process. EPERM still means it exists.
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Reads the memory cgroup's OOM-kill counter inside the container and tells whether it rose
/// since the last command of this session (one-shot containers start from zero).
pub async fn oom_killed(
    backend: &DockerBackend,
    container: &Container,
    state_dir: &Path,
    session: Option<&str>,
) -> bool {
    let Some(count) = backend.oom_kill_count(container).await else {
        return false;
    };
    let Some(session) = session else {
        return count > 0;
    };
    let Ok(dir) = sessions_dir(state_dir) else {
        return count > 0;
    };
    let path = dir.join(format!("{session}.oom"));
    let before: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = state::write_private_file(&path, count.to_string().as_bytes());
    count > before
}

/// One row of `session ls`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session: String,
    pub container: String,
    pub profile: String,
    pub state: String,
    pub created: i64,
}

fn name_of(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// Session containers of this state directory.
async fn session_containers(
    backend: &DockerBackend,
    state_dir: &Path,
) -> Result<Vec<ContainerSummary>, SessionError> {
    let state = plan::state_id(state_dir);
    Ok(backend
        .list_managed(Some((plan::LABEL_STATE, state.as_str())))
        .await?
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_KIND))
                .map(String::as_str)
                == Some(plan::KIND_SESSION)
        })
        .collect())
}

pub async fn list(
    backend: &DockerBackend,
    state_dir: &Path,
) -> Result<Vec<SessionInfo>, SessionError> {
    let containers = session_containers(backend, state_dir).await?;
    let mut out: Vec<SessionInfo> = containers
        .iter()
        .map(|c| {
            let labels = c.labels.clone().unwrap_or_default();
            SessionInfo {
                session: labels.get(LABEL_SESSION).cloned().unwrap_or_default(),
                container: name_of(c),
                profile: labels.get(LABEL_PROFILE).cloned().unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                created: c.created.unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.session.cmp(&b.session));
    Ok(out)
}

/// Removes a session's container, waiting for a running command of it to end first.
pub async fn remove(
    backend: &DockerBackend,
    state_dir: &Path,
    session: &str,
) -> Result<(), SessionError> {
    plan::validate_session_id(session)?;
    let containers: Vec<_> = session_containers(backend, state_dir)
        .await?
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SESSION))
                .map(String::as_str)
                == Some(session)
        })
        .collect();
    if containers.is_empty() {
        return Err(SessionError::NotFound {
            session: session.to_string(),
        });
    }
    let _lock = lock(state_dir, session)?;
    for c in containers {
        if let Some(id) = c.id {
            backend.remove(&id).await?;
        }
    }
    Ok(())
}

/// What `session prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub sessions: Vec<String>,
    pub orphans: Vec<String>,
    pub busy: Vec<String>,
}

/// Removes this state directory's idle session containers, and one-shot containers whose
/// stockade process is gone (from any state directory: an orphan has no owner left to ask).
/// A session whose lock is held (a command is running) is left alone and reported as busy.
pub async fn prune(
    backend: &DockerBackend,
    state_dir: &Path,
    sessions_too: bool,
) -> Result<PruneReport, SessionError> {
    let mut report = PruneReport::default();
    let state = plan::state_id(state_dir);
    for c in backend.list_managed(None).await? {
        let labels = c.labels.clone().unwrap_or_default();
        let name = name_of(&c);
        let Some(id) = c.id.clone() else { continue };
        match labels.get(LABEL_KIND).map(String::as_str) {
            Some(plan::KIND_SESSION)
                if sessions_too && labels.get(plan::LABEL_STATE) == Some(&state) =>
            {
                let session = labels.get(LABEL_SESSION).cloned().unwrap_or_default();
                match try_lock(state_dir, &session) {
                    Ok(Some(_lock)) => {
                        backend.remove(&id).await?;
                        report.sessions.push(session);
                    }
                    _ => report.busy.push(session),
                }
            }
            Some(plan::KIND_ONESHOT) if owner_is_gone(&labels) => {
                backend.remove(&id).await?;
                report.orphans.push(name);
            }
            _ => {}
        }
    }
    Ok(report)
}
