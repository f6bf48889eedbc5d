//! The exec flow above the backend boundary, against the scripted backend: what is acquired,
//! run, killed, reset and removed for each outcome, what the result says, and what the audit
//! log has.

use std::time::Duration;

use super::*;
use crate::audit::{self, LOG_FILE};
use crate::backend::fake::{Acquire, Call, FakeBackend, Run};
use crate::cancel::Cancel;
use crate::config::Config;
use crate::plan::CommandLine;
use crate::profile::ProfileDirs;
use crate::service::Settings;

struct Flow {
    _dir: tempfile::TempDir,
    service: Service<FakeBackend>,
    fake: FakeBackend,
}

fn flow(acquire: Acquire, run: Run) -> Flow {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeBackend::new(acquire, run);
    let settings = Settings {
        state_dir: dir.path().join("state"),
        profile_dirs: ProfileDirs::default(),
        config: Config::default(),
        secrets_key: None,
    };
    let service = Service::new(fake.clone(), settings).unwrap();
    Flow {
        _dir: dir,
        service,
        fake,
    }
}

fn shell(command: &str) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Shell(command.into()),
        ..Default::default()
    }
}

fn in_session(command: &str, session: &str) -> ExecRequest {
    ExecRequest {
        session: Some(session.into()),
        ..shell(command)
    }
}

impl Flow {
    async fn exec(&self, request: &ExecRequest) -> ExecResult {
        self.exec_cancelled(request, &Cancel::never()).await
    }

    async fn exec_cancelled(&self, request: &ExecRequest, cancel: &Cancel) -> ExecResult {
        let result = self
            .service
            .exec(
                &Principal::new("tester"),
                request,
                &ExecOptions::default(),
                None,
                None,
                cancel,
            )
            .await;
        validate(&result);
        result
    }

    /// The audit log's (start, finish) records of `id`.
    fn audited(&self, id: &str) -> (Start, Finish) {
        let records = audit::tail(&self.service.state_dir.join(LOG_FILE), 100).unwrap();
        let start = records.iter().find_map(|r| match &r.body {
            RecordBody::Start(s) if s.id == id => Some(s.clone()),
            _ => None,
        });
        let finish = records.iter().find_map(|r| match &r.body {
            RecordBody::Finish(f) if f.id == id => Some(f.clone()),
            _ => None,
        });
        (start.expect("a start"), finish.expect("a finish"))
    }

