//! Files a command runs whose content is not in the command (`bash /workspace/s`, `./s`,
//! `python3 s.py`, `make`, `npm run build`): in a session, earlier commands may have written
//! them. Before the command runs, each is read from the sandbox (bounded, through the backend's
//! copy, as the sandbox user) and its content judged as part of the command; the result and the
//! audit name each file with its size and SHA-256.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};

use crate::audit::ScriptRead;
use crate::check::normalize::{FileKind, RunFile};
use crate::check::{interp, wrappers, Checker, Decision, Policy, Verdict};

/// Most bytes of one file read and judged; a longer file is judged by its beginning and the
/// result says it was cut.
pub const MAX_PLANTED_BYTES: usize = 256 * 1024;

/// A sink that keeps at most [`MAX_PLANTED_BYTES`] and then refuses more, so a huge (or
/// sparse) file costs no more than that.
#[derive(Debug, Default)]
pub struct Bounded {
    pub data: Vec<u8>,
    pub full: bool,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let room = MAX_PLANTED_BYTES - self.data.len();
        if room == 0 && !buf.is_empty() {
            self.full = true;
            return Poll::Ready(Err(std::io::Error::other("planted file over the bound")));
        }
        let n = room.min(buf.len());
        self.data.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The file's path in the sandbox: relative paths are under the working directory.
pub fn sandbox_path(file: &RunFile, workdir: &str) -> String {
    if file.path.starts_with('/') {
        file.path.clone()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), file.path)
    }
}

/// The option that hands an interpreter its program inline.
fn inline_flag(interpreter: &str) -> Option<&'static str> {
    Some(match interp::lang(interpreter)? {
        interp::Lang::Python => "-c",
        interp::Lang::Php => "-r",
        interp::Lang::Awk => "",
        _ => "-e",
    })
}

/// `interpreter -c CODE` as a command line the check reads.
fn as_inline(interpreter: &str, code: &str) -> Option<String> {
    let flag = inline_flag(interpreter)?;
    let quoted = wrappers::shell_quote(code);
    Some(if flag.is_empty() {
        format!("{interpreter} {quoted}")
    } else {
        format!("{interpreter} {flag} {quoted}")
    })
}

/// The command text that stands for running a file with this content, or `None` when it is
/// not text the check can read (a binary).
pub fn judged_text(kind: &FileKind, content: &[u8]) -> Option<String> {
    if content.starts_with(b"\x7fELF") {
        return None;
    }
    let text = String::from_utf8_lossy(content);
    match kind {
        FileKind::Shell => Some(text.into_owned()),
        FileKind::Code(interpreter) => as_inline(interpreter, &text),
        FileKind::Exec => match text.strip_prefix("#!") {
            Some(rest) => {
                let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
                let mut words = line.split_whitespace();
                let mut program = words.next().map(|p| p.rsplit('/').next().unwrap_or(p));
                if program == Some("env") {
                    program = words.find(|w| !w.starts_with('-'));
                }
                match program {
                    Some(p) if inline_flag(p).is_some() => as_inline(p, body),
                    _ => Some(body.to_string()),
                }
            }
            // The kernel refuses a text file without `#!`; the shell then runs it as a script.
            None => Some(text.into_owned()),
        },
        FileKind::Make => {
            let mut lines = Vec::new();
            for line in text.lines() {
                if let Some(recipe) = line.strip_prefix('\t') {
                    lines.push(recipe.trim_start_matches(['@', '-', '+']).to_string());
                }
                let mut rest = line;
                while let Some(at) = rest.find("$(shell ") {
                    let after = &rest[at + 8..];
                    let end = after.find(')').unwrap_or(after.len());
                    lines.push(after[..end].to_string());
                    rest = &after[end..];
                }
            }
            Some(lines.join("\n"))
        }
        FileKind::Manifest => {
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let scripts = v.get("scripts")?.as_object()?;
            Some(
                scripts
                    .values()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
    }
}

/// Judges what was read of one file: the verdict of its content, and what to record.
pub fn judge(
    checker: &Checker,
    policy: &Policy,
    path: &str,
    file: &RunFile,
    read: &Bounded,
) -> (Option<Verdict>, ScriptRead) {
    let verdict = judged_text(&file.kind, &read.data).map(|t| checker.check(&t, policy));
    let record = ScriptRead {
        path: path.to_string(),
        bytes: read.data.len() as u64,
        sha256: hex::encode(Sha256::digest(&read.data)),
        truncated: read.full,
        decision: verdict.as_ref().map(|v| v.decision),
    };
    (verdict, record)
}

/// Folds a file's verdict into the command's, each hit's fragment prefixed with the file.
pub fn merge(into: &mut Verdict, path: &str, more: Verdict) {
    into.decision = into.decision.max(more.decision);
    for mut hit in more.rules {
        hit.fragment = format!("{path}: {}", hit.fragment);
        if !into
            .rules
            .iter()
            .any(|h| h.id == hit.id && h.fragment == hit.fragment)
        {
            into.rules.push(hit);
        }
    }
}

/// Whether the decision stops the command.
pub fn stops(decision: Decision) -> bool {
    decision == Decision::Deny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_file_is_read_as_what_runs_it() {
        let t = |k: FileKind, c: &str| judged_text(&k, c.as_bytes());
        assert_eq!(
            t(FileKind::Shell, "nsenter -t 1").as_deref(),
            Some("nsenter -t 1")
        );
        assert_eq!(
            t(FileKind::Exec, "#!/usr/bin/env python3\nimport os\n").as_deref(),
            Some("python3 -c 'import os\n'")
        );
        assert_eq!(
            t(FileKind::Exec, "#!/bin/sh\nid\n").as_deref(),
            Some("id\n")
        );
        assert_eq!(t(FileKind::Exec, "\x7fELF\x02"), None);
        assert_eq!(
            t(
                FileKind::Make,
                "all:\n\t@nsenter -t 1 -m sh\nX := $(shell id)\n"
            )
            .as_deref(),
            Some("nsenter -t 1 -m sh\nid")
        );
        assert_eq!(
            t(
                FileKind::Manifest,
                r#"{"scripts":{"preinstall":"/bin/sh -i"}}"#
            )
            .as_deref(),
            Some("/bin/sh -i")
        );
        assert_eq!(
            t(FileKind::Code("perl".into()), "system('id')").as_deref(),
            Some("perl -e 'system('\\''id'\\'')'")
        );
    }

    #[test]
    fn the_sink_is_bounded() {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut b = Bounded::default();
            let chunk = vec![b'a'; 64 * 1024];
            let mut err = false;
            for _ in 0..8 {
                if b.write_all(&chunk).await.is_err() {
                    err = true;
                    break;
                }
            }
            assert!(err && b.full);
            assert_eq!(b.data.len(), MAX_PLANTED_BYTES);
        });
    }
}
