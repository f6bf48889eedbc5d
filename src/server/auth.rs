//! Authentication of every request: the failed-auth limiter first (a locked-out client is
//! refused whatever it presents), then the bearer token against the token file (re-read when it
//! changes, so a revocation, a rotation or an expiry counts from the next request), then the
//! auth audit log.
//!
//! The auth log gets every success, failure, lockout and token event. Failures are bounded: at
//! most [`FAILURE_RECORDS_PER_MINUTE`] are written per minute (the rest are counted into the
//! next one written and into the metrics), so that a flood of bad tokens from cycling addresses
//! cannot fill the disk one fsync at a time; requests refused during a lockout are counted, not
//! written (the lockout itself is).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use super::limiter::{Client, Gate, Limiter};
use super::tokens::{self, Refusal, Scope, Stamp, TokenFile, Tokens};
use super::{ServeError, Server};
use crate::audit::{AuditLog, AuthEvent, AuthKind, RecordBody, AUTH_LOG_FILE};
use crate::backend::Backend;
use crate::service::Principal;

pub const FAILURE_RECORDS_PER_MINUTE: u32 = 60;

/// Who a request is, once authenticated.
#[derive(Debug, Clone)]
pub struct Authed {
    pub principal: Principal,
    pub scope: Scope,
    pub client: Client,
}

impl Authed {
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }

    /// Whether this principal may act on something `owner` owns.
    pub fn may_touch(&self, owner: &str) -> bool {
        self.is_admin() || self.principal.name == owner
    }
}

struct Budget {
    minute: Instant,
    written: u32,
    suppressed: u64,
}

pub struct Auth {
    tokens: Tokens,
    cache: Mutex<Option<(Option<Stamp>, Arc<TokenFile>)>>,
    limiter: Mutex<Limiter>,
    log: LogWriter,
    budget: Mutex<Budget>,
}

