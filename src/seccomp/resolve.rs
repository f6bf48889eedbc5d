//! Resolution: a template profile + capabilities + architecture + kernel -> the concrete rules
//! a runtime installs, following dockerd (moby profiles/seccomp/seccomp_linux.go setupSeccomp).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::model::{ArgCond, Filter, Rule, SeccompProfile};
use super::{syscalls, Action, Arch};

/// One rule for one syscall after resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedRule {
    pub action: Action,
    /// All must hold; empty means the rule matches every call.
    pub args: Vec<ArgCond>,
    /// Index of the profile rule it came from.
    pub source: usize,
}

/// The rules of one syscall, in profile order. Per the runtime spec the first matching rule
/// decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedSyscall {
    pub nr: u32,
    pub rules: Vec<ResolvedRule>,
    /// Profile rules that can never decide for this syscall because an earlier rule matches
    /// every call (or the same calls).
    pub shadowed: Vec<usize>,
}

/// What happens to a call of one syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Every call runs.
    Allow,
    /// Every call gets this action.
    Deny { action: Action },
    /// Depends on the arguments: `actions` where a conditional rule matches, else `otherwise`.
    Conditional {
        actions: Vec<Action>,
        otherwise: Action,
    },
}

impl Verdict {
    /// Whether at least some calls run.
    pub fn may_run(&self) -> bool {
        match self {
            Verdict::Allow => true,
            Verdict::Deny { .. } => false,
            Verdict::Conditional { actions, otherwise } => {
                otherwise.permits() || actions.iter().any(|a| a.permits())
            }
        }
    }
}

/// A profile resolved for one capability set, architecture and kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedProfile {
    pub arch: Arch,
    pub caps: BTreeSet<String>,
    /// None: unknown, every `minKernel` counts as met (a current kernel).
    pub kernel: Option<(u32, u32)>,
    /// None: the profile disables seccomp.
    pub default_action: Option<Action>,
    /// Architectures the filter covers, as dockerd expands them (`archMap` entry of `arch`
    /// with its sub-architectures, or `architectures` verbatim).
    pub architectures: Vec<String>,
    pub flags: Vec<String>,
    /// Syscalls with at least one rule, by name.
    pub syscalls: BTreeMap<String, ResolvedSyscall>,
    /// Names in kept rules that are syscalls on other architectures only.
    pub not_on_arch: BTreeSet<String>,
    /// Names known on no architecture, skipped under `allow_unknown_syscalls`.
    pub unknown_names: Vec<String>,
    /// Profile rules whose conditions repeat an argument index; runc splits them into one rule
    /// per condition, so the conditions are ORed, and so does this resolution.
    pub split_rules: Vec<usize>,
    /// Profile rules dropped by their includes/excludes.
    pub dropped_rules: Vec<usize>,
}

impl ResolvedProfile {
    /// What happens to calls of `name` (which need not have rules).
    pub fn verdict(&self, name: &str) -> Verdict {
        let Some(default) = self.default_action else {
            return Verdict::Allow;
        };
        let rules = self
            .syscalls
            .get(name)
            .map(|s| s.rules.as_slice())
            .unwrap_or_default();
        let mut actions = Vec::new();
        let mut otherwise = default;
        for r in rules {
            if r.args.is_empty() {
                otherwise = r.action;
                break;
            }
            if !actions.contains(&r.action) {
                actions.push(r.action);
            }
        }
        actions.retain(|a| *a != otherwise);
        match (actions.is_empty(), otherwise.permits()) {
            (true, true) => Verdict::Allow,
            (true, false) => Verdict::Deny { action: otherwise },
            (false, _) => Verdict::Conditional { actions, otherwise },
        }
    }

    /// Syscalls of the architecture that at least some calls of may run.
    pub fn allowed(&self) -> BTreeSet<String> {
        syscalls::syscall_names(self.arch)
            .filter(|n| self.verdict(n).may_run())
            .map(str::to_string)
            .collect()
    }

    /// Syscalls every call of which runs.
    pub fn allowed_unconditionally(&self) -> BTreeSet<String> {
        syscalls::syscall_names(self.arch)
            .filter(|n| self.verdict(n) == Verdict::Allow)
            .map(str::to_string)
            .collect()
    }
}

