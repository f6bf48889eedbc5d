//! The state directory: what outlives one command (the audit log, sessions, build locks).
//!
//! Everything stockade writes there is private to the user running it: directories are 0700,
//! files 0600, both owned by that user, and neither may be a symbolic link. These properties
//! are checked every time something is opened, on the open descriptor (`fstat`), so a check
//! cannot be raced by swapping the path afterwards. A violation is refused, never repaired:
//! the error names the path, what is wrong, and the command that fixes it. Repairing silently
//! would hide that someone else could have written (or replaced) what stockade is about to trust.

use std::ffi::OsString;
use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::unistd::geteuid;

/// Environment variable naming the state directory (after `--state-dir`).
pub const STATE_DIR_ENV: &str = "STOCKADE_STATE_DIR";
/// Mode of every directory stockade creates in its state.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file stockade creates in its state.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Permission bits that give the group or others any access.
const GROUP_OTHER_BITS: u32 = 0o077;
/// Permission bits (without the file type).
const PERMISSION_BITS: u32 = 0o7777;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(
        "no state directory: neither --state-dir, ${STATE_DIR_ENV}, $XDG_STATE_HOME nor $HOME \
         is set; pass --state-dir DIR"
    )]
    NoStateDir,
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error(
        "{path} is a symbolic link; stockade does not follow links in its state directory: \
         remove the link (rm {path}) or pass the real path"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a {expected}: move it aside (mv {path} {path}.old)")]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{path} is owned by uid {owner}, not by uid {uid} running stockade: \
         chown {uid} {path}, or use a state directory of your own (--state-dir)"
    )]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{path} has mode {mode:04o}, which gives other users access (want {want:04o}): \
         chmod {want:o} {path}"
    )]
    TooPermissive { path: PathBuf, mode: u32, want: u32 },
}

