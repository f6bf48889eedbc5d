//! The session agent: used when it can be, never trusted without proof, replaced when gone.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;

use super::common::{stderr, stdout, unique, Env};
use crate::require_docker;

fn agent_dir(env: &Env, session: &str) -> std::path::PathBuf {
    env.state_dir()
        .join("sessions")
        .join(format!("{session}.agent"))
}

#[test]
fn warm_session_commands_run_through_the_agent() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent");
    env.exec(&["--session", &s], "true");
    let out = env.exec(&["--session", &s], "ps -eo user,args");
    let text = stdout(&out);
    assert!(text.contains("__agent"), "no agent process: {text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("sandbox") && l.contains("__agent")),
        "{text}"
    );
    // The command is the agent's child, still as the sandbox user with no capabilities.
    let (code, v) = env.exec_json(&["--session", &s], "id -u; grep CapEff /proc/self/status");
    assert_eq!(code, 0);
    assert_eq!(v["stdout"], "1000\nCapEff:\t0000000000000000\n");
}

#[test]
fn a_killed_agent_is_replaced_and_commands_still_run() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent-kill");
    env.exec(&["--session", &s], "true");
    // Killing the agent from inside ends that command with an error (its result is unknown).
    let out = env.exec(&["--session", &s], "pkill -f __agent; sleep 1");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let (code, v) = env.exec_json(&["--session", &s], "echo still-here");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "still-here\n");
}

#[test]
fn a_planted_symlink_is_not_followed() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent-link");
    env.exec(&["--session", &s], "true");
    let socket = agent_dir(&env, &s).join("agent.sock");
    std::fs::remove_file(&socket).unwrap();
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    let out = env.exec(&["--session", &s], "echo hi");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a socket"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_forged_result_is_rejected() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent-forge");
    env.exec(&["--session", &s], "true");
    let socket = agent_dir(&env, &s).join("agent.sock");
    std::fs::remove_file(&socket).unwrap();
    // An impostor that knows the protocol but not the session secret.
    let listener = UnixListener::bind(&socket).unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let frame = |tag: u8, payload: &[u8]| {
            let mut f = vec![tag];
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        conn.write_all(&frame(b'a', b"")).unwrap();
        conn.write_all(&frame(b'o', b"all good\n")).unwrap();
        let exit = br#"{"exit_code":0,"timed_out":false,"mac":"00"}"#;
        conn.write_all(&frame(b'x', exit)).unwrap();
    });
    let (code, v) = env.exec_json(&["--session", &s], "echo real");
    impostor.join().unwrap();
    assert_eq!(code, 125, "{v}");
    assert!(v["error"].as_str().unwrap().contains("tampered"), "{v}");
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["outcome"], "error");
}
