//! The namespaces, the fork into PID 1, and what a fresh UTS and network namespace need.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use stockade_proto::setup::Setup;

use super::Failed;

/// Each namespace with its `unshare(2)` flag, for the message that names the one refused.
const NAMESPACES: &[(libc::c_int, &str)] = &[
    (libc::CLONE_NEWNS, "mount"),
    (libc::CLONE_NEWPID, "pid"),
    (libc::CLONE_NEWNET, "network"),
    (libc::CLONE_NEWIPC, "ipc"),
    (libc::CLONE_NEWUTS, "uts"),
    (libc::CLONE_NEWCGROUP, "cgroup"),
];

pub enum Forked {
    /// The parent, with the child's pid.
    Parent(i32),
    /// The child, PID 1 of the new pid namespace, with the read end of the pipe the parent
    /// closes once it has said the pid.
    Child(OwnedFd),
}

fn os_error(what: impl std::fmt::Display) -> Failed {
    Failed::io(what, std::io::Error::last_os_error())
}

/// Closes every descriptor above stderr: nothing of the process that started the init
/// reaches the sandbox.
fn close_inherited() {
    // SAFETY: close_range with constant bounds; it only closes descriptors.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed != 0 {
        for fd in 3..4096 {
            // SAFETY: closing descriptors this process does not use.
            unsafe { libc::close(fd) };
        }
    }
}

fn write_file(path: &str, text: &str) -> Result<(), Failed> {
    std::fs::write(path, text).map_err(|e| Failed::io(format!("writing {path}"), e))
}

/// What a refusal of `unshare` means for the operator.
fn refused(namespace: &str, errno: std::io::Error) -> Failed {
    let hint = match errno.raw_os_error() {
        Some(libc::EPERM) => {
            " (the kernel or a surrounding container forbids it: inside a container the native \
             backend needs CAP_SYS_ADMIN and a seccomp profile that allows unshare, or user \
             namespaces; see docs/backends.md)"
        }
        Some(libc::ENOSPC) => {
            " (the namespace limit in /proc/sys/user/max_*_namespaces is reached)"
        }
        Some(libc::EINVAL) => " (this kernel lacks the namespace)",
        _ => "",
    };
    Failed(format!(
        "cannot create the {namespace} namespace: {errno}{hint}; nothing runs with less isolation"
    ))
}

/// The user namespace (when asked), then the others, then the fork.
pub fn enter(setup: &Setup) -> Result<Forked, Failed> {
    close_inherited();
    if let Some(map) = setup.user_ns {
        // SAFETY: unshare with a constant flag.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            let e = std::io::Error::last_os_error();
            let mut why = refused("user", e);
            why.0.push_str(
                ". Unprivileged user namespaces may be off (kernel.unprivileged_userns_clone, \
                 user.max_user_namespaces, or an AppArmor restriction): run as root instead",
            );
            return Err(why);
        }
        // An unprivileged process may map exactly itself, and only with setgroups denied.
        write_file("/proc/self/setgroups", "deny")?;
        write_file(
            "/proc/self/uid_map",
            &format!("{} {} 1\n", setup.uid, map.outside_uid),
        )?;
        write_file(
            "/proc/self/gid_map",
            &format!("{} {} 1\n", setup.gid, map.outside_gid),
        )?;
    }
    let all = NAMESPACES.iter().fold(0, |flags, (f, _)| flags | f);
    // SAFETY: unshare with constant flags.
    if unsafe { libc::unshare(all) } != 0 {
        let e = std::io::Error::last_os_error();
        // Find which one: each alone, in a throwaway child so nothing here changes.
        for (flag, name) in NAMESPACES {
            if !unshare_works(*flag) {
                return Err(refused(name, e));
            }
        }
        return Err(refused("sandbox's", e));
    }
    let mut fds = [0; 2];
    // SAFETY: a pipe into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe"));
    }
    // SAFETY: the kernel just returned these descriptors; each is owned once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: this process is single-threaded: the child may run any code.
    match unsafe { libc::fork() } {
        -1 => Err(os_error("fork into the new pid namespace")),
        0 => {
            drop(write);
            Ok(Forked::Child(read))
        }
        pid => {
            drop(read);
            // `write` closes when the parent exits, after the pid line.
            std::mem::forget(write);
            Ok(Forked::Parent(pid))
        }
    }
}

