//! `stockade migrate openclaw` end to end, on each example config in tests/fixtures/openclaw/:
//! it migrates or is refused as the example's header says, what it writes loads through
//! `stockade profile show` and `profile lint`, and secrets and tokens end up nowhere.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::common::{stderr, stdout, Env};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openclaw");
const DOCKER_SECCOMP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seccomp/docker-default.json"
);
const EXIT_REFUSED: i32 = 1;
const EXIT_ERROR: i32 = 125;

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// A migration environment: its own HOME (what `~` in the configs expands to) and output dir.
struct Migrate {
    env: Env,
}

impl Migrate {
    fn new() -> Migrate {
        let m = Migrate { env: Env::new() };
        std::fs::create_dir_all(m.home()).unwrap();
        m
    }

    fn home(&self) -> PathBuf {
        self.env.dir.path().join("home")
    }

    fn out(&self) -> PathBuf {
        self.env.dir.path().join("out")
    }

    fn run(&self, config: &Path, extra: &[&str]) -> Output {
        self.env
            .cmd()
            .env("HOME", self.home())
            .args(["migrate", "openclaw"])
            .arg(config)
            .arg("--out")
            .arg(self.out())
            .args(extra)
            .output()
            .expect("run stockade migrate")
    }

    /// `stockade --config OUT/config.toml --profiles-dir OUT/profiles ARGS...`
    fn stockade(&self, args: &[&str]) -> Output {
        self.env
            .cmd()
            .arg("--config")
            .arg(self.out().join("config.toml"))
            .arg("--profiles-dir")
            .arg(self.out().join("profiles"))
            .args(args)
            .output()
            .expect("run stockade")
    }

    /// Every file under the output directory, relative to it, sorted.
    fn written(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut files = Vec::new();
        if self.out().exists() {
            walk(&self.out(), &self.out(), &mut files);
        }
        files.sort();
        files
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.out().join(rel)).unwrap()
    }

    /// Each profile loads with `profile show` and lints without a critical finding.
    fn assert_profiles_load(&self, names: &[&str]) {
        for name in names {
            let show = self.stockade(&["profile", "show", name]);
            assert!(show.status.success(), "{name}: {}", stderr(&show));
            assert!(
                stdout(&show).contains(&format!("profile         {name} (")),
                "{}",
                stdout(&show)
            );
            let lint = self.stockade(&["profile", "lint", name]);
            assert_eq!(
                lint.status.code(),
                Some(0),
                "{name}: {}{}",
                stdout(&lint),
                stderr(&lint)
            );
        }
        // The written config names the migrated default profile, and that resolves.
        let config = self.read("config.toml");
        assert!(
            config.contains("default_profile = \"openclaw-default\"\n"),
            "{config}"
        );
        assert!(config.contains("allow_elevation = false\n"), "{config}");
    }

    fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.out().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }
}

