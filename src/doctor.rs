//! `stockade doctor`: a 0-100 score for the installation, by domain, with a fix for each
//! finding; the safe fixes (file modes, expired tokens) can be applied. docs/doctor.md lists
//! every check.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::{self, AUTH_LOG_FILE};
use crate::backend::docker::engine::EngineFacts;
use crate::config::{Config, OnAuditFailure};
use crate::profile::{self, ProfileDirs};
use crate::server::tokens::{self, Tokens};

/// The domains of the score, in the order shown.
pub const DOMAINS: [&str; 8] = [
    "authentication",
    "authorization",
    "encryption",
    "sandboxing",
    "audit_logging",
    "input_validation",
    "rate_limiting",
    "session_security",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Critical,
}

impl Severity {
    fn cost(self) -> u32 {
        match self {
            Severity::Critical => 40,
            Severity::Warn => 15,
            Severity::Info => 2,
        }
    }
}

/// What `--fix` can do about a finding, safely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    Chmod {
        path: PathBuf,
        mode: u32,
    },
    PruneExpiredTokens,
    /// Only with the confirmation (`--rotate-weak-tokens`): its clients need the new value.
    RotateToken {
        name: String,
    },
    /// A file a stopped process left.
    Remove {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub domain: &'static str,
    pub severity: Severity,
    pub message: String,
    /// What to do about it.
    pub fix: String,
    /// Present when `--fix` does it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_fix: Option<Fix>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub name: &'static str,
    pub score: u8,
    pub findings: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The mean of the domains' scores.
    pub score: u8,
    pub domains: Vec<Domain>,
    pub findings: Vec<Finding>,
    /// What `--fix` changed (empty without it).
    pub fixed: Vec<String>,
    /// Tokens `--fix --rotate-weak-tokens` replaced, with their new values (shown once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rotated_tokens: Vec<RotatedToken>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotatedToken {
    pub name: String,
    pub token: String,
}

/// What `--fix` did.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    pub changes: Vec<String>,
    pub rotated_tokens: Vec<RotatedToken>,
}

/// Where to look.
pub struct Installation<'a> {
    pub state_dir: &'a Path,
    pub profile_dirs: &'a ProfileDirs,
    pub config: &'a Config,
    pub secrets_key: Option<&'a Path>,
    /// The engine's settings (`None`: not asked, e.g. no engine is configured).
    pub engine: Option<Result<EngineFacts, String>>,
}

/// Tokens older than this should be rotated.
const TOKEN_MAX_AGE_SECS: i64 = 90 * 86_400;

fn finding(domain: &'static str, severity: Severity, message: String, fix: &str) -> Finding {
    Finding {
        domain,
        severity,
        message,
        fix: fix.to_string(),
        auto_fix: None,
    }
}

/// Every check, over `at`.
pub fn examine(at: &Installation<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    files(at, &mut out);
    token_checks(at, &mut out);
    secrets_checks(at, &mut out);
    profile_checks(at, &mut out);
    audit_checks(at, &mut out);
    serve_checks(at, &mut out);
    if let Some(engine) = &at.engine {
        engine_checks(engine, &mut out);
    }
    if at.config.allow_elevation {
        out.push(finding(
            "input_validation",
            Severity::Warn,
            "the configuration allows elevated profiles (allow_elevation = true)".into(),
            "set allow_elevation = false unless a workload needs it",
        ));
    }
    out
}

