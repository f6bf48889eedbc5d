//! What this host offers the native backend: who runs stockade, and which cgroup hierarchies
//! hold the controllers a sandbox's limits need. Read once per backend, from /proc.

use std::path::{Path, PathBuf};

use super::NativeError;

/// The controllers a sandbox's limits need: processes, memory (and its OOM counter), CPU.
pub const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];
/// The directory under each hierarchy's root (or the delegated cgroup) that holds stockade's
/// sandboxes, one cgroup each, named by the sandbox.
pub const CGROUP_DIR: &str = "stockade";
/// A mountinfo line is short; the file has one per mount.
const MAX_MOUNTINFO: u64 = 4 << 20;

/// One cgroup v1 hierarchy holding a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub controller: &'static str,
    /// Where the host mounts it.
    pub mount: PathBuf,
    /// Its mount options naming the controllers (`cpu` or `cpu,cpuacct`): the sandbox mounts
    /// the same hierarchy with exactly these.
    pub options: String,
}

/// The cgroup layout the sandboxes' limits are written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v2 with the controllers enabled: `base` is where sandboxes' cgroups go.
    V2 { mount: PathBuf, base: PathBuf },
    /// cgroup v1, a hierarchy per controller (in [`CONTROLLERS`] order); `unified` is the v2
    /// hierarchy of a hybrid host, used only for `cgroup.kill`.
    V1 {
        hierarchies: Vec<V1Hierarchy>,
        unified: Option<PathBuf>,
    },
}

impl Cgroups {
    pub fn is_v2(&self) -> bool {
        matches!(self, Cgroups::V2 { .. })
    }
}

/// The host, as far as the native backend is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub uid: u32,
    pub gid: u32,
    pub cgroups: Cgroups,
}

impl Host {
    /// Root needs no user namespace; anyone else gets one mapping only themselves.
    pub fn root(&self) -> bool {
        self.uid == 0
    }

    /// Probes this host.
    pub fn probe() -> Result<Host, NativeError> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open("/proc/self/mountinfo")
            .and_then(|f| f.take(MAX_MOUNTINFO).read_to_string(&mut text))
            .map_err(|e| NativeError::Host {
                what: format!("cannot read /proc/self/mountinfo: {e}"),
                fix: "the native backend needs /proc".to_string(),
            })?;
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let cgroups = layout(&parse_mountinfo(&text), &own, uid == 0, &|p: &Path| {
            std::fs::read_to_string(p).ok()
        })?;
        Ok(Host { uid, gid, cgroups })
    }
}

/// A cgroup mount: its mount point, whether it is v2, and its super options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub point: PathBuf,
    pub v2: bool,
    pub options: Vec<String>,
}

/// The cgroup mounts of a mountinfo text (proc(5): the mount point is field 5; after ` - `
/// come the type, the source and the super options).
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let point = head.split(' ').nth(4)?;
            let mut tail = tail.split(' ');
            let fstype = tail.next()?;
            let options = tail.nth(1).unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                point: PathBuf::from(unescape(point)),
                v2,
                options: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The path of this process's cgroup in the v2 hierarchy (`0::/PATH` in /proc/self/cgroup).
