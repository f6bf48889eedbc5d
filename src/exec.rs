//! One execution end to end: check -> plan -> run -> audit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{self, Channel};
use crate::audit::{AuditLog, Finish, RecordBody, Start};
use crate::backend::{self, BackendError, Capture, Container, DockerBackend};
use crate::check::{Checker, Decision, Verdict};
use crate::config::Config;
use crate::engine::Engine;
use crate::inflight::{self, Marker};
use crate::interrupt::{self, Interrupt};
use crate::plan::{self, ExecRequest, Plan};
use crate::profile::{self, Profile, ProfileDirs};
use crate::{exit, image, session};

pub use crate::plan::FLOOD_FACTOR;

/// How long an execution waits, at its end, for the background removal of orphaned one-shot
/// containers it started (only after a crash; see [`session::sweep_in_background`]).
const SWEEP_JOIN: Duration = Duration::from_secs(2);

/// Everything `stockade exec` was asked.
#[derive(Debug, Clone, Default)]
pub struct ExecArgs {
    pub profile: Option<String>,
    pub elevated: bool,
    pub request: ExecRequest,
    /// Test-only: skip the check stage. Audited as `check_bypassed`.
    pub bypass_check: bool,
}

/// Where stockade keeps and finds things.
#[derive(Debug, Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    pub profile_dirs: ProfileDirs,
    pub config: Config,
    pub call_timeout: Duration,
}

/// What `--json` prints: one object per execution.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    /// The output passed the hard limit (cap x [`FLOOD_FACTOR`]) and the command was stopped.
    pub output_limit_hit: bool,
    /// The command hit the sandbox's process limit (a fork was refused).
    pub pids_limit_hit: bool,
    /// The kill inside the sandbox could not end every process, so the container was reset
    /// (a session's container restarted: its tmpfs contents are gone).
    pub sandbox_reset: bool,
    /// Signal stockade received during the execution (the command was stopped).
    pub interrupted: Option<i32>,
    /// Processes the command left running when it exited; they were ended (nothing of one
    /// command outlives it).
    pub leftovers_ended: u32,
    /// System V IPC objects and message queues the command left; they were removed.
    pub ipc_removed: u32,
    /// How the command ran: `agent` (results under the agent's MAC) or `exec`.
    pub runner: Runner,
    /// SHA-256 of the whole stdout and stderr, as the agent vouched for them.
    pub stdout_sha256: Option<String>,
    pub stderr_sha256: Option<String>,
    pub verdict: Decision,
    pub rules: Vec<String>,
    pub audit_id: Option<String>,
    pub session: Option<String>,
    pub container: Option<String>,
    pub profile: Option<String>,
    pub elevated: bool,
    /// Set when stockade failed (exit 125) or refused (exit 126); says what to do.
    pub error: Option<String>,
    /// What the profile's load noticed (a uid that is a host account...).
    pub warnings: Vec<String>,
    /// The process exit status stockade itself returns for this execution.
    #[serde(skip)]
    pub status: u8,
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
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error("interrupted by {}; {}", interrupt::name(*signal), if *started { "the command's processes were ended inside the sandbox" } else { "the command was not started" })]
    Interrupted { signal: i32, started: bool },
    #[error("the command's argument {argument} is not valid UTF-8, which the engine API cannot carry: pass such bytes through a file or an encoding (printf '\\xff', base64)")]
    NotUtf8 { argument: usize },
    #[error(transparent)]
    Agent(#[from] agent::client::AgentError),
    #[error(transparent)]
    AgentInstall(#[from] agent::InstallError),
    #[error("session {session:?} is busy: another command held it for {}s, as long as this command may run; try again later or use another session", waited.as_secs())]
    SessionBusy { session: String, waited: Duration },
    #[error(transparent)]
    Rules(#[from] crate::check::CheckError),
    #[error("internal error: {what}")]
    Internal { what: String },
}

impl Report {
    fn new(verdict: &Verdict) -> Report {
        Report {
            exit_code: None,
            signal: None,
            timed_out: false,
            oom_killed: false,
            duration_ms: 0,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            output_limit_hit: false,
            pids_limit_hit: false,
            sandbox_reset: false,
            interrupted: None,
            leftovers_ended: 0,
            ipc_removed: 0,
            runner: Runner::default(),
            stdout_sha256: None,
            stderr_sha256: None,
            verdict: verdict.decision,
            rules: verdict.rule_ids(),
            audit_id: None,
            session: None,
            container: None,
            profile: None,
            elevated: false,
            error: None,
            warnings: Vec::new(),
            status: exit::EXIT_STOCKADE_ERROR,
        }
    }
}

impl Report {
    /// One line per limit the execution hit, for humans (the JSON has the flags).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.output_limit_hit {
            notes.push(format!(
                "the command's output passed the hard limit ({FLOOD_FACTOR} x the profile's \
                 output cap); it was stopped"
            ));
        }
        if self.oom_killed {
            notes.push(
                "the command was killed by the out-of-memory killer (the profile's memory \
                 limit)"
                    .to_string(),
            );
        }
        if self.pids_limit_hit {
            notes.push(
                "the command hit the profile's process limit (a fork was refused)".to_string(),
            );
        }
        if self.sandbox_reset {
            notes.push(
                "the kill inside the sandbox could not end every process, so the container \
                 was reset (a session's /workspace and other tmpfs contents are gone)"
                    .to_string(),
            );
        }
        notes
    }
}