    fn removed(&self) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Remove { id } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// In-flight markers left behind (each says something of an execution may be left).
    fn in_flight(&self) -> usize {
        std::fs::read_dir(self.service.state_dir.join(crate::inflight::INFLIGHT_DIR))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Every result, whatever its outcome, has the shape docs/exec-result.schema.json says.
fn validate(result: &ExecResult) {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../docs/exec-result.schema.json")).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    });
    let value = serde_json::to_value(result).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{value:#}");
}

#[tokio::test]
async fn a_denied_command_never_acquires_a_sandbox_and_is_audited() {
    let f = flow(Acquire::Ready, Run::default());
    let result = f.exec(&shell("nsenter -t 1 -m sh")).await;
    assert_eq!(result.outcome, Outcome::Denied);
    assert_eq!(result.decision, Some(Decision::Deny));
    assert!(
        result.rules.iter().any(|r| r.id == "ns.nsenter"),
        "{:?}",
        result.rules
    );
    assert!(result
        .error
        .as_deref()
        .unwrap()
        .starts_with("denied by policy"));
    assert!(!f.fake.acquired(), "{:?}", f.fake.calls());
    assert!(f.fake.calls().is_empty(), "{:?}", f.fake.calls());
    let (start, finish) = f.audited(result.audit_id.as_deref().unwrap());
    assert_eq!(start.decision, Decision::Deny);
    assert_eq!(start.backend, BackendKind::Fake);
    assert_eq!(finish.outcome, Outcome::Denied);
}

/// Code can reach the command other than as its text: through an environment value it
/// evaluates, or through a stdin given in advance that a shell reads. Both are judged.
#[tokio::test]
async fn env_values_and_a_given_stdin_are_judged_and_recorded() {
    for request in [
        ExecRequest {
            command: CommandLine::Shell("eval \"$X\"".into()),
            env: vec!["X=nsenter -t 1 -m sh".into()],
            ..Default::default()
        },
        ExecRequest {
            command: CommandLine::Argv(vec!["bash".into()]),
            stdin: true,
            stdin_given: Some(b"nsenter -t 1 -m sh\n".to_vec()),
            ..Default::default()
        },
    ] {
        let f = flow(Acquire::Ready, Run::default());
        let result = f.exec(&request).await;
        assert_eq!(result.outcome, Outcome::Denied, "{request:?}");
        assert!(result.rules.iter().any(|r| r.id == "ns.nsenter"));
        assert!(!f.fake.acquired());
        let (start, _) = f.audited(result.audit_id.as_deref().unwrap());
        assert_eq!(start.env, request.env);
        assert_eq!(start.stdin_sha256.is_some(), request.stdin_given.is_some());
    }
    // Plain values stay allowed.
    let f = flow(Acquire::Ready, Run::default());
    let request = ExecRequest {
        command: CommandLine::Shell("echo \"$LANG\"".into()),
        env: vec!["LANG=C.UTF-8".into(), "TZ=".into()],
        workdir: Some("/workspace".into()),
        stdin: true,
        stdin_given: Some(b"a,b,c\n1,2,3\n".to_vec()),
        ..Default::default()
    };
    let result = f.exec(&request).await;
    assert_eq!(result.outcome, Outcome::Completed, "{:?}", result.error);
    let (start, _) = f.audited(result.audit_id.as_deref().unwrap());
    assert_eq!(start.workdir.as_deref(), Some("/workspace"));
    assert_eq!(start.via, None);
}

/// A secret reaches the command's environment and nothing else: the result, the live stream
/// and the audit log show `[REDACTED:NAME]` for it and its encodings, and say how many.
#[tokio::test]
async fn a_secret_is_injected_and_redacted_everywhere() {
    let f = flow(
        Acquire::Ready,
        Run::PrintEnv {
            name: "API_TOKEN".into(),
        },
    );
    let value = "tok-3f9a/c0ffee+beef";
    f.service
        .secrets
        .set("API_TOKEN", value.as_bytes())
        .unwrap();
    let options = ExecOptions {
        secrets: vec!["API_TOKEN".into()],
        ..Default::default()
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Sink for Collect {
        fn write(&mut self, _: crate::backend::Stream, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }
    let request = shell(&format!("echo \"$API_TOKEN\" # not {value}"));
    let result = f
        .service
        .exec(
            &Principal::new("tester"),
            &request,
            &options,
            None,
            Some(Box::new(Collect(seen.clone()))),
            &Cancel::never(),
        )
        .await;
    validate(&result);
    assert_eq!(result.outcome, Outcome::Completed, "{:?}", result.error);
    assert_eq!(
        result.stdout,
        "[REDACTED:API_TOKEN]\n[REDACTED:API_TOKEN]\n"
    );
    assert_eq!(result.redactions, 2);
    let streamed = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    assert_eq!(streamed, result.stdout);
    assert!(!result.command.contains(value), "{}", result.command);
    let log = std::fs::read_to_string(f.service.state_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains(value));
    assert!(log.contains("\"secrets\":[\"API_TOKEN\"]"), "{log}");

    // A secret that does not exist is an error before anything runs, and says what to do.
    let options = ExecOptions {
        secrets: vec!["MISSING".into()],
        ..Default::default()
    };
    let result = f
        .service
        .exec(
            &Principal::new("tester"),
            &request,
            &options,
            None,
            None,
            &Cancel::never(),
        )
        .await;
    assert_eq!(result.outcome, Outcome::Error);
    assert!(result.error.as_deref().unwrap().contains("secret list"));
}

#[tokio::test]
async fn an_argv_is_judged_as_its_quoted_form() {
    let f = flow(Acquire::Ready, Run::default());
    let argv = ExecRequest {
        command: CommandLine::Argv(vec!["nsenter".into(), "-t".into(), "1".into(), "-m".into()]),
        ..Default::default()
    };
    let result = f.exec(&argv).await;
    assert_eq!(result.outcome, Outcome::Denied);
    assert_eq!(result.command, "nsenter -t 1 -m");
    // An argv word is one word: a shell in it is seen through, as in any command line.
    let wrapped = ExecRequest {
        command: CommandLine::Argv(vec![
            "bash".into(),
            "-c".into(),
            "nsenter -t 1 -m sh".into(),
        ]),
        ..Default::default()
    };
    let result = f.exec(&wrapped).await;
    assert_eq!(result.command, "bash -c 'nsenter -t 1 -m sh'");
    assert_eq!(result.outcome, Outcome::Denied);
    assert!(!f.fake.acquired());
    // Quote characters in an argv word are part of it (no shell removes them): the program
    // `ns'enter'` is not nsenter, and its quoted form says so.
    let literal = ExecRequest {
        command: CommandLine::Argv(vec!["ns'enter'".into(), "-t".into(), "1".into()]),
        ..Default::default()
    };
    let result = f.exec(&literal).await;
    assert_eq!(result.command, r#"'ns'\''enter'\''' -t 1"#);
    assert_ne!(result.decision, Some(Decision::Deny));
}

#[tokio::test]
async fn a_completed_command_runs_once_and_its_oneshot_is_removed() {
    let f = flow(
        Acquire::Ready,
        Run::Exit {
            code: 3,
            stdout: b"hi\n".to_vec(),
        },
    );
    let request = ExecRequest {
        command: CommandLine::Argv(vec!["printf".into(), "%s\n".into(), "a b".into()]),
        ..Default::default()
    };
    let result = f.exec(&request).await;
    assert_eq!(result.outcome, Outcome::Completed);
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.stdout, "hi\n");
    assert_eq!(result.backend, BackendKind::Fake);
    let calls = f.fake.calls();
    let runs: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Run { .. }))
        .collect();
    assert_eq!(
        runs,
        [&Call::Run {
            argv: vec!["printf".into(), "%s\n".into(), "a b".into()]
        }]
    );
    let sandbox = result.sandbox.clone().unwrap();
    assert_eq!(f.removed(), [format!("id-{sandbox}")]);
    let (_, finish) = f.audited(result.audit_id.as_deref().unwrap());
    assert_eq!(finish.outcome, Outcome::Completed);
    assert_eq!(finish.exit_code, Some(3));
    assert_eq!(finish.sandbox.as_deref(), Some(sandbox.as_str()));
    assert_eq!(f.in_flight(), 0, "nothing is left in flight");
}

#[tokio::test]
async fn an_interrupted_setup_removes_the_oneshot_by_name() {
    let f = flow(Acquire::Hang, Run::default());
    let (canceller, cancel) = Cancel::new();
    let request = shell("true");
    let exec = f.exec_cancelled(&request, &cancel);
    let fire = async {
        // The flow is waiting in `acquire`, which never finishes by itself.
        while !f.fake.acquired() {
            tokio::task::yield_now().await;
        }
        canceller.cancel(Reason::Signal(libc::SIGINT));
    };
    let (result, ()) = tokio::join!(exec, fire);
    assert_eq!(result.outcome, Outcome::Interrupted);
    assert_eq!(result.cancelled, Some(Reason::Signal(libc::SIGINT)));
    assert_eq!(result.interrupted.as_deref(), Some("SIGINT"));
    let acquired = f
        .fake
        .calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Acquire { name, .. } => Some(name),
            _ => None,
        })
        .unwrap();
    assert!(acquired.starts_with("stockade-x-"), "{acquired}");
    assert_eq!(f.removed(), [acquired]);
    assert!(!f.fake.calls().iter().any(|c| matches!(c, Call::Run { .. })));
    let (_, finish) = f.audited(result.audit_id.as_deref().unwrap());
    assert_eq!(finish.outcome, Outcome::Interrupted);
    assert_eq!(finish.signal, Some(libc::SIGINT));
    assert_eq!(f.in_flight(), 0);
}

#[tokio::test]
async fn a_kill_that_cannot_be_confirmed_resets_the_sandbox() {
    let f = flow(Acquire::Ready, Run::KillIncomplete);
    let result = f.exec(&in_session("true", "s1")).await;
    assert_eq!(result.outcome, Outcome::Completed);
    assert!(result.sandbox_reset);
    assert!(
        result.notes.iter().any(|n| n.contains("reset")),
        "{:?}",
        result.notes
    );
    let sandbox = result.sandbox.clone().unwrap();
    assert!(f.fake.calls().contains(&Call::Reset { name: sandbox }));
    let (_, finish) = f.audited(result.audit_id.as_deref().unwrap());
    assert!(finish.sandbox_reset);
}

#[tokio::test]
async fn a_run_that_broke_and_reset_the_sandbox_says_so() {
    let f = flow(
        Acquire::Ready,
        Run::FailAndReset("the agent went away".into()),
    );
    let result = f.exec(&in_session("true", "s1")).await;
    assert_eq!(result.outcome, Outcome::Error);
    assert!(result.sandbox_reset);
    let error = result.error.clone().unwrap();
    assert!(
        error.contains("the agent went away") && error.contains("reset"),
        "{error}"
    );
    let (_, finish) = f.audited(result.audit_id.as_deref().unwrap());
    assert!(finish.sandbox_reset);
    validate(&result);
}

#[tokio::test]
async fn a_recovered_session_says_its_files_are_gone() {
    let f = flow(Acquire::Ready, Run::default());
    let first = f.exec(&in_session("true", "s1")).await;
    assert!(!first.sandbox_reset);
    // The engine lost the session's sandbox: the next command finds it recreated.
    let g = Flow {
        fake: FakeBackend::new(Acquire::Recovered(Recovered::Recreated), Run::default()),
        ..f
    };
    let g = Flow {
        service: Service::with_checker(
            g.fake.clone(),
            Settings {
                state_dir: g.service.state_dir.clone(),
                profile_dirs: ProfileDirs::default(),
                config: Config::default(),
                secrets_key: None,
            },
            g.service.checker.clone(),
        ),
        ..g
    };
    let second = g.exec(&in_session("true", "s1")).await;
    assert_eq!(second.outcome, Outcome::Completed);
    assert!(second.sandbox_reset);
    assert!(second
        .notes
        .contains(&Recovered::Recreated.note().to_string()));
    // The flow told the backend the session existed before.
    assert!(g
        .fake
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Acquire { known: true, .. })));
    // A session's sandbox is never removed after a command.
    assert!(g.removed().is_empty());
}

