//! Appending to the log: one exclusive lock around read-last-line, write, fsync, head update.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use super::head::{self, Head};
use super::record::{Record, RecordBody, Recovered};
use super::scan::ZERO_HASH;
use super::scan::{byte_at, hash_range, line_hash, line_start, read_range, MAX_LINE_BYTES};
use super::time::now_rfc3339;
use super::AuditError;
use crate::state::{open_private_dir, open_private_file_at, StateError};

/// File name of the log inside the state directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// The log of authentication events (`stockade serve`): the same chain, its own file.
pub const AUTH_LOG_FILE: &str = "auth.jsonl";

/// The audit log of one state directory. Cheap to hold; every [`append`](Self::append) opens
/// the file anew (re-checking owner, mode and type) and locks it, so any number of handles in
/// any number of processes may append concurrently.
#[derive(Debug)]
pub struct AuditLog {
    dir: OwnedFd,
    dir_path: PathBuf,
    path: PathBuf,
    name: &'static str,
    head_name: String,
}

/// The last complete record in the log and the hash of its line.
struct LastRecord {
    record: Record,
    hash: String,
}

/// A last line without its newline: a writer died (or the disk filled) mid-write.
struct Partial {
    offset: u64,
    len: u64,
    hash: String,
}

impl AuditLog {
    /// Opens the log in `state_dir`, creating the directory (0700) and the file (0600) if
    /// needed. Refuses a directory or file that is a symlink, owned by another user, or open
    /// to group/others; the error names the path and the fix. The head file is read too, so
    /// a damaged one is reported before any command runs.
    pub fn open(state_dir: &Path) -> Result<Self, AuditError> {
        Self::open_named(state_dir, LOG_FILE)
    }

