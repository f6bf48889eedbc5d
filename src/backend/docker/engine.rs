//! The connection to the Docker engine: local socket or `DOCKER_HOST`, negotiated API version,
//! every call bounded by a timeout.

use std::future::Future;
use std::time::Duration;

use bollard::Docker;

/// Default bound on one engine call (not on a command's run time).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The oldest engine API stockade speaks (Docker 20.10).
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {host}: {reason}. Start the engine (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at it")]
    Unreachable { host: String, reason: String },
    #[error("the Docker engine at {host} speaks API {version}; stockade needs 1.41 or newer (Docker 20.10+)")]
    TooOld { host: String, version: String },
    #[error("engine call `{call}` did not answer within {}s; the engine may be wedged or restarting", timeout.as_secs())]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    #[error("engine call `{call}` failed: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

/// A connected engine client with its per-call timeout.
#[derive(Debug, Clone)]
pub struct Engine {
    pub docker: Docker,
    pub call_timeout: Duration,
    pub host: String,
}

/// The engine's address when none is given (`DOCKER_HOST` unset).
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Whether `host` is an engine on this machine (a Unix socket), whose containers can bind
/// files from this machine's state directory.
pub fn is_local(host: &str) -> bool {
    host.starts_with("unix://")
}

impl Engine {
    /// Connects to `host` (`unix:///path`, `tcp://host:port` or `http://host:port`) and
    /// negotiates the API version.
    pub async fn connect(host: &str, call_timeout: Duration) -> Result<Engine, EngineError> {
        let host = host.to_string();
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.clone(),
            reason,
        };
        let docker = Docker::connect_with_host(&host)
            .map_err(|e| unreachable(e.to_string()))?
            // bollard counts whole seconds; never let a sub-second setting become "no timeout".
            .with_timeout(call_timeout.max(Duration::from_secs(1)));
        let no_answer = || {
            unreachable(format!(
                "no answer within {}s; the engine may be wedged or restarting",
                call_timeout.as_secs()
            ))
        };
        let docker = match tokio::time::timeout(call_timeout, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            // bollard's own per-request timeout (the same bound) may fire first.
            Ok(Err(bollard::errors::Error::RequestTimeoutError)) | Err(_) => {
                return Err(no_answer())
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
        };
        let version = docker.client_version();
        let (major, minor) = (version.major_version, version.minor_version);
        if (major, minor) < MIN_API_VERSION {
            return Err(EngineError::TooOld {
                host,
                version: format!("{major}.{minor}"),
            });
        }
        Ok(Engine {
            docker,
            call_timeout,
            host,
        })
    }

    /// Runs one engine call under the call timeout.
    pub async fn call<T, F>(&self, call: &'static str, fut: F) -> Result<T, EngineError>
    where
        F: Future<Output = Result<T, bollard::errors::Error>>,
    {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(EngineError::Call { call, source }),
            Err(_) => Err(EngineError::Timeout {
                call,
                timeout: self.call_timeout,
            }),
        }
    }
}

/// The HTTP status of an engine error, if it was one.
pub fn status_of(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::Call {
            source: bollard::errors::Error::DockerResponseServerError { status_code, .. },
            ..
        } => Some(*status_code),
        _ => None,
    }
}
