//! The native backend's sandbox, as the host asks `stockade-agent init` to build it, and the
//! control messages between the host and that init afterwards.
//!
//! The host renders everything that depends on the profile (every mount, the capabilities, the
//! seccomp programs compiled from the profile's file, the limits) into one [`Setup`]; the init
//! only executes it, in order, and refuses what it cannot do. Nothing of the sandbox's shape is
//! decided inside it.
//!
//! The control channel is one request per connection on a socket the init binds, before it
//! pivots, in the host's private channel directory: no process of the sandbox can reach it.

use crate::codec::{DecodeError, Reader, Writer};

/// Steps in one set-up at most (a profile has a few tmpfs and binds; the fixed layout ~40).
pub const MAX_STEPS: usize = 1024;
/// Seccomp programs at most (one per distinct action of the profile, plus the base).
pub const MAX_FILTERS: usize = 32;
/// The kernel's limit on one classic BPF program (BPF_MAXINSNS), in instructions.
pub const MAX_FILTER_INSNS: usize = 4096;
/// Bytes of one `struct sock_filter`.
pub const SOCK_FILTER_LEN: usize = 8;
/// Environment entries of the agent at most.
pub const MAX_ENV: usize = 64;
/// Resource limits at most (there are 16 kinds).
pub const MAX_RLIMITS: usize = 16;

/// How the init reports on its stdout: `pid N` (its pid on the host), then `ready` or
/// `error: WHY`.
pub const INIT_PID: &str = "pid ";
pub const INIT_READY: &str = "ready";
pub const INIT_ERROR: &str = "error: ";

/// One mount-namespace step, run before `pivot_root`. Targets are paths inside the sandbox
/// (absolute, under the new root); sources of binds are host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mount(source, target, fstype, flags, data)`; the target is created (a directory) first.
    Mount {
        source: Vec<u8>,
        target: Vec<u8>,
        fstype: Vec<u8>,
        flags: u64,
        data: Vec<u8>,
    },
    /// A bind of a host path (a directory or a file; the target is made to match), read-only
    /// when asked. Recursive, so a bound tree keeps its own mounts.
    Bind {
        source: Vec<u8>,
        target: Vec<u8>,
        read_only: bool,
    },
    /// Docker's masked paths: a file gets `/dev/null` over it, a directory an empty read-only
    /// tmpfs; a path the kernel does not have is skipped (as runc does).
    Mask { target: Vec<u8> },
    /// Docker's read-only paths: bound onto themselves, read-only; skipped when absent.
    ReadOnly { target: Vec<u8> },
    /// Remounts a mount read-only, keeping its other flags (the root at the end).
    RemountReadOnly { target: Vec<u8> },
    /// A symbolic link at `target` pointing to `to`.
    Symlink { target: Vec<u8>, to: Vec<u8> },
    /// A character device node (`mknod`), with exactly `mode`'s permission bits.
    Device {
        target: Vec<u8>,
        major: u32,
        minor: u32,
        mode: u32,
    },
}

/// What the sandbox's root filesystem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The unpacked image on the host (never written: the overlay's lower layer).
    pub lower: Vec<u8>,
    /// An empty host directory the init mounts a tmpfs on, for the overlay's upper layer,
    /// its work directory and the merged root (all in the sandbox's mount namespace only).
    pub staging: Vec<u8>,
    /// Size of that tmpfs: what a writable root may take.
    pub size_bytes: u64,
}

/// The identity the user namespace maps, when the host side is not root: the sandbox's uid
/// and gid inside are the host user's outside (a user may map only itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub outside_uid: u32,
    pub outside_gid: u32,
}

/// A resource limit: `resource` is the `RLIMIT_*` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Everything `stockade-agent init` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Where to bind the control socket (a host path in the private channel directory).
    pub control: Vec<u8>,
    /// `None` when the host side is root (no user namespace is needed).
    pub user_ns: Option<IdMap>,
    pub root: Root,
    pub steps: Vec<Step>,
    pub read_only_root: bool,
    pub hostname: Vec<u8>,
    /// The sandbox user, as every process started in it runs.
    pub uid: u32,
    pub gid: u32,
    /// The capabilities (bit numbers as a mask) processes in the sandbox may hold; for a
    /// non-root user they are only the bounding set, so none is effective after exec.
    pub capabilities: u64,
    /// Each program is an array of `struct sock_filter`, installed in order, last thing
    /// before exec.
    pub seccomp: Vec<Vec<u8>>,
    pub rlimits: Vec<Rlimit>,
    /// The agent's environment (`NAME=VALUE`).
    pub env: Vec<Vec<u8>>,
}

