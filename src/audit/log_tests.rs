use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::audit::test_support::{finish, log_with, parse_all, read_lines, start, state_dir};
use crate::audit::{verify, FindingKind, Head, RecordBody, ZERO_HASH};
use crate::state::StateError;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn head_of(log: &AuditLog) -> Head {
    serde_json::from_slice(&std::fs::read(log.head_path()).unwrap()).unwrap()
}

fn kinds(report: &crate::audit::VerifyReport) -> Vec<FindingKind> {
    report.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn appends_chained_records_and_head() {
    let (tmp, log) = log_with(2);
    let records = parse_all(log.path());
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(records[0].prev, ZERO_HASH);
    let lines = read_lines(log.path());
    for i in 1..lines.len() {
        assert_eq!(records[i].prev, line_hash(&lines[i - 1]));
    }
    assert_eq!(
        head_of(&log),
        Head {
            seq: 4,
            hash: line_hash(&lines[3])
        }
    );
    assert_eq!(mode(&state_dir(tmp.path())), 0o700);
    assert_eq!(mode(log.path()), 0o600);
    assert_eq!(mode(&log.head_path()), 0o600);
    assert!(
        records[0].ts.ends_with('Z') && records[0].ts.len() == 24,
        "{}",
        records[0].ts
    );
}

#[test]
fn append_returns_record_as_written() {
    let (_tmp, log) = log_with(0);
    let written = log.append(start("a")).unwrap();
    assert_eq!(written, parse_all(log.path())[0]);
}

#[test]
fn refuses_loose_file_mode() {
    let (tmp, log) = log_with(1);
    std::fs::set_permissions(log.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = log.append(start("x")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("chmod 600 {}", log.path().display())),
        "{msg}"
    );
    let err = AuditLog::open(&state_dir(tmp.path())).unwrap_err();
    assert!(
        matches!(err, AuditError::State(StateError::TooPermissive { .. })),
        "{err:?}"
    );
}

#[test]
fn refuses_loose_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_dir(tmp.path());
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let msg = AuditLog::open(&dir).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("chmod 700 {}", dir.display())),
        "{msg}"
    );
}

#[test]
fn refuses_symlinked_log_and_head() {
    let (tmp, log) = log_with(1);
    let elsewhere = tmp.path().join("elsewhere.jsonl");
    std::fs::rename(log.path(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, log.path()).unwrap();
    let err = log.append(start("x")).unwrap_err();
    assert!(
        matches!(err, AuditError::State(StateError::Symlink { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&log.path().display().to_string()));
    assert!(
        verify(log.path()).is_err(),
        "verify must not follow the link either"
    );

    std::fs::remove_file(log.path()).unwrap();
    std::fs::rename(&elsewhere, log.path()).unwrap();
    let head_elsewhere = tmp.path().join("elsewhere.head");
    std::fs::rename(log.head_path(), &head_elsewhere).unwrap();
    std::os::unix::fs::symlink(&head_elsewhere, log.head_path()).unwrap();
    let err = log.append(start("x")).unwrap_err();
    assert!(
        matches!(err, AuditError::State(StateError::Symlink { .. })),
        "{err:?}"
    );
}

#[test]
fn refuses_log_owned_by_another_uid() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let (_tmp, log) = log_with(1);
    std::os::unix::fs::chown(log.path(), Some(65534), Some(65534)).unwrap();
    let err = log.append(start("x")).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::State(StateError::WrongOwner { owner: 65534, .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("chown 0 {}", log.path().display())),
        "{err}"
    );
}

#[test]
fn recovers_half_written_last_line() {
    let (_tmp, log) = log_with(1);
    let before = std::fs::read(log.path()).unwrap();
    let partial = br#"{"seq":3,"ts":"2024-01-01T00:00:00.000Z","prev":"ab"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .unwrap()
        .write_all(partial)
        .unwrap();
    assert!(
        !verify(log.path()).unwrap().ok(),
        "unrecovered partial line is a problem"
    );

    let written = log.append(start("after")).unwrap();
    assert_eq!(written.seq, 4, "recovered record takes seq 3");
    let lines = read_lines(log.path());
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[2], partial, "the partial bytes are kept as they were");
    let recovered: Record = serde_json::from_slice(&lines[3]).unwrap();
    assert_eq!(recovered.seq, 3);
    assert_eq!(recovered.prev, line_hash(partial));
    let RecordBody::Recovered(r) = &recovered.body else {
        panic!("{recovered:?}")
    };
    assert_eq!(r.partial_offset, before.len() as u64);
    assert_eq!(r.partial_len, partial.len() as u64);
    assert_eq!(r.partial_sha256, line_hash(partial));
    assert_eq!(r.chain_prev, line_hash(&lines[1]));
    assert_eq!(written.prev, line_hash(&lines[3]));

    let report = verify(log.path()).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 4);
    assert!(
        kinds(&report).contains(&FindingKind::RecoveredPartialLine),
        "{report}"
    );
    let partial_notice = report
        .notices()
        .find(|f| f.kind == FindingKind::RecoveredPartialLine);
    assert_eq!(partial_notice.unwrap().line, Some(3));
}

#[test]
fn recovers_complete_record_missing_only_its_newline() {
    let (_tmp, log) = log_with(0);
    log.append(start("a")).unwrap();
    let head_before = std::fs::read(log.head_path()).unwrap();
    log.append(finish("a")).unwrap();
    // A write that stopped one byte short (the whole record, no newline), so its append
    // failed before the head was updated.
    let mut bytes = std::fs::read(log.path()).unwrap();
    bytes.pop();
    std::fs::write(log.path(), &bytes).unwrap();
    std::fs::write(log.head_path(), head_before).unwrap();
    log.append(start("next")).unwrap();
    let report = verify(log.path()).unwrap();
    assert!(report.ok(), "{report}");
    assert!(kinds(&report).contains(&FindingKind::RecoveredPartialLine));
    assert_eq!(
        report.records, 3,
        "the partial line is not counted as a record"
    );
}

