//! Interpreter one-liners (`python -c`, `perl -e`, `ruby -e`, `node -e`, `php -r`, `lua -e`,
//! `awk '...'`): find the code, and the shell commands it hands to `system`, `popen`, `exec`,
//! backticks and the like so they are checked as commands too.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// The language of an interpreter command name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Perl,
    Ruby,
    Node,
    Php,
    Lua,
    Awk,
}

pub fn lang(name: &str) -> Option<Lang> {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match base {
        "python" | "pypy" | "pypy3" => Lang::Python,
        "perl" => Lang::Perl,
        "ruby" | "jruby" => Lang::Ruby,
        "node" | "nodejs" | "bun" | "deno" => Lang::Node,
        "php" | "php-cgi" => Lang::Php,
        "lua" | "luajit" => Lang::Lua,
        "awk" | "gawk" | "mawk" | "nawk" | "busybox-awk" => Lang::Awk,
        _ => return None,
    })
}

/// Where an interpreter's program text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub text: String,
    /// Read from stdin (`echo ... | python3`) rather than given as an argument.
    pub from_stdin: bool,
}

/// The inline code of an interpreter invocation: the `-c`/`-e`/`-r` value, the awk program, or
/// the text piped to an interpreter that reads its program from stdin.
pub fn code(lang: Lang, args: &[String], stdin: Option<&str>) -> Option<Code> {
    inline_code(lang, args)
        .map(|text| Code {
            text,
            from_stdin: false,
        })
        .or_else(|| {
            // No inline code and no script operand: the program comes from stdin.
            let text = stdin.filter(|_| program_on_stdin(lang, args))?;
            Some(Code {
                text: text.to_string(),
                from_stdin: true,
            })
        })
}

/// Whether the interpreter, given no inline code, reads its program from stdin: no script
/// operand, or stdin named as the script (`python3 -`, `perl /dev/stdin`); for awk only
/// `-f -`. `python3 -mjson.tool` runs a module, not a program from stdin.
pub fn program_on_stdin(lang: Lang, args: &[String]) -> bool {
    if lang == Lang::Awk {
        return args
            .windows(2)
            .any(|w| matches!(w[0].as_str(), "-f" | "--file") && is_stdin_name(&w[1]));
    }
    let has_operand = args.iter().any(|a| !a.starts_with('-'))
        || (lang == Lang::Python && args.iter().any(|a| a.starts_with("-m")));
    !has_operand || args.iter().any(|a| is_stdin_name(a))
}

/// Names of stdin as a program file (`python3 -`, `perl /dev/stdin`).
fn is_stdin_name(a: &str) -> bool {
    matches!(a, "-" | "/dev/stdin" | "/proc/self/fd/0" | "/dev/fd/0")
}

fn inline_code(lang: Lang, args: &[String]) -> Option<String> {
    let flag = |a: &str| -> bool {
        match lang {
            Lang::Python => {
                a == "-c"
                    || (a.starts_with('-')
                        && !a.starts_with("--")
                        && a.ends_with('c')
                        && a.len() <= 4)
            }
            Lang::Perl => {
                a.starts_with('-')
                    && !a.starts_with("--")
                    && (a.ends_with('e') || a.ends_with('E'))
                    && a.len() <= 5
            }
            Lang::Ruby | Lang::Lua => a == "-e",
            Lang::Node => matches!(a, "-e" | "--eval" | "-p" | "--print"),
            Lang::Php => a == "-r",
            Lang::Awk => false,
        }
    };
    if lang == Lang::Awk {
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            match a {
                "-f" | "--file" => return None,
                "-F" | "-v" | "--assign" | "--field-separator" => i += 2,
                "--" => return args.get(i + 1).cloned(),
                _ if a.starts_with('-') && a.len() > 1 => i += 1,
                _ => return Some(a.to_string()),
            }
        }
        return None;
    }
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if flag(&args[i]) {
            if let Some(c) = args.get(i + 1) {
                pieces.push(c.clone());
            }
            i += 2;
            continue;
        }
        if let Some(c) = args[i].strip_prefix("--eval=") {
            pieces.push(c.to_string());
        }
        i += 1;
    }
    (!pieces.is_empty()).then(|| pieces.join("\n"))
}

