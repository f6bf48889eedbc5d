//! Migration from another agent sandbox's configuration to stockade profiles and a config.
//!
//! [`openclaw::plan`] reads an OpenClaw (ex-Moltbot, ex-Clawdbot) config and returns a
//! [`Migration`]: the files to write and a [`Report`] that accounts for every key of the input,
//! each one mapped, approximated, ignored, refused or unknown, with the reason. Planning writes
//! nothing; every profile it plans has been loaded through stockade's own profile parser.
//! [`write()`] writes a migration that is not blocked and loads each file back. See
//! docs/migrate.md.

pub mod draft;
pub mod json5;
pub mod openclaw;
mod write;

use std::path::PathBuf;

use serde::Serialize;

use crate::profile::ProfileError;
use crate::seccomp::LintReport;

pub use write::write;

/// Config files larger than this are refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = json5::MAX_INPUT_BYTES as u64;

/// What became of one key of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Carried over with the same meaning.
    Mapped,
    /// Carried over with another meaning, never a weaker sandbox; the reason says how.
    Approximated,
    /// Not carried over (not sandbox configuration, no counterpart, or a secret), with why.
    Ignored,
    /// A value stockade will not run: the migration is refused unless `--allow-unsafe`, which
    /// writes stockade's safe value in its place.
    Refused,
    /// A key this migration does not know in a block whose keys decide the sandbox: it could be
    /// a restriction, so it refuses like [`Status::Refused`].
    Unknown,
}

impl Status {
    /// Whether this status stops the migration (unless unsafe output is allowed).
    pub fn blocks(self) -> bool {
        matches!(self, Status::Refused | Status::Unknown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Mapped => "mapped",
            Status::Approximated => "approximated",
            Status::Ignored => "ignored",
            Status::Refused => "refused",
            Status::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One key of the input and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The key as written, e.g. `agents.list[1].sandbox.docker.network`.
    pub key: String,
    /// The value, shown compactly; absent for secrets and for subtrees taken as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub status: Status,
    pub reason: String,
    /// For a legacy key, the key that replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_of: Option<String>,
}

/// The entries of one block of the input: the global sandbox defaults, one agent, or the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub title: String,
    /// The agent's id, for an agent's section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The profile this block's sandbox becomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub entries: Vec<Entry>,
}

/// One profile the migration writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    /// Relative to the output directory.
    pub file: String,
    /// The agents that run under it (`agents.defaults` for the global block).
    pub used_by: Vec<String>,
    /// `stockade profile lint`'s findings for it, on this host.
    pub lint: LintReport,
}

/// How many entries have each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub mapped: usize,
    pub approximated: usize,
    pub ignored: usize,
    pub refused: usize,
    pub unknown: usize,
}

/// Everything the migration did or would do, key by key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The input, as the caller named it.
    pub source: String,
    /// Which of OpenClaw's config shapes the input uses.
    pub layout: String,
    pub sections: Vec<Section>,
    pub profiles: Vec<ProfileSummary>,
    /// The profile the written `config.toml` makes the default.
    pub default_profile: String,
    /// The files a write creates, relative to the output directory.
    pub files: Vec<String>,
    pub counts: Counts,
    pub allow_unsafe: bool,
    /// Refused or unknown keys and no `--allow-unsafe`: nothing may be written.
    pub blocked: bool,
}

impl Report {
    /// Every entry that blocks the migration, with its section's title.
    pub fn blocking(&self) -> impl Iterator<Item = (&Section, &Entry)> {
        self.sections
            .iter()
            .flat_map(|s| s.entries.iter().map(move |e| (s, e)))
            .filter(|(_, e)| e.status.blocks())
    }
}

/// What a file is, which decides nothing but the order files are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    Seccomp,
    Profile,
    Config,
}

/// One file to write, relative to the output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub kind: FileKind,
    pub contents: String,
}

/// A planned migration: the report, and the files a write creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub report: Report,
    pub files: Vec<PlannedFile>,
}

/// What the migration may know of the host it runs on; the face fills it in.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The home directory `~` expands to in OpenClaw's paths (workspaces, bind sources).
    pub home: Option<PathBuf>,
    /// Engine sockets beyond the well-known ones, refused as bind sources and as owners.
    pub engine_sockets: Vec<PathBuf>,
}

/// How to migrate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Plan (and allow writing) even when keys are refused: each refused value is replaced by
    /// stockade's safe one and the report keeps the refusal.
    pub allow_unsafe: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: larger than {limit} bytes")]
    TooLarge { file: String, limit: u64 },
    #[error("{file}: {source}")]
    Parse {
        file: String,
        #[source]
        source: json5::Json5Error,
    },
    #[error("{file}: the top level is {kind}, not an object: not an OpenClaw config")]
    NotAnObject { file: String, kind: &'static str },
    #[error("{file}: both `{first}` and `{second}` are set; OpenClaw versions read one or the other, so which sandbox was meant is unclear: keep one")]
    Ambiguous {
        file: String,
        first: String,
        second: String,
    },
    #[error("{file}: `{key}`: {problem}")]
    Agent {
        file: String,
        key: String,
        problem: String,
    },
    #[error("`{key}` = {path:?}: {problem}")]
    Seccomp {
        key: String,
        path: String,
        problem: String,
    },
    #[error("{}: already exist(s); nothing was written (--force replaces them)", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Exists { paths: Vec<PathBuf> },
    #[error("{path}: {problem}")]
    OutDir { path: PathBuf, problem: String },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: written, but it does not load back (the files stay for inspection): {source}"
    )]
    LoadBack {
        path: PathBuf,
        #[source]
        source: ProfileError,
    },
    #[error("{path}: written, but it does not load back as a stockade config: {message}")]
    ConfigLoadBack { path: PathBuf, message: String },
    #[error("planned profile {name} does not load: {source}")]
    Invalid {
        name: String,
        #[source]
        source: ProfileError,
    },
    #[error(
        "the migration is refused ({reasons} reason(s)); nothing is written without --allow-unsafe"
    )]
    Blocked { reasons: usize },
}

/// Reads a config file, capped at [`MAX_CONFIG_BYTES`].
pub fn read_config(path: &std::path::Path) -> Result<String, MigrateError> {
    use std::io::Read as _;
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| MigrateError::Read {
        file: file.clone(),
        source,
    })?;
    let mut bytes = Vec::new();
    // One byte over the cap is enough to know the file is too large.
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| MigrateError::Read {
            file: file.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(MigrateError::TooLarge {
            file,
            limit: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| MigrateError::Read {
        file,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}
