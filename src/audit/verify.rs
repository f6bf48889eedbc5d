//! Verifying the log: the whole chain, line by line, against the head file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::FlockArg;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::head::{self, Head};
use super::log::{lock, open_for_reading, previous_record_hash};
use super::record::{Record, RecordBody};
use super::scan::{Line, Lines, MAX_LINE_BYTES, ZERO_HASH};
use super::AuditError;

/// Mode bits that let the group or others read or write the log.
const GROUP_OTHER_BITS: u32 = 0o077;

/// How serious a finding is: problems fail verification, notices do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    Problem,
    Notice,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A record's `prev` is not the hash of the line before it: that line was edited, or lines
    /// were removed, inserted or reordered here.
    ChainBroken,
    /// seq jumped forward: records are missing.
    SeqGap,
    /// seq went backwards or repeated: records were reordered or duplicated.
    SeqOutOfOrder,
    /// A complete line that is not an audit record (not JSON, or not a record).
    NotARecord,
    /// The last line has no newline: a write was interrupted and not yet recovered.
    #[serde(rename = "half_written_last_line")]
    HalfWrittenLine,
    /// A partial line accounted for by a `recovered` record (notice).
    RecoveredPartialLine,
    /// A `recovered` record that does not match the line before it.
    RecoveredMismatch,
    /// The log ends before the head file says it did: records were removed from the end.
    Truncated,
    /// The record the head file names has a different hash.
    HeadMismatch,
    /// The head file is missing although the log has more than one record.
    HeadMissing,
    /// The head is behind the log: one record (an interrupted append, notice) or more (problem).
    HeadBehind,
    /// The head file cannot be read or parsed.
    HeadUnreadable,
    /// The log or head file is open to group or others.
    Permissions,
    /// A `start` without a `finish` (notice).
    UnfinishedExecution,
    /// A `finish` without a `start` (notice).
    FinishWithoutStart,
    /// A `gap` record: executions ran while the log could not be written, and were recorded
    /// late (notice; `dropped` records make it a problem).
    AuditGap,
}

/// One finding, located by line number and/or seq where it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    /// 1-based line number in the log.
    pub line: Option<u64>,
    pub seq: Option<u64>,
    pub message: String,
}

/// The result of [`verify`]: counts and findings. `ok()` is false iff there is a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub path: PathBuf,
    /// Lines in the log (including partial and broken ones).
    pub lines: u64,
    /// Lines that are audit records.
    pub records: u64,
    /// seq of the last record (0 for an empty log).
    pub last_seq: u64,
    /// The head file's contents, when it exists and parses.
    pub head: Option<Head>,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// True when no finding is a problem (notices are fine).
    pub fn ok(&self) -> bool {
        self.problems().next().is_none()
    }

    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }

    pub fn notices(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Notice)
    }

    fn add(
        &mut self,
        severity: Severity,
        kind: FindingKind,
        at: (Option<u64>, Option<u64>),
        message: String,
    ) {
        let (line, seq) = at;
        self.findings.push(Finding {
            severity,
            kind,
            line,
            seq,
            message,
        });
    }
}

impl Serialize for VerifyReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("VerifyReport", 7)?;
        s.serialize_field("path", &self.path)?;
        s.serialize_field("ok", &self.ok())?;
        s.serialize_field("lines", &self.lines)?;
        s.serialize_field("records", &self.records)?;
        s.serialize_field("last_seq", &self.last_seq)?;
        s.serialize_field("head", &self.head)?;
        s.serialize_field("findings", &self.findings)?;
        s.end()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Problem => "problem",
            Severity::Notice => "notice",
        };
        write!(f, "{label}: ")?;
        match (self.line, self.seq) {
            (Some(line), Some(seq)) => write!(f, "line {line} (seq {seq}): ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            (None, Some(seq)) => write!(f, "seq {seq}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} records on {} lines, last seq {}",
            self.path.display(),
            self.records,
            self.lines,
            self.last_seq
        )?;
        match &self.head {
            Some(h) => writeln!(f, ", head at seq {}", h.seq)?,
            None => writeln!(f, ", no head")?,
        }
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let problems = self.problems().count();
        if problems == 0 {
            write!(f, "OK: the hash chain verifies")
        } else {
            write!(f, "FAILED: {problems} problem(s)")
        }
    }
}

