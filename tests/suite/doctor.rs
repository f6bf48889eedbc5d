//! `stockade doctor` through the real binary: a loosened installation scores lower and says
//! why; `--fix` restores it and says what it changed.

use std::os::unix::fs::PermissionsExt;

use super::common::{stderr, Env};

fn doctor(env: &Env, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = env
        .cmd()
        .args(["doctor", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.code(), v)
}

#[test]
fn a_loosened_state_dir_lowers_the_score_and_fix_restores_0700() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["token", "create", "--name", "a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, clean) = doctor(&env, &[]);
    assert_eq!(code, Some(0), "{clean}");
    assert_eq!(clean["domains"].as_array().unwrap().len(), 8);

    let state = env.state_dir();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("tokens.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, loose) = doctor(&env, &[]);
    assert_eq!(code, Some(1), "a critical finding: {loose}");
    assert!(loose["score"].as_u64() < clean["score"].as_u64(), "{loose}");
    let findings = loose["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["severity"] == "critical" && f["auto_fix"]["mode"] == 0o700),
        "{loose}"
    );

    let (code, fixed) = doctor(&env, &["--fix"]);
    assert_eq!(code, Some(0), "{fixed}");
    assert_eq!(fixed["score"], clean["score"], "{fixed}");
    assert!(fixed["fixed"].as_array().unwrap().len() >= 2, "{fixed}");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mode = std::fs::metadata(state.join("tokens.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

fn finding<'a>(report: &'a serde_json::Value, needle: &str) -> Option<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["message"].as_str().unwrap().contains(needle))
}

/// Rewrites the stored record of token `name` (as an older stockade, or a hand edit, left it).
fn edit_token(
    env: &Env,
    name: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) {
    let path = env.state_dir().join("tokens.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for t in file["tokens"].as_array_mut().unwrap() {
        if t["name"] == name {
            edit(t.as_object_mut().unwrap());
        }
    }
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
}

fn create_token(env: &Env, name: &str) -> String {
    let out = env
        .cmd()
        .args(["token", "create", "--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn weak_tokens_are_rotated_only_with_the_confirmation_flag() {
    let env = Env::new();
    let strong = create_token(&env, "strong");
    let weak = create_token(&env, "weak");
    let (code, clean) = doctor(&env, &["--no-engine"]);
    assert_eq!(code, Some(0), "{clean}");
    assert!(
        finding(&clean, "token").is_none(),
        "generated tokens are strong: {clean}"
    );

    // A token whose recorded strength is under the floor is critical; one with none recorded
    // (made before stockade recorded it) is a warning. Both are offered for rotation.
    edit_token(&env, "weak", |t| {
        t.insert("bits".into(), 40.into());
    });
    edit_token(&env, "strong", |t| {
        t.remove("bits");
    });
    let (code, report) = doctor(&env, &["--no-engine"]);
    assert_eq!(code, Some(1), "{report}");
    let w = finding(&report, "\"weak\" is weak").expect("the weak token is named");
    assert_eq!(w["severity"], "critical");
    assert_eq!(w["auto_fix"]["kind"], "rotate_token");
    let u = finding(&report, "no recorded strength").expect("the unknown one is named");
    assert_eq!(u["severity"], "warn");

    // --fix alone changes no token: the clients would lose access without being told.
    let (code, fixed) = doctor(&env, &["--no-engine", "--fix"]);
    assert_eq!(code, Some(1), "{fixed}");
    assert!(fixed.get("rotated_tokens").is_none(), "{fixed}");
    assert!(
        fixed["fixed"].to_string().contains("not rotated"),
        "{fixed}"
    );

    let (code, rotated) = doctor(&env, &["--no-engine", "--fix", "--rotate-weak-tokens"]);
    assert_eq!(code, Some(0), "{rotated}");
    let new: Vec<(String, String)> = rotated["rotated_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["token"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut names: Vec<&str> = new.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["strong", "weak"]);
    assert!(finding(&rotated, "token").is_none(), "{rotated}");
    let stored = std::fs::read_to_string(env.state_dir().join("tokens.json")).unwrap();
    for (_, value) in &new {
        assert!(!stored.contains(value.as_str()), "only digests are stored");
        assert_ne!(value, &weak);
        assert_ne!(value, &strong);
    }
    // The rotation is in the auth log like any other.
    let auth = super::common::read_jsonl(&env.state_dir().join("auth.jsonl"));
    assert_eq!(
        auth.iter()
            .filter(|r| r["event"] == "token_rotated")
            .count(),
        2,
        "{auth:?}"
    );
}

#[test]
fn audit_settings_and_leftover_server_files_are_findings() {
    let env = Env::new();
    create_token(&env, "a");
    env.write_config("on_audit_failure = \"run\"\n");
    // A file a server that stopped left (pid 2^22 + 1 is above the kernel's pid limit).
    let stale = env.state_dir().join("serve.4194305.json");
    std::fs::write(
        &stale,
        br#"{"pid":4194305,"addresses":["http://127.0.0.1:1"],"non_loopback":false}"#,
    )
    .unwrap();
    // A running one (this test) that listens beyond loopback.
    let live = env
        .state_dir()
        .join(format!("serve.{}.json", std::process::id()));
    std::fs::write(
        &live,
        format!(
            r#"{{"pid":{},"addresses":["http://0.0.0.0:7878"],"non_loopback":true}}"#,
            std::process::id()
        ),
    )
    .unwrap();
    for f in [&stale, &live] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (_, report) = doctor(&env, &["--no-engine"]);
    assert_eq!(
        finding(&report, "on_audit_failure").expect("the setting is scored")["severity"],
        "warn"
    );
    assert_eq!(
        finding(&report, "beyond loopback").expect("the binding is scored")["domain"],
        "authentication"
    );
    let s = finding(&report, "no longer running").expect("the stale file is named");
    assert_eq!(s["auto_fix"]["kind"], "remove");
    let (_, fixed) = doctor(&env, &["--no-engine", "--fix"]);
    assert!(!stale.exists(), "{fixed}");
    assert!(live.exists(), "a running server's file stays");

    env.write_config("on_audit_failure = \"refuse\"\n");
    let (_, report) = doctor(&env, &["--no-engine"]);
    assert!(finding(&report, "on_audit_failure").is_none(), "{report}");
}

#[test]
fn the_engine_settings_are_read_from_the_engine() {
    crate::require_docker!();
    let env = Env::new();
    let (_, report) = doctor(&env, &[]);
    // This engine has seccomp (Docker 20.10 on Linux); whatever else it lacks is named with
    // its fix, and a reachable engine is not reported as unreachable.
    assert!(finding(&report, "no seccomp support").is_none(), "{report}");
    assert!(
        finding(&report, "could not be checked").is_none(),
        "{report}"
    );
    let out = env
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        finding(&report, "could not be checked").is_some(),
        "{report}"
    );
}
