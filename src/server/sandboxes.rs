//! The sandboxes of the API: each is a stockade session owned by the principal that created it,
//! recorded in `sandboxes/<id>.json` (0600) with its expiry and idle timeout, so that a restart
//! of the server (or `stockade grants revoke`) finds them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use crate::state::{self, StateError};

pub const SANDBOXES_DIR: &str = "sandboxes";
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Labels a sandbox may carry, and their sizes.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY: usize = 64;
pub const MAX_LABEL_VALUE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRecord {
    /// Also the stockade session's name.
    pub id: String,
    pub owner: String,
    pub profile: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// When it is removed whatever happens (seconds since the epoch).
    pub expires: Option<i64>,
    /// Removed after this many seconds without a command (a running one counts as activity).
    pub idle_timeout: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The records of one state directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn new(state_dir: &Path) -> Registry {
        Registry {
            dir: state_dir.join(SANDBOXES_DIR),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn put(&self, record: &SandboxRecord) -> Result<(), StateError> {
        state::ensure_private_dir(&self.dir)?;
        let text = serde_json::to_vec(record).unwrap_or_default();
        let tmp = self.dir.join(format!(".{}.tmp", record.id));
        state::write_private_file(&tmp, &text)?;
        std::fs::rename(&tmp, self.path(&record.id)).map_err(|source| StateError::CreateDir {
            path: self.path(&record.id),
            source,
        })
    }

    /// The record of `id`, if there is one (an id that cannot be a session is never one).
    pub fn get(&self, id: &str) -> Option<SandboxRecord> {
        crate::plan::validate_session_id(id).ok()?;
        let file = state::open_private_file(&self.path(id), OFlag::O_RDONLY).ok()?;
        let mut text = String::new();
        file.take(MAX_RECORD_BYTES).read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn list(&self) -> Vec<SandboxRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<SandboxRecord> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(".json")?;
                self.get(id)
            })
            .collect();
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        out
    }

    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
    }
}

/// A new sandbox id: `sbx-` and 12 random hex digits (a valid session name).
pub fn new_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the kernel's random number generator is unavailable");
    format!("sbx-{}", hex::encode(bytes))
}

/// Checks labels from a request.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY || v.len() > MAX_LABEL_VALUE {
            return Err(format!(
                "label keys are 1-{MAX_LABEL_KEY} bytes and values at most {MAX_LABEL_VALUE}"
            ));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err("labels may not contain control characters".to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_are_session_names() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let id = new_id();
        crate::plan::validate_session_id(&id).unwrap();
        let record = SandboxRecord {
            id: id.clone(),
            owner: "alice".into(),
            profile: "default".into(),
            created: 1,
            expires: Some(100),
            idle_timeout: Some(60),
            labels: BTreeMap::from([("team".into(), "a".into())]),
        };
        registry.put(&record).unwrap();
        assert_eq!(registry.get(&id), Some(record.clone()));
        assert_eq!(registry.list(), vec![record]);
        assert_eq!(registry.get("../escape"), None);
        registry.remove(&id);
        assert_eq!(registry.get(&id), None);
    }

    #[test]
    fn labels_are_bounded() {
        let many: BTreeMap<String, String> = (0..40)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(check_labels(&many).is_err());
        assert!(check_labels(&BTreeMap::from([("k".into(), "\n".into())])).is_err());
        assert!(check_labels(&BTreeMap::from([("k".into(), "v".into())])).is_ok());
    }
}
