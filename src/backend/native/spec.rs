//! A sandbox spec in the native backend's terms: the [`Setup`] `stockade-agent init` executes.
//! Pure: the whole set-up is a value, tested as one. What Docker and runc apply by default is
//! spelled out here, with where it comes from, so both backends give the same sandbox.

use std::path::Path;
use std::str::FromStr;

use stockade_proto::setup::{IdMap, Rlimit, Root, Setup, Step};

use super::host::{Cgroups, Host};
use super::NativeError;
use crate::agent::{AGENT_IN_CONTAINER, RUN_DIR_IN_CONTAINER};
use crate::backend::{Network, SandboxSpec};

/// Paths moby masks in every container (moby `oci/defaults.go`, `MaskedPaths`): a file gets
/// `/dev/null` over it, a directory an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths moby makes read-only in every container (`ReadonlyPaths`).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// The device nodes of a container's /dev (runc's default devices): name, major, minor. Made
/// with mknod (mode 0666) as runc does; in a user namespace, where a node cannot be made,
/// the host's are bound instead (as bubblewrap does).
pub const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
/// runc's default /dev symlinks.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
];
/// The sandbox's hostname, the same word as its /etc/hostname.
pub const HOSTNAME: &str = "sandbox";
/// A read-only root's overlay only ever holds mount points.
const READ_ONLY_ROOT_BYTES: u64 = 1 << 20;

/// The resource limits every sandbox starts with (Docker's come from the daemon's own, which
/// vary by host; these are fixed so a sandbox is the same everywhere): no core dumps (a
/// `core_pattern` pipe runs a helper on the host), and a descriptor limit.
pub const RLIMITS: &[(u32, u64, u64)] = &[
    (libc::RLIMIT_CORE, 0, 0),
    (libc::RLIMIT_NOFILE, 65_536, 65_536),
    (libc::RLIMIT_MEMLOCK, 8 << 20, 8 << 20),
];

const PROC_FLAGS: u64 = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
const RO_FLAGS: u64 = libc::MS_RDONLY | PROC_FLAGS;

/// Where a set-up's host-side pieces are.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    /// The unpacked image.
    pub lower: &'a Path,
    /// An empty directory for the overlay's tmpfs.
    pub staging: &'a Path,
    /// The control socket.
    pub control: &'a Path,
}

fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> Step {
    Step::Mount {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        flags,
        data: data.into(),
    }
}

/// The capabilities' bit mask (names as `CAP_*`, checked at profile load).
pub fn capability_mask(names: &std::collections::BTreeSet<String>) -> Result<u64, NativeError> {
    names.iter().try_fold(0u64, |mask, name| {
        let cap = caps::Capability::from_str(name).map_err(|_| NativeError::Unsupported {
            option: "capabilities",
            why: format!("{name} is not a capability this build knows"),
        })?;
        Ok(mask | cap.bitmask())
    })
}

