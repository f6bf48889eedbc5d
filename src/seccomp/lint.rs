//! Lint: findings about a resolved seccomp profile and a capability set, each with a severity,
//! the reason and a fix, and a 0-100 score.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::resolve::{ResolvedProfile, Verdict};
use super::{syscalls, Action};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    Critical,
    Warn,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Critical => "critical",
            Severity::Warn => "warn",
            Severity::Info => "info",
        })
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id (docs/seccomp.md lists them).
    pub id: &'static str,
    pub severity: Severity,
    /// The syscall, capability or setting concerned.
    pub subject: String,
    pub message: String,
    pub fix: String,
}

/// Findings plus score, for one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintReport {
    /// What was linted (a path or profile name).
    pub subject: String,
    pub score: u8,
    pub critical: usize,
    pub warn: usize,
    pub info: usize,
    pub findings: Vec<Finding>,
}

/// Score deductions per finding.
const CRITICAL_COST: u32 = 20;
const WARN_COST: u32 = 5;
const INFO_COST: u32 = 1;
const FULL_SCORE: u32 = 100;

/// 100 - 20 per critical - 5 per warn - 1 per info, floored at 0.
pub fn score(findings: &[Finding]) -> u8 {
    let cost: u32 = findings
        .iter()
        .map(|f| match f.severity {
            Severity::Critical => CRITICAL_COST,
            Severity::Warn => WARN_COST,
            Severity::Info => INFO_COST,
        })
        .sum();
    // At most FULL_SCORE, so it fits in a u8.
    u8::try_from(FULL_SCORE.saturating_sub(cost)).unwrap_or(0)
}

impl LintReport {
    /// Sorts findings (critical first) and scores them.
    pub fn new(subject: impl Into<String>, mut findings: Vec<Finding>) -> Self {
        findings
            .sort_by(|a, b| (a.severity, a.id, &a.subject).cmp(&(b.severity, b.id, &b.subject)));
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        LintReport {
            subject: subject.into(),
            score: score(&findings),
            critical: count(Severity::Critical),
            warn: count(Severity::Warn),
            info: count(Severity::Info),
            findings,
        }
    }
}

impl fmt::Display for LintReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: score {}/100 ({} critical, {} warn, {} info)",
            self.subject, self.score, self.critical, self.warn, self.info
        )?;
        if self.findings.is_empty() {
            return writeln!(f, "  no findings");
        }
        let subj_w = self
            .findings
            .iter()
            .map(|x| x.subject.len())
            .max()
            .unwrap_or(0)
            .min(24);
        let id_w = self.findings.iter().map(|x| x.id.len()).max().unwrap_or(0);
        for x in &self.findings {
            writeln!(
                f,
                "  {:<8} {:<id_w$}  {:<subj_w$}  {}",
                x.severity.to_string(),
                x.id,
                x.subject,
                x.message
            )?;
            writeln!(
                f,
                "  {:<8} {:<id_w$}  {:<subj_w$}  fix: {}",
                "", "", "", x.fix
            )?;
        }
        Ok(())
    }
}

/// A syscall that should not run in a sandbox, why, and how bad allowing it is.
struct Dangerous {
    names: &'static [&'static str],
    severity: Severity,
    why: &'static str,
}

