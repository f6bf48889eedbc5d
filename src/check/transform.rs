//! Text transforms evaluated on known input: `sed` substitutions and transliterations, `cut`,
//! `head`/`tail` by bytes or lines, `paste -s`, `awk` programs that only print literals or
//! fields, and gzip/zlib decompression. Each returns `None` when it cannot be computed exactly
//! (an option it does not model, a file operand), never a guess.

use std::io::Read;

use regex::{Regex, RegexBuilder};

/// Most bytes a decompression may produce.
const MAX_INFLATED_BYTES: u64 = 256 * 1024;
/// Compiled size limit of one `sed` pattern.
const MAX_SED_REGEX_BYTES: usize = 1 << 20;
/// Most `sed` commands in one script.
const MAX_SED_COMMANDS: usize = 32;

/// `sed [-e SCRIPT]... [-E|-r] [-n] [SCRIPT]` on `input`: `s///` and `y///` commands only.
pub fn sed(args: &[String], input: &str) -> Option<String> {
    let mut scripts = Vec::new();
    let mut extended = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-e" | "--expression" => {
                scripts.push(args.get(i + 1)?.clone());
                i += 2;
                continue;
            }
            "-E" | "-r" | "--regexp-extended" => extended = true,
            "--posix" | "-u" | "--unbuffered" => {}
            a if a.starts_with('-') => return None,
            a if scripts.is_empty() => scripts.push(a.to_string()),
            // A file operand: the input is not what we know.
            _ => return None,
        }
        i += 1;
    }
    let mut commands = Vec::new();
    for s in &scripts {
        for c in split_commands(s)? {
            commands.push(SedCommand::parse(&c, extended)?);
            if commands.len() > MAX_SED_COMMANDS {
                return None;
            }
        }
    }
    let mut out = String::with_capacity(input.len());
    for line in input.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut text = body.to_string();
        for c in &commands {
            text = c.apply(&text);
        }
        out.push_str(&text);
        out.push_str(nl);
    }
    Some(out)
}

/// A sed script split on `;` and newlines outside of `s` and `y` arguments.
fn split_commands(script: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i] == ';' || chars[i].is_whitespace()) {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let start = i;
        match chars[i] {
            's' | 'y' => {
                let delim = *chars.get(i + 1)?;
                if delim == '\\' || delim == '\n' {
                    return None;
                }
                i += 2;
                let mut seen = 0;
                while i < chars.len() && seen < 2 {
                    if chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if chars[i] == delim {
                        seen += 1;
                    }
                    i += 1;
                }
                if seen < 2 {
                    return None;
                }
                while i < chars.len() && chars[i] != ';' && chars[i] != '\n' {
                    i += 1;
                }
            }
            _ => return None,
        }
        out.push(chars[start..i.min(chars.len())].iter().collect());
    }
    Some(out)
}

enum SedCommand {
    Subst {
        re: Regex,
        replacement: String,
        global: bool,
        nth: usize,
    },
    Translate(Vec<char>, Vec<char>),
}

impl SedCommand {
    fn parse(cmd: &str, extended: bool) -> Option<SedCommand> {
        let mut chars = cmd.chars();
        let kind = chars.next()?;
        let delim = chars.next()?;
        let rest: String = chars.collect();
        let (a, rest) = take_until(&rest, delim)?;
        let (b, flags) = take_until(rest, delim)?;
        match kind {
            's' => {
                let mut global = false;
                let mut nth = 1;
                let mut icase = false;
                for f in flags.trim().chars() {
                    match f {
                        'g' => global = true,
                        'I' | 'i' => icase = true,
                        'p' => {}
                        d if d.is_ascii_digit() => nth = d.to_digit(10)? as usize,
                        _ => return None,
                    }
                }
                let pattern = if extended {
                    a.to_string()
                } else {
                    bre_to_regex(&a)?
                };
                let re = RegexBuilder::new(&pattern)
                    .case_insensitive(icase)
                    .size_limit(MAX_SED_REGEX_BYTES)
                    .build()
                    .ok()?;
                Some(SedCommand::Subst {
                    re,
                    replacement: sed_replacement(&b),
                    global,
                    nth: nth.max(1),
                })
            }
            'y' => {
                let from: Vec<char> = unescape_delim(&a).chars().collect();
                let to: Vec<char> = unescape_delim(&b).chars().collect();
                (from.len() == to.len() && flags.trim().is_empty())
                    .then_some(SedCommand::Translate(from, to))
            }
            _ => None,
        }
    }

