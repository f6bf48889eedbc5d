//! `stockade serve`: the HTTP API an agent platform drives, on the one [`Service`].
//!
//! Everything is built and checked before a port is bound (the service with its compiled rules
//! and configuration, the token file, the state directory). Every request but `/healthz`,
//! `/readyz` and the OpenAPI document is authenticated ([`auth`]): a token names a principal,
//! which owns the sandboxes it creates. Executions run in tasks of their own, registered here,
//! so that a client that goes away, a kill request, a sandbox's deletion and the server's
//! shutdown all end them the same way: cancelled, their processes ended inside the sandbox,
//! their `finish` written.

pub(crate) mod api;
pub mod auth;
pub(crate) mod error;
pub(crate) mod execs;
pub mod limiter;
mod mcp;
mod metrics;
pub mod sandboxes;
pub mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::cancel::{Cancel, Canceller, Reason};
use crate::service::Service;

pub use api::{grants, OPENAPI};
pub use limiter::Client;

/// How often expired and idle sandboxes are looked for.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// What the server accepts from outside, at most.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A JSON request body.
    pub max_body_bytes: usize,
    /// A file uploaded or downloaded.
    pub max_file_bytes: u64,
    pub max_sandboxes_per_principal: usize,
    /// Executions running (or waiting for their sandbox) at once, per principal.
    pub max_execs_per_principal: usize,
    /// A client must have sent a request's headers within this long.
    pub header_timeout: Duration,
    /// The longest `?wait=` of a background execution's poll.
    pub max_wait: Duration,
    /// Finished background executions kept for their poll, oldest forgotten first.
    pub max_kept_results: usize,
    /// The output those kept results hold, at most.
    pub max_kept_bytes: usize,
    /// Kept results of one principal, at most (its own oldest forgotten first).
    pub max_kept_per_principal: usize,
    /// How long a shutdown waits for running executions to end.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_file_bytes: 256 << 20,
            max_sandboxes_per_principal: 32,
            max_execs_per_principal: 128,
            header_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            max_kept_results: 1024,
            max_kept_bytes: 256 << 20,
            max_kept_per_principal: 64,
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub listen: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    /// Accept a TCP address other than loopback (without TLS: put a terminating proxy in
    /// front).
    pub allow_non_loopback: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("nothing to listen on: give --listen ADDR and/or --socket PATH")]
    NoListener,
    #[error("{addr} is not a loopback address, and stockade speaks plain HTTP: tokens would cross the network in the clear. Listen on 127.0.0.1 or a Unix socket behind a TLS-terminating proxy, or pass --allow-non-loopback if the network is yours")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file cannot be used: {0}")]
    Tokens(#[from] tokens::TokenError),
    #[error("the auth audit log cannot be written: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("no token exists yet: create one with `stockade token create --name NAME` (it is printed once)")]
    NoTokens,
    #[error(transparent)]
    Agent(#[from] crate::agent::InstallError),
    #[error("cannot start the auth log writer: {0}")]
    Thread(std::io::Error),
    #[error("the default profile cannot be used: {0}")]
    Profile(String),
}

/// An execution running now, for kill requests, deletions and the shutdown.
struct Running {
    owner: String,
    sandbox: Option<String>,
    canceller: Canceller,
}

/// The server's state, shared by every request.
pub struct Server<B: Backend> {
    pub service: Service<B>,
    pub(crate) limits: Limits,
    auth: auth::Auth,
    pub(crate) registry: sandboxes::Registry,
    metrics: metrics::Metrics,
    running: Mutex<HashMap<u64, Running>>,
    per_principal: Mutex<HashMap<String, usize>>,
    pub(crate) background: execs::Background,
    next_id: AtomicU64,
    idle: Notify,
    shutdown: Canceller,
    stopping: Cancel,
}

/// Held while an execution runs: counts it for its principal and lets it be cancelled.
pub(crate) struct RunSlot<B: Backend> {
    server: Arc<Server<B>>,
    id: u64,
    /// The principal's count of executions, given back with the slot unless it was handed to
    /// the response ([`RunSlot::count`]).
    counted: Option<Counted<B>>,
}

impl<B: Backend> RunSlot<B> {
    /// The principal's count of this execution, to be given back only when what the response
    /// holds (a stream, a result) has been delivered or dropped: a client that does not read
    /// keeps using its principal's budget, so such clients cannot pile up results in memory.
    pub(crate) fn count(&mut self) -> Option<Counted<B>> {
        self.counted.take()
    }
}

impl<B: Backend> Drop for RunSlot<B> {
    fn drop(&mut self) {
        let mut running = self
            .server
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        running.remove(&self.id);
        let empty = running.is_empty();
        drop(running);
        self.server.metrics.in_flight.dec();
        if empty {
            self.server.idle.notify_waiters();
        }
    }
}

/// One execution in a principal's count.
pub(crate) struct Counted<B: Backend> {
    server: Arc<Server<B>>,
    owner: String,
}

impl<B: Backend> Drop for Counted<B> {
    fn drop(&mut self) {
        let mut counts = self
            .server
            .per_principal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.owner);
            }
        }
    }
}

