//! The check stage: parse a command, see through obfuscation, match escape rules.
//!
//! [`parse`] splits the string into pipelines and words, [`normalize`] resolves what each program
//! really is (through wrappers, shells, decoders and interpreters) and reports tricks as signals,
//! and the rules from `profiles/rules/*.toml` ([`rules`]) are matched against the result. The
//! [`Policy`] maps rule severities to the [`Decision`]. docs/checking.md describes it in full.

pub mod builtins;
pub mod corpus;
pub mod eval;
pub mod expand;
pub mod interp;
pub mod normalize;
pub mod parse;
pub mod rules;
pub mod runners;
pub mod transform;
pub mod wrappers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use normalize::{Analysis, Invocation, Signal};
pub use rules::Severity;
use rules::{Build, Matcher, Rule, Sets};

/// What the check stage decided for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Warn,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Warn => "warn",
            Decision::Deny => "deny",
        }
    }
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub decision: Decision,
    /// The matched text, after normalization.
    pub fragment: String,
    pub why: String,
}

/// The verdict with every rule hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    /// The rules that matched (allowed ones too, with decision `allow`).
    pub rules: Vec<RuleHit>,
}

impl Verdict {
    pub fn rule_ids(&self) -> Vec<String> {
        self.rules.iter().map(|h| h.id.clone()).collect()
    }
}

/// What [`Checker::verify_examples`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExampleReport {
    pub rules: usize,
    /// Examples run.
    pub checked: usize,
    pub failures: Vec<ExampleFailure>,
}

/// A rule example that did not behave as its rule says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExampleFailure {
    pub rule: String,
    pub example: String,
    /// `true`: a `matches` example the rule missed; `false`: a `not_match` example it hit.
    pub expected: bool,
}

/// Per-profile policy overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Rule ids that this profile allows (their hits are reported but do not warn or deny).
    #[serde(default)]
    pub allow_rules: Vec<String>,
    /// Decision per severity, replacing the default (critical/high: deny, medium/low: warn,
    /// info: allow and not reported).
    #[serde(default)]
    pub severity: BTreeMap<Severity, Decision>,
    /// Decision per rule id; takes precedence over `allow_rules` and `severity`.
    #[serde(default)]
    pub rules: BTreeMap<String, Decision>,
}

impl Policy {
    /// The decision for a hit of `rule`, and whether the hit is reported.
    fn decide(&self, id: &str, severity: Severity) -> (Decision, bool) {
        if let Some(d) = self.rules.get(id) {
            return (*d, true);
        }
        if self.allow_rules.iter().any(|r| r == id) {
            return (Decision::Allow, true);
        }
        let d = self
            .severity
            .get(&severity)
            .copied()
            .unwrap_or_else(|| severity.default_decision());
        (d, d != Decision::Allow)
    }
}

/// Why rules failed to load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error("reading rule file {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rule file {path} is {size} bytes, more than the {max} allowed", max = rules::MAX_RULE_FILE_BYTES)]
    TooLarge { path: String, size: usize },
    #[error("parsing rule file {path}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("rule {rule}: invalid regex in `{field}`")]
    Regex {
        rule: String,
        field: &'static str,
        source: Box<regex::Error>,
    },
    #[error("rule id {id} is defined twice")]
    DuplicateRule { id: String },
    #[error("set {set} is defined twice")]
    DuplicateSet { set: String },
    #[error("rule {rule}: unknown set @{set}")]
    UnknownSet { rule: String, set: String },
    #[error("rule {rule}: unknown signal {signal:?}")]
    UnknownSignal { rule: String, signal: String },
    #[error("rule {rule}: `requires` names unknown rule {id}")]
    UnknownRequire { rule: String, id: String },
    #[error("rule {rule}: needs {reason}")]
    BadMatcher { rule: String, reason: &'static str },
    #[error("rule {rule}: has no `match` examples")]
    NoExamples { rule: String },
    #[error("rule {rule}: example {example:?} should {} match", if *.expected { "" } else { "not" })]
    Example {
        rule: String,
        example: String,
        expected: bool,
    },
}

