//! What each tool does, through the helpers the HTTP API's routes use (so both faces create,
//! run, copy and remove the same way) and the one service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::tools::{self, Encoding};
use super::{done, failed, Caller, Mcp};
use crate::audit::{Direction, Outcome};
use crate::backend::{Backend, Sink, Stream};
use crate::cancel::{Cancel, Reason};
use crate::exec::ExecResult;
use crate::files::{CopyRequest, Host};
use crate::server::api::{self, ExecBody, OnDrop, Span};
use crate::server::error::ApiError;
use crate::server::execs::Job;
use crate::server::sandboxes::SandboxRecord;

/// How often a progress notification may go out while output arrives.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// The output tail a progress notification carries, at most.
const PROGRESS_TAIL_BYTES: usize = 2048;

type Answer = Result<CallToolResult, CallToolResult>;

pub(super) async fn call<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    name: &str,
    arguments: Value,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    dispatch(mcp, caller, name, arguments, context)
        .await
        .unwrap_or_else(|e| e)
}

async fn dispatch<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    name: &str,
    arguments: Value,
    context: &RequestContext<RoleServer>,
) -> Answer {
    match name {
        "sandbox_create" => sandbox_create(mcp, caller, args(arguments)?).await,
        "sandbox_list" => sandbox_list(mcp, caller).await,
        "sandbox_destroy" => sandbox_destroy(mcp, caller, args(arguments)?).await,
        "sandbox_extend" => sandbox_extend(mcp, caller, args(arguments)?).await,
        "exec" => exec(mcp, caller, args(arguments)?, context).await,
        "exec_background" => exec_background(mcp, caller, args(arguments)?).await,
        "exec_poll" => exec_poll(mcp, caller, args(arguments)?).await,
        "exec_write_stdin" => exec_write_stdin(mcp, caller, args(arguments)?).await,
        "exec_kill" => exec_kill(mcp, caller, args(arguments)?).await,
        "file_read" => file_read(mcp, caller, args(arguments)?).await,
        "file_write" => file_write(mcp, caller, args(arguments)?).await,
        "file_list" => file_list(mcp, caller, args(arguments)?).await,
        other => Err(failed(format!("no tool {other:?} (see tools/list)"))),
    }
}

/// A tool's arguments, checked against its type: an unknown or mistyped one is an error that
/// names it.
fn args<T: DeserializeOwned>(arguments: Value) -> Result<T, CallToolResult> {
    serde_json::from_value(arguments).map_err(|e| {
        failed(format!(
            "the arguments do not fit this tool's input schema: {e}"
        ))
    })
}

/// An error of the shared helpers, worded for a model.
fn api_failure(e: ApiError) -> CallToolResult {
    let hint = match e.code {
        "too_many_sandboxes" => {
            " Destroy a sandbox you no longer need (sandbox_list, sandbox_destroy)."
        }
        "too_many_execs" => " Wait for one to end, or kill a background one (exec_kill).",
        "busy" => {
            " Another command is running in this sandbox; wait for it or use another sandbox."
        }
        "denied" => " The policy refuses this; do the task another way.",
        "bad_request" => " Fix the arguments and call again.",
        "shutting_down" => " The server is stopping; try again later.",
        _ => "",
    };
    failed(format!("{}.{hint}", e.message.trim_end_matches('.')))
}

fn unknown_sandbox(id: &str) -> CallToolResult {
    failed(format!(
        "no sandbox {id:?}: it expired, was destroyed, or is not yours. Call sandbox_list to see \
         yours, or sandbox_create for a new one (files in a removed sandbox are gone)."
    ))
}

fn owned<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    id: &str,
) -> Result<SandboxRecord, CallToolResult> {
    match mcp.server.registry.get(id) {
        Some(r) if caller.may_touch(&r.owner) => Ok(r),
        _ => Err(unknown_sandbox(id)),
    }
}

fn sandbox_value(record: &SandboxRecord, state: Option<(&str, bool)>) -> Value {
    let mut v = json!({
        "sandbox_id": record.id,
        "profile": record.profile,
        "created_at": api::rfc3339(record.created),
        "expires_at": record.expires.map(api::rfc3339),
    });
    if let Some((state, busy)) = state {
        v["state"] = json!(state);
        v["busy"] = json!(busy);
    }
    v
}

// ---- sandboxes -------------------------------------------------------------------------------

