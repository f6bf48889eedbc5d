//! Shell parsing: a command string becomes pipelines of simple commands whose words keep their
//! quoting structure, so that normalization can tell `n''senter` from `nsenter`.
//!
//! The grammar is the POSIX/bash subset that matters for seeing what runs: lists (`;` `&&` `||`
//! `&`, newlines), pipelines (`|` `|&`), subshells and groups, `$(...)`, backticks, `$((...))`,
//! process substitution, redirections, heredocs and here-strings, assignments, and the quoting forms
//! `'..'`, `".."`, `$'..'`, `\x`. Control-flow keywords are skipped so the commands inside them are
//! seen as commands. The parser never fails: unbalanced input is parsed as far as it goes and
//! flagged, and nesting deeper than [`MAX_NESTING`] is skipped over (linearly) and flagged.

/// Deepest nesting of `$(..)`, backticks, subshells and groups that is parsed; deeper text is
/// skipped. Real commands rarely nest more than three levels; the bound keeps work linear.
pub const MAX_NESTING: usize = 24;

/// Most words, redirections and commands one parse builds before it stops; beyond this the rest
/// of the input is not parsed (and the result says so).
pub const MAX_NODES: usize = 1 << 17;

/// The result of parsing one command string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub script: Script,
    /// Heredoc bodies, referenced by index from [`Redirect::heredoc`].
    pub heredocs: Vec<Heredoc>,
    /// Nesting or size limits cut the parse short.
    pub limited: bool,
    /// A quote, substitution or heredoc was not closed.
    pub unbalanced: bool,
    /// Byte offset of the first quote left open in the parsed text itself (not in text a
    /// substitution or `eval` re-parses). Bash refuses such a line, but the command meant is
    /// usually the one with that quote gone (`'n's'e'n't'e'r -t 1`), and that is judged too.
    pub open_quote: Option<usize>,
}

/// A list of pipelines, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub pipelines: Vec<Pipeline>,
}

/// Commands joined by `|`: each one's output feeds the next one's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline {
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Simple(Simple),
    /// `( ... )` or `{ ...; }` with the redirections applied to it.
    Group(Script, Vec<Redirect>),
}

/// Assignments, words and redirections of one simple command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simple {
    pub assigns: Vec<Assign>,
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign {
    pub name: String,
    /// The value; for an array `a=(x y)`, its elements joined by spaces.
    pub value: Word,
    pub append: bool,
    /// For an array assignment, its elements one by one.
    pub elements: Option<Vec<Word>>,
}

/// One shell word as a sequence of parts with their quoting kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Unquoted literal text; may hold glob characters and braces.
    Lit(String),
    /// Text that was quoted or backslash-escaped.
    Quoted(String),
    /// The decoded text of an ANSI-C `$'...'` string.
    AnsiC(String),
    /// `$name` or `${...}`; `raw` is the source text, used when the value is unknown.
    Var {
        name: String,
        op: VarOp,
        quoted: bool,
        raw: String,
    },
    /// `$(...)` or backticks.
    CmdSub {
        script: Script,
        quoted: bool,
        raw: String,
    },
    /// `$((...))`.
    Arith(String),
    /// `<(...)` (`input`: the command reads from it) or `>(...)`.
    ProcSub {
        script: Script,
        input: bool,
        raw: String,
    },
    /// A leading `~` or `~user`.
    Tilde(String),
}

/// The operator of a `${...}` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarOp {
    Plain,
    /// `${#v}`.
    Length,
    /// `${v:-w}` / `${v-w}` / `${v:=w}`: `w` when unset.
    Default(Word),
    /// `${v:+w}`.
    Alternate(Word),
    /// `${v:offset}` / `${v:offset:length}` (arithmetic text, evaluated only when numeric).
    Substring(String, Option<String>),
    /// `${v/pat/rep}`, `${v//pat/rep}`.
    Replace {
        all: bool,
        pattern: Word,
        replacement: Word,
    },
    /// `${v#p}` (`longest`: `##`).
    TrimPrefix {
        pattern: Word,
        longest: bool,
    },
    /// `${v%p}` (`longest`: `%%`).
    TrimSuffix {
        pattern: Word,
        longest: bool,
    },
    /// `${v^^}` / `${v,,}` and their single-character forms.
    Case {
        upper: bool,
        all: bool,
    },
    /// `${v[i]}`: element `i` (a number, `@` or `*`) of array `v`.
    Index(String),
    /// `${!v}`: the variable whose name is `v`'s value.
    Indirect,
    /// `${v@Q}` and other forms that are not resolved statically.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub fd: Option<u32>,
    pub op: RedirOp,
    pub target: Word,
    /// Index into [`Parsed::heredocs`] for `<<` / `<<-`.
    pub heredoc: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirOp {
    /// `<`
    In,
    /// `>` and `>|`
    Out,
    /// `>>`
    Append,
    /// `<>`
    ReadWrite,
    /// `<&`
    DupIn,
    /// `>&`
    DupOut,
    /// `&>`
    OutErr,
    /// `&>>`
    AppendErr,
    /// `<<` / `<<-`
    Heredoc,
    /// `<<<`
    HereString,
}