impl<B: Backend> Server<B> {
    /// Builds the server over `service`. Nothing listens yet; the token file and the auth log
    /// are checked here.
    pub fn new(service: Service<B>, limits: Limits) -> Result<Arc<Server<B>>, ServeError> {
        let auth = auth::Auth::new(&service.state_dir)?;
        if !auth.has_tokens()? {
            return Err(ServeError::NoTokens);
        }
        Server::build(service, limits, auth)
    }

    /// The same state for a face that authenticates no one (`stockade mcp` on stdio, whose
    /// one caller is the local user): no token is needed, and none is ever checked.
    pub fn local(service: Service<B>, limits: Limits) -> Result<Arc<Server<B>>, ServeError> {
        let auth = auth::Auth::new(&service.state_dir)?;
        Server::build(service, limits, auth)
    }

    fn build(
        service: Service<B>,
        limits: Limits,
        auth: auth::Auth,
    ) -> Result<Arc<Server<B>>, ServeError> {
        // The agent's files are written here, once, before anything listens, rather than by
        // the first requests at once.
        if service.backend.uses_agent() {
            crate::agent::install(&service.state_dir)?;
        }
        // The default profile and the exec log must be usable before the port is bound: a
        // server that listens and then fails every command helps no one.
        service
            .select_profile(&crate::exec::ExecOptions::default())
            .map_err(|e| ServeError::Profile(e.to_string()))?;
        crate::audit::AuditLog::open(&service.state_dir)?;
        let registry = sandboxes::Registry::new(&service.state_dir);
        let (shutdown, stopping) = Cancel::new();
        let server = Server {
            limits,
            auth,
            registry,
            metrics: metrics::Metrics::default(),
            running: Mutex::new(HashMap::new()),
            per_principal: Mutex::new(HashMap::new()),
            background: execs::Background::default(),
            next_id: AtomicU64::new(1),
            idle: Notify::new(),
            shutdown,
            stopping,
            service,
        };
        server
            .metrics
            .sandboxes
            .set(server.registry.list().len() as i64);
        Ok(Arc::new(server))
    }

    /// Takes a slot for an execution of `owner`, or says the principal has too many running.
    pub(crate) fn run_slot(
        self: &Arc<Self>,
        owner: &str,
        sandbox: Option<&str>,
        canceller: Canceller,
    ) -> Result<RunSlot<B>, error::ApiError> {
        if self.stopping.fired().is_some() {
            return Err(error::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ));
        }
        {
            let mut counts = self.per_principal.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(owner.to_string()).or_default();
            if *n >= self.limits.max_execs_per_principal {
                return Err(error::ApiError::too_many(
                    "too_many_execs",
                    format!(
                        "{} executions of this principal are running; at most {} may",
                        *n, self.limits.max_execs_per_principal
                    ),
                ));
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Running {
                    owner: owner.to_string(),
                    sandbox: sandbox.map(str::to_string),
                    canceller,
                },
            );
        self.metrics.in_flight.inc();
        Ok(RunSlot {
            server: self.clone(),
            id,
            counted: Some(Counted {
                server: self.clone(),
                owner: owner.to_string(),
            }),
        })
    }

    /// Cancels the running executions that `pick` selects.
    fn cancel_where(&self, reason: Reason, pick: impl Fn(&str, Option<&str>) -> bool) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.values() {
            if pick(&r.owner, r.sandbox.as_deref()) {
                r.canceller.cancel(reason);
            }
        }
    }

    /// Stops taking work, cancels every running execution (each is ended inside its sandbox
    /// and its finish written), and waits for them, at most the drain timeout.
    pub async fn drain(&self) {
        self.shutdown.cancel(Reason::Shutdown);
        self.cancel_where(Reason::Shutdown, |_, _| true);
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(self.limits.drain_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("executions still running after the drain timeout");
        }
    }

    /// The server is shutting down (new work is refused).
    pub fn stopping(&self) -> &Cancel {
        &self.stopping
    }
}