/// /proc, /dev, /sys and the cgroup, as runc mounts them for Docker.
fn standard_mounts(host: &Host, user_ns: bool) -> Vec<Step> {
    let mut steps = vec![mount("proc", "/proc", "proc", PROC_FLAGS, "")];
    steps.extend(
        MASKED_PATHS
            .iter()
            .filter(|p| p.starts_with("/proc/"))
            .map(|p| Step::Mask {
                target: p.as_bytes().to_vec(),
            }),
    );
    steps.extend(READONLY_PATHS.iter().map(|p| Step::ReadOnly {
        target: p.as_bytes().to_vec(),
    }));
    steps.push(mount(
        "tmpfs",
        "/dev",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    ));
    steps.extend(DEVICES.iter().map(|&(name, major, minor)| {
        let at = format!("/dev/{name}").into_bytes();
        if user_ns {
            Step::Bind {
                source: at.clone(),
                target: at,
                read_only: false,
            }
        } else {
            Step::Device {
                target: at,
                major,
                minor,
                mode: 0o666,
            }
        }
    }));
    steps.extend(DEV_LINKS.iter().map(|(at, to)| Step::Symlink {
        target: at.as_bytes().to_vec(),
        to: to.as_bytes().to_vec(),
    }));
    // The tty group (5) exists only outside a user namespace that maps the user alone.
    let pts = if user_ns {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    steps.push(mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        pts,
    ));
    steps.push(mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        PROC_FLAGS,
        "mode=1777,size=65536k",
    ));
    steps.push(mount("mqueue", "/dev/mqueue", "mqueue", PROC_FLAGS, ""));
    steps.push(mount("sysfs", "/sys", "sysfs", RO_FLAGS, ""));
    steps.extend(
        MASKED_PATHS
            .iter()
            .filter(|p| p.starts_with("/sys/"))
            .map(|p| Step::Mask {
                target: p.as_bytes().to_vec(),
            }),
    );
    // The sandbox's own cgroup (the cgroup namespace makes it the root), read-only: the agent
    // reads its limit counters there.
    match &host.cgroups {
        Cgroups::V2 { .. } => {
            steps.push(mount("cgroup2", "/sys/fs/cgroup", "cgroup2", RO_FLAGS, ""))
        }
        Cgroups::V1 { hierarchies, .. } => {
            steps.push(mount(
                "tmpfs",
                "/sys/fs/cgroup",
                "tmpfs",
                PROC_FLAGS,
                "mode=755,size=64k",
            ));
            for h in hierarchies {
                steps.push(mount(
                    "cgroup",
                    &format!("/sys/fs/cgroup/{}", h.controller),
                    "cgroup",
                    RO_FLAGS,
                    &h.options,
                ));
            }
            steps.push(Step::RemountReadOnly {
                target: b"/sys/fs/cgroup".to_vec(),
            });
        }
    }
    steps
}

/// The first profile option the native backend cannot honour (a named network, an image
/// other than stockade's base image), as the error that names it.
pub fn unsupported(network: &Network, image: &str) -> Option<NativeError> {
    if let Network::Named(name) = network {
        return Some(NativeError::Unsupported {
            option: "network",
            why: format!(
                "{name:?}: the native backend gives a sandbox only its own loopback \
                 (network = \"none\"); use --backend docker for a named network"
            ),
        });
    }
    let base = crate::backend::docker::image::base_image_ref();
    if image != base {
        return Some(NativeError::Unsupported {
            option: "image",
            why: format!(
                "{image}: the native backend runs only stockade's base image ({base}), which it \
                 builds from the host's files; use --backend docker for other images"
            ),
        });
    }
    None
}

/// The set-up of `spec`'s sandbox. `home` is the sandbox user's home in the image;
/// `seccomp` the programs compiled from the profile's file.
pub fn render(
    spec: &SandboxSpec,
    paths: Paths<'_>,
    host: &Host,
    home: &str,
    seccomp: Vec<Vec<u8>>,
) -> Result<Setup, NativeError> {
    if let Some(e) = unsupported(&spec.network, &spec.image) {
        return Err(e);
    }
    let Some(agent) = &spec.agent else {
        return Err(NativeError::Unsupported {
            option: "agent",
            why: "the native backend runs every command through stockade's agent".to_string(),
        });
    };
    let user_ns = (!host.root()).then_some(IdMap {
        outside_uid: host.uid,
        outside_gid: host.gid,
    });
    let mut steps = standard_mounts(host, user_ns.is_some());
    for t in &spec.tmpfs {
        let exec = if t.exec { 0 } else { libc::MS_NOEXEC };
        steps.push(mount(
            "tmpfs",
            &t.path,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | exec,
            &format!(
                "size={},mode={:o},uid={},gid={}",
                t.size_bytes, t.mode, t.owner.uid, t.owner.gid
            ),
        ));
    }
    steps.extend(spec.binds.iter().map(|b| Step::Bind {
        source: b.source.as_bytes().to_vec(),
        target: b.target.as_bytes().to_vec(),
        read_only: b.read_only,
    }));
    for (source, target) in [
        (&agent.binary, AGENT_IN_CONTAINER),
        (&agent.run_dir, RUN_DIR_IN_CONTAINER),
        (&agent.hostname, "/etc/hostname"),
    ] {
        steps.push(Step::Bind {
            source: bytes(source),
            target: target.as_bytes().to_vec(),
            read_only: true,
        });
    }
    if spec.read_only_root {
        steps.push(Step::RemountReadOnly {
            target: b"/".to_vec(),
        });
    }
    Ok(Setup {
        control: bytes(paths.control),
        user_ns,
        root: Root {
            lower: bytes(paths.lower),
            staging: bytes(paths.staging),
            size_bytes: if spec.read_only_root {
                READ_ONLY_ROOT_BYTES
            } else {
                // A writable root is memory, charged to the sandbox's cgroup like its tmpfs.
                spec.limits.memory_bytes.max(0) as u64
            },
        },
        steps,
        read_only_root: spec.read_only_root,
        hostname: HOSTNAME.into(),
        uid: spec.user.uid,
        gid: spec.user.gid,
        capabilities: capability_mask(&spec.capabilities)?,
        seccomp,
        rlimits: RLIMITS
            .iter()
            .map(|&(resource, soft, hard)| Rlimit {
                resource,
                soft,
                hard,
            })
            .collect(),
        // What a `docker exec` of the agent gets: the image's PATH, the hostname, the user's
        // home from the image's /etc/passwd.
        env: vec![
            format!("PATH={}", crate::backend::docker::image::IMAGE_PATH).into_bytes(),
            format!("HOSTNAME={HOSTNAME}").into_bytes(),
            format!("HOME={home}").into_bytes(),
        ],
    })
}

