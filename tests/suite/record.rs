//! `profile record` / `profile verify` against the real engine: the recorded profile is far
//! smaller than Docker's, runs its workload, refuses escapes, merges as a union, and makes a
//! different workload fail with "Operation not permitted".

use std::collections::BTreeSet;
use std::path::Path;

use stockade::seccomp::{
    caps, lint_seccomp, load_profile_json, resolve, Arch, LoadOptions, Severity,
};

use crate::require_docker;
use crate::suite::common::{stdout, Env};

const WORKLOAD: &str = "ls -la / && cat /etc/os-release && sort /etc/passwd";

/// Syscalls the file lets run, resolved without capabilities (the default profile's set).
fn allowed(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("recorded profile written");
    let p = load_profile_json(&text, &LoadOptions::default()).expect("recorded profile loads");
    resolve(&p, &BTreeSet::new(), Arch::host(), None).allowed()
}

fn docker_default_allowed() -> usize {
    let text = include_str!("../../profiles/seccomp/docker-default.json");
    let p = load_profile_json(text, &LoadOptions::default()).unwrap();
    resolve(&p, &caps::docker_default(), Arch::host(), None)
        .allowed()
        .len()
}

fn record(env: &Env, out: &Path, extra: &[&str], command: &str) -> std::process::Output {
    env.cmd()
        .args(["profile", "record", "-o"])
        .arg(out)
        .args(extra)
        .arg("--")
        .arg(command)
        .output()
        .expect("run stockade profile record")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn recorded_profile_is_far_smaller_than_dockers_and_verifies() {
    require_docker!();
    let env = Env::new();
    let out = env.dir.path().join("ls.json");
    let run = record(&env, &out, &["--verify"], WORKLOAD);
    let report = text(&run);
    assert_eq!(run.status.code(), Some(0), "{report}");
    // The workload's own output streams through.
    assert!(report.contains("PRETTY_NAME="), "{report}");

    let names = allowed(&out);
    let docker = docker_default_allowed();
    assert_eq!(docker, 309);
    assert!(
        names.len() * 3 < docker,
        "{} syscalls recorded, Docker's default allows {docker}",
        names.len()
    );
    for needed in [
        "execve",
        "openat",
        "getdents64",
        "exit_group",
        "rt_sigreturn",
        "wait4",
    ] {
        assert!(names.contains(needed), "{needed} missing: {names:?}");
    }
    for refused in [
        "ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "clone3",
    ] {
        assert!(!names.contains(refused), "{refused} allowed");
    }

    // It lints clean of critical findings, for the profile's (empty) capability set too.
    let p = load_profile_json(
        &std::fs::read_to_string(&out).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let findings = lint_seccomp(&resolve(&p, &BTreeSet::new(), Arch::host(), None));
    assert!(
        findings.iter().all(|f| f.severity != Severity::Critical),
        "{findings:?}"
    );

    // Verification: the workload passes, unshare and mount are refused with EPERM.
    assert!(report.contains("workload ok"), "{report}");
    assert!(
        report.contains("unshare  ok    denied (EPERM): exit 1: unshare: unshare failed: Operation not permitted"),
        "{report}"
    );
    assert!(report.contains("mount    ok    denied (EPERM)"), "{report}");
    assert!(report.contains("verify passed"), "{report}");
    assert!(
        report.contains(&format!("profile   {} syscall(s) allowed", names.len())),
        "{report}"
    );
}

#[test]
fn merge_of_two_recordings_is_the_union() {
    require_docker!();
    let env = Env::new();
    let dir = env.dir.path();
    let (a, b, ab) = (dir.join("a.json"), dir.join("b.json"), dir.join("ab.json"));
    let reader = "ls -la /";
    let writer = "mkdir /tmp/d && touch /tmp/d/f";
    for (out, command, extra) in [
        (&a, reader, vec![]),
        (&b, writer, vec![]),
        (&ab, writer, vec!["--merge", a.to_str().unwrap()]),
    ] {
        let run = record(&env, out, &extra, command);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    }
    let (a, b, ab) = (allowed(&a), allowed(&b), allowed(&ab));
    assert!(b.contains("mkdir") && !a.contains("mkdir"));
    assert!(a.contains("lgetxattr") && !b.contains("lgetxattr"));
    let union: BTreeSet<String> = a.union(&b).cloned().collect();
    assert_eq!(ab, union);
}

#[test]
fn profile_recorded_for_one_workload_fails_clearly_for_another() {
    require_docker!();
    let env = Env::new();
    let profiles = env.profiles_dir();
    std::fs::create_dir_all(&profiles).unwrap();
    let recorded = profiles.join("ls.json");
    let run = record(&env, &recorded, &[], "ls -la /");
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let toml =
        include_str!("../../profiles/default.toml").replace("seccomp/default.json", "ls.json");
    env.write_profile("ls-only", &toml);

    // The recorded workload runs under it...
    let ok = env.exec(&["--profile", "ls-only"], "ls -la /");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    // ...another one fails on the first call the recording never saw.
    let other = env.exec(&["--profile", "ls-only"], "mkdir /tmp/x");
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    assert!(
        String::from_utf8_lossy(&other.stderr)
            .contains("mkdir: cannot create directory '/tmp/x': Operation not permitted"),
        "{}",
        text(&other)
    );

    // `profile verify` says the same, and exits 1.
    let verify = env
        .cmd()
        .args(["profile", "verify"])
        .arg(&recorded)
        .args(["--", "mkdir /tmp/x"])
        .output()
        .unwrap();
    let report = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(
        report.contains("workload FAIL  exit 1 (expected 0): mkdir: cannot create directory '/tmp/x': Operation not permitted"),
        "{report}"
    );
}

#[test]
fn merge_refuses_a_profile_record_did_not_write_before_running_anything() {
    let env = Env::new();
    let docker = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/seccomp/docker-default.json");
    let out = env.dir.path().join("x.json");
    let run = record(&env, &out, &["--merge", docker.to_str().unwrap()], "true");
    let report = text(&run);
    assert_eq!(run.status.code(), Some(125), "{report}");
    assert!(
        report.contains("not a profile `profile record` wrote"),
        "{report}"
    );
    assert!(!out.exists());
    assert!(env.audit_records().is_empty(), "nothing may run");
}

#[test]
fn profile_show_includes_the_resolved_seccomp_summary() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["profile", "show", "default"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("default errno 1 (EPERM); ") && text.contains("with 0 capabilities"),
        "{text}"
    );
    let json = env
        .cmd()
        .args(["profile", "show", "default", "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let summary = &value["seccomp_summary"];
    assert_eq!(summary["default_action"], "SCMP_ACT_ERRNO(1)");
    assert!(summary["allowed"].as_u64().unwrap() > 200);
}
