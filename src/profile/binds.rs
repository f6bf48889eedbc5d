//! Bind sources judged by what they are, not by what they are called.
//!
//! A hard link to the Docker socket has no `.sock` in its name; a symlink farm can spell any
//! path. So a source is resolved and stat'ed, and refused when it is not a plain file or
//! directory (a socket, a device, a FIFO), when it is (by device and inode) a container
//! runtime's socket or state directory, or lies inside one, or contains one, and when a bounded
//! scan of a bound directory finds a socket in it.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Container runtime sockets: access to any of them is root on the host.
pub const RUNTIME_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
    "/var/run/cri-dockerd.sock",
    "/run/cri-dockerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/buildkit/buildkitd.sock",
];
/// Runtime state directories: their contents are other containers' filesystems and the
/// runtimes' own control files.
pub const RUNTIME_DIRS: &[&str] = &[
    "/run/docker",
    "/var/run/docker",
    "/var/lib/docker",
    "/run/containerd",
    "/var/lib/containerd",
    "/run/crio",
    "/var/lib/containers",
    "/run/containers",
    "/run/podman",
    "/run/k3s",
    "/var/lib/rancher",
    "/var/lib/kubelet",
    "/run/buildkit",
];
/// Per-user runtimes (rootless Docker and Podman) under `/run/user/<uid>/`.
const USER_RUNTIME_ENTRIES: &[&str] = &["docker.sock", "podman", "containerd", "docker"];
/// Entries a bound directory is scanned for sockets at most; a larger tree is loaded with a
/// warning that it was not fully scanned.
pub const MAX_SCAN_ENTRIES: usize = 20_000;
const MAX_SCAN_DEPTH: usize = 32;

/// A runtime path that exists on this host, with its identity.
#[derive(Debug, Clone)]
struct RuntimePath {
    path: PathBuf,
    id: (u64, u64),
    socket: bool,
}

/// The container runtimes' sockets and directories on this host, and the owners of the sockets.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    paths: Vec<RuntimePath>,
    /// (dev, ino) of every directory that contains a runtime path (its ancestors).
    ancestors: HashSet<(u64, u64)>,
    /// Owner uid and gid of each runtime socket: a sandbox user or group with these reaches it.
    pub socket_owners: Vec<(PathBuf, u32, u32)>,
}

fn id_of(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl Runtime {
    /// Looks the runtime paths up on this host, plus `engine_sockets` (the one `DOCKER_HOST`
    /// names).
    pub fn probe(engine_sockets: &[PathBuf]) -> Runtime {
        let mut candidates: Vec<PathBuf> = RUNTIME_SOCKETS
            .iter()
            .chain(RUNTIME_DIRS)
            .map(PathBuf::from)
            .chain(engine_sockets.iter().cloned())
            .collect();
        if let Ok(users) = std::fs::read_dir("/run/user") {
            for user in users.flatten().take(4096) {
                for entry in USER_RUNTIME_ENTRIES {
                    candidates.push(user.path().join(entry));
                }
            }
        }
        let mut runtime = Runtime::default();
        for path in candidates {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let socket = meta.file_type().is_socket();
            if socket {
                runtime
                    .socket_owners
                    .push((path.clone(), meta.uid(), meta.gid()));
            }
            let resolved = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            for ancestor in resolved.ancestors().skip(1) {
                if let Ok(m) = std::fs::metadata(ancestor) {
                    runtime.ancestors.insert(id_of(&m));
                }
            }
            runtime.paths.push(RuntimePath {
                path,
                id: id_of(&meta),
                socket,
            });
        }
        runtime
    }

    fn named(&self, id: (u64, u64)) -> Option<&RuntimePath> {
        self.paths.iter().find(|p| p.id == id)
    }
}

/// Checks one bind source. `Ok(warnings)` when it may be bound.
pub fn check_source(source: &Path, runtime: &Runtime) -> Result<Vec<String>, String> {
    let shown = source.display();
    let resolved = std::fs::canonicalize(source).map_err(|e| {
        format!("source {shown:?} cannot be resolved ({e}); a bind source must exist")
    })?;
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("source {shown:?}: {e}"))?;
    let kind = meta.file_type();
    if kind.is_socket() {
        return Err(match runtime.named(id_of(&meta)) {
            Some(r) => format!(
                "source {shown:?} is the container runtime's socket {} (the same file): that is root on the host",
                r.path.display()
            ),
            None => format!("source {shown:?} is a socket; sockets are never bound into a sandbox"),
        });
    }
    if kind.is_block_device() || kind.is_char_device() {
        return Err(format!(
            "source {shown:?} is a device; devices are never bound into a sandbox"
        ));
    }
    if kind.is_fifo() {
        return Err(format!(
            "source {shown:?} is a FIFO, a channel to whatever holds its other end; only files and directories are bound"
        ));
    }
    if let Some(r) = runtime.named(id_of(&meta)) {
        return Err(format!(
            "source {shown:?} is the container runtime's {} {}: that is root on the host",
            if r.socket {
                "socket"
            } else {
                "state directory"
            },
            r.path.display()
        ));
    }
    if runtime.ancestors.contains(&id_of(&meta)) {
        let inside: Vec<String> = runtime
            .paths
            .iter()
            .filter(|p| {
                std::fs::canonicalize(&p.path)
                    .map(|c| c.starts_with(&resolved))
                    .unwrap_or(false)
            })
            .map(|p| p.path.display().to_string())
            .collect();
        return Err(format!(
            "source {shown:?} contains the container runtime ({}): that is root on the host",
            if inside.is_empty() {
                "its socket or state".to_string()
            } else {
                inside.join(", ")
            }
        ));
    }
    for ancestor in resolved.ancestors().skip(1) {
        if let Some(r) = std::fs::metadata(ancestor)
            .ok()
            .and_then(|m| runtime.named(id_of(&m)))
        {
            return Err(format!(
                "source {shown:?} is inside the container runtime's {} {}",
                if r.socket {
                    "socket"
                } else {
                    "state directory"
                },
                r.path.display()
            ));
        }
    }
    let mut warnings = Vec::new();
    if kind.is_dir() {
        match scan_for_sockets(&resolved, runtime) {
            Scan::Clean => {}
            Scan::Socket(found) => {
                return Err(format!(
                    "source {shown:?} holds a socket at {}; a bound socket is a channel out of the sandbox",
                    found.display()
                ))
            }
            Scan::TooLarge => warnings.push(format!(
                "bind source {shown:?} has more than {MAX_SCAN_ENTRIES} entries; only the first were checked for sockets"
            )),
        }
    }
    Ok(warnings)
}

