//! The syscalls a sandbox container makes outside the recorded workload, which every recorded
//! profile allows.
//!
//! With the Docker backend the whole container runs under the profile, not just the command:
//! runc loads the filter in its init process and then calls `execve`, docker-init runs as PID 1,
//! a keeper keeps the container up, stockade's agent runs every command, and stockade's own execs
//! (the kill sweep, the OOM probe) run in it too. A trace of the workload sees none of this.
//!
//! Measured on Docker 20.10.24, runc 1.1.5 (Go 1.19, libseccomp 2.5.4), cgroup v1, Linux 6.x,
//! x86_64, stockade's base image (Debian 12 glibc 2.36, bash as /bin/sh): each process above was
//! traced from the host (`strace -f` on `runc run` / `runc exec` with the container's OCI
//! config, from the filter load to exit), then each name was removed in turn from the union and
//! the container started, an exec run, the kill script and the OOM probe run under the result.
//! Names marked *required* broke one of those when removed; the others are kept because the
//! measured path makes them and refusing them changes behaviour (for example the kill script's
//! `sleep 0.05` would stop waiting between TERM and KILL) or because they happen only sometimes
//! (the Go runtime in runc init).

use std::collections::BTreeSet;

use super::{syscall_number, Arch};

/// runc init after it loads the filter. With `no_new_privileges` (always set by stockade)
/// runc 1.1 loads the filter as late as possible: for a container start it then opens and
/// writes the exec fifo, marks fds close-on-exec by listing /proc/self/fd, and calls `execve`;
/// for an exec only the fd listing and `execve`. Required: `close`, `openat`, `write`,
/// `fstatfs`, `getdents64`, `execve`. `epoll_ctl` fails anyway (/proc/self/fd cannot be
/// polled); it is listed so that the Go runtime sees the same error either way.
pub const RUNC_INIT: &[&str] = &[
    "close",
    "epoll_ctl",
    "execve",
    "fcntl",
    "fstatfs",
    "futex",
    "getdents64",
    "getpid",
    "openat",
    "write",
];

/// The Go runtime on runc init's filtered thread may preempt, park or grow the heap at any point
/// before `execve` (signals such as SIGURG arrive there too). These are not in every trace; they
/// are the lint's `syscall-runtime-init-blocked` set, so a recorded profile never trips it.
pub const GO_RUNTIME: &[&str] = super::lint::RUNTIME_INIT;

/// docker-init (tini, static) as PID 1: it blocks signals, forks the keeper into its own process
/// group, then waits for signals and children, forwarding TERM on `docker stop`. Required:
/// `arch_prctl`, `clone`, `getpgrp` (job control), `ioctl` (TIOCSPGRP), `kill`,
/// `rt_sigaction`, `rt_sigprocmask`, `rt_sigtimedwait`, `setpgid`, `wait4`; `getpid` (tini
/// checks it is PID 1).
pub const CONTAINER_INIT: &[&str] = &[
    "arch_prctl",
    "brk",
    "clone",
    "execve",
    "exit_group",
    "getpgrp",
    "getpid",
    "getrandom",
    "ioctl",
    "kill",
    "mprotect",
    "prlimit64",
    "readlink",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigtimedwait",
    "set_robust_list",
    "set_tid_address",
    "setpgid",
    "wait4",
];

/// The keeper, `sleep infinity`: the dynamic loader's start (the same for every glibc program)
/// and `pause`. Required: `mmap`, `mprotect`, `newfstatat`, `openat`, `pread64`, `read`.
pub const KEEPER: &[&str] = &[
    "access",
    "arch_prctl",
    "brk",
    "close",
    "getrandom",
    "mmap",
    "mprotect",
    "munmap",
    "newfstatat",
    "openat",
    "pause",
    "pread64",
    "prlimit64",
    "read",
    "rseq",
    "set_robust_list",
    "set_tid_address",
];