/// Longest command analysed; the rest is not looked at and the verdict says so
/// (signal `analysis-limit`).
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

/// The builtin rule files, embedded in the binary.
pub const BUILTIN_RULES: &[(&str, &str)] = &[
    ("sets.toml", include_str!("../../profiles/rules/sets.toml")),
    (
        "namespace.toml",
        include_str!("../../profiles/rules/namespace.toml"),
    ),
    (
        "runtime.toml",
        include_str!("../../profiles/rules/runtime.toml"),
    ),
    ("exec.toml", include_str!("../../profiles/rules/exec.toml")),
    (
        "runners.toml",
        include_str!("../../profiles/rules/runners.toml"),
    ),
    (
        "resources.toml",
        include_str!("../../profiles/rules/resources.toml"),
    ),
    (
        "cgroup.toml",
        include_str!("../../profiles/rules/cgroup.toml"),
    ),
    (
        "kernel.toml",
        include_str!("../../profiles/rules/kernel.toml"),
    ),
    (
        "devices.toml",
        include_str!("../../profiles/rules/devices.toml"),
    ),
    (
        "cloud.toml",
        include_str!("../../profiles/rules/cloud.toml"),
    ),
    (
        "network.toml",
        include_str!("../../profiles/rules/network.toml"),
    ),
    (
        "privesc.toml",
        include_str!("../../profiles/rules/privesc.toml"),
    ),
    (
        "exfil.toml",
        include_str!("../../profiles/rules/exfil.toml"),
    ),
    (
        "obfuscation.toml",
        include_str!("../../profiles/rules/obfuscation.toml"),
    ),
    (
        "recon.toml",
        include_str!("../../profiles/rules/recon.toml"),
    ),
    (
        "persistence.toml",
        include_str!("../../profiles/rules/persistence.toml"),
    ),
    (
        "kernel2.toml",
        include_str!("../../profiles/rules/kernel2.toml"),
    ),
    (
        "exfil2.toml",
        include_str!("../../profiles/rules/exfil2.toml"),
    ),
    (
        "cloud2.toml",
        include_str!("../../profiles/rules/cloud2.toml"),
    ),
];

include!(concat!(env!("OUT_DIR"), "/builtin_rules_json.rs"));

/// The builtin rule files as JSON (converted at build time, see build.rs), for the start-up of
/// every command: the same rules as [`BUILTIN_RULES`], which the test suite verifies (and
/// `json_form_is_the_toml_form` holds the two to each other).
fn builtin_json_sources() -> Vec<(String, String)> {
    BUILTIN_RULES
        .iter()
        .map(|(n, t)| (n.to_string(), builtin_json(n).unwrap_or(t).to_string()))
        .collect()
}

fn builtin_sources() -> Vec<(String, String)> {
    BUILTIN_RULES
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// A rule hit before the policy is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHit {
    /// Index of the rule in [`Checker::rules`].
    pub rule: usize,
    pub fragment: String,
}

/// The loaded rule set.
#[derive(Debug, Clone)]
pub struct Checker {
    rules: Vec<Rule>,
    sets: Sets,
    watched: HashSet<String>,
    /// Sensitive paths globbed operands are resolved against.
    resources: Vec<String>,
    /// Programs that run code given in options or the environment.
    runners: runners::Runners,
    /// Program rules by program name, with the sets of their patterns.
    by_name: HashMap<String, (Vec<usize>, rules::View)>,
    /// Program rules that apply to any program, with the sets of their patterns.
    any_program: (Vec<usize>, rules::View),
    signal_rules: Vec<usize>,
    requires_rules: Vec<usize>,
}

impl Checker {
    /// The builtin rules, parsed; each field's regex set is compiled when a command first
    /// needs it, and the examples are not re-run (both are on every command's path). The test
    /// suite compiles every set and runs every example ([`Checker::builtin_verified`]), and so
    /// does `stockade rules check`, so a shipped binary's rules have passed them.
    pub fn builtin() -> Result<Self, CheckError> {
        Self::compile_sources(&builtin_json_sources(), Build::OnFirstUse)
    }

