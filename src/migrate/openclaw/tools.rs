//! The keys around the sandbox that a migration has to read (SCHEMA.md sections 7 and 8):
//! `tools.exec` (where commands run, their timeout), `tools.elevated` (OpenClaw's way out of the
//! sandbox), the sandbox tool policy, and `gateway` (whose token is never copied).

use crate::migrate::draft::Field;
use crate::migrate::json5::{Number, Object, Value};
use crate::migrate::Status;

use super::log::{Loc, Log};

/// OpenClaw's exec timeout when none is set (`tools.exec.timeoutSec`, SCHEMA.md section 7).
pub const OPENCLAW_TIMEOUT_SECS: u64 = 1800;
/// stockade's longest timeout (`limits.timeout`).
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Tool names that run commands: `exec`, and `bash` before the 2026-01-12 rename.
const EXEC_TOOLS: &[&str] = &["exec", "bash"];
/// `tools.exec` keys that do not touch the sandbox (SCHEMA.md section 7, "others").
const EXEC_OTHER_KEYS: &[&str] = &[
    "node",
    "pathPrepend",
    "safeBins",
    "safeBinTrustedDirs",
    "safeBinProfiles",
    "strictInlineEval",
    "backgroundMs",
    "cleanupMs",
    "notifyOnExit",
    "notifyOnExitEmptySuccess",
    "applyPatch",
    "commandHighlighting",
    "reviewer",
    "approvalRunningNoticeMs",
];
const NO_APPROVALS: &str = "approvals and allowlists of host execution have no stockade counterpart: stockade's check stage judges every command against its escape rules (allow, warn, deny: `stockade check`), and nothing switches it off";

/// Reads a `tools` block (global or an agent's) at `loc`; returns the exec timeout it sets.
pub fn read_tools(tools: &Object, loc: &Loc, log: &mut Log) -> Option<Field<u64>> {
    let mut timeout = None;
    for (key, value) in tools.iter() {
        let at = loc.key(key);
        match key {
            "exec" | "bash" => {
                let at = if key == "bash" {
                    loc.renamed(key, "exec")
                } else {
                    at
                };
                match value.as_object() {
                    Some(exec) => timeout = read_exec(exec, &at, log).or(timeout),
                    None => log.with(&at, Status::Ignored, value, "not an object: OpenClaw rejects it at load"),
                }
            }
            "elevated" => match value.as_object() {
                Some(elevated) => read_elevated(elevated, &at, log),
                None => log.with(&at, Status::Ignored, value, "not an object: OpenClaw rejects it at load"),
            },
            "sandbox" => match value.as_object() {
                Some(sandbox) => {
                    for (k, v) in sandbox.iter() {
                        let at = at.key(k);
                        if k == "tools" {
                            tool_policy(v, &at, log);
                        } else {
                            log.hidden(&at, Status::Ignored, "not a key of OpenClaw's tools.sandbox that this migration knows; the agent host's tool settings are not sandbox configuration");
                        }
                    }
                }
                None => log.with(&at, Status::Ignored, value, "not an object: OpenClaw rejects it at load"),
            },
            "allow" | "deny" | "alsoAllow" | "profile" => log.with(&at, Status::Ignored, value, "the agent host's tool policy (which tools the model gets): stockade only runs the commands it is given; keep it in the agent host"),
            _ => log.not_sandbox(&at, "the agent host's tool settings"),
        }
    }
    timeout
}

