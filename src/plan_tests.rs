use std::collections::BTreeMap;
use std::time::Duration;

use pretty_assertions::assert_eq;

use super::*;
use crate::profile::{load, ProfileDirs};

fn owner() -> Owner {
    Owner {
        pid: 4242,
        boot_id: "boot".into(),
        state_id: "5ea7e1d".into(),
    }
}

fn request(command: &str) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        ..Default::default()
    }
}

#[test]
fn default_profile_plans_a_locked_down_oneshot_container() {
    let profile = load("default", &ProfileDirs::default()).unwrap();
    let plan = plan(&profile, &request("ls"), "abc", &owner()).unwrap();
    let mut labels = plan.container.labels.clone();
    let digest = labels.remove(LABEL_SPEC_DIGEST).unwrap();
    assert_eq!(digest.len(), 24);
    let expected_labels: BTreeMap<String, String> = [
        (LABEL_MANAGED, "1"),
        (LABEL_PROFILE, "default"),
        (LABEL_ELEVATED, "false"),
        (LABEL_KIND, KIND_ONESHOT),
        (LABEL_OWNER_PID, "4242"),
        (LABEL_OWNER_BOOT, "boot"),
        (LABEL_STATE, "5ea7e1d"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels, expected_labels);
    let c = &plan.container;
    assert_eq!(c.name, "stockade-x-abc");
    assert_eq!(c.cmd, vec!["sleep", "infinity"]);
    assert_eq!(c.user, "0:0");
    assert!(c.read_only_root);
    assert_eq!(c.network_mode, "none");
    assert_eq!(c.cap_drop, vec!["ALL"]);
    assert!(c.cap_add.is_empty());
    assert!(c.security_opt.contains(&"no-new-privileges".to_string()));
    assert!(c.security_opt[0].starts_with("seccomp={"));
    assert_eq!(c.pids_limit, 256);
    assert_eq!(c.memory_bytes, 512 << 20);
    assert_eq!(c.nano_cpus, 1_000_000_000);
    assert!(c.init);
    assert_eq!(
        c.tmpfs.get("/tmp").map(String::as_str),
        Some("rw,nosuid,nodev,noexec,size=67108864,mode=1777,uid=1000,gid=1000")
    );
    assert_eq!(
        plan.process,
        ProcessSpec {
            cmd: vec!["bash".into(), "-c".into(), "ls".into()],
            user: "1000:1000".into(),
            working_dir: "/workspace".into(),
            env: vec![],
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            output_cap: 1 << 20,
        }
    );
}

#[test]
fn session_containers_are_named_and_labelled_by_session() {
    let profile = load("default", &ProfileDirs::default()).unwrap();
    let mut req = request("ls");
    req.session = Some("agent-7".into());
    let plan = plan(&profile, &req, "abc", &owner()).unwrap();
    assert_eq!(plan.container.name, "stockade-s-5ea7e1d-agent-7");
    assert_eq!(plan.container.labels[LABEL_KIND], KIND_SESSION);
    assert_eq!(plan.container.labels[LABEL_SESSION], "agent-7");
    assert!(!plan.container.labels.contains_key(LABEL_OWNER_PID));
}

#[test]
fn spec_digest_changes_with_the_profile() {
    let a = load("default", &ProfileDirs::default()).unwrap();
    let mut b = a.clone();
    b.pids_limit += 1;
    let pa = plan(&a, &request("x"), "1", &owner()).unwrap();
    let pb = plan(&b, &request("x"), "1", &owner()).unwrap();
    assert_ne!(
        pa.container.labels[LABEL_SPEC_DIGEST],
        pb.container.labels[LABEL_SPEC_DIGEST]
    );
}

#[test]
fn bad_requests_are_refused() {
    let profile = load("default", &ProfileDirs::default()).unwrap();
    let mut req = request("a\0b");
    assert_eq!(
        plan(&profile, &req, "1", &owner()).unwrap_err(),
        PlanError::NulByte
    );
    req = request("ls");
    req.session = Some("../escape".into());
    assert!(matches!(
        plan(&profile, &req, "1", &owner()),
        Err(PlanError::SessionId { .. })
    ));
    req = request("ls");
    req.env = vec!["LD_PRELOAD=/x.so".into()];
    assert!(matches!(
        plan(&profile, &req, "1", &owner()),
        Err(PlanError::EnvNotAllowed { .. })
    ));
    req.env = vec!["NOEQUALS".into()];
    assert!(matches!(
        plan(&profile, &req, "1", &owner()),
        Err(PlanError::EnvSyntax { .. })
    ));
    req = request("ls");
    req.workdir = Some("relative".into());
    assert!(matches!(
        plan(&profile, &req, "1", &owner()),
        Err(PlanError::Workdir { .. })
    ));
}

#[test]
fn kill_script_spares_init_keeper_and_itself() {
    let script = kill_script(Duration::from_secs(2)).join(" ");
    assert!(script.contains("1|$$|$me|$keeper"));
    assert!(script.contains("kill -TERM"));
    assert!(script.contains("kill -KILL"));
    assert!(script.contains("-lt 40"), "2 s of 50 ms polls: {script}");
}