#[tokio::test]
async fn timeouts_floods_and_failures_have_their_own_outcomes() {
    let f = flow(Acquire::Ready, Run::Timeout);
    let r = f.exec(&shell("sleep 100")).await;
    assert_eq!(
        (r.outcome, r.timed_out, r.exit_code),
        (Outcome::TimedOut, true, None)
    );

    let f = flow(Acquire::Ready, Run::Flood);
    let r = f.exec(&shell("yes")).await;
    assert_eq!(r.outcome, Outcome::OutputLimit);
    assert!(r.output_limit_hit && r.truncated);
    assert!(r.stdout.len() < (2 << 20), "the kept output is capped");

    let f = flow(Acquire::Fail("engine says no".into()), Run::default());
    let r = f.exec(&shell("true")).await;
    assert_eq!(r.outcome, Outcome::Error);
    assert!(r.error.as_deref().unwrap().contains("engine says no"));
    assert_eq!(f.in_flight(), 0);

    let f = flow(Acquire::Ready, Run::Fail("stream broke".into()));
    let r = f.exec(&shell("true")).await;
    assert_eq!(r.outcome, Outcome::Error);
    assert_eq!(
        f.removed().len(),
        1,
        "the one-shot is removed after a failed run"
    );

    let f = flow(Acquire::Ready, Run::UntilCancelled);
    let (canceller, cancel) = Cancel::new();
    let request = shell("sleep 100");
    let exec = f.exec_cancelled(&request, &cancel);
    let fire = async {
        while !f.fake.calls().iter().any(|c| matches!(c, Call::Run { .. })) {
            tokio::task::yield_now().await;
        }
        canceller.cancel(Reason::Disconnected);
    };
    let (r, ()) = tokio::join!(exec, fire);
    assert_eq!(r.outcome, Outcome::Interrupted);
    assert_eq!(r.interrupted.as_deref(), Some("the client disconnected"));
}

