//! The MCP face (docs/mcp.md): the tools of [`tools`] over the same server state the HTTP API
//! uses (its sandbox registry, execution slots and background executions), every call made
//! through the one [`Service`](crate::service::Service) and audited with its caller.
//!
//! Two transports: stdio ([`stdio`], `stockade mcp`, whose one caller is the local user) and
//! Streamable HTTP (`/mcp` on `stockade serve`, where each request's bearer token names the
//! caller). The protocol itself, its version negotiation (the `initialize` handshake and the
//! stateless `2026-07-28` revision) and its framing are rmcp's.

mod calls;
pub mod stdio;
pub mod tools;

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerInfo, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::backend::Backend;
use crate::server::auth::Authed;
use crate::server::Server;
use crate::service::Principal;

/// Who calls, and what they own.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Recorded in every audit `start` of the calls' executions and copies.
    pub principal: Principal,
    /// The owner of their sandboxes in the registry.
    pub owner: String,
    /// May act on every principal's sandboxes (an admin token).
    pub admin: bool,
}

impl Caller {
    /// The local user of one `stockade mcp` session. Its sandboxes are owned by
    /// `local:NAME:SESSION`: a name no API token can have (token names have no ':'), so a token
    /// named like the user never reaches them, and with a random session part of its own, so two
    /// sessions of one user (two conversations, or an injected one beside a real one) neither
    /// see nor remove each other's sandboxes.
    pub fn local(principal: Principal) -> Caller {
        let session = uuid::Uuid::new_v4().simple().to_string();
        Caller {
            owner: format!("local:{}:{}", principal.name, &session[..16]),
            principal,
            admin: false,
        }
    }

    /// A request of the HTTP API, authenticated.
    pub fn api(auth: &Authed) -> Caller {
        Caller {
            owner: auth.principal.name.clone(),
            principal: auth.principal.clone(),
            admin: auth.is_admin(),
        }
    }

    fn may_touch(&self, owner: &str) -> bool {
        self.admin || self.owner == owner
    }
}

/// The MCP server over one server state: a fixed caller (stdio), or each request's (HTTP).
pub struct Mcp<B: Backend> {
    server: Arc<Server<B>>,
    caller: Option<Caller>,
    tools: Arc<Vec<Tool>>,
}

impl<B: Backend> Clone for Mcp<B> {
    fn clone(&self) -> Self {
        Mcp {
            server: self.server.clone(),
            caller: self.caller.clone(),
            tools: self.tools.clone(),
        }
    }
}

impl<B: Backend> Mcp<B> {
    /// With `caller` for every call, or `None` to take it from each HTTP request's
    /// authentication.
    pub fn new(server: Arc<Server<B>>, caller: Option<Caller>) -> Mcp<B> {
        Mcp {
            server,
            caller,
            tools: Arc::new(tools::all()),
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Option<Caller> {
        if let Some(c) = &self.caller {
            return Some(c.clone());
        }
        let parts = context.extensions.get::<axum::http::request::Parts>()?;
        parts.extensions.get::<Authed>().map(Caller::api)
    }
}

const INSTRUCTIONS: &str = "stockade runs commands in locked-down containers with no network. \
Use `exec` for one command (one-shot), or `sandbox_create` then `exec`/`file_*` with its \
sandbox_id to keep files between commands. Every command is checked before it runs (sandbox \
escapes are denied) and audited.";

impl<B: Backend> ServerHandler for Mcp<B> {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("stockade", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // The same list for every caller, for as long as the server runs; fetched afresh
        // each time all the same (the 2026-07-28 revision asks for a cache hint).
        Ok(ListToolsResult::with_all_items((*self.tools).clone())
            .with_ttl_ms(0)
            .with_cache_scope(CacheScope::Public))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(caller) = self.caller(&context) else {
            // The route is behind authentication: this is a wiring fault, not a client's.
            return Err(ErrorData::internal_error(
                "the request is not authenticated",
                None,
            ));
        };
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool {:?} (see tools/list)", request.name),
                None,
            ));
        }
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let result = calls::call(self, &caller, &request.name, arguments, &context).await;
        Ok(result.into())
    }
}

/// A tool's answer: its structured result and a text rendering of it.
fn done(value: serde_json::Value, text: String) -> CallToolResult {
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    result
}

/// A tool error the model can act on: what went wrong and what to do.
fn failed(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_local_sessions_of_one_user_do_not_share_sandboxes() {
        let user = || Principal {
            name: "alice".to_string(),
            via: None,
        };
        let (a, b) = (Caller::local(user()), Caller::local(user()));
        assert_ne!(a.owner, b.owner);
        assert!(a.owner.starts_with("local:alice:"), "{}", a.owner);
        assert!(!a.may_touch(&b.owner) && !b.may_touch(&a.owner));
        assert!(a.may_touch(&a.owner));
        // No API token (names without ':') can be either owner.
        assert!(!a.may_touch("alice"));
    }
}
