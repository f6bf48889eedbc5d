//! OpenClaw (ex-Moltbot, ex-Clawdbot) configs to stockade profiles.
//!
//! OpenClaw's facts (keys, defaults, merge rules, what it refuses) are cited by section of
//! `tests/fixtures/openclaw/SCHEMA.md`, which names the OpenClaw source of each.
//!
//! The three shapes OpenClaw has used are read (SCHEMA.md section 1): `agents.defaults` with
//! `agents.list[]` (2026-01-09 .. 2026-07), with keyed `agents.entries.<id>` (2026-07-22 ..),
//! and Clawdbot's legacy `agent.*` with `routing.agents.<id>` (.. 2026-01-08), whose keys are
//! translated here and reported as legacy. The global sandbox block becomes the profile
//! `openclaw-default`; an agent whose resolved sandbox differs becomes `openclaw-<id>`.

mod binds;
mod log;
mod resolve;
mod sandbox;
mod tools;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::migrate::draft::{self, Draft, Field, Seccomp};
use crate::migrate::json5::{self, Object, Value};
use crate::migrate::{
    Counts, FileKind, Host, MigrateError, Migration, Options, PlannedFile, ProfileSummary, Report,
    Section, Status,
};
use crate::profile::{self, ProfileError};
use crate::seccomp;

use log::{Loc, Log};
use sandbox::{ReadCtx, SandboxIn, Scope};

/// The profile the global block becomes.
pub const DEFAULT_PROFILE: &str = "openclaw-default";
/// Most agents one config may hold (each is a profile to validate).
pub const MAX_AGENTS: usize = 256;

/// One agent as written, in whichever shape.
struct AgentIn<'a> {
    id: String,
    loc: Loc,
    obj: &'a Object,
}