impl RedirOp {
    /// Whether the target is a file that is written.
    pub fn writes(self) -> bool {
        matches!(
            self,
            RedirOp::Out
                | RedirOp::Append
                | RedirOp::ReadWrite
                | RedirOp::OutErr
                | RedirOp::AppendErr
                | RedirOp::DupOut
        )
    }
}

/// A heredoc body. `expand` is false when the delimiter was quoted (no expansion in the body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heredoc {
    pub body: Word,
    pub expand: bool,
}

/// Words that open or close a compound command; skipped where a command name is expected so that
/// `if nsenter ...; then` sees `nsenter`.
const RESERVED: &[&str] = &[
    "!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time",
    "esac", "coproc",
];

thread_local! {
    static PARSED_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Bytes handed to [`parse`] on this thread so far, nested parses (`bash -c`, `eval`,
/// substitutions, decoded text) included: the checker's work in a unit that does not depend on
/// the machine's speed, so that tests can bound it.
/// Most elements of one array assignment kept one by one.
pub const MAX_ARRAY_ELEMENTS: usize = 4096;

pub fn parsed_bytes() -> u64 {
    PARSED_BYTES.with(|n| n.get())
}

/// Parse a command string. Never fails and never panics; see [`Parsed::limited`] and
/// [`Parsed::unbalanced`].
pub fn parse(src: &str) -> Parsed {
    PARSED_BYTES.with(|n| n.set(n.get() + src.len() as u64 + 1));
    let mut p = Parser {
        s: src.as_bytes(),
        src,
        pos: 0,
        depth: 0,
        nodes: 0,
        pending: Vec::new(),
        out: Parsed::default(),
    };
    let script = p.script(Term::Eof);
    let mut out = p.out;
    out.script = script;
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Term {
    Eof,
    Paren,
}

struct PendingHeredoc {
    index: usize,
    delim: String,
    strip_tabs: bool,
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    depth: usize,
    nodes: usize,
    pending: Vec<PendingHeredoc>,
    out: Parsed,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn is_meta(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>'
    )
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, off: usize) -> Option<u8> {
        self.s.get(self.pos + off).copied()
    }

    fn starts_with(&self, lit: &[u8]) -> bool {
        self.s[self.pos..].starts_with(lit)
    }

    /// Text between two byte offsets that lie on ASCII boundaries (every offset the parser stops
    /// at is next to an ASCII delimiter or at the ends), so the slice is valid UTF-8; `get` keeps
    /// it panic-free regardless.
    fn text(&self, from: usize, to: usize) -> &'a str {
        self.src.get(from..to).unwrap_or("")
    }

    /// Length in bytes of the UTF-8 character starting at `pos`.
    fn char_len(&self, pos: usize) -> usize {
        let b = self.s[pos];
        let n = if b < 0x80 {
            1
        } else if b >= 0xF0 {
            4
        } else if b >= 0xE0 {
            3
        } else {
            2
        };
        n.min(self.s.len() - pos)
    }

    fn budget_ok(&mut self) -> bool {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.out.limited = true;
            self.pos = self.s.len();
            return false;
        }
        true
    }

    fn skip_blanks(&mut self) {
        while let Some(b) = self.peek() {
            if is_blank(b) {
                self.pos += 1;
            } else if b == b'\\' && self.peek_at(1) == Some(b'\n') {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(b) = self.peek() {
            if b == b'\n' {
                break;
            }
            self.pos += 1;
        }
    }

    fn script(&mut self, term: Term) -> Script {
        let mut script = Script::default();
        loop {
            self.skip_blanks();
            let Some(b) = self.peek() else {
                if term == Term::Paren {
                    self.out.unbalanced = true;
                }
                break;
            };
            match b {
                b'#' => self.skip_comment(),
                b'\n' => {
                    self.pos += 1;
                    self.read_heredocs();
                }
                b';' | b'&' | b'|' => self.pos += 1,
                b')' => {
                    self.pos += 1;
                    if term == Term::Paren {
                        return script;
                    }
                    // A `case` pattern or a stray parenthesis: a separator here.
                }
                _ => {
                    if !self.budget_ok() {
                        break;
                    }
                    let before = self.pos;
                    let pipeline = self.pipeline();
                    if !pipeline.commands.is_empty() {
                        script.pipelines.push(pipeline);
                    }
                    if self.pos == before {
                        // Nothing consumed: skip one byte so the loop always advances.
                        self.pos += 1;
                    }
                }
            }
        }
        script
    }

    fn pipeline(&mut self) -> Pipeline {
        let mut pipeline = Pipeline::default();
        loop {
            if let Some(cmd) = self.command() {
                pipeline.commands.push(cmd);
            }
            self.skip_blanks();
            if self.peek() == Some(b'|') && self.peek_at(1) != Some(b'|') {
                self.pos += 1;
                if self.peek() == Some(b'&') {
                    self.pos += 1;
                }
                // A pipe may be followed by newlines before the next command.
                while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
                    if self.peek() == Some(b'\n') {
                        self.pos += 1;
                        self.read_heredocs();
                    } else {
                        self.pos += 1;
                    }
                }
                continue;
            }
            break;
        }
        pipeline
    }

    fn command(&mut self) -> Option<Command> {
        self.skip_blanks();
        if self.peek() == Some(b'(') {
            if self.peek_at(1) == Some(b'(') {
                // `(( arithmetic ))`: nothing runs.
                self.pos += 2;
                self.skip_balanced(b'(', b')', 2);
                return None;
            }
            self.pos += 1;
            let inner = self.nested_script();
            let redirects = self.trailing_redirects();
            return Some(Command::Group(inner, redirects));
        }
        let simple = self.simple();
        if simple.words.is_empty() && simple.assigns.is_empty() && simple.redirects.is_empty() {
            return None;
        }
        Some(Command::Simple(simple))
    }

    /// Parse a script up to the closing `)`, or skip it if nesting is too deep.
    fn nested_script(&mut self) -> Script {
        if self.depth >= MAX_NESTING {
            self.out.limited = true;
            self.skip_balanced(b'(', b')', 1);
            return Script::default();
        }
        self.depth += 1;
        let script = self.script(Term::Paren);
        self.depth -= 1;
        script
    }

    /// Skip to the byte after the `depth`-th unmatched `close`, honouring quotes. Linear and
    /// non-recursive, so it is safe on any input.
    fn skip_balanced(&mut self, open: u8, close: u8, mut depth: usize) {
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => self.pos = (self.pos + 1).min(self.s.len()),
                b'\'' => {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == b'\'' {
                            break;
                        }
                    }
                }
                _ if b == open => depth += 1,
                _ if b == close => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
        self.out.unbalanced = true;
    }

    fn trailing_redirects(&mut self) -> Vec<Redirect> {
        let mut redirects = Vec::new();
        loop {
            self.skip_blanks();
            match self.redirect() {
                Some(r) => redirects.push(r),
                None => break,
            }
        }
        redirects
    }

    fn simple(&mut self) -> Simple {
        let mut cmd = Simple::default();
        let mut function_kw = false;
        loop {
            self.skip_blanks();
            let Some(b) = self.peek() else { break };
            match b {
                b'\n' | b';' | b')' => break,
                b'&' if self.peek_at(1) != Some(b'>') => break,
                b'|' => break,
                b'#' if cmd.words.is_empty() && cmd.assigns.is_empty() => {
                    self.skip_comment();
                    break;
                }
                b'(' => {
                    let empty_parens =
                        self.s[self.pos + 1..].iter().find(|b| !is_blank(**b)) == Some(&b')');
                    if empty_parens {
                        // `name() { ...; }`: a function definition; its body is parsed as
                        // commands of its own.
                        self.pos += 1;
                        self.skip_blanks();
                        if self.peek() == Some(b')') {
                            self.pos += 1;
                        }
                        break;
                    }
                    if cmd.words.is_empty() {
                        self.pos += 1;
                        let inner = self.nested_script();
                        // Hoist a group that follows reserved words (`! ( ... )`): its commands
                        // still matter. It becomes a command substitution-like word-less group.
                        cmd.words.push(Word {
                            parts: vec![Part::CmdSub {
                                script: inner,
                                quoted: false,
                                raw: String::new(),
                            }],
                        });
                        continue;
                    }
                    // `a=(x y)` arrays are handled in `assignment`; anything else is stray.
                    self.pos += 1;
                }
                _ => {
                    if !self.budget_ok() {
                        break;
                    }
                    if let Some(r) = self.redirect() {
                        cmd.redirects.push(r);
                        continue;
                    }
                    if cmd.words.is_empty() {
                        if let Some(a) = self.assignment() {
                            cmd.assigns.push(a);
                            continue;
                        }
                    }
                    let start = self.pos;
                    let word = self.word();
                    if self.pos == start {
                        // A metacharacter the word reader does not take (e.g. a lone `<` that
                        // `redirect` rejected): step over it.
                        self.pos += 1;
                        continue;
                    }
                    if cmd.words.is_empty() {
                        if let Some(lit) = plain_literal(&word) {
                            if function_kw {
                                // `function name`: the name is not a command.
                                self.skip_blanks();
                                if self.starts_with(b"()") {
                                    self.pos += 2;
                                }
                                break;
                            }
                            if lit == "function" {
                                function_kw = true;
                                continue;
                            }
                            if RESERVED.contains(&lit) {
                                continue;
                            }
                            if lit == "((" {
                                continue;
                            }
                        }
                    }
                    cmd.words.push(word);
                }
            }
        }
        cmd
    }

    /// `NAME=value` / `NAME+=value` at command position.
    fn assignment(&mut self) -> Option<Assign> {
        let start = self.pos;
        if !self.peek().is_some_and(is_name_start) {
            return None;
        }
        let mut end = start;
        while end < self.s.len() && is_name_char(self.s[end]) {
            end += 1;
        }
        let (append, eq) = if self.s.get(end) == Some(&b'+') && self.s.get(end + 1) == Some(&b'=') {
            (true, end + 1)
        } else if self.s.get(end) == Some(&b'=') {
            (false, end)
        } else {
            return None;
        };
        let name = self.text(start, end).to_string();
        self.pos = eq + 1;
        let mut elements = None;
        let value = if self.peek() == Some(b'(') {
            // Array assignment: the elements one by one, and joined by spaces as one value.
            self.pos += 1;
            let mut parts = Vec::new();
            let mut each = Vec::new();
            loop {
                self.skip_blanks();
                match self.peek() {
                    None => {
                        self.out.unbalanced = true;
                        break;
                    }
                    Some(b')') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {
                        let before = self.pos;
                        let w = self.word();
                        if self.pos == before {
                            self.pos += 1;
                            continue;
                        }
                        if !parts.is_empty() {
                            parts.push(Part::Quoted(" ".to_string()));
                        }
                        parts.extend(w.parts.iter().cloned());
                        if each.len() < MAX_ARRAY_ELEMENTS {
                            each.push(w);
                        }
                    }
                }
            }
            elements = Some(each);
            Word { parts }
        } else {
            self.word()
        };
        Some(Assign {
            name,
            value,
            append,
            elements,
        })
    }

    /// A redirection at the cursor, if there is one.
    fn redirect(&mut self) -> Option<Redirect> {
        let start = self.pos;
        let mut fd = None;
        let mut i = self.pos;
        while i < self.s.len() && self.s[i].is_ascii_digit() {
            i += 1;
        }
        if i > self.pos && matches!(self.s.get(i), Some(b'<' | b'>')) {
            fd = self.text(self.pos, i).parse::<u32>().ok();
            self.pos = i;
        } else if self.peek() == Some(b'{') {
            // `{varname}>file` allocates a descriptor.
            let mut j = self.pos + 1;
            while j < self.s.len() && is_name_char(self.s[j]) {
                j += 1;
            }
            if j > self.pos + 1
                && self.s.get(j) == Some(&b'}')
                && matches!(self.s.get(j + 1), Some(b'<' | b'>'))
            {
                self.pos = j + 1;
            }
        }
        let rest = &self.s[self.pos..];
        let (op, len) = if rest.starts_with(b"<<<") {
            (RedirOp::HereString, 3)
        } else if rest.starts_with(b"<<-") {
            (RedirOp::Heredoc, 3)
        } else if rest.starts_with(b"<<") {
            (RedirOp::Heredoc, 2)
        } else if rest.starts_with(b"<&") {
            (RedirOp::DupIn, 2)
        } else if rest.starts_with(b"<>") {
            (RedirOp::ReadWrite, 2)
        } else if rest.starts_with(b"<(") {
            self.pos = start;
            return None;
        } else if rest.starts_with(b"<") {
            (RedirOp::In, 1)
        } else if rest.starts_with(b"&>>") {
            (RedirOp::AppendErr, 3)
        } else if rest.starts_with(b"&>") {
            (RedirOp::OutErr, 2)
        } else if rest.starts_with(b">>") {
            (RedirOp::Append, 2)
        } else if rest.starts_with(b">&") {
            (RedirOp::DupOut, 2)
        } else if rest.starts_with(b">|") {
            (RedirOp::Out, 2)
        } else if rest.starts_with(b">(") {
            self.pos = start;
            return None;
        } else if rest.starts_with(b">") {
            (RedirOp::Out, 1)
        } else {
            self.pos = start;
            return None;
        };
        let strip_tabs = rest.starts_with(b"<<-");
        self.pos += len;
        self.skip_blanks();
        let target = self.word();
        let mut heredoc = None;
        if op == RedirOp::Heredoc {
            let (delim, quoted) = heredoc_delimiter(&target);
            let index = self.out.heredocs.len();
            self.out.heredocs.push(Heredoc {
                body: Word::default(),
                expand: !quoted,
            });
            self.pending.push(PendingHeredoc {
                index,
                delim,
                strip_tabs,
            });
            heredoc = Some(index);
        }
        Some(Redirect {
            fd,
            op,
            target,
            heredoc,
        })
    }

    /// After a newline: read the bodies of the heredocs opened on the line just ended.
    fn read_heredocs(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for h in pending {
            let body_start = self.pos;
            let mut body_end = self.s.len();
            let mut found = false;
            while self.pos < self.s.len() {
                let line_start = self.pos;
                let line_end = self.s[self.pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.s.len(), |n| self.pos + n);
                let mut line = self.text(line_start, line_end);
                if h.strip_tabs {
                    line = line.trim_start_matches('\t');
                }
                self.pos = (line_end + 1).min(self.s.len());
                if line == h.delim {
                    body_end = line_start;
                    found = true;
                    break;
                }
            }
            if !found {
                self.out.unbalanced = true;
                body_end = self.s.len();
                self.pos = self.s.len();
            }
            let text = self.text(body_start, body_end);
            let expand = self.out.heredocs[h.index].expand;
            let body = if expand {
                self.expanding_text(text)
            } else {
                Word {
                    parts: vec![Part::Quoted(text.to_string())],
                }
            };
            self.out.heredocs[h.index].body = body;
        }
    }

    /// Parse `text` as the inside of a double-quoted string (heredoc bodies, backtick bodies
    /// use `script` instead) with this parser's limits.
    fn expanding_text(&mut self, text: &str) -> Word {
        let mut sub = Parser {
            s: text.as_bytes(),
            src: text,
            pos: 0,
            depth: self.depth + 1,
            nodes: self.nodes,
            pending: Vec::new(),
            out: Parsed::default(),
        };
        let mut parts = Vec::new();
        if sub.depth > MAX_NESTING {
            self.out.limited = true;
            return Word {
                parts: vec![Part::Quoted(text.to_string())],
            };
        }
        sub.dquote_body(&mut parts, None);
        self.nodes = sub.nodes;
        self.absorb(sub.out);
        Word { parts }
    }

    /// Merge a sub-parser's heredocs and flags into this parse. Heredoc indices of the
    /// sub-parse are rebased.
    fn absorb(&mut self, sub: Parsed) -> usize {
        let base = self.out.heredocs.len();
        self.out.heredocs.extend(sub.heredocs);
        self.out.limited |= sub.limited;
        self.out.unbalanced |= sub.unbalanced;
        base
    }

    /// One word: a run of quoted and unquoted parts up to an unquoted metacharacter.
    fn word(&mut self) -> Word {
        let mut parts: Vec<Part> = Vec::new();
        let mut lit = String::new();
        // Process substitution only starts a word.
        if let Some(b @ (b'<' | b'>')) = self.peek() {
            if self.peek_at(1) == Some(b'(') {
                let start = self.pos;
                self.pos += 2;
                let script = self.nested_script();
                let raw = self.text(start, self.pos).to_string();
                parts.push(Part::ProcSub {
                    script,
                    input: b == b'<',
                    raw,
                });
            }
        }
        if self.peek() == Some(b'~') && parts.is_empty() {
            self.pos += 1;
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|b| is_name_char(b) || b == b'-' || b == b'.')
            {
                self.pos += 1;
            }
            parts.push(Part::Tilde(self.text(start, self.pos).to_string()));
        }
        while let Some(b) = self.peek() {
            if is_meta(b) {
                break;
            }
            match b {
                b'\\' => {
                    flush(&mut lit, &mut parts);
                    self.pos += 1;
                    match self.peek() {
                        None => lit.push('\\'),
                        Some(b'\n') => self.pos += 1,
                        Some(_) => {
                            let n = self.char_len(self.pos);
                            let c = self.text(self.pos, self.pos + n).to_string();
                            self.pos += n;
                            push_quoted(&mut parts, &c);
                        }
                    }
                }
                b'\'' => {
                    flush(&mut lit, &mut parts);
                    self.pos += 1;
                    let start = self.pos;
                    match self.s[self.pos..].iter().position(|&c| c == b'\'') {
                        Some(n) => {
                            let t = self.text(start, start + n).to_string();
                            self.pos = start + n + 1;
                            parts.push(Part::Quoted(t));
                        }
                        None => {
                            self.out.unbalanced = true;
                            self.out.open_quote.get_or_insert(start - 1);
                            let t = self.text(start, self.s.len()).to_string();
                            self.pos = self.s.len();
                            parts.push(Part::Quoted(t));
                        }
                    }
                }
                b'"' => {
                    flush(&mut lit, &mut parts);
                    let open = self.pos;
                    self.pos += 1;
                    if !self.dquote_body(&mut parts, Some(b'"')) {
                        self.out.open_quote.get_or_insert(open);
                    }
                }
                b'$' => {
                    if self.peek_at(1) == Some(b'\'') {
                        flush(&mut lit, &mut parts);
                        self.pos += 2;
                        let decoded = self.ansi_c();
                        parts.push(Part::AnsiC(decoded));
                    } else if self.peek_at(1) == Some(b'"') {
                        flush(&mut lit, &mut parts);
                        self.pos += 2;
                        self.dquote_body(&mut parts, Some(b'"'));
                    } else if let Some(p) = self.dollar(false) {
                        flush(&mut lit, &mut parts);
                        parts.push(p);
                    } else {
                        lit.push('$');
                        self.pos += 1;
                    }
                }
                b'`' => {
                    flush(&mut lit, &mut parts);
                    parts.push(self.backtick(false));
                }
                _ => {
                    let n = self.char_len(self.pos);
                    lit.push_str(self.text(self.pos, self.pos + n));
                    self.pos += n;
                }
            }
        }
        flush(&mut lit, &mut parts);
        Word { parts }
    }

    /// The inside of a double-quoted string, up to `close` (or the end of input when `None`).
    /// Whether `close` was reached (always true without one).
    fn dquote_body(&mut self, parts: &mut Vec<Part>, close: Option<u8>) -> bool {
        let mut text = String::new();
        let mut closed = true;
        loop {
            let Some(b) = self.peek() else {
                if close.is_some() {
                    self.out.unbalanced = true;
                    closed = false;
                }
                break;
            };
            if Some(b) == close {
                self.pos += 1;
                break;
            }
            match b {
                b'\\' => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'$' | b'`' | b'"' | b'\\')) => {
                            text.push(c as char);
                            self.pos += 1;
                        }
                        Some(b'\n') => self.pos += 1,
                        _ => text.push('\\'),
                    }
                }
                b'$' => {
                    if let Some(p) = self.dollar(true) {
                        if !text.is_empty() {
                            parts.push(Part::Quoted(std::mem::take(&mut text)));
                        }
                        parts.push(p);
                    } else {
                        text.push('$');
                        self.pos += 1;
                    }
                }
                b'`' => {
                    if !text.is_empty() {
                        parts.push(Part::Quoted(std::mem::take(&mut text)));
                    }
                    parts.push(self.backtick(true));
                }
                _ => {
                    let n = self.char_len(self.pos);
                    text.push_str(self.text(self.pos, self.pos + n));
                    self.pos += n;
                }
            }
        }
        // An empty `""` still makes a (quoted, empty) part so `""` is a word.
        parts.push(Part::Quoted(text));
        closed
    }

    /// `$'...'` body after the opening quote; returns the decoded text.
    fn ansi_c(&mut self) -> String {
        let start = self.pos;
        let mut i = self.pos;
        while i < self.s.len() && self.s[i] != b'\'' {
            if self.s[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        let end = i.min(self.s.len());
        let raw = self.text(start, end);
        if i >= self.s.len() {
            self.out.unbalanced = true;
            self.pos = self.s.len();
        } else {
            self.pos = end + 1;
        }
        decode_ansi_c(raw)
    }

    /// A `$` expansion at the cursor; `None` when the `$` is literal.
    fn dollar(&mut self, quoted: bool) -> Option<Part> {
        let start = self.pos;
        match self.peek_at(1)? {
            b'(' => {
                if self.peek_at(2) == Some(b'(') {
                    self.pos += 3;
                    let inner = self.pos;
                    self.skip_balanced(b'(', b')', 2);
                    let end = self.pos.saturating_sub(2).max(inner);
                    return Some(Part::Arith(self.text(inner, end).to_string()));
                }
                self.pos += 2;
                let script = self.nested_script();
                let raw = self.text(start, self.pos).to_string();
                Some(Part::CmdSub {
                    script,
                    quoted,
                    raw,
                })
            }
            b'{' => {
                self.pos += 2;
                let inner = self.pos;
                self.skip_balanced(b'{', b'}', 1);
                let end = if self.s.get(self.pos.wrapping_sub(1)) == Some(&b'}') {
                    self.pos - 1
                } else {
                    self.pos
                };
                let body = self.text(inner, end.max(inner));
                let raw = self.text(start, self.pos).to_string();
                Some(self.brace_param(body, quoted, raw))
            }
            c if is_name_start(c) => {
                self.pos += 1;
                let s = self.pos;
                while self.peek().is_some_and(is_name_char) {
                    self.pos += 1;
                }
                let name = self.text(s, self.pos).to_string();
                let raw = self.text(start, self.pos).to_string();
                Some(Part::Var {
                    name,
                    op: VarOp::Plain,
                    quoted,
                    raw,
                })
            }
            c if c.is_ascii_digit()
                || matches!(c, b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-') =>
            {
                self.pos += 2;
                let name = (c as char).to_string();
                let raw = self.text(start, self.pos).to_string();
                Some(Part::Var {
                    name,
                    op: VarOp::Plain,
                    quoted,
                    raw,
                })
            }
            _ => None,
        }
    }

    /// The inside of `${...}`.
    fn brace_param(&mut self, body: &str, quoted: bool, raw: String) -> Part {
        let b = body.as_bytes();
        let unsupported = |name: &str| Part::Var {
            name: name.to_string(),
            op: VarOp::Unsupported,
            quoted,
            raw: raw.clone(),
        };
        if let Some(rest) = body.strip_prefix('#') {
            if !rest.is_empty() && rest.bytes().all(is_name_char) {
                return Part::Var {
                    name: rest.to_string(),
                    op: VarOp::Length,
                    quoted,
                    raw,
                };
            }
        }
        if let Some(name) = body.strip_prefix('!') {
            if !name.is_empty() && name.bytes().all(is_name_char) {
                return Part::Var {
                    name: name.to_string(),
                    op: VarOp::Indirect,
                    quoted,
                    raw,
                };
            }
            return unsupported(name);
        }
        let mut i = 0;
        while i < b.len() && is_name_char(b[i]) {
            i += 1;
        }
        if i == 0 {
            if let Some(&c) = b.first() {
                if matches!(c, b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-') {
                    i = 1;
                }
            }
        }
        let name = body[..i].to_string();
        let rest = &body[i..];
        if name.is_empty() {
            return unsupported("");
        }
        if let Some(index) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return Part::Var {
                name,
                op: VarOp::Index(index.trim().to_string()),
                quoted,
                raw,
            };
        }
        if rest.starts_with('[') {
            return unsupported(&name);
        }
        let sub_word = |p: &mut Parser, text: &str| p.expanding_text(text);
        let op = if rest.is_empty() {
            VarOp::Plain
        } else if let Some(w) = rest
            .strip_prefix(":-")
            .or_else(|| rest.strip_prefix(":="))
            .or_else(|| rest.strip_prefix('-'))
            .or_else(|| rest.strip_prefix('='))
        {
            VarOp::Default(sub_word(self, w))
        } else if let Some(w) = rest.strip_prefix(":+").or_else(|| rest.strip_prefix('+')) {
            VarOp::Alternate(sub_word(self, w))
        } else if rest.starts_with(":?") || rest.starts_with('?') {
            VarOp::Plain
        } else if let Some(w) = rest.strip_prefix(':') {
            let mut it = w.splitn(2, ':');
            let off = it.next().unwrap_or("").trim().to_string();
            let len = it.next().map(|s| s.trim().to_string());
            VarOp::Substring(off, len)
        } else if let Some(w) = rest.strip_prefix('/') {
            let (all, w) = match w.strip_prefix('/') {
                Some(w) => (true, w),
                None => (false, w),
            };
            let (pat, rep) = split_unescaped(w, '/');
            VarOp::Replace {
                all,
                pattern: sub_word(self, pat),
                replacement: sub_word(self, rep.unwrap_or("")),
            }
        } else if let Some(w) = rest.strip_prefix("##") {
            VarOp::TrimPrefix {
                pattern: sub_word(self, w),
                longest: true,
            }
        } else if let Some(w) = rest.strip_prefix('#') {
            VarOp::TrimPrefix {
                pattern: sub_word(self, w),
                longest: false,
            }
        } else if let Some(w) = rest.strip_prefix("%%") {
            VarOp::TrimSuffix {
                pattern: sub_word(self, w),
                longest: true,
            }
        } else if let Some(w) = rest.strip_prefix('%') {
            VarOp::TrimSuffix {
                pattern: sub_word(self, w),
                longest: false,
            }
        } else if rest == "^^" || rest == "^" {
            VarOp::Case {
                upper: true,
                all: rest.len() == 2,
            }
        } else if rest == ",," || rest == "," {
            VarOp::Case {
                upper: false,
                all: rest.len() == 2,
            }
        } else {
            VarOp::Unsupported
        };
        Part::Var {
            name,
            op,
            quoted,
            raw,
        }
    }

    /// A backtick substitution at the cursor.
    fn backtick(&mut self, quoted: bool) -> Part {
        let start = self.pos;
        self.pos += 1;
        let mut inner = String::new();
        let mut closed = false;
        while let Some(b) = self.peek() {
            if b == b'`' {
                self.pos += 1;
                closed = true;
                break;
            }
            if b == b'\\' && matches!(self.peek_at(1), Some(b'`' | b'\\' | b'$')) {
                inner.push(self.s[self.pos + 1] as char);
                self.pos += 2;
                continue;
            }
            let n = self.char_len(self.pos);
            inner.push_str(self.text(self.pos, self.pos + n));
            self.pos += n;
        }
        if !closed {
            self.out.unbalanced = true;
        }
        let raw = self.text(start, self.pos).to_string();
        if self.depth >= MAX_NESTING {
            self.out.limited = true;
            return Part::CmdSub {
                script: Script::default(),
                quoted,
                raw,
            };
        }
        let mut sub = Parser {
            s: inner.as_bytes(),
            src: &inner,
            pos: 0,
            depth: self.depth + 1,
            nodes: self.nodes,
            pending: Vec::new(),
            out: Parsed::default(),
        };
        let mut script = sub.script(Term::Eof);
        self.nodes = sub.nodes;
        let base = self.absorb(sub.out);
        rebase_heredocs(&mut script, base);
        Part::CmdSub {
            script,
            quoted,
            raw,
        }
    }
}

fn flush(lit: &mut String, parts: &mut Vec<Part>) {
    if !lit.is_empty() {
        parts.push(Part::Lit(std::mem::take(lit)));
    }
}

fn push_quoted(parts: &mut Vec<Part>, text: &str) {
    if let Some(Part::Quoted(q)) = parts.last_mut() {
        q.push_str(text);
    } else {
        parts.push(Part::Quoted(text.to_string()));
    }
}

/// The word as plain text when it has a single unquoted literal part.
pub fn plain_literal(word: &Word) -> Option<&str> {
    match word.parts.as_slice() {
        [Part::Lit(s)] => Some(s),
        _ => None,
    }
}

/// A heredoc delimiter's text and whether any of it was quoted.
fn heredoc_delimiter(word: &Word) -> (String, bool) {
    let mut text = String::new();
    let mut quoted = false;
    for part in &word.parts {
        match part {
            Part::Lit(s) => text.push_str(s),
            Part::Quoted(s) | Part::AnsiC(s) => {
                quoted = true;
                text.push_str(s);
            }
            Part::Var { raw, .. } | Part::CmdSub { raw, .. } | Part::ProcSub { raw, .. } => {
                text.push_str(raw)
            }
            Part::Arith(s) => text.push_str(s),
            Part::Tilde(s) => {
                text.push('~');
                text.push_str(s);
            }
        }
    }
    (text, quoted)
}

fn rebase_heredocs(script: &mut Script, base: usize) {
    if base == 0 {
        return;
    }
    for p in &mut script.pipelines {
        for c in &mut p.commands {
            match c {
                Command::Simple(s) => {
                    for r in &mut s.redirects {
                        if let Some(i) = r.heredoc.as_mut() {
                            *i += base;
                        }
                    }
                }
                Command::Group(inner, redirects) => {
                    rebase_heredocs(inner, base);
                    for r in redirects {
                        if let Some(i) = r.heredoc.as_mut() {
                            *i += base;
                        }
                    }
                }
            }
        }
    }
}

/// Split at the first `sep` not preceded by a backslash.
fn split_unescaped(s: &str, sep: char) -> (&str, Option<&str>) {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            return (&s[..i], Some(&s[i + c.len_utf8()..]));
        }
    }
    (s, None)
}

