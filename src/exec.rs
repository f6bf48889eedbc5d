//! One execution end to end: check -> plan -> run -> audit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{self, client::AgentPaths};
use crate::audit::{AuditLog, Finish, RecordBody, Start};
use crate::backend::{self, BackendError, Capture, DockerBackend};
use crate::check::{Checker, Decision, Verdict};
use crate::config::Config;
use crate::engine::Engine;
use crate::plan::{self, ExecRequest, Owner};
use crate::profile::{self, Profile, ProfileDirs};
use crate::{exit, image, session};

/// Output beyond this many times the cap means the command is flooding: it is stopped.
pub const FLOOD_FACTOR: u64 = 64;

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
    #[error(transparent)]
    Agent(#[from] agent::client::AgentError),
    #[error(transparent)]
    Rules(#[from] crate::check::CheckError),
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
    let profile = select_profile(ctx, args)?;
    execute_with(ctx, &profile, args, echo).await
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

    let verdict = if args.bypass_check {
        Verdict {
            decision: Decision::Allow,
            hits: Vec::new(),
        }
    } else {
        Checker::builtin_prechecked()?.check(&args.request.command, &profile.policy)
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
    let mut finish = Finish {
        id: exec_id.clone(),
        session: args.request.session.clone(),
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
        error: None,
    };

    // Refusals are audited too: a start that says what was asked, a finish that says why not.
    let refusal = if profile.elevated && !ctx.config.allow_elevation {
        Some(ExecError::ElevationRefused.to_string())
    } else if verdict.decision == Decision::Deny {
        Some(denial_message(&verdict))
    } else {
        None
    };
    audit.append(RecordBody::Start(start))?;
    if let Some(why) = refusal {
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
    let result = run(
        ctx,
        &profile,
        args,
        &exec_id,
        &mut stdout,
        &mut stderr,
        &mut report,
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
    match &result {
        Ok(()) => {
            finish.outcome = if report.timed_out {
                "timed_out"
            } else {
                "completed"
            }
            .to_string();
            finish.exit_code = report.exit_code;
            finish.signal = report.signal;
            finish.timed_out = report.timed_out;
            finish.oom_killed = report.oom_killed;
            report.status = if report.timed_out {
                exit::EXIT_TIMEOUT
            } else {
                report
                    .exit_code
                    .map_or(exit::EXIT_STOCKADE_ERROR, |c| (c & 0xff) as u8)
            };
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

async fn run(
    ctx: &Context,
    profile: &Profile,
    args: &ExecArgs,
    exec_id: &str,
    stdout: &mut Capture,
    stderr: &mut Capture,
    report: &mut Report,
) -> Result<(), ExecError> {
    let owner = Owner {
        pid: std::process::id(),
        boot_id: session::boot_id(),
        state_id: plan::state_id(&ctx.state_dir),
    };
    let mut plan = plan::plan(profile, &args.request, exec_id, &owner)?;
    let engine = Engine::connect(ctx.call_timeout).await?;
    let backend = DockerBackend::new(engine);

    let _lock = match &plan.session {
        Some(s) => Some(session::lock(&ctx.state_dir, s)?),
        None => None,
    };
    let agent_paths = match plan.session.clone() {
        Some(s) => agent_for_session(ctx, &mut plan, &s),
        None => None,
    };
    // A live session container needs no image check: that is one engine call saved per command.
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
    report.container = Some(container.name.clone());

    let outcome = match &agent_paths {
        Some(paths) => {
            run_via_agent(&backend, &container, &plan.process, paths, stdout, stderr).await
        }
        None => backend
            .run(&container, &plan.process, stdout, stderr)
            .await
            .map_err(Into::into),
    };
    let oneshot = plan.session.is_none();
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
    if outcome.exit_code == Some(137) {
        report.oom_killed = session::oom_killed(
            &backend,
            &container,
            &ctx.state_dir,
            plan.session.as_deref(),
        )
        .await;
    }
    if oneshot {
        backend.remove(&container.id).await?;
    }
    Ok(())
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
async fn run_via_agent(
    backend: &DockerBackend,
    container: &backend::Container,
    process: &plan::ProcessSpec,
    paths: &AgentPaths,
    stdout: &mut Capture,
    stderr: &mut Capture,
) -> Result<backend::Outcome, ExecError> {
    use agent::client::{launch, run, AgentError};
    for attempt in 0..2 {
        match run(paths, process, stdout, stderr).await {
            Ok(outcome) => return Ok(outcome),
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
                // The command may still be running: end it the way a timeout would.
                let _ = backend.kill_tree(container, process).await;
                return Err(e.into());
            }
        }
    }
    Ok(backend.run(container, process, stdout, stderr).await?)
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
