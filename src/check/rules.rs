//! Escape-detection rules as data (profiles/rules/*.toml): the file format, its validation, and
//! compilation into regex sets, one per program name and field, compiled on first use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use super::normalize::signals;
use super::{CheckError, Decision};

/// Largest rule file accepted.
pub const MAX_RULE_FILE_BYTES: usize = 1 << 20;
/// Compiled size limit per regex set (the regex crate's default is 10 MiB per regex).
const REGEX_SET_SIZE_LIMIT: usize = 64 << 20;

/// How serious a rule hit is; the policy maps it to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// A building block for `requires` rules; not reported by default.
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The decision when the policy does not say otherwise.
    pub fn default_decision(self) -> Decision {
        match self {
            Severity::Info => Decision::Allow,
            Severity::Low | Severity::Medium => Decision::Warn,
            Severity::High | Severity::Critical => Decision::Deny,
        }
    }
}

/// One rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Named lists of program names, referred to as `@name` in `command` lists.
    #[serde(default)]
    pub sets: BTreeMap<String, Vec<String>>,
    /// Named lists of sensitive paths (the resource taxonomy): a globbed operand (`/proc/k?ore`)
    /// is resolved against them before the rules' regexes are matched.
    #[serde(default)]
    pub resources: BTreeMap<String, Vec<String>>,
    /// Programs that run code given in an option or the environment (see `runners`).
    #[serde(default, rename = "runner")]
    pub runners: Vec<super::runners::RunnerSpec>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
}

/// A rule as written. A rule matches one program (all of its program fields must hold), or a
/// signal from normalization, or the co-occurrence of other rules (`requires`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    /// One line: why this is dangerous.
    pub why: String,
    /// Program names (after normalization) or `@set`s; empty means any program.
    #[serde(default)]
    pub command: Vec<String>,
    /// Program names or `@set`s this rule never applies to.
    #[serde(default)]
    pub command_not: Vec<String>,
    /// Regex over the arguments joined by single spaces.
    pub args: Option<String>,
    /// Regexes over the joined arguments that must all match.
    #[serde(default)]
    pub args_all: Vec<String>,
    /// Regex over the joined arguments that must not match.
    pub args_not: Option<String>,
    /// Regex that some operand (file argument, redirection target) must match; `^`/`$` anchor
    /// at the operand's ends.
    pub path: Option<String>,
    /// Regex that some written file must match.
    pub write: Option<String>,
    /// Regex that some `NAME=value` in the program's environment must match.
    pub env: Option<String>,
    /// Regex over the rendered program line (`NAME=v name args > written`).
    pub text: Option<String>,
    /// A normalization signal (see `normalize::signals`).
    pub signal: Option<String>,
    /// Rule ids that must all hit somewhere in the same command.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Commands this rule must match: checked when the rules load.
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Commands this rule must not match: checked when the rules load.
    #[serde(default)]
    pub not_match: Vec<String>,
}

/// What a compiled rule needs from one program, as indices into the checker's regex sets.
#[derive(Debug, Clone, Default)]
pub struct ProgramMatch {
    pub commands: Option<HashSet<String>>,
    pub commands_not: HashSet<String>,
    pub args: Vec<usize>,
    pub args_not: Option<usize>,
    pub path: Option<usize>,
    pub write: Option<usize>,
    pub env: Option<usize>,
    pub text: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Program(ProgramMatch),
    Signal(String),
    Requires(Vec<usize>),
}

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub why: String,
    pub matcher: Matcher,
    pub matches: Vec<String>,
    pub not_match: Vec<String>,
}

/// The regexes of all rules, by field.
#[derive(Debug, Clone)]
pub struct Sets {
    pub args: FieldPatterns,
    pub path: FieldPatterns,
    pub write: FieldPatterns,
    pub env: FieldPatterns,
    /// The same patterns one by one, to find the matched fragment after a set says which.
    pub path_each: Vec<LazyRegex>,
    pub write_each: Vec<LazyRegex>,
    pub text_each: Vec<LazyRegex>,
}

impl Sets {
    /// The sets the rules `group` match against, compiled on first use.
    pub fn view<'a>(&self, group: impl IntoIterator<Item = &'a ProgramMatch>) -> View {
        let (mut args, mut path, mut write, mut env) = (
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
        );
        for m in group {
            args.extend(m.args.iter().copied().chain(m.args_not));
            path.extend(m.path);
            write.extend(m.write);
            env.extend(m.env);
        }
        View {
            args: self.args.subset(&args),
            path: self.path.subset(&path),
            write: self.write.subset(&write),
            env: self.env.subset(&env),
        }
    }
}

