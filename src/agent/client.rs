//! The host side of the agent protocol: launching an agent in a container, and running one
//! command through it. Every wait is bounded and gives way to an interrupt.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use stockade_proto::cgroup::Hits;
use stockade_proto::{
    frame, mac, Exit, Hello, KillReport, Op, Request, Status, CHALLENGE_LEN, KEY_LEN, MAC_LEN,
    NONCE_LEN, PROTOCOL,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{remove_any, Channel, AGENT_IN_CONTAINER, RUN_DIR_IN_CONTAINER};
use crate::backend::{Copied, Ended, ProcessSpec, Stream, Streams};
use crate::state;

/// The whole launch (exec, proof, hand-over) is bounded.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Per connection to the launch socket: time for the proof.
const PROOF_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting to the agent and reading its hello: an agent that does not answer in this time
/// (stopped, wedged) is replaced.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Beyond the agent's own bounds (grace, kill confirmation, drain), slack before the host
/// gives up on a result.
const RESULT_SLACK: Duration = Duration::from_secs(3);
/// An agent says something at least every `frame::HEARTBEAT_EVERY`; one silent this long is
/// stopped or wedged, whatever the command's timeout.
const SILENCE: Duration = Duration::from_secs(6);
/// After the host asks for a stop, the agent acknowledges within this.
const STOP_ACK: Duration = Duration::from_secs(3);
/// The agent's kill confirmation and output drain (agent/src/procs.rs, run.rs).
const AGENT_KILL_BOUND: Duration = Duration::from_millis(2_500);
/// Largest chunk of stdin per frame.
const STDIN_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Nothing ran: start another agent, or run the command another way.
    #[error("sandbox agent unavailable: {reason}")]
    Unavailable { reason: String },
    /// The agent's answer does not verify: the result cannot be trusted.
    #[error("the sandbox agent's result failed verification ({reason}); nothing of it is trusted. The sandbox may have been tampered with: remove it with `stockade session rm`")]
    Forged { reason: String },
    /// The command was accepted, then the connection broke or went silent.
    #[error("the sandbox agent stopped answering mid-command ({reason}); the command's processes are ended from outside")]
    Broken { reason: String },
    /// The working directory is not there: nothing ran.
    #[error(
        "the working directory {workdir:?} does not exist in the sandbox (or is not a directory)"
    )]
    NoWorkdir { workdir: String },
    #[error("{what}")]
    File { what: String },
    #[error(transparent)]
    State(#[from] state::StateError),
}

fn unavailable(reason: impl Into<String>) -> AgentError {
    AgentError::Unavailable {
        reason: reason.into(),
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The kernel's CSPRNG; getrandom(2) does not fail once the pool is initialized, which it
    // is long before anything runs stockade.
    if getrandom::fill(&mut buf).is_err() {
        panic!("the kernel's random number generator is unavailable");
    }
    buf
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; frame::HEADER_LEN];
    r.read_exact(&mut header).await?;
    let (tag, len) = frame::parse_header(header).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "frame over the size limit")
    })?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((tag, payload))
}

/// Sends `fd` over the unix socket `socket` with one byte of payload.
fn send_fd(socket: RawFd, fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(b"l")];
    let fds = [fd];
    sendmsg::<()>(
        socket,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(std::io::Error::from)
}

/// Checks one connection to the launch socket: the peer must prove it holds `key`; then it
/// gets the listener. Anything else in the sandbox that connects gets nothing.
async fn hand_over(
    mut conn: UnixStream,
    key: &[u8; KEY_LEN],
    listener_fd: RawFd,
) -> Result<(), String> {
    let challenge: [u8; CHALLENGE_LEN] = random();
    let exchange = async {
        conn.write_all(&frame::encode(frame::CHALLENGE, &challenge))
            .await
            .map_err(|e| e.to_string())?;
        let (tag, proof) = read_frame(&mut conn).await.map_err(|e| e.to_string())?;
        if tag != frame::PROOF || proof.len() != MAC_LEN + 2 {
            return Err("not a proof".to_string());
        }
        let protocol = u16::from_be_bytes([proof[MAC_LEN], proof[MAC_LEN + 1]]);
        if protocol != PROTOCOL {
            return Err(format!(
                "the agent speaks protocol {protocol}, this stockade {PROTOCOL}"
            ));
        }
        if !mac::verify_launch(key, &challenge, protocol, &proof[..MAC_LEN]) {
            return Err("the proof does not verify".to_string());
        }
        conn.writable().await.map_err(|e| e.to_string())?;
        send_fd(conn.as_raw_fd(), listener_fd).map_err(|e| e.to_string())?;
        let (tag, _) = read_frame(&mut conn).await.map_err(|e| e.to_string())?;
        if tag != frame::HOLDING {
            return Err("the agent did not confirm the hand-over".to_string());
        }
        Ok(())
    };
    tokio::time::timeout(PROOF_TIMEOUT, exchange)
        .await
        .map_err(|_| "no proof in time".to_string())?
}