/// The home directory of `uid` in an image's /etc/passwd text (`/` when it has none, as
/// runc does).
pub fn home_of(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_string())
        })
        .next()
        .unwrap_or_else(|| "/".to_string())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::backend::native::host::V1Hierarchy;
    use crate::plan::sandbox_spec;
    use crate::profile::{load, ProfileDirs};

    fn v1_host() -> Host {
        Host {
            uid: 0,
            gid: 0,
            cgroups: Cgroups::V1 {
                hierarchies: ["pids", "memory", "cpu"]
                    .into_iter()
                    .map(|c| V1Hierarchy {
                        controller: c,
                        mount: format!("/sys/fs/cgroup/{c}").into(),
                        options: c.to_string(),
                    })
                    .collect(),
                unified: None,
            },
        }
    }

    fn mounts() -> crate::agent::Mounts {
        crate::agent::Mounts {
            binary: "/state/agent/stockade-agent".into(),
            run_dir: "/state/sessions/s1/run".into(),
            hostname: "/state/agent/hostname".into(),
        }
    }

    fn paths() -> Paths<'static> {
        Paths {
            lower: Path::new("/images/layers/abc"),
            staging: Path::new("/state/native/x/root"),
            control: Path::new("/state/native/x/init.sock"),
        }
    }

    fn s(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn the_default_profile_renders_to_the_docker_sandbox() {
        let profile = load("default", &ProfileDirs::default()).unwrap();
        let spec = sandbox_spec(&profile, Some("s1"), "x", "5ea7e1d", Some(&mounts()));
        let setup = render(
            &spec,
            paths(),
            &v1_host(),
            "/home/sandbox",
            vec![vec![0; 8]],
        )
        .unwrap();
        let tmpfs = |at: &str, size: &str, exec: bool| Step::Mount {
            source: s("tmpfs"),
            target: s(at),
            fstype: s("tmpfs"),
            flags: libc::MS_NOSUID | libc::MS_NODEV | if exec { 0 } else { libc::MS_NOEXEC },
            data: format!("size={size},mode=1777,uid=65532,gid=65532").into_bytes(),
        };
        let bind_ro = |from: &str, to: &str| Step::Bind {
            source: s(from),
            target: s(to),
            read_only: true,
        };
        let tail: Vec<Step> = setup.steps[setup.steps.len() - 7..].to_vec();
        assert_eq!(
            tail,
            vec![
                tmpfs("/home/sandbox", "16777216", false),
                tmpfs("/tmp", "67108864", false),
                tmpfs("/workspace", "268435456", true),
                bind_ro("/state/agent/stockade-agent", "/run/stockade-agent"),
                bind_ro("/state/sessions/s1/run", "/run/stockade"),
                bind_ro("/state/agent/hostname", "/etc/hostname"),
                Step::RemountReadOnly { target: s("/") },
            ]
        );
        let expected = Setup {
            control: s("/state/native/x/init.sock"),
            user_ns: None,
            root: Root {
                lower: s("/images/layers/abc"),
                staging: s("/state/native/x/root"),
                size_bytes: READ_ONLY_ROOT_BYTES,
            },
            steps: setup.steps.clone(),
            read_only_root: true,
            hostname: s("sandbox"),
            uid: 65532,
            gid: 65532,
            capabilities: 0,
            seccomp: vec![vec![0; 8]],
            rlimits: vec![
                Rlimit {
                    resource: libc::RLIMIT_CORE,
                    soft: 0,
                    hard: 0,
                },
                Rlimit {
                    resource: libc::RLIMIT_NOFILE,
                    soft: 65536,
                    hard: 65536,
                },
                Rlimit {
                    resource: libc::RLIMIT_MEMLOCK,
                    soft: 8 << 20,
                    hard: 8 << 20,
                },
            ],
            env: vec![
                s("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                s("HOSTNAME=sandbox"),
                s("HOME=/home/sandbox"),
            ],
        };
        assert_eq!(setup, expected);
        // Every masked and read-only path is there, and /proc comes first.
        assert_eq!(
            setup.steps[0],
            mount("proc", "/proc", "proc", PROC_FLAGS, "")
        );
        for p in MASKED_PATHS {
            assert!(setup.steps.contains(&Step::Mask { target: s(p) }), "{p}");
        }
        for p in READONLY_PATHS {
            assert!(
                setup.steps.contains(&Step::ReadOnly { target: s(p) }),
                "{p}"
            );
        }
        assert!(setup.steps.contains(&mount(
            "cgroup",
            "/sys/fs/cgroup/pids",
            "cgroup",
            RO_FLAGS,
            "pids"
        )));
        assert!(setup.steps.contains(&Step::Device {
            target: s("/dev/null"),
            major: 1,
            minor: 3,
            mode: 0o666
        }));
        // The encoding round-trips through the init's decoder.
        assert_eq!(Setup::decode(&setup.encode()), Ok(setup));
    }

    #[test]
    fn elevated_keeps_its_capabilities_and_a_writable_root_and_a_user_gets_a_namespace() {
        let profile = load("elevated", &ProfileDirs::default()).unwrap();
        let spec = sandbox_spec(&profile, None, "x", "5ea7e1d", Some(&mounts()));
        let mut host = v1_host();
        host.uid = 1000;
        host.gid = 1000;
        host.cgroups = Cgroups::V2 {
            mount: "/sys/fs/cgroup".into(),
            base: "/sys/fs/cgroup/stockade".into(),
        };
        let setup = render(&spec, paths(), &host, "/root", vec![]).unwrap();
        assert!(!setup.read_only_root);
        assert!(!setup
            .steps
            .contains(&Step::RemountReadOnly { target: s("/") }));
        assert_eq!(setup.root.size_bytes, 2 << 30);
        assert_eq!(
            setup.user_ns,
            Some(IdMap {
                outside_uid: 1000,
                outside_gid: 1000
            })
        );
        let expected: u64 = [
            caps::Capability::CAP_CHOWN,
            caps::Capability::CAP_DAC_OVERRIDE,
            caps::Capability::CAP_FOWNER,
            caps::Capability::CAP_FSETID,
            caps::Capability::CAP_SETUID,
            caps::Capability::CAP_SETGID,
        ]
        .iter()
        .map(|c| c.bitmask())
        .sum();
        assert_eq!(setup.capabilities, expected);
        assert!(setup
            .steps
            .contains(&mount("cgroup2", "/sys/fs/cgroup", "cgroup2", RO_FLAGS, "")));
        assert!(setup.steps.contains(&mount(
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620"
        )));
        // No node can be made in a user namespace: the host's are bound.
        assert!(setup.steps.contains(&Step::Bind {
            source: s("/dev/null"),
            target: s("/dev/null"),
            read_only: false
        }));
        assert!(!setup
            .steps
            .iter()
            .any(|step| matches!(step, Step::Device { .. })));
    }

    #[test]
    fn a_named_network_is_an_error_naming_the_option() {
        let profile = load("default", &ProfileDirs::default()).unwrap();
        let mut spec = sandbox_spec(&profile, None, "x", "5ea7e1d", Some(&mounts()));
        spec.network = Network::Named("bridge".into());
        let err = render(&spec, paths(), &v1_host(), "/", vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("network"), "{err}");
    }

    #[test]
    fn home_comes_from_the_image_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nsandbox:x:65532:65532::/home/sandbox:/bin/bash\n";
        assert_eq!(home_of(passwd, 65532), "/home/sandbox");
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of(passwd, 7), "/");
    }
}
