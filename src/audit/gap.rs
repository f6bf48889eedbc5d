//! Records of executions that ran while the audit log could not be written
//! (`on_audit_failure = "run"`). They are spilled to [`SPILL_FILE`] in the state directory when
//! that can be written, else held in memory (bounded), and the first append that succeeds
//! again, from this process or a later one, writes them after a `gap` record that says how
//! many, when and why (docs/audit.md, "When the log cannot be written").

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};

use super::record::{Gap, RecordBody};
use super::time::now_rfc3339;
use super::{AuditError, AuditLog};
use crate::state::{open_private_dir, open_private_file_at};

/// The spill file in the state directory.
pub const SPILL_FILE: &str = "audit-gap.jsonl";
/// Largest spill file read back; a larger one is left for the operator and reported.
pub const MAX_SPILL_BYTES: u64 = 16 << 20;

/// One held record, as a line of the spill file. `body` is absent for a record too large to
/// ever be written: it is counted as dropped, so the gap says so.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    failed_at: String,
    error: String,
    #[serde(default)]
    body: Option<RecordBody>,
}

/// The records waiting for the log, in the state directory's spill file. One per
/// [`crate::service::Service`]; it holds nothing in memory, so nothing is lost when a process
/// exits.
#[derive(Debug, Default)]
pub struct Pending {
    lock: Mutex<()>,
}

impl Pending {
    /// Holds `body`, whose append failed with `error`, in the spill file. `false` when the
    /// spill file cannot be written either: then the record cannot be kept, and the caller
    /// must not run what it records.
    pub fn hold(&self, state_dir: &Path, body: RecordBody, error: &str) -> bool {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut held = Held {
            failed_at: now_rfc3339(),
            error: error.to_string(),
            body: Some(body),
        };
        let fits =
            serde_json::to_vec(&held).is_ok_and(|l| (l.len() as u64) < super::MAX_LINE_BYTES / 2);
        if !fits {
            held.body = None;
        }
        spill(state_dir, &held).is_ok()
    }

    /// Writes what the spill file holds after one `gap` record, under one append, then
    /// empties the file (under its lock; it is not removed, so a writer waiting for the lock
    /// appends to the same file). Returns how many records were written; nothing held is cheap
    /// (one failed open). On error everything stays held.
    pub fn flush(&self, log: &AuditLog, state_dir: &Path) -> Result<u64, AuditError> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = open_spill(state_dir, false)? else {
            return Ok(0);
        };
        if file.metadata().map(|m| m.len()).unwrap_or(1) == 0 {
            return Ok(0);
        }
        let file = lock(file, state_dir)?;
        let (lines, unreadable) = read_spill(&file, state_dir)?;
        if lines.is_empty() && unreadable == 0 {
            return Ok(0);
        }
        let written = write(log, lines, unreadable)?;
        file.set_len(0)
            .map_err(|e| io_error(state_dir, "truncate", Some(e)))?;
        Ok(written)
    }
}

/// Appends the gap record and the held records.
fn write(log: &AuditLog, held: Vec<Held>, unreadable: u64) -> Result<u64, AuditError> {
    let kept: Vec<&RecordBody> = held.iter().filter_map(|h| h.body.as_ref()).collect();
    let missed = kept
        .iter()
        .filter(|b| matches!(b, RecordBody::Start(_)))
        .count() as u64;
    let dropped = unreadable + (held.len() - kept.len()) as u64;
    let now = now_rfc3339();
    let first = held.iter().map(|h| h.failed_at.as_str()).min();
    let last = held.iter().map(|h| h.failed_at.as_str()).max();
    let gap = Gap {
        missed,
        held: kept.len() as u64,
        dropped,
        first_failed_at: first.unwrap_or(&now).to_string(),
        last_failed_at: last.unwrap_or(&now).to_string(),
        error: held
            .last()
            .map(|h| h.error.clone())
            .unwrap_or_else(|| "held records could not be read back".to_string()),
    };
    let mut bodies = Vec::with_capacity(kept.len() + 1);
    bodies.push(RecordBody::Gap(gap));
    bodies.extend(kept.into_iter().cloned());
    Ok(log.append_all(bodies)?.len() as u64)
}

/// Appends one line to the spill file, under its lock, durably.
fn spill(state_dir: &Path, held: &Held) -> Result<(), AuditError> {
    let file = open_spill(state_dir, true)?.ok_or_else(|| io_error(state_dir, "open", None))?;
    let mut file = lock(file, state_dir)?;
    let len = file
        .metadata()
        .map_err(|e| io_error(state_dir, "stat", Some(e)))?
        .len();
    if len >= MAX_SPILL_BYTES {
        return Err(io_error(state_dir, "append", None));
    }
    let mut line =
        serde_json::to_vec(held).map_err(|e| io_error(state_dir, "encode", Some(e.into())))?;
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(state_dir, "append", Some(e)))
}

/// Opens the spill file (creating it when `create`); `Ok(None)` when it does not exist.
fn open_spill(state_dir: &Path, create: bool) -> Result<Option<File>, AuditError> {
    let dir = open_private_dir(state_dir)?;
    let mut flags = OFlag::O_RDWR | OFlag::O_APPEND;
    if create {
        flags |= OFlag::O_CREAT;
    }
    match open_private_file_at(dir.as_fd(), state_dir, SPILL_FILE, flags) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn lock(file: File, state_dir: &Path) -> Result<Flock<File>, AuditError> {
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_error(state_dir, "lock", Some(errno.into())))
}

/// The spill file's records, and how many lines could not be read back.
fn read_spill(file: &File, state_dir: &Path) -> Result<(Vec<Held>, u64), AuditError> {
    let mut bytes = Vec::new();
    // A spill file stops taking lines at MAX_SPILL_BYTES, so it is at most one line longer.
    file.take(MAX_SPILL_BYTES + super::MAX_LINE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(state_dir, "read", Some(e)))?;
    let mut held = Vec::new();
    let mut unreadable = 0;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Held>(line) {
            Ok(h) => held.push(h),
            Err(_) => unreadable += 1,
        }
    }
    Ok((held, unreadable))
}

fn io_error(state_dir: &Path, op: &'static str, source: Option<std::io::Error>) -> AuditError {
    AuditError::Io {
        op,
        path: state_dir.join(SPILL_FILE),
        source: source.unwrap_or_else(|| {
            std::io::Error::other(format!(
                "the spill file is full ({MAX_SPILL_BYTES} bytes) or cannot be created"
            ))
        }),
    }
}
