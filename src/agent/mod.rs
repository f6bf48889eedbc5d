//! The sandbox agent, host side: the binary stockade puts into every sandbox, the directories
//! that carry its channel, and the client that runs commands through it.
//!
//! The agent (`agent/` in this repository, the `stockade-agent` binary) is built statically and
//! embedded in stockade, so it runs in any image. stockade writes it once into the state
//! directory with mode 0111 (execute-only) and bind-mounts it read-only into every container:
//! a file the sandbox user cannot read makes the kernel mark the agent non-dumpable from the
//! moment it is exec'd, so no other process in the sandbox can open its /proc files (fds,
//! memory, environment), where its key and its listener live.
//!
//! The channel (threat model in docs/ARCHITECTURE.md):
//! - Each sandbox has a directory in the state directory ([`Channel`]): the key (0600), the
//!   socket the host connects to, and `run/`, the only part the sandbox sees, bind-mounted
//!   read-only at [`RUN_DIR_IN_CONTAINER`]. Nothing the sandbox can write is on the host.
//! - At launch the host listens on a one-time socket in `run/`, starts the agent with the key on
//!   its stdin, checks the agent's proof of the key, and passes it (SCM_RIGHTS) the listening
//!   socket whose path is in the private part of the directory. From then on the host connects
//!   to a path no sandbox process can reach, to a listener only the agent holds.
//! - Every request and every result is MACed under the key, bound to a nonce of each side.

pub mod client;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::state;

/// The agent binary, as built by build.rs.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stockade-agent"));
/// Its SHA-256, computed at build time.
pub const BINARY_SHA256: &str = env!("STOCKADE_AGENT_SHA256");

/// Where the agent binary is mounted in every container (read-only, execute-only).
pub const AGENT_IN_CONTAINER: &str = "/run/stockade-agent";
/// Where a sandbox's `run/` directory is mounted (read-only).
pub const RUN_DIR_IN_CONTAINER: &str = "/run/stockade";
/// Mode of the installed agent binary: execute-only for everyone, the owner included.
pub const BINARY_MODE: u32 = 0o111;
/// Mode of `run/`: the sandbox user may traverse it to reach the launch socket, nothing else.
const RUN_DIR_MODE: u32 = 0o711;

const AGENT_DIR: &str = "agent";
const BINARY_NAME: &str = "stockade-agent";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot write the sandbox agent to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The host paths of the agent's mounts for one container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mounts {
    /// The installed agent binary.
    pub binary: PathBuf,
    /// The sandbox's `run/` directory.
    pub run_dir: PathBuf,
    /// A read-only /etc/hostname. The engine's own is a file on the host's disk, bind-mounted
    /// writable into a container whose root is writable; one of ours takes its place (the
    /// engine skips its own when a mount covers the path).
    pub hostname: PathBuf,
}

impl Mounts {
    /// `SOURCE:TARGET:ro` bind specifications.
    pub fn binds(&self) -> Vec<String> {
        vec![
            format!("{}:{AGENT_IN_CONTAINER}:ro", self.binary.display()),
            format!("{}:{RUN_DIR_IN_CONTAINER}:ro", self.run_dir.display()),
            format!("{}:/etc/hostname:ro", self.hostname.display()),
        ]
    }
}

/// The installed agent binary and the read-only files every container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub binary: PathBuf,
    pub hostname: PathBuf,
}

/// The contents of every sandbox's /etc/hostname.
const HOSTNAME: &[u8] = b"sandbox\n";

/// Writes the agent binary into the state directory (once per agent build), and the read-only
/// files every container mounts. A file is replaced, never modified: a container started with an
/// earlier binary keeps the inode it mounted.
pub fn install(state_dir: &Path) -> Result<Installed, InstallError> {
    let dir = state_dir.join(AGENT_DIR);
    state::ensure_private_dir(state_dir)?;
    state::ensure_private_dir(&dir)?;
    let hostname = dir.join("hostname");
    let hostname_ok = std::fs::symlink_metadata(&hostname).is_ok_and(|m| {
        m.is_file() && m.mode() & 0o7777 == 0o444 && m.len() == HOSTNAME.len() as u64
    });
    if !hostname_ok {
        replace_file(&dir, &hostname, HOSTNAME, 0o444)?;
    }
    let binary = install_binary(&dir)?;
    Ok(Installed { binary, hostname })
}

