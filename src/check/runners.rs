//! Programs that run code handed to them in an option or an environment variable, as data
//! (`[[runner]]` in profiles/rules/*.toml, catalogued from GTFOBins' "shell" and "command"
//! functions): `man -H CMD`, `rsync -e CMD`, `bpftrace -c CMD`, `PAGER=CMD git -p`,
//! `emacs --eval '(term "/bin/sh")'`. What they run is checked as a command like any other; a new
//! runner costs one table row, not a family of regexes.

use std::collections::HashMap;

use serde::Deserialize;

/// How a runner's value is code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A shell command line (`sh -c VALUE`).
    Shell,
    /// Editor (ex/vi) commands: `!cmd`, `shell`, `set shell=X | shell`, `py3 import os...`.
    Ex,
    /// Lisp or another language whose string literals are the commands (`(term "/bin/sh")`).
    Strings,
    /// The operands after the options form a command line (`pkexec CMD ARGS`).
    Argv,
    /// The arguments of the row's `calls` in the value are command lines (m4's
    /// `esyscmd(CMD)`, TeX's `\write18{CMD}`, make's `$(shell CMD)`, rpm's `%(CMD)`).
    Calls,
    /// A sed script: its `e COMMAND` commands (GNU sed) run a shell command.
    Sed,
    /// Tcl or expect code: the words after `exec` and `spawn` are a command.
    Tcl,
}

/// One row of the table, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    /// Program names it applies to; empty with `env`: every program.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Options whose value is code: `-e VALUE`, `--opt=VALUE`, and (for `attached`) `-eVALUE`.
    #[serde(default)]
    pub options: Vec<String>,
    /// Short options take their value attached too (`-H/bin/sh`).
    #[serde(default)]
    pub attached: bool,
    /// `KEY=VALUE` option values (`-o KEY=VALUE`, `--config KEY=VALUE`) whose key matches one of
    /// these prefixes (case-insensitive) carry code.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Environment variables whose value is code.
    #[serde(default)]
    pub env: Vec<String>,
    /// With `argv`: options that take the next argument as their value (`cpulimit -l 100`).
    #[serde(default)]
    pub value_options: Vec<String>,
    /// With `argv`: the command's words are joined with spaces as they are, not quoted (ssh
    /// sends them to the remote shell that way: `ssh HOST 'a; b'` runs `a; b`).
    #[serde(default)]
    pub joined: bool,
    /// With `argv`: options that stand for the `positional` operands (`podman exec --latest`).
    #[serde(default)]
    pub no_operand_with: Vec<String>,
    /// With `argv`: operands before the command (`logsave FILE CMD`, `ssh HOST CMD`).
    #[serde(default)]
    pub positional: usize,
    /// With `calls`: where a call starts, up to and including its opening bracket (`esyscmd(`,
    /// `\write18{`, `$(shell `); its argument runs to the matching closing bracket.
    #[serde(default)]
    pub calls: Vec<String>,
    /// The operand at this position (0-based, options and their values skipped) is code
    /// (`sqlite3 DB SQL`: 1; `sed SCRIPT FILE`: 0).
    #[serde(default)]
    pub operand: Option<usize>,
    /// The command starts at this option's value and runs to the end (`ksu -e CMD ARGS`,
    /// `pidstat -e CMD ARGS`, `start-stop-daemon -x CMD`).
    #[serde(default)]
    pub start_options: Vec<String>,
    /// With `argv`: the words that must come first for the rest to be a command (`perf stat
    /// CMD`, `npm exec CMD`, `codex sandbox linux CMD`); each entry may be several words.
    #[serde(default)]
    pub subcommands: Vec<String>,
    /// When the program reads its code from stdin (here-strings, heredocs, pipes of known text).
    #[serde(default)]
    pub stdin: Option<Stdin>,
    /// File options whose value `-` or `/dev/stdin` means stdin is the code (`sftp -b -`,
    /// `gdb -x /dev/stdin`).
    #[serde(default)]
    pub stdin_options: Vec<String>,
    pub kind: Kind,
    /// Whether a bare shell run here is a shell escape (the default); `false` where starting a
    /// shell is the program's ordinary use (`ssh HOST bash`).
    #[serde(default = "yes")]
    pub escape: bool,
    pub why: String,
    /// Where the behaviour is documented.
    pub source: String,
    /// Commands in which this row must find code to check.
    #[serde(rename = "match")]
    pub matches: Vec<String>,
}

