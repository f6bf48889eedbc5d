//! `stockade k8s pool`: a profile's warm pool of one-shot pods on a cluster: fill it, list it,
//! claim one pod (optimistic concurrency: exactly one claimer wins a pod), release it, drain.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use stockade::backend::kubernetes::pool::{connect, Pool};
use stockade::backend::kubernetes::{cluster_render_options, install_seccomp, PoolError};
use stockade::exit::EXIT_POOL_EMPTY;
use stockade::plan::{sandbox_spec, state_id};
use stockade::profile;

use super::{out, out_json, say, settings, GlobalArgs};

/// How long a warm pod waits for a claim before its deadline ends it.
const DEFAULT_WARM_FOR: Duration = Duration::from_secs(3600);
/// The exec id of the template spec (each pod gets a fresh one).
const TEMPLATE_EXEC_ID: &str = "pool";

#[derive(Debug, Clone, Args)]
pub struct PoolArgs {
    /// The kubeconfig (else KUBECONFIG, ~/.kube/config, or the in-cluster account)
    #[arg(long, value_name = "FILE", env = "STOCKADE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The namespace (else the kubeconfig context's)
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The profile (name or path) whose pool this is
    #[arg(long, default_value = "default")]
    profile: String,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Create warm pods (each with its deny-all NetworkPolicy); prints their names
    Fill {
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// How long a warm pod may wait for a claim (added to its activeDeadlineSeconds)
        #[arg(long, value_parser = super::parse_duration)]
        warm_for: Option<Duration>,
    },
    /// List the pool's pods: name, state, claim, whether of the current profile, phase
    Ls {
        #[command(flatten)]
        pool: PoolArgs,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Claim one warm pod; prints the claim as JSON (exit 12 when the pool is empty)
    Claim {
        #[command(flatten)]
        pool: PoolArgs,
        /// The claim id written on the pod (default: a fresh random one)
        #[arg(long, value_name = "ID")]
        claim: Option<String>,
    },
    /// Delete a pod your claim holds
    Release {
        #[command(flatten)]
        pool: PoolArgs,
        pod: String,
        #[arg(long, value_name = "ID")]
        claim: String,
    },
    /// Delete the pool's warm pods (with --claimed, the claimed ones too)
    Drain {
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long)]
        claimed: bool,
    },
}

pub async fn run(global: &GlobalArgs, cmd: &PoolCmd) -> anyhow::Result<u8> {
    match cmd {
        PoolCmd::Fill {
            pool,
            count,
            warm_for,
        } => {
            let pool = open(global, pool, warm_for.unwrap_or(DEFAULT_WARM_FOR)).await?;
            // Where stockade installs the seccomp profile itself, the pods must find it.
            let config = settings::settings(global)?.config.kubernetes;
            install_seccomp(&config, &pool.manifests()?)?;
            for name in pool.fill(*count).await? {
                out(name);
            }
        }
        PoolCmd::Ls { pool, json } => {
            let pool = open(global, pool, DEFAULT_WARM_FOR).await?;
            for p in pool.list().await? {
                if *json {
                    out_json(&p)?;
                } else {
                    out(format!(
                        "{}\t{}\t{}\t{}\t{}",
                        p.name,
                        p.state,
                        p.claim.as_deref().unwrap_or("-"),
                        if p.current { "current" } else { "stale" },
                        p.phase.as_deref().unwrap_or("-"),
                    ));
                }
            }
        }
        PoolCmd::Claim { pool, claim } => {
            let pool = open(global, pool, DEFAULT_WARM_FOR).await?;
            let id = claim
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            match pool.claim(&id).await {
                Ok(won) => out_json(&won)?,
                Err(e @ PoolError::Empty { .. }) => {
                    say(e);
                    return Ok(EXIT_POOL_EMPTY);
                }
                Err(e) => return Err(e.into()),
            }
        }
        PoolCmd::Release { pool, pod, claim } => {
            let pool = open(global, pool, DEFAULT_WARM_FOR).await?;
            pool.release(pod, claim).await?;
        }
        PoolCmd::Drain { pool, claimed } => {
            let pool = open(global, pool, DEFAULT_WARM_FOR).await?;
            let drained = pool.drain(*claimed).await?;
            say(format_args!(
                "namespace {}: {} deleted, {} changed meanwhile and left alone",
                pool.namespace(),
                drained.deleted.len(),
                drained.skipped.len()
            ));
        }
    }
    Ok(0)
}

async fn open(global: &GlobalArgs, args: &PoolArgs, warm_for: Duration) -> anyhow::Result<Pool> {
    let settings = settings::settings(global)?;
    let p = profile::load(&args.profile, &settings.profile_dirs)?;
    let spec = sandbox_spec(
        &p,
        None,
        TEMPLATE_EXEC_ID,
        &state_id(&settings.state_dir),
        None,
    );
    let k8s = &settings.config.kubernetes;
    let kubeconfig = args.kubeconfig.clone().or_else(|| k8s.kubeconfig.clone());
    let (client, context_ns) = connect(kubeconfig.as_deref()).await?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| k8s.namespace.clone())
        .unwrap_or(context_ns);
    let opts = cluster_render_options(k8s, &namespace, p.timeout, p.kill_grace);
    Ok(Pool::new(client, spec, opts, warm_for)?)
}
