//! Sandbox profiles: a TOML file per profile, validated completely at load.
//!
//! A profile that loads is a profile that is safe to apply: every check happens here, none when
//! the container is created. See docs/profiles.md for the format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::Policy;
use crate::seccomp;

mod binds;
mod cache;
mod user;

pub use user::User;

pub use binds::{RUNTIME_DIRS, RUNTIME_SOCKETS};
pub use cache::ProfileCache;

/// Profiles shipped inside the binary: (name, TOML text).
const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../../profiles/default.toml")),
    ("elevated", include_str!("../../profiles/elevated.toml")),
];

/// Seccomp files shipped inside the binary, by their path relative to `profiles/`.
const BUILTIN_SECCOMP: &[(&str, &str)] = &[
    (
        "seccomp/default.json",
        include_str!("../../profiles/seccomp/default.json"),
    ),
    (
        "seccomp/docker-default.json",
        include_str!("../../profiles/seccomp/docker-default.json"),
    ),
];

/// The image name that stands for stockade's own base image at this version.
pub const BASE_IMAGE_ALIAS: &str = "stockade/base";

/// Profile files larger than this are refused before parsing.
const MAX_PROFILE_BYTES: u64 = 256 * 1024;
/// Seccomp files larger than this are refused before parsing.
const MAX_SECCOMP_BYTES: u64 = 4 * 1024 * 1024;
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_OUTPUT_CAP: u64 = 1 << 30;
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Host paths a profile may never bind into a sandbox (nor anything below them).
const FORBIDDEN_BIND_SOURCES: &[&str] = &["/proc", "/sys", "/dev", "/etc", "/boot"];
/// Container paths a bind may not cover.
const FORBIDDEN_BIND_TARGETS: &[&str] = &["/", "/proc", "/sys", "/dev"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("unknown profile {name:?}: no file {name}.toml in {searched}, and no built-in profile of that name (built-in: default, elevated)")]
    NotFound { name: String, searched: String },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: larger than {limit} bytes")]
    TooLarge { file: String, limit: u64 },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: field `{field}`: {problem}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
    },
}

/// Where named profiles are looked up, in order (built-in profiles come last), and what the
/// face knows of this host that profile checks need.
#[derive(Debug, Clone, Default)]
pub struct ProfileDirs {
    pub dirs: Vec<PathBuf>,
    /// Engine sockets beyond the well-known ones (a `DOCKER_HOST=unix://...`): binding them,
    /// or running as their owner, is refused like the well-known ones.
    pub engine_sockets: Vec<PathBuf>,
}

impl ProfileDirs {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        ProfileDirs {
            dirs,
            engine_sockets: Vec::new(),
        }
    }
}

/// A tmpfs mount inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tmpfs {
    pub path: String,
    pub size_bytes: u64,
    pub mode: u32,
    /// Whether programs may be executed from it (the engine's default is `noexec`).
    pub exec: bool,
}

/// A host path bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub source: String,
    pub target: String,
    #[serde(default = "default_true")]
    pub read_only: bool,
}

/// The seccomp profile a sandbox runs under: the file as read, and as validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeccompPolicy {
    /// Where it was read from (`builtin:` prefix for files shipped in the binary).
    pub path: PathBuf,
    /// The file's contents, passed to the engine unchanged.
    #[serde(skip)]
    pub json: String,
    /// The same, parsed and checked at load (every name known, every rule compiling).
    #[serde(skip)]
    pub parsed: seccomp::SeccompProfile,
}

impl SeccompPolicy {
    /// Loads and validates seccomp JSON from `path` (for messages) and `json`.
    pub fn from_json(path: PathBuf, json: String) -> Result<SeccompPolicy, seccomp::SeccompError> {
        let parsed = seccomp::load_profile_json(&json, &seccomp::LoadOptions::default())?;
        Ok(SeccompPolicy { path, json, parsed })
    }
}

