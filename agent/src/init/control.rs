//! PID 1 of the sandbox: reaps every orphan and answers the host's control requests, one per
//! connection: start the agent, end every process, say it is alive.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use stockade_proto::frame;
use stockade_proto::setup::{Control, Reply, Setup, CONTROL, REPLY};

use super::namespaces::c_string;
use super::{enter, Failed};
use crate::sys;

/// A control connection sends its request at once; one that does not is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Between checks while processes are ending.
const POLL: Duration = Duration::from_millis(10);
/// After KILL, how long to keep sending it and checking (KILL lands when a process is next
/// scheduled, which under a fork bomb takes a moment).
const KILL_CONFIRM: Duration = Duration::from_secs(2);
/// Exit status of a started process that could not become the sandbox's (its stderr says why).
const ENTER_FAILED: i32 = 126;

/// Reaps every exited child; true while any is left.
fn reap() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to an int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        // 0: children left, none exited; -1 (ECHILD): none left.
        return pid == 0;
    }
}

/// The kill rule as PID 1 does it: `kill(-1)` reaches every process of the namespace but the
/// init itself (kill(2)), in one call under the kernel's task list lock, so a fork bomb cannot
/// slip past it; everything in the namespace descends from the init or was reparented to it,
/// so "no child left" (ECHILD) is exact. TERM, `grace` to go, then KILL until none is left or
/// [`KILL_CONFIRM`] passed.
fn end_all(grace: Duration) -> bool {
    if !reap() {
        return true;
    }
    let _ = sys::kill(-1, libc::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !reap() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    let until = Instant::now() + KILL_CONFIRM;
    loop {
        let _ = sys::kill(-1, libc::SIGKILL);
        if !reap() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Receives the one-byte preamble of a connection and the descriptors it carries (a launch's
/// two, in one message with the byte).
fn recv_preamble(conn: &UnixStream) -> std::io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: msg describes valid buffers.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no preamble",
        ));
    }
    // SAFETY: walking the control messages the kernel wrote into `space`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg points into `space`, checked non-null.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is a pure size computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header) / std::mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: the kernel wrote `count` ints after the header.
                let fd = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>().add(i))
                };
                // SAFETY: the kernel installed this descriptor for us.
                fds.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            }
        }
        // SAFETY: advancing within the control buffer, as CMSG_NXTHDR does.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(fds)
}

fn read_frame(conn: &mut UnixStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; frame::HEADER_LEN];
    conn.read_exact(&mut header)?;
    let (tag, len) = frame::parse_header(header).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "frame over the size limit")
    })?;
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload)?;
    Ok((tag, payload))
}

/// Starts the agent: a child that becomes the sandbox user and execs `argv` with `stdio` as
/// its stdin and its stdout and stderr.
fn launch(setup: &Setup, argv: &[Vec<u8>], stdio: &[OwnedFd]) -> Result<(), Failed> {
    let [stdin, stdout] = stdio else {
        return Err(Failed("a launch carries two descriptors".into()));
    };
    let argv_c = argv
        .iter()
        .map(|a| c_string(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env_c = setup
        .env
        .iter()
        .map(|e| c_string(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env_c.iter().map(|e| e.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: the init is single-threaded: the child may run any code before exec.
    match unsafe { libc::fork() } {
        -1 => Err(Failed::io("fork", std::io::Error::last_os_error())),
        0 => {
            // The child: the descriptors onto 0, 1 and 2, nothing else open.
            // SAFETY: dup2 onto the standard descriptors, then close the rest.
            unsafe {
                libc::dup2(stdin.as_raw_fd(), 0);
                libc::dup2(stdout.as_raw_fd(), 1);
                libc::dup2(stdout.as_raw_fd(), 2);
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            // The init blocks SIGCHLD for its signalfd; the agent starts with no mask.
            // SAFETY: an empty set, no old set wanted.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            }
            if let Err(Failed(why)) = enter::sandbox_user(setup) {
                let _ = writeln!(std::io::stderr(), "stockade-agent init: {why}");
                // SAFETY: ends the child without the parent's destructors.
                unsafe { libc::_exit(ENTER_FAILED) };
            }
            // SAFETY: NUL-terminated arrays of NUL-terminated strings that outlive the call.
            unsafe { libc::execve(argv_p[0], argv_p.as_ptr(), env_p.as_ptr()) };
            let e = std::io::Error::last_os_error();
            let _ = writeln!(std::io::stderr(), "stockade-agent init: exec: {e}");
            // SAFETY: as above.
            unsafe { libc::_exit(127) }
        }
        _ => Ok(()),
    }
}

fn handle(setup: &Setup, mut conn: UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let fds = recv_preamble(&conn)?;
    let (tag, payload) = read_frame(&mut conn)?;
    let reply = match (tag, Control::decode(&payload)) {
        (CONTROL, Ok(Control::Ping)) => Reply::Alive,
        (CONTROL, Ok(Control::Kill { grace_ms })) => Reply::Killed {
            complete: end_all(Duration::from_millis(grace_ms)),
        },
        (CONTROL, Ok(Control::Launch { argv, grace_ms })) => {
            // Whatever is left (an agent that stopped answering, what it started) goes first:
            // the new agent is then the only process of the sandbox but this one.
            if !end_all(Duration::from_millis(grace_ms)) {
                Reply::Failed {
                    reason: b"processes of the sandbox survived KILL".to_vec(),
                }
            } else {
                match launch(setup, &argv, &fds) {
                    Ok(()) => Reply::Launched,
                    Err(Failed(why)) => Reply::Failed {
                        reason: why.into_bytes(),
                    },
                }
            }
        }
        (_, Err(e)) => Reply::Failed {
            reason: format!("bad request: {e}").into_bytes(),
        },
        _ => Reply::Failed {
            reason: b"not a control request".to_vec(),
        },
    };
    drop(fds);
    conn.write_all(&frame::encode(REPLY, &reply.encode()))
}

/// Serves until killed. Never returns.
pub fn serve(setup: &Setup, listener: UnixListener) -> ExitCode {
    let sigchld = match sys::sigchld_fd() {
        Ok(fd) => fd,
        Err(_) => return ExitCode::from(1),
    };
    // Nothing is written to the host's pipe again; its end tells the host the init is up.
    if sys::silence_stdio().is_err() {
        return ExitCode::from(1);
    }
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigchld.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, None).is_err() {
            std::thread::sleep(POLL);
            continue;
        }
        if fds[1].revents != 0 {
            sys::drain(sigchld.as_raw_fd());
            reap();
        }
        if fds[0].revents != 0 {
            if let Ok((conn, _)) = listener.accept() {
                let _ = handle(setup, conn);
            }
            reap();
        }
    }
}
