//! Stage 2: profile + request -> the sandbox and the process to run. Pure: no I/O.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::{
    BindMount, Limits, Network, ProcessSpec, SandboxKind, SandboxSpec, TmpfsMount,
};
use crate::profile::Profile;

const MAX_SESSION_ID: usize = 64;

/// Longest single argument a process can take: Linux caps one argument at `MAX_ARG_STRLEN`
/// (32 pages, 131072 bytes, including the terminating NUL; include/uapi/linux/binfmts.h). A
/// shell command is one argument of `bash -c`.
pub const MAX_ARGUMENT_BYTES: usize = 131_071;
/// The whole argv and environment: what one agent request carries (its frame is 1 MiB).
pub const MAX_ARGV_TOTAL_BYTES: usize = 768 * 1024;

/// Output beyond this many times the profile's cap means the command is flooding: it is
/// stopped (its process tree killed, as on timeout) and reported as `output_limit`.
pub const FLOOD_FACTOR: u64 = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    #[error("session id {id:?} is invalid: use 1-64 letters, digits, '-', '_' or '.'")]
    SessionId { id: String },
    #[error("--env {name}: not allowed by profile {profile:?} (env_allow: {allowed})")]
    EnvNotAllowed {
        name: String,
        profile: String,
        allowed: String,
    },
    #[error("--env {entry:?}: expected NAME=VALUE")]
    EnvSyntax { entry: String },
    #[error("--workdir {workdir:?}: must be an absolute path")]
    Workdir { workdir: String },
    #[error("--timeout: {timeout:?} exceeds 24h")]
    Timeout { timeout: Duration },
    #[error("--timeout: a zero timeout would end the command before it starts")]
    ZeroTimeout,
    #[error("the command contains a NUL byte, which no process argument can carry")]
    NulByte,
    #[error("no command given")]
    Empty,
    #[error("an argument is {len} bytes; a process takes at most {max} bytes in one argument (write a script to /workspace and run it instead)")]
    CommandTooLong { len: usize, max: usize },
    #[error("the arguments and environment are {len} bytes together; at most {max} are passed (write a script to /workspace and run it instead)")]
    ArgvTooLong { len: usize, max: usize },
}

/// What to run: a shell command line, or a program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Run as `bash -c TEXT`.
    Shell(String),
    /// Run as is, without a shell: the first word is the program.
    Argv(Vec<String>),
}

impl Default for CommandLine {
    fn default() -> Self {
        CommandLine::Shell(String::new())
    }
}

impl CommandLine {
    /// The process's argv.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(text) => vec!["bash".into(), "-c".into(), text.clone()],
            CommandLine::Argv(argv) => argv.clone(),
        }
    }

    /// The text the check stage judges and the audit records: the shell command itself, or
    /// the argv quoted for a shell (what a shell would run to the same effect).
    pub fn text(&self) -> String {
        match self {
            CommandLine::Shell(text) => text.clone(),
            CommandLine::Argv(argv) => argv
                .iter()
                .map(|w| quote_word(w))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// One word after `--` is a shell command (as `bash -c`); several words are an argv run
    /// without a shell, quoting kept (as `docker run IMAGE ARGS...` does).
    pub fn from_words(words: Vec<String>) -> CommandLine {
        match <[String; 1]>::try_from(words) {
            Ok([one]) => CommandLine::Shell(one),
            Err(words) => CommandLine::Argv(words),
        }
    }
}

/// One argv word as a shell would read it back as exactly that word: left bare only when it
/// holds nothing a shell gives meaning to (no braces, globs, `~`, `=`, `$`, quotes, spaces,
/// comments), single-quoted otherwise. `shell_words::quote` leaves `{a,b}` and `x=y` bare, which
/// a shell brace-expands or reads as an assignment, so the judged text would not be the argv.
pub fn quote_word(word: &str) -> std::borrow::Cow<'_, str> {
    let bare = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+,-".contains(&b));
    if bare {
        std::borrow::Cow::Borrowed(word)
    } else {
        std::borrow::Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// What the caller asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecRequest {
    pub command: CommandLine,
    pub session: Option<String>,
    pub timeout: Option<Duration>,
    pub workdir: Option<String>,
    pub env: Vec<String>,
    /// Whether the caller feeds the command's stdin.
    pub stdin: bool,
    /// The stdin, when the caller gives all of it in advance (the API's `stdin`): judged by
    /// the check stage with the command (`bash` reading it runs it) and its digest recorded.
    pub stdin_given: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub sandbox: SandboxSpec,
    pub process: ProcessSpec,
    pub session: Option<String>,
}

/// A short, stable id for a state directory.
pub fn state_id(state_dir: &std::path::Path) -> String {
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    hex::encode(&Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..6])
}

pub fn validate_session_id(id: &str) -> Result<(), PlanError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SESSION_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(PlanError::SessionId { id: id.to_string() })
    }
}

/// Sandbox name of a session in the state directory `state_id`.
pub fn session_sandbox_name(state_id: &str, session: &str) -> String {
    format!("stockade-s-{state_id}-{session}")
}

/// Sandbox name of a one-shot execution.
pub fn oneshot_sandbox_name(exec_id: &str) -> String {
    format!("stockade-x-{exec_id}")
}