/// Whether `unshare(flag)` alone is allowed, tried in a child that exits at once.
fn unshare_works(flag: libc::c_int) -> bool {
    // SAFETY: single-threaded; the child only calls unshare and _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: as above.
            let ok = unsafe { libc::unshare(flag) } == 0;
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(i32::from(!ok)) }
        }
        -1 => false,
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    }
}

/// Blocks until the parent has said the pid and exited (the pipe reads EOF).
pub fn wait_for_parent(sync: OwnedFd) {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: reading one byte into our buffer from our descriptor.
        let n = unsafe { libc::read(sync.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Hostname, loopback, resource limits: what the new UTS and network namespaces and the
/// sandbox's processes start with.
pub fn finish(setup: &Setup) -> Result<(), Failed> {
    // SAFETY: the pointer and length describe the hostname bytes.
    let named = unsafe { libc::sethostname(setup.hostname.as_ptr().cast(), setup.hostname.len()) };
    if named != 0 {
        return Err(os_error("sethostname"));
    }
    loopback_up()?;
    for limit in &setup.rlimits {
        set_rlimit(limit)?;
    }
    // Docker's: files the sandbox creates are not group- or world-writable by default.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    Ok(())
}

/// A new network namespace has `lo`, down; it is brought up (127.0.0.1 and ::1 work, as with
/// Docker's `network none`), and nothing else exists.
fn loopback_up() -> Result<(), Failed> {
    // SAFETY: socket with constant arguments.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(os_error("socket for the loopback interface"));
    }
    // SAFETY: the kernel just returned this descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the named interface in `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(os_error("reading the loopback interface's flags"));
    }
    // SAFETY: reading and writing the flags member of the union SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        let e = std::io::Error::last_os_error();
        // Without a user namespace the new network namespace belongs to the caller's, so
        // setting its flags needs CAP_NET_ADMIN there (network_namespaces(7)), which a
        // container's root lacks by default.
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (this needs CAP_NET_ADMIN: inside a container, add it; see docs/backends.md)"
        } else {
            ""
        };
        return Err(Failed(format!(
            "bringing the loopback interface up: {e}{hint}"
        )));
    }
    Ok(())
}

/// Sets one limit; a hard limit above the current one, which only a privileged process may
/// raise, is kept at the current one (in a user namespace).
fn set_rlimit(limit: &stockade_proto::setup::Rlimit) -> Result<(), Failed> {
    let resource = limit.resource as libc::__rlimit_resource_t;
    let mut wanted = libc::rlimit {
        rlim_cur: limit.soft,
        rlim_max: limit.hard,
    };
    // SAFETY: setrlimit reads a plain struct.
    if unsafe { libc::setrlimit(resource, &wanted) } == 0 {
        return Ok(());
    }
    // SAFETY: getrlimit fills a plain struct.
    let mut current: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrlimit(resource, &mut current) };
    wanted.rlim_max = wanted.rlim_max.min(current.rlim_max);
    wanted.rlim_cur = wanted.rlim_cur.min(wanted.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(resource, &wanted) } != 0 {
        return Err(os_error(format!("setrlimit({})", limit.resource)));
    }
    Ok(())
}

/// A C string of `bytes` (checked free of NUL at decode).
pub fn c_string(bytes: &[u8]) -> Result<CString, Failed> {
    CString::new(bytes).map_err(|_| Failed("a path holds a NUL byte".to_string()))
}
