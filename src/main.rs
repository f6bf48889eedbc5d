//! The `stockade` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use stockade::backend::DockerBackend;
use stockade::config::Config;
use stockade::engine::{self, Engine};
use stockade::exec::{self, Context, ExecArgs};
use stockade::exit::EXIT_STOCKADE_ERROR;
use stockade::plan::ExecRequest;
use stockade::profile::{self, ProfileDirs};
use stockade::{audit, image, session, state};

#[derive(Debug, Parser)]
#[command(
    name = "stockade",
    version,
    about = "Run an agent's shell commands in a locked-down container: check, run, audit."
)]
struct Cli {
    /// Where the audit log and session state live [env: STOCKADE_STATE_DIR; default: XDG state dir]
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// An extra directory of profiles, searched first [env: STOCKADE_PROFILES_DIR]
    #[arg(long, global = true)]
    profiles_dir: Option<PathBuf>,
    /// The configuration file [env: STOCKADE_CONFIG; default: config dir/config.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Diagnostic logging to stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, run in a sandbox, and audit one command
    Exec(ExecCli),
    /// Check a command against the escape rules (exit 0 allow, 10 warn, 11 deny)
    Check(stockade::check::cli::CheckArgs),
    /// Score the checker against labelled and benign corpora
    Corpus(stockade::check::cli::CorpusArgs),
    /// Sandbox sessions: warm containers reused across calls
    #[command(subcommand)]
    Session(SessionCmd),
    /// The audit log
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The base image
    #[command(subcommand)]
    Image(ImageCmd),
    /// Sandbox profiles
    #[command(subcommand)]
    Profile(ProfileCmd),
}

#[derive(Debug, Args)]
struct ExecCli {
    /// Profile name or path to a profile file
    #[arg(long, short)]
    profile: Option<String>,
    /// Run in the warm container of this session (created on first use)
    #[arg(long, short)]
    session: Option<String>,
    /// Override the profile's timeout (e.g. 30s, 2m)
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Working directory inside the sandbox
    #[arg(long)]
    workdir: Option<String>,
    /// Environment variable for the command (names must be allowed by the profile)
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Use the elevated profile (requires allow_elevation in the configuration)
    #[arg(long)]
    elevated: bool,
    /// Print one JSON object instead of streaming output
    #[arg(long)]
    json: bool,
    /// The command, run as `bash -c COMMAND`
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Subcommand)]
enum SessionCmd {
    /// List session containers
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a session's container
    Rm { session: String },
    /// Remove idle session containers and orphaned one-shot containers
    Prune {
        /// Only orphaned one-shot containers; keep idle sessions
        #[arg(long)]
        orphans_only: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Verify the hash chain; report tampering, truncation and unfinished executions
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Show recent executions (`--json`: the last N raw records)
    Tail {
        #[arg(short, default_value_t = 20)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Build the base image offline from host files and import it into the engine
    Build,
}

#[derive(Debug, Subcommand)]
enum ProfileCmd {
    /// List the profiles stockade can find
    List,
    /// Print the effective sandbox a profile gives, after defaults
    Show {
        profile: String,
        #[arg(long)]
        json: bool,
    },
    /// Findings with severity and a fix for each, and a 0-100 score
    Lint(stockade::seccomp::cli::LintArgs),
    /// Syscalls and capabilities added and removed between two profiles
    Diff(stockade::seccomp::cli::DiffArgs),
    /// Run a workload in the sandbox under strace and write the minimal seccomp profile it needs
    Record(stockade::seccomp::record_cli::RecordArgs),
    /// Run a workload under a seccomp profile and check that unshare and mount are refused
    Verify(stockade::seccomp::record_cli::VerifyArgs),
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    profile::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Exec(_)) {
        // Reports piped into `head` should end quietly. `exec` keeps SIGPIPE ignored: a reader
        // going away must not kill stockade before it writes the audit finish record.
        // SAFETY: setting a signal disposition to SIG_DFL before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stockade: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_STOCKADE_ERROR);
        }
    };
    let result = runtime.block_on(run(cli));
    // Blocking tasks are not waited for: an `exec` interrupted while it waited for a session's
    // lock must exit now, not when the lock's holder finishes.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("stockade: {e:#}");
            ExitCode::from(EXIT_STOCKADE_ERROR)
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOCKADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn context(cli: &Cli) -> anyhow::Result<Context> {
    Ok(Context {
        state_dir: state::resolve_state_dir(cli.state_dir.clone())?,
        profile_dirs: ProfileDirs::from_env(cli.profiles_dir.clone()),
        config: Config::load(cli.config.as_deref())?,
        call_timeout: engine::call_timeout_from_env(),
    })
}

async fn connect() -> anyhow::Result<DockerBackend> {
    Ok(DockerBackend::new(
        Engine::connect(engine::call_timeout_from_env()).await?,
    ))
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Exec(e) => run_exec(&cli, e).await,
        Command::Check(args) => stockade::check::cli::run_check(args),
        Command::Corpus(args) => match &args.command {
            stockade::check::cli::CorpusCommand::Run(run) if run.live => {
                run_live_corpus(&cli, run).await
            }
            _ => stockade::check::cli::run_corpus(args),
        },
        Command::Session(cmd) => run_session(&cli, cmd).await,
        Command::Audit(cmd) => run_audit(&cli, cmd),
        Command::Image(ImageCmd::Build) => {
            let backend = connect().await?;
            let mut progress = |line: &str| eprintln!("stockade: {line}");
            let id = image::build_base_image(&backend.engine().docker, &mut progress).await?;
            println!("{} {id}", image::base_image_ref());
            Ok(0)
        }
        Command::Profile(cmd) => run_profile(&cli, cmd).await,
    }
}

