use std::path::Path;

use pretty_assertions::assert_eq;

use super::*;
use crate::migrate::Entry;

fn host() -> Host {
    Host {
        home: Some(PathBuf::from("/home/alice")),
        engine_sockets: Vec::new(),
    }
}

fn nothing_exists(_: &Path) -> bool {
    false
}

fn migrate(text: &str, allow_unsafe: bool) -> Migration {
    plan_with(
        "t.json5",
        text,
        Options { allow_unsafe },
        &host(),
        &nothing_exists,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An entry without its prose: key, value, status, legacy name.
type Row = (String, Option<String>, Status, Option<String>);

fn rows(entries: &[Entry]) -> Vec<Row> {
    entries
        .iter()
        .map(|e| {
            (
                e.key.clone(),
                e.value.clone(),
                e.status,
                e.legacy_of.clone(),
            )
        })
        .collect()
}

fn row(key: &str, value: Option<&str>, status: Status) -> Row {
    (key.to_string(), value.map(str::to_string), status, None)
}

fn legacy(key: &str, value: Option<&str>, status: Status, now: &str) -> Row {
    (
        key.to_string(),
        value.map(str::to_string),
        status,
        Some(now.to_string()),
    )
}

fn file<'a>(m: &'a Migration, path: &str) -> &'a str {
    &m.files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("no {path} in {:?}", m.report.files))
        .contents
}

fn reason<'a>(m: &'a Migration, key: &str) -> &'a str {
    &m.report
        .sections
        .iter()
        .flat_map(|s| &s.entries)
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no entry for {key}"))
        .reason
}

const LIST: &str = r#"{
  // agents.defaults + agents.list[], the 2026.1.9 .. 2026.7 shape
  agents: {
    defaults: {
      workspace: "~/ws",
      sandbox: {
        mode: "all",
        docker: {
          network: "none",
          memory: "1g",
          binds: ["/srv/ref:/ref:ro"],
          dangerouslyAllowExternalBindSources: true,
        },
      },
    },
    list: [
      { id: "main", sandbox: { mode: "off" } },
      {
        id: "web",
        sandbox: {
          workspaceAccess: "ro",
          docker: { network: "bridge", env: { HTTP_PROXY: "http://proxy:3128", API_TOKEN: "tok-123456789" } },
        },
        tools: { exec: { timeoutSeconds: 600 } },
      },
    ],
  },
  tools: { exec: { timeoutSec: 120 } },
}"#;

