//! Holding under faults and hostile commands: timeouts that kill inside the sandbox, output
//! floods, resource bombs, signals to stockade and `kill -9` of it. Each test is bounded in
//! time, uses its own state directory and session names, and removes what it created.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, run_measured, stderr, stdout, unique, Env};
use crate::require_docker;

/// The default profile's kill grace.
const GRACE: Duration = Duration::from_secs(2);

/// Writes a profile that is `default` with some `[limits]` lines replaced.
pub fn limited_profile(env: &Env, name: &str, limits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/default.toml"
    ))
    .unwrap();
    text = text.replace(
        "seccomp = \"seccomp/default.json\"",
        concat!(
            "seccomp = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/seccomp/default.json\""
        ),
    );
    for (key, value) in limits {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in default.toml"))
            .to_string();
        text = text.replace(&line, &format!("{key} = {value}"));
    }
    env.write_profile(name, &text);
    name.to_string()
}

/// `ps` inside a session: one `USER ARGS` line per process.
pub fn session_processes(env: &Env, session: &str) -> String {
    let (code, v) = env.exec_json(&["--session", session], "ps -eo user=,args=");
    assert_eq!(code, 0, "{v}");
    v["stdout"].as_str().unwrap().to_string()
}

/// Processes of the sandbox user other than the `ps` itself and the session agent.
pub fn leftovers(ps: &str) -> Vec<String> {
    ps.lines()
        .filter(|l| l.starts_with("sandbox"))
        .filter(|l| !l.contains("ps -eo") && !l.contains("stockade-agent serve"))
        .map(str::to_string)
        .collect()
}

/// A command that leaves the usual survivors of a client-side kill: a `setsid` child that
/// ignores TERM, a double-forked daemon, a `nohup` child, and a TERM-ignoring subshell.
pub const HOSTILE_TREE: &str = "setsid bash -c 'trap \"\" TERM; exec sleep 91' & \
     (bash -c 'sleep 92 & disown' &) ; nohup sleep 93 >/dev/null 2>&1 & \
     (trap '' TERM; while :; do sleep 1; done) & echo started; sleep 94";

