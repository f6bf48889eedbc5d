//! The few system calls the agent makes that std does not wrap.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// No core dump, and no /proc/<pid>/{mem,environ,fd} for other processes of the same user.
/// The binary is also execute-only (mode 0111) for the sandbox, which makes the kernel mark the
/// process non-dumpable from execve on; this call keeps it so.
pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(drop)
}

/// Fills `buf` from the kernel's CSPRNG.
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, integer arguments.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

pub fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, integer arguments.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) }).map(drop)
}

/// Points stdin, stdout and stderr at /dev/null.
pub fn silence_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 of a descriptor we own onto a standard descriptor.
        check(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    }
    Ok(())
}

/// Receives one descriptor (and one byte) over a unix socket, close-on-exec.
pub fn recv_fd(socket: RawFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsghdr with one int, aligned.
    let mut space = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen =
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as _;
    // SAFETY: msg describes valid buffers.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "launch socket closed",
        ));
    }
    // SAFETY: CMSG_FIRSTHDR reads within msg_control as set up above.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no descriptor passed",
        ));
    }
    // SAFETY: cmsg points into `space`, checked non-null.
    let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
    if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a descriptor",
        ));
    }
    // SAFETY: an SCM_RIGHTS message carries ints; the kernel wrote at least one.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
    // SAFETY: the kernel just installed this descriptor in our table; we own it now.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks SIGCHLD and returns a signalfd that becomes readable when a child exits (or an
/// orphan reparented to this subreaper does). Children start with an empty signal mask (std
/// resets it between fork and exec).
pub fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set points to a sigset_t we own.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
    }
    // SAFETY: a valid set, no old set wanted.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    // SAFETY: a valid set; flags are constants.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: the kernel returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Empties a signalfd.
pub fn drain(fd: RawFd) {
    let mut buf = [0u8; 128 * 16];
    // SAFETY: reading into a buffer we own; the fd is non-blocking.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// poll(2) over `fds` for at most `timeout` (`None`: no bound). Retries on EINTR.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(i32::MAX),
    };
    loop {
        // SAFETY: fds is a valid slice of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The resource limits that, lowered, would make the agent fail (descriptors, processes,
/// memory, file size, CPU time, stack).
const WATCHED_LIMITS: &[(libc::__rlimit_resource_t, &str)] = &[
    (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
    (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
    (libc::RLIMIT_AS, "RLIMIT_AS"),
    (libc::RLIMIT_DATA, "RLIMIT_DATA"),
    (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
    (libc::RLIMIT_CPU, "RLIMIT_CPU"),
    (libc::RLIMIT_STACK, "RLIMIT_STACK"),
];

/// The current (soft) values of [`WATCHED_LIMITS`].
pub fn rlimits() -> Vec<u64> {
    WATCHED_LIMITS
        .iter()
        .map(|(resource, _)| {
            // SAFETY: getrlimit fills a plain struct.
            let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
            // SAFETY: a valid resource and a pointer to our struct.
            unsafe { libc::getrlimit(*resource, &mut limit) };
            limit.rlim_cur
        })
        .collect()
}

/// The first watched limit that is now lower than in `at_start`.
pub fn lowered(at_start: &[u64]) -> Option<&'static str> {
    rlimits()
        .iter()
        .zip(at_start)
        .zip(WATCHED_LIMITS)
        .find(|((now, then), _)| now < then)
        .map(|(_, (_, name))| *name)
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// kill(2); errors are ignored by callers (the process may be gone).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill with integer arguments.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Makes process `pid` (and what it starts from now on) the memory killer's first choice,
/// never this agent: an agent killed by a command's memory use would take the result with it,
/// and under memory pressure the kernel may pass over a victim it cannot reap in time and take
/// the next largest. Raising a score needs no privilege; without CAP_SYS_RESOURCE a command
/// can lower it again only as far as the score the sandbox started with, the agent's own.
///
/// Written from here once `spawn` has returned, that is once the child has exec'd: before the
/// exec the child is a non-dumpable copy of this agent, whose /proc files belong to root, so it
/// cannot write its own score (the kernel's `task_dump_owner`), and making it dumpable would
/// open the agent's memory to the sandbox. Best effort: a child that exec'd an unreadable
/// program stays non-dumpable, and what it forks before this write keeps the sandbox's score.
pub fn prefer_for_oom_kill(pid: i32) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/oom_score_adj"))
    {
        use std::io::Write;
        let _ = f.write_all(b"1000");
    }
}