/// Picks and loads the profile, enforcing the elevation rules.
pub fn select_profile(ctx: &Context, args: &ExecArgs) -> Result<Profile, ExecError> {
    let name = match (&args.profile, args.elevated) {
        (Some(p), _) => p.clone(),
        (None, true) => ctx.config.elevated_profile.clone(),
        (None, false) => ctx.config.default_profile.clone(),
    };
    let profile = profile::load(&name, &ctx.profile_dirs)?;
    if args.elevated && !profile.elevated {
        return Err(ExecError::NotElevatedProfile { profile: name });
    }
    Ok(profile)
}

/// Runs one command. `echo` streams output live (else it is only captured for `--json`).
/// Never returns before the audit log has a `finish` for every `start` it wrote.
pub async fn execute(ctx: &Context, args: &ExecArgs, echo: bool) -> Result<Report, ExecError> {
    let profile = match select_profile(ctx, args) {
        Ok(p) => p,
        Err(e) => {
            audit_refusal(ctx, args, &e);
            return Err(e);
        }
    };
    tracing::debug!("profile loaded");
    execute_with(ctx, &profile, args, echo).await
}

/// Refuses a request that cannot be run as given (for example a command that is not UTF-8),
/// leaving it on record like any other refusal. Returns the error for the caller to report.
pub fn refuse(ctx: &Context, args: &ExecArgs, error: ExecError) -> ExecError {
    audit_refusal(ctx, args, &error);
    error
}

/// A request refused before its profile could be loaded (unknown or malformed profile,
/// elevation misuse) still leaves a `start` and a `finish` in the audit log, when the log can
/// be written: an agent probing profile names is visible there.
fn audit_refusal(ctx: &Context, args: &ExecArgs, error: &ExecError) {
    let Ok(audit) = AuditLog::open(&ctx.state_dir) else {
        return;
    };
    let id = new_exec_id();
    let verdict = if args.bypass_check {
        Verdict {
            decision: Decision::Allow,
            hits: Vec::new(),
        }
    } else {
        match Checker::builtin_prechecked() {
            Ok(checker) => checker.check(&args.request.command, &Default::default()),
            Err(_) => Verdict {
                decision: Decision::Allow,
                hits: Vec::new(),
            },
        }
    };
    let requested = match (&args.profile, args.elevated) {
        (Some(p), _) => p.clone(),
        (None, true) => ctx.config.elevated_profile.clone(),
        (None, false) => ctx.config.default_profile.clone(),
    };
    let start = Start {
        id: id.clone(),
        session: args.request.session.clone(),
        user: current_user(),
        command: args.request.command.clone(),
        verdict: verdict.decision,
        rules: verdict.rule_ids(),
        profile: requested,
        backend: backend::BACKEND_DOCKER.to_string(),
        elevated: args.elevated,
        check_bypassed: args.bypass_check,
        unsafe_opt_outs: Vec::new(),
    };
    if audit.append(RecordBody::Start(start)).is_err() {
        return;
    }
    let mut finish = Finish::new(&id, args.request.session.clone());
    finish.outcome = "error".to_string();
    finish.error = Some(error.to_string());
    let _ = audit.append(RecordBody::Finish(finish));
}

