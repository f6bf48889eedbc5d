//! One sandbox as OpenClaw resolves it for an agent (SCHEMA.md section 2: every setting is the
//! agent's, else the global one, else OpenClaw's default; env overlaid; binds concatenated) and
//! what stockade profile that becomes. Binds and the workspace mount are judged here, per
//! profile, because what OpenClaw accepted depends on the agent's workspace and opt-ins.

use std::path::{Path, PathBuf};

use crate::migrate::draft::{
    self, Bind, Draft, Field, Seccomp, Tmpfs, BASE_IMAGE, DEFAULT_ENV_ALLOW, DEFAULT_SECCOMP,
    SANDBOX_USER,
};
use crate::migrate::{Host, Status};

use super::binds::{self, BindRules};
use super::log::{Loc, Log};
use super::sandbox::{Access, DockerIn, EnvVar, SandboxIn, OPENCLAW_TMPFS, TMPFS_SIZE};

/// OpenClaw's agent workspace when none is set.
pub const OPENCLAW_WORKSPACE: &str = "~/.openclaw/workspace";
/// OpenClaw's root of per-scope sandbox workspaces when none is set.
const OPENCLAW_WORKSPACE_ROOT: &str = "~/.openclaw/sandboxes";
/// The tmpfs that stands in for OpenClaw's per-scope workspace copy.
const WORKSPACE_TMPFS: &str = "256m,exec";
/// The home of stockade's base image's sandbox user, writable as in stockade's default profile.
const SANDBOX_HOME: (&str, &str) = ("/home/sandbox", "16m");
/// OpenClaw mounts a read-only workspace's original here.
const AGENT_MOUNT: &str = "/agent";

/// Everything one profile is resolved from.
pub struct Inputs<'a> {
    pub defaults: &'a SandboxIn,
    pub agent: Option<&'a SandboxIn>,
    /// The agent's workspace as written, and where (`None`: OpenClaw's default).
    pub workspace: Option<(String, Loc)>,
    pub timeout: Field<u64>,
    pub host: &'a Host,
    pub exists: &'a dyn Fn(&Path) -> bool,
}

fn pick<T: Clone>(
    agent: Option<&DockerIn>,
    defaults: &DockerIn,
    get: impl Fn(&DockerIn) -> &Option<Field<T>>,
) -> Option<Field<T>> {
    agent
        .and_then(|a| get(a).clone())
        .or_else(|| get(defaults).clone())
}

const UNSET_NO_LIMIT: &str = "unset: OpenClaw sets no limit; stockade's default";

