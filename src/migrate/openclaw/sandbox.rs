//! One `sandbox` block (`agents.defaults.sandbox`, an agent's, or the legacy `agent.sandbox`)
//! read key by key into stockade's terms. Each key gets its entry here, except the ones whose
//! verdict depends on the agent the block is resolved for (`docker.binds`, which
//! [`super::resolve`] judges per profile).

use std::path::{Path, PathBuf};

use crate::migrate::draft::{
    self, Field, Seccomp, Tmpfs, BASE_IMAGE, DEFAULT_SECCOMP, SANDBOX_USER,
};
use crate::migrate::json5::{Number, Object, Value};
use crate::migrate::{Host, MigrateError, Status};
use crate::profile;
use crate::seccomp;

use super::log::{Loc, Log};

/// The sandbox's size for a tmpfs OpenClaw gave none (Docker's default is half the host's RAM).
pub const TMPFS_SIZE: &str = "64m";
/// OpenClaw's `docker.tmpfs` when unset.
pub const OPENCLAW_TMPFS: &[&str] = &["/tmp", "/var/tmp", "/run"];
/// OpenClaw's default sandbox images, by era (SCHEMA.md section 1): stockade's base image takes
/// their place.
const OPENCLAW_IMAGES: &[(&str, &str)] = &[
    ("openclaw-sandbox:bookworm-slim", "OpenClaw's"),
    ("moltbot-sandbox:bookworm-slim", "Moltbot's (a legacy name)"),
    (
        "clawdbot-sandbox:bookworm-slim",
        "Clawdbot's (a legacy name)",
    ),
    ("clawdis-sandbox:bookworm-slim", "Clawdis's (a legacy name)"),
];
/// Most processes a profile allows (`limits.pids`).
const MAX_PIDS: i64 = 1_000_000;
/// Most CPUs a profile allows.
const MAX_CPUS: f64 = 1024.0;
/// Docker's (and stockade's) smallest memory limit.
const MIN_MEMORY: u64 = 6 << 20;
/// Most bind entries one block may hold.
pub const MAX_BINDS: usize = 256;
/// Parts of environment variable names that mark a secret (OpenClaw's 2026-02 sanitiser
/// dropped names like these: `*_API_KEY`, `*_TOKEN`, `*_PASSWORD`, `*_SECRET`...).
const SECRET_NAME_PARTS: &[&str] = &[
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "CREDENTIAL",
    "CREDENTIALS",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
    "CERT",
];
/// Value prefixes of well-known credentials (AWS key ids, GitHub and Slack tokens, API keys).
const SECRET_VALUE_PREFIXES: &[&str] = &[
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "sk-",
    "glpat-",
];

/// How many containers OpenClaw makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Session,
    Agent,
    Shared,
}

/// What of the agent's workspace the sandbox sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    ReadOnly,
    ReadWrite,
}

/// One environment variable's name from `docker.env` (values never leave the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub secret: bool,
}

/// A bind entry as written, judged later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindIn {
    pub loc: Loc,
    pub spec: String,
}

/// `sandbox.docker`, in stockade's terms. `None` is "not set in this block".
#[derive(Debug, Clone, Default)]
pub struct DockerIn {
    pub image: Option<Field<String>>,
    pub workdir: Option<Field<String>>,
    pub read_only_root: Option<Field<bool>>,
    pub tmpfs: Option<Field<Vec<Tmpfs>>>,
    pub network: Option<Field<String>>,
    pub user: Option<Field<String>>,
    pub env: Option<Vec<EnvVar>>,
    pub pids: Option<Field<i64>>,
    pub memory: Option<Field<String>>,
    pub cpus: Option<Field<f64>>,
    pub seccomp: Option<Field<Seccomp>>,
    pub binds: Vec<BindIn>,
    pub allow_external: Option<bool>,
    pub allow_reserved: Option<bool>,
}

/// One sandbox block, in stockade's terms.
#[derive(Debug, Clone)]
pub struct SandboxIn {
    pub access: Option<(Access, Loc)>,
    pub workspace_root: Option<String>,
    pub docker: DockerIn,
}

impl SandboxIn {
    pub fn empty() -> SandboxIn {
        SandboxIn {
            access: None,
            workspace_root: None,
            docker: DockerIn::default(),
        }
    }
}

/// The scope a block sets (`scope`, else the legacy `perSession`), without judging it.
pub fn peek_scope(block: Option<&Object>) -> Option<Scope> {
    let block = block?;
    let scope = match block.get("scope").and_then(Value::as_str) {
        Some("session") => Some(Scope::Session),
        Some("agent") => Some(Scope::Agent),
        Some("shared") => Some(Scope::Shared),
        _ => None,
    };
    scope.or(match block.get("perSession").and_then(Value::as_bool) {
        Some(true) => Some(Scope::Session),
        Some(false) => Some(Scope::Shared),
        None => None,
    })
}

