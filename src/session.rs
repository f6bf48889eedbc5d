//! Sessions: one warm, labelled container per session id, used by one command at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use std::time::Duration;

use bollard::models::ContainerSummary;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::backend::{BackendError, Container, DockerBackend};
use crate::plan::{self, ProcessSpec, LABEL_EXEC, LABEL_KIND, LABEL_PROFILE, LABEL_SESSION};
use crate::{inflight, state};

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

/// Between attempts at a busy session's lock.
const LOCK_POLL: Duration = Duration::from_millis(10);
/// How long `session rm` waits for a running command before removing the container anyway.
pub const RM_LOCK_WAIT: Duration = Duration::from_secs(10);

/// How waiting for a session's lock ended.
#[derive(Debug)]
pub enum Locked {
    Held(SessionLock),
    /// Another command still held it when the wait ran out.
    Busy,
    /// This signal came first.
    Interrupted(i32),
}

/// Takes the session's lock, waiting while another command holds it: at most `wait`, and never
/// past `interrupt`.
pub async fn lock(
    state_dir: &Path,
    session: &str,
    wait: Duration,
    interrupt: impl std::future::Future<Output = i32>,
) -> Result<Locked, SessionError> {
    let until = tokio::time::Instant::now() + wait;
    tokio::pin!(interrupt);
    loop {
        if let Some(lock) = try_lock(state_dir, session)? {
            return Ok(Locked::Held(lock));
        }
        if tokio::time::Instant::now() >= until {
            return Ok(Locked::Busy);
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_POLL) => {}
            signal = &mut interrupt => return Ok(Locked::Interrupted(signal)),
        }
    }
}

/// Takes the lock only if no command holds it.
fn try_lock(state_dir: &Path, session: &str) -> Result<Option<SessionLock>, SessionError> {
    let (_, file) = lock_file(state_dir, session)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(SessionLock { _lock: lock })),
        Err(_) => Ok(None),
    }
}

/// Bound on the background removal of orphaned one-shot containers.
pub const SWEEP_TIMEOUT: Duration = Duration::from_secs(10);

/// When an earlier stockade died with a one-shot execution in flight, removes this state
/// directory's orphaned one-shot containers (as `session prune --orphans-only` does) in a
/// background task bounded by [`SWEEP_TIMEOUT`]. Costs one directory read when there is
/// nothing to do.
pub fn sweep_in_background(
    backend: &DockerBackend,
    state_dir: &Path,
) -> Option<tokio::task::JoinHandle<()>> {
    if !inflight::stale(state_dir)
        .iter()
        .any(|s| s.marker.session.is_none())
    {
        return None;
    }
    let backend = backend.clone();
    let state_dir = state_dir.to_owned();
    Some(tokio::spawn(async move {
        let swept = tokio::time::timeout(SWEEP_TIMEOUT, prune(&backend, &state_dir, false)).await;
        match swept {
            Ok(Ok(report)) => tracing::info!(
                orphans = report.orphans.len(),
                "removed orphaned one-shot containers"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "orphan sweep failed"),
            Err(_) => tracing::warn!("orphan sweep timed out"),
        }
    }))
}

/// Ends what dead executions left running in this session's container (their markers say
/// so), before the next command runs in it. Called with the session's lock held. With the agent
/// the agent does it itself before every command (and says how many it ended); without, the
/// kill runs from a fresh exec.
pub async fn end_leftovers(
    backend: &DockerBackend,
    container: &Container,
    process: &ProcessSpec,
    state_dir: &Path,
    session: &str,
) -> Result<(), SessionError> {
    let stale: Vec<inflight::Stale> = inflight::stale(state_dir)
        .into_iter()
        .filter(|s| s.marker.session.as_deref() == Some(session))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    tracing::info!(
        session,
        executions = stale.len(),
        "ending processes left by a stockade that died"
    );
    if !container.agent && !backend.kill_tree(container, process).await? {
        backend.reset(container).await?;
    }
    stale.iter().for_each(inflight::Stale::clear);
    Ok(())
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

/// What `session rm` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    /// A command was still running after [`RM_LOCK_WAIT`]; it ended with the container.
    pub interrupted_running_command: bool,
}

/// Removes a session's container and its host directory. Waits up to [`RM_LOCK_WAIT`] for a
/// running command of it to end, then removes the container anyway: a wedged session never
/// holds `rm` up.
pub async fn remove(
    backend: &DockerBackend,
    state_dir: &Path,
    session: &str,
) -> Result<Removed, SessionError> {
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
    let channel = crate::agent::Channel::session(state_dir, session);
    if containers.is_empty() && !channel.dir().exists() {
        return Err(SessionError::NotFound {
            session: session.to_string(),
        });
    }
    let locked = lock(state_dir, session, RM_LOCK_WAIT, std::future::pending()).await?;
    for c in containers {
        if let Some(id) = c.id {
            backend.remove(&id).await?;
        }
    }
    channel.remove();
    Ok(Removed {
        interrupted_running_command: !matches!(locked, Locked::Held(_)),
    })
}

/// What `session prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub sessions: Vec<String>,
    pub orphans: Vec<String>,
    pub busy: Vec<String>,
}

/// Removes this state directory's idle session containers, and its one-shot containers whose
/// execution is no longer in flight (no marker, or a marker whose owner's lock is free).
/// Containers of other state directories are never touched: only the state directory that owns
/// a container can say it is an orphan. A session whose lock is held (a command is running) is
/// left alone and reported as busy.
pub async fn prune(
    backend: &DockerBackend,
    state_dir: &Path,
    sessions_too: bool,
) -> Result<PruneReport, SessionError> {
    let mut report = PruneReport::default();
    let state = plan::state_id(state_dir);
    // Listed before the markers are read: a container in the list was created after its
    // marker, so a live execution's marker is seen.
    let containers = backend
        .list_managed(Some((plan::LABEL_STATE, state.as_str())))
        .await?;
    for c in containers {
        let labels = c.labels.clone().unwrap_or_default();
        let name = name_of(&c);
        let Some(id) = c.id.clone() else { continue };
        match labels.get(LABEL_KIND).map(String::as_str) {
            Some(plan::KIND_SESSION) if sessions_too => {
                let session = labels.get(LABEL_SESSION).cloned().unwrap_or_default();
                match try_lock(state_dir, &session) {
                    Ok(Some(_lock)) => {
                        backend.remove(&id).await?;
                        crate::agent::Channel::session(state_dir, &session).remove();
                        report.sessions.push(session);
                    }
                    _ => report.busy.push(session),
                }
            }
            Some(plan::KIND_ONESHOT) => {
                let exec = labels
                    .get(LABEL_EXEC)
                    .cloned()
                    .or_else(|| name.strip_prefix("stockade-x-").map(str::to_string))
                    .unwrap_or_default();
                if !inflight::is_live(state_dir, &exec) {
                    backend.remove(&id).await?;
                    crate::agent::Channel::oneshot(state_dir, &exec).remove();
                    report.orphans.push(name);
                }
            }
            _ => {}
        }
    }
    // Every orphaned one-shot container is gone now, and so is every removed session's
    // container: the markers of dead executions in them have nothing left to point at.
    for stale in inflight::stale(state_dir) {
        match &stale.marker.session {
            None => {
                crate::agent::Channel::oneshot(state_dir, &stale.marker.id).remove();
                stale.clear();
            }
            Some(s) if report.sessions.contains(s) => stale.clear(),
            Some(_) => {}
        }
    }
    Ok(report)
}