/// A validated sandbox profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub name: String,
    /// The file it was loaded from (`builtin:NAME` for built-in profiles).
    pub source: String,
    pub description: String,
    /// The image reference after resolving the `stockade/base` alias.
    pub image: String,
    pub user: User,
    pub workdir: String,
    pub read_only_root: bool,
    pub tmpfs: Vec<Tmpfs>,
    pub network: String,
    /// Canonical `CAP_*` names, or `ALL`.
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: std::sync::Arc<SeccompPolicy>,
    pub pids_limit: i64,
    pub memory_bytes: i64,
    pub cpus: f64,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    #[serde(with = "duration_ms")]
    pub kill_grace: Duration,
    pub output_cap: u64,
    pub env_allow: Vec<String>,
    pub binds: Vec<Bind>,
    pub elevated: bool,
    pub policy: Policy,
    /// The `[unsafe]` opt-outs this profile takes (audited with every execution under it).
    pub unsafe_opt_outs: Vec<String>,
    /// Things that load but deserve a look (printed by `exec`, `profile show` and lint).
    pub warnings: Vec<String>,
}

/// `[unsafe]`: explicit, loudly named opt-outs from refusals at load. Each one used is named in
/// `profile show`, scored by lint and recorded in every audit start under the profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnsafe {
    /// Run under a seccomp profile whose default action allows, or that allows syscalls lint
    /// rates critical (mount, unshare, bpf, kernel modules...).
    #[serde(default)]
    permissive_seccomp: bool,
    /// Grant capabilities lint rates critical (SYS_ADMIN, SYS_MODULE, SYS_PTRACE...).
    #[serde(default)]
    dangerous_capabilities: bool,
}

/// The opt-out names, as written in `[unsafe]`.
pub const UNSAFE_PERMISSIVE_SECCOMP: &str = "permissive_seccomp";
pub const UNSAFE_DANGEROUS_CAPABILITIES: &str = "dangerous_capabilities";

impl Profile {
    /// What [`load`] takes to load this profile again: its file's path, or a built-in's name.
    pub fn reference(&self) -> String {
        match self.source.strip_prefix("builtin:") {
            Some(name) => name.to_string(),
            None => self.source.clone(),
        }
    }

    /// The capabilities a process in the sandbox ends up with: Docker's defaults, minus drops,
    /// plus adds (the order dockerd applies them).
    pub fn effective_caps(&self) -> BTreeSet<String> {
        seccomp::caps::effective(&self.cap_drop, &self.cap_add)
    }

    /// Whether `name` may be set with `--env`.
    pub fn env_allowed(&self, name: &str) -> bool {
        self.env_allow
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pattern == name,
            })
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    description: String,
    image: String,
    user: String,
    workdir: String,
    read_only_root: bool,
    network: String,
    #[serde(default = "default_true")]
    no_new_privileges: bool,
    #[serde(default)]
    elevated: bool,
    seccomp: String,
    #[serde(default)]
    env_allow: Vec<String>,
    #[serde(default)]
    tmpfs: BTreeMap<String, String>,
    capabilities: RawCapabilities,
    limits: RawLimits,
    #[serde(default)]
    binds: Vec<Bind>,
    #[serde(default)]
    policy: Policy,
    #[serde(default, rename = "unsafe")]
    unsafe_: RawUnsafe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    drop: Vec<String>,
    #[serde(default)]
    add: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    pids: i64,
    memory: String,
    cpus: f64,
    timeout: String,
    #[serde(default)]
    kill_grace: Option<String>,
    output_cap: String,
}

