//! `profile verify` (and `profile record --verify`): run a workload under a seccomp profile in the
//! sandbox and check that it passes while calls it never made are refused.
//!
//! The workload runs in a fresh one-shot container of the sandbox profile with its seccomp file
//! replaced, so container start, the exec and the workload all run under the profile. Then a
//! probe container (same profile, uid 0 so that `mount` really calls mount(2) instead of
//! refusing a non-root user itself; still no capabilities) tries `unshare -U true`, which the
//! kernel allows without privileges and only the filter can refuse, and a tmpfs mount.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::record::{ensure_ran, RecordError};
use super::{host_kernel, resolve, Arch, Verdict};
use crate::backend::Backend;
use crate::cancel::Cancel;
use crate::exec::ExecOptions;
use crate::plan::{CommandLine, ExecRequest};
use crate::profile::{Profile, SeccompPolicy, User};
use crate::service::{Principal, Service};

/// The probes run as root inside the sandbox: util-linux's mount refuses non-root users before
/// calling mount(2). No capabilities are added.
const PROBE_USER: User = User::ROOT;
/// Bounds each probe execution.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Each probe prints `NAME STATUS FIRST-LINE-OF-OUTPUT`.
const PROBES: &[Probe] = &[
    Probe {
        name: "unshare",
        syscall: "unshare",
        command: "unshare -U true",
        denied_when: &["Operation not permitted"],
    },
    Probe {
        name: "mount",
        syscall: "mount",
        command: "mount -t tmpfs stockade-probe /tmp",
        denied_when: &["permission denied", "Operation not permitted"],
    },
];

struct Probe {
    name: &'static str,
    syscall: &'static str,
    command: &'static str,
    /// Output that shows the call itself was refused with EPERM.
    denied_when: &'static [&'static str],
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The sandbox profile (name or path); None: the configured default.
    pub profile: Option<String>,
    /// The seccomp profile that replaces the sandbox profile's own.
    pub seccomp: Arc<SeccompPolicy>,
    pub command: String,
    /// The exit status the workload must end with.
    pub expect_exit: i64,
    pub timeout: Option<Duration>,
}

/// One check of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub command: String,
    pub passed: bool,
    /// What happened, in one line.
    pub observed: String,
}

/// The checks and how long they took.
#[derive(Debug, Clone)]
pub struct Verification {
    pub checks: Vec<CheckResult>,
    pub duration: Duration,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "  {:<8} {:<4}  {}",
                c.name,
                if c.passed { "ok" } else { "FAIL" },
                c.observed
            )?;
        }
        writeln!(
            f,
            "  verify {} in {:.1} s",
            if self.passed() { "passed" } else { "FAILED" },
            self.duration.as_secs_f64()
        )
    }
}

/// Runs the workload and the probes under `req.seccomp`.
pub async fn verify<B: Backend>(
    service: &Service<B>,
    principal: &Principal,
    req: &VerifyRequest,
) -> Result<Verification, RecordError> {
    let started = Instant::now();
    let mut p = service.select_profile(&ExecOptions {
        profile: req.profile.clone(),
        ..Default::default()
    })?;
    p.seccomp = req.seccomp.clone();
    let mut checks = vec![run_workload(service, principal, &p, req).await?];
    checks.extend(run_probes(service, principal, &p).await?);
    Ok(Verification {
        checks,
        duration: started.elapsed(),
    })
}

async fn run_workload<B: Backend>(
    service: &Service<B>,
    principal: &Principal,
    p: &Profile,
    req: &VerifyRequest,
) -> Result<CheckResult, RecordError> {
    let request = ExecRequest {
        command: CommandLine::Shell(req.command.clone()),
        timeout: req.timeout,
        ..Default::default()
    };
    let report = service
        .exec_with(
            principal,
            p,
            &request,
            &ExecOptions::default(),
            None,
            None,
            &Cancel::never(),
        )
        .await;
    ensure_ran("the workload under the recorded profile", &report)?;
    let passed = !report.timed_out && report.exit_code == Some(req.expect_exit);
    let mut observed = match (report.timed_out, report.exit_code) {
        (true, _) => "timed out".to_string(),
        (false, Some(code)) => format!("exit {code} (expected {})", req.expect_exit),
        (false, None) => "no exit status".to_string(),
    };
    if !passed {
        // A call the profile refuses usually shows as "Operation not permitted".
        let hint = report
            .stderr
            .lines()
            .find(|l| l.contains("Operation not permitted"))
            .or_else(|| report.stderr.lines().find(|l| !l.trim().is_empty()));
        if let Some(line) = hint {
            observed = format!("{observed}: {}", line.trim());
        }
    }
    Ok(CheckResult {
        name: "workload".to_string(),
        command: req.command.clone(),
        passed,
        observed,
    })
}

