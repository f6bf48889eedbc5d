//! Normalization: turn a parsed command into the list of programs it would run, each with its
//! resolved name, arguments, file operands, written files and environment, seeing through
//! wrappers, shells fed by decoders, `eval`, interpreter one-liners and name obfuscation. Tricks
//! that are themselves suspicious are reported as [`Signal`]s for the rules to judge.

use std::collections::HashSet;

use super::eval::{self, Output};
use super::expand::{
    self, Ctx, Field, Vars, ANSI_C, BRACE, CMDSUB, DECODED, FETCHED, GLOB, IFS, MIXED, NETWORK,
    PARAM_OP, SPLICED, UNKNOWN, VAR,
};
use super::interp;
use super::parse::{
    self, Command, Heredoc, Part, Pipeline, RedirOp, Redirect, Script, Simple, Word,
};
use super::wrappers;

/// Deepest chain of re-parsed shell strings (`sh -c` inside `eval` inside decoded text ...).
pub const MAX_SCRIPT_DEPTH: u8 = 6;
/// How deep command substitutions are evaluated statically.
pub const EVAL_DEPTH: u8 = 4;
/// Longest wrapper chain followed (`sudo env nice timeout ... cmd`).
pub const MAX_WRAP_DEPTH: u8 = 8;
/// Most programs recorded for one command string.
pub const MAX_INVOCATIONS: usize = 4096;
/// Most sensitive paths one globbed operand is resolved to.
pub const MAX_GLOB_MATCHES: usize = 4;
/// Most URLs of one source file taken as its operands.
const MAX_SOURCE_URLS: usize = 16;

/// Where system programs live: running one of those is running the program, not a file the
/// session wrote.
fn is_system_path(path: &str) -> bool {
    [
        "/bin/", "/sbin/", "/usr/", "/lib/", "/lib64/", "/opt/", "/snap/", "/nix/", "/etc/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// The value of the first of `names` in `args` (`-f F`, `--file=F`, `-fF`).
fn option_value(args: &[String], names: &[&str]) -> Option<String> {
    for (i, a) in args.iter().enumerate() {
        for n in names {
            if a == n {
                return args.get(i + 1).cloned();
            }
            if let Some(v) = a.strip_prefix(n) {
                if let Some(v) = v.strip_prefix('=') {
                    return Some(v.to_string());
                }
                if !n.starts_with("--") && !v.is_empty() {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

/// Unresolved expansions as left in a field's text: `$(...)`, backticks, `${...}`, `$name`.
fn unresolved_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"\$\([^()]*\)|`[^`]*`|\$\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
            .expect("static regex")
    })
}

/// Whether a file with this name may be run (or read by something that runs its contents):
/// anything but documents and data, and JSON only as a package manifest.
fn runnable_file(path: &str) -> bool {
    let name = basename(path).to_ascii_lowercase();
    if matches!(
        name.as_str(),
        "package.json" | "composer.json" | "build.rs" | "makefile" | "gnumakefile" | "justfile"
    ) {
        return true;
    }
    if path.starts_with("/dev/") {
        return false;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    !matches!(
        ext,
        "md" | "txt"
            | "log"
            | "csv"
            | "tsv"
            | "html"
            | "htm"
            | "xml"
            | "rst"
            | "adoc"
            | "json"
            | "yaml"
            | "yml"
            | "toml"
            | "ini"
            | "out"
            | "err"
            | "tex"
            | "svg"
            | "diff"
            | "patch"
            | "sql"
            | "c"
            | "h"
            | "cpp"
            | "go"
            | "rs"
            | "java"
            | "tmp"
            | "bak"
            | "pem"
            | "key"
    )
}

/// The language a compiler that can read its source from stdin builds.
fn compiler_language(name: &str) -> Option<&'static str> {
    Some(match name {
        "gcc" | "cc" | "clang" | "tcc" | "musl-gcc" => "c",
        "g++" | "c++" | "clang++" => "c++",
        "go" => "go",
        "rustc" => "rust",
        _ => return None,
    })
}

/// The language of a source file, by its extension, and whether it is compiled (then the file
/// is not also judged as a script).
fn source_language(path: &str) -> Option<(&'static str, bool)> {
    let name = basename(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "c" | "h" => ("c", true),
        "cc" | "cpp" | "cxx" | "hpp" => ("c++", true),
        "go" => ("go", true),
        "rs" => ("rust", true),
        "java" => ("java", true),
        "kt" => ("kotlin", true),
        "swift" => ("swift", true),
        "zig" => ("zig", true),
        "nim" => ("nim", true),
        "cs" => ("csharp", true),
        "py" | "pyw" => ("python", false),
        "pl" | "pm" => ("perl", false),
        "rb" => ("ruby", false),
        "js" | "mjs" | "cjs" | "ts" => ("javascript", false),
        "php" => ("php", false),
        "lua" => ("lua", false),
        _ => return None,
    })
}

/// Whether a glob names at least one character outright (a literal, or a bracket of one or two
/// characters: `ns*er`, `[n]senter`), unlike `[a-z][3-9]`, a pattern that happens to fit `m4`.
fn pins_a_letter(glob: &str) -> bool {
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => {}
            '[' => {
                let set: String = chars.by_ref().take_while(|&c| c != ']').collect();
                if !set.contains('-') && set.trim_start_matches(['!', '^']).chars().count() <= 2 {
                    return true;
                }
            }
            _ => return true,
        }
    }
    false
}

/// Whether a glob singles something out: its last component keeps at least two literal
/// characters (`k?ore`, `doc*.sock`, `sd?`), unlike a sweep (`*`, `[ubso]*`).
fn pointed_glob(pattern: &str) -> bool {
    let last = pattern
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let mut literal = 0;
    let mut in_class = false;
    for c in last.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            '*' | '?' => {}
            _ if !in_class => literal += 1,
            _ => {}
        }
    }
    literal >= 2
}
/// Longest fragment kept in a signal.
pub const MAX_FRAGMENT_CHARS: usize = 200;

/// Shells: given a string with `-c`, or text on stdin, they run it.
pub const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "ash",
    "yash",
    "fish",
    "tcsh",
    "csh",
    "rbash",
    "pdksh",
    "busybox-sh",
];

/// One program the command would run, after normalization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Resolved program name (basename, wrappers and obfuscation removed). Empty for a bare
    /// assignment or redirection.
    pub name: String,
    pub args: Vec<String>,
    /// Arguments that may name files, devices or hosts (search patterns, messages and manual
    /// page names left out), read redirections, written files, and decoded forms of hosts.
    pub operands: Vec<String>,
    /// Files the program writes: output redirections, `tee`, `dd of=`, copy destinations.
    pub writes: Vec<String>,
    /// `NAME=value` pairs set for the program.
    pub env: Vec<String>,
    /// How many re-parses deep this program was found (0: the command itself).
    pub depth: u8,
}

impl Invocation {
    /// `name args...` with written files, as shown in a rule hit.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.env {
            s.push_str(e);
            s.push(' ');
        }
        s.push_str(&self.name);
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        for w in &self.writes {
            s.push_str(" > ");
            s.push_str(w);
        }
        s.trim().to_string()
    }
}