    /// The builtin rules with every set compiled, the examples not yet run (for
    /// [`Checker::verify_examples`] to report every failure).
    pub fn builtin_compiled() -> Result<Self, CheckError> {
        Self::compile_sources(&builtin_sources(), Build::Now)
    }

    /// The builtin rules with every set compiled and every example checked, like any rule file.
    pub fn builtin_verified() -> Result<Self, CheckError> {
        Self::from_sources(&builtin_sources())
    }

    /// Rules from `*.toml` files in `dir` only (sorted by name).
    pub fn load_dir(dir: &Path) -> Result<Self, CheckError> {
        Self::from_sources(&read_dir_sources(dir)?)
    }

    /// The builtin rules plus the `*.toml` files in `dir`; those may use the builtin sets.
    pub fn builtin_with_dir(dir: &Path) -> Result<Self, CheckError> {
        let mut sources: Vec<(String, String)> = BUILTIN_RULES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        sources.extend(read_dir_sources(dir)?);
        Self::from_sources(&sources)
    }

    /// The builtin rules plus the `*.toml` files in `dir`, compiled without running any
    /// example (for [`Checker::verify_examples`] to report every failure).
    pub fn builtin_with_dir_unverified(dir: &Path) -> Result<Self, CheckError> {
        let mut sources: Vec<(String, String)> = BUILTIN_RULES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        sources.extend(read_dir_sources(dir)?);
        Self::compile_sources(&sources, Build::Now)
    }