fn literal_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Proof: a fixed pattern, tested below; it cannot fail to compile.
    RE.get_or_init(|| {
        Regex::new(r#""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'"#).expect("static regex")
    })
}

fn call_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"(?:\b(?:system|popen|popen2|popen3|exec|execSync|execFileSync|execFile|spawn|spawnSync|shell_exec|passthru|proc_open|pcntl_exec",
            r"|check_output|check_call|getoutput|getstatusoutput|call|run|Popen|execute|execl|execlp|execle|execv|execvp|execvpe",
            r"|spawnl|spawnlp|spawnv|spawnvp|capture2|capture2e|capture3|Command|ProcessBuilder|StartProcess)\b|%x|\bqx)",
            r#"\s*[\(\[{]?\s*\[?\s*((?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')(?:\s*,\s*(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'))*)"#
        ))
        .expect("static regex")
    })
}

fn rust_command_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r#"Command::new\(\s*"((?:[^"\\]|\\.)*)"\s*\)"#,
            r#"((?:\s*\.\s*args?\(\s*(?:&?\[[^\]]*\]|"(?:[^"\\]|\\.)*")\s*\))*)"#
        ))
        .expect("static regex")
    })
}

fn awk_pipe_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#""((?:[^"\\]|\\.)*)"\s*\|\s*getline|\|\s*"((?:[^"\\]|\\.)*)""#)
            .expect("static regex")
    })
}

/// Largest piece of code scanned for embedded commands.
const MAX_CODE_BYTES: usize = 64 * 1024;

fn char_code_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"\b(?:chr|unichr)\(\s*([0-9]{1,7})\s*\)",
            r"|\bString\.fromCharCode\(\s*([0-9 ,]+)\)",
            r"|\b([0-9]{1,7})\.chr\b",
        ))
        .expect("static regex")
    })
}

fn map_chr_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"\bmap\(\s*chr\s*,\s*[\[\(]([0-9 ,]+)[\]\)]\s*\)|\bsprintf\(\s*\x22((?:[^\x22%\\]|%c|%%)*)\x22\s*,\s*([0-9 ,]+)\)")
            .expect("static regex")
    })
}

fn join_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?:''|"")\.join\(\s*("(?:[^"\\]|\\.)*")\s*\)"#).expect("static regex")
    })
}

/// A double-quoted literal holding `text`.
fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The code with strings built from pieces written whole: character codes (`chr(110)`,
/// `String.fromCharCode(110, 115)`, `110.chr`) become literals, and adjacent literals that the
/// language concatenates (`"a" "b"` in awk and Python, `+` in Python, JavaScript and Ruby, `.`
/// in Perl and PHP, `..` in Lua) become one. `system("nse" "nter")` then reads as the command
/// it runs.
pub fn fold_strings(code: &str) -> String {
    let code = cut(code, MAX_CODE_BYTES);
    let coded = char_code_re().replace_all(code, |c: &regex::Captures<'_>| {
        let codes: Vec<u32> = if let Some(m) = c.get(1).or_else(|| c.get(3)) {
            m.as_str().parse().ok().into_iter().collect()
        } else {
            c.get(2)
                .map(|m| {
                    m.as_str()
                        .split(',')
                        .filter_map(|n| n.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let text: String = codes.into_iter().filter_map(char::from_u32).collect();
        quote_literal(&text)
    });
    // `''.join(map(chr, [...]))` is the joined literal once the codes are.
    let coded = map_chr_re().replace_all(&coded, |c: &regex::Captures<'_>| {
        let codes = c.get(1).or_else(|| c.get(3)).map_or("", |m| m.as_str());
        let mut chars = codes
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .filter_map(char::from_u32);
        let Some(format) = c.get(2) else {
            return quote_literal(&chars.collect::<String>());
        };
        // `sprintf("%c%c /tmp/x", 105, 110)`: each `%c` takes the next code.
        let mut text = String::new();
        let mut rest = format.as_str();
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            match rest[at..].get(..2) {
                Some("%c") => text.extend(chars.next()),
                _ => text.push('%'),
            }
            rest = rest.get(at + 2..).unwrap_or("");
        }
        text.push_str(rest);
        quote_literal(&text)
    });
    let coded = join_re().replace_all(&coded, "$1");
    let coded = substitute_names(&coded);
    let code = coded.as_str();
    let mut out = String::with_capacity(code.len());
    let mut pending: Option<String> = None;
    let mut last = 0;
    for cap in literal_re().captures_iter(code) {
        let Some(whole) = cap.get(0) else { continue };
        let value = cap
            .get(1)
            .or_else(|| cap.get(2))
            .map(|m| unescape(m.as_str()))
            .unwrap_or_default();
        let gap = &code[last..whole.start()];
        let joins = matches!(gap.trim(), "" | "+" | "." | "..");
        match pending.as_mut() {
            Some(p) if joins => p.push_str(&value),
            _ => {
                if let Some(p) = pending.take() {
                    out.push_str(&quote_literal(&p));
                }
                out.push_str(gap);
                pending = Some(value);
            }
        }
        last = whole.end();
    }
    if let Some(p) = pending.take() {
        out.push_str(&quote_literal(&p));
    }
    out.push_str(&code[last..]);
    out
}

/// Most names [`substitute_names`] tracks in one piece of code.
const MAX_NAMES: usize = 64;
/// Most bytes the code may grow to once names are replaced by their literals.
const MAX_SUBSTITUTED_BYTES: usize = 2 * MAX_CODE_BYTES;

fn name_assign_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r#"(?:^|[;{(\s])((?:my\s+|local\s+|var\s+|let\s+|const\s+)?\$?[A-Za-z_][A-Za-z0-9_]*)"#,
            r#"\s*=\s*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')\s*(?:;|\n|\)|$)"#
        ))
        .expect("static regex")
    })
}

