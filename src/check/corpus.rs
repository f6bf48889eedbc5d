//! Scoring the checker against corpora: labelled JSONL files (fixtures/corpus) and plain text
//! files of benign commands, one per line. The public corpus (fixtures/corpus/public) is split
//! into a development and a held-out test half by a hash of each command ([`split_of`]).

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
    /// A short kebab-case tag of the technique (`release-agent`, `dev-tcp`, ...); for benign
    /// entries, the kind of ordinary work (`man-page`, `docs-grep`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub technique: Option<String>,
}

/// The technique tag of entries that have none.
pub const UNTAGGED: &str = "untagged";

impl Entry {
    /// The technique tag, or [`UNTAGGED`].
    pub fn technique_or_untagged(&self) -> &str {
        self.technique.as_deref().unwrap_or(UNTAGGED)
    }
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

/// A half of the public corpus (fixtures/corpus/public).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Split {
    /// The half that rule work looks at.
    Dev,
    /// The held-out half: scored, never tuned on.
    Test,
    /// Both halves.
    All,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Dev => "dev",
            Split::Test => "test",
            Split::All => "all",
        }
    }
}

/// The public corpus, embedded (never part of the live-run set of [`BUILTIN_CORPORA`]): each
/// half with its name.
pub const PUBLIC_CORPORA: &[(Split, &str, &str)] = &[
    (
        Split::Dev,
        "builtin:public/dev.jsonl",
        include_str!("../../fixtures/corpus/public/dev.jsonl"),
    ),
    (
        Split::Test,
        "builtin:public/test.jsonl",
        include_str!("../../fixtures/corpus/public/test.jsonl"),
    ),
];

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: spreads every input bit over the top bit (FNV-1a alone
/// barely moves its high bits on the last bytes).
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The salt of [`split_of`]: chosen once, as the one of the first few million that balanced the
/// first public corpus best per category and per technique; fixed since, so that no entry ever
/// changes half.
pub const SPLIT_SALT: u32 = 1_755_659;

/// The half of the public corpus a command belongs to: the top bit of
/// `fmix64(FNV-1a-64("{SPLIT_SALT}:{command}"))` over the UTF-8 bytes; 0 is [`Split::Dev`],
/// 1 [`Split::Test`]. It depends on the command alone, so adding entries never moves others
/// between halves.
pub fn split_of(command: &str) -> Split {
    let salted = format!("{SPLIT_SALT}:{command}");
    if fmix64(fnv1a64(salted.as_bytes())) >> 63 == 0 {
        Split::Dev
    } else {
        Split::Test
    }
}

/// The public corpus halves `split` selects, parsed, with their names.
pub fn public(split: Split) -> Result<Vec<(String, Corpus)>, CorpusError> {
    PUBLIC_CORPORA
        .iter()
        .filter(|(s, _, _)| split == Split::All || *s == split)
        .map(|(_, name, text)| Ok((name.to_string(), parse(Path::new(name), text, true)?)))
        .collect()
}

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
    /// The entry's technique tag (labelled corpora).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub technique: Option<String>,
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

/// A [`Tally`] as the three decisions and two rates, for charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub total: usize,
    pub allow: usize,
    pub warn: usize,
    pub deny: usize,
    /// Warn or deny, of total.
    pub detection_percent: f64,
    pub deny_percent: f64,
}

impl From<&Tally> for Counts {
    fn from(t: &Tally) -> Self {
        Counts {
            total: t.total,
            allow: t.total - t.detected,
            warn: t.detected - t.denied,
            deny: t.denied,
            detection_percent: percent(t.detected, t.total),
            deny_percent: percent(t.denied, t.total),
        }
    }
}

/// One row of [`LabelledScore::chart`]: the counts of one category, or of one technique of a
/// category, for malicious or for benign entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartRow {
    pub expect: Expect,
    pub category: String,
    /// Absent on per-category rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub technique: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Flat, chart-friendly counts of a labelled score.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Chart {
    pub malicious: Counts,
    pub benign: Counts,
    pub by_category: Vec<ChartRow>,
    pub by_technique: Vec<ChartRow>,
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
    /// Malicious entries by category, then technique.
    pub by_technique: BTreeMap<String, BTreeMap<String, Tally>>,
    /// Hard negatives: detected = warn or deny.
    pub benign: Tally,
    pub benign_by_category: BTreeMap<String, Tally>,
    /// Hard negatives by the category they resemble, then technique.
    pub benign_by_technique: BTreeMap<String, BTreeMap<String, Tally>>,
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
            technique: e.technique.clone(),
            decision: v.decision,
            rules: v.rule_ids(),
        };
        let technique = e.technique_or_untagged().to_string();
        match e.expect {
            Expect::Malicious => {
                s.malicious.add(v.decision);
                s.by_category
                    .entry(e.category.clone())
                    .or_default()
                    .add(v.decision);
                s.by_technique
                    .entry(e.category.clone())
                    .or_default()
                    .entry(technique)
                    .or_default()
                    .add(v.decision);
                if v.decision == Decision::Allow {
                    s.missed.push(flagged);
                }
            }
            Expect::Benign => {
                s.benign.add(v.decision);
                s.benign_by_category
                    .entry(e.category.clone())
                    .or_default()
                    .add(v.decision);
                s.benign_by_technique
                    .entry(e.category.clone())
                    .or_default()
                    .entry(technique)
                    .or_default()
                    .add(v.decision);
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

impl LabelledScore {
    /// The counts as flat rows: malicious then benign, each by category and by technique.
    pub fn chart(&self) -> Chart {
        let mut c = Chart {
            malicious: Counts::from(&self.malicious),
            benign: Counts::from(&self.benign),
            ..Chart::default()
        };
        for (expect, by_category, by_technique) in [
            (Expect::Malicious, &self.by_category, &self.by_technique),
            (
                Expect::Benign,
                &self.benign_by_category,
                &self.benign_by_technique,
            ),
        ] {
            for (category, t) in by_category {
                c.by_category.push(ChartRow {
                    expect,
                    category: category.clone(),
                    technique: None,
                    counts: Counts::from(t),
                });
            }
            for (category, techniques) in by_technique {
                for (technique, t) in techniques {
                    c.by_technique.push(ChartRow {
                        expect,
                        category: category.clone(),
                        technique: Some(technique.clone()),
                        counts: Counts::from(t),
                    });
                }
            }
        }
        c
    }
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
            technique: None,
            decision: v.decision,
            rules: v.rule_ids(),
        });
    }
    s.warn_percent = percent(s.warned, s.lines);
    s.deny_percent = percent(s.denied, s.lines);
    s
}