fn timeout_in_session(env: &Env, extra_env: &[(&str, &str)]) {
    let s = unique("to");
    let mut warm = env.cmd();
    warm.envs(extra_env.iter().copied());
    let out = warm
        .args(["exec", "--session", &s, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let started = Instant::now();
    let out = env
        .cmd()
        .envs(extra_env.iter().copied())
        .args(["exec", "--json", "--session", &s, "--timeout", "1s", "--"])
        .arg(HOSTILE_TREE)
        .output()
        .unwrap();
    let took = started.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(124), "{v}");
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stdout"], "started\n");
    eprintln!(
        "timeout-to-return latency {:?} (timeout 1s, grace {GRACE:?})",
        took.saturating_sub(Duration::from_secs(1))
    );
    let mut check = env.cmd();
    check.envs(extra_env.iter().copied());
    let ps = check
        .args([
            "exec",
            "--json",
            "--session",
            &s,
            "--",
            "ps -eo user=,args=",
        ])
        .output()
        .unwrap();
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let ps = ps["stdout"].as_str().unwrap();
    assert!(leftovers(ps).is_empty(), "left running:\n{ps}");
    // The session is still usable, with its files.
    let out = env
        .cmd()
        .envs(extra_env.iter().copied())
        .args([
            "exec",
            "--session",
            &s,
            "--",
            "echo ok > /workspace/f; cat /workspace/f",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
}

#[test]
fn timeout_kills_the_whole_tree_in_a_session_via_the_agent() {
    require_docker!();
    timeout_in_session(&Env::new(), &[]);
}

#[test]
fn timeout_kills_the_whole_tree_in_a_session_via_exec() {
    require_docker!();
    timeout_in_session(&Env::new(), &[("STOCKADE_NO_AGENT", "1")]);
}

#[test]
fn timeout_in_a_oneshot_returns_124_within_the_grace_and_leaves_nothing() {
    require_docker!();
    let env = Env::new();
    let started = Instant::now();
    let (code, v) = env.exec_json(&["--timeout", "1s"], HOSTILE_TREE);
    let took = started.elapsed();
    assert_eq!(code, 124, "{v}");
    eprintln!("one-shot timeout 1s: returned after {took:?} (grace {GRACE:?})");
    let name = v["sandbox"].as_str().unwrap();
    assert!(common::containers_with_label("org.stockade.kind=oneshot")
        .iter()
        .all(|c| c != name));
}

// ---- output ----------------------------------------------------------------------------

#[test]
fn a_flood_is_cut_at_the_cap_and_stopped_at_the_hard_limit() {
    require_docker!();
    let env = Env::new();
    let p = limited_profile(&env, "smallcap", &[("output_cap", "\"64k\"")]);
    let mut cmd = env.cmd();
    cmd.args([
        "exec",
        "--json",
        "--profile",
        &p,
        "--timeout",
        "30s",
        "--",
        "yes",
    ]);
    let started = Instant::now();
    let (out, max_rss_kib) = run_measured(cmd);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output_limit_hit"], true, "{v}");
    assert_eq!(v["truncated"], true);
    eprintln!("flood stopped after {:?}", started.elapsed());
    let text = v["stdout"].as_str().unwrap();
    assert!(text.starts_with("y\ny\n"));
    assert!(text.contains("[stockade: output truncated:"), "no marker");
    assert!(
        text.contains("omitted after byte 49152]"),
        "head is 3/4 of the cap"
    );
    assert!(text.len() < 64 * 1024 + 200, "kept {} bytes", text.len());
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["outcome"], "output_limit");
    assert_eq!(finish["output_limit_hit"], true);
    let written = finish["stdout_bytes"].as_u64().unwrap();
    assert!(written > 64 * 64 * 1024, "stopped after {written} bytes");
    eprintln!("yes flood: stockade peak RSS {max_rss_kib} KiB");
    assert!(max_rss_kib < 64 * 1024, "peak RSS {max_rss_kib} KiB");
}

#[test]
fn a_100_mb_line_keeps_head_and_tail_in_bounded_memory() {
    require_docker!();
    let env = Env::new();
    // A 4 MiB cap puts the hard limit at 256 MiB: the line is cut, not stopped.
    let p = limited_profile(&env, "line", &[("output_cap", "\"4m\"")]);
    let mut cmd = env.cmd();
    cmd.args(["exec", "--json", "--profile", &p, "--"])
        .arg("printf BEGIN; head -c 100000000 /dev/zero | tr '\\0' x; echo END");
    let (out, max_rss_kib) = run_measured(cmd);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(v["truncated"], true);
    assert_eq!(v["output_limit_hit"], false);
    let text = v["stdout"].as_str().unwrap();
    assert!(text.starts_with("BEGINxxx"));
    assert!(text.ends_with("xxxEND\n"));
    assert!(
        text.contains("of 100000009 bytes omitted after byte 3145728]"),
        "marker"
    );
    eprintln!("100 MB line: stockade peak RSS {max_rss_kib} KiB");
    // Cap (4 MiB) kept twice at most (capture + JSON text), plus the runtime.
    assert!(max_rss_kib < 80 * 1024, "peak RSS {max_rss_kib} KiB");
}

#[test]
fn binary_and_invalid_utf8_output_is_replaced_counted_and_capped() {
    require_docker!();
    let env = Env::new();
    let p = limited_profile(&env, "bin", &[("output_cap", "\"16k\"")]);
    let (code, v) = env.exec_json(
        &["--profile", &p],
        "printf 'ok\\377\\376\\n'; head -c 1000000 /dev/urandom >&2",
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "ok\u{fffd}\u{fffd}\n");
    assert_eq!(v["truncated"], true);
    assert!(v["stderr"].as_str().unwrap().len() < 3 * 16 * 1024 + 200);
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["stdout_bytes"], 5);
    assert_eq!(finish["stderr_bytes"], 1_000_000);
}

// ---- resource bombs ----------------------------------------------------------------------

#[test]
fn a_fork_bomb_hits_the_pids_limit_is_reported_and_spares_other_sessions() {
    require_docker!();
    let env = Env::new();
    let (bomb, bystander) = (unique("bomb"), unique("bystander"));
    for s in [&bomb, &bystander] {
        assert_eq!(env.exec(&["--session", s], "true").status.code(), Some(0));
    }
    let child = env
        .cmd()
        .args([
            "exec",
            "--json",
            "--session",
            &bomb,
            "--timeout",
            "3s",
            "--",
        ])
        .arg("b() { b | b & }; b; sleep 30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Another session runs normally while the bomb holds every pid of its own container.
    let started = Instant::now();
    let (code, v) = env.exec_json(&["--session", &bystander], "echo fine");
    assert_eq!((code, v["stdout"].as_str()), (0, Some("fine\n")), "{v}");
    eprintln!(
        "a bystander session ran in {:?} beside a fork bomb",
        started.elapsed()
    );
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(124), "{v}");
    assert_eq!(v["pids_limit_hit"], true, "{v}");
    let finish = env
        .audit_records()
        .into_iter()
        .rev()
        .find(|r| r["session"] == bomb.as_str())
        .unwrap();
    assert_eq!(finish["pids_limit_hit"], true);
    let ps = session_processes(&env, &bomb);
    assert!(leftovers(&ps).is_empty(), "left running:\n{ps}");
}

#[test]
fn a_memory_bomb_is_oom_killed_and_reported() {
    require_docker!();
    let env = Env::new();
    let p = limited_profile(&env, "smallmem", &[("memory", "\"64m\"")]);
    let s = unique("oom");
    for session in [None, Some(s.as_str())] {
        let mut args = vec!["--profile", p.as_str()];
        if let Some(s) = session {
            args.extend(["--session", s]);
        }
        let (code, v) = env.exec_json(&args, "x=$(head -c 200000000 /dev/zero | tr '\\0' a)");
        assert_eq!(code, 137, "{v}");
        assert_eq!(v["oom_killed"], true, "{v}");
        let finish = env.audit_records().pop().unwrap();
        assert_eq!(finish["oom_killed"], true);
        assert_eq!(finish["exit_code"], 137);
    }
    // A later command of the same session that exits 137 by itself is not an OOM kill.
    let (code, v) = env.exec_json(&["--profile", &p, "--session", &s], "exit 137");
    assert_eq!(code, 137);
    assert_eq!(v["oom_killed"], false, "{v}");
}

#[test]
fn a_disk_filler_stops_at_the_tmpfs_size() {
    require_docker!();
    let env = Env::new();
    let (code, v) = env.exec_json(
        &[],
        "head -c 200m /dev/zero > /tmp/fill; echo rc=$?; stat -c %s /tmp/fill",
    );
    assert_eq!(code, 0, "{v}");
    // The default profile's /tmp is 64 MiB.
    assert_eq!(v["stdout"], "rc=1\n67108864\n");
    assert!(v["stderr"]
        .as_str()
        .unwrap()
        .contains("No space left on device"));
}

// ---- signals and crashes ----------------------------------------------------------------

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits until the audit log has a `start` for a command containing `marker`.
pub fn wait_for_start(env: &Env, marker: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Some(r) = env
            .audit_records()
            .into_iter()
            .find(|r| r["kind"] == "start" && r["command"].as_str().unwrap().contains(marker))
        {
            return r["id"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no start record for {marker}");
}

/// Waits until a container named `name` runs.
fn wait_for_container(name: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("name=^{name}$")])
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("container {name} never ran");
}

fn container_exists(name: &str) -> bool {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name=^{name}$")])
        .output()
        .unwrap();
    !out.stdout.is_empty()
}

#[test]
fn sigterm_and_sigint_end_the_command_remove_the_container_and_write_the_finish() {
    require_docker!();
    let env = Env::new();
    for (sig, status) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let marker = format!("sleep 6{sig}");
        let child = env.cmd().args(["exec", "--", &marker]).spawn().unwrap();
        let id = wait_for_start(&env, &marker);
        let container = format!("stockade-x-{id}");
        wait_for_container(&container);
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(status));
        eprintln!("{sig}: ended {:?} after the signal", started.elapsed());
        assert!(!container_exists(&container), "{container} left behind");
        let finish = env.audit_records().pop().unwrap();
        assert_eq!(finish["id"], id.as_str());
        assert_eq!(finish["outcome"], "interrupted");
    }
}