/// The legacy `agent.bash` block, or `tools.exec`.
pub fn read_exec(exec: &Object, loc: &Loc, log: &mut Log) -> Option<Field<u64>> {
    let mut timeout = None;
    for (key, value) in exec.iter() {
        let at = loc.key(key);
        match key {
            "host" => match value.as_str() {
                Some("sandbox") => log.with(&at, Status::Mapped, value, "commands run in the sandbox: the only place stockade runs them"),
                Some("auto") => log.with(&at, Status::Approximated, value, "OpenClaw fell back to the gateway host without a sandbox runtime; stockade always runs commands in a sandbox (stricter)"),
                Some("gateway" | "node") => log.with(&at, Status::Approximated, value, "OpenClaw ran these commands on the host (gateway or node), outside any sandbox; stockade has no host execution: the commands it is given run in the sandbox (stricter)"),
                _ => log.with(&at, Status::Ignored, value, "not \"auto\", \"sandbox\", \"gateway\" or \"node\": OpenClaw rejects it at load"),
            },
            "security" | "ask" | "mode" => {
                let full = value.as_str() == Some("full");
                log.with(&at, Status::Approximated, value, if full {
                    format!("{NO_APPROVALS}; \"full\" (no approval at all, flagged by OpenClaw's audit as tools.exec.security_full_configured) is not carried over (stricter)")
                } else {
                    NO_APPROVALS.to_string()
                });
            }
            "timeoutSec" | "timeoutSeconds" => {
                let at = if key == "timeoutSec" {
                    loc.renamed(key, "timeoutSeconds")
                } else {
                    at
                };
                match value.as_number().and_then(Number::as_i64) {
                    Some(secs) if secs > 0 => {
                        let secs = secs as u64;
                        if secs > MAX_TIMEOUT_SECS {
                            log.with(&at, Status::Approximated, value, format!("limits.timeout = \"{MAX_TIMEOUT_SECS}s\", stockade's longest"));
                            timeout = Some(Field::new(MAX_TIMEOUT_SECS, format!("{}: capped at 24h", at.path)));
                        } else {
                            log.with(&at, Status::Mapped, value, format!("limits.timeout = \"{secs}s\" of the profiles this block applies to"));
                            timeout = Some(Field::new(secs, at.path.clone()));
                        }
                    }
                    _ => log.with(&at, Status::Ignored, value, format!("not a whole number of seconds > 0 (OpenClaw rejects it at load); OpenClaw's default {OPENCLAW_TIMEOUT_SECS} s is used")),
                }
            }
            k if EXEC_OTHER_KEYS.contains(&k) => log.with(&at, Status::Ignored, value, "an exec-tool setting of the agent host, not of the sandbox"),
            _ => log.hidden(&at, Status::Ignored, "not a tools.exec key this migration knows; the exec tool's settings other than host and timeout are not sandbox configuration"),
        }
    }
    timeout
}

/// `tools.elevated`: OpenClaw's elevated exec leaves the sandbox for the gateway host.
pub fn read_elevated(elevated: &Object, loc: &Loc, log: &mut Log) {
    for (key, value) in elevated.iter() {
        let at = loc.key(key);
        match key {
            "enabled" => match value.as_bool() {
                Some(false) => log.with(&at, Status::Mapped, value, "allow_elevation = false in config.toml"),
                _ => log.with(&at, Status::Approximated, value, "OpenClaw's elevated exec ran commands on the gateway host, outside any sandbox; stockade has none. Its `--elevated` runs in the elevated profile (root, still sandboxed, network none) and only with allow_elevation = true, which config.toml leaves false: set it yourself if you need it"),
            },
            "allowFrom" => {
                let wildcard = value.as_object().is_some_and(|o| {
                    o.iter().any(|(_, v)| v.as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some("*"))))
                });
                let mut reason = "who may ask for elevated exec, by chat sender: stockade grants by API principal (`stockade token create --name NAME`, `stockade grants`), and elevation only through allow_elevation".to_string();
                if wildcard {
                    reason.push_str("; \"*\" let any sender out of the sandbox (OpenClaw's audit: tools.elevated.allowFrom.<provider>.wildcard, critical): not carried over");
                }
                log.hidden(&at, Status::Ignored, reason);
            }
            _ => log.hidden(&at, Status::Ignored, "not a tools.elevated key this migration knows; elevation stays off (allow_elevation = false)"),
        }
    }
}

