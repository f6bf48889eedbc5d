//! Linux capability names as Docker and seccomp profiles spell them (`CAP_SYS_ADMIN`).

use std::collections::BTreeSet;

/// Every capability the kernel defines (include/uapi/linux/capability.h, up to CAP_LAST_CAP =
/// CAP_CHECKPOINT_RESTORE in Linux 5.9+).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities dockerd gives a container by default (moby oci/caps/defaults.go).
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's default capability set.
pub fn docker_default() -> BTreeSet<String> {
    DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
}

/// Whether `name` is a capability in canonical form (`CAP_` prefix, upper case).
pub fn is_known(name: &str) -> bool {
    ALL_CAPS.contains(&name)
}

/// The canonical form of a user-typed capability (`sys_admin`, `SYS_ADMIN`, `cap_sys_admin`
/// -> `CAP_SYS_ADMIN`), or None if no such capability exists. `ALL` stays `ALL`.
pub fn canonical(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    is_known(&full).then_some(full)
}

/// Docker's default set minus `drop` plus `add` (each canonical, or `ALL`), the way dockerd
/// computes the bounding set.
pub fn effective(drop: &[String], add: &[String]) -> BTreeSet<String> {
    let mut caps = if drop.iter().any(|c| c == "ALL") {
        BTreeSet::new()
    } else {
        DOCKER_DEFAULT_CAPS
            .iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| c.to_string())
            .collect()
    };
    if add.iter().any(|c| c == "ALL") {
        caps.extend(ALL_CAPS.iter().map(|c| c.to_string()));
    } else {
        caps.extend(add.iter().cloned());
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_accepts_docker_spellings() {
        assert_eq!(canonical("sys_admin").as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(canonical("CAP_NET_RAW").as_deref(), Some("CAP_NET_RAW"));
        assert_eq!(canonical("all").as_deref(), Some("ALL"));
        assert_eq!(canonical("SYS_ADMINN"), None);
    }

    #[test]
    fn effective_applies_drop_then_add() {
        let caps = effective(&["ALL".into()], &["CAP_CHOWN".into()]);
        assert_eq!(caps.into_iter().collect::<Vec<_>>(), vec!["CAP_CHOWN"]);
        let caps = effective(&["CAP_NET_RAW".into()], &[]);
        assert_eq!(caps.len(), DOCKER_DEFAULT_CAPS.len() - 1);
        assert_eq!(effective(&[], &["ALL".into()]).len(), ALL_CAPS.len());
    }
}
