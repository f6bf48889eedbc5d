//! Commands that run another command given as their arguments (`sudo`, `env`, `timeout`,
//! `xargs`, `find -exec`, `busybox`, ...) or as a shell string (`su -c`, `watch`, `flock -c`,
//! `tar --checkpoint-action=exec=`, `ssh -o ProxyCommand=`, `vim -c ':!...'`).

use std::ops::Range;

/// What a wrapper runs, as positions in its argument list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inner {
    /// Argument ranges that form commands (name first).
    pub commands: Vec<Range<usize>>,
    /// Shell strings the wrapper runs (as `sh -c` would).
    pub scripts: Vec<String>,
    /// `NAME=value` assignments the wrapper puts in the inner command's environment.
    pub env: Vec<String>,
    /// The inner command also receives the wrapper's stdin as arguments (`xargs`).
    pub stdin_args: bool,
    /// Running a bare shell through this wrapper is a known shell escape (GTFOBins); `sudo` and
    /// friends are the ordinary way to get a shell and do not count.
    pub escape_parent: bool,
}

struct Spec {
    /// Options that take the next argument as their value (or `--opt=value`).
    value_opts: &'static [&'static str],
    /// Options whose value is a shell string that the wrapper runs.
    script_opts: &'static [&'static str],
    /// Operands before the command (`timeout DURATION cmd`, `chroot DIR cmd`).
    positional: usize,
    /// `NAME=value` words before the command are environment assignments.
    assigns: bool,
    /// Options that mean no command is run (`command -v`, `strace -p`).
    no_command: &'static [&'static str],
    escape_parent: bool,
}

const NONE: &[&str] = &[];

