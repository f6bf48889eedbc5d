//! Shared helpers: run the real binary in an isolated state dir, probe the engine.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_stockade");

/// Whether a Docker engine answers. Probed once per test binary.
pub fn docker_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.APIVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// An engine address where nothing listens: the native pass runs with it, so no engine is
/// involved however the machine is set up.
pub const NOWHERE: &str = "unix:///nonexistent.sock";

/// Whether the native backend works here (root, or a delegated cgroup v2 with user
/// namespaces), with the base image's layer built for it. Probed once per test binary.
pub fn native_available() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let probed = AVAILABLE.get_or_init(|| {
        let env = Env::native();
        let built = env
            .cmd()
            .args(["image", "build", "--include"])
            .args(TEST_INCLUDE)
            .output()
            .expect("run stockade image build");
        if !built.status.success() {
            return Err(String::from_utf8_lossy(&built.stderr).into_owned());
        }
        let out = env.exec(&[], "true");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    match probed {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("STOCKADE_REQUIRE_NATIVE").as_deref() == Ok("1") {
                panic!("the native backend does not work here, and STOCKADE_REQUIRE_NATIVE=1 requires it: {why}");
            }
            eprintln!("skipped: the native backend does not work here ({}); set STOCKADE_REQUIRE_NATIVE=1 to fail instead", why.trim());
            false
        }
    }
}

/// Skips the test (returns) when there is no engine, unless STOCKADE_REQUIRE_DOCKER=1 demands one.
#[macro_export]
macro_rules! require_docker {
    () => {
        if !$crate::suite::common::docker_available() {
            if std::env::var("STOCKADE_REQUIRE_DOCKER").as_deref() == Ok("1") {
                panic!("no Docker engine, and STOCKADE_REQUIRE_DOCKER=1 requires one");
            }
            eprintln!("skipped: no Docker engine reachable (set STOCKADE_REQUIRE_DOCKER=1 to fail instead)");
            return;
        }
        $crate::suite::common::ensure_base_image();
    };
}

/// The tools every test build of the base image includes (each build gives the same image, so
/// tests that build it never change what the others run in).
pub const TEST_INCLUDE: [&str; 1] = ["python3"];

/// Builds the base image once per test binary, so parallel tests do not race to build it.
pub fn ensure_base_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let env = Env::new();
        let out = env
            .cmd()
            .args(["image", "build", "--include"])
            .args(TEST_INCLUDE)
            .output()
            .expect("run stockade image build");
        assert!(
            out.status.success(),
            "stockade image build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// An isolated stockade environment: its own state, config and profiles directories, and the
/// backend its commands use.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The native backend with no engine reachable, else the Docker backend (named, so a
    /// faulty engine never makes `auto` pick the other one).
    pub native: bool,
}

impl Env {
    /// Commands run on the Docker backend.
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("stockade-test-")
                .tempdir()
                .expect("tempdir"),
            native: false,
        }
    }

    /// Commands run with `DOCKER_HOST` pointing nowhere and the backend left to `auto`: the
    /// native backend, as on a machine with no engine.
    pub fn native() -> Env {
        let mut env = Env::new();
        env.native = true;
        env
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn profiles_dir(&self) -> PathBuf {
        self.config_home().join("stockade").join("profiles")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.state_dir().join("audit.jsonl")
    }

    /// Writes `config.toml`.
    pub fn write_config(&self, text: &str) {
        let dir = self.config_home().join("stockade");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }

    /// Writes a profile file into the profiles directory and returns its path.
    pub fn write_profile(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.profiles_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("STOCKADE_STATE_DIR", self.state_dir())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env_remove("STOCKADE_CONFIG")
            .env_remove("STOCKADE_PROFILES_DIR")
            .stdin(Stdio::null());
        if self.native {
            cmd.env_remove("STOCKADE_BACKEND")
                .env("DOCKER_HOST", NOWHERE);
        } else {
            cmd.env("STOCKADE_BACKEND", "docker");
        }
        cmd
    }

    /// `stockade exec [extra...] -- command`.
    pub fn exec(&self, extra: &[&str], command: &str) -> Output {
        self.cmd()
            .arg("exec")
            .args(extra)
            .arg("--")
            .arg(command)
            .output()
            .expect("run stockade")
    }

    /// `stockade exec --json ...` parsed.
    pub fn exec_json(&self, extra: &[&str], command: &str) -> (i32, serde_json::Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.exec(&args, command);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "not one JSON object ({e}): stdout={stdout:?} stderr={:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        validate_result(&value);
        (out.status.code().unwrap_or(-1), value)
    }

    /// The audit log's records, parsed.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.audit_path())
    }

    /// Removes every session container this environment created.
    pub fn cleanup_sessions(&self) {
        let _ = self
            .cmd()
            .args(["session", "prune", "--idle", "0s"])
            .output();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let sandboxes =
            self.state_dir().join("sessions").exists() || self.state_dir().join("native").exists();
        if sandboxes && (self.native || docker_available()) {
            self.cleanup_sessions();
        }
    }
}