/// [`execute`] under an already loaded profile (for tools that derive a profile, such as the
/// seccomp recorder).
pub async fn execute_with(
    ctx: &Context,
    profile: &Profile,
    args: &ExecArgs,
    echo: bool,
) -> Result<Report, ExecError> {
    let profile = profile.clone();
    let exec_id = new_exec_id();
    let audit = AuditLog::open(&ctx.state_dir)?;
    tracing::debug!("audit log open");

    // Connecting to the engine (I/O) overlaps compiling the rules (CPU); a denial never
    // waits for the engine.
    let engine = tokio::spawn(Engine::connect(ctx.call_timeout));
    let verdict = if args.bypass_check {
        Verdict {
            decision: Decision::Allow,
            hits: Vec::new(),
        }
    } else {
        let checker = tokio::task::spawn_blocking(Checker::builtin_prechecked)
            .await
            .map_err(|e| ExecError::Internal {
                what: format!("rule compilation panicked: {e}"),
            })??;
        checker.check(&args.request.command, &profile.policy)
    };
    let mut report = Report::new(&verdict);
    report.session = args.request.session.clone();
    report.profile = Some(profile.name.clone());
    report.elevated = profile.elevated;
    report.audit_id = Some(exec_id.clone());
    report.warnings = profile
        .warnings
        .iter()
        .map(|w| format!("profile {}: {w}", profile.name))
        .collect();

    let start = Start {
        id: exec_id.clone(),
        session: args.request.session.clone(),
        user: current_user(),
        command: args.request.command.clone(),
        verdict: verdict.decision,
        rules: verdict.rule_ids(),
        profile: profile.name.clone(),
        backend: backend::BACKEND_DOCKER.to_string(),
        elevated: profile.elevated,
        check_bypassed: args.bypass_check,
        unsafe_opt_outs: profile.unsafe_opt_outs.clone(),
    };
    let started = Instant::now();
    let mut finish = Finish::new(&exec_id, args.request.session.clone());

    // Refusals are audited too: a start that says what was asked, a finish that says why not.
    let refusal = if profile.elevated && !ctx.config.allow_elevation {
        Some(ExecError::ElevationRefused.to_string())
    } else if verdict.decision == Decision::Deny {
        Some(denial_message(&verdict))
    } else {
        None
    };
    tracing::debug!(verdict = ?verdict.decision, "checked");
    audit.append(RecordBody::Start(start))?;
    tracing::debug!("start record written");
    if let Some(why) = refusal {
        engine.abort();
        finish.outcome = "denied".to_string();
        finish.error = Some(why.clone());
        audit.append(RecordBody::Finish(finish))?;
        report.error = Some(why);
        report.status = exit::EXIT_DENIED;
        return Ok(report);
    }

    let mut stdout = Capture::new(
        profile.output_cap,
        echo.then(|| terminal_safe(std::io::stdout())),
    );
    let mut stderr = Capture::new(
        profile.output_cap,
        echo.then(|| terminal_safe(std::io::stderr())),
    );
    // Installed before the command starts, so that from here on a SIGINT/SIGTERM/SIGHUP ends
    // the command inside the sandbox and still lets the finish record be written.
    let interrupt = Interrupt::install();
    let result = run(
        engine,
        ctx,
        &profile,
        args,
        &exec_id,
        (&mut stdout, &mut stderr),
        &mut report,
        &interrupt,
    )
    .await;
    stdout.finish_echo();
    stderr.finish_echo();

    finish.container = report.container.clone();
    finish.duration_ms = started.elapsed().as_millis() as u64;
    finish.stdout_bytes = stdout.total();
    finish.stderr_bytes = stderr.total();
    finish.truncated = stdout.truncated() || stderr.truncated();
    report.stdout = stdout.text();
    report.stderr = stderr.text();
    report.truncated = finish.truncated;
    report.duration_ms = finish.duration_ms;
    finish.output_limit_hit = report.output_limit_hit;
    finish.pids_limit_hit = report.pids_limit_hit;
    finish.sandbox_reset = report.sandbox_reset;
    finish.leftovers_ended = report.leftovers_ended;
    finish.ipc_removed = report.ipc_removed;
    finish.stdout_sha256 = report.stdout_sha256.clone();
    finish.stderr_sha256 = report.stderr_sha256.clone();
    match &result {
        Ok(()) => {
            finish.outcome = if report.interrupted.is_some() {
                "interrupted"
            } else if report.timed_out {
                "timed_out"
            } else if report.output_limit_hit {
                "output_limit"
            } else {
                "completed"
            }
            .to_string();
            finish.exit_code = report.exit_code;
            finish.signal = report.signal;
            finish.timed_out = report.timed_out;
            finish.oom_killed = report.oom_killed;
            report.status = if let Some(signal) = report.interrupted {
                let why = ExecError::Interrupted {
                    signal,
                    started: true,
                }
                .to_string();
                finish.error = Some(why.clone());
                report.error = Some(why);
                interrupt::exit_status(signal)
            } else if report.timed_out {
                exit::EXIT_TIMEOUT
            } else {
                report
                    .exit_code
                    .map_or(exit::EXIT_STOCKADE_ERROR, |c| (c & 0xff) as u8)
            };
        }
        Err(e @ ExecError::Interrupted { signal, .. }) => {
            finish.outcome = "interrupted".to_string();
            finish.signal = Some(*signal);
            let why = e.to_string();
            finish.error = Some(why.clone());
            report.error = Some(why);
            report.interrupted = Some(*signal);
            report.status = interrupt::exit_status(*signal);
        }
        Err(e) => {
            finish.outcome = "error".to_string();
            finish.error = Some(e.to_string());
            report.error = Some(e.to_string());
            report.status = exit::EXIT_STOCKADE_ERROR;
        }
    }
    if let Err(e) = audit.append(RecordBody::Finish(finish)) {
        // The command ran; its start is on record. Say loudly that its finish is not.
        report.error = Some(format!(
            "command finished but its audit finish record could not be written: {e}"
        ));
        report.status = exit::EXIT_STOCKADE_ERROR;
    }
    Ok(report)
}