#[test]
fn the_list_layout_becomes_a_default_profile_and_one_per_differing_agent() {
    use Status::*;
    let m = migrate(LIST, false);
    let r = &m.report;
    assert_eq!(r.layout, "agents.defaults + agents.list[]");
    assert!(!r.blocked);
    let sections: Vec<(&str, Option<&str>, Option<&str>)> = r
        .sections
        .iter()
        .map(|s| (s.title.as_str(), s.agent.as_deref(), s.profile.as_deref()))
        .collect();
    assert_eq!(
        sections,
        [
            ("agents.defaults.sandbox", None, Some("openclaw-default")),
            (
                "agent main (agents.list[0])",
                Some("main"),
                Some("openclaw-default")
            ),
            (
                "agent web (agents.list[1])",
                Some("web"),
                Some("openclaw-web")
            ),
            ("gateway, tools and the rest", None, None),
        ]
    );
    let d = "agents.defaults.sandbox.docker";
    assert_eq!(
        rows(&r.sections[0].entries),
        [
            row("agents.defaults.sandbox.mode", Some("\"all\""), Mapped),
            row(&format!("{d}.network"), Some("\"none\""), Mapped),
            row(&format!("{d}.memory"), Some("\"1g\""), Mapped),
            row(
                &format!("{d}.dangerouslyAllowExternalBindSources"),
                Some("true"),
                Ignored
            ),
            row("agents.defaults.workspace", Some("\"~/ws\""), Ignored),
            row(
                &format!("{d}.binds[0]"),
                Some("\"/srv/ref:/ref:ro\""),
                Approximated
            ),
        ]
    );
    assert_eq!(
        rows(&r.sections[1].entries),
        [
            row("agents.list[0].id", Some("\"main\""), Mapped),
            row("agents.list[0].sandbox.mode", Some("\"off\""), Approximated),
        ]
    );
    let w = "agents.list[1]";
    assert_eq!(
        rows(&r.sections[2].entries),
        [
            row(&format!("{w}.id"), Some("\"web\""), Mapped),
            row(
                &format!("{w}.sandbox.workspaceAccess"),
                Some("\"ro\""),
                Approximated
            ),
            row(
                &format!("{w}.sandbox.docker.network"),
                Some("\"bridge\""),
                Mapped
            ),
            row(
                &format!("{w}.sandbox.docker.env.HTTP_PROXY"),
                None,
                Approximated
            ),
            row(&format!("{w}.sandbox.docker.env.API_TOKEN"), None, Ignored),
            row(
                &format!("{w}.tools.exec.timeoutSeconds"),
                Some("600"),
                Mapped
            ),
            // The global workspace, mounted for this agent (workspaceAccess ro), unlike globally.
            row("agents.defaults.workspace", Some("\"~/ws\""), Approximated),
        ]
    );
    assert_eq!(
        rows(&r.sections[3].entries),
        [legacy(
            "tools.exec.timeoutSec",
            Some("120"),
            Mapped,
            "tools.exec.timeoutSeconds"
        )]
    );
    assert!(reason(&m, "agents.list[1].sandbox.docker.env.API_TOKEN")
        .contains("stockade secret set API_TOKEN"));
    assert!(reason(&m, &format!("{d}.binds[0]")).contains("does not exist on this host"));
    assert_eq!(
        r.profiles
            .iter()
            .map(|p| (p.name.as_str(), p.used_by.clone()))
            .collect::<Vec<_>>(),
        [
            (
                "openclaw-default",
                vec!["agents.defaults".to_string(), "main".to_string()]
            ),
            ("openclaw-web", vec!["web".to_string()]),
        ]
    );
    assert_eq!(
        r.files,
        [
            "profiles/openclaw-default.toml",
            "profiles/openclaw-web.toml",
            "config.toml"
        ]
    );
    assert_eq!(
        r.counts,
        Counts {
            mapped: 8,
            approximated: 5,
            ignored: 3,
            refused: 0,
            unknown: 0
        }
    );
    assert_eq!(
        file(&m, "profiles/openclaw-web.toml"),
        r##"# openclaw-web: migrated from OpenClaw by `stockade migrate openclaw`
# from t.json5: agents.list[1] (agent web) over agents.defaults.sandbox
# used by: web
# each value's origin is beside it; the migration's report (--dry-run prints it again) says what was approximated and why: docs/migrate.md
# secret API_TOKEN: not stored here; `stockade secret set API_TOKEN` and `stockade exec --secret API_TOKEN`
description = "Migrated from OpenClaw: agents.list[1] (agent web) over agents.defaults.sandbox"
image = "stockade/base"                  # unset: OpenClaw's default openclaw-sandbox:bookworm-slim; stockade's base image instead
user = "65532:65532"                     # unset: OpenClaw ran as the workspace's owner or the image's user; stockade's sandbox user (no host account)
workdir = "/workspace"                   # unset: OpenClaw's default
read_only_root = true                    # unset: OpenClaw's default
network = "bridge"                       # agents.list[1].sandbox.docker.network
no_new_privileges = true                 # OpenClaw sets no-new-privileges on every sandbox too
elevated = false
seccomp = "builtin:seccomp/default.json" # unset: OpenClaw used Docker's default; stockade's default is Docker's minus the ptrace family (stricter)
env_allow = ["LANG", "LC_*", "TZ", "TERM", "HOME", "PATH", "HTTP_PROXY"] # stockade's default plus HTTP_PROXY from docker.env (values are never stored in profiles)

# unset: OpenClaw's default /tmp, /var/tmp, /run, sized 64m; /workspace 256m,exec for the workspace; /home/sandbox for the sandbox user's home
[tmpfs]
"/tmp" = "64m"
"/var/tmp" = "64m"
"/run" = "64m"
"/workspace" = "256m,exec"
"/home/sandbox" = "16m"

# every capability dropped, none added
[capabilities]
drop = ["ALL"]
add = []

[limits]
pids = 256                               # unset: OpenClaw sets no limit; stockade's default
memory = "1g"                            # agents.defaults.sandbox.docker.memory
cpus = 1.0                               # unset: OpenClaw sets no limit; stockade's default
timeout = "600s"                         # agents.list[1].tools.exec.timeoutSeconds
kill_grace = "2s"                        # stockade's default
output_cap = "1m"                        # stockade's default

# the agent workspace (agents.defaults.workspace), workspaceAccess ro
# not bound: /home/alice/ws does not exist on this host
# [[binds]]
# source = "/home/alice/ws"
# target = "/agent"
# read_only = true

# agents.defaults.sandbox.docker.binds[0]
# not bound: /srv/ref does not exist on this host
# [[binds]]
# source = "/srv/ref"
# target = "/ref"
# read_only = true

[policy]
allow_rules = []
"##
    );
    assert_eq!(
        file(&m, "config.toml"),
        "# stockade configuration migrated from OpenClaw (t.json5) by `stockade migrate openclaw`
# OpenClaw's elevated exec ran commands on the host; stockade's --elevated runs them in the
# elevated profile (root, still sandboxed), and only when allow_elevation is true
allow_elevation = false
elevated_profile = \"elevated\"
default_profile = \"openclaw-default\"
"
    );
}

