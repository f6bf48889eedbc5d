//! One execution end to end: check -> plan -> run -> audit. The one place the stages are
//! sequenced, for every face ([`Service::exec`]).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{self, Channel};
use crate::audit::{AuditLog, Finish, Outcome, RecordBody, Start};
use crate::backend::{
    Backend, BackendError, BackendKind, Ran, Recovered, Runner, Sandbox, Sink, Stdin, Streams,
};
use crate::cancel::{Cancel, Reason};
use crate::check::{Decision, RuleHit, Verdict};
use crate::config::OnAuditFailure;
use crate::inflight::{self, Marker};
use crate::plan::{self, ExecRequest, Plan};
use crate::profile::{self, Profile};
use crate::service::{Principal, Service};
use crate::session;

pub use crate::plan::FLOOD_FACTOR;

/// How long an execution waits, at its end, for the background removal of orphaned one-shot
/// containers it started (only after a crash; see [`session::sweep_in_background`]).
const SWEEP_JOIN: Duration = Duration::from_secs(2);

/// How to run a request, beyond what it asks.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// A profile name or path; `None`: the configured default (or elevated) profile.
    pub profile: Option<String>,
    pub elevated: bool,
    /// Also keep both streams interleaved in arrival order (`output` in the result).
    pub interleaved: bool,
    /// stockade's own probes (recording, live escape attempts) skip the check; audited as
    /// `check_bypassed`. No face offers it.
    pub bypass_check: bool,
    /// Secrets to put in the command's environment (as `NAME=VALUE`, by their names),
    /// redacted from everything returned, streamed and recorded.
    pub secrets: Vec<String>,
}

/// The result of one execution: the same keys for every outcome, for every face
/// (docs/exec-result.schema.json).
#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    pub outcome: Outcome,
    /// The command's exit code (128 + N when a signal ended it); `null` when it did not end
    /// by itself (timeout, flood, interrupt), never ran, or stockade failed.
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// The command hit the sandbox's process limit (a fork was refused).
    pub pids_limit_hit: bool,
    /// The output passed the hard limit (cap x [`FLOOD_FACTOR`]) and the command was stopped.
    pub output_limit_hit: bool,
    /// The sandbox's tmpfs contents were lost: the kill could not end every process and the
    /// sandbox was reset, or a session's sandbox had stopped or gone and was brought back.
    pub sandbox_reset: bool,
    /// Why the execution was cancelled, when it was.
    pub interrupted: Option<String>,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    /// Both streams interleaved in arrival order, when asked for.
    pub output: Option<String>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Some output passed the cap and was cut (head and tail kept).
    pub truncated: bool,
    /// How many times a secret's value (or an encoding of it) was replaced by
    /// `[REDACTED:NAME]` in `stdout` and `stderr`.
    pub redactions: u64,
    /// SHA-256 of the whole stdout and stderr, as the agent vouched for them.
    pub stdout_sha256: Option<String>,
    pub stderr_sha256: Option<String>,
    /// Processes the command left running when it exited; they were ended.
    pub leftovers_ended: u32,
    /// System V IPC objects and message queues it left; they were removed.
    pub ipc_removed: u32,
    /// Files the command runs that were read from the sandbox and judged before it ran.
    pub scripts: Vec<crate::audit::ScriptRead>,
    /// The check stage's decision (`null`: the command was not judged, e.g. a usage error),
    /// and the rules that matched.
    pub decision: Option<Decision>,
    pub rules: Vec<RuleHit>,
    /// The command as judged and recorded (an argv shell-quoted).
    pub command: String,
    pub audit_id: Option<String>,
    /// Set when the command ran although its audit records could not be written
    /// (`on_audit_failure = "run"`): why, and that they are held until the log can be written.
    pub audit_error: Option<String>,
    pub session: Option<String>,
    /// The sandbox it ran in (a container name for Docker).
    pub sandbox: Option<String>,
    pub profile: Option<String>,
    pub elevated: bool,
    pub backend: BackendKind,
    /// Where on a cluster the sandbox runs (the Kubernetes backend).
    pub placement: Option<crate::backend::Placement>,
    /// How it ran: `agent` (results under the agent's MAC) or `exec`.
    pub runner: Option<Runner>,
    /// What deserves a look (a profile uid that is a host account...).
    pub warnings: Vec<String>,
    /// What happened besides the command (limits hit, a sandbox reset), for humans.
    pub notes: Vec<String>,
    /// Set when stockade failed or refused; says what to do.
    pub error: Option<String>,
    /// Why it was cancelled, for the face (the CLI's exit status 128 + N).
    #[serde(skip)]
    pub cancelled: Option<Reason>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("elevation refused: the configuration does not allow it (set `allow_elevation = true` in config.toml)")]
    ElevationRefused,
    #[error("--elevated was given but profile {profile:?} is not an elevated profile")]
    NotElevatedProfile { profile: String },
    #[error("cannot write the audit log, so nothing runs: {0}")]
    Audit(String),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error("{}; {}", reason, if *started { "the command's processes were ended inside the sandbox" } else { "the command was not started" })]
    Interrupted { reason: Reason, started: bool },
    #[error("the command's argument {argument} is not valid UTF-8, which the engine API cannot carry: pass such bytes through a file or an encoding (printf '\\xff', base64)")]
    NotUtf8 { argument: usize },
    #[error(transparent)]
    AgentInstall(#[from] agent::InstallError),
    #[error("denied by policy before it ran: {message}")]
    PlantedDenied { message: String },
    #[error("session {session:?} is busy: another command held it for {}s, as long as this command may run; try again later or use another session", waited.as_secs())]
    SessionBusy { session: String, waited: Duration },
}

