//! A sandbox profile's seccomp profile in one line, as `profile show` prints it: the default
//! action and how many syscalls may run once resolved for the profile's capabilities.

use std::fmt;

use serde::Serialize;

use super::lint_profile::effective_caps;
use super::{host_kernel, resolve, Action, Arch, SeccompError};
use crate::profile::Profile;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompSummary {
    pub arch: Arch,
    /// None: the file disables seccomp (profiles cannot load such a file, but a summary of one
    /// says so rather than failing).
    pub default_action: Option<Action>,
    /// Syscalls some calls of which may run.
    pub allowed: usize,
    /// Of those, the ones allowed only for some arguments.
    pub conditional: usize,
    /// How many capabilities the resolution assumed (the profile's effective set).
    pub caps: usize,
}

/// Resolves `p`'s seccomp profile for its effective capabilities on this host.
pub fn summarize(p: &Profile) -> Result<SeccompSummary, SeccompError> {
    let caps = effective_caps(p);
    let arch = Arch::host();
    let r = resolve(&p.seccomp.parsed, &caps, arch, host_kernel());
    let allowed = r.allowed();
    let unconditional = r.allowed_unconditionally();
    Ok(SeccompSummary {
        arch,
        default_action: r.default_action,
        allowed: allowed.len(),
        conditional: allowed.difference(&unconditional).count(),
        caps: caps.len(),
    })
}

impl fmt::Display for SeccompSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(default) = self.default_action else {
            return f.write_str("disabled (no defaultAction and no rules)");
        };
        write!(
            f,
            "default {default}; {} syscalls allowed ({} for some arguments only) on {} with {} capabilit{}",
            self.allowed,
            self.conditional,
            self.arch,
            self.caps,
            if self.caps == 1 { "y" } else { "ies" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{self, ProfileDirs};

    #[test]
    fn default_profile_summary() {
        let p = profile::load("default", &ProfileDirs::default()).unwrap();
        let s = summarize(&p).unwrap();
        assert_eq!(s.default_action, Some(Action::Errno(1)));
        assert_eq!(s.caps, 0);
        assert!(s.allowed > 200 && s.allowed < 309, "{}", s.allowed);
        let text = s.to_string();
        assert!(text.starts_with("default errno 1 (EPERM); "), "{text}");
        assert!(text.contains("with 0 capabilities"), "{text}");
    }
}