#[test]
fn sigint_in_a_session_ends_the_command_and_the_session_stays_usable() {
    require_docker!();
    let env = Env::new();
    let s = unique("sigint");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let child = env
        .cmd()
        .args(["exec", "--session", &s, "--"])
        .arg("(trap '' TERM INT; sleep 71) & sleep 72")
        .spawn()
        .unwrap();
    wait_for_start(&env, "sleep 72");
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let ps = session_processes(&env, &s);
    assert!(leftovers(&ps).is_empty(), "left running:\n{ps}");
}

#[test]
fn an_exec_waiting_for_a_session_exits_at_once_on_sigterm() {
    require_docker!();
    let env = Env::new();
    let s = unique("waiting");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let holder = env
        .cmd()
        .args(["exec", "--session", &s, "--", "sleep 73"])
        .spawn()
        .unwrap();
    wait_for_start(&env, "sleep 73");
    let waiter = env
        .cmd()
        .args(["exec", "--session", &s, "--", "echo never"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_start(&env, "echo never");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    signal(&waiter, libc::SIGTERM);
    let mut waiter = waiter;
    let out = common::wait_output(&mut waiter);
    assert_eq!(out.status.code(), Some(143));
    eprintln!("a waiting exec ended {:?} after SIGTERM", started.elapsed());
    assert!(
        stderr(&out).contains("the command was not started"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    signal(&holder, libc::SIGINT);
    assert_eq!(holder.wait_with_output().unwrap().status.code(), Some(130));
}

#[test]
fn kill_9_leaves_an_orphan_that_the_next_invocation_removes_and_the_audit_shows() {
    require_docker!();
    let env = Env::new();
    let mut child = env.cmd().args(["exec", "--", "sleep 81"]).spawn().unwrap();
    let id = wait_for_start(&env, "sleep 81");
    let container = format!("stockade-x-{id}");
    wait_for_container(&container);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        container_exists(&container),
        "the engine keeps it: nobody removed it"
    );
    // The next invocation (any command) sweeps it in the background, within its bound.
    let out = env.exec(&[], "true");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A bounded wait for what must happen, not a speed claim: generous for a busy machine.
    let until = Instant::now() + Duration::from_secs(60);
    while container_exists(&container) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !container_exists(&container),
        "orphan {container} not removed"
    );
    // The start is kept; verify reports the unfinished execution and the chain holds.
    let verify = env
        .cmd()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    let unfinished: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "unfinished_execution")
        .collect();
    assert_eq!(unfinished.len(), 1, "{report}");
    assert!(unfinished[0]["message"].as_str().unwrap().contains(&id));
}

#[test]
fn kill_9_orphans_are_removed_by_session_prune() {
    require_docker!();
    let env = Env::new();
    let mut child = env.cmd().args(["exec", "--", "sleep 82"]).spawn().unwrap();
    let id = wait_for_start(&env, "sleep 82");
    let container = format!("stockade-x-{id}");
    wait_for_container(&container);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env
        .cmd()
        .args(["session", "prune", "--orphans-only", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == container.as_str()));
    assert!(!container_exists(&container));
}

#[test]
fn kill_9_during_a_session_exec_is_cleaned_up_before_the_next_command() {
    require_docker!();
    let env = Env::new();
    let s = unique("crash");
    let no_agent = [("STOCKADE_NO_AGENT", "1")];
    let run = |command: &str| {
        env.cmd()
            .envs(no_agent)
            .args(["exec", "--json", "--session", &s, "--", command])
            .output()
            .unwrap()
    };
    assert_eq!(run("true").status.code(), Some(0));
    let mut child = env
        .cmd()
        .envs(no_agent)
        .args(["exec", "--session", &s, "--", "sleep 83 & sleep 84"])
        .spawn()
        .unwrap();
    wait_for_start(&env, "sleep 84");
    std::thread::sleep(Duration::from_millis(800));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run("ps -eo user=,args=");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ps = v["stdout"].as_str().unwrap();
    assert!(leftovers(ps).is_empty(), "left running:\n{ps}");
}

#[test]
fn a_half_written_last_line_is_detected_then_recovered_never_dropped() {
    let env = Env::new();
    // Refused commands are audited without an engine: elevation is not allowed by default.
    env.exec(&["--elevated"], "true");
    let partial = br#"{"seq":3,"ts":"2024-01-01T00:00:00.000Z","prev":"ab"#;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(env.audit_path())
            .unwrap();
        f.write_all(partial).unwrap();
    }
    let verify = env
        .cmd()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("\"half_written_last_line\""),
        "{}",
        stdout(&verify)
    );
    env.exec(&["--elevated"], "true");
    let verify = env
        .cmd()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert!(stdout(&verify).contains("recovered_partial_line"));
    let log = std::fs::read(env.audit_path()).unwrap();
    let kept = log.windows(partial.len()).any(|w| w == partial);
    assert!(kept, "the partial bytes must stay in the log");
}
