//! `stockade check` and `stockade corpus run`: the command-line faces of the check stage.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Map, Value};

use super::corpus::{self, Corpus};
use super::{Checker, Decision, Policy, Verdict, MAX_COMMAND_BYTES};
use crate::exit;

/// Longest line `stockade check --jsonl` accepts (a command plus its JSON quoting).
pub const MAX_JSONL_LINE_BYTES: usize = 4 * MAX_COMMAND_BYTES;

/// Check a command against the escape rules.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read JSON objects with a `command` field from stdin, one per line; write each back with
    /// `verdict` and `rules` added.
    #[arg(long, conflicts_with = "command")]
    pub jsonl: bool,
    /// A directory of extra rule files (*.toml) added to the builtin rules.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Rule ids to allow (reported, but neither warn nor deny).
    #[arg(long = "allow-rule", value_name = "ID")]
    pub allow_rules: Vec<String>,
    /// The command (several words are joined with spaces).
    #[arg(last = true, required_unless_present = "jsonl")]
    pub command: Vec<String>,
}

/// Score the checker against corpora.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusArgs {
    #[command(subcommand)]
    pub command: CorpusCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum CorpusCommand {
    /// Score labelled (.jsonl) and plain benign (one command per line) corpora.
    Run(CorpusRunArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CorpusRunArgs {
    /// Print the scores as JSON.
    #[arg(long)]
    pub json: bool,
    /// A directory of extra rule files (*.toml) added to the builtin rules.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Instead of scoring: run the live-safe escape attempts in sandboxes (check stage
    /// bypassed, audited) and check that nothing reaches the host
    #[arg(long)]
    pub live: bool,
    /// With --live: at most N attempts per category
    #[arg(long, value_name = "N", requires = "live")]
    pub per_category: Option<usize>,
    /// With --live: attempts run at once [default: 4]
    #[arg(long, value_name = "N", requires = "live")]
    pub jobs: Option<usize>,
    /// With --live: the sandbox profile [default: the configured default]
    #[arg(long, requires = "live")]
    pub profile: Option<String>,
    /// Corpus files; default: the project's fixtures/corpus/*.jsonl.
    pub files: Vec<PathBuf>,
}

fn checker(rules: Option<&Path>) -> anyhow::Result<Checker> {
    match rules {
        Some(dir) => Checker::builtin_with_dir(dir)
            .with_context(|| format!("loading rules from {}", dir.display())),
        None => Checker::builtin().context("loading builtin rules"),
    }
}

/// The exit code for a verdict of `stockade check`.
pub fn exit_code(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Warn => exit::EXIT_CHECK_WARN,
        Decision::Deny => exit::EXIT_CHECK_DENY,
    }
}

/// `stockade check`.
pub fn run_check(args: &CheckArgs) -> anyhow::Result<u8> {
    let checker = checker(args.rules.as_deref())?;
    let policy = Policy {
        allow_rules: args.allow_rules.clone(),
        ..Policy::default()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.jsonl {
        let stdin = std::io::stdin();
        return run_jsonl(&checker, &policy, &mut stdin.lock(), &mut out);
    }
    let command = args.command.join(" ");
    let verdict = checker.check(&command, &policy);
    if args.json {
        serde_json::to_writer(&mut out, &verdict)?;
        writeln!(out)?;
    } else {
        write_verdict(&mut out, &command, &verdict)?;
    }
    Ok(exit_code(verdict.decision))
}

fn write_verdict(out: &mut impl Write, command: &str, v: &Verdict) -> std::io::Result<()> {
    let shown: String = command.chars().take(200).collect();
    writeln!(
        out,
        "{}: {}",
        v.decision.as_str(),
        shown.replace('\n', "\\n")
    )?;
    for h in &v.hits {
        writeln!(
            out,
            "  {} [{} {}, {}] {}",
            h.id,
            h.severity,
            h.decision.as_str(),
            h.category,
            h.fragment.replace('\n', "\\n")
        )?;
        writeln!(out, "    why: {}", h.why)?;
    }
    Ok(())
}

/// `stockade check --jsonl` over any reader and writer. Returns 0 when every line was judged,
/// [`exit::EXIT_STOCKADE_ERROR`] when some line was malformed.
pub fn run_jsonl(
    checker: &Checker,
    policy: &Policy,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let mut bad = 0usize;
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let (n, too_long) = read_line_capped(input, &mut buf, MAX_JSONL_LINE_BYTES)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() && !too_long {
            continue;
        }
        let reply = if too_long {
            Err(format!("line longer than {MAX_JSONL_LINE_BYTES} bytes"))
        } else {
            judge_line(checker, policy, text)
        };
        let obj = match reply {
            Ok(obj) => obj,
            Err(error) => {
                bad += 1;
                let mut m = Map::new();
                m.insert("error".into(), Value::String(error));
                m.insert("line".into(), Value::from(line_no));
                Value::Object(m)
            }
        };
        serde_json::to_writer(&mut *out, &obj)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(if bad == 0 {
        0
    } else {
        exit::EXIT_STOCKADE_ERROR
    })
}

fn judge_line(checker: &Checker, policy: &Policy, line: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("not a JSON object".into());
    };
    let Some(Value::String(command)) = obj.get("command") else {
        return Err("missing string field `command`".into());
    };
    let verdict = checker.check(command, policy);
    obj.insert(
        "verdict".into(),
        Value::String(verdict.decision.as_str().into()),
    );
    obj.insert(
        "rules".into(),
        Value::Array(verdict.rule_ids().into_iter().map(Value::String).collect()),
    );
    Ok(Value::Object(obj))
}

/// Read one line (with its newline) into `buf`, keeping at most `max` bytes; the rest of an
/// overlong line is consumed and dropped. Returns bytes consumed and whether the line was cut.
fn read_line_capped(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut cut = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok((consumed, cut));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if take > room {
            cut = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        input.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, cut));
        }
    }
}

