//! The routes of the API (docs/api.md, docs/openapi.json).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::auth::Authed;
use super::error::ApiError;
use super::execs::{self, BufferSink, Event, EventSink, Job, SoFar};
use super::sandboxes::{self, SandboxRecord};
use super::tokens::{self, Scope};
use super::Server;
use crate::audit::{self, Direction, Outcome, RecordBody};
use crate::backend::{Backend, Sink};
use crate::cancel::{Cancel, Canceller, Reason};
use crate::exec::{ExecOptions, ExecResult};
use crate::files::{CopyError, CopyRequest, Host};
use crate::plan::{CommandLine, ExecRequest};
use crate::session;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Bytes one stdin post or one argument list may carry, beyond the body cap.
const STDIN_PIPE: usize = 64 * 1024;

pub fn router<B: Backend>(server: Arc<Server<B>>) -> Router {
    let body_limit = server.limits.max_body_bytes;
    let files = Router::new()
        .route(
            "/v1/sandboxes/{id}/files",
            get(get_file::<B>).put(put_file::<B>),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<B>))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/version", get(version::<B>))
        .route(
            "/v1/sandboxes",
            post(create_sandbox::<B>).get(list_sandboxes::<B>),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(get_sandbox::<B>).delete(delete_sandbox::<B>),
        )
        .route("/v1/sandboxes/{id}/exec", post(exec_in_sandbox::<B>))
        .route("/v1/sandboxes/{id}/execs/{exec_id}", get(poll_exec::<B>))
        .route(
            "/v1/sandboxes/{id}/execs/{exec_id}/stdin",
            post(exec_stdin::<B>),
        )
        .route(
            "/v1/sandboxes/{id}/execs/{exec_id}/kill",
            post(kill_exec::<B>),
        )
        .route("/v1/sandboxes/{id}/files/list", get(list_files::<B>))
        .route("/v1/exec", post(exec_oneshot::<B>))
        .route("/v1/audit", get(audit_tail::<B>))
        .route("/v1/audit/verify", get(audit_verify::<B>))
        .route("/v1/grants", get(list_grants::<B>))
        .route(
            "/v1/grants/{principal}",
            axum::routing::delete(revoke_grant::<B>),
        )
        .route("/metrics", get(metrics::<B>))
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(files)
        .merge(super::mcp::router(server.clone()))
        .fallback(|| async { ApiError::not_found("such route (see /v1/openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method (see /v1/openapi.json)",
            )
        })
        .layer(axum::middleware::map_response(super::error::shape_errors))
        .with_state(server)
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, its errors in the API's shape. Read as JSON whatever its `Content-Type` says
/// (`curl -d` sends a form type): every route needs a bearer token, a header a browser does
/// not send cross-origin without a preflight, so a lenient type opens no CSRF route.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "bad_request"
                };
                ApiError::new(rejection.status(), code, rejection.body_text())
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not the JSON this route takes: {e}"),
            )
        })
    }
}

/// axum's `Query` and `Path` extractors, their rejections in the API's error shape.
macro_rules! api_extractor {
    ($name:ident, $inner:ident, $what:literal) => {
        pub struct $name<T>(pub T);

        impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S>
            for $name<T>
        {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                match axum::extract::$inner::<T>::from_request_parts(parts, state).await {
                    Ok(axum::extract::$inner(v)) => Ok($name(v)),
                    Err(rejection) => Err(ApiError::new(
                        rejection.status(),
                        "bad_request",
                        format!("{}: {}", $what, rejection.body_text()),
                    )),
                }
            }
        }
    };
}

api_extractor!(ApiQuery, Query, "the query string");
api_extractor!(ApiPath, Path, "the path");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn readyz<B: Backend>(State(server): State<Arc<Server<B>>>) -> Response {
    let owner = crate::plan::state_id(&server.service.state_dir);
    let ready = server.stopping().fired().is_none()
        && tokio::time::timeout(
            Duration::from_secs(5),
            server.service.backend.list(Some(&owner)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::json!({ "ready": ready }))).into_response()
}

async fn version<B: Backend>(State(server): State<Arc<Server<B>>>, _auth: Authed) -> Response {
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api": "v1",
        "agent_protocol": stockade_proto::PROTOCOL,
        "backend": server.service.backend.kind(),
    }))
    .into_response()
}

// ---- durations and small parsers -----------------------------------------------------------

/// A duration given as seconds (a number) or as text (`30s`, `2m`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(crate) enum Span {
    Seconds(u64),
    Text(#[serde(deserialize_with = "text_duration")] Duration),
}

fn text_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    // A query string carries numbers as text: bare digits are seconds there too.
    if let Ok(seconds) = s.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    crate::profile::parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Span {
    pub(crate) fn get(self) -> Duration {
        match self {
            Span::Seconds(s) => Duration::from_secs(s),
            Span::Text(d) => d,
        }
    }
}

/// Seconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(secs: i64) -> String {
    audit::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

// ---- sandboxes -------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSandbox {
    profile: Option<String>,
    ttl: Option<Span>,
    idle_timeout: Option<Span>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SandboxView {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) profile: String,
    pub(crate) created_at: String,
    pub(crate) expires_at: Option<String>,
    pub(crate) idle_timeout: Option<u64>,
    pub(crate) labels: BTreeMap<String, String>,
    /// The sandbox's state as the backend says (`running`, ...), `gone` when it is not there.
    pub(crate) state: String,
    pub(crate) last_used_at: Option<String>,
    pub(crate) busy: bool,
}