fn own_v2_cgroup(own: &str) -> Option<&str> {
    own.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Picks the layout: cgroup v2 when its root offers every controller, else the v1
/// hierarchies (root only: v1 cannot be delegated safely), else an error that says what the
/// host lacks.
pub fn layout(
    mounts: &[CgroupMount],
    own: &str,
    root: bool,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Result<Cgroups, NativeError> {
    let unified = mounts.iter().find(|m| m.v2).map(|m| m.point.clone());
    if let Some(mount) = &unified {
        let controllers = read(&mount.join("cgroup.controllers")).unwrap_or_default();
        let offered: Vec<&str> = controllers.split_whitespace().collect();
        if CONTROLLERS.iter().all(|c| offered.contains(c)) {
            let base = if root {
                mount.join(CGROUP_DIR)
            } else {
                // A user's own cgroup holds its processes, so its subtree is no place for
                // controllers; the parent is what a delegating manager (systemd's
                // `Delegate=yes`) hands the user.
                let own = own_v2_cgroup(own).unwrap_or("/");
                let parent = Path::new(own).parent().unwrap_or(Path::new("/"));
                mount
                    .join(parent.strip_prefix("/").unwrap_or(parent))
                    .join(CGROUP_DIR)
            };
            return Ok(Cgroups::V2 {
                mount: mount.clone(),
                base,
            });
        }
    }
    let hierarchies: Vec<V1Hierarchy> = CONTROLLERS
        .iter()
        .filter_map(|controller| {
            let m = mounts
                .iter()
                .find(|m| !m.v2 && m.options.iter().any(|o| o == controller))?;
            let names: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| is_controller_option(o))
                .collect();
            Some(V1Hierarchy {
                controller,
                mount: m.point.clone(),
                options: names.join(","),
            })
        })
        .collect();
    if hierarchies.len() != CONTROLLERS.len() {
        let missing: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !hierarchies.iter().any(|h| h.controller == *c))
            .collect();
        return Err(NativeError::Host {
            what: format!(
                "no cgroup hierarchy offers the {} controller(s) the sandbox's limits need",
                missing.join(", ")
            ),
            fix: "mount cgroup v2 (or the v1 controllers) at /sys/fs/cgroup; inside a \
                  container, give it a cgroup of its own it may write (docs/backends.md)"
                .to_string(),
        });
    }
    if !root {
        return Err(NativeError::Host {
            what: "this host has cgroup v1, whose limits only root may set".to_string(),
            fix: "run stockade as root, or on a cgroup v2 host with a delegated cgroup \
                  (systemd-run --user --scope -p Delegate=yes stockade ...), or use --backend docker"
                .to_string(),
        });
    }
    Ok(Cgroups::V1 {
        hierarchies,
        unified,
    })
}

/// v1 super options that name controllers (the rest are mount flags and `name=`).
fn is_controller_option(option: &str) -> bool {
    const FLAGS: &[&str] = &[
        "rw",
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "relatime",
        "noatime",
        "nodiratime",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    !FLAGS.contains(&option) && !option.contains('=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const HYBRID: &str = "\
26 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 26 0:26 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw,relatime shared:11 - cgroup cgroup rw,pids
34 30 0:30 / /sys/fs/cgroup/systemd rw,relatime shared:12 - cgroup cgroup rw,name=systemd
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime shared:13 - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_uses_v1_controllers_and_v2_for_kill() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 5);
        let read = |_: &Path| Some(String::new());
        let layout = layout(&mounts, "", true, &read).unwrap();
        assert_eq!(
            layout,
            Cgroups::V1 {
                hierarchies: vec![
                    V1Hierarchy {
                        controller: "pids",
                        mount: "/sys/fs/cgroup/pids".into(),
                        options: "pids".into()
                    },
                    V1Hierarchy {
                        controller: "memory",
                        mount: "/sys/fs/cgroup/memory".into(),
                        options: "memory".into()
                    },
                    V1Hierarchy {
                        controller: "cpu",
                        mount: "/sys/fs/cgroup/cpu".into(),
                        options: "cpu".into()
                    },
                ],
                unified: Some("/sys/fs/cgroup/unified".into()),
            }
        );
        // Not root: v1 cannot be used, and the error says what to do.
        let err = super::layout(&mounts, "", false, &read)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cgroup v1") && err.contains("root"), "{err}");
    }

    #[test]
    fn a_v2_host_with_controllers_uses_v2_and_a_user_gets_the_delegated_parent() {
        let text = "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let read = |_: &Path| Some("cpuset cpu io memory pids\n".to_string());
        let mounts = parse_mountinfo(text);
        assert_eq!(
            layout(&mounts, "0::/init.scope\n", true, &read).unwrap(),
            Cgroups::V2 {
                mount: "/sys/fs/cgroup".into(),
                base: "/sys/fs/cgroup/stockade".into()
            }
        );
        let own = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run.scope\n";
        assert_eq!(
            layout(&mounts, own, false, &read).unwrap(),
            Cgroups::V2 {
                mount: "/sys/fs/cgroup".into(),
                base:
                    "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/stockade"
                        .into()
            }
        );
        // Without the controllers there is nothing to write limits to.
        let bare = |_: &Path| Some("cpuset io\n".to_string());
        let err = super::layout(&mounts, own, true, &bare)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pids, memory, cpu"), "{err}");
    }

    #[test]
    fn shared_v1_hierarchies_keep_their_exact_options() {
        let text = "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let Cgroups::V1 { hierarchies, .. } =
            layout(&parse_mountinfo(text), "", true, &|_: &Path| None).unwrap()
        else {
            panic!("v1 expected");
        };
        assert_eq!(hierarchies[2].options, "cpu,cpuacct");
        assert_eq!(
            hierarchies[2].mount,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }
}
