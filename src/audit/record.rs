//! The audit record: data, not a log line (docs/audit.md).

use serde::{Deserialize, Serialize};

use crate::check::Decision;

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, starting at 1 and increasing by one per line.
    pub seq: u64,
    /// RFC 3339 UTC timestamp of when the record was written.
    pub ts: String,
    /// Lowercase hex SHA-256 of the previous line's bytes (without its newline);
    /// 64 zeros for the first record.
    pub prev: String,
    #[serde(flatten)]
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum RecordBody {
    Start(Start),
    Finish(Finish),
    Recovered(Recovered),
}

/// Written (durably) before the command runs. `id` ties it to its `finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub id: String,
    pub session: Option<String>,
    pub user: String,
    pub command: String,
    pub verdict: Decision,
    pub rules: Vec<String>,
    pub profile: String,
    pub backend: String,
    pub elevated: bool,
    /// Set when the check stage was bypassed (stockade's own probes); always audited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_bypassed: bool,
    /// The profile's `[unsafe]` opt-outs, if it takes any.
    #[serde(default, rename = "unsafe", skip_serializing_if = "Vec::is_empty")]
    pub unsafe_opt_outs: Vec<String>,
}

/// Written after the command ended (or was refused / failed to start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub id: String,
    pub session: Option<String>,
    pub container: Option<String>,
    /// "completed", "timed_out", "output_limit", "interrupted", "denied" or "error".
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    /// Output passed the hard limit and the command was stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_limit_hit: bool,
    /// The command hit the sandbox's process limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pids_limit_hit: bool,
    /// The container was reset because the kill inside it could not end every process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox_reset: bool,
    /// Processes the command left running when it exited, which were ended.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leftovers_ended: u32,
    /// System V IPC objects and message queues the command left, which were removed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ipc_removed: u32,
    /// SHA-256 of the command's whole stdout and stderr, as the sandbox agent vouched for them
    /// under its MAC (absent when the command ran as a `docker exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Finish {
    /// A finish for execution `id` with nothing known yet: no container, no exit, no output.
    pub fn new(id: &str, session: Option<String>) -> Finish {
        Finish {
            id: id.to_string(),
            session,
            container: None,
            outcome: String::new(),
            exit_code: None,
            signal: None,
            timed_out: false,
            oom_killed: false,
            duration_ms: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            output_limit_hit: false,
            pids_limit_hit: false,
            sandbox_reset: false,
            leftovers_ended: 0,
            ipc_removed: 0,
            stdout_sha256: None,
            stderr_sha256: None,
            error: None,
        }
    }
}

/// Written by the append that found the log ending in a half-written line (a writer was killed
/// mid-write, or the disk filled). That line is kept, terminated with a newline, and accounted
/// for here instead of being dropped or overwritten (docs/audit.md, "Crash recovery").
///
/// The record's `prev` is the hash of the partial line, so the chain runs through it;
/// `chain_prev` is the hash of the complete line before it, so the chain also vouches for the
/// link that the partial line may be too short to carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovered {
    /// Byte offset of the partial line's first byte in the log.
    pub partial_offset: u64,
    /// Length of the partial line in bytes (without the newline added on recovery).
    pub partial_len: u64,
    /// Lowercase hex SHA-256 of the partial line's bytes (equal to this record's `prev`).
    pub partial_sha256: String,
    /// Hash of the line before the partial one (64 zeros if it was the first line).
    pub chain_prev: String,
}
