//! Files into and out of a session's sandbox (`stockade cp`): streamed through the agent as
//! the sandbox user, with the sandbox's view of the filesystem (what it may not write, a copy
//! may not write either), byte-exact under the agent's MAC, and audited like a command: a
//! `start` before anything moves, a `finish` with the size and SHA-256 both ends agreed on.
//!
//! A file's contents are not judged by the check stage (it judges commands); whatever runs it
//! later is.

use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::agent::{self, Channel};
use crate::audit::{AuditLog, Direction, Finish, Outcome, RecordBody, Start, Transfer};
use crate::backend::{Backend, Copied};
use crate::cancel::Cancel;
use crate::check::Decision;
use crate::exec::{new_exec_id, ExecError, ExecOptions};
use crate::plan::{self, CommandLine, ExecRequest};
use crate::service::{Principal, Service};

/// Largest file a copy out takes (a sparse file in the sandbox's tmpfs can claim any size).
pub const MAX_COPY_BYTES: u64 = 1 << 30;

/// Longest path a copy takes (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// A copy to make.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub session: String,
    /// The path in the sandbox: absolute.
    pub path: String,
    pub direction: Direction,
}

/// What a copy did.
#[derive(Debug, Clone, Serialize)]
pub struct CopyResult {
    pub session: String,
    pub path: String,
    pub direction: Direction,
    pub bytes: u64,
    pub sha256: String,
    pub audit_id: String,
    /// What happened besides the copy (the session's sandbox was brought back).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error("{path:?}: a path in the sandbox must be absolute, without NUL bytes, at most {MAX_PATH_BYTES} bytes")]
    Path { path: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

fn check_path(path: &str) -> Result<(), CopyError> {
    if path.starts_with('/') && !path.contains('\0') && path.len() <= MAX_PATH_BYTES {
        Ok(())
    } else {
        Err(CopyError::Path {
            path: path.to_string(),
        })
    }
}

/// Which way the bytes go, with the host end.
pub enum Host<'a> {
    /// Into the sandbox from this reader (`size` bytes when known; checked).
    Source {
        reader: &'a mut (dyn AsyncRead + Unpin + Send),
        size: Option<u64>,
    },
    /// Out of the sandbox into this writer.
    Sink(&'a mut (dyn AsyncWrite + Unpin + Send)),
}

impl<B: Backend> Service<B> {
    /// Copies a file into or out of session `request.session`'s sandbox (created under the
    /// profile `options` selects if it does not exist yet, as `exec` does).
    pub async fn copy(
        &self,
        principal: &Principal,
        request: &CopyRequest,
        options: &ExecOptions,
        host: Host<'_>,
        cancel: &Cancel,
    ) -> Result<CopyResult, CopyError> {
        check_path(&request.path)?;
        plan::validate_session_id(&request.session).map_err(ExecError::from)?;
        let profile = self.select_profile(options)?;
        if profile.elevated && !self.config.allow_elevation {
            return Err(ExecError::ElevationRefused.into());
        }
        let id = new_exec_id();
        let channel = Channel::session(&self.state_dir, &request.session);
        let mounts = if self.backend.uses_agent() {
            Some(channel.mounts(agent::install(&self.state_dir).map_err(ExecError::from)?))
        } else {
            None
        };
        let exec_request = ExecRequest {
            command: CommandLine::Argv(vec!["cp".to_string()]),
            session: Some(request.session.clone()),
            ..Default::default()
        };
        let state_id = plan::state_id(&self.state_dir);
        let plan = plan::plan(&profile, &exec_request, &id, &state_id, mounts.as_ref())
            .map_err(ExecError::from)?;

        let audit = AuditLog::open(&self.state_dir).map_err(ExecError::from)?;
        let direction = request.direction;
        audit
            .append(RecordBody::Start(Start {
                id: id.clone(),
                session: Some(request.session.clone()),
                user: principal.name.clone(),
                via: principal.via.map(str::to_string),
                workdir: None,
                env: Vec::new(),
                stdin_sha256: None,
                command: format!(
                    "cp {} {}",
                    direction.as_str(),
                    shell_words::quote(&request.path)
                ),
                decision: Decision::Allow,
                rules: Vec::new(),
                profile: profile.name.clone(),
                backend: self.backend.kind(),
                elevated: profile.elevated,
                check_bypassed: false,
                unsafe_opt_outs: profile.unsafe_opt_outs.clone(),
                secrets: Vec::new(),
                transfer: Some(Transfer {
                    direction,
                    path: request.path.clone(),
                }),
            }))
            .map_err(ExecError::from)?;
        let started = Instant::now();
        if mounts.is_some() {
            channel.prepare().map_err(ExecError::from)?;
        }
        let mut notes = Vec::new();
        let mut sandbox_name = None;
        let copied = async {
            let (_lock, sandbox) = self.hold_session(&plan, &request.session, cancel).await?;
            sandbox_name = Some(sandbox.name.clone());
            if let Some(recovered) = sandbox.recovered {
                notes.push(recovered.note().to_string());
            }
            let moved = match host {
                Host::Source { reader, size } => {
                    self.backend
                        .copy_in(&sandbox, &plan.process, &request.path, reader, size)
                        .await
                }
                Host::Sink(writer) => {
                    self.backend
                        .copy_out(&sandbox, &plan.process, &request.path, writer)
                        .await
                }
            };
            Ok::<Copied, ExecError>(moved?)
        };
        let copied = tokio::select! {
            copied = copied => copied,
            reason = cancel.wait() => Err(ExecError::Interrupted { reason, started: true }),
        };

        let mut finish = Finish::new(&id, Some(request.session.clone()));
        finish.sandbox = sandbox_name;
        finish.duration_ms = started.elapsed().as_millis() as u64;
        finish.sandbox_reset = !notes.is_empty();
        match &copied {
            Ok(c) => {
                finish.outcome = Outcome::Completed;
                finish.exit_code = Some(0);
                finish.file_bytes = Some(c.bytes);
                finish.file_sha256 = Some(hex::encode(c.sha256));
            }
            Err(e) => {
                finish.outcome = match e {
                    ExecError::Interrupted { .. } => Outcome::Interrupted,
                    _ => Outcome::Error,
                };
                finish.error = Some(e.to_string());
            }
        }
        let recorded = audit.append(RecordBody::Finish(finish));
        let copied = copied?;
        recorded.map_err(ExecError::from)?;
        Ok(CopyResult {
            session: request.session.clone(),
            path: request.path.clone(),
            direction,
            bytes: copied.bytes,
            sha256: hex::encode(copied.sha256),
            audit_id: id,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_bounded() {
        assert!(check_path("/workspace/a b").is_ok());
        for bad in ["workspace/x", "", "/a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_err());
    }
}
