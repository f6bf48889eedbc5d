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