/// How a block is read.
pub struct ReadCtx<'a> {
    pub host: &'a Host,
    /// False for an agent whose resolved scope is `shared`: OpenClaw then ignores its `docker`,
    /// `browser`, `prune` and `ssh` blocks (SCHEMA.md section 2).
    pub docker_applies: bool,
    /// Where today's schema keeps the tool policy the legacy `sandbox.tools` held.
    pub tool_policy_now: String,
}

/// Reads one sandbox block. Errors are what no report can carry on from (an unreadable
/// seccomp file).
pub fn read(
    obj: &Object,
    loc: &Loc,
    ctx: &ReadCtx<'_>,
    log: &mut Log,
) -> Result<SandboxIn, MigrateError> {
    let mut out = SandboxIn::empty();
    for (key, value) in obj.iter() {
        let at = loc.key(key);
        match key {
            "mode" => read_mode(value, &at, log),
            "scope" => read_scope(value, &at, log),
            "perSession" => {
                let at = loc.renamed(key, "scope");
                match value.as_bool() {
                    Some(per) => {
                        let scope = if per { Scope::Session } else { Scope::Shared };
                        log.with(&at, Status::Approximated, value, format!(
                            "legacy alias of scope ({}): {}",
                            if per { "session" } else { "shared" },
                            scope_reason(scope)
                        ));
                    }
                    None => log.invalid(&at, value, "a boolean", "nothing for it"),
                }
            }
            "workspaceAccess" => {
                out.access = read_access(value, &at, log).map(|a| (a, at.clone()));
            }
            "workspaceRoot" => match value.as_str() {
                Some(root) => {
                    out.workspace_root = Some(root.to_string());
                    log.with(&at, Status::Ignored, value, "stockade keeps no per-scope copies of the workspace; it only counts as a place binds may come from without dangerouslyAllowExternalBindSources");
                }
                None => log.invalid(&at, value, "a path", "nothing for it"),
            },
            "backend" => read_backend(value, &at, log),
            "sessionToolsVisibility" => log.with(
                &at,
                Status::Ignored,
                value,
                "which sessions OpenClaw's session tools see: stockade has no session tools",
            ),
            "docker" if !ctx.docker_applies => log.hidden(
                &at,
                Status::Ignored,
                "the resolved scope is shared, and OpenClaw then ignores an agent's docker block (only agents.defaults applies); so does this migration",
            ),
            "docker" => match value.as_object() {
                Some(docker) => out.docker = read_docker(docker, &at, ctx.host, log)?,
                None => log.invalid(&at, value, "an object", "stockade's defaults"),
            },
            "browser" if !ctx.docker_applies => log.hidden(
                &at,
                Status::Ignored,
                "the resolved scope is shared: OpenClaw ignores an agent's browser block",
            ),
            "browser" => match value.as_object() {
                Some(browser) => read_browser(browser, &at, ctx.host, log),
                None => log.invalid(&at, value, "an object", "nothing for it"),
            },
            "prune" => match value.as_object() {
                Some(prune) => read_prune(prune, &at, log),
                None => log.invalid(&at, value, "an object", "nothing for it"),
            },
            "ssh" => log.hidden(
                &at,
                Status::Ignored,
                "the SSH backend's settings (target, keys): stockade runs sandboxes on this host's Docker engine; values not shown, as they may hold keys",
            ),
            "tools" => {
                let at = Loc::legacy(at.path, ctx.tool_policy_now.clone());
                super::tools::tool_policy(value, &at, log);
            }
            _ => log.unknown(&at, "sandbox"),
        }
    }
    Ok(out)
}

fn scope_reason(scope: Scope) -> &'static str {
    match scope {
        Scope::Session => "one container per session; in stockade, a session is a warm sandbox named with `stockade exec --session NAME` (one name per OpenClaw session); without --session each command gets a fresh container",
        Scope::Agent => "one container per agent; in stockade, run each agent's commands with `stockade exec --session NAME` and one name per agent; without --session each command gets a fresh container",
        Scope::Shared => "one container for every agent and session (agents' docker blocks are then ignored, here too); a single shared `--session` name would do the same in stockade, which lets one agent's commands see another's files: per-agent session names are safer",
    }
}

fn read_mode(value: &Value, at: &Loc, log: &mut Log) {
    let (status, reason) = match value.as_str() {
        Some("all") => (Status::Mapped, "every session sandboxed: stockade runs every command it is given in a sandbox"),
        Some("non-main") => (Status::Approximated, "OpenClaw ran the agent's main DM session on the host; stockade has no host execution, so every command it runs is sandboxed (stricter)"),
        Some("off") => (Status::Approximated, "OpenClaw ran this agent's commands on the host, unsandboxed; stockade has no host execution: commands given to stockade run in this block's profile (stricter)"),
        _ => {
            log.invalid(at, value, "\"off\", \"non-main\" or \"all\"", "every command sandboxed");
            return;
        }
    };
    log.with(at, status, value, reason);
}