    fn apply(&self, text: &str) -> String {
        match self {
            SedCommand::Subst {
                re,
                replacement,
                global,
                nth,
            } => {
                if *global && *nth == 1 {
                    return re.replace_all(text, replacement.as_str()).into_owned();
                }
                let mut count = 0;
                let mut out = String::new();
                let mut last = 0;
                for caps in re.captures_iter(text) {
                    let Some(m) = caps.get(0) else { continue };
                    count += 1;
                    if count < *nth {
                        continue;
                    }
                    out.push_str(&text[last..m.start()]);
                    caps.expand(replacement, &mut out);
                    last = m.end();
                    if !*global {
                        break;
                    }
                }
                out.push_str(&text[last..]);
                out
            }
            SedCommand::Translate(from, to) => text
                .chars()
                .map(|c| from.iter().position(|f| *f == c).map_or(c, |i| to[i]))
                .collect(),
        }
    }
}

/// The text up to the next unescaped `delim`, and what follows it.
fn take_until(s: &str, delim: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        if c == '\\' {
            match it.next() {
                Some((_, d)) if d == delim => out.push(d),
                Some((_, d)) => {
                    out.push('\\');
                    out.push(d);
                }
                None => return None,
            }
        } else if c == delim {
            return Some((out, &s[i + c.len_utf8()..]));
        } else {
            out.push(c);
        }
    }
    None
}

fn unescape_delim(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\\\", "\\")
}

