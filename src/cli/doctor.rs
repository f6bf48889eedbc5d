//! `stockade doctor`: the installation's score by domain, each finding with its fix
//! (docs/doctor.md); `--fix` applies the safe ones.

use stockade::doctor::{self, Installation, Severity};

use super::{out, out_json, settings, GlobalArgs};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// One JSON object: score, domains, findings (and what --fix changed)
    #[arg(long)]
    pub json: bool,
    /// Apply the safe fixes (file modes, pruning expired tokens) and report what changed
    #[arg(long)]
    pub fix: bool,
}

pub fn run(global: &GlobalArgs, args: &DoctorArgs) -> anyhow::Result<u8> {
    let settings = settings::settings(global)?;
    let at = Installation {
        state_dir: &settings.state_dir,
        profile_dirs: &settings.profile_dirs,
        config: &settings.config,
        secrets_key: settings.secrets_key.as_deref(),
    };
    let mut findings = doctor::examine(&at);
    let mut fixed = Vec::new();
    if args.fix {
        fixed = doctor::fix(&at, &findings);
        findings = doctor::examine(&at);
    }
    let report = doctor::score(findings, fixed);
    if args.json {
        out_json(&report)?;
    } else {
        out(format_args!("score {}/100", report.score));
        for d in &report.domains {
            out(format_args!(
                "  {:<18} {:>3}  ({} findings)",
                d.name, d.score, d.findings
            ));
        }
        for f in &report.findings {
            let mark = if f.auto_fix.is_some() { " [--fix]" } else { "" };
            out(format_args!(
                "{:<8} {}: {}\n         fix: {}{mark}",
                format!("{:?}", f.severity).to_lowercase(),
                f.domain,
                f.message,
                f.fix
            ));
        }
        for change in &report.fixed {
            out(format_args!("fixed: {change}"));
        }
    }
    let critical = report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Critical);
    Ok(u8::from(critical))
}
