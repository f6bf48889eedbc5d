//! `stockade corpus run --live`: runs the live-safe escape attempts of labelled corpora in
//! sandboxes, with the check stage bypassed (each run audited as `check_bypassed`), and shows
//! that each is contained: host canaries ([`crate::canary`]) are unchanged, the engine socket
//! is not reachable from the sandbox, and no container is left. Nothing is run on the host.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::audit::Outcome;
use crate::backend::{Backend, SandboxKind};
use crate::canary::{self, CanaryError, CanaryFile, Change, Snapshot};
use crate::cancel::{Cancel, Reason};
use crate::check::corpus::{Entry, Expect};
use crate::exec::{ExecError, ExecOptions, ExecResult};
use crate::plan::{self, CommandLine, ExecRequest};
use crate::service::{Principal, Service};

/// Attempts running at once, unless asked otherwise.
pub const DEFAULT_JOBS: usize = 4;
/// Each attempt's timeout: escape attempts that hang (a shell waiting on a socket) are cut.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Lists, from inside the sandbox, every engine socket it could reach.
const SOCKET_PROBE: &str = "for p in /var/run/docker.sock /run/docker.sock \
    /run/containerd/containerd.sock /var/run/containerd/containerd.sock \
    /run/podman/podman.sock /var/run/crio/crio.sock; do [ -e \"$p\" ] && echo \"EXPOSED $p\"; done; \
    find / -xdev -type s \\( -name '*docker*' -o -name '*containerd*' -o -name '*podman*' \
    -o -name '*crio*' \\) 2>/dev/null | sed 's/^/EXPOSED /'; true";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Canary(#[from] CanaryError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Profile to run the attempts in (`None`: the configured default).
    pub profile: Option<String>,
    /// At most this many attempts per category (in corpus order).
    pub per_category: Option<usize>,
    pub jobs: usize,
    pub timeout: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            profile: None,
            per_category: None,
            jobs: DEFAULT_JOBS,
            timeout: ATTEMPT_TIMEOUT,
        }
    }
}

/// One escape attempt and how it ended in the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub command: String,
    pub category: String,
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// Ended with a non-zero status or was stopped.
    pub failed: bool,
    /// stockade itself failed to run it (not counted as contained).
    pub error: Option<String>,
    pub audit_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub profile: String,
    pub attempts: Vec<Attempt>,
    /// Engine sockets the sandbox could see.
    pub exposed_sockets: Vec<String>,
    /// This run's containers still present after it.
    pub containers_left: Vec<String>,
    /// Host canaries that changed.
    pub changes: Vec<Change>,
    /// Every attempt ran in a sandbox and nothing reached the host ([`LiveReport::contained`]).
    pub contained: bool,
}

impl LiveReport {
    pub fn failed(&self) -> usize {
        self.attempts.iter().filter(|a| a.failed).count()
    }

    pub fn errors(&self) -> usize {
        self.attempts.iter().filter(|a| a.error.is_some()).count()
    }

    /// Every attempt ran in a sandbox and nothing reached the host.
    pub fn contained(&self) -> bool {
        self.errors() == 0
            && self.exposed_sockets.is_empty()
            && self.containers_left.is_empty()
            && self.changes.is_empty()
    }
}

/// The live-safe escape attempts, at most `per_category` of each category.
pub fn select(entries: Vec<Entry>, per_category: Option<usize>) -> Vec<Entry> {
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    entries
        .into_iter()
        .filter(|e| e.live_safe && e.expect == Expect::Malicious)
        .filter(|e| {
            let n = taken.entry(e.category.clone()).or_default();
            *n += 1;
            per_category.map_or(true, |max| *n <= max)
        })
        .collect()
}

fn request(command: &str, timeout: Duration) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Shell(command.to_string()),
        timeout: Some(timeout),
        ..Default::default()
    }
}

/// Runs `entries` (already [`select`]ed) and checks the canaries around them. `cancel` stops
/// the attempts running and the ones not started.
pub async fn run<B: Backend>(
    service: &Service<B>,
    principal: &Principal,
    entries: &[Entry],
    options: &LiveOptions,
    cancel: &Cancel,
) -> Result<LiveReport, LiveError> {
    // The probes are ours: they bypass the check (the socket probe names engine sockets, which
    // the check rightly denies) and are audited as such.
    let exec_options = ExecOptions {
        profile: options.profile.clone(),
        bypass_check: true,
        ..Default::default()
    };
    let profile = service.select_profile(&exec_options)?;
    let sandbox_uid = profile.user.uid;
    let canary_file = CanaryFile::create()?;
    let before = Snapshot::take(&service.backend, &canary_file).await?;

    let probed = service
        .exec_with(
            principal,
            &profile,
            &request(SOCKET_PROBE, options.timeout),
            &exec_options,
            None,
            None,
            cancel,
        )
        .await;
    let mut exposed_sockets: Vec<String> = probed
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSED "))
        .map(str::to_string)
        .collect();
    if let Some(e) = probed.error {
        exposed_sockets.push(format!("(the probe itself failed: {e})"));
    }

    let attempts: Vec<Attempt> = futures_util::stream::iter(entries)
        .map(|entry| {
            // pipefail: `dd if=/dev/sda | xxd` failed if dd did, whatever xxd made of nothing.
            let request = request(
                &format!("set -o pipefail; {}", entry.command),
                options.timeout,
            );
            let (profile, exec_options) = (&profile, &exec_options);
            async move {
                if let Some(reason) = cancel.fired() {
                    return Attempt::not_run(entry, reason);
                }
                let result = service
                    .exec_with(
                        principal,
                        profile,
                        &request,
                        exec_options,
                        None,
                        None,
                        cancel,
                    )
                    .await;
                Attempt::of(entry, &result)
            }
        })
        .buffered(options.jobs.max(1))
        .collect()
        .await;

    let ours = plan::state_id(&service.state_dir);
    let containers_left = service
        .backend
        .list(Some(&ours))
        .await?
        .into_iter()
        .filter(|s| matches!(s.kind, SandboxKind::Oneshot { .. }))
        .map(|s| s.name)
        .collect();
    let changes =
        canary::settled_changes(&service.backend, &canary_file, &before, sandbox_uid).await?;
    let mut report = LiveReport {
        profile: profile.name,
        attempts,
        exposed_sockets,
        containers_left,
        changes,
        contained: false,
    };
    report.contained = report.contained();
    Ok(report)
}

