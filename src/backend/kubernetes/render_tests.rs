use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec, SecurityContext};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use pretty_assertions::assert_eq;
use proptest::prelude::*;

use super::*;
use crate::backend::{BindMount, Network, SandboxSpec, TmpfsMount, User};
use crate::plan::sandbox_spec;
use crate::profile::{load, ProfileDirs};

/// Set to rewrite the snapshots from what the code renders now (then review the diff).
const UPDATE_ENV: &str = "STOCKADE_UPDATE_SNAPSHOTS";
const STATE_ID: &str = "5ea7e1d";

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/kubernetes")
}

fn spec_of(profile: &str, session: Option<&str>) -> (SandboxSpec, RenderOptions) {
    let p = load(profile, &ProfileDirs::default()).unwrap();
    let mut spec = sandbox_spec(&p, session, "x", STATE_ID, None);
    // The base image's reference and the spec digest carry this build's version: fixed here
    // so a snapshot changes only when the rendering does.
    if spec.image.starts_with("stockade/base") {
        spec.image = "stockade/base:snapshot".into();
    }
    spec.digest = "0123456789abcdef".into();
    let lifetime = match session {
        Some(_) => Duration::from_secs(8 * 3600),
        None => p.timeout,
    };
    (
        spec,
        RenderOptions::new("stockade-sandboxes", lifetime, p.kill_grace),
    )
}

fn web_profile() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/kubernetes/profiles/web.toml")
        .display()
        .to_string()
}

fn check_snapshot(name: &str, spec: &SandboxSpec, opts: &RenderOptions) {
    let manifests = render(spec, opts).unwrap();
    let rendered = serde_json::to_string_pretty(&manifests.objects()).unwrap() + "\n";
    let path = snapshot_dir().join(format!("{name}.json"));
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::create_dir_all(snapshot_dir()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with {UPDATE_ENV}=1 to write it)",
            path.display()
        )
    });
    assert_eq!(
        rendered, stored,
        "{name}: rerun with {UPDATE_ENV}=1 and review"
    );
}

#[test]
fn the_default_profile_renders_as_its_snapshot() {
    let (spec, opts) = spec_of("default", None);
    check_snapshot("default-oneshot", &spec, &opts);
}

#[test]
fn a_default_session_renders_as_its_snapshot() {
    let (spec, opts) = spec_of("default", Some("s1"));
    check_snapshot("default-session", &spec, &opts);
}

#[test]
fn a_profile_with_a_capability_renders_as_its_snapshot() {
    let (spec, mut opts) = spec_of(&web_profile(), Some("build"));
    opts.arch = "arm64".into();
    check_snapshot("web-session-arm64", &spec, &opts);
}

/// k8s-openapi's deserializers skip unknown fields, so a round trip through the typed structs
/// drops any key the API does not know, as the API server would.
fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned>(value: &serde_json::Value) {
    let typed: T = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&typed).unwrap(), value);
}

#[test]
fn every_rendered_field_is_a_field_of_the_api() {
    for (profile, session) in [("default".to_string(), None), (web_profile(), Some("s"))] {
        let (spec, opts) = spec_of(&profile, session);
        let m = render(&spec, &opts).unwrap();
        let objects = m.objects();
        round_trips::<SeccompProfile>(&objects[0]);
        round_trips::<NetworkPolicy>(&objects[1]);
        round_trips::<Pod>(&objects[2]);
    }
}

