//! `stockade audit`: verify the hash chain, show recent executions.

use anyhow::Context as _;

use stockade::audit;
use stockade::display::json_escaped;

use super::{out, out_json, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
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

pub fn run(global: &GlobalArgs, cmd: &AuditCmd) -> anyhow::Result<u8> {
    let state_dir = settings::state_dir(global)?;
    let path = state_dir.join(audit::LOG_FILE);
    match cmd {
        AuditCmd::Verify { json } => {
            let report =
                audit::verify(&path).with_context(|| format!("verifying {}", path.display()))?;
            if *json {
                out_json(&report)?;
            } else {
                print!("{report}");
            }
            Ok(if report.ok() { 0 } else { 1 })
        }
        AuditCmd::Tail { n, json } => {
            if *json {
                for r in audit::tail(&path, *n)? {
                    out(json_escaped(&serde_json::to_string(&r)?));
                }
            } else {
                // A start and a finish per execution: read enough records for n executions.
                let records = audit::tail(&path, n.saturating_mul(2))?;
                let executions = audit::executions(&records);
                for e in &executions[executions.len().saturating_sub(*n)..] {
                    out(e);
                }
            }
            Ok(0)
        }
    }
}