const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// Load a profile by name (searched in `dirs`, then built in) or by path (contains `/` or ends
/// in `.toml`).
pub fn load(name_or_path: &str, dirs: &ProfileDirs) -> Result<Profile, ProfileError> {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return load_file_with(Path::new(name_or_path), &dirs.engine_sockets);
    }
    if !is_valid_name(name_or_path) {
        return Err(ProfileError::NotFound {
            name: name_or_path.to_string(),
            searched: "(profile names are letters, digits, '-', '_' and '.')".to_string(),
        });
    }
    for dir in &dirs.dirs {
        let candidate = dir.join(format!("{name_or_path}.toml"));
        if candidate.exists() {
            return load_file_with(&candidate, &dirs.engine_sockets);
        }
    }
    match BUILTIN_PROFILES.iter().find(|(n, _)| *n == name_or_path) {
        Some((name, text)) => parse(
            name,
            &format!("builtin:{name}"),
            text,
            None,
            &dirs.engine_sockets,
        ),
        None => Err(ProfileError::NotFound {
            name: name_or_path.to_string(),
            searched: if dirs.dirs.is_empty() {
                "no profile directory".to_string()
            } else {
                dirs.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// Names of every profile reachable from `dirs` plus the built-in ones.
pub fn list(dirs: &ProfileDirs) -> Vec<String> {
    let mut names: BTreeSet<String> = BUILTIN_PROFILES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    for dir in &dirs.dirs {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        names.insert(stem.to_string());
                    }
                }
            }
        }
    }
    names.into_iter().collect()
}

/// Whether `name` is a profile name (looked up in the profile directories and the built-in
/// profiles), not a path to a file: what a remote caller may name.
pub fn is_name(name: &str) -> bool {
    is_valid_name(name) && !name.ends_with(".toml")
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Load and validate one profile file.
pub fn load_file(path: &Path) -> Result<Profile, ProfileError> {
    load_file_with(path, &[])
}

fn load_file_with(path: &Path, engine_sockets: &[PathBuf]) -> Result<Profile, ProfileError> {
    let file = path.display().to_string();
    let text = read_capped(path, MAX_PROFILE_BYTES)?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("profile")
        .to_string();
    parse(
        &name,
        &file,
        &text,
        Some(path.parent().unwrap_or(Path::new("."))),
        engine_sockets,
    )
}

fn read_capped(path: &Path, limit: u64) -> Result<String, ProfileError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ProfileError::Read {
        file: file.clone(),
        source,
    })?;
    if meta.len() > limit {
        return Err(ProfileError::TooLarge { file, limit });
    }
    std::fs::read_to_string(path).map_err(|source| ProfileError::Read { file, source })
}