#[test]
fn security_fields_are_spelt_as_the_api_spells_them() {
    let (spec, opts) = spec_of("default", None);
    let pod = serde_json::to_value(render(&spec, &opts).unwrap().pod).unwrap();
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let names =
        |list: &[&str]| -> BTreeSet<String> { list.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        keys(&pod["spec"]["containers"][0]["securityContext"]),
        names(&[
            "allowPrivilegeEscalation",
            "capabilities",
            "privileged",
            "readOnlyRootFilesystem",
            "runAsGroup",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile",
        ])
    );
    assert_eq!(
        keys(&pod["spec"]["securityContext"]),
        names(&[
            "fsGroup",
            "runAsGroup",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile"
        ])
    );
    assert_eq!(
        keys(&pod["spec"]),
        names(&[
            "activeDeadlineSeconds",
            "automountServiceAccountToken",
            "containers",
            "dnsConfig",
            "dnsPolicy",
            "enableServiceLinks",
            "hostIPC",
            "hostNetwork",
            "hostPID",
            "restartPolicy",
            "securityContext",
            "shareProcessNamespace",
            "terminationGracePeriodSeconds",
            "volumes",
        ])
    );
    assert_eq!(
        keys(&pod["spec"]["securityContext"]["seccompProfile"]),
        names(&["localhostProfile", "type"])
    );
}

#[test]
fn the_seccomp_object_is_named_by_its_digest_and_the_pod_points_at_it() {
    let (spec, opts) = spec_of("default", None);
    let m = render(&spec, &opts).unwrap();
    let name = m.seccomp_profile.metadata.name.clone().unwrap();
    let sha = &m.seccomp_profile.metadata.annotations.as_ref().unwrap()
        [labels::ANNOTATION_SECCOMP_SHA256];
    assert_eq!(name, format!("stockade-default-{}", &sha[..12]));
    let pod_spec = m.pod.spec.unwrap();
    let path = pod_spec.security_context.unwrap().seccomp_profile.unwrap();
    assert_eq!(
        path.localhost_profile,
        Some(format!("operator/{name}.json"))
    );
    // A capability changes the resolved rules, so the name.
    let (mut with_cap, _) = spec_of("default", None);
    with_cap.capabilities.insert("CAP_SYS_PTRACE".into());
    let other = render(&with_cap, &opts).unwrap().seccomp_profile;
    assert_ne!(other.metadata.name.unwrap(), name);
    assert!(m
        .seccomp_profile
        .spec
        .syscalls
        .iter()
        .all(|r| !r.names.is_empty()));
    assert_eq!(
        m.seccomp_profile.spec.architectures,
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    );
}

#[test]
fn the_elevated_profile_is_refused_naming_its_user() {
    let p = load("elevated", &ProfileDirs::default()).unwrap();
    let spec = sandbox_spec(&p, None, "x", STATE_ID, None);
    let opts = RenderOptions::new("ns", p.timeout, p.kill_grace);
    let err = render(&spec, &opts).unwrap_err();
    assert!(matches!(err, RenderError::RootUser { uid: 0, .. }), "{err}");
    assert!(err.to_string().contains("user = \"0:0\""), "{err}");
}

#[test]
fn a_node_looser_than_the_profile_is_refused_unless_overridden() {
    let (spec, _) = spec_of("default", None);
    let refuse = |limit, allow| check_node_pids(&spec, "n1", limit, PidsOverride(allow));
    for limit in [None, Some(-1), Some(0), Some(257), Some(4096)] {
        let err = refuse(limit, false).unwrap_err();
        assert!(err.to_string().contains("limits.pids = 256"), "{err}");
        refuse(limit, true).unwrap();
    }
    refuse(Some(256), false).unwrap();
    refuse(Some(100), false).unwrap();
}

#[test]
fn network_none_needs_an_enforced_policy() {
    let (mut spec, _) = spec_of("default", None);
    let err = check_network(&spec, NetworkEnforcement::Unknown).unwrap_err();
    assert!(err.to_string().contains("network = \"none\""), "{err}");
    check_network(&spec, NetworkEnforcement::Enforced).unwrap();
    check_network(&spec, NetworkEnforcement::Trusted).unwrap();
    spec.network = Network::Named("bridge".into());
    for e in [NetworkEnforcement::Enforced, NetworkEnforcement::Trusted] {
        assert!(matches!(
            check_network(&spec, e),
            Err(RenderError::Network { .. })
        ));
    }
}