fn yes() -> bool {
    true
}

/// When a runner's stdin is its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stdin {
    /// With no operand, or the operand `-`/`/dev/stdin`, the program is read from stdin
    /// (`tclsh`, `julia`, `expect`, like `python3`).
    Bare,
    /// Whatever the operands, commands are read from stdin (`sftp HOST`, `gdb -q`, `ftp`).
    Always,
    /// Only through one of `stdin_options`.
    Options,
}

/// The table, indexed.
#[derive(Debug, Clone, Default)]
pub struct Runners {
    by_program: HashMap<String, Vec<usize>>,
    any_program: Vec<usize>,
    rows: Vec<RunnerSpec>,
}

/// Code a runner will run, and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub code: String,
    pub kind: Kind,
    /// The row's first code option, when the code came from stdin: the check judges it as
    /// `PROG OPTION CODE`, so rules on the program's arguments see it too.
    pub inline: Option<String>,
    /// A bare shell here is a shell escape.
    pub escape: bool,
}

/// Most code pieces taken from one program.
const MAX_FOUND: usize = 32;

impl Runners {
    pub fn new(rows: Vec<RunnerSpec>) -> Runners {
        let mut r = Runners::default();
        for (i, row) in rows.iter().enumerate() {
            if row.programs.is_empty() {
                r.any_program.push(i);
            }
            for p in &row.programs {
                r.by_program.entry(p.clone()).or_default().push(i);
            }
        }
        r.rows = rows;
        r
    }

    pub fn rows(&self) -> &[RunnerSpec] {
        &self.rows
    }

    /// The environment variables that carry code for every program.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.any_program
            .iter()
            .flat_map(|&i| self.rows[i].env.iter().map(String::as_str))
    }

    /// The code program `name` will run, from its arguments, environment (`NAME=value`) and,
    /// for rows that read it there, the known text on its stdin.
    pub fn find(
        &self,
        name: &str,
        args: &[String],
        env: &[String],
        stdin: Option<&str>,
    ) -> Vec<Found> {
        let mut out = Vec::new();
        let rows = self
            .by_program
            .get(name)
            .into_iter()
            .flatten()
            .chain(self.any_program.iter());
        for &i in rows {
            let row = &self.rows[i];
            for e in env {
                if let Some((k, v)) = e.split_once('=') {
                    if row.env.iter().any(|n| n == k) && !v.is_empty() {
                        out.push(Found {
                            code: v.to_string(),
                            kind: row.kind,
                            inline: None,
                            escape: row.escape,
                        });
                    }
                }
            }
            if row.programs.is_empty() {
                continue;
            }
            if let Some(when) = row.stdin {
                if let Some(code) =
                    stdin.filter(|t| !t.trim().is_empty() && reads_stdin(row, when, args))
                {
                    out.push(Found {
                        code: code.to_string(),
                        kind: row.kind,
                        inline: row.options.first().cloned(),
                        escape: row.escape,
                    });
                }
                continue;
            }
            if row.kind == Kind::Argv {
                if let Some(start) = argv_start(row, args) {
                    out.push(Found {
                        // ssh hands the remote shell its words joined, not quoted.
                        code: if row.joined {
                            args[start..].join(" ")
                        } else {
                            args[start..]
                                .iter()
                                .map(|a| super::wrappers::shell_quote(a))
                                .collect::<Vec<_>>()
                                .join(" ")
                        },
                        kind: Kind::Shell,
                        inline: None,
                        escape: row.escape,
                    });
                }
                continue;
            }
            if let Some((at, attached)) = row.start_options.iter().find_map(|o| {
                args.iter().enumerate().find_map(|(at, a)| {
                    if a == o && at + 1 < args.len() {
                        Some((at + 1, None))
                    } else {
                        a.strip_prefix(o.as_str())
                            .and_then(|v| v.strip_prefix('='))
                            .map(|v| (at + 1, Some(v.to_string())))
                    }
                })
            }) {
                // `start-stop-daemon -x PROG -- ARGS`: the `--` only ends its options.
                let mut words: Vec<String> = attached.into_iter().collect();
                words.extend(args[at..].iter().cloned());
                if let Some(dd) = words.iter().skip(1).position(|w| w == "--") {
                    words.remove(dd + 1);
                }
                out.push(Found {
                    code: words
                        .iter()
                        .map(|a| super::wrappers::shell_quote(a))
                        .collect::<Vec<_>>()
                        .join(" "),
                    kind: Kind::Shell,
                    inline: None,
                    escape: row.escape,
                });
            }
            let mut values = option_values(row, args);
            // The operand is the code unless an option gave it (`sed -e SCRIPT FILE`).
            if let Some(n) = row.operand.filter(|_| values.is_empty()) {
                values.extend(nth_operand(row, args, n));
            }
            for v in values {
                let value = match row.keys.is_empty() {
                    true => Some(v),
                    false => key_value(&row.keys, &v),
                };
                if let Some(code) = value.filter(|c| !c.trim().is_empty()) {
                    out.push(Found {
                        code,
                        kind: row.kind,
                        inline: None,
                        escape: row.escape,
                    });
                }
            }
        }
        let mut found = Vec::new();
        for f in out {
            let Found {
                code,
                kind,
                inline,
                escape,
            } = f;
            let pieces = match kind {
                Kind::Calls => {
                    let rows = self.by_program.get(name).into_iter().flatten();
                    let openers: Vec<&str> = rows
                        .flat_map(|&i| self.rows[i].calls.iter().map(String::as_str))
                        .collect();
                    call_arguments(&openers, &code)
                }
                Kind::Sed => sed_commands(&code),
                Kind::Tcl => tcl_commands(&code),
                _ => {
                    found.push(Found {
                        code,
                        kind,
                        inline,
                        escape,
                    });
                    continue;
                }
            };
            found.extend(pieces.into_iter().map(|code| Found {
                code,
                kind: Kind::Shell,
                inline: None,
                escape,
            }));
        }
        found.truncate(MAX_FOUND);
        found
    }
}