/// The flag bits of `mount(2)` a step may carry; anything else is refused at decode.
pub const MOUNT_FLAGS: u64 = 0x1 // MS_RDONLY
    | 0x2 // MS_NOSUID
    | 0x4 // MS_NODEV
    | 0x8 // MS_NOEXEC
    | 0x400 // MS_NOATIME
    | 0x800 // MS_NODIRATIME
    | 0x0020_0000 // MS_RELATIME
    | 0x0100_0000; // MS_STRICTATIME

fn put_step(w: &mut Writer, step: &Step) {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            w.u8(0)
                .bytes(source)
                .bytes(target)
                .bytes(fstype)
                .u64(*flags)
                .bytes(data);
        }
        Step::Bind {
            source,
            target,
            read_only,
        } => {
            w.u8(1).bytes(source).bytes(target).bool(*read_only);
        }
        Step::Mask { target } => {
            w.u8(2).bytes(target);
        }
        Step::ReadOnly { target } => {
            w.u8(3).bytes(target);
        }
        Step::RemountReadOnly { target } => {
            w.u8(4).bytes(target);
        }
        Step::Symlink { target, to } => {
            w.u8(5).bytes(target).bytes(to);
        }
        Step::Device {
            target,
            major,
            minor,
            mode,
        } => {
            w.u8(6).bytes(target).u32(*major).u32(*minor).u32(*mode);
        }
    }
}

fn get_step(r: &mut Reader<'_>) -> Result<Step, DecodeError> {
    Ok(match r.u8("step")? {
        0 => {
            let step = Step::Mount {
                source: r.bytes("source")?,
                target: r.bytes("target")?,
                fstype: r.bytes("fstype")?,
                flags: r.u64("flags")?,
                data: r.bytes("data")?,
            };
            if let Step::Mount { flags, .. } = &step {
                if flags & !MOUNT_FLAGS != 0 {
                    return Err(DecodeError::Invalid { field: "flags" });
                }
            }
            step
        }
        1 => Step::Bind {
            source: r.bytes("source")?,
            target: r.bytes("target")?,
            read_only: r.bool("read_only")?,
        },
        2 => Step::Mask {
            target: r.bytes("target")?,
        },
        3 => Step::ReadOnly {
            target: r.bytes("target")?,
        },
        4 => Step::RemountReadOnly {
            target: r.bytes("target")?,
        },
        5 => Step::Symlink {
            target: r.bytes("target")?,
            to: r.bytes("to")?,
        },
        6 => {
            let step = Step::Device {
                target: r.bytes("target")?,
                major: r.u32("major")?,
                minor: r.u32("minor")?,
                mode: r.u32("mode")?,
            };
            if matches!(step, Step::Device { mode, .. } if mode & !0o777 != 0) {
                return Err(DecodeError::Invalid { field: "mode" });
            }
            step
        }
        _ => return Err(DecodeError::Invalid { field: "step" }),
    })
}

/// A path a step may name: absolute, no NUL, no `..` component (the new root's layout is the
/// host's to decide, not a path's to escape).
fn valid_target(path: &[u8]) -> bool {
    path.first() == Some(&b'/')
        && !path.contains(&0)
        && !path.split(|b| *b == b'/').any(|part| part == b"..")
}

fn step_targets(step: &Step) -> Vec<&[u8]> {
    match step {
        Step::Mount { target, .. }
        | Step::Mask { target }
        | Step::ReadOnly { target }
        | Step::RemountReadOnly { target }
        | Step::Symlink { target, .. }
        | Step::Device { target, .. } => vec![target],
        Step::Bind { source, target, .. } => vec![source, target],
    }
}