/// Checks one `exec --json` result against docs/exec-result.schema.json.
pub fn validate_result(value: &serde_json::Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let text = include_str!("../../docs/exec-result.schema.json");
        jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap()
    });
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "not an exec result: {errors:?}\n{value:#}"
    );
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// A session id unique to this test process and call site.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Names of containers (any state) that carry `label`.
pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The default profile's text, its seccomp file named by absolute path (so that a variant can
/// live in any directory).
pub fn default_profile_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/default.toml"
    ))
    .unwrap()
    .replace(
        "seccomp = \"seccomp/default.json\"",
        concat!(
            "seccomp = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/seccomp/default.json\""
        ),
    )
}

impl Env {
    /// Writes a variant of the default profile: each `(from, to)` replaces text, and `extra` is
    /// appended (TOML tables go last). Returns its name.
    pub fn write_variant(&self, name: &str, edits: &[(&str, &str)], extra: &str) -> String {
        let mut text = default_profile_text();
        for (from, to) in edits {
            assert!(text.contains(from), "default.toml has no {from:?}");
            text = text.replace(from, to);
        }
        text.push_str(extra);
        self.write_profile(name, &text);
        name.to_string()
    }

    /// The host directory of a session's agent channel.
    pub fn session_dir(&self, session: &str) -> PathBuf {
        self.state_dir().join("sessions").join(session)
    }
}

/// Runs `cmd` to completion, but kills it and fails the test if it takes longer than `bound`:
/// a does-not-hang check (the bound is generous), never a speed claim.
pub fn output_within(cmd: &mut Command, bound: std::time::Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = std::time::Instant::now() + bound;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() >= until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} still ran after {bound:?}: it hangs. stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs stockade to completion and returns its output and peak resident memory (KiB).
///
/// The peak is the kernel's `VmHWM` of the process after it exec'd, sampled until it exits
/// (it only grows, so the last sample is the peak up to then). `wait4`'s `ru_maxrss` would
/// not do: it also counts the test process's memory, shared with the child before its exec.
pub fn run_measured(mut cmd: Command) -> (std::process::Output, u64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let hwm = std::fs::read_to_string(&status_path)
                    .ok()
                    .filter(|s| !s.contains("Name:\tall"))
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                    });
                peak = peak.max(hwm.unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, sampler.join().unwrap())
}

/// Waits for a spawned child's output (read as it comes, so a full pipe never stalls it); a
/// child that hangs fails the test (after a generous bound: a does-not-hang check, never a
/// speed claim).
pub fn wait_output(child: &mut std::process::Child) -> Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() >= until {
            let _ = child.kill();
            panic!("the child still ran after 180 s: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `cmd` with `input` as its whole stdin and returns its output (bounded like
/// [`wait_output`]).
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // A command that exits without reading gets EPIPE here: its output says why.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    wait_output(&mut child)
}
