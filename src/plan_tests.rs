use std::collections::BTreeSet;
use std::time::Duration;

use pretty_assertions::assert_eq;

use super::*;
use crate::backend::User;
use crate::profile::{load, ProfileDirs};

const STATE: &str = "5ea7e1d";
const SANDBOX: User = User {
    uid: 65532,
    gid: 65532,
};

fn shell(command: &str) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Shell(command.into()),
        ..Default::default()
    }
}

fn default_profile() -> Profile {
    load("default", &ProfileDirs::default()).unwrap()
}

#[test]
fn default_profile_plans_a_locked_down_oneshot_sandbox() {
    let profile = default_profile();
    let plan = plan(&profile, &shell("ls"), "abc", STATE, None).unwrap();
    let tmpfs = |path: &str, size_bytes: u64, exec: bool| TmpfsMount {
        path: path.into(),
        size_bytes,
        mode: 0o1777,
        exec,
        owner: SANDBOX,
    };
    let mut expected = SandboxSpec {
        name: "stockade-x-abc".into(),
        kind: SandboxKind::Oneshot { exec: "abc".into() },
        owner: STATE.into(),
        profile: "default".into(),
        elevated: false,
        image: crate::backend::docker::image::base_image_ref(),
        user: SANDBOX,
        read_only_root: true,
        tmpfs: vec![
            tmpfs("/home/sandbox", 16 << 20, false),
            tmpfs("/tmp", 64 << 20, false),
            tmpfs("/workspace", 256 << 20, true),
        ],
        binds: vec![],
        network: Network::None,
        capabilities: BTreeSet::new(),
        no_new_privileges: true,
        seccomp: profile.seccomp.clone(),
        limits: Limits {
            pids: 256,
            memory_bytes: 512 << 20,
            nano_cpus: 1_000_000_000,
        },
        agent: None,
        digest: String::new(),
    };
    // The digest is checked on its own below.
    expected.digest = plan.sandbox.digest.clone();
    assert_eq!(plan.sandbox, expected);
    assert_eq!(plan.sandbox.digest.len(), 24);
    assert_eq!(
        plan.process,
        ProcessSpec {
            argv: vec!["bash".into(), "-c".into(), "ls".into()],
            user: SANDBOX,
            working_dir: "/workspace".into(),
            env: vec![],
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            output_cap: 1 << 20,
            output_hard_limit: 64 << 20,
            stdin: false,
        }
    );
    assert_eq!(plan.session, None);
}

#[test]
fn an_argv_runs_without_a_shell_and_is_judged_quoted() {
    let words: Vec<String> = ["ls", "-la", "/tmp/my dir"].map(String::from).to_vec();
    let command = CommandLine::from_words(words.clone());
    assert_eq!(command, CommandLine::Argv(words.clone()));
    assert_eq!(command.argv(), words);
    assert_eq!(command.text(), "ls -la '/tmp/my dir'");
    let one = CommandLine::from_words(vec!["echo a; echo b".into()]);
    assert_eq!(one.argv(), ["bash", "-c", "echo a; echo b"]);
    assert_eq!(one.text(), "echo a; echo b");
    let request = ExecRequest {
        command,
        stdin: true,
        ..Default::default()
    };
    let plan = plan(&default_profile(), &request, "abc", STATE, None).unwrap();
    assert_eq!(plan.process.argv, words);
    assert!(plan.process.stdin);
}

#[test]
fn session_sandboxes_are_named_by_state_and_session() {
    let mut req = shell("ls");
    req.session = Some("agent-7".into());
    let plan = plan(&default_profile(), &req, "abc", STATE, None).unwrap();
    assert_eq!(plan.sandbox.name, "stockade-s-5ea7e1d-agent-7");
    assert_eq!(
        plan.sandbox.kind,
        SandboxKind::Session {
            name: "agent-7".into()
        }
    );
    assert_eq!(plan.session.as_deref(), Some("agent-7"));
}

#[test]
fn the_agents_mounts_change_the_digest_and_nothing_else() {
    let profile = default_profile();
    let mounts = crate::agent::Mounts {
        binary: "/state/agent/stockade-agent".into(),
        run_dir: "/state/run/abc/run".into(),
        hostname: "/state/agent/hostname".into(),
    };
    let with = plan(&profile, &shell("ls"), "abc", STATE, Some(&mounts)).unwrap();
    let without = plan(&profile, &shell("ls"), "abc", STATE, None).unwrap();
    assert_ne!(with.sandbox.digest, without.sandbox.digest);
    let mut expected = without.sandbox.clone();
    expected.agent = Some(mounts);
    expected.digest = with.sandbox.digest.clone();
    assert_eq!(with.sandbox, expected);
    assert_eq!(with.process, without.process);
}

