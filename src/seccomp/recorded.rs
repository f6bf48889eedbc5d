//! A recorded seccomp profile: the syscalls a workload used plus the runtime baseline, as the
//! Docker/OCI JSON `profile record` writes and `--merge` reads back.
//!
//! Shape (and nothing else, so that a merge can never widen a hand-written rule):
//!
//! - `defaultAction` `SCMP_ACT_ERRNO`, `defaultErrnoRet` 1 (EPERM);
//! - `architectures` as dockerd expands Docker's default `archMap` for the architecture;
//! - one `SCMP_ACT_ALLOW` rule with the sorted names;
//! - for the syscalls the recording profile allows only for some arguments (Docker's default:
//!   `clone` without namespace flags, `personality` for safe personas, `socket` but not
//!   AF_ALG/AF_VSOCK), the same argument rules: calls outside them were refused while
//!   recording, so the recorded profile never allows more than the recording profile did;
//! - `SCMP_ACT_ERRNO` with errno 38 (ENOSYS) for `clone3` and every syscall that only ever
//!   failed with ENOSYS: glibc and others fall back to an older call on ENOSYS only.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::model::{ArgCond, CmpOp, SeccompProfile};
use super::trace::Trace;
use super::{syscall_number, Action, Arch, ResolvedProfile, Verdict};

/// errno for everything not recorded: EPERM, so a refused call reads "Operation not permitted".
pub const RECORDED_DEFAULT_ERRNO: u16 = 1;
/// ENOSYS: "no such syscall", which makes callers fall back (glibc's clone3 -> clone).
pub const ENOSYS: u16 = 38;
/// clone's namespace flags (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET): Docker's default allows clone only when
/// `flags & mask == 0` unless the container has CAP_SYS_ADMIN.
pub const CLONE_NAMESPACE_MASK: u64 = 0x7E02_0000;
/// Calls that, refused, must look absent rather than forbidden.
const ALWAYS_ENOSYS: &[&str] = &["clone3"];

/// What the trace of one workload says, syscall by syscall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classified {
    /// Called at least once without being refused (a call failing with ENOENT still ran).
    pub used: BTreeSet<String>,
    /// Every call failed with EPERM (refused by the recording profile or the kernel): left
    /// out, so they keep failing with EPERM.
    pub refused: BTreeSet<String>,
    /// Every call failed with ENOSYS: kept failing with ENOSYS.
    pub absent: BTreeSet<String>,
    /// Names strace printed that are not syscalls of the architecture (left out, reported).
    pub unknown: BTreeSet<String>,
}

/// Sorts the syscalls of a trace into used / refused / absent / unknown for `arch`.
pub fn classify(trace: &Trace, arch: Arch) -> Classified {
    let mut c = Classified::default();
    for (name, u) in &trace.syscalls {
        let name = name.clone();
        if syscall_number(arch, &name).is_none() {
            c.unknown.insert(name);
        } else if u.only_failed_with(&["ENOSYS"]) {
            c.absent.insert(name);
        } else if u.only_failed_with(&["EPERM", "ENOSYS"]) {
            c.refused.insert(name);
        } else {
            c.used.insert(name);
        }
    }
    c
}

/// The content of a recorded profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedSet {
    /// Allowed for every call.
    pub allow: BTreeSet<String>,
    /// Allowed only for some arguments: one entry per rule, whose conditions must all hold.
    pub conditional: BTreeMap<String, BTreeSet<Vec<ArgCond>>>,
    /// Answered with ENOSYS.
    pub enosys: BTreeSet<String>,
}

/// Why a seccomp file cannot be read back as a recorded profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct NotRecorded {
    pub why: String,
}

impl RecordedSet {
    /// The workload's syscalls plus `baseline`, with the argument rules `recording` (the
    /// profile the trace ran under, resolved) has for them.
    pub fn new(c: &Classified, baseline: &BTreeSet<String>, recording: &ResolvedProfile) -> Self {
        let mut set = RecordedSet {
            enosys: c.absent.clone(),
            ..Default::default()
        };
        for name in c.used.union(baseline) {
            match argument_rules(recording, name) {
                Some(rules) => {
                    set.conditional.insert(name.clone(), rules);
                }
                None => {
                    set.allow.insert(name.clone());
                }
            }
        }
        set.settle();
        set
    }

    /// Syscalls at least some calls of which are allowed.
    pub fn allowed(&self) -> BTreeSet<String> {
        self.allow
            .iter()
            .chain(self.conditional.keys())
            .cloned()
            .collect()
    }

    /// Adds everything `other` allows: the result runs both workloads.
    pub fn merge(&mut self, other: &RecordedSet) {
        self.allow.extend(other.allow.iter().cloned());
        for (name, rules) in &other.conditional {
            self.conditional
                .entry(name.clone())
                .or_default()
                .extend(rules.iter().cloned());
        }
        self.enosys.extend(other.enosys.iter().cloned());
        self.settle();
    }

