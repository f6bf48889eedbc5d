//! Seccomp and capability profiles in the Docker/OCI seccomp JSON format.
//!
//! A profile moves through: [`load_profile_json`] (parse + validate, every syscall name known)
//! -> [`resolve`] (includes/excludes by capabilities, architecture and kernel, as dockerd does)
//! -> [`compile`] (BPF programs via seccompiler, as a check that the profile can be applied)
//! -> [`lint_seccomp`] / [`lint_profile`] / [`diff`] (reports). See docs/seccomp.md.

mod arch;
pub mod caps;
pub mod cli;
mod compile;
mod diff;
mod error;
mod lint;
mod lint_profile;
mod load;
mod model;
mod resolve;
mod syscalls;

pub use arch::{host_kernel, parse_kernel, Arch};
pub use compile::{compile, CompiledFilter, CompiledFilters};
pub use diff::{diff, ProfileDiff, RuleChange};
pub use error::SeccompError;
pub use lint::{lint_caps, lint_seccomp, score, Finding, LintReport, Severity};
pub use lint_profile::lint_profile;
pub use load::{load_profile_json, LoadOptions, MAX_PROFILE_BYTES};
pub use model::{Action, ArgCond, CmpOp, Filter, Rule, SeccompProfile};
pub use resolve::{resolve, ResolvedProfile, ResolvedRule, Verdict};
pub use syscalls::{is_known_syscall, syscall_names, syscall_number};
