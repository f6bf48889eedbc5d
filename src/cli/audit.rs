//! `stockade audit`: verify the hash chain, show recent executions.

use anyhow::Context as _;

use stockade::audit;
use stockade::display::json_escaped;

use super::{out, out_json, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Verify the hash chains of the exec log and the auth log; report tampering, truncation
    /// and unfinished executions
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
        /// The auth log (`stockade serve`'s authentications and token events) instead
        #[arg(long)]
        auth: bool,
    },
}

pub fn run(global: &GlobalArgs, cmd: &AuditCmd) -> anyhow::Result<u8> {
    let state_dir = settings::state_dir(global)?;
    let path = state_dir.join(audit::LOG_FILE);
    match cmd {
        AuditCmd::Verify { json } => {
            let report =
                audit::verify(&path).with_context(|| format!("verifying {}", path.display()))?;
            let auth_path = state_dir.join(audit::AUTH_LOG_FILE);
            let auth = if auth_path.exists() {
                Some(
                    audit::verify(&auth_path)
                        .with_context(|| format!("verifying {}", auth_path.display()))?,
                )
            } else {
                None
            };
            let ok = report.ok() && auth.as_ref().map_or(true, |a| a.ok());
            if *json {
                // The exec log's report, as before, with the auth log's beside it.
                let mut value = serde_json::to_value(&report)?;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("auth".into(), serde_json::to_value(&auth)?);
                    obj.insert("ok".into(), ok.into());
                }
                out_json(&value)?;
            } else {
                out(&report);
                if let Some(a) = &auth {
                    out(a);
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
        AuditCmd::Tail {
            n,
            json,
            auth: true,
        } => {
            let records = audit::tail(&state_dir.join(audit::AUTH_LOG_FILE), *n)?;
            for r in &records {
                if *json {
                    out(json_escaped(&serde_json::to_string(r)?));
                } else if let Some(line) = audit::format_auth(r) {
                    out(line);
                }
            }
            Ok(0)
        }
        AuditCmd::Tail {
            n,
            json,
            auth: false,
        } => {
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
