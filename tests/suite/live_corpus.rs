//! `stockade corpus run --live`: the live-safe escape attempts of fixtures/corpus run in the
//! default sandbox with the check stage bypassed, and nothing reaches the host. A bounded
//! sample here (two per category); scripts/ci-extra runs them all.

use std::process::Command;
use std::time::Duration;

use super::common::{stderr, stdout, unique, Env};
use crate::require_docker;

/// Attempts that exit 0 inside the sandbox without any effect beyond it: reads of what the
/// sandbox shows its own processes, and `nsenter -t 1` without a namespace to enter.
const HARMLESS_SUCCESSES: &[&str] = &[
    "find /sys/fs/cgroup -name release_agent",
    "cat /proc/sys/kernel/core_pattern",
    "ls -la /proc/sys/fs/binfmt_misc/",
    "tar -cf /dev/null /dev/null --checkpoint=1 --checkpoint-action=exec=/bin/sh",
    "cat /proc/self/environ",
    "printf '\\x6e\\x73\\x65\\x6e\\x74\\x65\\x72\\x20\\x2d\\x74\\x20\\x31' | sh",
    "${PATH:0:1}bin${PATH:0:1}sh -c id",
    "$(tr '[a-z]' '[n-za-m]' <<< 'afragre') -t 1",
];

#[test]
fn live_escape_attempts_fail_are_audited_as_bypassed_and_leave_the_host_unchanged() {
    require_docker!();
    let env = Env::new();
    let out = env
        .cmd()
        .args(["corpus", "run", "--live", "--per-category", "2", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["contained"], true);
    assert_eq!(report["changes"].as_array().unwrap().len(), 0);
    assert_eq!(report["exposed_sockets"].as_array().unwrap().len(), 0);
    assert_eq!(report["containers_left"].as_array().unwrap().len(), 0);
    let attempts = report["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 15, "{} attempts", attempts.len());
    for a in attempts {
        let command = a["command"].as_str().unwrap();
        assert!(a["error"].is_null(), "not run: {a}");
        assert!(
            a["failed"] == true || HARMLESS_SUCCESSES.contains(&command),
            "an escape attempt succeeded inside the sandbox: {a}"
        );
    }
    // Every attempt (and the socket probe) is on record as run with the check bypassed.
    let starts: Vec<serde_json::Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "start")
        .collect();
    assert_eq!(starts.len(), attempts.len() + 1);
    assert!(starts.iter().all(|s| s["check_bypassed"] == true));
    let verify = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[test]
fn the_canaries_notice_a_foreign_container_and_a_touched_canary_file() {
    require_docker!();
    use stockade::canary::{compare, CanaryFile, Snapshot};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = stockade::backend::docker::DockerBackend::new(
        stockade::backend::docker::engine::DEFAULT_HOST,
        Duration::from_secs(10),
        stockade::backend::docker::DockerOptions {
            state_dir: std::env::temp_dir(),
            agent: false,
        },
    );
    let canary = CanaryFile::create().unwrap();
    let before = runtime.block_on(Snapshot::take(&backend, &canary)).unwrap();
    let name = unique("canary-foreign");
    let created = Command::new("docker")
        .args([
            "create",
            "--name",
            &name,
            &stockade::backend::docker::image::base_image_ref(),
            "true",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    std::fs::write(canary.path(), b"changed").unwrap();
    let after = runtime.block_on(Snapshot::take(&backend, &canary));
    Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    let changes = compare(&before, &after.unwrap(), 1000);
    let kinds: Vec<&str> = changes.iter().map(|c| c.canary).collect();
    assert!(kinds.contains(&"containers"), "{changes:?}");
    assert!(kinds.contains(&"canary_file"), "{changes:?}");
}