/// Auth events queued for the auth log: a request does not wait for their fsyncs (a success
/// is answered while its record is written), and records queued together are written in one
/// append. The queue is bounded: when it is full, requests wait for the writer.
struct LogWriter {
    log: Arc<AuditLog>,
    queue: Mutex<Option<std::sync::mpsc::SyncSender<AuthEvent>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// Events waiting for the auth log at most.
const LOG_QUEUE: usize = 4096;
/// Events written in one append at most.
const LOG_BATCH: usize = 256;

impl LogWriter {
    fn start(log: Arc<AuditLog>) -> std::io::Result<LogWriter> {
        let (queue, events) = std::sync::mpsc::sync_channel::<AuthEvent>(LOG_QUEUE);
        let writer_log = log.clone();
        let writer = std::thread::Builder::new()
            .name("auth-log".into())
            .spawn(move || {
                while let Ok(first) = events.recv() {
                    let mut batch = vec![RecordBody::Auth(first)];
                    while batch.len() < LOG_BATCH {
                        match events.try_recv() {
                            Ok(e) => batch.push(RecordBody::Auth(e)),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = writer_log.append_all(batch) {
                        tracing::error!(error = %e, "cannot write the auth audit log");
                    }
                }
            })?;
        Ok(LogWriter {
            log,
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn record(&self, event: AuthEvent) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let event = match queue {
            Some(queue) => match queue.send(event) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(event)) => event,
            },
            None => event,
        };
        // The writer is gone (closing): written here, in the caller's time.
        if let Err(e) = self.log.append(RecordBody::Auth(event)) {
            tracing::error!(error = %e, "cannot write the auth audit log");
        }
    }

    /// Writes everything queued, then stops the writer.
    fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

impl Auth {
    pub fn new(state_dir: &std::path::Path) -> Result<Auth, ServeError> {
        let tokens = Tokens::new(state_dir);
        tokens.load()?;
        Ok(Auth {
            tokens,
            cache: Mutex::new(None),
            limiter: Mutex::new(Limiter::default()),
            log: LogWriter::start(Arc::new(AuditLog::open_named(state_dir, AUTH_LOG_FILE)?))
                .map_err(ServeError::Thread)?,
            budget: Mutex::new(Budget {
                minute: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        })
    }

    pub fn has_tokens(&self) -> Result<bool, ServeError> {
        Ok(!self.current()?.tokens.is_empty())
    }

    /// The token file as it is now: re-read when its stamp changed.
    fn current(&self) -> Result<Arc<TokenFile>, tokens::TokenError> {
        let stamp = self.tokens.stamp();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, file)) = cache.as_ref() {
            if *seen == stamp {
                return Ok(file.clone());
            }
        }
        let file = Arc::new(self.tokens.load()?);
        *cache = Some((stamp, file.clone()));
        Ok(file)
    }

    fn record(&self, event: AuthEvent) {
        self.log.record(event);
    }

    /// The principals with a token that works now (`None` when the token file cannot be read:
    /// nothing is concluded from that).
    pub fn active_principals(&self) -> Option<std::collections::HashSet<String>> {
        let file = self.current().ok()?;
        let now = tokens::now_secs();
        Some(
            file.tokens
                .iter()
                .filter(|t| t.active(now))
                .map(|t| t.name.clone())
                .collect(),
        )
    }

    /// Writes every auth event still queued (at shutdown, before exiting).
    pub fn close(&self) {
        self.log.close();
    }

    fn record_failure(&self, mut event: AuthEvent) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if budget.minute.elapsed().as_secs() >= 60 {
            budget.minute = Instant::now();
            budget.written = 0;
        }
        if budget.written >= FAILURE_RECORDS_PER_MINUTE {
            budget.suppressed += 1;
            return;
        }
        budget.written += 1;
        if budget.suppressed > 0 {
            event.reason = Some(format!(
                "{} (and {} failures before it not recorded)",
                event.reason.unwrap_or_default(),
                budget.suppressed
            ));
            budget.suppressed = 0;
        }
        drop(budget);
        self.record(event);
    }

    /// A token event from outside a request (the CLI's `token` and `grants` commands go
    /// through [`record_cli_event`]).
    pub fn record_event(&self, event: AuthKind, principal: &str, client: &Client) {
        self.record(AuthEvent {
            event,
            principal: Some(principal.to_string()),
            client: client.to_string(),
            reason: None,
            request: None,
        });
    }

    /// Authenticates a request of `client` presenting `authorization`.
    pub fn check(
        &self,
        client: &Client,
        authorization: Option<&str>,
        request: String,
        metrics: &super::metrics::Metrics,
    ) -> Result<Authed, ApiError> {
        let now = Instant::now();
        let locked = |seconds: u64| ApiError {
            retry_after: Some(seconds),
            ..ApiError::too_many(
                "locked_out",
                format!(
                    "too many failed authentications from this client: try again in {seconds} s"
                ),
            )
        };
        if let Gate::Locked(left) = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gate(client, now)
        {
            metrics.rate_limited.inc();
            return Err(locked(left.as_secs().max(1)));
        }
        let presented = authorization
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .map(str::trim)
            .unwrap_or_default();
        let file = self
            .current()
            .map_err(|e| ApiError::internal(format!("the token file cannot be read: {e}")))?;
        match tokens::authenticate(&file, presented, tokens::now_secs()) {
            Ok(token) => {
                self.limiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .succeeded(client);
                let authed = Authed {
                    principal: Principal::api(token.name.clone()),
                    scope: token.scope,
                    client: client.clone(),
                };
                self.record(AuthEvent {
                    event: AuthKind::Success,
                    principal: Some(token.name.clone()),
                    client: client.to_string(),
                    reason: None,
                    request: Some(request),
                });
                Ok(authed)
            }
            Err(refusal) => {
                metrics.auth_failures.inc();
                let gate = self
                    .limiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failed(client, now);
                let principal = match refusal {
                    Refusal::Revoked | Refusal::Expired => {
                        tokens::authenticate_name(&file, presented)
                    }
                    _ => None,
                };
                let reason = serde_json::to_value(refusal)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                let event = AuthEvent {
                    event: if refusal == Refusal::Expired {
                        AuthKind::TokenExpired
                    } else {
                        AuthKind::Failure
                    },
                    principal: principal.clone(),
                    client: client.to_string(),
                    reason,
                    request: Some(request.clone()),
                };
                self.record_failure(event);
                if let Gate::Locked(left) = gate {
                    self.record(AuthEvent {
                        event: AuthKind::Lockout,
                        principal,
                        client: client.to_string(),
                        reason: Some("locked_out".to_string()),
                        request: Some(request),
                    });
                    // This failure is still answered as one; the next request gets the 429.
                    let _ = left;
                }
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    refusal.message(),
                ))
            }
        }
    }
}

/// Writes a token event of the CLI (`stockade token ...`, `stockade grants revoke`) to the auth
/// log of `state_dir`.
pub fn record_cli_event(
    state_dir: &std::path::Path,
    event: AuthKind,
    principal: &str,
) -> Result<(), crate::audit::AuditError> {
    AuditLog::open_named(state_dir, AUTH_LOG_FILE)?
        .append(RecordBody::Auth(AuthEvent {
            event,
            principal: Some(principal.to_string()),
            client: "cli".to_string(),
            reason: None,
            request: None,
        }))
        .map(drop)
}

impl<B: Backend> FromRequestParts<Arc<Server<B>>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        server: &Arc<Server<B>>,
    ) -> Result<Self, Self::Rejection> {
        let client = parts
            .extensions
            .get::<Client>()
            .cloned()
            .unwrap_or(Client::Unknown);
        let authorization = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let request = format!("{} {}", parts.method, parts.uri.path());
        server
            .auth
            .check(&client, authorization, request, &server.metrics)
    }
}
