//! The command-line face: one file per subcommand. Flags, environment variables, signals,
//! prints and exit statuses live here; the library below never sees them.

pub mod audit;
pub mod check;
pub mod corpus;
pub mod cp;
pub mod doctor;
pub mod exec;
pub mod grants;
pub mod image;
#[cfg(feature = "kubernetes")]
pub mod k8s;
#[cfg(feature = "kubernetes")]
pub mod k8s_pool;
pub mod lint;
pub mod mcp;
pub mod migrate;
pub mod profile;
pub mod record;
pub mod rules;
pub mod secret;
pub mod serve;
pub mod session;
pub mod settings;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stockade",
    version,
    about = "Run an agent's shell commands in a locked-down container: check, run, audit.",
    after_help = "Exit codes: docs/exit-codes.md (exec: the command's own, 124 timeout, \
                  125 stockade error, 126 denied by policy, 127 command not found)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Where the audit log and session state live [env: STOCKADE_STATE_DIR; default: XDG state dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// An extra directory of profiles, searched first [env: STOCKADE_PROFILES_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// The configuration file [env: STOCKADE_CONFIG; default: config dir/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which backend runs sandboxes: docker, native (namespaces, no daemon), auto (Docker
    /// when an engine answers, native otherwise) or kubernetes (--features kubernetes) [env: STOCKADE_BACKEND; config: backend]
    #[arg(long, global = true, value_name = "BACKEND")]
    pub backend: Option<stockade::backend::Choice>,
    /// Diagnostic logging to stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, run in a sandbox, and audit one command
    Exec(exec::ExecArgs),
    /// Copy a file into or out of a session's sandbox
    Cp(cp::CpArgs),
    /// Check a command against the escape rules (exit 0 allow, 10 warn, 11 deny)
    Check(check::CheckArgs),
    /// Score the checker against labelled and benign corpora
    Corpus(corpus::CorpusArgs),
    /// The escape rules
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// Sandbox sessions: warm sandboxes reused across calls
    #[command(subcommand)]
    Session(session::SessionCmd),
    /// The audit log
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// The base image
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Sandbox profiles
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// Serve the HTTP API (docs/api.md)
    Serve(serve::ServeArgs),
    /// Serve MCP on stdin/stdout for an agent host (docs/mcp.md)
    Mcp(mcp::McpArgs),
    /// API tokens
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Secrets, encrypted at rest, given to a command only when it names them
    #[command(subcommand)]
    Secret(secret::SecretCmd),
    /// Score the installation by domain, with a fix for each finding (--fix applies the safe ones)
    Doctor(doctor::DoctorArgs),
    /// What each API principal holds, and revoking it
    #[command(subcommand)]
    Grants(grants::GrantsCmd),
    /// Another sandbox's configuration as stockade profiles and a config (docs/migrate.md)
    Migrate(migrate::MigrateArgs),
    /// Kubernetes: a sandbox's manifests, for review and dry runs; the warm pool (docs/kubernetes.md)
    #[cfg(feature = "kubernetes")]
    #[command(subcommand)]
    K8s(k8s::K8sCmd),
}

/// Parses a duration flag (`30s`, `2m`, `1h`, `500ms`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    stockade::profile::parse_duration(s)
}

/// Writes one line to stdout; a reader that went away is not an error worth dying for.
pub fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Serializes `value` as one line of JSON on stdout.
pub fn out_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    out(serde_json::to_string(value)?);
    Ok(())
}

/// A message for the user on stderr, prefixed `stockade:`.
pub fn say(line: impl std::fmt::Display) {
    eprintln!("stockade: {line}");
}
