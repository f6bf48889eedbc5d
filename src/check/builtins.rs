//! Builtins that change the shell's state, applied to what is known of it: `printf -v`,
//! `read` and `mapfile` from known input (here-strings, heredocs, pipes of computed text),
//! `declare`/`local`/`export` assignments and name references (`-n`), `unset`, and `cd`. This
//! is how `read -r c <<< nsenter; $c` or `printf -v c %s n s e n t e r; $c` is seen through.

use super::eval::{self, Output};
use super::expand::{Field, Lookup, Vars};

/// Most fields `read` and `mapfile` assign from one input.
const MAX_READ_FIELDS: usize = 4096;

/// Whether `name` only changes the shell's state (so its output is known to be empty).
pub fn is_state_builtin(name: &str) -> bool {
    matches!(
        name,
        "read"
            | "mapfile"
            | "readarray"
            | "declare"
            | "typeset"
            | "local"
            | "export"
            | "readonly"
            | "unset"
            | "cd"
            | "pushd"
            | "popd"
            | "shopt"
            | "set"
            | "alias"
            | "unalias"
    )
}

/// Applies builtin `name` (its expanded words `fields`, the first being the name) with input
/// `stdin` to `vars`.
pub fn apply(name: &str, fields: &[Field], stdin: Option<&Output>, vars: &mut Vars) {
    let args = fields.get(1..).unwrap_or_default();
    match name {
        "printf" => printf_v(args, vars),
        "read" => read(args, stdin, vars),
        "mapfile" | "readarray" => mapfile(args, stdin, vars),
        "declare" | "typeset" | "local" | "export" | "readonly" => declare(args, vars),
        "unset" => {
            for a in args.iter().filter(|a| !a.text.starts_with('-')) {
                vars.unset(&a.text);
            }
        }
        "cd" | "pushd" => {
            let dir = args
                .iter()
                .find(|a| !a.text.starts_with('-') || a.text == "-");
            match dir {
                Some(d) if d.known() && d.text != "-" && !d.text.starts_with('~') => {
                    vars.cd(Some(&d.text))
                }
                _ => vars.cd(None),
            }
        }
        "popd" => vars.cd(None),
        _ => {}
    }
}

/// `printf -v NAME FORMAT ARGS...`.
fn printf_v(args: &[Field], vars: &mut Vars) {
    let Some(at) = args.iter().position(|a| a.text == "-v") else {
        return;
    };
    let Some(name) = args.get(at + 1) else {
        return;
    };
    let rest = &args[at + 2..];
    let value = rest
        .iter()
        .all(Field::known)
        .then(|| {
            let texts: Vec<String> = rest.iter().map(|f| f.text.clone()).collect();
            eval::printf_text(&texts)
        })
        .flatten();
    vars.set(&name.text, value);
}

/// The text `read`/`mapfile` consume: stdin when known.
fn input(stdin: Option<&Output>) -> Option<&str> {
    stdin.and_then(|o| o.text.as_deref())
}

/// The words of `line` split on IFS (whitespace by default; an empty IFS does not split).
fn split_ifs<'a>(line: &'a str, vars: &Vars) -> Vec<&'a str> {
    let ifs = match vars.get("IFS") {
        Lookup::Known(v) => v.to_string(),
        _ => " \t\n".to_string(),
    };
    if ifs.is_empty() {
        return vec![line];
    }
    line.split(|c| ifs.contains(c))
        .filter(|w| !w.is_empty())
        .take(MAX_READ_FIELDS)
        .collect()
}

/// `read [-r] [-a ARRAY] [-d DELIM] [-p PROMPT] [-n N] ... [NAME...]`.
fn read(args: &[Field], stdin: Option<&Output>, vars: &mut Vars) {
    let mut names = Vec::new();
    let mut array = None;
    let mut delim = '\n';
    let mut raw = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].text.as_str();
        match a {
            "-a" => {
                array = args.get(i + 1).map(|f| f.text.clone());
                i += 2;
                continue;
            }
            "-d" => {
                delim = args
                    .get(i + 1)
                    .and_then(|f| f.text.chars().next())
                    .unwrap_or('\0');
                i += 2;
                continue;
            }
            "-p" | "-n" | "-N" | "-t" | "-u" | "-i" => {
                i += 2;
                continue;
            }
            _ if a.starts_with('-') && a.len() > 1 => {
                raw |= a.contains('r');
                if a.ends_with('a') {
                    array = args.get(i + 1).map(|f| f.text.clone());
                    i += 2;
                    continue;
                }
            }
            _ => names.push(a.to_string()),
        }
        i += 1;
    }
    let line = input(stdin).map(|t| {
        let line = t.split(delim).next().unwrap_or("");
        if raw {
            line.to_string()
        } else {
            line.replace("\\\n", "").replace('\\', "")
        }
    });
    if let Some(array) = array {
        let elements = line
            .as_deref()
            .map(|l| split_ifs(l, vars).into_iter().map(String::from).collect());
        vars.set_array(&array, elements);
        return;
    }
    if names.is_empty() {
        names.push("REPLY".to_string());
    }
    let Some(line) = line else {
        for n in &names {
            vars.set(n, None);
        }
        return;
    };
    if names.len() == 1 {
        // One name takes the whole line, without leading and trailing IFS whitespace.
        vars.set(&names[0], Some(line.trim().to_string()));
        return;
    }
    let words = split_ifs(&line, vars);
    for (k, n) in names.iter().enumerate() {
        let value = if k + 1 == names.len() {
            words.get(k..).map(|w| w.join(" ")).unwrap_or_default()
        } else {
            words.get(k).map(|w| w.to_string()).unwrap_or_default()
        };
        vars.set(n, Some(value));
    }
}