fn spec(name: &str) -> Option<Spec> {
    let s = |value_opts, script_opts, positional, assigns, no_command, escape_parent| Spec {
        value_opts,
        script_opts,
        positional,
        assigns,
        no_command,
        escape_parent,
    };
    Some(match name {
        "sudo" => s(
            &[
                "-u",
                "-g",
                "-h",
                "-p",
                "-C",
                "-D",
                "-r",
                "-t",
                "-T",
                "-U",
                "--user",
                "--group",
                "--host",
                "--prompt",
                "--close-from",
                "--chdir",
                "--role",
                "--type",
                "--command-timeout",
                "--other-user",
            ],
            NONE,
            0,
            true,
            &[
                "-l",
                "--list",
                "-v",
                "--validate",
                "-k",
                "-K",
                "-e",
                "--edit",
                "-V",
            ],
            false,
        ),
        "doas" => s(&["-u", "-C"], NONE, 0, false, NONE, false),
        "env" => s(
            &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"],
            &["-S", "--split-string"],
            0,
            true,
            NONE,
            true,
        ),
        "nice" => s(&["-n", "--adjustment"], NONE, 0, false, NONE, true),
        "ionice" => s(
            &["-c", "-n", "--class", "--classdata"],
            NONE,
            0,
            false,
            &["-p", "-P", "-u", "--pid", "--pgid", "--uid"],
            true,
        ),
        "chrt" => s(NONE, NONE, 1, false, &["-p", "--pid", "-m", "--max"], true),
        "taskset" => s(NONE, NONE, 1, false, &["-p", "--pid"], true),
        "stdbuf" => s(
            &["-i", "-o", "-e", "--input", "--output", "--error"],
            NONE,
            0,
            false,
            NONE,
            true,
        ),
        "timeout" => s(
            &["-s", "--signal", "-k", "--kill-after"],
            NONE,
            1,
            false,
            NONE,
            true,
        ),
        "nohup" | "setsid" | "builtin" | "unbuffer" | "catchsegv" | "fakeroot"
        | "dbus-run-session" | "setarch" | "linux32" | "linux64" | "proot" => s(
            NONE,
            NONE,
            usize::from(name == "setarch"),
            false,
            NONE,
            true,
        ),
        "exec" => s(&["-a"], NONE, 0, false, NONE, false),
        "command" => s(NONE, NONE, 0, false, &["-v", "-V"], false),
        "time" => s(
            &["-f", "--format", "-o", "--output"],
            NONE,
            0,
            false,
            NONE,
            false,
        ),
        "strace" | "ltrace" => s(
            &[
                "-o", "-e", "-s", "-E", "-u", "-a", "-b", "-I", "-O", "-S", "-X", "-P", "-n", "-l",
                "-L",
            ],
            NONE,
            0,
            false,
            &["-p", "--attach"],
            true,
        ),
        "flock" => s(
            &["-w", "--timeout", "-E", "--conflict-exit-code"],
            &["-c", "--command"],
            1,
            false,
            NONE,
            true,
        ),
        "xargs" => s(
            &[
                "-I",
                "-n",
                "-P",
                "-d",
                "-a",
                "-E",
                "-L",
                "-s",
                "--max-args",
                "--max-procs",
                "--delimiter",
                "--arg-file",
                "--replace",
                "--max-lines",
                "--max-chars",
                "--eof",
                "--process-slot-var",
            ],
            NONE,
            0,
            false,
            NONE,
            true,
        ),
        // `kmod insmod F`, `kmod modprobe M`: kmod's tools by their own names.
        "busybox" | "toybox" | "kmod" => s(
            NONE,
            NONE,
            0,
            false,
            &["--list", "--help", "--install"],
            false,
        ),
        "chroot" => s(&["--userspec", "--groups"], NONE, 1, false, NONE, false),
        "nsenter" => s(
            &["-t", "--target", "-S", "--setuid", "-G", "--setgid"],
            NONE,
            0,
            false,
            NONE,
            false,
        ),
        "unshare" => s(
            &[
                "--propagation",
                "--setgroups",
                "--map-user",
                "--map-group",
                "--map-users",
                "--map-groups",
                "--wd",
                "-R",
                "--root",
                "-w",
                "-S",
                "-G",
                "--setuid",
                "--setgid",
            ],
            NONE,
            0,
            false,
            NONE,
            false,
        ),
        "runuser" => s(
            &[
                "-u",
                "-g",
                "-G",
                "--user",
                "--group",
                "--supp-group",
                "-s",
                "--shell",
                "-w",
                "--whitelist-environment",
            ],
            &["-c", "--command"],
            0,
            false,
            NONE,
            false,
        ),
        "su" => s(
            &["-s", "--shell", "-g", "-G", "--group", "--supp-group", "-w"],
            &["-c", "--command", "-C", "--session-command"],
            0,
            false,
            NONE,
            false,
        ),
        "script" => s(
            &[
                "-E",
                "--echo",
                "-I",
                "-O",
                "-B",
                "-T",
                "-m",
                "--logging-format",
                "--log-in",
                "--log-out",
                "--log-io",
                "--log-timing",
            ],
            &["-c", "--command"],
            0,
            false,
            NONE,
            true,
        ),
        "systemd-run" => s(
            &[
                "-p",
                "--property",
                "-u",
                "--unit",
                "-E",
                "--setenv",
                "--uid",
                "--gid",
                "-M",
                "--machine",
                "--slice",
                "--description",
                "--working-directory",
                "-H",
                "--host",
                "--on-calendar",
                "--on-active",
                "--on-boot",
                "--on-startup",
                "--service-type",
                "--nice",
                "--timer-property",
                "--path-property",
                "--socket-property",
            ],
            NONE,
            0,
            false,
            NONE,
            false,
        ),
        "setpriv" => s(
            &[
                "--reuid",
                "--regid",
                "--groups",
                "--inh-caps",
                "--ambient-caps",
                "--bounding-set",
                "--securebits",
                "--selinux-label",
                "--apparmor-profile",
                "--pdeathsig",
            ],
            NONE,
            0,
            false,
            NONE,
            true,
        ),
        _ => return None,
    })
}

/// Whether `name` is a wrapper this module knows.
pub fn is_wrapper(name: &str) -> bool {
    spec(name).is_some()
        || matches!(
            name,
            "find"
                | "watch"
                | "capsh"
                | "sg"
                | "tar"
                | "ssh"
                | "scp"
                | "sftp"
                | "rsync"
                | "zip"
                | "gdb"
                | "vim"
                | "vi"
                | "nvim"
                | "view"
                | "ex"
                | "vimdiff"
                | "rvim"
                | "git"
        )
}