fn check_argv(argv: &[String], env: &[String]) -> Result<(), PlanError> {
    if argv.is_empty() || (argv.len() == 1 && argv[0].is_empty()) {
        return Err(PlanError::Empty);
    }
    if argv.iter().chain(env).any(|a| a.contains('\0')) {
        return Err(PlanError::NulByte);
    }
    if let Some(long) = argv.iter().find(|a| a.len() > MAX_ARGUMENT_BYTES) {
        return Err(PlanError::CommandTooLong {
            len: long.len(),
            max: MAX_ARGUMENT_BYTES,
        });
    }
    let total: usize = argv.iter().chain(env).map(|a| a.len() + 1).sum();
    if total > MAX_ARGV_TOTAL_BYTES {
        return Err(PlanError::ArgvTooLong {
            len: total,
            max: MAX_ARGV_TOTAL_BYTES,
        });
    }
    Ok(())
}

/// Turns a profile and a request into the sandbox and the process to run. `exec_id` names a
/// one-shot sandbox; `state_id` ([`state_id`]) marks whose it is; `agent` are the agent's
/// mounts when the agent runs the sandbox's processes.
pub fn plan(
    profile: &Profile,
    request: &ExecRequest,
    exec_id: &str,
    state_id: &str,
    agent: Option<&crate::agent::Mounts>,
) -> Result<Plan, PlanError> {
    if let Some(session) = &request.session {
        validate_session_id(session)?;
    }
    let env = request
        .env
        .iter()
        .map(|entry| {
            let (name, _) = entry
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| PlanError::EnvSyntax {
                    entry: entry.clone(),
                })?;
            if !profile.env_allowed(name) {
                return Err(PlanError::EnvNotAllowed {
                    name: name.to_string(),
                    profile: profile.name.clone(),
                    allowed: profile.env_allow.join(", "),
                });
            }
            Ok(entry.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(&request.command, CommandLine::Shell(t) if t.trim().is_empty()) {
        return Err(PlanError::Empty);
    }
    let argv = request.command.argv();
    check_argv(&argv, &env)?;
    let working_dir = match &request.workdir {
        Some(w) if !w.starts_with('/') => return Err(PlanError::Workdir { workdir: w.clone() }),
        Some(w) => w.clone(),
        None => profile.workdir.clone(),
    };
    let timeout = request.timeout.unwrap_or(profile.timeout);
    if timeout > Duration::from_secs(24 * 3600) {
        return Err(PlanError::Timeout { timeout });
    }
    if timeout.is_zero() {
        return Err(PlanError::ZeroTimeout);
    }
    let process = ProcessSpec {
        argv,
        user: profile.user,
        working_dir,
        env,
        timeout,
        kill_grace: profile.kill_grace,
        output_cap: profile.output_cap,
        output_hard_limit: profile.output_cap.saturating_mul(FLOOD_FACTOR),
        stdin: request.stdin,
    };
    Ok(Plan {
        sandbox: sandbox_spec(
            profile,
            request.session.as_deref(),
            exec_id,
            state_id,
            agent,
        ),
        process,
        session: request.session.clone(),
    })
}

/// The sandbox a profile describes.
pub fn sandbox_spec(
    profile: &Profile,
    session: Option<&str>,
    exec_id: &str,
    state_id: &str,
    agent: Option<&crate::agent::Mounts>,
) -> SandboxSpec {
    let tmpfs = profile
        .tmpfs
        .iter()
        .map(|t| TmpfsMount {
            path: t.path.clone(),
            size_bytes: t.size_bytes,
            mode: t.mode,
            exec: t.exec,
            // The engine gives a tmpfs over an image directory that directory's mode but not
            // always its owner, so the sandbox user is made the owner explicitly.
            owner: profile.user,
        })
        .collect();
    let binds = profile
        .binds
        .iter()
        .map(|b| BindMount {
            source: b.source.clone(),
            target: b.target.clone(),
            read_only: b.read_only,
        })
        .collect();
    let (name, kind) = match session {
        Some(s) => (
            session_sandbox_name(state_id, s),
            SandboxKind::Session {
                name: s.to_string(),
            },
        ),
        None => (
            oneshot_sandbox_name(exec_id),
            SandboxKind::Oneshot {
                exec: exec_id.to_string(),
            },
        ),
    };
    let mut spec = SandboxSpec {
        name,
        kind,
        owner: state_id.to_string(),
        profile: profile.name.clone(),
        elevated: profile.elevated,
        image: profile.image.clone(),
        user: profile.user,
        read_only_root: profile.read_only_root,
        tmpfs,
        binds,
        network: match profile.network.as_str() {
            "none" => Network::None,
            other => Network::Named(other.to_string()),
        },
        capabilities: profile.effective_caps(),
        no_new_privileges: profile.no_new_privileges,
        seccomp: profile.seccomp.clone(),
        limits: Limits {
            pids: profile.pids_limit,
            memory_bytes: profile.memory_bytes,
            nano_cpus: (profile.cpus * 1e9) as i64,
        },
        agent: agent.cloned(),
        digest: String::new(),
    };
    spec.digest = spec_digest(&spec);
    spec
}

/// What shapes a sandbox: everything but its name, its kind and its digest, and the seccomp
/// file's contents. A session's sandbox created under another spec is never reused.
fn spec_digest(spec: &SandboxSpec) -> String {
    #[derive(Serialize)]
    struct Shape<'a> {
        spec: &'a SandboxSpec,
        seccomp: &'a str,
    }
    let mut neutral = spec.clone();
    neutral.name.clear();
    neutral.kind = SandboxKind::Oneshot {
        exec: String::new(),
    };
    neutral.digest.clear();
    // Serializing plain structs of strings, numbers and maps cannot fail.
    let bytes = serde_json::to_vec(&Shape {
        spec: &neutral,
        seccomp: &spec.seccomp.json,
    })
    .unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..12])
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