#[test]
fn recovers_partial_first_line() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&state_dir(tmp.path())).unwrap();
    std::fs::write(log.path(), b"{\"seq\":1,").unwrap();
    let written = log.append(start("a")).unwrap();
    assert_eq!(written.seq, 2);
    let report = verify(log.path()).unwrap();
    assert!(report.ok(), "{report}");
    let recovered: Record = serde_json::from_slice(&read_lines(log.path())[1]).unwrap();
    let RecordBody::Recovered(r) = recovered.body else {
        panic!()
    };
    assert_eq!((r.partial_offset, r.chain_prev.as_str()), (0, ZERO_HASH));
}

#[test]
fn head_one_behind_is_accepted_and_caught_up() {
    let (_tmp, log) = log_with(1);
    let old_head = std::fs::read(log.head_path()).unwrap();
    log.append(start("b")).unwrap();
    // Simulate a writer killed after its fsync, before the head rename.
    std::fs::write(log.head_path(), &old_head).unwrap();
    let report = verify(log.path()).unwrap();
    assert!(report.ok(), "{report}");
    assert!(kinds(&report).contains(&FindingKind::HeadBehind));

    log.append(finish("b")).unwrap();
    assert_eq!(head_of(&log).seq, 4);
    let report = verify(log.path()).unwrap();
    assert!(
        report.ok() && !kinds(&report).contains(&FindingKind::HeadBehind),
        "{report}"
    );
}

#[test]
fn first_append_killed_before_head_is_accepted() {
    let (_tmp, log) = log_with(0);
    log.append(start("a")).unwrap();
    std::fs::remove_file(log.head_path()).unwrap();
    assert!(verify(log.path()).unwrap().ok());
    log.append(finish("a")).unwrap();
    assert_eq!(head_of(&log).seq, 2);
}

#[test]
fn refuses_to_extend_a_truncated_log() {
    let (_tmp, log) = log_with(2);
    let mut lines = read_lines(log.path());
    lines.pop();
    crate::audit::test_support::write_lines(log.path(), &lines);
    let before = std::fs::read(log.path()).unwrap();
    let err = log.append(start("x")).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::HeadMismatch {
                head_seq: 4,
                log_seq: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(log.path()).unwrap(),
        before,
        "nothing was written"
    );
}

#[test]
fn refuses_to_extend_without_head() {
    let (_tmp, log) = log_with(1);
    std::fs::remove_file(log.head_path()).unwrap();
    let err = log.append(start("x")).unwrap_err();
    assert!(
        matches!(err, AuditError::HeadMissing { log_seq: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn refuses_to_extend_when_last_line_is_not_a_record() {
    let (_tmp, log) = log_with(1);
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .unwrap()
        .write_all(b"junk\n")
        .unwrap();
    let err = log.append(start("x")).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("stockade audit verify"));
}

#[test]
fn long_records_chain_and_tail() {
    let (_tmp, log) = log_with(0);
    let mut body = start("long");
    if let RecordBody::Start(s) = &mut body {
        // Several backward-scan chunks long.
        s.command = "x".repeat(100_000);
    }
    log.append(body).unwrap();
    log.append(finish("long")).unwrap();
    log.append(start("short")).unwrap();
    assert!(verify(log.path()).unwrap().ok());
    let tail = crate::audit::tail(log.path(), 3).unwrap();
    assert_eq!(tail.len(), 3);
    let RecordBody::Start(s) = &tail[0].body else {
        panic!()
    };
    assert_eq!(s.command.len(), 100_000);
}

#[test]
fn refuses_oversized_record() {
    let (_tmp, log) = log_with(0);
    let mut body = start("huge");
    if let RecordBody::Start(s) = &mut body {
        s.command = "x".repeat(MAX_LINE_BYTES as usize + 1);
    }
    assert!(matches!(
        log.append(body),
        Err(AuditError::RecordTooLarge { .. })
    ));
    assert_eq!(std::fs::metadata(log.path()).unwrap().len(), 0);
}

#[test]
fn concurrent_threads_with_separate_handles() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let dir = state_dir(tmp.path());
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let dir = &dir;
            scope.spawn(move || {
                let log = AuditLog::open(dir).unwrap();
                for i in 0..PER_THREAD {
                    log.append(start(&format!("t{t}-{i}"))).unwrap();
                }
            });
        }
    });
    let report = verify(&dir.join(LOG_FILE)).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, (THREADS * PER_THREAD) as u64);
}

// Many processes appending at once: tests/suite/exec.rs
// `sixteen_parallel_execs_leave_32_chained_records` runs 16 real `stockade exec` processes.

#[test]
fn a_batch_is_chained_like_single_appends() {
    let (_tmp, log) = log_with(1);
    let written = log
        .append_all(vec![start("b1"), start("b2"), finish("b1")])
        .unwrap();
    assert_eq!(written.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(log.append_all(Vec::new()).unwrap().is_empty());
    log.append(finish("b2")).unwrap();
    let lines = read_lines(log.path());
    let records = parse_all(log.path());
    assert_eq!(records.len(), 6);
    for i in 1..lines.len() {
        assert_eq!(records[i].prev, line_hash(&lines[i - 1]));
    }
    assert_eq!(head_of(&log).seq, 6);
    assert!(verify(log.path()).unwrap().findings.is_empty());
}