/// Resolves `p` for a container whose bounding set is `caps` (canonical `CAP_*` names), on
/// `arch`, under kernel `kernel` (major, minor).
///
/// Rules are kept or dropped exactly as dockerd does: `excludes` first (any listed arch equal to
/// the native one, any listed cap present, or kernel >= minKernel drops the rule), then
/// `includes` (native arch not listed, any listed cap missing, or kernel < minKernel drops it).
pub fn resolve(
    p: &SeccompProfile,
    caps: &BTreeSet<String>,
    arch: Arch,
    kernel: Option<(u32, u32)>,
) -> ResolvedProfile {
    build(p, arch, caps.clone(), kernel, |r| {
        keep(r, caps, arch.docker_name(), kernel)
    })
}

/// Every rule kept whatever its conditions: the largest filter the profile can produce on
/// `arch`, which load compiles to prove that every resolution of it compiles.
pub(crate) fn widest(p: &SeccompProfile, arch: Arch) -> ResolvedProfile {
    build(p, arch, BTreeSet::new(), None, |_| true)
}

fn build(
    p: &SeccompProfile,
    arch: Arch,
    caps: BTreeSet<String>,
    kernel: Option<(u32, u32)>,
    mut keep_rule: impl FnMut(&Rule) -> bool,
) -> ResolvedProfile {
    let architectures = if p.arch_map.is_empty() {
        p.architectures.clone()
    } else {
        p.arch_map
            .iter()
            .find(|(a, _)| a == arch.scmp_name())
            .map(|(a, subs)| std::iter::once(a).chain(subs).cloned().collect())
            .unwrap_or_default()
    };
    let mut out = ResolvedProfile {
        arch,
        caps,
        kernel,
        default_action: p.default_action,
        architectures,
        flags: p.flags.clone(),
        syscalls: BTreeMap::new(),
        not_on_arch: BTreeSet::new(),
        unknown_names: p.unknown_names.clone(),
        split_rules: Vec::new(),
        dropped_rules: Vec::new(),
    };
    for rule in &p.rules {
        if !keep_rule(rule) {
            out.dropped_rules.push(rule.index);
            continue;
        }
        // runc adds each condition as its own rule when an argument index repeats.
        let alternatives: Vec<Vec<ArgCond>> = if Rule::has_repeated_arg(&rule.args) {
            out.split_rules.push(rule.index);
            rule.args.iter().map(|a| vec![*a]).collect()
        } else {
            vec![rule.args.clone()]
        };
        for name in &rule.names {
            let Some(nr) = syscalls::syscall_number(arch, name) else {
                if syscalls::is_known_syscall(name) {
                    out.not_on_arch.insert(name.clone());
                }
                continue;
            };
            let entry = out
                .syscalls
                .entry(name.clone())
                .or_insert_with(|| ResolvedSyscall {
                    nr,
                    rules: Vec::new(),
                    shadowed: Vec::new(),
                });
            for args in &alternatives {
                let covered = entry
                    .rules
                    .iter()
                    .any(|r| r.args.is_empty() || r.args == *args);
                if covered {
                    if !entry.shadowed.contains(&rule.index) {
                        entry.shadowed.push(rule.index);
                    }
                } else {
                    entry.rules.push(ResolvedRule {
                        action: rule.action,
                        args: args.clone(),
                        source: rule.index,
                    });
                }
            }
        }
    }
    out
}

fn keep(r: &Rule, caps: &BTreeSet<String>, native: &str, kernel: Option<(u32, u32)>) -> bool {
    // An unknown kernel counts as new enough for every minKernel.
    let kernel_at_least = |min: (u32, u32)| kernel.map_or(true, |k| k >= min);
    let Filter {
        caps: ex_caps,
        arches: ex_arches,
        min_kernel: ex_kernel,
    } = &r.excludes;
    if ex_arches.iter().any(|a| a == native)
        || ex_caps.iter().any(|c| caps.contains(c))
        || ex_kernel.is_some_and(kernel_at_least)
    {
        return false;
    }
    let Filter {
        caps: in_caps,
        arches: in_arches,
        min_kernel: in_kernel,
    } = &r.includes;
    if !in_arches.is_empty() && !in_arches.iter().any(|a| a == native) {
        return false;
    }
    if !in_caps.iter().all(|c| caps.contains(c)) {
        return false;
    }
    !in_kernel.is_some_and(|min| !kernel_at_least(min))
}
