//! Seccomp profiles: Docker's and Podman's defaults end to end, lint rules (must flag / must not
//! flag), diff, compile failures, and a loader that never panics on arbitrary JSON.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pretty_assertions::assert_eq;
use proptest::prelude::*;
use serde_json::{json, Value};
use stockade::seccomp::{
    caps, compile, diff, lint_caps, lint_seccomp, load_profile_json, resolve, Action, Arch,
    Finding, LintReport, LoadOptions, ResolvedProfile, SeccompError, SeccompProfile, Severity,
    Verdict,
};

/// A current kernel: every `minKernel` in the reference profiles is met.
const KERNEL: Option<(u32, u32)> = Some((6, 1));

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seccomp")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(json: &str) -> SeccompProfile {
    load_profile_json(json, &LoadOptions::default()).expect("profile loads")
}

fn docker() -> SeccompProfile {
    load(&fixture("docker-default.json"))
}

fn podman() -> SeccompProfile {
    load(&fixture("podman-default.json"))
}

fn resolved(p: &SeccompProfile, caps: &BTreeSet<String>) -> ResolvedProfile {
    resolve(p, caps, Arch::X86_64, KERNEL)
}

fn with_caps(extra: &[&str]) -> BTreeSet<String> {
    let mut c = caps::docker_default();
    c.extend(extra.iter().map(|s| s.to_string()));
    c
}

#[test]
fn docker_default_resolves_like_dockerd_on_x86_64() {
    let expected: BTreeSet<String> = fixture("docker-default-x86_64-allowed.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    let r = resolved(&docker(), &caps::docker_default());
    assert_eq!(r.allowed(), expected);
    assert_eq!(expected.len(), 309);
    // The argument rules survive resolution.
    assert!(matches!(r.verdict("socket"), Verdict::Conditional { .. }));
    assert!(matches!(
        r.verdict("personality"),
        Verdict::Conditional { .. }
    ));
    assert!(matches!(r.verdict("clone"), Verdict::Conditional { .. }));
    assert_eq!(
        r.verdict("clone3"),
        Verdict::Deny {
            action: Action::Errno(38)
        }
    );
    assert_eq!(
        r.verdict("mount"),
        Verdict::Deny {
            action: Action::Errno(1)
        }
    );
    assert!(r.not_on_arch.contains("_llseek"));
    assert_eq!(
        r.architectures,
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    );
}

#[test]
fn docker_default_on_old_kernel_drops_ptrace() {
    let r = resolve(
        &docker(),
        &caps::docker_default(),
        Arch::X86_64,
        Some((4, 4)),
    );
    for name in ["ptrace", "process_vm_readv", "process_vm_writev"] {
        assert!(!r.verdict(name).may_run(), "{name}");
    }
    assert_eq!(r.allowed().len(), 306);
}

#[test]
fn capability_rules_follow_the_bounding_set() {
    let r = resolved(&docker(), &with_caps(&["CAP_SYS_ADMIN"]));
    assert_eq!(r.verdict("mount"), Verdict::Allow);
    assert_eq!(r.verdict("clone3"), Verdict::Allow);
    // The namespace-mask clone rule excludes CAP_SYS_ADMIN; the SYS_ADMIN rule allows clone whole.
    assert_eq!(r.verdict("clone"), Verdict::Allow);
    // Dropping SYS_CHROOT removes chroot.
    let mut fewer = caps::docker_default();
    fewer.remove("CAP_SYS_CHROOT");
    assert!(!resolved(&docker(), &fewer).verdict("chroot").may_run());
}

#[test]
fn reference_profiles_import_resolve_compile_and_lint_on_both_arches() {
    for (name, p) in [("docker", docker()), ("podman", podman())] {
        for arch in Arch::ALL {
            let r = resolve(&p, &caps::docker_default(), arch, KERNEL);
            let compiled = compile(&r, arch).unwrap_or_else(|e| panic!("{name}/{arch}: {e}"));
            assert!(!compiled.filters.is_empty());
            for f in &compiled.filters {
                assert!(
                    f.instructions < 4096,
                    "{name}/{arch}: {} instructions",
                    f.instructions
                );
            }
            let findings = lint_seccomp(&r);
            // Podman leaves mount, unshare, keyctl... to capability checks: lint says so.
            if name == "docker" {
                assert!(
                    findings.iter().all(|f| f.severity != Severity::Critical),
                    "{name}/{arch}: {findings:#?}"
                );
            }
            println!(
                "{name} {arch}: {} allowed, {} filters, {:?} instructions, lint {}",
                r.allowed().len(),
                compiled.filters.len(),
                compiled
                    .filters
                    .iter()
                    .map(|f| f.instructions)
                    .collect::<Vec<_>>(),
                LintReport::new(name, findings).score
            );
        }
    }
}

#[test]
fn podman_default_resolves_with_its_errno_rules() {
    let r = resolved(&podman(), &caps::docker_default());
    assert_eq!(r.default_action, Some(Action::Errno(38)));
    assert_eq!(
        r.verdict("bpf"),
        Verdict::Deny {
            action: Action::Errno(1)
        }
    );
    // Podman lists setns in its allow list before the EPERM rule: the first rule decides.
    assert_eq!(r.verdict("setns"), Verdict::Allow);
    assert!(r.syscalls["setns"].shadowed.contains(&16));
    let allowed = r.allowed();
    assert!(allowed.contains("socket") && allowed.contains("read"));
    assert_eq!(allowed.len(), 314);
}

// ---- lint: every rule must flag its case and must not flag Docker's default ----

/// Syscalls a minimal working profile allows: what a container needs to start and exit.
const BASE: &[&str] = &[
    "read",
    "write",
    "close",
    "fcntl",
    "futex",
    "getpid",
    "rt_sigprocmask",
    "rt_sigaction",
    "rt_sigreturn",
    "sched_yield",
    "nanosleep",
    "mmap",
    "munmap",
    "madvise",
    "tgkill",
    "capget",
    "capset",
    "prctl",
    "execve",
    "exit",
    "exit_group",
    "brk",
    "openat",
];

fn base_rules() -> Vec<Value> {
    vec![json!({"names": BASE, "action": "SCMP_ACT_ALLOW"})]
}

fn profile_with(extra: Vec<Value>) -> Value {
    let mut rules = base_rules();
    rules.extend(extra);
    json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": rules})
}

fn lint_json(v: &Value, opts: &LoadOptions) -> Vec<Finding> {
    let p = load_profile_json(&v.to_string(), opts).expect("loads");
    lint_seccomp(&resolved(&p, &caps::docker_default()))
}

fn ids(findings: &[Finding]) -> BTreeSet<&'static str> {
    findings.iter().map(|f| f.id).collect()
}