async fn sandbox_create<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    a: tools::SandboxCreate,
) -> Answer {
    let ttl = Duration::from_secs(a.ttl.unwrap_or(tools::DEFAULT_TTL_SECS));
    let record = api::new_sandbox(
        &mcp.server,
        &caller.owner,
        a.profile,
        Some(ttl),
        Some(Duration::from_secs(tools::IDLE_TIMEOUT_SECS)),
        Default::default(),
    )
    .await
    .map_err(api_failure)?;
    let value = sandbox_value(&record, None);
    let text = format!(
        "created sandbox {} (profile {}); it expires at {}",
        record.id,
        record.profile,
        value["expires_at"].as_str().unwrap_or("never")
    );
    Ok(done(value, text))
}

async fn sandbox_list<B: Backend>(mcp: &Mcp<B>, caller: &Caller) -> Answer {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for record in mcp.server.registry.list() {
        if record.owner != caller.owner {
            continue;
        }
        let view = api::view(&mcp.server, record.clone()).await;
        lines.push(format!(
            "{} profile={} state={} expires={}",
            record.id,
            record.profile,
            view.state,
            view.expires_at.as_deref().unwrap_or("never")
        ));
        out.push(sandbox_value(&record, Some((&view.state, view.busy))));
    }
    let text = if lines.is_empty() {
        "no sandboxes (sandbox_create makes one)".to_string()
    } else {
        lines.join("\n")
    };
    Ok(done(json!({ "sandboxes": out }), text))
}

async fn sandbox_destroy<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    a: tools::SandboxRef,
) -> Answer {
    owned(mcp, caller, &a.sandbox_id)?;
    api::remove_sandbox(&mcp.server, &a.sandbox_id).await;
    Ok(done(
        json!({ "sandbox_id": a.sandbox_id, "destroyed": true }),
        format!("destroyed sandbox {}", a.sandbox_id),
    ))
}

async fn sandbox_extend<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    a: tools::SandboxExtend,
) -> Answer {
    let mut record = owned(mcp, caller, &a.sandbox_id)?;
    let ttl = Duration::from_secs(a.ttl);
    if ttl.is_zero() || ttl > api::MAX_SANDBOX_SPAN {
        return Err(failed(format!(
            "ttl is seconds from now, more than zero and at most {}",
            api::MAX_SANDBOX_SPAN.as_secs()
        )));
    }
    record.expires = Some(crate::server::tokens::now_secs().saturating_add(a.ttl as i64));
    mcp.server
        .registry
        .put(&record)
        .map_err(|e| failed(format!("the sandbox's record cannot be written: {e}")))?;
    let value = sandbox_value(&record, None);
    let text = format!(
        "sandbox {} now expires at {}",
        record.id,
        value["expires_at"].as_str().unwrap_or("never")
    );
    Ok(done(value, text))
}

// ---- executions ------------------------------------------------------------------------------

fn exec_body(
    command: Option<String>,
    argv: Option<Vec<String>>,
    workdir: Option<String>,
    env: std::collections::BTreeMap<String, String>,
    stdin: Option<String>,
    timeout: Option<u64>,
) -> ExecBody {
    ExecBody {
        command,
        argv,
        workdir,
        env,
        stdin,
        timeout: timeout.map(Span::Seconds),
        ..Default::default()
    }
}

/// The text rendering of a result: the exit, then the output.
fn render(result: &ExecResult) -> String {
    let mut text = match result.exit_code {
        Some(code) => format!("exit {code}"),
        None => result.outcome.to_string(),
    };
    if result.truncated {
        text.push_str(" (output truncated)");
    }
    if !result.stdout.is_empty() {
        text.push_str("\n--- stdout\n");
        text.push_str(&result.stdout);
    }
    if !result.stderr.is_empty() {
        text.push_str("\n--- stderr\n");
        text.push_str(&result.stderr);
    }
    text
}