/// A trick seen while normalizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub name: &'static str,
    pub fragment: String,
}

/// Everything normalization found in one command string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    pub invocations: Vec<Invocation>,
    pub signals: Vec<Signal>,
    /// Files the command runs whose content is not in the command (`bash s`, `./s`,
    /// `python3 s.py`, `make`, `npm run`): judged from the sandbox before it runs.
    pub runs_files: Vec<RunFile>,
}

/// A file a command runs, and how its content is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    /// As written, placed against a directory `cd` moved to (else relative to the workdir).
    pub path: String,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A shell script (`sh F`, `. F`).
    Shell,
    /// Run as a program: a `#!` line says what reads it; a text file without one is a shell
    /// script.
    Exec,
    /// An interpreter's program (the interpreter's name).
    Code(String),
    /// A Makefile: its recipe lines are shell.
    Make,
    /// A package manifest: its `scripts` are shell.
    Manifest,
}

/// Most files one command is judged through.
pub const MAX_RUN_FILES: usize = 8;

/// Signal names, the vocabulary rules can match with `signal = "..."`.
pub mod signals {
    /// A watched program's name was spelled with quotes, escapes, `$'..'`, variables, a
    /// substitution, a brace list, `$IFS` or a glob.
    pub const OBFUSCATED_NAME: &str = "obfuscated-name";
    /// Decoded text (base64, hex, octal, `rev`, `tr`, escapes) was executed.
    pub const DECODED_EXEC: &str = "decoded-exec";
    /// A decoder's output that cannot be computed statically is executed.
    pub const UNRESOLVED_DECODE_EXEC: &str = "unresolved-decode-exec";
    /// Content fetched from the network or a file is executed by a shell.
    pub const DOWNLOAD_EXEC: &str = "download-exec";
    /// Content downloaded from the network (not read from a file) is run as code.
    pub const NETWORK_EXEC: &str = "network-exec";
    /// The program name is an unresolved expansion (`$line`, `$(...)`).
    pub const DYNAMIC_COMMAND: &str = "dynamic-command";
    /// `$IFS` separates words.
    pub const IFS: &str = "ifs";
    /// An IPv4 address written in decimal, hex or octal form.
    pub const ENCODED_IP: &str = "encoded-ip";
    /// An interpreter, `find`, `awk`, an editor or a similar program starts a bare shell.
    pub const SPAWNED_SHELL: &str = "spawned-shell";
    /// Nesting or size limits cut the analysis short.
    pub const LIMIT: &str = "analysis-limit";
    /// The name of all signals, for validating rule files.
    pub const ALL: &[&str] = &[
        OBFUSCATED_NAME,
        DECODED_EXEC,
        UNRESOLVED_DECODE_EXEC,
        DOWNLOAD_EXEC,
        NETWORK_EXEC,
        DYNAMIC_COMMAND,
        IFS,
        ENCODED_IP,
        SPAWNED_SHELL,
        LIMIT,
    ];
}

/// Normalize `command`. `watched` holds the program names the rules refer to; only tricks that
/// hide one of them count as name obfuscation (plenty of benign scripts write `"$PYTHON"`).
pub fn analyze(command: &str, watched: &HashSet<String>) -> Analysis {
    let runners = super::runners::Runners::default();
    analyze_with(
        command,
        &Known {
            watched,
            resources: &[],
            runners: &runners,
        },
    )
}

/// What the rule files tell normalization.
pub struct Known<'a> {
    /// The program names rules refer to.
    pub watched: &'a HashSet<String>,
    /// Sensitive paths a globbed operand is resolved against.
    pub resources: &'a [String],
    /// Programs that run code given in options or the environment.
    pub runners: &'a super::runners::Runners,
}

/// [`analyze`] with all the rule files know.
pub fn analyze_with(command: &str, known: &Known<'_>) -> Analysis {
    let mut w = Walker {
        watched: known.watched,
        resources: known.resources,
        runners: known.runners,
        out: Analysis::default(),
        decoded_files: Vec::new(),
        repaired: false,
    };
    w.script_text(command, &Vars::default(), 0);
    w.out
}

struct Walker<'w> {
    watched: &'w HashSet<String>,
    resources: &'w [String],
    runners: &'w super::runners::Runners,
    out: Analysis,
    /// Files that received computable or decoded output earlier in the command, and what was
    /// written.
    decoded_files: Vec<(String, Output)>,
    /// The command was also judged with an open quote removed.
    repaired: bool,
}

/// Most written files remembered per command.
const MAX_DECODED_FILES: usize = 64;
/// Largest known file content remembered.
const MAX_WRITTEN_FILE_BYTES: usize = 64 * 1024;

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_FRAGMENT_CHARS {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_FRAGMENT_CHARS).collect();
    t.push('…');
    t
}

fn basename(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t)
}