#[test]
fn minimal_profile_has_no_findings() {
    let findings = lint_json(&profile_with(vec![]), &LoadOptions::default());
    assert_eq!(findings, vec![]);
    assert_eq!(LintReport::new("p", findings).score, 100);
}

#[test]
fn lint_rules_flag_their_case() {
    let cases: Vec<(&str, Value, Severity)> = vec![
        ("seccomp-unconfined", json!({}), Severity::Critical),
        (
            "seccomp-default-allow",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}),
            Severity::Critical,
        ),
        (
            "seccomp-default-trace",
            json!({"defaultAction": "SCMP_ACT_TRACE", "syscalls": base_rules()}),
            Severity::Warn,
        ),
        (
            "syscall-dangerous",
            profile_with(vec![
                json!({"names": ["mount"], "action": "SCMP_ACT_ALLOW"}),
            ]),
            Severity::Critical,
        ),
        (
            "syscall-dangerous",
            profile_with(vec![
                json!({"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"}),
            ]),
            Severity::Warn,
        ),
        (
            "syscall-unrestricted-args",
            profile_with(vec![
                json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW"}),
            ]),
            Severity::Warn,
        ),
        (
            "syscall-essential-blocked",
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
                {"names": BASE.iter().filter(|n| **n != "exit_group").collect::<Vec<_>>(), "action": "SCMP_ACT_ALLOW"}]}),
            Severity::Critical,
        ),
        (
            "syscall-runtime-init-blocked",
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
                {"names": BASE.iter().filter(|n| **n != "futex").collect::<Vec<_>>(), "action": "SCMP_ACT_ALLOW"}]}),
            Severity::Warn,
        ),
        (
            "seccomp-default-errno",
            json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": base_rules()}),
            Severity::Info,
        ),
        (
            "rule-shadowed",
            profile_with(vec![json!({"names": ["read"], "action": "SCMP_ACT_ERRNO"})]),
            Severity::Info,
        ),
        (
            "rule-order-conflict",
            profile_with(vec![
                json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}),
                json!({"names": ["socket"], "action": "SCMP_ACT_KILL_PROCESS"}),
            ]),
            Severity::Info,
        ),
        (
            "rule-repeated-arg",
            profile_with(vec![
                json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_GE"}, {"index": 0, "value": 10, "op": "SCMP_CMP_LE"}]}),
            ]),
            Severity::Warn,
        ),
    ];
    for (id, profile, severity) in cases {
        let findings = lint_json(&profile, &LoadOptions::default());
        assert!(
            findings
                .iter()
                .any(|f| f.id == id && f.severity == severity),
            "{id} ({severity}) not flagged for {profile}: {findings:#?}"
        );
        assert!(findings.iter().all(|f| !f.fix.is_empty()));
    }
    let unknown = profile_with(vec![
        json!({"names": ["mkdri"], "action": "SCMP_ACT_ERRNO"}),
    ]);
    let opts = LoadOptions {
        allow_unknown_syscalls: true,
    };
    assert!(ids(&lint_json(&unknown, &opts)).contains("syscall-unknown-skipped"));
}

