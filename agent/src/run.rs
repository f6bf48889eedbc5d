//! Running one command: stream its output, feed its stdin, hold its timeout whatever it does to
//! its stdio, end what it leaves behind, and account for the limits it hit.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stockade_proto::cgroup::Files;
use stockade_proto::{frame, mac, Exit, KillReport, Request, Status, StreamDigest, KEY_LEN};

use crate::procs::{Ending, Reaped, Spared, POLL};
use crate::{ipc, sys};

/// Output queued for the host beyond this stops reading the command's pipes (backpressure),
/// so a slow host holds the command up rather than growing the agent's memory.
const OUT_QUEUE_CAP: usize = 4 << 20;
/// Stdin queued for the command beyond this stops reading from the host.
const STDIN_QUEUE_CAP: usize = 4 << 20;
/// Read size from each pipe.
const CHUNK: usize = 64 * 1024;
/// After everything was ended, how long to keep reading what is left in the pipes.
const DRAIN: Duration = Duration::from_millis(500);
/// Time to hand the exit frame to a host that stopped reading.
const EXIT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// An exit first seen this long after the deadline was not seen to happen in time (the agent
/// was stopped or starved meanwhile), so the command counts as timed out: the record never
/// says a command finished within its timeout when that was not observed.
const LATE: Duration = Duration::from_millis(100);

struct Pipe<R> {
    fd: Option<R>,
    sha: Sha256,
    bytes: u64,
    tag: u8,
}

impl<R: Read + AsRawFd> Pipe<R> {
    fn new(fd: Option<R>, tag: u8) -> Pipe<R> {
        if let Some(f) = &fd {
            let _ = sys::set_nonblocking(f.as_raw_fd());
        }
        Pipe {
            fd,
            sha: Sha256::new(),
            bytes: 0,
            tag,
        }
    }

    /// Queues `bytes` as this stream's output.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.sha.update(bytes);
        self.bytes += bytes.len() as u64;
        out.extend_from_slice(&frame::encode(self.tag, bytes));
    }

    /// Reads what is there into `out` as a frame; closes the pipe at EOF.
    fn read_into(&mut self, out: &mut Vec<u8>) {
        let Some(fd) = &mut self.fd else { return };
        let mut buf = [0u8; CHUNK];
        match fd.read(&mut buf) {
            Ok(0) => self.fd = None,
            Ok(n) => self.emit(&buf[..n], out),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.fd = None,
        }
    }

    fn digest(&self) -> StreamDigest {
        StreamDigest {
            sha256: self.sha.clone().finalize().into(),
            bytes: self.bytes,
        }
    }
}

/// Frames from the host while the command runs.
struct FromHost {
    buf: Vec<u8>,
    stdin: Vec<u8>,
    stdin_sha: Sha256,
    stdin_bytes: u64,
    stdin_eof: bool,
    /// The host closed its side, or sent something other than stdin: end the command.
    stop: bool,
}

impl FromHost {
    fn take_frames(&mut self) {
        while self.buf.len() >= frame::HEADER_LEN {
            let mut header = [0u8; frame::HEADER_LEN];
            header.copy_from_slice(&self.buf[..frame::HEADER_LEN]);
            let Some((tag, len)) = frame::parse_header(header) else {
                self.stop = true;
                return;
            };
            if self.buf.len() < frame::HEADER_LEN + len {
                return;
            }
            let payload: Vec<u8> = self
                .buf
                .drain(..frame::HEADER_LEN + len)
                .skip(frame::HEADER_LEN)
                .collect();
            match tag {
                frame::STDIN if !self.stdin_eof => {
                    self.stdin_sha.update(&payload);
                    self.stdin_bytes += payload.len() as u64;
                    self.stdin.extend_from_slice(&payload);
                }
                frame::STDIN_EOF => self.stdin_eof = true,
                _ => {
                    self.stop = true;
                    return;
                }
            }
        }
    }
}

fn command(request: &Request) -> Command {
    let mut command = Command::new(OsStr::from_bytes(&request.argv[0]));
    command
        .args(request.argv[1..].iter().map(|a| OsStr::from_bytes(a)))
        .current_dir(Path::new(OsStr::from_bytes(&request.workdir)))
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for entry in &request.env {
        if let Some(at) = entry.iter().position(|&b| b == b'=') {
            command.env(
                OsStr::from_bytes(&entry[..at]),
                OsStr::from_bytes(&entry[at + 1..]),
            );
        }
    }
    command
}

