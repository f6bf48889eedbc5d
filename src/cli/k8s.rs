//! `stockade k8s render`: a profile's sandbox as the objects the Kubernetes backend would
//! create, printed for review or for a server-side dry run (`kubectl create --dry-run=server`).
//! `stockade k8s pool` is in k8s_pool.rs.

use std::time::Duration;

use clap::Subcommand;
use stockade::backend::docker::image::{cluster_image_archive, cluster_image_ref};
use stockade::backend::kubernetes::{cluster_render_options, render};
use stockade::plan::{sandbox_spec, state_id};
use stockade::profile;

use super::{out, say, settings, GlobalArgs};

/// How long a rendered session pod may live before `activeDeadlineSeconds` ends it.
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The exec id of a rendered one-shot (a real one-shot has a fresh one).
const RENDER_EXEC_ID: &str = "render";

#[derive(Debug, Subcommand)]
pub enum K8sCmd {
    /// Print the SeccompProfile, NetworkPolicy and Pod for a profile's sandbox
    Render(RenderArgs),
    /// A profile's warm pool of one-shot pods on a cluster (docs/kubernetes.md)
    #[command(subcommand)]
    Pool(super::k8s_pool::PoolCmd),
    /// Build the cluster image (the base image plus the agent as the pods' PID 1), offline:
    /// into the local engine's image store (a node that shares it) or a `docker load` archive
    Image {
        /// Load it into the local Docker engine
        #[arg(long)]
        load: bool,
        /// Write it as a `docker load` archive (for a registry: docker load, tag, push)
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The profile (name or path)
    #[arg(long, default_value = "default")]
    profile: String,
    /// Render a session's pod (else a one-shot's)
    #[arg(long, value_name = "NAME")]
    session: Option<String>,
    #[arg(long, default_value = "stockade-sandboxes")]
    namespace: String,
    /// The node architecture (amd64, arm64, ...), for the seccomp profile
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// A session pod's lifetime (its activeDeadlineSeconds backstop)
    #[arg(long, value_parser = super::parse_duration)]
    lifetime: Option<Duration>,
    /// json (a List) or yaml (documents separated by ---)
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
    format: String,
}

pub async fn run(global: &GlobalArgs, cmd: &K8sCmd) -> anyhow::Result<u8> {
    match cmd {
        K8sCmd::Render(args) => render_cmd(global, args),
        K8sCmd::Pool(pool) => super::k8s_pool::run(global, pool).await,
        K8sCmd::Image { load, output } => image_cmd(global, *load, output.as_deref()).await,
    }
}

async fn image_cmd(
    global: &GlobalArgs,
    load: bool,
    output: Option<&std::path::Path>,
) -> anyhow::Result<u8> {
    anyhow::ensure!(
        load || output.is_some(),
        "say where the image goes: --load (the local engine) and/or --output FILE"
    );
    let settings = settings::settings(global)?;
    let mut progress = |line: &str| say(line);
    if let Some(path) = output {
        let (id, archive) = cluster_image_archive(&mut progress)?;
        stockade::state::write_private_file(path, &archive)?;
        say(format_args!(
            "wrote {} ({id}) to {}",
            cluster_image_ref(),
            path.display()
        ));
    }
    if load {
        let docker = settings::docker(&settings.state_dir)?;
        let rootfs = stockade::backend::docker::image::build_cluster_rootfs(&mut progress)?;
        let id = docker
            .load_image_as(&rootfs, &cluster_image_ref(), &mut progress)
            .await?;
        out(format_args!("{} {id}", cluster_image_ref()));
    }
    Ok(0)
}

fn render_cmd(global: &GlobalArgs, args: &RenderArgs) -> anyhow::Result<u8> {
    let RenderArgs {
        profile: name,
        session,
        namespace,
        arch,
        lifetime,
        format,
    } = args;
    let settings = settings::settings(global)?;
    let p = profile::load(name, &settings.profile_dirs)?;
    let spec = sandbox_spec(
        &p,
        session.as_deref(),
        RENDER_EXEC_ID,
        &state_id(&settings.state_dir),
        None,
    );
    let lifetime = match session {
        Some(_) => lifetime.unwrap_or(DEFAULT_SESSION_LIFETIME),
        None => p.timeout,
    };
    let mut opts = cluster_render_options(
        &settings.config.kubernetes,
        namespace,
        lifetime,
        p.kill_grace,
    );
    opts.arch = arch.clone();
    let manifests = render(&spec, &opts)?;
    let objects = manifests.objects();
    if format == "json" {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        out(serde_json::to_string_pretty(&list)?);
    } else {
        for object in &objects {
            out(format!(
                "---\n{}",
                serde_yaml::to_string(object)?.trim_end()
            ));
        }
    }
    Ok(0)
}
