//! `profile record`: run a workload in the sandbox under strace and derive the minimal seccomp
//! profile it needs (see docs/profiles.md, "Recording a seccomp profile").
//!
//! The workload runs as an exec of a session container created from the chosen sandbox profile,
//! with two changes: the seccomp profile is Docker's default (stockade's default refuses
//! `ptrace`, which strace needs to follow its own children; no capability is needed for that),
//! and a private tmpfs holds the trace. A second exec of the same container reads the trace
//! back; the container is removed afterwards, also on error. Every call of every traced process
//! is in the trace: ptrace stops the tracee on each one, so there are no dropped events as with
//! `SCMP_ACT_LOG` and the rate-limited kernel log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::baseline::runtime_baseline;
use super::lint_profile::effective_caps;
use super::recorded::{classify, Classified, NotRecorded, RecordedSet};
use super::trace::parse_strace;
use super::{
    host_kernel, lint_seccomp, load_profile_json, resolve, Arch, LintReport, LoadOptions,
    SeccompError, MAX_PROFILE_BYTES,
};
use crate::audit::Outcome;
use crate::backend::{Backend, Sink};
use crate::cancel::Cancel;
use crate::exec::{self, ExecError, ExecOptions, ExecResult};
use crate::plan::{CommandLine, ExecRequest};
use crate::profile::{self, Profile, Tmpfs};
use crate::service::{Principal, Service};
use crate::session::{self, SessionError};

/// The built-in seccomp file the recording run uses: Docker's default, which allows `ptrace`
/// on kernels >= 4.8 (where seccomp also applies to traced calls).
pub const RECORDING_SECCOMP: &str = "seccomp/docker-default.json";
/// Where the trace is written inside the recording container: a tmpfs of its own, so the
/// workload's `/tmp` and its size limit stay as the profile says.
pub const TRACE_DIR: &str = "/run/stockade-record";
const TRACE_FILE: &str = "/run/stockade-record/trace";
/// The largest trace read back (and the trace tmpfs's size).
pub const MAX_TRACE_BYTES: u64 = 256 * 1024 * 1024;
/// The trace tmpfs is private to the sandbox user.
const TRACE_DIR_MODE: u32 = 0o700;
/// The shell's status for "command not found".
const EXIT_NOT_FOUND: i64 = 127;
const STRACE_MISSING: &str = "stockade: strace is not in the sandbox image";
/// strace options: follow forks (`-f`), no attach/exit chatter (`-qq`), no signal lines, no
/// string contents (`-s 0`: only the call, its flags and its result matter, and the trace stays
/// small).
const STRACE_OPTIONS: &str = "-f -qq -e signal=none -s 0";
/// How many of strace's own messages a recording keeps.
const MAX_STRACE_MESSAGES: usize = 10;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{what}: {reason}")]
    Run {
        what: &'static str,
        reason: String,
        /// How it ended (`denied` when policy refused it).
        outcome: Outcome,
    },
    #[error("the sandbox image has no strace, which profile record traces the workload with (the base image includes the host's /usr/bin/strace when there is one; rebuild it with `stockade image build`)")]
    StraceMissing,
    #[error("the trace is larger than {limit} bytes; record a shorter workload, or record its parts and --merge them")]
    TraceTooLarge { limit: u64 },
    #[error("cannot read the trace back: {reason}")]
    TraceUnreadable { reason: String },
    #[error("the trace has no syscalls: strace could not trace the workload{hint}")]
    EmptyTrace { hint: String },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--merge {path}: {source}")]
    MergeLoad {
        path: PathBuf,
        #[source]
        source: SeccompError,
    },
    #[error("--merge {path}: not a profile `profile record` wrote: {source}")]
    NotRecorded {
        path: PathBuf,
        #[source]
        source: NotRecorded,
    },
    #[error("{path}: {source}")]
    Seccomp {
        path: PathBuf,
        #[source]
        source: SeccompError,
    },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("a generated or built-in seccomp profile does not load (this is a bug in stockade): {source}")]
    Invalid {
        #[source]
        source: SeccompError,
    },
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl RecordError {
    /// Whether policy refused it (exit 126), as opposed to a failure (125).
    pub fn is_denial(&self) -> bool {
        match self {
            RecordError::Run { outcome, .. } => *outcome == Outcome::Denied,
            RecordError::Exec(e) => e.is_denial(),
            _ => false,
        }
    }
}

/// What to record.
#[derive(Debug, Clone, Default)]
pub struct RecordRequest {
    /// The sandbox profile (name or path); None: the configured default.
    pub profile: Option<String>,
    /// Run as `bash -c COMMAND`, as `stockade exec` does.
    pub command: String,
    pub timeout: Option<Duration>,
    /// A profile an earlier recording wrote: the result allows both.
    pub merge: Option<PathBuf>,
    /// Who asks (for the audit records).
    pub principal: Option<Principal>,
}