    /// An unconditional allow covers every argument rule; clone3 gets ENOSYS unless allowed;
    /// nothing is both allowed and ENOSYS.
    fn settle(&mut self) {
        let allow = &self.allow;
        self.conditional.retain(|n, _| !allow.contains(n));
        self.enosys
            .extend(ALWAYS_ENOSYS.iter().map(|s| s.to_string()));
        let allowed = self.allowed();
        self.enosys.retain(|n| !allowed.contains(n));
    }

    /// The Docker/OCI JSON for `arch`, pretty-printed with a final newline.
    pub fn to_json(&self, arch: Arch) -> String {
        let mut rules = vec![json!({
            "names": self.allow,
            "action": "SCMP_ACT_ALLOW",
            "comment": "recorded by stockade profile record: the workload's syscalls and the container runtime's baseline"
        })];
        for (name, alternatives) in &self.conditional {
            for conds in alternatives {
                let args: Vec<Value> = conds.iter().map(arg_json).collect();
                rules.push(json!({
                    "names": [name],
                    "action": "SCMP_ACT_ALLOW",
                    "args": args,
                    "comment": "only for these arguments, as in the recording profile"
                }));
            }
        }
        if !self.enosys.is_empty() {
            rules.push(json!({
                "names": self.enosys,
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": ENOSYS,
                "comment": "answered ENOSYS, as during recording, so that callers fall back"
            }));
        }
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": RECORDED_DEFAULT_ERRNO,
            "architectures": docker_architectures(arch),
            "syscalls": rules,
        });
        // A Value of strings, numbers and arrays always serializes.
        let mut text = serde_json::to_string_pretty(&profile).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads back a profile [`to_json`](Self::to_json) wrote (for `--merge`); anything else is
    /// refused, since folding an arbitrary profile into an allow list could widen its rules.
    pub fn from_profile(p: &SeccompProfile) -> Result<Self, NotRecorded> {
        let not = |why: String| NotRecorded { why };
        if p.default_action != Some(Action::Errno(RECORDED_DEFAULT_ERRNO)) {
            return Err(not(format!(
                "defaultAction is {}, a recorded profile has SCMP_ACT_ERRNO with errnoRet 1",
                p.default_action
                    .map_or("absent".to_string(), |a| a.scmp_name())
            )));
        }
        let mut set = RecordedSet::default();
        for rule in &p.rules {
            if !rule.includes.is_empty() || !rule.excludes.is_empty() {
                return Err(not(format!(
                    "syscalls[{}] has includes/excludes, which recorded profiles never have",
                    rule.index
                )));
            }
            match (rule.action, rule.args.as_slice()) {
                (Action::Allow, []) => set.allow.extend(rule.names.iter().cloned()),
                (Action::Allow, args) => {
                    for name in &rule.names {
                        set.conditional
                            .entry(name.clone())
                            .or_default()
                            .insert(args.to_vec());
                    }
                }
                (Action::Errno(ENOSYS), []) => set.enosys.extend(rule.names.iter().cloned()),
                _ => {
                    return Err(not(format!(
                        "syscalls[{}] ({}) is not a rule profile record writes",
                        rule.index,
                        rule.names.join(",")
                    )))
                }
            }
        }
        set.settle();
        Ok(set)
    }
}

/// The allow rules with arguments that decide `name` in `recording`, when some but not all of
/// its calls may run there.
fn argument_rules(recording: &ResolvedProfile, name: &str) -> Option<BTreeSet<Vec<ArgCond>>> {
    let Verdict::Conditional { otherwise, .. } = recording.verdict(name) else {
        return None;
    };
    if otherwise.permits() {
        return None;
    }
    let rules: BTreeSet<Vec<ArgCond>> = recording
        .syscalls
        .get(name)?
        .rules
        .iter()
        .take_while(|r| !r.args.is_empty())
        .filter(|r| r.action.permits())
        .map(|r| r.args.clone())
        .collect();
    (!rules.is_empty()).then_some(rules)
}

/// One argument condition in Docker's JSON spelling.
fn arg_json(c: &ArgCond) -> Value {
    let op = match c.op {
        CmpOp::Ne => "SCMP_CMP_NE",
        CmpOp::Lt => "SCMP_CMP_LT",
        CmpOp::Le => "SCMP_CMP_LE",
        CmpOp::Eq => "SCMP_CMP_EQ",
        CmpOp::Ge => "SCMP_CMP_GE",
        CmpOp::Gt => "SCMP_CMP_GT",
        CmpOp::MaskedEq => "SCMP_CMP_MASKED_EQ",
    };
    json!({ "index": c.index, "value": c.value, "valueTwo": c.value_two, "op": op })
}

/// `architectures` as dockerd expands the `archMap` entry of Docker's default profile for
/// `arch` (the native ABI and its compat sub-architectures).
pub fn docker_architectures(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        Arch::Aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    }
}

#[cfg(test)]
mod tests {
    use super::super::trace::parse_strace;
    use super::super::{load_profile_json, resolve, LoadOptions};
    use super::*;
    use pretty_assertions::assert_eq;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Docker's default resolved without capabilities: what stockade records under.
    fn recording() -> ResolvedProfile {
        let docker = load_profile_json(
            include_str!("../../profiles/seccomp/docker-default.json"),
            &LoadOptions::default(),
        )
        .unwrap();
        resolve(&docker, &BTreeSet::new(), Arch::X86_64, Some((6, 1)))
    }

