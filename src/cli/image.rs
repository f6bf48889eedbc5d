//! `stockade image build`: the base image, built offline from this host's files.

use stockade::backend::docker::image::{base_image_ref, valid_tool_name};

use super::{out, say, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Build the base image offline from host files and load it into the engine
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
    let state_dir = settings::state_dir(global)?;
    let backend = settings::docker(&state_dir)?;
    let mut progress = |line: &str| say(line);
    let id = backend.build_image(include, &mut progress).await?;
    out(format_args!("{} {id}", base_image_ref()));
    Ok(0)
}