/// A result as the model should take it: a non-zero exit is data; a denial, a timeout, an
/// interruption or a stockade error is a tool error that says what to do.
fn judge(result: &ExecResult) -> CallToolResult {
    let value = serde_json::to_value(result).unwrap_or_default();
    let advice = match result.outcome {
        Outcome::Completed => return done(value, render(result)),
        Outcome::Denied => {
            let rules: Vec<&str> = result.rules.iter().map(|r| r.id.as_str()).collect();
            format!(
                "denied by policy (rules: {}): {}. Nothing ran. Do not retry this command or a \
                 disguised form of it; do the task another way.",
                rules.join(", "),
                result.error.as_deref().unwrap_or("the command matches an escape rule")
            )
        }
        Outcome::TimedOut => format!(
            "timed out after {} ms; the command was killed. Give a longer `timeout` (at most {} s), \
             or run it with exec_background and poll it.",
            result.duration_ms,
            api::MAX_EXEC_TIMEOUT.as_secs()
        ),
        Outcome::OutputLimit => "the command flooded its output past the limit and was stopped; \
                                 write the output to a file and read parts of it"
            .to_string(),
        Outcome::Interrupted => format!(
            "the command was interrupted ({}); it did not finish.",
            result.interrupted.as_deref().unwrap_or("cancelled")
        ),
        Outcome::Error => format!(
            "stockade could not run the command: {}",
            result.error.as_deref().unwrap_or("unknown error")
        ),
    };
    let mut answer = CallToolResult::structured_error(value);
    answer.content = vec![rmcp::model::ContentBlock::text(format!(
        "{advice}\n{}",
        render(result)
    ))];
    answer
}

/// Output kept for progress notifications: its tail, and how much came.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    total: u64,
}

struct TailSink(Arc<Mutex<Tail>>);

impl Sink for TailSink {
    fn write(&mut self, _stream: Stream, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.total += bytes.len() as u64;
        tail.bytes.extend_from_slice(bytes);
        let over = tail.bytes.len().saturating_sub(PROGRESS_TAIL_BYTES);
        tail.bytes.drain(..over);
    }
}

async fn exec<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    a: tools::Exec,
    context: &RequestContext<RoleServer>,
) -> Answer {
    let record = match &a.sandbox_id {
        Some(id) => Some(owned(mcp, caller, id)?),
        None => None,
    };
    let (session, profile) = match &record {
        Some(r) => (Some(r.id.as_str()), Some(r.profile.clone())),
        None => (None, None),
    };
    let body = exec_body(a.command, a.argv, a.workdir, a.env, a.stdin, a.timeout);
    let prepared = api::prepare(&body, session, profile).map_err(api_failure)?;
    let (canceller, cancel) = Cancel::new();
    let slot = mcp
        .server
        .run_slot(&caller.owner, session, canceller.clone())
        .map_err(api_failure)?;
    // The request's cancellation (notifications/cancelled), or the request going away, ends
    // the command inside its sandbox; its finish is still written.
    let mut guard = OnDrop(Some(canceller.clone()));
    let ct = context.ct.clone();
    let on_cancel = {
        let canceller = canceller.clone();
        tokio::spawn(async move {
            ct.cancelled().await;
            canceller.cancel(Reason::Disconnected);
        })
    };
    let progress = context.meta.get_progress_token();
    let tail = Arc::new(Mutex::new(Tail::default()));
    let sink: Option<Box<dyn Sink>> = progress
        .as_ref()
        .map(|_| Box::new(TailSink(tail.clone())) as Box<dyn Sink>);
    let mut handle = api::spawn_exec(
        &mcp.server,
        &caller.principal,
        prepared,
        sink,
        None,
        slot,
        cancel,
    );
    let joined = match progress {
        None => (&mut handle).await,
        Some(token) => loop {
            tokio::select! {
                joined = &mut handle => break joined,
                _ = tokio::time::sleep(PROGRESS_EVERY) => {
                    notify(context, &token, &tail).await;
                }
            }
        },
    };
    on_cancel.abort();
    guard.defuse();
    let result = joined.map_err(|e| failed(format!("the execution's task failed: {e}")))?;
    Ok(judge(&result))
}

/// Sends the output tail as progress, when more came since the last.
async fn notify(context: &RequestContext<RoleServer>, token: &ProgressToken, tail: &Mutex<Tail>) {
    let (total, text) = {
        let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        (
            tail.total,
            String::from_utf8_lossy(&tail.bytes).into_owned(),
        )
    };
    let param = ProgressNotificationParam::new(token.clone(), total as f64).with_message(text);
    let _ = context.peer.notify_progress(param).await;
}