/// The `n`th operand of `args` (0-based), options and the values of `value_options` skipped.
fn nth_operand(row: &RunnerSpec, args: &[String], n: usize) -> Option<String> {
    let mut i = 0;
    let mut seen = 0;
    let mut options_done = false;
    while i < args.len() {
        let a = args[i].as_str();
        if !options_done && a == "--" {
            options_done = true;
        } else if !options_done && a.starts_with('-') && a.len() > 1 {
            if row.value_options.iter().any(|o| o == a) || row.options.iter().any(|o| o == a) {
                i += 1;
            }
        } else {
            if seen == n {
                return Some(a.to_string());
            }
            seen += 1;
        }
        i += 1;
    }
    None
}

/// Most bytes of code scanned for calls, sed or Tcl commands.
const MAX_SCAN: usize = 64 * 1024;

/// The arguments of every call that starts with one of `openers`, each up to the bracket
/// that closes the opener's last bracket (nested brackets of that kind counted).
pub fn call_arguments(openers: &[&str], code: &str) -> Vec<String> {
    let code = super::interp::cut(code, MAX_SCAN);
    let mut out = Vec::new();
    for opener in openers {
        let Some((open, close)) = opener.chars().rev().find_map(|c| match c {
            '(' => Some(('(', ')')),
            '{' => Some(('{', '}')),
            '[' => Some(('[', ']')),
            _ => None,
        }) else {
            continue;
        };
        let mut rest = code;
        let word = opener.starts_with(|c: char| c.is_ascii_alphanumeric());
        while let Some(at) = rest.find(opener) {
            let body = &rest[at + opener.len()..];
            // `syscmd(` inside `esyscmd(` is not a call of its own.
            let inside_word = word
                && rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
            if inside_word {
                rest = body;
                continue;
            }
            let mut depth = 1usize;
            let mut end = body.len();
            for (i, c) in body.char_indices() {
                if c == open {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
            }
            let arg = body[..end].trim();
            if !arg.is_empty() && out.len() < MAX_FOUND {
                out.push(arg.to_string());
            }
            rest = &body[end..];
        }
    }
    out
}

/// The commands a sed script runs (GNU sed(1)): `e COMMAND`, which takes the rest of its line
/// (space after `e` optional, `;` part of the command), after any address (`1`, `$`, `/re/I`,
/// `\,re,`, ranges, `!`, `{`); and the replacement of an `s` command with the `e` flag, which
/// is run as a command.
pub fn sed_commands(script: &str) -> Vec<String> {
    let script = super::interp::cut(script, MAX_SCAN);
    let mut out = Vec::new();
    for line in script.split('\n') {
        let mut p = line;
        while !p.trim().is_empty() && out.len() < MAX_FOUND {
            p = skip_address(p);
            let Some(c) = p.chars().next() else { break };
            match c {
                'e' => {
                    let cmd = p[1..].trim();
                    if !cmd.is_empty() {
                        out.push(cmd.to_string());
                    }
                    break;
                }
                's' => {
                    let Some((replacement, flags, rest)) = substitution(&p[1..]) else {
                        break;
                    };
                    if flags.contains('e') && !replacement.trim().is_empty() {
                        out.push(replacement.to_string());
                    }
                    p = rest;
                }
                // Commands whose argument is the rest of the line.
                'a' | 'i' | 'c' | 'r' | 'R' | 'w' | 'W' | 'b' | 't' | 'T' | ':' | '#' => break,
                _ => {
                    // Any other command ends at `;` or `}`.
                    match p.find([';', '}']) {
                        Some(at) => p = &p[at + 1..],
                        None => break,
                    }
                }
            }
        }
    }
    out
}

/// The script after a sed address and the separators before a command.
fn skip_address(mut p: &str) -> &str {
    loop {
        let before = p;
        p = p.trim_start_matches(|c: char| {
            c.is_ascii_whitespace()
                || c.is_ascii_digit()
                || matches!(c, '$' | ',' | '!' | '~' | '+' | ';' | '{' | '}')
        });
        if let Some(rest) = p.strip_prefix('/') {
            p = rest.split_once('/').map_or("", |(_, r)| r);
            p = p.trim_start_matches(['I', 'M']);
        } else if let Some(rest) = p.strip_prefix('\\') {
            // `\cREGEXc` with a delimiter of one's choosing.
            let mut chars = rest.chars();
            if let Some(d) = chars.next() {
                let rest = chars.as_str();
                p = rest.split_once(d).map_or("", |(_, r)| r);
                p = p.trim_start_matches(['I', 'M']);
            }
        }
        if p == before {
            return p;
        }
    }
}

/// An `s` command after its `s`: the replacement, the flags and the script after them.
fn substitution(p: &str) -> Option<(&str, &str, &str)> {
    let d = p.chars().next()?;
    if d == '\\' || d == '\n' || d.is_whitespace() {
        return None;
    }
    let body = &p[d.len_utf8()..];
    let mut parts = Vec::with_capacity(2);
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == d {
            parts.push(&body[start..i]);
            start = i + c.len_utf8();
            if parts.len() == 2 {
                break;
            }
        }
    }
    if parts.len() < 2 {
        return None;
    }
    let after = &body[start..];
    let end = after.find([';', '}', ' ']).unwrap_or(after.len());
    Some((parts[1], &after[..end], &after[end..]))
}