/// A launch in progress: the key, the listener the agent will hold, and the one-time launch
/// socket it dials. The backend starts the agent process ([`Launch::argv`], as the sandbox
/// user, with [`Launch::key_line`] on its stdin); [`Launch::complete`] does the rest.
pub struct Launch {
    key: [u8; KEY_LEN],
    tag: String,
    pending_socket: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
    launch_path: std::path::PathBuf,
    launch_listener: tokio::net::UnixListener,
}

impl Launch {
    /// Prepares a launch for `channel`, clearing whatever an earlier one left in `run/`.
    pub fn prepare(channel: &Channel) -> Result<Launch, AgentError> {
        channel.prepare()?;
        if let Ok(entries) = std::fs::read_dir(channel.run_dir()) {
            for entry in entries.flatten() {
                remove_any(&entry.path());
            }
        }
        let tag = hex::encode(random::<8>());
        let pending_socket = channel.dir().join(format!("agent.sock.{tag}"));
        // Blocking, as the agent will use it: a descriptor shares its file status flags.
        let listener = std::os::unix::net::UnixListener::bind(&pending_socket)
            .map_err(|e| unavailable(format!("{}: {e}", pending_socket.display())))?;
        let launch_path = channel.run_dir().join(format!("launch-{tag}.sock"));
        let launch_listener = tokio::net::UnixListener::bind(&launch_path)
            .map_err(|e| unavailable(format!("{}: {e}", launch_path.display())))?;
        // The sandbox user is not the owner: it needs write access to connect (unix(7)).
        std::fs::set_permissions(&launch_path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| unavailable(format!("{}: {e}", launch_path.display())))?;
        Ok(Launch {
            key: random(),
            tag,
            pending_socket,
            listener,
            launch_path,
            launch_listener,
        })
    }

    /// The agent's command line inside the sandbox.
    pub fn argv(&self) -> Vec<String> {
        let name = self
            .launch_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![
            AGENT_IN_CONTAINER.into(),
            "serve".into(),
            "--launch".into(),
            format!("{RUN_DIR_IN_CONTAINER}/{name}"),
        ]
    }

    /// What the agent reads on its stdin: the key, in hex, on one line.
    pub fn key_line(&self) -> String {
        format!("{}\n", hex::encode(self.key))
    }

    /// Waits (at most [`LAUNCH_TIMEOUT`], never past `cancel`) for the agent to prove it holds
    /// the key, hands it the listener, and puts the new key and socket in place. `exited`
    /// resolves, with what the agent said, if it ends before that.
    pub async fn complete(
        self,
        channel: &Channel,
        exited: impl std::future::Future<Output = String>,
        cancel: &crate::cancel::Cancel,
    ) -> Result<(), AgentError> {
        let result = self.hand_over_listener(channel, exited, cancel).await;
        let _ = std::fs::remove_file(&self.pending_socket);
        let _ = std::fs::remove_file(&self.launch_path);
        result
    }