#[tokio::test]
async fn refusals_before_the_flow_are_results_and_on_record() {
    let f = flow(Acquire::Ready, Run::default());
    let options = ExecOptions {
        profile: Some("no-such-profile".into()),
        ..Default::default()
    };
    let r = f
        .service
        .exec(
            &Principal::new("tester"),
            &shell("true"),
            &options,
            None,
            None,
            &Cancel::never(),
        )
        .await;
    validate(&r);
    assert_eq!(r.outcome, Outcome::Error);
    assert!(r.error.as_deref().unwrap().contains("no-such-profile"));
    let (start, finish) = f.audited(r.audit_id.as_deref().unwrap());
    assert_eq!(start.profile, "no-such-profile");
    assert_eq!(finish.outcome, Outcome::Error);

    let elevated = ExecOptions {
        elevated: true,
        ..Default::default()
    };
    let r = f
        .service
        .exec(
            &Principal::new("tester"),
            &shell("true"),
            &elevated,
            None,
            None,
            &Cancel::never(),
        )
        .await;
    validate(&r);
    assert_eq!(r.outcome, Outcome::Denied, "{:?}", r.error);
    assert!(!f.fake.acquired());

    let r = f
        .exec(&ExecRequest {
            workdir: Some("relative".into()),
            ..shell("true")
        })
        .await;
    assert_eq!(r.outcome, Outcome::Error);
    assert!(!f.fake.acquired());

    let usage = ExecResult::failed(
        "",
        "error: unexpected argument '--bogus'",
        BackendKind::Docker,
    );
    validate(&usage);
    assert_eq!(usage.decision, None);
}

