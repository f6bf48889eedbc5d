//! Static evaluation of the few commands that produce text from their arguments: `echo`,
//! `printf`, `base64 -d`, `base32 -d`, `xxd -r -p`, `rev`, `tr`, `cat`, `openssl base64 -d`.
//! This is how `$(echo bnNlbnRlcg== | base64 -d)` or `printf '\x6e...' | sh` is seen through.
//! Anything else yields an unknown output that still carries flags (it was decoded, fetched).

use base64::Engine;

use super::expand::{self, Ctx, Field, Vars, DECODED, FETCHED, UNKNOWN};
use super::parse::{Command, Heredoc, Pipeline, RedirOp, Script, Simple};
use super::transform;

/// Most bytes a static evaluation produces; longer output is cut and marked unknown.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// The (possibly unknown) output of a command, with how it was produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub text: Option<String>,
    pub flags: u16,
}

impl Output {
    pub fn known(text: String, flags: u16) -> Self {
        if text.len() > MAX_OUTPUT_BYTES {
            return Output {
                text: None,
                flags: flags | UNKNOWN,
            };
        }
        Output {
            text: Some(text),
            flags,
        }
    }

    pub fn unknown(flags: u16) -> Self {
        Output {
            text: None,
            flags: flags | UNKNOWN,
        }
    }
}

/// What a script prints, when every command in it can be evaluated.
pub fn script_output(script: &Script, heredocs: &[Heredoc], vars: &Vars, depth: u8) -> Output {
    let mut text = String::new();
    let mut flags = 0;
    let mut known = true;
    let mut vars = vars.clone();
    for p in &script.pipelines {
        let out = pipeline_output(p, heredocs, &mut vars, depth);
        flags |= out.flags;
        match out.text {
            Some(t) if known => text.push_str(&t),
            _ => known = false,
        }
    }
    if known {
        Output::known(text, flags)
    } else {
        Output::unknown(flags)
    }
}

fn pipeline_output(p: &Pipeline, heredocs: &[Heredoc], vars: &mut Vars, depth: u8) -> Output {
    let mut stdin: Option<Output> = None;
    for cmd in &p.commands {
        let out = match cmd {
            Command::Simple(s) => simple_output(s, heredocs, vars, depth, stdin.take()),
            Command::Group(inner, _) => script_output(inner, heredocs, vars, depth),
        };
        stdin = Some(out);
    }
    stdin.unwrap_or_else(|| Output::known(String::new(), 0))
}

fn simple_output(
    s: &Simple,
    heredocs: &[Heredoc],
    vars: &mut Vars,
    depth: u8,
    piped: Option<Output>,
) -> Output {
    let ctx = Ctx {
        vars,
        heredocs,
        depth,
    };
    if s.words.is_empty() {
        let assigned = expand::assignments(&s.assigns, &ctx);
        expand::assign_all(assigned, vars);
        return Output::known(String::new(), 0);
    }
    let fields: Vec<Field> = s
        .words
        .iter()
        .flat_map(|w| expand::fields(w, &ctx))
        .collect();
    let mut stdin = piped;
    for r in &s.redirects {
        match r.op {
            RedirOp::HereString => {
                let f = expand::text(&r.target, &ctx);
                stdin = Some(field_output(f, true));
            }
            RedirOp::Heredoc => {
                let body = r.heredoc.and_then(|i| heredocs.get(i));
                stdin = Some(match body {
                    Some(h) if h.expand => field_output(expand::text(&h.body, &ctx), false),
                    Some(h) => field_output(
                        expand::text(
                            &h.body,
                            &Ctx {
                                vars: &Vars::default(),
                                heredocs: &[],
                                depth: 0,
                            },
                        ),
                        false,
                    ),
                    None => Output::unknown(0),
                });
            }
            RedirOp::In => stdin = Some(Output::unknown(FETCHED)),
            _ => {}
        }
    }
    if let Some(name) = fields.first().filter(|f| f.known()).map(|f| f.text.clone()) {
        super::builtins::apply(&name, &fields, stdin.as_ref(), vars);
    }
    run(&fields, stdin)
}

fn field_output(f: Field, newline: bool) -> Output {
    let flags = f.flags & !UNKNOWN;
    if f.known() {
        let mut t = f.text;
        if newline {
            t.push('\n');
        }
        Output::known(t, flags)
    } else {
        Output::unknown(flags)
    }
}

