//! Reading `strace -f` output: which syscalls a workload made and how each call ended.
//!
//! The recorder runs the workload under `strace -f -qq -o FILE` inside the sandbox. Every call
//! of every traced process is in that file (ptrace stops the tracee for each one, so nothing is
//! dropped the way rate-limited kernel log lines are). This module only reads the text.

use std::collections::{BTreeMap, HashMap};

/// How many unparsable lines a [`Trace`] keeps as examples.
const MAX_UNPARSED_EXAMPLES: usize = 5;

/// The calls of one syscall in a trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyscallUse {
    pub calls: u64,
    /// Calls that did not fail: they returned a value, or did not return at all (`exit_group`,
    /// `execve` replaced by another thread's, a call still blocked when the process was killed).
    pub ok: u64,
    /// Failed calls by errno name (`EPERM`, `ENOENT`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl SyscallUse {
    /// Whether every call failed with one of `errnos`.
    pub fn only_failed_with(&self, errnos: &[&str]) -> bool {
        self.ok == 0
            && !self.errors.is_empty()
            && self.errors.keys().all(|e| errnos.contains(&e.as_str()))
    }
}

/// What a trace says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// By the name strace prints (the kernel's name on x86_64 and aarch64).
    pub syscalls: BTreeMap<String, SyscallUse>,
    /// Processes and threads seen.
    pub processes: usize,
    pub lines: usize,
    /// Lines that are neither a syscall, a signal nor an exit, and how many there were.
    pub unparsed: usize,
    pub unparsed_examples: Vec<String>,
}

impl Trace {
    pub fn total_calls(&self) -> u64 {
        self.syscalls.values().map(|u| u.calls).sum()
    }
}

/// A call whose start strace printed with `<unfinished ...>`: it ends on a `resumed` line of
/// the same process.
#[derive(Debug)]
struct Pending {
    name: String,
}

/// Reads strace output (`-f` adds the pid in front of each line; without it there is none).
pub fn parse_strace(text: &str) -> Trace {
    let mut trace = Trace::default();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut pids = std::collections::HashSet::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        trace.lines += 1;
        let (pid, rest) = split_pid(line);
        pids.insert(pid);
        // Signals (`--- SIGCHLD ... ---`) and exits (`+++ exited with 0 +++`) are not calls.
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        if let Some(after) = rest.strip_prefix("<... ") {
            // `<... read resumed>"...", 4096) = 5`: the end of a call started earlier.
            let Some((name, tail)) = after.split_once(" resumed>") else {
                unparsed(&mut trace, line);
                continue;
            };
            pending.remove(&pid);
            if tail.ends_with("<unfinished ...>") {
                // Resumed and interrupted again: still pending.
                pending.insert(
                    pid,
                    Pending {
                        name: name.to_string(),
                    },
                );
                continue;
            }
            finish(&mut trace, name, result_of(tail));
            continue;
        }
        let Some(name) = syscall_name(rest) else {
            unparsed(&mut trace, line);
            continue;
        };
        if rest.ends_with("<unfinished ...>") {
            // A call left unfinished twice in a row means the first never resumed (its
            // process was killed): it ran, so it counts as a call that did not fail.
            if let Some(prev) = pending.insert(
                pid,
                Pending {
                    name: name.to_string(),
                },
            ) {
                finish(&mut trace, &prev.name, Outcome::NoReturn);
            }
            continue;
        }
        finish(&mut trace, name, result_of(rest));
    }
    for (_, p) in pending {
        finish(&mut trace, &p.name, Outcome::NoReturn);
    }
    trace.processes = pids.len();
    trace
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    NoReturn,
    Failed(String),
}

fn finish(trace: &mut Trace, name: &str, outcome: Outcome) {
    let entry = trace.syscalls.entry(name.to_string()).or_default();
    entry.calls += 1;
    match outcome {
        Outcome::Ok | Outcome::NoReturn => entry.ok += 1,
        Outcome::Failed(errno) => *entry.errors.entry(errno).or_default() += 1,
    }
}

fn unparsed(trace: &mut Trace, line: &str) {
    trace.unparsed += 1;
    if trace.unparsed_examples.len() < MAX_UNPARSED_EXAMPLES {
        trace.unparsed_examples.push(line.to_string());
    }
}

/// `1234  openat(...)` -> (1234, `openat(...)`); a line without a pid belongs to process 0.
fn split_pid(line: &str) -> (u64, &str) {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && line[digits..].starts_with(' ') {
        if let Ok(pid) = line[..digits].parse() {
            return (pid, line[digits..].trim_start());
        }
    }
    (0, line)
}

