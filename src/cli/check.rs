//! `stockade check`: the check stage alone, on a command or a stream of them.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Map, Value};

use stockade::check::{Checker, Decision, Policy, Verdict, MAX_COMMAND_BYTES};
use stockade::exit;
use stockade::plan::CommandLine;

/// Longest line `stockade check --jsonl` accepts (a command plus its JSON quoting).
pub const MAX_JSONL_LINE_BYTES: usize = 4 * MAX_COMMAND_BYTES;

/// Check a command against the escape rules.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read JSON objects with a `command` field from stdin, one per line; write each back with
    /// `decision` and `rules` (rule ids) added.
    #[arg(long, conflicts_with = "command")]
    pub jsonl: bool,
    /// A directory of extra rule files (*.toml) added to the builtin rules.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Also print what the command was normalized to: each program with its arguments,
    /// operands and written files, and the signals seen (why a rule did or did not match)
    #[arg(long, conflicts_with = "jsonl")]
    pub explain: bool,
    /// Rule ids to allow (reported, but neither warn nor deny).
    #[arg(long = "allow-rule", value_name = "ID")]
    pub allow_rules: Vec<String>,
    /// The command, as `exec` takes it: one word is shell text; several are a program and its
    /// arguments, judged as their shell-quoted form.
    #[arg(last = true, required_unless_present = "jsonl")]
    pub command: Vec<String>,
}

/// The builtin rules (compiled, not re-verified: `stockade rules check` does that), plus the
/// files of `rules`, whose examples are checked.
pub fn checker(rules: Option<&Path>) -> anyhow::Result<Checker> {
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
    let command = CommandLine::from_words(args.command.clone()).text();
    let verdict = checker.check(&command, &policy);
    if args.explain {
        let analysis = checker.analyze(&command);
        for inv in &analysis.invocations {
            writeln!(
                out,
                "program {:?} args {:?} operands {:?} writes {:?} env {:?} depth {}",
                inv.name, inv.args, inv.operands, inv.writes, inv.env, inv.depth
            )?;
        }
        for s in &analysis.signals {
            writeln!(out, "signal {} {:?}", s.name, s.fragment)?;
        }
    }
    if args.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "command": command,
                "decision": verdict.decision,
                "rules": verdict.rules,
            }),
        )?;
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
    for h in &v.rules {
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
        "decision".into(),
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
