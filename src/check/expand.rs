//! Word expansion with what is statically known: quote removal, ANSI-C strings, variables
//! assigned earlier in the same command, `${IFS}`, brace lists, parameter operators, and command
//! substitutions whose output can be computed (see [`super::eval`]). What cannot be resolved is
//! kept as its source text (`$HOME`, `$(curl ...)`) and flagged.

use std::collections::HashMap;

use super::eval;
use super::parse::{Heredoc, Part, VarOp, Word};

/// Quotes or escapes inside a word next to unquoted text (`n''senter`, `n\senter`).
pub const SPLICED: u16 = 1 << 0;
/// Text came from an ANSI-C `$'...'` string.
pub const ANSI_C: u16 = 1 << 1;
/// Text came from a variable assigned in the same command.
pub const VAR: u16 = 1 << 2;
/// Text came from a command substitution whose output was computed.
pub const CMDSUB: u16 = 1 << 3;
/// Text went through a decoder (base64, hex, octal or `\x` escapes, rev, tr).
pub const DECODED: u16 = 1 << 4;
/// Part of the text could not be resolved.
pub const UNKNOWN: u16 = 1 << 5;
/// `$IFS` / `${IFS}` was used.
pub const IFS: u16 = 1 << 6;
/// Unquoted glob characters.
pub const GLOB: u16 = 1 << 7;
/// Produced by a brace list `{a,b}`.
pub const BRACE: u16 = 1 << 8;
/// Text came from the network (`curl`, `wget`) or from a file, not from the command itself.
pub const FETCHED: u16 = 1 << 9;
/// A parameter operator (substring, replacement, case) rewrote a value.
pub const PARAM_OP: u16 = 1 << 10;
/// Text came from the network (`curl`, `wget`, `nc`), a subset of [`FETCHED`].
pub const NETWORK: u16 = 1 << 11;
/// The word joined an expansion with other text or another expansion (`$a$b`, `n${x}`), rather
/// than being one expansion alone (`$PY`, `"$DOCKER"`).
pub const MIXED: u16 = 1 << 12;

/// Most bytes a single expansion may produce; longer values are cut (and flagged unknown).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Longest value `${v#p}` / `${v%p}` are evaluated on: trimming tries every split point.
const MAX_TRIM_BYTES: usize = 1024;

/// Shell state known at a point of the command: variables (a name mapped to `None` was
/// assigned a value that could not be resolved), arrays, name references (`declare -n`), the
/// working directory after `cd`, and aliases.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    map: HashMap<String, Option<String>>,
    arrays: HashMap<String, Vec<String>>,
    refs: HashMap<String, String>,
    /// The directory `cd` moved to, when known (`None`: where the command started).
    pub cwd: Option<String>,
    /// A `cd` to somewhere unknown happened: relative paths cannot be placed.
    pub cwd_unknown: bool,
}

/// The default search path, used only to resolve substring tricks such as `${PATH:0:1}`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Most name-reference hops followed (`declare -n a=b; declare -n b=c ...`).
const MAX_REF_HOPS: usize = 8;
/// Most variables and arrays remembered for one command.
const MAX_VARS: usize = 4096;

impl Vars {
    pub fn set(&mut self, name: &str, value: Option<String>) {
        let name = self.resolve(name).to_string();
        if self.map.len() >= MAX_VARS && !self.map.contains_key(&name) {
            return;
        }
        self.arrays.remove(&name);
        self.map.insert(name, value);
    }

    /// `unset name`.
    pub fn unset(&mut self, name: &str) {
        let name = self.resolve(name).to_string();
        self.map.remove(&name);
        self.arrays.remove(&name);
    }

    /// `name=(elements...)`; `None`: some element is unknown. `$name` is its first element.
    pub fn set_array(&mut self, name: &str, elements: Option<Vec<String>>) {
        let name = self.resolve(name).to_string();
        if self.map.len() >= MAX_VARS && !self.map.contains_key(&name) {
            return;
        }
        match elements {
            Some(e) => {
                self.map
                    .insert(name.clone(), Some(e.first().cloned().unwrap_or_default()));
                self.arrays.insert(name, e);
            }
            None => {
                self.map.insert(name.clone(), None);
                self.arrays.remove(&name);
            }
        }
    }

    /// `declare -n name=target`: `name` stands for `target` from now on.
    pub fn set_ref(&mut self, name: &str, target: &str) {
        if self.refs.len() < MAX_VARS {
            self.refs.insert(name.to_string(), target.to_string());
        }
    }