    const TRACE: &str = "\
1 execve(\"/usr/bin/bash\", [], 0x0 /* 1 var */) = 0
1 openat(AT_FDCWD, \"/nope\", O_RDONLY) = -1 ENOENT (No such file or directory)
1 setgroups(0, NULL) = -1 EPERM (Operation not permitted)
1 clone3({flags=CLONE_VM, exit_signal=0}, 88) = -1 ENOSYS (Function not implemented)
1 futex_waitv(0x0, 0, 0, NULL, 0) = -1 ENOSYS (Function not implemented)
1 clone(child_stack=NULL, flags=SIGCHLD) = 2
1 personality(0xffffffff) = 0 (PER_LINUX)
1 socket(AF_UNIX, SOCK_STREAM, 0) = 3
1 syscall_0x3e7(0x1) = -1 ENOSYS (Function not implemented)
1 exit_group(0) = ?
";

    #[test]
    fn classify_sorts_used_refused_absent_unknown() {
        let c = classify(&parse_strace(TRACE), Arch::X86_64);
        assert_eq!(
            c.used,
            names(&[
                "clone",
                "execve",
                "exit_group",
                "openat",
                "personality",
                "socket"
            ])
        );
        assert_eq!(c.refused, names(&["setgroups"]));
        assert_eq!(c.absent, names(&["clone3", "futex_waitv"]));
        assert_eq!(c.unknown, names(&["syscall_0x3e7"]));
    }

    #[test]
    fn json_keeps_the_recording_profiles_argument_rules_and_reads_back() {
        let c = classify(&parse_strace(TRACE), Arch::X86_64);
        let set = RecordedSet::new(&c, &names(&["rt_sigreturn", "exit"]), &recording());
        assert_eq!(
            set.conditional.keys().cloned().collect::<BTreeSet<_>>(),
            names(&["clone", "personality", "socket"])
        );
        assert_eq!(set.allowed().len(), 8);
        let text = set.to_json(Arch::X86_64);
        let p = load_profile_json(&text, &LoadOptions::default()).expect("loads");
        let r = resolve(&p, &BTreeSet::new(), Arch::X86_64, Some((6, 1)));
        assert_eq!(r.verdict("execve"), Verdict::Allow);
        let docker = recording();
        for name in ["clone", "personality", "socket"] {
            assert!(
                matches!(r.verdict(name), Verdict::Conditional { .. }),
                "{name}"
            );
            assert_eq!(
                r.syscalls[name].rules.len(),
                docker.syscalls[name].rules.len()
            );
        }
        assert_eq!(
            r.verdict("clone3"),
            Verdict::Deny {
                action: Action::Errno(ENOSYS)
            }
        );
        assert_eq!(
            r.verdict("setgroups"),
            Verdict::Deny {
                action: Action::Errno(1)
            }
        );
        assert_eq!(
            r.architectures,
            vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert_eq!(RecordedSet::from_profile(&p).expect("recorded"), set);
    }

    #[test]
    fn merge_is_the_union_and_keeps_enosys_disjoint() {
        let rec = recording();
        let mut a = RecordedSet::new(
            &Classified {
                used: names(&["read", "write", "clone"]),
                absent: names(&["futex_waitv"]),
                ..Default::default()
            },
            &BTreeSet::new(),
            &rec,
        );
        let b = RecordedSet::new(
            &Classified {
                used: names(&["read", "futex_waitv"]),
                ..Default::default()
            },
            &BTreeSet::new(),
            &rec,
        );
        a.merge(&b);
        assert_eq!(a.allow, names(&["futex_waitv", "read", "write"]));
        assert!(a.conditional.contains_key("clone"));
        assert_eq!(a.enosys, names(&["clone3"]));
        // An unconditional clone (recorded with CAP_SYS_ADMIN) absorbs the masked one.
        let mut with_admin = RecordedSet::default();
        with_admin.allow.insert("clone".into());
        a.merge(&with_admin);
        assert!(a.allow.contains("clone") && !a.conditional.contains_key("clone"));
        let text = a.to_json(Arch::X86_64);
        let p = load_profile_json(&text, &LoadOptions::default()).unwrap();
        assert_eq!(RecordedSet::from_profile(&p).unwrap(), a);
    }

    #[test]
    fn only_recorded_profiles_merge() {
        let docker = load_profile_json(
            include_str!("../../profiles/seccomp/docker-default.json"),
            &LoadOptions::default(),
        )
        .unwrap();
        let err = RecordedSet::from_profile(&docker).unwrap_err();
        assert!(err.why.contains("includes/excludes"), "{err}");
        let allow_all = load_profile_json(
            r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
            &LoadOptions::default(),
        )
        .unwrap();
        assert!(RecordedSet::from_profile(&allow_all)
            .unwrap_err()
            .why
            .contains("defaultAction"));
        let kill = load_profile_json(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_KILL"}]}"#,
            &LoadOptions::default(),
        )
        .unwrap();
        assert!(RecordedSet::from_profile(&kill).is_err());
    }
}