async fn run_exec(cli: &Cli, e: &ExecCli) -> anyhow::Result<u8> {
    let ctx = context(cli)?;
    // Not UTF-8: refused (the engine API carries text), but on record, shown lossily.
    let not_utf8 = e.command.iter().position(|a| a.to_str().is_none());
    let command: Vec<String> = e
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = ExecArgs {
        profile: e.profile.clone(),
        elevated: e.elevated,
        bypass_check: false,
        request: ExecRequest {
            command: command.join(" "),
            session: e.session.clone(),
            timeout: e.timeout,
            workdir: e.workdir.clone(),
            env: e.env.clone(),
        },
    };
    let result = match not_utf8 {
        Some(index) => Err(exec::refuse(
            &ctx,
            &args,
            exec::ExecError::NotUtf8 {
                argument: index + 1,
            },
        )),
        None => exec::execute(&ctx, &args, !e.json).await,
    };
    let report = match result {
        Ok(r) => r,
        Err(err) => {
            if e.json {
                let status = exec_error_status(&err);
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::json!({ "error": err.to_string(), "exit_code": null })
                );
                return Ok(status);
            }
            return Err(err.into());
        }
    };
    // The profile's warnings are said on stderr whatever the output mode (and are in the JSON).
    for warning in &report.warnings {
        eprintln!("stockade: warning: {warning}");
    }
    if e.json {
        // A reader that went away must not turn a finished, audited execution into a panic.
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&report)?);
    } else {
        let _ = std::io::stdout().flush();
        if let Some(error) = &report.error {
            eprintln!("stockade: {error}");
        } else if report.timed_out {
            eprintln!(
                "stockade: timed out; the command's processes were killed inside the sandbox"
            );
        }
        for note in report.notes() {
            eprintln!("stockade: {note}");
        }
    }
    Ok(report.status)
}

/// `stockade corpus run --live`: 0 when every attempt was contained, 1 when not.
async fn run_live_corpus(
    cli: &Cli,
    args: &stockade::check::cli::CorpusRunArgs,
) -> anyhow::Result<u8> {
    use stockade::check::corpus::{self, Corpus};
    use stockade::live;
    let ctx = context(cli)?;
    let files = if args.files.is_empty() {
        stockade::check::cli::default_corpus_files()?
    } else {
        args.files.clone()
    };
    let mut entries = Vec::new();
    for f in &files {
        if let Corpus::Labelled(e) = corpus::load(f)? {
            entries.extend(e);
        }
    }
    let entries = live::select(entries, args.per_category);
    anyhow::ensure!(
        !entries.is_empty(),
        "no live-safe escape attempts in {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let options = live::LiveOptions {
        profile: args.profile.clone(),
        per_category: args.per_category,
        jobs: args.jobs.unwrap_or(live::DEFAULT_JOBS),
        timeout: live::ATTEMPT_TIMEOUT,
    };
    let report = live::run(&ctx, &entries, &options).await?;
    if args.json {
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&report)?);
    } else {
        let _ = writeln!(std::io::stdout(), "{report}");
    }
    Ok(if report.contained() { 0 } else { 1 })
}

