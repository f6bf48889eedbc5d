//! Compilation to BPF with seccompiler 0.5, as a check that a profile can be applied.
//!
//! seccompiler builds filters with one match action and one mismatch action. A profile has one
//! default action and rules with any actions, so it becomes a stack of filters:
//! - a *base* filter that lets through (ALLOW) every call some rule matches and applies the
//!   default action to the rest (omitted when the default is ALLOW);
//! - one filter per distinct non-ALLOW rule action A, returning A where its rules match and
//!   ALLOW elsewhere.
//!
//! The kernel runs every filter and keeps the strongest result (KILL_PROCESS > KILL_THREAD >
//! TRAP > ERRNO > TRACE > LOG > ALLOW; between two ERRNO results, the filter installed last).
//! That equals the runtime's first-match-wins order unless a call matches two rules of one
//! syscall where the earlier rule is the weaker; such cases are listed in `notes`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use serde::Serialize;

use super::model::{ArgCond, CmpOp};
use super::resolve::{ResolvedProfile, ResolvedRule};
use super::{Action, Arch, SeccompError};

/// One BPF program of the stack.
#[derive(Debug, Clone, Serialize)]
pub struct CompiledFilter {
    pub match_action: Action,
    pub mismatch_action: Action,
    /// Syscalls with rules in this filter.
    pub syscalls: usize,
    /// BPF instructions (the kernel caps a program at 4096).
    pub instructions: usize,
    #[serde(skip)]
    pub program: BpfProgram,
}

/// The filters for one architecture, in install order.
#[derive(Debug, Clone, Serialize)]
pub struct CompiledFilters {
    pub arch: Arch,
    pub filters: Vec<CompiledFilter>,
    /// Where the stacked filters and a runtime's first-match order may differ.
    pub notes: Vec<String>,
}

/// Compiles a resolved profile into seccompiler BPF programs for `arch`.
///
/// Fails, with the reason, when the profile cannot become BPF: `SCMP_ACT_NOTIFY` (seccompiler
/// has no user-notification return), a program over the kernel's instruction limit, or a
/// seccompiler validation error.
pub fn compile(r: &ResolvedProfile, arch: Arch) -> Result<CompiledFilters, SeccompError> {
    let mut out = CompiledFilters {
        arch,
        filters: Vec::new(),
        notes: Vec::new(),
    };
    let Some(default) = r.default_action else {
        out.notes
            .push("seccomp is disabled by this profile: no filter".to_string());
        return Ok(out);
    };
    let mut by_action: BTreeMap<Action, Vec<(u32, &ResolvedRule)>> = BTreeMap::new();
    let mut all: Vec<(u32, &ResolvedRule)> = Vec::new();
    for (name, sys) in &r.syscalls {
        for rule in &sys.rules {
            by_action
                .entry(rule.action)
                .or_default()
                .push((sys.nr, rule));
            all.push((sys.nr, rule));
        }
        note_order_conflicts(name, &sys.rules, &mut out.notes);
    }
    let notify = std::iter::once(default)
        .chain(by_action.keys().copied())
        .any(|a| a == Action::Notify);
    if notify {
        return Err(SeccompError::Compile {
            arch,
            action: Action::Notify.scmp_name(),
            reason: "SCMP_ACT_NOTIFY needs a user-space listener, and seccompiler 0.5 has no \
                     SECCOMP_RET_USER_NOTIF action"
                .to_string(),
        });
    }
    if default != Action::Allow {
        out.filters.push(build(arch, &all, Action::Allow, default)?);
    } else if all.is_empty() {
        out.notes
            .push("the default action allows every syscall and no rule restricts any".to_string());
    }
    for (action, rules) in &by_action {
        if *action != Action::Allow {
            out.filters
                .push(build(arch, rules, *action, Action::Allow)?);
        }
    }
    Ok(out)
}

fn note_order_conflicts(name: &str, rules: &[ResolvedRule], notes: &mut Vec<String>) {
    for (i, earlier) in rules.iter().enumerate() {
        for later in &rules[i + 1..] {
            if later.action.precedence() < earlier.action.precedence() {
                notes.push(format!(
                    "{name}: calls matching both rule {} ({}) and rule {} ({}) get {} from the \
                     stacked filters, while runtimes apply the first matching rule ({})",
                    earlier.source,
                    earlier.action,
                    later.source,
                    later.action,
                    later.action,
                    earlier.action
                ));
            }
        }
    }
}

fn compile_error(arch: Arch, action: Action, e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile {
        arch,
        action: action.scmp_name(),
        reason: e.to_string(),
    }
}

fn build(
    arch: Arch,
    rules: &[(u32, &ResolvedRule)],
    match_action: Action,
    mismatch_action: Action,
) -> Result<CompiledFilter, SeccompError> {
    let err = |e: seccompiler::BackendError| compile_error(arch, match_action, e);
    // A syscall with an unconditional rule is matched whole; seccompiler spells that as an
    // empty rule list.
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for (nr, rule) in rules {
        let slot = map
            .entry(i64::from(*nr))
            .or_insert_with(|| Some(Vec::new()));
        if rule.args.is_empty() {
            *slot = None;
        } else if let Some(list) = slot {
            let conds = rule
                .args
                .iter()
                .map(condition)
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            list.push(SeccompRule::new(conds).map_err(err)?);
        }
    }
    let syscalls = map.len();
    let map: BTreeMap<i64, Vec<SeccompRule>> = map
        .into_iter()
        .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(
        map,
        to_seccompiler(mismatch_action),
        to_seccompiler(match_action),
        arch.target(),
    )
    .map_err(err)?;
    let program: BpfProgram = filter.try_into().map_err(err)?;
    Ok(CompiledFilter {
        match_action,
        mismatch_action,
        syscalls,
        instructions: program.len(),
        program,
    })
}

/// libseccomp compares all 64 bits of an argument; so do these conditions.
fn condition(a: &ArgCond) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (op, value) = match a.op {
        CmpOp::Ne => (SeccompCmpOp::Ne, a.value),
        CmpOp::Lt => (SeccompCmpOp::Lt, a.value),
        CmpOp::Le => (SeccompCmpOp::Le, a.value),
        CmpOp::Eq => (SeccompCmpOp::Eq, a.value),
        CmpOp::Ge => (SeccompCmpOp::Ge, a.value),
        CmpOp::Gt => (SeccompCmpOp::Gt, a.value),
        // OCI: value is the mask, valueTwo the datum.
        CmpOp::MaskedEq => (SeccompCmpOp::MaskedEq(a.value), a.value_two),
    };
    SeccompCondition::new(a.index, SeccompCmpArgLen::Qword, op, value)
}

fn to_seccompiler(a: Action) -> SeccompAction {
    match a {
        Action::KillProcess => SeccompAction::KillProcess,
        Action::KillThread => SeccompAction::KillThread,
        Action::Trap => SeccompAction::Trap,
        Action::Errno(e) => SeccompAction::Errno(u32::from(e)),
        Action::Trace(e) => SeccompAction::Trace(u32::from(e)),
        Action::Log => SeccompAction::Log,
        // Notify is refused before any filter is built; Allow is the only other action.
        Action::Allow | Action::Notify => SeccompAction::Allow,
    }
}