async fn exec_background<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    a: tools::ExecBackground,
) -> Answer {
    let record = owned(mcp, caller, &a.sandbox_id)?;
    let mut body = exec_body(a.command, a.argv, a.workdir, a.env, a.stdin, a.timeout);
    body.background = true;
    body.stdin_open = a.stdin_open;
    let prepared =
        api::prepare(&body, Some(&record.id), Some(record.profile.clone())).map_err(api_failure)?;
    let (canceller, cancel) = Cancel::new();
    let slot = mcp
        .server
        .run_slot(&caller.owner, Some(&record.id), canceller.clone())
        .map_err(api_failure)?;
    let job = api::start_background(
        &mcp.server,
        &caller.principal,
        prepared,
        Some(&record.id),
        a.stdin_open,
        slot,
        canceller,
        cancel,
    );
    Ok(done(
        json!({ "exec_id": job.id, "sandbox": job.sandbox, "state": "running" }),
        format!(
            "started {} in {}; poll it with exec_poll",
            job.id, record.id
        ),
    ))
}

fn job_of<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    exec_id: &str,
) -> Result<Arc<Job>, CallToolResult> {
    // A background execution always runs in a sandbox: whoever may touch that sandbox may
    // touch it (an execution in a sandbox since removed is nobody's).
    let job = mcp.server.background.get(exec_id).filter(|job| {
        job.sandbox
            .as_deref()
            .and_then(|s| mcp.server.registry.get(s))
            .is_some_and(|r| caller.may_touch(&r.owner))
    });
    job.ok_or_else(|| {
        failed(format!(
            "no background execution {exec_id:?}: it is not yours, or it ended long ago and its \
             result was let go"
        ))
    })
}

fn render_poll(v: &Value) -> String {
    let mut text = format!(
        "{} {}",
        v["exec_id"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or("")
    );
    if let Some(code) = v["result"]["exit_code"].as_i64() {
        text.push_str(&format!(" exit {code}"));
    }
    for stream in ["stdout", "stderr"] {
        if let Some(s) = v[stream].as_str().filter(|s| !s.is_empty()) {
            text.push_str(&format!("\n--- {stream}\n{s}"));
        }
    }
    text
}

async fn exec_poll<B: Backend>(mcp: &Mcp<B>, caller: &Caller, a: tools::ExecPoll) -> Answer {
    let job = job_of(mcp, caller, &a.exec_id)?;
    let wait = Duration::from_secs(a.wait.unwrap_or(0).min(tools::MAX_POLL_WAIT_SECS));
    let value = api::poll_job(&job, wait).await;
    let text = render_poll(&value);
    Ok(done(value, text))
}

async fn exec_write_stdin<B: Backend>(
    mcp: &Mcp<B>,
    caller: &Caller,
    a: tools::ExecWriteStdin,
) -> Answer {
    let job = job_of(mcp, caller, &a.exec_id)?;
    let value = api::write_stdin(&mcp.server, &job, a.data.as_bytes(), a.eof)
        .await
        .map_err(api_failure)?;
    let text = format!(
        "wrote {} bytes{}",
        a.data.len(),
        if a.eof { ", then closed stdin" } else { "" }
    );
    Ok(done(value, text))
}

async fn exec_kill<B: Backend>(mcp: &Mcp<B>, caller: &Caller, a: tools::ExecRef) -> Answer {
    let job = job_of(mcp, caller, &a.exec_id)?;
    job.canceller.cancel(Reason::Killed);
    let value = api::poll_job(&job, Duration::ZERO).await;
    let state = if value["state"] == "done" {
        "done"
    } else {
        "killing"
    };
    let mut value = value;
    value["state"] = json!(state);
    Ok(done(value, format!("{} {state}", job.id)))
}

// ---- files -----------------------------------------------------------------------------------

fn file_failure(e: crate::files::CopyError, path: &str) -> CallToolResult {
    let e = api::copy_error(e);
    if e.message.contains("No such file") {
        return failed(format!(
            "{path}: no such file (file_list shows what is there)"
        ));
    }
    api_failure(e)
}

async fn file_read<B: Backend>(mcp: &Mcp<B>, caller: &Caller, a: tools::FileRead) -> Answer {
    let record = owned(mcp, caller, &a.sandbox_id)?;
    let (canceller, cancel) = Cancel::new();
    let slot = mcp
        .server
        .run_slot(&caller.owner, Some(&record.id), canceller.clone())
        .map_err(api_failure)?;
    let mut guard = OnDrop(Some(canceller));
    let request = CopyRequest {
        session: record.id.clone(),
        path: a.path.clone(),
        direction: Direction::Out,
    };
    let options = crate::exec::ExecOptions {
        profile: Some(record.profile.clone()),
        ..Default::default()
    };
    let mut bytes: Vec<u8> = Vec::new();
    let mut capped = api::CappedWriter {
        inner: &mut bytes,
        left: tools::MAX_READ_FILE_BYTES,
    };
    let copied = mcp
        .server
        .service
        .copy(
            &caller.principal,
            &request,
            &options,
            Host::Sink(&mut capped),
            &cancel,
        )
        .await;
    guard.defuse();
    drop(slot);
    if let Err(e) = copied {
        if e.to_string().contains("size cap") {
            return Err(failed(format!(
                "{} is over {} MiB: read parts of it with exec (head, tail, dd)",
                a.path,
                tools::MAX_READ_FILE_BYTES >> 20
            )));
        }
        return Err(file_failure(e, &a.path));
    }
    let size = bytes.len() as u64;
    let offset = a.offset.unwrap_or(0).min(size);
    let limit = a
        .limit
        .unwrap_or(tools::MAX_READ_BYTES)
        .min(tools::MAX_READ_BYTES);
    let end = offset.saturating_add(limit).min(size);
    let piece = &bytes[offset as usize..end as usize];
    let encoding = a.encoding.unwrap_or_default();
    let content = match encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(piece),
        Encoding::Utf8 => match std::str::from_utf8(piece) {
            Ok(s) => s.to_string(),
            Err(_) => {
                return Err(failed(format!(
                    "{} is not UTF-8 text in that range: read it with encoding \"base64\"",
                    a.path
                )))
            }
        },
    };
    let more = end < size;
    let text = if encoding == Encoding::Utf8 {
        content.clone()
    } else {
        format!(
            "{} bytes of {} (base64 in structured content)",
            piece.len(),
            a.path
        )
    };
    Ok(done(
        json!({
            "path": a.path,
            "size": size,
            "offset": offset,
            "content": content,
            "encoding": if encoding == Encoding::Utf8 { "utf8" } else { "base64" },
            "more": more,
        }),
        text,
    ))
}