pub(crate) async fn view<B: Backend>(server: &Server<B>, record: SandboxRecord) -> SandboxView {
    let state_dir = &server.service.state_dir;
    let info = session::list(&server.service.backend, state_dir)
        .await
        .ok()
        .and_then(|l| l.into_iter().find(|s| s.session == record.id));
    SandboxView {
        created_at: rfc3339(record.created),
        expires_at: record.expires.map(rfc3339),
        state: info
            .as_ref()
            .map_or("gone".to_string(), |i| i.state.clone()),
        last_used_at: info.as_ref().and_then(|i| i.last_used).map(rfc3339),
        busy: info.as_ref().is_some_and(|i| i.busy),
        id: record.id,
        owner: record.owner,
        profile: record.profile,
        idle_timeout: record.idle_timeout,
        labels: record.labels,
    }
}

/// The sandbox `id` if `auth` may use it (another principal's is "not found": its existence is
/// not theirs to learn).
fn owned<B: Backend>(server: &Server<B>, auth: &Authed, id: &str) -> ApiResult<SandboxRecord> {
    match server.registry.get(id) {
        Some(r) if auth.may_touch(&r.owner) => Ok(r),
        _ => Err(ApiError::not_found("such sandbox")),
    }
}

pub(crate) fn exec_error(e: crate::exec::ExecError) -> ApiError {
    if e.is_denial() {
        return ApiError::new(StatusCode::FORBIDDEN, "denied", e.to_string());
    }
    match e {
        crate::exec::ExecError::Profile(_)
        | crate::exec::ExecError::Plan(_)
        | crate::exec::ExecError::NotElevatedProfile { .. } => ApiError::bad_request(e.to_string()),
        crate::exec::ExecError::SessionBusy { .. } => {
            ApiError::new(StatusCode::CONFLICT, "busy", e.to_string())
        }
        crate::exec::ExecError::Interrupted { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "interrupted",
            e.to_string(),
        ),
        other => ApiError::new(StatusCode::BAD_GATEWAY, "backend", other.to_string()),
    }
}

/// The longest `timeout` a caller of the API may ask for.
pub(crate) const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(3600);

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256
}

/// The longest `ttl` or `idle_timeout` a sandbox may be given.
pub(crate) const MAX_SANDBOX_SPAN: Duration = Duration::from_secs(365 * 86_400);

/// A caller names a profile the server offers, never a file on the server: a path would let a
/// token read host files through parse errors, or load a profile a sandbox wrote.
pub(crate) fn check_profile_name(profile: Option<&str>) -> ApiResult<()> {
    match profile {
        Some(p) if !crate::profile::is_name(p) => Err(ApiError::bad_request(
            "`profile` is the name of a profile this server offers (letters, digits, '-', '_', \
             '.'; at most 64), not a path",
        )),
        _ => Ok(()),
    }
}

async fn create_sandbox<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    JsonBody(body): JsonBody<CreateSandbox>,
) -> ApiResult<Response> {
    let record = new_sandbox(
        &server,
        &auth.principal.name,
        body.profile,
        body.ttl.map(Span::get),
        body.idle_timeout.map(Span::get),
        body.labels,
    )
    .await?;
    let view = view(&server, record).await;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Creates a sandbox owned by `owner` (every face's: the HTTP API's and the MCP server's),
/// its record written first and removed again when its sandbox cannot be opened.
pub(crate) async fn new_sandbox<B: Backend>(
    server: &Arc<Server<B>>,
    owner: &str,
    profile: Option<String>,
    ttl: Option<Duration>,
    idle_timeout: Option<Duration>,
    labels: BTreeMap<String, String>,
) -> ApiResult<SandboxRecord> {
    sandboxes::check_labels(&labels).map_err(ApiError::bad_request)?;
    let owner = owner.to_string();
    let mine = server
        .registry
        .list()
        .iter()
        .filter(|r| r.owner == owner)
        .count();
    if mine >= server.limits.max_sandboxes_per_principal {
        return Err(ApiError::too_many(
            "too_many_sandboxes",
            format!(
                "this principal has {mine} sandboxes; at most {} may exist (delete one)",
                server.limits.max_sandboxes_per_principal
            ),
        ));
    }
    check_profile_name(profile.as_deref())?;
    let options = ExecOptions {
        profile,
        ..Default::default()
    };
    let profile = server
        .service
        .select_profile(&options)
        .map_err(exec_error)?;
    let now = tokens::now_secs();
    for (field, span) in [("ttl", ttl), ("idle_timeout", idle_timeout)] {
        match span {
            Some(t) if t.is_zero() => {
                return Err(ApiError::bad_request(format!(
                    "{field} must be more than zero"
                )))
            }
            Some(t) if t > MAX_SANDBOX_SPAN => {
                return Err(ApiError::bad_request(format!(
                    "{field} must be at most {} days",
                    MAX_SANDBOX_SPAN.as_secs() / 86_400
                )))
            }
            _ => {}
        }
    }
    let record = SandboxRecord {
        id: sandboxes::new_id(),
        owner: owner.clone(),
        profile: profile.reference(),
        created: now,
        // Both at most MAX_SANDBOX_SPAN: no overflow.
        expires: ttl.map(|t| now.saturating_add(t.as_secs() as i64)),
        idle_timeout: idle_timeout.map(|d| d.as_secs().max(1)),
        labels,
    };
    server
        .registry
        .put(&record)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let options = ExecOptions {
        profile: Some(record.profile.clone()),
        ..Default::default()
    };
    let (canceller, cancel) = Cancel::new();
    let slot = server.run_slot(&owner, Some(&record.id), canceller)?;
    let opened = server
        .service
        .open_session(&record.id, &options, &cancel)
        .await;
    drop(slot);
    if let Err(e) = opened {
        server.registry.remove(&record.id);
        let _ = session::remove(
            &server.service.backend,
            &server.service.state_dir,
            &record.id,
        )
        .await;
        return Err(exec_error(e));
    }
    server
        .metrics
        .sandboxes
        .set(server.registry.list().len() as i64);
    Ok(record)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// Admin only: every principal's.
    #[serde(default)]
    all: bool,
}

async fn list_sandboxes<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    if q.all && !auth.is_admin() {
        return Err(ApiError::forbidden("?all=true needs an admin token"));
    }
    let mut out = Vec::new();
    for record in server.registry.list() {
        if q.all || record.owner == auth.principal.name {
            out.push(view(&server, record).await);
        }
    }
    Ok(Json(serde_json::json!({ "sandboxes": out })).into_response())
}

async fn get_sandbox<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let record = owned(&server, &auth, &id)?;
    Ok(Json(view(&server, record).await).into_response())
}