    /// Compile rule files given as `(name, text)` and check every rule's examples.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, CheckError> {
        let checker = Self::compile_sources(sources, Build::Now)?;
        checker.check_examples()?;
        Ok(checker)
    }

    fn compile_sources(sources: &[(String, String)], build: Build) -> Result<Self, CheckError> {
        let compiled = rules::compile(sources, build)?;
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let (mut any_program, mut signal_rules, mut requires_rules) =
            (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in compiled.rules.iter().enumerate() {
            match &r.matcher {
                Matcher::Program(m) => match &m.commands {
                    Some(names) => {
                        for n in names {
                            by_name.entry(n.clone()).or_default().push(i);
                        }
                    }
                    None => any_program.push(i),
                },
                Matcher::Signal(_) => signal_rules.push(i),
                Matcher::Requires(_) => requires_rules.push(i),
            }
        }
        let view = |group: &[usize]| {
            compiled.sets.view(
                group
                    .iter()
                    .filter_map(|&i| match &compiled.rules[i].matcher {
                        Matcher::Program(m) => Some(m),
                        _ => None,
                    }),
            )
        };
        let by_name = by_name
            .into_iter()
            .map(|(name, group)| {
                let v = view(&group);
                (name, (group, v))
            })
            .collect();
        let any_program = {
            let v = view(&any_program);
            (any_program, v)
        };
        let checker = Checker {
            rules: compiled.rules,
            sets: compiled.sets,
            watched: compiled.watched,
            resources: compiled.resources,
            runners: runners::Runners::new(compiled.runners),
            by_name,
            any_program,
            signal_rules,
            requires_rules,
        };
        Ok(checker)
    }

    fn check_examples(&self) -> Result<(), CheckError> {
        match self.verify_examples().failures.into_iter().next() {
            Some(f) => Err(CheckError::Example {
                rule: f.rule,
                example: f.example,
                expected: f.expected,
            }),
            None => Ok(()),
        }
    }

    /// Runs every rule's `matches` and `not_match` examples (what `stockade rules check` and
    /// the test suite do; loading the builtin rules does not).
    pub fn verify_examples(&self) -> ExampleReport {
        let mut report = ExampleReport::default();
        for (i, r) in self.rules.iter().enumerate() {
            for (examples, expected) in [(&r.matches, true), (&r.not_match, false)] {
                for ex in examples {
                    report.checked += 1;
                    let hit = self.raw_hits(ex).iter().any(|h| h.rule == i);
                    if hit != expected {
                        report.failures.push(ExampleFailure {
                            rule: r.id.clone(),
                            example: ex.clone(),
                            expected,
                        });
                    }
                }
            }
        }
        for row in self.runners.rows() {
            for ex in &row.matches {
                report.checked += 1;
                // The row must find code in its example, and that code must be judged.
                let a = self.analyze(ex);
                if !a.invocations.iter().any(|i| i.depth > 0) {
                    report.failures.push(ExampleFailure {
                        rule: format!("runner {}", row.source),
                        example: ex.clone(),
                        expected: true,
                    });
                }
            }
        }
        report.rules = self.rules.len();
        report
    }

    /// How many patterns the field sets compiled so far hold: what the commands checked so
    /// far have cost (each group of rules compiles its sets on first use).
    pub fn compiled_patterns(&self) -> usize {
        self.views().map(rules::View::compiled).sum()
    }

    /// How many patterns the field sets hold, compiled or not.
    pub fn view_patterns(&self) -> usize {
        self.views().map(rules::View::patterns).sum()
    }

    fn views(&self) -> impl Iterator<Item = &rules::View> {
        let groups = self.by_name.values().chain([&self.any_program]);
        groups.map(|(_, view)| view)
    }

    /// The rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Normalize a command (exposed for tests, fuzzing and `stockade check --json`).
    pub fn analyze(&self, command: &str) -> Analysis {
        let (text, cut) = cap(command);
        let mut a = normalize::analyze_with(
            text,
            &normalize::Known {
                watched: &self.watched,
                resources: &self.resources,
                runners: &self.runners,
            },
        );
        if cut {
            a.signals.push(Signal {
                name: normalize::signals::LIMIT,
                fragment: format!("command longer than {MAX_COMMAND_BYTES} bytes"),
            });
        }
        a
    }

    /// Every rule that matches `command`, before the policy.
    pub fn raw_hits(&self, command: &str) -> Vec<RawHit> {
        let analysis = self.analyze(command);
        self.match_analysis(&analysis)
    }

    /// Judge a command.
    pub fn check(&self, command: &str, policy: &Policy) -> Verdict {
        let mut decision = Decision::Allow;
        let mut hits = Vec::new();
        for h in self.raw_hits(command) {
            let r = &self.rules[h.rule];
            let (d, report) = policy.decide(&r.id, r.severity);
            if !report {
                continue;
            }
            decision = decision.max(d);
            hits.push(RuleHit {
                id: r.id.clone(),
                category: r.category.clone(),
                severity: r.severity,
                decision: d,
                fragment: h.fragment,
                why: r.why.clone(),
            });
        }
        Verdict {
            decision,
            rules: hits,
        }
    }

    fn match_analysis(&self, a: &Analysis) -> Vec<RawHit> {
        let mut hit: Vec<Option<String>> = vec![None; self.rules.len()];
        for inv in &a.invocations {
            self.match_program(inv, &mut hit);
        }
        for &i in &self.signal_rules {
            if let Matcher::Signal(name) = &self.rules[i].matcher {
                if let Some(s) = a.signals.iter().find(|s| s.name == name) {
                    hit[i] = Some(s.fragment.clone());
                }
            }
        }
        for &i in &self.requires_rules {
            if let Matcher::Requires(req) = &self.rules[i].matcher {
                if req.iter().all(|r| hit[*r].is_some()) {
                    let frags: Vec<&str> = req.iter().filter_map(|r| hit[*r].as_deref()).collect();
                    hit[i] = Some(frags.join(" + "));
                }
            }
        }
        hit.into_iter()
            .enumerate()
            .filter_map(|(rule, f)| f.map(|fragment| RawHit { rule, fragment }))
            .collect()
    }

    fn match_program(&self, inv: &Invocation, hit: &mut [Option<String>]) {
        let mut rendered = None;
        let named = self.by_name.get(&inv.name).into_iter();
        for (group, view) in named.chain([&self.any_program]) {
            let mut cache = FieldCache::default();
            for &i in group {
                if hit[i].is_some() {
                    continue;
                }
                let Matcher::Program(m) = &self.rules[i].matcher else {
                    continue;
                };
                if m.commands_not.contains(&inv.name) {
                    continue;
                }
                if let Some(f) = self.program_fragment(m, inv, view, &mut cache, &mut rendered) {
                    hit[i] = Some(f);
                }
            }
        }
    }

    /// If `m` matches `inv`, the fragment to show.
    fn program_fragment(
        &self,
        m: &rules::ProgramMatch,
        inv: &Invocation,
        view: &rules::View,
        c: &mut FieldCache,
        rendered: &mut Option<String>,
    ) -> Option<String> {
        if !m.args.is_empty() || m.args_not.is_some() {
            let set = c
                .args
                .get_or_insert_with(|| view.args.matches(&inv.args.join(" ")).collect());
            if !m.args.iter().all(|i| set.contains(i)) {
                return None;
            }
            if m.args_not.is_some_and(|i| set.contains(&i)) {
                return None;
            }
        }
        if let Some(i) = m.env {
            if inv.env.is_empty() {
                return None;
            }
            let set = c
                .env
                .get_or_insert_with(|| view.env.matches(&lines(&inv.env)).collect());
            if !set.contains(&i) {
                return None;
            }
        }
        let mut fragment = None;
        if let Some(i) = m.write {
            if inv.writes.is_empty() {
                return None;
            }
            let set = c
                .write
                .get_or_insert_with(|| view.write.matches(&lines(&inv.writes)).collect());
            if !set.contains(&i) {
                return None;
            }
            fragment = inv
                .writes
                .iter()
                .find(|w| self.sets.write_each[i].get().is_match(w))
                .cloned();
        }
        if let Some(i) = m.path {
            if inv.operands.is_empty() {
                return None;
            }
            let set = c
                .path
                .get_or_insert_with(|| view.path.matches(&lines(&inv.operands)).collect());
            if !set.contains(&i) {
                return None;
            }
            if fragment.is_none() {
                fragment = inv
                    .operands
                    .iter()
                    .find(|o| self.sets.path_each[i].get().is_match(o))
                    .cloned();
            }
        }
        if let Some(i) = m.text {
            let rendered = rendered.get_or_insert_with(|| inv.render());
            let found = self.sets.text_each[i].get().find(rendered)?;
            if fragment.is_none() {
                fragment = Some(found.as_str().to_string());
            }
        }
        let rendered = rendered.get_or_insert_with(|| inv.render());
        Some(match fragment {
            Some(f) if m.commands.is_none() => format!("{f} (in: {})", short(rendered)),
            _ => short(rendered),
        })
    }
}

