//! Scoring the checker against corpora: labelled JSONL files (fixtures/corpus) and plain text
//! files of benign commands, one per line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Checker, Decision, Policy};

/// Largest corpus file read.
pub const MAX_CORPUS_BYTES: u64 = 64 << 20;

/// What a labelled entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Expect {
    Malicious,
    Benign,
}

/// One line of a labelled corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub command: String,
    /// The technique category (for benign entries: the category the command resembles).
    pub category: String,
    /// Where the technique is documented.
    pub source: String,
    /// Safe to run inside a network-none sandbox: no network, no raw-disk writes, no host
    /// changes if the sandbox holds.
    pub live_safe: bool,
    pub expect: Expect,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    #[error("reading corpus {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corpus {path} is larger than {max} bytes", max = MAX_CORPUS_BYTES)]
    TooLarge { path: PathBuf },
    #[error("corpus {path} line {line}")]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// A corpus file: labelled (`.jsonl`) or plain benign text.
#[derive(Debug, Clone)]
pub enum Corpus {
    Labelled(Vec<Entry>),
    /// `(line number, command)` of each non-empty line.
    Plain(Vec<(usize, String)>),
}

/// The labelled corpora built into the binary (the project's fixtures/corpus): what
/// `corpus run` scores when given no file.
pub const BUILTIN_CORPORA: &[(&str, &str)] = &[
    (
        "builtin:escapes.jsonl",
        include_str!("../../fixtures/corpus/escapes.jsonl"),
    ),
    (
        "builtin:hard-negatives.jsonl",
        include_str!("../../fixtures/corpus/hard-negatives.jsonl"),
    ),
];

/// The built-in corpora, parsed, with their names.
pub fn builtin() -> Result<Vec<(String, Corpus)>, CorpusError> {
    BUILTIN_CORPORA
        .iter()
        .map(|(name, text)| Ok((name.to_string(), parse(Path::new(name), text, true)?)))
        .collect()
}

/// Reads a corpus file: `.jsonl` is labelled, anything else one command per line.
pub fn load(path: &Path) -> Result<Corpus, CorpusError> {
    let io = |source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_CORPUS_BYTES {
        return Err(CorpusError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes);
    parse(path, &text, path.extension().is_some_and(|e| e == "jsonl"))
}

/// Parses corpus text (`path` names it in errors).
pub fn parse(path: &Path, text: &str, labelled: bool) -> Result<Corpus, CorpusError> {
    if labelled {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: Entry = serde_json::from_str(line).map_err(|source| CorpusError::Json {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?;
            entries.push(e);
        }
        return Ok(Corpus::Labelled(entries));
    }
    Ok(Corpus::Plain(
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, l.to_string()))
            .collect(),
    ))
}

/// A command that was flagged (or missed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flagged {
    pub line: usize,
    pub command: String,
    pub category: String,
    pub decision: Decision,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub total: usize,
    /// Warn or deny.
    pub detected: usize,
    pub denied: usize,
}

impl Tally {
    fn add(&mut self, d: Decision) {
        self.total += 1;
        if d != Decision::Allow {
            self.detected += 1;
        }
        if d == Decision::Deny {
            self.denied += 1;
        }
    }
}

pub fn percent(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// Scores of a labelled corpus.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabelledScore {
    pub malicious: Tally,
    pub by_category: BTreeMap<String, Tally>,
    /// Hard negatives: detected = warn or deny.
    pub benign: Tally,
    pub missed: Vec<Flagged>,
    pub flagged_benign: Vec<Flagged>,
    pub detection_percent: f64,
    pub benign_deny_percent: f64,
    pub benign_warn_percent: f64,
}

/// Scores of a plain benign corpus.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlainScore {
    pub lines: usize,
    pub warned: usize,
    pub denied: usize,
    pub warn_percent: f64,
    pub deny_percent: f64,
    pub flagged: Vec<Flagged>,
}

pub fn score_labelled(checker: &Checker, policy: &Policy, entries: &[Entry]) -> LabelledScore {
    let mut s = LabelledScore::default();
    for (i, e) in entries.iter().enumerate() {
        let v = checker.check(&e.command, policy);
        let flagged = Flagged {
            line: i + 1,
            command: e.command.clone(),
            category: e.category.clone(),
            decision: v.decision,
            rules: v.rule_ids(),
        };
        match e.expect {
            Expect::Malicious => {
                s.malicious.add(v.decision);
                s.by_category
                    .entry(e.category.clone())
                    .or_default()
                    .add(v.decision);
                if v.decision == Decision::Allow {
                    s.missed.push(flagged);
                }
            }
            Expect::Benign => {
                s.benign.add(v.decision);
                if v.decision != Decision::Allow {
                    s.flagged_benign.push(flagged);
                }
            }
        }
    }
    s.detection_percent = percent(s.malicious.detected, s.malicious.total);
    s.benign_deny_percent = percent(s.benign.denied, s.benign.total);
    s.benign_warn_percent = percent(s.benign.detected - s.benign.denied, s.benign.total);
    s
}

pub fn score_plain(checker: &Checker, policy: &Policy, lines: &[(usize, String)]) -> PlainScore {
    let mut s = PlainScore {
        lines: lines.len(),
        ..PlainScore::default()
    };
    for (n, cmd) in lines {
        let v = checker.check(cmd, policy);
        match v.decision {
            Decision::Allow => continue,
            Decision::Warn => s.warned += 1,
            Decision::Deny => s.denied += 1,
        }
        let category = v
            .rules
            .first()
            .map(|h| h.category.clone())
            .unwrap_or_default();
        s.flagged.push(Flagged {
            line: *n,
            command: cmd.clone(),
            category,
            decision: v.decision,
            rules: v.rule_ids(),
        });
    }
    s.warn_percent = percent(s.warned, s.lines);
    s.deny_percent = percent(s.denied, s.lines);
    s
}
