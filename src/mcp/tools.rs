//! The tools an MCP host sees: their names, descriptions, input schemas (from the argument
//! types below), output schemas and annotations. No tool changes profiles, secrets, tokens or
//! network policy: a model picks a profile by name at most.

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// How long a sandbox lives when `ttl` is not given.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// A sandbox nothing ran in for this long is removed.
pub const IDLE_TIMEOUT_SECS: u64 = 30 * 60;
/// The most `file_read` returns in one call (and its default `limit`).
pub const MAX_READ_BYTES: u64 = 1 << 20;
/// The largest file `file_read` reads from (larger ones: `exec` with `head`, `tail`, `dd`).
pub const MAX_READ_FILE_BYTES: u64 = 16 << 20;
/// The largest `content` `file_write` takes (decoded).
pub const MAX_WRITE_BYTES: usize = 8 << 20;
/// The longest `wait` of `exec_poll`.
pub const MAX_POLL_WAIT_SECS: u64 = 60;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxCreate {
    /// The name of a profile this server offers (never a path). Default: the configured one.
    pub profile: Option<String>,
    /// Seconds the sandbox lives before it is removed, whatever happens (default 3600).
    pub ttl: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxRef {
    /// A sandbox id from sandbox_create.
    pub sandbox_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxExtend {
    pub sandbox_id: String,
    /// Seconds from now the sandbox lives.
    pub ttl: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// Run in this sandbox (files and state persist between calls). Without it the command
    /// runs in a one-shot sandbox, removed afterwards.
    pub sandbox_id: Option<String>,
    /// Shell text, run as `bash -c`. Give this or `argv`.
    pub command: Option<String>,
    /// A program and its arguments, run without a shell. Give this or `command`.
    pub argv: Option<Vec<String>>,
    /// The working directory (absolute).
    pub workdir: Option<String>,
    /// Environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text fed to the command's stdin, then end of file.
    pub stdin: Option<String>,
    /// Seconds before the command is killed (default: the profile's; at most 3600).
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBackground {
    /// The sandbox to run in (background executions need one).
    pub sandbox_id: String,
    pub command: Option<String>,
    pub argv: Option<Vec<String>>,
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text fed to stdin first (then end of file, unless `stdin_open`).
    pub stdin: Option<String>,
    /// Keep stdin open for exec_write_stdin.
    #[serde(default)]
    pub stdin_open: bool,
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecPoll {
    pub exec_id: String,
    /// Seconds to wait for the end before answering (at most 60; default 0).
    pub wait: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecWriteStdin {
    pub exec_id: String,
    /// Text written to the command's stdin.
    #[serde(default)]
    pub data: String,
    /// Close stdin after writing.
    #[serde(default)]
    pub eof: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRef {
    pub exec_id: String,
}

/// How file content is carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text (a file that is not UTF-8 is refused: read it as base64).
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRead {
    pub sandbox_id: String,
    /// An absolute path in the sandbox.
    pub path: String,
    /// The first byte to return (default 0).
    pub offset: Option<u64>,
    /// Bytes to return at most (default and at most 1 MiB).
    pub limit: Option<u64>,
    pub encoding: Option<Encoding>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWrite {
    pub sandbox_id: String,
    /// An absolute path in the sandbox (under a writable directory such as /workspace or /tmp).
    pub path: String,
    /// The whole new content of the file (at most 8 MiB).
    pub content: String,
    pub encoding: Option<Encoding>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileList {
    pub sandbox_id: String,
    /// An absolute directory path in the sandbox.
    pub path: String,
}

fn input<T: JsonSchema>() -> Arc<JsonObject> {
    let schema = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<T>();
    match serde_json::to_value(schema) {
        Ok(Value::Object(mut o)) => {
            o.remove("$schema");
            o.remove("title");
            Arc::new(o)
        }
        _ => Arc::new(JsonObject::new()),
    }
}

fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(o) => Arc::new(o),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The exec result's schema (docs/exec-result.schema.json), as an output schema.
pub fn exec_result_schema() -> Value {
    let mut schema: Value =
        serde_json::from_str(include_str!("../../docs/exec-result.schema.json"))
            .unwrap_or_default();
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    schema
}

fn sandbox_schema() -> Value {
    json!({
        "type": "object",
        "required": ["sandbox_id", "profile", "created_at", "expires_at"],
        "properties": {
            "sandbox_id": {"type": "string"},
            "profile": {"type": "string"},
            "created_at": {"type": "string"},
            "expires_at": {"type": ["string", "null"]},
            "state": {"type": "string"},
            "busy": {"type": "boolean"},
        },
    })
}

fn annotations(
    title: &str,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
) -> ToolAnnotations {
    ToolAnnotations::with_title(title)
        .read_only(read_only)
        .destructive(destructive)
        .idempotent(idempotent)
        // A sandbox has no network: nothing a tool does reaches outside it.
        .open_world(false)
}

fn tool(
    name: &'static str,
    description: String,
    input: Arc<JsonObject>,
    output: Value,
    annotations: ToolAnnotations,
) -> Tool {
    Tool::new(name, description, input)
        .with_raw_output_schema(object(output))
        .with_annotations(annotations)
}

/// Every tool, in the order a host lists them.
pub fn all() -> Vec<Tool> {
    let job_schema = json!({
        "type": "object",
        "required": ["exec_id", "state"],
        "properties": {
            "exec_id": {"type": "string"},
            "sandbox_id": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": ["running", "done", "killing"]},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "result": {"anyOf": [exec_result_schema(), {"type": "null"}]},
        },
    });
    vec![
        tool(
            "sandbox_create",
            format!(
                "Create a warm sandbox (a locked-down container with no network) to run many \
                 commands in, keeping files between them. Retention: it is removed after `ttl` \
                 seconds (default {DEFAULT_TTL_SECS}), after {} minutes without a command, by \
                 sandbox_destroy, or when a stdio MCP session ends; files in it go with it. \
                 Returns its sandbox_id.",
                IDLE_TIMEOUT_SECS / 60
            ),
            input::<SandboxCreate>(),
            sandbox_schema(),
            annotations("Create a sandbox", false, false, false),
        ),
        tool(
            "sandbox_list",
            "List your sandboxes, with when each expires.".into(),
            input::<NoArgs>(),
            json!({
                "type": "object",
                "required": ["sandboxes"],
                "properties": {"sandboxes": {"type": "array", "items": sandbox_schema()}},
            }),
            annotations("List sandboxes", true, false, true),
        ),
        tool(
            "sandbox_destroy",
            "Remove a sandbox and everything in it; commands running in it are ended.".into(),
            input::<SandboxRef>(),
            json!({
                "type": "object",
                "required": ["sandbox_id", "destroyed"],
                "properties": {"sandbox_id": {"type": "string"}, "destroyed": {"type": "boolean"}},
            }),
            annotations("Destroy a sandbox", false, true, true),
        ),
        tool(
            "sandbox_extend",
            "Set a sandbox to expire `ttl` seconds from now.".into(),
            input::<SandboxExtend>(),
            sandbox_schema(),
            annotations("Extend a sandbox", false, false, true),
        ),
        tool(
            "exec",
            "Run a command in a sandbox and wait for it: shell text as `command` (bash -c) or a \
             program and its arguments as `argv`. Without sandbox_id it runs in a one-shot \
             sandbox. The result has exit_code, stdout and stderr; a non-zero exit is a normal \
             result. The command is checked first: a sandbox escape or host attack is denied \
             and not run. The sandbox has no network."
                .into(),
            input::<Exec>(),
            exec_result_schema(),
            annotations("Run a command", false, true, false),
        ),
        tool(
            "exec_background",
            "Start a command in a sandbox without waiting for it; returns an exec_id for \
             exec_poll, exec_write_stdin and exec_kill."
                .into(),
            input::<ExecBackground>(),
            job_schema.clone(),
            annotations("Start a command", false, true, false),
        ),
        tool(
            "exec_poll",
            "The output so far of a background command, and its result once it ended (wait up \
             to `wait` seconds for the end)."
                .into(),
            input::<ExecPoll>(),
            job_schema.clone(),
            annotations("Poll a command", true, false, true),
        ),
        tool(
            "exec_write_stdin",
            "Write text to the stdin of a background command started with stdin_open.".into(),
            input::<ExecWriteStdin>(),
            json!({
                "type": "object",
                "required": ["written", "eof"],
                "properties": {"written": {"type": "integer"}, "eof": {"type": "boolean"}},
            }),
            annotations("Write to a command's stdin", false, false, false),
        ),
        tool(
            "exec_kill",
            "End a background command (its whole process tree, inside the sandbox).".into(),
            input::<ExecRef>(),
            job_schema,
            annotations("Kill a command", false, true, true),
        ),
        tool(
            "file_read",
            format!(
                "Read a file in a sandbox: `limit` bytes (at most {} KiB) from `offset`, as utf8 \
                 text or base64. Files over {} MiB: use exec with head, tail or dd.",
                MAX_READ_BYTES >> 10,
                MAX_READ_FILE_BYTES >> 20
            ),
            input::<FileRead>(),
            json!({
                "type": "object",
                "required": ["path", "size", "offset", "content", "encoding", "more"],
                "properties": {
                    "path": {"type": "string"},
                    "size": {"type": "integer", "description": "the whole file's size in bytes"},
                    "offset": {"type": "integer"},
                    "content": {"type": "string"},
                    "encoding": {"type": "string", "enum": ["utf8", "base64"]},
                    "more": {"type": "boolean", "description": "bytes follow what was returned"},
                },
            }),
            annotations("Read a file", true, false, true),
        ),
        tool(
            "file_write",
            format!(
                "Write a whole file in a sandbox (created or replaced), from utf8 text or \
                 base64; at most {} MiB.",
                MAX_WRITE_BYTES >> 20
            ),
            input::<FileWrite>(),
            json!({
                "type": "object",
                "required": ["path", "bytes", "sha256"],
                "properties": {
                    "path": {"type": "string"},
                    "bytes": {"type": "integer"},
                    "sha256": {"type": "string"},
                },
            }),
            annotations("Write a file", false, true, true),
        ),
        tool(
            "file_list",
            "List a directory in a sandbox: each entry's name, size and type.".into(),
            input::<FileList>(),
            json!({
                "type": "object",
                "required": ["path", "entries", "truncated"],
                "properties": {
                    "path": {"type": "string"},
                    "entries": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "size", "type"],
                        "properties": {
                            "name": {"type": "string"},
                            "size": {"type": "integer"},
                            "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
                        },
                    }},
                    "truncated": {"type": "boolean"},
                },
            }),
            annotations("List a directory", true, false, true),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_input_and_output_schema_and_annotations() {
        let tools = all();
        assert_eq!(tools.len(), 12);
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            let out = t.output_schema.as_ref().expect("an output schema");
            assert_eq!(out.get("type"), Some(&json!("object")), "{}", t.name);
            assert!(t.annotations.is_some(), "{}", t.name);
        }
        let exec = tools.iter().find(|t| t.name == "exec").unwrap();
        let props = exec.input_schema["properties"].as_object().unwrap();
        for key in [
            "sandbox_id",
            "command",
            "argv",
            "workdir",
            "env",
            "stdin",
            "timeout",
        ] {
            assert!(props.contains_key(key), "exec lacks {key}");
        }
    }

    #[test]
    fn no_tool_takes_a_profile_path_secret_or_network_setting() {
        for t in all() {
            let props = t
                .input_schema
                .get("properties")
                .cloned()
                .unwrap_or_default();
            for key in ["secrets", "network", "token", "seccomp", "elevated"] {
                assert!(props.get(key).is_none(), "{} takes {key}", t.name);
            }
        }
    }
}