#[test]
fn lint_rules_do_not_flag_docker_default() {
    let findings = lint_seccomp(&resolved(&docker(), &caps::docker_default()));
    let got = ids(&findings);
    for id in [
        "seccomp-unconfined",
        "seccomp-default-allow",
        "seccomp-default-trace",
        "syscall-unrestricted-args",
        "syscall-essential-blocked",
        "syscall-runtime-init-blocked",
        "seccomp-default-errno",
        "rule-order-conflict",
        "rule-repeated-arg",
        "syscall-unknown-skipped",
    ] {
        assert!(
            !got.contains(id),
            "{id} flagged on Docker's default: {findings:#?}"
        );
    }
    // Only the ptrace family (allowed from kernel 4.8) is flagged as dangerous.
    let dangerous: BTreeSet<&str> = findings
        .iter()
        .filter(|f| f.id == "syscall-dangerous")
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(
        dangerous,
        BTreeSet::from(["process_vm_readv", "process_vm_writev", "ptrace"])
    );
}

#[test]
fn a_syscall_allowed_only_under_a_missing_cap_is_not_flagged() {
    // Docker's default allows mount only with CAP_SYS_ADMIN.
    let without = lint_seccomp(&resolved(&docker(), &caps::docker_default()));
    assert!(!without.iter().any(|f| f.subject == "mount"));
    let with = lint_seccomp(&resolved(&docker(), &with_caps(&["CAP_SYS_ADMIN"])));
    assert!(with
        .iter()
        .any(|f| f.subject == "mount" && f.severity == Severity::Critical));
}

#[test]
fn cap_lint_flags_added_caps_only() {
    let default = lint_caps(&caps::docker_default());
    assert_eq!(
        default
            .iter()
            .map(|f| f.subject.as_str())
            .collect::<Vec<_>>(),
        vec!["CAP_NET_RAW"]
    );
    assert_eq!(default[0].severity, Severity::Info);
    let added = lint_caps(&with_caps(&[
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_DAC_READ_SEARCH",
    ]));
    let sev = |cap: &str| added.iter().find(|f| f.subject == cap).map(|f| f.severity);
    assert_eq!(sev("CAP_SYS_ADMIN"), Some(Severity::Critical));
    assert_eq!(sev("CAP_DAC_READ_SEARCH"), Some(Severity::Critical));
    assert_eq!(sev("CAP_NET_ADMIN"), Some(Severity::Warn));
}

