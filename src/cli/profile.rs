//! `stockade profile`: list, show, lint, diff, record and verify sandbox profiles.

use stockade::profile;

use super::lint::{self, DiffArgs, LintArgs};
use super::record::{self, RecordArgs, VerifyArgs};
use super::{out, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ProfileCmd {
    /// List the profiles stockade can find
    List,
    /// Print the effective sandbox a profile gives, after defaults
    Show {
        profile: String,
        #[arg(long)]
        json: bool,
    },
    /// Findings with severity and a fix for each, and a 0-100 score (exit 1 on a critical one)
    Lint(LintArgs),
    /// Syscalls and capabilities added and removed between two profiles (exit 1 if they differ)
    Diff(DiffArgs),
    /// Run a workload in the sandbox under strace and write the minimal seccomp profile it needs
    Record(RecordArgs),
    /// Run a workload under a seccomp profile and check that unshare and mount are refused
    Verify(VerifyArgs),
}

pub async fn run(global: &GlobalArgs, cmd: &ProfileCmd) -> anyhow::Result<u8> {
    let dirs = settings::profile_dirs(global);
    match cmd {
        ProfileCmd::List => {
            for name in profile::list(&dirs) {
                out(name);
            }
            Ok(0)
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
                out(serde_json::to_string_pretty(&value)?);
            } else {
                out(p);
            }
            Ok(0)
        }
        ProfileCmd::Lint(args) => lint::run_lint(args, &dirs),
        ProfileCmd::Diff(args) => lint::run_diff(args, &dirs),
        ProfileCmd::Record(args) => record::run_record(global, args).await,
        ProfileCmd::Verify(args) => record::run_verify(global, args).await,
    }
}
