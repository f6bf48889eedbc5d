//! `stockade rules`: the escape rules themselves.

use stockade::check::{Checker, ExampleReport};

use super::{out, out_json, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum RulesCmd {
    /// Run every rule's examples (`matches` must match, `not_match` must not); exit 1 if any
    /// fails
    Check {
        /// A directory of extra rule files (*.toml) checked with the builtin ones
        #[arg(long, value_name = "DIR")]
        rules: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the rules: id, severity, decision, category
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(_global: &GlobalArgs, cmd: &RulesCmd) -> anyhow::Result<u8> {
    match cmd {
        RulesCmd::Check { rules, json } => {
            let checker = match rules {
                Some(dir) => Checker::builtin_with_dir_unverified(dir)?,
                None => Checker::builtin_compiled()?,
            };
            let report: ExampleReport = checker.verify_examples();
            if *json {
                out_json(&report)?;
            } else {
                for f in &report.failures {
                    let how = if f.expected {
                        "should match but does not"
                    } else {
                        "should not match but does"
                    };
                    out(format_args!("FAIL {}: {how}: {}", f.rule, f.example));
                }
                out(format_args!(
                    "{} rules, {} examples, {} failed",
                    report.rules,
                    report.checked,
                    report.failures.len()
                ));
            }
            Ok(if report.failures.is_empty() { 0 } else { 1 })
        }
        RulesCmd::List { json } => {
            let checker = Checker::builtin()?;
            if *json {
                let rules: Vec<serde_json::Value> = checker
                    .rules()
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.id,
                            "severity": r.severity,
                            "category": r.category,
                            "why": r.why,
                        })
                    })
                    .collect();
                return out_json(&rules).map(|()| 0);
            }
            for r in checker.rules() {
                out(format_args!(
                    "{:<36} {:<8} {:<14} {}",
                    r.id,
                    r.severity.to_string(),
                    r.category,
                    r.why
                ));
            }
            Ok(0)
        }
    }
}