/// Parse and validate profile text. `base_dir` is where relative seccomp paths resolve;
/// `None` means the built-in files.
pub fn parse(
    name: &str,
    file: &str,
    text: &str,
    base_dir: Option<&Path>,
    engine_sockets: &[PathBuf],
) -> Result<Profile, ProfileError> {
    let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Syntax {
        file: file.to_string(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    let invalid = |field: &str, problem: String| ProfileError::Invalid {
        file: file.to_string(),
        field: field.to_string(),
        problem,
    };

    let image = validate_image(&raw.image).map_err(|p| invalid("image", p))?;
    let runtime = binds::Runtime::probe(engine_sockets);
    let (user, mut warnings) =
        user::check(&raw.user, raw.elevated, &runtime).map_err(|p| invalid("user", p))?;
    if !raw.workdir.starts_with('/') {
        return Err(invalid(
            "workdir",
            format!("{:?} must be an absolute path", raw.workdir),
        ));
    }
    validate_network(&raw.network).map_err(|p| invalid("network", p))?;
    if !raw.no_new_privileges {
        return Err(invalid(
            "no_new_privileges",
            "must be true: without it a setuid binary in the image regains privileges".to_string(),
        ));
    }

    let cap_drop = raw
        .capabilities
        .drop
        .iter()
        .map(|c| canonical_cap(c, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid("capabilities.drop", p))?;
    let cap_add = raw
        .capabilities
        .add
        .iter()
        .map(|c| canonical_cap(c, false))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid("capabilities.add", p))?;

    let tmpfs = raw
        .tmpfs
        .iter()
        .map(|(path, size)| {
            if !path.starts_with('/') || path == "/" {
                return Err(invalid(
                    "tmpfs",
                    format!("{path:?} must be an absolute path other than /"),
                ));
            }
            let field = format!("tmpfs.\"{path}\"");
            let (size, exec) = match size.split_once(',') {
                None => (size.as_str(), false),
                Some((size, "exec")) => (size, true),
                Some((size, "noexec")) => (size, false),
                Some((_, other)) => {
                    return Err(invalid(
                        &field,
                        format!("{other:?}: the only option is exec or noexec"),
                    ))
                }
            };
            let size_bytes = parse_size(size).map_err(|p| invalid(&field, p))?;
            Ok(Tmpfs {
                path: path.clone(),
                size_bytes,
                mode: 0o1777,
                exec,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    for bind in &raw.binds {
        validate_bind(bind).map_err(|p| invalid("binds", p))?;
        warnings.extend(
            binds::check_source(Path::new(&bind.source), &runtime)
                .map_err(|p| invalid("binds", p))?,
        );
    }

    let limits = &raw.limits;
    if limits.pids <= 0 || limits.pids > 1_000_000 {
        return Err(invalid(
            "limits.pids",
            format!("{} is not in 1..=1000000", limits.pids),
        ));
    }
    let memory = parse_size(&limits.memory).map_err(|p| invalid("limits.memory", p))?;
    if memory < MIN_MEMORY {
        return Err(invalid(
            "limits.memory",
            format!("{} is below the engine's minimum of 6m", limits.memory),
        ));
    }
    let memory_bytes =
        i64::try_from(memory).map_err(|_| invalid("limits.memory", "too large".to_string()))?;
    let max_cpus = 1024.0;
    if !(limits.cpus > 0.0 && limits.cpus <= max_cpus) {
        return Err(invalid(
            "limits.cpus",
            format!("{} is not in (0, 1024]", limits.cpus),
        ));
    }
    let timeout = parse_duration(&limits.timeout).map_err(|p| invalid("limits.timeout", p))?;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(invalid(
            "limits.timeout",
            format!("{} is not in (0, 24h]", limits.timeout),
        ));
    }
    let kill_grace = match &limits.kill_grace {
        Some(g) => parse_duration(g).map_err(|p| invalid("limits.kill_grace", p))?,
        None => DEFAULT_KILL_GRACE,
    };
    if kill_grace > Duration::from_secs(60) {
        return Err(invalid(
            "limits.kill_grace",
            "must be at most 60s".to_string(),
        ));
    }
    let output_cap = parse_size(&limits.output_cap).map_err(|p| invalid("limits.output_cap", p))?;
    if output_cap == 0 || output_cap > MAX_OUTPUT_CAP {
        return Err(invalid(
            "limits.output_cap",
            format!("{} is not in (0, 1g]", limits.output_cap),
        ));
    }

    for pattern in &raw.env_allow {
        let stem = pattern.strip_suffix('*').unwrap_or(pattern);
        if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                "env_allow",
                format!("{pattern:?} is not a variable name (optionally ending in *)"),
            ));
        }
    }

    let seccomp = load_seccomp(&raw.seccomp, base_dir).map_err(|p| invalid("seccomp", p))?;
    let caps = seccomp::caps::effective(&cap_drop, &cap_add);
    let mut unsafe_opt_outs = Vec::new();
    let critical_caps: Vec<String> = seccomp::lint_caps(&caps)
        .into_iter()
        .filter(|f| f.severity == seccomp::Severity::Critical)
        .map(|f| f.subject)
        .collect();
    if !critical_caps.is_empty() {
        if !raw.unsafe_.dangerous_capabilities {
            return Err(invalid(
                "capabilities.add",
                format!(
                    "{} would let the sandbox reach the host (mounts, namespaces, kernel modules, \
                     other processes); remove them, or set `[unsafe] {UNSAFE_DANGEROUS_CAPABILITIES} \
                     = true` to run such a sandbox anyway (audited)",
                    critical_caps.join(", ")
                ),
            ));
        }
        unsafe_opt_outs.push(UNSAFE_DANGEROUS_CAPABILITIES.to_string());
    }
    let permissive = permissive_seccomp(&seccomp.parsed, &caps);
    if !permissive.is_empty() {
        if !raw.unsafe_.permissive_seccomp {
            return Err(invalid(
                "seccomp",
                format!(
                    "{}: {}: a sandbox under it is unconfined in all but name. Start from \
                     seccomp/default.json (deny by default), or set `[unsafe] \
                     {UNSAFE_PERMISSIVE_SECCOMP} = true` to run it anyway (audited)",
                    seccomp.path.display(),
                    permissive.join("; ")
                ),
            ));
        }
        unsafe_opt_outs.push(UNSAFE_PERMISSIVE_SECCOMP.to_string());
    }

    Ok(Profile {
        name: name.to_string(),
        source: file.to_string(),
        description: raw.description,
        image,
        user,
        workdir: raw.workdir,
        read_only_root: raw.read_only_root,
        tmpfs,
        network: raw.network,
        cap_drop,
        cap_add,
        no_new_privileges: raw.no_new_privileges,
        seccomp: std::sync::Arc::new(seccomp),
        pids_limit: limits.pids,
        memory_bytes,
        cpus: limits.cpus,
        timeout,
        kill_grace,
        output_cap,
        env_allow: raw.env_allow,
        binds: raw.binds,
        elevated: raw.elevated,
        policy: raw.policy,
        unsafe_opt_outs,
        warnings,
    })
}

/// Why a seccomp profile confines nothing that matters, under the sandbox's capabilities on
/// this host: an allowing default action, or critical syscalls allowed (the lint's findings).
fn permissive_seccomp(parsed: &seccomp::SeccompProfile, caps: &BTreeSet<String>) -> Vec<String> {
    let resolved = seccomp::resolve(parsed, caps, seccomp::Arch::host(), seccomp::host_kernel());
    let findings = seccomp::lint_seccomp(&resolved);
    let mut why: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f.id, "seccomp-unconfined" | "seccomp-default-allow"))
        .map(|f| f.message.clone())
        .collect();
    let dangerous: Vec<&str> = findings
        .iter()
        .filter(|f| f.id == "syscall-dangerous" && f.severity == seccomp::Severity::Critical)
        .map(|f| f.subject.as_str())
        .collect();
    if !dangerous.is_empty() {
        why.push(format!(
            "it allows {} (namespaces, mounts, the kernel's own interfaces)",
            dangerous.join(", ")
        ));
    }
    why
}