fn exec_error_status(err: &exec::ExecError) -> u8 {
    match err {
        exec::ExecError::ElevationRefused | exec::ExecError::NotElevatedProfile { .. } => {
            stockade::exit::EXIT_DENIED
        }
        _ => EXIT_STOCKADE_ERROR,
    }
}

async fn run_session(cli: &Cli, cmd: &SessionCmd) -> anyhow::Result<u8> {
    let ctx = context(cli)?;
    let backend = connect().await?;
    match cmd {
        SessionCmd::Ls { json } => {
            let sessions = session::list(&backend, &ctx.state_dir).await?;
            if *json {
                println!("{}", serde_json::to_string(&sessions)?);
            } else {
                println!(
                    "{:<24} {:<12} {:<10} CONTAINER",
                    "SESSION", "PROFILE", "STATE"
                );
                for s in sessions {
                    println!(
                        "{:<24} {:<12} {:<10} {}",
                        s.session, s.profile, s.state, s.container
                    );
                }
            }
        }
        SessionCmd::Rm { session } => {
            let removed = session::remove(&backend, &ctx.state_dir, session).await?;
            if removed.interrupted_running_command {
                println!(
                    "removed session {session}; a command still running in it after {}s was ended with it",
                    session::RM_LOCK_WAIT.as_secs()
                );
            } else {
                println!("removed session {session}");
            }
        }
        SessionCmd::Prune { orphans_only, json } => {
            let report = session::prune(&backend, &ctx.state_dir, !orphans_only).await?;
            if *json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "removed {} session container(s), {} orphaned one-shot container(s); {} busy left alone",
                    report.sessions.len(),
                    report.orphans.len(),
                    report.busy.len()
                );
            }
        }
    }
    Ok(0)
}

fn run_audit(cli: &Cli, cmd: &AuditCmd) -> anyhow::Result<u8> {
    let state_dir = state::resolve_state_dir(cli.state_dir.clone())?;
    let path = state_dir.join(audit::LOG_FILE);
    match cmd {
        AuditCmd::Verify { json } => {
            let report =
                audit::verify(&path).with_context(|| format!("verifying {}", path.display()))?;
            if *json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            Ok(if report.ok() { 0 } else { 1 })
        }
        AuditCmd::Tail { n, json } => {
            if *json {
                for r in audit::tail(&path, *n)? {
                    println!(
                        "{}",
                        stockade::display::json_escaped(&serde_json::to_string(&r)?)
                    );
                }
            } else {
                // A start and a finish per execution: read enough records for n executions.
                let records = audit::tail(&path, n.saturating_mul(2))?;
                let executions = audit::executions(&records);
                for e in &executions[executions.len().saturating_sub(*n)..] {
                    println!("{e}");
                }
            }
            Ok(0)
        }
    }
}

async fn run_profile(cli: &Cli, cmd: &ProfileCmd) -> anyhow::Result<u8> {
    let dirs = ProfileDirs::from_env(cli.profiles_dir.clone());
    match cmd {
        ProfileCmd::List => {
            for name in profile::list(&dirs) {
                println!("{name}");
            }
        }
        ProfileCmd::Lint(args) => return stockade::seccomp::cli::run_lint(args, &dirs),
        ProfileCmd::Diff(args) => return stockade::seccomp::cli::run_diff(args, &dirs),
        ProfileCmd::Record(args) => {
            return stockade::seccomp::record_cli::run_record(args, &context(cli)?).await
        }
        ProfileCmd::Verify(args) => {
            return stockade::seccomp::record_cli::run_verify(args, &context(cli)?).await
        }
        ProfileCmd::Show {
            profile: name,
            json,
        } => {
            let p = profile::load(name, &dirs)?;
            if *json {
                let mut value = serde_json::to_value(&p)?;
                if let (Some(obj), Ok(summary)) =
                    (value.as_object_mut(), stockade::seccomp::summarize(&p))
                {
                    obj.insert("seccomp_summary".into(), serde_json::to_value(summary)?);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("{p}");
            }
        }
    }
    Ok(0)
}