/// `mapfile [-t] [-d DELIM] [-n N] [-s N] ... [ARRAY]` (also `readarray`).
fn mapfile(args: &[Field], stdin: Option<&Output>, vars: &mut Vars) {
    let mut name = "MAPFILE".to_string();
    let mut strip = false;
    let mut delim = '\n';
    let mut i = 0;
    while i < args.len() {
        let a = args[i].text.as_str();
        match a {
            "-d" => {
                delim = args
                    .get(i + 1)
                    .and_then(|f| f.text.chars().next())
                    .unwrap_or('\0');
                i += 2;
                continue;
            }
            "-n" | "-O" | "-s" | "-u" | "-C" | "-c" => {
                i += 2;
                continue;
            }
            _ if a.starts_with('-') && a.len() > 1 => strip |= a.contains('t'),
            _ => name = a.to_string(),
        }
        i += 1;
    }
    let elements = input(stdin).map(|t| {
        let mut out: Vec<String> = t
            .split_inclusive(delim)
            .take(MAX_READ_FIELDS)
            .map(|l| {
                if strip {
                    l.strip_suffix(delim).unwrap_or(l).to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        if out.last().is_some_and(String::is_empty) {
            out.pop();
        }
        out
    });
    vars.set_array(&name, elements);
}

/// `declare [-n] [-a] [-x] ... NAME=VALUE...`.
fn declare(args: &[Field], vars: &mut Vars) {
    let nameref = args
        .iter()
        .take_while(|a| a.text.starts_with('-'))
        .any(|a| a.text.contains('n'));
    for f in args.iter().filter(|a| !a.text.starts_with('-')) {
        let Some((n, v)) = f.text.split_once('=') else {
            continue;
        };
        let (n, append) = match n.strip_suffix('+') {
            Some(n) => (n, true),
            None => (n, false),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        if nameref {
            if f.known() {
                vars.set_ref(n, v);
            }
        } else {
            let value = f.known().then(|| v.to_string());
            let value = if append {
                super::expand::appended(vars.get(n), value)
            } else {
                value
            };
            vars.set(n, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(t: &str) -> Field {
        Field {
            text: t.to_string(),
            ..Field::default()
        }
    }

    fn run(words: &[&str], stdin: Option<&str>, vars: &mut Vars) {
        let fields: Vec<Field> = words.iter().map(|w| field(w)).collect();
        let out = stdin.map(|t| Output::known(t.to_string(), 0));
        apply(words[0], &fields, out.as_ref(), vars);
    }

    fn known(vars: &Vars, name: &str) -> Option<String> {
        match vars.get(name) {
            Lookup::Known(v) => Some(v.to_string()),
            _ => None,
        }
    }

    #[test]
    fn state_builtins_set_what_bash_would() {
        let mut v = Vars::default();
        run(&["read", "-r", "c"], Some("nsenter\n"), &mut v);
        assert_eq!(known(&v, "c").as_deref(), Some("nsenter"));
        run(&["read", "a", "b"], Some("x y z\n"), &mut v);
        assert_eq!(known(&v, "a").as_deref(), Some("x"));
        assert_eq!(known(&v, "b").as_deref(), Some("y z"));
        run(&["mapfile", "-t", "arr"], Some("one\ntwo\n"), &mut v);
        assert_eq!(v.array("arr"), Some(vec!["one".into(), "two".into()]));
        run(&["read", "-ra", "w"], Some("p q\n"), &mut v);
        assert_eq!(v.array("w"), Some(vec!["p".into(), "q".into()]));
        run(&["printf", "-v", "p", "%s", "n", "s"], None, &mut v);
        assert_eq!(known(&v, "p").as_deref(), Some("ns"));
        run(&["declare", "-n", "r=target"], None, &mut v);
        v.set("target", Some("value".into()));
        assert_eq!(known(&v, "r").as_deref(), Some("value"));
        run(&["cd", "/proc"], None, &mut v);
        run(&["cd", "sys/kernel"], None, &mut v);
        assert_eq!(
            v.place("core_pattern").as_deref(),
            Some("/proc/sys/kernel/core_pattern")
        );
        run(&["cd", "-"], None, &mut v);
        assert_eq!(v.place("x"), None);
        run(&["read", "u"], None, &mut v);
        assert_eq!(v.get("u"), Lookup::Unknown, "unknown input: unknown value");
    }
}
