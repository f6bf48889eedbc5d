//! Engine faults, faked by a proxy in front of the real engine socket (the machine's dockerd
//! is never stopped): stockade fails with 125 within the engine-call timeout instead of
//! hanging, and the next call resumes or recreates the session container.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::common::{stderr, unique, Env};
use super::proxy::{EngineProxy, Mode};
use crate::require_docker;

/// The per-call engine timeout these tests run with.
const CALL_TIMEOUT: &str = "2s";
const CALL: Duration = Duration::from_secs(2);
/// A hang guard, not a speed claim: far past any bound stockade keeps.
const HANG: Duration = Duration::from_secs(180);
/// Process start, audit appends and the odd extra engine round trip.
const SLACK: Duration = Duration::from_secs(3);

struct Faulty {
    env: Env,
    proxy: EngineProxy,
}

impl Faulty {
    fn new() -> Faulty {
        Faulty {
            env: Env::new(),
            proxy: EngineProxy::start(),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.env.cmd();
        cmd.env("DOCKER_HOST", self.proxy.docker_host())
            .env("STOCKADE_ENGINE_TIMEOUT", CALL_TIMEOUT);
        cmd
    }

    fn exec(&self, extra: &[&str], command: &str) -> (Output, Duration) {
        let started = Instant::now();
        let mut cmd = self.cmd();
        cmd.arg("exec").args(extra).arg("--").arg(command);
        let out = super::common::output_within(&mut cmd, HANG);
        (out, started.elapsed())
    }
}

fn session_container(session: &str) -> Option<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=org.stockade.session={session}"),
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!id.is_empty()).then_some(id)
}

fn assert_engine_error(out: &Output, took: Duration, bound: Duration) {
    assert_eq!(out.status.code(), Some(125), "{}", stderr(out));
    eprintln!("engine error after {took:?} (call timeout and slack {bound:?})");
    let err = stderr(out);
    assert!(err.contains("engine"), "{err}");
}

#[test]
fn a_stopped_engine_fails_fast_and_the_session_resumes_when_it_is_back() {
    require_docker!();
    let f = Faulty::new();
    let s = unique("stopped");
    let (out, _) = f.exec(&["--session", &s], "echo kept > /workspace/f");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = session_container(&s).unwrap();

    f.proxy.set(Mode::Stopped);
    let (out, took) = f.exec(&["--session", &s], "cat /workspace/f");
    assert_engine_error(&out, took, CALL + SLACK);
    let finish = f.env.audit_records().pop().unwrap();
    assert_eq!(finish["outcome"], "error");

    f.proxy.set(Mode::Pass);
    let (out, _) = f.exec(&["--session", &s], "cat /workspace/f");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(
        session_container(&s).unwrap(),
        before,
        "resumed, not recreated"
    );
}

#[test]
fn a_wedged_engine_fails_within_the_call_timeout() {
    require_docker!();
    let f = Faulty::new();
    let s = unique("wedged");
    let (out, _) = f.exec(&["--session", &s], "true");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    f.proxy.set(Mode::Wedged);
    for extra in [&[][..], &["--session", s.as_str()][..]] {
        let (out, took) = f.exec(extra, "echo never");
        assert_engine_error(&out, took, CALL + SLACK);
        assert!(
            stderr(&out).contains("no answer within 2s"),
            "{}",
            stderr(&out)
        );
    }

    f.proxy.set(Mode::Pass);
    let (out, _) = f.exec(&["--session", &s], "echo back");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "back\n",
        "{}",
        stderr(&out)
    );
}