/// Removes a sandbox: its running executions are cancelled (ended inside it, finished on
/// record), then it goes.
pub(crate) async fn remove_sandbox<B: Backend>(server: &Server<B>, id: &str) {
    server.cancel_where(Reason::Killed, |_, sandbox| sandbox == Some(id));
    let _ = session::remove(&server.service.backend, &server.service.state_dir, id).await;
    server.registry.remove(id);
    server
        .metrics
        .sandboxes
        .set(server.registry.list().len() as i64);
}

async fn delete_sandbox<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    owned(&server, &auth, &id)?;
    remove_sandbox(&server, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes sandboxes whose ttl passed or that were idle past their idle timeout (a running
/// command is activity: a busy session is never idle). Returns what it removed.
pub async fn reap<B: Backend>(server: &Server<B>) -> Vec<String> {
    reap_where(server, |_| true).await
}

/// [`reap`] over the records `pick` selects (a stdio MCP server reaps only its user's).
pub(crate) async fn reap_where<B: Backend>(
    server: &Server<B>,
    pick: impl Fn(&SandboxRecord) -> bool,
) -> Vec<String> {
    let now = tokens::now_secs();
    let state_dir = &server.service.state_dir;
    let listed = session::list(&server.service.backend, state_dir)
        .await
        .unwrap_or_default();
    let mut removed = Vec::new();
    for record in server.registry.list().into_iter().filter(|r| pick(r)) {
        let expired = record.expires.is_some_and(|e| now >= e);
        let info = listed.iter().find(|s| s.session == record.id);
        let busy = info.is_some_and(|i| i.busy)
            || matches!(session::try_lock(state_dir, &record.id), Ok(None));
        let idle = record.idle_timeout.is_some_and(|t| {
            let last = info
                .and_then(|i| i.last_used)
                .unwrap_or(record.created)
                .max(record.created);
            now.saturating_sub(last) >= t as i64
        });
        if expired || (idle && !busy) {
            remove_sandbox(server, &record.id).await;
            removed.push(record.id);
        }
    }
    removed
}

// ---- executions ------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecBody {
    /// Shell text, run as `bash -c`.
    pub(crate) command: Option<String>,
    /// A program and its arguments, run without a shell.
    pub(crate) argv: Option<Vec<String>>,
    pub(crate) workdir: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// Text fed to the command's stdin, then end of file.
    pub(crate) stdin: Option<String>,
    /// The same, base64 (for bytes that are not text).
    pub(crate) stdin_base64: Option<String>,
    /// Background only: keep stdin open for `POST .../stdin`.
    #[serde(default)]
    pub(crate) stdin_open: bool,
    pub(crate) timeout: Option<Span>,
    #[serde(default)]
    pub(crate) background: bool,
    /// `POST /v1/exec` only: the profile of the one-shot sandbox.
    pub(crate) profile: Option<String>,
    /// Also give both streams interleaved (`output`).
    #[serde(default)]
    pub(crate) interleaved: bool,
    /// Secrets to put in the command's environment, by name; their values are redacted from
    /// the result, the stream and the audit log.
    #[serde(default)]
    pub(crate) secrets: Vec<String>,
}

pub(crate) struct Prepared {
    pub(crate) request: ExecRequest,
    pub(crate) options: ExecOptions,
    pub(crate) stdin: Option<Vec<u8>>,
}

pub(crate) fn prepare(
    body: &ExecBody,
    session: Option<&str>,
    profile: Option<String>,
) -> ApiResult<Prepared> {
    let command = match (&body.command, &body.argv) {
        (Some(text), None) => CommandLine::Shell(text.clone()),
        (None, Some(argv)) if !argv.is_empty() => CommandLine::Argv(argv.clone()),
        (None, Some(_)) => return Err(ApiError::bad_request("argv is empty")),
        _ => return Err(ApiError::bad_request(
            "give exactly one of `command` (shell text) or `argv` (a program and its arguments)",
        )),
    };
    let stdin = match (&body.stdin, &body.stdin_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give stdin or stdin_base64, not both",
            ))
        }
        (Some(text), None) => Some(text.clone().into_bytes()),
        (None, Some(b64)) => {
            use base64::Engine as _;
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| ApiError::bad_request(format!("stdin_base64: {e}")))?,
            )
        }
        (None, None) => None,
    };
    if body.stdin_open && !body.background {
        return Err(ApiError::bad_request(
            "stdin_open keeps stdin open for POST .../stdin: it needs background: true",
        ));
    }
    match body.timeout.map(Span::get) {
        Some(t) if t.is_zero() => {
            return Err(ApiError::bad_request(
                "timeout must be more than zero (leave it out for the profile's)",
            ))
        }
        Some(t) if t > MAX_EXEC_TIMEOUT => {
            return Err(ApiError::bad_request(format!(
                "timeout must be at most {} s through the API",
                MAX_EXEC_TIMEOUT.as_secs()
            )))
        }
        _ => {}
    }
    if body.secrets.len() > 32 {
        return Err(ApiError::bad_request("at most 32 secrets per execution"));
    }
    if let Some(bad) = body.env.keys().find(|k| !is_env_name(k)) {
        return Err(ApiError::bad_request(format!(
            "env: {bad:?} is not a variable name (letters, digits and '_', not starting with a digit)"
        )));
    }
    Ok(Prepared {
        request: ExecRequest {
            command,
            session: session.map(str::to_string),
            timeout: body.timeout.map(Span::get),
            workdir: body.workdir.clone(),
            env: body.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            stdin: stdin.is_some() || body.stdin_open,
            stdin_given: stdin.clone(),
        },
        options: ExecOptions {
            profile,
            interleaved: body.interleaved,
            secrets: body.secrets.clone(),
            ..Default::default()
        },
        stdin,
    })
}