#[test]
fn seccomp_the_crd_cannot_hold_is_refused() {
    let caps = BTreeSet::new();
    let errno = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[]}"#;
    assert!(matches!(
        seccomp::render("p", errno, &caps, "amd64"),
        Err(RenderError::SeccompErrnoRet { value: 38, .. })
    ));
    let big = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["personality"],
        "action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":18446744073709551615,"op":"SCMP_CMP_EQ"}]}]}"#;
    let err = seccomp::render("p", big, &caps, "amd64").unwrap_err();
    assert!(
        err.to_string().contains("syscalls[0].args[0].value"),
        "{err}"
    );
    assert!(matches!(
        seccomp::render("p", errno, &caps, "sparc"),
        Err(RenderError::SeccompErrnoRet { .. } | RenderError::Arch { .. })
    ));
}

fn containers_security(spec: &PodSpec) -> &SecurityContext {
    spec.containers[0].security_context.as_ref().unwrap()
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETUID",
    "CAP_SYS_PTRACE",
    "CAP_KILL",
];

prop_compose! {
    fn specs()(
        uid in prop_oneof![Just(0u32), 1u32..70_000],
        gid in prop_oneof![Just(0u32), 1u32..70_000],
        read_only_root in prop::bool::weighted(0.8),
        tmpfs in prop::collection::vec((1u64..(4u64 << 30), any::<bool>()), 0..4),
        pids in 1i64..100_000,
        memory in (1i64 << 20)..(64i64 << 30),
        nano_cpus in 1_000_000i64..64_000_000_000,
        caps in prop::collection::btree_set(prop::sample::select(CAPS), 0..3),
        named in prop::bool::weighted(0.1),
        bind in prop::bool::weighted(0.1),
        session in any::<bool>(),
    ) -> SandboxSpec {
        let (mut spec, _) = spec_of("default", session.then_some("s"));
        spec.user = User { uid, gid };
        spec.read_only_root = read_only_root;
        spec.tmpfs = tmpfs.iter().enumerate().map(|(i, (size, exec))| TmpfsMount {
            path: format!("/t{i}"),
            size_bytes: *size,
            mode: 0o1777,
            exec: *exec,
            owner: spec.user,
        }).collect();
        spec.limits.pids = pids;
        spec.limits.memory_bytes = memory;
        spec.limits.nano_cpus = nano_cpus;
        spec.capabilities = caps.into_iter().map(String::from).collect();
        if named {
            spec.network = Network::Named("bridge".into());
        }
        if bind {
            spec.binds.push(BindMount { source: "/h".into(), target: "/b".into(), read_only: true });
        }
        spec
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_rendered_pod_is_locked_down_and_every_refusal_fires(spec in specs()) {
        let opts = RenderOptions::new("ns", Duration::from_secs(60), Duration::from_secs(2));
        let refusable = spec.user.uid == 0
            || spec.user.gid == 0
            || !spec.read_only_root
            || !spec.binds.is_empty()
            || spec.network != Network::None;
        let result = render(&spec, &opts);
        prop_assert_eq!(result.is_err(), refusable, "{:?}", result.as_ref().err());
        let Ok(m) = result else {
            let err = result.unwrap_err();
            let named = matches!(
                err,
                RenderError::RootUser { .. }
                    | RenderError::WritableRoot { .. }
                    | RenderError::Bind { .. }
                    | RenderError::Network { .. }
            );
            prop_assert!(named, "{}", err);
            return Ok(());
        };
        let pod = m.pod.spec.as_ref().unwrap();
        let sc = containers_security(pod);
        let psc = pod.security_context.as_ref().unwrap();
        prop_assert_eq!(sc.run_as_non_root, Some(true));
        prop_assert_eq!(psc.run_as_non_root, Some(true));
        prop_assert_ne!(sc.run_as_user, Some(0));
        prop_assert_eq!(sc.run_as_user, Some(i64::from(spec.user.uid)));
        prop_assert_eq!(sc.run_as_group, Some(i64::from(spec.user.gid)));
        prop_assert_eq!(sc.read_only_root_filesystem, Some(true));
        prop_assert_eq!(sc.allow_privilege_escalation, Some(false));
        prop_assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().unwrap();
        prop_assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        prop_assert_eq!(caps.add.as_ref().map_or(0, Vec::len), spec.capabilities.len());
        for seccomp in [sc.seccomp_profile.as_ref(), psc.seccomp_profile.as_ref()] {
            let s = seccomp.unwrap();
            prop_assert_eq!(&s.type_, "Localhost");
            prop_assert_eq!(s.localhost_profile.clone(), Some(m.seccomp_profile.localhost_path()));
        }
        let res = pod.containers[0].resources.as_ref().unwrap();
        prop_assert!(res.limits.is_some());
        prop_assert_eq!(&res.limits, &res.requests);
        prop_assert_eq!(pod.automount_service_account_token, Some(false));
        prop_assert_eq!(pod.host_network, Some(false));
        prop_assert_eq!(pod.host_pid, Some(false));
        prop_assert_eq!(pod.host_ipc, Some(false));
        prop_assert_eq!(pod.share_process_namespace, Some(false));
        prop_assert_eq!(pod.enable_service_links, Some(false));
        prop_assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        prop_assert_eq!(pod.dns_policy.as_deref(), Some("None"));
        prop_assert!(pod.active_deadline_seconds.unwrap() > 60);
        prop_assert!(pod.volumes.iter().flatten().all(|v| v.host_path.is_none()
            && v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("Memory")
            && v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()).is_some()));
        let np = m.network_policy.spec.as_ref().unwrap();
        prop_assert_eq!(np.policy_types.clone(), Some(vec!["Ingress".to_string(), "Egress".to_string()]));
        prop_assert!(np.ingress.is_none() && np.egress.is_none());
        prop_assert_eq!(
            np.pod_selector.match_labels.as_ref().unwrap().get(LABEL_SANDBOX),
            m.pod.metadata.labels.as_ref().unwrap().get(LABEL_SANDBOX)
        );
    }
}

