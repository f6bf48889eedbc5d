//! The sandbox's init from the host: started with its set-up, and asked over its control
//! socket to start the agent, to end every process, or whether it is there.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use stockade_proto::frame;
use stockade_proto::setup::{Control, Reply, CONTROL, INIT_ERROR, INIT_PID, INIT_READY, REPLY};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::cgroup::SandboxCgroup;
use super::NativeError;

/// Building a sandbox takes milliseconds; this bounds a wedged one.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// What the init may say before it is ready (its error); more is not read.
const MAX_SAYS: usize = 4096;
/// The init's own bound after a kill's grace (agent/src/init/control.rs KILL_CONFIRM), plus
/// slack.
const KILL_SLACK: Duration = Duration::from_secs(4);

fn init_error(what: impl Into<String>) -> NativeError {
    NativeError::Init { what: what.into() }
}

/// Starts `stockade-agent init` (`binary`, on the host) in `cgroup`, hands it the encoded
/// set-up, and waits until the sandbox is built. Returns the init's host pid.
pub async fn start(
    binary: &Path,
    setup: &[u8],
    cgroup: &SandboxCgroup,
) -> Result<i32, NativeError> {
    let mut child = tokio::process::Command::new(binary)
        // What the sandbox's /proc/1/cmdline says: not the host's state directory.
        .arg0(crate::agent::AGENT_IN_CONTAINER)
        .arg("init")
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| init_error(format!("cannot run {} init: {e}", binary.display())))?;
    // Into the cgroup before it reads its set-up: everything it makes is born inside.
    if let Some(pid) = child.id() {
        cgroup.add(pid)?;
    }
    let mut stdin = child.stdin.take().ok_or_else(|| init_error("no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| init_error("no stdout"))?;
    let talk = async {
        stdin
            .write_all(setup)
            .await
            .map_err(|e| init_error(format!("cannot hand the init its set-up: {e}")))?;
        drop(stdin);
        let mut lines = tokio::io::BufReader::new(stdout.take(MAX_SAYS as u64)).lines();
        let mut pid = None;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| init_error(e.to_string()))?
        {
            if let Some(n) = line.strip_prefix(INIT_PID) {
                pid = n.trim().parse::<i32>().ok();
            } else if line == INIT_READY {
                return pid.ok_or_else(|| init_error("the init did not say its pid"));
            } else if let Some(why) = line.strip_prefix(INIT_ERROR) {
                return Err(NativeError::Setup {
                    what: why.to_string(),
                });
            }
        }
        Err(init_error("the init ended before the sandbox was ready"))
    };
    let pid = tokio::time::timeout(START_TIMEOUT, talk)
        .await
        .map_err(|_| init_error("the sandbox was not built in time"))??;
    // The first process only forks the init and exits.
    let _ = child.wait().await;
    Ok(pid)
}

/// Sends one byte carrying `fds` (SCM_RIGHTS), the preamble of every control connection.
fn send_preamble(socket: RawFd, fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(b"c")];
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(socket, &iov, &cmsgs, MsgFlags::empty(), None)
        .map(drop)
        .map_err(std::io::Error::from)
}

/// One control request to the init at `socket`, answered within `bound`.
pub async fn request(
    socket: &Path,
    control: &Control,
    fds: &[&OwnedFd],
    bound: Duration,
) -> Result<Reply, NativeError> {
    let exchange = async {
        let mut conn = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| init_error(format!("{}: {e}", socket.display())))?;
        conn.writable()
            .await
            .map_err(|e| init_error(e.to_string()))?;
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        send_preamble(conn.as_raw_fd(), &raw).map_err(|e| init_error(e.to_string()))?;
        conn.write_all(&frame::encode(CONTROL, &control.encode()))
            .await
            .map_err(|e| init_error(e.to_string()))?;
        let mut header = [0u8; frame::HEADER_LEN];
        conn.read_exact(&mut header)
            .await
            .map_err(|e| init_error(format!("the init did not answer: {e}")))?;
        let (tag, len) = frame::parse_header(header).ok_or_else(|| init_error("bad frame"))?;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload)
            .await
            .map_err(|e| init_error(e.to_string()))?;
        if tag != REPLY {
            return Err(init_error("not a reply"));
        }
        Reply::decode(&payload).map_err(|e| init_error(format!("bad reply: {e}")))
    };
    tokio::time::timeout(bound, exchange)
        .await
        .map_err(|_| init_error("the init did not answer in time"))?
}

/// The kill rule from outside the agent: `Ok(true)` once every process but the init is gone.
pub async fn kill_all(socket: &Path, grace: Duration) -> Result<bool, NativeError> {
    let control = Control::Kill {
        grace_ms: grace.as_millis() as u64,
    };
    match request(socket, &control, &[], grace + KILL_SLACK).await? {
        Reply::Killed { complete } => Ok(complete),
        Reply::Failed { reason } => Err(init_error(String::from_utf8_lossy(&reason))),
        other => Err(init_error(format!("unexpected reply {other:?}"))),
    }
}

/// Starts the agent with `argv`; `stdin` and `stdout` become its standard descriptors.
pub async fn launch(
    socket: &Path,
    argv: &[String],
    grace: Duration,
    stdin: &OwnedFd,
    stdout: &OwnedFd,
) -> Result<(), NativeError> {
    let control = Control::Launch {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        grace_ms: grace.as_millis() as u64,
    };
    match request(socket, &control, &[stdin, stdout], grace + KILL_SLACK).await? {
        Reply::Launched => Ok(()),
        Reply::Failed { reason } => Err(init_error(String::from_utf8_lossy(&reason))),
        other => Err(init_error(format!("unexpected reply {other:?}"))),
    }
}
