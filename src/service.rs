//! The one core behind every face: built once (rules compiled, configuration read, the
//! backend connected), then asked to run commands. The CLI, the HTTP server and the MCP server
//! all call [`Service::exec`]; signals, prints, environment variables and exit statuses belong
//! to them, never to the service.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Backend;
use crate::check::{CheckError, Checker};
use crate::config::Config;
use crate::profile::ProfileDirs;

/// Who asked: the local user for the CLI, a token's principal for a server. Recorded in every
/// audit `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// The face that authenticated it, when that is not the local CLI (`api` for a token of
    /// `stockade serve`): recorded as `via`, so a token named like a host account is never
    /// taken for that account.
    pub via: Option<&'static str>,
}

impl Principal {
    /// A local user.
    pub fn new(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            via: None,
        }
    }

    /// A principal of the HTTP API (a token's name).
    pub fn api(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            via: Some("api"),
        }
    }
}

/// Where things are, as the face found them (its flags and environment).
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub profile_dirs: ProfileDirs,
    pub config: Config,
    /// The secrets key file, when not `secrets.key` in the state directory.
    pub secrets_key: Option<PathBuf>,
}

/// The service: compiled rules, configuration, profiles, the state directory, a backend.
pub struct Service<B: Backend> {
    pub backend: B,
    pub checker: Arc<Checker>,
    pub config: Config,
    pub profile_dirs: ProfileDirs,
    /// Profiles as loaded, reused while their files are unchanged.
    pub profiles: crate::profile::ProfileCache,
    /// The secrets a request may name, encrypted at rest.
    pub secrets: crate::secrets::Secrets,
    pub state_dir: PathBuf,
    /// Audit records that could not be written yet (`on_audit_failure = "run"`).
    pub pending: crate::audit::Pending,
}

impl<B: Backend> Service<B> {
    /// Builds the service. The rules are compiled here, once; their examples are checked by
    /// the test suite and by `stockade rules check`, not on every start.
    pub fn new(backend: B, settings: Settings) -> Result<Service<B>, CheckError> {
        Ok(Service {
            backend,
            checker: Arc::new(Checker::builtin()?),
            config: settings.config,
            profile_dirs: settings.profile_dirs,
            profiles: Default::default(),
            secrets: crate::secrets::Secrets::new(&settings.state_dir, settings.secrets_key),
            state_dir: settings.state_dir,
            pending: Default::default(),
        })
    }

    /// With rules already compiled (shared between services).
    pub fn with_checker(backend: B, settings: Settings, checker: Arc<Checker>) -> Service<B> {
        Service {
            backend,
            checker,
            config: settings.config,
            profile_dirs: settings.profile_dirs,
            profiles: Default::default(),
            secrets: crate::secrets::Secrets::new(&settings.state_dir, settings.secrets_key),
            state_dir: settings.state_dir,
            pending: Default::default(),
        }
    }

    /// Writes the audit records held from failed writes (`on_audit_failure = "run"`), when the
    /// log can be written again; quiet otherwise (they stay held).
    pub fn flush_held_audit(&self) {
        if let Ok(log) = crate::audit::AuditLog::open(&self.state_dir) {
            if let Err(e) = self.pending.flush(&log, &self.state_dir) {
                tracing::debug!("held audit records not written yet: {e}");
            }
        }
    }
}