const ENTRIES: &str = r#"{
  agents: {
    defaults: {
      sandbox: {
        docker: {
          network: "host",
          seccompProfile: "unconfined",
          binds: ["/var/run/docker.sock:/var/run/docker.sock", "/srv/data:/data"],
          user: "0:0",
          capDrop: [],
        },
      },
    },
    entries: {
      ops: { sandbox: { docker: { network: "container:vpn", bogus: 1 } } },
    },
  },
}"#;

#[test]
fn the_entries_layout_with_unsafe_values_is_refused_reason_by_reason() {
    let m = migrate(ENTRIES, false);
    let r = &m.report;
    assert_eq!(r.layout, "agents.defaults + agents.entries.<id>");
    assert!(r.blocked);
    let blocking: Vec<(&str, Status)> = r
        .blocking()
        .map(|(_, e)| (e.key.as_str(), e.status))
        .collect();
    let d = "agents.defaults.sandbox.docker";
    assert_eq!(
        blocking,
        [
            (format!("{d}.network").as_str(), Status::Refused),
            (format!("{d}.seccompProfile").as_str(), Status::Refused),
            (format!("{d}.binds[0]").as_str(), Status::Refused),
            // Outside the workspace without dangerouslyAllowExternalBindSources.
            (format!("{d}.binds[1]").as_str(), Status::Refused),
            ("agents.entries.ops.sandbox.docker.network", Status::Refused),
            ("agents.entries.ops.sandbox.docker.bogus", Status::Unknown),
        ]
    );
    assert!(reason(&m, &format!("{d}.network")).contains("host's network stack"));
    assert!(reason(&m, &format!("{d}.seccompProfile")).contains("syscall filtering off"));
    assert!(reason(&m, &format!("{d}.binds[0]")).contains("runtime's socket"));
    assert!(reason(&m, &format!("{d}.binds[1]")).contains("dangerouslyAllowExternalBindSources"));
    assert_eq!(
        reason(&m, &format!("{d}.user")).split(':').next(),
        Some("root (uid 0) or the root group")
    );
    assert!(
        reason(&m, &format!("{d}.capDrop")).starts_with("written as capabilities.drop = [\"ALL\"]")
    );

    // With --allow-unsafe the same report, and profiles with stockade's safe values: ops's
    // network, refused, becomes the global block's, so ops runs under the global profile.
    let unsafe_ = migrate(ENTRIES, true);
    assert!(!unsafe_.report.blocked);
    assert_eq!(unsafe_.report.sections, m.report.sections);
    assert_eq!(
        unsafe_.report.sections[1].profile.as_deref(),
        Some("openclaw-default")
    );
    for name in ["openclaw-default"] {
        let text = file(&unsafe_, &format!("profiles/{name}.toml"));
        for line in [
            "network = \"none\"",
            "seccomp = \"builtin:seccomp/default.json\"",
            "user = \"65532:65532\"",
            "drop = [\"ALL\"]",
        ] {
            assert!(text.contains(line), "{name}: no {line}:\n{text}");
        }
        assert!(
            !text.contains("docker.sock") && !text.contains("/srv/data"),
            "{text}"
        );
    }
}