/// A line together with what it parsed as.
struct Parsed {
    line: Line,
    record: Result<Record, String>,
}

fn parse(line: Line) -> Parsed {
    let record = match &line.bytes {
        None => Err(format!(
            "{} bytes, over the {MAX_LINE_BYTES}-byte record cap",
            line.len
        )),
        Some(bytes) => serde_json::from_slice::<Record>(bytes).map_err(|e| e.to_string()),
    };
    Parsed { line, record }
}

/// Where the walk is: hashes of the last two lines, the last record, open executions.
struct Walk {
    report: VerifyReport,
    /// Hash of the previous line (what the next record's `prev` must be).
    prev_hash: String,
    /// Hash of the line before that (what a `recovered` record's `chain_prev` must be).
    prev_prev_hash: String,
    /// The previous line, when it was a partial line covered by the next `recovered` record.
    partial: Option<(u64, u64, String)>,
    /// Highest seq seen so far.
    max_seq: u64,
    /// The last record: seq, line hash, hash of the record before it.
    last: Option<(u64, String, String)>,
    /// Started executions without a finish yet: id -> (seq, line).
    open: BTreeMap<String, (u64, u64)>,
}

/// Checks the log at `path` and its head file (`audit.head` next to it). Errors only when the
/// log cannot be read at all (or is a symlink / not a regular file); everything found inside
/// is a [`Finding`]. Holds a shared lock, so a concurrent append is never seen half-written.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport {
        path: path.to_owned(),
        lines: 0,
        records: 0,
        last_seq: 0,
        head: None,
        findings: Vec::new(),
    };
    let file = open_for_reading(path)?;
    let file = match file {
        Some(f) => {
            check_mode(&mut report, &f, path)?;
            Some(lock(f, path, FlockArg::LockShared)?)
        }
        None => None,
    };
    // Read under the log's lock: appenders replace the head while holding it exclusively.
    let head_path = head::head_path_for(path);
    report.head = read_head(&mut report, &head_path)?;

    let mut walk = Walk {
        report,
        prev_hash: ZERO_HASH.to_owned(),
        prev_prev_hash: ZERO_HASH.to_owned(),
        partial: None,
        max_seq: 0,
        last: None,
        open: BTreeMap::new(),
    };
    if let Some(file) = file {
        let io = |source| AuditError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        };
        let cloned = file.try_clone().map_err(io)?;
        let mut lines = Lines::new(cloned);
        let mut current = lines.next_line().map_err(io)?.map(parse);
        while let Some(parsed) = current {
            let next = lines.next_line().map_err(io)?.map(parse);
            let covered = matches!(
                &next,
                Some(Parsed { record: Ok(Record { body: RecordBody::Recovered(r), .. }), .. })
                    if r.partial_offset == parsed.line.offset
            );
            walk.line(parsed, covered);
            current = next;
        }
        // `file` (the lock) lives until here.
        drop(file);
    }
    walk.finish(&head_path);
    Ok(walk.report)
}

