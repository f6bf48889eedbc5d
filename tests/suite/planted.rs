//! Files a session's earlier commands planted, judged when a later command runs them: the
//! real binary, the real engine, the file put in with `stockade cp` (which the check does not
//! judge), then run in each of the ways a shell runs a file.

use sha2::Digest;

use super::common::{unique, Env};
use crate::require_docker;

/// Copies `content` into session `session` at `path`.
fn plant(env: &Env, session: &str, path: &str, content: &str) {
    let local = env.dir.path().join("payload");
    std::fs::write(&local, content).unwrap();
    let out = env
        .cmd()
        .args(["cp", local.to_str().unwrap(), &format!("{session}:{path}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_planted_script_is_denied_however_it_is_run() {
    require_docker!();
    let env = Env::new();
    let session = unique("planted");
    let payload = "#!/bin/sh\nnsenter -t 1 -m -u -i -n -p -- sh\n";
    plant(&env, &session, "/workspace/s", payload);
    plant(
        &env,
        &session,
        "/workspace/s.py",
        "import os\nos.system('nsenter -t 1 -m sh')\n",
    );
    plant(
        &env,
        &session,
        "/workspace/Makefile",
        "all:\n\t@nsenter -t 1 -m sh\n",
    );
    plant(
        &env,
        &session,
        "/workspace/package.json",
        r#"{"scripts":{"build":"nsenter -t 1 -m sh"}}"#,
    );
    let digest = hex::encode(sha2::Sha256::digest(payload.as_bytes()));
    for (command, file) in [
        ("bash /workspace/s", "/workspace/s"),
        ("sh s", "/workspace/s"),
        (". ./s", "/workspace/s"),
        ("source /workspace/s", "/workspace/s"),
        ("chmod +x s && ./s", "/workspace/s"),
        ("cd /workspace && bash s", "/workspace/s"),
        ("python3 s.py", "/workspace/s.py"),
        ("make", "/workspace/Makefile"),
        ("npm run build", "/workspace/package.json"),
    ] {
        let (code, v) = env.exec_json(&["--session", &session], command);
        assert_eq!(code, 126, "{command}: {v}");
        assert_eq!(v["outcome"], "denied", "{command}: {v}");
        assert_eq!(v["decision"], "deny", "{command}: {v}");
        let scripts = v["scripts"].as_array().unwrap();
        let s = scripts
            .iter()
            .find(|s| s["path"] == file)
            .unwrap_or_else(|| panic!("{command}: {v}"));
        assert_eq!(s["decision"], "deny");
        if file == "/workspace/s" {
            assert_eq!(s["sha256"], digest.as_str());
        }
        assert!(
            v["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == "ns.nsenter"
                    && r["fragment"].as_str().unwrap().starts_with(file)),
            "{command}: {v}"
        );
        // On record: the file, its digest, and the denial.
        let id = v["audit_id"].as_str().unwrap();
        let finish = env
            .audit_records()
            .into_iter()
            .find(|r| r["kind"] == "finish" && r["id"] == id)
            .unwrap();
        assert_eq!(finish["outcome"], "denied");
        assert_eq!(finish["scripts"][0]["path"], file, "{finish}");
    }

    // A harmless script runs, and says what was read.
    plant(&env, &session, "/workspace/ok", "echo fine\n");
    let (code, v) = env.exec_json(&["--session", &session], "bash ok");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "fine\n");
    assert_eq!(v["scripts"][0]["path"], "/workspace/ok");
    assert_eq!(v["scripts"][0]["decision"], "allow");
    // A file written by an earlier command of the session counts too, however it was built
    // (`tac` is not evaluated statically, so the write itself passes).
    let (code, v) = env.exec_json(
        &["--session", &session],
        "printf 'sh\\n-m\\n1\\n-t\\nnsenter\\n' | tac | tr '\\n' ' ' > /workspace/t",
    );
    assert_eq!(code, 0, "{v}");
    let (code, v) = env.exec_json(&["--session", &session], "sh /workspace/t");
    assert_eq!(code, 126, "{v}");
    let (code, v) = env.exec_json(&["--session", &session, "--profile", "default"], "ls");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["scripts"], serde_json::json!([]));
}
