//! Loaded profiles, kept while the files they were read from are unchanged: a long-running
//! face (the server) does not parse TOML and seccomp JSON on every command, and an edit to a
//! profile or its seccomp file still takes effect on the next one.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{load, Profile, ProfileDirs, ProfileError};

/// Profiles kept at most (names come from requests; only ones that loaded are kept).
const MAX_ENTRIES: usize = 64;

/// What identifies a file's contents without reading it: device, inode, size, change time.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
}

#[derive(Debug)]
struct Entry {
    /// Every file the name could resolve to, in lookup order, with its stamp.
    candidates: Vec<Stamp>,
    /// The seccomp file outside the binary, if any, with its stamp.
    seccomp: Option<(PathBuf, Stamp)>,
    profile: Profile,
}

#[derive(Debug, Default)]
pub struct ProfileCache {
    entries: Mutex<HashMap<String, Entry>>,
}

fn candidates(name: &str, dirs: &ProfileDirs) -> Vec<Stamp> {
    if name.contains('/') || name.ends_with(".toml") {
        return vec![stamp(Path::new(name))];
    }
    dirs.dirs
        .iter()
        .map(|d| stamp(&d.join(format!("{name}.toml"))))
        .collect()
}

impl ProfileCache {
    /// [`load`], or the profile loaded before from the very same files.
    pub fn load(&self, name: &str, dirs: &ProfileDirs) -> Result<Profile, ProfileError> {
        let now = candidates(name, dirs);
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.get(name) {
                let seccomp_same = e
                    .seccomp
                    .as_ref()
                    .map_or(true, |(path, was)| stamp(path) == *was);
                if e.candidates == now && seccomp_same {
                    return Ok(e.profile.clone());
                }
            }
        }
        let profile = load(name, dirs)?;
        let path = &profile.seccomp.path;
        let seccomp = (!path.starts_with("builtin:")).then(|| (path.clone(), stamp(path)));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            name.to_string(),
            Entry {
                candidates: now,
                seccomp,
                profile: profile.clone(),
            },
        );
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edited_profile_is_read_again_and_an_unchanged_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = ProfileDirs::new(vec![dir.path().to_path_buf()]);
        let cache = ProfileCache::default();
        let builtin = cache.load("default", &dirs).unwrap();
        assert_eq!(builtin.source, "builtin:default");
        assert_eq!(cache.load("default", &dirs).unwrap(), builtin);

        // A file in the directory now shadows the built-in profile.
        let text = crate::profile::BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == "default")
            .unwrap()
            .1;
        let seccomp = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/seccomp/default.json");
        std::fs::create_dir(dir.path().join("seccomp")).unwrap();
        let seccomp_copy = dir.path().join("seccomp/default.json");
        std::fs::copy(seccomp, &seccomp_copy).unwrap();
        let file = dir.path().join("default.toml");
        std::fs::write(
            &file,
            text.replace("description = ", "description = \"mine\" #"),
        )
        .unwrap();
        let mine = cache.load("default", &dirs).unwrap();
        assert_eq!(mine.description, "mine");
        assert_eq!(mine.source, file.display().to_string());

        // Edited again (same size, so only the change time tells).
        std::fs::write(
            &file,
            text.replace("description = ", "description = \"MINE\" #"),
        )
        .unwrap();
        assert_eq!(cache.load("default", &dirs).unwrap().description, "MINE");

        // Its seccomp file edited: read again too.
        let json = std::fs::read_to_string(&seccomp_copy).unwrap();
        std::fs::write(&seccomp_copy, format!("{json}\n")).unwrap();
        assert_eq!(
            cache.load("default", &dirs).unwrap().seccomp.json,
            format!("{json}\n")
        );

        std::fs::remove_file(&file).unwrap();
        assert_eq!(cache.load("default", &dirs).unwrap(), builtin);
        assert!(cache.load("no-such-profile", &dirs).is_err());
    }
}
