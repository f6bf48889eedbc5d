//! The host side: start the agent in a session container, and run commands through it.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    mac_eq, result_mac, Exit, Request, AGENT_BIN_IN_CONTAINER, AGENT_DIR_IN_CONTAINER, MAX_FRAME,
    READY, SOCKET_NAME, TAG_ACCEPTED, TAG_EXIT, TAG_STDERR, TAG_STDOUT,
};
use crate::backend::{Capture, Container, Outcome};
use crate::engine::Engine;
use crate::plan::ProcessSpec;
use crate::state;

/// How long the agent may take to come up.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack on top of timeout + grace before the host gives up on the agent itself.
const BACKSTOP_SLACK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No agent answers: start one, or use `docker exec`.
    #[error("session agent unavailable: {reason}")]
    Unavailable { reason: String },
    /// The agent answered something that does not verify: the session is not trustworthy.
    #[error("session agent result failed verification ({reason}); the session may have been tampered with: remove it with `stockade session rm`")]
    Forged { reason: String },
    #[error("session agent connection broke mid-command: {reason}")]
    Broken { reason: String },
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// Host-side files of one session's agent.
#[derive(Debug, Clone)]
pub struct AgentPaths {
    /// Bind-mounted into the container at [`AGENT_DIR_IN_CONTAINER`].
    pub dir: PathBuf,
    /// The session secret, host-only (0600, outside `dir`).
    pub key: PathBuf,
}

impl AgentPaths {
    pub fn new(state_dir: &Path, session: &str) -> AgentPaths {
        let sessions = state_dir.join("sessions");
        AgentPaths {
            dir: sessions.join(format!("{session}.agent")),
            key: sessions.join(format!("{session}.key")),
        }
    }

    /// Creates the socket directory, owned by the sandbox user so the agent can bind in it.
    /// Its parent (the state directory) is 0700, so no other host user can reach it.
    pub fn prepare(&self, uid: u32, gid: u32) -> Result<(), AgentError> {
        if let Some(parent) = self.dir.parent() {
            state::ensure_private_dir(parent)?;
        }
        let unavailable = |e: std::io::Error| AgentError::Unavailable {
            reason: format!("{}: {e}", self.dir.display()),
        };
        match std::fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(unavailable(std::io::Error::other("not a directory"))),
            Err(_) => {
                std::fs::create_dir(&self.dir).map_err(unavailable)?;
            }
        }
        std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid)).map_err(unavailable)?;
        std::fs::set_permissions(
            &self.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(unavailable)?;
        Ok(())
    }
}

/// Whether sessions of this profile image can use the agent: the image must be the base image
/// (its libraries come from this host, so this binary runs in it), the engine must be local
/// (bind mounts name this machine's paths), and stockade must be able to give the sandbox user
/// the socket directory.
pub fn supported(image: &str, sandbox_uid: u32) -> bool {
    let local =
        std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"));
    let euid = nix::unistd::geteuid();
    image == crate::image::base_image_ref()
        && local
        && (euid.is_root() || euid.as_raw() == sandbox_uid)
        && std::env::var_os("STOCKADE_NO_AGENT").is_none()
}

/// The binds that put the agent into a session container.
pub fn binds(paths: &AgentPaths) -> Option<Vec<String>> {
    let exe = std::env::current_exe().ok()?;
    Some(vec![
        format!("{}:{AGENT_DIR_IN_CONTAINER}:rw", paths.dir.display()),
        format!("{}:{AGENT_BIN_IN_CONTAINER}:ro", exe.display()),
    ])
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The kernel's CSPRNG; a short read from /dev/urandom does not happen for small sizes.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        for chunk in buf.chunks_mut(16) {
            let n = chunk.len();
            chunk.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..n]);
        }
    }
    hex::encode(buf)
}