const DANGEROUS_SYSCALLS: &[Dangerous] = &[
    Dangerous {
        names: &["mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr"],
        severity: Severity::Critical,
        why: "changes the mount table: remounting or over-mounting is a classic container escape",
    },
    Dangerous {
        names: &["unshare", "setns"],
        severity: Severity::Critical,
        why: "creates or joins namespaces, the kernel attack surface most escapes start from",
    },
    Dangerous {
        names: &["bpf"],
        severity: Severity::Critical,
        why: "loads eBPF programs into the kernel",
    },
    Dangerous {
        names: &["init_module", "finit_module", "delete_module", "create_module"],
        severity: Severity::Critical,
        why: "loads or unloads kernel modules",
    },
    Dangerous {
        names: &["kexec_load", "kexec_file_load", "reboot"],
        severity: Severity::Critical,
        why: "replaces or restarts the running kernel",
    },
    Dangerous {
        names: &["open_by_handle_at"],
        severity: Severity::Critical,
        why: "opens files by handle, bypassing the mount namespace (the 'shocker' escape)",
    },
    Dangerous {
        names: &["keyctl", "add_key", "request_key"],
        severity: Severity::Critical,
        why: "uses the kernel keyring, which is not namespaced",
    },
    Dangerous {
        names: &["iopl", "ioperm"],
        severity: Severity::Critical,
        why: "grants raw I/O port access",
    },
    Dangerous {
        names: &["swapon", "swapoff", "quotactl", "quotactl_fd", "nfsservctl", "lookup_dcookie", "uselib", "_sysctl", "vm86", "vm86old", "acct"],
        severity: Severity::Critical,
        why: "a host-wide administrative or long-deprecated interface",
    },
    Dangerous {
        names: &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise"],
        severity: Severity::Warn,
        why: "reads or controls other processes' memory; before Linux 4.8 ptrace could bypass seccomp",
    },
    Dangerous {
        names: &["perf_event_open"],
        severity: Severity::Warn,
        why: "exposes kernel performance counters, a frequent source of kernel bugs and side channels",
    },
    Dangerous {
        names: &["userfaultfd"],
        severity: Severity::Warn,
        why: "lets a process stall kernel page faults, a standard exploit primitive for kernel races",
    },
    Dangerous {
        names: &["clone3"],
        severity: Severity::Warn,
        why: "its flags live in memory seccomp cannot inspect, so namespace creation cannot be filtered",
    },
    Dangerous {
        names: &["settimeofday", "clock_settime", "stime", "syslog", "vhangup"],
        severity: Severity::Warn,
        why: "changes or reads host-wide state (clock, kernel log, terminal, names)",
    },
    Dangerous {
        names: &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        severity: Severity::Warn,
        why: "io_uring performs I/O that seccomp does not see and has had many kernel bugs",
    },
];

/// Syscalls without which a process cannot end or return from a signal handler: blocking them
/// makes a workload spin or die on exit instead of exiting.
const ESSENTIAL: &[&str] = &["exit", "exit_group", "rt_sigreturn"];
/// The runtime calls execve after installing the filter (runc's late seccomp setup, used with
/// no_new_privileges), so a profile without it cannot start a container at all.
const STARTS_CONTAINER: &[&str] = &["execve"];
/// Calls the runtime's init (runc, a Go program) may make between installing the filter and
/// exec'ing the workload; recorders that trace only the workload miss them.
pub(crate) const RUNTIME_INIT: &[&str] = &[
    "futex",
    "write",
    "close",
    "fcntl",
    "getpid",
    "rt_sigprocmask",
    "rt_sigaction",
    "sched_yield",
    "nanosleep",
    "mmap",
    "munmap",
    "madvise",
    "tgkill",
    "capget",
    "capset",
    "prctl",
];

pub(crate) fn finding(
    id: &'static str,
    severity: Severity,
    subject: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        id,
        severity,
        subject: subject.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// Lints a resolved seccomp profile (resolve it for the sandbox's effective capabilities first:
/// a syscall allowed only under a capability the sandbox lacks is not allowed).
pub fn lint_seccomp(r: &ResolvedProfile) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(default) = r.default_action else {
        out.push(finding(
            "seccomp-unconfined",
            Severity::Critical,
            "defaultAction",
            "the profile has no defaultAction and no rules, which Docker treats as seccomp disabled",
            "start from Docker's default profile and remove what the workload does not need",
        ));
        return out;
    };
    match default {
        Action::Allow | Action::Log => out.push(finding(
            "seccomp-default-allow",
            Severity::Critical,
            "defaultAction",
            format!("unlisted syscalls run ({default}): a deny list misses every syscall added later"),
            "set defaultAction to SCMP_ACT_ERRNO and allow-list the syscalls the workload needs",
        )),
        Action::Trace(_) => out.push(finding(
            "seccomp-default-trace",
            Severity::Warn,
            "defaultAction",
            "unlisted syscalls go to a tracer; without one they fail with ENOSYS, with one the tracer decides",
            "set defaultAction to SCMP_ACT_ERRNO",
        )),
        _ => {}
    }
    lint_dangerous(r, &mut out);
    lint_blocked(r, &mut out);
    lint_rules(r, &mut out);
    out
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Conditional { .. } => "allowed for some arguments".to_string(),
        _ => "allowed".to_string(),
    }
}

