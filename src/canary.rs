//! Host-side canaries: what a sandbox escape would change on the host, read before and after
//! commands run in sandboxes, from the host (nothing here runs a command on the host).
//!
//! - processes: a new process that survives the run and runs as the sandbox user, sits in the
//!   cgroup of a container (or native sandbox) that no longer exists, or was started by the
//!   kernel on behalf of userspace (a child of kthreadd with a command line: core_pattern
//!   pipes, modprobe, cgroup release agents);
//! - mounts of the host's mount namespace, outside the engine's own directories;
//! - loaded kernel modules;
//! - `/proc/sys/kernel/core_pattern` and `/proc/sys/kernel/modprobe`;
//! - containers: a new container that stockade did not create;
//! - a canary file with random contents (hash and modification time).
//!
//! Other activity on the host (other users, builds) is not a finding: processes are judged by
//! the marks an escape leaves, and a change must persist across two samples.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::{Backend, BackendError};

/// Mount points under these belong to the engine (container root filesystems, network
/// namespaces, shm): they come and go with every container, ours or not.
const ENGINE_MOUNT_PREFIXES: &[&str] = &[
    "/var/lib/docker/",
    "/var/lib/containerd/",
    "/run/docker/",
    "/var/run/docker/",
    "/run/containerd/",
    "/var/run/containerd/",
    "/run/netns/",
];
/// kthreadd: the parent of kernel threads and of usermode helpers the kernel starts.
const KTHREADD: i32 = 2;
/// Random bytes in the canary file.
const CANARY_BYTES: usize = 64;
/// A change must still be there this long after it was first seen.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanaryError {
    #[error("cannot create the canary file {path}: {source}")]
    CanaryFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// One host process, identified by pid and start time (pids are reused).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
    pub ppid: i32,
    pub uid: u32,
    pub cmdline: String,
    pub cgroup: String,
}

/// Everything the canaries look at, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub processes: BTreeMap<(i32, u64), Proc>,
    pub mounts: BTreeSet<String>,
    pub modules: BTreeSet<String>,
    pub core_pattern: Option<String>,
    pub modprobe: Option<String>,
    /// Container id -> whether stockade manages it.
    pub containers: BTreeMap<String, bool>,
    pub canary: Option<(String, Option<std::time::SystemTime>)>,
}

/// One canary that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub canary: &'static str,
    pub what: String,
}

/// The canary file: created with random contents in a private directory of its own, checked,
/// removed on drop.
#[derive(Debug)]
pub struct CanaryFile {
    dir: PathBuf,
}

impl CanaryFile {
    pub fn create() -> Result<CanaryFile, CanaryError> {
        let dir = std::env::temp_dir().join(format!(
            "stockade-canary-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let fail = |source| CanaryError::CanaryFile {
            path: dir.clone(),
            source,
        };
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .map_err(fail)?;
        let canary = CanaryFile { dir };
        let bytes: Vec<u8> = (0..CANARY_BYTES / 16)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        fs::write(canary.path(), bytes).map_err(|source| CanaryError::CanaryFile {
            path: canary.path(),
            source,
        })?;
        Ok(canary)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("canary")
    }

    fn read(&self) -> Option<(String, Option<std::time::SystemTime>)> {
        let path = self.path();
        let bytes = fs::read(&path).ok()?;
        let modified = fs::metadata(&path).and_then(|m| m.modified()).ok();
        Some((hex::encode(Sha256::digest(bytes)), modified))
    }
}

impl Drop for CanaryFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn processes() -> BTreeMap<(i32, u64), Proc> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if let Some(p) = process(pid) {
            out.insert((p.pid, p.start), p);
        }
    }
    out
}

fn process(pid: i32) -> Option<Proc> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    // comm may contain spaces and parentheses: the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // stat(5): after pid and comm, field 3 is state (index 0 here), 4 ppid, 22 starttime.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    Some(Proc {
        pid,
        start,
        ppid,
        uid,
        cmdline,
        cgroup,
    })
}