    async fn hand_over_listener(
        &self,
        channel: &Channel,
        exited: impl std::future::Future<Output = String>,
        cancel: &crate::cancel::Cancel,
    ) -> Result<(), AgentError> {
        let listener_fd = self.listener.as_raw_fd();
        let key = &self.key;
        let handed_over = async {
            let mut proofs = futures_util::stream::FuturesUnordered::new();
            tokio::pin!(exited);
            let mut running = true;
            loop {
                tokio::select! {
                    accepted = self.launch_listener.accept() => {
                        if let Ok((conn, _)) = accepted {
                            proofs.push(hand_over(conn, key, listener_fd));
                        }
                    }
                    Some(result) = proofs.next(), if !proofs.is_empty() => match result {
                        Ok(()) => return Ok(()),
                        Err(e) => tracing::warn!(reason = %e, "refused a connection to the launch socket"),
                    },
                    said = &mut exited, if running => {
                        running = false;
                        if proofs.is_empty() {
                            return Err(unavailable(format!("the agent exited: {}", said.trim())));
                        }
                    }
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(LAUNCH_TIMEOUT, handed_over) => {
                r.map_err(|_| unavailable("the agent did not come up in time"))??;
            }
            reason = cancel.wait() => {
                return Err(unavailable(format!("cancelled ({reason}) while starting the agent")));
            }
        }
        // Key first: a crash between the two renames leaves the old agent behind a new key,
        // which it refuses, and the next command starts another agent.
        let key_tmp = channel.dir().join(format!("key.{}", self.tag));
        state::write_private_file(&key_tmp, hex::encode(key).as_bytes())?;
        std::fs::rename(&key_tmp, channel.key_path())
            .map_err(|e| unavailable(format!("{}: {e}", channel.key_path().display())))?;
        let socket = channel.socket_path();
        remove_any(&socket);
        std::fs::rename(&self.pending_socket, &socket)
            .map_err(|e| unavailable(format!("{}: {e}", socket.display())))?;
        Ok(())
    }
}

fn read_key(channel: &Channel) -> Result<[u8; KEY_LEN], AgentError> {
    use std::io::Read;
    let mut text = String::new();
    let mut file = state::open_private_file(&channel.key_path(), nix::fcntl::OFlag::O_RDONLY)
        .map_err(|e| unavailable(e.to_string()))?;
    file.by_ref()
        .take(2 * KEY_LEN as u64 + 2)
        .read_to_string(&mut text)
        .map_err(|e| unavailable(format!("{}: {e}", channel.key_path().display())))?;
    let bytes = hex::decode(text.trim()).map_err(|_| unavailable("the session key is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| unavailable("the session key has the wrong length"))
}

/// Connects without blocking: a listener whose queue is full is retried until the deadline.
async fn connect(path: &Path, deadline: tokio::time::Instant) -> Result<UnixStream, AgentError> {
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(unavailable(format!(
                        "{}: the agent does not accept connections",
                        path.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(unavailable(format!("{}: {e}", path.display()))),
        }
    }
}

/// A connection to the agent with its request sent.
struct Session {
    key: [u8; KEY_LEN],
    fd: RawFd,
    rd: tokio::net::unix::OwnedReadHalf,
    wr: tokio::net::unix::OwnedWriteHalf,
    /// The request as sent (the result's MAC is bound to it).
    encoded: Vec<u8>,
}

impl Session {
    /// Connects (non-blocking, with a deadline), reads the agent's hello, and sends the
    /// request for `op` with `argv`, MACed under the key with both nonces. Any failure here is
    /// `Unavailable`: nothing ran.
    async fn open(
        channel: &Channel,
        op: Op,
        process: &ProcessSpec,
        argv: Vec<String>,
        stdin: bool,
    ) -> Result<Session, AgentError> {
        let key = read_key(channel)?;
        let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
        let stream = connect(&channel.socket_path(), hello_deadline).await?;
        let fd = stream.as_raw_fd();
        let (mut rd, mut wr) = stream.into_split();
        let hello = tokio::time::timeout_at(hello_deadline, read_frame(&mut rd))
            .await
            .map_err(|_| unavailable("the agent did not answer in time"))?
            .map_err(|e| unavailable(format!("the agent closed the connection: {e}")))?;
        let hello = match hello {
            (frame::HELLO, payload) => {
                Hello::decode(&payload).map_err(|e| unavailable(format!("bad hello: {e}")))?
            }
            _ => return Err(unavailable("the agent did not say hello")),
        };
        if hello.protocol != PROTOCOL {
            return Err(unavailable(format!(
                "the agent ({}) speaks protocol {}, this stockade {PROTOCOL}",
                hello.version, hello.protocol
            )));
        }
        let request = Request {
            protocol: PROTOCOL,
            op,
            agent_nonce: hello.nonce,
            host_nonce: random::<NONCE_LEN>(),
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: process.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            workdir: process.working_dir.as_bytes().to_vec(),
            timeout_ms: process.timeout.as_millis() as u64,
            grace_ms: process.kill_grace.as_millis() as u64,
            stdin,
        };
        let encoded = request.encode();
        if encoded.len() + MAC_LEN > frame::MAX_FRAME {
            return Err(unavailable(
                "the command, arguments and environment exceed the 1 MiB request limit",
            ));
        }
        let mut payload = mac::request(&key, &encoded).to_vec();
        payload.extend_from_slice(&encoded);
        tokio::time::timeout_at(
            hello_deadline + HELLO_TIMEOUT,
            wr.write_all(&frame::encode(frame::REQUEST, &payload)),
        )
        .await
        .map_err(|_| unavailable("the agent does not read its request"))?
        .map_err(|e| unavailable(format!("cannot send the request: {e}")))?;
        Ok(Session {
            key,
            fd,
            rd,
            wr,
            encoded,
        })
    }

    /// Reads frames up to the agent's acceptance: `Unavailable` (nothing ran) before it.
    async fn accepted(&mut self) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
        loop {
            let (tag, payload) = tokio::time::timeout_at(deadline, read_frame(&mut self.rd))
                .await
                .map_err(|_| unavailable("the agent did not accept the request in time"))?
                .map_err(|e| unavailable(format!("the agent went away: {e}")))?;
            match tag {
                frame::ACCEPTED => return Ok(()),
                frame::HEARTBEAT => {}
                frame::REFUSED => {
                    return Err(unavailable(format!(
                        "the agent refused the request: {}",
                        String::from_utf8_lossy(&payload)
                    )))
                }
                other => {
                    return Err(AgentError::Forged {
                        reason: format!("frame {other:?} before the request was accepted"),
                    })
                }
            }
        }
    }

    /// Checks an exit frame's MAC and decodes it.
    fn verify(&self, exit: &[u8]) -> Result<Exit, AgentError> {
        verify_exit(&self.key, &self.encoded, exit)
    }
}

/// The errno of a failed file operation, as a message that says what to do.
fn file_error(path: &str, errno: i32, writing: bool) -> AgentError {
    let why = std::io::Error::from_raw_os_error(errno);
    let hint = match errno {
        libc::EROFS | libc::EACCES | libc::EPERM if writing => {
            ": only the profile's tmpfs mounts (such as /workspace and /tmp) are writable in the sandbox"
        }
        libc::ENOSPC => ": the tmpfs is full (its size is the profile's)",
        libc::EINVAL => ": not a regular file",
        _ => "",
    };
    AgentError::File {
        what: format!("{path}: {why}{hint}"),
    }
}

/// Writes `source` to `path` in the sandbox, byte-exact (the agent's MACed count and SHA-256
/// must match what was sent, and `size` when it is known).
pub async fn write_file(
    channel: &Channel,
    process: &ProcessSpec,
    path: &str,
    source: &mut (dyn AsyncRead + Unpin + Send),
    size: Option<u64>,
) -> Result<Copied, AgentError> {
    let mut session = Session::open(
        channel,
        Op::WriteFile,
        process,
        vec![path.to_string()],
        true,
    )
    .await?;
    session.accepted().await?;
    let Session {
        rd,
        wr,
        key,
        encoded,
        ..
    } = &mut session;
    let (mut sent, mut sha) = (0u64, Sha256::new());
    let pump = async {
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let n = source.read(&mut buf).await.map_err(|e| AgentError::File {
                what: format!("reading the source: {e}"),
            })?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            sent += n as u64;
            if wr
                .write_all(&frame::encode(frame::STDIN, &buf[..n]))
                .await
                .is_err()
            {
                // The agent stopped reading: its exit says why.
                return Ok::<_, AgentError>(false);
            }
        }
        let _ = wr.write_all(&frame::encode(frame::STDIN_EOF, b"")).await;
        Ok(true)
    };
    let exit = async {
        loop {
            let (tag, payload) = tokio::time::timeout(process.timeout, read_frame(rd))
                .await
                .map_err(|_| AgentError::Broken {
                    reason: "the file did not arrive in time".into(),
                })?
                .map_err(|e| AgentError::Broken {
                    reason: e.to_string(),
                })?;
            match tag {
                frame::EXIT => return Ok::<_, AgentError>(payload),
                frame::HEARTBEAT => {}
                other => {
                    return Err(AgentError::Forged {
                        reason: format!("unexpected frame {other:?}"),
                    })
                }
            }
        }
    };
    tokio::pin!(exit);
    let mut pumped = None;
    let payload = {
        let pump = pump;
        tokio::pin!(pump);
        loop {
            tokio::select! {
                done = &mut pump, if pumped.is_none() => pumped = Some(done?),
                payload = &mut exit => break payload?,
            }
        }
    };
    let exit = verify_exit(key, encoded, &payload)?;
    match exit.status {
        Status::Exited(0) => {}
        Status::NotStarted(e) | Status::Failed(e) => return Err(file_error(path, e, true)),
        other => {
            return Err(AgentError::File {
                what: format!("{path}: the agent reported {other:?}"),
            })
        }
    }
    let sent_sha: [u8; 32] = sha.finalize().into();
    if exit.stdin.bytes != sent || exit.stdin.sha256 != sent_sha || size.is_some_and(|n| n != sent)
    {
        return Err(AgentError::File {
            what: format!(
                "{path}: {} of {} bytes arrived intact; the copy is short or damaged",
                exit.stdin.bytes,
                size.unwrap_or(sent)
            ),
        });
    }
    Ok(Copied {
        bytes: sent,
        sha256: sent_sha,
    })
}

/// Copies `path` in the sandbox to `sink`, byte-exact (checked against the agent's MACed
/// count and SHA-256).
pub async fn read_file(
    channel: &Channel,
    process: &ProcessSpec,
    path: &str,
    sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
) -> Result<Copied, AgentError> {
    let mut session = Session::open(
        channel,
        Op::ReadFile,
        process,
        vec![path.to_string()],
        false,
    )
    .await?;
    session.accepted().await?;
    let (mut got, mut sha) = (0u64, Sha256::new());
    let payload = loop {
        let (tag, payload) = tokio::time::timeout(process.timeout, read_frame(&mut session.rd))
            .await
            .map_err(|_| AgentError::Broken {
                reason: "the file did not arrive in time".into(),
            })?
            .map_err(|e| AgentError::Broken {
                reason: e.to_string(),
            })?;
        match tag {
            frame::STDOUT => {
                sha.update(&payload);
                got += payload.len() as u64;
                if got > crate::files::MAX_COPY_BYTES {
                    return Err(AgentError::File {
                        what: format!(
                            "{path} is larger than the {} MiB a copy takes; split it inside the sandbox (split -b 512M)",
                            crate::files::MAX_COPY_BYTES >> 20
                        ),
                    });
                }
                // A reader that stops reading must not hold the session (and its lock).
                match tokio::time::timeout(process.timeout, sink.write_all(&payload)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(AgentError::File {
                            what: format!("writing the copy: {e}"),
                        })
                    }
                    Err(_) => {
                        return Err(AgentError::File {
                            what: format!(
                                "writing the copy: the destination took no data for {}s",
                                process.timeout.as_secs()
                            ),
                        })
                    }
                }
            }
            frame::EXIT => break payload,
            frame::HEARTBEAT => {}
            other => {
                return Err(AgentError::Forged {
                    reason: format!("unexpected frame {other:?}"),
                })
            }
        }
    };
    sink.flush().await.map_err(|e| AgentError::File {
        what: format!("writing the copy: {e}"),
    })?;
    let exit = session.verify(&payload)?;
    match exit.status {
        Status::Exited(0) => {}
        Status::NotStarted(e) | Status::Failed(e) => return Err(file_error(path, e, false)),
        other => {
            return Err(AgentError::File {
                what: format!("{path}: the agent reported {other:?}"),
            })
        }
    }
    let got_sha: [u8; 32] = sha.finalize().into();
    if exit.stdout.bytes != got || exit.stdout.sha256 != got_sha {
        return Err(AgentError::Forged {
            reason: "the file received is not the file the agent sent".into(),
        });
    }
    Ok(Copied {
        bytes: got,
        sha256: got_sha,
    })
}

/// What one run through the agent reports, beyond the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ended: Ended,
    /// SHA-256 of each stream as the agent sent it, verified against what arrived.
    pub stdout_sha256: [u8; 32],
    pub stderr_sha256: [u8; 32],
}

/// Why the host asked the agent to end the command.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Flood,
    Cancelled(crate::cancel::Reason),
}