/// The name before `(`: lowercase letters, digits and `_` (strace prints `syscall_0x1c3` for
/// numbers it has no name for; those do not resolve later and are reported).
fn syscall_name(rest: &str) -> Option<&str> {
    let end = rest.find('(')?;
    let name = &rest[..end];
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    valid.then_some(name)
}

/// The result after the last ` = `: `-1 EPERM (Operation not permitted)` is a failure with
/// EPERM; `?` (no return), `? ERESTARTSYS ...` (interrupted, restarted) and values are not.
fn result_of(text: &str) -> Outcome {
    let Some(at) = text.rfind(" = ") else {
        return Outcome::NoReturn;
    };
    let result = &text[at + 3..];
    if let Some(err) = result.strip_prefix("-1 ") {
        let errno: String = err
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            .collect();
        if errno.starts_with('E') {
            return Outcome::Failed(errno);
        }
    }
    if result.starts_with('?') {
        return Outcome::NoReturn;
    }
    Outcome::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const SAMPLE: &str = r#"20236 execve("/usr/bin/bash", ["bash", "-c", "ls"], 0x7ffd /* 3 vars */) = 0
20236 brk(NULL)                         = 0x5613653a5000
20236 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
20236 openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY|O_CLOEXEC) = 3
20236 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 20237
20237 set_robust_list(0x7f486c401a20, 24 <unfinished ...>
20236 wait4(-1,  <unfinished ...>
20237 <... set_robust_list resumed>)    = 0
20237 clone3({flags=CLONE_VM|CLONE_FS, exit_signal=0, stack=0x7f, stack_size=0x7fff00}, 88) = -1 ENOSYS (Function not implemented)
20237 setgroups(0, NULL)                = -1 EPERM (Operation not permitted)
20237 setgroups(0, NULL)                = -1 EPERM (Operation not permitted)
20237 read(0, "", 4096)                 = 0
20237 --- SIGURG {si_signo=SIGURG, si_code=SI_USER, si_pid=0, si_uid=0} ---
20237 rt_sigreturn({mask=[]})           = 0
20237 exit_group(0)                     = ?
20237 +++ exited with 0 +++
20236 <... wait4 resumed>[{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 20237
20236 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=20237, si_uid=1000, si_status=0, si_utime=0, si_stime=0} ---
20236 restart_syscall(<... resuming interrupted read ...>) = 0
20236 pause( <unfinished ...>
20236 +++ killed by SIGKILL +++
"#;

    #[test]
    fn counts_calls_results_and_resumed_lines() {
        let t = parse_strace(SAMPLE);
        assert_eq!(t.unparsed, 0, "{:?}", t.unparsed_examples);
        assert_eq!(t.processes, 2);
        let names: Vec<&str> = t.syscalls.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "brk",
                "clone",
                "clone3",
                "execve",
                "exit_group",
                "openat",
                "pause",
                "read",
                "restart_syscall",
                "rt_sigreturn",
                "set_robust_list",
                "setgroups",
                "wait4"
            ]
        );
        let openat = &t.syscalls["openat"];
        assert_eq!((openat.calls, openat.ok), (2, 1));
        assert_eq!(openat.errors["ENOENT"], 1);
        assert!(t.syscalls["setgroups"].only_failed_with(&["EPERM"]));
        assert!(t.syscalls["clone3"].only_failed_with(&["ENOSYS"]));
        assert!(!openat.only_failed_with(&["ENOENT"]));
        // A call the process was killed in still ran.
        assert_eq!(t.syscalls["pause"].ok, 1);
        assert_eq!(t.syscalls["wait4"].calls, 1);
        assert_eq!(t.total_calls(), 15);
    }

    #[test]
    fn lines_without_pid_and_odd_lines() {
        let t = parse_strace("getpid() = 1\nstrace: something odd\n42 0weird(\n");
        assert_eq!(t.syscalls["getpid"].ok, 1);
        assert_eq!(t.unparsed, 2);
        assert_eq!(t.unparsed_examples.len(), 2);
    }

    #[test]
    fn interrupted_calls_are_not_failures() {
        let t = parse_strace(
            "9 wait4(-1, 0x7ffe, 0, NULL) = ? ERESTARTSYS (To be restarted if SA_RESTART is set)\n",
        );
        assert_eq!(t.syscalls["wait4"].ok, 1);
    }

    #[test]
    fn strings_containing_equals_signs_do_not_confuse_the_result() {
        let t = parse_strace(r#"3 write(1, "a = -1 EPERM", 12) = 12"#);
        assert_eq!(t.syscalls["write"].ok, 1);
    }
}