/// Names whose output is a transformation meant to hide text: if such output reaches a shell
/// the command is obfuscated even when the decode cannot be computed. Decompressors are not
/// here: compressed scripts are ordinary, and their output counts as fetched content.
pub fn is_decoder(name: &str, args: &[String]) -> bool {
    let has = |flags: &[&str]| {
        args.iter().any(|a| {
            flags.contains(&a.as_str())
                || (a.starts_with('-')
                    && !a.starts_with("--")
                    && flags.iter().any(|f| f.len() == 2 && a.contains(&f[1..])))
        })
    };
    match name {
        "base64" | "base32" | "basenc" => has(&["-d", "--decode", "-D"]),
        "xxd" => has(&["-r", "--revert"]),
        "openssl" => args
            .iter()
            .any(|a| a == "-d" || a == "-base64" || a == "-a" || a == "base64" || a == "enc"),
        "rev" | "tr" | "uudecode" | "rot13" => true,
        _ => false,
    }
}

/// Output of one command given its expanded words and stdin.
pub fn run(fields: &[Field], stdin: Option<Output>) -> Output {
    let Some(first) = fields.first() else {
        return Output::known(String::new(), 0);
    };
    if !first.known() {
        return Output::unknown(first.flags);
    }
    let name = first.text.rsplit('/').next().unwrap_or(&first.text);
    let args: Vec<&Field> = fields[1..].iter().collect();
    let arg_text: Vec<String> = args.iter().map(|f| f.text.clone()).collect();
    let args_known = args.iter().all(|f| f.known());
    let arg_flags = args.iter().fold(0, |acc, f| acc | f.flags) & !UNKNOWN;
    let in_flags = stdin.as_ref().map_or(0, |o| o.flags & !UNKNOWN);
    let decoder = if is_decoder(name, &arg_text) {
        DECODED
    } else {
        0
    };
    let operands: Vec<&str> = arg_text
        .iter()
        .filter(|a| !a.starts_with('-') || a.as_str() == "-")
        .map(String::as_str)
        .collect();
    let stdin_text = || stdin.as_ref().and_then(|o| o.text.clone());
    let flags = arg_flags | in_flags | decoder;
    // The text, and whether the command itself decoded hidden characters (escapes).
    let result: Option<(String, bool)> = match name {
        "echo" => args_known.then(|| echo(&arg_text)),
        // `printf -v NAME ...` assigns instead of printing.
        "printf" if arg_text.first().is_some_and(|a| a == "-v") => Some((String::new(), false)),
        "printf" => args_known.then(|| printf(&arg_text)).flatten(),
        n if super::builtins::is_state_builtin(n) => Some((String::new(), false)),
        "base64" | "base32" if decoder != 0 && operands.iter().all(|o| *o == "-") => stdin_text()
            .and_then(|t| {
                if name == "base64" {
                    decode_base64(&t)
                } else {
                    decode_base32(&t)
                }
            })
            .map(|t| (t, true)),
        "openssl"
            if decoder != 0
                && arg_text.iter().any(|a| a == "-d")
                && !arg_text.iter().any(|a| a == "-in") =>
        {
            stdin_text()
                .and_then(|t| decode_base64(&t))
                .map(|t| (t, true))
        }
        "xxd"
            if decoder != 0
                && arg_text.iter().any(|a| {
                    a.starts_with("-p") || a == "-ps" || a == "-plain" || a.ends_with('p')
                })
                && operands.iter().all(|o| *o == "-") =>
        {
            stdin_text().and_then(|t| decode_hex(&t)).map(|t| (t, true))
        }
        "rev" if operands.is_empty() => stdin_text().map(|t| {
            (
                t.lines()
                    .map(|l| l.chars().rev().collect::<String>() + "\n")
                    .collect(),
                true,
            )
        }),
        "tr" if args_known => stdin_text()
            .and_then(|t| tr(&arg_text, &t))
            .map(|t| (t, true)),
        "cat" | "tee" if operands.iter().all(|o| *o == "-") || name == "tee" => {
            stdin_text().map(|t| (t, false))
        }
        "true" | ":" => Some((String::new(), false)),
        "sed" => stdin_text()
            .and_then(|t| transform::sed(&arg_text, &t))
            .map(|t| (t, true)),
        "cut" => stdin_text()
            .and_then(|t| transform::cut(&arg_text, &t))
            .map(|t| (t, true)),
        "head" | "tail" => stdin_text()
            .and_then(|t| transform::head_tail(name == "tail", &arg_text, &t))
            .map(|t| (t, true)),
        "paste" => stdin_text()
            .and_then(|t| transform::paste(&arg_text, &t))
            .map(|t| (t, true)),
        "awk" | "gawk" | "mawk" | "nawk" if args_known => {
            transform::awk(&arg_text, stdin_text().as_deref()).map(|t| (t, true))
        }
        "gunzip" | "zcat" | "gzip" | "pigz" | "unpigz"
            if (name != "gzip" && name != "pigz")
                || arg_text
                    .iter()
                    .any(|a| a.starts_with('-') && a.contains('d')) =>
        {
            let flags_only = arg_text.iter().all(|a| a.starts_with('-'));
            stdin_text()
                .filter(|_| flags_only)
                .and_then(|t| transform::inflate(&t))
                .map(|t| (t, true))
        }
        _ => None,
    };
    // Output that comes from outside the command (network, files, decompression): opaque, but
    // not an encoding trick.
    let fetched = match name {
        "curl" | "wget" | "nc" | "ncat" | "netcat" | "socat" | "cat" | "head" | "tail"
        | "gunzip" | "zcat" | "bzcat" | "xzcat" | "zstdcat" | "gzip" | "bzip2" | "xz" | "zstd" => {
            FETCHED
        }
        _ => 0,
    };
    let fetched = fetched
        | match name {
            "curl" | "wget" | "nc" | "ncat" | "netcat" | "socat" | "fetch" | "aria2c" | "http"
            | "https" | "xh" | "telnet" | "openssl" => expand::NETWORK,
            _ => 0,
        };
    match result {
        Some((t, hidden)) => Output::known(t, flags | if hidden { DECODED } else { 0 }),
        None => Output::unknown(flags | fetched),
    }
}

