//! Target architectures and kernel versions, the two host facts resolution depends on.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// An architecture stockade can resolve and compile a profile for (what seccompiler 0.5 supports
/// besides riscv64, which Docker hosts rarely are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every supported architecture, for checks that must hold on all of them.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture stockade was built for, which is the one its containers run on.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// The name dockerd matches against `includes.arches` / `excludes.arches`
    /// (libseccomp's native arch name, moby profiles/seccomp `goToNative`).
    pub fn docker_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The libseccomp name used by `archMap` and `architectures`.
    pub fn scmp_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }

    pub(crate) fn target(self) -> seccompiler::TargetArch {
        match self {
            Arch::X86_64 => seccompiler::TargetArch::x86_64,
            Arch::Aarch64 => seccompiler::TargetArch::aarch64,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "scmp_arch_x86_64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" | "scmp_arch_aarch64" => Ok(Arch::Aarch64),
            _ => Err(format!(
                "unsupported architecture {s:?} (supported: x86_64, aarch64)"
            )),
        }
    }
}

/// Parses a kernel release the way moby does: the first two numbers count, the rest is ignored
/// ("6.1.0-18-amd64" -> (6, 1), "4.8" -> (4, 8)).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits: String = minor_text
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let minor = digits.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's version, which is what dockerd compares `minKernel` against.
pub fn host_kernel() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel(&release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_forms() {
        assert_eq!(parse_kernel("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("3.12-1-amd64"), Some((3, 12)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("4"), None);
        assert_eq!(parse_kernel("x.y"), None);
    }

    #[test]
    fn arch_names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.to_string().parse::<Arch>(), Ok(arch));
            assert_eq!(arch.docker_name().parse::<Arch>(), Ok(arch));
        }
    }
}