#[test]
fn report_serializes_and_displays() {
    let findings = lint_seccomp(&resolved(&docker(), &caps::docker_default()));
    let report = LintReport::new("docker-default.json", findings);
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["score"], json!(report.score));
    assert_eq!(v["findings"][0]["severity"], json!("warn"));
    let text = report.to_string();
    assert!(text.contains("score 85/100"), "{text}");
    assert!(text.contains("fix: remove ptrace"), "{text}");
}

// ---- diff ----

#[test]
fn diff_of_a_profile_with_itself_is_empty() {
    let r = resolved(&docker(), &caps::docker_default());
    let d = diff(&r, &r, &r.caps, &r.caps);
    assert!(d.is_empty());
    assert!(d.to_string().contains("no differences"));
}

#[test]
fn diff_shows_caps_and_the_syscalls_they_unlock() {
    let a_caps = caps::docker_default();
    let b_caps = with_caps(&["CAP_SYS_ADMIN"]);
    let a = resolved(&docker(), &a_caps);
    let b = resolved(&docker(), &b_caps);
    let d = diff(&a, &b, &a_caps, &b_caps);
    assert_eq!(d.caps_added, vec!["CAP_SYS_ADMIN"]);
    assert!(d.caps_removed.is_empty());
    for s in ["mount", "umount2", "unshare", "setns", "clone3", "bpf"] {
        assert!(
            d.syscalls_added.contains(&s.to_string()),
            "{s}: {:?}",
            d.syscalls_added
        );
    }
    assert!(d.syscalls_removed.is_empty());
    let clone = d
        .rules_changed
        .iter()
        .find(|c| c.syscall == "clone")
        .expect("clone changed");
    assert!(clone.a.contains("arg0 & 0x7e020000 == 0x0"), "{}", clone.a);
    assert_eq!(clone.b, "allow");
    let text = d.to_string();
    assert!(text.contains("+ cap      CAP_SYS_ADMIN"), "{text}");
    assert!(text.contains("+ syscall  mount"), "{text}");
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["caps_added"], json!(["CAP_SYS_ADMIN"]));
}

#[test]
fn diff_docker_vs_podman() {
    let caps = caps::docker_default();
    let a = resolved(&docker(), &caps);
    let b = resolved(&podman(), &caps);
    let d = diff(&a, &b, &caps, &caps);
    assert_eq!(
        d.default_action,
        Some((
            "errno 1 (EPERM)".to_string(),
            "errno 38 (ENOSYS)".to_string()
        ))
    );
    // Podman allows setns and keeps socket(AF_NETLINK, NETLINK_AUDIT) out without AUDIT_WRITE.
    assert!(d.syscalls_added.contains(&"setns".to_string()));
    assert!(d.rules_changed.iter().any(|c| c.syscall == "socket"));
}

// ---- compile ----

