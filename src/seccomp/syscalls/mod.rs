//! Syscall name tables for x86_64 and aarch64 (seccompiler 0.5 keeps its own tables private).
//!
//! `table.rs` is generated from the kernel UAPI headers by tools/gen-syscall-table.py. A name is
//! *known* if it is a syscall on any Linux architecture: profiles legitimately list names of
//! other architectures (Docker's default lists `_llseek`, `arm_fadvise64_64`, ...), which resolve
//! to nothing here, while a name known nowhere is a typo.

mod table;

use super::Arch;

fn table(arch: Arch) -> &'static [(&'static str, u32)] {
    match arch {
        Arch::X86_64 => table::X86_64,
        Arch::Aarch64 => table::AARCH64,
    }
}

/// The syscall number of `name` on `arch`, or None if `arch` has no such syscall.
pub fn syscall_number(arch: Arch, name: &str) -> Option<u32> {
    let t = table(arch);
    // The generated tables are sorted by name.
    t.binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| t[i].1)
}

/// Every syscall name of `arch`, sorted.
pub fn syscall_names(arch: Arch) -> impl Iterator<Item = &'static str> {
    table(arch).iter().map(|(n, _)| *n)
}

/// Whether `name` is a syscall on some Linux architecture.
pub fn is_known_syscall(name: &str) -> bool {
    Arch::ALL.iter().any(|a| syscall_number(*a, name).is_some())
        || table::OTHER_ARCH_ONLY.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique() {
        for arch in Arch::ALL {
            let names: Vec<_> = syscall_names(arch).collect();
            assert!(
                names.windows(2).all(|w| w[0] < w[1]),
                "{arch} table unsorted"
            );
        }
        assert!(table::OTHER_ARCH_ONLY.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn well_known_numbers() {
        assert_eq!(syscall_number(Arch::X86_64, "read"), Some(0));
        assert_eq!(syscall_number(Arch::X86_64, "exit_group"), Some(231));
        assert_eq!(syscall_number(Arch::X86_64, "clone3"), Some(435));
        assert_eq!(syscall_number(Arch::Aarch64, "openat"), Some(56));
        assert_eq!(syscall_number(Arch::Aarch64, "exit_group"), Some(94));
        // aarch64 has no legacy open(2).
        assert_eq!(syscall_number(Arch::Aarch64, "open"), None);
        assert_eq!(syscall_number(Arch::X86_64, "mseal"), Some(462));
    }

    #[test]
    fn known_names_span_architectures() {
        assert!(is_known_syscall("_llseek"));
        assert!(is_known_syscall("arm_fadvise64_64"));
        assert!(is_known_syscall("socketcall"));
        assert!(!is_known_syscall("opne"));
    }
}