    /// The variable `name` stands for, through name references.
    fn resolve<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..MAX_REF_HOPS {
            match self.refs.get(name) {
                Some(t) => name = t,
                None => break,
            }
        }
        name
    }

    /// The value if known. `IFS` defaults to its standard value; it is whitespace, so an unquoted
    /// `${IFS}` separates words.
    pub fn get(&self, name: &str) -> Lookup<'_> {
        let name = self.resolve(name);
        match self.map.get(name) {
            Some(Some(v)) => Lookup::Known(v),
            Some(None) => Lookup::Unknown,
            None if name == "IFS" => Lookup::Known(" \t\n"),
            None => Lookup::Unset,
        }
    }

    /// The elements of array `name`, when known (a scalar is an array of one).
    pub fn array(&self, name: &str) -> Option<Vec<String>> {
        let name = self.resolve(name);
        if let Some(a) = self.arrays.get(name) {
            return Some(a.clone());
        }
        match self.map.get(name) {
            Some(Some(v)) => Some(vec![v.clone()]),
            _ => None,
        }
    }

    /// Moves the tracked working directory to `dir` (`None`: somewhere unknown).
    pub fn cd(&mut self, dir: Option<&str>) {
        match dir {
            Some(d) if d.starts_with('/') => {
                self.cwd = Some(normalize_path(d));
                self.cwd_unknown = false;
            }
            Some(d) if !self.cwd_unknown => {
                if let Some(cwd) = &self.cwd {
                    self.cwd = Some(normalize_path(&format!("{cwd}/{d}")));
                } else {
                    self.cwd_unknown = true;
                }
            }
            _ => {
                self.cwd = None;
                self.cwd_unknown = true;
            }
        }
    }

    /// `path` placed against the tracked working directory, when it is relative and that is
    /// known.
    pub fn place(&self, path: &str) -> Option<String> {
        if path.starts_with('/') || path.is_empty() {
            return None;
        }
        self.cwd
            .as_ref()
            .map(|cwd| normalize_path(&format!("{cwd}/{path}")))
    }
}

/// A relative path with `./` and repeated slashes removed (`..` kept: the base is unknown).
pub fn normalize_path_keep_relative(path: &str) -> String {
    if path.starts_with('/') {
        return normalize_path(path);
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// `path` with `.`, `..` and repeated slashes resolved lexically (as the kernel would for a
/// path without symbolic links).
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    if path.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Known(&'a str),
    /// Assigned in this command, to something unresolved.
    Unknown,
    /// Not assigned in this command: it comes from the environment.
    Unset,
}

/// One field after expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    pub text: String,
    pub flags: u16,
    /// For a process substitution `<(...)`: what the inner command prints, if known.
    pub feed: Option<Box<eval::Output>>,
}

impl Field {
    pub fn known(&self) -> bool {
        self.flags & UNKNOWN == 0
    }
}

/// Expansion context: variables, heredoc bodies and the remaining depth for evaluating
/// substitutions.
pub struct Ctx<'a> {
    pub vars: &'a Vars,
    pub heredocs: &'a [Heredoc],
    pub depth: u8,
}

