//! OpenClaw's `docker.binds` entries (`host:container[:options]`, Docker's `-v` syntax) judged
//! for a stockade profile: what OpenClaw itself refuses (SCHEMA.md section 9a at load, 9b at
//! container create), what stockade refuses at load (runtime sockets and state by identity,
//! host system trees, sockets in a bound tree), and credentials directories anywhere.

use std::path::{Component, Path, PathBuf};

use crate::migrate::draft::Bind;
use crate::migrate::Status;
use crate::profile::{self, RUNTIME_DIRS, RUNTIME_SOCKETS};

/// Bind sources OpenClaw refuses at container create, with everything below them
/// (`validate-sandbox-security.ts`, SCHEMA.md 9b).
const OPENCLAW_BLOCKED: &[&str] = &[
    "/etc",
    "/private/etc",
    "/proc",
    "/sys",
    "/dev",
    "/root",
    "/boot",
    "/run",
    "/var/run",
    "/private/var/run",
];
/// Host trees stockade never binds (its profile loader's list).
const STOCKADE_BLOCKED: &[&str] = &["/etc", "/proc", "/sys", "/dev", "/boot"];
/// Runtime sockets OpenClaw names (stockade's own list has more; both are checked).
const OPENCLAW_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/private/var/run/docker.sock",
    "/run/docker.sock",
];
/// Directories that hold credentials: OpenClaw refuses its gateway HOME's since 2026-04-03
/// (`.aws .cargo .config .docker .gnupg .netrc .npm .ssh`); a migration does not know that
/// HOME, so it refuses them under any path, with the ones stockade's lint flags.
const CREDENTIAL_DIRS: &[&str] = &[
    ".aws",
    ".cargo",
    ".config",
    ".docker",
    ".gnupg",
    ".netrc",
    ".npm",
    ".ssh",
    ".kube",
    ".azure",
    ".git-credentials",
];
/// Container paths OpenClaw reserves for its own mounts.
const RESERVED_TARGETS: &[&str] = &["/workspace", "/agent"];
/// Mount options that change nothing a stockade bind could express or that only tune
/// performance (Docker Desktop's consistency flags, `nocopy` for volumes).
const HARMLESS_OPTIONS: &[&str] = &["nocopy", "consistent", "cached", "delegated"];
/// Propagation modes: stockade's binds are always private, which only narrows what is shared.
const PROPAGATION: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// What may be bound in one sandbox: OpenClaw's opt-ins and allowed roots.
#[derive(Debug, Clone)]
pub struct BindRules {
    /// `dangerouslyAllowExternalBindSources` in effect.
    pub external_ok: bool,
    /// `dangerouslyAllowReservedContainerTargets` in effect.
    pub reserved_ok: bool,
    /// The directories a bind source may lie in without the external opt-in (the agent
    /// workspace and the sandbox workspace root).
    pub roots: Vec<PathBuf>,
    pub home: Option<PathBuf>,
    pub engine_sockets: Vec<PathBuf>,
    /// OpenClaw's own workspace mount rather than a `docker.binds` entry: its reserved targets,
    /// allowed roots and list of blocked system paths do not apply (a workspace under `/root`
    /// is fine, `/root` is not); stockade's own refusals and credentials still do.
    pub own_mount: bool,
}

/// A judged bind.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: Status,
    pub reason: String,
    /// What the profile gets (possibly commented out); `None` when refused.
    pub bind: Option<Bind>,
}

fn refused(reason: impl Into<String>) -> Verdict {
    Verdict {
        status: Status::Refused,
        reason: reason.into(),
        bind: None,
    }
}

/// Lexical normalisation as OpenClaw does it (`.`, `..`, `//`, a trailing `/`).
pub fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Expands a leading `~` with `home`; `None` when there is a `~` and no home.
pub fn expand_home(path: &str, home: Option<&Path>) -> Option<String> {
    if path == "~" {
        return home.map(|h| h.display().to_string());
    }
    match path.strip_prefix("~/") {
        Some(rest) => home.map(|h| h.join(rest).display().to_string()),
        None => Some(path.to_string()),
    }
}

