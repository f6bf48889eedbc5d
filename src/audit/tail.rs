//! Reading the last records, and showing them to humans one execution per line.

use std::fmt;
use std::path::Path;

use nix::fcntl::FlockArg;

use super::log::{lock, open_for_reading};
use super::record::{Finish, Record, RecordBody, Start};
use super::scan::{byte_at, line_start, read_range, MAX_LINE_BYTES};
use super::AuditError;
use crate::display::one_line;

/// Commands longer than this are shortened in the human view (the record keeps all of it).
const COMMAND_DISPLAY_CHARS: usize = 60;
/// Ids are UUIDs; their first 8 hex digits tell executions apart in a terminal.
const ID_DISPLAY_CHARS: usize = 8;

/// The last `n` records of the log at `path`, oldest first. Reads backwards from the end, so
/// the cost depends on `n`, not on the size of the log. Lines that are not records (a partial
/// line, a damaged line) are skipped: judging them is [`verify`](super::verify)'s job. A
/// missing log has no records.
pub fn tail(path: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    let Some(file) = open_for_reading(path)? else {
        return Ok(Vec::new());
    };
    let file = lock(file, path, FlockArg::LockShared)?;
    let io = |source| AuditError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    let mut end = len;
    if end > 0 && byte_at(&file, end - 1).map_err(io)? != b'\n' {
        end = line_start(&file, end).map_err(io)?;
    }
    let mut records = Vec::with_capacity(n.min(1024));
    // Invariant: `end` is 0 or one past a '\n'.
    while end > 0 && records.len() < n {
        let line_end = end - 1;
        let start = line_start(&file, line_end).map_err(io)?;
        if line_end - start <= MAX_LINE_BYTES {
            let bytes = read_range(&file, start, line_end).map_err(io)?;
            if let Ok(record) = serde_json::from_slice::<Record>(&bytes) {
                records.push(record);
            }
        }
        end = start;
    }
    records.reverse();
    Ok(records)
}

/// One execution: its `start` and `finish` records (either may lie outside the records given),
/// or a `recovered` record, which is shown on a line of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution<'a> {
    /// Timestamp of the first record seen for it.
    pub ts: &'a str,
    pub id: Option<&'a str>,
    pub start: Option<&'a Start>,
    pub finish: Option<&'a Finish>,
    /// Set for a `recovered` record: (byte offset, length) of the partial line.
    pub recovered: Option<(u64, u64)>,
}

/// Groups records into executions by id, in order of their first record.
pub fn executions(records: &[Record]) -> Vec<Execution<'_>> {
    let mut out: Vec<Execution<'_>> = Vec::new();
    for record in records {
        let ts = record.ts.as_str();
        let blank = Execution {
            ts,
            id: None,
            start: None,
            finish: None,
            recovered: None,
        };
        let (id, start, finish) = match &record.body {
            RecordBody::Start(s) => (s.id.as_str(), Some(s), None),
            RecordBody::Finish(f) => (f.id.as_str(), None, Some(f)),
            RecordBody::Recovered(r) => {
                out.push(Execution {
                    recovered: Some((r.partial_offset, r.partial_len)),
                    ..blank
                });
                continue;
            }
            // The auth log's records are shown by `format_auth`, not as executions; a gap's
            // held executions follow it as ordinary records.
            RecordBody::Auth(_) | RecordBody::Gap(_) => continue,
        };
        match out.iter_mut().rev().find(|e| e.id == Some(id)) {
            Some(e) => {
                e.start = e.start.or(start);
                e.finish = e.finish.or(finish);
            }
            None => out.push(Execution {
                id: Some(id),
                start,
                finish,
                ..blank
            }),
        }
    }
    out
}

/// One line per execution (time, id, session, verdict, exit, duration, command), each ending
/// in a newline. For the raw records, serialize them instead (`tail --json`).
pub fn format_human(records: &[Record]) -> String {
    executions(records)
        .iter()
        .map(|e| format!("{e}\n"))
        .collect()
}

impl fmt::Display for Execution<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((offset, len)) = self.recovered {
            return write!(
                f,
                "{}  recovered a partial line ({len} bytes at byte offset {offset})",
                self.ts
            );
        }
        let id: String = self
            .id
            .unwrap_or("-")
            .chars()
            .take(ID_DISPLAY_CHARS)
            .collect();
        let session = self
            .start
            .and_then(|s| s.session.as_deref())
            .or_else(|| self.finish.and_then(|f| f.session.as_deref()))
            .unwrap_or("-");
        let verdict = match self.start {
            Some(s) => serde_json::to_value(s.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".to_owned()),
            None => "?".to_owned(),
        };
        let (exit, duration) = match self.finish {
            None => ("running?".to_owned(), "-".to_owned()),
            Some(fin) => (exit_summary(fin), format_duration(fin.duration_ms)),
        };
        let command = self.start.map_or("?".to_owned(), |s| shorten(&s.command));
        // Whatever the log holds is shown, not obeyed (it may have been tampered with).
        let (ts, id, session, exit) = (
            one_line(self.ts),
            one_line(&id),
            one_line(session),
            one_line(&exit),
        );
        write!(
            f,
            "{ts}  {id:<8}  {session}  {verdict:<5}  {exit:<9}  {duration:>7}  {command}"
        )
    }
}