/// The commands Tcl or expect code starts: the words after `exec` or `spawn` up to the end of
/// the Tcl command (`;`, a newline or a closing `]`), quotes and braces taken off.
pub fn tcl_commands(code: &str) -> Vec<String> {
    let code = super::interp::cut(code, MAX_SCAN);
    let mut out = Vec::new();
    // `open {|cmd args} r+`, `open "|cmd args"`: a command pipeline opened as a channel.
    for (opener, close) in [("{|", '}'), ("\"|", '"')] {
        let mut rest = code;
        while let Some(at) = rest.find(opener) {
            let body = &rest[at + opener.len()..];
            let end = body.find(close).unwrap_or(body.len());
            if !body[..end].trim().is_empty() && out.len() < MAX_FOUND {
                out.push(body[..end].trim().to_string());
            }
            rest = &body[end..];
        }
    }
    for verb in ["exec", "spawn", "exp_spawn", "system"] {
        let mut rest = code;
        while let Some(at) = rest.find(verb) {
            if out.len() >= MAX_FOUND {
                return out;
            }
            let before_ok = rest[..at]
                .chars()
                .next_back()
                .map_or(true, |c| matches!(c, ' ' | '\t' | '\n' | ';' | '[' | '{'));
            let body = &rest[at + verb.len()..];
            rest = body;
            if !before_ok || !body.starts_with([' ', '\t']) {
                continue;
            }
            // One Tcl command: up to `;`, a newline or `]`, and never past the next verb (so
            // a run of verbs with no terminator costs linear time).
            let bound = body[1..].find(verb).map_or(body.len(), |i| i + 1);
            let end = body[..bound].find([';', '\n', ']']).unwrap_or(bound);
            let words: Vec<&str> = body[..end]
                .split_whitespace()
                .map(|w| w.trim_matches(|c| matches!(c, '"' | '{' | '}')))
                .filter(|w| !w.is_empty())
                // exec's and spawn's own options (`-ignorestderr`, `-noecho`, `--`).
                .skip_while(|w| w.starts_with('-'))
                .collect();
            if !words.is_empty() {
                out.push(words.join(" "));
            }
        }
    }
    out
}

