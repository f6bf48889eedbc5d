//! The check stage: parse a command, see through obfuscation, match escape rules.

use serde::{Deserialize, Serialize};

/// What the check stage decided for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Warn,
    Deny,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub category: String,
    pub severity: String,
    pub decision: Decision,
    /// The matched text, after normalization.
    pub fragment: String,
    pub why: String,
}

/// The verdict with every rule hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub hits: Vec<RuleHit>,
}

impl Verdict {
    pub fn rule_ids(&self) -> Vec<String> {
        self.hits.iter().map(|h| h.id.clone()).collect()
    }
}

/// Per-profile policy overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Rule ids that this profile allows (their hits are reported but do not warn or deny).
    #[serde(default)]
    pub allow_rules: Vec<String>,
}

/// The loaded rule set. Placeholder until the validator lands: allows everything.
#[derive(Debug, Default)]
pub struct Checker {}

impl Checker {
    pub fn builtin() -> Self {
        Checker {}
    }

    pub fn check(&self, _command: &str, _policy: &Policy) -> Verdict {
        Verdict { decision: Decision::Allow, hits: Vec::new() }
    }
}
