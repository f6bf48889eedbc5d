//! The `stockade` binary: parses the command line and dispatches to `cli/`, one file per
//! subcommand. Usage errors exit 125 (docs/exit-codes.md); help and version exit 0.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use stockade::exit::EXIT_STOCKADE_ERROR;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    EXIT_STOCKADE_ERROR
                } else {
                    0
                };
                return ExitCode::from(code);
            }
            let message = e.render().to_string();
            return ExitCode::from(cli::exec::usage_error(
                &message,
                cli::exec::wants_json(&args),
            ));
        }
    };
    if !matches!(
        parsed.command,
        Command::Exec(_) | Command::Cp(_) | Command::Mcp(_)
    ) {
        // Reports piped into `head` should end quietly. `exec` and `cp` keep SIGPIPE ignored: a
        // reader going away must not kill stockade before it writes the audit finish record.
        // SAFETY: setting a signal disposition to SIG_DFL before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_tracing(parsed.global.verbose);
    // The native backend's sandbox inits outlive the process that forked them; as a
    // subreaper stockade adopts them, so their ends are reaped by stockade (which waits for
    // each it removes) rather than left to a host init that may not reap.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // The servers run many executions at once; a command line runs one.
    let runtime = if matches!(parsed.command, Command::Serve(_) | Command::Mcp(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            cli::say(format_args!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_STOCKADE_ERROR);
        }
    };
    let result = runtime.block_on(dispatch(parsed));
    // Blocking tasks are not waited for: an `exec` interrupted while it waited for a session's
    // lock must exit now, not when the lock's holder finishes.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            cli::say(format_args!("{e:#}"));
            ExitCode::from(EXIT_STOCKADE_ERROR)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let global = &cli.global;
    match &cli.command {
        Command::Exec(args) => cli::exec::run(global, args).await,
        Command::Cp(args) => cli::cp::run(global, args).await,
        Command::Check(args) => cli::check::run_check(args),
        Command::Corpus(args) => cli::corpus::run(global, args).await,
        Command::Rules(cmd) => cli::rules::run(global, cmd),
        Command::Session(cmd) => cli::session::run(global, cmd).await,
        Command::Audit(cmd) => cli::audit::run(global, cmd),
        Command::Image(cmd) => cli::image::run(global, cmd).await,
        Command::Profile(cmd) => cli::profile::run(global, cmd).await,
        Command::Serve(args) => cli::serve::run(global, args).await,
        Command::Mcp(args) => cli::mcp::run(global, args).await,
        Command::Token(cmd) => cli::token::run(global, cmd),
        Command::Secret(cmd) => cli::secret::run(global, cmd),
        Command::Doctor(args) => cli::doctor::run(global, args).await,
        Command::Grants(cmd) => cli::grants::run(global, cmd).await,
        Command::Migrate(args) => cli::migrate::run(global, args),
        #[cfg(feature = "kubernetes")]
        Command::K8s(cmd) => cli::k8s::run(global, cmd).await,
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