/// The blocks of the input the sandboxes are resolved from.
#[derive(Default)]
struct Input<'a> {
    layout: Vec<&'static str>,
    /// The global sandbox block and where it is.
    sandbox: Option<(&'a Object, Loc)>,
    /// `agents.defaults.workspace` (or legacy `agent.workspace`).
    workspace: Option<(String, Loc)>,
    /// The global exec timeout.
    timeout: Option<Field<u64>>,
    /// Where each key group was found first, to refuse two shapes at once.
    seen: Vec<(&'static str, String)>,
    agents: Vec<AgentIn<'a>>,
}

impl<'a> Input<'a> {
    /// Notes that `group` (one thing, such as "the global sandbox") is set at `path`; a second
    /// place for the same group is ambiguous.
    fn claim(&mut self, file: &str, group: &'static str, path: &str) -> Result<(), MigrateError> {
        if let Some((_, first)) = self.seen.iter().find(|(g, _)| *g == group) {
            return Err(MigrateError::Ambiguous {
                file: file.to_string(),
                first: first.clone(),
                second: path.to_string(),
            });
        }
        self.seen.push((group, path.to_string()));
        Ok(())
    }
}

/// Plans the migration of the OpenClaw config `text` (named `source` in messages and
/// comments). Reads the files the config names (seccomp profiles, bind sources) but writes
/// nothing.
pub fn plan(
    source: &str,
    text: &str,
    options: Options,
    host: &Host,
) -> Result<Migration, MigrateError> {
    plan_with(source, text, options, host, &|p| p.exists())
}

/// [`plan`], with what exists on the host decided by `exists` (for tests).
fn plan_with(
    source: &str,
    text: &str,
    options: Options,
    host: &Host,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Migration, MigrateError> {
    let root = json5::parse(text).map_err(|e| MigrateError::Parse {
        file: source.to_string(),
        source: e,
    })?;
    let Some(root) = root.as_object() else {
        return Err(MigrateError::NotAnObject {
            file: source.to_string(),
            kind: root.kind(),
        });
    };
    let mut global = Log::default();
    let mut defaults_log = Log::default();
    let input = walk(source, root, &mut global, &mut defaults_log)?;

    // The global block.
    let defaults_loc = input
        .sandbox
        .as_ref()
        .map(|(_, loc)| loc.clone())
        .unwrap_or_else(|| Loc::new("agents.defaults.sandbox"));
    let defaults_tools_now = "tools.sandbox.tools".to_string();
    let defaults = match &input.sandbox {
        Some((obj, loc)) => sandbox::read(
            obj,
            loc,
            &ReadCtx {
                host,
                docker_applies: true,
                tool_policy_now: defaults_tools_now,
            },
            &mut defaults_log,
        )?,
        None => SandboxIn::empty(),
    };
    let global_timeout = input.timeout.clone().unwrap_or_else(|| {
        Field::new(
            tools::OPENCLAW_TIMEOUT_SECS,
            format!(
                "unset: OpenClaw's default exec timeout ({} s)",
                tools::OPENCLAW_TIMEOUT_SECS
            ),
        )
    });
    let mut defaults_draft = resolve::resolve(
        &resolve::Inputs {
            defaults: &defaults,
            agent: None,
            workspace: input.workspace.clone(),
            timeout: global_timeout.clone(),
            host,
            exists,
        },
        &mut defaults_log,
    );
    let defaults_profile = validate(
        DEFAULT_PROFILE,
        &mut defaults_draft,
        host,
        &mut defaults_log,
    )?;

    let mut planned = vec![Planned {
        name: DEFAULT_PROFILE.to_string(),
        what: defaults_loc.path.clone(),
        used_by: vec!["agents.defaults".to_string()],
        draft: defaults_draft,
        profile: defaults_profile,
    }];
    let mut sections = vec![Section {
        title: defaults_loc.path.clone(),
        agent: None,
        profile: Some(DEFAULT_PROFILE.to_string()),
        entries: defaults_log.entries,
    }];

    for agent in &input.agents {
        let mut log = Log::default();
        let (draft, profile) = migrate_agent(
            agent,
            &defaults,
            &input,
            &global_timeout,
            host,
            exists,
            &mut log,
        )?;
        let name = if draft == planned[0].draft {
            planned[0].used_by.push(agent.id.clone());
            DEFAULT_PROFILE.to_string()
        } else {
            // Two agents may map to one name (`default` and `agent-default`): never let one
            // profile file stand for both.
            let base = profile_name(&agent.id);
            let mut name = base.clone();
            let mut n = 2;
            while planned.iter().any(|p| p.name == name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            planned.push(Planned {
                name: name.clone(),
                what: format!(
                    "{} (agent {}) over {}",
                    agent.loc.path, agent.id, defaults_loc.path
                ),
                used_by: vec![agent.id.clone()],
                draft,
                profile,
            });
            name
        };
        // Inherited entries that read exactly as the global block's are that block's news.
        let entries = log
            .entries
            .into_iter()
            .filter(|e| {
                Loc::new(e.key.clone()).is_under(&agent.loc)
                    || !sections[0].entries.iter().any(|d| d == e)
            })
            .collect();
        sections.push(Section {
            title: format!("agent {} ({})", agent.id, agent.loc.path),
            agent: Some(agent.id.clone()),
            profile: Some(name),
            entries,
        });
    }
    sections.push(Section {
        title: "gateway, tools and the rest".to_string(),
        agent: None,
        profile: None,
        entries: global.entries,
    });

    name_seccomp_copies(&mut planned);
    assemble(source, &input, planned, sections, options)
}

/// A profile on its way to a file.
struct Planned {
    name: String,
    /// The block(s) it comes from, for its header.
    what: String,
    used_by: Vec<String>,
    draft: Draft,
    profile: profile::Profile,
}

fn profile_name(id: &str) -> String {
    if format!("openclaw-{id}") == DEFAULT_PROFILE {
        "openclaw-agent-default".to_string()
    } else {
        format!("openclaw-{id}")
    }
}

/// Reads one agent's block and resolves its sandbox over the global one.
fn migrate_agent(
    agent: &AgentIn<'_>,
    defaults: &SandboxIn,
    input: &Input<'_>,
    global_timeout: &Field<u64>,
    host: &Host,
    exists: &dyn Fn(&Path) -> bool,
    log: &mut Log,
) -> Result<(Draft, profile::Profile), MigrateError> {
    let sandbox_obj = agent.obj.get("sandbox").and_then(Value::as_object);
    let scope = sandbox::peek_scope(sandbox_obj)
        .or_else(|| sandbox::peek_scope(input.sandbox.as_ref().map(|(o, _)| *o)))
        .unwrap_or(Scope::Agent);
    let tool_policy_now = format!(
        "{}.tools.sandbox.tools",
        agent.loc.current.as_ref().unwrap_or(&agent.loc.path)
    );
    let mut own = None;
    let mut workspace = input.workspace.clone();
    let mut timeout = None;
    for (key, value) in agent.obj.iter() {
        let at = agent.loc.key(key);
        match key {
            "id" => log.with(&at, Status::Mapped, value, format!("the agent's id: its own profile, if its sandbox differs from the global one, is {}", profile_name(&agent.id))),
            "default" => log.with(&at, Status::Ignored, value, format!("the default agent; config.toml's default_profile is {DEFAULT_PROFILE}, the global block's profile (`default` is retired since 2026-08)")),
            "name" => log.with(&at, Status::Ignored, value, "a display name"),
            "workspace" => match value.as_str() {
                Some(w) => workspace = Some((w.to_string(), at.clone())),
                None => log.with(&at, Status::Refused, value, "not a path (OpenClaw rejects it at load); --allow-unsafe uses the global workspace"),
            },
            "sandbox" => match value.as_object() {
                Some(obj) => {
                    own = Some(sandbox::read(
                        obj,
                        &at,
                        &ReadCtx {
                            host,
                            docker_applies: scope != Scope::Shared,
                            tool_policy_now: tool_policy_now.clone(),
                        },
                        log,
                    )?)
                }
                None => log.with(&at, Status::Refused, value, "not an object (OpenClaw rejects it at load); --allow-unsafe uses the global sandbox"),
            },
            "tools" => match value.as_object() {
                Some(obj) => timeout = tools::read_tools(obj, &at, log),
                None => log.with(&at, Status::Ignored, value, "not an object: OpenClaw rejects it at load"),
            },
            _ => log.not_sandbox(&at, "an agent setting (model, identity, channels...)"),
        }
    }
    let timeout = timeout.unwrap_or_else(|| global_timeout.clone());
    let mut draft = resolve::resolve(
        &resolve::Inputs {
            defaults,
            agent: own.as_ref(),
            workspace,
            timeout,
            host,
            exists,
        },
        log,
    );
    let profile = validate(&profile_name(&agent.id), &mut draft, host, log)?;
    Ok((draft, profile))
}

/// The input's top level: every key is either handed on or gets its entry here.
fn walk<'a>(
    file: &str,
    root: &'a Object,
    global: &mut Log,
    defaults_log: &mut Log,
) -> Result<Input<'a>, MigrateError> {
    let mut input = Input::default();
    for (key, value) in root.iter() {
        let at = Loc::new(key);
        match (key, value) {
            ("agents", Value::Object(agents)) => {
                walk_agents(file, agents, &at, &mut input, global, defaults_log)?
            }
            ("tools", Value::Object(tools)) => {
                for k in ["exec", "bash"] {
                    if tools.get(k).is_some() {
                        input.claim(file, "exec", &format!("tools.{k}"))?;
                    }
                }
                if tools.get("elevated").is_some() {
                    input.claim(file, "elevated", "tools.elevated")?;
                }
                input.timeout = tools::read_tools(tools, &at, global);
            }
            ("agent", Value::Object(agent)) => {
                walk_legacy_agent(file, agent, &mut input, global, defaults_log)?
            }
            ("routing", Value::Object(routing)) => walk_routing(file, routing, &mut input, global)?,
            ("gateway", Value::Object(gateway)) => tools::read_gateway(gateway, &at, global),
            ("bindings", _) => global.not_sandbox(&at, "routing of channels to agents"),
            ("agents" | "tools" | "agent" | "routing" | "gateway", other) => global.with(
                &at,
                Status::Refused,
                other,
                "not an object (OpenClaw rejects the file at load); --allow-unsafe ignores it",
            ),
            _ => global.not_sandbox(
                &at,
                "OpenClaw settings of another area (channels, models, plugins...)",
            ),
        }
    }
    if input.agents.len() > MAX_AGENTS {
        return Err(MigrateError::Agent {
            file: file.to_string(),
            key: "agents".to_string(),
            problem: format!("more than {MAX_AGENTS} agents"),
        });
    }
    let mut layout = input.layout.clone();
    layout.dedup();
    input.layout = layout;
    Ok(input)
}

fn add_agent<'a>(
    file: &str,
    input: &mut Input<'a>,
    id: &str,
    loc: Loc,
    obj: &'a Object,
) -> Result<(), MigrateError> {
    let problem = if input.agents.iter().any(|a| a.id == id) {
        Some("a second agent with this id".to_string())
    } else if !profile::is_name(&profile_name(id)) {
        Some(format!(
            "the id {id:?} cannot name a profile (letters, digits, '-', '_' and '.', at most 55 characters)"
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(MigrateError::Agent {
            file: file.to_string(),
            key: loc.path,
            problem,
        });
    }
    input.agents.push(AgentIn {
        id: id.to_string(),
        loc,
        obj,
    });
    Ok(())
}

fn walk_agents<'a>(
    file: &str,
    agents: &'a Object,
    loc: &Loc,
    input: &mut Input<'a>,
    global: &mut Log,
    defaults_log: &mut Log,
) -> Result<(), MigrateError> {
    for (key, value) in agents.iter() {
        let at = loc.key(key);
        match (key, value) {
            ("defaults", Value::Object(defaults)) => {
                input.layout.push("agents.defaults");
                for (k, v) in defaults.iter() {
                    let at = at.key(k);
                    match (k, v) {
                        ("sandbox", Value::Object(sandbox)) => {
                            input.claim(file, "sandbox", &at.path)?;
                            input.sandbox = Some((sandbox, at));
                        }
                        ("workspace", Value::String(w)) => {
                            input.claim(file, "workspace", &at.path)?;
                            input.workspace = Some((w.clone(), at));
                        }
                        ("sandbox" | "workspace", other) => defaults_log.with(&at, Status::Refused, other, "not valid here (OpenClaw rejects it at load); --allow-unsafe uses OpenClaw's defaults"),
                        _ => defaults_log.not_sandbox(&at, "an agent default that is not a sandbox setting (model, heartbeat, elevatedDefault...)"),
                    }
                }
            }
            ("list", Value::Array(list)) => {
                input.claim(file, "agents", &at.path)?;
                input.layout.push("agents.list[]");
                for (i, item) in list.iter().enumerate() {
                    let item_loc = at.index(i);
                    let Some(obj) = item.as_object() else {
                        return Err(MigrateError::Agent {
                            file: file.to_string(),
                            key: item_loc.path,
                            problem: format!("{} is not an agent object", item.kind()),
                        });
                    };
                    let Some(id) = obj.get("id").and_then(Value::as_str) else {
                        return Err(MigrateError::Agent {
                            file: file.to_string(),
                            key: item_loc.path,
                            problem: "an agent in agents.list needs an id".to_string(),
                        });
                    };
                    add_agent(file, input, id, item_loc, obj)?;
                }
            }
            ("entries", Value::Object(entries)) => {
                input.claim(file, "agents", &at.path)?;
                input.layout.push("agents.entries.<id>");
                for (id, item) in entries.iter() {
                    let item_loc = at.key(id);
                    let Some(obj) = item.as_object() else {
                        return Err(MigrateError::Agent {
                            file: file.to_string(),
                            key: item_loc.path,
                            problem: format!("{} is not an agent object", item.kind()),
                        });
                    };
                    add_agent(file, input, id, item_loc, obj)?;
                }
            }
            ("defaults" | "list" | "entries", other) => global.with(
                &at,
                Status::Refused,
                other,
                "not valid here (OpenClaw rejects it at load); --allow-unsafe ignores it",
            ),
            _ => global.not_sandbox(&at, "agent settings of another area"),
        }
    }
    Ok(())
}

/// Clawdbot's `agent.*` (up to 2026-01-08): `agents.defaults.*`, `tools.exec`, `tools.elevated`
/// today (SCHEMA.md section 10).
fn walk_legacy_agent<'a>(
    file: &str,
    agent: &'a Object,
    input: &mut Input<'a>,
    global: &mut Log,
    defaults_log: &mut Log,
) -> Result<(), MigrateError> {
    input.layout.push("legacy agent.*");
    for (key, value) in agent.iter() {
        let path = format!("agent.{key}");
        match (key, value) {
            ("sandbox", Value::Object(sandbox)) => {
                input.claim(file, "sandbox", &path)?;
                input.sandbox = Some((sandbox, Loc::legacy(path, "agents.defaults.sandbox")));
            }
            ("workspace", Value::String(w)) => {
                input.claim(file, "workspace", &path)?;
                input.workspace = Some((w.clone(), Loc::legacy(path, "agents.defaults.workspace")));
            }
            ("bash", Value::Object(bash)) => {
                input.claim(file, "exec", &path)?;
                input.timeout = tools::read_exec(bash, &Loc::legacy(path, "tools.exec"), global);
            }
            ("elevated", Value::Object(elevated)) => {
                input.claim(file, "elevated", &path)?;
                tools::read_elevated(elevated, &Loc::legacy(path, "tools.elevated"), global);
            }
            ("tools", other) => global.with(&Loc::legacy(path, "tools"), Status::Ignored, other, "the agent host's tool policy (tools.allow/deny today): stockade only runs the commands it is given"),
            ("sandbox" | "workspace" | "bash" | "elevated", other) => global.with(&Loc::legacy(path, format!("agents.defaults.{key}")), Status::Refused, other, "not valid here (Clawdbot rejected it at load); --allow-unsafe ignores it"),
            _ => defaults_log.not_sandbox(&Loc::legacy(path, format!("agents.defaults.{key}")), "an agent default that is not a sandbox setting"),
        }
    }
    Ok(())
}

