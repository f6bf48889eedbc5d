//! The MCP face end to end: the official MCP Python SDK (tests/clients/mcp_client.py) drives
//! `stockade mcp` over stdio and `/mcp` on `stockade serve` over Streamable HTTP, in the SDK's
//! default mode (server/discover, the 2026-07-28 revision) and its legacy one (initialize).
//! Each run lists the tools with their schemas, runs one-shot and sandbox commands, writes a
//! file and reads it back through exec, is denied an escape, uses a destroyed sandbox, gets
//! progress with the output tail, and cancels a call and sees its process gone from the sandbox;
//! over HTTP it is also refused without a token (401) and from a foreign Origin (403). Every
//! wait is a hang guard, never a speed claim.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::common::{self, output_within, Env};
use crate::require_docker;

/// The longest one client run may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(600);

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_client.py");

/// The CI virtualenv's python with the `mcp` package, or `None` (a failure when
/// STOCKADE_REQUIRE_DOCKER=1, as CI sets it: `.ci/run` installs the package).
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("STOCKADE_CI_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/stockade-ci-venv"))
        });
    let python = venv.map(|v| v.join("bin/python"));
    let found = python.filter(|p| {
        Command::new(p)
            .args(["-c", "import mcp.client.stdio, mcp.client.streamable_http"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        let why = "the MCP Python SDK is not installed in the CI virtualenv \
                   (STOCKADE_CI_VENV or ~/.cache/stockade-ci-venv; .ci/run installs it)";
        if std::env::var("STOCKADE_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
    }
    found
}

/// Runs the client and asserts it passed every check.
fn run_client(python: &PathBuf, env: &Env, args: &[&str]) -> String {
    // The client, and the `stockade mcp` it starts, see the environment's directories.
    let cmd = env.cmd();
    let mut client = Command::new(python);
    client.arg(CLIENT).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => client.env(k, v),
            None => client.env_remove(k),
        };
    }
    let out = output_within(&mut client, HANG);
    let stdout = common::stdout(&out);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ok"),
        "the MCP client failed ({:?}):\n{stdout}\n{}",
        out.status,
        common::stderr(&out)
    );
    stdout
}

#[test]
fn the_python_sdk_drives_stockade_mcp_over_stdio_in_both_protocol_modes() {
    require_docker!();
    let Some(python) = venv_python() else { return };
    let env = Env::new();
    let bin = env!("CARGO_BIN_EXE_stockade");
    for mode in ["auto", "legacy"] {
        let out = run_client(&python, &env, &["stdio", bin, mode]);
        let expected = if mode == "auto" {
            "protocol 2026-07-28"
        } else {
            "protocol 2025-"
        };
        assert!(out.contains(expected), "{mode}: {out}");
    }
    // Audited as the local user (no `via`), and nothing left behind by the session's end.
    let starts: Vec<serde_json::Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "start")
        .collect();
    assert!(starts
        .iter()
        .any(|r| r["command"] == "echo hello-mcp; exit 3"));
    assert!(
        starts
            .iter()
            .all(|r| r.get("via").is_none_or(|v| v.is_null())),
        "{starts:?}"
    );
    let left = std::fs::read_dir(env.state_dir().join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "a stdio session left sandbox records behind");
}

/// A running `stockade serve`, killed (SIGTERM) when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

#[test]
fn the_python_sdk_drives_mcp_over_http_behind_tokens_in_both_protocol_modes() {
    require_docker!();
    let Some(python) = venv_python() else { return };
    let env = Env::new();
    let name = common::unique("mcp");
    let out = output_within(env.cmd().args(["token", "create", "--name", &name]), HANG);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let token = common::stdout(&out).trim().to_string();
    let mut child = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stockade serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = Serve(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("stockade: listening on ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(HANG)
        .expect("the server never said it listens");
    let url = format!("{base}/mcp");
    for mode in ["auto", "legacy"] {
        let out = run_client(&python, &env, &["http", &url, &token, mode]);
        assert!(out.contains("pass: no token: 401"), "{out}");
        assert!(out.contains("pass: a foreign Origin: 403"), "{out}");
    }
    drop(server);
    // Audited as the token's principal, through the API.
    let starts: Vec<serde_json::Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "start" && r["command"] == "echo hello-mcp; exit 3")
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    for s in &starts {
        assert_eq!(s["user"], name.as_str());
        assert_eq!(s["via"], "api");
    }
    env.cleanup_sessions();
}