#[tokio::test]
async fn a_busy_session_is_refused_after_the_commands_timeout() {
    let f = flow(Acquire::Ready, Run::default());
    let held = match session::lock(
        &f.service.state_dir,
        "s1",
        Duration::ZERO,
        std::future::pending(),
    )
    .await
    .unwrap()
    {
        session::Locked::Held(lock) => lock,
        other => panic!("{other:?}"),
    };
    let request = ExecRequest {
        timeout: Some(Duration::from_millis(50)),
        ..in_session("true", "s1")
    };
    let r = f.exec(&request).await;
    assert_eq!(r.outcome, Outcome::Error);
    assert!(
        r.error.as_deref().unwrap().contains("busy"),
        "{:?}",
        r.error
    );
    assert!(!f.fake.acquired());
    drop(held);
}

#[tokio::test]
async fn a_copy_is_audited_with_its_size_and_digest() {
    use crate::files::{CopyRequest, Host};
    let f = flow(Acquire::Ready, Run::default());
    let request = CopyRequest {
        session: "s1".into(),
        path: "/workspace/in.bin".into(),
        direction: audit::Direction::In,
    };
    let mut data: &[u8] = b"\x00\xffbytes";
    let copied = f
        .service
        .copy(
            &Principal::new("tester"),
            &request,
            &ExecOptions::default(),
            Host::Source {
                reader: &mut data,
                size: Some(7),
            },
            &Cancel::never(),
        )
        .await
        .unwrap();
    assert_eq!(copied.bytes, 7);
    assert_eq!(f.fake.file(), b"\x00\xffbytes");
    let (start, finish) = f.audited(&copied.audit_id);
    assert_eq!(start.command, "cp in /workspace/in.bin");
    assert_eq!(start.transfer.unwrap().direction, audit::Direction::In);
    assert_eq!(finish.file_bytes, Some(7));
    assert_eq!(finish.file_sha256.as_deref(), Some(copied.sha256.as_str()));

    let refused = f
        .service
        .copy(
            &Principal::new("tester"),
            &CopyRequest {
                path: "relative".into(),
                ..request
            },
            &ExecOptions::default(),
            Host::Sink(&mut Vec::new()),
            &Cancel::never(),
        )
        .await;
    assert!(refused.is_err());
}

fn flow_with(config: Config, run: Run) -> Flow {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeBackend::new(Acquire::Ready, run);
    let settings = Settings {
        state_dir: dir.path().join("state"),
        profile_dirs: ProfileDirs::default(),
        config,
        secrets_key: None,
    };
    let service = Service::new(fake.clone(), settings).unwrap();
    Flow {
        _dir: dir,
        service,
        fake,
    }
}

/// Makes the audit log refuse appends the way a loosened file does (mode 0644), or undoes it.
fn break_log(f: &Flow, broken: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if broken { 0o644 } else { 0o600 };
    std::fs::set_permissions(
        f.service.state_dir.join(LOG_FILE),
        std::fs::Permissions::from_mode(mode),
    )
    .unwrap();
}

fn runs(f: &Flow) -> usize {
    f.fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Run { .. }))
        .count()
}