/// Writes `bytes` to a temporary file in `dir` with `mode`, then renames it over `path`.
fn replace_file(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let write_err = |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    // Unique per process and per call: installs running at once in one process (a server's
    // first requests) must not write through each other's temporary file.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        "{}.{}-{call}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(write_err)?;
        file.write_all(bytes).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(write_err)?;
    }
    std::fs::rename(&tmp, path).map_err(write_err)
}

fn install_binary(dir: &Path) -> Result<PathBuf, InstallError> {
    let path = dir.join(BINARY_NAME);
    let digest_path = dir.join(format!("{BINARY_NAME}.sha256"));
    let current = std::fs::symlink_metadata(&path).ok().is_some_and(|m| {
        m.is_file()
            && m.mode() & 0o7777 == BINARY_MODE
            && m.uid() == nix::unistd::geteuid().as_raw()
            && m.len() == BINARY.len() as u64
    }) && std::fs::read_to_string(&digest_path).ok().as_deref()
        == Some(BINARY_SHA256);
    if current {
        return Ok(path);
    }
    replace_file(dir, &path, BINARY, BINARY_MODE)?;
    state::write_private_file(&digest_path, BINARY_SHA256.as_bytes())?;
    Ok(path)
}

/// One sandbox's channel directory in the state directory.
#[derive(Debug, Clone)]
pub struct Channel {
    dir: PathBuf,
}

impl Channel {
    /// A session's: `sessions/<session>/`.
    pub fn session(state_dir: &Path, session: &str) -> Channel {
        Channel {
            dir: state_dir.join("sessions").join(session),
        }
    }

    /// A one-shot execution's: `run/<exec id>/`.
    pub fn oneshot(state_dir: &Path, exec_id: &str) -> Channel {
        Channel {
            dir: state_dir.join("run").join(exec_id),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The part the sandbox sees (read-only).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Creates the directory (0700) and `run/` (0711), replacing whatever is at `run/` if it is
    /// not a directory of ours.
    pub fn prepare(&self) -> Result<(), state::StateError> {
        if let Some(parent) = self.dir.parent() {
            state::ensure_private_dir(parent)?;
        }
        state::ensure_private_dir(&self.dir)?;
        let run = self.run_dir();
        let ours = std::fs::symlink_metadata(&run)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw());
        if !ours {
            remove_any(&run);
            std::fs::create_dir(&run).map_err(|source| state::StateError::CreateDir {
                path: run.clone(),
                source,
            })?;
        }
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(RUN_DIR_MODE)).map_err(
            |source| state::StateError::CreateDir {
                path: run.clone(),
                source,
            },
        )?;
        Ok(())
    }

    /// The mounts for a container using this channel.
    pub fn mounts(&self, installed: Installed) -> Mounts {
        Mounts {
            binary: installed.binary,
            run_dir: self.run_dir(),
            hostname: installed.hostname,
        }
    }

    /// Removes the whole directory.
    pub fn remove(&self) {
        remove_any(&self.dir);
    }
}

/// Removes a file, a socket or a directory tree at `path`, whichever it is.
pub(crate) fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_agent_is_a_static_executable() {
        assert!(BINARY.starts_with(b"\x7fELF"));
        assert_eq!(BINARY_SHA256.len(), 64);
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(BINARY)), BINARY_SHA256);
    }

    #[test]
    fn install_writes_an_execute_only_copy_once_and_repairs_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let path = install(&state).unwrap().binary;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, BINARY_MODE);
        assert_eq!(meta.len(), BINARY.len() as u64);
        let ino = meta.ino();
        assert_eq!(
            std::fs::metadata(install(&state).unwrap().binary)
                .unwrap()
                .ino(),
            ino
        );
        // A copy with the wrong mode is replaced, not trusted.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let again = install(&state).unwrap();
        assert_eq!(
            std::fs::metadata(&again.binary).unwrap().mode() & 0o7777,
            BINARY_MODE
        );
        assert_eq!(std::fs::read(&again.hostname).unwrap(), HOSTNAME);
    }

    #[test]
    fn prepare_replaces_whatever_sits_at_run() {
        let tmp = tempfile::tempdir().unwrap();
        let channel = Channel::session(&tmp.path().join("state"), "s1");
        channel.prepare().unwrap();
        std::fs::remove_dir(channel.run_dir()).unwrap();
        std::fs::write(channel.run_dir(), b"not a directory").unwrap();
        channel.prepare().unwrap();
        let meta = std::fs::symlink_metadata(channel.run_dir()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, RUN_DIR_MODE);
        channel.remove();
        assert!(!channel.dir().exists());
    }
}
