use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::audit::test_support::{finish, log_with, read_lines, start, write_lines};
use crate::audit::AuditLog;

fn kinds(report: &VerifyReport) -> Vec<FindingKind> {
    report.problems().map(|f| f.kind).collect()
}

fn problem(report: &VerifyReport, kind: FindingKind) -> &Finding {
    report
        .problems()
        .find(|f| f.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in\n{report}"))
}

/// Replaces `from` with `to` in line `index` (0-based), keeping the line valid JSON.
fn edit_line(log: &AuditLog, index: usize, from: &str, to: &str) {
    let mut lines = read_lines(log.path());
    let text = String::from_utf8(lines[index].clone()).unwrap();
    assert!(text.contains(from), "{text}");
    lines[index] = text.replacen(from, to, 1).into_bytes();
    write_lines(log.path(), &lines);
}

#[test]
fn clean_log_verifies_with_unfinished_notice() {
    let (_tmp, log) = log_with(2);
    log.append(start("open")).unwrap();
    let report = verify(log.path()).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!((report.records, report.lines, report.last_seq), (5, 5, 5));
    let notices: Vec<_> = report.notices().collect();
    assert_eq!(notices.len(), 1, "{report}");
    assert_eq!(notices[0].kind, FindingKind::UnfinishedExecution);
    assert_eq!((notices[0].line, notices[0].seq), (Some(5), Some(5)));
    assert!(notices[0]
        .message
        .starts_with("unfinished execution id=open seq=5"));
    let text = report.to_string();
    assert!(text.contains("OK"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["findings"][0]["kind"], "unfinished_execution");
    assert_eq!(json["findings"][0]["severity"], "notice");
}

#[test]
fn missing_log_without_head_is_empty_and_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let report = verify(&tmp.path().join("audit.jsonl")).unwrap();
    assert!(report.ok());
    assert_eq!(report.records, 0);
}

#[test]
fn detects_edited_record_at_next_line() {
    let (_tmp, log) = log_with(2);
    edit_line(&log, 1, "\"exit_code\":0", "\"exit_code\":1");
    let report = verify(log.path()).unwrap();
    assert_eq!(kinds(&report), vec![FindingKind::ChainBroken], "{report}");
    let f = problem(&report, FindingKind::ChainBroken);
    assert_eq!((f.line, f.seq), (Some(3), Some(3)));
    assert!(f.message.contains("line 2 was edited"), "{}", f.message);
    assert!(report.to_string().contains("FAILED"));
}

#[test]
fn detects_edited_last_record_against_head() {
    let (_tmp, log) = log_with(2);
    edit_line(&log, 3, "\"exit_code\":0", "\"exit_code\":1");
    let report = verify(log.path()).unwrap();
    assert_eq!(kinds(&report), vec![FindingKind::HeadMismatch], "{report}");
}

#[test]
fn detects_removed_record() {
    let (_tmp, log) = log_with(3);
    let mut lines = read_lines(log.path());
    lines.remove(2);
    write_lines(log.path(), &lines);
    let report = verify(log.path()).unwrap();
    let gap = problem(&report, FindingKind::SeqGap);
    assert_eq!((gap.line, gap.seq), (Some(3), Some(4)));
    let chain = problem(&report, FindingKind::ChainBroken);
    assert_eq!(chain.line, Some(3));
}

#[test]
fn detects_removed_first_record() {
    let (_tmp, log) = log_with(2);
    let mut lines = read_lines(log.path());
    lines.remove(0);
    write_lines(log.path(), &lines);
    let report = verify(log.path()).unwrap();
    let chain = problem(&report, FindingKind::ChainBroken);
    assert!(chain.message.contains("removed from the start"), "{report}");
    problem(&report, FindingKind::SeqGap);
}

#[test]
fn detects_reordered_records() {
    let (_tmp, log) = log_with(3);
    let mut lines = read_lines(log.path());
    lines.swap(2, 3);
    write_lines(log.path(), &lines);
    let report = verify(log.path()).unwrap();
    let order = problem(&report, FindingKind::SeqOutOfOrder);
    assert_eq!((order.line, order.seq), (Some(4), Some(3)));
    let breaks: Vec<_> = report
        .problems()
        .filter(|f| f.kind == FindingKind::ChainBroken)
        .map(|f| f.line)
        .collect();
    assert_eq!(breaks, vec![Some(3), Some(4), Some(5)]);
}

#[test]
fn detects_truncation_against_head() {
    let (_tmp, log) = log_with(3);
    let mut lines = read_lines(log.path());
    lines.truncate(4);
    write_lines(log.path(), &lines);
    let report = verify(log.path()).unwrap();
    assert_eq!(kinds(&report), vec![FindingKind::Truncated], "{report}");
    let f = problem(&report, FindingKind::Truncated);
    assert!(f.message.contains("5..=6"), "{}", f.message);
}

#[test]
fn detects_emptied_and_deleted_log() {
    let (_tmp, log) = log_with(1);
    std::fs::write(log.path(), b"").unwrap();
    assert_eq!(
        kinds(&verify(log.path()).unwrap()),
        vec![FindingKind::Truncated]
    );
    std::fs::remove_file(log.path()).unwrap();
    assert_eq!(
        kinds(&verify(log.path()).unwrap()),
        vec![FindingKind::Truncated]
    );
}

#[test]
fn detects_missing_head() {
    let (_tmp, log) = log_with(1);
    std::fs::remove_file(log.head_path()).unwrap();
    assert_eq!(
        kinds(&verify(log.path()).unwrap()),
        vec![FindingKind::HeadMissing]
    );
}

#[test]
fn detects_garbled_head() {
    let (_tmp, log) = log_with(1);
    std::fs::write(log.head_path(), b"{\"seq\":2}").unwrap();
    assert_eq!(
        kinds(&verify(log.path()).unwrap()),
        vec![FindingKind::HeadUnreadable]
    );
}

#[test]
fn detects_head_far_behind() {
    let (_tmp, log) = log_with(1);
    let old = std::fs::read(log.head_path()).unwrap();
    log.append(start("b")).unwrap();
    log.append(finish("b")).unwrap();
    std::fs::write(log.head_path(), old).unwrap();
    assert_eq!(
        kinds(&verify(log.path()).unwrap()),
        vec![FindingKind::HeadBehind]
    );
}

#[test]
fn detects_half_written_last_line() {
    let (_tmp, log) = log_with(1);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .unwrap();
    f.write_all(b"{\"seq\":3,\"ts\"").unwrap();
    let report = verify(log.path()).unwrap();
    assert_eq!(
        kinds(&report),
        vec![FindingKind::HalfWrittenLine],
        "{report}"
    );
    assert_eq!(problem(&report, FindingKind::HalfWrittenLine).line, Some(3));
}

#[test]
fn detects_non_json_line() {
    let (_tmp, log) = log_with(2);
    let mut lines = read_lines(log.path());
    lines.insert(2, b"not json".to_vec());
    write_lines(log.path(), &lines);
    let report = verify(log.path()).unwrap();
    let f = problem(&report, FindingKind::NotARecord);
    assert_eq!(f.line, Some(3));
    assert_eq!(problem(&report, FindingKind::ChainBroken).line, Some(4));
}

#[test]
fn detects_tampered_recovered_partial_line() {
    let (_tmp, log) = log_with(1);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log.path())
        .unwrap();
    f.write_all(b"{\"seq\":3,").unwrap();
    log.append(start("c")).unwrap();
    assert!(verify(log.path()).unwrap().ok());
    let mut lines = read_lines(log.path());
    lines[2] = b"{\"seq\":9,".to_vec();
    write_lines(log.path(), &lines);
    let report = verify(log.path()).unwrap();
    let f = problem(&report, FindingKind::RecoveredMismatch);
    assert_eq!((f.line, f.seq), (Some(4), Some(3)));
}

#[test]
fn reports_loose_mode() {
    let (_tmp, log) = log_with(1);
    std::fs::set_permissions(log.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = verify(log.path()).unwrap();
    assert_eq!(kinds(&report), vec![FindingKind::Permissions]);
    assert!(report.to_string().contains("chmod 600"));
}