fn assignment_like(a: &str) -> bool {
    match a.split_once('=') {
        Some((n, _)) => {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !n.as_bytes()[0].is_ascii_digit()
        }
        None => false,
    }
}

/// What `name args...` runs, if it is a wrapper.
pub fn unwrap(name: &str, args: &[String]) -> Option<Inner> {
    match name {
        "find" => return Some(find_exec(args)),
        "watch" => return Some(watch(args)),
        "capsh" => {
            // `capsh ... -- ARGS` runs `/bin/bash ARGS`.
            let i = args.iter().position(|a| a == "--")?;
            let rest = &args[i + 1..];
            return Some(Inner {
                scripts: vec![bash_args_script(rest)],
                escape_parent: true,
                ..Inner::default()
            });
        }
        "sg" => {
            let rest = args.get(1..).unwrap_or_default();
            let rest: Vec<&String> = rest.iter().filter(|a| *a != "-c").collect();
            if rest.is_empty() {
                return None;
            }
            let script = rest
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return Some(Inner {
                scripts: vec![script],
                escape_parent: true,
                ..Inner::default()
            });
        }
        "tar" => {
            return embedded(
                args,
                &[
                    "--checkpoint-action=exec=",
                    "--to-command=",
                    "--use-compress-program=",
                    "--rsh-command=",
                    "--info-script=",
                    "--new-volume-script=",
                ],
                &[
                    "-I",
                    "--to-command",
                    "--use-compress-program",
                    "-F",
                    "--info-script",
                ],
            )
        }
        "ssh" | "scp" | "sftp" => {
            let mut scripts = Vec::new();
            let mut i = 0;
            while i < args.len() {
                let a = &args[i];
                let opt = if a == "-o" {
                    args.get(i + 1).map(String::as_str)
                } else {
                    a.strip_prefix("-o")
                };
                if let Some(o) = opt {
                    let lower = o.to_ascii_lowercase();
                    for key in [
                        "proxycommand=",
                        "localcommand=",
                        "proxycommand ",
                        "localcommand ",
                    ] {
                        if lower.starts_with(key) {
                            scripts.push(o[key.len()..].to_string());
                        }
                    }
                }
                i += 1;
            }
            return (!scripts.is_empty()).then(|| Inner {
                scripts,
                escape_parent: true,
                ..Inner::default()
            });
        }
        "rsync" => return embedded(args, &["--rsh=", "-e"], &["-e", "--rsh"]),
        "zip" => return embedded(args, &["--unzip-command="], &["-TT", "--unzip-command"]),
        "git" => {
            let mut scripts = Vec::new();
            for w in args.windows(2) {
                if w[0] == "-c" {
                    if let Some(code) = w[1].split_once('=').and_then(|(k, v)| git_code(k, v)) {
                        scripts.push(code);
                    }
                }
            }
            // `git config [--global|--file F|...] KEY VALUE`, `git config set KEY VALUE`: the
            // command is stored and run by a later git.
            if let Some(at) = args.iter().position(|a| a == "config") {
                let mut rest = args[at + 1..].iter().filter(|a| !a.starts_with('-'));
                let mut key = rest.next();
                if matches!(key.map(String::as_str), Some("set" | "--add")) {
                    key = rest.next();
                }
                let file_option = args[at + 1..].windows(2).any(|w| {
                    matches!(w[0].as_str(), "-f" | "--file" | "--blob") && Some(&w[1]) == key
                });
                if let (Some(k), Some(v), false) = (key, rest.next(), file_option) {
                    scripts.extend(git_code(k, v));
                }
            }
            return (!scripts.is_empty()).then(|| Inner {
                scripts,
                escape_parent: true,
                ..Inner::default()
            });
        }
        "gdb" => {
            let mut scripts = Vec::new();
            for w in args.windows(2) {
                if w[0] == "-ex"
                    || w[0] == "--ex"
                    || w[0] == "-eval-command"
                    || w[0] == "--eval-command"
                {
                    let v = w[1].trim();
                    if let Some(cmd) = v.strip_prefix('!').or_else(|| v.strip_prefix("shell ")) {
                        scripts.push(cmd.to_string());
                    }
                }
            }
            return (!scripts.is_empty()).then(|| Inner {
                scripts,
                escape_parent: true,
                ..Inner::default()
            });
        }
        "vim" | "vi" | "nvim" | "view" | "ex" | "vimdiff" | "rvim" => {
            let mut scripts = Vec::new();
            let mut i = 0;
            while i < args.len() {
                let v = if args[i] == "-c" || args[i] == "--cmd" {
                    i += 1;
                    args.get(i).map(String::as_str)
                } else {
                    args[i].strip_prefix('+')
                };
                if let Some(v) = v {
                    // `:!cmd`, `:shell`, `:set shell=X | shell`, `:terminal cmd`, `:py3 ...`.
                    scripts.extend(super::runners::ex_commands(v));
                }
                i += 1;
            }
            return (!scripts.is_empty()).then(|| Inner {
                scripts,
                escape_parent: true,
                ..Inner::default()
            });
        }
        _ => {}
    }
    let spec = spec(name)?;
    let mut inner = Inner {
        escape_parent: spec.escape_parent,
        stdin_args: name == "xargs",
        ..Inner::default()
    };
    let mut i = 0;
    let mut positional = spec.positional;
    if name == "setarch" && args.first().is_some_and(|a| a.starts_with('-')) {
        // util-linux 2.33 and later: the architecture is optional (`setarch -3 CMD`).
        positional = 0;
    }
    // `runuser USER -c`: without -u the first operand is the user.
    let mut user_operand = name == "runuser" && !args.iter().any(|a| a == "-u" || a == "--user");
    let mut script_found = false;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            i += 1;
            if name == "su" {
                // `su root -- -c CMD`: what follows the user goes to the user's shell, which
                // runs a `-c` it is given.
                continue;
            }
            break;
        }
        if spec.no_command.contains(&a) {
            return None;
        }
        if spec.script_opts.contains(&a) {
            // `env -S 'cmd args'` splits its string into a command line; parsing it as a shell
            // string finds the same command.
            if let Some(v) = args.get(i + 1) {
                inner.scripts.push(v.clone());
                script_found = true;
            }
            i += 2;
            continue;
        }
        if let Some((opt, v)) = a.split_once('=') {
            if a.starts_with("--") {
                if spec.script_opts.contains(&opt) {
                    inner.scripts.push(v.to_string());
                    script_found = true;
                }
                i += 1;
                continue;
            }
        }
        if a.starts_with('-') && a.len() > 1 {
            if spec.value_opts.contains(&a) {
                i += 2;
            } else if let Some(attached) = cluster_script(&spec, a) {
                // `script -qc CMD`, `su -lc CMD`: flags clustered before the script option;
                // `script -c'CMD'`, `su -qcCMD`: its value attached, as getopt reads it.
                match attached {
                    Some(v) => {
                        inner.scripts.push(v);
                        i += 1;
                    }
                    None => {
                        if let Some(v) = args.get(i + 1) {
                            inner.scripts.push(v.clone());
                        }
                        i += 2;
                    }
                }
                script_found = true;
            } else {
                // A short option with its value attached (`-n10`, `-t1`) or a flag cluster
                // (`sudo -lU bob` lists, it runs nothing).
                let cluster_stops = name == "sudo"
                    && !a.starts_with("--")
                    && a.len() > 2
                    && spec
                        .no_command
                        .iter()
                        .any(|o| o.len() == 2 && a[1..].contains(&o[1..]));
                if cluster_stops {
                    return None;
                }
                i += 1;
            }
            continue;
        }
        if spec.assigns && assignment_like(a) {
            inner.env.push(a.to_string());
            i += 1;
            continue;
        }
        if user_operand {
            user_operand = false;
            i += 1;
            continue;
        }
        if positional > 0 {
            positional -= 1;
            i += 1;
            continue;
        }
        if name == "su" || name == "script" {
            // `su -l bob -c CMD`, `script -q log -c CMD`: these take their options after the
            // user or the log file, and never run their operands as a command.
            i += 1;
            continue;
        }
        break;
    }
    if spec.assigns {
        while i < args.len() && assignment_like(&args[i]) {
            inner.env.push(args[i].clone());
            i += 1;
        }
    }
    if name == "su" || name == "script" {
        // Without -c these start a shell: not a command in the arguments.
        return script_found.then_some(inner);
    }
    if i < args.len() {
        inner.commands.push(i..args.len());
    } else if name == "chroot" && positional == 0 && !script_found {
        // `chroot DIR` alone starts a shell inside DIR.
        return Some(inner);
    }
    (!inner.commands.is_empty() || !inner.scripts.is_empty()).then_some(inner)
}