const LEGACY: &str = r#"{
  agent: {
    workspace: "~/clawd",
    sandbox: {
      mode: "non-main",
      perSession: true,
      docker: { image: "clawdbot-sandbox:bookworm-slim", network: "none" },
      tools: { allow: ["bash", "read"] },
    },
    bash: { timeoutSec: 300 },
    elevated: { enabled: true, allowFrom: { telegram: ["*"] } },
    model: { primary: "x" },
  },
  routing: {
    defaultAgentId: "main",
    agents: {
      main: { sandbox: { mode: "off" } },
      kids: {
        sandbox: { mode: "all", docker: { network: "bridge" }, tools: { deny: ["bash"] } },
      },
    },
  },
}"#;

#[test]
fn the_legacy_layout_is_translated_and_reported_as_legacy() {
    use Status::*;
    let m = migrate(LEGACY, false);
    let r = &m.report;
    assert_eq!(r.layout, "legacy agent.* + legacy routing.agents.<id>");
    assert!(!r.blocked);
    let s = "agents.defaults.sandbox";
    assert_eq!(
        rows(&r.sections[0].entries),
        [
            legacy("agent.model", None, Ignored, "agents.defaults.model"),
            legacy(
                "agent.sandbox.mode",
                Some("\"non-main\""),
                Approximated,
                &format!("{s}.mode")
            ),
            legacy(
                "agent.sandbox.perSession",
                Some("true"),
                Approximated,
                &format!("{s}.scope")
            ),
            legacy(
                "agent.sandbox.docker.image",
                Some("\"clawdbot-sandbox:bookworm-slim\""),
                Approximated,
                &format!("{s}.docker.image")
            ),
            legacy(
                "agent.sandbox.docker.network",
                Some("\"none\""),
                Mapped,
                &format!("{s}.docker.network")
            ),
            legacy(
                "agent.sandbox.tools",
                Some("{allow: [\"bash\", \"read\"]}"),
                Ignored,
                "tools.sandbox.tools"
            ),
            legacy(
                "agent.workspace",
                Some("\"~/clawd\""),
                Ignored,
                "agents.defaults.workspace"
            ),
        ]
    );
    assert_eq!(
        rows(&r.sections[2].entries),
        [
            legacy(
                "routing.agents.kids.sandbox.mode",
                Some("\"all\""),
                Mapped,
                "agents.entries.kids.sandbox.mode"
            ),
            legacy(
                "routing.agents.kids.sandbox.docker.network",
                Some("\"bridge\""),
                Mapped,
                "agents.entries.kids.sandbox.docker.network"
            ),
            legacy(
                "routing.agents.kids.sandbox.tools",
                Some("{deny: [\"bash\"]}"),
                Ignored,
                "agents.entries.kids.tools.sandbox.tools"
            ),
        ]
    );
    assert!(reason(&m, "routing.agents.kids.sandbox.tools").contains("runs no commands"));
    assert_eq!(
        rows(&r.sections[3].entries),
        [
            legacy(
                "agent.bash.timeoutSec",
                Some("300"),
                Mapped,
                "tools.exec.timeoutSeconds"
            ),
            legacy(
                "agent.elevated.enabled",
                Some("true"),
                Approximated,
                "tools.elevated.enabled"
            ),
            legacy(
                "agent.elevated.allowFrom",
                None,
                Ignored,
                "tools.elevated.allowFrom"
            ),
            legacy(
                "routing.defaultAgentId",
                Some("\"main\""),
                Ignored,
                "agents.list[].default"
            ),
        ]
    );
    assert!(reason(&m, "agent.elevated.allowFrom").contains("wildcard"));
    assert_eq!(
        r.sections
            .iter()
            .map(|s| s.profile.as_deref())
            .collect::<Vec<_>>(),
        [
            Some("openclaw-default"),
            Some("openclaw-default"),
            Some("openclaw-kids"),
            None
        ]
    );
    let text = file(&m, "profiles/openclaw-default.toml");
    assert!(text.contains("image = \"stockade/base\"                  # agent.sandbox.docker.image \"clawdbot-sandbox:bookworm-slim\": stockade's base image instead\n"), "{text}");
    assert!(
        text.contains("timeout = \"300s\"                         # agent.bash.timeoutSec\n"),
        "{text}"
    );
}