    /// The log `name` (such as [`AUTH_LOG_FILE`]) in `state_dir`, with the same checks.
    pub fn open_named(state_dir: &Path, name: &'static str) -> Result<Self, AuditError> {
        let dir = open_private_dir(state_dir)?;
        let log = AuditLog {
            path: state_dir.join(name),
            dir_path: state_dir.to_owned(),
            dir,
            name,
            head_name: head::head_name(name),
        };
        drop(log.open_file()?);
        head::read_at(log.dir.as_fd(), &log.dir_path, &log.head_name)?;
        Ok(log)
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of the head file next to it.
    pub fn head_path(&self) -> PathBuf {
        self.dir_path.join(&self.head_name)
    }

    /// Appends one record and returns it as written (with its seq, ts and prev). When this
    /// returns `Ok`, the record is on disk (fsync). Concurrent appenders serialize on an
    /// exclusive `flock` of the log file, held from reading the last line to updating the head.
    ///
    /// Refuses (and writes nothing) when the log's end does not agree with the head file, or
    /// the last complete line is not a record: extending such a log would bury the evidence.
    pub fn append(&self, body: RecordBody) -> Result<Record, AuditError> {
        let mut written = self.append_all(vec![body])?;
        written.pop().ok_or_else(|| AuditError::Io {
            op: "append",
            path: self.path.clone(),
            source: std::io::Error::other("nothing was appended"),
        })
    }

    /// Appends `bodies` in order under one lock, one write and one fsync (a busy writer's
    /// batch), and returns them as written. Nothing is written when `bodies` is empty.
    pub fn append_all(&self, bodies: Vec<RecordBody>) -> Result<Vec<Record>, AuditError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let file = self.open_file()?;
        let file = lock(file, &self.path, FlockArg::LockExclusive)?;
        let len = file
            .metadata()
            .map_err(|source| AuditError::Io {
                op: "stat",
                path: self.path.clone(),
                source,
            })?
            .len();
        let io = |op| {
            let path = self.path.clone();
            move |source| AuditError::Io { op, path, source }
        };

        // Find the partial last line (if any) and the last complete record before it.
        let mut complete_end = len;
        let mut partial = None;
        if len > 0 && byte_at(&file, len - 1).map_err(io("read"))? != b'\n' {
            let start = line_start(&file, len).map_err(io("read"))?;
            let hash = hash_range(&file, start, len).map_err(io("read"))?;
            partial = Some(Partial {
                offset: start,
                len: len - start,
                hash,
            });
            complete_end = start;
        }
        let last = self.last_record(&file, complete_end)?;
        self.check_head(last.as_ref())?;

        let mut seq = last.as_ref().map_or(0, |l| l.record.seq);
        let mut prev = last
            .as_ref()
            .map_or_else(|| ZERO_HASH.to_owned(), |l| l.hash.clone());
        let mut out = Vec::new();
        if let Some(p) = partial {
            // Crash recovery (docs/audit.md): the partial line is neither dropped nor
            // overwritten. It is terminated with a newline, so it becomes a line of its own,
            // and a `recovered` record accounts for it: its `prev` is the partial line's hash
            // (the chain runs through the bytes as they are) and `chain_prev` is the hash of the
            // record before (the link the partial line may be too short to carry).
            out.push(b'\n');
            seq += 1;
            let recovered = Record {
                seq,
                ts: now_rfc3339(),
                prev: p.hash.clone(),
                body: RecordBody::Recovered(Recovered {
                    partial_offset: p.offset,
                    partial_len: p.len,
                    partial_sha256: p.hash,
                    chain_prev: prev,
                }),
            };
            let line = serialize(&recovered)?;
            prev = line_hash(&line);
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        let mut records = Vec::with_capacity(bodies.len());
        for body in bodies {
            seq += 1;
            let record = Record {
                seq,
                ts: now_rfc3339(),
                prev,
                body,
            };
            let line = serialize(&record)?;
            prev = line_hash(&line);
            out.extend_from_slice(&line);
            out.push(b'\n');
            records.push(record);
        }
        let new_head = Head { seq, hash: prev };

        // O_APPEND: each write lands at the end even if someone bypassed the lock.
        (&*file).write_all(&out).map_err(io("write"))?;
        file.sync_data().map_err(io("fsync"))?;
        if len == 0 {
            // A new file's directory entry must be durable too, before the head refers to it.
            head::sync_dir(self.dir.as_fd(), &self.dir_path)?;
        }
        // The head is written only after the log is durable, so it never points past it.
        head::write_at(self.dir.as_fd(), &self.dir_path, &self.head_name, &new_head)?;
        Ok(records)
    }

    fn open_file(&self) -> Result<File, AuditError> {
        let flags = OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CREAT;
        Ok(open_private_file_at(
            self.dir.as_fd(),
            &self.dir_path,
            self.name,
            flags,
        )?)
    }

    /// The record on the last complete line of `[0, end)` (`end` is 0 or just past a '\n').
    fn last_record(&self, file: &File, end: u64) -> Result<Option<LastRecord>, AuditError> {
        if end == 0 {
            return Ok(None);
        }
        let io = |source| AuditError::Io {
            op: "read",
            path: self.path.clone(),
            source,
        };
        let line_end = end - 1;
        let start = line_start(file, line_end).map_err(io)?;
        let len = line_end - start;
        if len > MAX_LINE_BYTES {
            return Err(AuditError::LineTooLong {
                path: self.path.clone(),
                offset: start,
                len,
                max: MAX_LINE_BYTES,
            });
        }
        let bytes = read_range(file, start, line_end).map_err(io)?;
        let record = serde_json::from_slice(&bytes).map_err(|source| AuditError::Corrupt {
            path: self.path.clone(),
            offset: start,
            source,
        })?;
        Ok(Some(LastRecord {
            record,
            hash: line_hash(&bytes),
        }))
    }

    /// The log's end must be what the head recorded, or one record past it (an append killed
    /// after its fsync but before the head rename).
    fn check_head(&self, last: Option<&LastRecord>) -> Result<(), AuditError> {
        let head = head::read_at(self.dir.as_fd(), &self.dir_path, &self.head_name)?;
        let log_seq = last.map_or(0, |l| l.record.seq);
        let consistent = match (&head, last) {
            (None, None) => true,
            // The very first append was killed before it wrote the head.
            (None, Some(_)) if log_seq == 1 => true,
            (None, Some(_)) => {
                return Err(AuditError::HeadMissing {
                    path: self.path.clone(),
                    log_seq,
                })
            }
            (Some(_), None) => false,
            (Some(h), Some(l)) => {
                (h.seq == l.record.seq && h.hash == l.hash)
                    || (h.seq + 1 == l.record.seq && h.hash == previous_record_hash(&l.record))
            }
        };
        if consistent {
            return Ok(());
        }
        Err(AuditError::HeadMismatch {
            path: self.path.clone(),
            head_seq: head.map_or(0, |h| h.seq),
            log_seq,
        })
    }
}

/// Hash of the line of the record before `record`: its `prev`, except for a `recovered`
/// record, whose `prev` is the partial line in between and whose `chain_prev` is the record.
pub(super) fn previous_record_hash(record: &Record) -> &str {
    match &record.body {
        RecordBody::Recovered(r) => &r.chain_prev,
        _ => &record.prev,
    }
}

/// Opens a log (or head) for reading without following a symlink; `None` if it does not
/// exist. Readers do not enforce ownership (root may inspect anyone's log); `verify` reports
/// loose modes as findings instead.
pub(super) fn open_for_reading(path: &Path) -> Result<Option<File>, AuditError> {
    // O_NONBLOCK: a FIFO under the log's name must not block the reader (see state.rs).
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let fd = match nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(StateError::Symlink {
                path: path.to_owned(),
            }
            .into())
        }
        Err(errno) => {
            return Err(AuditError::Io {
                op: "open",
                path: path.to_owned(),
                source: errno.into(),
            })
        }
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| AuditError::Io {
        op: "stat",
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        let path = path.to_owned();
        return Err(StateError::WrongType {
            path,
            expected: "regular file",
        }
        .into());
    }
    Ok(Some(file))
}

fn serialize(record: &Record) -> Result<Vec<u8>, AuditError> {
    let line = serde_json::to_vec(record).map_err(|source| AuditError::Serialize { source })?;
    // Compact serde_json escapes control characters inside strings, so a line never contains
    // a raw newline; the cap keeps every record parseable by `verify` and `tail`.
    if line.len() as u64 > MAX_LINE_BYTES {
        return Err(AuditError::RecordTooLarge {
            len: line.len() as u64,
            max: MAX_LINE_BYTES,
        });
    }
    Ok(line)
}

/// Blocks until this open file description holds the lock (released on drop). Appenders take
/// it exclusive; readers (verify, tail) shared, so they never see a line half-written by a
/// live appender.
pub(super) fn lock(mut file: File, path: &Path, arg: FlockArg) -> Result<Flock<File>, AuditError> {
    loop {
        match Flock::lock(file, arg) {
            Ok(locked) => return Ok(locked),
            // A signal interrupted the wait; waiting again is what the caller wants.
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => {
                return Err(AuditError::Lock {
                    path: path.to_owned(),
                    source: errno.into(),
                })
            }
        }
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