/// A short-option word holding a script option as getopt reads it: flags, then the script
/// option, then its value attached (`-c'CMD'`, `-qcCMD`: `Some(value)`) or in the next
/// argument (`-qc CMD`: `None`). A value-taking option before it takes the rest of the word as
/// its own value, so there is no script option in it (`-sbash` is a shell named `bash`).
fn cluster_script(spec: &Spec, a: &str) -> Option<Option<String>> {
    let rest = a.strip_prefix('-').filter(|r| !r.starts_with('-'))?;
    for (at, c) in rest.char_indices() {
        let opt = format!("-{c}");
        let value = &rest[at + c.len_utf8()..];
        if spec.script_opts.contains(&opt.as_str()) {
            if at == 0 && value.is_empty() {
                // The option alone: handled by the caller's exact match.
                return None;
            }
            return Some((!value.is_empty()).then(|| value.to_string()));
        }
        if spec.value_opts.contains(&opt.as_str()) {
            return None;
        }
    }
    None
}

/// `find ... -exec CMD ARGS ;` (also `-execdir`, `-ok`, `-okdir`, `+` terminators).
fn find_exec(args: &[String]) -> Inner {
    let mut inner = Inner {
        escape_parent: true,
        ..Inner::default()
    };
    let mut i = 0;
    while i < args.len() {
        if matches!(args[i].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
            let start = i + 1;
            let mut end = start;
            while end < args.len() && args[end] != ";" && args[end] != "+" {
                end += 1;
            }
            if end > start {
                inner.commands.push(start..end);
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    inner
}

/// `watch [options] command...`: the words are joined and run by `sh -c`.
fn watch(args: &[String]) -> Inner {
    const VALUE: &[&str] = &[
        "-n",
        "--interval",
        "-d",
        "--differences",
        "-q",
        "--equexit",
        "-s",
        "--shell",
    ];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            i += 1;
            break;
        }
        if a.starts_with('-') {
            i += if VALUE.contains(&a) && !matches!(a, "-d" | "--differences") {
                2
            } else {
                1
            };
            continue;
        }
        break;
    }
    let script = args.get(i..).unwrap_or_default().join(" ");
    Inner {
        scripts: if script.is_empty() {
            vec![]
        } else {
            vec![script]
        },
        escape_parent: true,
        ..Inner::default()
    }
}

/// Shell strings in `--opt=CMD` / `-o CMD` forms.
fn embedded(args: &[String], prefixes: &[&str], value_opts: &[&str]) -> Option<Inner> {
    let mut scripts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if value_opts.contains(&a.as_str()) {
            if let Some(v) = args.get(i + 1) {
                scripts.push(v.clone());
            }
            i += 2;
            continue;
        }
        for p in prefixes {
            if let Some(v) = a.strip_prefix(p) {
                if !v.is_empty() && p.ends_with('=') {
                    scripts.push(v.to_string());
                }
            }
        }
        i += 1;
    }
    (!scripts.is_empty()).then(|| Inner {
        scripts,
        escape_parent: true,
        ..Inner::default()
    })
}

