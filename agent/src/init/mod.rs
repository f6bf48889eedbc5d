//! `stockade-agent init`: the native backend's sandbox, built from the host's [`Setup`] and
//! then held as its PID 1.
//!
//! The host starts this binary (the same static agent the sandbox runs, from the host's state
//! directory), moves it into the sandbox's cgroups and writes the encoded [`Setup`] on its
//! stdin. Then, single-threaded, so that every namespace call is allowed:
//!
//! 1. a user namespace when the host side is not root (mapping the sandbox's uid and gid to
//!    the host user's, the one mapping an unprivileged user may write), then new mount, pid,
//!    network, IPC, UTS and cgroup namespaces in one `unshare`; a namespace the kernel (or a
//!    surrounding container) refuses is named in the error, and nothing runs;
//! 2. a fork: the child is PID 1 of the new pid namespace. The parent says the child's host
//!    pid (`pid N`) and exits, so the sandbox outlives the command that made it (a session);
//! 3. the child builds the mount namespace ([`mounts`]): the image as the lower layer of an
//!    overlay, the host's steps in order (a fresh /proc with Docker's masked and read-only
//!    paths, /dev with only the usual nodes, sysfs and the cgroup, the profile's tmpfs and
//!    binds, the agent's mounts, the root remounted read-only), binds its control socket in
//!    the host's private directory, and pivots into the new root;
//! 4. hostname, loopback up (the only interface a new network namespace has), resource limits,
//!    no-new-privileges, non-dumpable, and capabilities cut to what it needs to start the
//!    agent as the sandbox user (SETPCAP, SETUID, SETGID, KILL) plus the profile's own;
//! 5. `ready`, and it serves the host's control requests ([`control`]): start the agent as the
//!    sandbox user under the profile's capabilities and seccomp filter ([`enter`]), end every
//!    process but itself, say it is alive. As PID 1 of the namespace it reaps every orphan,
//!    and no signal from inside the sandbox reaches it (the kernel drops those an init does
//!    not handle); its end ends every process of the namespace.

mod control;
mod enter;
mod mounts;
mod namespaces;

use std::io::{Read, Write};
use std::process::ExitCode;

use stockade_proto::setup::{Setup, INIT_ERROR, INIT_PID, INIT_READY};

/// An encoded set-up is a few KiB (the seccomp programs are most of it); more is not one.
const MAX_SETUP: u64 = 4 << 20;

/// Why the sandbox could not be built: what failed, as the error line says it.
#[derive(Debug)]
pub struct Failed(pub String);

impl Failed {
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Failed {
        Failed(format!("{what}: {e}"))
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn main() -> ExitCode {
    let mut encoded = Vec::new();
    if let Err(e) = std::io::stdin()
        .lock()
        .take(MAX_SETUP)
        .read_to_end(&mut encoded)
    {
        say(&format!("{INIT_ERROR}cannot read the set-up: {e}"));
        return ExitCode::from(1);
    }
    let setup = match Setup::decode(&encoded) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("{INIT_ERROR}the set-up does not decode: {e}"));
            return ExitCode::from(1);
        }
    };
    match namespaces::enter(&setup) {
        // The parent: the child is PID 1 of the sandbox; its host pid is the host's handle.
        Ok(namespaces::Forked::Parent(pid)) => {
            say(&format!("{INIT_PID}{pid}"));
            ExitCode::SUCCESS
        }
        Ok(namespaces::Forked::Child(sync)) => {
            // The parent's `pid` line goes first.
            namespaces::wait_for_parent(sync);
            match build(&setup) {
                Ok(listener) => {
                    say(INIT_READY);
                    control::serve(&setup, listener)
                }
                Err(Failed(why)) => {
                    say(&format!("{INIT_ERROR}{why}"));
                    ExitCode::from(1)
                }
            }
        }
        Err(Failed(why)) => {
            say(&format!("{INIT_ERROR}{why}"));
            ExitCode::from(1)
        }
    }
}

/// Everything after the fork, up to serving.
fn build(setup: &Setup) -> Result<std::os::unix::net::UnixListener, Failed> {
    let listener = mounts::build(setup)?;
    namespaces::finish(setup)?;
    enter::hold(setup)?;
    Ok(listener)
}