/// The state directory 0700 and owned by us, every file in it 0600, no symbolic links.
fn files(at: &Installation<'_>, out: &mut Vec<Finding>) {
    let dir = at.state_dir;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        out.push(finding(
            "session_security",
            Severity::Info,
            format!("the state directory {} does not exist yet", dir.display()),
            "nothing to do: it is created 0700 on first use",
        ));
        return;
    };
    if meta.file_type().is_symlink() {
        out.push(finding(
            "session_security",
            Severity::Critical,
            format!("the state directory {} is a symbolic link", dir.display()),
            "point STOCKADE_STATE_DIR at a real directory; stockade refuses to use this one",
        ));
        return;
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        out.push(finding(
            "session_security",
            Severity::Critical,
            format!(
                "the state directory {} belongs to uid {}",
                dir.display(),
                meta.uid()
            ),
            "use a state directory of your own",
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode != 0o700 {
        out.push(Finding {
            auto_fix: Some(Fix::Chmod {
                path: dir.to_path_buf(),
                mode: 0o700,
            }),
            ..finding(
                "session_security",
                Severity::Critical,
                format!("the state directory {} is mode {mode:o}, not 700: others can read the audit log, tokens and secrets", dir.display()),
                "chmod 700 it (--fix does)",
            )
        })
    }
    walk(dir, 0, out);
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<Finding>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten().take(10_000) {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        let kind = meta.file_type();
        if kind.is_symlink() {
            out.push(finding(
                "session_security",
                Severity::Warn,
                format!("{} is a symbolic link inside the state directory", path.display()),
                "remove it: stockade never follows links there, and one may be an attempt to redirect a write",
            ));
        } else if kind.is_dir() {
            // Sandbox-facing directories (the agent's socket dirs) are the agent's business;
            // the rule is that nothing is writable by others.
            if mode & 0o022 != 0 {
                out.push(Finding {
                    auto_fix: Some(Fix::Chmod {
                        path: path.clone(),
                        mode: mode & !0o022,
                    }),
                    ..finding(
                        "session_security",
                        Severity::Warn,
                        format!("{} is writable by others (mode {mode:o})", path.display()),
                        "remove group and other write (--fix does)",
                    )
                });
            }
            if depth < 3 {
                walk(&path, depth + 1, out);
            }
        } else if kind.is_file()
            && depth == 0
            && (mode & 0o077 != 0 || (mode & 0o111 == 0 && mode != 0o600))
        {
            // Group or other access is never right; an executable (stockade's agent) keeps its
            // owner's bits.
            let fixed = if mode & 0o111 == 0 {
                0o600
            } else {
                mode & 0o700
            };
            out.push(Finding {
                auto_fix: Some(Fix::Chmod {
                    path: path.clone(),
                    mode: fixed,
                }),
                ..finding(
                    "session_security",
                    Severity::Warn,
                    format!("{} is mode {mode:o}, not 600", path.display()),
                    "chmod 600 it (--fix does)",
                )
            });
        }
    }
}

fn token_checks(at: &Installation<'_>, out: &mut Vec<Finding>) {
    let store = Tokens::new(at.state_dir);
    let file = match store.load() {
        Ok(f) => f,
        Err(e) => {
            out.push(finding(
                "authentication",
                Severity::Critical,
                format!("the token file cannot be read: {e}"),
                "restore it from a backup, or remove it and create the tokens again",
            ));
            return;
        }
    };
    let now = tokens::now_secs();
    let expired = file.tokens.iter().filter(|t| t.expired(now)).count();
    if expired > 0 {
        out.push(Finding {
            auto_fix: Some(Fix::PruneExpiredTokens),
            ..finding(
                "authorization",
                Severity::Info,
                format!("{expired} expired token(s) are still listed"),
                "prune them (--fix does): they authenticate nothing, but list principals that no longer exist",
            )
        });
    }
    for t in file.tokens.iter().filter(|t| t.active(now)) {
        let rotate = Some(Fix::RotateToken {
            name: t.name.clone(),
        });
        match t.bits {
            Some(bits) if f64::from(bits) < tokens::MIN_TOKEN_BITS => out.push(Finding {
                auto_fix: rotate.clone(),
                ..finding(
                    "authentication",
                    Severity::Critical,
                    format!(
                        "token {:?} is weak: about {bits} bits of entropy, under {:.0}",
                        t.name,
                        tokens::MIN_TOKEN_BITS
                    ),
                    "rotate it (--fix --rotate-weak-tokens does, printing the new value once) and give the new value to its client",
                )
            }),
            None => out.push(Finding {
                auto_fix: rotate.clone(),
                ..finding(
                    "authentication",
                    Severity::Warn,
                    format!(
                        "token {:?} has no recorded strength (made before stockade recorded it, or the token file was edited)",
                        t.name
                    ),
                    "rotate it (--fix --rotate-weak-tokens does, printing the new value once) so a generated value replaces it",
                )
            }),
            Some(_) => {}
        }
        let since = t.rotated.unwrap_or(t.created);
        if now - since > TOKEN_MAX_AGE_SECS {
            out.push(finding(
                "authentication",
                Severity::Warn,
                format!(
                    "token {:?} has not been rotated for {} days",
                    t.name,
                    (now - since) / 86_400
                ),
                "stockade token rotate NAME, and give the new value to its client",
            ));
        }
        if t.expires.is_none() && t.scope == tokens::Scope::Admin {
            out.push(finding(
                "authorization",
                Severity::Info,
                format!("admin token {:?} never expires", t.name),
                "create admin tokens with --ttl, or revoke this one when it is not needed",
            ));
        }
    }
}

fn secrets_checks(at: &Installation<'_>, out: &mut Vec<Finding>) {
    let secrets = crate::secrets::Secrets::new(at.state_dir, at.secrets_key.map(Path::to_path_buf));
    let listed = secrets.list().unwrap_or_default();
    let key = secrets.key_path().to_path_buf();
    match std::fs::symlink_metadata(&key) {
        Ok(meta) if meta.file_type().is_symlink() => out.push(finding(
            "encryption",
            Severity::Critical,
            format!(
                "the secrets key {} is a symbolic link: whoever controls its target controls the key",
                key.display()
            ),
            "replace the link with the key file itself (mode 600), or name the real path with STOCKADE_SECRETS_KEY",
        )),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode != 0o600 {
                out.push(Finding {
                    auto_fix: Some(Fix::Chmod {
                        path: key.clone(),
                        mode: 0o600,
                    }),
                    ..finding(
                        "encryption",
                        Severity::Critical,
                        format!(
                            "the secrets key {} is mode {mode:o}, not 600",
                            key.display()
                        ),
                        "chmod 600 it (--fix does), then rotate it: stockade secret rotate --key",
                    )
                });
            }
            if at.secrets_key.is_none() && !listed.is_empty() {
                out.push(finding(
                    "encryption",
                    Severity::Info,
                    "the secrets key lies beside the encrypted secrets, in the state directory".into(),
                    "keep it elsewhere (another disk, a mount present only while stockade runs) and name it with STOCKADE_SECRETS_KEY",
                ));
            }
        }
        Err(_) if !listed.is_empty() => out.push(finding(
            "encryption",
            Severity::Critical,
            format!(
                "{} secret(s) are stored but the key {} is missing: none can be decrypted",
                listed.len(),
                key.display()
            ),
            "restore the key file, or set the secrets again",
        )),
        Err(_) => {}
    }
}

fn profile_checks(at: &Installation<'_>, out: &mut Vec<Finding>) {
    for name in profile::list(at.profile_dirs) {
        match profile::load(&name, at.profile_dirs) {
            Err(e) => out.push(finding(
                "sandboxing",
                Severity::Warn,
                format!("profile {name} does not load: {e}"),
                "fix or remove it (stockade profile lint NAME says what is wrong)",
            )),
            Ok(p) => {
                let report = crate::seccomp::lint_profile(&p);
                let severity = match report.score {
                    0..=59 => Severity::Critical,
                    60..=79 => Severity::Warn,
                    _ => continue,
                };
                out.push(finding(
                    "sandboxing",
                    severity,
                    format!(
                        "profile {name} scores {}/100 in its lint ({} critical, {} warn)",
                        report.score, report.critical, report.warn
                    ),
                    "stockade profile lint NAME lists each finding and its fix",
                ));
            }
        }
    }
}

fn audit_checks(at: &Installation<'_>, out: &mut Vec<Finding>) {
    if at.config.on_audit_failure == OnAuditFailure::Run {
        out.push(finding(
            "audit_logging",
            Severity::Warn,
            "on_audit_failure = \"run\": a command runs even when the audit log cannot record it (its records are held and written late, after a gap record)".into(),
            "set on_audit_failure = \"refuse\" (the default) unless running matters more than a complete, timely record",
        ));
    }
    let spill = at.state_dir.join(audit::SPILL_FILE);
    if let Some(meta) = std::fs::symlink_metadata(&spill)
        .ok()
        .filter(|m| m.len() > 0)
    {
        out.push(finding(
            "audit_logging",
            Severity::Critical,
            format!(
                "{} holds {} bytes of records of executions that ran while the audit log could not be written",
                spill.display(),
                meta.len()
            ),
            "make the audit log writable again (stockade audit verify says why it refuses); the next execution writes them after a gap record",
        ));
    }
    for name in [audit::LOG_FILE, AUTH_LOG_FILE] {
        let path = at.state_dir.join(name);
        if !path.exists() {
            continue;
        }
        match audit::verify(&path) {
            Err(e) => out.push(finding(
                "audit_logging",
                Severity::Critical,
                format!("{} cannot be verified: {e}", path.display()),
                "stockade audit verify says more; keep the file for investigation",
            )),
            Ok(report) if !report.ok() => out.push(finding(
                "audit_logging",
                Severity::Critical,
                format!("{} does not verify: {} problem(s)", path.display(), report.findings.len()),
                "stockade audit verify lists them; keep the file for investigation and start a new state directory",
            )),
            Ok(_) => {}
        }
    }
}

/// Where running servers listen (`serve.PID.json`), and files stopped ones left.
fn serve_checks(at: &Installation<'_>, out: &mut Vec<Finding>) {
    let Ok(entries) = std::fs::read_dir(at.state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("serve.")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        // Only a small regular file is read: a FIFO or a link to a device planted under the
        // name must not hang or exhaust doctor.
        let regular = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_file() && m.len() < 64 * 1024);
        let listening: Option<crate::server::Listening> = regular
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let alive = pid > 0
            && !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            );
        match listening {
            Some(l) if alive && l.non_loopback => out.push(finding(
                "authentication",
                Severity::Warn,
                format!(
                    "stockade serve (pid {pid}) listens beyond loopback in plain HTTP ({}): tokens cross the network in the clear",
                    l.addresses.join(", ")
                ),
                "listen on 127.0.0.1 or a Unix socket, behind a TLS-terminating proxy for remote clients",
            )),
            Some(_) if alive => {}
            _ => out.push(Finding {
                auto_fix: Some(Fix::Remove { path: path.clone() }),
                ..finding(
                    "session_security",
                    Severity::Info,
                    format!("{} was left by a server that is no longer running", path.display()),
                    "remove it (--fix does)",
                )
            }),
        }
    }
}