/// Serves until `stop` fires, then drains: no new connection or execution is taken, running
/// executions are ended inside their sandboxes and their finish records written, open
/// connections are closed once their responses are done.
pub async fn serve<B: Backend>(
    server: Arc<Server<B>>,
    options: &ServeOptions,
    stop: Cancel,
    on_ready: impl FnOnce(&[String]),
) -> Result<(), ServeError> {
    if options.listen.is_none() && options.socket.is_none() {
        return Err(ServeError::NoListener);
    }
    let app = api::router(server.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut tcp = None;
    let mut unix = None;
    let mut addresses = Vec::new();
    if let Some(addr) = options.listen {
        if !addr.ip().is_loopback() && !options.allow_non_loopback {
            return Err(ServeError::NotLoopback { addr });
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                what: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().unwrap_or(addr);
        addresses.push(format!("http://{local}"));
        tcp = Some(listener);
    }
    if let Some(path) = &options.socket {
        unix = Some(bind_unix(path)?);
        addresses.push(format!("unix:{}", path.display()));
    }
    // Where this server listens, for `stockade doctor`; gone when it stops.
    let listening = Listening {
        pid: std::process::id(),
        addresses: addresses.clone(),
        non_loopback: options.listen.is_some_and(|a| !a.ip().is_loopback()),
    };
    let listening_file = server
        .service
        .state_dir
        .join(format!("serve.{}.json", listening.pid));
    if let Ok(text) = serde_json::to_vec(&listening) {
        if let Err(e) = crate::state::write_private_file(&listening_file, &text) {
            tracing::warn!("cannot record where the server listens: {e}");
        }
    }
    on_ready(&addresses);
    let reaper = {
        let server = server.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REAP_EVERY) => {}
                    _ = stop.wait() => return,
                }
                for id in api::reap(&server).await {
                    tracing::info!(sandbox = %id, "removed an expired or idle sandbox");
                }
                // Records held while the audit log could not be written go in as soon as
                // it can be, not only at the next execution.
                server.service.flush_held_audit();
                // A revoked or expired token ends what its principal still runs.
                if let Some(active) = server.auth.active_principals() {
                    server.cancel_where(Reason::Killed, |owner, _| !active.contains(owner));
                }
            }
        })
    };
    let header_timeout = server.limits.header_timeout;
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // At most MAX_CONNECTIONS at once: past that, new ones wait in the listen backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = stop.wait() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            conn = accept_tcp(tcp.as_ref()) => conn,
            conn = accept_unix(unix.as_ref()) => conn,
            _ = stop.wait() => break,
        };
        let Some((io, client)) = accepted else {
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            let mut request = request.map(|body| axum::body::Body::new(IdleBody::new(body)));
            request.extensions_mut().insert(client.clone());
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                app.oneshot(request).await
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
    }
    reaper.abort();
    drop(tcp);
    drop(unix);
    if let Some(path) = &options.socket {
        let _ = std::fs::remove_file(path);
    }
    server.drain().await;
    server.service.flush_held_audit();
    server.auth.close();
    let _ = std::fs::remove_file(&listening_file);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// What `serve.PID.json` in the state directory says while a server runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listening {
    pub pid: u32,
    pub addresses: Vec<String>,
    /// A TCP address other than loopback (`--allow-non-loopback`).
    pub non_loopback: bool,
}

/// Connections served at once, at most.
const MAX_CONNECTIONS: usize = 1024;
/// A request body that sends nothing for this long is cut off (a slow client cannot hold a
/// sandbox, or a connection, by trickling its upload).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body whose every frame must arrive within [`BODY_IDLE_TIMEOUT`] of the last (or
/// of the handler's first read).
struct IdleBody<B> {
    inner: B,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleBody<B> {
    fn new(inner: B) -> IdleBody<B> {
        IdleBody {
            inner,
            deadline: None,
        }
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.deadline = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_IDLE_TIMEOUT)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "the request body sent nothing for {} s",
                        BODY_IDLE_TIMEOUT.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection, boxed over its transport, and who is on the other end.
type Accepted = Option<(TokioIo<Box<dyn Io>>, Client)>;

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn accept_tcp(listener: Option<&tokio::net::TcpListener>) -> Accepted {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((TokioIo::new(Box::new(stream)), Client::Ip(peer.ip())))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

async fn accept_unix(listener: Option<&tokio::net::UnixListener>) -> Accepted {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.accept().await {
        Ok((stream, _)) => {
            let client = stream
                .peer_cred()
                .map_or(Client::Unknown, |c| Client::Uid(c.uid()));
            Some((TokioIo::new(Box::new(stream)), client))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// A Unix socket only its owner may connect to (0600, in a directory it checks).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let bind_err = |source| ServeError::Bind {
        what: path.display().to_string(),
        source,
    };
    // Only a stale socket is replaced, never another kind of file.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server answers on it",
            )));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    // The socket is created under a umask that leaves it 0600 from the start.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}