/// The probe script: one line per probe, `NAME STATUS FIRST-LINE`.
fn probe_script() -> String {
    PROBES
        .iter()
        .map(|p| {
            format!(
                "out=$({} 2>&1); echo \"{} $? ${{out%%$'\\n'*}}\"",
                p.command, p.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_probes<B: Backend>(
    service: &Service<B>,
    principal: &Principal,
    p: &Profile,
) -> Result<Vec<CheckResult>, RecordError> {
    let resolved = resolve(
        &p.seccomp.parsed,
        &super::lint_profile::effective_caps(p),
        Arch::host(),
        host_kernel(),
    );
    let mut probe_profile = p.clone();
    probe_profile.user = PROBE_USER;
    let request = ExecRequest {
        command: CommandLine::Shell(probe_script()),
        timeout: Some(PROBE_TIMEOUT),
        ..Default::default()
    };
    // The check stage would deny these escapes before the sandbox could; the bypass is
    // audited.
    let options = ExecOptions {
        bypass_check: true,
        ..Default::default()
    };
    let report = service
        .exec_with(
            principal,
            &probe_profile,
            &request,
            &options,
            None,
            None,
            &Cancel::never(),
        )
        .await;
    ensure_ran("the probes", &report)?;
    Ok(PROBES
        .iter()
        .map(|probe| {
            let says = describe(&resolved.verdict(probe.syscall));
            judge_probe(probe, &report.stdout, &says)
        })
        .collect())
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Allow => "allowed".to_string(),
        Verdict::Deny { action } => action.to_string(),
        Verdict::Conditional { .. } => "allowed for some arguments".to_string(),
    }
}

fn judge_probe(probe: &Probe, stdout: &str, profile_says: &str) -> CheckResult {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(probe.name)?.strip_prefix(' '));
    let (passed, observed) = match line {
        None => (
            false,
            "did not run (the probe script stopped before it)".to_string(),
        ),
        Some(rest) => {
            let (status, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let refused = status != "0"
                && probe
                    .denied_when
                    .iter()
                    .any(|m| message.to_lowercase().contains(&m.to_lowercase()));
            let what = if refused {
                "denied (EPERM)"
            } else if status == "0" {
                "ALLOWED"
            } else {
                "failed, but not with EPERM"
            };
            (
                refused,
                format!(
                    "{what}: exit {status}: {} (profile: {} -> {profile_says})",
                    message.trim(),
                    probe.syscall
                ),
            )
        }
    };
    CheckResult {
        name: probe.name.to_string(),
        command: probe.command.to_string(),
        passed,
        observed,
    }
}

/// A seccomp file for [`VerifyRequest::seccomp`], loaded and checked.
pub fn seccomp_policy(path: PathBuf, json: String) -> Result<Arc<SeccompPolicy>, RecordError> {
    match SeccompPolicy::from_json(path.clone(), json) {
        Ok(policy) => Ok(Arc::new(policy)),
        Err(source) => Err(RecordError::Seccomp { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_script_prints_one_line_per_probe() {
        let s = probe_script();
        assert!(s.contains("out=$(unshare -U true 2>&1); echo \"unshare $? ${out%%$'\\n'*}\""));
        assert_eq!(s.lines().count(), PROBES.len());
    }

    #[test]
    fn probes_pass_only_on_eperm() {
        let out = "unshare 1 unshare: unshare failed: Operation not permitted\nmount 32 mount: /tmp: permission denied.\n";
        assert!(judge_probe(&PROBES[0], out, "Deny").passed);
        assert!(judge_probe(&PROBES[1], out, "Deny").passed);
        let allowed = judge_probe(&PROBES[0], "unshare 0 \n", "Allow");
        assert!(!allowed.passed);
        assert!(
            allowed.observed.starts_with("ALLOWED"),
            "{}",
            allowed.observed
        );
        let other = judge_probe(
            &PROBES[0],
            "unshare 127 bash: unshare: command not found\n",
            "",
        );
        assert!(!other.passed && other.observed.contains("not with EPERM"));
        assert!(!judge_probe(&PROBES[1], "", "").passed);
    }
}