/// Cancels its execution when dropped (the client went away) unless defused.
pub(crate) struct OnDrop(pub(crate) Option<Canceller>);

impl OnDrop {
    pub(crate) fn defuse(&mut self) {
        self.0 = None;
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel(Reason::Disconnected);
        }
    }
}

/// Runs one execution in a task of its own (so that it finishes, and writes its finish, even
/// when the request that started it is gone).
pub(crate) fn spawn_exec<B: Backend>(
    server: &Arc<Server<B>>,
    principal: &crate::service::Principal,
    prepared: Prepared,
    sink: Option<Box<dyn Sink>>,
    stdin_reader: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    slot: super::RunSlot<B>,
    cancel: Cancel,
) -> tokio::task::JoinHandle<ExecResult> {
    let server = server.clone();
    let principal = principal.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let Prepared {
            request,
            options,
            stdin,
        } = prepared;
        let mut reader: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = match stdin {
            Some(bytes) => Some(Box::new(std::io::Cursor::new(bytes))),
            None => stdin_reader,
        };
        let stdin = reader
            .as_mut()
            .map(|r| &mut **r as &mut (dyn tokio::io::AsyncRead + Unpin + Send));
        let result = server
            .service
            .exec(&principal, &request, &options, stdin, sink, &cancel)
            .await;
        server
            .metrics
            .execs
            .get_or_create(&super::metrics::ExecLabels {
                outcome: result.outcome.to_string(),
                decision: result
                    .decision
                    .map_or("none".to_string(), |d| d.as_str().to_string()),
            })
            .inc();
        server
            .metrics
            .exec_seconds
            .observe(result.duration_ms as f64 / 1000.0);
        if result.audit_error.is_some() {
            server.metrics.audit_failures.inc();
        }
        result
    })
}