/// The project's labelled corpus files.
pub fn default_corpus_files() -> anyhow::Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

/// `stockade corpus ...`.
pub fn run_corpus(args: &CorpusArgs) -> anyhow::Result<u8> {
    match &args.command {
        CorpusCommand::Run(run) => run_corpus_run(run),
    }
}

fn run_corpus_run(args: &CorpusRunArgs) -> anyhow::Result<u8> {
    // Running sandboxes needs the engine and the exec pipeline: the binary dispatches --live.
    anyhow::ensure!(
        !args.live,
        "--live is handled by `stockade corpus run --live`"
    );
    let checker = checker(args.rules.as_deref())?;
    let policy = Policy::default();
    let files = if args.files.is_empty() {
        default_corpus_files()?
    } else {
        args.files.clone()
    };
    let mut labelled = Vec::new();
    let mut labelled_names = Vec::new();
    let mut plain = Vec::new();
    for f in &files {
        match corpus::load(f)? {
            Corpus::Labelled(entries) => {
                labelled.extend(entries);
                labelled_names.push(f.display().to_string());
            }
            Corpus::Plain(lines) => plain.push((
                f.display().to_string(),
                corpus::score_plain(&checker, &policy, &lines),
            )),
        }
    }
    let labelled_score =
        (!labelled.is_empty()).then(|| corpus::score_labelled(&checker, &policy, &labelled));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let mut obj = Map::new();
        if let Some(s) = &labelled_score {
            obj.insert(
                "labelled".into(),
                serde_json::json!({ "files": labelled_names, "score": s }),
            );
        }
        let plain_json: Vec<Value> = plain
            .iter()
            .map(|(f, s)| serde_json::json!({ "file": f, "score": s }))
            .collect();
        obj.insert("plain".into(), Value::Array(plain_json));
        serde_json::to_writer_pretty(&mut out, &Value::Object(obj))?;
        writeln!(out)?;
        return Ok(0);
    }
    if let Some(s) = &labelled_score {
        writeln!(out, "labelled corpus: {}", labelled_names.join(", "))?;
        writeln!(
            out,
            "  malicious: {} entries, detected {} ({:.1}%), denied {} ({:.1}%)",
            s.malicious.total,
            s.malicious.detected,
            s.detection_percent,
            s.malicious.denied,
            corpus::percent(s.malicious.denied, s.malicious.total)
        )?;
        for (cat, t) in &s.by_category {
            writeln!(
                out,
                "    {cat:<22} {:>3}/{:<3} detected ({:.1}%), {} denied",
                t.detected,
                t.total,
                corpus::percent(t.detected, t.total),
                t.denied
            )?;
        }
        writeln!(
            out,
            "  hard negatives: {} entries, deny {} ({:.1}%), warn {} ({:.1}%)",
            s.benign.total,
            s.benign.denied,
            s.benign_deny_percent,
            s.benign.detected - s.benign.denied,
            s.benign_warn_percent
        )?;
        for m in &s.missed {
            writeln!(out, "  missed [{}]: {}", m.category, m.command)?;
        }
        for f in &s.flagged_benign {
            writeln!(
                out,
                "  flagged benign [{} {}]: {}",
                f.decision.as_str(),
                f.rules.join(","),
                f.command
            )?;
        }
    }
    for (file, s) in &plain {
        writeln!(
            out,
            "{file}: {} lines, warn {} ({:.2}%), deny {} ({:.2}%)",
            s.lines, s.warned, s.warn_percent, s.denied, s.deny_percent
        )?;
        for f in &s.flagged {
            writeln!(
                out,
                "  line {} [{} {}]: {}",
                f.line,
                f.decision.as_str(),
                f.rules.join(","),
                f.command
            )?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_lines() {
        let mut input: &[u8] = b"abcdef\nxy\n";
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 3).unwrap(),
            (7, true)
        );
        assert_eq!(buf, b"abc");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 3).unwrap(),
            (3, false)
        );
        assert_eq!(buf, b"xy\n");
    }
}