#[test]
fn a_shared_scope_discards_an_agents_docker_block_as_openclaw_does() {
    let m = migrate(
        r#"{ agents: {
            defaults: { sandbox: { scope: "shared" } },
            entries: { a: { sandbox: { docker: { network: "bridge" } } } },
        } }"#,
        false,
    );
    let a = &m.report.sections[1];
    assert_eq!(a.profile.as_deref(), Some("openclaw-default"));
    assert_eq!(
        rows(&a.entries),
        [row(
            "agents.entries.a.sandbox.docker",
            None,
            Status::Ignored
        )]
    );
    assert!(a.entries[0].reason.contains("scope is shared"));
    assert_eq!(m.report.profiles.len(), 1);
}

#[test]
fn unknown_keys_in_sandbox_blocks_refuse_and_elsewhere_are_ignored() {
    let m = migrate(
        r#"{ agents: { defaults: { sandbox: { docker: { readOnlyBinds: true } }, heartbeat: {} } },
             channels: { telegram: { botToken: "123:abc" } } }"#,
        false,
    );
    let blocking: Vec<(&str, Status)> = m
        .report
        .blocking()
        .map(|(_, e)| (e.key.as_str(), e.status))
        .collect();
    assert_eq!(
        blocking,
        [(
            "agents.defaults.sandbox.docker.readOnlyBinds",
            Status::Unknown
        )]
    );
    let channels = m
        .report
        .sections
        .last()
        .unwrap()
        .entries
        .iter()
        .find(|e| e.key == "channels")
        .unwrap();
    assert_eq!(
        (channels.status, channels.value.as_deref()),
        (Status::Ignored, None)
    );
}