fn name_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\$?[A-Za-z_][A-Za-z0-9_]*"#)
            .expect("static regex")
    })
}

/// The code with each use of a name replaced by the literal last assigned to it before that
/// point (`c = "nsenter"`, `my $c = '...'`, awk's `c=sprintf("%c..", ...)` once its codes are
/// folded), so `system(c " -t 1 -m sh")` reads as the command it runs. After an assignment that
/// is not a literal (`c = f()`, `c += x`) the name is not known until the next literal one. The
/// code is read straight through: a branch or loop may run it in another order.
fn substitute_names(code: &str) -> String {
    let mut literal_at: HashMap<usize, &str> = HashMap::new();
    for cap in name_assign_re().captures_iter(code) {
        if literal_at.len() >= MAX_NAMES * 4 {
            break;
        }
        let (Some(lhs), Some(value)) = (cap.get(1), cap.get(2)) else {
            continue;
        };
        let name = lhs
            .as_str()
            .rsplit(char::is_whitespace)
            .next()
            .unwrap_or("");
        literal_at.insert(lhs.end() - name.len(), value.as_str());
    }
    if literal_at.is_empty() {
        return code.to_string();
    }
    let mut current: HashMap<&str, Option<&str>> = HashMap::new();
    let mut out = String::with_capacity(code.len());
    let mut last = 0;
    for m in name_re().find_iter(code) {
        let token = m.as_str();
        if token.starts_with(['"', '\'']) {
            continue;
        }
        let after = code[m.end()..].trim_start();
        let assigns = after.starts_with('=') && !after.starts_with("==")
            || after.starts_with("+=")
            || after.starts_with(".=");
        if assigns {
            let value = literal_at.get(&m.start()).copied();
            if current.len() < MAX_NAMES || current.contains_key(token) {
                current.insert(token, value.filter(|_| !after.starts_with(['+', '.'])));
            }
            continue;
        }
        let Some(Some(value)) = current.get(token) else {
            continue;
        };
        let before = code[..m.start()].chars().next_back();
        if matches!(before, Some('.' | ':' | '-' | '>')) && !token.starts_with('$') {
            continue;
        }
        if out.len() + value.len() > MAX_SUBSTITUTED_BYTES {
            // Many uses of a long literal: the rest stays as written.
            break;
        }
        out.push_str(&code[last..m.start()]);
        out.push_str(value);
        last = m.end();
    }
    out.push_str(&code[last..]);
    out
}

