//! One execution end to end: check -> plan -> run -> audit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{self, client::AgentPaths};
use crate::audit::{AuditLog, Finish, RecordBody, Start};
use crate::backend::{self, BackendError, Capture, Container, DockerBackend};
use crate::check::{Checker, Decision, Verdict};
use crate::config::Config;
use crate::engine::Engine;
use crate::inflight::{self, Marker};
use crate::interrupt::{self, Interrupt};
use crate::plan::{self, ExecRequest, Owner, Plan};
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
    pub verdict: Decision,
    pub rules: Vec<String>,
    pub audit_id: Option<String>,
    pub session: Option<String>,
    pub container: Option<String>,
    pub profile: Option<String>,
    pub elevated: bool,
    /// Set when stockade failed (exit 125) or refused (exit 126); says what to do.
    pub error: Option<String>,
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
            verdict: verdict.decision,
            rules: verdict.rule_ids(),
            audit_id: None,
            session: None,
            container: None,
            profile: None,
            elevated: false,
            error: None,
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
        echo.then(|| Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>),
    );
    let mut stderr = Capture::new(
        profile.output_cap,
        echo.then(|| Box::new(std::io::stderr()) as Box<dyn std::io::Write + Send>),
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
    let owner = Owner {
        pid: std::process::id(),
        boot_id: session::boot_id(),
        state_id: plan::state_id(&ctx.state_dir),
    };
    let mut plan = plan::plan(profile, &args.request, exec_id, &owner)?;
    // Written before any container exists; removed only once nothing of this execution is
    // left running, so that a `kill -9` from here on is cleaned up by the next invocation.
    let in_flight = inflight::begin(
        &ctx.state_dir,
        &Marker {
            id: exec_id.to_string(),
            pid: owner.pid,
            boot_id: owner.boot_id.clone(),
            session: plan.session.clone(),
        },
    )?;
    let setup = async {
        let engine = engine.await.map_err(|e| ExecError::Internal {
            what: format!("engine connection task failed: {e}"),
        })??;
        tracing::debug!("engine connected");
        let backend = DockerBackend::new(engine);
        let sweep = session::sweep_in_background(&backend, &ctx.state_dir);
        let lock = match &plan.session {
            Some(s) => Some(lock_session(&ctx.state_dir, s).await?),
            None => None,
        };
        let agent_paths = match plan.session.clone() {
            Some(s) => agent_for_session(ctx, &mut plan, &s),
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
        Ok::<_, ExecError>((backend, sweep, lock, agent_paths, container))
    };
    let ready = tokio::select! {
        ready = setup => ready,
        signal = interrupt.wait() => Err(ExecError::Interrupted { signal, started: false }),
    };
    let (backend, sweep, _lock, agent_paths, container) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            // Only an interrupted setup can leave a container behind (a failed create or
            // start removes its own); remove it by name, since its id was never seen.
            let clean = !matches!(e, ExecError::Interrupted { .. })
                || remove_oneshot_by_name(ctx, &plan).await;
            if clean {
                in_flight.done();
            }
            return Err(e);
        }
    };
    report.container = Some(container.name.clone());

    let result = run_in(
        ctx,
        &backend,
        &container,
        &plan,
        agent_paths.as_ref(),
        stdout,
        stderr,
        report,
        interrupt,
    )
    .await;
    if result.is_ok() {
        in_flight.done();
    }
    if let Some(sweep) = sweep {
        let _ = tokio::time::timeout(SWEEP_JOIN, sweep).await;
    }
    result
}