fn validate_image(image: &str) -> Result<String, String> {
    if image == BASE_IMAGE_ALIAS {
        return Ok(crate::backend::docker::image::base_image_ref());
    }
    let ok = !image.is_empty()
        && image.len() <= 256
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | ':' | '.' | '_' | '-' | '@'));
    if ok {
        Ok(image.to_string())
    } else {
        Err(format!("{image:?} is not an image reference"))
    }
}

fn validate_network(network: &str) -> Result<(), String> {
    match network {
        "host" => Err("\"host\" shares the host's network stack; use \"none\"".to_string()),
        n if n.starts_with("container:") => Err(format!(
            "{n:?} joins another container's namespace; use \"none\""
        )),
        "" => Err("must be set (\"none\" for no network)".to_string()),
        n if n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            Ok(())
        }
        n => Err(format!("{n:?} is not a network name")),
    }
}

/// Canonical `CAP_*` name, validated against the kernel's list (via `caps`).
fn canonical_cap(name: &str, allow_all: bool) -> Result<String, String> {
    if name.eq_ignore_ascii_case("ALL") {
        return if allow_all {
            Ok("ALL".to_string())
        } else {
            Err("adding ALL capabilities is never allowed; name each one".to_string())
        };
    }
    let canonical = caps::to_canonical(name);
    caps::Capability::from_str(&canonical)
        .map(|_| canonical)
        .map_err(|_| format!("{name:?} is not a Linux capability"))
}