enum Scan {
    Clean,
    Socket(PathBuf),
    TooLarge,
}

/// Walks `dir` (not following symlinks: a link in a bound tree is resolved inside the sandbox,
/// where it cannot leave the mount) looking for a socket or a runtime directory.
fn scan_for_sockets(dir: &Path, runtime: &Runtime) -> Scan {
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((path, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_SCAN_ENTRIES {
                return Scan::TooLarge;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_socket() || runtime.named(id_of(&meta)).is_some() {
                return Scan::Socket(entry.path());
            }
            if meta.is_dir() && depth < MAX_SCAN_DEPTH {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    Scan::Clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_with(socket: &Path, dir: &Path) -> Runtime {
        let mut r = Runtime::default();
        for (path, is_socket) in [(socket, true), (dir, false)] {
            let meta = std::fs::metadata(path).unwrap();
            r.paths.push(RuntimePath {
                path: path.to_path_buf(),
                id: id_of(&meta),
                socket: is_socket,
            });
            for a in std::fs::canonicalize(path).unwrap().ancestors().skip(1) {
                r.ancestors.insert(id_of(&std::fs::metadata(a).unwrap()));
            }
        }
        r
    }

    #[test]
    fn sources_are_judged_by_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let runtime_dir = root.join("var/lib/runtime");
        std::fs::create_dir_all(runtime_dir.join("volumes/v1")).unwrap();
        let sock_dir = root.join("run");
        std::fs::create_dir_all(&sock_dir).unwrap();
        let socket = sock_dir.join("engine.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let runtime = runtime_with(&socket, &runtime_dir);

        // A hard link to the socket: another name, the same file.
        let elsewhere = root.join("innocent");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::hard_link(&socket, elsewhere.join("data")).unwrap();
        let err = check_source(&elsewhere.join("data"), &runtime).unwrap_err();
        assert!(err.contains("runtime's socket"), "{err}");
        // The directory that holds that link is refused too (a socket inside).
        let err = check_source(&elsewhere, &runtime).unwrap_err();
        assert!(err.contains("holds a socket"), "{err}");
        // A symlink to the runtime's directory, a directory inside it, one that contains it.
        std::os::unix::fs::symlink(&runtime_dir, root.join("link")).unwrap();
        assert!(check_source(&root.join("link"), &runtime)
            .unwrap_err()
            .contains("state directory"));
        assert!(check_source(&runtime_dir.join("volumes/v1"), &runtime)
            .unwrap_err()
            .contains("inside"));
        assert!(check_source(&root.join("var"), &runtime)
            .unwrap_err()
            .contains("contains"));
        // Plain files and directories pass; missing ones do not.
        let plain = root.join("plain");
        std::fs::create_dir_all(plain.join("sub")).unwrap();
        std::fs::write(plain.join("sub/f"), b"x").unwrap();
        assert_eq!(check_source(&plain, &runtime), Ok(vec![]));
        assert!(check_source(&root.join("missing"), &runtime)
            .unwrap_err()
            .contains("must exist"));
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        let runtime = Runtime::default();
        assert!(check_source(Path::new("/dev/null"), &runtime)
            .unwrap_err()
            .contains("device"));
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(check_source(&fifo, &runtime).unwrap_err().contains("FIFO"));
    }

    #[test]
    fn this_hosts_docker_socket_is_found_when_present() {
        let runtime = Runtime::probe(&[]);
        for (path, _, _) in &runtime.socket_owners {
            assert!(check_source(path, &runtime).is_err(), "{}", path.display());
        }
    }
}
