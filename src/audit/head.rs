//! The head file: where the log ended after the last successful append.
//!
//! A hash chain alone cannot tell a log whose last records were cut off from a shorter log.
//! `audit.head` (0600, next to the log) holds the seq and line hash of the last record; it is
//! replaced atomically (write temp, fsync, rename, fsync the directory) after the log itself
//! was fsynced, so it never points past what is durably in the log. An append killed between
//! the two leaves the head exactly one record behind; that state is accepted (the record's
//! `prev` proves it extends the head) and the next append catches the head up.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat, OFlag};
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::state::open_private_file_at;

/// File name of the head next to `audit.jsonl` (each log `NAME.jsonl` has `NAME.head`).
pub const HEAD_FILE: &str = "audit.head";
/// A head is two short fields; anything longer is not one.
const MAX_HEAD_BYTES: u64 = 4096;

/// Contents of the head file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// seq of the last record appended.
    pub seq: u64,
    /// Hash of that record's line (what the next record's `prev` will be).
    pub hash: String,
}

/// The head path belonging to a log path (`.../audit.jsonl` -> `.../audit.head`,
/// `.../auth.jsonl` -> `.../auth.head`).
pub fn head_path_for(log: &Path) -> PathBuf {
    log.with_extension("head")
}

/// The head's file name for the log file `log_name`.
pub fn head_name(log_name: &str) -> String {
    format!(
        "{}.head",
        log_name.strip_suffix(".jsonl").unwrap_or(log_name)
    )
}

/// Parses an open head file.
pub fn parse(mut file: File, path: &Path) -> Result<Head, AuditError> {
    let mut text = String::new();
    (&mut file)
        .take(MAX_HEAD_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| AuditError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
    if text.len() as u64 > MAX_HEAD_BYTES {
        return Err(AuditError::HeadUnreadable {
            path: path.to_owned(),
            reason: format!("longer than {MAX_HEAD_BYTES} bytes"),
        });
    }
    let head: Head =
        serde_json::from_str(text.trim_end()).map_err(|e| AuditError::HeadUnreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let is_hash = head.hash.len() == 64 && head.hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hash {
        return Err(AuditError::HeadUnreadable {
            path: path.to_owned(),
            reason: "hash is not 64 hex digits".to_owned(),
        });
    }
    Ok(head)
}

/// Reads the head `name` inside the (checked) state directory; `None` if there is none yet.
pub fn read_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
) -> Result<Option<Head>, AuditError> {
    match open_private_file_at(dir, dir_path, name, OFlag::O_RDONLY) {
        Ok(file) => parse(file, &dir_path.join(name)).map(Some),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Atomically replaces the head `name`: temp file, fsync, rename over, fsync the directory.
pub fn write_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    head: &Head,
) -> Result<(), AuditError> {
    let tmp_name = format!("{name}.tmp");
    let tmp_path = dir_path.join(&tmp_name);
    let io_err = |op, source| AuditError::Io {
        op,
        path: tmp_path.clone(),
        source,
    };
    // Writers hold the log's exclusive lock, so a fixed temp name cannot collide; a leftover
    // from a killed writer is truncated (after the same owner/mode/symlink checks).
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC;
    let mut tmp = open_private_file_at(dir, dir_path, &tmp_name, flags)?;
    let mut text = serde_json::to_vec(head).map_err(|source| AuditError::Serialize { source })?;
    text.push(b'\n');
    tmp.write_all(&text).map_err(|e| io_err("write", e))?;
    tmp.sync_all().map_err(|e| io_err("fsync", e))?;
    drop(tmp);
    renameat(dir, tmp_name.as_str(), dir, name)
        .map_err(|errno| io_err("rename", std::io::Error::from(errno)))?;
    sync_dir(dir, dir_path)
}

/// fsync of a directory, so a rename or a newly created file in it survives a crash.
pub fn sync_dir(dir: BorrowedFd<'_>, dir_path: &Path) -> Result<(), AuditError> {
    nix::unistd::fsync(dir).map_err(|errno| AuditError::Io {
        op: "fsync",
        path: dir_path.to_owned(),
        source: std::io::Error::from(errno),
    })
}