/// `bash ARGS` expressed as a script string for re-analysis.
fn bash_args_script(rest: &[String]) -> String {
    let mut s = String::from("bash");
    for a in rest {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

/// Quote a word so that re-parsing gives it back unchanged.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command a git configuration key runs, if `key` is one that git starts as a command
/// (git-config(1): core.pager, core.editor, core.sshCommand, core.fsmonitor, core.askPass,
/// core.gitProxy, sequence.editor, diff.external, pager.*, gpg.program, filter drivers, textconv
/// and diff drivers, merge drivers, uploadpack.packObjectsHook; aliases and credential helpers
/// that start with `!`).
fn git_code(key: &str, value: &str) -> Option<String> {
    let k = key.to_ascii_lowercase();
    let last = k.rsplit('.').next().unwrap_or("");
    let command = matches!(
        k.as_str(),
        "core.pager"
            | "core.sshcommand"
            | "core.editor"
            | "core.fsmonitor"
            | "core.hookspath"
            | "core.askpass"
            | "core.gitproxy"
            | "sequence.editor"
            | "diff.external"
            | "gpg.program"
            | "uploadpack.packobjectshook"
    ) || k.starts_with("pager.")
        || (k.starts_with("gpg.") && last == "program")
        || (k.starts_with("filter.") && matches!(last, "smudge" | "clean" | "process"))
        || (k.starts_with("diff.") && matches!(last, "textconv" | "command"))
        || (k.starts_with("merge.") && last == "driver");
    let bang = (k.starts_with("alias.") || k.starts_with("credential.")) && value.starts_with('!');
    (command || bang).then(|| value.trim_start_matches('!').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        shell_words::split(s).unwrap()
    }

    #[test]
    fn common_wrappers() {
        let a = v("-u root -E FOO=1 nsenter -t 1");
        let inner = unwrap("sudo", &a).unwrap();
        assert_eq!(&a[inner.commands[0].clone()], &v("nsenter -t 1")[..]);
        assert_eq!(inner.env, ["FOO=1"]);
        let a = v("-s KILL 5 nice -n 5 sh");
        let inner = unwrap("timeout", &a).unwrap();
        assert_eq!(&a[inner.commands[0].clone()], &v("nice -n 5 sh")[..]);
        let a = v(". -name x -exec cat {} ; -exec sh -c 'id' ;");
        assert_eq!(unwrap("find", &a).unwrap().commands.len(), 2);
        assert_eq!(unwrap("su", &v("-c 'id' root")).unwrap().scripts, ["id"]);
        assert_eq!(unwrap("su", &v("-l bob -c id")).unwrap().scripts, ["id"]);
        assert_eq!(unwrap("su", &v("- -c id")).unwrap().scripts, ["id"]);
        assert_eq!(unwrap("su", &v("-lc id bob")).unwrap().scripts, ["id"]);
        assert_eq!(
            unwrap("script", &v("-qc id /dev/null")).unwrap().scripts,
            ["id"]
        );
        // getopt's attached values, and su's shell arguments after the user or `--`.
        assert_eq!(unwrap("script", &v("-c'id'")).unwrap().scripts, ["id"]);
        assert_eq!(
            unwrap("script", &v("-qc'id' /dev/null")).unwrap().scripts,
            ["id"]
        );
        assert_eq!(unwrap("su", &v("-cid")).unwrap().scripts, ["id"]);
        assert_eq!(
            unwrap("runuser", &v("-u bob -cid")).unwrap().scripts,
            ["id"]
        );
        assert_eq!(unwrap("su", &v("-- root -c id")).unwrap().scripts, ["id"]);
        assert_eq!(unwrap("su", &v("root -- -c id")).unwrap().scripts, ["id"]);
        assert_eq!(unwrap("su", &v("-s/bin/sh -c id")).unwrap().scripts, ["id"]);
        // A value-taking option first: the rest of the word is its value.
        assert_eq!(unwrap("su", &v("-scsh bob")), None);
        assert_eq!(unwrap("su", &v("- bob")), None);
        assert_eq!(unwrap("sudo", &v("-l")), None);
        assert_eq!(unwrap("command", &v("-v nsenter")), None);
        assert_eq!(
            unwrap(
                "tar",
                &v("-cf /dev/null x --checkpoint=1 --checkpoint-action=exec=/bin/sh")
            )
            .unwrap()
            .scripts,
            ["/bin/sh"]
        );
        assert_eq!(
            unwrap("ssh", &v("-o ProxyCommand=';sh 0<&2 1>&2' x"))
                .unwrap()
                .scripts,
            [";sh 0<&2 1>&2"]
        );
    }
}