#[test]
fn two_shapes_at_once_are_an_error_not_a_guess() {
    for (text, first, second) in [
        (
            "{ agents: { list: [], entries: {} } }",
            "agents.list",
            "agents.entries",
        ),
        (
            "{ agents: { defaults: { sandbox: {} } }, agent: { sandbox: {} } }",
            "agents.defaults.sandbox",
            "agent.sandbox",
        ),
        (
            "{ agent: { bash: {} }, tools: { exec: {} } }",
            "agent.bash",
            "tools.exec",
        ),
        (
            "{ routing: { agents: {} }, agents: { list: [] } }",
            "routing.agents",
            "agents.list",
        ),
    ] {
        match plan_with("t", text, Options::default(), &host(), &nothing_exists) {
            Err(MigrateError::Ambiguous {
                first: f,
                second: s,
                ..
            }) => {
                assert_eq!((f.as_str(), s.as_str()), (first, second), "{text}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    for (text, problem) in [
        (
            "{ agents: { list: [{ id: 'a' }, { id: 'a' }] } }",
            "a second agent",
        ),
        ("{ agents: { list: [{ name: 'x' }] } }", "needs an id"),
        (
            "{ agents: { entries: { 'a/b': {} } } }",
            "cannot name a profile",
        ),
    ] {
        let err = plan_with("t", text, Options::default(), &host(), &nothing_exists).unwrap_err();
        assert!(err.to_string().contains(problem), "{text}: {err}");
    }
    assert!(matches!(
        plan_with("t", "[1]", Options::default(), &host(), &nothing_exists),
        Err(MigrateError::NotAnObject { .. })
    ));
}

#[test]
fn an_agent_called_default_does_not_take_the_global_profiles_name() {
    let m = migrate(
        "{ agents: { entries: { default: { sandbox: { docker: { network: 'bridge' } } } } } }",
        false,
    );
    assert_eq!(
        m.report
            .profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["openclaw-default", "openclaw-agent-default"]
    );
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openclaw")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// 02 names a host seccomp file its operator provides: point it at a copy of Docker's.
fn hardened() -> String {
    let seccomp =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seccomp/docker-default.json");
    fixture("02-hardened.openclaw.json5").replace(
        "/etc/openclaw/seccomp/docker-default.json",
        &seccomp.display().to_string(),
    )
}

const FIXTURES: &[&str] = &[
    "01-minimal.openclaw.json5",
    "02-hardened.openclaw.json5",
    "03-per-agent-binds.agents-list.openclaw.json",
    "04-risky-refuse-or-flag.openclaw.json5",
    "05-legacy-clawdbot-2026.1.8.clawdbot.json5",
];

fn fixture_text(name: &str) -> String {
    if name.starts_with("02-") {
        hardened()
    } else {
        fixture(name)
    }
}

/// Every object key's path, written as the report writes keys.
fn key_paths(value: &Value, at: &Loc, out: &mut Vec<String>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o.iter() {
                let loc = at.key(k);
                out.push(loc.path.clone());
                key_paths(v, &loc, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                key_paths(v, &at.index(i), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_key_of_every_example_is_accounted_for() {
    for name in FIXTURES {
        let text = fixture_text(name);
        let m = plan_with(
            name,
            &text,
            Options { allow_unsafe: true },
            &host(),
            &nothing_exists,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let keys: Vec<&str> = m
            .report
            .sections
            .iter()
            .flat_map(|s| &s.entries)
            .map(|e| e.key.as_str())
            .collect();
        let mut paths = Vec::new();
        key_paths(&json5::parse(&text).unwrap(), &Loc::new(""), &mut paths);
        for path in paths {
            // Reported itself, as part of a subtree reported whole, or through its members.
            let covered = keys.iter().any(|k| {
                let k = Loc::new(k.to_string());
                let p = Loc::new(path.clone());
                p.is_under(&k) || k.is_under(&p)
            });
            assert!(covered, "{name}: {path} is in no entry");
        }
    }
}

#[test]
fn the_examples_migrate_or_are_refused_as_their_headers_say() {
    let outcome = |name: &str| {
        let m = plan_with(
            name,
            &fixture_text(name),
            Options::default(),
            &host(),
            &nothing_exists,
        )
        .unwrap();
        let names: Vec<String> = m.report.profiles.iter().map(|p| p.name.clone()).collect();
        (m.report.blocked, names)
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(outcome(FIXTURES[0]), (false, s(&["openclaw-default"])));
    assert_eq!(outcome(FIXTURES[1]), (false, s(&["openclaw-default"])));
    assert_eq!(
        outcome(FIXTURES[2]),
        (
            false,
            s(&["openclaw-default", "openclaw-research", "openclaw-build"])
        )
    );
    assert_eq!(
        outcome(FIXTURES[3]),
        (true, s(&["openclaw-default", "openclaw-ops"]))
    );
    assert_eq!(
        outcome(FIXTURES[4]),
        (false, s(&["openclaw-default", "openclaw-family"]))
    );
    // 02 as shipped names a file this host lacks: an error that names the key and the path.
    let err = plan_with(
        "02",
        &fixture(FIXTURES[1]),
        Options::default(),
        &host(),
        &nothing_exists,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("`agents.defaults.sandbox.docker.seccompProfile` = \"/etc/openclaw/seccomp/docker-default.json\": cannot read it"),
        "{err}"
    );
}

#[test]
fn secrets_reach_neither_the_report_nor_the_files() {
    for name in FIXTURES {
        let m = plan_with(
            name,
            &fixture_text(name),
            Options { allow_unsafe: true },
            &host(),
            &nothing_exists,
        )
        .unwrap();
        let mut everything = serde_json::to_string(&m.report).unwrap();
        for f in &m.files {
            everything.push_str(&f.contents);
        }
        for secret in [
            "replace-with-a-long-random-token",
            "AKIAEXAMPLE",
            "not-a-real-secret",
            "http://10.0.0.2:3128",
        ] {
            assert!(!everything.contains(secret), "{name}: {secret} leaked");
        }
    }
}

#[test]
fn a_permissive_seccomp_file_is_refused_and_written_only_as_an_unsafe_opt_out() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("allow.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}"#,
    )
    .unwrap();
    let text = format!(
        "{{ agents: {{ defaults: {{ sandbox: {{ docker: {{ seccompProfile: {:?} }} }} }} }} }}",
        path.display().to_string()
    );
    let m = migrate(&text, false);
    let key = "agents.defaults.sandbox.docker.seccompProfile";
    let statuses: Vec<Status> = m.report.sections[0]
        .entries
        .iter()
        .filter(|e| e.key == key)
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, [Status::Mapped, Status::Refused]);
    assert!(m.report.blocked);
    let m = migrate(&text, true);
    let profile = file(&m, "profiles/openclaw-default.toml");
    assert!(
        profile.contains("seccomp = \"seccomp/allow.json\""),
        "{profile}"
    );
    assert!(profile.ends_with("[unsafe]                                 # written because of --allow-unsafe\npermissive_seccomp = true\n"), "{profile}");
    assert_eq!(
        file(&m, "profiles/seccomp/allow.json"),
        std::fs::read_to_string(&path).unwrap()
    );
    assert!(m.report.profiles[0]
        .lint
        .findings
        .iter()
        .any(|f| f.id == "unsafe-opt-out"));
}

#[test]
fn a_seccomp_file_that_cannot_be_read_or_parsed_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    for (path, problem) in [
        (tmp.path().join("missing.json"), "cannot read it"),
        (bad, "seccomp loader refuses it"),
        (PathBuf::from("relative.json"), "not an absolute path"),
    ] {
        let text = format!(
            "{{ agents: {{ defaults: {{ sandbox: {{ docker: {{ seccompProfile: {:?} }} }} }} }} }}",
            path.display().to_string()
        );
        let err = plan_with("t", &text, Options::default(), &host(), &nothing_exists).unwrap_err();
        assert!(
            matches!(err, MigrateError::Seccomp { .. }) && err.to_string().contains(problem),
            "{err}"
        );
    }
}

#[test]
fn an_existing_bind_source_is_bound_and_a_clash_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let text = format!(
        "{{ agents: {{ defaults: {{ sandbox: {{ docker: {{ dangerouslyAllowExternalBindSources: true, binds: [{:?}, {:?}] }} }} }} }} }}",
        format!("{}:/data:ro", data.display()),
        format!("{}:/tmp", data.display()),
    );
    let m = plan_with("t", &text, Options::default(), &host(), &|p: &Path| {
        p.exists()
    })
    .unwrap();
    let d = "agents.defaults.sandbox.docker";
    assert_eq!(reason(&m, &format!("{d}.binds[0]")), "bound read-only at /data; outside the workspace, allowed by dangerouslyAllowExternalBindSources; stockade checks each bind itself");
    assert!(reason(&m, &format!("{d}.binds[1]")).starts_with("a second mount at /tmp"));
    let text = file(&m, "profiles/openclaw-default.toml");
    assert!(
        text.contains(&format!(
            "[[binds]]\nsource = \"{}\"\ntarget = \"/data\"\nread_only = true\n",
            data.display()
        )),
        "{text}"
    );
}

#[test]
fn a_workspace_is_bound_where_it_exists_unless_a_tmpfs_takes_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let config = |tmpfs: &str| {
        format!(
            "{{ agents: {{ defaults: {{ workspace: {:?}, sandbox: {{ workspaceAccess: 'rw', docker: {{ tmpfs: {tmpfs} }} }} }} }} }}",
            ws.display().to_string()
        )
    };
    let exists = |p: &Path| p.exists();
    let m = plan_with(
        "t",
        &config("['/tmp']"),
        Options::default(),
        &host(),
        &exists,
    )
    .unwrap();
    assert!(!m.report.blocked);
    assert_eq!(
        reason(&m, "agents.defaults.workspace"),
        "bound read-write (lint: bind-writable) at /workspace"
    );
    let text = file(&m, "profiles/openclaw-default.toml");
    assert!(
        text.contains(&format!(
            "[[binds]]\nsource = \"{}\"\ntarget = \"/workspace\"\nread_only = false\n",
            ws.display()
        )),
        "{text}"
    );
    assert!(
        !text.contains("\"/workspace\" = "),
        "no tmpfs under the bound workspace:\n{text}"
    );

    let m = plan_with(
        "t",
        &config("['/workspace']"),
        Options::default(),
        &host(),
        &exists,
    )
    .unwrap();
    assert!(m.report.blocked);
    assert!(reason(&m, "agents.defaults.workspace").contains("duplicate mount points"));
}

#[test]
fn two_agents_never_share_one_profile_file() {
    let m = migrate(
        r#"{agents:{defaults:{sandbox:{mode:"all"}},list:[
            {id:"default",sandbox:{docker:{memory:"1g"}}},
            {id:"agent-default",sandbox:{docker:{memory:"2g"}}}]}}"#,
        false,
    );
    let mut names: Vec<String> = m
        .files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    let before = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), before, "one file per profile: {names:?}");
    assert!(
        names.iter().any(|n| n.contains("openclaw-agent-default-2")),
        "{names:?}"
    );
}
