//! `stockade exec` end to end on the real engine.

use std::time::Instant;

use super::common::{self, stderr, stdout, unique, Env};
use crate::require_docker;

#[test]
fn default_profile_runs_as_non_root_without_caps_network_or_writable_root() {
    require_docker!();
    let env = Env::new();
    let out = env.exec(
        &[],
        "id -u; grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status; \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
         touch /rootfs-probe 2>/dev/null && echo root-writable || echo root-read-only; \
         touch /tmp/ok && echo tmp-writable",
    );
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout={text} stderr={}",
        stderr(&out)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "65532");
    for cap_line in &lines[1..5] {
        assert!(
            cap_line.ends_with("0000000000000000"),
            "capability set not empty: {cap_line}"
        );
    }
    assert_eq!(lines[5], "lo", "only the loopback interface: {text}");
    assert_eq!(lines[6], "root-read-only");
    assert_eq!(lines[7], "tmp-writable");
}

#[test]
fn exit_codes_pass_through() {
    require_docker!();
    let env = Env::new();
    for code in [0, 1, 3, 42] {
        let out = env.exec(&[], &format!("exit {code}"));
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    }
}

#[test]
fn output_streams_are_separate() {
    require_docker!();
    let env = Env::new();
    let out = env.exec(&[], "echo to-out; echo to-err >&2");
    assert_eq!(stdout(&out), "to-out\n");
    assert!(stderr(&out).contains("to-err"));
}

#[test]
fn timeout_exits_124_and_is_audited() {
    require_docker!();
    let env = Env::new();
    let started = Instant::now();
    let (code, v) = env.exec_json(&["--timeout", "1s"], "echo begun; sleep 30");
    assert_eq!(code, 124, "{v}");
    eprintln!("timeout 1s: returned after {:?}", started.elapsed());
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stdout"], "begun\n");
    let records = env.audit_records();
    let finish = records.last().unwrap();
    assert_eq!(finish["kind"], "finish");
    assert_eq!(finish["timed_out"], true);
    assert_eq!(finish["outcome"], "timed_out");
}

#[test]
fn unreachable_engine_exits_125_with_advice() {
    let env = Env::new();
    let out = env
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["exec", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the Docker engine"), "{err}");
    assert!(err.contains("DOCKER_HOST"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // Nothing ran, and the attempt is on record as an error.
    let records = env.audit_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["outcome"], "error");
}

#[test]
fn elevation_is_refused_unless_configured_and_audited_as_elevated() {
    let env = Env::new();
    let out = env.exec(&["--elevated"], "id -u");
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(stderr(&out).contains("allow_elevation"), "{}", stderr(&out));
    let records = env.audit_records();
    assert_eq!(records[0]["kind"], "start");
    assert_eq!(records[0]["elevated"], true);
    assert_eq!(records[1]["outcome"], "denied");
}

#[test]
fn elevated_runs_as_root_when_allowed() {
    require_docker!();
    let env = Env::new();
    env.write_config("allow_elevation = true\n");
    let (code, v) = env.exec_json(&["--elevated"], "id -u; touch /opt-probe && echo writable");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "0\nwritable\n");
    assert_eq!(v["elevated"], true);
    assert_eq!(env.audit_records()[0]["elevated"], true);
}

#[test]
fn json_reports_every_field() {
    require_docker!();
    let env = Env::new();
    let (code, v) = env.exec_json(&[], "echo hi; echo oops >&2; exit 7");
    assert_eq!(code, 7);
    // Every field, for every outcome: `exec_json` validates each result against the schema.
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["stderr"], "oops\n");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["truncated"], false);
    assert!(v["signal"].is_null());
    let records = env.audit_records();
    assert_eq!(records[0]["id"], v["audit_id"]);
}

#[test]
fn signal_is_reported() {
    require_docker!();
    let env = Env::new();
    let (code, v) = env.exec_json(&[], "kill -TERM $$");
    assert_eq!(code, 143, "{v}");
    assert_eq!(v["signal"], 15);
}

#[test]
fn oneshot_container_is_gone_afterwards() {
    require_docker!();
    let env = Env::new();
    let (code, v) = env.exec_json(&[], "true");
    assert_eq!(code, 0);
    let name = v["sandbox"].as_str().unwrap().to_string();
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name=^{name}$"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "", "container {name} left behind");
}