/// What a recording found and produced.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The sandbox profile the workload ran in (and whose capabilities the counts assume).
    pub profile: Profile,
    pub command: String,
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// The traced run alone.
    pub workload_time: Duration,
    /// Everything: container, traced run, reading and parsing the trace, cleanup.
    pub total_time: Duration,
    pub trace_bytes: usize,
    pub trace_calls: u64,
    pub trace_processes: usize,
    pub unparsed_lines: usize,
    pub unparsed_examples: Vec<String>,
    /// strace's own messages from the run (lines starting `strace: `).
    pub strace_messages: Vec<String>,
    pub arch: Arch,
    pub classified: Classified,
    pub baseline: BTreeSet<String>,
    /// The merged file and how many allowed names it brought that this run did not.
    pub merged: Option<(PathBuf, usize)>,
    pub set: RecordedSet,
    /// The profile, as written.
    pub json: String,
    /// Syscalls the recorded profile lets run (some only for some arguments), resolved for the
    /// sandbox profile's capabilities.
    pub allowed: usize,
    /// The same count for Docker's default profile, for the same capabilities.
    pub docker_default_allowed: usize,
    pub lint: LintReport,
}

impl Recording {
    /// Baseline names the workload did not use itself.
    pub fn baseline_only(&self) -> BTreeSet<String> {
        self.baseline
            .difference(&self.classified.used)
            .cloned()
            .collect()
    }
}

/// Records `req.command` in the sandbox and returns the profile it needs. The workload's
/// output goes to `sink` live, when given.
pub async fn record<B: Backend>(
    service: &Service<B>,
    req: &RecordRequest,
    sink: Option<Box<dyn Sink>>,
) -> Result<Recording, RecordError> {
    let started = Instant::now();
    let base = service.select_profile(&ExecOptions {
        profile: req.profile.clone(),
        ..Default::default()
    })?;
    // Read the merge input first: a bad file should fail before anything runs.
    let merge = match &req.merge {
        Some(path) => Some((path.clone(), load_recorded(path)?)),
        None => None,
    };
    let recording_profile = recording_profile(&base);
    let session = format!("record-{}", exec::new_exec_id());
    let traced = run_traced(service, &recording_profile, &session, req, sink).await;
    let cleanup = remove_session(service, &session).await;
    let (report, trace_text) = traced?;
    if let Err(e) = cleanup {
        // The recording is complete; a container left behind is what `session prune` is for.
        tracing::warn!(session = %session, error = %e, "could not remove the recording container; `stockade session prune` will");
    }

    let trace = parse_strace(&trace_text);
    let strace_messages: Vec<String> = report
        .stderr
        .lines()
        .filter(|l| l.starts_with("strace: "))
        .take(MAX_STRACE_MESSAGES)
        .map(str::to_string)
        .collect();
    if trace.syscalls.is_empty() {
        return Err(RecordError::EmptyTrace {
            hint: if strace_messages.is_empty() {
                String::new()
            } else {
                format!(": {}", strace_messages.join("; "))
            },
        });
    }
    let arch = Arch::host();
    let kernel = host_kernel();
    let caps = effective_caps(&base);
    // The recording profile as dockerd applied it: its argument rules carry over.
    let recording = resolve(&recording_profile.seccomp.parsed, &caps, arch, kernel);
    let classified = classify(&trace, arch);
    let baseline = runtime_baseline(arch);
    let mut set = RecordedSet::new(&classified, &baseline, &recording);
    let merged = merge.map(|(path, other)| {
        let before = set.allowed().len();
        set.merge(&other);
        (path, set.allowed().len() - before)
    });
    let json = set.to_json(arch);
    let loaded = load_profile_json(&json, &LoadOptions::default())
        .map_err(|source| RecordError::Invalid { source })?;
    let resolved = resolve(&loaded, &caps, arch, kernel);
    let docker_default_allowed = recording.allowed().len();
    let lint = LintReport::new("recorded profile", lint_seccomp(&resolved));

    Ok(Recording {
        command: req.command.clone(),
        exit_code: report.exit_code,
        timed_out: report.timed_out,
        workload_time: Duration::from_millis(report.duration_ms),
        total_time: started.elapsed(),
        trace_bytes: trace_text.len(),
        trace_calls: trace.total_calls(),
        trace_processes: trace.processes,
        unparsed_lines: trace.unparsed,
        unparsed_examples: trace.unparsed_examples,
        strace_messages,
        arch,
        classified,
        baseline,
        merged,
        allowed: resolved.allowed().len(),
        docker_default_allowed,
        lint,
        set,
        json,
        profile: base,
    })
}

/// The sandbox profile with Docker's default seccomp profile and the trace tmpfs.
pub fn recording_profile(base: &Profile) -> Profile {
    let mut p = base.clone();
    // RECORDING_SECCOMP is one of the built-in files (see the test below), so this always
    // applies.
    if let Some(seccomp) = profile::builtin_seccomp(RECORDING_SECCOMP) {
        p.seccomp = seccomp;
    }
    p.tmpfs.retain(|t| t.path != TRACE_DIR);
    p.tmpfs.push(Tmpfs {
        path: TRACE_DIR.to_string(),
        size_bytes: MAX_TRACE_BYTES,
        mode: TRACE_DIR_MODE,
        exec: false,
    });
    p
}