/// The operator object allows, on each architecture, every syscall stockade's own resolver (the
/// one the Docker and native backends use) allows there unconditionally: a rule kept or dropped
/// by `includes`/`excludes` differently would break the sandbox's programs (`arch_prctl` on
/// amd64) or widen its filter.
#[test]
fn the_operator_object_allows_what_stockades_resolver_allows() {
    let json = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/seccomp/default.json"),
    )
    .unwrap();
    let model = crate::seccomp::load_profile_json(&json, &Default::default()).unwrap();
    for (goarch, arch) in [
        ("amd64", crate::seccomp::Arch::X86_64),
        ("arm64", crate::seccomp::Arch::Aarch64),
    ] {
        let object = seccomp::render("default", &json, &BTreeSet::new(), goarch).unwrap();
        let rendered: BTreeSet<String> = object
            .spec
            .syscalls
            .iter()
            .filter(|r| r.action == "SCMP_ACT_ALLOW" && r.args.is_empty())
            .flat_map(|r| r.names.iter().cloned())
            .collect();
        let resolved =
            crate::seccomp::resolve(&model, &BTreeSet::new(), arch, None).allowed_unconditionally();
        let missing: Vec<_> = resolved.difference(&rendered).collect();
        assert!(
            missing.is_empty(),
            "{goarch}: not allowed by the operator object: {missing:?}"
        );
    }
    let amd64 = seccomp::render("default", &json, &BTreeSet::new(), "amd64").unwrap();
    assert!(amd64
        .spec
        .syscalls
        .iter()
        .any(|r| r.names.iter().any(|n| n == "arch_prctl")));
    let arm64 = seccomp::render("default", &json, &BTreeSet::new(), "arm64").unwrap();
    assert!(!arm64
        .spec
        .syscalls
        .iter()
        .any(|r| r.names.iter().any(|n| n == "arch_prctl")));
}
