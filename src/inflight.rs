//! Executions in flight: a marker file per execution, so that what a killed stockade left
//! behind (a one-shot container, a command still running in a session) is found by the next
//! invocation with one directory read instead of an engine call.
//!
//! A marker is written before any container is created or any process started, and removed
//! only once the execution is known to have left nothing running. A marker whose owner (pid on
//! this boot) is gone therefore means "something may be left": the next `exec` removes
//! orphaned one-shot containers in the background, and the next `exec` in a session ends the
//! processes the dead execution left in the session's container before running its command.

use std::fs;
use std::path::{Path, PathBuf};

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
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// Execution id (as in the audit log).
    pub id: String,
    /// The stockade process running it.
    pub pid: u32,
    /// Boot id of the host when it ran, so a pid reused after a reboot is not its owner.
    pub boot_id: String,
    /// The session it ran in, if any.
    pub session: Option<String>,
}

/// A marker this process wrote. Dropping it leaves the file (a panic or an engine fault must
/// leave the evidence); [`InFlight::done`] removes it.
#[derive(Debug)]
#[must_use = "call done() once the execution left nothing running"]
pub struct InFlight {
    path: PathBuf,
}

impl InFlight {
    /// The execution left nothing running: forget it.
    pub fn done(self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn dir(state_dir: &Path) -> Result<PathBuf, StateError> {
    let dir = state_dir.join(INFLIGHT_DIR);
    state::ensure_private_dir(state_dir)?;
    state::ensure_private_dir(&dir)?;
    Ok(dir)
}

/// Writes the marker of an execution that is about to create containers or processes.
pub fn begin(state_dir: &Path, marker: &Marker) -> Result<InFlight, StateError> {
    let path = dir(state_dir)?.join(format!("{}.json", marker.id));
    // Serializing a struct of strings and integers cannot fail.
    let bytes = serde_json::to_vec(marker).unwrap_or_default();
    state::write_private_file(&path, &bytes)?;
    Ok(InFlight { path })
}

/// A marker whose owner is gone, with the file it came from.
#[derive(Debug, Clone)]
pub struct Stale {
    pub path: PathBuf,
    pub marker: Marker,
}

impl Stale {
    /// Whatever it marked has been cleaned up.
    pub fn clear(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Markers whose owning process is gone. Unreadable or foreign files are skipped: this is a
/// hint for cleanup, and the engine's labels remain the authority (`session prune`).
pub fn stale(state_dir: &Path) -> Vec<Stale> {
    let Ok(dir) = dir(state_dir) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten().take(MAX_MARKERS_SCANNED) {
        let path = entry.path();
        let Some(marker) = read_marker(&path) else {
            continue;
        };
        if crate::session::process_is_gone(marker.pid, &marker.boot_id) {
            out.push(Stale { path, marker });
        }
    }
    out
}

fn read_marker(path: &Path) -> Option<Marker> {
    use std::io::Read;
    let file = state::open_private_file(path, nix::fcntl::OFlag::O_RDONLY).ok()?;
    let mut text = Vec::new();
    file.take(MAX_MARKER_BYTES).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: &str, pid: u32, boot_id: &str) -> Marker {
        Marker {
            id: id.into(),
            pid,
            boot_id: boot_id.into(),
            session: None,
        }
    }

    #[test]
    fn live_markers_are_not_stale_and_done_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let me = marker("live", std::process::id(), &crate::session::boot_id());
        let flight = begin(&state, &me).unwrap();
        assert!(stale(&state).is_empty());
        flight.done();
        assert_eq!(fs::read_dir(state.join(INFLIGHT_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn markers_of_dead_owners_or_other_boots_are_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        // A pid above the kernel's maximum (4194304) never exists.
        let dead = begin(
            &state,
            &marker("dead", 4_194_305, &crate::session::boot_id()),
        )
        .unwrap();
        let old_boot = begin(&state, &marker("reboot", std::process::id(), "other-boot")).unwrap();
        let mut ids: Vec<String> = stale(&state).into_iter().map(|s| s.marker.id).collect();
        ids.sort();
        assert_eq!(ids, vec!["dead", "reboot"]);
        for s in stale(&state) {
            s.clear();
        }
        assert!(stale(&state).is_empty());
        drop((dead, old_boot));
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