/// The engine's settings that weaken (or fail to strengthen) isolation.
fn engine_checks(engine: &Result<EngineFacts, String>, out: &mut Vec<Finding>) {
    let facts = match engine {
        Ok(f) => f,
        Err(e) => {
            out.push(finding(
                "sandboxing",
                Severity::Info,
                format!("the engine's settings could not be checked: {e}"),
                "start the engine, or point DOCKER_HOST at it, and run doctor again",
            ));
            return;
        }
    };
    let has = |name: &str| {
        facts
            .security_options
            .iter()
            .any(|o| o.split(',').any(|kv| kv == format!("name={name}")))
    };
    if !facts.host.starts_with("unix://") {
        out.push(finding(
            "authentication",
            Severity::Critical,
            format!(
                "the engine is reached at {} over TCP without TLS: whoever reaches that port controls the engine and its host",
                facts.host
            ),
            "use the engine's Unix socket (unset DOCKER_HOST), or an SSH tunnel to it",
        ));
    } else if let Some(path) = facts.host.strip_prefix("unix://") {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o002 != 0 {
                out.push(finding(
                    "authentication",
                    Severity::Critical,
                    format!("the engine socket {path} is writable by every user: any local user is root through it"),
                    "chmod 660 it and keep its group to the engine's operators",
                ));
            }
        }
    }
    if !has("seccomp") {
        out.push(finding(
            "sandboxing",
            Severity::Critical,
            "the engine reports no seccomp support: profiles' syscall filters cannot be applied"
                .into(),
            "use an engine (and runc) built with seccomp",
        ));
    } else if facts
        .security_options
        .iter()
        .any(|o| o.contains("name=seccomp") && o.contains("profile=unconfined"))
    {
        out.push(finding(
            "sandboxing",
            Severity::Info,
            "the engine's default seccomp profile is unconfined: stockade's sandboxes carry their own, other containers on this engine run unfiltered".into(),
            "remove `seccomp-profile: unconfined` from the engine's daemon.json",
        ));
    }
    if !has("apparmor") && !has("selinux") {
        out.push(finding(
            "sandboxing",
            Severity::Info,
            "no AppArmor or SELinux confinement: seccomp, capabilities and namespaces are the only walls".into(),
            "enable AppArmor (or SELinux) on the host so the engine applies its default policy",
        ));
    }
    if !has("userns") && !has("rootless") {
        out.push(finding(
            "sandboxing",
            Severity::Info,
            "the engine maps container uids to the same host uids (no userns-remap, not rootless): sandboxes run as uid 65532, an elevated profile's root is host root".into(),
            "set userns-remap in daemon.json, or run the engine rootless",
        ));
    }
    if facts.cgroup_version.as_deref() == Some("1") {
        out.push(finding(
            "sandboxing",
            Severity::Info,
            "the host uses cgroup v1, where release_agent escapes exist (stockade's profiles drop CAP_SYS_ADMIN and its rules deny the attempt)".into(),
            "boot the host with cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
        ));
    }
}