/// Starts a background execution (every face's): registered for its polls, its output kept
/// as it comes, its result kept once it ends.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_background<B: Backend>(
    server: &Arc<Server<B>>,
    principal: &crate::service::Principal,
    prepared: Prepared,
    session: Option<&str>,
    stdin_open: bool,
    slot: super::RunSlot<B>,
    canceller: Canceller,
    cancel: Cancel,
) -> Arc<Job> {
    let output = Arc::new(Mutex::new(SoFar::default()));
    let (stdin_writer, stdin_reader) = if stdin_open {
        let (writer, reader) = tokio::io::duplex(STDIN_PIPE);
        (
            Some(writer),
            Some(Box::new(reader) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        )
    } else {
        (None, None)
    };
    let (done_tx, done) = tokio::sync::watch::channel(None);
    let job = Arc::new(Job {
        id: execs::new_id(),
        owner: principal.name.clone(),
        sandbox: session.map(str::to_string),
        canceller,
        output: output.clone(),
        done,
        stdin: tokio::sync::Mutex::new(stdin_writer),
    });
    server.background.insert(job.clone());
    let handle = spawn_exec(
        server,
        principal,
        prepared,
        Some(Box::new(BufferSink(output))),
        stdin_reader,
        slot,
        cancel,
    );
    let kept = job.clone();
    let limits = execs::KeepLimits {
        results: server.limits.max_kept_results,
        bytes: server.limits.max_kept_bytes,
        per_owner: server.limits.max_kept_per_principal,
    };
    let background = server.clone();
    tokio::spawn(async move {
        let mut bytes = 0;
        if let Ok(result) = handle.await {
            bytes = result.stdout.len() + result.stderr.len();
            let _ = done_tx.send(Some(Arc::new(result)));
        }
        // The result holds the output now: the buffer the polls read is let go.
        *kept.output.lock().unwrap_or_else(|e| e.into_inner()) = SoFar::default();
        background
            .background
            .finished(&kept.id, &kept.owner, bytes, limits);
    });
    job
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"))
}

async fn run_exec<B: Backend>(
    server: Arc<Server<B>>,
    auth: Authed,
    headers: HeaderMap,
    body: ExecBody,
    sandbox: Option<SandboxRecord>,
) -> ApiResult<Response> {
    let (session, profile) = match &sandbox {
        Some(r) => (Some(r.id.as_str()), Some(r.profile.clone())),
        None => (None, body.profile.clone()),
    };
    check_profile_name(body.profile.as_deref())?;
    if sandbox.is_some() && body.profile.is_some() {
        return Err(ApiError::bad_request(
            "a sandbox's profile is fixed when it is created; `profile` is for POST /v1/exec",
        ));
    }
    let prepared = prepare(&body, session, profile)?;
    let (canceller, cancel) = Cancel::new();
    let slot = server.run_slot(&auth.principal.name, session, canceller.clone())?;

    if body.background {
        let job = start_background(
            &server,
            &auth.principal,
            prepared,
            session,
            body.stdin_open,
            slot,
            canceller,
            cancel,
        );
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "exec_id": job.id,
                "sandbox": job.sandbox,
                "state": "running",
            })),
        )
            .into_response());
    }

    let mut guard = OnDrop(Some(canceller));
    let mut slot = slot;
    let counted = slot.count();
    if wants_stream(&headers) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = spawn_exec(
            &server,
            &auth.principal,
            prepared,
            Some(Box::new(EventSink::new(tx.clone()))),
            None,
            slot,
            cancel,
        );
        tokio::spawn(async move {
            if let Ok(result) = handle.await {
                let _ = tx.send(Event::Exit(Box::new(result)));
            }
        });
        // The guard lives in the body: dropped with it when the client goes away. So does the
        // principal's count: what is queued for a client that does not read stays counted.
        let events = futures_util::stream::unfold(
            (rx, guard, counted),
            |(mut rx, mut guard, counted)| async move {
                let event = rx.recv().await?;
                if matches!(event, Event::Exit(_)) {
                    guard.defuse();
                }
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                Some((
                    Ok::<_, std::convert::Infallible>(line),
                    (rx, guard, counted),
                ))
            },
        );
        return Ok((
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(events),
        )
            .into_response());
    }
    let handle = spawn_exec(&server, &auth.principal, prepared, None, None, slot, cancel);
    let result = handle
        .await
        .map_err(|e| ApiError::internal(format!("the execution's task failed: {e}")))?;
    guard.defuse();
    // The result stays counted until the client has taken it.
    let body = serde_json::to_vec(&result).unwrap_or_default();
    let once = futures_util::stream::unfold((Some(body), counted), |(body, counted)| async move {
        // Asked for the next piece: the body has been taken; the count goes with `None`.
        let body = body?;
        Some((Ok::<_, std::convert::Infallible>(body), (None, counted)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(once),
    )
        .into_response())
}

async fn exec_in_sandbox<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Response> {
    let record = owned(&server, &auth, &id)?;
    run_exec(server, auth, headers, body, Some(record)).await
}

async fn exec_oneshot<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Response> {
    if body.background && body.stdin_open {
        return Err(ApiError::bad_request(
            "stdin_open is for a sandbox's background executions",
        ));
    }
    if body.background {
        return Err(ApiError::bad_request(
            "background executions run in a sandbox: POST /v1/sandboxes/{id}/exec",
        ));
    }
    run_exec(server, auth, headers, body, None).await
}

fn job_of<B: Backend>(
    server: &Server<B>,
    auth: &Authed,
    sandbox: &str,
    exec_id: &str,
) -> ApiResult<Arc<Job>> {
    match server.background.get(exec_id) {
        Some(job) if auth.may_touch(&job.owner) && job.sandbox.as_deref() == Some(sandbox) => {
            Ok(job)
        }
        _ => Err(ApiError::not_found("such execution")),
    }
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<Span>,
}

async fn poll_exec<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath((id, exec_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Response> {
    let job = job_of(&server, &auth, &id, &exec_id)?;
    let wait = q
        .wait
        .map(Span::get)
        .unwrap_or_default()
        .min(server.limits.max_wait);
    Ok(Json(poll_job(&job, wait).await).into_response())
}

/// A background execution's state after waiting up to `wait` for its end (every face's):
/// `{exec_id, sandbox, state, stdout, stderr, result}`.
pub(crate) async fn poll_job(job: &Job, wait: Duration) -> serde_json::Value {
    let mut done = job.done.clone();
    let _ = tokio::time::timeout(wait, done.wait_for(Option::is_some)).await;
    let result = done.borrow().clone();
    let (stdout, stderr) = match &result {
        Some(r) => (r.stdout.clone(), r.stderr.clone()),
        None => {
            let so_far = job.output.lock().unwrap_or_else(|e| e.into_inner());
            (
                String::from_utf8_lossy(&so_far.stdout).into_owned(),
                String::from_utf8_lossy(&so_far.stderr).into_owned(),
            )
        }
    };
    serde_json::json!({
        "exec_id": job.id,
        "sandbox": job.sandbox,
        "state": if result.is_some() { "done" } else { "running" },
        "stdout": stdout,
        "stderr": stderr,
        "result": result.as_deref(),
    })
}

#[derive(Debug, Deserialize)]
struct StdinQuery {
    #[serde(default)]
    eof: bool,
}

async fn exec_stdin<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath((id, exec_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<StdinQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let job = job_of(&server, &auth, &id, &exec_id)?;
    let written = write_stdin(&server, &job, &body, q.eof).await?;
    Ok(Json(written).into_response())
}

/// Writes to a background execution's stdin, and closes it after when `eof` (every face's).
pub(crate) async fn write_stdin<B: Backend>(
    server: &Server<B>,
    job: &Job,
    body: &[u8],
    eof: bool,
) -> ApiResult<serde_json::Value> {
    let mut pipe = job.stdin.lock().await;
    let Some(writer) = pipe.as_mut() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stdin_closed",
            "this execution's stdin is not open (start it with stdin_open: true; an eof closes it)",
        ));
    };
    let written = tokio::time::timeout(server.limits.max_wait, writer.write_all(body)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            *pipe = None;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stdin_closed",
                "the command no longer reads its stdin",
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stdin_full",
                "the command did not read its stdin in time; try again",
            ))
        }
    }
    if eof {
        if let Some(mut w) = pipe.take() {
            let _ = w.shutdown().await;
        }
    }
    Ok(serde_json::json!({ "written": body.len(), "eof": eof }))
}