fn mounts() -> BTreeSet<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // mountinfo(5): field 5 is the mount point; after " - ": fs type and source.
            let fields: Vec<&str> = line.split(' ').collect();
            let point = *fields.get(4)?;
            let tail = line.split(" - ").nth(1)?;
            let mut tail = tail.split(' ');
            let (fstype, source) = (tail.next()?, tail.next().unwrap_or(""));
            (!ENGINE_MOUNT_PREFIXES.iter().any(|p| point.starts_with(p)))
                .then(|| format!("{point} {fstype} {source}"))
        })
        .collect()
}

fn modules() -> BTreeSet<String> {
    let text = fs::read_to_string("/proc/modules").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}

impl Snapshot {
    pub async fn take<B: Backend>(
        backend: &B,
        canary: &CanaryFile,
    ) -> Result<Snapshot, CanaryError> {
        let containers = backend.census().await?.into_iter().collect();
        Ok(Snapshot {
            processes: processes(),
            mounts: mounts(),
            modules: modules(),
            core_pattern: read_trimmed("/proc/sys/kernel/core_pattern"),
            modprobe: read_trimmed("/proc/sys/kernel/modprobe"),
            containers,
            canary: canary.read(),
        })
    }
}

/// Why a process new since `before` is an escape suspect, if it is one.
fn suspect(p: &Proc, sandbox_uid: u32, live_containers: &BTreeMap<String, bool>) -> Option<String> {
    if p.uid == sandbox_uid && sandbox_uid != 0 && !in_live_container(p, live_containers) {
        return Some(format!(
            "runs as the sandbox user (uid {sandbox_uid}) outside any running container"
        ));
    }
    if let Some(id) = container_of(p) {
        if !live_containers.contains_key(id) {
            return Some(format!("left in the cgroup of removed container {id}"));
        }
    }
    if p.ppid == KTHREADD && !p.cmdline.is_empty() {
        return Some("started by the kernel for userspace (usermode helper)".to_string());
    }
    None
}

/// The sandbox a process's cgroup path names: a container id (`.../docker/<64 hex>` or
/// `docker-<id>.scope`), or a native sandbox's name (`.../stockade/stockade-x-...`).
fn container_of(p: &Proc) -> Option<&str> {
    p.cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        let parts: Vec<&str> = path.split('/').collect();
        parts.iter().enumerate().find_map(|(i, part)| {
            let native = i > 0
                && parts[i - 1] == crate::backend::native::host::CGROUP_DIR
                && part.starts_with("stockade-");
            if native {
                return Some(*part);
            }
            let id = part
                .strip_prefix("docker-")
                .and_then(|s| s.strip_suffix(".scope"))
                .unwrap_or(part);
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
        })
    })
}

fn in_live_container(p: &Proc, live: &BTreeMap<String, bool>) -> bool {
    container_of(p).is_some_and(|id| live.contains_key(id))
}

/// What changed between `before` and `after` that a sandbox escape would explain.
pub fn compare(before: &Snapshot, after: &Snapshot, sandbox_uid: u32) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut add = |canary, what: String| changes.push(Change { canary, what });
    for (key, p) in &after.processes {
        if before.processes.contains_key(key) {
            continue;
        }
        if let Some(why) = suspect(p, sandbox_uid, &after.containers) {
            add(
                "processes",
                format!("new process {} ({:?}): {why}", p.pid, p.cmdline),
            );
        }
    }
    for m in after.mounts.difference(&before.mounts) {
        add("mounts", format!("new mount: {m}"));
    }
    for m in before.mounts.difference(&after.mounts) {
        add("mounts", format!("mount gone: {m}"));
    }
    for m in after.modules.symmetric_difference(&before.modules) {
        add("modules", format!("kernel module loaded or removed: {m}"));
    }
    if before.core_pattern != after.core_pattern {
        add(
            "core_pattern",
            format!("{:?} -> {:?}", before.core_pattern, after.core_pattern),
        );
    }
    if before.modprobe != after.modprobe {
        add(
            "modprobe",
            format!("{:?} -> {:?}", before.modprobe, after.modprobe),
        );
    }
    for (id, managed) in &after.containers {
        if !managed && !before.containers.contains_key(id) {
            add(
                "containers",
                format!("new container not made by stockade: {id}"),
            );
        }
    }
    if before.canary != after.canary {
        add(
            "canary_file",
            "the canary file's contents or modification time changed".to_string(),
        );
    }
    changes
}