/// Resolves one profile; entries for binds and the workspace go to `log`.
pub fn resolve(inputs: &Inputs<'_>, log: &mut Log) -> Draft {
    let defaults = &inputs.defaults.docker;
    let agent = inputs.agent.map(|a| &a.docker);
    let image = pick(agent, defaults, |d| &d.image).unwrap_or_else(|| {
        Field::new(
            BASE_IMAGE.to_string(),
            "unset: OpenClaw's default openclaw-sandbox:bookworm-slim; stockade's base image instead",
        )
    });
    let user = pick(agent, defaults, |d| &d.user).unwrap_or_else(|| {
        Field::new(
            SANDBOX_USER.to_string(),
            "unset: OpenClaw ran as the workspace's owner or the image's user; stockade's sandbox user (no host account)",
        )
    });
    let workdir = pick(agent, defaults, |d| &d.workdir)
        .unwrap_or_else(|| Field::new("/workspace".to_string(), "unset: OpenClaw's default"));
    let read_only_root = pick(agent, defaults, |d| &d.read_only_root)
        .unwrap_or_else(|| Field::new(true, "unset: OpenClaw's default"));
    let network = pick(agent, defaults, |d| &d.network)
        .unwrap_or_else(|| Field::new("none".to_string(), "unset: OpenClaw's default"));
    let seccomp = pick(agent, defaults, |d| &d.seccomp).unwrap_or_else(|| {
        Field::new(
            Seccomp::Builtin(DEFAULT_SECCOMP),
            "unset: OpenClaw used Docker's default; stockade's default is Docker's minus the ptrace family (stricter)",
        )
    });
    let pids = pick(agent, defaults, |d| &d.pids)
        .unwrap_or_else(|| Field::new(draft::DEFAULT_PIDS, UNSET_NO_LIMIT));
    let memory = pick(agent, defaults, |d| &d.memory)
        .unwrap_or_else(|| Field::new(draft::DEFAULT_MEMORY.to_string(), UNSET_NO_LIMIT));
    let cpus = pick(agent, defaults, |d| &d.cpus)
        .unwrap_or_else(|| Field::new(draft::DEFAULT_CPUS, UNSET_NO_LIMIT));
    let (env_allow, secrets) = env(defaults, agent);

    let mut tmpfs = pick(agent, defaults, |d| &d.tmpfs).unwrap_or_else(|| {
        Field::new(
            OPENCLAW_TMPFS
                .iter()
                .map(|p| Tmpfs {
                    path: p.to_string(),
                    size: TMPFS_SIZE.to_string(),
                })
                .collect(),
            format!(
                "unset: OpenClaw's default {}, sized {TMPFS_SIZE}",
                OPENCLAW_TMPFS.join(", ")
            ),
        )
    });

    let home = inputs.host.home.as_deref();
    let rules = rules(inputs);
    let access = inputs
        .agent
        .and_then(|a| a.access.clone())
        .or_else(|| inputs.defaults.access.clone());
    let mut mounts: Vec<Field<Bind>> = Vec::new();
    let mut workdir_tmpfs = false;
    let (workspace, workspace_loc, written) = match &inputs.workspace {
        Some((w, loc)) => (w.clone(), loc.clone(), true),
        None => (
            OPENCLAW_WORKSPACE.to_string(),
            Loc::new("agents.defaults.workspace"),
            false,
        ),
    };
    let shown = Some(format!(
        "{workspace:?}{}",
        if written {
            ""
        } else {
            " (unset: OpenClaw's default)"
        }
    ));
    match access.as_ref().map(|(a, _)| *a).unwrap_or(Access::None) {
        Access::None => {
            workdir_tmpfs = true;
            if written {
                log.push(&workspace_loc, Status::Ignored, shown, "not mounted: workspaceAccess is none (the sandbox gets an empty tmpfs at the workdir)");
            }
        }
        mode => {
            let (target, ro) = match mode {
                Access::ReadOnly => (AGENT_MOUNT.to_string(), true),
                _ => (workdir.value.clone(), false),
            };
            let own = BindRules {
                own_mount: true,
                ..rules.clone()
            };
            let verdict = match binds::expand_home(&workspace, home) {
                Some(source) => binds::judge(
                    &format!("{source}:{target}{}", if ro { ":ro" } else { "" }),
                    &own,
                    inputs.exists,
                ),
                None => binds::Verdict {
                    status: Status::Approximated,
                    reason:
                        "written commented out: `~` cannot be expanded without a home directory"
                            .to_string(),
                    bind: Some(Bind {
                        source: workspace.clone(),
                        target: target.clone(),
                        read_only: ro,
                        disabled: Some("`~` has no home directory to expand to".to_string()),
                    }),
                },
            };
            let from = format!(
                "the agent workspace ({}), workspaceAccess {}",
                workspace_loc.path,
                if ro { "ro" } else { "rw" }
            );
            let mut verdict = verdict;
            let clash = verdict.bind.as_ref().is_some_and(|b| {
                b.disabled.is_none() && tmpfs.value.iter().any(|t| t.path == b.target)
            });
            if clash {
                verdict = binds::Verdict {
                    status: Status::Refused,
                    reason: format!(
                        "docker.tmpfs already mounts {target}, where this workspace would be bound: the engine refuses duplicate mount points"
                    ),
                    bind: None,
                };
            }
            let bound = verdict.bind.as_ref().is_some_and(|b| b.disabled.is_none());
            if !ro && !bound {
                if let Some(b) = verdict.bind.as_mut() {
                    verdict.reason.push_str(&format!(
                        "; until then the workdir is a tmpfs, which the bind replaces: remove the {} [tmpfs] entry when uncommenting",
                        b.target
                    ));
                    b.disabled = b.disabled.take().map(|d| {
                        format!(
                            "{d}; uncommented, it replaces the {} tmpfs: remove that entry",
                            b.target
                        )
                    });
                }
            }
            log_verdict(log, &workspace_loc, shown, &verdict);
            if ro || !bound {
                workdir_tmpfs = true;
            }
            if let Some(bind) = verdict.bind {
                mounts.push(Field::new(bind, from));
            }
        }
    }
    if workdir_tmpfs && !tmpfs.value.iter().any(|t| t.path == workdir.value) {
        tmpfs.value.push(Tmpfs {
            path: workdir.value.clone(),
            size: WORKSPACE_TMPFS.to_string(),
        });
        tmpfs.from.push_str(&format!(
            "; {} {WORKSPACE_TMPFS} for the workspace",
            workdir.value
        ));
    }
    if image.value == BASE_IMAGE
        && user.value == SANDBOX_USER
        && !tmpfs.value.iter().any(|t| t.path == SANDBOX_HOME.0)
    {
        tmpfs.value.push(Tmpfs {
            path: SANDBOX_HOME.0.to_string(),
            size: SANDBOX_HOME.1.to_string(),
        });
        tmpfs
            .from
            .push_str(&format!("; {} for the sandbox user's home", SANDBOX_HOME.0));
    }

    let all_binds = defaults
        .binds
        .iter()
        .chain(agent.into_iter().flat_map(|a| a.binds.iter()));
    for bind in all_binds {
        let verdict = binds::judge(&bind.spec, &rules, inputs.exists);
        let shown = Some(super::log::show(&crate::migrate::json5::Value::String(
            bind.spec.clone(),
        )));
        let Some(b) = verdict.bind.clone() else {
            log_verdict(log, &bind.loc, shown, &verdict);
            continue;
        };
        let taken = tmpfs.value.iter().any(|t| t.path == b.target)
            || mounts
                .iter()
                .any(|m| m.value.disabled.is_none() && m.value.target == b.target);
        if taken && b.disabled.is_none() {
            let clash = binds::Verdict {
                status: Status::Refused,
                reason: format!(
                    "a second mount at {}: the engine refuses duplicate mount points",
                    b.target
                ),
                bind: None,
            };
            log_verdict(log, &bind.loc, shown, &clash);
            continue;
        }
        log_verdict(log, &bind.loc, shown, &verdict);
        mounts.push(Field::new(b, bind.loc.path.clone()));
    }

    Draft {
        image,
        user,
        workdir,
        read_only_root,
        network,
        seccomp,
        env_allow,
        tmpfs,
        pids,
        memory,
        cpus,
        timeout_secs: inputs.timeout.clone(),
        binds: mounts,
        permissive_seccomp: false,
        secrets,
    }
}

