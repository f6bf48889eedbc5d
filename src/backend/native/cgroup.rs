//! A sandbox's cgroup: created with its limits before anything runs, the init moved into it
//! (everything in the sandbox descends from the init, so everything is in it), and at the end
//! killed whole and removed: nothing of a sandbox outlives its cgroup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::host::{Cgroups, CGROUP_DIR};
use super::NativeError;
use crate::backend::Limits;

/// CFS period for the CPU limit (the kernel's default, as Docker uses).
const CPU_PERIOD_US: i64 = 100_000;
/// After SIGKILL, how long the cgroup has to empty before removal is given up on.
const EMPTY_WITHIN: Duration = Duration::from_secs(10);
/// Between checks while a killed sandbox empties: its processes are usually gone within a
/// fraction of a millisecond of `cgroup.kill`, and each one-shot waits for it once (a 2 ms
/// poll cost a one-shot about 2 ms, measured with strace).
const POLL: Duration = Duration::from_micros(250);
/// How long a killed init may take to become a zombie that can be reaped.
const REAP_WITHIN: Duration = Duration::from_millis(500);
/// `cgroup.procs` lists one pid per line; a sandbox holds at most its pids limit.
const MAX_PROCS_TEXT: u64 = 8 << 20;

fn write(path: &Path, value: &str) -> Result<(), NativeError> {
    std::fs::write(path, value).map_err(|source| NativeError::Cgroup {
        path: path.to_path_buf(),
        source,
    })
}

/// A sandbox's directories in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroup {
    /// Every directory of the sandbox (the first holds the pids controller, read for liveness).
    dirs: Vec<PathBuf>,
    /// The v2 directory whose `cgroup.kill` ends everything in one write, when there is one.
    killable: Option<PathBuf>,
    v2: bool,
}

/// The sandbox cgroups' parent directories.
fn bases(layout: &Cgroups) -> Vec<PathBuf> {
    match layout {
        Cgroups::V2 { base, .. } => vec![base.clone()],
        Cgroups::V1 {
            hierarchies,
            unified,
        } => hierarchies
            .iter()
            .map(|h| h.mount.join(CGROUP_DIR))
            .chain(unified.iter().map(|u| u.join(CGROUP_DIR)))
            .collect(),
    }
}