/// Set matches computed at most once per program and field.
#[derive(Default)]
struct FieldCache {
    args: Option<Vec<usize>>,
    path: Option<Vec<usize>>,
    write: Option<Vec<usize>>,
    env: Option<Vec<usize>>,
}

/// Values joined one per line (newlines inside a value become spaces) so `(?m)^...$` anchors
/// at each value.
fn lines(values: &[String]) -> String {
    let mut s = String::new();
    for v in values {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&v.replace('\n', " "));
    }
    s
}

fn short(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX).collect();
    t.push('…');
    t
}

/// The first [`MAX_COMMAND_BYTES`] of `command` (on a character boundary) and whether it was cut.
fn cap(command: &str) -> (&str, bool) {
    if command.len() <= MAX_COMMAND_BYTES {
        return (command, false);
    }
    let mut end = MAX_COMMAND_BYTES;
    while !command.is_char_boundary(end) {
        end -= 1;
    }
    (&command[..end], true)
}

fn read_dir_sources(dir: &Path) -> Result<Vec<(String, String)>, CheckError> {
    let io = |source| CheckError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(&p).map_err(|source| CheckError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.len() > rules::MAX_RULE_FILE_BYTES as u64 {
            return Err(CheckError::TooLarge {
                path: p.display().to_string(),
                size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            });
        }
        let text = std::fs::read_to_string(&p).map_err(|source| CheckError::Io {
            path: p.clone(),
            source,
        })?;
        out.push((p.display().to_string(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