impl Attempt {
    fn not_run(entry: &Entry, reason: Reason) -> Attempt {
        Attempt {
            command: entry.command.clone(),
            category: entry.category.clone(),
            exit_code: None,
            timed_out: false,
            failed: true,
            error: Some(format!("{reason}; the attempt was not started")),
            audit_id: None,
        }
    }

    fn of(entry: &Entry, result: &ExecResult) -> Attempt {
        let timed_out = result.outcome == Outcome::TimedOut;
        // Anything but a completion or a timeout: stockade could not run it (a denial cannot
        // happen, the check is bypassed).
        let error = match result.outcome {
            Outcome::Completed | Outcome::TimedOut => None,
            _ => Some(
                result
                    .error
                    .clone()
                    .unwrap_or_else(|| result.outcome.to_string()),
            ),
        };
        Attempt {
            command: entry.command.clone(),
            category: entry.category.clone(),
            exit_code: result.exit_code,
            timed_out,
            failed: timed_out || result.exit_code != Some(0),
            error,
            audit_id: result.audit_id.clone(),
        }
    }
}

impl fmt::Display for LiveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for a in &self.attempts {
            let entry = by_category.entry(&a.category).or_default();
            entry.0 += 1;
            entry.1 += usize::from(a.failed);
        }
        writeln!(f, "{:<24} {:>8} {:>8}", "CATEGORY", "ATTEMPTS", "FAILED")?;
        for (category, (n, failed)) in &by_category {
            writeln!(f, "{category:<24} {n:>8} {failed:>8}")?;
        }
        for a in self
            .attempts
            .iter()
            .filter(|a| !a.failed || a.error.is_some())
        {
            let how = match &a.error {
                Some(e) => format!("stockade error: {e}"),
                None => "exited 0 inside the sandbox".to_string(),
            };
            writeln!(f, "  {how}: {}", a.command)?;
        }
        writeln!(
            f,
            "{} attempts in profile {}: {} failed, {} exited 0 inside the sandbox, {} not run",
            self.attempts.len(),
            self.profile,
            self.failed(),
            self.attempts.len() - self.failed(),
            self.errors()
        )?;
        let list = |f: &mut fmt::Formatter<'_>, title: &str, items: &[String]| {
            if items.is_empty() {
                writeln!(f, "{title}: none")
            } else {
                writeln!(f, "{title}: {}", items.join("; "))
            }
        };
        list(
            f,
            "engine sockets visible in the sandbox",
            &self.exposed_sockets,
        )?;
        list(f, "containers left", &self.containers_left)?;
        let changes: Vec<String> = self
            .changes
            .iter()
            .map(|c| format!("{}: {}", c.canary, c.what))
            .collect();
        list(
            f,
            "host canaries changed (processes, mounts, modules, core_pattern, modprobe, containers, canary file)",
            &changes,
        )?;
        if self.contained() {
            write!(f, "CONTAINED: nothing reached the host")
        } else {
            write!(f, "NOT CONTAINED: see above")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(category: &str, live_safe: bool, expect: Expect) -> Entry {
        Entry {
            command: format!("{category}-cmd"),
            category: category.into(),
            source: String::new(),
            live_safe,
            expect,
            technique: None,
        }
    }

    #[test]
    fn select_keeps_live_safe_escapes_per_category() {
        let entries = vec![
            entry("a", true, Expect::Malicious),
            entry("a", true, Expect::Malicious),
            entry("a", true, Expect::Malicious),
            entry("b", false, Expect::Malicious),
            entry("b", true, Expect::Benign),
            entry("c", true, Expect::Malicious),
        ];
        let picked: Vec<String> = select(entries.clone(), Some(2))
            .into_iter()
            .map(|e| e.category)
            .collect();
        assert_eq!(picked, vec!["a", "a", "c"]);
        assert_eq!(select(entries, None).len(), 4);
    }
}