impl Walker<'_> {
    fn signal(&mut self, name: &'static str, fragment: &str) {
        if self.out.signals.len() < MAX_INVOCATIONS
            && !self
                .out
                .signals
                .iter()
                .any(|s| s.name == name && s.fragment == fragment)
        {
            self.out.signals.push(Signal {
                name,
                fragment: cut(fragment),
            });
        }
    }

    fn script_text(&mut self, text: &str, vars: &Vars, depth: u8) {
        if depth > MAX_SCRIPT_DEPTH {
            self.signal(signals::LIMIT, text);
            return;
        }
        let parsed = parse::parse(text);
        if parsed.limited {
            self.signal(signals::LIMIT, text);
        }
        let mut vars = vars.clone();
        self.script(&parsed.script, &parsed.heredocs, &mut vars, depth);
        // A line bash would refuse for a quote left open is judged as meant too: with that
        // quote gone. Once per command, so repairs cannot multiply.
        if let Some(at) = parsed.open_quote.filter(|_| depth == 0 && !self.repaired) {
            self.repaired = true;
            let meant = format!("{}{}", &text[..at], &text[at + 1..]);
            self.script_text(&meant, &Vars::default(), 0);
        }
    }

    fn script(&mut self, script: &Script, heredocs: &[Heredoc], vars: &mut Vars, depth: u8) {
        for p in &script.pipelines {
            self.pipeline(p, heredocs, vars, depth);
        }
    }

    fn pipeline(&mut self, p: &Pipeline, heredocs: &[Heredoc], vars: &mut Vars, depth: u8) {
        let mut piped: Option<Output> = None;
        for cmd in &p.commands {
            let out = match cmd {
                Command::Simple(s) => self.simple(s, heredocs, vars, depth, piped.take()),
                Command::Group(inner, redirects) => {
                    self.script(inner, heredocs, vars, depth);
                    let ctx = Ctx {
                        vars,
                        heredocs,
                        depth: EVAL_DEPTH,
                    };
                    let io = redirections(redirects, &ctx);
                    if !io.writes.is_empty() || !io.reads.is_empty() {
                        self.push(Invocation {
                            operands: [io.reads, io.writes.clone()].concat(),
                            writes: io.writes,
                            depth,
                            ..Invocation::default()
                        });
                    }
                    eval::script_output(inner, heredocs, vars, EVAL_DEPTH)
                }
            };
            piped = Some(out);
        }
    }

    fn push(&mut self, inv: Invocation) -> bool {
        if self.out.invocations.len() >= MAX_INVOCATIONS {
            self.signal(signals::LIMIT, &inv.name);
            return false;
        }
        self.out.invocations.push(inv);
        true
    }

    /// Commands inside substitutions run too, wherever the substitution sits.
    fn nested(&mut self, word: &Word, heredocs: &[Heredoc], vars: &Vars, depth: u8) {
        for part in &word.parts {
            if let Part::CmdSub { script, .. } | Part::ProcSub { script, .. } = part {
                let mut v = vars.clone();
                self.script(script, heredocs, &mut v, depth);
            }
        }
    }

    fn simple(
        &mut self,
        s: &Simple,
        heredocs: &[Heredoc],
        vars: &mut Vars,
        depth: u8,
        piped: Option<Output>,
    ) -> Output {
        for w in s
            .words
            .iter()
            .chain(s.assigns.iter().map(|a| &a.value))
            .chain(s.redirects.iter().map(|r| &r.target))
        {
            self.nested(w, heredocs, vars, depth);
        }
        let ctx = Ctx {
            vars,
            heredocs,
            depth: EVAL_DEPTH,
        };
        let assigned = expand::assignments(&s.assigns, &ctx);
        let fields: Vec<Field> = s
            .words
            .iter()
            .flat_map(|w| expand::fields(w, &ctx))
            .collect();
        let io = redirections(&s.redirects, &ctx);
        let env: Vec<String> = assigned
            .iter()
            .map(|a| format!("{}={}", a.name, a.value.text))
            .collect();
        if fields.is_empty() {
            expand::assign_all(assigned, vars);
            if !env.is_empty() || !io.writes.is_empty() || !io.reads.is_empty() {
                let operands = [io.reads, io.writes.clone()].concat();
                self.push(Invocation {
                    env,
                    operands,
                    writes: io.writes,
                    depth,
                    ..Invocation::default()
                });
            }
            return Output::known(String::new(), 0);
        }
        let stdin = io.stdin.or(piped);
        let writes = io.writes.clone();
        let out = self.command(
            fields, env, io.writes, io.reads, stdin, vars, depth, None, 0,
        );
        let worth_keeping = out.flags & (DECODED | FETCHED) != 0
            || out
                .text
                .as_ref()
                .is_some_and(|t| t.len() <= MAX_WRITTEN_FILE_BYTES);
        if let Some(text) = out.text.as_deref() {
            self.planted(text, &writes, vars, depth);
        }
        if worth_keeping && self.decoded_files.len() < MAX_DECODED_FILES {
            // `echo cmd > f; sh f` and `... | base64 -d > f; sh f`: remember what went into f.
            for w in writes {
                self.decoded_files.push((w, out.clone()));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn command(
        &mut self,
        fields: Vec<Field>,
        env: Vec<String>,
        writes: Vec<String>,
        reads: Vec<String>,
        stdin: Option<Output>,
        vars: &mut Vars,
        depth: u8,
        parent: Option<&wrappers::Inner>,
        wrap_depth: u8,
    ) -> Output {
        let Some(first) = fields.first() else {
            return Output::known(String::new(), 0);
        };
        let name = self.resolve_name(first);
        let args: Vec<String> = fields[1..].iter().map(|f| f.text.clone()).collect();
        for f in &fields {
            if f.flags & IFS != 0 {
                self.signal(signals::IFS, &f.text);
            }
        }
        let mut env = env;
        if matches!(
            name.as_str(),
            "export" | "declare" | "typeset" | "local" | "readonly"
        ) {
            for f in &fields[1..] {
                if let Some((n, _)) = f.text.split_once('=') {
                    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        env.push(f.text.clone());
                    }
                }
            }
        }
        // Redirection targets are operands too; files written through arguments already are.
        let mut operands = operands(&name, &args);
        let code = interp::lang(&name).and_then(|lang| {
            interp::code(lang, &args, stdin.as_ref().and_then(|o| o.text.as_deref()))
                .map(|c| (lang, c))
        });
        let mut hidden = Vec::new();
        if let Some((_, c)) = &code {
            // The code is checked through its literals and embedded commands, not as a path.
            operands.retain(|o| *o != c.text);
            operands.extend(interp::literals(&c.text));
            hidden = interp::decoded_literals(&c.text);
            operands.extend(hidden.iter().cloned());
        }
        let mut args = args;
        if matches!(name.as_str(), "kubectl" | "oc")
            && args
                .windows(2)
                .any(|w| (w[0] == "-f" || w[0] == "--filename") && w[1] == "-")
        {
            // A manifest piped in is what the command acts on.
            if let Some(t) = stdin.as_ref().and_then(|o| o.text.as_ref()) {
                args.push(t.clone());
            }
        }
        operands.extend(reads);
        operands.extend(writes.iter().cloned());
        if first.known() && first.text.contains('/') {
            // A program run by its path is a path like any other: `/proc/1/root/bin/sh` runs
            // the host's shell.
            operands.push(first.text.clone());
        }
        let mut all_writes = writes;
        all_writes.extend(command_writes(&name, &args));
        if let Some((lang, c)) = &code {
            // `open("/etc/ld.so.preload", "w").write(...)`: the interpreter writes that file.
            all_writes.extend(interp::written_files(*lang, &c.text));
        }
        // Paths as the kernel would see them: placed against the directory `cd` moved to,
        // with `.`/`..` resolved, and globs matched against the sensitive paths.
        self.place_paths(&mut operands, vars);
        self.place_paths(&mut all_writes, vars);
        let decoded_hosts: Vec<(String, String)> = operands
            .iter()
            .filter_map(|o| decoded_host(&name, o))
            .collect();
        for (host, ip) in decoded_hosts {
            self.signal(signals::ENCODED_IP, &host);
            operands.push(ip);
        }
        if matches!(name.as_str(), "curl" | "wget" | "fetch" | "aria2c")
            && self.decoded_files.len() < MAX_DECODED_FILES
        {
            // A download saved to a file: running that file later runs fetched content.
            for w in &all_writes {
                self.decoded_files
                    .push((w.clone(), Output::unknown(FETCHED | NETWORK)));
            }
        }
        let script_operand = interp::lang(&name)
            .filter(|_| code.is_none())
            .and_then(|_| {
                let mut operands = args.iter().filter(|a| !a.starts_with('-'));
                let first = operands.next()?;
                // `deno run F`, `bun run F`: a subcommand comes before the file.
                if matches!(name.as_str(), "deno" | "bun") && matches!(first.as_str(), "run" | "x")
                {
                    operands.next().cloned()
                } else {
                    Some(first.clone())
                }
            });
        let inv = Invocation {
            name: name.clone(),
            args: args.clone(),
            operands,
            writes: all_writes,
            env: env.clone(),
            depth,
        };
        if !self.push(inv) {
            return Output::unknown(0);
        }

        if first.known() && first.text.contains('/') {
            if let Some(o) = self.decoded_file(&first.text) {
                self.run_script(o.text, o.flags, vars, depth);
            } else if !is_system_path(&first.text) {
                self.runs_file(first, FileKind::Exec, vars);
            }
        }
        match name.as_str() {
            "make" | "gmake" => {
                let file = option_value(&args, &["-f", "--file", "--makefile"])
                    .unwrap_or_else(|| "Makefile".to_string());
                let dir = option_value(&args, &["-C", "--directory"]);
                let path = match dir {
                    Some(d) => format!("{}/{file}", d.trim_end_matches('/')),
                    None => file,
                };
                self.runs_path(&path, FileKind::Make, vars);
            }
            "npm" | "yarn" | "pnpm" | "bun" | "composer" => {
                let manifest = if name == "composer" {
                    "composer.json"
                } else {
                    "package.json"
                };
                let dir = option_value(
                    &args,
                    &["-C", "--prefix", "--cwd", "--dir", "-d", "--working-dir"],
                );
                let path = match dir {
                    Some(d) => format!("{}/{manifest}", d.trim_end_matches('/')),
                    None => manifest.to_string(),
                };
                self.runs_path(&path, FileKind::Manifest, vars);
            }
            _ => {}
        }
        if let Some(path) = script_operand {
            // `python3 f` where f was written or downloaded earlier in the command.
            if self.decoded_file(&path).is_none() {
                self.runs_path(&path, FileKind::Code(name.clone()), vars);
            }
            if let Some(o) = self.decoded_file(&path) {
                match (&o.text, interp::lang(&name)) {
                    (Some(t), Some(lang)) => {
                        for s in interp::shell_strings(lang, t) {
                            self.run_script(Some(s), o.flags, vars, depth);
                        }
                    }
                    _ => self.run_script(None, o.flags, vars, depth),
                }
            }
        }
        if let Some(p) = parent {
            if p.escape_parent && is_bare_shell(&name, &args) {
                self.signal(
                    signals::SPAWNED_SHELL,
                    &format!("{name} {}", args.join(" ")),
                );
            }
        }

        // What a wrapper's single inner command prints is the wrapper's output
        // (`busybox base64 -d`, `env X=1 tr ..`).
        let mut inner_out: Option<Output> = None;
        if wrap_depth < MAX_WRAP_DEPTH {
            if let Some(inner) = wrappers::unwrap(&name, &args) {
                let single = inner.commands.len() == 1 && inner.scripts.is_empty();
                for range in &inner.commands {
                    let mut sub: Vec<Field> = fields[1..]
                        .get(range.clone())
                        .map(<[Field]>::to_vec)
                        .unwrap_or_default();
                    if inner.stdin_args {
                        if let Some(t) = stdin.as_ref().and_then(|o| o.text.as_ref()) {
                            sub.extend(t.split_whitespace().map(|w| Field {
                                text: w.to_string(),
                                ..Field::default()
                            }));
                        }
                    }
                    let mut sub_env = env.clone();
                    sub_env.extend(inner.env.iter().cloned());
                    let out = self.command(
                        sub,
                        sub_env,
                        Vec::new(),
                        Vec::new(),
                        stdin.clone(),
                        vars,
                        depth,
                        Some(&inner),
                        wrap_depth + 1,
                    );
                    if single {
                        inner_out = Some(out);
                    }
                }
                for script in &inner.scripts {
                    let before = self.out.invocations.len();
                    self.run_script(Some(script.clone()), 0, vars, depth);
                    // A bare shell anywhere in what the program runs (`watch -x sh -c 'reset;
                    // exec sh'`, `rsync -e 'sh -c "sh 0<&2"'`) hands over a shell.
                    let spawned = is_bare_shell_text(script)
                        || self.out.invocations[before..]
                            .iter()
                            .any(|i| is_bare_shell(&i.name, &i.args));
                    if inner.escape_parent && spawned {
                        self.signal(signals::SPAWNED_SHELL, script);
                    }
                }
            }
        }

        let stdin_text = stdin.as_ref().and_then(|o| o.text.as_deref());
        self.runner_code(&name, &args, &env, stdin_text, vars, depth);
        if let (Some(lang), Some(text)) = (compiler_language(&name), stdin_text) {
            // `gcc -x c -`, `tcc -run -`, `go run - <<EOF`: the source is on stdin.
            if args.iter().any(|a| a == "-" || a == "/dev/stdin") {
                self.source_code(lang, text, vars, depth);
            }
        }

        if SHELLS.contains(&name.as_str()) {
            match shell_input(&fields[1..]) {
                ShellInput::Arg(i) => {
                    let f = &fields[1 + i];
                    // A string with pieces that cannot be known (`sh -c "echo 0 > $d/x"`) is
                    // still judged, its unknown expansions left as written (unknown again when
                    // parsed); decoded or fetched text that is not known is judged as such.
                    let judged = f.known() || f.flags & (DECODED | FETCHED) == 0;
                    self.run_script(judged.then(|| f.text.clone()), f.flags, vars, depth);
                }
                ShellInput::Stdin => {
                    if let Some(o) = &stdin {
                        self.run_script(o.text.clone(), o.flags, vars, depth);
                    }
                }
                ShellInput::Feed(i) => {
                    if let Some(o) = fields[1 + i].feed.as_deref() {
                        self.run_script(o.text.clone(), o.flags, vars, depth);
                    }
                }
                ShellInput::File(i) => {
                    if let Some(o) = self.decoded_file(&fields[1 + i].text) {
                        self.run_script(o.text, o.flags, vars, depth);
                    } else {
                        self.runs_file(&fields[1 + i], FileKind::Shell, vars);
                    }
                }
            }
        } else if name == "eval" {
            let flags = fields[1..].iter().fold(0, |a, f| a | f.flags);
            let known = flags & UNKNOWN == 0;
            self.run_script(known.then(|| args.join(" ")), flags, vars, depth);
        } else if name == "source" || name == "." {
            if let Some(f) = fields.get(1) {
                if let Some(o) = self.decoded_file(&f.text) {
                    self.run_script(o.text, o.flags, vars, depth);
                } else if let Some(o) = f.feed.as_deref() {
                    self.run_script(o.text.clone(), o.flags, vars, depth);
                } else if is_stdin_path(&f.text) {
                    if let Some(o) = &stdin {
                        self.run_script(o.text.clone(), o.flags, vars, depth);
                    }
                } else {
                    self.runs_file(f, FileKind::Shell, vars);
                }
            }
        } else if let Some((lang, code)) = &code {
            if code.from_stdin && stdin.as_ref().is_some_and(|o| o.flags & DECODED != 0) {
                self.signal(signals::DECODED_EXEC, &code.text);
            }
            let mut strings = interp::shell_strings(*lang, &code.text);
            if interp::executes(&code.text) {
                for h in &hidden {
                    self.signal(signals::DECODED_EXEC, h);
                    strings.extend(interp::shell_strings(*lang, h));
                    strings.push(h.clone());
                }
            }
            for s in strings {
                if is_bare_shell_text(&s) {
                    self.signal(signals::SPAWNED_SHELL, &s);
                }
                self.run_script(Some(s), 0, vars, depth);
            }
        } else if let (Some(lang), Some(o)) = (interp::lang(&name), &stdin) {
            // Stdin is the program (`curl URL | python3 -`, `base64 -d <<< X | perl`) and its
            // text cannot be known.
            if lang != interp::Lang::Awk
                && o.text.is_none()
                && interp::program_on_stdin(lang, &args)
            {
                self.run_script(None, o.flags, vars, depth);
                if o.flags & DECODED != 0 {
                    self.signal(signals::UNRESOLVED_DECODE_EXEC, &name);
                }
            }
        }
        super::builtins::apply(&name, &fields, stdin.as_ref(), vars);
        let out = eval::run(&fields, stdin);
        match inner_out {
            Some(o) if out.text.is_none() && (o.text.is_some() || o.flags != 0) => o,
            _ => out,
        }
    }

    /// Code that a runner program (`man -H`, `rsync -e`, `PAGER=`) will run, checked as
    /// commands; a bare shell there is a known escape.
    fn runner_code(
        &mut self,
        name: &str,
        args: &[String],
        env: &[String],
        stdin: Option<&str>,
        vars: &Vars,
        depth: u8,
    ) {
        use super::runners::{self, Kind};
        // Exported earlier in the command (`export PAGER=...; git -p log`) counts too.
        let mut env = env.to_vec();
        for n in self.runners.env_names() {
            if let expand::Lookup::Known(v) = vars.get(n) {
                if !env
                    .iter()
                    .any(|e| e.split_once('=').is_some_and(|(k, _)| k == n))
                {
                    env.push(format!("{n}={v}"));
                }
            }
        }
        for found in self.runners.find(name, args, &env, stdin) {
            if let Some(opt) = &found.inline {
                // Code read from stdin is judged as if given inline (`tclsh <<< CODE` as
                // `tclsh -e CODE`), so the rules on the program's arguments see it as well.
                let line = format!("{name} {opt} {}", super::wrappers::shell_quote(&found.code));
                self.run_script(Some(line), 0, vars, depth);
                continue;
            }
            let scripts = match found.kind {
                Kind::Shell | Kind::Argv | Kind::Calls | Kind::Sed | Kind::Tcl => {
                    vec![found.code]
                }
                Kind::Ex => runners::ex_commands(&found.code),
                Kind::Strings => runners::string_commands(&found.code),
            };
            for s in scripts {
                if found.escape && is_bare_shell_text(&s) {
                    self.signal(signals::SPAWNED_SHELL, &s);
                }
                self.run_script(Some(s), 0, vars, depth);
            }
        }
    }

    /// Notes that the command runs the file `f` names, when its name is known.
    fn runs_file(&mut self, f: &Field, kind: FileKind, vars: &Vars) {
        if f.known() && !f.text.is_empty() && !f.text.starts_with('-') {
            self.runs_path(&f.text, kind, vars);
        }
    }

    fn runs_path(&mut self, path: &str, kind: FileKind, vars: &Vars) {
        if path.contains(['$', '`', '*', '?']) || self.out.runs_files.len() >= MAX_RUN_FILES {
            return;
        }
        let path = vars
            .place(path)
            .unwrap_or_else(|| expand::normalize_path_keep_relative(path));
        if !self
            .out
            .runs_files
            .iter()
            .any(|r| r.path == path && r.kind == kind)
        {
            self.out.runs_files.push(RunFile { path, kind });
        }
    }

    /// Known text written to a file that may run later (a hook, a start-up file, a unit, a
    /// script, a build file): its commands are judged now, as shell and as the code-spawning
    /// calls of any language, so a payload planted for later is seen when it is planted.
    fn planted(&mut self, text: &str, writes: &[String], vars: &Vars, depth: u8) {
        if text.len() > MAX_WRITTEN_FILE_BYTES {
            return;
        }
        if let Some((lang, compiled)) = writes.iter().find_map(|w| source_language(w)) {
            self.source_code(lang, text, vars, depth);
            if compiled {
                return;
            }
        }
        if !writes.iter().any(|w| runnable_file(w)) {
            return;
        }
        self.script_text(text, vars, depth + 1);
        for s in interp::shell_strings(interp::Lang::Python, text) {
            self.run_script(Some(s), 0, vars, depth);
        }
        if writes.iter().any(|w| w.ends_with(".json")) {
            // package.json / composer.json scripts: every string value may be a command line.
            for s in interp::literals(text)
                .into_iter()
                .filter(|l| l.contains(' ') || l.contains('/'))
            {
                self.run_script(Some(s), 0, vars, depth);
            }
        }
    }

    /// Source code of a program that will be built or run (a file written with it, a compiler
    /// reading stdin): judged as the argument of a `source:LANG` program, so the rules on source
    /// code (`@source_files`) see it whole; the URLs it names are its operands, and the commands
    /// its process-spawning calls name (`system("...")`, `exec.Command("...")`,
    /// `Command::new("...")`) are judged as commands.
    fn source_code(&mut self, lang: &str, text: &str, vars: &Vars, depth: u8) {
        let operands = interp::literals(text)
            .into_iter()
            .filter(|l| l.contains("://"))
            .take(MAX_SOURCE_URLS)
            .collect();
        let inv = Invocation {
            name: format!("source:{lang}"),
            args: vec![text.to_string()],
            operands,
            writes: Vec::new(),
            env: Vec::new(),
            depth,
        };
        if self.push(inv) {
            for s in interp::shell_strings(interp::Lang::Python, text) {
                self.run_script(Some(s), 0, vars, depth);
            }
        }
    }

    /// Adds to `paths` the forms the kernel would resolve them to.
    fn place_paths(&self, paths: &mut Vec<String>, vars: &Vars) {
        let mut extra = Vec::new();
        for p in paths.iter() {
            if p.starts_with('-') || p.contains("://") || p.contains('=') {
                continue;
            }
            let placed = match vars.place(p) {
                Some(placed) => Some(placed),
                None if p.starts_with('/') && (p.contains("/.") || p.contains("//")) => {
                    Some(expand::normalize_path(p))
                }
                None => None,
            };
            let full = placed.as_deref().unwrap_or(p);
            if full.contains(['*', '?', '[']) && full.starts_with('/') && pointed_glob(full) {
                let hits: Vec<&String> = self
                    .resources
                    .iter()
                    .filter(|r| expand::glob_match(full, r))
                    .take(MAX_GLOB_MATCHES + 1)
                    .collect();
                // A glob that names a few sensitive paths stands for them; one that sweeps
                // many (`/proc/*`) is a listing, judged as written.
                if hits.len() <= MAX_GLOB_MATCHES {
                    extra.extend(hits.into_iter().cloned());
                }
            }
            if let Some(placed) = placed.filter(|q| q != p) {
                extra.push(placed);
            }
        }
        for e in extra {
            if !paths.contains(&e) {
                paths.push(e);
            }
        }
    }

    fn decoded_file(&self, path: &str) -> Option<Output> {
        self.decoded_files
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, o)| o.clone())
    }

    /// The program name of a command's first field, reporting the tricks used to spell it.
    fn resolve_name(&mut self, f: &Field) -> String {
        if !f.known() {
            // Pieces that cannot be known spliced into a watched name (`i$(u)n$(u)s$(u)mod`,
            // `n${x}senter`) are most often empty: the name without them is what runs.
            let bare = unresolved_re().replace_all(&f.text, "");
            let bare = basename(&bare);
            if bare != f.text && (self.watched.contains(bare) || SHELLS.contains(&bare)) {
                self.signal(signals::OBFUSCATED_NAME, &f.text);
                self.signal(signals::DYNAMIC_COMMAND, &f.text);
                return bare.to_string();
            }
            if f.flags & DECODED != 0 {
                self.signal(signals::UNRESOLVED_DECODE_EXEC, &f.text);
            } else if f.flags & FETCHED != 0 {
                self.signal(signals::DOWNLOAD_EXEC, &f.text);
                if f.flags & NETWORK != 0 {
                    self.signal(signals::NETWORK_EXEC, &f.text);
                }
            }
            self.signal(signals::DYNAMIC_COMMAND, &f.text);
            return f.text.clone();
        }
        let mut name = basename(&f.text).to_string();
        if f.flags & GLOB != 0 && name.contains(['*', '?', '[']) && pins_a_letter(&name) {
            // Only a glob that singles out one watched name resolves (`ns*er`); `*` or `a*` are
            // patterns, not a disguised program.
            let mut candidates = self.watched.iter().filter(|w| expand::glob_match(&name, w));
            if let (Some(c), None) = (candidates.next(), candidates.next()) {
                name = c.clone();
            }
        }
        if f.flags & DECODED != 0 {
            self.signal(signals::DECODED_EXEC, &f.text);
        }
        const TRICKS: u16 =
            SPLICED | ANSI_C | VAR | CMDSUB | DECODED | IFS | GLOB | BRACE | PARAM_OP;
        // A program kept whole in a variable (`PY=python3; $PY -m pytest`, `$DOCKER ps`) is
        // ordinary script style, not a disguise; its own rules still judge it.
        let plain_variable = f.flags & TRICKS == VAR && f.flags & MIXED == 0;
        if f.flags & TRICKS != 0
            && !plain_variable
            && (self.watched.contains(&name) || SHELLS.contains(&name.as_str()))
        {
            self.signal(signals::OBFUSCATED_NAME, &f.text);
        }
        name
    }

    /// Run a shell string found in the command. `flags` tell how the text was obtained.
    fn run_script(&mut self, text: Option<String>, flags: u16, vars: &Vars, depth: u8) {
        match &text {
            Some(t) => {
                if flags & DECODED != 0 {
                    self.signal(signals::DECODED_EXEC, t);
                }
                self.script_text(t, vars, depth + 1);
            }
            None => {
                if flags & DECODED != 0 {
                    self.signal(signals::UNRESOLVED_DECODE_EXEC, "");
                } else if flags & FETCHED != 0 {
                    self.signal(signals::DOWNLOAD_EXEC, "");
                    if flags & NETWORK != 0 {
                        self.signal(signals::NETWORK_EXEC, "");
                    }
                }
            }
        }
    }
}