fn read_scope(value: &Value, at: &Loc, log: &mut Log) {
    let scope = match value.as_str() {
        Some("session") => Scope::Session,
        Some("agent") => Scope::Agent,
        Some("shared") => Scope::Shared,
        _ => {
            log.invalid(
                at,
                value,
                "\"session\", \"agent\" or \"shared\"",
                "the default scope",
            );
            return;
        }
    };
    log.with(at, Status::Approximated, value, scope_reason(scope));
}

fn read_access(value: &Value, at: &Loc, log: &mut Log) -> Option<Access> {
    let (access, reason) = match value.as_str() {
        Some("none") => (Access::None, "the agent workspace is not visible: OpenClaw mounted a per-scope copy; stockade gives an empty tmpfs at the workdir (copy files in with `stockade cp`)"),
        Some("ro") => (Access::ReadOnly, "the agent workspace bound read-only at /agent, as OpenClaw does, and a tmpfs at the workdir instead of OpenClaw's per-scope copy"),
        Some("rw") => (Access::ReadWrite, "the agent workspace bound read-write at the workdir, as OpenClaw does (lint: bind-writable)"),
        _ => {
            log.invalid(at, value, "\"none\", \"ro\" or \"rw\"", "no workspace access");
            return None;
        }
    };
    log.with(at, Status::Approximated, value, reason);
    Some(access)
}

fn read_backend(value: &Value, at: &Loc, log: &mut Log) {
    match value.as_str() {
        Some("docker") => log.with(at, Status::Mapped, value, "stockade's Docker backend"),
        Some("podman") => log.with(at, Status::Approximated, value, "stockade runs sandboxes on a Docker engine (Podman's Docker-compatible socket works through DOCKER_HOST); the docker.* settings are what is migrated"),
        Some(other) if !other.trim().is_empty() => log.with(at, Status::Approximated, value, "stockade runs sandboxes on this host's Docker engine, not on another runtime or over SSH; only the docker.* settings are migrated"),
        _ => log.invalid(at, value, "a backend name", "the Docker backend"),
    }
}

fn read_prune(prune: &Object, loc: &Loc, log: &mut Log) {
    for (key, value) in prune.iter() {
        let at = loc.key(key);
        match key {
            "idleHours" => log.with(&at, Status::Ignored, value, format!(
                "stockade removes idle sessions with `stockade session prune --idle {}h` (run it from cron or a timer)",
                value.as_number().and_then(Number::as_i64).unwrap_or(24)
            )),
            "maxAgeDays" => log.with(&at, Status::Ignored, value, "stockade has no maximum session age; `stockade session prune --idle D` removes the idle ones"),
            _ => log.unknown(&at, "sandbox.prune"),
        }
    }
}

fn read_browser(browser: &Object, loc: &Loc, host: &Host, log: &mut Log) {
    const NO_BROWSER: &str = "stockade runs no browser container; the agent host's browser tool is not sandboxed by stockade";
    for (key, value) in browser.iter() {
        let at = loc.key(key);
        match key {
            "network" => match value.as_str() {
                Some(n) if n.eq_ignore_ascii_case("host") => log.with(&at, Status::Refused, value, "network \"host\" shares the host's network stack (OpenClaw rejects it at load); the browser container is not migrated, but the config asks for host networking"),
                Some(n) if n.to_ascii_lowercase().starts_with("container:") => log.with(&at, Status::Refused, value, "joins another container's network namespace: stockade never does; the browser container is not migrated, but the config asks for it"),
                Some(_) => log.with(&at, Status::Ignored, value, NO_BROWSER),
                None => log.invalid(&at, value, "a network name", "nothing for it"),
            },
            "binds" => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let at = at.index(i);
                        let hazard = item.as_str().and_then(|s| s.split(':').next()).filter(|s| s.starts_with('/')).and_then(|s| {
                            super::binds::hazard(&super::binds::normalize(s), host.home.as_deref(), &host.engine_sockets, true)
                        });
                        match hazard {
                            Some(why) => log.with(&at, Status::Refused, item, format!("{why}; the browser container is not migrated, but the config asks for this bind")),
                            None => log.with(&at, Status::Ignored, item, NO_BROWSER),
                        }
                    }
                    if items.is_empty() {
                        log.with(&at, Status::Ignored, value, NO_BROWSER);
                    }
                }
                None => log.invalid(&at, value, "an array of binds", "nothing for it"),
            },
            "allowHostControl" if value.as_bool() == Some(true) => log.with(&at, Status::Ignored, value, "let sandboxed sessions drive the HOST browser; a stockade sandbox cannot reach the host's browser (stricter)"),
            "enableNoVnc" => {
                let at = loc.renamed(key, "noVncEnabled");
                log.with(&at, Status::Ignored, value, NO_BROWSER);
            }
            "enabled" | "image" | "containerPrefix" | "cdpPort" | "vncPort" | "noVncPort"
            | "cdpSourceRange" | "headless" | "noVncEnabled" | "allowHostControl"
            | "autoStart" | "autoStartTimeoutMs" => log.with(&at, Status::Ignored, value, NO_BROWSER),
            _ => log.unknown(&at, "sandbox.browser"),
        }
    }
}

