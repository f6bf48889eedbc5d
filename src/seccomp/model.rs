//! A validated seccomp profile: what `load_profile_json` returns once every check has passed.

use std::fmt;

use serde::{Serialize, Serializer};

/// What the kernel does when a rule matches (libseccomp's `SCMP_ACT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Action {
    KillProcess,
    /// `SCMP_ACT_KILL` and `SCMP_ACT_KILL_THREAD`.
    KillThread,
    Trap,
    Errno(u16),
    Notify,
    Trace(u16),
    Log,
    Allow,
}

/// errno for `SCMP_ACT_ERRNO` / `SCMP_ACT_TRACE` without `errnoRet`: runc's default (EPERM).
pub const DEFAULT_ERRNO: u16 = 1;
/// Largest errno the kernel treats as an error return (include/linux/err.h MAX_ERRNO).
pub const MAX_ERRNO: u32 = 4095;

impl Action {
    /// Lower is stronger: the order in which the kernel picks among the results of stacked
    /// filters (Documentation/userspace-api/seccomp_filter.rst, "Return values").
    pub fn precedence(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::Notify => 4,
            Action::Trace(_) => 5,
            Action::Log => 6,
            Action::Allow => 7,
        }
    }

    /// Whether a syscall hitting this action runs (ALLOW and LOG both let it through).
    pub fn permits(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }

    /// The profile spelling, with the errno in parentheses where there is one.
    pub fn scmp_name(self) -> String {
        match self {
            Action::KillProcess => "SCMP_ACT_KILL_PROCESS".into(),
            Action::KillThread => "SCMP_ACT_KILL_THREAD".into(),
            Action::Trap => "SCMP_ACT_TRAP".into(),
            Action::Errno(e) => format!("SCMP_ACT_ERRNO({e})"),
            Action::Notify => "SCMP_ACT_NOTIFY".into(),
            Action::Trace(e) => format!("SCMP_ACT_TRACE({e})"),
            Action::Log => "SCMP_ACT_LOG".into(),
            Action::Allow => "SCMP_ACT_ALLOW".into(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::KillProcess => f.write_str("kill-process"),
            Action::KillThread => f.write_str("kill-thread"),
            Action::Trap => f.write_str("trap"),
            Action::Errno(e) => match errno_name(*e) {
                Some(name) => write!(f, "errno {e} ({name})"),
                None => write!(f, "errno {e}"),
            },
            Action::Notify => f.write_str("notify"),
            Action::Trace(e) => write!(f, "trace {e}"),
            Action::Log => f.write_str("log"),
            Action::Allow => f.write_str("allow"),
        }
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.scmp_name())
    }
}

/// A comparison on one syscall argument (libseccomp `SCMP_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum CmpOp {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    /// `(arg & value) == value_two`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

/// One argument condition of a rule; a rule's conditions must all hold (but see
/// [`Rule::has_repeated_arg`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ArgCond {
    pub index: u8,
    pub op: CmpOp,
    pub value: u64,
    pub value_two: u64,
}

impl fmt::Display for ArgCond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.index;
        let v = self.value;
        match self.op {
            CmpOp::Ne => write!(f, "arg{i} != {v:#x}"),
            CmpOp::Lt => write!(f, "arg{i} < {v:#x}"),
            CmpOp::Le => write!(f, "arg{i} <= {v:#x}"),
            CmpOp::Eq => write!(f, "arg{i} == {v:#x}"),
            CmpOp::Ge => write!(f, "arg{i} >= {v:#x}"),
            CmpOp::Gt => write!(f, "arg{i} > {v:#x}"),
            CmpOp::MaskedEq => write!(f, "arg{i} & {v:#x} == {:#x}", self.value_two),
        }
    }
}

/// Conditions under which dockerd keeps a rule (`includes`) or drops it (`excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// Canonical capability names (`CAP_SYS_ADMIN`).
    pub caps: Vec<String>,
    /// libseccomp native arch names (`amd64`, `arm64`, `x32`, ...).
    pub arches: Vec<String>,
    pub min_kernel: Option<(u32, u32)>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// One entry of `syscalls[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Position in the profile's `syscalls` array, for messages.
    pub index: usize,
    pub names: Vec<String>,
    pub action: Action,
    pub args: Vec<ArgCond>,
    pub comment: Option<String>,
    pub includes: Filter,
    pub excludes: Filter,
}

impl Rule {
    /// runc turns a rule with two conditions on the same argument into one rule per condition
    /// (libseccomp accepts one comparison per argument per rule), so they are ORed, not ANDed.
    pub fn has_repeated_arg(args: &[ArgCond]) -> bool {
        let mut seen = [false; 6];
        args.iter().any(|a| {
            let slot = &mut seen[usize::from(a.index).min(5)];
            std::mem::replace(slot, true)
        })
    }
}

/// A loaded, validated Docker/OCI seccomp profile (before resolution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompProfile {
    /// None when the profile has neither `defaultAction` nor rules: dockerd then runs the
    /// container without seccomp.
    pub default_action: Option<Action>,
    /// `architectures`, as written.
    pub architectures: Vec<String>,
    /// `archMap`: (architecture, sub-architectures).
    pub arch_map: Vec<(String, Vec<String>)>,
    pub flags: Vec<String>,
    pub listener_path: Option<String>,
    pub rules: Vec<Rule>,
    /// Names known on no architecture, kept only under `allow_unknown_syscalls`; resolution
    /// skips them.
    pub unknown_names: Vec<String>,
}

/// errno names Podman profiles use, and those worth printing.
pub(crate) const ERRNO_NAMES: &[(&str, u16)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("ESRCH", 3),
    ("EINTR", 4),
    ("EIO", 5),
    ("ENXIO", 6),
    ("E2BIG", 7),
    ("ENOEXEC", 8),
    ("EBADF", 9),
    ("ECHILD", 10),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("EXDEV", 18),
    ("ENODEV", 19),
    ("ENOTDIR", 20),
    ("EISDIR", 21),
    ("EINVAL", 22),
    ("ENFILE", 23),
    ("EMFILE", 24),
    ("ENOTTY", 25),
    ("ENOSPC", 28),
    ("ESPIPE", 29),
    ("EROFS", 30),
    ("EPIPE", 32),
    ("ERANGE", 34),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
    ("EAFNOSUPPORT", 97),
];

/// The symbolic name of an errno value, if it is one of the common ones.
pub(crate) fn errno_name(value: u16) -> Option<&'static str> {
    ERRNO_NAMES
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(n, _)| *n)
}