struct Io {
    writes: Vec<String>,
    reads: Vec<String>,
    stdin: Option<Output>,
}

fn redirections(redirects: &[Redirect], ctx: &Ctx<'_>) -> Io {
    let mut io = Io {
        writes: Vec::new(),
        reads: Vec::new(),
        stdin: None,
    };
    for r in redirects {
        match r.op {
            RedirOp::HereString => {
                let f = expand::text(&r.target, ctx);
                let flags = f.flags & !UNKNOWN;
                io.stdin = Some(if f.known() {
                    Output::known(f.text + "\n", flags)
                } else {
                    Output::unknown(flags)
                });
            }
            RedirOp::Heredoc => {
                let body = r.heredoc.and_then(|i| ctx.heredocs.get(i));
                io.stdin = Some(match body {
                    Some(h) => {
                        let plain = Vars::default();
                        let f = if h.expand {
                            expand::text(&h.body, ctx)
                        } else {
                            expand::text(
                                &h.body,
                                &Ctx {
                                    vars: &plain,
                                    heredocs: &[],
                                    depth: 0,
                                },
                            )
                        };
                        let flags = f.flags & !UNKNOWN;
                        if f.known() {
                            Output::known(f.text, flags)
                        } else {
                            Output::unknown(flags)
                        }
                    }
                    None => Output::unknown(0),
                });
            }
            op => {
                let t = expand::text(&r.target, ctx).text;
                let is_fd = t == "-" || (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
                if matches!(op, RedirOp::DupIn | RedirOp::DupOut) && is_fd {
                    continue;
                }
                if op.writes() {
                    io.writes.push(t);
                } else {
                    if op == RedirOp::In {
                        io.stdin = Some(Output::unknown(FETCHED));
                    }
                    io.reads.push(t);
                }
            }
        }
    }
    io
}

enum ShellInput {
    /// `-c STRING`: the field index of the string.
    Arg(usize),
    Stdin,
    /// A process substitution operand (`bash <(...)`).
    Feed(usize),
    /// A script file: the field index of its path.
    File(usize),
}

fn shell_input(args: &[Field]) -> ShellInput {
    let mut c_flag = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].text.as_str();
        if a == "-" {
            return ShellInput::Stdin;
        }
        if a == "--" {
            i += 1;
            break;
        }
        if matches!(a, "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") {
            i += 2;
            continue;
        }
        if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 {
            if !a.starts_with("--") && a[1..].contains('c') {
                c_flag = true;
            }
            i += 1;
            continue;
        }
        break;
    }
    match args.get(i) {
        Some(_) if c_flag => ShellInput::Arg(i),
        Some(f) if f.feed.is_some() => ShellInput::Feed(i),
        Some(f) if is_stdin_path(&f.text) => ShellInput::Stdin,
        Some(_) => ShellInput::File(i),
        None => ShellInput::Stdin,
    }
}