/// Runs the planned process in its container and accounts for how it ended.
#[allow(clippy::too_many_arguments)]
async fn run_in(
    ctx: &Context,
    backend: &DockerBackend,
    container: &Container,
    plan: &Plan,
    agent_paths: Option<&AgentPaths>,
    stdout: &mut Capture,
    stderr: &mut Capture,
    report: &mut Report,
    interrupt: &Interrupt,
) -> Result<(), ExecError> {
    tracing::debug!(container = %container.name, "container ready");
    let oneshot = plan.session.is_none();
    let outcome = match agent_paths {
        Some(paths) => {
            run_via_agent(
                backend,
                container,
                &plan.process,
                paths,
                stdout,
                stderr,
                interrupt,
            )
            .await
        }
        None => backend
            .run(container, &plan.process, stdout, stderr, interrupt.wait())
            .await
            .map_err(Into::into),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if oneshot {
                let _ = backend.remove(&container.id).await;
            }
            return Err(e);
        }
    };
    report.exit_code = outcome.exit_code;
    report.signal = outcome.signal();
    report.timed_out = outcome.timed_out;
    report.output_limit_hit = outcome.flooded;
    report.interrupted = outcome.interrupted;
    // Counters are read only when something went wrong: a clean exit 0 pays no extra call.
    let stopped = outcome.timed_out || outcome.flooded || outcome.interrupted.is_some();
    if stopped || outcome.kill_incomplete || outcome.exit_code != Some(0) {
        let hit =
            session::limits_hit(backend, container, &ctx.state_dir, plan.session.as_deref()).await;
        report.oom_killed = hit.oom_killed;
        report.pids_limit_hit = hit.pids_limit;
    }
    if outcome.kill_incomplete {
        backend.reset(container).await?;
        report.sandbox_reset = true;
        if let Some(s) = &plan.session {
            session::forget_limits(&ctx.state_dir, s);
        }
    }
    if oneshot {
        backend.remove(&container.id).await?;
    }
    Ok(())
}

/// Takes a session's lock without blocking the runtime (so a signal is still handled while
/// another command of the session runs).
async fn lock_session(
    state_dir: &std::path::Path,
    session: &str,
) -> Result<session::SessionLock, ExecError> {
    let (dir, name) = (state_dir.to_owned(), session.to_owned());
    match tokio::task::spawn_blocking(move || session::lock(&dir, &name)).await {
        Ok(lock) => Ok(lock?),
        Err(e) => Err(ExecError::Backend(BackendError::Protocol {
            what: format!("session lock task failed: {e}"),
        })),
    }
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

/// Prepares the session agent when this session can use one (see [`crate::agent`]).
fn agent_for_session(ctx: &Context, plan: &mut plan::Plan, session: &str) -> Option<AgentPaths> {
    let (uid, gid) = parse_ids(&plan.process.user)?;
    if !agent::client::supported(&plan.container.image, uid) {
        return None;
    }
    let paths = AgentPaths::new(&ctx.state_dir, session);
    if let Err(e) = paths.prepare(uid, gid) {
        tracing::debug!(error = %e, "session agent disabled");
        return None;
    }
    plan::attach_agent(&mut plan.container, agent::client::binds(&paths)?);
    Some(paths)
}

fn parse_ids(user: &str) -> Option<(u32, u32)> {
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// Runs through the session agent; starts one when none answers, and falls back to
/// `docker exec` when none can be started. A command that the agent accepted is never re-run.
///
/// A command the agent ran that was stopped (timeout, output flood, interrupt) is also ended
/// by the exec kill script, which confirms that nothing of it is left (the agent's own kill
/// cannot: it may itself be starved of pids or killed), or else reports that the container
/// must be reset.
async fn run_via_agent(
    backend: &DockerBackend,
    container: &backend::Container,
    process: &plan::ProcessSpec,
    paths: &AgentPaths,
    stdout: &mut Capture,
    stderr: &mut Capture,
    interrupt: &Interrupt,
) -> Result<backend::Outcome, ExecError> {
    use agent::client::{launch, run, AgentError};
    for attempt in 0..2 {
        match run(paths, process, stdout, stderr, interrupt.wait()).await {
            Ok(mut outcome) => {
                let stopped = outcome.timed_out || outcome.flooded || outcome.interrupted.is_some();
                if stopped {
                    outcome.kill_incomplete =
                        !backend.kill_tree(container, process).await.unwrap_or(false);
                }
                return Ok(outcome);
            }
            Err(AgentError::Unavailable { reason }) => {
                tracing::debug!(%reason, attempt, "session agent unavailable");
                if attempt == 0 {
                    if let Err(e) = launch(backend.engine(), container, &process.user, paths).await
                    {
                        tracing::debug!(error = %e, "session agent could not start; using docker exec");
                        break;
                    }
                }
            }
            Err(e) => {
                // The command may still be running: end it the way a timeout would, and reset
                // the container if that cannot be confirmed.
                if !backend.kill_tree(container, process).await.unwrap_or(false) {
                    let _ = backend.reset(container).await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(backend
        .run(container, process, stdout, stderr, interrupt.wait())
        .await?)
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