/// Whether commands run through stockade's agent: the engine must be local (the agent and its
/// channel are bind-mounted from this machine's state directory). `STOCKADE_NO_AGENT` turns it
/// off (every command is then a `docker exec`, with the same sandbox).
fn agent_enabled() -> bool {
    let local =
        std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"));
    local && std::env::var_os("STOCKADE_NO_AGENT").is_none()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    engine: tokio::task::JoinHandle<Result<Engine, crate::engine::EngineError>>,
    ctx: &Context,
    profile: &Profile,
    args: &ExecArgs,
    exec_id: &str,
    (stdout, stderr): (&mut Capture, &mut Capture),
    report: &mut Report,
    interrupt: &Interrupt,
) -> Result<(), ExecError> {
    let state_id = plan::state_id(&ctx.state_dir);
    let channel = match &args.request.session {
        Some(s) => {
            plan::validate_session_id(s)?;
            Channel::session(&ctx.state_dir, s)
        }
        None => Channel::oneshot(&ctx.state_dir, exec_id),
    };
    let mounts = if agent_enabled() {
        Some(channel.mounts(agent::install(&ctx.state_dir)?))
    } else {
        None
    };
    let plan = plan::plan(profile, &args.request, exec_id, &state_id, mounts.as_ref())?;
    // Written before any container exists; removed only once nothing of this execution is
    // left running, so that a `kill -9` from here on is cleaned up by the next invocation.
    let in_flight = inflight::begin(
        &ctx.state_dir,
        &Marker {
            id: exec_id.to_string(),
            session: plan.session.clone(),
        },
    )?;
    if mounts.is_some() {
        // The bind source must exist before the container is created.
        channel.prepare()?;
    }
    let setup = async {
        let engine = engine.await.map_err(|e| ExecError::Internal {
            what: format!("engine connection task failed: {e}"),
        })??;
        tracing::debug!("engine connected");
        let backend = DockerBackend::new(engine);
        let sweep = session::sweep_in_background(&backend, &ctx.state_dir);
        let lock = match &plan.session {
            // A command waits for the session at most as long as it may run.
            Some(s) => {
                match session::lock(&ctx.state_dir, s, plan.process.timeout, interrupt.wait())
                    .await?
                {
                    session::Locked::Held(lock) => Some(lock),
                    session::Locked::Busy => {
                        return Err(ExecError::SessionBusy {
                            session: s.clone(),
                            waited: plan.process.timeout,
                        })
                    }
                    session::Locked::Interrupted(signal) => {
                        return Err(ExecError::Interrupted {
                            signal,
                            started: false,
                        })
                    }
                }
            }
            None => None,
        };
        // A live session container needs no image check: one engine call saved per command.
        let existing = match &plan.session {
            Some(_) => backend.find_session(&plan.container).await?,
            None => None,
        };
        let container = match existing {
            Some(c) => c,
            None => {
                let mut progress = |line: &str| eprintln!("stockade: {line}");
                image::ensure_image(
                    &backend.engine().docker,
                    &plan.container.image,
                    &ctx.state_dir,
                    &mut progress,
                )
                .await?;
                backend.ensure_container(&plan.container).await?
            }
        };
        if let Some(s) = &plan.session {
            session::end_leftovers(&backend, &container, &plan.process, &ctx.state_dir, s).await?;
        }
        Ok::<_, ExecError>((backend, sweep, lock, container))
    };
    let ready = tokio::select! {
        ready = setup => ready,
        signal = interrupt.wait() => Err(ExecError::Interrupted { signal, started: false }),
    };
    let (backend, sweep, _lock, container) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            // Only an interrupted setup can leave a container behind (a failed create or
            // start removes its own); remove it by name, since its id was never seen.
            let clean = !matches!(e, ExecError::Interrupted { .. })
                || remove_oneshot_by_name(ctx, &plan).await;
            if clean {
                if plan.session.is_none() {
                    channel.remove();
                }
                in_flight.done();
            }
            return Err(e);
        }
    };
    report.container = Some(container.name.clone());

    let result = run_in(
        &backend, &container, &plan, &channel, stdout, stderr, report, interrupt,
    )
    .await;
    // Left in place (unlocked) when something may be left: the next invocation cleans up.
    if let Ok(Cleared::All) = result {
        if plan.session.is_none() {
            channel.remove();
        }
        in_flight.done();
    }
    if let Some(sweep) = sweep {
        let _ = tokio::time::timeout(SWEEP_JOIN, sweep).await;
    }
    result.map(drop)
}