/// An argument vector as the shell command line that runs it.
fn command_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| super::wrappers::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shell command strings the code passes to a process-spawning call.
pub fn shell_strings(lang: Lang, code: &str) -> Vec<String> {
    let folded = fold_strings(code);
    let code = folded.as_str();
    let mut out = Vec::new();
    for cap in call_re().captures_iter(code) {
        let Some(list) = cap.get(1) else { continue };
        let words: Vec<String> = literal_re()
            .captures_iter(list.as_str())
            .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| unescape(m.as_str())))
            .collect();
        if words.is_empty() {
            continue;
        }
        // A list form `["sh", "-c", "cmd"]` or `execl("/bin/sh", "sh", NULL)`: the program is the
        // first element; for `execl`-style calls the second repeats the name as argv[0].
        let call = &code[cap.get(0).map_or(0, |m| m.start())..list.start()];
        let mut words = words;
        if words.len() >= 2 && (call.contains("execl") || call.contains("spawnl")) {
            words.remove(1);
        }
        if call.contains("popen") || call.contains("proc_open") {
            // `popen(CMD, "r")`: one command line, then the mode (or descriptors).
            words.truncate(1);
        }
        if words.len() == 1 {
            out.push(words.remove(0));
        } else {
            out.push(command_line(&words));
        }
    }
    // Rust's `Command::new("prog").arg("a").args(["b", "c"])`: the program, then its arguments.
    for cap in rust_command_re().captures_iter(code) {
        let mut words = vec![unescape(&cap[1])];
        if let Some(chain) = cap.get(2) {
            words.extend(
                literal_re()
                    .captures_iter(chain.as_str())
                    .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| unescape(m.as_str()))),
            );
        }
        out.push(command_line(&words));
    }
    if matches!(lang, Lang::Perl | Lang::Ruby | Lang::Php) {
        // Backtick command execution.
        let mut rest = code;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            out.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    if lang == Lang::Awk {
        for cap in awk_pipe_re().captures_iter(code) {
            if let Some(m) = cap.get(1).or_else(|| cap.get(2)) {
                out.push(unescape(m.as_str()));
            }
        }
    }
    out
}

fn encoded_literal_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r#"(?:b64decode|base64_decode|decode_base64|decode64|atob)\(\s*b?["']([A-Za-z0-9+/=\s]{4,})["']"#,
            r#"|Buffer\.from\(\s*["']([A-Za-z0-9+/=]{4,})["']\s*,\s*["']base64["']"#,
            r#"|pack\(\s*["']H\*?["']\s*,\s*["']([0-9a-fA-F]{2,})["']"#,
            r#"|(?:bytes\.fromhex|hex2bin|unhexlify)\(\s*b?["']([0-9a-fA-F\s]{2,})["']"#
        ))
        .expect("static regex")
    })
}