/// Starts a new agent in `container` with a fresh secret, replacing any previous one.
pub async fn launch(
    engine: &Engine,
    container: &Container,
    user: &str,
    paths: &AgentPaths,
) -> Result<(), AgentError> {
    let unavailable = |reason: String| AgentError::Unavailable { reason };
    let secret = random_hex(32);
    state::write_private_file(&paths.key, secret.as_bytes())?;
    let docker = &engine.docker;
    let exec = engine
        .call(
            "create exec (agent)",
            docker.create_exec(
                &container.id,
                CreateExecOptions::<String> {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec![
                        AGENT_BIN_IN_CONTAINER.into(),
                        "__agent".into(),
                        "--dir".into(),
                        AGENT_DIR_IN_CONTAINER.into(),
                    ]),
                    user: Some(user.to_string()),
                    working_dir: Some("/".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let start = engine
        .call(
            "start exec (agent)",
            docker.start_exec(&exec.id, Some(StartExecOptions::default())),
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = start
    else {
        return Err(unavailable("exec started detached".into()));
    };
    input
        .write_all(format!("{secret}\n").as_bytes())
        .await
        .map_err(|e| unavailable(format!("cannot hand over the secret: {e}")))?;
    input.flush().await.ok();
    let ready = async {
        let mut seen = String::new();
        while let Some(Ok(chunk)) = output.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if seen.contains(READY) {
                return Ok(());
            }
        }
        Err(seen)
    };
    match tokio::time::timeout(LAUNCH_TIMEOUT, ready).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(said)) => Err(unavailable(format!("agent exited: {}", said.trim()))),
        Err(_) => Err(unavailable("agent did not come up in time".into())),
    }
}

/// Connects to the agent's socket without following a link the sandbox may have planted:
/// the entry is opened with `O_PATH | O_NOFOLLOW`, must be a socket, and is connected through
/// the descriptor.
fn connect(paths: &AgentPaths) -> Result<std::os::unix::net::UnixStream, AgentError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let unavailable = |reason: String| AgentError::Unavailable { reason };
    let path = paths.dir.join(SOCKET_NAME);
    let fd = open(
        &path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| unavailable(e.to_string()))?;
    if !meta.file_type().is_socket() {
        return Err(AgentError::Forged {
            reason: format!("{} is not a socket", path.display()),
        });
    }
    let via = format!("/proc/self/fd/{}", file.as_raw_fd());
    std::os::unix::net::UnixStream::connect(via)
        .map_err(|e| unavailable(format!("{}: {e}", path.display())))
}

/// Runs `process` through the agent. `Unavailable` means nothing ran.
pub async fn run(
    paths: &AgentPaths,
    process: &ProcessSpec,
    stdout: &mut Capture,
    stderr: &mut Capture,
) -> Result<Outcome, AgentError> {
    let secret = std::fs::read_to_string(&paths.key).map_err(|e| AgentError::Unavailable {
        reason: format!("{}: {e}", paths.key.display()),
    })?;
    let secret = hex::decode(secret.trim()).map_err(|_| AgentError::Unavailable {
        reason: "session key unreadable".into(),
    })?;
    let stream = connect(paths)?;
    stream
        .set_nonblocking(true)
        .map_err(|e| AgentError::Unavailable {
            reason: e.to_string(),
        })?;
    let mut stream =
        tokio::net::UnixStream::from_std(stream).map_err(|e| AgentError::Unavailable {
            reason: e.to_string(),
        })?;

    let request = Request {
        nonce: random_hex(16),
        cmd: process.cmd.clone(),
        env: process.env.clone(),
        workdir: process.working_dir.clone(),
        timeout_ms: process.timeout.as_millis() as u64,
        grace_ms: process.kill_grace.as_millis() as u64,
    };
    let mut line = serde_json::to_vec(&request).map_err(|e| AgentError::Unavailable {
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    let started = Instant::now();
    if let Err(e) = stream.write_all(&line).await {
        return Err(AgentError::Unavailable {
            reason: e.to_string(),
        });
    }

    let broken = |reason: String| AgentError::Broken { reason };
    let (mut out_sha, mut err_sha) = (Sha256::new(), Sha256::new());
    let mut accepted = false;
    let backstop = process.timeout + process.kill_grace + BACKSTOP_SLACK;
    let exit = tokio::time::timeout(backstop, async {
        loop {
            let mut header = [0u8; 5];
            match stream.read_exact(&mut header).await {
                Ok(_) => {}
                // Not accepted: the agent never started the command, so it may be retried.
                Err(e) if !accepted => {
                    return Err(AgentError::Unavailable {
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(broken(e.to_string())),
            }
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if len > MAX_FRAME {
                return Err(AgentError::Forged {
                    reason: format!("frame of {len} bytes"),
                });
            }
            let mut payload = vec![0u8; len];
            stream
                .read_exact(&mut payload)
                .await
                .map_err(|e| broken(e.to_string()))?;
            match header[0] {
                TAG_ACCEPTED => accepted = true,
                _ if !accepted => {
                    return Err(AgentError::Forged {
                        reason: "output before acceptance".into(),
                    })
                }
                TAG_STDOUT => {
                    out_sha.update(&payload);
                    stdout.push(&payload);
                }
                TAG_STDERR => {
                    err_sha.update(&payload);
                    stderr.push(&payload);
                }
                TAG_EXIT => {
                    return serde_json::from_slice::<Exit>(&payload).map_err(|e| {
                        AgentError::Forged {
                            reason: format!("bad exit frame: {e}"),
                        }
                    })
                }
                tag => {
                    return Err(AgentError::Forged {
                        reason: format!("unknown frame tag {tag}"),
                    })
                }
            }
        }
    })
    .await
    .map_err(|_| broken("no result within timeout + grace".into()))??;

    let expected = result_mac(
        &secret,
        &request.nonce,
        exit.exit_code,
        exit.timed_out,
        &out_sha.finalize(),
        &err_sha.finalize(),
    );
    if !mac_eq(&expected, &exit.mac) {
        return Err(AgentError::Forged {
            reason: "the result's MAC does not match".into(),
        });
    }
    Ok(Outcome {
        exit_code: exit.exit_code,
        timed_out: exit.timed_out,
        duration: started.elapsed(),
    })
}