fn non_empty_str(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.trim().is_empty())
}

/// Whether an environment variable looks like it holds a secret, by name or by value.
pub fn looks_secret(name: &str, value: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let by_name = upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| SECRET_NAME_PARTS.contains(&part));
    let by_value = SECRET_VALUE_PREFIXES.iter().any(|p| value.starts_with(p))
        // A URL with credentials in it (`http://user:pass@proxy`).
        || value.split_once("://").is_some_and(|(_, rest)| {
            rest.split('/').next().is_some_and(|authority| authority.contains('@'))
        });
    by_name || by_value
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Docker's memory syntax (`units.RAMInBytes`): a number with an optional `b k m g t` unit and
/// an optional `b`/`ib`, decimals allowed; or a number of bytes.
pub fn docker_bytes(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_number() {
        return n.as_i64().and_then(|n| u64::try_from(n).ok());
    }
    let text = value.as_str()?.trim().to_ascii_lowercase();
    let text = text
        .strip_suffix("ib")
        .or_else(|| text.strip_suffix('b'))
        .unwrap_or(&text);
    let (digits, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit.trim() {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    let n: f64 = digits.parse().ok()?;
    let bytes = n * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn read_docker(
    docker: &Object,
    loc: &Loc,
    host: &Host,
    log: &mut Log,
) -> Result<DockerIn, MigrateError> {
    let mut out = DockerIn::default();
    let here = |key: &str| loc.key(key).path;
    for (key, value) in docker.iter() {
        let at = loc.key(key);
        match key {
            "image" => out.image = read_image(value, &at, &here(key), log),
            "containerPrefix" => log.with(&at, Status::Ignored, value, "stockade names its own containers (labelled stockade.*)"),
            "workdir" => match non_empty_str(value) {
                Some(w) if w.starts_with('/') => {
                    out.workdir = Some(Field::new(w.to_string(), here(key)));
                    log.with(&at, Status::Mapped, value, "workdir");
                }
                _ => log.invalid(&at, value, "an absolute path", "workdir = \"/workspace\""),
            },
            "readOnlyRoot" => match value.as_bool() {
                Some(true) => {
                    out.read_only_root = Some(Field::new(true, here(key)));
                    log.with(&at, Status::Mapped, value, "read_only_root = true");
                }
                Some(false) => {
                    out.read_only_root = Some(Field::new(true, format!("{} false: written as true", here(key))));
                    log.with(&at, Status::Approximated, value, "written as read_only_root = true (stricter): a writable root lets one command change binaries and libraries for the next; writable paths are the [tmpfs] entries. If a workload needs it, set read_only_root = false in the profile yourself (lint flags it: root-writable)");
                }
                None => log.invalid(&at, value, "a boolean", "read_only_root = true"),
            },
            "tmpfs" => out.tmpfs = read_tmpfs(value, &at, &here(key), log),
            "network" => out.network = read_network(value, &at, &here(key), docker, log),
            "user" => out.user = read_user(value, &at, &here(key), host, log),
            "capDrop" => read_cap_drop(value, &at, log),
            "env" => out.env = read_env(value, &at, log),
            "setupCommand" => log.hidden(&at, Status::Ignored, "stockade runs no command when a sandbox starts: bake it into the image, or run it once in a session (`stockade exec --session NAME -- '...'`; package installs need the elevated profile: `--elevated` with allow_elevation = true); not shown, as it may carry credentials"),
            "pidsLimit" => match value.as_number().and_then(Number::as_i64) {
                Some(n) if (1..=MAX_PIDS).contains(&n) => {
                    out.pids = Some(Field::new(n, here(key)));
                    log.with(&at, Status::Mapped, value, "limits.pids");
                }
                Some(n) if n > MAX_PIDS => {
                    out.pids = Some(Field::new(MAX_PIDS, format!("{}: capped", here(key))));
                    log.with(&at, Status::Approximated, value, format!("limits.pids = {MAX_PIDS}, stockade's largest"));
                }
                _ => log.invalid(&at, value, "a whole number > 0", &format!("limits.pids = {}", draft::DEFAULT_PIDS)),
            },
            "memory" => match docker_bytes(value) {
                Some(bytes) if bytes >= MIN_MEMORY => {
                    let size = profile::human_size(bytes);
                    out.memory = Some(Field::new(size.clone(), here(key)));
                    log.with(&at, Status::Mapped, value, format!("limits.memory = \"{size}\" (swap off)"));
                }
                Some(_) => log.invalid(&at, value, "at least 6m (Docker's minimum)", &format!("limits.memory = \"{}\"", draft::DEFAULT_MEMORY)),
                None => log.invalid(&at, value, "a size such as \"1g\" or a number of bytes", &format!("limits.memory = \"{}\"", draft::DEFAULT_MEMORY)),
            },
            "memorySwap" => {
                let same = docker_bytes(value).is_some() && docker_bytes(value) == docker.get("memory").and_then(docker_bytes);
                if same {
                    log.with(&at, Status::Mapped, value, "equal to memory, so no swap: stockade always sets memory-swap = memory");
                } else {
                    log.with(&at, Status::Approximated, value, "stockade gives sandboxes no swap (memory-swap = memory): stricter");
                }
            }
            "cpus" => match value.as_number().map(Number::as_f64) {
                Some(c) if c.is_finite() && c > 0.0 && c <= MAX_CPUS => {
                    out.cpus = Some(Field::new(c, here(key)));
                    log.with(&at, Status::Mapped, value, "limits.cpus");
                }
                Some(c) if c.is_finite() && c > MAX_CPUS => {
                    out.cpus = Some(Field::new(MAX_CPUS, format!("{}: capped", here(key))));
                    log.with(&at, Status::Approximated, value, "limits.cpus = 1024.0, stockade's largest");
                }
                _ => log.invalid(&at, value, "a number > 0", "limits.cpus = 1.0"),
            },
            "gpus" => log.with(&at, Status::Ignored, value, "stockade gives sandboxes no devices, GPUs included (stricter)"),
            "ulimits" => match value.as_object() {
                Some(limits) => {
                    for (name, v) in limits.iter() {
                        let reason = if name == "nproc" {
                            "stockade profiles set no rlimits; the number of processes is bounded by limits.pids for the whole sandbox"
                        } else {
                            "stockade profiles set no rlimits: the engine's default applies (limits.memory and limits.pids still bound the sandbox)"
                        };
                        log.with(&at.key(name), Status::Approximated, v, reason);
                    }
                    if limits.is_empty() {
                        log.with(&at, Status::Mapped, value, "no rlimits");
                    }
                }
                None => log.invalid(&at, value, "an object", "no rlimits"),
            },
            "seccompProfile" => out.seccomp = Some(read_seccomp(value, &at, &here(key), log)?),
            "apparmorProfile" => match value.as_str() {
                Some(p) if p.eq_ignore_ascii_case("unconfined") => log.with(&at, Status::Refused, value, "AppArmor \"unconfined\" removes the sandbox's mandatory access control (OpenClaw rejects it at load); stockade always runs under the engine's default AppArmor profile, which --allow-unsafe keeps"),
                Some("docker-default") => log.with(&at, Status::Mapped, value, "the engine's default AppArmor profile, which stockade's sandboxes run under where AppArmor is enabled"),
                Some(_) => log.with(&at, Status::Approximated, value, "stockade cannot name an AppArmor profile: the engine's default (docker-default, where AppArmor is enabled) applies; seccomp, dropped capabilities and no-new-privileges confine the sandbox as well"),
                None => log.invalid(&at, value, "a profile name", "the engine's default"),
            },
            "dns" => log.with(&at, Status::Ignored, value, "stockade profiles set no DNS servers: the engine's resolver applies (moot with network = \"none\")"),
            "extraHosts" => log.with(&at, Status::Ignored, value, "stockade profiles add no /etc/hosts entries (moot with network = \"none\")"),
            "binds" => match value.as_array() {
                Some(items) if items.len() > MAX_BINDS => log.hidden(&at, Status::Refused, format!("more than {MAX_BINDS} binds; --allow-unsafe drops them all")),
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str() {
                            Some(spec) => out.binds.push(BindIn { loc: at.index(i), spec: spec.to_string() }),
                            None => log.invalid(&at.index(i), item, "a string host:container[:mode]", "no bind"),
                        }
                    }
                    if items.is_empty() {
                        log.with(&at, Status::Mapped, value, "no binds");
                    }
                }
                None => log.invalid(&at, value, "an array of binds", "no binds"),
            },
            "dangerouslyAllowExternalBindSources" => {
                out.allow_external = value.as_bool();
                opt_in(value, &at, log, "stockade has no allowed-roots rule to lift: every bind is listed in the profile and checked at load; the flag only decides which of the binds below OpenClaw accepted");
            }
            "dangerouslyAllowReservedContainerTargets" => {
                out.allow_reserved = value.as_bool();
                opt_in(value, &at, log, "stockade reserves no bind targets besides /, /proc, /sys and /dev; the flag only decides which of the binds below OpenClaw accepted");
            }
            "dangerouslyAllowContainerNamespaceJoin" => opt_in(value, &at, log, "stockade never joins another container's namespaces, whatever the config says"),
            _ => log.unknown(&at, "sandbox.docker"),
        }
    }
    Ok(out)
}

fn opt_in(value: &Value, at: &Loc, log: &mut Log, reason: &str) {
    if value.as_bool().is_some() {
        log.with(at, Status::Ignored, value, reason);
    } else {
        log.invalid(at, value, "a boolean", "no opt-in");
    }
}

fn read_image(value: &Value, at: &Loc, from: &str, log: &mut Log) -> Option<Field<String>> {
    let Some(image) = non_empty_str(value) else {
        log.invalid(at, value, "an image name", "stockade's base image");
        return None;
    };
    if let Some((_, era)) = OPENCLAW_IMAGES.iter().find(|(i, _)| *i == image) {
        log.with(at, Status::Approximated, value, format!(
            "{era} default sandbox image (Debian bookworm-slim plus its setup script): written as stockade's base image ({BASE_IMAGE}, built offline by `stockade image build`); to keep the old one, set image to it (it must be present in the engine)"
        ));
        return Some(Field::new(
            BASE_IMAGE.to_string(),
            format!("{from} {image:?}: stockade's base image instead"),
        ));
    }
    let ok = image.len() <= 256
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | ':' | '.' | '_' | '-' | '@'));
    if !ok {
        log.invalid(at, value, "an image reference", "stockade's base image");
        return None;
    }
    log.with(
        at,
        Status::Mapped,
        value,
        "image; stockade never pulls, so it must be present in the engine (`docker pull` it first)",
    );
    Some(Field::new(image.to_string(), from.to_string()))
}