/// Why a host path must never be bound, whatever the opt-ins: the host itself, its system trees,
/// a runtime, credentials. `None` when nothing forbids it by name.
pub fn hazard(
    source: &Path,
    home: Option<&Path>,
    engine_sockets: &[PathBuf],
    openclaw_list: bool,
) -> Option<String> {
    if source == Path::new("/") {
        return Some(
            "/ is the whole host filesystem (OpenClaw refuses it at container create; stockade refuses it at load)"
                .to_string(),
        );
    }
    let sockets = OPENCLAW_SOCKETS
        .iter()
        .chain(RUNTIME_SOCKETS)
        .map(PathBuf::from)
        .chain(engine_sockets.iter().cloned());
    for socket in sockets {
        if source == socket {
            return Some(format!(
                "{} is the container runtime's socket: whoever holds it is root on the host (OpenClaw refuses it at container create; stockade refuses runtime sockets at load, by name and by identity)",
                socket.display()
            ));
        }
        if socket.starts_with(source) {
            return Some(format!(
                "it contains the container runtime's socket {}: root on the host",
                socket.display()
            ));
        }
    }
    for dir in RUNTIME_DIRS {
        if source.starts_with(dir) || Path::new(dir).starts_with(source) {
            return Some(format!(
                "it reaches the container runtime's state ({dir}): root on the host"
            ));
        }
    }
    let blocked = if openclaw_list {
        OPENCLAW_BLOCKED
    } else {
        STOCKADE_BLOCKED
    };
    for blocked in blocked {
        if source.starts_with(blocked) {
            return Some(format!(
                "it is under {blocked}, a host system path (OpenClaw refuses it at container create; stockade never binds host control files)"
            ));
        }
    }
    if let Some(dir) = source
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .find(|c| CREDENTIAL_DIRS.contains(c))
    {
        return Some(format!(
            "{dir} is a credentials directory (OpenClaw refuses its gateway HOME's since 2026-04-03): a sandboxed command could read or plant keys; copy in the one file a command needs instead"
        ));
    }
    if let Some(home) = home {
        if home.starts_with(source) {
            return Some(format!(
                "it contains the home directory {} and with it its credentials (.ssh, .aws, .config...)",
                home.display()
            ));
        }
    }
    None
}

/// Splits Docker's `-v` syntax: `host:container[:options]`.
fn split(spec: &str) -> Result<(&str, &str, Vec<&str>), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [source, target] => Ok((source, target, Vec::new())),
        [source, target, options] => Ok((source, target, options.split(',').collect())),
        _ => Err(format!(
            "{spec:?} is not host:container[:options] (Docker's -v syntax)"
        )),
    }
}