/// Whether an execution left anything behind.
enum Cleared {
    All,
    /// The one-shot container could not be removed; the next invocation removes it.
    ContainerLeft,
}

/// Runs the planned process in its container and accounts for how it ended.
#[allow(clippy::too_many_arguments)]
async fn run_in(
    backend: &DockerBackend,
    container: &Container,
    plan: &Plan,
    channel: &Channel,
    stdout: &mut Capture,
    stderr: &mut Capture,
    report: &mut Report,
    interrupt: &Interrupt,
) -> Result<Cleared, ExecError> {
    tracing::debug!(container = %container.name, "container ready");
    let oneshot = plan.session.is_none();
    let ran = if container.agent {
        run_via_agent(
            backend,
            container,
            &plan.process,
            channel,
            stdout,
            stderr,
            interrupt,
        )
        .await
    } else {
        Ok(None)
    };
    let ran = match ran {
        Ok(Some(ran)) => Ok(ran),
        // No agent: the command is a `docker exec`; the counters and leftovers are handled
        // around it from outside.
        Ok(None) => run_via_exec(backend, container, plan, stdout, stderr, interrupt).await,
        Err(e) => Err(e),
    };
    let ran = match ran {
        Ok(o) => o,
        Err(e) => {
            if oneshot {
                let _ = backend.remove(&container.id).await;
            }
            return Err(e);
        }
    };
    let outcome = &ran.outcome;
    report.exit_code = outcome.exit_code;
    report.signal = outcome.signal();
    report.timed_out = outcome.timed_out;
    report.output_limit_hit = outcome.flooded;
    report.interrupted = outcome.interrupted;
    let hits = outcome.hits.unwrap_or_default();
    report.oom_killed = hits.oom_killed;
    report.pids_limit_hit = hits.pids_limit;
    report.leftovers_ended = outcome.leftovers;
    report.ipc_removed = outcome.ipc_removed;
    if hits.unmeasured {
        report.warnings.push(
            "the sandbox's limit counters could not be read on both sides of the command: \
             whether it hit the pids or memory limit is not known"
                .to_string(),
        );
    }
    report.runner = ran.runner;
    report.stdout_sha256 = ran.stdout_sha256.map(hex::encode);
    report.stderr_sha256 = ran.stderr_sha256.map(hex::encode);
    if outcome.kill_incomplete {
        backend.reset(container).await?;
        report.sandbox_reset = true;
    }
    if oneshot {
        // The command's result stands; a container that cannot be removed now is removed by
        // the next invocation (its in-flight marker stays).
        if let Err(e) = backend.remove(&container.id).await {
            report.warnings.push(format!(
                "the one-shot container {} could not be removed ({e}); the next stockade call removes it",
                container.name
            ));
            return Ok(Cleared::ContainerLeft);
        }
    }
    Ok(Cleared::All)
}