/// The command the recording exec runs: the workload as `bash -c COMMAND` under strace.
pub fn traced_command(command: &str) -> String {
    format!(
        "command -v strace >/dev/null 2>&1 || {{ echo '{STRACE_MISSING}' >&2; exit {EXIT_NOT_FOUND}; }}\n\
         exec strace {STRACE_OPTIONS} -o {TRACE_FILE} -- bash -c {}",
        shell_words::quote(command)
    )
}

async fn run_traced<B: Backend>(
    service: &Service<B>,
    p: &Profile,
    session: &str,
    req: &RecordRequest,
    sink: Option<Box<dyn Sink>>,
) -> Result<(ExecResult, String), RecordError> {
    let principal = req
        .principal
        .clone()
        .unwrap_or_else(|| Principal::new("stockade"));
    let request = ExecRequest {
        command: CommandLine::Shell(traced_command(&req.command)),
        session: Some(session.to_string()),
        timeout: req.timeout,
        ..Default::default()
    };
    let never = Cancel::never();
    let report = service
        .exec_with(
            &principal,
            p,
            &request,
            &ExecOptions::default(),
            None,
            sink,
            &never,
        )
        .await;
    ensure_ran("the recording run", &report)?;
    if report.exit_code == Some(EXIT_NOT_FOUND) && report.stderr.contains(STRACE_MISSING) {
        return Err(RecordError::StraceMissing);
    }
    // The trace can be far larger than the profile's output cap.
    let mut reader = p.clone();
    reader.output_cap = MAX_TRACE_BYTES;
    let read_request = ExecRequest {
        command: CommandLine::Argv(vec!["cat".into(), TRACE_FILE.into()]),
        session: Some(session.to_string()),
        ..Default::default()
    };
    let read = service
        .exec_with(
            &principal,
            &reader,
            &read_request,
            &ExecOptions::default(),
            None,
            None,
            &never,
        )
        .await;
    ensure_ran("reading the trace", &read)?;
    if read.truncated {
        return Err(RecordError::TraceTooLarge {
            limit: MAX_TRACE_BYTES,
        });
    }
    if read.exit_code != Some(0) {
        let mut reason = read.stderr.trim().to_string();
        if let Some(line) = report.stderr.lines().find(|l| l.starts_with("strace: ")) {
            reason = format!("{reason} (strace said: {line})");
        }
        return Err(RecordError::TraceUnreadable { reason });
    }
    Ok((report, read.stdout))
}

/// An execution that was refused or failed in stockade is an error here; the workload's own
/// exit status is not.
pub(crate) fn ensure_ran(what: &'static str, report: &ExecResult) -> Result<(), RecordError> {
    match &report.error {
        Some(reason) => Err(RecordError::Run {
            what,
            reason: reason.clone(),
            outcome: report.outcome,
        }),
        None => Ok(()),
    }
}

async fn remove_session<B: Backend>(
    service: &Service<B>,
    session: &str,
) -> Result<(), RecordError> {
    match session::remove(&service.backend, &service.state_dir, session).await {
        // Nothing to remove: the container was never created.
        Ok(_) | Err(SessionError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Loads a profile an earlier recording wrote.
pub fn load_recorded(path: &Path) -> Result<RecordedSet, RecordError> {
    let text = read_profile_file(path)?;
    let p = load_profile_json(&text, &LoadOptions::default()).map_err(|source| {
        RecordError::MergeLoad {
            path: path.to_path_buf(),
            source,
        }
    })?;
    RecordedSet::from_profile(&p).map_err(|source| RecordError::NotRecorded {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a seccomp JSON file, refusing more than [`MAX_PROFILE_BYTES`].
pub fn read_profile_file(path: &Path) -> Result<String, RecordError> {
    let read_err = |source| RecordError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_PROFILE_BYTES as u64 {
        return Err(RecordError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_PROFILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_command_quotes_the_workload() {
        let cmd = traced_command("echo 'a b' && ls");
        assert!(cmd.contains("exec strace -f -qq -e signal=none -s 0 -o /run/stockade-record/trace -- bash -c 'echo '\\''a b'\\'' && ls'"), "{cmd}");
        assert!(cmd.starts_with("command -v strace"));
    }

    #[test]
    fn recording_profile_swaps_seccomp_and_adds_the_trace_tmpfs() {
        let base = profile::load("default", &profile::ProfileDirs::default()).unwrap();
        let p = recording_profile(&base);
        assert_eq!(
            p.seccomp.path,
            PathBuf::from("builtin:seccomp/docker-default.json")
        );
        assert!(p.seccomp.json.contains("\"ptrace\""));
        let t = p.tmpfs.iter().find(|t| t.path == TRACE_DIR).unwrap();
        assert_eq!(
            (t.size_bytes, t.mode, t.exec),
            (MAX_TRACE_BYTES, 0o700, false)
        );
        // Everything else stays as the profile says.
        assert_eq!(p.user, base.user);
        assert_eq!(p.cap_drop, base.cap_drop);
        assert_eq!(p.tmpfs.len(), base.tmpfs.len() + 1);
    }
}