fn lint_dangerous(r: &ResolvedProfile, out: &mut Vec<Finding>) {
    for d in DANGEROUS_SYSCALLS {
        for name in d.names {
            if syscalls::syscall_number(r.arch, name).is_none() {
                continue;
            }
            let v = r.verdict(name);
            if v.may_run() {
                out.push(finding(
                    "syscall-dangerous",
                    d.severity,
                    *name,
                    format!("{} is {}: {}", name, describe(&v), d.why),
                    format!("remove {name} from the allowed syscalls (default action denies it)"),
                ));
            }
        }
    }
    // Docker allows clone only without namespace flags (a MASKED_EQ on the flags argument) and
    // personality only for known-safe values; unrestricted forms reopen what those rules close.
    for (name, why, fix) in [
        (
            "clone",
            "clone is allowed for every flag combination, so processes may create namespaces",
            "allow clone only with arg0 & 0x7e020000 (CLONE_NEW* flags) == 0, as Docker's default does",
        ),
        (
            "personality",
            "personality is allowed for every persona (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE weaken the process)",
            "allow personality only for 0x0, 0x8, 0x20000, 0x20008 and 0xffffffff, as Docker's default does",
        ),
    ] {
        if syscalls::syscall_number(r.arch, name).is_some() && r.verdict(name) == Verdict::Allow {
            out.push(finding("syscall-unrestricted-args", Severity::Warn, name, why, fix));
        }
    }
}

fn lint_blocked(r: &ResolvedProfile, out: &mut Vec<Finding>) {
    let blocked =
        |name: &str| syscalls::syscall_number(r.arch, name).is_some() && !r.verdict(name).may_run();
    for name in ESSENTIAL.iter().copied().filter(|n| blocked(n)) {
        out.push(finding(
            "syscall-essential-blocked",
            Severity::Critical,
            name,
            format!("{name} is blocked: processes cannot exit or return from signal handlers and spin or crash"),
            format!("allow {name}"),
        ));
    }
    for name in STARTS_CONTAINER.iter().copied().filter(|n| blocked(n)) {
        out.push(finding(
            "syscall-essential-blocked",
            Severity::Critical,
            name,
            format!("{name} is blocked: the runtime execs the workload after installing the filter, so no container starts"),
            format!("allow {name}"),
        ));
    }
    let missing: Vec<&str> = RUNTIME_INIT
        .iter()
        .copied()
        .filter(|n| blocked(n))
        .collect();
    if !missing.is_empty() {
        out.push(finding(
            "syscall-runtime-init-blocked",
            Severity::Warn,
            missing.join(","),
            "blocked, but the container runtime's init may call these after installing the filter (profiles recorded from the workload alone miss them)",
            "allow them, or check that the container still starts under this profile",
        ));
    }
    if let Some(Action::Errno(e)) = r.default_action {
        const ENOSYS: u16 = 38;
        if e != ENOSYS
            && syscalls::syscall_number(r.arch, "clone3").is_some()
            && !r.syscalls.contains_key("clone3")
        {
            out.push(finding(
                "seccomp-default-errno",
                Severity::Info,
                "defaultErrnoRet",
                format!("unlisted syscalls fail with errno {e}, not ENOSYS: programs probing newer syscalls such as clone3 do not fall back"),
                "set defaultErrnoRet to 38 (ENOSYS), or add an ENOSYS rule for clone3 as Docker's default does",
            ));
        }
    }
}

fn lint_rules(r: &ResolvedProfile, out: &mut Vec<Finding>) {
    for (name, sys) in &r.syscalls {
        if !sys.shadowed.is_empty() {
            out.push(finding(
                "rule-shadowed",
                Severity::Info,
                name.clone(),
                format!(
                    "rule(s) {:?} never decide for {name}: an earlier rule matches the same calls",
                    sys.shadowed
                ),
                "remove the later rules or merge them into the first",
            ));
        }
        for (i, earlier) in sys.rules.iter().enumerate() {
            if let Some(later) = sys.rules[i + 1..]
                .iter()
                .find(|l| l.action.precedence() < earlier.action.precedence())
            {
                out.push(finding(
                    "rule-order-conflict",
                    Severity::Info,
                    name.clone(),
                    format!(
                        "rule {} ({}) comes before the stronger rule {} ({}); calls matching both get the first in runtimes but the second in stacked filters",
                        earlier.source, earlier.action, later.source, later.action
                    ),
                    "make the conditions of the two rules disjoint",
                ));
            }
        }
    }
    for idx in &r.split_rules {
        out.push(finding(
            "rule-repeated-arg",
            Severity::Warn,
            format!("syscalls[{idx}]"),
            "the rule compares one argument twice; runc then adds each comparison as its own rule, so they are ORed, not ANDed",
            "write one rule per allowed value or range",
        ));
    }
    if !r.unknown_names.is_empty() {
        out.push(finding(
            "syscall-unknown-skipped",
            Severity::Warn,
            r.unknown_names.join(","),
            "names that are no syscall were skipped (allow_unknown_syscalls)",
            "fix the spelling; a misspelt name in a deny rule is a hole",
        ));
    }
}