/// Whether option word `a` takes the next argument as its value: one of `value_options`, or a
/// cluster of short options whose last one is (`-qi KEY`, `-itu USER`); a short option with
/// its value attached (`-ikey`, `--user=x`) does not.
fn takes_value(row: &RunnerSpec, a: &str) -> bool {
    if row.value_options.iter().any(|o| o == a) {
        return true;
    }
    if a.starts_with("--") || a.contains('=') {
        return false;
    }
    for (i, c) in a.char_indices().skip(1) {
        let mut short = String::from("-");
        short.push(c);
        if row.value_options.contains(&short) {
            // A value option inside the cluster takes the rest of the word as its value.
            return i + c.len_utf8() == a.len();
        }
    }
    false
}

/// Where an `argv` row's command starts in `args`: after the options (and the values of
/// `value_options`), the row's subcommand words and its `positional` operands; `--` ends the
/// options.
fn argv_start(row: &RunnerSpec, args: &[String]) -> Option<usize> {
    let mut i = 0;
    let mut words: Vec<&str> = Vec::new();
    let want = |w: &[&str]| {
        row.subcommands
            .iter()
            .any(|s| s.split_whitespace().eq(w.iter().copied()))
    };
    // `podman exec --latest CMD`, `kubectl exec -f pod.yaml -- CMD`: an option names the
    // target, and no operand comes before the command.
    let mut positional = if args
        .iter()
        .any(|a| row.no_operand_with.iter().any(|o| o == a))
    {
        0
    } else {
        row.positional
    };
    let mut options_done = false;
    while i < args.len() {
        let a = args[i].as_str();
        if !options_done && a == "--" {
            options_done = true;
            i += 1;
            continue;
        }
        if !options_done && a.starts_with('-') && a.len() > 1 {
            i += 1 + usize::from(takes_value(row, a));
            continue;
        }
        if !row.subcommands.is_empty() && !want(&words) {
            words.push(a);
            let prefix = row.subcommands.iter().any(|s| {
                let s: Vec<&str> = s.split_whitespace().collect();
                s.len() >= words.len() && s[..words.len()] == words[..]
            });
            if !prefix {
                return None;
            }
            i += 1;
            continue;
        }
        if positional > 0 {
            positional -= 1;
            i += 1;
            continue;
        }
        return Some(i);
    }
    None
}

/// Names of stdin as a file operand.
fn is_stdin_name(a: &str) -> bool {
    matches!(a, "-" | "/dev/stdin" | "/proc/self/fd/0" | "/dev/fd/0")
}

/// Whether a stdin row's program reads its code from stdin, given its arguments.
fn reads_stdin(row: &RunnerSpec, when: Stdin, args: &[String]) -> bool {
    let through_option = args
        .windows(2)
        .any(|w| row.stdin_options.iter().any(|o| *o == w[0]) && is_stdin_name(&w[1]))
        || args.iter().any(|a| {
            row.stdin_options.iter().any(|o| {
                a.strip_prefix(o.as_str())
                    .and_then(|v| v.strip_prefix('='))
                    .is_some_and(is_stdin_name)
            })
        });
    match when {
        Stdin::Always => true,
        Stdin::Options => through_option,
        Stdin::Bare => {
            through_option
                || args.iter().any(|a| is_stdin_name(a))
                || !args.iter().any(|a| !a.starts_with('-'))
        }
    }
}