/// How a command was run, and what the runner vouches for.
struct Ran {
    outcome: backend::Outcome,
    runner: Runner,
    /// The agent's verified digests of the output (`None` on the exec path).
    stdout_sha256: Option<[u8; 32]>,
    stderr_sha256: Option<[u8; 32]>,
}

/// Which way a command ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// Through stockade's agent in the sandbox (results under its MAC).
    #[default]
    Agent,
    /// As a `docker exec` (no agent: a remote engine, or `STOCKADE_NO_AGENT`).
    Exec,
}

/// Runs through the agent; starts one when none answers. `Ok(None)`: no agent could be
/// started, so nothing ran. A command the agent accepted is never re-run.
///
/// If the agent cannot confirm that everything the command started has ended (or stops
/// answering), the kill runs from a fresh exec as the sandbox user; if that cannot confirm it
/// either, the outcome says the container must be reset.
async fn run_via_agent(
    backend: &DockerBackend,
    container: &Container,
    process: &plan::ProcessSpec,
    channel: &Channel,
    stdout: &mut Capture,
    stderr: &mut Capture,
    interrupt: &Interrupt,
) -> Result<Option<Ran>, ExecError> {
    use agent::client::{launch, run, AgentError};
    for attempt in 0..2 {
        match run(channel, process, None, stdout, stderr, interrupt.wait()).await {
            Ok(report) => {
                let mut outcome = report.outcome;
                if outcome.kill_incomplete {
                    outcome.kill_incomplete =
                        !backend.kill_tree(container, process).await.unwrap_or(false);
                }
                return Ok(Some(Ran {
                    outcome,
                    runner: Runner::Agent,
                    stdout_sha256: Some(report.stdout_sha256),
                    stderr_sha256: Some(report.stderr_sha256),
                }));
            }
            Err(AgentError::Unavailable { reason }) => {
                tracing::debug!(%reason, attempt, "sandbox agent unavailable");
                if let Some(signal) = interrupt.fired() {
                    return Err(ExecError::Interrupted {
                        signal,
                        started: false,
                    });
                }
                if attempt == 0 {
                    if let Err(e) = launch(
                        backend.engine(),
                        &container.id,
                        &process.user,
                        channel,
                        interrupt.wait(),
                    )
                    .await
                    {
                        tracing::warn!(error = %e, "the sandbox agent could not start; running the command with docker exec");
                        if let Some(signal) = interrupt.fired() {
                            return Err(ExecError::Interrupted {
                                signal,
                                started: false,
                            });
                        }
                        return Ok(None);
                    }
                }
            }
            Err(e) => {
                // The command may still be running: end it from outside, and reset the
                // container if that cannot be confirmed.
                if !backend.kill_tree(container, process).await.unwrap_or(false) {
                    let _ = backend.reset(container).await;
                }
                // Interrupted: that is what the caller asked for, and it happened.
                if let (AgentError::Broken { .. }, Some(signal)) = (&e, interrupt.fired()) {
                    return Err(ExecError::Interrupted {
                        signal,
                        started: true,
                    });
                }
                return Err(e.into());
            }
        }
    }
    tracing::warn!("the sandbox agent refused twice; running the command with docker exec");
    Ok(None)
}

