//! Seccomp and capability profiles in the Docker/OCI seccomp JSON format.
//!
//! A profile moves through: [`load_profile_json`] (parse + validate, every syscall name known)
//! -> [`resolve`] (includes/excludes by capabilities, architecture and kernel, as dockerd does)
//! -> [`compile`] (BPF programs via seccompiler, as a check that the profile can be applied)
//! -> [`lint_seccomp`] / [`lint_profile`] / [`diff`] (reports). See docs/seccomp.md.
//!
//! [`record()`] runs a workload under strace in the sandbox and writes the minimal profile it
//! needs ([`RecordedSet`]: the traced syscalls plus the runtime's [`runtime_baseline`]);
//! [`verify()`] reruns it under that profile and probes escapes. See docs/profiles.md.

mod arch;
mod baseline;
pub mod caps;
mod compile;
mod diff;
mod error;
mod lint;
mod lint_profile;
mod load;
mod model;
mod record;
mod recorded;
mod resolve;
mod summary;
mod syscalls;
mod trace;
mod verify;

pub use arch::{host_kernel, parse_kernel, Arch};
pub use baseline::runtime_baseline;
pub use compile::{compile, CompiledFilter, CompiledFilters};
pub use diff::{diff, ProfileDiff, RuleChange};
pub use error::SeccompError;
pub use lint::{lint_caps, lint_seccomp, score, Finding, LintReport, Severity};
pub use lint_profile::{effective_caps, lint_profile, lint_profile_for};
pub use load::{load_profile_json, LoadOptions, MAX_PROFILE_BYTES};
pub use model::{Action, ArgCond, CmpOp, Filter, Rule, SeccompProfile};
pub use record::{
    read_profile_file, record, recording_profile, traced_command, RecordError, RecordRequest,
    Recording, MAX_TRACE_BYTES, RECORDING_SECCOMP,
};
pub use recorded::{classify, Classified, NotRecorded, RecordedSet, CLONE_NAMESPACE_MASK};
pub use resolve::{resolve, ResolvedProfile, ResolvedRule, Verdict};
pub use summary::{summarize, SeccompSummary};
pub use syscalls::{is_known_syscall, syscall_names, syscall_number};
pub use trace::{parse_strace, SyscallUse, Trace};
pub use verify::{seccomp_policy, verify, CheckResult, Verification, VerifyRequest};