fn is_stdin_path(p: &str) -> bool {
    matches!(p, "/dev/stdin" | "/proc/self/fd/0" | "/dev/fd/0" | "-")
}

/// A shell started with no command string and no script: interactive.
fn is_bare_shell(name: &str, args: &[String]) -> bool {
    SHELLS.contains(&name)
        && args
            .iter()
            .all(|a| a.starts_with('-') && !a[1..].contains('c') || a == "-" || a.is_empty())
}

fn is_bare_shell_text(text: &str) -> bool {
    let text = text.split(" #").next().unwrap_or(text);
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((first, rest)) = words.split_first() else {
        return false;
    };
    let first = first.trim_start_matches([';', '&', '|']);
    let rest: Vec<String> = rest
        .iter()
        .filter(|w| !w.contains(['<', '>']))
        .map(|w| w.to_string())
        .collect();
    is_bare_shell(basename(first), &rest)
}

/// Programs whose arguments are names, patterns or messages rather than files: their arguments
/// are not operands (`man nsenter`, `echo ... > file` still writes `file`).
const INERT: &[&str] = &[
    "man",
    "info",
    "apropos",
    "whatis",
    "tldr",
    "help",
    "which",
    "whereis",
    "type",
    "hash",
    "alias",
    "unalias",
    "history",
    "echo",
    "printf",
    "git",
    "hg",
    "svn",
    "pydoc",
    "pydoc3",
    "perldoc",
    "ri",
    "pgrep",
    "pkill",
    "killall",
    "pidof",
    "locate",
    "plocate",
    "mlocate",
    "logger",
    "notify-send",
    "wall",
    "cowsay",
    "ssh-add",
    "ssh-keygen",
    "ssh-keyscan",
    "figlet",
    "jq",
    "yq",
    "expr",
    "test",
    "[",
    "[[",
    "let",
    "read",
    "set",
    "shopt",
];