/// Clawdbot's `routing.*`: `routing.agents.<id>` became agents, the rest is routing.
fn walk_routing<'a>(
    file: &str,
    routing: &'a Object,
    input: &mut Input<'a>,
    global: &mut Log,
) -> Result<(), MigrateError> {
    for (key, value) in routing.iter() {
        let path = format!("routing.{key}");
        match (key, value) {
            ("agents", Value::Object(agents)) => {
                input.claim(file, "agents", &path)?;
                input.layout.push("legacy routing.agents.<id>");
                for (id, item) in agents.iter() {
                    let loc = Loc::legacy(
                        Loc::new(&path).key(id).path,
                        Loc::new("agents.entries").key(id).path,
                    );
                    let Some(obj) = item.as_object() else {
                        return Err(MigrateError::Agent { file: file.to_string(), key: loc.path, problem: format!("{} is not an agent object", item.kind()) });
                    };
                    add_agent(file, input, id, loc, obj)?;
                }
            }
            ("defaultAgentId", v) => global.with(&Loc::legacy(path, "agents.list[].default"), Status::Ignored, v, format!("the default agent; config.toml's default_profile is {DEFAULT_PROFILE}, the global block's profile")),
            ("bindings", _) => global.not_sandbox(&Loc::legacy(path, "bindings"), "routing of channels to agents"),
            _ => global.not_sandbox(&Loc::new(path), "routing settings"),
        }
    }
    Ok(())
}