/// Runs as a `docker exec`. The cgroup counters are read before (sessions; a fresh one-shot
/// starts from zero) and after, and what the command left running is ended before the second
/// reading, so the limits it hit are its own.
async fn run_via_exec(
    backend: &DockerBackend,
    container: &Container,
    plan: &Plan,
    stdout: &mut Capture,
    stderr: &mut Capture,
    interrupt: &Interrupt,
) -> Result<Ran, ExecError> {
    let process = &plan.process;
    let before = match plan.session {
        Some(_) => backend.limit_counters(container).await,
        None => Some(backend::Counters {
            pids_max: Some(0),
            oom_kills: Some(0),
        }),
    };
    let mut outcome = backend
        .run(container, process, stdout, stderr, interrupt.wait())
        .await?;
    // Stopped commands were ended by `run`; a finished one may have left processes behind.
    if !outcome.kill_incomplete && plan.session.is_some() && outcome.exit_code.is_some() {
        outcome.kill_incomplete = !backend.kill_tree(container, process).await.unwrap_or(false);
    }
    let after = backend.limit_counters(container).await;
    let hits = match (before, after) {
        (Some(b), Some(a)) => b.hits(&a),
        _ => backend::LimitsHit {
            unmeasured: true,
            ..Default::default()
        },
    };
    outcome.hits = Some(hits);
    Ok(Ran {
        outcome,
        runner: Runner::Exec,
        stdout_sha256: None,
        stderr_sha256: None,
    })
}

/// After an interrupted setup, a one-shot container may exist although its id was never
/// seen: removes it by name, bounded by the engine call timeout. True when it is gone.
async fn remove_oneshot_by_name(ctx: &Context, plan: &Plan) -> bool {
    if plan.session.is_some() {
        return true;
    }
    let remove = async {
        let engine = Engine::connect(ctx.call_timeout).await.ok()?;
        DockerBackend::new(engine)
            .remove(&plan.container.name)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(ctx.call_timeout, remove).await,
        Ok(Some(()))
    )
}

/// The sandbox's output as echoed: raw bytes into a pipe or a file, but on a terminal with
/// escape sequences and invisible characters shown instead of acted on (`crate::display`).
fn terminal_safe<W>(stream: W) -> Box<dyn std::io::Write + Send>
where
    W: std::io::Write + std::io::IsTerminal + Send + 'static,
{
    if stream.is_terminal() {
        Box::new(crate::display::TerminalSafe::new(stream))
    } else {
        Box::new(stream)
    }
}

fn denial_message(verdict: &Verdict) -> String {
    let hits: Vec<String> = verdict
        .hits
        .iter()
        .filter(|h| h.decision == Decision::Deny)
        .map(|h| format!("{} ({}): {:?}: {}", h.id, h.severity, h.fragment, h.why))
        .collect();
    format!("denied by policy: {}", hits.join("; "))
}

/// A unique id for one execution: time-ordered, random tail.
pub fn new_exec_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{:x}{}", now.as_millis(), &random[..10])
}

/// Who asked: `STOCKADE_USER` (set by a front end that knows the agent or user), else the
/// login name, else the uid.
pub fn current_user() -> String {
    if let Ok(user) = std::env::var("STOCKADE_USER") {
        if !user.is_empty() {
            return user;
        }
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid:{uid}"),
    }
}
