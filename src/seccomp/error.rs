//! The one error type of the seccomp module.

use super::Arch;

/// Why a seccomp profile cannot be loaded or compiled. Each variant names the offending value
/// and where it is (`syscalls[3]` is the fourth rule of the profile).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    #[error("seccomp profile is {size} bytes, more than the {max}-byte limit")]
    TooLarge { size: usize, max: usize },

    #[error("seccomp profile is not valid Docker/OCI seccomp JSON: {source}")]
    Parse {
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "unknown syscall name(s) {names:?} (not a syscall on any Linux architecture); fix the \
         spelling, or opt out with --allow-unknown-syscalls to skip them"
    )]
    UnknownSyscalls { names: Vec<String> },

    #[error("{at}: {message}")]
    Invalid { at: String, message: String },

    #[error("{at}: unknown action {action:?}")]
    UnknownAction { at: String, action: String },

    #[error("{at}: unknown capability {cap:?}{hint}")]
    UnknownCapability {
        at: String,
        cap: String,
        hint: String,
    },

    #[error("{at}: unknown architecture {arch:?}")]
    UnknownArch { at: String, arch: String },

    #[error(
        "{at}: invalid kernel version {value:?}, expected \"<kernel>.<major>\" such as \"4.8\""
    )]
    KernelVersion { at: String, value: String },

    #[error(
        "seccomp profile cannot become a BPF program for {arch} (filter for {action}): {reason}"
    )]
    Compile {
        arch: Arch,
        action: String,
        reason: String,
    },
}