/// Judges one bind entry. `exists` says whether a host path exists here (a parameter so tests
/// decide it).
pub fn judge(spec: &str, rules: &BindRules, exists: &dyn Fn(&Path) -> bool) -> Verdict {
    if spec.trim().is_empty() {
        return refused("an empty bind (OpenClaw rejects it at load)");
    }
    let (source, target, options) = match split(spec) {
        Ok(parts) => parts,
        Err(why) => return refused(why),
    };
    if !source.starts_with('/') {
        return refused(format!(
            "{source:?} is not an absolute host path but a named volume or a relative path (OpenClaw rejects it at load); stockade binds only existing absolute host paths"
        ));
    }
    if !target.starts_with('/') {
        return refused(format!(
            "target {target:?} is not an absolute container path"
        ));
    }
    let source_path = normalize(source);
    if let Some(why) = hazard(
        &source_path,
        rules.home.as_deref(),
        &rules.engine_sockets,
        !rules.own_mount,
    ) {
        return refused(why);
    }
    let target_path = normalize(target);
    for forbidden in ["/proc", "/sys", "/dev"] {
        if target_path.starts_with(forbidden) {
            return refused(format!(
                "target {target:?} covers {forbidden}, the sandbox's own view of the kernel"
            ));
        }
    }
    if target_path == Path::new("/") {
        return refused("target / would replace the sandbox's whole filesystem");
    }
    // What OpenClaw's opt-ins allowed (said, but the bind means the same), and what changes.
    let mut notes = Vec::new();
    let mut changes = Vec::new();
    if let Some(reserved) = RESERVED_TARGETS
        .iter()
        .find(|r| !rules.own_mount && target_path.starts_with(r))
    {
        if !rules.reserved_ok {
            return refused(format!(
                "target {target:?} is under {reserved}, which OpenClaw reserves for its own mounts and refuses at container create without dangerouslyAllowReservedContainerTargets"
            ));
        }
        notes.push(format!(
            "target under {reserved} was allowed by dangerouslyAllowReservedContainerTargets; stockade reserves no such path"
        ));
    }
    if !rules.own_mount && !rules.roots.iter().any(|root| source_path.starts_with(root)) {
        if !rules.external_ok {
            return refused(format!(
                "{source:?} lies outside the agent's workspace, and OpenClaw refuses such binds at container create without dangerouslyAllowExternalBindSources: migrating it would grant what OpenClaw refused"
            ));
        }
        notes.push(
            "outside the workspace, allowed by dangerouslyAllowExternalBindSources; stockade checks each bind itself"
                .to_string(),
        );
    }
    // Docker binds read-write unless told `ro`.
    let mut read_only = false;
    for option in options {
        match option {
            "ro" | "readonly" => read_only = true,
            "rw" | "" => {}
            "z" | "Z" => changes.push(format!(
                "SELinux relabel `{option}` is not applied (stockade does not relabel host files)"
            )),
            o if HARMLESS_OPTIONS.contains(&o) => changes.push(format!("option `{o}` dropped")),
            o if PROPAGATION.contains(&o) => changes.push(format!(
                "propagation `{o}` dropped: stockade's binds are private (nothing mounted later on either side crosses)"
            )),
            o => return refused(format!("option {o:?} is not a Docker bind option")),
        }
    }
    let bind = Bind {
        source: source_path.display().to_string(),
        target: target_path.display().to_string(),
        read_only,
        disabled: None,
    };
    let mode = if read_only {
        "read-only"
    } else {
        "read-write (lint: bind-writable)"
    };
    if !exists(&source_path) {
        let mut reason = vec![format!(
            "written commented out: {} does not exist on this host and stockade binds only existing paths; create it and uncomment the entry",
            bind.source
        )];
        reason.extend(changes);
        reason.extend(notes);
        return Verdict {
            status: Status::Approximated,
            reason: reason.join("; "),
            bind: Some(Bind {
                disabled: Some(format!("{} does not exist on this host", bind.source)),
                ..bind
            }),
        };
    }
    let check = profile::Bind {
        source: bind.source.clone(),
        target: bind.target.clone(),
        read_only,
    };
    match profile::check_bind(&check, &rules.engine_sockets) {
        Err(why) => refused(format!("stockade refuses it: {why}")),
        Ok(warnings) => {
            let status = if changes.is_empty() {
                Status::Mapped
            } else {
                Status::Approximated
            };
            let mut reason = vec![format!("bound {mode} at {}", bind.target)];
            reason.extend(changes);
            reason.extend(notes);
            reason.extend(warnings);
            Verdict {
                status,
                reason: reason.join("; "),
                bind: Some(bind),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> BindRules {
        BindRules {
            external_ok: false,
            reserved_ok: false,
            roots: vec![PathBuf::from("/home/alice/ws")],
            home: Some(PathBuf::from("/home/alice")),
            engine_sockets: Vec::new(),
            own_mount: false,
        }
    }

    fn nowhere(_: &Path) -> bool {
        false
    }

    fn status(spec: &str, rules: &BindRules) -> (Status, String) {
        let v = judge(spec, rules, &nowhere);
        (v.status, v.reason)
    }

    #[test]
    fn what_openclaw_and_stockade_refuse_is_refused() {
        let mut open = rules();
        open.external_ok = true;
        open.reserved_ok = true;
        for (spec, why) in [
            (
                "/var/run/docker.sock:/var/run/docker.sock",
                "runtime's socket",
            ),
            ("/run/docker.sock:/s", "runtime's socket"),
            ("/:/host:ro", "whole host filesystem"),
            ("/home/alice/.ssh:/k:ro", ".ssh is a credentials directory"),
            ("/srv/x/.aws/config:/c", ".aws is a credentials directory"),
            ("/home/alice:/h:ro", "contains the home directory"),
            ("/home:/h:ro", "contains the home directory"),
            ("cache:/cache", "named volume or a relative path"),
            ("./x:/x", "named volume"),
            ("/etc/passwd:/p:ro", "under /etc"),
            ("/run/user/1000:/r", "under /run"),
            ("/var/lib/docker/volumes:/v", "container runtime's state"),
            ("/var:/v", "container runtime"),
            ("/srv/a/../../etc:/e", "under /etc"),
            ("/srv/a:/proc/x", "covers /proc"),
            ("/srv/a:/", "replace the sandbox's whole filesystem"),
            ("/srv/a:relative", "not an absolute container path"),
            ("", "empty bind"),
            ("/a:/b:/c:ro", "not host:container"),
            ("/srv/a:/a:bogus", "not a Docker bind option"),
        ] {
            let (s, reason) = status(spec, &open);
            assert_eq!(s, Status::Refused, "{spec}: {reason}");
            assert!(reason.contains(why), "{spec}: {reason}");
        }
    }

    #[test]
    fn openclaws_opt_ins_decide_what_it_accepted() {
        let (s, reason) = status("/srv/data:/data:ro", &rules());
        assert_eq!(s, Status::Refused);
        assert!(
            reason.contains("dangerouslyAllowExternalBindSources"),
            "{reason}"
        );
        let (s, reason) = status("/home/alice/ws/sub:/workspace/sub", &rules());
        assert_eq!(s, Status::Refused);
        assert!(
            reason.contains("dangerouslyAllowReservedContainerTargets"),
            "{reason}"
        );

        let mut open = rules();
        open.external_ok = true;
        open.reserved_ok = true;
        let v = judge("/srv/data:/workspace/data:rw", &open, &nowhere);
        assert_eq!(v.status, Status::Approximated);
        assert_eq!(
            v.bind,
            Some(Bind {
                source: "/srv/data".into(),
                target: "/workspace/data".into(),
                read_only: false,
                disabled: Some("/srv/data does not exist on this host".into()),
            })
        );
    }

    #[test]
    fn an_existing_source_is_checked_by_stockades_loader() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let mut open = rules();
        open.roots = vec![tmp.path().to_path_buf()];
        let spec = format!("{}:/data:ro", dir.display());
        let v = judge(&spec, &open, &|p| p.exists());
        assert_eq!(v.status, Status::Mapped, "{}", v.reason);
        assert_eq!(v.reason, "bound read-only at /data");
        let v = judge(&format!("{spec},z"), &open, &|p| p.exists());
        assert_eq!(v.status, Status::Approximated, "{}", v.reason);
        assert_eq!(v.bind.unwrap().disabled, None);
        // A socket below the directory: stockade's loader refuses the tree.
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).unwrap();
        let v = judge(&spec, &open, &|p| p.exists());
        assert_eq!(v.status, Status::Refused);
        assert!(v.reason.contains("holds a socket"), "{}", v.reason);
    }

    #[test]
    fn openclaws_system_paths_apply_to_binds_not_to_its_own_workspace() {
        let mut own = rules();
        own.external_ok = true;
        own.reserved_ok = true;
        let (s, reason) = status("/root/.openclaw/workspace:/workspace", &own);
        assert_eq!(s, Status::Refused, "{reason}");
        let mut own = rules();
        own.own_mount = true;
        let v = judge("/root/.openclaw/workspace:/workspace", &own, &nowhere);
        assert_eq!(v.status, Status::Approximated, "{}", v.reason);
        assert!(!v.reason.contains("dangerously"), "{}", v.reason);
        for spec in ["/etc/x:/x", "/root/.ssh:/k", "/:/h", "/run/docker.sock:/s"] {
            assert_eq!(status(spec, &own).0, Status::Refused, "{spec}");
        }
    }

    #[test]
    fn options_are_read_like_docker() {
        let mut open = rules();
        open.external_ok = true;
        let v = judge("/srv/a:/a", &open, &nowhere);
        assert!(
            !v.bind.unwrap().read_only,
            "Docker binds read-write by default"
        );
        let v = judge("/srv/a//b/:/a:ro,z", &open, &nowhere);
        assert!(v.reason.contains("SELinux"), "{}", v.reason);
        let b = v.bind.unwrap();
        assert!(b.read_only);
        assert_eq!(b.source, "/srv/a/b");
    }

    #[test]
    fn home_expands_only_with_a_home() {
        assert_eq!(
            expand_home("~/ws", Some(Path::new("/home/a"))),
            Some("/home/a/ws".into())
        );
        assert_eq!(expand_home("~/ws", None), None);
        assert_eq!(expand_home("/srv/ws", None), Some("/srv/ws".into()));
        assert_eq!(expand_home("~", Some(Path::new("/h"))), Some("/h".into()));
    }
}