fn read_tmpfs(value: &Value, at: &Loc, from: &str, log: &mut Log) -> Option<Field<Vec<Tmpfs>>> {
    let Some(items) = value.as_array() else {
        log.invalid(at, value, "an array of paths", "the default tmpfs mounts");
        return None;
    };
    if items.is_empty() {
        log.with(
            at,
            Status::Mapped,
            value,
            "no tmpfs mounts of OpenClaw's (the workspace still gets one, below)",
        );
    }
    let mut mounts: Vec<Tmpfs> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = at.index(i);
        let Some(spec) = item.as_str() else {
            log.invalid(&at, item, "a path[:options] string", "no mount");
            continue;
        };
        let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
        if !path.starts_with('/') || path == "/" {
            log.invalid(&at, item, "an absolute path other than /", "no mount");
            continue;
        }
        if mounts.iter().any(|m| m.path == path) {
            log.with(
                &at,
                Status::Ignored,
                item,
                "a second tmpfs at the same path: the first is kept",
            );
            continue;
        }
        let mut size = None;
        let mut exec = false;
        let mut notes = Vec::new();
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match option.split_once('=') {
                Some(("size", s)) => match docker_bytes(&Value::String(s.to_string())) {
                    Some(bytes) if bytes > 0 => size = Some(profile::human_size(bytes)),
                    _ => notes.push(format!("size {s:?} unreadable")),
                },
                Some((name, _)) => notes.push(format!("`{name}=` dropped (stockade's tmpfs mounts are mode 1777, owned by the sandbox user)")),
                None => match option {
                    "exec" => exec = true,
                    "noexec" | "rw" | "nosuid" | "nodev" => {}
                    other => notes.push(format!("`{other}` dropped (stockade's tmpfs mounts are always rw,nosuid,nodev)")),
                },
            }
        }
        let sized = size.clone().unwrap_or_else(|| TMPFS_SIZE.to_string());
        if size.is_none() {
            notes.insert(0, format!("size {TMPFS_SIZE}: Docker's tmpfs has no size unless given (half the host's RAM), stockade's needs one"));
        }
        let shown = if exec { format!("{sized},exec") } else { sized };
        let status = if notes.is_empty() {
            Status::Mapped
        } else {
            Status::Approximated
        };
        log.with(
            &at,
            status,
            item,
            format!(
                "tmpfs {path} = \"{shown}\"{}{}",
                if notes.is_empty() { "" } else { "; " },
                notes.join("; ")
            ),
        );
        mounts.push(Tmpfs {
            path: path.to_string(),
            size: shown,
        });
    }
    Some(Field::new(mounts, from.to_string()))
}