#[test]
fn compile_refuses_a_program_over_the_kernel_limit() {
    // Each 64-bit comparison takes several instructions; 1500 of them exceed BPF_MAXINSNS (4096).
    let rules: Vec<Value> = (0..1500)
        .map(|i| json!({"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]}))
        .collect();
    let err = load_profile_json(&profile_with(rules).to_string(), &LoadOptions::default())
        .expect_err("too large");
    assert!(matches!(err, SeccompError::Compile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cannot become a BPF program") && text.contains("4096"),
        "{text}"
    );
}

#[test]
fn compile_stacks_one_filter_per_action() {
    // Without AUDIT_WRITE, Podman's EINVAL rule for audit sockets applies too.
    let mut caps = caps::docker_default();
    caps.remove("CAP_AUDIT_WRITE");
    let r = resolved(&podman(), &caps);
    let c = compile(&r, Arch::X86_64).unwrap();
    let actions: Vec<(Action, Action)> = c
        .filters
        .iter()
        .map(|f| (f.match_action, f.mismatch_action))
        .collect();
    assert_eq!(
        actions,
        vec![
            (Action::Allow, Action::Errno(38)),
            (Action::Errno(1), Action::Allow),
            (Action::Errno(22), Action::Allow),
        ]
    );
}

#[test]
fn default_allow_without_rules_compiles_to_nothing() {
    let p = load(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    let c = compile(&resolved(&p, &caps::docker_default()), Arch::X86_64).unwrap();
    assert!(c.filters.is_empty());
    assert_eq!(c.notes.len(), 1);
}

// ---- the loader never panics ----

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just("SCMP_ACT_ALLOW".to_string()),
            Just("SCMP_ACT_ERRNO".to_string()),
            Just("SCMP_ACT_NOTIFY".to_string()),
            Just("SCMP_CMP_MASKED_EQ".to_string()),
            Just("CAP_SYS_ADMIN".to_string()),
            Just("read".to_string()),
            Just("4.8".to_string()),
            "[a-z_0-9.]{0,12}".prop_map(String::from),
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("defaultAction"),
        Just("defaultErrnoRet"),
        Just("syscalls"),
        Just("names"),
        Just("action"),
        Just("args"),
        Just("index"),
        Just("value"),
        Just("valueTwo"),
        Just("op"),
        Just("errnoRet"),
        Just("includes"),
        Just("excludes"),
        Just("caps"),
        Just("arches"),
        Just("minKernel"),
        Just("archMap"),
        Just("architectures"),
        Just("flags"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(keys.clone().prop_map(String::from), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn loader_never_panics_on_random_json(v in arb_json()) {
        for allow in [false, true] {
            let opts = LoadOptions { allow_unknown_syscalls: allow };
            if let Ok(p) = load_profile_json(&v.to_string(), &opts) {
                let r = resolve(&p, &caps::docker_default(), Arch::X86_64, None);
                let _ = compile(&r, Arch::X86_64);
                let _ = lint_seccomp(&r);
                let _ = diff(&r, &r, &r.caps, &r.caps);
            }
        }
    }

    #[test]
    fn loader_never_panics_on_random_text(s in "\\PC{0,200}") {
        let _ = load_profile_json(&s, &LoadOptions::default());
    }

    #[test]
    fn mutated_docker_profile_never_panics(cut in 0usize..13_470, byte in any::<u8>()) {
        let mut text = fixture("docker-default.json").into_bytes();
        let at = cut % text.len();
        text[at] = byte;
        if let Ok(s) = String::from_utf8(text) {
            let _ = load_profile_json(&s, &LoadOptions::default());
        }
    }
}

// ---- CLI handlers ----

#[test]
fn lint_and_diff_report_through_exit_codes() {
    let env = super::common::Env::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seccomp");
    let docker = dir.join("docker-default.json").display().to_string();
    let podman = dir.join("podman-default.json").display().to_string();
    let target = ["--arch", "x86_64", "--kernel", "6.1"];
    let run = |args: &[&str]| {
        let out = env.cmd().args(args).args(target).output().unwrap();
        out.status.code().unwrap()
    };
    let lint = |profile: &str, cap_add: &[&str]| {
        let mut args = vec!["profile", "lint", "--json", profile];
        for cap in cap_add {
            args.extend(["--cap-add", cap]);
        }
        run(&args)
    };
    assert_eq!(lint(&docker, &[]), 0);
    assert_eq!(lint(&docker, &["sys_admin"]), 1);
    assert_eq!(lint(&podman, &[]), 1);
    let diff = |a: &str, b: &str| run(&["profile", "diff", a, b]);
    assert_eq!(diff(&docker, &docker), 0);
    assert_eq!(diff(&docker, &podman), 1);
    // Sandbox profiles by name: the built-in default lints without criticals, and differs from
    // Docker's default seccomp file with Docker's capabilities by the capabilities it drops.
    assert_eq!(lint("default", &[]), 0);
    assert_eq!(diff("default", "default"), 0);
    assert_eq!(diff(&docker, "default"), 1);
    // A file that is not there is stockade's error, not a finding.
    assert_eq!(lint("/nonexistent.json", &[]), 125);
    assert_eq!(run(&["profile", "lint", "--bogus", "default"]), 125);
}