impl From<crate::audit::AuditError> for ExecError {
    fn from(e: crate::audit::AuditError) -> Self {
        ExecError::Audit(e.to_string())
    }
}

impl ExecError {
    /// Whether this is a refusal by policy (exit 126), as opposed to a failure (125).
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            ExecError::ElevationRefused | ExecError::PlantedDenied { .. }
        )
    }
}

impl ExecResult {
    fn new(command: &str, verdict: Option<&Verdict>, backend: BackendKind) -> ExecResult {
        ExecResult {
            outcome: Outcome::Error,
            exit_code: None,
            signal: None,
            timed_out: false,
            oom_killed: false,
            pids_limit_hit: false,
            output_limit_hit: false,
            sandbox_reset: false,
            interrupted: None,
            duration_ms: 0,
            stdout: String::new(),
            stderr: String::new(),
            output: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            redactions: 0,
            stdout_sha256: None,
            stderr_sha256: None,
            leftovers_ended: 0,
            ipc_removed: 0,
            scripts: Vec::new(),
            decision: verdict.map(|v| v.decision),
            rules: verdict.map(|v| v.rules.clone()).unwrap_or_default(),
            command: command.to_string(),
            audit_id: None,
            audit_error: None,
            session: None,
            sandbox: None,
            profile: None,
            elevated: false,
            backend,
            placement: None,
            runner: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            error: None,
            cancelled: None,
        }
    }

    /// The result of a request that never reached the flow (a face's own usage error), in
    /// the same shape as every other.
    pub fn failed(command: &str, error: &str, backend: BackendKind) -> ExecResult {
        let mut result = ExecResult::new(command, None, backend);
        result.error = Some(error.trim_end().to_string());
        result
    }

    /// One line per limit hit or reset, for humans (the JSON has the flags too).
    fn note_limits(&mut self) {
        if self.output_limit_hit {
            self.notes.push(format!(
                "the command's output passed the hard limit ({FLOOD_FACTOR} x the profile's \
                 output cap); it was stopped"
            ));
        }
        if self.oom_killed {
            self.notes.push(
                "the command was killed by the out-of-memory killer (the profile's memory limit)"
                    .to_string(),
            );
        }
        if self.pids_limit_hit {
            self.notes.push(
                "the command hit the profile's process limit (a fork was refused)".to_string(),
            );
        }
    }
}

fn allow_all() -> Verdict {
    Verdict {
        decision: Decision::Allow,
        rules: Vec::new(),
    }
}

/// A unique id for one execution: time-ordered, random tail.
pub fn new_exec_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{:x}{}", now.as_millis(), &random[..10])
}

/// A secret's name and its value, decrypted (wiped when dropped).
type Opened = (String, zeroize::Zeroizing<Vec<u8>>);

/// A plan whose environment (where secrets' values are) is wiped when it is dropped.
struct Wiped(plan::Plan);

impl Drop for Wiped {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for entry in &mut self.0.process.env {
            entry.zeroize();
        }
    }
}

/// Replaces secrets' values in everything a result shows, and counts them.
fn redact_result(redactor: &crate::secrets::Redactor, result: &mut ExecResult) {
    let mut count = 0;
    for text in [&mut result.stdout, &mut result.stderr] {
        let (clean, n) = redactor.redact_output(text);
        *text = clean;
        count += n;
    }
    if let Some(text) = result.output.as_mut() {
        *text = redactor.redact_output(text).0;
    }
    if let Some(text) = result.error.as_mut() {
        *text = redactor.redact_str(text).0;
    }
    for hit in &mut result.rules {
        hit.fragment = redactor.redact_str(&hit.fragment).0;
    }
    result.redactions = count;
}