fn validate_bind(bind: &Bind) -> Result<(), String> {
    let source = Path::new(&bind.source);
    if !source.is_absolute() {
        return Err(format!("source {:?} must be an absolute path", bind.source));
    }
    if !Path::new(&bind.target).is_absolute() {
        return Err(format!("target {:?} must be an absolute path", bind.target));
    }
    // Resolve symlinks so a link to the Docker socket is caught too.
    let resolved = std::fs::canonicalize(source).unwrap_or_else(|_| normalize(source));
    for candidate in [normalize(source), resolved] {
        if candidate == Path::new("/") {
            return Err("source / would expose the whole host filesystem".to_string());
        }
        for forbidden in FORBIDDEN_BIND_SOURCES {
            if candidate.starts_with(forbidden) {
                return Err(format!(
                    "source {:?} is under {forbidden}, which is never bound into a sandbox",
                    bind.source
                ));
            }
        }
        for runtime in RUNTIME_SOCKETS.iter().chain(RUNTIME_DIRS) {
            if candidate.starts_with(runtime) || Path::new(runtime).starts_with(&candidate) {
                return Err(format!(
                    "source {:?} exposes the container runtime ({runtime}): that is root on the host",
                    bind.source
                ));
            }
        }
    }
    let target = normalize(Path::new(&bind.target));
    for forbidden in FORBIDDEN_BIND_TARGETS {
        if target == Path::new(forbidden) || (*forbidden != "/" && target.starts_with(forbidden)) {
            return Err(format!("target {:?} would cover {forbidden}", bind.target));
        }
    }
    Ok(())
}

/// Checks one bind as a profile's `[[binds]]` entry is checked at load (absolute paths, host
/// system trees, runtime sockets and state by identity, sockets below a directory, the source
/// existing). `Ok(warnings)` when it may be bound.
pub fn check_bind(bind: &Bind, engine_sockets: &[PathBuf]) -> Result<Vec<String>, String> {
    validate_bind(bind)?;
    binds::check_source(
        Path::new(&bind.source),
        &binds::Runtime::probe(engine_sockets),
    )
}

/// Parses a profile's `user` (`UID[:GID]`, numeric; GID defaults to UID).
pub fn parse_user(user: &str) -> Result<(u32, u32), String> {
    user::parse(user)
}

/// Checks a `user` value as a profile's is checked at load (numeric, root only when elevated,
/// not the owner or group of a runtime socket). `Ok(warnings)` when it may run.
pub fn check_user(
    user: &str,
    elevated: bool,
    engine_sockets: &[PathBuf],
) -> Result<Vec<String>, String> {
    user::check(user, elevated, &binds::Runtime::probe(engine_sockets)).map(|(_, w)| w)
}

/// Lexical normalization: removes `.` and resolves `..` without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// A seccomp file shipped in the binary, by its path relative to `profiles/` (for example
/// `seccomp/docker-default.json`, the profile `profile record` traces under).
pub fn builtin_seccomp(reference: &str) -> Option<std::sync::Arc<SeccompPolicy>> {
    let (p, text) = BUILTIN_SECCOMP.iter().find(|(p, _)| *p == reference)?;
    // The built-in files load: the test suite loads every one.
    SeccompPolicy::from_json(PathBuf::from(format!("builtin:{p}")), text.to_string())
        .ok()
        .map(std::sync::Arc::new)
}