fn check_mode(report: &mut VerifyReport, file: &File, path: &Path) -> Result<(), AuditError> {
    let meta = file.metadata().map_err(|source| AuditError::Io {
        op: "stat",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        report.add(
            Severity::Problem,
            FindingKind::Permissions,
            (None, None),
            format!(
                "{} has mode {mode:04o}, which gives other users access: chmod 600 {}",
                path.display(),
                path.display()
            ),
        );
    }
    Ok(())
}

fn read_head(report: &mut VerifyReport, head_path: &Path) -> Result<Option<Head>, AuditError> {
    let unreadable = |report: &mut VerifyReport, why: String| {
        let message = format!("head file {}: {why}", head_path.display());
        report.add(
            Severity::Problem,
            FindingKind::HeadUnreadable,
            (None, None),
            message,
        );
    };
    let file = match open_for_reading(head_path) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(AuditError::State(e)) => {
            unreadable(report, e.to_string());
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    check_mode(report, &file, head_path)?;
    match head::parse(file, head_path) {
        Ok(h) => Ok(Some(h)),
        Err(AuditError::HeadUnreadable { reason, .. }) => {
            unreadable(report, reason);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Walk {
    fn problem(&mut self, kind: FindingKind, line: u64, seq: Option<u64>, message: String) {
        self.report
            .add(Severity::Problem, kind, (Some(line), seq), message);
    }

    fn notice(&mut self, kind: FindingKind, line: Option<u64>, seq: Option<u64>, message: String) {
        self.report
            .add(Severity::Notice, kind, (line, seq), message);
    }

    /// One line; `covered` when the next line is a `recovered` record for this one.
    fn line(&mut self, parsed: Parsed, covered: bool) {
        let Parsed { line, record } = parsed;
        self.report.lines += 1;
        let n = line.number;
        let mut partial = None;
        if covered {
            self.notice(
                FindingKind::RecoveredPartialLine,
                Some(n),
                None,
                format!(
                    "partial line ({} bytes at byte offset {}) left by an interrupted write, \
                     recovered by the record on line {}",
                    line.len,
                    line.offset,
                    n + 1
                ),
            );
            partial = Some((line.offset, line.len, line.hash.clone()));
        } else if !line.terminated {
            self.problem(
                FindingKind::HalfWrittenLine,
                n,
                None,
                format!(
                    "half-written last line ({} bytes at byte offset {}, no newline): a write \
                     was interrupted (crash or full disk); the next append recovers it",
                    line.len, line.offset
                ),
            );
        } else {
            match record {
                Ok(record) => self.record(&line, record),
                Err(why) => self.problem(
                    FindingKind::NotARecord,
                    n,
                    None,
                    format!("not an audit record: {why}"),
                ),
            }
        }
        self.partial = partial;
        self.prev_prev_hash = std::mem::replace(&mut self.prev_hash, line.hash);
    }

    fn record(&mut self, line: &Line, record: Record) {
        let (n, seq) = (line.number, record.seq);
        self.report.records += 1;
        let expected = self.max_seq + 1;
        if seq > expected {
            let missing = seq - expected;
            self.problem(
                FindingKind::SeqGap,
                n,
                Some(seq),
                format!("expected seq {expected}: {missing} record(s) missing before this line"),
            );
        } else if seq < expected {
            self.problem(
                FindingKind::SeqOutOfOrder,
                n,
                Some(seq),
                format!(
                    "seq {seq} after seq {}: records reordered or duplicated",
                    self.max_seq
                ),
            );
        }
        self.max_seq = self.max_seq.max(seq);
        if record.prev != self.prev_hash {
            let what = if n == 1 {
                "the first line's prev is not 64 zeros: records were removed from the start"
                    .to_owned()
            } else {
                format!(
                    "prev does not match the hash of line {}: line {} was edited, or lines \
                     were removed, inserted or reordered here",
                    n - 1,
                    n - 1
                )
            };
            self.problem(FindingKind::ChainBroken, n, Some(seq), what);
        }
        match &record.body {
            RecordBody::Recovered(r) => {
                let matches = self.partial.as_ref().is_some_and(|(offset, len, hash)| {
                    r.partial_offset == *offset
                        && r.partial_len == *len
                        && r.partial_sha256 == *hash
                        && r.chain_prev == self.prev_prev_hash
                });
                if !matches {
                    self.problem(
                        FindingKind::RecoveredMismatch,
                        n,
                        Some(seq),
                        format!(
                            "recovered record (partial line at byte offset {}, {} bytes) does \
                             not match the lines before it",
                            r.partial_offset, r.partial_len
                        ),
                    );
                }
            }
            RecordBody::Start(s) => {
                self.open.insert(s.id.clone(), (seq, n));
            }
            RecordBody::Auth(_) => {}
            RecordBody::Gap(g) => {
                let what = format!(
                    "gap: {} execution(s) ran between {} and {} while the log could not be \
                     written ({}); their {} record(s) follow, written late",
                    g.missed, g.first_failed_at, g.last_failed_at, g.error, g.held
                );
                if g.dropped > 0 {
                    self.problem(
                        FindingKind::AuditGap,
                        n,
                        Some(seq),
                        format!("{what}; {} record(s) were lost", g.dropped),
                    );
                } else {
                    self.notice(FindingKind::AuditGap, Some(n), Some(seq), what);
                }
            }
            RecordBody::Finish(fin) => {
                if self.open.remove(&fin.id).is_none() {
                    self.notice(
                        FindingKind::FinishWithoutStart,
                        Some(n),
                        Some(seq),
                        format!("finish id={} has no start record before it", fin.id),
                    );
                }
            }
        }
        let before = previous_record_hash(&record).to_owned();
        self.last = Some((seq, line.hash.clone(), before));
    }

    fn finish(&mut self, head_path: &Path) {
        let open = std::mem::take(&mut self.open);
        let mut open: Vec<_> = open.into_iter().collect();
        open.sort_by_key(|(_, (seq, _))| *seq);
        for (id, (seq, line)) in open {
            self.notice(
                FindingKind::UnfinishedExecution,
                Some(line),
                Some(seq),
                format!(
                    "unfinished execution id={id} seq={seq}: no finish record (the command may \
                     still be running, or stockade was killed)"
                ),
            );
        }
        let log_seq = self.last.as_ref().map_or(0, |l| l.0);
        self.report.last_seq = log_seq;
        let head_path = head_path.display();
        let problem = |kind, message| Finding {
            severity: Severity::Problem,
            kind,
            line: None,
            seq: Some(log_seq),
            message,
        };
        let finding = match (&self.report.head, &self.last) {
            (None, _) if log_seq <= 1 => None,
            (None, _) => {
                let unreadable = self
                    .report
                    .findings
                    .iter()
                    .any(|f| f.kind == FindingKind::HeadUnreadable);
                (!unreadable).then(|| {
                    problem(
                        FindingKind::HeadMissing,
                        format!(
                            "head file {head_path} is missing: truncation of the log cannot \
                             be ruled out"
                        ),
                    )
                })
            }
            (Some(h), _) if h.seq > log_seq => Some(problem(
                FindingKind::Truncated,
                format!(
                    "the log ends at seq {log_seq} but the head file records seq {}: records \
                     {}..={} were removed from the end",
                    h.seq,
                    log_seq + 1,
                    h.seq
                ),
            )),
            (Some(h), Some((_, hash, before))) => {
                if h.seq == log_seq && &h.hash == hash {
                    None
                } else if h.seq == log_seq {
                    Some(problem(
                        FindingKind::HeadMismatch,
                        "the last record differs from the one the head file records: it was \
                         edited or replaced"
                            .to_owned(),
                    ))
                } else if h.seq + 1 == log_seq && &h.hash == before {
                    Some(Finding {
                        severity: Severity::Notice,
                        kind: FindingKind::HeadBehind,
                        line: None,
                        seq: Some(log_seq),
                        message: format!(
                            "the head file is one record behind (seq {}): an append was \
                             interrupted before updating it; the next append catches it up",
                            h.seq
                        ),
                    })
                } else if h.seq + 1 == log_seq {
                    Some(problem(
                        FindingKind::HeadMismatch,
                        format!(
                            "the record before the last one differs from the one the head \
                             file records (seq {})",
                            h.seq
                        ),
                    ))
                } else {
                    Some(problem(
                        FindingKind::HeadBehind,
                        format!(
                            "the head file records seq {} but the log continues to seq \
                             {log_seq}: records were appended without updating the head, or the \
                             head was rolled back",
                            h.seq
                        ),
                    ))
                }
            }
            // h.seq <= log_seq with log_seq == 0 means h.seq == 0, which no append writes.
            (Some(h), None) => Some(problem(
                FindingKind::HeadMismatch,
                format!("the head file records seq {} for an empty log", h.seq),
            )),
        };
        self.report.findings.extend(finding);
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