fn show(m: &Migrate, name: &str) -> String {
    let out = m.stockade(&["profile", "show", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// Lines of `profile show` that start with `field`, its value trimmed.
fn field(shown: &str, name: &str) -> Vec<String> {
    shown
        .lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .map(|l| l[name.len()..].trim().to_string())
        .collect()
}

#[test]
fn example_01_minimal_migrates_to_one_locked_down_profile() {
    let m = Migrate::new();
    let out = m.run(&fixture("01-minimal.openclaw.json5"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        m.written(),
        ["config.toml", "profiles/openclaw-default.toml"]
    );
    for (rel, mode) in [
        ("config.toml", 0o600),
        ("profiles/openclaw-default.toml", 0o600),
    ] {
        assert_eq!(m.mode(rel), mode, "{rel}");
    }
    assert_eq!(
        std::fs::metadata(m.out()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(m.mode("profiles"), 0o700);
    m.assert_profiles_load(&["openclaw-default"]);
    let shown = show(&m, "openclaw-default");
    assert_eq!(field(&shown, "network"), ["none"]);
    assert_eq!(field(&shown, "user"), ["65532:65532"]);
    assert_eq!(field(&shown, "effective caps"), ["none"]);
    assert_eq!(field(&shown, "read-only root"), ["true"]);
    let report = stdout(&out);
    for line in [
        "layout: agents.defaults",
        "approximated  agents.defaults.sandbox.mode = \"non-main\"",
        "ignored       gateway.auth.token",
        "stockade token create --name NAME",
        "1 mapped, 4 approximated, 3 ignored, 0 refused, 0 unknown",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    let token = "replace-with-a-long-random-token";
    assert!(!report.contains(token) && !m.read("profiles/openclaw-default.toml").contains(token));
    assert!(!m.read("config.toml").contains(token));
}

#[test]
fn example_02_hardened_migrates_once_the_seccomp_file_it_names_exists() {
    let m = Migrate::new();
    // As shipped it names /etc/openclaw/seccomp/docker-default.json, which its operator
    // provides: where it is missing, that is an error naming the key, and nothing is written.
    let out = m.run(&fixture("02-hardened.openclaw.json5"), &[]);
    assert_eq!(out.status.code(), Some(EXIT_ERROR), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("`agents.defaults.sandbox.docker.seccompProfile` = \"/etc/openclaw/seccomp/docker-default.json\": cannot read it"),
        "{}",
        stderr(&out)
    );
    assert!(m.written().is_empty());

    // The operator's copy of Docker's default profile, where the config says.
    let seccomp = m.env.dir.path().join("docker-default.json");
    std::fs::copy(DOCKER_SECCOMP, &seccomp).unwrap();
    let text = std::fs::read_to_string(fixture("02-hardened.openclaw.json5"))
        .unwrap()
        .replace(
            "/etc/openclaw/seccomp/docker-default.json",
            &seccomp.display().to_string(),
        );
    let config = m.env.dir.path().join("openclaw.json5");
    std::fs::write(&config, text).unwrap();
    let out = m.run(&config, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        m.written(),
        [
            "config.toml",
            "profiles/openclaw-default.toml",
            "profiles/seccomp/docker-default.json"
        ]
    );
    assert_eq!(m.mode("profiles/seccomp/docker-default.json"), 0o600);
    assert_eq!(
        m.read("profiles/seccomp/docker-default.json"),
        std::fs::read_to_string(DOCKER_SECCOMP).unwrap()
    );
    m.assert_profiles_load(&["openclaw-default"]);
    let shown = show(&m, "openclaw-default");
    assert_eq!(field(&shown, "user"), ["1000:1000"]);
    assert_eq!(field(&shown, "memory"), ["1g (no swap)"]);
    assert_eq!(field(&shown, "pids limit"), ["256"]);
    assert!(
        field(&shown, "seccomp")[0].ends_with("profiles/seccomp/docker-default.json"),
        "{shown}"
    );
    // The workspace (workspaceAccess ro) does not exist under this HOME: commented out.
    let profile = m.read("profiles/openclaw-default.toml");
    let source = format!(
        "# source = \"{}/.openclaw/workspace\"\n# target = \"/agent\"\n# read_only = true\n",
        m.home().display()
    );
    assert!(profile.contains(&source), "{profile}");

    // Once the workspace exists, the bind is written and loads.
    std::fs::create_dir_all(m.home().join(".openclaw/workspace")).unwrap();
    let out = m.run(&config, &["--force"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let shown = show(&m, "openclaw-default");
    assert_eq!(
        field(&shown, "bind"),
        [format!(
            "{}/.openclaw/workspace -> /agent (ro)",
            m.home().display()
        )]
    );
}

#[test]
fn example_03_agents_list_migrates_to_one_profile_per_distinct_sandbox() {
    let m = Migrate::new();
    let out = m.run(
        &fixture("03-per-agent-binds.agents-list.openclaw.json"),
        &["--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let profiles: Vec<(&str, &str)> = report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| Some((s["agent"].as_str()?, s["profile"].as_str()?)))
        .collect();
    assert_eq!(
        profiles,
        [
            ("main", "openclaw-default"),
            ("research", "openclaw-research"),
            ("build", "openclaw-build")
        ]
    );
    assert_eq!(report["layout"], "agents.defaults + agents.list[]");
    assert_eq!(report["blocked"], false);
    assert_eq!(report["counts"]["refused"], 0);
    assert_eq!(report["written"].as_array().unwrap().len(), 4);
    m.assert_profiles_load(&["openclaw-default", "openclaw-research", "openclaw-build"]);

    let research = show(&m, "openclaw-research");
    assert_eq!(field(&research, "network"), ["bridge"]);
    assert_eq!(field(&research, "cpus"), ["2"]);
    assert_eq!(
        field(&research, "timeout"),
        ["900000 ms (kill grace 2000 ms)"]
    );
    assert!(
        field(&research, "env allowed")[0].ends_with("HTTP_PROXY NO_PROXY"),
        "{research}"
    );
    // The root, writable-root agent runs as the sandbox user on a read-only root.
    let build = show(&m, "openclaw-build");
    assert_eq!(field(&build, "user"), ["65532:65532"]);
    assert_eq!(field(&build, "read-only root"), ["true"]);
    assert_eq!(
        field(&build, "image"),
        ["openclaw-sandbox-common:bookworm-slim"]
    );
    // Global and per-agent binds are concatenated; sources missing here are commented out.
    let text = m.read("profiles/openclaw-research.toml");
    for source in [
        "/srv/openclaw/research-workspace",
        "/srv/openclaw/shared/reference",
        "/srv/openclaw/shared/drafts",
    ] {
        assert!(
            text.contains(&format!("# source = \"{source}\"\n")),
            "{source}:\n{text}"
        );
    }
    // The proxy's address is a value, and values are never written.
    assert!(!text.contains("10.0.0.2"), "{text}");
    assert_eq!(field(&research, "bind"), Vec::<String>::new());
}

#[test]
fn example_04_risky_is_refused_with_every_reason_and_written_only_with_allow_unsafe() {
    let m = Migrate::new();
    let config = fixture("04-risky-refuse-or-flag.openclaw.json5");
    let out = m.run(&config, &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_REFUSED),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(m.written().is_empty(), "{:?}", m.written());
    let report = stdout(&out);
    let refused = report.split("\nrefused:\n").nth(1).expect("a refused list");
    let d = "agents.defaults.sandbox.docker";
    for (key, why) in [
        (
            format!("{d}.network = \"host\""),
            "shares the host's network stack",
        ),
        (
            format!("{d}.seccompProfile = \"unconfined\""),
            "turns syscall filtering off",
        ),
        (
            format!("{d}.apparmorProfile = \"unconfined\""),
            "mandatory access control",
        ),
        (
            format!("{d}.binds[0] = \"/var/run/docker.sock:/var/run/docker.sock\""),
            "the container runtime's socket",
        ),
        (
            format!("{d}.binds[1] = \"/:/host:ro\""),
            "/ is the whole host filesystem",
        ),
        (
            format!("{d}.binds[2] = \"/home/alice/.ssh:/home/sandbox/.ssh:ro\""),
            ".ssh is a credentials directory",
        ),
        (
            format!("{d}.binds[3] = \"cache:/cache\""),
            "named volume or a relative path",
        ),
        (
            "agents.entries.ops.sandbox.docker.network = \"container:vpn-gw\"".to_string(),
            "another container's network namespace",
        ),
    ] {
        let line = refused
            .lines()
            .find(|l| l.trim_start().starts_with(&key))
            .unwrap_or_else(|| panic!("{key} not refused:\n{refused}"));
        assert!(line.contains(why), "{line}");
    }
    assert_eq!(refused.lines().count(), 8, "{refused}");
    assert!(
        report.contains("3 mapped, 15 approximated, 10 ignored, 8 refused, 0 unknown"),
        "{report}"
    );
    assert!(
        stderr(&out).contains("refused: 8 reason(s)"),
        "{}",
        stderr(&out)
    );
    // What OpenClaw accepted silently is flagged, and written stricter.
    for flagged in [
        "approximated  agents.defaults.sandbox.docker.capDrop = []",
        "approximated  agents.defaults.sandbox.docker.readOnlyRoot = false",
        "approximated  agents.defaults.sandbox.docker.user = \"0:0\"",
        "approximated  agents.defaults.sandbox.scope = \"shared\"",
        "ignored       agents.defaults.sandbox.docker.env.AWS_SECRET_ACCESS_KEY",
        "ignored       agents.defaults.sandbox.browser.allowHostControl = true",
        "approximated  gateway.auth.mode = \"none\"",
    ] {
        assert!(report.contains(flagged), "no {flagged:?}:\n{report}");
    }

    // --dry-run: the same report and status, nothing written.
    let dry = m.run(&config, &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(EXIT_REFUSED));
    assert_eq!(stdout(&dry), report);
    assert!(m.written().is_empty());

    // --allow-unsafe: written with stockade's safe values, the refusals and lint printed.
    let out = m.run(&config, &["--allow-unsafe"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = stdout(&out);
    assert!(
        report.contains("refused (written anyway because of --allow-unsafe"),
        "{report}"
    );
    assert!(report.contains("openclaw-default: score "), "{report}");
    assert_eq!(
        m.written(),
        [
            "config.toml",
            "profiles/openclaw-default.toml",
            "profiles/openclaw-ops.toml"
        ]
    );
    m.assert_profiles_load(&["openclaw-default", "openclaw-ops"]);
    for name in ["openclaw-default", "openclaw-ops"] {
        let shown = show(&m, name);
        assert_eq!(field(&shown, "network"), ["none"], "{name}");
        assert_eq!(field(&shown, "effective caps"), ["none"], "{name}");
        assert_eq!(field(&shown, "user"), ["65532:65532"], "{name}");
        assert_eq!(field(&shown, "read-only root"), ["true"], "{name}");
        assert_eq!(field(&shown, "bind"), Vec::<String>::new(), "{name}");
        assert!(
            field(&shown, "seccomp")[0].starts_with("builtin:seccomp/default.json"),
            "{shown}"
        );
    }
    let profile = m.read("profiles/openclaw-default.toml");
    for secret in ["AKIAEXAMPLE", "not-a-real-secret"] {
        assert!(
            !profile.contains(secret) && !report.contains(secret),
            "{secret}"
        );
    }
    assert!(profile.contains("# secret AWS_SECRET_ACCESS_KEY: not stored here; `stockade secret set AWS_SECRET_ACCESS_KEY`"), "{profile}");
}

#[test]
fn example_05_legacy_clawdbot_migrates_with_each_key_reported_as_legacy() {
    let m = Migrate::new();
    let out = m.run(&fixture("05-legacy-clawdbot-2026.1.8.clawdbot.json5"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = stdout(&out);
    for line in [
        "layout: legacy agent.* + legacy routing.agents.<id>",
        "agent.sandbox.perSession = true  (legacy: now agents.defaults.sandbox.scope)",
        "agent.sandbox.docker.image = \"clawdbot-sandbox:bookworm-slim\"  (legacy: now agents.defaults.sandbox.docker.image)",
        "agent.sandbox.tools = ",
        "(legacy: now tools.sandbox.tools)",
        "agent.bash.timeoutSec = 1800  (legacy: now tools.exec.timeoutSeconds)",
        "agent.elevated.enabled = true  (legacy: now tools.elevated.enabled)",
        "routing.agents.family.sandbox.docker.network = \"bridge\"  (legacy: now agents.entries.family.sandbox.docker.network)",
        "routing.defaultAgentId = \"main\"  (legacy: now agents.list[].default)",
        "routing.bindings  (legacy: now bindings)",
        "agent main (routing.agents.main) -> profile openclaw-default",
        "agent family (routing.agents.family) -> profile openclaw-family",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    m.assert_profiles_load(&["openclaw-default", "openclaw-family"]);
    let default = show(&m, "openclaw-default");
    assert_eq!(
        field(&default, "timeout"),
        ["1800000 ms (kill grace 2000 ms)"]
    );
    assert_eq!(field(&default, "network"), ["none"]);
    assert_eq!(field(&show(&m, "openclaw-family"), "network"), ["bridge"]);
}

#[test]
fn dry_run_writes_nothing_and_reports_what_a_write_would() {
    let m = Migrate::new();
    let config = fixture("03-per-agent-binds.agents-list.openclaw.json");
    let json = |out: &Output| {
        let mut v: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
        let obj = v.as_object_mut().unwrap();
        (obj.remove("dry_run"), obj.remove("written"), v)
    };
    let dry = m.run(&config, &["--dry-run", "--json"]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(!m.out().exists());
    let real = m.run(&config, &["--json"]);
    assert_eq!(real.status.code(), Some(0), "{}", stderr(&real));
    let (dry_flag, dry_written, dry_report) = json(&dry);
    let (real_flag, real_written, real_report) = json(&real);
    assert_eq!(
        (dry_flag, real_flag),
        (Some(true.into()), Some(false.into()))
    );
    assert_eq!(dry_written, Some(serde_json::json!([])));
    assert_eq!(real_written.unwrap().as_array().unwrap().len(), 4);
    assert_eq!(dry_report, real_report);
    // The text report says what would be written, and what already exists.
    let dry = m.run(&config, &["--dry-run"]);
    assert!(
        stdout(&dry).contains("dry run: nothing written"),
        "{}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains("  config.toml (exists: --force replaces it)"),
        "{}",
        stdout(&dry)
    );
}

#[test]
fn existing_files_are_replaced_only_with_force() {
    let m = Migrate::new();
    let config = fixture("01-minimal.openclaw.json5");
    assert_eq!(m.run(&config, &[]).status.code(), Some(0));
    std::fs::write(m.out().join("config.toml"), "# mine\n").unwrap();
    let again = m.run(&config, &[]);
    assert_eq!(again.status.code(), Some(EXIT_ERROR));
    assert!(
        stderr(&again).contains("already exist(s); nothing was written (--force replaces them)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(m.read("config.toml"), "# mine\n");
    let forced = m.run(&config, &["--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    assert!(m
        .read("config.toml")
        .contains("default_profile = \"openclaw-default\""));
}

#[test]
fn unreadable_or_malformed_configs_are_errors() {
    let m = Migrate::new();
    let dir = m.env.dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.join("missing.json"), "cannot read"),
        (write(dir, "bad.json5", "{ agents: "), "not JSON5"),
        (
            write(dir, "dup.json5", "{ gateway: {}, gateway: {} }"),
            "duplicate key \"gateway\"",
        ),
        (write(dir, "list.json5", "[]"), "not an object"),
        (
            write(dir, "deep.json5", &"[".repeat(100_000)),
            "nested deeper than 64 levels",
        ),
        (
            write(
                dir,
                "big.json5",
                &format!("{{a: \"{}\"}}", "x".repeat(1 << 20)),
            ),
            "larger than 1048576 bytes",
        ),
    ];
    for (path, problem) in cases {
        let out = m.run(&path, &[]);
        assert_eq!(out.status.code(), Some(EXIT_ERROR), "{}", path.display());
        assert!(
            stderr(&out).contains(problem),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
    }
    assert!(!m.out().exists());
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