/// A POSIX basic regular expression in the regex crate's syntax.
fn bre_to_regex(bre: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = bre.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next()? {
                '(' => out.push('('),
                ')' => out.push(')'),
                '{' => out.push('{'),
                '}' => out.push('}'),
                '+' => out.push('+'),
                '?' => out.push('?'),
                '|' => out.push('|'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                d if d.is_ascii_digit() => return None,
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            '(' | ')' | '{' | '}' | '+' | '?' | '|' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// A sed replacement (`&`, `\1`..`\9`, `\n`) in the regex crate's `expand` syntax.
fn sed_replacement(rep: &str) -> String {
    let mut out = String::new();
    let mut it = rep.chars();
    while let Some(c) = it.next() {
        match c {
            '&' => out.push_str("${0}"),
            '$' => out.push_str("$$"),
            '\\' => match it.next() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('&') => out.push('&'),
                Some(o) => out.push(o),
                None => {}
            },
            _ => out.push(c),
        }
    }
    out
}

/// A `cut` list (`1,3-5,7-`), 1-based inclusive ranges.
fn ranges(list: &str) -> Option<Vec<(usize, usize)>> {
    list.split(',')
        .map(|r| {
            let (a, b) = match r.split_once('-') {
                Some((a, b)) => (
                    if a.is_empty() { 1 } else { a.parse().ok()? },
                    if b.is_empty() {
                        usize::MAX
                    } else {
                        b.parse().ok()?
                    },
                ),
                None => {
                    let n = r.parse().ok()?;
                    (n, n)
                }
            };
            (a >= 1 && a <= b).then_some((a, b))
        })
        .collect()
}

fn in_ranges(ranges: &[(usize, usize)], i: usize) -> bool {
    ranges.iter().any(|(a, b)| i >= *a && i <= *b)
}

/// Splits `args` as `-cLIST`, `-c LIST`, `--characters=LIST`, returning (option, value).
fn opt_value<'a>(args: &'a [String], i: &mut usize, short: &[&str]) -> Option<(String, &'a str)> {
    let a = args.get(*i)?;
    for s in short {
        if a == s {
            *i += 1;
            return args.get(*i).map(|v| (s.to_string(), v.as_str()));
        }
        if let Some(v) = a.strip_prefix(s) {
            if !v.is_empty() {
                return Some((s.to_string(), v));
            }
        }
    }
    None
}

/// `cut -c|-b LIST` and `cut -f LIST [-d D] [-s]` on `input`.
pub fn cut(args: &[String], input: &str) -> Option<String> {
    let mut chars = None;
    let mut fields = None;
    let mut delim = '\t';
    let mut i = 0;
    while i < args.len() {
        if let Some((o, v)) = opt_value(args, &mut i, &["-c", "-b", "-f", "-d"]) {
            match o.as_str() {
                "-c" | "-b" => chars = Some(ranges(v)?),
                "-f" => fields = Some(ranges(v)?),
                _ => delim = v.chars().next()?,
            }
        } else if args[i] != "-" {
            return None;
        }
        i += 1;
    }
    let mut out = String::new();
    for line in input.lines() {
        match (&chars, &fields) {
            (Some(r), None) => out.extend(
                line.chars()
                    .enumerate()
                    .filter(|(k, _)| in_ranges(r, k + 1))
                    .map(|(_, c)| c),
            ),
            (None, Some(r)) => {
                let kept: Vec<&str> = line
                    .split(delim)
                    .enumerate()
                    .filter(|(k, _)| in_ranges(r, k + 1))
                    .map(|(_, f)| f)
                    .collect();
                out.push_str(&kept.join(&delim.to_string()));
            }
            _ => return None,
        }
        out.push('\n');
    }
    Some(out)
}

/// `head`/`tail` with `-c N`, `-n N`, `-N` on `input`.
pub fn head_tail(tail: bool, args: &[String], input: &str) -> Option<String> {
    let mut bytes = None;
    let mut lines = 10usize;
    let mut i = 0;
    while i < args.len() {
        if let Some((o, v)) = opt_value(args, &mut i, &["-c", "-n"]) {
            let n: usize = v.trim_start_matches('+').parse().ok()?;
            if v.starts_with('+') {
                return None;
            }
            if o == "-c" {
                bytes = Some(n);
            } else {
                lines = n;
            }
        } else if let Some(n) = args[i].strip_prefix('-').and_then(|n| n.parse().ok()) {
            lines = n;
        } else if args[i] != "-" {
            return None;
        }
        i += 1;
    }
    if let Some(n) = bytes {
        let b = input.as_bytes();
        let part = if tail {
            &b[b.len().saturating_sub(n)..]
        } else {
            &b[..n.min(b.len())]
        };
        return Some(String::from_utf8_lossy(part).into_owned());
    }
    let all: Vec<&str> = input.split_inclusive('\n').collect();
    let part = if tail {
        &all[all.len().saturating_sub(lines)..]
    } else {
        &all[..lines.min(all.len())]
    };
    Some(part.concat())
}

/// `paste -s [-d D]` (lines joined) on `input`.
pub fn paste(args: &[String], input: &str) -> Option<String> {
    let mut serial = false;
    let mut delim = "\t".to_string();
    let mut i = 0;
    while i < args.len() {
        if let Some((_, v)) = opt_value(args, &mut i, &["-d"]) {
            delim = super::eval::unescape_text(v);
        } else if args[i] == "-s" {
            serial = true;
        } else if args[i] == "-sd" {
            serial = true;
            i += 1;
            delim = super::eval::unescape_text(args.get(i)?);
        } else if args[i] != "-" {
            return None;
        }
        i += 1;
    }
    if !serial {
        return None;
    }
    let lines: Vec<&str> = input.lines().collect();
    let mut out = String::new();
    let d: Vec<char> = delim.chars().collect();
    for (k, l) in lines.iter().enumerate() {
        if k > 0 && !d.is_empty() {
            out.push(d[(k - 1) % d.len()]);
        }
        out.push_str(l);
    }
    out.push('\n');
    Some(out)
}

/// An awk program that only prints: `BEGIN { print|printf EXPR... }` with string literals, or
/// `{ print $N... }` over `input`.
pub fn awk(args: &[String], input: Option<&str>) -> Option<String> {
    let mut program = None;
    let mut fs: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        if let Some((_, v)) = opt_value(args, &mut i, &["-F"]) {
            fs = Some(v.to_string());
        } else if program.is_none() && !args[i].starts_with('-') {
            program = Some(args[i].as_str());
        } else if args[i] != "-" {
            return None;
        }
        i += 1;
    }
    let program = program?.trim();
    if let Some(body) = program
        .strip_prefix("BEGIN")
        .map(str::trim_start)
        .and_then(|b| b.strip_prefix('{'))
        .and_then(|b| b.trim_end().strip_suffix('}'))
    {
        let mut out = String::new();
        for stmt in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            out.push_str(&awk_print(stmt, &[])?);
        }
        return Some(out);
    }
    let body = program.strip_prefix('{')?.strip_suffix('}')?;
    let input = input?;
    let mut out = String::new();
    for line in input.lines() {
        let fields: Vec<&str> = match &fs {
            Some(f) if f.chars().count() == 1 => line.split(f.as_str()).collect(),
            Some(_) => return None,
            None => line.split_whitespace().collect(),
        };
        for stmt in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let mut all = vec![line];
            all.extend(fields.iter().copied());
            out.push_str(&awk_print(stmt, &all)?);
        }
    }
    Some(out)
}

