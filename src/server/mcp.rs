//! `/mcp`: the MCP face over Streamable HTTP (docs/mcp.md), mounted in the API's router behind
//! the same bearer tokens and failed-auth limiter as every other route. Each request's
//! principal reaches the tools through the request's extensions.
//!
//! rmcp serves both the stateless `2026-07-28` revision and the older `initialize`-based
//! sessions (legacy session mode on), so clients of either kind connect.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::auth::Authed;
use super::error::ApiError;
use super::Server;
use crate::backend::Backend;
use crate::mcp::Mcp;

pub const PATH: &str = "/mcp";

/// The `/mcp` routes, their state applied.
pub fn router<B: Backend>(server: Arc<Server<B>>) -> Router<Arc<Server<B>>> {
    let ct = tokio_util::sync::CancellationToken::new();
    // The server's shutdown closes the MCP sessions and their event streams.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let stopping = server.stopping().clone();
        let ct = ct.clone();
        runtime.spawn(async move {
            stopping.wait().await;
            ct.cancel();
        });
    }
    // The Host check of rmcp guards unauthenticated local servers from DNS rebinding; here
    // every request needs a bearer token (which a rebound page does not have), and the
    // Origin is checked below, so a proxy's public Host name is not refused.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(server.limits.max_body_bytes)
        .with_cancellation_token(ct);
    let factory_server = server.clone();
    let service = StreamableHttpService::new(
        move || Ok(Mcp::new(factory_server.clone(), None)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service(PATH, service)
        .layer(axum::middleware::from_fn_with_state(server, guard::<B>))
}

/// Refuses a browser origin that is not loopback (403), then authenticates (401 and the
/// limiter as for every route), then hands the principal to the tools.
async fn guard<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let allowed = origin.to_str().ok().is_some_and(is_loopback_origin);
        if !allowed {
            return ApiError::forbidden(
                "this Origin may not use /mcp: only loopback browser origins are accepted",
            )
            .into_response();
        }
    }
    let auth = match Authed::from_request_parts(&mut parts, &server).await {
        Ok(auth) => auth,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(auth);
    next.run(Request::from_parts(parts, body)).await
}

/// `http(s)://localhost`, `127.x.y.z` or `[::1]`, any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) if tail.is_empty() || tail.starts_with(':') => h,
            _ => return false,
        }
    } else {
        match rest.split_once(':') {
            Some((h, _)) => h,
            None => rest,
        }
    };
    if rest.contains('/') {
        return false;
    }
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_origin;

    #[test]
    fn only_loopback_origins_pass() {
        for ok in [
            "http://localhost",
            "http://localhost:6274",
            "https://127.0.0.1:8080",
            "http://[::1]:3000",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "null",
            "file://",
            "http://10.0.0.1",
            "http://localhost/x",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }
}