/// [`compare`] twice, [`SETTLE`] apart: only changes seen both times count, so that engine
/// housekeeping of other containers caught mid-way is not a finding.
pub async fn settled_changes(
    backend: &impl Backend,
    canary: &CanaryFile,
    before: &Snapshot,
    sandbox_uid: u32,
) -> Result<Vec<Change>, CanaryError> {
    let first = compare(before, &Snapshot::take(backend, canary).await?, sandbox_uid);
    if first.is_empty() {
        return Ok(first);
    }
    tokio::time::sleep(SETTLE).await;
    let second = compare(before, &Snapshot::take(backend, canary).await?, sandbox_uid);
    Ok(first.into_iter().filter(|c| second.contains(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(uid: u32, ppid: i32, cmdline: &str, cgroup: &str) -> Proc {
        Proc {
            pid: 4242,
            start: 1,
            ppid,
            uid,
            cmdline: cmdline.into(),
            cgroup: cgroup.into(),
        }
    }

    fn empty() -> Snapshot {
        Snapshot {
            processes: BTreeMap::new(),
            mounts: BTreeSet::new(),
            modules: BTreeSet::new(),
            core_pattern: Some("core".into()),
            modprobe: None,
            containers: BTreeMap::new(),
            canary: Some(("h".into(), None)),
        }
    }

    #[test]
    fn escape_marks_are_suspects_and_host_activity_is_not() {
        let id = "a".repeat(64);
        let live = BTreeMap::from([(id.clone(), true)]);
        let in_box = format!("12:pids:/docker/{id}\n");
        assert!(suspect(&proc_with(1000, 77, "sleep 1", &in_box), 1000, &live).is_none());
        assert!(suspect(
            &proc_with(1000, 77, "sleep 1", "0::/user.slice"),
            1000,
            &live
        )
        .is_some());
        let gone = format!("12:pids:/docker/{}\n", "b".repeat(64));
        assert!(suspect(&proc_with(0, 77, "sh", &gone), 1000, &live).is_some());
        assert!(suspect(&proc_with(0, 2, "/sbin/modprobe x", ""), 1000, &live).is_some());
        assert!(
            suspect(&proc_with(0, 2, "", ""), 1000, &live).is_none(),
            "kernel thread"
        );
        assert!(suspect(&proc_with(0, 1, "cargo build", "0::/"), 1000, &live).is_none());
        // A native sandbox is named by its cgroup.
        let native = "12:pids:/stockade/stockade-x-1a2b\n";
        let live = BTreeMap::from([("stockade-x-1a2b".to_string(), true)]);
        assert!(suspect(&proc_with(1000, 77, "sleep 1", native), 1000, &live).is_none());
        assert!(suspect(&proc_with(0, 77, "sh", native), 1000, &BTreeMap::new()).is_some());
        let scope = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(
            container_of(&proc_with(0, 1, "", &scope)),
            Some(id.as_str())
        );
    }

    #[test]
    fn compare_reports_each_canary() {
        let before = empty();
        let mut after = empty();
        after.mounts.insert("/mnt ext4 /dev/sda1".into());
        after.modules.insert("evil".into());
        after.core_pattern = Some("|/tmp/x".into());
        after.containers.insert("c1".into(), false);
        after.containers.insert("c2".into(), true);
        after.canary = Some(("other".into(), None));
        let kinds: Vec<&str> = compare(&before, &after, 1000)
            .iter()
            .map(|c| c.canary)
            .collect();
        assert_eq!(
            kinds,
            vec![
                "mounts",
                "modules",
                "core_pattern",
                "containers",
                "canary_file"
            ]
        );
        assert!(compare(&before, &empty(), 1000).is_empty());
    }

    #[test]
    fn this_host_reads() {
        let procs = processes();
        let me = procs
            .values()
            .find(|p| p.pid == std::process::id() as i32)
            .expect("this process is listed");
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert!(!mounts().is_empty());
    }
}