/// Loads a draft through stockade's profile parser (its seccomp file read where it is now).
/// A copied seccomp profile that stockade refuses as permissive is a refusal; the draft then
/// carries `[unsafe] permissive_seccomp`, which is written only with `--allow-unsafe`.
fn validate(
    name: &str,
    draft: &mut Draft,
    host: &Host,
    log: &mut Log,
) -> Result<profile::Profile, MigrateError> {
    let file = format!("profiles/{name}.toml");
    let load = |draft: &Draft| {
        let reference = match &draft.seccomp.value {
            Seccomp::Builtin(b) => b.to_string(),
            Seccomp::Copied { source, .. } => source.display().to_string(),
        };
        let text = draft.render(&[], "", &reference);
        profile::parse(
            name,
            &file,
            &text,
            Some(Path::new("/")),
            &host.engine_sockets,
        )
    };
    match load(draft) {
        Ok(p) => Ok(p),
        Err(ProfileError::Invalid { field, problem, .. })
            if field == "seccomp" && !draft.permissive_seccomp =>
        {
            if let Seccomp::Copied { key, .. } = &draft.seccomp.value {
                log.hidden(
                    &Loc::new(key.clone()),
                    Status::Refused,
                    format!(
                        "stockade refuses this seccomp profile for {name}: {problem}; --allow-unsafe writes it with `[unsafe] permissive_seccomp = true` (audited with every command; lint: unsafe-opt-out, critical)"
                    ),
                );
            }
            draft.permissive_seccomp = true;
            load(draft).map_err(|source| MigrateError::Invalid {
                name: name.to_string(),
                source,
            })
        }
        Err(source) => Err(MigrateError::Invalid {
            name: name.to_string(),
            source,
        }),
    }
}

