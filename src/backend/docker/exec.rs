//! The engine's own exec: how a process runs where the agent cannot (a remote engine,
//! `STOCKADE_NO_AGENT`), and the cgroup counters read from a fresh exec around it.

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;

use super::kill::POLL;
use super::spec::KEEPER_USER;
use super::DockerBackend;
use crate::backend::{BackendError, Counters, Ended, ProcessSpec, Sandbox, Stream, Streams};
use crate::cancel::{Cancel, Reason};

/// How long to keep reading output after the kill, for the last words of the command.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);
/// Largest output chunk the engine stream hands over at once; capture memory stays bounded
/// by the cap plus one chunk, whatever the command writes (one 100 MB line included).
const OUTPUT_CHUNK: usize = 64 * 1024;
use super::counters::{parse_counters, COUNTERS_SCRIPT, MAX_COUNTERS_TEXT};

/// Why a running command was stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Flood,
    Cancelled(Reason),
}

impl DockerBackend {
    /// Runs `process` in `container`, feeding output to the captures. The command is stopped
    /// (its whole process tree ended inside the container: TERM, grace, KILL) when it runs past
    /// its timeout, when its output passes the hard limit, or when `interrupt` resolves (to the
    /// signal stockade received). If that kill cannot confirm every process ended, the outcome
    /// says so (`kill_incomplete`) and the caller resets the container ([`Self::reset`]).
    ///
    /// While the command runs, the engine is pinged every call timeout: an engine that stops
    /// answering ends the call with [`BackendError::EngineLost`] instead of a hang that only
    /// the command's timeout would bound.
    pub(super) async fn exec_run(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Ended, BackendError> {
        let engine = self.engine().await?;
        let docker = &engine.docker;
        let exec = engine
            .call(
                "create exec",
                docker.create_exec(
                    &sandbox.id,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        attach_stdin: Some(false),
                        tty: Some(false),
                        cmd: Some(process.argv.clone()),
                        user: Some(process.user.to_string()),
                        working_dir: Some(process.working_dir.clone()),
                        env: Some(process.env.clone()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        let started = Instant::now();
        let start = engine
            .call(
                "start exec",
                docker.start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        detach: false,
                        tty: false,
                        output_capacity: Some(OUTPUT_CHUNK),
                    }),
                ),
            )
            .await?;
        let StartExecResults::Attached { mut output, .. } = start else {
            return Err(BackendError::Protocol {
                what: "exec started detached although attach was requested".to_string(),
            });
        };

        let deadline = tokio::time::sleep(process.timeout);
        tokio::pin!(deadline);
        let interrupt = cancel.wait();
        tokio::pin!(interrupt);
        let period = engine.call_timeout;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The output closing is not the end: a command that closed its stdout and stderr
        // (`exec >&- 2>&-; sleep 100`) still runs, and still has its timeout.
        let mut open = true;
        let stop = loop {
            tokio::select! {
                item = output.next(), if open => match item {
                    Some(Ok(chunk)) => {
                        feed(chunk, streams);
                        if streams.total() > process.output_hard_limit {
                            break Err(Stop::Flood);
                        }
                    }
                    Some(Err(e)) => return Err(BackendError::Stream { reason: e.to_string() }),
                    None => open = false,
                },
                _ = tokio::time::sleep(POLL), if !open => {
                    if let Some(code) = self.exec_finished(&exec.id).await? {
                        break Ok(code);
                    }
                }
                _ = &mut deadline => break Err(Stop::Timeout),
                reason = &mut interrupt => break Err(Stop::Cancelled(reason)),
                _ = heartbeat.tick() => {
                    if let Err(source) = engine.call("ping", docker.ping()).await {
                        return Err(BackendError::EngineLost { source });
                    }
                }
            }
        };
        let stop = match stop {
            Ok(exit_code) => {
                return Ok(Ended {
                    exit_code,
                    timed_out: false,
                    flooded: false,
                    interrupted: None,
                    kill_incomplete: false,
                    duration: started.elapsed(),
                    hits: None,
                    leftovers: 0,
                    ipc_removed: 0,
                })
            }
            Err(stop) => stop,
        };

        // The command's output keeps being read while the kill runs: the engine processes a
        // container's exit events one at a time, and the exit of a process whose output is not
        // drained waits for that output, holding up the kill script's own exit with it.
        let kill = self.kill_tree(sandbox, process);
        tokio::pin!(kill);
        let killed = loop {
            tokio::select! {
                killed = &mut kill => break killed,
                item = output.next(), if open => match item {
                    Some(Ok(chunk)) => feed(chunk, streams),
                    _ => open = false,
                },
            }
        };
        let ended = killed.unwrap_or_else(|e| {
            tracing::warn!(container = %sandbox.name, error = %e, "kill inside the container failed");
            false
        });
        // Keep the command's last output, but never wait on it for long.
        if ended && open {
            let drain = tokio::time::sleep(DRAIN_AFTER_KILL);
            tokio::pin!(drain);
            loop {
                tokio::select! {
                    item = output.next() => match item {
                        Some(Ok(chunk)) => feed(chunk, streams),
                        _ => break,
                    },
                    _ = &mut drain => break,
                }
            }
        }
        let exit_code = match stop {
            Stop::Timeout => None,
            _ if !ended => None,
            _ => self.exit_code_now(&exec.id).await,
        };
        Ok(Ended {
            exit_code,
            timed_out: matches!(stop, Stop::Timeout),
            flooded: matches!(stop, Stop::Flood),
            interrupted: match stop {
                Stop::Cancelled(reason) => Some(reason),
                _ => None,
            },
            kill_incomplete: !ended,
            duration: started.elapsed(),
            hits: None,
            leftovers: 0,
            ipc_removed: 0,
        })
    }

    /// `Some(exit code)` once the exec has ended.
    async fn exec_finished(&self, exec_id: &str) -> Result<Option<Option<i64>>, BackendError> {
        let engine = self.engine().await?;
        let info = engine
            .call("inspect exec", engine.docker.inspect_exec(exec_id))
            .await?;
        Ok((info.running != Some(true)).then_some(info.exit_code))
    }

    /// The exit code of a process that was just killed, if the engine already has it.
    async fn exit_code_now(&self, exec_id: &str) -> Option<i64> {
        let engine = self.engine().await.ok()?;
        let info = engine
            .call("inspect exec", engine.docker.inspect_exec(exec_id))
            .await
            .ok()?;
        (info.running != Some(true))
            .then_some(info.exit_code)
            .flatten()
    }

    /// The memory and pids cgroups' counters of limits hit, read from inside the container
    /// (cgroup v1 `memory.oom_control` and `pids.events`, or v2 `memory.events` and
    /// `pids.events`); `None` when they cannot be read.
    pub(super) async fn limit_counters(&self, sandbox: &Sandbox) -> Option<Counters> {
        let engine = self.engine().await.ok()?;
        let docker = &engine.docker;
        let exec = engine
            .call(
                "create exec (counters)",
                docker.create_exec(
                    &sandbox.id,
                    CreateExecOptions::<String> {
                        attach_stdout: Some(true),
                        cmd: Some(vec!["/bin/sh".into(), "-c".into(), COUNTERS_SCRIPT.into()]),
                        user: Some(KEEPER_USER.to_string()),
                        ..Default::default()
                    },
                ),
            )
            .await
            .ok()?;
        let start = engine
            .call("start exec (counters)", docker.start_exec(&exec.id, None))
            .await
            .ok()?;
        let StartExecResults::Attached { mut output, .. } = start else {
            return None;
        };
        let mut text = String::new();
        let read = async {
            while let Some(Ok(chunk)) = output.next().await {
                if text.len() < MAX_COUNTERS_TEXT {
                    text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        };
        tokio::time::timeout(engine.call_timeout, read).await.ok()?;
        parse_counters(&text)
    }
}

fn feed(chunk: bollard::container::LogOutput, streams: &mut Streams) {
    use bollard::container::LogOutput;
    match chunk {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            streams.push(Stream::Stdout, &message)
        }
        LogOutput::StdErr { message } => streams.push(Stream::Stderr, &message),
        LogOutput::StdIn { .. } => {}
    }
}
