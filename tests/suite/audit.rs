//! `stockade audit verify` and `audit tail` on logs written by the real binary.

use super::common::{stdout, Env};

/// Three denied executions: six records, written without needing an engine.
fn env_with_records() -> Env {
    let env = Env::new();
    for i in 0..3 {
        let out = env
            .cmd()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["exec", "--", &format!("nsenter -t 1 -m -- echo {i}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(126));
    }
    assert_eq!(env.audit_records().len(), 6);
    env
}

fn lines(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.audit_path())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(env: &Env, lines: &[String]) {
    std::fs::write(env.audit_path(), lines.join("\n") + "\n").unwrap();
}

/// Runs `audit verify --json`; returns the exit code and the finding kinds of problems.
fn verify(env: &Env) -> (i32, Vec<String>, serde_json::Value) {
    let out = env
        .cmd()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let problems = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "problem")
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    (out.status.code().unwrap(), problems, report)
}

#[test]
fn an_untouched_log_verifies() {
    let env = env_with_records();
    let (code, problems, _) = verify(&env);
    assert_eq!(code, 0);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn an_edited_record_is_caught_and_located() {
    let env = env_with_records();
    let mut l = lines(&env);
    l[2] = l[2].replace("echo 1", "echo X");
    write_lines(&env, &l);
    let (code, problems, report) = verify(&env);
    assert_eq!(code, 1);
    assert!(problems.iter().any(|k| k.contains("chain")), "{report}");
    let located = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["line"] == 4);
    assert!(
        located,
        "the break shows at the line after the edit: {report}"
    );
}

#[test]
fn a_removed_record_is_caught() {
    let env = env_with_records();
    let mut l = lines(&env);
    l.remove(3);
    write_lines(&env, &l);
    let (code, problems, report) = verify(&env);
    assert_eq!(code, 1);
    assert!(
        problems
            .iter()
            .any(|k| k.contains("gap") || k.contains("chain")),
        "{report}"
    );
}

#[test]
fn reordered_records_are_caught() {
    let env = env_with_records();
    let mut l = lines(&env);
    l.swap(2, 3);
    write_lines(&env, &l);
    let (code, problems, report) = verify(&env);
    assert_eq!(code, 1);
    assert!(!problems.is_empty(), "{report}");
}

#[test]
fn truncation_is_caught() {
    let env = env_with_records();
    let mut l = lines(&env);
    l.truncate(4);
    write_lines(&env, &l);
    let (code, problems, report) = verify(&env);
    assert_eq!(code, 1);
    assert!(problems.iter().any(|k| k.contains("truncated")), "{report}");
}

#[test]
fn tail_shows_recent_executions() {
    let env = env_with_records();
    let out = env
        .cmd()
        .args(["audit", "tail", "-n", "2"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("deny"), "{text}");
    assert!(text.contains("echo 2"), "{text}");
    let out = env
        .cmd()
        .args(["audit", "tail", "-n", "3", "--json"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).lines().count(), 3);
}
