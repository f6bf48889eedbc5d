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
pub enum RecordBody {
    Start(Start),
    Finish(Finish),
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
    /// Set when the check stage was bypassed (test-only flag); always audited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_bypassed: bool,
}

/// Written after the command ended (or was refused / failed to start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub id: String,
    pub session: Option<String>,
    pub container: Option<String>,
    /// "completed", "timed_out", "denied" or "error".
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