/// A capability that widens what a sandbox can do to the host, why, and how bad it is.
const DANGEROUS_CAPS: &[(&str, Severity, &str)] = &[
    (
        "CAP_SYS_ADMIN",
        Severity::Critical,
        "mount, namespaces, BPF and dozens of admin operations: near-root",
    ),
    ("CAP_SYS_MODULE", Severity::Critical, "loads kernel modules"),
    (
        "CAP_SYS_RAWIO",
        Severity::Critical,
        "raw I/O ports and /dev/mem",
    ),
    (
        "CAP_SYS_PTRACE",
        Severity::Critical,
        "traces any process it can see, and reads their memory",
    ),
    (
        "CAP_DAC_READ_SEARCH",
        Severity::Critical,
        "open_by_handle_at: reads host files outside the container (shocker)",
    ),
    ("CAP_BPF", Severity::Critical, "loads eBPF programs"),
    (
        "CAP_MAC_ADMIN",
        Severity::Critical,
        "changes the mandatory access control policy",
    ),
    (
        "CAP_MAC_OVERRIDE",
        Severity::Critical,
        "overrides mandatory access control",
    ),
    (
        "CAP_SYS_BOOT",
        Severity::Critical,
        "reboots the host or loads a new kernel",
    ),
    (
        "CAP_NET_ADMIN",
        Severity::Warn,
        "reconfigures interfaces, routes and firewall rules",
    ),
    ("CAP_SYS_TIME", Severity::Warn, "sets the host clock"),
    (
        "CAP_PERFMON",
        Severity::Warn,
        "perf_event_open: kernel counters and side channels",
    ),
    (
        "CAP_SYSLOG",
        Severity::Warn,
        "reads the kernel log, which leaks kernel addresses",
    ),
    (
        "CAP_SYS_RESOURCE",
        Severity::Warn,
        "overrides resource limits and quotas",
    ),
    (
        "CAP_AUDIT_CONTROL",
        Severity::Warn,
        "changes the kernel audit rules",
    ),
    (
        "CAP_LINUX_IMMUTABLE",
        Severity::Warn,
        "changes immutable and append-only file flags",
    ),
    (
        "CAP_CHECKPOINT_RESTORE",
        Severity::Warn,
        "checkpoint/restore operations across processes",
    ),
    (
        "CAP_SYS_PACCT",
        Severity::Warn,
        "switches process accounting",
    ),
    (
        "CAP_SYS_TTY_CONFIG",
        Severity::Warn,
        "vhangup and terminal configuration",
    ),
    (
        "CAP_IPC_OWNER",
        Severity::Warn,
        "bypasses System V IPC permission checks",
    ),
    (
        "CAP_NET_RAW",
        Severity::Info,
        "raw and packet sockets (ARP/DNS spoofing on shared networks); in Docker's default set",
    ),
];

/// Lints a capability set (the sandbox's effective one).
pub fn lint_caps(caps: &BTreeSet<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (cap, severity, why) in DANGEROUS_CAPS {
        if caps.contains(*cap) {
            let short = cap.trim_start_matches("CAP_");
            out.push(finding(
                "cap-dangerous",
                *severity,
                *cap,
                format!("{cap} is granted: {why}"),
                format!("remove {short} from cap_add (or add it to cap_drop)"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(severity: Severity) -> Finding {
        finding("x", severity, "s", "m", "f")
    }

    #[test]
    fn score_follows_the_formula_and_floors_at_zero() {
        assert_eq!(score(&[]), 100);
        assert_eq!(
            score(&[f(Severity::Critical), f(Severity::Warn), f(Severity::Info)]),
            74
        );
        assert_eq!(score(&vec![f(Severity::Critical); 6]), 0);
    }
}