/// Text hidden in the code as base64 or hex literals handed to a decoding function
/// (`b64decode("...")`, `pack("H*", "...")`, `bytes.fromhex("...")`), decoded.
pub fn decoded_literals(code: &str) -> Vec<String> {
    use base64::Engine;
    let folded = fold_strings(code);
    let code = folded.as_str();
    let mut out = Vec::new();
    for cap in encoded_literal_re().captures_iter(code).take(MAX_LITERALS) {
        let decoded = if let Some(m) = cap.get(1).or_else(|| cap.get(2)) {
            let clean: String = m.as_str().chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .ok()
        } else if let Some(m) = cap.get(3).or_else(|| cap.get(4)) {
            let clean: String = m.as_str().chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(clean).ok()
        } else {
            None
        };
        if let Some(bytes) = decoded {
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// Whether the code calls something that runs code or commands.
pub fn executes(code: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b(system|exec|execSync|eval|popen|spawn|shell_exec|passthru|proc_open|Popen|call|run|check_output)\b|`").expect("static regex")).is_match(code)
}

/// Most string literals taken from one piece of code.
const MAX_LITERALS: usize = 256;

/// The string literals in the code: paths and hosts the code uses are checked as operands.
pub fn literals(code: &str) -> Vec<String> {
    let folded = fold_strings(code);
    let code = folded.as_str();
    literal_re()
        .captures_iter(code)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| unescape(m.as_str())))
        .filter(|l| !l.is_empty())
        .take(MAX_LITERALS)
        .collect()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(super) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        shell_words::split(s).unwrap()
    }

    #[test]
    fn finds_code() {
        let text = |c: Option<Code>| c.map(|c| c.text);
        assert_eq!(
            text(code(Lang::Python, &v("-c 'import os'"), None)).as_deref(),
            Some("import os")
        );
        assert_eq!(
            text(code(Lang::Perl, &v("-MIO -e 'x'"), None)).as_deref(),
            Some("x")
        );
        assert_eq!(
            text(code(Lang::Awk, &v("-F: '{print $1}' /etc/passwd"), None)).as_deref(),
            Some("{print $1}")
        );
        assert_eq!(code(Lang::Python, &v("script.py"), Some("x")), None);
        assert_eq!(
            code(Lang::Python, &v("-"), Some("x")),
            Some(Code {
                text: "x".into(),
                from_stdin: true
            })
        );
    }

    #[test]
    fn finds_shell_strings() {
        assert_eq!(
            shell_strings(
                Lang::Python,
                r#"import os; os.system("nsenter -t 1 -m sh")"#
            ),
            ["nsenter -t 1 -m sh"]
        );
        assert_eq!(
            shell_strings(
                Lang::Python,
                r#"import subprocess; subprocess.call(["sh", "-c", "id"])"#
            ),
            ["sh -c id"]
        );
        assert_eq!(
            shell_strings(Lang::Python, r#"import pty; pty.spawn("/bin/bash")"#),
            ["/bin/bash"]
        );
        assert_eq!(
            shell_strings(Lang::Perl, r#"exec "/bin/sh -i";"#),
            ["/bin/sh -i"]
        );
        assert_eq!(shell_strings(Lang::Ruby, r#"puts `id`"#), ["id"]);
        assert_eq!(
            shell_strings(Lang::Awk, r#"BEGIN {system("/bin/sh")}"#),
            ["/bin/sh"]
        );
        assert_eq!(
            shell_strings(Lang::Python, r#"os.execl("/bin/sh", "sh", "-p")"#),
            ["/bin/sh -p"]
        );
        assert_eq!(
            decoded_literals(r#"os.system(base64.b64decode("aWQ=").decode())"#),
            ["id"]
        );
        assert_eq!(decoded_literals(r#"system(pack("H*","6964"))"#), ["id"]);
        assert_eq!(
            shell_strings(Lang::Awk, r#"BEGIN{system("nse" "nter -t 1 -m true")}"#),
            ["nsenter -t 1 -m true"]
        );
        assert_eq!(
            shell_strings(
                Lang::Python,
                r#"import os; os.system("ns"+'enter'+" -t 1")"#
            ),
            ["nsenter -t 1"]
        );
        assert_eq!(
            shell_strings(Lang::Python, r#"os.system(chr(105)+chr(100))"#),
            ["id"]
        );
        assert_eq!(
            shell_strings(
                Lang::Python,
                r#"import os;os.system(''.join(map(chr,[105,100])))"#
            ),
            ["id"]
        );
        assert_eq!(
            shell_strings(Lang::Perl, r#"system("nsen" . "ter -t 1")"#),
            ["nsenter -t 1"]
        );
        assert_eq!(
            shell_strings(
                Lang::Node,
                r#"require('child_process').execSync(String.fromCharCode(105,100))"#
            ),
            ["id"]
        );
        // A list of arguments is not one string.
        assert_eq!(
            shell_strings(Lang::Python, r#"subprocess.call(["sh", "-c", "id"])"#),
            ["sh -c id"]
        );
    }
}

/// Most files taken from one program's writing calls.
const MAX_WRITTEN: usize = 16;

/// Files the code opens for writing or appending, when their names are literals: Python
/// `open(P, "w"|"a"|"x"|"r+")` and `Path(P).write_text`, Perl `open(F, ">P")`, Ruby and PHP
/// `File.write(P)`, `File.open(P, "w")`, `file_put_contents(P)`, Node `fs.writeFileSync(P)`
/// and `appendFileSync`, Lua `io.open(P, "w")`, awk `print > "P"`.
pub fn written_files(lang: Lang, code: &str) -> Vec<String> {
    static RE: OnceLock<[Regex; 3]> = OnceLock::new();
    let [mode_call, perl_open, direct] = RE.get_or_init(|| {
        [
            // `open("P", "w")`, `io.open('P','a')`, `File.open("P", "w")`, `fopen("P","w")`.
            Regex::new(r#"(?:\bopen|\bfopen)\s*\(\s*["']([^"']+)["']\s*,\s*(?:mode\s*=\s*)?["'][rwax]?b?[wax+]"#)
                .expect("static regex"),
            // Perl `open(F, ">P")`, `open my $f, '>>', 'P'`.
            Regex::new(r#"\bopen\s*\(?\s*(?:my\s+)?\$?\w+\s*,\s*["']\+?>{1,2}\s*(?:["']\s*,\s*["'])?([^"'\s]+)["']"#)
                .expect("static regex"),
            // Calls whose first argument is the file written.
            Regex::new(r#"(?:\bFile\.write|\bIO\.write|file_put_contents|writeFileSync|appendFileSync|writeFile|appendFile|\.write_text|\.write_bytes|>{1,2})\s*\(?\s*["']([^"']+)["']"#)
                .expect("static regex"),
        ]
    });
    let mut out: Vec<String> = Vec::new();
    let mut push = |p: &str| {
        let pathlike = p.starts_with('/') || p.starts_with('~') || p.starts_with('.');
        if pathlike && out.len() < MAX_WRITTEN && !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    };
    for c in mode_call.captures_iter(code) {
        push(&c[1]);
    }
    if lang == Lang::Perl {
        for c in perl_open.captures_iter(code) {
            push(&c[1]);
        }
    }
    for c in direct.captures_iter(code) {
        push(&c[1]);
    }
    // `Path("P").write_text(...)`: the path is the receiver.
    static PATH_RE: OnceLock<Regex> = OnceLock::new();
    let path_re = PATH_RE.get_or_init(|| {
        Regex::new(
            r#"Path\(\s*["']([^"']+)["']\s*\)\.(?:write_text|write_bytes|open\(\s*["'][wa])"#,
        )
        .expect("static regex")
    });
    for c in path_re.captures_iter(code) {
        push(&c[1]);
    }
    out
}

#[cfg(test)]
mod written_tests {
    use super::*;

    #[test]
    fn interpreter_writes_are_found() {
        let w = |l, c| written_files(l, c);
        assert_eq!(
            w(
                Lang::Python,
                r#"open("/etc/ld.so.preload","w").write("/tmp/x.so")"#
            ),
            ["/etc/ld.so.preload"]
        );
        assert_eq!(
            w(Lang::Python, r#"open('/etc/passwd', 'a')"#),
            ["/etc/passwd"]
        );
        assert_eq!(
            w(
                Lang::Python,
                r#"pathlib.Path("/etc/cron.d/x").write_text("* * * * * root id")"#
            ),
            ["/etc/cron.d/x"]
        );
        assert_eq!(
            w(Lang::Perl, r#"open(F, ">>/root/.bashrc"); print F "id"; "#),
            ["/root/.bashrc"]
        );
        assert_eq!(
            w(
                Lang::Node,
                r#"require("fs").writeFileSync("/etc/sudoers.d/x","a")"#
            ),
            ["/etc/sudoers.d/x"]
        );
        assert_eq!(
            w(Lang::Ruby, r#"File.write("/etc/ld.so.preload", "x")"#),
            ["/etc/ld.so.preload"]
        );
        assert!(w(Lang::Python, r#"open("/etc/passwd").read()"#).is_empty());
        assert!(w(Lang::Python, r#"open("/etc/hosts", "r")"#).is_empty());
    }
}

#[cfg(test)]
mod substitution_props {
    use proptest::prelude::*;

    proptest! {
        /// Whatever the code, replacing names by literals ends, stays bounded and leaves code
        /// without assignments as it was.
        #[test]
        fn substitution_is_bounded(code in "[a-c$=;\"' %0-9(),.+]{0,200}", long in 0usize..2000) {
            let folded = super::fold_strings(&code);
            prop_assert!(folded.len() <= 4 * super::MAX_CODE_BYTES);
            let value = "x".repeat(long);
            let many = format!("c=\"{value}\"; system({})", "c ".repeat(4000));
            prop_assert!(super::substitute_names(&many).len() <= super::MAX_SUBSTITUTED_BYTES + many.len());
            if !code.contains('=') {
                prop_assert_eq!(super::substitute_names(&code), code);
            }
        }
    }
}