/// A wait status as the protocol reports it.
fn status_of(raw: i32) -> Status {
    if libc::WIFEXITED(raw) {
        Status::Exited(libc::WEXITSTATUS(raw))
    } else if libc::WIFSIGNALED(raw) {
        Status::Signaled(libc::WTERMSIG(raw))
    } else {
        Status::Exited(-1)
    }
}

/// The descriptor to poll, or -1 (poll skips negative descriptors) when there is none or it is
/// not wanted now.
fn fd_of<F: AsRawFd>(f: &Option<F>, want: bool) -> i32 {
    match f {
        Some(f) if want => f.as_raw_fd(),
        _ => -1,
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Why the command is being ended.
#[derive(Clone, Copy, PartialEq)]
enum EndReason {
    Timeout,
    HostStop,
    Leftovers,
}

fn merge(kill: KillReport, complete: bool) -> KillReport {
    match (kill, complete) {
        (KillReport::Incomplete, _) | (_, false) => KillReport::Incomplete,
        _ => KillReport::Complete,
    }
}

/// What the agent holds across commands.
pub struct Held {
    pub key: [u8; KEY_LEN],
    /// The SIGCHLD signalfd.
    pub sigchld: OwnedFd,
    /// The cgroup counter files, open since start.
    pub counters: Files,
}

/// Runs `request` (already verified) and reports on `conn`.
pub fn run(
    held: &Held,
    mut conn: UnixStream,
    encoded_request: &[u8],
    request: &Request,
) -> std::io::Result<()> {
    let (key, sigchld) = (&held.key, &held.sigchld);
    let grace = Duration::from_millis(request.grace_ms);
    let spared = Spared::for_reaper();

    // What an earlier execution left (a host that died, a command run another way, a dead
    // agent's orphans) is ended before this one starts, so that none of it is credited here.
    let mut stale = 0u32;
    let mut kill = KillReport::NotNeeded;
    let mut reaped = Reaped::watching(None);
    if spared.with_strangers().any_left(&mut reaped) {
        stale = spared.count_others(1);
        kill = merge(
            kill,
            Ending::start(spared.with_strangers(), grace).finish(&mut reaped),
        );
    }
    let mut ipc_removed = ipc::remove_leftovers();
    let before = held.counters.read();

    conn.write_all(&frame::encode(frame::ACCEPTED, b""))?;
    let started = Instant::now();
    let mut out: Vec<u8> = Vec::new();
    // A working directory that is not there is the request's fault, not the command's: said
    // apart from a program that is not found.
    let workdir = Path::new(OsStr::from_bytes(&request.workdir));
    let workdir_missing = match std::fs::metadata(workdir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(libc::ENOTDIR),
        Err(e) => Some(e.raw_os_error().unwrap_or(libc::ENOENT)),
    };
    let mut stdout = Pipe::new(None::<std::process::ChildStdout>, frame::STDOUT);
    let mut stderr = Pipe::new(None::<std::process::ChildStderr>, frame::STDERR);
    let mut stdin = None;
    let mut status = None;
    let mut duration = None;
    let spawned = match workdir_missing {
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => command(request).spawn(),
    };
    match spawned {
        Ok(mut child) => {
            reaped = Reaped::watching(Some(child.id() as i32));
            sys::prefer_for_oom_kill(child.id() as i32);
            stdout = Pipe::new(child.stdout.take(), frame::STDOUT);
            stderr = Pipe::new(child.stderr.take(), frame::STDERR);
            stdin = child.stdin.take();
            // The child is reaped through waitpid(-1) with every other descendant; std's handle
            // is not used for that.
            drop(child);
        }
        Err(e) => {
            let note = format!(
                "stockade: cannot start {}: {e}\n",
                String::from_utf8_lossy(&request.argv[0])
            );
            let errno = e.raw_os_error().unwrap_or(libc::ENOENT);
            if workdir_missing.is_none() {
                stderr.emit(note.as_bytes(), &mut out);
            }
            duration = Some(Duration::ZERO);
            status = Some(match workdir_missing {
                Some(_) => Status::NoWorkdir(errno),
                None => Status::NotStarted(errno),
            });
            reaped = Reaped::watching(None);
        }
    }
    if let Some(s) = &stdin {
        let _ = sys::set_nonblocking(s.as_raw_fd());
    }
    sys::set_nonblocking(conn.as_raw_fd())?;

    let mut host = FromHost {
        buf: Vec::new(),
        stdin: Vec::new(),
        stdin_sha: Sha256::new(),
        stdin_bytes: 0,
        stdin_eof: !request.stdin,
        stop: false,
    };
    let mut host_gone = false;
    let deadline = started + Duration::from_millis(request.timeout_ms);
    let mut ending: Option<(Ending, EndReason)> = None;
    let mut ended: Option<EndReason> = None;
    let mut leftovers = 0u32;
    let mut leftovers_checked = false;
    let mut drain_until: Option<Instant> = None;
    let mut out_sent = 0usize;
    let mut late = false;
    let mut last_sent = Instant::now();
    let mut stop_acked = false;

    loop {
        let now = Instant::now();
        reaped.reap();
        if status.is_none() {
            if let Some(raw) = reaped.watched_status {
                status = Some(status_of(raw));
                duration = Some(started.elapsed());
                late = ended.is_none() && Instant::now() > deadline + LATE;
            }
        }
        // Decide what to end.
        if ending.is_none() && ended.is_none() {
            let reason = if status.is_none() {
                if host.stop {
                    Some(EndReason::HostStop)
                } else if now >= deadline {
                    Some(EndReason::Timeout)
                } else {
                    None
                }
            } else if !leftovers_checked {
                leftovers_checked = true;
                // Exact: the agent's children are what is left of the command.
                if reaped.has_children {
                    leftovers = spared.count_others(1);
                    Some(EndReason::Leftovers)
                } else {
                    None
                }
            } else {
                None
            };
            if let Some(reason) = reason {
                ending = Some((Ending::start(spared, grace), reason));
            }
        }
        if host.stop && !stop_acked && !host_gone {
            stop_acked = true;
            out.extend_from_slice(&frame::encode(frame::STOPPING, b""));
        }
        if out.len() == out_sent && now.duration_since(last_sent) >= frame::HEARTBEAT_EVERY {
            out.extend_from_slice(&frame::encode(frame::HEARTBEAT, b""));
        }
        if let Some((e, reason)) = ending.as_mut() {
            if let Some(complete) = e.step(&mut reaped) {
                kill = merge(kill, complete);
                ended = Some(*reason);
                ending = None;
                drain_until = Some(Instant::now() + DRAIN);
                if status.is_none() {
                    if let Some(raw) = reaped.watched_status {
                        status = Some(status_of(raw));
                        duration = Some(started.elapsed());
                    }
                }
            }
        }
        let pipes_open = stdout.fd.is_some() || stderr.fd.is_some();
        let drained = !pipes_open || drain_until.is_some_and(|t| Instant::now() >= t);
        let settled =
            ending.is_none() && (ended.is_some() || (status.is_some() && leftovers_checked));
        let reaped_all = status.is_some() || (ended.is_some() && kill == KillReport::Incomplete);
        if settled && reaped_all && drained {
            break;
        }

        // Wait for something to happen.
        let out_pending = out.len() - out_sent;
        let mut conn_events = libc::POLLRDHUP;
        if !host_gone && host.stdin.len() < STDIN_QUEUE_CAP {
            conn_events |= libc::POLLIN;
        }
        if out_pending > 0 && !host_gone {
            conn_events |= libc::POLLOUT;
        }
        let reading = out_pending < OUT_QUEUE_CAP;
        let mut fds = [
            pollfd(if host_gone { -1 } else { conn.as_raw_fd() }, conn_events),
            pollfd(fd_of(&stdout.fd, reading), libc::POLLIN),
            pollfd(fd_of(&stderr.fd, reading), libc::POLLIN),
            pollfd(fd_of(&stdin, !host.stdin.is_empty()), libc::POLLOUT),
            pollfd(sigchld.as_raw_fd(), libc::POLLIN),
        ];
        let mut wake: Option<Duration> = None;
        let mut wake_at = |t: Duration| wake = Some(wake.map_or(t, |w| w.min(t)));
        if ending.is_some() {
            wake_at(POLL);
        }
        if status.is_none() && ended.is_none() {
            wake_at(deadline.saturating_duration_since(now));
        }
        if let Some(t) = drain_until {
            wake_at(t.saturating_duration_since(now));
        }
        if (status.is_some() && !leftovers_checked) || (ended.is_some() && status.is_none()) {
            wake_at(POLL);
        }
        wake_at(frame::HEARTBEAT_EVERY.saturating_sub(now.duration_since(last_sent)));
        sys::poll(&mut fds, wake)?;

        if fds[4].revents != 0 {
            sys::drain(sigchld.as_raw_fd());
        }
        let conn_rev = fds[0].revents;
        if conn_rev & libc::POLLIN != 0 {
            let mut buf = [0u8; CHUNK];
            match conn.read(&mut buf) {
                Ok(0) => host.stop = true,
                Ok(n) => {
                    host.buf.extend_from_slice(&buf[..n]);
                    host.take_frames();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    host.stop = true;
                    host_gone = true;
                }
            }
        }
        if conn_rev & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            host.stop = true;
            if conn_rev & (libc::POLLHUP | libc::POLLERR) != 0 {
                host_gone = true;
            }
        }
        if conn_rev & libc::POLLOUT != 0 && out_pending > 0 {
            match conn.write(&out[out_sent..]) {
                Ok(n) => {
                    out_sent += n;
                    last_sent = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    host.stop = true;
                    host_gone = true;
                }
            }
            if out_sent == out.len() {
                out.clear();
                out_sent = 0;
            } else if out_sent > OUT_QUEUE_CAP {
                out.drain(..out_sent);
                out_sent = 0;
            }
        }
        if fds[1].revents != 0 {
            stdout.read_into(&mut out);
        }
        if fds[2].revents != 0 {
            stderr.read_into(&mut out);
        }
        if let Some(s) = stdin.as_mut() {
            if fds[3].revents & libc::POLLOUT != 0 {
                match s.write(&host.stdin) {
                    Ok(n) => {
                        host.stdin.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // The command closed its stdin: what is left is not wanted.
                    Err(_) => host.stdin.clear(),
                }
            } else if fds[3].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                host.stdin.clear();
                stdin = None;
            }
        }
        if host.stdin.is_empty() && host.stdin_eof {
            stdin = None;
        }
        if host_gone {
            out.clear();
            out_sent = 0;
        }
    }

    // Whatever of this user hides from every check still does not outlive the command.
    spared.kill_unseen();
    ipc_removed += ipc::remove_leftovers();
    let after = held.counters.read();
    let exit = Exit {
        status: status.unwrap_or(Status::Signaled(libc::SIGKILL)),
        timed_out: ended == Some(EndReason::Timeout) || late,
        stopped: ended == Some(EndReason::HostStop),
        kill,
        leftovers,
        stale,
        ipc_removed,
        before,
        after,
        stdout: stdout.digest(),
        stderr: stderr.digest(),
        stdin: StreamDigest {
            sha256: host.stdin_sha.finalize().into(),
            bytes: host.stdin_bytes,
        },
        duration_ms: duration.unwrap_or_else(|| started.elapsed()).as_millis() as u64,
    };
    if host_gone {
        return Ok(());
    }
    let encoded = exit.encode();
    let mut payload = encoded.clone();
    payload.extend_from_slice(&mac::result(key, encoded_request, &encoded));
    out.extend_from_slice(&frame::encode(frame::EXIT, &payload));
    // The rest is written blocking, bounded.
    sys::set_blocking(conn.as_raw_fd())?;
    conn.set_write_timeout(Some(EXIT_WRITE_TIMEOUT))?;
    conn.write_all(&out[out_sent..])?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Wait (bounded) for the host to close, so that the exit frame is read before the
    // connection goes away.
    conn.set_read_timeout(Some(EXIT_WRITE_TIMEOUT))?;
    let mut sink = [0u8; 256];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}