fn load_seccomp(reference: &str, base_dir: Option<&Path>) -> Result<SeccompPolicy, String> {
    if reference.eq_ignore_ascii_case("unconfined") {
        return Err(
            "\"unconfined\" disables syscall filtering; name a Docker/OCI seccomp JSON file"
                .to_string(),
        );
    }
    // `builtin:seccomp/default.json` names a file shipped in the binary from any profile.
    let (reference, base_dir) = match reference.strip_prefix("builtin:") {
        Some(shipped) => (shipped, None),
        None => (reference, base_dir),
    };
    let (path, json) = match base_dir {
        None => match BUILTIN_SECCOMP.iter().find(|(p, _)| *p == reference) {
            Some((p, text)) => (PathBuf::from(format!("builtin:{p}")), text.to_string()),
            None => return Err(format!("{reference:?} is not a built-in seccomp file")),
        },
        Some(dir) => {
            let path = dir.join(reference);
            let text = read_capped(&path, MAX_SECCOMP_BYTES).map_err(|e| e.to_string())?;
            (path, text)
        }
    };
    let shown = path.display().to_string();
    SeccompPolicy::from_json(path, json).map_err(|e| format!("{shown}: {e}"))
}

/// Parses sizes such as `512`, `64k`, `64m`, `1g` (binary units, case-insensitive, optional `b`/`ib`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{text:?} is not a size (examples: 512k, 64m, 1g)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 512k, 64m, 1g)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses durations such as `500ms`, `30s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (examples: 500ms, 30s, 10m, 1h)");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

impl fmt::Display for Profile {
    /// The effective sandbox, as `profile show` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "profile         {} ({})", self.name, self.source)?;
        if !self.description.is_empty() {
            writeln!(f, "description     {}", self.description)?;
        }
        writeln!(f, "image           {}", self.image)?;
        writeln!(f, "user            {}", self.user)?;
        writeln!(f, "workdir         {}", self.workdir)?;
        writeln!(f, "read-only root  {}", self.read_only_root)?;
        for t in &self.tmpfs {
            writeln!(
                f,
                "tmpfs           {} size={} {}",
                t.path,
                human_size(t.size_bytes),
                if t.exec { "exec" } else { "noexec" }
            )?;
        }
        writeln!(f, "network         {}", self.network)?;
        writeln!(f, "cap drop        {}", self.cap_drop.join(" "))?;
        writeln!(
            f,
            "cap add         {}",
            if self.cap_add.is_empty() {
                "-".to_string()
            } else {
                self.cap_add.join(" ")
            }
        )?;
        let effective: Vec<String> = self.effective_caps().into_iter().collect();
        writeln!(
            f,
            "effective caps  {}",
            if effective.is_empty() {
                "none".to_string()
            } else {
                effective.join(" ")
            }
        )?;
        writeln!(f, "no-new-privs    {}", self.no_new_privileges)?;
        writeln!(f, "seccomp         {}", self.seccomp.path.display())?;
        match seccomp::summarize(self) {
            Ok(summary) => writeln!(f, "                {summary}")?,
            Err(e) => writeln!(f, "                does not load: {e}")?,
        }
        writeln!(f, "pids limit      {}", self.pids_limit)?;
        writeln!(
            f,
            "memory          {} (no swap)",
            human_size(self.memory_bytes as u64)
        )?;
        writeln!(f, "cpus            {}", self.cpus)?;
        writeln!(
            f,
            "timeout         {} ms (kill grace {} ms)",
            self.timeout.as_millis(),
            self.kill_grace.as_millis()
        )?;
        writeln!(
            f,
            "output cap      {} per stream",
            human_size(self.output_cap)
        )?;
        writeln!(f, "env allowed     {}", self.env_allow.join(" "))?;
        for b in &self.binds {
            writeln!(
                f,
                "bind            {} -> {} ({})",
                b.source,
                b.target,
                if b.read_only { "ro" } else { "rw" }
            )?;
        }
        writeln!(f, "elevated        {}", self.elevated)?;
        for opt_out in &self.unsafe_opt_outs {
            writeln!(f, "UNSAFE          [unsafe] {opt_out} = true")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning         {warning}")?;
        }
        write!(
            f,
            "allowed rules   {}",
            if self.policy.allow_rules.is_empty() {
                "-".to_string()
            } else {
                self.policy.allow_rules.join(" ")
            }
        )
    }
}

/// `1048576` -> `1m`; exact binary units only, else bytes.
pub fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "g"), (20, "m"), (10, "k")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests;
