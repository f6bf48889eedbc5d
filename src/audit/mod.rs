//! The audit log: one append-only, hash-chained JSONL file of execution records
//! (docs/audit.md).
//!
//! [`AuditLog::append`] writes a record durably under an exclusive lock; [`verify`] checks the
//! whole chain against the head file; [`tail`] reads the last records cheaply from the end.

mod gap;
mod head;
mod log;
mod record;
mod scan;
mod tail;
mod time;
mod verify;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::StateError;

pub use gap::{Pending, SPILL_FILE};
pub use head::{head_path_for, Head, HEAD_FILE};
pub use log::{AuditLog, AUTH_LOG_FILE, LOG_FILE};
pub use record::{
    AuthEvent, AuthKind, Direction, Finish, Gap, Outcome, Record, RecordBody, Recovered,
    ScriptRead, Start, Transfer,
};
pub use scan::{line_hash, MAX_LINE_BYTES, ZERO_HASH};
pub use tail::{executions, format_auth, format_human, tail, Execution};
pub use time::{format_rfc3339, now_rfc3339};
pub use verify::{verify, Finding, FindingKind, Severity, VerifyReport};

/// What the exec path does when the `start` record cannot be written.
///
/// The default, and the only behaviour stockade documents for now, is [`Refuse`]: a command
/// that cannot be audited does not run (exit 125). An unaudited sandbox escape is worse than
/// a refused command.
///
/// [`Refuse`]: OnAuditFailure::Refuse
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OnAuditFailure {
    /// Do not run the command; exit with `EXIT_STOCKADE_ERROR`.
    #[default]
    Refuse,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "{path}: the line at byte offset {offset} is not an audit record ({source}); the log was \
         altered, so stockade will not extend it: run `stockade audit verify`, then move the log \
         and its head aside (mv {path} {path}.broken) to start a new one"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        source: serde_json::Error,
    },
    #[error(
        "{path}: the line at byte offset {offset} is {len} bytes, over the {max}-byte cap for a \
         record; the log was altered: run `stockade audit verify`, then move it aside"
    )]
    LineTooLong {
        path: PathBuf,
        offset: u64,
        len: u64,
        max: u64,
    },
    #[error(
        "{path}: the log ends at seq {log_seq} but its head file is missing; records may have \
         been removed. stockade will not extend it: run `stockade audit verify`, then move the \
         log aside (mv {path} {path}.suspect) to start a new one"
    )]
    HeadMissing { path: PathBuf, log_seq: u64 },
    #[error(
        "{path}: the log ends at seq {log_seq} but its head file records seq {head_seq} with a \
         different hash chain; records were removed or altered since the last append. stockade \
         will not extend it: run `stockade audit verify`, then move the log and its head aside \
         (mv {path} {path}.suspect) to start a new one"
    )]
    HeadMismatch {
        path: PathBuf,
        head_seq: u64,
        log_seq: u64,
    },
    #[error("head file {path} is unreadable ({reason}); run `stockade audit verify`")]
    HeadUnreadable { path: PathBuf, reason: String },
    #[error("an audit record of {len} bytes exceeds the {max}-byte cap")]
    RecordTooLarge { len: u64, max: u64 },
    #[error("cannot serialize an audit record: {source}")]
    Serialize { source: serde_json::Error },
}

#[cfg(test)]
mod test_support;