async fn kill_exec<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath((id, exec_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let job = job_of(&server, &auth, &id, &exec_id)?;
    job.canceller.cancel(Reason::Killed);
    let done = job.done.borrow().is_some();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "exec_id": job.id,
            "state": if done { "done" } else { "killing" },
        })),
    )
        .into_response())
}

// ---- files -----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: String,
}

pub(crate) fn copy_error(e: CopyError) -> ApiError {
    match e {
        CopyError::Path { .. } => ApiError::bad_request(e.to_string()),
        CopyError::Exec(crate::exec::ExecError::Backend(b)) => {
            let message = b.to_string();
            let status = if message.contains("No such file") {
                StatusCode::NOT_FOUND
            } else if message.contains("not a regular file") || message.contains("writable") {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_GATEWAY
            };
            ApiError::new(status, "file", message)
        }
        CopyError::Exec(e) => exec_error(e),
    }
}

async fn put_file<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let record = owned(&server, &auth, &id)?;
    let max = server.limits.max_file_bytes;
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a file is at most {max} bytes"),
        )
    };
    if size.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    // Counted as it streams: a body without a length is cut at the cap, and refused as too
    // large (not as a backend failure: the copy fails only because the source was cut).
    let mut seen = 0u64;
    let over_cap = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cut = over_cap.clone();
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > max {
            cut.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other(format!(
                "the file is over {max} bytes"
            )));
        }
        Ok(chunk)
    });
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let (canceller, cancel) = Cancel::new();
    let slot = server.run_slot(&auth.principal.name, Some(&id), canceller.clone())?;
    let mut guard = OnDrop(Some(canceller));
    let request = CopyRequest {
        session: id.clone(),
        path: q.path,
        direction: Direction::In,
    };
    let options = ExecOptions {
        profile: Some(record.profile),
        ..Default::default()
    };
    let copied = server
        .service
        .copy(
            &auth.principal,
            &request,
            &options,
            Host::Source {
                reader: &mut reader,
                size,
            },
            &cancel,
        )
        .await;
    guard.defuse();
    drop(slot);
    let copied = copied.map_err(|e| {
        if over_cap.load(std::sync::atomic::Ordering::Relaxed) {
            too_large()
        } else {
            copy_error(e)
        }
    })?;
    Ok((StatusCode::CREATED, Json(copied)).into_response())
}

