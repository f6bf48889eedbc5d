//! Lint of a whole sandbox profile: its resolved seccomp profile, its capabilities, and the
//! container settings around them (root filesystem, network, limits, user, binds).

use std::collections::BTreeSet;

use super::lint::{finding, Finding, LintReport, Severity};
use super::{caps, host_kernel, lint_caps, lint_seccomp, resolve, Arch};
use crate::profile::Profile;

/// Bind sources that hand the sandbox the host (runtime sockets, system trees).
const HOST_CONTROL: &[&str] = &[
    "/",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/var/run/containerd",
    "/run/podman",
    "/var/lib/docker",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
];
/// Path components under which credentials usually live.
const SECRET_DIRS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".kube",
    ".docker",
    ".azure",
    ".netrc",
    ".git-credentials",
];

/// The profile's effective capabilities with `ALL` spelled out.
pub fn effective_caps(p: &Profile) -> BTreeSet<String> {
    let mut caps = p.effective_caps();
    if caps.remove("ALL") {
        caps.extend(caps::ALL_CAPS.iter().map(|c| c.to_string()));
    }
    caps
}

fn is_under(path: &str, base: &str) -> bool {
    let path = path.trim_end_matches('/');
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return path.is_empty();
    }
    path == base || path.starts_with(&format!("{base}/"))
}

/// Lints a sandbox profile. Its seccomp profile is resolved for the profile's effective
/// capabilities on this host's architecture and kernel.
pub fn lint_profile(p: &Profile) -> LintReport {
    lint_profile_for(p, Arch::host(), host_kernel())
}

/// [`lint_profile`] for another architecture or kernel.
pub fn lint_profile_for(p: &Profile, arch: Arch, kernel: Option<(u32, u32)>) -> LintReport {
    let caps = effective_caps(p);
    let mut out = Vec::new();
    // A loaded profile's seccomp file was parsed and checked at load: lint what was kept.
    let r = resolve(&p.seccomp.parsed, &caps, arch, kernel);
    out.extend(lint_seccomp(&r));
    out.extend(lint_caps(&caps));
    lint_settings(p, &mut out);
    LintReport::new(p.name.clone(), out)
}

fn lint_settings(p: &Profile, out: &mut Vec<Finding>) {
    for warning in &p.warnings {
        out.push(finding(
            "profile-warning",
            Severity::Warn,
            "profile",
            warning.clone(),
            "see the message",
        ));
    }
    for opt_out in &p.unsafe_opt_outs {
        out.push(finding(
            "unsafe-opt-out",
            Severity::Critical,
            format!("[unsafe] {opt_out}"),
            "the profile opts out of a refusal stockade makes at load",
            format!("remove `{opt_out} = true` from [unsafe] and fix what it allowed"),
        ));
    }
    if !p.read_only_root {
        out.push(finding(
            "root-writable",
            Severity::Warn,
            "read_only_root",
            "the root filesystem is writable: a command can modify binaries and libraries for later commands in the same container",
            "set read_only_root = true and give writable paths as [tmpfs] entries",
        ));
    }
    if p.network != "none" {
        out.push(finding(
            "network-enabled",
            Severity::Warn,
            format!("network = {:?}", p.network),
            "the sandbox has a network: commands can exfiltrate data or fetch payloads",
            "set network = \"none\"",
        ));
    }
    if p.pids_limit <= 0 {
        out.push(finding(
            "no-pids-limit",
            Severity::Warn,
            "limits.pids",
            "no process limit: a fork bomb exhausts the host's PIDs",
            "set limits.pids (256 is plenty for shell work)",
        ));
    }
    if p.memory_bytes <= 0 {
        out.push(finding(
            "no-memory-limit",
            Severity::Warn,
            "limits.memory",
            "no memory limit: one command can push the host into OOM",
            "set limits.memory, e.g. \"512m\"",
        ));
    }
    if p.cpus <= 0.0 {
        out.push(finding(
            "no-cpu-limit",
            Severity::Info,
            "limits.cpus",
            "no CPU limit: a busy loop takes every core",
            "set limits.cpus, e.g. 1.0",
        ));
    }
    if !p.no_new_privileges {
        out.push(finding(
            "new-privileges",
            Severity::Warn,
            "no_new_privileges",
            "setuid binaries and file capabilities can raise privileges inside the sandbox",
            "set no_new_privileges = true",
        ));
    }
    if p.user.is_root() {
        out.push(finding(
            "user-root",
            Severity::Warn,
            format!("user = \"{}\"", p.user),
            "commands run as root inside the container; with any capability or kernel bug that is root on the host's kernel",
            "set user to an unprivileged uid:gid outside the host's accounts, such as \"65532:65532\"",
        ));
    }
    if p.elevated {
        out.push(finding(
            "profile-elevated",
            Severity::Info,
            "elevated",
            "an elevated profile: every use is audited as elevated",
            "use it only for setup work; run everyday commands under a locked-down profile",
        ));
    }
    for b in &p.binds {
        lint_bind(b, out);
    }
}