fn read_network(
    value: &Value,
    at: &Loc,
    from: &str,
    docker: &Object,
    log: &mut Log,
) -> Option<Field<String>> {
    let none = |why: &str| {
        Some(Field::new(
            "none".to_string(),
            format!(
                "{from} {}: refused, {why}",
                crate::migrate::openclaw::log::show(value)
            ),
        ))
    };
    match value.as_str() {
        Some("none") => {
            log.with(at, Status::Mapped, value, "network = \"none\"");
            Some(Field::new("none".to_string(), from.to_string()))
        }
        Some(n) if n.eq_ignore_ascii_case("host") => {
            log.with(at, Status::Refused, value, "network \"host\" shares the host's network stack: the sandbox reaches every local service and the host's interfaces (OpenClaw rejects it at load; stockade refuses it at load); --allow-unsafe writes network = \"none\"");
            none("written as none")
        }
        Some(n) if n.to_ascii_lowercase().starts_with("container:") => {
            let flag = docker
                .get("dangerouslyAllowContainerNamespaceJoin")
                .and_then(Value::as_bool)
                == Some(true);
            log.with(at, Status::Refused, value, format!(
                "joins another container's network namespace, and with it whatever that container reaches{}; stockade never does (refused at load); --allow-unsafe writes network = \"none\"",
                if flag { " (OpenClaw accepted it only because of dangerouslyAllowContainerNamespaceJoin, and its audit still flags it)" } else { " (OpenClaw rejects it at load without dangerouslyAllowContainerNamespaceJoin)" }
            ));
            none("written as none")
        }
        Some(n)
            if !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            log.with(at, Status::Mapped, value, format!("network = {n:?}: the sandbox can reach the network (lint: network-enabled); the network must exist in the engine"));
            Some(Field::new(n.to_string(), from.to_string()))
        }
        _ => {
            log.invalid(at, value, "a network name", "network = \"none\"");
            none("written as none")
        }
    }
}

