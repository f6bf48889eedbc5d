//! `stockade profile`: list, show, lint, diff, record and verify sandbox profiles.

use stockade::backend::{Backend, BackendKind, Network};
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
            let backend = settings::backend(global, &settings::settings(global)?).await?;
            let kind = backend.kind();
            // What the chosen backend cannot apply, said before any command runs into it.
            let refused = match kind {
                BackendKind::Native => {
                    let network = match p.network.as_str() {
                        "none" => Network::None,
                        other => Network::Named(other.to_string()),
                    };
                    stockade::backend::native::spec::unsupported(&network, &p.image)
                        .map(|e| e.to_string())
                }
                #[cfg(feature = "kubernetes")]
                BackendKind::Kubernetes => match &backend {
                    stockade::backend::AnyBackend::Kubernetes(k) => {
                        let state = settings::settings(global)?.state_dir;
                        let spec = stockade::plan::sandbox_spec(
                            &p,
                            None,
                            "show",
                            &stockade::plan::state_id(&state),
                            None,
                        );
                        k.refusal(&spec)
                    }
                    _ => None,
                },
                _ => None,
            };
            if *json {
                let mut value = serde_json::to_value(&p)?;
                if let Some(obj) = value.as_object_mut() {
                    if let Ok(summary) = stockade::seccomp::summarize(&p) {
                        obj.insert("seccomp_summary".into(), serde_json::to_value(summary)?);
                    }
                    obj.insert("backend".into(), serde_json::to_value(kind)?);
                    obj.insert("backend_refuses".into(), serde_json::to_value(&refused)?);
                }
                out(serde_json::to_string_pretty(&value)?);
            } else {
                out(format_args!("{}", p.to_string().trim_end()));
                out(format_args!("backend         {kind}"));
                if let Some(why) = refused {
                    out(format_args!("REFUSED         {why}"));
                }
            }
            Ok(0)
        }
        ProfileCmd::Lint(args) => lint::run_lint(args, &dirs),
        ProfileCmd::Diff(args) => lint::run_diff(args, &dirs),
        ProfileCmd::Record(args) => record::run_record(global, args).await,
        ProfileCmd::Verify(args) => record::run_verify(global, args).await,
    }
}
