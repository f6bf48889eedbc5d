//! stockade-agent: the part of stockade that runs inside a sandbox.
//!
//! It is a static binary with no dependency on the image it runs in, bind-mounted read-only and
//! execute-only (mode 0111) into every sandbox, and it runs under the sandbox's own seccomp
//! filter, capabilities, no-new-privileges and cgroup limits, as the sandbox user:
//!
//! - `serve --launch SOCKET`: the sandbox's agent. Reads the sandbox key from stdin, takes its
//!   listener from the host over SOCKET (see `launch`), then runs one command per connection
//!   (see `run`) and reports each under a MAC (see the `stockade-proto` crate).
//! - `keep`: the container's keeper process (the first child of the engine's init), which only
//!   waits; it runs as root with no capabilities, so the sandbox user cannot end it. In a pod
//!   it is PID 1 itself (no signal without a handler reaches it) and reaps every orphan.
//! - `kill --grace-ms N [--counters]`: ends every process of the calling user but the init, the
//!   keeper and itself (TERM, grace, KILL); exit 0 when all are gone, 3 when something survived
//!   KILL. With `--counters`, then prints the cgroup's counters of limits hit.
//! - `exec --cwd DIR [--env NAME=VALUE]... [--env-stdin BYTES] -- PROGRAM ARG...`: enters DIR,
//!   sets the variables (with `--env-stdin`, BYTES of NUL-separated entries read from stdin,
//!   which then becomes /dev/null: values kept out of the exec request's URL) and replaces
//!   itself with PROGRAM. A cluster's exec has no working directory or environment of its own;
//!   this gives a pod's command both (exit 125 when DIR cannot be entered).
//! - `init`: the native backend's sandbox, built from the host's set-up on stdin and held as
//!   its PID 1 (see `init`). It runs on the host, as the user running stockade, until it has
//!   entered the sandbox.

mod files;
mod init;
mod ipc;
mod launch;
mod procs;
mod run;
mod serve;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str =
    "usage: stockade-agent serve --launch SOCKET | keep | kill --grace-ms N [--counters] | init \
                     | exec --cwd DIR [--env NAME=VALUE]... [--env-stdin BYTES] -- PROGRAM [ARG]...";
/// `exec`'s exit code when the working directory cannot be entered (as the engines' own 125).
pub const EXEC_NO_WORKDIR: u8 = 125;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", "--launch", socket] => serve(PathBuf::from(socket)),
        ["init"] => init::main(),
        ["keep"] => keep(),
        ["exec", "--cwd", cwd, rest @ ..] => exec(cwd, rest),
        ["kill", "--grace-ms", ms] => kill(ms, false),
        ["kill", "--grace-ms", ms, "--counters"] => kill(ms, true),
        _ => usage(),
    }
}

/// `kill --grace-ms N [--counters]`: with `--counters`, once every other process of the user
/// is gone (none is left to forge it), prints the cgroup's counters of limits hit as
/// `FILE KEY VALUE` lines.
fn kill(ms: &str, counters: bool) -> ExitCode {
    let Ok(ms) = ms.parse::<u64>() else {
        return usage();
    };
    let spared = procs::Spared::find();
    let ending = procs::Ending::start(spared, Duration::from_millis(ms));
    if !ending.finish(&mut procs::Reaped::default()) {
        return ExitCode::from(stockade_proto::KILL_INCOMPLETE as u8);
    }
    if counters {
        let read = stockade_proto::cgroup::read(std::path::Path::new("/sys/fs/cgroup"));
        if let Some(n) = read.pids_max {
            println!("pids.events max {n}");
        }
        if let Some(n) = read.oom_kills {
            println!("memory.events oom_kill {n}");
        }
    }
    ExitCode::SUCCESS
}

