//! `stockade doctor`: the installation's score by domain, each finding with its fix
//! (docs/doctor.md); `--fix` applies the safe ones.

use stockade::backend::docker::engine::{Engine, EngineFacts};
use stockade::doctor::{self, Fixed, Installation, Severity};

use super::{out, out_json, settings, GlobalArgs};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// One JSON object: score, domains, findings (and what --fix changed)
    #[arg(long)]
    pub json: bool,
    /// Apply the safe fixes (file modes, pruning expired tokens, stale files) and report what
    /// changed
    #[arg(long)]
    pub fix: bool,
    /// With --fix: also rotate weak tokens and tokens of unknown strength, printing each new
    /// value once (their clients need it: this is the confirmation)
    #[arg(long, requires = "fix")]
    pub rotate_weak_tokens: bool,
    /// Do not ask the engine for its settings
    #[arg(long)]
    pub no_engine: bool,
}

/// The engine's settings, or why they could not be read.
async fn engine_facts() -> Result<EngineFacts, String> {
    let timeout = settings::call_timeout().map_err(|e| e.to_string())?;
    let engine = Engine::connect(&settings::engine_host(), timeout)
        .await
        .map_err(|e| e.to_string())?;
    engine.facts().await.map_err(|e| e.to_string())
}

pub async fn run(global: &GlobalArgs, args: &DoctorArgs) -> anyhow::Result<u8> {
    let settings = settings::settings(global)?;
    let engine = if args.no_engine {
        None
    } else {
        Some(engine_facts().await)
    };
    let at = Installation {
        state_dir: &settings.state_dir,
        profile_dirs: &settings.profile_dirs,
        config: &settings.config,
        secrets_key: settings.secrets_key.as_deref(),
        engine,
    };
    let mut findings = doctor::examine(&at);
    let mut fixed = Fixed::default();
    if args.fix {
        fixed = doctor::fix(&at, &findings, args.rotate_weak_tokens);
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
        for t in &report.rotated_tokens {
            out(format_args!("new token for {}: {}", t.name, t.token));
        }
    }
    let critical = report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Critical);
    Ok(u8::from(critical))
}