/// The values of `row`'s options in `args`.
fn option_values(row: &RunnerSpec, args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for o in &row.options {
            if a == o {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.clone());
                }
            } else if let Some(v) = a.strip_prefix(o.as_str()) {
                if o.starts_with("--") {
                    if let Some(v) = v.strip_prefix('=') {
                        out.push(v.to_string());
                    }
                } else if row.attached && !v.is_empty() {
                    out.push(v.to_string());
                } else if let Some(v) = v.strip_prefix('=') {
                    out.push(v.to_string());
                }
            } else if let Some(v) = abbreviated(o, a, args.get(i + 1)) {
                out.push(v);
            }
        }
        i += 1;
    }
    out.dedup();
    out
}

/// The value of long option `o` given abbreviated (`--pre-h CMD`, `--on-download-comp=CMD`):
/// getopt_long and argparse take any unambiguous prefix, and a prefix that is ambiguous for the
/// program only makes it refuse to run. At least three letters after `--`.
fn abbreviated(o: &str, a: &str, next: Option<&String>) -> Option<String> {
    if !o.starts_with("--") || !a.starts_with("--") {
        return None;
    }
    let (name, value) = match a.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (a, None),
    };
    if name.len() < 5 || name.len() >= o.len() || !o.starts_with(name) {
        return None;
    }
    value.map(str::to_string).or_else(|| next.cloned())
}

/// The value of `KEY=VALUE` (or `KEY VALUE`) when KEY starts with one of `keys`.
fn key_value(keys: &[String], option: &str) -> Option<String> {
    let lower = option.to_ascii_lowercase();
    for k in keys {
        let k = k.to_ascii_lowercase();
        if lower.starts_with(&k) {
            let rest = &option[k.len()..];
            // The key may go on (`alias.x=`, `filter.x.smudge=`): the value is after `=`.
            let (_, v) = rest.split_once('=').or_else(|| rest.split_once(' '))?;
            return Some(v.trim_start_matches('!').to_string());
        }
    }
    None
}

/// The shell commands in editor (ex) commands: `!cmd`, `shell`, `set shell=X|shell`, `|`-joined.
pub fn ex_commands(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut shell = None;
    for part in value.split('|') {
        let p = part.trim().trim_start_matches(':').trim();
        let p = p.strip_prefix("\\!").map_or(p, |_| &p[1..]);
        if let Some(cmd) = p
            .strip_prefix('!')
            .or_else(|| p.strip_prefix(".shell "))
            .or_else(|| p.strip_prefix(".system "))
        {
            out.push(cmd.to_string());
        } else if let Some(s) = p
            .strip_prefix("set shell=")
            .or_else(|| p.strip_prefix("se shell="))
        {
            shell = Some(s.trim().to_string());
        } else if let Some(cmd) = p
            .strip_prefix("terminal ")
            .or_else(|| p.strip_prefix("term "))
            .filter(|c| !c.trim().is_empty())
        {
            // vim's `:terminal CMD` runs CMD in a terminal window.
            out.push(cmd.trim().to_string());
        } else if let Some(cmd) = p.strip_prefix("shell ").filter(|c| !c.trim().is_empty()) {
            // gdb's `shell CMD` (vim's `:shell` takes no command).
            out.push(cmd.to_string());
        } else if p == "shell" || p == "sh" {
            out.push(shell.clone().unwrap_or_else(|| "sh".to_string()));
        } else if let Some(code) = ["py3 ", "python3 ", "py ", "python ", "pyx "]
            .iter()
            .find_map(|k| p.strip_prefix(k))
        {
            out.extend(super::interp::shell_strings(
                super::interp::Lang::Python,
                code,
            ));
        } else if let Some(code) = p.strip_prefix("lua ") {
            out.extend(super::interp::shell_strings(super::interp::Lang::Lua, code));
        }
    }
    out
}