/// Expand a word into fields (unquoted expansions are split on whitespace).
pub fn fields(word: &Word, ctx: &Ctx<'_>) -> Vec<Field> {
    if let Some(list) = brace_list(word) {
        return list;
    }
    let mut b = Builder {
        // Unquoted expansions split on IFS as the shell has it (`IFS=]; $b` splits on `]`).
        ifs: match ctx.vars.get("IFS") {
            Lookup::Known(v) => Some(v.to_string()),
            _ => None,
        },
        ..Builder::default()
    };
    let spliced = is_spliced(word);
    for part in &word.parts {
        match part {
            Part::Lit(s) => {
                if s.contains(['*', '?', '[']) {
                    b.cur.flags |= GLOB;
                }
                b.push_quoted(s);
            }
            Part::Quoted(s) => b.push_quoted(s),
            Part::AnsiC(s) => {
                b.cur.flags |= ANSI_C;
                b.push_quoted(s);
            }
            Part::Tilde(user) => {
                b.push_quoted("~");
                b.push_quoted(user);
            }
            Part::Arith(raw) => {
                let t = raw.trim();
                if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
                    b.push_quoted(t);
                } else {
                    b.cur.flags |= UNKNOWN;
                    b.push_quoted("$((");
                    b.push_quoted(raw);
                    b.push_quoted("))");
                }
            }
            Part::Var {
                name,
                op: VarOp::Index(index),
                quoted,
                ..
            } if index == "@" || index == "*" => {
                let Some(elements) = ctx.vars.array(name) else {
                    b.cur.flags |= UNKNOWN;
                    b.push_quoted(&format!("${{{name}[{index}]}}"));
                    continue;
                };
                b.cur.flags |= VAR;
                if !*quoted {
                    b.push_split(&elements.join(" "));
                } else if index == "*" {
                    // "${a[*]}" joins with the first character of IFS (none when IFS is empty).
                    let sep = match ctx.vars.get("IFS") {
                        Lookup::Known(ifs) => {
                            ifs.chars().next().map(String::from).unwrap_or_default()
                        }
                        _ => " ".to_string(),
                    };
                    b.push_quoted(&elements.join(&sep));
                } else {
                    // "${a[@]}": one field per element.
                    for (i, e) in elements.iter().enumerate() {
                        if i > 0 {
                            b.break_field();
                        }
                        b.push_quoted(e);
                    }
                }
            }
            Part::Var {
                name,
                op,
                quoted,
                raw,
            } => {
                let (text, mut flags) = var_value(name, op, raw, ctx);
                if *quoted {
                    // A quoted "$IFS" is data, not a word separator.
                    flags &= !IFS;
                }
                b.cur.flags |= flags;
                if *quoted || flags & UNKNOWN != 0 {
                    b.push_quoted(&text);
                } else {
                    b.push_split(&text);
                }
            }
            Part::CmdSub {
                script,
                quoted,
                raw,
            } => {
                let out = if ctx.depth == 0 {
                    eval::Output::unknown(0)
                } else {
                    eval::script_output(script, ctx.heredocs, ctx.vars, ctx.depth - 1)
                };
                match out.text {
                    Some(t) => {
                        b.cur.flags |= CMDSUB | out.flags;
                        let t = t.trim_end_matches('\n');
                        if *quoted {
                            b.push_quoted(t);
                        } else {
                            b.push_split(t);
                        }
                    }
                    None => {
                        b.cur.flags |= UNKNOWN | out.flags;
                        b.push_quoted(raw);
                    }
                }
            }
            Part::ProcSub { script, raw, .. } => {
                let out = if ctx.depth == 0 {
                    eval::Output::unknown(0)
                } else {
                    eval::script_output(script, ctx.heredocs, ctx.vars, ctx.depth - 1)
                };
                b.cur.feed = Some(Box::new(out));
                b.push_quoted(raw);
            }
        }
    }
    let mut out = b.finish();
    if spliced {
        for f in &mut out {
            f.flags |= SPLICED;
        }
    }
    let meaningful = word
        .parts
        .iter()
        .filter(|p| !matches!(p, Part::Quoted(q) if q.is_empty()))
        .count();
    // Split on a changed IFS (`IFS=]; b=wget]host; $b`): the words were hidden in one value.
    let custom_ifs =
        out.len() > 1 && !matches!(ctx.vars.get("IFS"), Lookup::Known(" \t\n") | Lookup::Unset);
    let expansion = word
        .parts
        .iter()
        .any(|p| !matches!(p, Part::Lit(_) | Part::Quoted(_)));
    if expansion && (meaningful > 1 || custom_ifs) {
        for f in &mut out {
            f.flags |= MIXED;
        }
    }
    out
}

/// What one assignment of a simple command sets: its value as one string and, for an array
/// `a=(x y)`, its elements (`None` inside: some element is unknown).
pub struct Assigned {
    pub name: String,
    /// `name+=value`: the value (or the elements) are added to what `name` holds.
    pub append: bool,
    pub value: Field,
    pub elements: Option<Option<Vec<String>>>,
}

/// The assignments `assigns`, expanded.
pub fn assignments(assigns: &[super::parse::Assign], ctx: &Ctx<'_>) -> Vec<Assigned> {
    assigns
        .iter()
        .map(|a| Assigned {
            name: a.name.clone(),
            append: a.append,
            value: text(&a.value, ctx),
            elements: a.elements.as_ref().map(|words| {
                let fs: Vec<Field> = words.iter().flat_map(|w| fields(w, ctx)).collect();
                fs.iter()
                    .all(Field::known)
                    .then(|| fs.into_iter().map(|f| f.text).collect())
            }),
        })
        .collect()
}

