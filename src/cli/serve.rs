//! `stockade serve`: the HTTP API (docs/api.md) over the one service.

use std::net::SocketAddr;
use std::path::PathBuf;

use stockade::server::{self, Limits, ServeOptions, Server};

use super::{say, settings, GlobalArgs};

/// Where the API listens when neither --listen nor --socket is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TCP address to listen on (loopback only, unless --allow-non-loopback) [default: 127.0.0.1:7878 when no --socket]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Unix socket to listen on (created 0600; its clients are told apart by their uid)
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Accept a TCP address other than loopback. stockade speaks plain HTTP: only behind a
    /// TLS-terminating proxy, or on a network that is yours
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Largest JSON request body
    #[arg(long, default_value_t = Limits::default().max_body_bytes, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Largest file moved through /files
    #[arg(long, default_value_t = Limits::default().max_file_bytes, value_name = "BYTES")]
    pub max_file_bytes: u64,
    /// Sandboxes one principal may have at once
    #[arg(long, default_value_t = Limits::default().max_sandboxes_per_principal, value_name = "N")]
    pub max_sandboxes: usize,
    /// Executions one principal may run (or have waiting) at once
    #[arg(long, default_value_t = Limits::default().max_execs_per_principal, value_name = "N")]
    pub max_execs: usize,
}

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<u8> {
    // Everything is built and checked before anything listens.
    let service = settings::service(global).await?;
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_file_bytes: args.max_file_bytes,
        max_sandboxes_per_principal: args.max_sandboxes,
        max_execs_per_principal: args.max_execs,
        ..Limits::default()
    };
    let server = Server::new(service, limits)?;
    let listen = match (args.listen, &args.socket) {
        (None, None) => Some(DEFAULT_LISTEN.parse()?),
        (listen, _) => listen,
    };
    let options = ServeOptions {
        listen,
        socket: args.socket.clone(),
        allow_non_loopback: args.allow_non_loopback,
    };
    let stop = settings::cancel_on_signals();
    server::serve(server, &options, stop, |addresses| {
        for a in addresses {
            say(format_args!("listening on {a}"));
        }
    })
    .await?;
    say("stopped: every execution ended and recorded");
    Ok(0)
}