/// `s` with echo/printf backslash escapes decoded.
pub fn unescape_text(s: &str) -> String {
    unescape(s).0
}

/// What `printf ARGS...` prints, when it can be computed.
pub fn printf_text(args: &[String]) -> Option<String> {
    printf(args).map(|(t, _)| t)
}

/// `echo` with `-n`, `-e`, `-E`. Returns the text and whether escapes were decoded.
fn echo(args: &[String]) -> (String, bool) {
    let mut newline = true;
    let mut escapes = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.len() > 1 && a.starts_with('-') && a[1..].chars().all(|c| matches!(c, 'n' | 'e' | 'E'))
        {
            for c in a[1..].chars() {
                match c {
                    'n' => newline = false,
                    'e' => escapes = true,
                    _ => escapes = false,
                }
            }
            i += 1;
        } else {
            break;
        }
    }
    let joined = args[i..].join(" ");
    let (mut text, dec) = if escapes {
        unescape(&joined)
    } else {
        (joined, false)
    };
    if newline {
        text.push('\n');
    }
    (text, dec)
}

/// Backslash escapes as `printf` and `echo -e` read them; also says whether any escape hid a
/// character (hex, octal, unicode) rather than formatting whitespace.
fn unescape(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len());
    let mut hidden = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = chars[i + 1];
        i += 2;
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'e' => out.push('\u{1b}'),
            '\\' => out.push('\\'),
            'c' => break,
            'x' => {
                let (v, n) = digits(&chars[i..], 16, 2);
                if n == 0 {
                    out.push_str("\\x");
                } else {
                    hidden = true;
                    push_latin1(&mut out, v);
                    i += n;
                }
            }
            'u' | 'U' => {
                let (v, n) = digits(&chars[i..], 16, if e == 'u' { 4 } else { 8 });
                match char::from_u32(v).filter(|_| n > 0) {
                    Some(ch) => {
                        hidden = true;
                        out.push(ch);
                        i += n;
                    }
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            '0'..='7' => {
                // `\0NNN` (echo) and `\NNN` (printf) both read up to three more octal digits.
                let start = if e == '0' { i } else { i - 1 };
                let (v, n) = digits(&chars[start..], 8, 3);
                hidden = true;
                push_latin1(&mut out, v);
                i = start + n;
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    (out, hidden)
}

fn digits(chars: &[char], radix: u32, max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut n = 0;
    while n < max && n < chars.len() {
        match chars[n].to_digit(radix) {
            Some(d) => {
                v = v * radix + d;
                n += 1;
            }
            None => break,
        }
    }
    (v, n)
}

fn push_latin1(out: &mut String, v: u32) {
    if let Some(c) = char::from_u32(v & 0xff) {
        out.push(c);
    }
}

/// `printf FORMAT [ARGS...]` with `%s %b %c %d %i %x %o %%`; the format is reused while arguments
/// remain, as the shell does.
fn printf(args: &[String]) -> Option<(String, bool)> {
    let mut args = args;
    if args.first().is_some_and(|a| a == "--") {
        args = &args[1..];
    }
    if args.first().is_some_and(|a| a == "-v") {
        return None;
    }
    let (fmt, rest) = args.split_first()?;
    let (fmt, mut hidden) = unescape(fmt);
    let mut out = String::new();
    let mut idx = 0;
    // Bound the reuse loop: each pass consumes at least one argument or stops.
    loop {
        let before = idx;
        let mut chars = fmt.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            // Skip flags, width and precision.
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_digit() || matches!(d, '-' | '+' | ' ' | '#' | '.'))
            {
                chars.next();
            }
            let arg = rest.get(idx).map(String::as_str);
            match chars.next() {
                Some('%') => out.push('%'),
                Some('s') => {
                    out.push_str(arg.unwrap_or(""));
                    idx += 1;
                }
                Some('b') => {
                    let (t, h) = unescape(arg.unwrap_or(""));
                    hidden |= h;
                    out.push_str(&t);
                    idx += 1;
                }
                Some('c') => {
                    if let Some(ch) = arg.and_then(|a| a.chars().next()) {
                        out.push(ch);
                    }
                    idx += 1;
                }
                Some(conv @ ('d' | 'i' | 'x' | 'X' | 'o' | 'u')) => {
                    let n: i64 = arg.and_then(|a| a.trim().parse().ok()).unwrap_or(0);
                    match conv {
                        'x' => out.push_str(&format!("{n:x}")),
                        'X' => out.push_str(&format!("{n:X}")),
                        'o' => out.push_str(&format!("{n:o}")),
                        _ => out.push_str(&n.to_string()),
                    }
                    idx += 1;
                }
                _ => return None,
            }
            if out.len() > MAX_OUTPUT_BYTES {
                return None;
            }
        }
        if idx >= rest.len() || idx == before {
            break;
        }
    }
    Some((out, hidden))
}