/// String literals of the code, as commands (`(term "/bin/sh")`, `(shell-command "id")`).
pub fn string_commands(value: &str) -> Vec<String> {
    let mut out = super::interp::literals(value);
    // Backtick commands: julia's run(`cmd`), groovy's and Perl's `cmd`.
    let mut rest = super::interp::cut(value, MAX_SCAN);
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        if !after[..end].trim().is_empty() && out.len() < MAX_FOUND {
            out.push(after[..end].to_string());
        }
        rest = &after[end + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ex_commands_find_the_shell() {
        assert_eq!(ex_commands(":!/bin/sh"), ["/bin/sh"]);
        assert_eq!(ex_commands(":set shell=/bin/sh | shell"), ["/bin/sh"]);
        assert_eq!(ex_commands(":py3 import os; os.system('id')"), ["id"]);
        assert!(ex_commands(":wq").is_empty());
        assert_eq!(ex_commands("\\! /bin/sh"), [" /bin/sh"]);
        assert_eq!(ex_commands(".shell id"), ["id"]);
        assert_eq!(ex_commands("shell nsenter -t 1"), ["nsenter -t 1"]);
        assert_eq!(ex_commands(":terminal nsenter -t 1"), ["nsenter -t 1"]);
    }

    #[test]
    fn long_options_may_be_abbreviated() {
        let next = "id".to_string();
        assert_eq!(
            abbreviated("--pre-hook", "--pre-h", Some(&next)),
            Some("id".into())
        );
        assert_eq!(abbreviated("--eval", "--ev=x", None), None);
        assert_eq!(abbreviated("--eval", "--eva=x", None), Some("x".into()));
        assert_eq!(abbreviated("--filter", "--filt=x", None), Some("x".into()));
        assert_eq!(abbreviated("--exec", "--exec", Some(&next)), None);
        assert_eq!(abbreviated("-e", "-ex", Some(&next)), None);
    }

    proptest::proptest! {
        #[test]
        fn code_scanners_are_total_and_bounded(code in "[a-z ;(){}\\[\\]$%!e\n]{0,300}") {
            for pieces in [
                call_arguments(&["esyscmd(", "\\write18{", "$(shell ", "%("], &code),
                sed_commands(&code),
                tcl_commands(&code),
            ] {
                proptest::prop_assert!(pieces.len() <= MAX_FOUND);
                for p in pieces {
                    proptest::prop_assert!(p.len() <= code.len());
                }
            }
        }
    }

    #[test]
    fn calls_sed_and_tcl() {
        assert_eq!(
            call_arguments(&["esyscmd(", "syscmd("], "esyscmd(id (x))dnl syscmd(ls)"),
            ["id (x)", "ls"]
        );
        assert_eq!(
            call_arguments(&["\\write18{"], r"\immediate\write18{nsenter -t 1 {x}}\end"),
            ["nsenter -t 1 {x}"]
        );
        assert_eq!(
            call_arguments(&["$(shell "], "$(shell id $(x))"),
            ["id $(x)"]
        );
        assert!(call_arguments(&["esyscmd("], "esyscmd(").is_empty());
        assert_eq!(sed_commands("1e exec sh 1>&0"), ["exec sh 1>&0"]);
        assert_eq!(sed_commands("/x/e id\n$e ls"), ["id", "ls"]);
        // GNU sed: `e` takes the rest of its line, `;` included, with or without a space.
        assert_eq!(sed_commands("1e echo;nsenter -t 1"), ["echo;nsenter -t 1"]);
        assert_eq!(sed_commands("2echo"), ["cho"]);
        assert_eq!(sed_commands("1{e id\n}"), ["id"]);
        assert_eq!(sed_commands("/x/Ie id"), ["id"]);
        assert_eq!(sed_commands("\\,x,e id"), ["id"]);
        assert_eq!(sed_commands("s/.*/nsenter -t 1/e"), ["nsenter -t 1"]);
        assert_eq!(sed_commands("s,a,b,g; 3e id"), ["id"]);
        assert!(sed_commands("s/e/f/g; 1d; y/abc/xyz/").is_empty());
        assert!(sed_commands("/foo/a\\ e text").is_empty());
        assert_eq!(
            tcl_commands("spawn nsenter -t 1 -m sh;interact"),
            ["nsenter -t 1 -m sh"]
        );
        assert_eq!(tcl_commands("set x [exec id]; puts $x"), ["id"]);
        assert!(tcl_commands("execute x; respawn y").is_empty());
        assert_eq!(tcl_commands("spawn -noecho nsenter -t 1"), ["nsenter -t 1"]);
        assert_eq!(tcl_commands("exec a exec b"), ["a", "b"]);
        assert_eq!(
            tcl_commands("set f [open {|nsenter -t 1} r+]"),
            ["nsenter -t 1"]
        );
    }
}