fn denial_message(verdict: &Verdict) -> String {
    let hits: Vec<String> = verdict
        .rules
        .iter()
        .filter(|h| h.decision == Decision::Deny)
        .map(|h| format!("{} ({}): {:?}: {}", h.id, h.severity, h.fragment, h.why))
        .collect();
    format!("denied by policy: {}", hits.join("; "))
}

/// Whether an execution left anything behind.
enum Cleared {
    All,
    /// The one-shot sandbox could not be removed; the next invocation removes it.
    SandboxLeft,
}

impl<B: Backend> Service<B> {
    /// Picks and loads the profile, enforcing the elevation rules.
    pub fn select_profile(&self, options: &ExecOptions) -> Result<Profile, ExecError> {
        let name = self.profile_name(options);
        let profile = self.profiles.load(&name, &self.profile_dirs)?;
        if options.elevated && !profile.elevated {
            return Err(ExecError::NotElevatedProfile { profile: name });
        }
        Ok(profile)
    }

    fn profile_name(&self, options: &ExecOptions) -> String {
        match (&options.profile, options.elevated) {
            (Some(p), _) => p.clone(),
            (None, true) => self.config.elevated_profile.clone(),
            (None, false) => self.config.default_profile.clone(),
        }
    }

    /// The values of the secrets `names`, decrypted.
    fn open_secrets(
        &self,
        principal: &Principal,
        names: &[String],
    ) -> Result<Vec<Opened>, crate::secrets::SecretError> {
        // A principal of another face (a token) gets only the secrets granted to it.
        let api = principal.via.map(|_| principal.name.as_str());
        names
            .iter()
            .map(|n| Ok((n.clone(), self.secrets.get_for(n, api)?)))
            .collect()
    }

