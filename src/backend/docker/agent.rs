//! The agent in a container: started with an exec whose stdin carries the key, and used for
//! every command, replaced when it does not answer, the engine's exec when none can start.

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::DockerBackend;
use crate::agent::client::{self, AgentError, Launch};
use crate::agent::Channel;
use crate::backend::{BackendError, ProcessSpec, Ran, Runner, Sandbox, Stdin, Streams};
use crate::cancel::Cancel;

/// What the agent may say before it is ready (its error, if it fails); more is not read.
pub(super) const MAX_AGENT_SAYS: usize = 4096;

fn unavailable(reason: String) -> AgentError {
    AgentError::Unavailable { reason }
}

impl DockerBackend {
    /// Starts a new agent in the sandbox with a fresh key, replacing any earlier one.
    pub(super) async fn launch_agent(
        &self,
        sandbox: &Sandbox,
        channel: &Channel,
        process: &ProcessSpec,
        cancel: &Cancel,
    ) -> Result<(), AgentError> {
        let engine = self
            .engine()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let launch = Launch::prepare(channel)?;
        let docker = &engine.docker;
        let exec = engine
            .call(
                "create exec (agent)",
                docker.create_exec(
                    &sandbox.id,
                    CreateExecOptions::<String> {
                        attach_stdin: Some(true),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(launch.argv()),
                        user: Some(process.user.to_string()),
                        working_dir: Some("/".into()),
                        ..Default::default()
                    },
                ),
            )
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let start = engine
            .call(
                "start exec (agent)",
                docker.start_exec(&exec.id, Some(StartExecOptions::default())),
            )
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = start
        else {
            return Err(unavailable("the agent's exec started detached".into()));
        };
        input
            .write_all(launch.key_line().as_bytes())
            .await
            .map_err(|e| unavailable(format!("cannot hand over the key: {e}")))?;
        input.flush().await.ok();
        let exited = async {
            let mut said = String::new();
            while let Some(Ok(chunk)) = output.next().await {
                if said.len() < MAX_AGENT_SAYS {
                    said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
            said
        };
        launch.complete(channel, exited, cancel).await
    }

    /// Runs through the agent; starts one when none answers. `Ok(Err(why))`: no agent could
    /// be started, so nothing ran. A command the agent accepted is never re-run.
    ///
    /// If the agent cannot confirm that everything the command started has ended (or stops
    /// answering), the kill runs from a fresh exec as the sandbox user; if that cannot confirm
    /// it either, the outcome says the sandbox must be reset.
    pub(super) async fn run_via_agent(
        &self,
        sandbox: &Sandbox,
        channel: &Channel,
        process: &ProcessSpec,
        mut stdin: Stdin<'_>,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Result<Ran, String>, BackendError> {
        let mut why = "the sandbox agent did not answer".to_string();
        for attempt in 0..2 {
            let input = stdin
                .as_mut()
                .map(|s| &mut **s as &mut (dyn tokio::io::AsyncRead + Unpin + Send));
            match client::run(channel, process, input, streams, cancel).await {
                Ok(report) => {
                    let mut ended = report.ended;
                    if ended.kill_incomplete {
                        ended.kill_incomplete =
                            !self.kill_tree(sandbox, process).await.unwrap_or(false);
                    }
                    return Ok(Ok(Ran {
                        ended,
                        runner: Runner::Agent,
                        stdout_sha256: Some(report.stdout_sha256),
                        stderr_sha256: Some(report.stderr_sha256),
                        warnings: Vec::new(),
                    }));
                }
                Err(AgentError::Unavailable { reason }) => {
                    tracing::debug!(%reason, attempt, "sandbox agent unavailable");
                    why = reason.clone();
                    if cancel.fired().is_some() {
                        return Err(AgentError::Unavailable { reason }.into());
                    }
                    if attempt == 0 {
                        if let Err(e) = self.launch_agent(sandbox, channel, process, cancel).await {
                            if cancel.fired().is_some() {
                                return Err(e.into());
                            }
                            why = e.to_string();
                            break;
                        }
                    }
                }
                Err(e) => {
                    // The command may still be running: end it from outside, and reset the
                    // sandbox if that cannot be confirmed.
                    if !self.kill_tree(sandbox, process).await.unwrap_or(false) {
                        let failed = self.reset_container(sandbox).await.err();
                        return Err(BackendError::Reset {
                            source: Box::new(e.into()),
                            failed: failed.map(|f| f.to_string()),
                        });
                    }
                    return Err(e.into());
                }
            }
        }
        if process.stdin {
            return Err(BackendError::Files {
                what: "stdin needs stockade's agent, which could not be started in this sandbox"
                    .to_string(),
            });
        }
        Ok(Err(why))
    }
}
