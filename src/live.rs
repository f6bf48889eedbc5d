//! `stockade corpus run --live`: runs the live-safe escape attempts of labelled corpora in
//! sandboxes, with the check stage bypassed (each run audited as `check_bypassed`), and shows
//! that each is contained: host canaries ([`crate::canary`]) are unchanged, the engine socket
//! is not reachable from the sandbox, and no container is left. Nothing is run on the host.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::backend::DockerBackend;
use crate::canary::{self, CanaryError, CanaryFile, Change, Snapshot};
use crate::check::corpus::{Entry, Expect};
use crate::engine::Engine;
use crate::exec::{self, Context, ExecArgs, ExecError};
use crate::plan::{self, ExecRequest, LABEL_KIND, LABEL_STATE};

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
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Canary(#[from] CanaryError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("the sandbox user {user:?} of profile {profile:?} is not numeric")]
    SandboxUser { profile: String, user: String },
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
        command: command.to_string(),
        timeout: Some(timeout),
        ..Default::default()
    }
}

/// Runs `entries` (already [`select`]ed) and checks the canaries around them.
pub async fn run(
    ctx: &Context,
    entries: &[Entry],
    options: &LiveOptions,
) -> Result<LiveReport, LiveError> {
    let base = ExecArgs {
        profile: options.profile.clone(),
        ..Default::default()
    };
    let profile = exec::select_profile(ctx, &base)?;
    let sandbox_uid = profile
        .user
        .split(':')
        .next()
        .and_then(|u| u.parse::<u32>().ok())
        .ok_or_else(|| LiveError::SandboxUser {
            profile: profile.name.clone(),
            user: profile.user.clone(),
        })?;
    let backend = DockerBackend::new(Engine::connect(ctx.call_timeout).await?);
    let canary_file = CanaryFile::create()?;
    let before = Snapshot::take(&backend, &canary_file).await?;

    // The probe names engine sockets, which the check stage rightly denies: it is ours, so it
    // bypasses the check like the attempts (and is audited as such).
    let probe = ExecArgs {
        bypass_check: true,
        request: request(SOCKET_PROBE, options.timeout),
        ..base.clone()
    };
    let probed = exec::execute(ctx, &probe, false).await?;
    let mut exposed_sockets: Vec<String> = probed
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSED "))
        .map(str::to_string)
        .collect();
    if let Some(e) = probed.error {
        exposed_sockets.push(format!("(the probe itself failed: {e})"));
    }

    // Ctrl-C stops the attempts running (each execution handles it) and the ones not started.
    let interrupt = crate::interrupt::Interrupt::install();
    let attempts: Vec<Attempt> = futures_util::stream::iter(entries)
        .map(|entry| {
            // pipefail: `dd if=/dev/sda | xxd` failed if dd did, whatever xxd made of nothing.
            let args = ExecArgs {
                bypass_check: true,
                request: request(
                    &format!("set -o pipefail; {}", entry.command),
                    options.timeout,
                ),
                ..base.clone()
            };
            let interrupt = &interrupt;
            async move {
                if let Some(signal) = interrupt.fired() {
                    let not_run = ExecError::Interrupted {
                        signal,
                        started: false,
                    };
                    return attempt(entry, Err(not_run));
                }
                let result = exec::execute(ctx, &args, false).await;
                attempt(entry, result)
            }
        })
        .buffered(options.jobs.max(1))
        .collect()
        .await;

    let ours = plan::state_id(&ctx.state_dir);
    let containers_left = backend
        .list_managed(Some((LABEL_STATE, ours.as_str())))
        .await?
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_KIND))
                .map(String::as_str)
                == Some(plan::KIND_ONESHOT)
        })
        .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
        .collect();
    let changes = canary::settled_changes(&backend, &canary_file, &before, sandbox_uid).await?;
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

fn attempt(entry: &Entry, result: Result<exec::Report, ExecError>) -> Attempt {
    let mut a = Attempt {
        command: entry.command.clone(),
        category: entry.category.clone(),
        exit_code: None,
        timed_out: false,
        failed: true,
        error: None,
        audit_id: None,
    };
    match result {
        Ok(report) => {
            a.exit_code = report.exit_code;
            a.timed_out = report.timed_out;
            a.failed = report.timed_out || report.exit_code != Some(0);
            a.audit_id = report.audit_id;
            // A report with an error and no exit code: stockade could not run it.
            if report.exit_code.is_none() && !report.timed_out {
                a.error = report.error;
            }
        }
        Err(e) => a.error = Some(e.to_string()),
    }
    a
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
