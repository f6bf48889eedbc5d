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
/// Records held in memory when not even the spill file can be written; past this they are
/// counted as dropped.
pub const MAX_HELD: usize = 4096;
/// Largest spill file read back; a larger one is left for the operator and reported.
pub const MAX_SPILL_BYTES: u64 = 16 << 20;

/// One held record, as a line of the spill file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    failed_at: String,
    error: String,
    body: RecordBody,
}

#[derive(Debug, Default)]
struct Memory {
    held: Vec<Held>,
    dropped: u64,
}

/// The records waiting for the log. One per [`crate::service::Service`].
#[derive(Debug, Default)]
pub struct Pending {
    memory: Mutex<Memory>,
}

impl Pending {
    /// Holds `body`, whose append failed with `error`: in the spill file when it can be
    /// written, else in memory.
    pub fn hold(&self, state_dir: &Path, body: RecordBody, error: &str) {
        let held = Held {
            failed_at: now_rfc3339(),
            error: error.to_string(),
            body,
        };
        if spill(state_dir, &held).is_ok() {
            return;
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if memory.held.len() < MAX_HELD {
            memory.held.push(held);
        } else {
            memory.dropped += 1;
        }
    }

    /// Writes what is held (the spill file's records, then memory's) after one `gap` record,
    /// under one append. Returns how many records were written; nothing held is cheap (one
    /// failed open). On error everything stays held.
    pub fn flush(&self, log: &AuditLog, state_dir: &Path) -> Result<u64, AuditError> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let spilled = open_spill(state_dir, false);
        let Ok(Some(file)) = spilled else {
            if memory.held.is_empty() && memory.dropped == 0 {
                return Ok(0);
            }
            let written = write(log, Vec::new(), &mut memory, 0)?;
            return Ok(written);
        };
        let file = lock(file, state_dir)?;
        let (lines, unreadable) = read_spill(&file, state_dir)?;
        if lines.is_empty() && unreadable == 0 && memory.held.is_empty() && memory.dropped == 0 {
            let _ = std::fs::remove_file(state_dir.join(SPILL_FILE));
            return Ok(0);
        }
        let written = write(log, lines, &mut memory, unreadable)?;
        // Written: the spill file's records are in the log now. Empty it under the lock before
        // removing it, so a writer that opened it meanwhile cannot have its line counted twice.
        let _ = file.set_len(0);
        let _ = std::fs::remove_file(state_dir.join(SPILL_FILE));
        Ok(written)
    }

    /// Records held in memory now (not counting the spill file).
    pub fn held_in_memory(&self) -> usize {
        self.memory.lock().map(|m| m.held.len()).unwrap_or(0)
    }
}

/// Appends the gap record and the held records; clears memory when that worked.
fn write(
    log: &AuditLog,
    spilled: Vec<Held>,
    memory: &mut Memory,
    unreadable: u64,
) -> Result<u64, AuditError> {
    let all: Vec<&Held> = spilled.iter().chain(memory.held.iter()).collect();
    let missed = all
        .iter()
        .filter(|h| matches!(h.body, RecordBody::Start(_)))
        .count() as u64;
    let now = now_rfc3339();
    let first = all.iter().map(|h| h.failed_at.as_str()).min();
    let last = all.iter().map(|h| h.failed_at.as_str()).max();
    let gap = Gap {
        missed,
        held: all.len() as u64,
        dropped: memory.dropped + unreadable,
        first_failed_at: first.unwrap_or(&now).to_string(),
        last_failed_at: last.unwrap_or(&now).to_string(),
        error: all
            .last()
            .map(|h| h.error.clone())
            .unwrap_or_else(|| "records were dropped before they could be held".to_string()),
    };
    let mut bodies = Vec::with_capacity(all.len() + 1);
    bodies.push(RecordBody::Gap(gap));
    bodies.extend(all.iter().map(|h| h.body.clone()));
    let written = log.append_all(bodies)?.len() as u64;
    memory.held.clear();
    memory.dropped = 0;
    Ok(written)
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