/// SSH clients: see [`operands`].
const SSH_LIKE: &[&str] = &[
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "ssh-copy-id",
    "sshfs",
    "autossh",
    "mosh",
];

/// Programs whose first operand is a pattern or script, not a file.
const PATTERN_FIRST: &[&str] = &[
    "grep", "egrep", "fgrep", "zgrep", "zegrep", "zfgrep", "rg", "ag", "ack", "ack-grep", "sed",
    "awk", "gawk", "mawk", "nawk",
];

fn operands(name: &str, args: &[String]) -> Vec<String> {
    if INERT.contains(&name) || name.is_empty() || name == "eval" {
        return Vec::new();
    }
    if SHELLS.contains(&name) {
        // A `-c` string is parsed and checked as commands of its own.
        let mut out = Vec::new();
        let mut c_flag = false;
        for a in args {
            if a.starts_with('-') && !a.starts_with("--") && a[1..].contains('c') {
                c_flag = true;
                continue;
            }
            if c_flag && !a.starts_with('-') {
                c_flag = false;
                continue;
            }
            out.push(a.clone());
        }
        return out;
    }
    if SSH_LIKE.contains(&name) {
        // `-i key` and `-F config` are the client's own credentials, not data it sends.
        let mut out = Vec::new();
        let mut skip = false;
        for a in args {
            if skip {
                skip = false;
                continue;
            }
            if a == "-i" || a == "-F" {
                skip = true;
                continue;
            }
            if a.starts_with("-i")
                || a.starts_with("-F")
                || a.to_ascii_lowercase().contains("identityfile")
            {
                continue;
            }
            out.push(a.clone());
        }
        return out;
    }
    if name == "socat" {
        // socat(1) addresses: `FILE:/etc/shadow`, `OPEN:...,rdonly`, `UNIX-CONNECT:/run/x.sock`
        // name the files and sockets it reads and writes.
        let mut out = args.to_vec();
        out.extend(args.iter().filter_map(|a| socat_path(a)));
        return out;
    }
    if !PATTERN_FIRST.contains(&name) {
        return args.to_vec();
    }
    // Options whose value is the pattern/script (then no operand is the pattern) or a file.
    let pattern_opts: &[&str] = match name {
        "sed" => &["-e", "--expression", "-f", "--file"],
        "awk" | "gawk" | "mawk" | "nawk" => &["-f", "--file"],
        _ => &["-e", "--regexp", "-f", "--file"],
    };
    let value_opts: &[&str] = &[
        "-A",
        "-B",
        "-C",
        "-m",
        "-d",
        "-D",
        "--include",
        "--exclude",
        "-F",
        "-v",
        "-g",
        "-t",
        "--type",
        "--glob",
        "-l",
    ];
    let explicit = args.iter().any(|a| {
        pattern_opts.contains(&a.as_str())
            || pattern_opts.iter().any(|o| a.starts_with(&format!("{o}=")))
    });
    let mut out = Vec::new();
    let mut skipped_pattern = explicit;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if pattern_opts.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if a.starts_with('-') && a.len() > 1 {
            if value_opts.contains(&a.as_str()) && !matches!(name, "sed") {
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if !skipped_pattern {
            skipped_pattern = true;
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    out
}

/// The file or socket a socat address names, if it is a file-system address.
fn socat_path(address: &str) -> Option<String> {
    let (kind, rest) = address.split_once(':')?;
    let file_kinds = [
        "FILE",
        "OPEN",
        "GOPEN",
        "CREATE",
        "CREAT",
        "PIPE",
        "UNIX",
        "UNIX-CONNECT",
        "UNIX-CLIENT",
        "UNIX-SENDTO",
        "UNIX-RECV",
        "UNIX-RECVFROM",
        "UNIX-LISTEN",
        "UNIX-L",
        "LOCAL",
    ];
    if !file_kinds.iter().any(|k| kind.eq_ignore_ascii_case(k)) {
        return None;
    }
    let path = rest.split(',').next().unwrap_or("");
    (!path.is_empty()).then(|| path.to_string())
}

/// Files a program writes by its arguments.
fn command_writes(name: &str, args: &[String]) -> Vec<String> {
    let non_opt = || {
        args.iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect::<Vec<_>>()
    };
    match name {
        "tee" | "truncate" | "touch" | "shred" | "sponge" => non_opt(),
        "dd" => args
            .iter()
            .filter_map(|a| a.strip_prefix("of=").map(str::to_string))
            .collect(),
        "cp" | "mv" | "install" | "ln" | "rsync" | "scp" => {
            for (i, a) in args.iter().enumerate() {
                if a == "-t" || a == "--target-directory" {
                    return args.get(i + 1).cloned().into_iter().collect();
                }
                if let Some(d) = a.strip_prefix("--target-directory=") {
                    return vec![d.to_string()];
                }
            }
            let ops = non_opt();
            if ops.len() >= 2 {
                ops.last().cloned().into_iter().collect()
            } else {
                Vec::new()
            }
        }
        "sed" | "perl"
            if args.iter().any(|a| {
                a.starts_with("-i")
                    || a == "--in-place"
                    || (a.starts_with('-')
                        && !a.starts_with("--")
                        && a.contains('i')
                        && name == "perl")
            }) =>
        {
            let ops = non_opt();
            ops.into_iter()
                .skip(usize::from(
                    name == "sed" && !args.iter().any(|a| a == "-e"),
                ))
                .collect()
        }
        "curl" | "wget" => {
            let mut out = Vec::new();
            for (i, a) in args.iter().enumerate() {
                if matches!(a.as_str(), "-o" | "--output" | "-O" | "--output-document")
                    && (name == "wget" || a != "-O")
                {
                    if let Some(v) = args.get(i + 1) {
                        out.push(v.clone());
                    }
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Programs that take a host as a bare operand.
const NET_TOOLS: &[&str] = &[
    "curl", "wget", "nc", "ncat", "netcat", "telnet", "ping", "socat", "http", "https", "xh",
    "links", "lynx", "w3m", "aria2c", "openssl",
];

/// If `operand` names a host as a numeric IPv4 in a non-canonical form (decimal, hex, octal,
/// short forms, IPv4-mapped IPv6), return the host as written and its dotted form.
fn decoded_host(name: &str, operand: &str) -> Option<(String, String)> {
    let host = if let Some((_, rest)) = operand.split_once("://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        // An expansion after the host (`http://2852039170$CREDS_PATH`) is the path's.
        rest.split(['/', '?', '#', '$', '`']).next().unwrap_or("")
    } else if NET_TOOLS.contains(&name) && !operand.starts_with('-') {
        operand
            .split(['/', '?', '#', '$', '`'])
            .next()
            .unwrap_or("")
    } else {
        return None;
    };
    let host = host.trim_start_matches('[');
    let host = match host.split_once(']') {
        Some((h, _)) => h,
        None => host
            .rsplit_once(':')
            .filter(|(h, p)| !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h),
    };
    let ip = if let Some(mapped) = host.to_ascii_lowercase().strip_prefix("::ffff:") {
        if mapped.contains('.') {
            parse_inet_aton(mapped)?
        } else {
            let (hi, lo) = mapped.split_once(':')?;
            let v = (u32::from_str_radix(hi, 16).ok()? << 16) | u32::from_str_radix(lo, 16).ok()?;
            v.to_be_bytes()
        }
    } else {
        parse_inet_aton(host)?
    };
    let dotted = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    (dotted != host).then(|| (host.to_string(), dotted))
}

/// `inet_aton` semantics: 1 to 4 parts, each decimal, `0x` hex or `0`-prefixed octal; the last
/// part fills the remaining bytes.
fn parse_inet_aton(s: &str) -> Option<[u8; 4]> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut vals = Vec::with_capacity(4);
    for p in &parts {
        let v = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            u64::from_str_radix(h, 16).ok()?
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u64>().ok()?
        };
        vals.push(v);
    }
    // A lone small number (`100`, a count or a port) is not an address anyone writes on purpose.
    if vals.len() == 1 && vals[0] < (1 << 24) {
        return None;
    }
    let (last, head) = vals.split_last()?;
    let mut out = [0u8; 4];
    for (i, v) in head.iter().enumerate() {
        out[i] = u8::try_from(*v).ok()?;
    }
    let rem = 4 - head.len();
    if *last >= 1u64 << (8 * rem) {
        return None;
    }
    let bytes = last.to_be_bytes();
    out[head.len()..].copy_from_slice(&bytes[8 - rem..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> HashSet<String> {
        ["nsenter", "docker", "mount", "curl"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn names(cmd: &str) -> Vec<String> {
        analyze(cmd, &watched())
            .invocations
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    fn sigs(cmd: &str) -> Vec<&'static str> {
        analyze(cmd, &watched())
            .signals
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn sees_through_wrappers_and_shells() {
        assert!(names("sudo -u root env A=1 timeout 5 nsenter -t 1 -m sh")
            .contains(&"nsenter".to_string()));
        assert!(names("bash -c 'nsenter -t 1'").contains(&"nsenter".to_string()));
        assert!(names("echo 'nsenter -t 1' | sh").contains(&"nsenter".to_string()));
        assert!(names("eval \"nsenter -t 1\"").contains(&"nsenter".to_string()));
        assert!(names("find / -name x -exec nsenter -t 1 \\;").contains(&"nsenter".to_string()));
        assert!(names("python3 -c 'import os; os.system(\"nsenter -t 1\")'")
            .contains(&"nsenter".to_string()));
        assert!(names("bash <<EOF\nnsenter -t 1\nEOF").contains(&"nsenter".to_string()));
        assert!(names("echo x | xargs nsenter -t").contains(&"nsenter".to_string()));
        assert!(names("echo 'nsenter -t 1' > /tmp/a.sh && bash /tmp/a.sh")
            .contains(&"nsenter".to_string()));
    }

    #[test]
    fn a_file_an_interpreter_runs_is_the_file_after_its_subcommand() {
        let w = HashSet::new();
        let files = |cmd: &str| -> Vec<String> {
            analyze(cmd, &w)
                .runs_files
                .into_iter()
                .map(|f| f.path)
                .collect()
        };
        assert_eq!(files("python3 /workspace/s.py"), ["/workspace/s.py"]);
        assert_eq!(files("deno run /workspace/s.ts"), ["/workspace/s.ts"]);
        // (bun also reads package.json: `bun run NAME` may be one of its scripts)
        assert!(files("bun run /workspace/s.js").contains(&"/workspace/s.js".to_string()));
        assert_eq!(
            files("deno run --allow-all /workspace/s.ts"),
            ["/workspace/s.ts"]
        );
        assert!(!files("deno run x.ts").iter().any(|f| f == "run"));
    }

    #[test]
    fn resolves_obfuscated_names() {
        for cmd in [
            "n''sent'e'r -t 1",
            "/???/???/nsenter -t 1",
            "/usr/bin/ns*er -t 1",
            "a=nsen;b=ter;$a$b -t 1",
            "$'\\x6e\\x73\\x65\\x6e\\x74\\x65\\x72' -t 1",
            "echo bnNlbnRlciAtdCAx | base64 -d | sh",
            "$(echo retnesn | rev) -t 1",
            "$(printf '\\156\\163\\145\\156\\164\\145\\162') -t 1",
        ] {
            assert!(
                names(cmd).contains(&"nsenter".to_string()),
                "{cmd}: {:?}",
                names(cmd)
            );
        }
        assert!(sigs("n''sent'e'r -t 1").contains(&signals::OBFUSCATED_NAME));
        assert!(sigs("echo bnNlbnRlciAtdCAx | base64 -d | sh").contains(&signals::DECODED_EXEC));
        assert!(sigs("base64 -d payload | sh").contains(&signals::UNRESOLVED_DECODE_EXEC));
        assert!(sigs("cat${IFS}/etc/shadow").contains(&signals::IFS));
        assert!(!sigs("\\ls -la").contains(&signals::OBFUSCATED_NAME));
    }

    #[test]
    fn operands_skip_patterns_and_names() {
        let a = analyze("grep -rn release_agent docs/", &watched());
        assert_eq!(a.invocations[0].operands, ["docs/"]);
        let a = analyze("man nsenter", &watched());
        assert!(a.invocations[0].operands.is_empty());
        let a = analyze("echo '|/tmp/x' > /proc/sys/kernel/core_pattern", &watched());
        assert_eq!(a.invocations[0].writes, ["/proc/sys/kernel/core_pattern"]);
        let a = analyze("echo 1 | sudo tee -a /etc/sudoers", &watched());
        assert!(a
            .invocations
            .iter()
            .any(|i| i.name == "tee" && i.writes == ["/etc/sudoers"]));
    }

    #[test]
    fn decodes_ip_forms() {
        for host in [
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
            "http://[::ffff:a9fe:a9fe]/",
        ] {
            let a = analyze(&format!("curl {host}"), &watched());
            assert!(
                a.invocations[0]
                    .operands
                    .contains(&"169.254.169.254".to_string()),
                "{host}: {:?}",
                a.invocations[0].operands
            );
        }
        assert!(decoded_host("head", "100").is_none());
        assert!(decoded_host("curl", "http://169.254.169.254/").is_none());
    }

    #[test]
    fn spawned_shells() {
        assert!(sigs("find . -exec /bin/sh \\; -quit").contains(&signals::SPAWNED_SHELL));
        assert!(sigs("awk 'BEGIN {system(\"/bin/sh\")}'").contains(&signals::SPAWNED_SHELL));
        assert!(sigs("python3 -c 'import pty; pty.spawn(\"/bin/bash\")'")
            .contains(&signals::SPAWNED_SHELL));
        assert!(!sigs("sudo bash").contains(&signals::SPAWNED_SHELL));
    }
}