/// Records the assignments in `vars`.
pub fn assign_all(assigned: Vec<Assigned>, vars: &mut Vars) {
    for a in assigned {
        match a.elements {
            Some(Some(elements)) if a.append => {
                let before = match vars.get(&a.name) {
                    Lookup::Unset => Some(Vec::new()),
                    _ => vars.array(&a.name),
                };
                let joined = before.map(|mut b| {
                    b.extend(elements);
                    b
                });
                vars.set_array(&a.name, joined);
            }
            Some(elements) => vars.set_array(&a.name, elements),
            None => {
                let value = a.value.known().then_some(a.value.text);
                let value = if a.append {
                    appended(vars.get(&a.name), value)
                } else {
                    value
                };
                vars.set(&a.name, value);
            }
        }
    }
}

/// `name+=value` for a scalar: the old value (empty when unset) followed by `value`, unknown when
/// either is, and unknown rather than longer than [`MAX_FIELD_BYTES`].
pub fn appended(before: Lookup<'_>, value: Option<String>) -> Option<String> {
    let before = match before {
        Lookup::Known(b) => b,
        Lookup::Unset => "",
        Lookup::Unknown => return None,
    };
    let value = value?;
    (before.len() + value.len() <= MAX_FIELD_BYTES).then(|| format!("{before}{value}"))
}

/// A word expanded as one string (assignment values, redirect targets, heredoc bodies).
pub fn text(word: &Word, ctx: &Ctx<'_>) -> Field {
    let mut fs = fields(word, ctx);
    if fs.len() == 1 {
        return fs.pop().unwrap_or_default();
    }
    let mut out = Field::default();
    for (i, f) in fs.into_iter().enumerate() {
        if i > 0 {
            out.text.push(' ');
        }
        out.text.push_str(&f.text);
        out.flags |= f.flags;
        if out.feed.is_none() {
            out.feed = f.feed;
        }
    }
    out
}

#[derive(Default)]
struct Builder {
    out: Vec<Field>,
    cur: Field,
    started: bool,
    /// The field separators (`None`: space, tab and newline).
    ifs: Option<String>,
}

impl Builder {
    fn push_quoted(&mut self, s: &str) {
        self.started = true;
        if self.cur.text.len() + s.len() > MAX_FIELD_BYTES {
            self.cur.flags |= UNKNOWN;
            return;
        }
        self.cur.text.push_str(s);
    }

    /// Ends the current field and starts the next one (between `"${a[@]}"` elements).
    fn break_field(&mut self) {
        let flags = self.cur.flags & !GLOB;
        let done = std::mem::take(&mut self.cur);
        self.out.push(done);
        self.cur.flags = flags;
        self.started = true;
    }

    fn push_split(&mut self, s: &str) {
        let ifs = self.ifs.clone();
        let is_sep = |c: char| match &ifs {
            Some(set) => set.contains(c),
            None => c == ' ' || c == '\t' || c == '\n',
        };
        for c in s.chars() {
            if is_sep(c) {
                if self.started {
                    let flags = self.cur.flags;
                    let done = std::mem::take(&mut self.cur);
                    self.out.push(done);
                    // Later fields carry how they were made (e.g. IFS, VAR).
                    self.cur.flags = flags & !GLOB;
                    self.started = false;
                }
            } else {
                if self.cur.text.len() >= MAX_FIELD_BYTES {
                    self.cur.flags |= UNKNOWN;
                    continue;
                }
                self.cur.text.push(c);
                self.started = true;
            }
        }
    }

    fn finish(mut self) -> Vec<Field> {
        if self.started {
            self.out.push(self.cur);
        }
        self.out
    }
}

/// Quotes or escapes mixed into unquoted text. A single leading backslash (`\ls`, the usual way
/// to skip an alias) does not count.
fn is_spliced(word: &Word) -> bool {
    if word.parts.len() < 2 {
        return false;
    }
    let quoted = word
        .parts
        .iter()
        .filter(|p| matches!(p, Part::Quoted(_) | Part::AnsiC(_)))
        .count();
    let lits = word
        .parts
        .iter()
        .filter(|p| matches!(p, Part::Lit(_)))
        .count();
    if quoted == 0 || lits == 0 {
        return false;
    }
    let leading_escape =
        matches!(word.parts.as_slice(), [Part::Quoted(q), Part::Lit(_)] if q.chars().count() == 1);
    !leading_escape
}