impl StateError {
    /// True when the error is "the file does not exist" (callers treat that as "not yet").
    pub fn is_not_found(&self) -> bool {
        matches!(self, StateError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Where stockade keeps its state: `--state-dir`, else `$STOCKADE_STATE_DIR`, else
/// `$XDG_STATE_HOME/stockade`, else `~/.local/state/stockade`, from the environment `env`.
pub fn resolve_state_dir(
    cli: Option<PathBuf>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, StateError> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = cli {
        return Ok(dir);
    }
    if let Some(dir) = non_empty(STATE_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    // The XDG base directory spec says relative values are invalid and must be ignored.
    if let Some(xdg) = non_empty("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(xdg.join("stockade"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".local/state/stockade"));
    }
    Err(StateError::NoStateDir)
}

/// Creates `path` (and missing parents) with mode 0700 if needed, then checks that it is a
/// real directory owned by the current user with no group/other access.
pub fn ensure_private_dir(path: &Path) -> Result<(), StateError> {
    open_private_dir(path).map(drop)
}

/// [`ensure_private_dir`], returning the directory opened (`O_DIRECTORY | O_NOFOLLOW`) so that
/// files inside it can be opened relative to the checked descriptor.
pub fn open_private_dir(path: &Path) -> Result<OwnedFd, StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(|source| StateError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(AT_FDCWD, path, flags, Mode::empty())
        .map_err(|errno| open_error(path, errno, "directory"))?;
    check_private(fd.as_fd(), path, Kind::Dir)?;
    Ok(fd)
}

/// Opens `name` inside the (already checked) directory `dir` with `O_NOFOLLOW | O_CLOEXEC` and
/// the given access flags, creating it 0600 when `flags` has `O_CREAT`, then checks that it is a
/// regular file owned by the current user with no group/other access. `dir_path` is only used
/// in error messages.
pub fn open_private_file_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    flags: OFlag,
) -> Result<File, StateError> {
    let path = dir_path.join(name);
    // O_NONBLOCK: opening a FIFO planted under our name must fail the type check below rather
    // than block forever waiting for a reader; it has no effect on regular files.
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let fd = openat(
        dir,
        name,
        flags,
        Mode::from_bits_truncate(PRIVATE_FILE_MODE),
    )
    .map_err(|errno| open_error(&path, errno, "regular file"))?;
    check_private(fd.as_fd(), &path, Kind::File)?;
    Ok(File::from(fd))
}

/// Opens (or creates, with `O_CREAT` in `flags`) a private file by path: its parent directory
/// goes through [`open_private_dir`], the file through [`open_private_file_at`].
pub fn open_private_file(path: &Path, flags: OFlag) -> Result<File, StateError> {
    let wrong = || StateError::WrongType {
        path: path.to_owned(),
        expected: "file path",
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(wrong)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = open_private_dir(parent)?;
    open_private_file_at(dir.as_fd(), parent, name, flags)
}

/// Writes `bytes` to a private file (created 0600, truncated), through [`open_private_file`].
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let mut file = open_private_file(path, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC)?;
    file.write_all(bytes)
        .map_err(|source| StateError::CreateDir {
            path: path.to_owned(),
            source,
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    File,
}

fn open_error(path: &Path, errno: Errno, expected: &'static str) -> StateError {
    // O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR, not ELOOP; tell them apart.
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match errno {
        Errno::ENOTDIR if is_link() => StateError::Symlink {
            path: path.to_owned(),
        },
        // O_NOFOLLOW on a final component that is a symlink fails with ELOOP (open(2)).
        Errno::ELOOP => StateError::Symlink {
            path: path.to_owned(),
        },
        Errno::ENOTDIR => StateError::WrongType {
            path: path.to_owned(),
            expected,
        },
        _ => StateError::Open {
            path: path.to_owned(),
            source: io::Error::from(errno),
        },
    }
}

/// Type, owner and mode of an open descriptor, checked with `fstat` on the descriptor itself.
fn check_private(fd: BorrowedFd<'_>, path: &Path, kind: Kind) -> Result<(), StateError> {
    let owned = fd
        .try_clone_to_owned()
        .map_err(|source| StateError::Inspect {
            path: path.to_owned(),
            source,
        })?;
    let meta = File::from(owned)
        .metadata()
        .map_err(|source| StateError::Inspect {
            path: path.to_owned(),
            source,
        })?;
    let (type_ok, expected, want) = match kind {
        Kind::Dir => (meta.is_dir(), "directory", PRIVATE_DIR_MODE),
        Kind::File => (meta.is_file(), "regular file", PRIVATE_FILE_MODE),
    };
    if !type_ok {
        return Err(StateError::WrongType {
            path: path.to_owned(),
            expected,
        });
    }
    let uid = geteuid().as_raw();
    if meta.uid() != uid {
        return Err(StateError::WrongOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & PERMISSION_BITS;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(StateError::TooPermissive {
            path: path.to_owned(),
            mode,
            want,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn state_dir_precedence() {
        let all = env_of(&[
            ("STOCKADE_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            resolve_state_dir(Some("/cli".into()), &all).unwrap(),
            PathBuf::from("/cli")
        );
        assert_eq!(resolve_state_dir(None, &all).unwrap(), PathBuf::from("/s"));
        let xdg = env_of(&[("XDG_STATE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(
            resolve_state_dir(None, xdg).unwrap(),
            PathBuf::from("/x/stockade")
        );
        let relative_xdg = env_of(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]);
        assert_eq!(
            resolve_state_dir(None, relative_xdg).unwrap(),
            PathBuf::from("/h/.local/state/stockade")
        );
        let empty = env_of(&[("STOCKADE_STATE_DIR", ""), ("HOME", "/h")]);
        assert_eq!(
            resolve_state_dir(None, empty).unwrap(),
            PathBuf::from("/h/.local/state/stockade")
        );
        assert!(matches!(
            resolve_state_dir(None, env_of(&[])),
            Err(StateError::NoStateDir)
        ));
    }

    #[test]
    fn creates_private_dir_with_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & GROUP_OTHER_BITS, 0, "mode {mode:o}");
        // Idempotent.
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn refuses_loose_dir_with_chmod_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, StateError::TooPermissive { mode: 0o755, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 700 {}", dir.display())),
            "{msg}"
        );
    }

    #[test]
    fn refuses_symlinked_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        ensure_private_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(matches!(err, StateError::Symlink { .. }), "{err:?}");
        assert!(err.to_string().contains(&link.display().to_string()));
    }

    #[test]
    fn refuses_file_where_dir_expected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let err = ensure_private_dir(&path).unwrap_err();
        // create_dir_all reports "exists" for a file in the way.
        assert!(
            matches!(
                err,
                StateError::CreateDir { .. } | StateError::WrongType { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn private_file_created_0600_and_loose_file_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/x.json");
        let flags = OFlag::O_CREAT | OFlag::O_WRONLY;
        open_private_file(&path, flags).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & GROUP_OTHER_BITS, 0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = open_private_file(&path, flags).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }

    #[test]
    fn refuses_fifo_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_private_dir(&dir).unwrap();
        let fifo = dir.join("f");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = open_private_file(&fifo, OFlag::O_RDONLY).unwrap_err();
        assert!(matches!(err, StateError::WrongType { .. }), "{err:?}");
    }

    #[test]
    fn refuses_dir_owned_by_another_uid() {
        if !geteuid().is_root() {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_private_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, StateError::WrongOwner { owner: 65534, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chown"), "{err}");
    }
}
