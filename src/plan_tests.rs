use std::collections::BTreeMap;
use std::time::Duration;

use pretty_assertions::assert_eq;

use super::*;
use crate::profile::{load, ProfileDirs};

const STATE: &str = "5ea7e1d";

fn request(command: &str) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        ..Default::default()
    }
}

#[test]
fn default_profile_plans_a_locked_down_oneshot_container() {
    let profile = load("default", &ProfileDirs::default()).unwrap();
    let plan = plan(&profile, &request("ls"), "abc", STATE, None).unwrap();
    let mut labels = plan.container.labels.clone();
    let digest = labels.remove(LABEL_SPEC_DIGEST).unwrap();
    assert_eq!(digest.len(), 24);
    let expected_labels: BTreeMap<String, String> = [
        (LABEL_MANAGED, "1"),
        (LABEL_PROFILE, "default"),
        (LABEL_ELEVATED, "false"),
        (LABEL_KIND, KIND_ONESHOT),
        (LABEL_EXEC, "abc"),
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
        Some("rw,nosuid,nodev,noexec,size=67108864,mode=1777,uid=65532,gid=65532")
    );
    assert_eq!(
        plan.process,
        ProcessSpec {
            cmd: vec!["bash".into(), "-c".into(), "ls".into()],
            user: "65532:65532".into(),
            working_dir: "/workspace".into(),
            env: vec![],
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            output_cap: 1 << 20,
            output_hard_limit: 64 << 20,
        }
    );
}

#[test]
fn session_containers_are_named_and_labelled_by_session() {
    let profile = load("default", &ProfileDirs::default()).unwrap();
    let mut req = request("ls");
    req.session = Some("agent-7".into());
    let plan = plan(&profile, &req, "abc", STATE, None).unwrap();
    assert_eq!(plan.container.name, "stockade-s-5ea7e1d-agent-7");
    assert_eq!(plan.container.labels[LABEL_KIND], KIND_SESSION);
    assert_eq!(plan.container.labels[LABEL_SESSION], "agent-7");
    assert!(!plan.container.labels.contains_key(LABEL_EXEC));
}

#[test]
fn with_the_agent_the_keeper_is_the_agent_and_its_mounts_are_read_only() {
    let profile = load("default", &ProfileDirs::default()).unwrap();
    let mounts = crate::agent::Mounts {
        binary: "/state/agent/stockade-agent".into(),
        run_dir: "/state/run/abc/run".into(),
        hostname: "/state/agent/hostname".into(),
    };
    let with = plan(&profile, &request("ls"), "abc", STATE, Some(&mounts)).unwrap();
    let without = plan(&profile, &request("ls"), "abc", STATE, None).unwrap();
    let mut expected = without.container.clone();
    expected.cmd = vec!["/run/stockade-agent".into(), "keep".into()];
    expected.binds = vec![
        "/state/agent/stockade-agent:/run/stockade-agent:ro".into(),
        "/state/run/abc/run:/run/stockade:ro".into(),
        "/state/agent/hostname:/etc/hostname:ro".into(),
    ];
    expected.agent = true;
    expected.labels.insert(LABEL_AGENT.into(), "1".into());
    let mut actual = with.container.clone();
    // The digest covers the mounts, so it differs; everything else is as without the agent.
    assert_ne!(
        actual.labels.remove(LABEL_SPEC_DIGEST),
        expected.labels.remove(LABEL_SPEC_DIGEST)
    );
    assert_eq!(actual, expected);
    assert_eq!(with.process, without.process);
}

#[test]
fn spec_digest_changes_with_the_profile() {
    let a = load("default", &ProfileDirs::default()).unwrap();
    let mut b = a.clone();
    b.pids_limit += 1;
    let pa = plan(&a, &request("x"), "1", STATE, None).unwrap();
    let pb = plan(&b, &request("x"), "1", STATE, None).unwrap();
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
        plan(&profile, &req, "1", STATE, None).unwrap_err(),
        PlanError::NulByte
    );
    req = request(&"x".repeat(MAX_COMMAND_BYTES + 1));
    assert!(matches!(
        plan(&profile, &req, "1", STATE, None),
        Err(PlanError::CommandTooLong { len, .. }) if len == MAX_COMMAND_BYTES + 1
    ));
    req = request(&"x".repeat(MAX_COMMAND_BYTES));
    assert!(plan(&profile, &req, "1", STATE, None).is_ok());
    req = request("ls");
    req.session = Some("../escape".into());
    assert!(matches!(
        plan(&profile, &req, "1", STATE, None),
        Err(PlanError::SessionId { .. })
    ));
    req = request("ls");
    req.env = vec!["LD_PRELOAD=/x.so".into()];
    assert!(matches!(
        plan(&profile, &req, "1", STATE, None),
        Err(PlanError::EnvNotAllowed { .. })
    ));
    req.env = vec!["NOEQUALS".into()];
    assert!(matches!(
        plan(&profile, &req, "1", STATE, None),
        Err(PlanError::EnvSyntax { .. })
    ));
    req = request("ls");
    req.workdir = Some("relative".into());
    assert!(matches!(
        plan(&profile, &req, "1", STATE, None),
        Err(PlanError::Workdir { .. })
    ));
}

#[test]
fn kill_script_spares_init_keeper_and_itself() {
    let script = kill_script(Duration::from_secs(2)).join(" ");
    assert!(script.contains("1|$$|$keeper) continue"));
    assert!(script.contains("all TERM"));
    assert!(script.contains("all KILL"));
    assert!(script.contains("-lt 40"), "2 s of 50 ms polls: {script}");
    assert!(script.ends_with("exit 3"), "{script}");
    // Fork-free apart from `sleep`: no command substitution, no pipeline.
    assert!(!script.replace("$((", "").contains("$("), "{script}");
    assert!(!script.contains(" | "), "{script}");
}