async fn get_file<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Response> {
    let record = owned(&server, &auth, &id)?;
    let (canceller, cancel) = Cancel::new();
    let slot = server.run_slot(&auth.principal.name, Some(&id), canceller.clone())?;
    let (mut writer, reader) = tokio::io::duplex(STDIN_PIPE);
    let request = CopyRequest {
        session: id.clone(),
        path: q.path,
        direction: Direction::Out,
    };
    let options = ExecOptions {
        profile: Some(record.profile),
        ..Default::default()
    };
    let copy_server = server.clone();
    let principal = auth.principal.clone();
    let max = server.limits.max_file_bytes;
    let mut copy = tokio::spawn(async move {
        let _slot = slot;
        let mut capped = CappedWriter {
            inner: &mut writer,
            left: max,
        };
        let out = copy_server
            .service
            .copy(
                &principal,
                &request,
                &options,
                Host::Sink(&mut capped),
                &cancel,
            )
            .await;
        let _ = writer.shutdown().await;
        out
    });
    let mut reader = tokio_util::io::ReaderStream::new(reader);
    // Wait for the first bytes or the end: an error before any byte is a proper error status.
    let (first, mut copy) = tokio::select! {
        chunk = reader.next() => (chunk, Some(copy)),
        done = &mut copy => {
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(copy_error(e)),
                Err(e) => return Err(ApiError::internal(e.to_string())),
            }
            // Done and whole: what it wrote is in the pipe.
            (reader.next().await, None)
        }
    };
    if first.is_none() {
        // Nothing came: an empty file, or a copy that failed before its first byte.
        if let Some(handle) = copy.take() {
            match handle.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(copy_error(e)),
                Err(e) => return Err(ApiError::internal(e.to_string())),
            }
        }
    }
    let mut guard = OnDrop(Some(canceller));
    let head = match first {
        Some(Ok(bytes)) => Some(bytes),
        _ => None,
    };
    // The rest streams; a copy that fails after the first byte aborts the response (the
    // client sees an incomplete transfer, never a short file presented as whole).
    let rest = futures_util::stream::unfold(
        (reader, copy, head),
        move |(mut reader, copy, head)| async move {
            if let Some(bytes) = head {
                return Some((Ok(bytes), (reader, copy, None)));
            }
            match reader.next().await {
                Some(Ok(bytes)) => return Some((Ok(bytes), (reader, copy, None))),
                Some(Err(e)) => return Some((Err(e), (reader, None, None))),
                None => {}
            }
            let failed = match copy?.await {
                Ok(Ok(_)) => return None,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            Some((Err(std::io::Error::other(failed)), (reader, None, None)))
        },
    )
    .map(move |item| {
        if item.is_err() {
            guard.defuse();
        }
        item
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(rest),
    )
        .into_response())
}

/// A writer that fails once `left` bytes are used up.
pub(crate) struct CappedWriter<'a, W> {
    pub(crate) inner: &'a mut W,
    pub(crate) left: u64,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CappedWriter<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the file is over the server's size cap",
            )));
        }
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            this.left -= *n as u64;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Lists a directory in the sandbox: a `find` run as stockade's own probe (audited, the check
/// stage bypassed: the path is an argument, never shell text).
async fn list_files<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Response> {
    let record = owned(&server, &auth, &id)?;
    let listing = list_dir(&server, &auth.principal, record, q.path).await?;
    Ok(Json(listing).into_response())
}

/// The entries of directory `path` in sandbox `record` (every face's): `{path, entries:
/// [{name, size, type}], truncated}`.
pub(crate) async fn list_dir<B: Backend>(
    server: &Arc<Server<B>>,
    principal: &crate::service::Principal,
    record: SandboxRecord,
    path: String,
) -> ApiResult<serde_json::Value> {
    let id = record.id.clone();
    if !path.starts_with('/') || path.contains('\0') || path.len() > 4096 {
        return Err(ApiError::bad_request("path must be absolute"));
    }
    let request = ExecRequest {
        command: CommandLine::Argv(
            [
                "find",
                "--",
                path.as_str(),
                "-mindepth",
                "1",
                "-maxdepth",
                "1",
                "-printf",
                "%f\\0%s\\0%y\\0",
            ]
            .map(String::from)
            .to_vec(),
        ),
        session: Some(id.clone()),
        ..Default::default()
    };
    let options = ExecOptions {
        profile: Some(record.profile),
        bypass_check: true,
        ..Default::default()
    };
    let (canceller, cancel) = Cancel::new();
    let slot = server.run_slot(&principal.name, Some(&id), canceller.clone())?;
    let mut guard = OnDrop(Some(canceller));
    let result = server
        .service
        .exec(principal, &request, &options, None, None, &cancel)
        .await;
    guard.defuse();
    drop(slot);
    if result.outcome != Outcome::Completed || result.exit_code != Some(0) {
        let why = if result.stderr.is_empty() {
            result
                .error
                .unwrap_or_else(|| "the listing failed".to_string())
        } else {
            result.stderr.trim().to_string()
        };
        let status = if why.contains("No such file") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return Err(ApiError::new(status, "file", why));
    }
    let fields: Vec<&str> = result.stdout.split('\0').collect();
    let entries: Vec<serde_json::Value> = fields
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| {
            let kind = match c[2] {
                "f" => "file",
                "d" => "dir",
                "l" => "symlink",
                _ => "other",
            };
            serde_json::json!({
                "name": c[0],
                "size": c[1].parse::<u64>().unwrap_or(0),
                "type": kind,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "path": path,
        "entries": entries,
        "truncated": result.truncated,
    }))
}

// ---- audit, grants, metrics ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
    /// `exec` (default) or `auth` (admin).
    log: Option<String>,
}

const MAX_AUDIT_RECORDS: usize = 1000;

