use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stockade::check::cli;

/// A container sandbox supervisor for the bash tools of AI agents.
#[derive(Debug, Parser)]
#[command(name = "stockade", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check a command against the escape rules (exit 0 allow, 10 warn, 11 deny).
    Check(cli::CheckArgs),
    /// Score the checker against corpora.
    Corpus(cli::CorpusArgs),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let result = match &args.command {
        Cmd::Check(a) => cli::run_check(a),
        Cmd::Corpus(a) => cli::run_corpus(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("stockade: {e:#}");
            ExitCode::from(stockade::exit::EXIT_STOCKADE_ERROR)
        }
    }
}