async fn file_write<B: Backend>(mcp: &Mcp<B>, caller: &Caller, a: tools::FileWrite) -> Answer {
    let record = owned(mcp, caller, &a.sandbox_id)?;
    let bytes = match a.encoding.unwrap_or_default() {
        Encoding::Utf8 => a.content.into_bytes(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(a.content.as_bytes())
            .map_err(|e| failed(format!("content is not base64: {e}")))?,
    };
    if bytes.len() > tools::MAX_WRITE_BYTES {
        return Err(failed(format!(
            "content is over {} MiB: write the file in parts with exec",
            tools::MAX_WRITE_BYTES >> 20
        )));
    }
    let (canceller, cancel) = Cancel::new();
    let slot = mcp
        .server
        .run_slot(&caller.owner, Some(&record.id), canceller.clone())
        .map_err(api_failure)?;
    let mut guard = OnDrop(Some(canceller));
    let request = CopyRequest {
        session: record.id.clone(),
        path: a.path.clone(),
        direction: Direction::In,
    };
    let options = crate::exec::ExecOptions {
        profile: Some(record.profile.clone()),
        ..Default::default()
    };
    let mut reader: &[u8] = &bytes;
    let copied = mcp
        .server
        .service
        .copy(
            &caller.principal,
            &request,
            &options,
            Host::Source {
                reader: &mut reader,
                size: Some(bytes.len() as u64),
            },
            &cancel,
        )
        .await;
    guard.defuse();
    drop(slot);
    let copied = copied.map_err(|e| file_failure(e, &a.path))?;
    Ok(done(
        json!({ "path": copied.path, "bytes": copied.bytes, "sha256": copied.sha256 }),
        format!("wrote {} bytes to {}", copied.bytes, copied.path),
    ))
}

async fn file_list<B: Backend>(mcp: &Mcp<B>, caller: &Caller, a: tools::FileList) -> Answer {
    let record = owned(mcp, caller, &a.sandbox_id)?;
    let listing = api::list_dir(&mcp.server, &caller.principal, record, a.path.clone())
        .await
        .map_err(|e| {
            if e.message.contains("No such file") {
                failed(format!("{}: no such directory", a.path))
            } else {
                api_failure(e)
            }
        })?;
    let lines: Vec<String> = listing["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e["type"].as_str().unwrap_or(""),
                        e["size"],
                        e["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let text = if lines.is_empty() {
        format!("{} is empty", a.path)
    } else {
        lines.join("\n")
    };
    Ok(done(listing, text))
}