/// One `print` or `printf` statement whose terms are string literals or `$N` (`fields[0]`
/// is the whole line).
fn awk_print(stmt: &str, fields: &[&str]) -> Option<String> {
    let (printf, rest) = if let Some(r) = stmt.strip_prefix("printf") {
        (true, r)
    } else {
        (false, stmt.strip_prefix("print")?)
    };
    let rest = rest.trim();
    let rest = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest);
    // Terms separated by `,` (print: joined by a space; printf: arguments).
    let mut terms: Vec<Vec<String>> = vec![Vec::new()];
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            c if c.is_whitespace() => i += 1,
            ',' => {
                terms.push(Vec::new());
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        s.push('\\');
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return None;
                }
                i += 1;
                terms.last_mut()?.push(super::eval::unescape_text(&s));
            }
            '$' => {
                let start = i + 1;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let n: usize = chars[start..i].iter().collect::<String>().parse().ok()?;
                terms
                    .last_mut()?
                    .push(fields.get(n).copied().unwrap_or("").to_string());
            }
            _ => return None,
        }
    }
    let terms: Vec<String> = terms.into_iter().map(|t| t.concat()).collect();
    if printf {
        return super::eval::printf_text(&terms);
    }
    let mut line = terms.join(" ");
    line.push('\n');
    Some(line)
}

/// gzip or zlib data in `input` (as bytes: the text is Latin-1 or UTF-8 of the decoded bytes).
pub fn inflate(input: &str) -> Option<String> {
    let bytes: Vec<u8> = if input.chars().all(|c| (c as u32) < 256) {
        input.chars().map(|c| c as u8).collect()
    } else {
        input.as_bytes().to_vec()
    };
    let mut out = Vec::new();
    let ok = if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .take(MAX_INFLATED_BYTES)
            .read_to_end(&mut out)
            .is_ok()
    } else {
        flate2::read::ZlibDecoder::new(&bytes[..])
            .take(MAX_INFLATED_BYTES)
            .read_to_end(&mut out)
            .is_ok()
    };
    ok.then(|| String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn transforms_compute_what_the_tools_print() {
        assert_eq!(
            sed(&v(&["s/X/r/"]), "nsenteX\n").as_deref(),
            Some("nsenter\n")
        );
        assert_eq!(sed(&v(&["-e", "s|a|b|g"]), "aaa").as_deref(), Some("bbb"));
        assert_eq!(sed(&v(&["s/\\(n\\)s/\\1S/"]), "ns").as_deref(), Some("nS"));
        assert_eq!(
            sed(&v(&["-E", "s/(e)n/\\1N/2"]), "enen").as_deref(),
            Some("eneN")
        );
        assert_eq!(
            sed(&v(&["y/abc/xyz/"]), "aabbcc").as_deref(),
            Some("xxyyzz")
        );
        assert_eq!(sed(&v(&["s/a/b/;s/b/c/"]), "a").as_deref(), Some("c"));
        assert_eq!(sed(&v(&["d"]), "a"), None, "only s and y are modelled");
        assert_eq!(sed(&v(&["s/a/b/", "file"]), "a"), None);
        assert_eq!(
            cut(&v(&["-c1-7"]), "nsenterZZZ\n").as_deref(),
            Some("nsenter\n")
        );
        assert_eq!(
            cut(&v(&["-d", ":", "-f", "2"]), "a:b:c\n").as_deref(),
            Some("b\n")
        );
        assert_eq!(cut(&v(&["-c", "1,3"]), "abc\n").as_deref(), Some("ac\n"));
        assert_eq!(
            head_tail(false, &v(&["-c", "3"]), "abcdef").as_deref(),
            Some("abc")
        );
        assert_eq!(
            head_tail(true, &v(&["-n1"]), "a\nb\n").as_deref(),
            Some("b\n")
        );
        assert_eq!(paste(&v(&["-sd", ""]), "n\ns\n").as_deref(), Some("ns\n"));
        assert_eq!(
            awk(&v(&["BEGIN{print \"nse\" \"nter\"}"]), None).as_deref(),
            Some("nsenter\n")
        );
        assert_eq!(
            awk(&v(&["{print $2}"]), Some("x nsenter y\n")).as_deref(),
            Some("nsenter\n")
        );
        assert_eq!(awk(&v(&["{print length($0)}"]), Some("x")), None);
    }

    #[test]
    fn inflate_reads_gzip_and_is_bounded() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"nsenter -t 1 -m sh").unwrap();
        let gz = e.finish().unwrap();
        let latin1: String = gz.iter().map(|b| *b as char).collect();
        assert_eq!(inflate(&latin1).as_deref(), Some("nsenter -t 1 -m sh"));
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b'a'; 4 << 20]).unwrap();
        let bomb: String = e.finish().unwrap().iter().map(|b| *b as char).collect();
        assert_eq!(
            inflate(&bomb).map(|t| t.len()),
            Some(MAX_INFLATED_BYTES as usize)
        );
        assert_eq!(inflate("not compressed"), None);
    }
}