fn exit0() -> Run {
    Run::Exit {
        code: 0,
        stdout: b"ok\n".to_vec(),
    }
}

#[tokio::test]
async fn by_default_nothing_runs_when_the_log_cannot_be_written() {
    let f = flow(Acquire::Ready, exit0());
    assert_eq!(f.exec(&shell("true")).await.outcome, Outcome::Completed);
    break_log(&f, true);
    let result = f.exec(&shell("echo unrecorded")).await;
    assert_eq!(result.outcome, Outcome::Error);
    assert!(
        result.error.as_deref().unwrap().contains("so nothing runs"),
        "{:?}",
        result.error
    );
    assert_eq!(result.audit_error, None);
    assert_eq!(runs(&f), 1, "the second command never ran");
}

#[tokio::test]
async fn with_run_the_command_runs_and_its_records_follow_a_gap_later() {
    let config = Config {
        on_audit_failure: crate::config::OnAuditFailure::Run,
        ..Config::default()
    };
    let f = flow_with(config, exit0());
    assert_eq!(f.exec(&shell("true")).await.outcome, Outcome::Completed);
    break_log(&f, true);
    let held = f.exec(&shell("echo unrecorded")).await;
    assert_eq!(held.outcome, Outcome::Completed, "{:?}", held.error);
    assert_eq!(held.exit_code, Some(0));
    assert_eq!(held.audit_id, None);
    let why = held
        .audit_error
        .clone()
        .expect("the result says the audit failed");
    assert!(
        why.contains("600") && why.contains("on_audit_failure"),
        "{why}"
    );
    assert_eq!(runs(&f), 2);
    let spill = f.service.state_dir.join(audit::SPILL_FILE);
    assert!(spill.exists(), "held records are spilled to the state dir");

    // The next writable moment writes a gap record, then the held start and finish.
    break_log(&f, false);
    let next = f.exec(&shell("echo recorded")).await;
    assert_eq!(next.audit_error, None);
    assert!(next.audit_id.is_some());
    assert_eq!(
        std::fs::metadata(&spill).map_or(0, |m| m.len()),
        0,
        "the spill file is empty once written"
    );
    let records = audit::tail(&f.service.state_dir.join(LOG_FILE), 100).unwrap();
    let gap_at = records
        .iter()
        .position(|r| matches!(r.body, RecordBody::Gap(_)))
        .expect("a gap record");
    let RecordBody::Gap(gap) = &records[gap_at].body else {
        unreachable!()
    };
    assert_eq!((gap.missed, gap.held, gap.dropped), (1, 2, 0), "{gap:?}");
    assert!(gap.error.contains("600"), "{}", gap.error);
    let RecordBody::Start(start) = &records[gap_at + 1].body else {
        panic!("the held start follows the gap: {:?}", records[gap_at + 1])
    };
    assert_eq!(start.command, "echo unrecorded");
    let RecordBody::Finish(finish) = &records[gap_at + 2].body else {
        panic!("then its finish")
    };
    assert_eq!(
        (finish.id.as_str(), finish.exit_code),
        (start.id.as_str(), Some(0))
    );
    let report = audit::verify(&f.service.state_dir.join(LOG_FILE)).unwrap();
    assert!(report.ok(), "{:?}", report.findings);
    assert!(report
        .findings
        .iter()
        .any(|x| x.kind == audit::FindingKind::AuditGap));
}

#[tokio::test]
async fn nothing_runs_when_not_even_the_spill_file_can_be_written() {
    let config = Config {
        on_audit_failure: crate::config::OnAuditFailure::Run,
        ..Config::default()
    };
    let f = flow_with(config, exit0());
    assert_eq!(f.exec(&shell("true")).await.outcome, Outcome::Completed);
    break_log(&f, true);
    // A symlink where the spill file goes is refused like any planted link.
    let spill = f.service.state_dir.join(audit::SPILL_FILE);
    std::os::unix::fs::symlink("/dev/null", &spill).unwrap();
    let refused = f.exec(&shell("echo unkept")).await;
    assert_eq!(refused.outcome, Outcome::Error, "{:?}", refused.error);
    assert!(refused.error.as_deref().unwrap().contains("cannot be held"));
    assert_eq!(
        runs(&f),
        1,
        "a record that cannot be kept means nothing runs"
    );
}
