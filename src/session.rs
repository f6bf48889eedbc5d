//! Sessions: one warm sandbox per session id, used by one command at a time, with a record
//! of when it was made and last used.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, ProcessSpec, Sandbox, SandboxInfo, SandboxKind};
use crate::cancel::Reason;
use crate::{inflight, plan, state};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
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
/// How long `session rm` waits for a running command before removing the sandbox anyway.
pub const RM_LOCK_WAIT: Duration = Duration::from_secs(10);
/// `session prune` without `--idle`: sessions unused this long go.
pub const DEFAULT_PRUNE_IDLE: Duration = Duration::from_secs(30 * 60);

/// How waiting for a session's lock ended.
#[derive(Debug)]
pub enum Locked {
    Held(SessionLock),
    /// Another command still held it when the wait ran out.
    Busy,
    /// The wait was cancelled first.
    Interrupted(Reason),
}

/// Takes the session's lock, waiting while another command holds it: at most `wait`, and never
/// past `cancelled`.
pub async fn lock(
    state_dir: &Path,
    session: &str,
    wait: Duration,
    cancelled: impl std::future::Future<Output = Reason>,
) -> Result<Locked, SessionError> {
    let until = tokio::time::Instant::now() + wait;
    tokio::pin!(cancelled);
    loop {
        if let Some(lock) = try_lock(state_dir, session)? {
            return Ok(Locked::Held(lock));
        }
        if tokio::time::Instant::now() >= until {
            return Ok(Locked::Busy);
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_POLL) => {}
            reason = &mut cancelled => return Ok(Locked::Interrupted(reason)),
        }
    }
}

