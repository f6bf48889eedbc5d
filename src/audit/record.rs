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
    /// Executions that ran while the log could not be written (`on_audit_failure = "run"`);
    /// their records follow this one.
    Gap(Gap),
    /// An authentication event of `stockade serve` (in `auth.jsonl`).
    Auth(AuthEvent),
}

/// What happened at the server's door, or to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthKind {
    /// A request was authenticated.
    Success,
    /// A request's token was missing, unknown, revoked or expired.
    Failure,
    /// A client was locked out (the failure that locked it), or refused while locked out.
    Lockout,
    TokenCreated,
    TokenRotated,
    TokenRevoked,
    /// A token's expiry passed (recorded when it is first presented after).
    TokenExpired,
    /// A principal's grant was revoked: its tokens and sandboxes went with it.
    GrantRevoked,
}

/// One authentication event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEvent {
    pub event: AuthKind,
    /// The principal (token name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Who asked: `ip:ADDR`, `uid:N` (the Unix socket), or `cli` for the token commands.
    pub client: String,
    /// Why a request was refused (`unknown`, `revoked`, `expired`, `missing`, `too_long`,
    /// `locked_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request's method and path (query left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Written (durably) before the command runs. `id` ties it to its `finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub id: String,
    pub session: Option<String>,
    pub user: String,
    /// The face `user` was authenticated by when not the local CLI (`api`: a token's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub command: String,
    /// The working directory asked for (absent: the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The environment entries asked for, `NAME=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// SHA-256 of the stdin given in advance (the API's `stdin`), judged with the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_sha256: Option<String>,
    /// The names of the secrets put in the command's environment (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The check stage's decision (`verdict` in earlier logs).
    #[serde(alias = "verdict")]
    pub decision: Decision,
    pub rules: Vec<String>,
    pub profile: String,
    pub backend: crate::backend::BackendKind,
    pub elevated: bool,
    /// Set when the check stage was bypassed (stockade's own probes); always audited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_bypassed: bool,
    /// The profile's `[unsafe]` opt-outs, if it takes any.
    #[serde(default, rename = "unsafe", skip_serializing_if = "Vec::is_empty")]
    pub unsafe_opt_outs: Vec<String>,
    /// Set for a file copy (`stockade cp`) rather than a command: which way, which path in
    /// the sandbox. `command` then reads `cp in PATH` or `cp out PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// A file copied into or out of a session's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub direction: Direction,
    /// The path in the sandbox.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the host into the sandbox.
    In,
    /// From the sandbox to the host.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Written after the command ended (or was refused / failed to start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub id: String,
    pub session: Option<String>,
    /// The sandbox it ran in (`container` in earlier logs).
    #[serde(alias = "container")]
    pub sandbox: Option<String>,
    /// Where on a cluster the sandbox runs: cluster, namespace, pod, node, seccomp digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::backend::Placement>,
    pub outcome: Outcome,
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
    /// A file copy's size and SHA-256, as both ends agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    /// Files the command runs that were read from the sandbox and judged before it ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<ScriptRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an execution ended: the same words in the audit log and in every result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command ran to its end (whatever its exit code).
    Completed,
    /// Ended for running past its timeout.
    TimedOut,
    /// Refused by policy; nothing ran.
    Denied,
    /// stockade failed, or refused the request as given; the error says what to do.
    #[default]
    Error,
    /// Ended because the execution was cancelled (a signal to stockade, a client gone).
    Interrupted,
    /// Ended for flooding output past the hard limit.
    OutputLimit,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::TimedOut => "timed_out",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Interrupted => "interrupted",
            Outcome::OutputLimit => "output_limit",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
            sandbox: None,
            placement: None,
            outcome: Outcome::Error,
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
            file_bytes: None,
            file_sha256: None,
            scripts: Vec::new(),
            error: None,
        }
    }
}

/// A file a command runs, as read from the sandbox and judged before it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRead {
    /// Its path in the sandbox.
    pub path: String,
    /// Bytes read (at most 256 KiB) and their SHA-256.
    pub bytes: u64,
    pub sha256: String,
    /// The file was longer than what was read.
    pub truncated: bool,
    /// What the check made of its content (`null`: not text, e.g. a binary).
    pub decision: Option<crate::check::Decision>,
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

/// Written, when the log can be written again, before the records of executions that ran while
/// it could not be (`on_audit_failure = "run"`). Their `start` and `finish` records follow it
/// in the order they were held; `ts` of those is when they were written, not when they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Executions that ran (or were refused) unrecorded.
    pub missed: u64,
    /// Records that follow this one.
    pub held: u64,
    /// Records that could not be held (over the bound, or a spill file that was unreadable);
    /// they are lost and only counted.
    pub dropped: u64,
    /// When the first and the last failed write happened (RFC 3339).
    pub first_failed_at: String,
    pub last_failed_at: String,
    /// Why the last write failed.
    pub error: String,
}