/// One group of rules' patterns, by field.
#[derive(Debug, Clone)]
pub struct View {
    pub args: SubSet,
    pub path: SubSet,
    pub write: SubSet,
    pub env: SubSet,
}

impl View {
    /// Patterns compiled so far in this view's sets.
    pub fn compiled(&self) -> usize {
        self.sets().map(SubSet::compiled).sum()
    }

    /// Patterns in this view's sets.
    pub fn patterns(&self) -> usize {
        self.sets().map(|s| s.patterns.len()).sum()
    }

    fn sets(&self) -> impl Iterator<Item = &SubSet> {
        [&self.args, &self.path, &self.write, &self.env].into_iter()
    }
}

/// Rules compiled from sources, before example checking.
pub struct Compiled {
    pub rules: Vec<Rule>,
    pub sets: Sets,
    /// Every program name some rule or set mentions.
    pub watched: HashSet<String>,
    /// Every sensitive path of the resource lists.
    pub resources: Vec<String>,
    pub runners: Vec<super::runners::RunnerSpec>,
}

#[derive(Debug, Clone, Default)]
struct Patterns {
    list: Vec<String>,
    origin: Vec<(String, &'static str)>,
}

/// When the rules' regex sets are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// At load: every pattern is checked there (rule files from outside, the test suite).
    Now,
    /// On first use, set by set: for the builtin rules, which the test suite compiles (with
    /// [`Build::Now`]) and which cannot change after the build. A command then pays only for
    /// the sets its invocations need.
    OnFirstUse,
}

/// One field's patterns, checked at load ([`Build::Now`]) and matched through [`SubSet`]s:
/// each group of rules (those of one program name, those of any program) gets a set of only
/// the patterns it uses, compiled when a command first needs it. A command then pays for the
/// rules of its own programs, not for every rule's patterns.
#[derive(Debug, Clone)]
pub struct FieldPatterns {
    patterns: Patterns,
}

impl FieldPatterns {
    fn new(patterns: Patterns, build: Build) -> Result<FieldPatterns, CheckError> {
        if build == Build::Now {
            patterns.build()?;
        }
        Ok(FieldPatterns { patterns })
    }

    /// The set of the patterns at `indices` (indices into this field's patterns).
    pub fn subset(&self, indices: &BTreeSet<usize>) -> SubSet {
        SubSet {
            patterns: indices
                .iter()
                .map(|&i| self.patterns.list[i].clone())
                .collect(),
            global: indices.iter().copied().collect(),
            set: std::sync::OnceLock::new(),
        }
    }
}

/// Some of a field's patterns as one set, compiled on first use; matches are reported as
/// indices into the field's patterns.
#[derive(Debug, Clone)]
pub struct SubSet {
    patterns: Vec<String>,
    global: Vec<usize>,
    set: std::sync::OnceLock<RegexSet>,
}

impl SubSet {
    /// How many patterns this set holds once compiled (0 before its first use).
    pub fn compiled(&self) -> usize {
        if self.set.get().is_some() {
            self.patterns.len()
        } else {
            0
        }
    }

    /// Indices (into the field's patterns) of the patterns that match `text`.
    pub fn matches(&self, text: &str) -> impl Iterator<Item = usize> + '_ {
        let hits = (!self.patterns.is_empty()).then(|| {
            self.set
                .get_or_init(|| {
                    // Proof: every pattern is one of a field whose whole set compiled within
                    // the same size limits (`Build::Now`: at load; builtin rules: the test
                    // suite, `Checker::builtin_verified`), and a subset compiles to no more.
                    set_builder(&self.patterns)
                        .build()
                        .expect("a subset of a field's patterns compiles as the field did")
                })
                .matches(text)
        });
        hits.into_iter().flatten().map(|i| self.global[i])
    }
}