fn read_user(
    value: &Value,
    at: &Loc,
    from: &str,
    host: &Host,
    log: &mut Log,
) -> Option<Field<String>> {
    let Some(user) = non_empty_str(value) else {
        log.invalid(at, value, "uid, uid:gid or a name", SANDBOX_USER);
        return None;
    };
    let sandbox = |why: &str| {
        Some(Field::new(
            SANDBOX_USER.to_string(),
            format!("{from} {user:?}: {why}"),
        ))
    };
    let Ok((uid, gid)) = crate::profile::parse_user(user) else {
        log.with(at, Status::Approximated, value, format!(
            "a user name depends on the image and stockade takes numeric ids only: written as {SANDBOX_USER}, stockade's sandbox user (no host account)"
        ));
        return sandbox("a name, written as the sandbox user");
    };
    if uid == 0 || gid == 0 {
        log.with(at, Status::Approximated, value, format!(
            "root (uid 0) or the root group: written as {SANDBOX_USER} (stricter). Root in a stockade sandbox needs an elevated profile, allowed only by allow_elevation = true in config.toml; package installs (setupCommand) belong in `stockade exec --elevated`"
        ));
        return sandbox("root, written as the sandbox user");
    }
    match crate::profile::check_user(&format!("{uid}:{gid}"), false, &host.engine_sockets) {
        Err(why) => {
            log.with(
                at,
                Status::Refused,
                value,
                format!("stockade refuses it: {why}; --allow-unsafe writes {SANDBOX_USER}"),
            );
            sandbox("refused, written as the sandbox user")
        }
        Ok(warnings) if warnings.is_empty() => {
            log.with(at, Status::Mapped, value, format!("user = \"{uid}:{gid}\""));
            Some(Field::new(format!("{uid}:{gid}"), from.to_string()))
        }
        Ok(warnings) => {
            log.with(
                at,
                Status::Mapped,
                value,
                format!("user = \"{uid}:{gid}\"; {}", warnings.join("; ")),
            );
            Some(Field::new(format!("{uid}:{gid}"), from.to_string()))
        }
    }
}

fn read_cap_drop(value: &Value, at: &Loc, log: &mut Log) {
    let Some(items) = value.as_array() else {
        log.invalid(
            at,
            value,
            "an array of capability names",
            "drop = [\"ALL\"]",
        );
        return;
    };
    let all = items
        .iter()
        .any(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case("ALL")));
    if all {
        log.with(at, Status::Mapped, value, "capabilities.drop = [\"ALL\"]");
    } else {
        log.with(at, Status::Approximated, value, "written as capabilities.drop = [\"ALL\"] (stricter): without ALL, Docker's default capabilities (CHOWN, DAC_OVERRIDE, FOWNER, SETUID, SETGID, NET_RAW...) stay in the sandbox; add back the few a workload needs in [capabilities] add");
    }
}

