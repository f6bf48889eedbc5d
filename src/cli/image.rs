//! `stockade image build`: the base image, built offline from this host's files.

use stockade::backend::docker::image::{base_image_ref, build_rootfs, valid_tool_name};
use stockade::backend::AnyBackend;

use super::{out, say, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Build the base image offline from host files: loaded into the engine (Docker) and
    /// unpacked for the native backend, the same layer for both
    Build {
        /// Also include this host tool with what it needs to run (its libraries; python's
        /// standard library, git's exec path, perl's @INC). Repeatable
        #[arg(long, value_name = "TOOL", value_parser = tool_name, num_args = 1..)]
        include: Vec<String>,
    },
}

fn tool_name(s: &str) -> Result<String, String> {
    if valid_tool_name(s) {
        Ok(s.to_string())
    } else {
        Err("a tool is named by its file name in /usr/bin or /bin (letters, digits, '.', '-', '_', '+')".to_string())
    }
}

pub async fn run(global: &GlobalArgs, cmd: &ImageCmd) -> anyhow::Result<u8> {
    let ImageCmd::Build { include } = cmd;
    let settings = settings::settings(global)?;
    let native = settings::native(&settings.state_dir);
    let mut progress = |line: &str| say(line);
    match settings::backend(global, &settings).await? {
        AnyBackend::Docker(docker) => {
            let rootfs = build_rootfs(include, &mut progress)?;
            let id = docker.load_image(&rootfs, &mut progress).await?;
            // The native backend gets the very same layer, so either backend runs it.
            let layer = native.images().install(&base_image_ref(), &rootfs)?;
            say(format_args!(
                "unpacked {} for the native backend in {}",
                layer.digest,
                layer.path.display()
            ));
            out(format_args!("{} {id}", base_image_ref()));
        }
        #[cfg(feature = "kubernetes")]
        AnyBackend::Kubernetes(_) => anyhow::bail!(
            "a cluster runs the cluster image: build it with `stockade k8s image --load` or \
             `--output FILE` and make it reachable by the nodes"
        ),
        AnyBackend::Native(native) => {
            let layer = native.build_image(include, &mut progress)?;
            say(format_args!(
                "unpacked {} for the native backend in {}",
                layer.digest,
                layer.path.display()
            ));
            out(format_args!(
                "{} {} (native)",
                base_image_ref(),
                layer.digest
            ));
        }
    }
    Ok(0)
}
