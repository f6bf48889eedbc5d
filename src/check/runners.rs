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
    /// When the program reads its code from stdin (here-strings, heredocs, pipes of known text).
    #[serde(default)]
    pub stdin: Option<Stdin>,
    /// File options whose value `-` or `/dev/stdin` means stdin is the code (`sftp -b -`,
    /// `gdb -x /dev/stdin`).
    #[serde(default)]
    pub stdin_options: Vec<String>,
    pub kind: Kind,
    pub why: String,
    /// Where the behaviour is documented.
    pub source: String,
    /// Commands in which this row must find code to check.
    #[serde(rename = "match")]
    pub matches: Vec<String>,
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
                    });
                }
                continue;
            }
            if row.kind == Kind::Argv {
                if let Some(start) = args.iter().position(|a| !a.starts_with('-')) {
                    out.push(Found {
                        code: args[start..]
                            .iter()
                            .map(|a| super::wrappers::shell_quote(a))
                            .collect::<Vec<_>>()
                            .join(" "),
                        kind: Kind::Shell,
                        inline: None,
                    });
                }
                continue;
            }
            for v in option_values(row, args) {
                let value = match row.keys.is_empty() {
                    true => Some(v),
                    false => key_value(&row.keys, &v),
                };
                if let Some(code) = value.filter(|c| !c.trim().is_empty()) {
                    out.push(Found {
                        code,
                        kind: row.kind,
                        inline: None,
                    });
                }
            }
        }
        out.truncate(MAX_FOUND);
        out
    }
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
            }
        }
        i += 1;
    }
    out
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
    super::interp::literals(value)
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
    }
}