    /// The `start` record of a request: who asked, what, and the verdict (the profile's
    /// fields are the caller's to fill).
    fn start_record(
        &self,
        id: &str,
        principal: &Principal,
        request: &ExecRequest,
        command: String,
        verdict: &Verdict,
        options: &ExecOptions,
    ) -> Start {
        Start {
            id: id.to_string(),
            session: request.session.clone(),
            user: principal.name.clone(),
            via: principal.via.map(str::to_string),
            command,
            workdir: request.workdir.clone(),
            env: request.env.clone(),
            stdin_sha256: request
                .stdin_given
                .as_ref()
                .map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))),
            decision: verdict.decision,
            rules: verdict.rule_ids(),
            profile: String::new(),
            backend: self.backend.kind(),
            elevated: false,
            check_bypassed: options.bypass_check,
            unsafe_opt_outs: Vec::new(),
            transfer: None,
            secrets: Vec::new(),
        }
    }

    fn verdict(
        &self,
        request: &ExecRequest,
        options: &ExecOptions,
        profile: Option<&Profile>,
    ) -> Verdict {
        if options.bypass_check {
            return allow_all();
        }
        let policy = profile.map(|p| p.policy.clone()).unwrap_or_default();
        let mut verdict = self.checker.check(&request.command.text(), &policy);
        // What else the command may run as code is judged as shell text too: the values of
        // the environment asked for (`eval "$X"`, `bash -c "$X"`) and a stdin given in advance
        // (`bash` reading it). The decision is the strictest.
        let values = request
            .env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(_, v)| v.to_string()));
        let stdin = request
            .stdin_given
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        for text in values.chain(stdin) {
            if text.trim().is_empty() {
                continue;
            }
            let more = self.checker.check(&text, &policy);
            verdict.decision = verdict.decision.max(more.decision);
            for hit in more.rules {
                if !verdict.rules.iter().any(|h| h.id == hit.id) {
                    verdict.rules.push(hit);
                }
            }
        }
        verdict
    }

    /// Runs one request and returns its result, whatever happens: a refusal, a failure and an
    /// interruption are results too. Never returns before the audit log has a `finish` for
    /// every `start` it wrote (unless writing it failed, which the result then says).
    pub async fn exec(
        &self,
        principal: &Principal,
        request: &ExecRequest,
        options: &ExecOptions,
        stdin: Stdin<'_>,
        sink: Option<Box<dyn Sink>>,
        cancel: &Cancel,
    ) -> ExecResult {
        match self.select_profile(options) {
            Ok(profile) => {
                self.exec_with(principal, &profile, request, options, stdin, sink, cancel)
                    .await
            }
            Err(e) => self.refuse(principal, request, options, e),
        }
    }

    /// Refuses a request that cannot be run as given (an unknown profile, a command that is
    /// not UTF-8), leaving it on record like any other refusal when the log can be written:
    /// an agent probing profile names is visible there.
    pub fn refuse(
        &self,
        principal: &Principal,
        request: &ExecRequest,
        options: &ExecOptions,
        error: ExecError,
    ) -> ExecResult {
        let verdict = self.verdict(request, options, None);
        let command = request.command.text();
        let mut result = ExecResult::new(&command, Some(&verdict), self.backend.kind());
        result.session = request.session.clone();
        result.outcome = if error.is_denial() {
            Outcome::Denied
        } else {
            Outcome::Error
        };
        result.error = Some(error.to_string());
        let audit = AuditLog::open(&self.state_dir).map_err(|e| e.to_string());
        let id = new_exec_id();
        let start = Start {
            profile: self.profile_name(options),
            elevated: options.elevated,
            ..self.start_record(&id, principal, request, command, &verdict, options)
        };
        if let Ok(held) = self.record(audit.as_ref(), RecordBody::Start(start)) {
            result.audit_id = held.is_none().then(|| id.clone());
            let mut finish = Finish::new(&id, request.session.clone());
            finish.outcome = result.outcome;
            finish.error = result.error.clone();
            let finished = self.record(audit.as_ref(), RecordBody::Finish(finish));
            result.audit_error = held.or(finished.ok().flatten());
        }
        result
    }

    /// Appends `body` to `log`, after any records held from earlier failed writes. When that
    /// fails and the configuration says `on_audit_failure = "run"`, the record is held for the
    /// next writable moment and `Ok(Some(why))` says so; `Err(why)` means the failure stands.
    fn record(
        &self,
        log: Result<&AuditLog, &String>,
        body: RecordBody,
    ) -> Result<Option<String>, String> {
        let run = self.config.on_audit_failure == OnAuditFailure::Run;
        let failed = match log {
            Err(e) => e.clone(),
            Ok(log) => match self.pending.flush(log, &self.state_dir) {
                Err(e) => e.to_string(),
                Ok(_) if run => match log.append(body.clone()) {
                    Ok(_) => return Ok(None),
                    Err(e) => e.to_string(),
                },
                Ok(_) => return log.append(body).map(|_| None).map_err(|e| e.to_string()),
            },
        };
        if !run {
            return Err(failed);
        }
        if !self.pending.hold(&self.state_dir, body, &failed) {
            return Err(format!(
                "{failed}; and the record cannot be held in {} either",
                crate::audit::SPILL_FILE
            ));
        }
        Ok(Some(format!(
            "the audit log could not be written ({failed}); the command was not refused because \
             on_audit_failure = \"run\": its records are held and will be written after a gap \
             record once the log can be written (see `stockade audit verify` and `stockade doctor`)"
        )))
    }

    /// [`Service::exec`] under an already loaded profile (for tools that derive a profile,
    /// such as the seccomp recorder).
    #[allow(clippy::too_many_arguments)]
    pub async fn exec_with(
        &self,
        principal: &Principal,
        profile: &Profile,
        request: &ExecRequest,
        options: &ExecOptions,
        stdin: Stdin<'_>,
        sink: Option<Box<dyn Sink>>,
        cancel: &Cancel,
    ) -> ExecResult {
        let exec_id = new_exec_id();
        let verdict = self.verdict(request, options, Some(profile));
        // The secrets asked for, decrypted now: put in the process's environment only, and
        // redacted (in their common encodings too) from all that is returned and recorded.
        let (secrets, secret_error) = match self.open_secrets(principal, &options.secrets) {
            Ok(s) => (s, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let redactor = std::sync::Arc::new(crate::secrets::Redactor::new(
            secrets.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        ));
        let command = redactor.redact_str(&request.command.text()).0;
        let mut result = ExecResult::new(&command, Some(&verdict), self.backend.kind());
        result.session = request.session.clone();
        result.profile = Some(profile.name.clone());
        result.elevated = profile.elevated;
        result.warnings = profile
            .warnings
            .iter()
            .map(|w| format!("profile {}: {w}", profile.name))
            .collect();
        let audit = AuditLog::open(&self.state_dir).map_err(|e| e.to_string());
        let mut start = Start {
            profile: profile.name.clone(),
            elevated: profile.elevated,
            unsafe_opt_outs: profile.unsafe_opt_outs.clone(),
            secrets: options.secrets.clone(),
            ..self.start_record(&exec_id, principal, request, command, &verdict, options)
        };
        for entry in &mut start.env {
            *entry = redactor.redact_str(entry).0;
        }
        let started = Instant::now();
        let mut finish = Finish::new(&exec_id, request.session.clone());
        // Refusals are audited too: a start that says what was asked, a finish that says why.
        let refusal = if profile.elevated && !self.config.allow_elevation {
            Some((Outcome::Denied, ExecError::ElevationRefused.to_string()))
        } else if verdict.decision == Decision::Deny {
            Some((Outcome::Denied, denial_message(&verdict)))
        } else {
            secret_error.map(|e| (Outcome::Error, e.to_string()))
        };
        match self.record(audit.as_ref(), RecordBody::Start(start)) {
            Err(e) => {
                result.error = Some(ExecError::Audit(e).to_string());
                return result;
            }
            Ok(None) => result.audit_id = Some(exec_id.clone()),
            Ok(Some(held)) => result.audit_error = Some(held),
        }
        if let Some((outcome, why)) = refusal {
            // A refusal names fragments of the command: those are redacted too.
            let why = redactor.redact_str(&why).0;
            finish.outcome = outcome;
            finish.error = Some(why.clone());
            result.outcome = outcome;
            result.error = Some(why);
            if !redactor.is_empty() {
                redact_result(&redactor, &mut result);
            }
            match self.record(audit.as_ref(), RecordBody::Finish(finish)) {
                Err(e) => {
                    result.error = Some(format!(
                        "{}; and its audit finish record could not be written: {e}",
                        result.error.unwrap_or_default()
                    ))
                }
                Ok(held) => result.audit_error = result.audit_error.take().or(held),
            }
            return result;
        }

        let redacted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = match sink {
            Some(inner) if !redactor.is_empty() => Some(Box::new(
                crate::secrets::RedactingSink::new(inner, redactor.clone(), redacted.clone()),
            ) as Box<dyn Sink>),
            other => other,
        };
        let mut streams = Streams::new(profile.output_cap, options.interleaved, sink);
        // A check bypassed (stockade's own probes) is bypassed for the files it runs too.
        let judge = (!options.bypass_check).then_some(&profile.policy);
        let ran = self
            .run(
                profile,
                judge,
                request,
                &exec_id,
                &secrets,
                stdin,
                &mut streams,
                &mut result,
                cancel,
            )
            .await;
        streams.finish();

        finish.sandbox = result.sandbox.clone();
        finish.placement = result.placement.clone();
        finish.duration_ms = started.elapsed().as_millis() as u64;
        finish.stdout_bytes = streams.stdout.total();
        finish.stderr_bytes = streams.stderr.total();
        finish.truncated = streams.stdout.truncated() || streams.stderr.truncated();
        result.stdout = streams.stdout.text();
        result.stderr = streams.stderr.text();
        result.output = streams.output.as_ref().map(|o| o.text());
        drop(streams);
        result.stdout_bytes = finish.stdout_bytes;
        result.stderr_bytes = finish.stderr_bytes;
        result.truncated = finish.truncated;
        result.duration_ms = finish.duration_ms;
        match ran {
            Ok(()) => {
                result.outcome = if result.cancelled.is_some() {
                    Outcome::Interrupted
                } else if result.timed_out {
                    Outcome::TimedOut
                } else if result.output_limit_hit {
                    Outcome::OutputLimit
                } else {
                    Outcome::Completed
                };
                if let Some(reason) = result.cancelled {
                    result.error = Some(
                        ExecError::Interrupted {
                            reason,
                            started: true,
                        }
                        .to_string(),
                    );
                }
            }
            Err(ExecError::Interrupted { reason, started }) => {
                result.outcome = Outcome::Interrupted;
                result.cancelled = Some(reason);
                result.interrupted = Some(reason.to_string());
                result.error = Some(ExecError::Interrupted { reason, started }.to_string());
            }
            Err(e) if e.is_denial() => {
                result.outcome = Outcome::Denied;
                result.error = Some(e.to_string());
            }
            Err(e) => {
                result.outcome = Outcome::Error;
                result.error = Some(e.to_string());
            }
        }
        finish.scripts = result.scripts.clone();
        if !redactor.is_empty() {
            redact_result(&redactor, &mut result);
        }
        result.note_limits();
        finish.outcome = result.outcome;
        finish.exit_code = result.exit_code;
        finish.signal = result.signal.or(result.cancelled.and_then(Reason::signal));
        finish.timed_out = result.timed_out;
        finish.oom_killed = result.oom_killed;
        finish.output_limit_hit = result.output_limit_hit;
        finish.pids_limit_hit = result.pids_limit_hit;
        finish.sandbox_reset = result.sandbox_reset;
        finish.leftovers_ended = result.leftovers_ended;
        finish.ipc_removed = result.ipc_removed;
        finish.stdout_sha256 = result.stdout_sha256.clone();
        finish.stderr_sha256 = result.stderr_sha256.clone();
        finish.error = result.error.clone();
        match self.record(audit.as_ref(), RecordBody::Finish(finish)) {
            // The command ran; its start is on record. Say loudly that its finish is not.
            Err(e) => {
                result.outcome = Outcome::Error;
                result.error = Some(format!(
                    "command finished but its audit finish record could not be written: {e}"
                ));
            }
            Ok(held) => result.audit_error = result.audit_error.take().or(held),
        }
        result
    }

    /// Plan, acquire, run, release.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        profile: &Profile,
        judge: Option<&crate::check::Policy>,
        request: &ExecRequest,
        exec_id: &str,
        secrets: &[Opened],
        stdin: Stdin<'_>,
        streams: &mut Streams,
        result: &mut ExecResult,
        cancel: &Cancel,
    ) -> Result<(), ExecError> {
        let state_id = plan::state_id(&self.state_dir);
        let channel = match &request.session {
            Some(s) => {
                plan::validate_session_id(s)?;
                Channel::session(&self.state_dir, s)
            }
            None => Channel::oneshot(&self.state_dir, exec_id),
        };
        let mounts = if self.backend.uses_agent() {
            Some(channel.mounts(agent::install(&self.state_dir)?))
        } else {
            None
        };
        let mut plan = Wiped(plan::plan(
            profile,
            request,
            exec_id,
            &state_id,
            mounts.as_ref(),
        )?);
        let plan = &mut plan.0;
        for (name, value) in secrets {
            let value = std::str::from_utf8(value).map_err(|_| {
                ExecError::Secret(crate::secrets::SecretError::NotText { name: name.clone() })
            })?;
            plan.process.env.push(format!("{name}={value}"));
        }
        let plan: &plan::Plan = plan;
        // Written before any sandbox exists; removed only once nothing of this execution is
        // left running, so that a `kill -9` from here on is cleaned up by the next invocation.
        let in_flight = inflight::begin(
            &self.state_dir,
            &Marker {
                id: exec_id.to_string(),
                session: plan.session.clone(),
            },
        )?;
        if mounts.is_some() {
            // The bind source must exist before the sandbox is created.
            channel.prepare()?;
        }
        let setup = async {
            let sweep = session::sweep_in_background(&self.backend, &self.state_dir);
            let (lock, sandbox) = match &plan.session {
                Some(s) => {
                    let (lock, sandbox) = self.hold_session(plan, s, cancel).await?;
                    (Some(lock), sandbox)
                }
                None => {
                    let mut progress = |line: &str| tracing::info!("{line}");
                    let sandbox = self
                        .backend
                        .acquire(&plan.sandbox, false, &mut progress)
                        .await?;
                    (None, sandbox)
                }
            };
            Ok::<_, ExecError>((sweep, lock, sandbox))
        };
        let ready = tokio::select! {
            ready = setup => ready,
            reason = cancel.wait() => Err(ExecError::Interrupted { reason, started: false }),
        };
        let (sweep, _lock, sandbox) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                // Only an interrupted setup can leave a one-shot sandbox behind (a failed
                // create or start removes its own); remove it by name, since its id was never
                // seen.
                let clean = !matches!(e, ExecError::Interrupted { .. })
                    || plan.session.is_some()
                    || self.remove_by_name(plan).await;
                if clean {
                    if plan.session.is_none() {
                        channel.remove();
                    }
                    in_flight.done();
                }
                return Err(e);
            }
        };
        result.sandbox = Some(sandbox.name.clone());
        result.placement = sandbox.placement.clone();
        if let Some(recovered) = sandbox.recovered {
            result.sandbox_reset = true;
            result.notes.push(recovered.note().to_string());
        }

        let judged = match judge {
            Some(policy) => {
                self.judge_planted(&sandbox, plan, policy, request, result)
                    .await
            }
            None => Ok(()),
        };
        let cleared = match judged {
            // Nothing of the command ran: nothing is left.
            Err(e) => {
                if plan.session.is_none() {
                    channel.remove();
                }
                in_flight.done();
                return Err(e);
            }
            Ok(()) => {
                self.run_in(&sandbox, plan, stdin, streams, result, cancel)
                    .await
            }
        };
        // Left in place (unlocked) when something may be left: the next invocation cleans up.
        if let Ok(Cleared::All) = cleared {
            if plan.session.is_none() {
                channel.remove();
            }
            in_flight.done();
        }
        if let Some(sweep) = sweep {
            let _ = tokio::time::timeout(SWEEP_JOIN, sweep).await;
        }
        cleared.map(drop)
    }

    /// Reads the files the command runs from the session's sandbox (`bash /workspace/s`,
    /// `./s`, `make`, `npm run`: earlier commands may have written them) and judges their
    /// content as part of the command; a denial stops it before it starts. A one-shot's sandbox
    /// is new, so whatever it runs is in the command itself.
    async fn judge_planted(
        &self,
        sandbox: &Sandbox,
        plan: &Plan,
        policy: &crate::check::Policy,
        request: &ExecRequest,
        result: &mut ExecResult,
    ) -> Result<(), ExecError> {
        if plan.session.is_none() || result.decision.is_none() {
            return Ok(());
        }
        let files = self.checker.analyze(&request.command.text()).runs_files;
        if files.is_empty() {
            return Ok(());
        }
        let mut verdict = Verdict {
            decision: result.decision.unwrap_or(Decision::Allow),
            rules: std::mem::take(&mut result.rules),
        };
        let mut stopped = Vec::new();
        for file in &files {
            let path = crate::planted::sandbox_path(file, &plan.process.working_dir);
            let mut read = crate::planted::Bounded::default();
            let copied = self
                .backend
                .copy_out(sandbox, &plan.process, &path, &mut read)
                .await;
            if copied.is_err() && !read.full {
                // Not there (yet), or not a file: the command's own text is all there is.
                continue;
            }
            let (more, record) = crate::planted::judge(&self.checker, policy, &path, file, &read);
            if let Some(more) = more {
                if crate::planted::stops(more.decision) {
                    stopped.push(format!("{path} (sha256 {})", record.sha256));
                }
                crate::planted::merge(&mut verdict, &path, more);
            }
            result.scripts.push(record);
        }
        result.decision = Some(verdict.decision);
        result.rules = verdict.rules;
        if stopped.is_empty() {
            return Ok(());
        }
        Err(ExecError::PlantedDenied {
            message: format!(
                "the command runs {}, whose content the check denies ({}); nothing ran",
                stopped.join(", "),
                result
                    .rules
                    .iter()
                    .filter(|h| h.decision == Decision::Deny)
                    .map(|h| h.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Takes session `session`'s lock (waiting at most as long as the planned process may run)
    /// and its sandbox (created, or brought back and said so), and ends what killed commands
    /// left running in it.
    pub(crate) async fn hold_session(
        &self,
        plan: &Plan,
        session: &str,
        cancel: &Cancel,
    ) -> Result<(session::SessionLock, Sandbox), ExecError> {
        let wait = plan.process.timeout;
        let lock = match session::lock(&self.state_dir, session, wait, cancel.wait()).await? {
            session::Locked::Held(lock) => lock,
            session::Locked::Busy => {
                return Err(ExecError::SessionBusy {
                    session: session.to_string(),
                    waited: wait,
                })
            }
            session::Locked::Interrupted(reason) => {
                return Err(ExecError::Interrupted {
                    reason,
                    started: false,
                })
            }
        };
        let known = session::Meta::read(&self.state_dir, session).is_some();
        let mut progress = |line: &str| tracing::info!("{line}");
        let sandbox = self
            .backend
            .acquire(&plan.sandbox, known, &mut progress)
            .await?;
        session::Meta::touch(&self.state_dir, session, &plan.sandbox.profile);
        session::end_leftovers(
            &self.backend,
            &sandbox,
            &plan.process,
            &self.state_dir,
            session,
        )
        .await?;
        Ok((lock, sandbox))
    }

    /// Makes session `session`'s sandbox ready under the profile `options` selects (created,
    /// or found), without running anything in it: what `POST /v1/sandboxes` does.
    pub async fn open_session(
        &self,
        session: &str,
        options: &ExecOptions,
        cancel: &Cancel,
    ) -> Result<Sandbox, ExecError> {
        let profile = self.select_profile(options)?;
        if profile.elevated && !self.config.allow_elevation {
            return Err(ExecError::ElevationRefused);
        }
        let channel = Channel::session(&self.state_dir, session);
        let mounts = if self.backend.uses_agent() {
            Some(channel.mounts(agent::install(&self.state_dir)?))
        } else {
            None
        };
        let request = ExecRequest {
            command: plan::CommandLine::Argv(vec!["true".to_string()]),
            session: Some(session.to_string()),
            ..Default::default()
        };
        let id = new_exec_id();
        let plan = plan::plan(
            &profile,
            &request,
            &id,
            &plan::state_id(&self.state_dir),
            mounts.as_ref(),
        )?;
        if mounts.is_some() {
            channel.prepare()?;
        }
        let (_lock, sandbox) = tokio::select! {
            held = self.hold_session(&plan, session, cancel) => held?,
            reason = cancel.wait() => return Err(ExecError::Interrupted { reason, started: false }),
        };
        Ok(sandbox)
    }

    /// After an interrupted setup, a one-shot sandbox may exist although its id was never
    /// seen: removes it by name. True when it is gone.
    async fn remove_by_name(&self, plan: &Plan) -> bool {
        self.backend.remove(&plan.sandbox.name).await.is_ok()
    }

    /// Runs the planned process in its sandbox and accounts for how it ended.
    async fn run_in(
        &self,
        sandbox: &Sandbox,
        plan: &Plan,
        stdin: Stdin<'_>,
        streams: &mut Streams,
        result: &mut ExecResult,
        cancel: &Cancel,
    ) -> Result<Cleared, ExecError> {
        tracing::debug!(sandbox = %sandbox.name, "sandbox ready");
        let oneshot = !sandbox.is_session();
        let ran = self
            .backend
            .run(sandbox, &plan.process, stdin, streams, cancel)
            .await;
        let Ran {
            ended,
            runner,
            stdout_sha256,
            stderr_sha256,
            warnings,
        } = match ran {
            Ok(ran) => ran,
            Err(e) => {
                if oneshot {
                    let _ = self.backend.remove(&sandbox.id).await;
                }
                if let BackendError::Reset { failed: None, .. } = &e {
                    result.sandbox_reset = true;
                }
                // A broken agent while cancelled: what was asked for happened.
                if let (BackendError::Agent(_), Some(reason)) = (e.cause(), cancel.fired()) {
                    return Err(ExecError::Interrupted {
                        reason,
                        started: true,
                    });
                }
                return Err(e.into());
            }
        };
        result.exit_code = ended.exit_code;
        result.signal = ended.signal();
        result.timed_out = ended.timed_out;
        result.output_limit_hit = ended.flooded;
        result.cancelled = ended.interrupted;
        result.interrupted = ended.interrupted.map(|r| r.to_string());
        let hits = ended.hits.unwrap_or_default();
        result.oom_killed = hits.oom_killed;
        result.pids_limit_hit = hits.pids_limit;
        result.leftovers_ended = ended.leftovers;
        result.ipc_removed = ended.ipc_removed;
        result.runner = Some(runner);
        result.warnings.extend(warnings);
        result.stdout_sha256 = stdout_sha256.map(hex::encode);
        result.stderr_sha256 = stderr_sha256.map(hex::encode);
        if hits.unmeasured {
            result.warnings.push(
                "the sandbox's limit counters could not be read on both sides of the command: \
                 whether it hit the pids or memory limit is not known"
                    .to_string(),
            );
        }
        if ended.kill_incomplete {
            self.backend.reset(sandbox).await?;
            result.sandbox_reset = true;
            result.notes.push(
                "the kill inside the sandbox could not end every process, so the sandbox was \
                 reset (a session's /workspace and other tmpfs contents are gone)"
                    .to_string(),
            );
        }
        if oneshot {
            // The command's result stands; a sandbox that cannot be removed now is removed by
            // the next invocation (its in-flight marker stays).
            if let Err(e) = self.backend.remove(&sandbox.id).await {
                result.warnings.push(format!(
                    "the one-shot sandbox {} could not be removed ({e}); the next stockade call removes it",
                    sandbox.name
                ));
                return Ok(Cleared::SandboxLeft);
            }
        }
        Ok(Cleared::All)
    }
}

impl ExecResult {
    /// The session's sandbox was brought back (for callers that report it).
    pub fn recovered(&self) -> bool {
        self.notes
            .iter()
            .any(|n| n == Recovered::Restarted.note() || n == Recovered::Recreated.note())
    }
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