fn log_verdict(log: &mut Log, loc: &Loc, shown: Option<String>, verdict: &binds::Verdict) {
    let reason = if verdict.status == Status::Refused {
        format!("{}; --allow-unsafe leaves it out", verdict.reason)
    } else {
        verdict.reason.clone()
    };
    log.push(loc, verdict.status, shown, reason);
}

/// The bind opt-ins and allowed roots in effect: the agent's, else the global ones.
fn rules(inputs: &Inputs<'_>) -> BindRules {
    let agent = inputs.agent;
    let flag = |get: fn(&SandboxIn) -> Option<bool>| {
        agent
            .and_then(get)
            .or_else(|| get(inputs.defaults))
            .unwrap_or(false)
    };
    let home = inputs.host.home.as_deref();
    let workspace = inputs
        .workspace
        .as_ref()
        .map(|(w, _)| w.as_str())
        .unwrap_or(OPENCLAW_WORKSPACE);
    let root = agent
        .and_then(|a| a.workspace_root.clone())
        .or_else(|| inputs.defaults.workspace_root.clone())
        .unwrap_or_else(|| OPENCLAW_WORKSPACE_ROOT.to_string());
    let roots: Vec<PathBuf> = [workspace, root.as_str()]
        .iter()
        .filter_map(|p| binds::expand_home(p, home))
        .filter(|p| p.starts_with('/'))
        .map(|p| binds::normalize(&p))
        .collect();
    BindRules {
        external_ok: flag(|s| s.docker.allow_external),
        reserved_ok: flag(|s| s.docker.allow_reserved),
        roots,
        home: inputs.host.home.clone(),
        engine_sockets: inputs.host.engine_sockets.clone(),
        own_mount: false,
    }
}

/// `env_allow` and the secret names: the agent's variables overlaid on the global ones (or on
/// OpenClaw's `{LANG}` when the global block sets none).
fn env(defaults: &DockerIn, agent: Option<&DockerIn>) -> (Field<Vec<String>>, Vec<String>) {
    let lang = vec![EnvVar {
        name: "LANG".to_string(),
        secret: false,
    }];
    let mut vars = defaults.env.clone().unwrap_or(lang);
    if let Some(extra) = agent.and_then(|a| a.env.clone()) {
        for var in extra {
            vars.retain(|v| v.name != var.name);
            vars.push(var);
        }
    }
    let mut allow: Vec<String> = DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect();
    let covered = |allow: &[String], name: &str| {
        allow.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    };
    let mut added = Vec::new();
    let mut secrets = Vec::new();
    for var in vars {
        if var.secret {
            secrets.push(var.name);
        } else if !covered(&allow, &var.name) {
            added.push(var.name.clone());
            allow.push(var.name);
        }
    }
    let from = if added.is_empty() {
        "stockade's default".to_string()
    } else {
        format!(
            "stockade's default plus {} from docker.env (values are never stored in profiles)",
            added.join(", ")
        )
    };
    (Field::new(allow, from), secrets)
}
