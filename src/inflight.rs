//! Executions in flight: a marker file per execution, locked by the process running it, so that
//! what a killed stockade left behind (a one-shot container, a command still running in a
//! session) is found by the next invocation with one directory read instead of an engine call.
//!
//! A marker is written before any container is created or any process started, and the process
//! running the execution holds an exclusive `flock` on it until the execution has left nothing
//! running. The kernel releases that lock when the process dies, however it dies, and a lock is
//! seen the same from every pid namespace on the machine: "is the owner alive" is asked of the
//! lock, never of a pid (a stockade in another container has pids this one cannot see). A
//! marker whose lock can be taken therefore means "something may be left": the next `exec`
//! removes orphaned one-shot containers in the background, and the next `exec` in a session
//! ends what the dead execution left running there.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};

use crate::state::{self, StateError};

/// Directory of markers inside the state directory.
pub const INFLIGHT_DIR: &str = "inflight";
/// A marker is a few short fields; anything longer is not one.
const MAX_MARKER_BYTES: u64 = 4096;
/// Markers read per invocation at most: a directory grown past this is not read further (its
/// markers are still found by `session prune`).
const MAX_MARKERS_SCANNED: usize = 4096;

/// What one marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Execution id (as in the audit log, and the one-shot container's `org.stockade.exec`).
    pub id: String,
    /// The session it ran in, if any.
    pub session: Option<String>,
}

/// A marker this process holds. Dropping it releases the lock and leaves the file (a panic or
/// an engine fault must leave the evidence for the next invocation); [`InFlight::done`]
/// removes it.
#[derive(Debug)]
#[must_use = "call done() once the execution left nothing running"]
pub struct InFlight {
    path: PathBuf,
    _lock: Flock<File>,
}

impl InFlight {
    /// The execution left nothing running: forget it.
    pub fn done(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn dir(state_dir: &Path) -> Result<PathBuf, StateError> {
    let dir = state_dir.join(INFLIGHT_DIR);
    state::ensure_private_dir(state_dir)?;
    state::ensure_private_dir(&dir)?;
    Ok(dir)
}

fn marker_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes and locks the marker of an execution about to create containers or processes.
pub fn begin(state_dir: &Path, marker: &Marker) -> Result<InFlight, StateError> {
    use std::io::Write;
    let dir = dir(state_dir)?;
    let path = marker_path(&dir, &marker.id);
    // Written and locked under a name no scan reads, then renamed into place: a marker is
    // never seen unlocked while its owner lives.
    let tmp = dir.join(format!(".{}.tmp", marker.id));
    let io_err = |source| StateError::Open {
        path: path.clone(),
        source,
    };
    let file = state::open_private_file(&tmp, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_TRUNC)?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| io_err(errno.into()))?;
    // Serializing a struct of strings cannot fail.
    let bytes = serde_json::to_vec(marker).unwrap_or_default();
    lock.write_all(&bytes).map_err(io_err)?;
    std::fs::rename(&tmp, &path).map_err(io_err)?;
    Ok(InFlight { path, _lock: lock })
}

/// A marker whose owner is gone, locked by this process while it cleans up after it.
#[derive(Debug)]
pub struct Stale {
    pub path: PathBuf,
    pub marker: Marker,
    _lock: Flock<File>,
}

impl Stale {
    /// Whatever it marked has been cleaned up.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes the marker's lock if nobody holds it.
fn take(path: &Path) -> Option<(Marker, Flock<File>)> {
    use std::io::Read;
    let file = state::open_private_file(path, OFlag::O_RDWR).ok()?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
    let mut text = Vec::new();
    (&mut *lock)
        .take(MAX_MARKER_BYTES)
        .read_to_end(&mut text)
        .ok()?;
    let marker = serde_json::from_slice(&text).ok()?;
    Some((marker, lock))
}

/// Markers whose owner is gone (their lock was free), now locked by this process. Unreadable
/// or foreign files are skipped: this is a hint for cleanup, and the engine's labels remain the
/// authority (`session prune`).
pub fn stale(state_dir: &Path) -> Vec<Stale> {
    let Ok(dir) = dir(state_dir) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .take(MAX_MARKERS_SCANNED)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| {
            let path = entry.path();
            let (marker, lock) = take(&path)?;
            Some(Stale {
                path,
                marker,
                _lock: lock,
            })
        })
        .collect()
}

/// Whether execution `id` is in flight: its marker exists and its owner holds the lock.
pub fn is_live(state_dir: &Path, id: &str) -> bool {
    let Ok(dir) = dir(state_dir) else {
        return false;
    };
    let path = marker_path(&dir, id);
    let Ok(file) = state::open_private_file(&path, OFlag::O_RDWR) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: &str) -> Marker {
        Marker {
            id: id.into(),
            session: None,
        }
    }

    #[test]
    fn held_markers_are_live_and_done_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let flight = begin(&state, &marker("live")).unwrap();
        assert!(stale(&state).is_empty());
        assert!(is_live(&state, "live"));
        flight.done();
        assert!(!is_live(&state, "live"));
        assert_eq!(
            std::fs::read_dir(state.join(INFLIGHT_DIR)).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_dropped_marker_is_stale_and_locked_by_its_cleaner() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        drop(begin(&state, &marker("dead")).unwrap());
        assert!(!is_live(&state, "dead"));
        let found = stale(&state);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].marker.id, "dead");
        // While one cleaner holds it, another does not see it.
        assert!(stale(&state).is_empty());
        found[0].clear();
        drop(found);
        assert!(stale(&state).is_empty());
    }

    #[test]
    fn foreign_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let d = dir(&state).unwrap();
        state::write_private_file(&d.join("junk.json"), b"not json").unwrap();
        assert!(stale(&state).is_empty());
    }
}
