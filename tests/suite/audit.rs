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

fn loosen_log(env: &Env, loose: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if loose { 0o644 } else { 0o600 };
    std::fs::set_permissions(env.audit_path(), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_log_that_cannot_be_written_refuses_by_default_and_runs_when_configured() {
    crate::require_docker!();
    let env = Env::new();
    let (code, _) = env.exec_json(&[], "true");
    assert_eq!(code, 0);
    loosen_log(&env, true);
    let (code, refused) = env.exec_json(&[], "echo refused");
    assert_eq!(code, 125, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("nothing runs"),
        "{refused}"
    );
    assert_eq!(refused["audit_error"], serde_json::Value::Null);

    env.write_config("on_audit_failure = \"run\"\n");
    let (code, ran) = env.exec_json(&[], "echo held-record");
    assert_eq!(code, 0, "{ran}");
    assert_eq!(ran["stdout"], "held-record\n");
    assert_eq!(ran["audit_id"], serde_json::Value::Null);
    let why = ran["audit_error"].as_str().expect("the result says why");
    assert!(why.contains("644") || why.contains("600"), "{why}");
    assert!(env.state_dir().join("audit-gap.jsonl").exists());

    // Repaired: the next execution writes the gap record, then the held ones, then its own.
    loosen_log(&env, false);
    let (code, next) = env.exec_json(&[], "echo after");
    assert_eq!(code, 0, "{next}");
    assert!(next["audit_id"].is_string());
    let records = env.audit_records();
    let at = records
        .iter()
        .position(|r| r["kind"] == "gap")
        .expect("a gap record");
    assert_eq!(records[at]["missed"], 1, "{}", records[at]);
    assert_eq!(records[at + 1]["kind"], "start");
    assert_eq!(records[at + 1]["command"], "echo held-record");
    assert_eq!(records[at + 2]["kind"], "finish");
    assert_eq!(records[at + 2]["exit_code"], 0);
    assert_eq!(records[at + 3]["command"], "echo after");
    let (code, _, report) = verify(&env);
    assert_eq!(code, 0, "{report}");
    assert!(report.to_string().contains("audit_gap"), "{report}");
    let spill = std::fs::metadata(env.state_dir().join("audit-gap.jsonl"));
    assert_eq!(spill.map_or(0, |m| m.len()), 0, "nothing is left held");
}