/// `{a,b,c}` as a whole unquoted word: bash expands it to separate words (`{cat,/etc/passwd}`).
fn brace_list(word: &Word) -> Option<Vec<Field>> {
    let [Part::Lit(s)] = word.parts.as_slice() else {
        return None;
    };
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    if !inner.contains(',') || inner.contains(['{', '}']) {
        return None;
    }
    Some(
        inner
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| Field {
                text: p.to_string(),
                flags: BRACE,
                feed: None,
            })
            .collect(),
    )
}

/// Resolve a variable expansion: its text and flags.
fn var_value(name: &str, op: &VarOp, raw: &str, ctx: &Ctx<'_>) -> (String, u16) {
    let unknown = || {
        (
            if matches!(op, VarOp::Plain) {
                format!("${name}")
            } else {
                raw.to_string()
            },
            UNKNOWN,
        )
    };
    let mut flags = if name == "IFS" { IFS } else { VAR };
    if let VarOp::Index(index) = op {
        let Some(elements) = ctx.vars.array(name) else {
            return unknown();
        };
        let Ok(i) = index.parse::<usize>() else {
            return unknown();
        };
        return (elements.get(i).cloned().unwrap_or_default(), flags);
    }
    if matches!(op, VarOp::Indirect) {
        let Lookup::Known(target) = ctx.vars.get(name) else {
            return unknown();
        };
        let target = target.to_string();
        if target.is_empty()
            || !target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return unknown();
        }
        return match ctx.vars.get(&target) {
            Lookup::Known(v) => (v.to_string(), flags | PARAM_OP),
            _ => unknown(),
        };
    }
    let value: String = match ctx.vars.get(name) {
        Lookup::Known(v) => v.to_string(),
        Lookup::Unknown => return unknown(),
        Lookup::Unset => match op {
            VarOp::Default(w) => {
                let f = text(w, ctx);
                return (f.text, f.flags | VAR);
            }
            VarOp::Substring(..)
            | VarOp::Replace { .. }
            | VarOp::TrimPrefix { .. }
            | VarOp::TrimSuffix { .. }
                if name == "PATH" =>
            {
                DEFAULT_PATH.to_string()
            }
            // Variables every shell has, for the substring tricks that pick characters out of
            // them (`${HOME:0:1}etc${HOME:0:1}shadow`): their first characters are certain.
            VarOp::Substring(..) | VarOp::TrimPrefix { .. } | VarOp::TrimSuffix { .. }
                if matches!(name, "HOME" | "PWD" | "OLDPWD" | "SHELL") =>
            {
                match name {
                    "SHELL" => "/bin/bash".to_string(),
                    _ => "/root".to_string(),
                }
            }
            // `$0` in `sh -c` text is the shell itself (`echo CMD | $0`).
            VarOp::Plain if name == "0" => return ("sh".to_string(), VAR),
            VarOp::Alternate(_) => return (String::new(), 0),
            _ => return unknown(),
        },
    };
    let out = match op {
        VarOp::Plain | VarOp::Default(_) => value,
        VarOp::Alternate(w) => {
            let f = text(w, ctx);
            flags |= f.flags;
            f.text
        }
        VarOp::Length => value.chars().count().to_string(),
        VarOp::Substring(off, len) => {
            flags |= PARAM_OP;
            let chars: Vec<char> = value.chars().collect();
            let n = chars.len() as i64;
            let Some(off) = parse_int(off) else {
                return unknown();
            };
            let start = if off < 0 {
                (n + off).max(0)
            } else {
                off.min(n)
            };
            let end = match len.as_deref().map(parse_int) {
                None => n,
                Some(None) => return unknown(),
                Some(Some(l)) if l < 0 => (n + l).max(start),
                Some(Some(l)) => (start + l).min(n),
            };
            chars[start as usize..end.max(start) as usize]
                .iter()
                .collect()
        }
        VarOp::Replace {
            all,
            pattern,
            replacement,
        } => {
            flags |= PARAM_OP;
            let p = text(pattern, ctx);
            let r = text(replacement, ctx);
            if !p.known() || !r.known() || p.text.is_empty() || p.text.contains(['*', '?', '[']) {
                return unknown();
            }
            if *all {
                value.replace(&p.text, &r.text)
            } else {
                value.replacen(&p.text, &r.text, 1)
            }
        }
        VarOp::TrimPrefix { .. } | VarOp::TrimSuffix { .. } if value.len() > MAX_TRIM_BYTES => {
            return unknown()
        }
        VarOp::TrimPrefix { pattern, longest } => {
            flags |= PARAM_OP;
            let p = text(pattern, ctx);
            if !p.known() {
                return unknown();
            }
            trim(&value, &p.text, *longest, true)
        }
        VarOp::TrimSuffix { pattern, longest } => {
            flags |= PARAM_OP;
            let p = text(pattern, ctx);
            if !p.known() {
                return unknown();
            }
            trim(&value, &p.text, *longest, false)
        }
        VarOp::Case { upper, all } => {
            flags |= PARAM_OP;
            let mut it = value.chars();
            let conv = |c: char| {
                if *upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            };
            if *all {
                value.chars().map(conv).collect()
            } else {
                match it.next() {
                    Some(c) => std::iter::once(conv(c)).chain(it).collect(),
                    None => String::new(),
                }
            }
        }
        VarOp::Unsupported | VarOp::Index(_) | VarOp::Indirect => return unknown(),
    };
    (out, flags)
}