/// `pattern` with its word boundaries (`\b`, `\B`) made ASCII ones: a shell word is split on
/// ASCII blanks and operators, never on a Unicode letter class, and an ASCII boundary keeps
/// a set on its lazy DFA (a Unicode one sends any search over non-ASCII text to the far
/// slower NFA simulation). Next to a non-ASCII letter it sees a boundary where Unicode sees
/// none, which can only add matches.
fn ascii_word_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(b @ ('b' | 'B')) if class_depth == 0 => {
                    out.push_str("(?-u:\\");
                    out.push(b);
                    out.push(')');
                }
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            },
            '[' => {
                class_depth += 1;
                out.push(c);
            }
            ']' => {
                class_depth = class_depth.saturating_sub(1);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn set_builder(patterns: &[String]) -> RegexSetBuilder {
    let mut b = RegexSetBuilder::new(patterns);
    b.size_limit(REGEX_SET_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SET_SIZE_LIMIT);
    b
}

/// A regex compiled when first used.
#[derive(Debug, Clone)]
pub struct LazyRegex {
    pattern: String,
    compiled: std::sync::OnceLock<Regex>,
}

impl LazyRegex {
    pub fn get(&self) -> &Regex {
        // Proof: the pattern is part of a RegexSet that compiled, so it compiles alone.
        self.compiled
            .get_or_init(|| Regex::new(&self.pattern).expect("pattern compiled in its set"))
    }
}

impl Patterns {
    fn add(
        &mut self,
        rule: &str,
        field: &'static str,
        pattern: &str,
        multi_line: bool,
    ) -> Result<usize, CheckError> {
        let pattern = ascii_word_boundaries(pattern);
        let p = if multi_line {
            format!("(?m:{pattern})")
        } else {
            pattern
        };
        self.list.push(p);
        self.origin.push((rule.to_string(), field));
        Ok(self.list.len() - 1)
    }

    /// One compiled set for all patterns. Patterns are not compiled one by one first (that
    /// doubled load time); when the set fails, the pattern at fault is found and named.
    fn build(&self) -> Result<RegexSet, CheckError> {
        set_builder(&self.list).build().map_err(|set_error| {
            for (p, (rule, field)) in self.list.iter().zip(&self.origin) {
                if let Err(source) = Regex::new(p) {
                    return CheckError::Regex {
                        rule: rule.clone(),
                        field,
                        source: Box::new(source),
                    };
                }
            }
            CheckError::Regex {
                rule: "*".to_string(),
                field: "set",
                source: Box::new(set_error),
            }
        })
    }

    /// Each pattern on its own, compiled on first use (only to locate a matched fragment).
    fn each(&self) -> Vec<LazyRegex> {
        self.list
            .iter()
            .map(|p| LazyRegex {
                pattern: p.clone(),
                compiled: std::sync::OnceLock::new(),
            })
            .collect()
    }
}

/// Parse and compile rule files given as `(name, text)` pairs.
pub fn compile(sources: &[(String, String)], build: Build) -> Result<Compiled, CheckError> {
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut specs: Vec<RuleSpec> = Vec::new();
    let mut resources: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut runners = Vec::new();
    for (name, text) in sources {
        if text.len() > MAX_RULE_FILE_BYTES {
            return Err(CheckError::TooLarge {
                path: name.clone(),
                size: text.len(),
            });
        }
        // A TOML document cannot start with `{`; a builtin file converted at build time does.
        let file: RuleFile = if text.starts_with('{') {
            serde_json::from_str(text).map_err(|e| CheckError::Parse {
                path: name.clone(),
                source: Box::new(<toml::de::Error as serde::de::Error>::custom(e)),
            })?
        } else {
            toml::from_str(text).map_err(|source| CheckError::Parse {
                path: name.clone(),
                source: Box::new(source),
            })?
        };
        for (set, members) in file.sets {
            if sets.insert(set.clone(), members).is_some() {
                return Err(CheckError::DuplicateSet { set });
            }
        }
        for (class, paths) in file.resources {
            if resources.insert(class.clone(), paths).is_some() {
                return Err(CheckError::DuplicateSet { set: class });
            }
        }
        specs.extend(file.rules);
        runners.extend(file.runners);
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if ids.insert(s.id.clone(), i).is_some() {
            return Err(CheckError::DuplicateRule { id: s.id.clone() });
        }
    }
    let mut watched: HashSet<String> = sets.values().flatten().cloned().collect();
    let resolve = |rule: &str, names: &[String]| -> Result<HashSet<String>, CheckError> {
        let mut out = HashSet::new();
        for n in names {
            match n.strip_prefix('@') {
                Some(set) => {
                    let members = sets.get(set).ok_or_else(|| CheckError::UnknownSet {
                        rule: rule.to_string(),
                        set: set.to_string(),
                    })?;
                    out.extend(members.iter().cloned());
                }
                None => {
                    out.insert(n.clone());
                }
            }
        }
        Ok(out)
    };
    let mut args = Patterns::default();
    let mut path = Patterns::default();
    let mut write = Patterns::default();
    let mut env = Patterns::default();
    let mut text = Patterns::default();
    let mut rules = Vec::with_capacity(specs.len());
    for s in &specs {
        if s.matches.is_empty() {
            return Err(CheckError::NoExamples { rule: s.id.clone() });
        }
        let program_fields = !s.command.is_empty()
            || !s.command_not.is_empty()
            || s.args.is_some()
            || !s.args_all.is_empty()
            || s.args_not.is_some()
            || s.path.is_some()
            || s.write.is_some()
            || s.env.is_some()
            || s.text.is_some();
        let kinds = usize::from(program_fields)
            + usize::from(s.signal.is_some())
            + usize::from(!s.requires.is_empty());
        if kinds != 1 {
            return Err(CheckError::BadMatcher {
                rule: s.id.clone(),
                reason: "exactly one of: program fields, `signal`, `requires`",
            });
        }
        let matcher = if let Some(sig) = &s.signal {
            if !signals::ALL.contains(&sig.as_str()) {
                return Err(CheckError::UnknownSignal {
                    rule: s.id.clone(),
                    signal: sig.clone(),
                });
            }
            Matcher::Signal(sig.clone())
        } else if !s.requires.is_empty() {
            let mut req = Vec::new();
            for r in &s.requires {
                let i = *ids.get(r).ok_or_else(|| CheckError::UnknownRequire {
                    rule: s.id.clone(),
                    id: r.clone(),
                })?;
                if !specs[i].requires.is_empty() {
                    return Err(CheckError::BadMatcher {
                        rule: s.id.clone(),
                        reason: "`requires` may not name another `requires` rule",
                    });
                }
                req.push(i);
            }
            Matcher::Requires(req)
        } else {
            let commands = if s.command.is_empty() {
                None
            } else {
                Some(resolve(&s.id, &s.command)?)
            };
            let commands_not = resolve(&s.id, &s.command_not)?;
            if let Some(c) = &commands {
                watched.extend(c.iter().cloned());
            }
            let mut m = ProgramMatch {
                commands,
                commands_not,
                ..ProgramMatch::default()
            };
            if let Some(a) = &s.args {
                m.args.push(args.add(&s.id, "args", a, false)?);
            }
            for a in &s.args_all {
                m.args.push(args.add(&s.id, "args_all", a, false)?);
            }
            if let Some(a) = &s.args_not {
                m.args_not = Some(args.add(&s.id, "args_not", a, false)?);
            }
            if let Some(p) = &s.path {
                m.path = Some(path.add(&s.id, "path", p, true)?);
            }
            if let Some(p) = &s.write {
                m.write = Some(write.add(&s.id, "write", p, true)?);
            }
            if let Some(p) = &s.env {
                m.env = Some(env.add(&s.id, "env", p, true)?);
            }
            if let Some(p) = &s.text {
                m.text = Some(text.add(&s.id, "text", p, false)?);
            }
            Matcher::Program(m)
        };
        rules.push(Rule {
            id: s.id.clone(),
            category: s.category.clone(),
            severity: s.severity,
            why: s.why.clone(),
            matcher,
            matches: s.matches.clone(),
            not_match: s.not_match.clone(),
        });
    }
    watched.remove("");
    // `text` patterns are matched one by one (`text_each`); their set only checks them.
    if build == Build::Now {
        text.build()?;
    }
    let sets = Sets {
        path_each: path.each(),
        write_each: write.each(),
        text_each: text.each(),
        args: FieldPatterns::new(args, build)?,
        path: FieldPatterns::new(path, build)?,
        write: FieldPatterns::new(write, build)?,
        env: FieldPatterns::new(env, build)?,
    };
    let mut resources: Vec<String> = resources.into_values().flatten().collect();
    resources.sort();
    resources.dedup();
    for r in &runners {
        watched.extend(r.programs.iter().cloned());
    }
    Ok(Compiled {
        rules,
        sets,
        watched,
        resources,
        runners,
    })
}

#[cfg(test)]
mod tests {
    use super::ascii_word_boundaries as ascii;

    #[test]
    fn word_boundaries_become_ascii_and_nothing_else_changes() {
        assert_eq!(ascii(r"\bnc\b"), r"(?-u:\b)nc(?-u:\b)");
        assert_eq!(ascii(r"\Bx"), r"(?-u:\B)x");
        // An escaped backslash before `b` is a literal backslash and a `b`.
        assert_eq!(ascii(r"a\\b"), r"a\\b");
        assert_eq!(ascii(r"\\\b"), r"\\(?-u:\b)");
        // Other escapes and classes pass through.
        assert_eq!(ascii(r"[\w\]]+\s\d"), r"[\w\]]+\s\d");
        assert_eq!(ascii(r"[[:alpha:]]\b"), r"[[:alpha:]](?-u:\b)");
        assert_eq!(ascii("trailing\\"), "trailing\\");
    }

    #[test]
    fn an_ascii_boundary_still_matches_what_the_rules_meant() {
        let re = regex::Regex::new(&ascii(r"\bnsenter\b")).unwrap();
        assert!(re.is_match("nsenter -t 1"));
        assert!(re.is_match("/usr/bin/nsenter -a"));
        assert!(!re.is_match("xnsenter"));
        // Beside a non-ASCII letter an ASCII boundary sees a boundary: more matches, never fewer.
        assert!(re.is_match("énsenter"));
    }
}
