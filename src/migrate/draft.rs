//! A stockade profile as a migration builds it, and its TOML text. Each value carries where it
//! came from; the text says so in a comment beside it, so a profile read alone still explains
//! itself. Two drafts are equal when their values are, wherever the values came from.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The base image alias, as profiles write it.
pub const BASE_IMAGE: &str = crate::profile::BASE_IMAGE_ALIAS;
/// The user stockade's base image runs as: outside every host account range.
pub const SANDBOX_USER: &str = "65532:65532";
/// stockade's default seccomp file (Docker's default minus the ptrace family).
pub const DEFAULT_SECCOMP: &str = "builtin:seccomp/default.json";
/// The names `--env` may set in stockade's default profile.
pub const DEFAULT_ENV_ALLOW: &[&str] = &["LANG", "LC_*", "TZ", "TERM", "HOME", "PATH"];
/// Values of stockade's default profile for what a migrated profile must have and the source
/// left unset.
pub const DEFAULT_PIDS: i64 = 256;
pub const DEFAULT_MEMORY: &str = "512m";
pub const DEFAULT_CPUS: f64 = 1.0;
pub const DEFAULT_KILL_GRACE: &str = "2s";
pub const DEFAULT_OUTPUT_CAP: &str = "1m";

/// A value and where it came from (a key of the input, or why a default was used).
#[derive(Debug, Clone)]
pub struct Field<T> {
    pub value: T,
    pub from: String,
}

impl<T> Field<T> {
    pub fn new(value: T, from: impl Into<String>) -> Self {
        Field {
            value,
            from: from.into(),
        }
    }
}

impl<T: PartialEq> PartialEq for Field<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// The seccomp file a profile names.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// A file shipped in the binary (`builtin:...`).
    Builtin(&'static str),
    /// A host file, read and validated, to be copied beside the profile.
    Copied {
        /// The key that named it.
        key: String,
        /// Where it was read from.
        source: PathBuf,
        /// The copy's file name under `profiles/seccomp/` (set when the migration is planned).
        file_name: String,
        json: String,
    },
}

/// A host path bound into the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// Why it is written commented out (a source that does not exist on this host), if it is.
    pub disabled: Option<String>,
}

/// A writable tmpfs mount: path and size (`64m`, `256m,exec`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tmpfs {
    pub path: String,
    pub size: String,
}

/// A stockade profile being built.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub image: Field<String>,
    pub user: Field<String>,
    pub workdir: Field<String>,
    pub read_only_root: Field<bool>,
    pub network: Field<String>,
    pub seccomp: Field<Seccomp>,
    pub env_allow: Field<Vec<String>>,
    pub tmpfs: Field<Vec<Tmpfs>>,
    pub pids: Field<i64>,
    pub memory: Field<String>,
    pub cpus: Field<f64>,
    pub timeout_secs: Field<u64>,
    pub binds: Vec<Field<Bind>>,
    /// `[unsafe] permissive_seccomp`: only ever set by an explicit `--allow-unsafe`.
    pub permissive_seccomp: bool,
    /// Secret names found in the source's environment, for the header (never their values).
    pub secrets: Vec<String>,
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A comment's text on one line, whatever the input held.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn line(out: &mut String, assignment: String, from: &str) {
    if from.is_empty() {
        let _ = writeln!(out, "{assignment}");
    } else {
        let _ = writeln!(out, "{assignment:<40} # {}", comment(from));
    }
}

impl Draft {
    /// The seccomp reference as the profile file writes it (relative to the profile).
    pub fn seccomp_reference(&self) -> String {
        match &self.seccomp.value {
            Seccomp::Builtin(name) => name.to_string(),
            Seccomp::Copied { file_name, .. } => format!("seccomp/{file_name}"),
        }
    }

