//! Bad input gets a clear error, and nothing runs unaudited or is lost: NUL bytes, a 1 MiB
//! command, non-UTF-8 arguments, unknown and malformed profiles, malformed rule files, and a
//! state directory or audit file that is not stockade's to trust.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::common::{self, stderr, unique, Env};
use crate::require_docker;

/// The last execution in the log: its start and finish.
fn last_execution(env: &Env) -> (serde_json::Value, serde_json::Value) {
    let mut records = env.audit_records();
    let finish = records.pop().expect("a finish record");
    let start = records.pop().expect("a start record");
    assert_eq!(start["kind"], "start");
    assert_eq!(finish["kind"], "finish");
    assert_eq!(start["id"], finish["id"]);
    (start, finish)
}

#[test]
fn a_command_with_a_nul_byte_is_refused_and_audited() {
    let env = Env::new();
    // A NUL byte cannot reach stockade through argv: through the library, as a server would.
    let settings = stockade::service::Settings {
        state_dir: env.state_dir(),
        profile_dirs: stockade::profile::ProfileDirs::default(),
        config: stockade::config::Config::default(),
        secrets_key: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        let backend = stockade::backend::docker::DockerBackend::new(
            stockade::backend::docker::engine::DEFAULT_HOST,
            Duration::from_secs(5),
            stockade::backend::docker::DockerOptions {
                state_dir: env.state_dir(),
                agent: true,
            },
        );
        let service = stockade::service::Service::new(backend, settings).unwrap();
        let request = stockade::plan::ExecRequest {
            command: stockade::plan::CommandLine::Shell("echo a\0b".into()),
            ..Default::default()
        };
        service
            .exec(
                &stockade::service::Principal::new("tester"),
                &request,
                &Default::default(),
                None,
                None,
                &stockade::cancel::Cancel::never(),
            )
            .await
    });
    assert_eq!(result.outcome, stockade::audit::Outcome::Error);
    assert!(result.error.as_deref().unwrap().contains("NUL byte"));
    let (start, finish) = last_execution(&env);
    assert_eq!(
        start["command"], "echo a\u{0}b",
        "the command is kept as given"
    );
    assert_eq!(finish["outcome"], "error");
    assert!(finish["sandbox"].is_null(), "nothing ran");
}

#[test]
fn an_argv_over_the_limit_is_refused_with_the_limit_and_kept_whole_in_the_audit() {
    let env = Env::new();
    // Split over arguments: one argument may not exceed 128 KiB even on the way to stockade.
    // Several words are an argv: 832 KiB of them is over what one process is given (and under
    // the check stage's 1 MiB, past which a command is denied as too long to judge).
    let piece = format!("echo {}", "x".repeat(64 * 1024 - 6));
    let pieces = vec![piece.as_str(); 13];
    let out = env
        .cmd()
        .args(["exec", "--"])
        .args(&pieces)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("the arguments and environment are"), "{err}");
    assert!(err.contains("at most 786432"), "{err}");
    let (start, finish) = last_execution(&env);
    assert_eq!(
        start["command"].as_str().unwrap(),
        shell_words::join(&pieces),
        "kept whole, as judged"
    );
    assert_eq!(finish["outcome"], "error");
    assert!(finish["sandbox"].is_null(), "nothing ran");
}

#[test]
fn a_non_utf8_argument_is_refused_and_audited_lossily() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["exec", "--", "echo"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("argument 2 is not valid UTF-8"),
        "{}",
        stderr(&out)
    );
    let (start, finish) = last_execution(&env);
    assert_eq!(start["command"], "echo 'caf\u{fffd}'");
    assert_eq!(finish["outcome"], "error");
}

#[test]
fn unknown_and_malformed_profiles_are_named_and_audited() {
    let env = Env::new();
    let out = env.exec(&["--profile", "no-such-profile"], "true");
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no-such-profile"), "{}", stderr(&out));
    let (start, finish) = last_execution(&env);
    assert_eq!(start["profile"], "no-such-profile");
    assert_eq!(finish["outcome"], "error");

    let path = env.write_profile("broken", "user = \"1000:1000\"\nlimits = [unclosed\n");
    let out = env.exec(&["--profile", "broken"], "true");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&path.display().to_string()) || err.contains("broken"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let (start, _) = last_execution(&env);
    assert_eq!(start["profile"], "broken");

    // A profile that parses but asks for something unsafe names the field.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/default.toml"
    ))
    .unwrap()
    .replace("network = \"none\"", "network = \"host\"");
    env.write_profile("hostnet", &text);
    let out = env.exec(&["--profile", "hostnet"], "true");
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("network"), "{}", stderr(&out));
}

#[test]
fn a_malformed_rules_file_is_named() {
    let env = Env::new();
    let dir = env.dir.path().join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "[[rule]]\nid = \"x\"\nthis is not toml\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["check", "--rules"])
        .arg(&dir)
        .args(["--", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
}

/// The state directory problems all refuse before anything runs: no container is created
/// (checked by a session that must not appear), and the error says how to fix it.
fn refused_before_running(env: &Env, fix: &str) {
    let s = unique("refused");
    let out = env.exec(&["--session", &s], "true");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains(fix), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    if common::docker_available() {
        assert!(common::containers_with_label(&format!("org.stockade.session={s}")).is_empty());
    }
}

#[test]
fn a_state_directory_open_to_others_is_refused_with_the_chmod() {
    let env = Env::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    refused_before_running(&env, &format!("chmod 700 {}", env.state_dir().display()));
}

#[test]
fn a_state_directory_owned_by_someone_else_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: making a directory owned by another uid needs root");
        return;
    }
    let env = Env::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(env.state_dir(), Some(65534), Some(65534)).unwrap();
    refused_before_running(&env, "owned by uid 65534");
}

#[test]
fn a_symlinked_audit_file_is_refused_and_its_target_untouched() {
    let env = Env::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = env.dir.path().join("elsewhere.jsonl");
    std::fs::write(&target, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&target, env.audit_path()).unwrap();
    refused_before_running(&env, "symbolic link");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious\n");
}

#[test]
fn refusals_do_not_break_the_chain() {
    require_docker!();
    let env = Env::new();
    env.exec(&["--profile", "nope"], "true");
    env.exec(&[], "echo a\u{1}b");
    env.exec(&["--elevated"], "true");
    let verify = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", common::stdout(&verify));
    assert_eq!(env.audit_records().len(), 6);
}