/// Takes the lock only if no command holds it.
pub fn try_lock(state_dir: &Path, session: &str) -> Result<Option<SessionLock>, SessionError> {
    let (_, file) = lock_file(state_dir, session)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(SessionLock { _lock: lock })),
        Err(_) => Ok(None),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What stockade remembers of a session between commands (`sessions/<name>/meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Seconds since the epoch.
    pub created: i64,
    pub last_used: i64,
    pub profile: String,
    /// The stockade version that last used it.
    pub version: String,
}

/// A meta file is a few short fields.
const MAX_META_BYTES: u64 = 4096;

impl Meta {
    fn path(state_dir: &Path, session: &str) -> PathBuf {
        crate::agent::Channel::session(state_dir, session)
            .dir()
            .join("meta.json")
    }

    pub fn read(state_dir: &Path, session: &str) -> Option<Meta> {
        use std::io::Read;
        let file =
            state::open_private_file(&Meta::path(state_dir, session), nix::fcntl::OFlag::O_RDONLY)
                .ok()?;
        let mut text = Vec::new();
        file.take(MAX_META_BYTES).read_to_end(&mut text).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Records a use of the session now (creating the record on first use).
    pub fn touch(state_dir: &Path, session: &str, profile: &str) {
        let now = now_secs();
        let meta = Meta {
            created: Meta::read(state_dir, session).map_or(now, |m| m.created),
            last_used: now,
            profile: profile.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let dir = crate::agent::Channel::session(state_dir, session);
        if sessions_dir(state_dir).is_ok() && state::ensure_private_dir(dir.dir()).is_ok() {
            // Serializing a struct of strings and integers cannot fail.
            let bytes = serde_json::to_vec(&meta).unwrap_or_default();
            let _ = state::write_private_file(&Meta::path(state_dir, session), &bytes);
        }
    }
}

/// Bound on the background removal of orphaned one-shot sandboxes.
pub const SWEEP_TIMEOUT: Duration = Duration::from_secs(10);

/// When an earlier stockade died with a one-shot execution in flight, removes this state
/// directory's orphaned one-shot sandboxes (as `session prune --orphans-only` does) in a
/// background task bounded by [`SWEEP_TIMEOUT`]. Costs one directory read when there is
/// nothing to do.
pub fn sweep_in_background<B: Backend + Clone + 'static>(
    backend: &B,
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
        let options = PruneOptions {
            sessions: false,
            idle: Duration::ZERO,
        };
        let swept =
            tokio::time::timeout(SWEEP_TIMEOUT, prune(&backend, &state_dir, &options)).await;
        match swept {
            Ok(Ok(report)) => tracing::info!(
                orphans = report.orphans.len(),
                "removed orphaned one-shot sandboxes"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "orphan sweep failed"),
            Err(_) => tracing::warn!("orphan sweep timed out"),
        }
    }))
}

/// Ends what dead executions left running in this session's sandbox (their markers say so),
/// before the next command runs in it. Called with the session's lock held. With the agent the
/// agent does it itself before every command (and says how many it ended); without, the kill
/// runs from outside.
pub async fn end_leftovers<B: Backend>(
    backend: &B,
    sandbox: &Sandbox,
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
    if sandbox.channel.is_none() && !backend.kill_all(sandbox, process).await? {
        backend.reset(sandbox).await?;
    }
    stale.iter().for_each(inflight::Stale::clear);
    Ok(())
}

/// One row of `session ls`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session: String,
    pub sandbox: String,
    pub profile: String,
    pub state: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Seconds since the epoch; `null` when never recorded.
    pub last_used: Option<i64>,
    /// A command holds the session right now.
    pub busy: bool,
}

fn session_name(info: &SandboxInfo) -> Option<&str> {
    match &info.kind {
        SandboxKind::Session { name } => Some(name),
        SandboxKind::Oneshot { .. } => None,
    }
}

pub async fn list<B: Backend>(
    backend: &B,
    state_dir: &Path,
) -> Result<Vec<SessionInfo>, SessionError> {
    let owner = plan::state_id(state_dir);
    let mut out: Vec<SessionInfo> = backend
        .list(Some(&owner))
        .await?
        .into_iter()
        .filter_map(|info| {
            let session = session_name(&info)?.to_string();
            let meta = Meta::read(state_dir, &session);
            let busy = matches!(try_lock(state_dir, &session), Ok(None));
            Some(SessionInfo {
                created: meta.as_ref().map_or(info.created, |m| m.created),
                last_used: meta.map(|m| m.last_used),
                busy,
                session,
                sandbox: info.name,
                profile: info.profile,
                state: info.state,
            })
        })
        .collect();
    out.sort_by(|a, b| a.session.cmp(&b.session));
    Ok(out)
}

/// What `session rm` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    /// A command was still running after [`RM_LOCK_WAIT`]; it ended with the sandbox.
    pub interrupted_running_command: bool,
}

/// Removes a session's sandbox and its host directory. Waits up to [`RM_LOCK_WAIT`] for a
/// running command of it to end, then removes the sandbox anyway: a wedged session never holds
/// `rm` up.
pub async fn remove<B: Backend>(
    backend: &B,
    state_dir: &Path,
    session: &str,
) -> Result<Removed, SessionError> {
    plan::validate_session_id(session)?;
    let owner = plan::state_id(state_dir);
    let sandboxes: Vec<SandboxInfo> = backend
        .list(Some(&owner))
        .await?
        .into_iter()
        .filter(|info| session_name(info) == Some(session))
        .collect();
    let channel = crate::agent::Channel::session(state_dir, session);
    if sandboxes.is_empty() && !channel.dir().exists() {
        return Err(SessionError::NotFound {
            session: session.to_string(),
        });
    }
    let locked = lock(state_dir, session, RM_LOCK_WAIT, std::future::pending()).await?;
    for info in sandboxes {
        backend.remove(&info.id).await?;
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
    /// Sessions kept because they were used within the idle threshold.
    pub recent: Vec<String>,
}

/// What `session prune` removes.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Idle sessions too (else only orphaned one-shot sandboxes).
    pub sessions: bool,
    /// A session is idle when it was last used longer ago than this.
    pub idle: Duration,
}

/// Removes this state directory's session sandboxes idle longer than `options.idle`, and its
/// one-shot sandboxes whose execution is no longer in flight (no marker, or a marker whose
/// owner's lock is free). Sandboxes of other state directories are never touched: only the
/// state directory that owns one can say it is an orphan. A session whose lock is held (a
/// command is running) is left alone and reported as busy.
pub async fn prune<B: Backend>(
    backend: &B,
    state_dir: &Path,
    options: &PruneOptions,
) -> Result<PruneReport, SessionError> {
    let mut report = PruneReport::default();
    let owner = plan::state_id(state_dir);
    // Listed before the markers are read: a sandbox in the list was created after its marker,
    // so a live execution's marker is seen.
    let now = now_secs();
    for info in backend.list(Some(&owner)).await? {
        match &info.kind {
            SandboxKind::Session { name } if options.sessions => {
                let last_used = Meta::read(state_dir, name).map_or(info.created, |m| m.last_used);
                if now.saturating_sub(last_used) < options.idle.as_secs() as i64 {
                    report.recent.push(name.clone());
                    continue;
                }
                match try_lock(state_dir, name) {
                    Ok(Some(_lock)) => {
                        backend.remove(&info.id).await?;
                        crate::agent::Channel::session(state_dir, name).remove();
                        report.sessions.push(name.clone());
                    }
                    _ => report.busy.push(name.clone()),
                }
            }
            SandboxKind::Oneshot { exec } => {
                if !inflight::is_live(state_dir, exec) {
                    backend.remove(&info.id).await?;
                    crate::agent::Channel::oneshot(state_dir, exec).remove();
                    report.orphans.push(info.name.clone());
                }
            }
            SandboxKind::Session { .. } => {}
        }
    }
    // Every orphaned one-shot sandbox is gone now, and so is every removed session's: the
    // markers of dead executions in them have nothing left to point at.
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