fn decode_base64(text: &str) -> Option<String> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(clean.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(clean.trim_end_matches('='))
        })
        .ok()?;
    Some(bytes_text(bytes))
}

/// Decoded bytes as text: UTF-8 when they are, else one char per byte (Latin-1), so that
/// binary data (a gzip stream) survives to the next stage unchanged.
pub fn bytes_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => e.into_bytes().iter().map(|b| *b as char).collect(),
    }
}

fn decode_base32(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())? as u64;
        bits = (bits << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn decode_hex(text: &str) -> Option<String> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = hex::decode(clean).ok()?;
    Some(bytes_text(bytes))
}

/// `tr SET1 SET2` and `tr -d SET` with ranges and the common escapes.
fn tr(args: &[String], input: &str) -> Option<String> {
    let mut delete = false;
    let mut sets = Vec::new();
    for a in args {
        match a.as_str() {
            "-d" | "--delete" => delete = true,
            "-s" | "--squeeze-repeats" => {}
            s if s.starts_with('-') && s.len() > 1 => return None,
            s => sets.push(expand_set(s)?),
        }
    }
    match (delete, sets.as_slice()) {
        (true, [set]) => Some(input.chars().filter(|c| !set.contains(c)).collect()),
        (false, [from, to]) if !to.is_empty() => Some(
            input
                .chars()
                .map(|c| match from.iter().position(|f| *f == c) {
                    Some(i) => to[i.min(to.len() - 1)],
                    None => c,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Expand a `tr` set (`a-z`, `\n`); classes like `[:upper:]` are not evaluated.
fn expand_set(s: &str) -> Option<Vec<char>> {
    if s.contains("[:") {
        return None;
    }
    let (s, _) = unescape(s);
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '-' {
            let (a, b) = (chars[i] as u32, chars[i + 2] as u32);
            if a > b || b - a > 0x3000 {
                return None;
            }
            out.extend((a..=b).filter_map(char::from_u32));
            i += 3;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::parse::parse;

    fn out(src: &str) -> Output {
        let p = parse(src);
        script_output(&p.script, &p.heredocs, &Vars::default(), 4)
    }

    #[test]
    fn decoders() {
        assert_eq!(
            out("echo bnNlbnRlcg== | base64 -d").text.as_deref(),
            Some("nsenter")
        );
        assert_eq!(
            out("echo 6e73656e746572 | xxd -r -p").text.as_deref(),
            Some("nsenter")
        );
        assert_eq!(out("echo retnesn | rev").text.as_deref(), Some("nsenter\n"));
        assert_eq!(
            out("echo afragre | tr 'A-Za-z' 'N-ZA-Mn-za-m'")
                .text
                .as_deref(),
            Some("nsenter\n")
        );
        assert_eq!(
            out("base64 -d <<< bnNlbnRlcg==").text.as_deref(),
            Some("nsenter")
        );
        assert_eq!(
            out("echo NZZWK3TUMVZA==== | base32 -d").text.as_deref(),
            Some("nsenter")
        );
        let o = out(r"printf '\156\163%s' enter");
        assert_eq!(o.text.as_deref(), Some("nsenter"));
        assert!(o.flags & DECODED != 0);
        assert_eq!(out("echo -e '\\x6es'").text.as_deref(), Some("ns\n"));
    }

    #[test]
    fn unknown_keeps_flags() {
        let o = out("base64 -d payload.txt");
        assert!(o.text.is_none());
        assert!(o.flags & DECODED != 0);
        let o = out("curl -s http://attacker.invalid/x");
        assert!(o.flags & FETCHED != 0);
    }
}