impl Setup {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.control);
        match &self.user_ns {
            None => {
                w.bool(false).u32(0).u32(0);
            }
            Some(m) => {
                w.bool(true).u32(m.outside_uid).u32(m.outside_gid);
            }
        }
        w.bytes(&self.root.lower)
            .bytes(&self.root.staging)
            .u64(self.root.size_bytes);
        w.u32(self.steps.len() as u32);
        for step in &self.steps {
            put_step(&mut w, step);
        }
        w.bool(self.read_only_root)
            .bytes(&self.hostname)
            .u32(self.uid)
            .u32(self.gid)
            .u64(self.capabilities)
            .list(&self.seccomp);
        w.u32(self.rlimits.len() as u32);
        for l in &self.rlimits {
            w.u32(l.resource).u64(l.soft).u64(l.hard);
        }
        w.list(&self.env).finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Setup, DecodeError> {
        let mut r = Reader::new(bytes);
        let control = r.bytes("control")?;
        let has_ns = r.bool("user_ns")?;
        let (outside_uid, outside_gid) = (r.u32("outside_uid")?, r.u32("outside_gid")?);
        if !has_ns && (outside_uid, outside_gid) != (0, 0) {
            return Err(DecodeError::Invalid { field: "user_ns" });
        }
        let user_ns = has_ns.then_some(IdMap {
            outside_uid,
            outside_gid,
        });
        let root = Root {
            lower: r.bytes("lower")?,
            staging: r.bytes("staging")?,
            size_bytes: r.u64("size_bytes")?,
        };
        let count = r.u32("steps")? as usize;
        if count > MAX_STEPS {
            return Err(DecodeError::TooMany {
                field: "steps",
                limit: MAX_STEPS,
            });
        }
        let steps = (0..count)
            .map(|_| get_step(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        let read_only_root = r.bool("read_only_root")?;
        let hostname = r.bytes("hostname")?;
        let uid = r.u32("uid")?;
        let gid = r.u32("gid")?;
        let capabilities = r.u64("capabilities")?;
        let seccomp = r.list("seccomp", MAX_FILTERS)?;
        let count = r.u32("rlimits")? as usize;
        if count > MAX_RLIMITS {
            return Err(DecodeError::TooMany {
                field: "rlimits",
                limit: MAX_RLIMITS,
            });
        }
        let rlimits = (0..count)
            .map(|_| {
                Ok(Rlimit {
                    resource: r.u32("resource")?,
                    soft: r.u64("soft")?,
                    hard: r.u64("hard")?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let env = r.list("env", MAX_ENV)?;
        r.end()?;
        let setup = Setup {
            control,
            user_ns,
            root,
            steps,
            read_only_root,
            hostname,
            uid,
            gid,
            capabilities,
            seccomp,
            rlimits,
            env,
        };
        setup.validate()?;
        Ok(setup)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let paths = [&self.control, &self.root.lower, &self.root.staging];
        if !paths.iter().all(|p| valid_target(p)) {
            return Err(DecodeError::Invalid { field: "root" });
        }
        if !self.steps.iter().flat_map(step_targets).all(valid_target) {
            return Err(DecodeError::Invalid { field: "target" });
        }
        let program_ok = |p: &Vec<u8>| {
            !p.is_empty()
                && p.len() % SOCK_FILTER_LEN == 0
                && p.len() / SOCK_FILTER_LEN <= MAX_FILTER_INSNS
        };
        if !self.seccomp.iter().all(program_ok) {
            return Err(DecodeError::Invalid { field: "seccomp" });
        }
        if self.hostname.is_empty() || self.hostname.len() > 64 || self.hostname.contains(&0) {
            return Err(DecodeError::Invalid { field: "hostname" });
        }
        if self
            .env
            .iter()
            .any(|e| e.contains(&0) || !e.contains(&b'='))
        {
            return Err(DecodeError::Invalid { field: "env" });
        }
        Ok(())
    }
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Is the init there? Answered with [`Reply::Alive`].
    Ping,
    /// Start the agent with this command line (inside paths), its stdin and stdout being the
    /// two descriptors passed with the request (SCM_RIGHTS), after ending every process left
    /// in the sandbox (TERM, `grace_ms`, KILL).
    Launch { argv: Vec<Vec<u8>>, grace_ms: u64 },
    /// The kill rule from outside: every process but the init gets TERM, `grace_ms` to go,
    /// then KILL until none is left.
    Kill { grace_ms: u64 },
}

/// The init's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Alive,
    /// The agent was started.
    Launched,
    /// Whether every process was seen gone.
    Killed {
        complete: bool,
    },
    /// The request could not be carried out (UTF-8 reason).
    Failed {
        reason: Vec<u8>,
    },
}

/// Frame tags on the control socket: a request from the host, the init's reply.
pub const CONTROL: u8 = b'C';
pub const REPLY: u8 = b'R';

/// Longest agent command line a launch carries.
pub const MAX_LAUNCH_ARGS: usize = 16;

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Control::Ping => w.u8(0),
            Control::Launch { argv, grace_ms } => w.u8(1).list(argv).u64(*grace_ms),
            Control::Kill { grace_ms } => w.u8(2).u64(*grace_ms),
        };
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Control, DecodeError> {
        let mut r = Reader::new(bytes);
        let control = match r.u8("control")? {
            0 => Control::Ping,
            1 => {
                let argv = r.list("argv", MAX_LAUNCH_ARGS)?;
                if argv.is_empty() || argv.iter().any(|a| a.contains(&0)) {
                    return Err(DecodeError::Invalid { field: "argv" });
                }
                Control::Launch {
                    argv,
                    grace_ms: r.u64("grace_ms")?,
                }
            }
            2 => Control::Kill {
                grace_ms: r.u64("grace_ms")?,
            },
            _ => return Err(DecodeError::Invalid { field: "control" }),
        };
        r.end()?;
        Ok(control)
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Reply::Alive => w.u8(0),
            Reply::Launched => w.u8(1),
            Reply::Killed { complete } => w.u8(2).bool(*complete),
            Reply::Failed { reason } => w.u8(3).bytes(reason),
        };
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Reply, DecodeError> {
        let mut r = Reader::new(bytes);
        let reply = match r.u8("reply")? {
            0 => Reply::Alive,
            1 => Reply::Launched,
            2 => Reply::Killed {
                complete: r.bool("complete")?,
            },
            3 => Reply::Failed {
                reason: r.bytes("reason")?,
            },
            _ => return Err(DecodeError::Invalid { field: "reply" }),
        };
        r.end()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Setup {
        Setup {
            control: b"/state/sessions/s/init.sock".to_vec(),
            user_ns: Some(IdMap {
                outside_uid: 1000,
                outside_gid: 1000,
            }),
            root: Root {
                lower: b"/images/abc/rootfs".to_vec(),
                staging: b"/state/sessions/s/root".to_vec(),
                size_bytes: 1 << 20,
            },
            steps: vec![
                Step::Mount {
                    source: b"proc".to_vec(),
                    target: b"/proc".to_vec(),
                    fstype: b"proc".to_vec(),
                    flags: 0xe,
                    data: Vec::new(),
                },
                Step::Bind {
                    source: b"/dev/null".to_vec(),
                    target: b"/dev/null".to_vec(),
                    read_only: false,
                },
                Step::Mask {
                    target: b"/proc/kcore".to_vec(),
                },
                Step::ReadOnly {
                    target: b"/proc/sys".to_vec(),
                },
                Step::RemountReadOnly {
                    target: b"/".to_vec(),
                },
                Step::Symlink {
                    target: b"/dev/fd".to_vec(),
                    to: b"/proc/self/fd".to_vec(),
                },
                Step::Device {
                    target: b"/dev/null".to_vec(),
                    major: 1,
                    minor: 3,
                    mode: 0o666,
                },
            ],
            read_only_root: true,
            hostname: b"sandbox".to_vec(),
            uid: 65532,
            gid: 65532,
            capabilities: 0,
            seccomp: vec![vec![0u8; 16]],
            rlimits: vec![Rlimit {
                resource: 4,
                soft: 0,
                hard: 0,
            }],
            env: vec![b"PATH=/bin".to_vec()],
        }
    }

    #[test]
    fn setup_and_control_round_trip() {
        let s = sample();
        assert_eq!(Setup::decode(&s.encode()), Ok(s));
        for c in [
            Control::Ping,
            Control::Launch {
                argv: vec![b"/run/stockade-agent".to_vec()],
                grace_ms: 2000,
            },
            Control::Kill { grace_ms: 5 },
        ] {
            assert_eq!(Control::decode(&c.encode()), Ok(c));
        }
        for r in [
            Reply::Alive,
            Reply::Launched,
            Reply::Killed { complete: false },
            Reply::Failed {
                reason: b"no".to_vec(),
            },
        ] {
            assert_eq!(Reply::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn escaping_targets_odd_flags_and_bad_programs_are_refused() {
        let mut s = sample();
        s.steps.push(Step::Mask {
            target: b"/proc/../etc".to_vec(),
        });
        assert!(Setup::decode(&s.encode()).is_err());
        let mut s = sample();
        s.steps.push(Step::Mount {
            source: Vec::new(),
            target: b"/x".to_vec(),
            fstype: b"tmpfs".to_vec(),
            // MS_BIND is not a flag a mount step may carry (binds are their own step).
            flags: 0x1000,
            data: Vec::new(),
        });
        assert!(Setup::decode(&s.encode()).is_err());
        let mut s = sample();
        s.seccomp = vec![vec![0u8; 7]];
        assert!(Setup::decode(&s.encode()).is_err());
        let mut s = sample();
        s.control = b"relative".to_vec();
        assert!(Setup::decode(&s.encode()).is_err());
        assert!(Control::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn decoders_never_panic_on_noise() {
        let encoded = sample().encode();
        for cut in 0..encoded.len() {
            let _ = Setup::decode(&encoded[..cut]);
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(x % 200))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = Setup::decode(&bytes);
            let _ = Control::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }
    }
}
