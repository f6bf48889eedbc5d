//! The agent side, inside the container: `stockade __agent --dir DIR`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{
    result_mac, Exit, Request, MAX_FRAME, READY, SOCKET_NAME, TAG_ACCEPTED, TAG_EXIT, TAG_STDERR,
    TAG_STDOUT,
};

/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 4 << 20;
const POLL: Duration = Duration::from_millis(50);

/// Runs the agent until killed. Reads the session secret from stdin first.
pub async fn serve(dir: &Path) -> std::io::Result<()> {
    // Before anything else: no core dumps, and no /proc/<pid>/{mem,environ} for other
    // processes of the same user, so the secret below cannot be read back out of us.
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let secret = hex::decode(line.trim())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "secret is not hex"))?;

    let path = dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}")?;
        out.flush()?;
    }
    // The launcher detaches after READY: nothing may be written to its pipes afterwards.
    silence_stdio()?;

    loop {
        let (conn, _) = listener.accept().await?;
        // One command at a time: the host serializes a session's commands anyway.
        let _ = handle(conn, &secret).await;
    }
}

fn silence_stdio() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

async fn write_frame(
    conn: &mut tokio::net::unix::OwnedWriteHalf,
    tag: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut header = [0u8; 5];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    conn.write_all(&header).await?;
    conn.write_all(payload).await
}

async fn handle(conn: UnixStream, secret: &[u8]) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    (&mut reader).take(MAX_REQUEST).read_line(&mut line).await?;
    let request: Request = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let Some((program, args)) = request.cmd.split_first() else {
        return Ok(());
    };

    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&request.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    for entry in &request.env {
        if let Some((k, v)) = entry.split_once('=') {
            command.env(k, v);
        }
    }
    write_frame(&mut write, TAG_ACCEPTED, b"").await?;
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            // Like `bash: X: command not found`: the host still gets an authenticated result.
            let msg = format!("stockade agent: cannot start {program}: {e}\n");
            write_frame(&mut write, TAG_STDERR, msg.as_bytes()).await?;
            let (out_digest, err_digest) = (Sha256::digest(b""), Sha256::digest(msg.as_bytes()));
            return send_exit(
                &mut write,
                secret,
                &request,
                Some(126),
                false,
                &out_digest,
                &err_digest,
            )
            .await;
        }
    };
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let (mut out_sha, mut err_sha) = (Sha256::new(), Sha256::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut obuf = vec![0u8; 64 * 1024];
    let mut ebuf = vec![0u8; 64 * 1024];
    let mut probe = [0u8; 1];
    let deadline = tokio::time::sleep(Duration::from_millis(request.timeout_ms));
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut host_gone = false;

    while out_open || err_open {
        tokio::select! {
            n = out.read(&mut obuf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    out_sha.update(&obuf[..n]);
                    if write_frame(&mut write, TAG_STDOUT, &obuf[..n]).await.is_err() { host_gone = true; break; }
                }
            },
            n = err.read(&mut ebuf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    err_sha.update(&ebuf[..n]);
                    if write_frame(&mut write, TAG_STDERR, &ebuf[..n]).await.is_err() { host_gone = true; break; }
                }
            },
            // The host closing the connection means: stop the command.
            r = reader.read(&mut probe) => if matches!(r, Ok(0) | Err(_)) { host_gone = true; break; },
            _ = &mut deadline => { timed_out = true; break; }
        }
    }
    if timed_out || host_gone {
        let grace = Duration::from_millis(request.grace_ms);
        tokio::task::spawn_blocking(move || kill_others(grace))
            .await
            .ok();
    }
    let status = child.wait().await?;
    if host_gone {
        return Ok(());
    }
    let exit_code = if timed_out {
        None
    } else {
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .map(i64::from)
            .or_else(|| status.signal().map(|s| 128 + i64::from(s)))
    };
    let (out_digest, err_digest) = (out_sha.finalize(), err_sha.finalize());
    send_exit(
        &mut write,
        secret,
        &request,
        exit_code,
        timed_out,
        &out_digest,
        &err_digest,
    )
    .await
}

async fn send_exit(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    secret: &[u8],
    request: &Request,
    exit_code: Option<i64>,
    timed_out: bool,
    out_digest: &[u8],
    err_digest: &[u8],
) -> std::io::Result<()> {
    let mac = result_mac(
        secret,
        &request.nonce,
        exit_code,
        timed_out,
        out_digest,
        err_digest,
    );
    let exit = Exit {
        exit_code,
        timed_out,
        mac,
    };
    let payload = serde_json::to_vec(&exit).map_err(std::io::Error::other)?;
    debug_assert!(payload.len() < MAX_FRAME);
    write_frame(write, TAG_EXIT, &payload).await?;
    write.shutdown().await
}

/// A process seen in /proc.
struct Proc {
    pid: i32,
    ppid: i32,
    alive: bool,
}

fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let state = field("State:")?;
            Some(Proc {
                pid,
                ppid: field("PPid:")?.parse().ok()?,
                alive: !(state.starts_with('Z') || state.starts_with('X')),
            })
        })
        .collect()
}

/// TERM, grace, KILL to every process we may signal except PID 1, the keeper (the oldest
/// child of PID 1) and ourselves: the same rule as the exec kill script (`plan::kill_script`).
pub fn kill_others(grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let me = std::process::id() as i32;
    let keeper = processes()
        .iter()
        .filter(|p| p.ppid == 1)
        .map(|p| p.pid)
        .min();
    let targets = || -> Vec<i32> {
        processes()
            .into_iter()
            .filter(|p| p.alive && p.pid != 1 && p.pid != me && Some(p.pid) != keeper)
            .filter(|p| kill(Pid::from_raw(p.pid), None).is_ok())
            .map(|p| p.pid)
            .collect()
    };
    for pid in targets() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if targets().is_empty() {
            return;
        }
        std::thread::sleep(POLL);
    }
    for pid in targets() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