/// Waits until the one-shot whose command contains `marker` runs; returns its execution id.
fn running_oneshot(f: &Faulty, marker: &str) -> String {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let start = f
            .env
            .audit_records()
            .into_iter()
            .find(|r| r["kind"] == "start");
        if let Some(r) = start {
            let id = r["id"].as_str().unwrap().to_string();
            if Command::new("docker")
                .args(["top", &format!("stockade-x-{id}")])
                .output()
                .unwrap()
                .stdout
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
            {
                return id;
            }
        }
        assert!(Instant::now() < until, "the command never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The engine is back: the next invocation removes what the failed one left.
fn orphan_is_removed_by_the_next_call(f: &Faulty, id: &str) {
    f.proxy.set(Mode::Pass);
    let container = format!("stockade-x-{id}");
    let (out, _) = f.exec(&[], "true");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^{container}$")])
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "{container} left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_engine_wedged_mid_exec_is_noticed_and_the_orphan_removed_later() {
    require_docker!();
    let f = Faulty::new();
    // Through `docker exec` (no agent), the command's output comes over the engine, which is
    // pinged while the command runs.
    let child = f
        .cmd()
        .env("STOCKADE_NO_AGENT", "1")
        .args([
            "exec",
            "--json",
            "--timeout",
            "60s",
            "--",
            "echo up; sleep 61",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = running_oneshot(&f, "sleep 61");
    let wedged = Instant::now();
    f.proxy.set(Mode::Wedged);
    let mut child = child;
    let out = super::common::wait_output(&mut child);
    let took = wedged.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(125), "{v}");
    // Heartbeat every call timeout, a ping bounded by it, then a bounded removal attempt.
    eprintln!("a wedged engine was noticed after {took:?} (call timeout {CALL:?})");
    assert!(
        v["error"].as_str().unwrap().contains("stopped answering"),
        "{v}"
    );
    orphan_is_removed_by_the_next_call(&f, &id);
}

#[test]
fn a_command_through_the_agent_outlives_a_wedged_engine_and_keeps_its_result() {
    require_docker!();
    let f = Faulty::new();
    // The agent's channel does not go through the engine: a command running when the engine
    // wedges finishes with its own result; only removing the container waits for the engine.
    let child = f
        .cmd()
        .args(["exec", "--json", "--", "echo up; sleep 5; echo done"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = running_oneshot(&f, "sleep 5");
    f.proxy.set(Mode::Wedged);
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["stdout"], "up\ndone\n", "{v}");
    assert_eq!(v["runner"], "agent", "{v}");
    assert!(
        v["warnings"].to_string().contains("could not be removed"),
        "{v}"
    );
    let finish = f.env.audit_records().pop().unwrap();
    assert_eq!(finish["outcome"], "completed", "{finish}");
    assert_eq!(finish["exit_code"], 0, "{finish}");
    orphan_is_removed_by_the_next_call(&f, &id);
}

#[test]
fn an_engine_restart_mid_session_restarts_or_recreates_the_session_container() {
    require_docker!();
    let f = Faulty::new();
    let s = unique("restart");
    let (out, _) = f.exec(&["--session", &s], "true");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A restart without live-restore stops every container: do that to ours, while the
    // engine is away.
    f.proxy.set(Mode::Stopped);
    let id = session_container(&s).unwrap();
    Command::new("docker").args(["kill", &id]).output().unwrap();
    let (out, took) = f.exec(&["--session", &s], "true");
    assert_engine_error(&out, took, CALL + SLACK);
    f.proxy.set(Mode::Pass);
    let (out, _) = f.exec(&["--session", &s], "echo restarted");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "restarted\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(session_container(&s).unwrap(), id);

    // A restart that lost the container: it is created again.
    Command::new("docker")
        .args(["rm", "-f", &id])
        .output()
        .unwrap();
    let (out, _) = f.exec(&["--session", &s], "echo recreated");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "recreated\n",
        "{}",
        stderr(&out)
    );
    assert_ne!(session_container(&s).unwrap(), id);
}

#[test]
fn an_engine_that_drops_a_session_exec_mid_command_leaves_nothing_behind() {
    require_docker!();
    let f = Faulty::new();
    let s = unique("dropped");
    // Through `docker exec` (no agent): the command's output comes over the engine.
    let run = |command: &str| {
        let started = Instant::now();
        let mut cmd = f.cmd();
        cmd.env("STOCKADE_NO_AGENT", "1")
            .args(["exec", "--json", "--session", &s, "--", command]);
        let out = super::common::output_within(&mut cmd, HANG);
        (out, started.elapsed())
    };
    assert_eq!(run("true").0.status.code(), Some(0));
    let child = f
        .cmd()
        .env("STOCKADE_NO_AGENT", "1")
        .args([
            "exec",
            "--session",
            &s,
            "--",
            "echo up; sleep 62 & sleep 63",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let dropped = Instant::now();
    f.proxy.set(Mode::Stopped);
    let mut child = child;
    let out = super::common::wait_output(&mut child);
    assert_engine_error(&out, dropped.elapsed(), CALL + SLACK);

    f.proxy.set(Mode::Pass);
    let (out, _) = run("ps -eo user=,args=");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ps = v["stdout"].as_str().unwrap();
    assert!(!ps.contains("sleep 6"), "left running:\n{ps}");
}