fn lint_bind(b: &crate::profile::Bind, out: &mut Vec<Finding>) {
    let subject = format!("{} -> {}", b.source, b.target);
    let mode = if b.read_only { "read-only" } else { "writable" };
    if HOST_CONTROL.iter().any(|h| is_under(&b.source, h)) {
        out.push(finding(
            "bind-sensitive",
            Severity::Critical,
            subject,
            format!("{mode} bind of a host system path or runtime socket: control of the host"),
            "remove the bind; copy in the files the command needs instead",
        ));
    } else if b.source.split('/').any(|part| SECRET_DIRS.contains(&part)) {
        out.push(finding(
            "bind-sensitive",
            if b.read_only {
                Severity::Warn
            } else {
                Severity::Critical
            },
            subject,
            format!("{mode} bind of a credentials directory"),
            "remove the bind, or bind only the single file the command needs, read-only",
        ));
    } else if !b.read_only {
        out.push(finding(
            "bind-writable",
            Severity::Info,
            subject,
            "writable bind: the sandbox can change these host files",
            "make it read_only = true unless the command must write there",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, Bind, ProfileDirs};

    fn builtin(name: &str) -> Profile {
        load(name, &ProfileDirs::default()).expect("built-in profile loads")
    }

    fn report(p: &Profile) -> LintReport {
        lint_profile_for(p, Arch::X86_64, Some((6, 1)))
    }

    fn has(r: &LintReport, id: &str) -> bool {
        r.findings.iter().any(|f| f.id == id)
    }

    #[test]
    fn default_profile_lints_clean_of_criticals() {
        let r = report(&builtin("default"));
        assert_eq!(r.critical, 0, "{r}");
        for id in [
            "root-writable",
            "network-enabled",
            "no-pids-limit",
            "no-memory-limit",
            "no-cpu-limit",
            "new-privileges",
            "user-root",
            "profile-elevated",
            "bind-sensitive",
            "bind-writable",
            "cap-dangerous",
            "seccomp-invalid",
        ] {
            assert!(!has(&r, id), "{id} flagged on the default profile:\n{r}");
        }
        // Docker's seccomp profile without the ptrace family, and no capabilities.
        assert_eq!(r.score, 100, "{r}");
    }

    #[test]
    fn elevated_profile_is_flagged_for_root_and_writable_root() {
        let r = report(&builtin("elevated"));
        assert!(has(&r, "user-root") && has(&r, "root-writable") && has(&r, "profile-elevated"));
        assert_eq!(r.critical, 0, "{r}");
    }

    #[test]
    fn settings_rules_flag_their_case() {
        let base = builtin("default");
        let mut cases: Vec<(&str, Severity, Profile)> = Vec::new();
        let mut p = base.clone();
        p.network = "bridge".into();
        cases.push(("network-enabled", Severity::Warn, p));
        let mut p = base.clone();
        p.pids_limit = 0;
        cases.push(("no-pids-limit", Severity::Warn, p));
        let mut p = base.clone();
        p.memory_bytes = 0;
        cases.push(("no-memory-limit", Severity::Warn, p));
        let mut p = base.clone();
        p.cpus = 0.0;
        cases.push(("no-cpu-limit", Severity::Info, p));
        let mut p = base.clone();
        p.no_new_privileges = false;
        cases.push(("new-privileges", Severity::Warn, p));
        let mut p = base.clone();
        p.cap_add = vec!["CAP_SYS_ADMIN".into()];
        cases.push(("cap-dangerous", Severity::Critical, p));
        let mut p = base.clone();
        p.cap_add = vec!["ALL".into()];
        cases.push(("cap-dangerous", Severity::Critical, p));
        let mut p = base.clone();
        p.binds = vec![Bind {
            source: "/var/run/docker.sock".into(),
            target: "/s".into(),
            read_only: true,
        }];
        cases.push(("bind-sensitive", Severity::Critical, p));
        let mut p = base.clone();
        p.binds = vec![Bind {
            source: "/home/u/.ssh".into(),
            target: "/k".into(),
            read_only: true,
        }];
        cases.push(("bind-sensitive", Severity::Warn, p));
        let mut p = base.clone();
        p.binds = vec![Bind {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: false,
        }];
        cases.push(("bind-writable", Severity::Info, p));
        for (id, severity, p) in cases {
            let r = report(&p);
            assert!(
                r.findings
                    .iter()
                    .any(|f| f.id == id && f.severity == severity),
                "{id} ({severity}) not flagged:\n{r}"
            );
        }
    }

    #[test]
    fn a_read_only_ordinary_bind_is_not_flagged() {
        let mut p = builtin("default");
        p.binds = vec![Bind {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: true,
        }];
        let r = report(&p);
        assert!(
            !has(&r, "bind-sensitive") && !has(&r, "bind-writable"),
            "{r}"
        );
    }

    #[test]
    fn is_under_respects_component_boundaries() {
        assert!(is_under("/etc/passwd", "/etc"));
        assert!(is_under("/etc", "/etc/"));
        assert!(!is_under("/etcetera", "/etc"));
        assert!(is_under("/", "/"));
        assert!(!is_under("/home/u", "/"));
    }
}
