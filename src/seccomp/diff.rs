//! Diff of two resolved profiles: syscalls and capabilities added and removed, argument rules
//! that changed.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::resolve::{ResolvedProfile, Verdict};
use super::Action;

/// A syscall allowed on both sides whose rules differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    pub syscall: String,
    pub a: String,
    pub b: String,
}

/// What changes going from A to B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileDiff {
    pub a: String,
    pub b: String,
    /// Present when the default actions differ: (A, B).
    pub default_action: Option<(String, String)>,
    /// Syscalls some calls of which run under B but none under A.
    pub syscalls_added: Vec<String>,
    pub syscalls_removed: Vec<String>,
    pub rules_changed: Vec<RuleChange>,
    pub caps_added: Vec<String>,
    pub caps_removed: Vec<String>,
}

impl ProfileDiff {
    pub fn is_empty(&self) -> bool {
        self.default_action.is_none()
            && self.syscalls_added.is_empty()
            && self.syscalls_removed.is_empty()
            && self.rules_changed.is_empty()
            && self.caps_added.is_empty()
            && self.caps_removed.is_empty()
    }

    /// Names the two sides in the report.
    pub fn labelled(mut self, a: impl Into<String>, b: impl Into<String>) -> Self {
        self.a = a.into();
        self.b = b.into();
        self
    }
}

fn default_text(a: Option<Action>) -> String {
    a.map_or_else(|| "seccomp disabled".to_string(), |a| a.to_string())
}

/// How calls of `name` are decided, in one line.
fn rules_text(r: &ResolvedProfile, name: &str) -> String {
    let verdict = r.verdict(name);
    let Some(sys) = r.syscalls.get(name) else {
        return match verdict {
            Verdict::Allow => "allow (default)".to_string(),
            Verdict::Deny { action } => format!("{action} (default)"),
            Verdict::Conditional { otherwise, .. } => format!("{otherwise} (default)"),
        };
    };
    let mut parts: Vec<String> = sys
        .rules
        .iter()
        .map(|rule| {
            if rule.args.is_empty() {
                rule.action.to_string()
            } else {
                let conds: Vec<String> = rule.args.iter().map(ToString::to_string).collect();
                format!("{} if {}", rule.action, conds.join(" && "))
            }
        })
        .collect();
    if sys.rules.iter().all(|rule| !rule.args.is_empty()) {
        parts.push(format!("else {}", default_text(r.default_action)));
    }
    parts.join("; ")
}

/// Compares A and B, each resolved (for the same architecture) with its own capability set.
pub fn diff(
    a: &ResolvedProfile,
    b: &ResolvedProfile,
    caps_a: &BTreeSet<String>,
    caps_b: &BTreeSet<String>,
) -> ProfileDiff {
    let allowed_a = a.allowed();
    let allowed_b = b.allowed();
    let rules_changed = allowed_a
        .intersection(&allowed_b)
        .filter_map(|name| {
            let (ta, tb) = (rules_text(a, name), rules_text(b, name));
            (ta != tb).then(|| RuleChange {
                syscall: name.clone(),
                a: ta,
                b: tb,
            })
        })
        .collect();
    let (da, db) = (
        default_text(a.default_action),
        default_text(b.default_action),
    );
    ProfileDiff {
        a: "A".to_string(),
        b: "B".to_string(),
        default_action: (da != db).then_some((da, db)),
        syscalls_added: allowed_b.difference(&allowed_a).cloned().collect(),
        syscalls_removed: allowed_a.difference(&allowed_b).cloned().collect(),
        rules_changed,
        caps_added: caps_b.difference(caps_a).cloned().collect(),
        caps_removed: caps_a.difference(caps_b).cloned().collect(),
    }
}

impl fmt::Display for ProfileDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- {}\n+++ {}", self.a, self.b)?;
        if self.is_empty() {
            return writeln!(f, "no differences");
        }
        let mut rows: Vec<(&str, &str, String)> = Vec::new();
        if let Some((a, b)) = &self.default_action {
            rows.push(("~", "default", format!("{a} -> {b}")));
        }
        for s in &self.syscalls_added {
            rows.push(("+", "syscall", s.clone()));
        }
        for s in &self.syscalls_removed {
            rows.push(("-", "syscall", s.clone()));
        }
        for c in &self.caps_added {
            rows.push(("+", "cap", c.clone()));
        }
        for c in &self.caps_removed {
            rows.push(("-", "cap", c.clone()));
        }
        for ch in &self.rules_changed {
            rows.push(("~", "args", format!("{}: {} -> {}", ch.syscall, ch.a, ch.b)));
        }
        for (sign, kind, what) in rows {
            writeln!(f, "{sign} {kind:<8} {what}")?;
        }
        writeln!(
            f,
            "{} syscall(s) added, {} removed, {} rule change(s); {} cap(s) added, {} removed",
            self.syscalls_added.len(),
            self.syscalls_removed.len(),
            self.rules_changed.len(),
            self.caps_added.len(),
            self.caps_removed.len()
        )
    }
}