/// Scores `findings`: each domain starts at 100 and loses a cost per finding; the overall score
/// is the mean of the domains.
pub fn score(findings: Vec<Finding>, fixed: Fixed) -> Report {
    let domains: Vec<Domain> = DOMAINS
        .iter()
        .map(|&name| {
            let mine: Vec<&Finding> = findings.iter().filter(|f| f.domain == name).collect();
            let cost: u32 = mine.iter().map(|f| f.severity.cost()).sum();
            Domain {
                name,
                score: 100u32.saturating_sub(cost) as u8,
                findings: mine.len(),
            }
        })
        .collect();
    let total: u32 = domains.iter().map(|d| u32::from(d.score)).sum();
    Report {
        score: (total / DOMAINS.len() as u32) as u8,
        domains,
        findings,
        fixed: fixed.changes,
        rotated_tokens: fixed.rotated_tokens,
    }
}

/// Applies the safe fixes of `findings`, and rotates tokens only when `rotate_tokens` (the
/// operator's confirmation: their clients need the new values); returns what it changed.
pub fn fix(at: &Installation<'_>, findings: &[Finding], rotate_tokens: bool) -> Fixed {
    let mut done = Fixed::default();
    for f in findings {
        match &f.auto_fix {
            Some(Fix::Chmod { path, mode }) => {
                match std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)) {
                    Ok(()) => done.changes.push(format!("chmod {mode:o} {}", path.display())),
                    Err(e) => done
                        .changes
                        .push(format!("could not chmod {}: {e}", path.display())),
                }
            }
            Some(Fix::PruneExpiredTokens) => {
                let now = tokens::now_secs();
                let pruned = Tokens::new(at.state_dir).update(|file| {
                    let before = file.tokens.len();
                    file.tokens.retain(|t| !t.expired(now));
                    Ok(before - file.tokens.len())
                });
                match pruned {
                    Ok(n) => done.changes.push(format!("pruned {n} expired token(s)")),
                    Err(e) => done
                        .changes
                        .push(format!("could not prune expired tokens: {e}")),
                }
            }
            Some(Fix::RotateToken { name }) if !rotate_tokens => done.changes.push(format!(
                "not rotated: token {name:?} (rerun with --fix --rotate-weak-tokens; its client then needs the new value)"
            )),
            Some(Fix::RotateToken { name }) => {
                match Tokens::new(at.state_dir).rotate(name, tokens::now_secs()) {
                    Ok(token) => {
                        let _ = crate::server::auth::record_cli_event(
                            at.state_dir,
                            crate::audit::AuthKind::TokenRotated,
                            name,
                        );
                        done.changes.push(format!("rotated token {name:?}"));
                        done.rotated_tokens.push(RotatedToken {
                            name: name.clone(),
                            token,
                        });
                    }
                    Err(e) => done
                        .changes
                        .push(format!("could not rotate token {name:?}: {e}")),
                }
            }
            Some(Fix::Remove { path }) => match std::fs::remove_file(path) {
                Ok(()) => done.changes.push(format!("removed {}", path.display())),
                Err(e) => done
                    .changes
                    .push(format!("could not remove {}: {e}", path.display())),
            },
            None => {}
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loose_state_dir_costs_and_fix_restores_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        crate::state::ensure_private_dir(&state).unwrap();
        crate::state::write_private_file(&state.join("tokens.json"), b"{\"tokens\":[]}").unwrap();
        let dirs = ProfileDirs::default();
        let config = Config::default();
        let at = Installation {
            state_dir: &state,
            profile_dirs: &dirs,
            config: &config,
            secrets_key: None,
            engine: None,
        };
        let clean = score(examine(&at), Fixed::default());
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            state.join("tokens.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let findings = examine(&at);
        let loose = score(findings.clone(), Fixed::default());
        assert!(
            loose.score < clean.score,
            "{} vs {}",
            loose.score,
            clean.score
        );
        assert!(findings
            .iter()
            .any(|f| f.severity == Severity::Critical && f.message.contains("755")));
        let done = fix(&at, &findings, false).changes;
        assert_eq!(done.len(), 2, "{done:?}");
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(score(examine(&at), Fixed::default()).score, clean.score);
    }

    #[test]
    fn the_score_is_the_mean_of_the_domains() {
        let r = score(
            vec![finding("encryption", Severity::Critical, "x".into(), "y")],
            Fixed::default(),
        );
        assert_eq!(
            r.domains
                .iter()
                .find(|d| d.name == "encryption")
                .unwrap()
                .score,
            60
        );
        assert_eq!(r.score, ((7 * 100 + 60) / 8) as u8);
    }
}