fn parse_int(s: &str) -> Option<i64> {
    let t = s
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    t.parse::<i64>().ok()
}

/// `${v#p}` / `${v%p}` with glob patterns.
fn trim(value: &str, pattern: &str, longest: bool, prefix: bool) -> String {
    let idx: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(value.len()))
        .collect();
    let candidates: Box<dyn Iterator<Item = usize>> = if prefix == longest {
        Box::new(idx.iter().rev().copied())
    } else {
        Box::new(idx.iter().copied())
    };
    for i in candidates {
        let (part, rest) = if prefix {
            (&value[..i], &value[i..])
        } else {
            (&value[i..], &value[..i])
        };
        if glob_match(pattern, part) {
            return rest.to_string();
        }
    }
    value.to_string()
}

/// Shell glob matching (`*`, `?`, `[...]`, `[!...]`), iterative with one backtrack point, so it
/// is linear-ish and never recurses.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_match(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Match one character against the class starting at `p[start] == '['`. Returns whether it
/// matched and the index after the class, or `None` if the class is not closed.
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::parse::{parse, Command};

    fn expand(src: &str, vars: &Vars) -> Vec<Field> {
        let p = parse(src);
        let Command::Simple(s) = &p.script.pipelines[0].commands[0] else {
            panic!()
        };
        let ctx = Ctx {
            vars,
            heredocs: &p.heredocs,
            depth: 4,
        };
        s.words.iter().flat_map(|w| fields(w, &ctx)).collect()
    }

    fn texts(src: &str, vars: &Vars) -> Vec<String> {
        expand(src, vars).into_iter().map(|f| f.text).collect()
    }

    #[test]
    fn quote_removal_and_splice_flag() {
        let f = expand("n''sent'e'r x", &Vars::default());
        assert_eq!(f[0].text, "nsenter");
        assert!(f[0].flags & SPLICED != 0);
        assert_eq!(expand(r"\ls", &Vars::default())[0].flags & SPLICED, 0);
    }

    #[test]
    fn variables_and_ifs() {
        let mut v = Vars::default();
        v.set("a", Some("nsen".into()));
        v.set("b", Some("ter".into()));
        assert_eq!(texts("$a$b -t 1", &v), ["nsenter", "-t", "1"]);
        assert_eq!(texts("cat${IFS}/etc/shadow", &v), ["cat", "/etc/shadow"]);
        assert_eq!(texts("echo $HOME", &v), ["echo", "$HOME"]);
        assert_eq!(texts("${PATH:0:1}etc", &v), ["/etc"]);
    }

    #[test]
    fn substitutions_and_braces() {
        let v = Vars::default();
        assert_eq!(
            texts("$(echo bnNlbnRlcg== | base64 -d) -t1", &v),
            ["nsenter", "-t1"]
        );
        let f = expand("$(printf '\\x6e\\x73')", &v);
        assert_eq!(f[0].text, "ns");
        assert!(f[0].flags & DECODED != 0);
        assert_eq!(texts("{cat,/etc/shadow}", &v), ["cat", "/etc/shadow"]);
        assert_eq!(texts("$'\\x6e'senter", &v), ["nsenter"]);
    }

    #[test]
    fn globs() {
        assert!(glob_match("n?ent*", "nsenter"));
        assert!(glob_match("[m-o]s[e]nter", "nsenter"));
        assert!(!glob_match("ns?", "nsenter"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*.sock", "docker.sock"));
    }
}