#[test]
fn the_digest_covers_the_profile_and_the_seccomp_file_but_not_the_name() {
    let a = default_profile();
    let mut b = a.clone();
    b.pids_limit += 1;
    let digest = |p: &Profile, exec: &str| {
        plan(p, &shell("x"), exec, STATE, None)
            .unwrap()
            .sandbox
            .digest
    };
    assert_ne!(digest(&a, "1"), digest(&b, "1"));
    assert_eq!(digest(&a, "1"), digest(&a, "2"));
    let mut c = a.clone();
    let mut seccomp = (*a.seccomp).clone();
    seccomp.json.push(' ');
    c.seccomp = std::sync::Arc::new(seccomp);
    assert_ne!(digest(&a, "1"), digest(&c, "1"));
}

#[test]
fn bad_requests_are_refused() {
    let profile = default_profile();
    let refused = |req: &ExecRequest| plan(&profile, req, "1", STATE, None).unwrap_err();
    assert_eq!(refused(&shell("a\0b")), PlanError::NulByte);
    assert!(matches!(
        refused(&shell(&"x".repeat(MAX_ARGUMENT_BYTES + 1))),
        PlanError::CommandTooLong { len, .. } if len == MAX_ARGUMENT_BYTES + 1
    ));
    assert!(plan(
        &profile,
        &shell(&"x".repeat(MAX_ARGUMENT_BYTES)),
        "1",
        STATE,
        None
    )
    .is_ok());
    let many = ExecRequest {
        command: CommandLine::Argv(vec!["y".repeat(100_000); 9]),
        ..Default::default()
    };
    assert!(matches!(refused(&many), PlanError::ArgvTooLong { .. }));
    let empty = ExecRequest {
        command: CommandLine::Argv(vec![]),
        ..Default::default()
    };
    assert_eq!(refused(&empty), PlanError::Empty);
    let mut req = shell("ls");
    req.session = Some("../escape".into());
    assert!(matches!(refused(&req), PlanError::SessionId { .. }));
    req = shell("ls");
    req.env = vec!["LD_PRELOAD=/x.so".into()];
    assert!(matches!(refused(&req), PlanError::EnvNotAllowed { .. }));
    req.env = vec!["NOEQUALS".into()];
    assert!(matches!(refused(&req), PlanError::EnvSyntax { .. }));
    req = shell("ls");
    req.workdir = Some("relative".into());
    assert!(matches!(refused(&req), PlanError::Workdir { .. }));
    req = shell("ls");
    req.timeout = Some(Duration::ZERO);
    assert_eq!(refused(&req), PlanError::ZeroTimeout);
    req.timeout = Some(Duration::from_secs(25 * 3600));
    assert!(matches!(refused(&req), PlanError::Timeout { .. }));
}

#[test]
fn argv_words_that_a_shell_would_expand_are_quoted() {
    let cases = [
        (
            vec!["bash", "-c", "{chmod,4755,/workspace/sh}"],
            "bash -c '{chmod,4755,/workspace/sh}'",
        ),
        (vec!["A=1", "env"], "'A=1' env"),
        (
            vec!["ls", "~root", "*", "a?", "[x]", "#c", ""],
            "ls '~root' '*' 'a?' '[x]' '#c' ''",
        ),
        (vec!["echo", "it's"], r"echo 'it'\''s'"),
        (
            vec!["git", "log", "--format=%H", "a,b", "-1"],
            "git log '--format=%H' a,b -1",
        ),
    ];
    for (argv, text) in cases {
        let words: Vec<String> = argv.iter().map(|w| w.to_string()).collect();
        assert_eq!(CommandLine::Argv(words).text(), text);
    }
}

/// The judged text of an argv is what a shell would run: every rule's `matches` example, run
/// as `bash -c EXAMPLE` in argv form, is still caught by that rule.
#[test]
fn every_rule_example_wrapped_in_an_argv_is_still_caught() {
    let checker = crate::check::Checker::builtin().unwrap();
    let mut checked = 0;
    for (i, rule) in checker.rules().iter().enumerate() {
        for example in &rule.matches {
            for shell in ["bash", "sh"] {
                let argv = vec![shell.to_string(), "-c".to_string(), example.clone()];
                let text = CommandLine::Argv(argv).text();
                let hit = checker.raw_hits(&text).iter().any(|h| h.rule == i);
                assert!(
                    hit,
                    "rule {} missed its example in argv form: {text}",
                    rule.id
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} examples");
}

proptest::proptest! {
    #[test]
    fn an_argv_text_splits_back_to_the_same_words(words in proptest::collection::vec("[^\u{0}]{0,12}", 1..6)) {
        let text = CommandLine::Argv(words.clone()).text();
        proptest::prop_assert_eq!(shell_words::split(&text).unwrap(), words);
    }
}