/// stockade's agent (`stockade-agent`, static): `serve` (the launch hand-over over a unix
/// socket, one connection per command, the command spawned with `fork` + `execve`, its exit
/// and every orphan of it reaped through a SIGCHLD `signalfd` (the agent is a subreaper:
/// `prctl`), the /proc scans for what is not its own), the child between `fork`
/// and `execve` (`dup2`, `chdir`), `keep` (the keeper: `pause`) and `kill` (the sweep:
/// `clock_nanosleep` between checks). Measured with `strace -f` from the host on the
/// container's shim (serve: a launch, a command, one that leaves a process behind, a timeout,
/// a failing one) and on the binary run directly (keep, kill).
pub const AGENT: &[&str] = &[
    "accept4",
    "arch_prctl",
    "brk",
    "chdir",
    "clock_nanosleep",
    "clone",
    "close",
    "connect",
    "dup2",
    "execve",
    "exit_group",
    "fcntl",
    "futex",
    "getdents64",
    "geteuid",
    "getpid",
    "getrandom",
    "gettid",
    "kill",
    "mmap",
    "mprotect",
    "munmap",
    "newfstatat",
    "openat",
    "pause",
    "pipe2",
    "poll",
    "prctl",
    "prlimit64",
    "read",
    "readlink",
    "recvfrom",
    "recvmsg",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "sched_getaffinity",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setsockopt",
    "shutdown",
    "sigaltstack",
    "signalfd4",
    "socket",
    "socketpair",
    "statx",
    "wait4",
    "write",
];

/// stockade's own execs: the timeout kill script (`/bin/sh` reading /proc, `kill`, `sleep`) and
/// the OOM probe (`/bin/sh -c cat ...`), used where the agent cannot be (a remote engine).
/// Required: `dup2`, `pipe2` (command substitution), `geteuid`, `kill`.
pub const STOCKADE_EXECS: &[&str] = &[
    "clock_nanosleep",
    "clone",
    "dup2",
    "fadvise64",
    "fcntl",
    "getcwd",
    "getegid",
    "geteuid",
    "getgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getuid",
    "ioctl",
    "kill",
    "lseek",
    "newfstatat",
    "pipe2",
    "rt_sigaction",
    "rt_sigprocmask",
    "sysinfo",
    "uname",
    "wait4",
];

/// Without these a process cannot end or return from a signal handler (lint:
/// `syscall-essential-blocked`). `rt_sigreturn` is required: runc init takes SIGURG.
/// `restart_syscall` is how the kernel resumes an interrupted sleep or wait after a stop and
/// continue; it only ever resumes a call that was already allowed, and whether a run needs it
/// depends on timing, not on the workload.
pub const ESSENTIAL: &[&str] = &["exit", "exit_group", "restart_syscall", "rt_sigreturn"];

/// aarch64 has only the `*at` and `p*` forms of some calls above; these stand in for `access`,
/// `readlink`, `getpgrp`, `dup2` and `pause` there. Not measured on aarch64: `profile record
/// --verify` is the check.
pub const AARCH64_EQUIVALENTS: &[&str] = &["dup3", "faccessat", "getpgid", "ppoll", "readlinkat"];

/// The baseline for `arch`: every list above (the aarch64 stand-ins only there), keeping the
/// names that are syscalls on `arch`.
pub fn runtime_baseline(arch: Arch) -> BTreeSet<String> {
    let arch_specific: &[&str] = match arch {
        Arch::X86_64 => &[],
        Arch::Aarch64 => AARCH64_EQUIVALENTS,
    };
    [
        RUNC_INIT,
        GO_RUNTIME,
        CONTAINER_INIT,
        KEEPER,
        AGENT,
        STOCKADE_EXECS,
        ESSENTIAL,
        arch_specific,
    ]
    .iter()
    .flat_map(|list| list.iter())
    .filter(|name| syscall_number(arch, name).is_some())
    .map(|name| name.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_syscall_somewhere_and_lists_are_sorted() {
        for list in [
            RUNC_INIT,
            CONTAINER_INIT,
            KEEPER,
            AGENT,
            STOCKADE_EXECS,
            ESSENTIAL,
            AARCH64_EQUIVALENTS,
        ] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?} unsorted");
            for name in list {
                assert!(super::super::is_known_syscall(name), "{name}");
            }
        }
    }

    #[test]
    fn baseline_keeps_what_starts_and_ends_a_container() {
        for arch in Arch::ALL {
            let b = runtime_baseline(arch);
            for name in [
                "execve",
                "exit_group",
                "rt_sigreturn",
                "clone",
                "wait4",
                "kill",
            ] {
                assert!(b.contains(name), "{arch}: {name}");
            }
            // The agent's channel and its command's exit.
            for name in ["socket", "accept4", "recvmsg", "signalfd4", "prctl"] {
                assert!(b.contains(name), "{arch}: {name}");
            }
            assert!(!b.contains("mount") && !b.contains("unshare") && !b.contains("ptrace"));
        }
        // x86_64-only names drop out on aarch64 and their stand-ins come in.
        let arm = runtime_baseline(Arch::Aarch64);
        assert!(!arm.contains("arch_prctl") && arm.contains("faccessat"));
        let x86 = runtime_baseline(Arch::X86_64);
        assert!(x86.contains("pause") && !x86.contains("ppoll"));
    }
}