/// Runs `process` through the agent of `channel`. `Unavailable` means nothing ran.
///
/// The timeout is enforced by the agent inside the sandbox. When the output passes the hard
/// limit or `cancel` fires, the host half-closes the connection, which tells the agent to end
/// the command; the agent still reports, and says whether everything ended.
pub async fn run(
    channel: &Channel,
    process: &ProcessSpec,
    stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
    streams: &mut Streams,
    cancel: &crate::cancel::Cancel,
) -> Result<Report, AgentError> {
    let Session {
        key,
        fd,
        mut rd,
        mut wr,
        encoded,
    } = Session::open(
        channel,
        Op::Run,
        process,
        process.argv.clone(),
        stdin.is_some(),
    )
    .await?;
    let started = Instant::now();
    // The agent's own bounds, plus slack: past this the agent itself is not answering.
    let stop_bound = process.kill_grace + AGENT_KILL_BOUND + RESULT_SLACK;
    let mut backstop = tokio::time::Instant::now() + process.timeout + stop_bound;
    let mut stop: Option<Stop> = None;
    let mut stop_ack_by: Option<tokio::time::Instant> = None;
    let mut silent_until = tokio::time::Instant::now() + SILENCE;
    let mut accepted = false;
    let (mut out_sha, mut err_sha) = (Sha256::new(), Sha256::new());
    let half_close = |fd: RawFd| {
        // shutdown(2) on the descriptor itself: works even while a write of stdin is pending.
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
    };

    let pump = async {
        let Some(stdin) = stdin else {
            return std::future::pending::<()>().await;
        };
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = wr.write_all(&frame::encode(frame::STDIN_EOF, b"")).await;
                    break;
                }
                Ok(n) => {
                    if wr
                        .write_all(&frame::encode(frame::STDIN, &buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Keep the write half (dropping it would half-close, which means "stop").
        std::future::pending::<()>().await;
    };
    tokio::pin!(pump);
    let interrupt = cancel.wait();
    tokio::pin!(interrupt);

    let exit = loop {
        let give_up = backstop
            .min(silent_until)
            .min(stop_ack_by.unwrap_or(backstop));
        let next = tokio::select! {
            f = read_frame(&mut rd) => f,
            _ = &mut pump => unreachable!("the stdin pump never completes"),
            reason = &mut interrupt, if stop.is_none() => {
                stop = Some(Stop::Cancelled(reason));
                half_close(fd);
                backstop = backstop.min(tokio::time::Instant::now() + stop_bound);
                stop_ack_by = Some(tokio::time::Instant::now() + STOP_ACK);
                continue;
            }
            _ = tokio::time::sleep_until(give_up) => {
                let now = tokio::time::Instant::now();
                let reason = if stop_ack_by.is_some_and(|t| now >= t) {
                    "it did not acknowledge the stop"
                } else if now >= silent_until {
                    "it went silent"
                } else {
                    "no result in time"
                };
                return Err(if accepted {
                    AgentError::Broken { reason: reason.into() }
                } else {
                    unavailable(format!("the agent did not start the command ({reason})"))
                });
            }
        };
        silent_until = tokio::time::Instant::now() + SILENCE;
        let (tag, payload) = match next {
            Ok(f) => f,
            Err(e) if !accepted => return Err(unavailable(format!("the agent went away: {e}"))),
            Err(e) => {
                return Err(AgentError::Broken {
                    reason: e.to_string(),
                })
            }
        };
        match tag {
            frame::ACCEPTED if !accepted => accepted = true,
            frame::REFUSED if !accepted => {
                return Err(unavailable(format!(
                    "the agent refused the request: {}",
                    String::from_utf8_lossy(&payload)
                )))
            }
            _ if !accepted => {
                return Err(AgentError::Forged {
                    reason: format!("frame {tag:?} before the command was accepted"),
                })
            }
            frame::STDOUT => {
                out_sha.update(&payload);
                streams.push(Stream::Stdout, &payload);
            }
            frame::STDERR => {
                err_sha.update(&payload);
                streams.push(Stream::Stderr, &payload);
            }
            frame::EXIT => break payload,
            frame::HEARTBEAT => {}
            frame::STOPPING => stop_ack_by = None,
            other => {
                return Err(AgentError::Forged {
                    reason: format!("unexpected frame {other:?}"),
                })
            }
        }
        if stop.is_none() && streams.total() > process.output_hard_limit {
            stop = Some(Stop::Flood);
            half_close(fd);
            backstop = backstop.min(tokio::time::Instant::now() + stop_bound);
            stop_ack_by = Some(tokio::time::Instant::now() + STOP_ACK);
        }
    };
    drop(rd);

    let exit = verify_exit(&key, &encoded, &exit)?;
    if let Status::NoWorkdir(_) = exit.status {
        return Err(AgentError::NoWorkdir {
            workdir: process.working_dir.clone(),
        });
    }
    // The agent itself could not start the command (out of descriptors, memory or processes):
    // nothing ran, and another agent may do better.
    if let Status::NotStarted(errno) = exit.status {
        if [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EAGAIN].contains(&errno) {
            return Err(unavailable(format!(
                "the agent could not start the command: {}",
                std::io::Error::from_raw_os_error(errno)
            )));
        }
    }
    let (out_digest, err_digest): ([u8; 32], [u8; 32]) =
        (out_sha.finalize().into(), err_sha.finalize().into());
    if exit.stdout.sha256 != out_digest
        || exit.stderr.sha256 != err_digest
        || exit.stdout.bytes != streams.stdout.total()
        || exit.stderr.bytes != streams.stderr.total()
    {
        return Err(AgentError::Forged {
            reason: "the output received is not the output the agent sent".into(),
        });
    }
    Ok(Report {
        ended: outcome_of(&exit, stop, started.elapsed()),
        stdout_sha256: out_digest,
        stderr_sha256: err_digest,
    })
}

/// The exit status as the shell reports it: the code, 128 + signal, or 127 for a program that
/// could not be started.
fn exit_code_of(status: Status) -> i64 {
    match status {
        Status::Exited(code) => i64::from(code),
        Status::Signaled(signal) => 128 + i64::from(signal),
        Status::NotStarted(_) => 127,
        Status::Failed(_) | Status::NoWorkdir(_) => 125,
    }
}

fn outcome_of(exit: &Exit, stop: Option<Stop>, elapsed: Duration) -> Ended {
    let hits: Hits = exit.before.hits(&exit.after);
    let stopped = exit.timed_out || exit.stopped;
    Ended {
        exit_code: (!stopped).then(|| exit_code_of(exit.status)),
        timed_out: exit.timed_out,
        flooded: matches!(stop, Some(Stop::Flood)) && exit.stopped,
        interrupted: match stop {
            Some(Stop::Cancelled(reason)) if exit.stopped => Some(reason),
            _ => None,
        },
        kill_incomplete: exit.kill == KillReport::Incomplete,
        duration: Duration::from_millis(exit.duration_ms).min(elapsed),
        hits: Some(hits),
        leftovers: exit.leftovers,
        ipc_removed: exit.ipc_removed,
    }
}

/// Checks an exit frame's MAC over `encoded` (the request it answers) and decodes it.
fn verify_exit(key: &[u8; KEY_LEN], encoded: &[u8], exit: &[u8]) -> Result<Exit, AgentError> {
    if exit.len() < MAC_LEN {
        return Err(AgentError::Forged {
            reason: "short exit frame".into(),
        });
    }
    let (body, tag) = exit.split_at(exit.len() - MAC_LEN);
    if !mac::verify_result(key, encoded, body, tag) {
        return Err(AgentError::Forged {
            reason: "the result's MAC does not match".into(),
        });
    }
    Exit::decode(body).map_err(|e| AgentError::Forged {
        reason: format!("bad exit: {e}"),
    })
}
