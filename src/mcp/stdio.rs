//! `stockade mcp`: one MCP session over a byte stream (the face passes stdin and stdout), its
//! one caller the local user. The sandboxes it creates live in the state directory's registry
//! like the API's; the expired and idle ones are reaped while it runs, and all of its caller's
//! are removed when the session ends (a host that starts `stockade mcp` per conversation gets
//! fresh sandboxes each time, and leaves none behind).

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt as _;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Caller, Mcp};
use crate::backend::Backend;
use crate::cancel::Cancel;
use crate::server::{api, Server};

/// How often the caller's expired and idle sandboxes are looked for.
const REAP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdioError {
    #[error("the MCP session did not start: {0}")]
    Initialize(#[from] Box<rmcp::service::ServerInitializeError>),
    #[error("the MCP session failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Serves one session on `io` until the client closes it or `stop` fires; then ends what is
/// still running (each execution's finish written) and removes the caller's sandboxes.
pub async fn serve<B, R, W>(
    server: Arc<Server<B>>,
    caller: Caller,
    io: (R, W),
    stop: Cancel,
) -> Result<(), StdioError>
where
    B: Backend,
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let owner = caller.owner.clone();
    let reaper = {
        let server = server.clone();
        // The user's sessions' sandboxes, this one's and those a session killed before its
        // end left behind: only the expired and idle ones go, which their own session would
        // remove as well.
        let user = match owner.rfind(':') {
            Some(at) => owner[..=at].to_string(),
            None => owner.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                for id in api::reap_where(&server, |r| r.owner.starts_with(&user)).await {
                    tracing::info!(sandbox = %id, "removed an expired or idle sandbox");
                }
            }
        })
    };
    let served = async {
        let running = Mcp::new(server.clone(), Some(caller))
            .serve(io)
            .await
            .map_err(Box::new)?;
        let token = running.cancellation_token();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.wait().await;
                token.cancel();
            })
        };
        let quit = running.waiting().await;
        stopper.abort();
        quit?;
        Ok::<(), StdioError>(())
    }
    .await;
    reaper.abort();
    server.drain().await;
    for record in server.registry.list() {
        if record.owner == owner {
            api::remove_sandbox(&server, &record.id).await;
        }
    }
    served
}
