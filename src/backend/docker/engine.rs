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

/// What the engine says of itself that bears on isolation (from `/info`), for `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineFacts {
    pub host: String,
    pub server_version: Option<String>,
    /// `name=seccomp,profile=default`, `name=apparmor`, `name=userns`, `name=rootless`...
    pub security_options: Vec<String>,
    pub default_runtime: Option<String>,
    pub runtimes: Vec<String>,
    /// `1` or `2`.
    pub cgroup_version: Option<String>,
    pub kernel_version: Option<String>,
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
        let no_answer = || {
            unreachable(format!(
                "no answer within {}s; the engine may be wedged or restarting",
                call_timeout.as_secs()
            ))
        };
        // bollard counts whole seconds; never let a sub-second setting become "no timeout".
        let seconds = call_timeout.max(Duration::from_secs(1)).as_secs();
        let docker = match host.strip_prefix("unix://") {
            // `/_ping` names the API version in a header, in well under a millisecond;
            // `/version` (bollard's negotiation) takes ~10 ms on every call.
            Some(path) => {
                let server = tokio::time::timeout(call_timeout, ping_api_version(path))
                    .await
                    .map_err(|_| no_answer())?
                    .map_err(unreachable)?;
                let ours = bollard::API_DEFAULT_VERSION;
                let version = if server < (ours.major_version, ours.minor_version) {
                    bollard::ClientVersion {
                        major_version: server.0,
                        minor_version: server.1,
                    }
                } else {
                    *ours
                };
                Docker::connect_with_unix(&host, seconds, &version)
                    .map_err(|e| unreachable(e.to_string()))?
            }
            None => {
                let docker = Docker::connect_with_host(&host)
                    .map_err(|e| unreachable(e.to_string()))?
                    .with_timeout(Duration::from_secs(seconds));
                match tokio::time::timeout(call_timeout, docker.negotiate_version()).await {
                    Ok(Ok(d)) => d,
                    // bollard's own per-request timeout (the same bound) may fire first.
                    Ok(Err(bollard::errors::Error::RequestTimeoutError)) | Err(_) => {
                        return Err(no_answer())
                    }
                    Ok(Err(e)) => return Err(unreachable(e.to_string())),
                }
            }
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

    /// The engine's own account of its isolation settings.
    pub async fn facts(&self) -> Result<EngineFacts, EngineError> {
        let info = self.call("info", self.docker.info()).await?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        Ok(EngineFacts {
            host: self.host.clone(),
            server_version: info.server_version,
            security_options: info.security_options.unwrap_or_default(),
            default_runtime: info.default_runtime,
            runtimes,
            cgroup_version: info.cgroup_version.map(|v| v.to_string()),
            kernel_version: info.kernel_version,
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

/// Largest `/_ping` answer read: its headers are a few hundred bytes.
const MAX_PING_BYTES: usize = 8 * 1024;

/// The API version the engine on the Unix socket `path` speaks, from the `Api-Version` header
/// of its `/_ping` answer (a request the Engine API documents for exactly this).
async fn ping_api_version(path: &str) -> Result<(usize, usize), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while answer.len() < MAX_PING_BYTES {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    parse_api_version(&String::from_utf8_lossy(&answer))
        .ok_or_else(|| "the engine's /_ping answer names no API version".to_string())
}

/// `Api-Version: 1.41` among an HTTP answer's headers.
fn parse_api_version(answer: &str) -> Option<(usize, usize)> {
    let headers = answer.split("\r\n\r\n").next()?;
    let value = headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("api-version")
            .then(|| value.trim())
    })?;
    let (major, minor) = value.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_comes_from_the_ping_headers() {
        let answer = "HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\n\r\nOK";
        assert_eq!(parse_api_version(answer), Some((1, 41)));
        assert_eq!(
            parse_api_version("HTTP/1.0 200 OK\r\napi-version:1.53\r\n\r\n"),
            Some((1, 53))
        );
        for bad in [
            "",
            "HTTP/1.0 200 OK\r\n\r\nApi-Version: 1.41",
            "HTTP/1.0 200 OK\r\nApi-Version: one\r\n\r\n",
        ] {
            assert_eq!(parse_api_version(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_ping_answer_is_parsed_without_panic(answer in ".{0,300}", major in 0usize..100, minor in 0usize..1000) {
            let _ = parse_api_version(&answer);
            let built = format!("HTTP/1.1 200 OK\r\nX: y\r\nApi-Version: {major}.{minor}\r\n\r\n{answer}");
            proptest::prop_assert_eq!(parse_api_version(&built), Some((major, minor)));
        }
    }
}