fn read_env(value: &Value, at: &Loc, log: &mut Log) -> Option<Vec<EnvVar>> {
    let Some(vars) = value.as_object() else {
        log.invalid(at, value, "an object of NAME: value", "no variables");
        return None;
    };
    let mut out = Vec::new();
    for (name, v) in vars.iter() {
        let at = at.key(name);
        let Some(text) = v.as_str() else {
            log.hidden(&at, Status::Refused, format!("not a valid value: expected a string, found {} (OpenClaw rejects the file at load); --allow-unsafe leaves it out", v.kind()));
            continue;
        };
        if !env_name_ok(name) {
            log.hidden(
                &at,
                Status::Ignored,
                "not a variable name stockade's env_allow can hold (letters, digits, _)",
            );
            continue;
        }
        let secret = looks_secret(name, text);
        if secret {
            log.hidden(&at, Status::Ignored, format!(
                "looks like a secret: never written to a profile (profiles hold no values, and OpenClaw passed it to `docker create --env`, visible to `docker inspect`). Store it encrypted with `stockade secret set {name}` (value on stdin) and give it to the commands that need it with `stockade exec --secret {name}`"
            ));
        } else {
            log.hidden(&at, Status::Approximated, format!(
                "profiles hold no values: {name} is allowed in env_allow, so `stockade exec --env {name}=...` may set it per command (value not shown)"
            ));
        }
        out.push(EnvVar {
            name: name.to_string(),
            secret,
        });
    }
    Some(out)
}

fn read_seccomp(
    value: &Value,
    at: &Loc,
    from: &str,
    log: &mut Log,
) -> Result<Field<Seccomp>, MigrateError> {
    let default = |why: String| Field::new(Seccomp::Builtin(DEFAULT_SECCOMP), why);
    let Some(reference) = non_empty_str(value) else {
        log.invalid(at, value, "a path to a seccomp JSON file", DEFAULT_SECCOMP);
        return Ok(default(format!(
            "{from}: not a path, stockade's default instead"
        )));
    };
    if reference.eq_ignore_ascii_case("unconfined") {
        log.with(at, Status::Refused, value, format!(
            "seccomp \"unconfined\" turns syscall filtering off: mount, unshare, bpf, kernel modules and the rest are open to the sandbox (OpenClaw rejects it at load; stockade refuses it at load); --allow-unsafe writes stockade's default ({DEFAULT_SECCOMP})"
        ));
        return Ok(default(format!(
            "{from} \"unconfined\": refused, stockade's default instead"
        )));
    }
    let path = Path::new(reference);
    if !path.is_absolute() {
        return Err(MigrateError::Seccomp {
            key: at.path.clone(),
            path: reference.to_string(),
            problem: "not an absolute path: OpenClaw handed it to `docker create`, which resolved it against the gateway's working directory; give the file's absolute path".to_string(),
        });
    }
    let json = read_seccomp_file(path).map_err(|problem| MigrateError::Seccomp {
        key: at.path.clone(),
        path: reference.to_string(),
        problem,
    })?;
    seccomp::load_profile_json(&json, &seccomp::LoadOptions::default()).map_err(|e| {
        MigrateError::Seccomp {
            key: at.path.clone(),
            path: reference.to_string(),
            problem: format!("stockade's seccomp loader refuses it: {e}"),
        }
    })?;
    log.with(at, Status::Mapped, value, "copied beside the profiles (profiles/seccomp/) after stockade's seccomp loader validated it");
    Ok(Field::new(
        Seccomp::Copied {
            key: at.path.clone(),
            source: PathBuf::from(reference),
            file_name: String::new(),
            json,
        },
        from.to_string(),
    ))
}

fn read_seccomp_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| {
        format!("cannot read it ({e}); the profile it names must be read to judge it: copy it to this host or fix the path")
    })?;
    let mut text = String::new();
    file.take(seccomp::MAX_PROFILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() > seccomp::MAX_PROFILE_BYTES {
        return Err(format!("larger than {} bytes", seccomp::MAX_PROFILE_BYTES));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name_and_value() {
        for (name, value) in [
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("GH_TOKEN", "x"),
            ("OPENAI_API_KEY", "x"),
            ("DB_PASSWORD", "x"),
            ("HTTP_PROXY", "http://user:pw@proxy:3128"),
            ("SOMETHING", "ghp_abc"),
        ] {
            assert!(looks_secret(name, value), "{name}");
        }
        for (name, value) in [
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("HTTP_PROXY", "http://10.0.0.2:3128"),
            ("NO_PROXY", "wiki.internal"),
            ("KEYBOARD_LAYOUT", "us"),
        ] {
            assert!(!looks_secret(name, value), "{name}");
        }
    }

    #[test]
    fn docker_sizes_are_read_like_docker() {
        let s = |t: &str| docker_bytes(&Value::String(t.into()));
        assert_eq!(s("1g"), Some(1 << 30));
        assert_eq!(s("1GB"), Some(1 << 30));
        assert_eq!(s("512m"), Some(512 << 20));
        assert_eq!(s("1.5g"), Some(3 << 29));
        assert_eq!(s("1024"), Some(1024));
        assert_eq!(s("lots"), None);
        assert_eq!(s("1x"), None);
        assert_eq!(
            docker_bytes(&Value::Number(Number::Uint(1 << 30))),
            Some(1 << 30)
        );
        assert_eq!(docker_bytes(&Value::Number(Number::Int(-1))), None);
    }
}