/// The names of every sandbox cgroup on this host (any state directory's).
pub fn names(layout: &Cgroups) -> Vec<String> {
    let Some(base) = bases(layout).into_iter().next() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

impl SandboxCgroup {
    pub fn of(layout: &Cgroups, name: &str) -> SandboxCgroup {
        let dirs: Vec<PathBuf> = bases(layout).iter().map(|b| b.join(name)).collect();
        let killable = match layout {
            Cgroups::V2 { .. } => dirs.first().cloned(),
            Cgroups::V1 { unified, .. } => unified.as_ref().and(dirs.last().cloned()),
        };
        SandboxCgroup {
            dirs,
            killable,
            v2: layout.is_v2(),
        }
    }

    /// Creates the directories and writes the limits (memory without swap, as Docker's
    /// memory-swap = memory).
    pub fn create(&self, layout: &Cgroups, limits: &Limits) -> Result<(), NativeError> {
        for base in bases(layout) {
            ensure_dir(&base)?;
        }
        if let Cgroups::V2 { base, .. } = layout {
            // The controllers must be enabled in every parent of the sandbox's cgroup.
            let wanted = "+pids +memory +cpu";
            if let Some(parent) = base.parent() {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), wanted);
            }
            write(&base.join("cgroup.subtree_control"), wanted)?;
        }
        for dir in &self.dirs {
            ensure_dir(dir)?;
        }
        let quota = limits.nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000;
        if self.v2 {
            let dir = &self.dirs[0];
            write(&dir.join("pids.max"), &limits.pids.to_string())?;
            write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            return Ok(());
        }
        let Cgroups::V1 { hierarchies, .. } = layout else {
            return Ok(());
        };
        for (h, dir) in hierarchies.iter().zip(&self.dirs) {
            match h.controller {
                "pids" => write(&dir.join("pids.max"), &limits.pids.to_string())?,
                "memory" => {
                    let bytes = limits.memory_bytes.to_string();
                    write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                    // Present only with swap accounting; raised after the memory limit, which
                    // it may never be below.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes)?;
                    }
                    let _ = std::fs::write(dir.join("memory.swappiness"), "0");
                }
                "cpu" => {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves `pid` into every directory of the sandbox.
    pub fn add(&self, pid: u32) -> Result<(), NativeError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the sandbox (host pids); `None` when the cgroup is gone.
    pub fn pids(&self) -> Option<Vec<i32>> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(self.dirs[0].join("cgroup.procs"))
            .and_then(|f| f.take(MAX_PROCS_TEXT).read_to_string(&mut text))
            .ok()?;
        Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Whether `pid` is in the sandbox (its init, alive).
    pub fn holds(&self, pid: i32) -> bool {
        self.pids().is_some_and(|p| p.contains(&pid))
    }

    /// Kills everything in the sandbox and removes its directories. `cgroup.kill` where the
    /// kernel has it (one write, the kernel's own sweep: nothing forks past it); else SIGKILL
    /// to every pid listed, the init among them (whose end has the kernel kill every process
    /// of its pid namespace), until the list is empty. Gone already is not an error.
    /// `init`, the sandbox's init when known, is reaped once gone (it is this process's child
    /// when this process started it, or adopted it as a subreaper).
    pub fn destroy(&self, init: Option<i32>) -> Result<(), NativeError> {
        let reap = || {
            let Some(pid) = init.filter(|p| *p > 0) else {
                return;
            };
            // It leaves the cgroup a moment before it becomes a zombie; ECHILD: not ours.
            let until = Instant::now() + REAP_WITHIN;
            while let Ok(nix::sys::wait::WaitStatus::StillAlive) = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                if Instant::now() >= until {
                    return;
                }
                std::thread::sleep(POLL);
            }
        };
        if !self.dirs[0].exists() {
            reap();
            return self.remove_dirs();
        }
        if let Some(dir) = &self.killable {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
        let until = Instant::now() + EMPTY_WITHIN;
        loop {
            let pids = self.pids().unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if Instant::now() >= until {
                return Err(NativeError::Cgroup {
                    path: self.dirs[0].clone(),
                    source: std::io::Error::other(
                        "processes of the sandbox are still there after SIGKILL",
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
        reap();
        self.remove_dirs()
    }

    fn remove_dirs(&self) -> Result<(), NativeError> {
        for dir in &self.dirs {
            // A process that just exited may hold the directory a moment longer (EBUSY).
            let until = Instant::now() + EMPTY_WITHIN;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                        std::thread::sleep(POLL)
                    }
                    Err(source) => {
                        return Err(NativeError::Cgroup {
                            path: dir.clone(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

fn ensure_dir(dir: &Path) -> Result<(), NativeError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => {
            let fix = match source.raw_os_error() {
                Some(libc::EROFS) => {
                    ": the cgroup file system is read-only here (inside a container: run it \
                     with a writable cgroup, see docs/backends.md)"
                }
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    ": this user may not create cgroups there (run as root, or in a delegated \
                     cgroup v2)"
                }
                _ => "",
            };
            Err(NativeError::Cgroup {
                path: dir.to_path_buf(),
                source: std::io::Error::new(source.kind(), format!("{source}{fix}")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::native::host::V1Hierarchy;

    #[test]
    fn a_sandbox_has_a_directory_per_hierarchy_and_kills_through_v2() {
        let layout = Cgroups::V1 {
            hierarchies: ["pids", "memory", "cpu"]
                .into_iter()
                .map(|c| V1Hierarchy {
                    controller: c,
                    mount: PathBuf::from("/cg").join(c),
                    options: c.to_string(),
                })
                .collect(),
            unified: Some("/cg/unified".into()),
        };
        let cg = SandboxCgroup::of(&layout, "stockade-x-1");
        assert_eq!(
            cg.dirs,
            [
                "/cg/pids/stockade/stockade-x-1",
                "/cg/memory/stockade/stockade-x-1",
                "/cg/cpu/stockade/stockade-x-1",
                "/cg/unified/stockade/stockade-x-1"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            cg.killable,
            Some(PathBuf::from("/cg/unified/stockade/stockade-x-1"))
        );
        let v2 = Cgroups::V2 {
            mount: "/cg".into(),
            base: "/cg/stockade".into(),
        };
        let cg = SandboxCgroup::of(&v2, "s");
        assert_eq!(cg.dirs, [PathBuf::from("/cg/stockade/s")]);
        assert_eq!(cg.killable, Some(PathBuf::from("/cg/stockade/s")));
    }
}
