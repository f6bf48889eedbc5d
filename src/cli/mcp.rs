//! `stockade mcp`: the MCP server on stdin and stdout (docs/mcp.md), for an agent host that
//! starts it (Claude Desktop, Cursor, ...). Its caller is the local user; stdout carries only
//! the protocol, diagnostics go to stderr.

use stockade::mcp::{self, Caller};
use stockade::server::{Limits, Server};

use super::{settings, GlobalArgs};

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Sandboxes the session may have at once
    #[arg(long, default_value_t = Limits::default().max_sandboxes_per_principal, value_name = "N")]
    pub max_sandboxes: usize,
}

pub async fn run(global: &GlobalArgs, args: &McpArgs) -> anyhow::Result<u8> {
    let service = settings::service(global).await?;
    let limits = Limits {
        max_sandboxes_per_principal: args.max_sandboxes,
        ..Limits::default()
    };
    let server = Server::local(service, limits)?;
    let caller = Caller::local(settings::principal());
    let stop = settings::cancel_on_signals();
    mcp::stdio::serve(server, caller, rmcp::transport::stdio(), stop).await?;
    Ok(0)
}