/// Decode the body of an ANSI-C `$'...'` string (bash's escape set).
pub fn decode_ansi_c(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = it.next() else {
            out.push('\\');
            break;
        };
        match e {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'e' | 'E' => out.push('\u{1b}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' | '\'' | '"' | '?' => out.push(e),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match it.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            it.next();
                        }
                        None => break,
                    }
                }
                push_byte_char(&mut out, v);
            }
            'x' => {
                let v = take_hex(&mut it, 2);
                match v {
                    Some(v) => push_byte_char(&mut out, v),
                    None => out.push_str("\\x"),
                }
            }
            'u' | 'U' => {
                let max = if e == 'u' { 4 } else { 8 };
                match take_hex(&mut it, max).and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            'c' => {
                if let Some(ch) = it.next() {
                    push_byte_char(&mut out, (ch as u32) & 0x1f);
                }
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

fn take_hex(it: &mut std::iter::Peekable<std::str::Chars<'_>>, max: usize) -> Option<u32> {
    let mut v = 0u32;
    let mut n = 0;
    while n < max {
        match it.peek().and_then(|d| d.to_digit(16)) {
            Some(d) => {
                v = v * 16 + d;
                it.next();
                n += 1;
            }
            None => break,
        }
    }
    (n > 0).then_some(v)
}

/// Bytes decoded from escapes are treated as Latin-1 code points; ASCII (what matters for
/// command names and paths) maps to itself.
fn push_byte_char(out: &mut String, v: u32) {
    if let Some(c) = char::from_u32(v & 0xff) {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Parsed) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(s: &Script, out: &mut Vec<String>) {
            for p in &s.pipelines {
                for c in &p.commands {
                    match c {
                        Command::Simple(sc) => {
                            if let Some(w) = sc.words.first() {
                                let mut t = String::new();
                                for part in &w.parts {
                                    match part {
                                        Part::Lit(s) | Part::Quoted(s) | Part::AnsiC(s) => {
                                            t.push_str(s)
                                        }
                                        Part::CmdSub { script, .. } => walk(script, out),
                                        _ => {}
                                    }
                                }
                                out.push(t);
                            }
                            for w in &sc.words {
                                for part in &w.parts {
                                    if let Part::CmdSub { script, .. }
                                    | Part::ProcSub { script, .. } = part
                                    {
                                        walk(script, out);
                                    }
                                }
                            }
                        }
                        Command::Group(inner, _) => walk(inner, out),
                    }
                }
            }
        }
        walk(&p.script, &mut out);
        out
    }

    #[test]
    fn splits_lists_and_pipelines() {
        let p = parse("a 1; b && c || d | e & f\ng");
        assert_eq!(names(&p), ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(p.script.pipelines.len(), 6);
    }

    #[test]
    fn keeps_quote_structure() {
        let p = parse("n''sent'e'r -t 1");
        let Command::Simple(s) = &p.script.pipelines[0].commands[0] else {
            panic!()
        };
        assert_eq!(s.words[0].parts.len(), 5);
        assert_eq!(names(&p), ["nsenter"]);
    }

    #[test]
    fn skips_reserved_words() {
        let p = parse("if true; then nsenter -t 1; fi; while x; do y; done");
        assert_eq!(names(&p), ["true", "nsenter", "x", "y"]);
    }

    #[test]
    fn substitutions_nest() {
        let p = parse("echo $(a `b` $(c)) <(d) >(e)");
        let n = names(&p);
        for c in ["echo", "a", "b", "c", "d", "e"] {
            assert!(n.contains(&c.to_string()), "{c} in {n:?}");
        }
    }

    #[test]
    fn heredoc_body_is_read() {
        let p = parse("bash <<EOF\nnsenter -t 1\nEOF\necho done");
        assert_eq!(p.heredocs.len(), 1);
        let Part::Quoted(body) = &p.heredocs[0].body.parts[0] else {
            panic!("{:?}", p.heredocs)
        };
        assert_eq!(body, "nsenter -t 1\n");
        assert_eq!(names(&p), ["bash", "echo"]);
    }

    #[test]
    fn ansi_c_decodes() {
        assert_eq!(decode_ansi_c(r"\x6e\163enter\u0041\n"), "nsenterA\n");
    }

    #[test]
    fn unbalanced_and_deep_input_is_bounded() {
        assert!(parse("echo 'abc").unbalanced);
        assert_eq!(parse("echo 'abc").open_quote, Some(5));
        assert_eq!(parse("a \"b'c").open_quote, Some(2));
        assert_eq!(parse("echo \"it's\" 'x'").open_quote, None);
        // A quote left open inside text a substitution re-parses is not at an offset here.
        assert_eq!(
            parse("echo $(echo 'x)").open_quote.is_some(),
            parse("echo $(echo 'x)").unbalanced
        );
        let deep = "$(".repeat(10_000);
        let p = parse(&deep);
        assert!(p.limited);
        let deep = "( ".repeat(10_000);
        assert!(parse(&deep).limited);
        let ticks = "`".repeat(1000);
        let _ = parse(&ticks);
    }

    #[test]
    fn redirects_and_assignments() {
        let p = parse("A=1 B=$(x) 2>/dev/null cmd >>out <in 3<>/dev/tcp/h/1 <<<'s'");
        let Command::Simple(s) = &p.script.pipelines[0].commands[0] else {
            panic!()
        };
        assert_eq!(s.assigns.len(), 2);
        assert_eq!(s.words.len(), 1);
        let ops: Vec<RedirOp> = s.redirects.iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            [
                RedirOp::Out,
                RedirOp::Append,
                RedirOp::In,
                RedirOp::ReadWrite,
                RedirOp::HereString
            ]
        );
        assert_eq!(s.redirects[3].fd, Some(3));
    }

    #[test]
    fn function_definitions_expose_bodies() {
        let p = parse("f() { nsenter -t 1; }; function g { unshare -r; }");
        let n = names(&p);
        assert!(n.contains(&"nsenter".to_string()), "{n:?}");
        assert!(n.contains(&"unshare".to_string()), "{n:?}");
    }
}
