//! `stockade doctor`: a 0-100 score for the installation, by domain, with a fix for each
//! finding; the safe fixes (file modes, expired tokens) can be applied. docs/doctor.md lists
//! every check.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::{self, AUTH_LOG_FILE};
use crate::config::Config;
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
    Chmod { path: PathBuf, mode: u32 },
    PruneExpiredTokens,
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
}

/// Where to look.
pub struct Installation<'a> {
    pub state_dir: &'a Path,
    pub profile_dirs: &'a ProfileDirs,
    pub config: &'a Config,
    pub secrets_key: Option<&'a Path>,
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
        } else if kind.is_file() && depth == 0 && mode != 0o600 && mode & 0o111 == 0 {
            out.push(Finding {
                auto_fix: Some(Fix::Chmod {
                    path: path.clone(),
                    mode: 0o600,
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

/// Scores `findings`: each domain starts at 100 and loses a cost per finding; the overall score
/// is the mean of the domains.
pub fn score(findings: Vec<Finding>, fixed: Vec<String>) -> Report {
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
        fixed,
    }
}

/// Applies the safe fixes of `findings`; returns what it changed.
pub fn fix(at: &Installation<'_>, findings: &[Finding]) -> Vec<String> {
    let mut done = Vec::new();
    for f in findings {
        match &f.auto_fix {
            Some(Fix::Chmod { path, mode }) => {
                match std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)) {
                    Ok(()) => done.push(format!("chmod {mode:o} {}", path.display())),
                    Err(e) => done.push(format!("could not chmod {}: {e}", path.display())),
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
                    Ok(n) => done.push(format!("pruned {n} expired token(s)")),
                    Err(e) => done.push(format!("could not prune expired tokens: {e}")),
                }
            }
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
        };
        let clean = score(examine(&at), Vec::new());
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            state.join("tokens.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let findings = examine(&at);
        let loose = score(findings.clone(), Vec::new());
        assert!(
            loose.score < clean.score,
            "{} vs {}",
            loose.score,
            clean.score
        );
        assert!(findings
            .iter()
            .any(|f| f.severity == Severity::Critical && f.message.contains("755")));
        let done = fix(&at, &findings);
        assert_eq!(done.len(), 2, "{done:?}");
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(score(examine(&at), Vec::new()).score, clean.score);
    }

    #[test]
    fn the_score_is_the_mean_of_the_domains() {
        let r = score(
            vec![finding("encryption", Severity::Critical, "x".into(), "y")],
            Vec::new(),
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