fn exit_summary(fin: &Finish) -> String {
    if fin.timed_out {
        "timeout".to_owned()
    } else if let Some(code) = fin.exit_code {
        format!("exit={code}")
    } else if let Some(sig) = fin.signal {
        format!("signal={sig}")
    } else {
        fin.outcome.to_string()
    }
}

fn format_duration(ms: u64) -> String {
    const MS_PER_SECOND: u64 = 1000;
    if ms < MS_PER_SECOND {
        format!("{ms}ms")
    } else {
        format!("{}.{}s", ms / MS_PER_SECOND, ms % MS_PER_SECOND / 100)
    }
}

/// The command on one line (controls, escape sequences and invisible or reordering characters
/// shown escaped: `crate::display`), at most [`COMMAND_DISPLAY_CHARS`] characters.
fn shorten(command: &str) -> String {
    let flat = one_line(command);
    if flat.chars().count() <= COMMAND_DISPLAY_CHARS {
        return flat;
    }
    let mut short: String = flat.chars().take(COMMAND_DISPLAY_CHARS - 1).collect();
    short.push('…');
    short
}

/// One line of `audit tail --auth`: time, event, principal, client, reason, request.
pub fn format_auth(record: &Record) -> Option<String> {
    let RecordBody::Auth(a) = &record.body else {
        return None;
    };
    let event = serde_json::to_value(a.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let line = format!(
        "{}  {:<14}  {:<16}  {:<22}  {:<10}  {}",
        record.ts,
        event,
        a.principal.as_deref().unwrap_or("-"),
        a.client,
        a.reason.as_deref().unwrap_or("-"),
        a.request.as_deref().unwrap_or("")
    );
    Some(crate::display::one_line(&line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_support::{finish, log_with, start};
    use std::io::Write;

    #[test]
    fn tail_reads_last_records_oldest_first() {
        let (_tmp, log) = log_with(5);
        let last = tail(log.path(), 3).unwrap();
        assert_eq!(
            last.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert_eq!(tail(log.path(), 100).unwrap().len(), 10);
        assert!(tail(log.path(), 0).unwrap().is_empty());
        let missing = log.path().with_file_name("nope.jsonl");
        assert!(tail(&missing, 3).unwrap().is_empty());
    }

    #[test]
    fn tail_skips_partial_last_line() {
        let (_tmp, log) = log_with(1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap();
        f.write_all(b"{\"seq\":3").unwrap();
        let last = tail(log.path(), 5).unwrap();
        assert_eq!(last.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn human_view_is_one_line_per_execution() {
        let (_tmp, log) = log_with(0);
        log.append(start("aaaaaaaa-1111")).unwrap();
        log.append(start("bbbbbbbb-2222")).unwrap();
        log.append(finish("aaaaaaaa-1111")).unwrap();
        let records = tail(log.path(), 10).unwrap();
        let text = format_human(&records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("aaaaaaaa ") && lines[0].contains("exit=0"),
            "{text}"
        );
        assert!(
            lines[0].contains("1.2s") && lines[0].contains("echo aaaaaaaa-1111"),
            "{text}"
        );
        assert!(
            lines[0].contains("s1") && lines[0].contains("allow"),
            "{text}"
        );
        assert!(
            lines[1].contains("bbbbbbbb") && lines[1].contains("running?"),
            "{text}"
        );
        // A finish whose start lies before the window still gets a line.
        let text = format_human(&records[2..]);
        assert!(
            text.contains("aaaaaaaa") && text.contains("exit=0"),
            "{text}"
        );
    }

    #[test]
    fn shorten_flattens_escapes_and_caps() {
        assert_eq!(shorten("echo a\nb"), "echo a^Jb");
        assert_eq!(shorten("echo \u{202e}cba\x1b[2J"), "echo <U+202E>cba^[[2J");
        let long = "x".repeat(100);
        let s = shorten(&long);
        assert_eq!(s.chars().count(), COMMAND_DISPLAY_CHARS);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(5), "5ms");
        assert_eq!(format_duration(1_250), "1.2s");
    }
}