#[test]
fn session_keeps_state_between_calls_and_is_removed() {
    require_docker!();
    let env = Env::new();
    let s = unique("reuse");
    let (code, first) = env.exec_json(
        &["--session", &s],
        "echo remembered > /workspace/note; echo $$",
    );
    assert_eq!(code, 0, "{first}");
    let (code, second) = env.exec_json(&["--session", &s], "cat /workspace/note");
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["stdout"], "remembered\n");
    assert_eq!(first["sandbox"], second["sandbox"]);
    let ls = env
        .cmd()
        .args(["session", "ls", "--json"])
        .output()
        .unwrap();
    let sessions: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert!(sessions
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["session"] == s.as_str()));
    let rm = env.cmd().args(["session", "rm", &s]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(common::containers_with_label(&format!("org.stockade.session={s}")).is_empty());
}

#[test]
fn every_exec_writes_start_then_finish() {
    require_docker!();
    let env = Env::new();
    env.exec(&[], "echo one");
    env.exec(&[], "exit 2");
    let records = env.audit_records();
    assert_eq!(records.len(), 4);
    for pair in records.chunks(2) {
        assert_eq!(pair[0]["kind"], "start");
        assert_eq!(pair[1]["kind"], "finish");
        assert_eq!(pair[0]["id"], pair[1]["id"]);
        assert_eq!(pair[0]["profile"], "default");
        assert_eq!(pair[0]["backend"], "docker");
    }
    assert_eq!(records[0]["command"], "echo one");
    assert_eq!(records[1]["stdout_bytes"], 4);
    assert_eq!(records[3]["exit_code"], 2);
    let verify = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[test]
fn sixteen_parallel_execs_leave_32_chained_records() {
    require_docker!();
    let env = Env::new();
    let children: Vec<_> = (0..16)
        .map(|i| {
            env.cmd()
                .args(["exec", "--", &format!("echo {i}")])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout(&out), format!("{i}\n"));
    }
    let records = env.audit_records();
    assert_eq!(records.len(), 32);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as u64);
    }
    let verify = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[test]
fn env_is_passed_only_when_the_profile_allows_it() {
    require_docker!();
    let env = Env::new();
    let out = env.exec(&["--env", "LANG=C.UTF-8"], "echo $LANG");
    assert_eq!(stdout(&out), "C.UTF-8\n");
    let out = env.exec(&["--env", "LD_PRELOAD=/tmp/x.so"], "true");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not allowed by profile"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn denied_command_exits_126_runs_nothing_and_is_audited() {
    // No engine is needed: a denial never reaches it.
    let env = Env::new();
    let marker = env.dir.path().join("ran");
    let out = env
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args([
            "exec",
            "--",
            &format!("nsenter -t 1 -m -- sh -c 'touch {}'", marker.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ns.nsenter") && err.contains("denied by policy"),
        "{err}"
    );
    assert!(!marker.exists());
    let records = env.audit_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["decision"], "deny");
    assert!(records[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "ns.nsenter"));
    assert_eq!(records[1]["outcome"], "denied");
}

#[test]
fn warned_command_runs_and_the_audit_carries_the_rule() {
    require_docker!();
    let env = Env::new();
    let (code, v) = env.exec_json(&[], "cat /proc/1/environ >/dev/null 2>&1; echo ran");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["decision"], "warn");
    assert_eq!(v["stdout"], "ran\n");
    let start = &env.audit_records()[0];
    assert_eq!(start["decision"], "warn");
    assert!(!start["rules"].as_array().unwrap().is_empty(), "{start}");
}

#[test]
fn a_profile_can_allow_a_rule() {
    require_docker!();
    let env = Env::new();
    let text = std::fs::read_to_string("profiles/default.toml")
        .unwrap()
        .replace(
            "seccomp = \"seccomp/default.json\"",
            &format!(
                "seccomp = \"{}/profiles/seccomp/default.json\"",
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .replace("allow_rules = []", "allow_rules = [\"exfil.secret-read\"]");
    env.write_profile("lenient", &text);
    let (code, v) = env.exec_json(
        &["--profile", "lenient"],
        "cat /proc/1/environ >/dev/null 2>&1; echo ran",
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["decision"], "allow");
}