async fn audit_tail<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).min(MAX_AUDIT_RECORDS);
    let file = match q.log.as_deref().unwrap_or("exec") {
        "exec" => audit::LOG_FILE,
        "auth" if auth.is_admin() => audit::AUTH_LOG_FILE,
        "auth" => return Err(ApiError::forbidden("the auth log needs an admin token")),
        other => {
            return Err(ApiError::bad_request(format!(
                "{other:?}: log is exec or auth"
            )))
        }
    };
    let path = server.service.state_dir.join(file);
    // A non-admin sees its own executions: read more, keep what is theirs.
    let read = if auth.is_admin() {
        limit
    } else {
        MAX_AUDIT_RECORDS * 4
    };
    let records = audit::tail(&path, read).map_err(|e| ApiError::internal(e.to_string()))?;
    let records: Vec<audit::Record> = if auth.is_admin() {
        records
    } else {
        let mine: std::collections::HashSet<String> = records
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::Start(s)
                    if s.user == auth.principal.name && s.via.as_deref() == Some("api") =>
                {
                    Some(s.id.clone())
                }
                _ => None,
            })
            .collect();
        let kept: Vec<audit::Record> = records
            .into_iter()
            .filter(|r| match &r.body {
                RecordBody::Start(s) => mine.contains(&s.id),
                RecordBody::Finish(f) => mine.contains(&f.id),
                _ => false,
            })
            .collect();
        let skip = kept.len().saturating_sub(limit);
        kept.into_iter().skip(skip).collect()
    };
    Ok(Json(serde_json::json!({ "records": records })).into_response())
}

async fn audit_verify<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
) -> ApiResult<Response> {
    if !auth.is_admin() {
        return Err(ApiError::forbidden(
            "verifying the logs needs an admin token",
        ));
    }
    let mut reports = serde_json::Map::new();
    let mut ok = true;
    for (name, file) in [("exec", audit::LOG_FILE), ("auth", audit::AUTH_LOG_FILE)] {
        let report = audit::verify(&server.service.state_dir.join(file))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        ok &= report.ok();
        reports.insert(
            name.to_string(),
            serde_json::to_value(&report).unwrap_or_default(),
        );
    }
    Ok(Json(serde_json::json!({ "ok": ok, "logs": reports })).into_response())
}

/// What a principal holds: its token's scope and state, and its sandboxes.
pub fn grants(state_dir: &std::path::Path) -> Result<Vec<serde_json::Value>, tokens::TokenError> {
    let now = tokens::now_secs();
    let registry = sandboxes::Registry::new(state_dir);
    let sandboxes = registry.list();
    Ok(tokens::Tokens::new(state_dir)
        .load()?
        .tokens
        .into_iter()
        .map(|t| {
            let owned: Vec<String> = sandboxes
                .iter()
                .filter(|s| s.owner == t.name)
                .map(|s| s.id.clone())
                .collect();
            serde_json::json!({
                "principal": t.name,
                "scope": t.scope,
                "active": t.active(now),
                "created_at": rfc3339(t.created),
                "expires_at": t.expires.map(rfc3339),
                "revoked_at": t.revoked.map(rfc3339),
                "sandboxes": owned,
            })
        })
        .collect())
}

async fn list_grants<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
) -> ApiResult<Response> {
    if !auth.is_admin() {
        return Err(ApiError::forbidden("grants need an admin token"));
    }
    let grants =
        grants(&server.service.state_dir).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(serde_json::json!({ "grants": grants })).into_response())
}

async fn revoke_grant<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
    ApiPath(principal): ApiPath<String>,
) -> ApiResult<Response> {
    if !auth.is_admin() {
        return Err(ApiError::forbidden("grants need an admin token"));
    }
    let tokens = tokens::Tokens::new(&server.service.state_dir);
    let now = tokens::now_secs();
    let found = tokens
        .update(|f| {
            let mut found = false;
            for t in f.tokens.iter_mut().filter(|t| t.name == principal) {
                found = true;
                t.revoked.get_or_insert(now);
            }
            Ok(found)
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !found {
        return Err(ApiError::not_found("such principal"));
    }
    server.cancel_where(Reason::Killed, |owner, _| owner == principal);
    let mut removed = Vec::new();
    for record in server.registry.list() {
        if record.owner == principal {
            remove_sandbox(&server, &record.id).await;
            removed.push(record.id);
        }
    }
    server
        .auth
        .record_event(audit::AuthKind::GrantRevoked, &principal, &auth.client);
    Ok(Json(serde_json::json!({
        "principal": principal,
        "revoked": true,
        "sandboxes_removed": removed,
    }))
    .into_response())
}

async fn metrics<B: Backend>(
    State(server): State<Arc<Server<B>>>,
    auth: Authed,
) -> ApiResult<Response> {
    if auth.scope != Scope::Admin {
        return Err(ApiError::forbidden("metrics need an admin token"));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.metrics.render(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_names_every_route_and_the_one_result() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/healthz",
            "/readyz",
            "/v1/openapi.json",
            "/v1/version",
            "/v1/sandboxes",
            "/v1/sandboxes/{id}",
            "/v1/sandboxes/{id}/exec",
            "/v1/sandboxes/{id}/execs/{exec_id}",
            "/v1/sandboxes/{id}/execs/{exec_id}/stdin",
            "/v1/sandboxes/{id}/execs/{exec_id}/kill",
            "/v1/sandboxes/{id}/files",
            "/v1/sandboxes/{id}/files/list",
            "/v1/exec",
            "/v1/audit",
            "/v1/audit/verify",
            "/v1/grants",
            "/v1/grants/{principal}",
            "/mcp",
            "/metrics",
        ] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
        assert_eq!(paths.len(), 19, "a documented route the router lacks");
        let mut schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/exec-result.schema.json")).unwrap();
        let obj = schema.as_object_mut().unwrap();
        obj.remove("$schema");
        obj.remove("$id");
        assert_eq!(
            doc["components"]["schemas"]["ExecResult"], schema,
            "docs/openapi.json is stale: run scripts/gen-openapi.py"
        );
    }
}