/// Whether a tool policy (`{ allow?, alsoAllow?, deny? }`) takes exec away: `deny` names it, or
/// a non-empty `allow` (without `alsoAllow`) leaves it out.
pub fn policy_denies_exec(value: &Value) -> bool {
    let Some(policy) = value.as_object() else {
        return false;
    };
    let names = |key: &str| -> Vec<&str> {
        policy
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let denied = names("deny").iter().any(|n| EXEC_TOOLS.contains(n));
    let allow = names("allow");
    let also = names("alsoAllow");
    let left_out = !allow.is_empty() && !allow.iter().chain(&also).any(|n| EXEC_TOOLS.contains(n));
    denied || left_out
}

/// A sandbox tool policy (`tools.sandbox.tools` or the legacy `sandbox.tools`).
pub fn tool_policy(value: &Value, loc: &Loc, log: &mut Log) {
    let mut reason = "which tools a sandboxed session gets from the agent host: stockade only runs the commands it is given; keep the policy in the agent host".to_string();
    if policy_denies_exec(value) {
        reason.push_str("; it takes exec away, so this agent runs no commands and needs no sandbox: its profile is written for completeness only");
    }
    log.with(loc, Status::Ignored, value, reason);
}

/// `gateway`: the API in front of the agent. Its secrets are never copied.
pub fn read_gateway(gateway: &Object, loc: &Loc, log: &mut Log) {
    let auth = gateway.get("auth").and_then(Value::as_object);
    let auth_mode = auth.and_then(|a| a.get("mode")).and_then(Value::as_str);
    let has_secret = auth.is_some_and(|a| a.get("token").is_some() || a.get("password").is_some())
        || gateway.get("token").is_some();
    for (key, value) in gateway.iter() {
        let at = loc.key(key);
        match key {
            "bind" => match value.as_str() {
                Some("loopback") => log.with(
                    &at,
                    Status::Mapped,
                    value,
                    "stockade serve listens on loopback unless told --allow-non-loopback",
                ),
                Some(_) => {
                    let mut reason = "stockade serve listens on loopback unless started with --allow-non-loopback, and always requires a token".to_string();
                    if auth_mode == Some("none")
                        || (!has_secret && auth_mode != Some("trusted-proxy"))
                    {
                        reason.push_str("; this gateway listened beyond loopback without auth (OpenClaw's audit: gateway.bind_no_auth, critical; the gateway refuses to serve it): not carried over");
                    }
                    log.with(&at, Status::Approximated, value, reason);
                }
                None => log.with(&at, Status::Ignored, value, "not a bind mode"),
            },
            "token" => log.hidden(
                &Loc::legacy(at.path, format!("{}.auth.token", loc.path)),
                Status::Ignored,
                NEVER_COPIED,
            ),
            "auth" => match value.as_object() {
                Some(auth) => read_auth(auth, &at, log),
                None => log.hidden(&at, Status::Ignored, "not an object"),
            },
            "port" | "customBindHost" => log.with(
                &at,
                Status::Ignored,
                value,
                "stockade serve takes its address with --listen (docs/api.md)",
            ),
            _ => log.not_sandbox(
                &at,
                "a gateway setting (stockade serve has its own flags, docs/api.md)",
            ),
        }
    }
}

const NEVER_COPIED: &str = "never copied: stockade's API takes its own tokens, stored hashed; create one with `stockade token create --name NAME` (value not shown)";

fn read_auth(auth: &Object, loc: &Loc, log: &mut Log) {
    for (key, value) in auth.iter() {
        let at = loc.key(key);
        match key {
            "mode" => match value.as_str() {
                Some("none") => log.with(&at, Status::Approximated, value, "stockade's API has no unauthenticated mode: every request needs a token (stricter)"),
                _ => log.with(&at, Status::Approximated, value, "stockade's API always authenticates with its own bearer tokens (`stockade token create --name NAME`)"),
            },
            "token" | "password" => log.hidden(&at, Status::Ignored, NEVER_COPIED),
            "rateLimit" => log.hidden(&at, Status::Ignored, "stockade serve limits each principal itself (docs/api.md)"),
            _ => log.hidden(&at, Status::Ignored, "an auth setting of the gateway (trusted proxies, Tailscale): stockade's API takes its own tokens only; values not shown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::json5::parse;

    #[test]
    fn a_policy_that_takes_exec_away_is_seen() {
        let denies = |t: &str| policy_denies_exec(&parse(t).unwrap());
        assert!(denies("{ deny: ['bash', 'write'] }"));
        assert!(denies("{ allow: ['read'] }"));
        assert!(!denies("{ allow: ['read'], alsoAllow: ['exec'] }"));
        assert!(!denies("{ deny: ['browser'] }"));
        assert!(!denies("{ allow: [] }"), "allow: [] means every tool");
    }

    #[test]
    fn the_gateway_token_is_never_shown() {
        let gateway = parse("{ bind: 'lan', token: 'hunter2-long-token', auth: { mode: 'token', token: 'hunter2-long-token', password: 'pw' } }").unwrap();
        let mut log = Log::default();
        read_gateway(gateway.as_object().unwrap(), &Loc::new("gateway"), &mut log);
        let text = format!("{:?}", log.entries);
        assert!(
            !text.contains("hunter2") && !text.contains("\"pw\""),
            "{text}"
        );
        let token = log
            .entries
            .iter()
            .find(|e| e.key == "gateway.auth.token")
            .unwrap();
        assert_eq!(token.status, Status::Ignored);
        assert!(token.reason.contains("stockade token create"));
        let legacy = log
            .entries
            .iter()
            .find(|e| e.key == "gateway.token")
            .unwrap();
        assert_eq!(legacy.legacy_of.as_deref(), Some("gateway.auth.token"));
    }
}