    /// The profile's TOML text. `header` lines become the leading comment; `seccomp` is the
    /// reference to write (relative to the profile file, or absolute to validate in place).
    pub fn render(&self, header: &[String], description: &str, seccomp: &str) -> String {
        let mut out = String::new();
        for h in header {
            let _ = writeln!(out, "# {}", comment(h));
        }
        for name in &self.secrets {
            let _ = writeln!(
                out,
                "# secret {}: not stored here; `stockade secret set {}` and `stockade exec --secret {}`",
                comment(name),
                comment(name),
                comment(name)
            );
        }
        line(
            &mut out,
            format!("description = {}", quoted(description)),
            "",
        );
        line(
            &mut out,
            format!("image = {}", quoted(&self.image.value)),
            &self.image.from,
        );
        line(
            &mut out,
            format!("user = {}", quoted(&self.user.value)),
            &self.user.from,
        );
        line(
            &mut out,
            format!("workdir = {}", quoted(&self.workdir.value)),
            &self.workdir.from,
        );
        line(
            &mut out,
            format!("read_only_root = {}", self.read_only_root.value),
            &self.read_only_root.from,
        );
        line(
            &mut out,
            format!("network = {}", quoted(&self.network.value)),
            &self.network.from,
        );
        line(
            &mut out,
            "no_new_privileges = true".to_string(),
            "OpenClaw sets no-new-privileges on every sandbox too",
        );
        line(&mut out, "elevated = false".to_string(), "");
        line(
            &mut out,
            format!("seccomp = {}", quoted(seccomp)),
            &self.seccomp.from,
        );
        let env: Vec<String> = self.env_allow.value.iter().map(|e| quoted(e)).collect();
        line(
            &mut out,
            format!("env_allow = [{}]", env.join(", ")),
            &self.env_allow.from,
        );
        let _ = writeln!(out);
        if !self.tmpfs.from.is_empty() {
            let _ = writeln!(out, "# {}", comment(&self.tmpfs.from));
        }
        let _ = writeln!(out, "[tmpfs]");
        for t in &self.tmpfs.value {
            let _ = writeln!(out, "{} = {}", quoted(&t.path), quoted(&t.size));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "# every capability dropped, none added");
        let _ = writeln!(out, "[capabilities]");
        let _ = writeln!(out, "drop = [\"ALL\"]");
        let _ = writeln!(out, "add = []");
        let _ = writeln!(out);
        let _ = writeln!(out, "[limits]");
        line(
            &mut out,
            format!("pids = {}", self.pids.value),
            &self.pids.from,
        );
        line(
            &mut out,
            format!("memory = {}", quoted(&self.memory.value)),
            &self.memory.from,
        );
        line(
            &mut out,
            format!("cpus = {:?}", self.cpus.value),
            &self.cpus.from,
        );
        line(
            &mut out,
            format!("timeout = \"{}s\"", self.timeout_secs.value),
            &self.timeout_secs.from,
        );
        line(
            &mut out,
            format!("kill_grace = {}", quoted(DEFAULT_KILL_GRACE)),
            "stockade's default",
        );
        line(
            &mut out,
            format!("output_cap = {}", quoted(DEFAULT_OUTPUT_CAP)),
            "stockade's default",
        );
        for b in &self.binds {
            let _ = writeln!(out);
            let prefix = match &b.value.disabled {
                None => {
                    let _ = writeln!(out, "# {}", comment(&b.from));
                    ""
                }
                Some(why) => {
                    let _ = writeln!(out, "# {}", comment(&b.from));
                    let _ = writeln!(out, "# not bound: {}", comment(why));
                    "# "
                }
            };
            let _ = writeln!(out, "{prefix}[[binds]]");
            let _ = writeln!(out, "{prefix}source = {}", quoted(&b.value.source));
            let _ = writeln!(out, "{prefix}target = {}", quoted(&b.value.target));
            let _ = writeln!(out, "{prefix}read_only = {}", b.value.read_only);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "[policy]");
        let _ = writeln!(out, "allow_rules = []");
        if self.permissive_seccomp {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "[unsafe]                                 # written because of --allow-unsafe"
            );
            let _ = writeln!(out, "permissive_seccomp = true");
        }
        out
    }
}

/// The `config.toml` a migration writes: elevation stays off, the migrated default profile is
/// the default.
pub fn render_config(header: &[String], default_profile: &str) -> String {
    let mut out = String::new();
    for h in header {
        let _ = writeln!(out, "# {}", comment(h));
    }
    let _ = writeln!(out, "allow_elevation = false");
    let _ = writeln!(out, "elevated_profile = \"elevated\"");
    let _ = writeln!(out, "default_profile = {}", quoted(default_profile));
    out
}