/// Gives each distinct copied seccomp file a name under `profiles/seccomp/`.
fn name_seccomp_copies(planned: &mut [Planned]) {
    let mut named: Vec<(PathBuf, String)> = Vec::new();
    for p in planned.iter_mut() {
        let Seccomp::Copied {
            source, file_name, ..
        } = &mut p.draft.seccomp.value
        else {
            continue;
        };
        if let Some((_, name)) = named.iter().find(|(s, _)| s == source) {
            *file_name = name.clone();
            continue;
        }
        let stem: String = source
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("seccomp")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = format!("{stem}.json");
        let mut n = 2;
        while named.iter().any(|(_, taken)| *taken == name) {
            name = format!("{stem}-{n}.json");
            n += 1;
        }
        named.push((source.clone(), name.clone()));
        *file_name = name;
    }
}

/// The report and the files, from what was planned.
fn assemble(
    source: &str,
    input: &Input<'_>,
    planned: Vec<Planned>,
    sections: Vec<Section>,
    options: Options,
) -> Result<Migration, MigrateError> {
    let mut files = Vec::new();
    let mut profiles = Vec::new();
    for p in &planned {
        if let Seccomp::Copied {
            file_name, json, ..
        } = &p.draft.seccomp.value
        {
            let path = PathBuf::from("profiles/seccomp").join(file_name);
            if !files.iter().any(|f: &PlannedFile| f.path == path) {
                files.push(PlannedFile {
                    path,
                    kind: FileKind::Seccomp,
                    contents: json.clone(),
                });
            }
        }
        let header = vec![
            format!("{}: migrated from OpenClaw by `stockade migrate openclaw`", p.name),
            format!("from {source}: {}", p.what),
            format!("used by: {}", p.used_by.join(", ")),
            "each value's origin is beside it; the migration's report (--dry-run prints it again) says what was approximated and why: docs/migrate.md".to_string(),
        ];
        let description = format!("Migrated from OpenClaw: {}", p.what);
        let text = p
            .draft
            .render(&header, &description, &p.draft.seccomp_reference());
        let file = format!("profiles/{}.toml", p.name);
        files.push(PlannedFile {
            path: PathBuf::from(&file),
            kind: FileKind::Profile,
            contents: text,
        });
        profiles.push(ProfileSummary {
            name: p.name.clone(),
            file,
            used_by: p.used_by.clone(),
            lint: seccomp::lint_profile(&p.profile),
        });
    }
    let config_header = vec![
        format!("stockade configuration migrated from OpenClaw ({source}) by `stockade migrate openclaw`"),
        "OpenClaw's elevated exec ran commands on the host; stockade's --elevated runs them in the".to_string(),
        "elevated profile (root, still sandboxed), and only when allow_elevation is true".to_string(),
    ];
    files.push(PlannedFile {
        path: PathBuf::from("config.toml"),
        kind: FileKind::Config,
        contents: draft::render_config(&config_header, DEFAULT_PROFILE),
    });
    files.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));

    let mut counts = Counts::default();
    for e in sections.iter().flat_map(|s| &s.entries) {
        *match e.status {
            Status::Mapped => &mut counts.mapped,
            Status::Approximated => &mut counts.approximated,
            Status::Ignored => &mut counts.ignored,
            Status::Refused => &mut counts.refused,
            Status::Unknown => &mut counts.unknown,
        } += 1;
    }
    let blocks = counts.refused + counts.unknown > 0;
    let layout = if input.layout.is_empty() {
        "no sandbox keys (OpenClaw's defaults: sandbox off)".to_string()
    } else {
        input.layout.join(" + ")
    };
    Ok(Migration {
        report: Report {
            source: source.to_string(),
            layout,
            sections,
            profiles,
            default_profile: DEFAULT_PROFILE.to_string(),
            files: files.iter().map(|f| f.path.display().to_string()).collect(),
            counts,
            allow_unsafe: options.allow_unsafe,
            blocked: blocks && !options.allow_unsafe,
        },
        files,
    })
}
