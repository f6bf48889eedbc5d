//! Records and logs for the audit tests.

use std::path::{Path, PathBuf};

use super::{AuditLog, Finish, Record, RecordBody, Start};
use crate::check::Decision;

pub fn start(id: &str) -> RecordBody {
    RecordBody::Start(Start {
        id: id.to_owned(),
        session: Some("s1".to_owned()),
        user: "tester".to_owned(),
        via: None,
        command: format!("echo {id}"),
        workdir: None,
        env: Vec::new(),
        stdin_sha256: None,
        decision: Decision::Allow,
        rules: vec![],
        profile: "default".to_owned(),
        backend: crate::backend::BackendKind::Docker,
        elevated: false,
        check_bypassed: false,
        unsafe_opt_outs: Vec::new(),
        transfer: None,
        secrets: Vec::new(),
    })
}

pub fn finish(id: &str) -> RecordBody {
    RecordBody::Finish(Finish {
        sandbox: Some("c1".to_owned()),
        outcome: super::Outcome::Completed,
        exit_code: Some(0),
        duration_ms: 1234,
        stdout_bytes: 3,
        ..Finish::new(id, Some("s1".to_owned()))
    })
}

/// A state dir with a log of `executions` complete executions (2 records each).
pub fn log_with(executions: usize) -> (tempfile::TempDir, AuditLog) {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&state_dir(tmp.path())).unwrap();
    for i in 0..executions {
        let id = format!("e{i}");
        log.append(start(&id)).unwrap();
        log.append(finish(&id)).unwrap();
    }
    (tmp, log)
}

pub fn state_dir(tmp: &Path) -> PathBuf {
    tmp.join("state")
}

pub fn read_lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

/// Writes `lines` back, each with a newline.
pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

pub fn parse_all(path: &Path) -> Vec<Record> {
    read_lines(path)
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}
