//! The cgroup counters of limits hit, as a process inside the sandbox reads them.
//!
//! cgroup v1: `memory/memory.oom_control` (`oom_kill N`, Linux 4.13+) and `pids/pids.events`
//! (`max N`: forks refused at the limit). cgroup v2: `memory.events` (`oom_kill N`) and
//! `pids.events` (`max N`). v2's `memory.events` has a `max` line too, meaning something else,
//! so the file decides which key is read. Inside a container the engine mounts the container's
//! own cgroup at /sys/fs/cgroup, read-only, so the sandbox cannot change what is read.

use std::path::Path;

/// The counters; `None` where the file is missing or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub pids_max: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// Which limits a command hit, from the counters before and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hits {
    pub pids_limit: bool,
    pub oom_killed: bool,
    /// A counter read before was not read after (or the other way round): whether that limit
    /// was hit is not known.
    pub unmeasured: bool,
}

/// A counter file and the key in it that counts limit hits.
const FILES: &[(&str, &str, Kind)] = &[
    ("memory/memory.oom_control", "oom_kill", Kind::Oom),
    ("pids/pids.events", "max", Kind::Pids),
    ("memory.events", "oom_kill", Kind::Oom),
    ("pids.events", "max", Kind::Pids),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Oom,
    Pids,
}

/// A cgroup file is a few short lines; more is not one.
const MAX_FILE: u64 = 4096;

/// Reads the counters under `root` (normally `/sys/fs/cgroup`).
pub fn read(root: &Path) -> Counters {
    Files::open(root).read()
}

/// The counter files, opened once and re-read from the start each time: a process that later
/// runs out of descriptors (or is made to) can still read them.
#[derive(Debug)]
pub struct Files {
    open: Vec<(std::fs::File, &'static str, Kind)>,
}

impl Files {
    pub fn open(root: &Path) -> Files {
        Files {
            open: FILES
                .iter()
                .filter_map(|(file, key, kind)| {
                    Some((std::fs::File::open(root.join(file)).ok()?, *key, *kind))
                })
                .collect(),
        }
    }

    pub fn read(&self) -> Counters {
        use std::io::{Read, Seek};
        let mut counters = Counters::default();
        for (file, key, kind) in &self.open {
            let mut text = String::new();
            let mut f = file;
            let ok = f.rewind().is_ok() && f.take(MAX_FILE).read_to_string(&mut text).is_ok();
            if !ok {
                continue;
            }
            if let Some(value) = value_of(&text, key) {
                match kind {
                    Kind::Oom => counters.oom_kills = Some(value),
                    Kind::Pids => counters.pids_max = Some(value),
                }
            }
        }
        counters
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
pub fn value_of(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

impl Counters {
    /// The limits hit between `self` (before) and `after`. A counter missing on either side
    /// says nothing was seen; a counter that went down (the cgroup was recreated) is read as
    /// counting from zero.
    pub fn hits(&self, after: &Counters) -> Hits {
        let rose = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) if a >= b => a > b,
            (Some(_), Some(a)) => a > 0,
            (None, Some(a)) => a > 0,
            _ => false,
        };
        Hits {
            pids_limit: rose(self.pids_max, after.pids_max),
            oom_killed: rose(self.oom_kills, after.oom_kills),
            unmeasured: self.pids_max.is_some() != after.pids_max.is_some()
                || self.oom_kills.is_some() != after.oom_kills.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_v1_and_v2_are_read_by_their_own_key() {
        let dir = std::env::temp_dir().join(format!("stockade-proto-cg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("memory")).unwrap();
        std::fs::create_dir_all(dir.join("pids")).unwrap();
        std::fs::write(
            dir.join("memory/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(dir.join("pids/pids.events"), "max 17\n").unwrap();
        assert_eq!(
            read(&dir),
            Counters {
                pids_max: Some(17),
                oom_kills: Some(2)
            }
        );
        // Opened once, read again after the files changed.
        let files = Files::open(&dir);
        std::fs::write(dir.join("pids/pids.events"), "max 18\n").unwrap();
        assert_eq!(files.read().pids_max, Some(18));
        std::fs::remove_dir_all(&dir).unwrap();
        // v2: memory.events' `max` line is not the pids counter.
        let text = "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n";
        assert_eq!(value_of(text, "oom_kill"), Some(1));
        assert_eq!(value_of(text, "max"), Some(9));
        assert_eq!(value_of("", "max"), None);
        assert_eq!(read(Path::new("/nonexistent")), Counters::default());
    }

    #[test]
    fn hits_are_the_counters_that_rose() {
        let c = |p, o| Counters {
            pids_max: p,
            oom_kills: o,
        };
        assert_eq!(
            c(Some(3), Some(1)).hits(&c(Some(3), Some(1))),
            Hits::default()
        );
        assert_eq!(
            c(Some(3), Some(1)).hits(&c(Some(4), Some(2))),
            Hits {
                pids_limit: true,
                oom_killed: true,
                unmeasured: false,
            }
        );
        // Unknown before: any count after is this command's (a fresh sandbox starts at 0).
        assert!(c(None, None).hits(&c(Some(1), None)).pids_limit);
        assert!(!c(None, None).hits(&c(Some(0), None)).pids_limit);
        // Unknown after: nothing can be said, and that is said.
        let unknown = c(Some(1), Some(1)).hits(&c(None, None));
        assert!(!unknown.pids_limit && !unknown.oom_killed && unknown.unmeasured);
        // A recreated cgroup counts from zero again.
        assert!(c(Some(9), None).hits(&c(Some(2), None)).pids_limit);
    }
}