/// The keeper. As a container's PID 1 (a pod, which has no init of the engine's) it also reaps
/// every process that ends up its child: the orphans of each command re-parent to it, and
/// unreaped they would hold the pod's pids until nothing could fork.
fn keep() -> ExitCode {
    // Execute-only, the binary already makes it non-dumpable; said once more, so that no
    // process of the same user can open its /proc files (mem) whatever the image's mode.
    if let Err(e) = sys::set_non_dumpable() {
        eprintln!("stockade-agent: cannot make itself non-dumpable: {e}");
        return ExitCode::from(1);
    }
    // SAFETY: getpid has no preconditions.
    let pid1 = unsafe { libc::getpid() } == 1;
    // SAFETY: sigset_t is plain data, initialized by sigemptyset before use; the calls take
    // pointers to sets we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if pid1 {
            // Blocked, SIGCHLD stays pending until sigwaitinfo takes it: no exit is missed
            // between the reaping and the wait.
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        loop {
            if pid1 {
                let mut status = 0;
                while libc::waitpid(-1, &mut status, libc::WNOHANG) > 0 {}
                libc::sigwaitinfo(&set, std::ptr::null_mut());
            } else {
                // It returns only when a signal was caught.
                libc::pause();
            }
        }
    }
}

/// The largest environment block `exec --env-stdin` takes.
const MAX_ENV_BLOCK: usize = 1 << 20;

/// Reads exactly `len` bytes of NUL-separated `NAME=VALUE` entries from stdin, then puts
/// /dev/null in its place: the stream it came on never ends, and the command must not wait
/// on it.
fn env_from_stdin(len: usize) -> Result<Vec<(String, String)>, String> {
    use std::io::Read;
    if len > MAX_ENV_BLOCK {
        return Err(format!(
            "an environment block of {len} bytes is more than {MAX_ENV_BLOCK}"
        ));
    }
    let mut block = vec![0u8; len];
    std::io::stdin()
        .lock()
        .read_exact(&mut block)
        .map_err(|e| format!("cannot read the environment block: {e}"))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: both descriptors are open; dup2 replaces fd 0 atomically.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(format!(
            "cannot replace stdin: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut env = Vec::new();
    for entry in block.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry =
            String::from_utf8(entry.to_vec()).map_err(|_| "an entry is not UTF-8".to_string())?;
        match entry.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                env.push((name.to_string(), value.to_string()))
            }
            _ => return Err("an entry is not NAME=VALUE".to_string()),
        }
    }
    Ok(env)
}

/// `exec --cwd DIR [--env NAME=VALUE]... [--env-stdin BYTES] -- PROGRAM ARG...`.
fn exec(cwd: &str, rest: &[&str]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut rest = rest;
    loop {
        match rest {
            ["--env", entry, tail @ ..] => match entry.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    env.push((name.to_string(), value.to_string()));
                    rest = tail;
                }
                _ => return usage(),
            },
            ["--env-stdin", len, tail @ ..] => {
                let Ok(len) = len.parse::<usize>() else {
                    return usage();
                };
                match env_from_stdin(len) {
                    Ok(more) => env.extend(more),
                    Err(e) => {
                        eprintln!("stockade-agent: {e}");
                        return ExitCode::from(2);
                    }
                }
                rest = tail;
            }
            ["--", program, args @ ..] => {
                if let Err(e) = std::env::set_current_dir(cwd) {
                    eprintln!("stockade-agent: cannot enter the working directory {cwd}: {e}");
                    return ExitCode::from(EXEC_NO_WORKDIR);
                }
                let e = std::process::Command::new(program)
                    .args(args)
                    .envs(env)
                    .exec();
                eprintln!("stockade-agent: cannot run {program}: {e}");
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                return ExitCode::from(code);
            }
            _ => return usage(),
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn serve(socket: PathBuf) -> ExitCode {
    if let Err(e) = sys::set_non_dumpable() {
        eprintln!("stockade-agent: cannot make itself non-dumpable: {e}");
        return ExitCode::from(1);
    }
    let launched = match launch::launch(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stockade-agent: launch failed: {e}");
            return ExitCode::from(1);
        }
    };
    // Everything a command starts stays the agent's descendant, and its exits wake the agent.
    if let Err(e) = procs::become_subreaper() {
        eprintln!("stockade-agent: cannot become a subreaper: {e}");
        return ExitCode::from(1);
    }
    let sigchld = match sys::sigchld_fd() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("stockade-agent: cannot watch for exiting children: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", stockade_proto::READY);
    // The host stops reading once it has seen READY; nothing may be written there afterwards.
    if let Err(e) = sys::silence_stdio() {
        eprintln!("stockade-agent: cannot detach from the launch exec: {e}");
        return ExitCode::from(1);
    }
    let held = run::Held {
        key: launched.key,
        sigchld,
        counters: stockade_proto::cgroup::Files::open(std::path::Path::new("/sys/fs/cgroup")),
    };
    serve::serve(held, launched.listener)
}
