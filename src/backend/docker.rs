//! The Docker backend: the only module that talks to the engine about containers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use futures_util::StreamExt;

use super::output::Capture;
use super::{BackendError, Outcome};
use crate::engine::{status_of, Engine};
use crate::plan::{
    self, ContainerSpec, ProcessSpec, LABEL_KIND, LABEL_MANAGED, LABEL_SESSION, LABEL_SPEC_DIGEST,
};

/// How long to keep reading output after the kill, for the last words of the command.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);
/// Bounded polling for an exec's exit code after its output closed.
const EXIT_POLLS: u32 = 50;
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A container ready to run processes.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
}

/// Runs processes in containers through the Engine API.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    engine: Engine,
}

impl DockerBackend {
    pub fn new(engine: Engine) -> Self {
        DockerBackend { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Creates and starts a container for `spec`. For a session container that already exists
    /// with the same spec digest, reuses it (starting it if it stopped).
    pub async fn ensure_container(&self, spec: &ContainerSpec) -> Result<Container, BackendError> {
        let is_session =
            spec.labels.get(LABEL_KIND).map(String::as_str) == Some(plan::KIND_SESSION);
        if is_session {
            if let Some(container) = self.reuse_session(spec).await? {
                return Ok(container);
            }
        }
        match self.create_and_start(spec).await {
            // Another process created the session container first: use theirs.
            Err(BackendError::Engine(e)) if is_session && status_of(&e) == Some(409) => self
                .reuse_session(spec)
                .await?
                .ok_or(BackendError::Engine(e)),
            other => other,
        }
    }

    /// The session container for `spec` if it exists (started if it had stopped).
    pub async fn find_session(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Option<Container>, BackendError> {
        self.reuse_session(spec).await
    }

    async fn reuse_session(&self, spec: &ContainerSpec) -> Result<Option<Container>, BackendError> {
        let docker = &self.engine.docker;
        let inspect = self
            .engine
            .call(
                "inspect container",
                docker.inspect_container(&spec.name, None::<InspectContainerOptions>),
            )
            .await;
        let info = match inspect {
            Ok(info) => info,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let id = info.id.clone().unwrap_or_else(|| spec.name.clone());
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let wanted = spec.labels.get(LABEL_SPEC_DIGEST);
        if labels.get(LABEL_SPEC_DIGEST) != wanted {
            return Err(BackendError::SessionMismatch {
                session: spec.labels.get(LABEL_SESSION).cloned().unwrap_or_default(),
                profile: labels.get(plan::LABEL_PROFILE).cloned().unwrap_or_default(),
            });
        }
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running {
            self.engine
                .call("start container", docker.start_container(&id, None))
                .await?;
        }
        Ok(Some(Container {
            id,
            name: spec.name.clone(),
        }))
    }

    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<Container, BackendError> {
        let docker = &self.engine.docker;
        let host_config = HostConfig {
            readonly_rootfs: Some(spec.read_only_root),
            tmpfs: Some(spec.tmpfs.clone().into_iter().collect()),
            network_mode: Some(spec.network_mode.clone()),
            cap_drop: Some(spec.cap_drop.clone()),
            cap_add: Some(spec.cap_add.clone()),
            security_opt: Some(spec.security_opt.clone()),
            pids_limit: Some(spec.pids_limit),
            memory: Some(spec.memory_bytes),
            // Equal to memory: no swap, so a memory bomb is OOM-killed rather than thrashing.
            memory_swap: Some(spec.memory_bytes),
            nano_cpus: Some(spec.nano_cpus),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            init: Some(spec.init),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            user: Some(spec.user.clone()),
            working_dir: Some(spec.working_dir.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            network_disabled: Some(spec.network_mode == "none"),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .engine
            .call(
                "create container",
                docker.create_container(Some(options), body),
            )
            .await?;
        let container = Container {
            id: created.id,
            name: spec.name.clone(),
        };
        if let Err(e) = self
            .engine
            .call(
                "start container",
                docker.start_container(&container.id, None),
            )
            .await
        {
            let _ = self.remove(&container.id).await;
            return Err(e.into());
        }
        Ok(container)
    }

    /// Runs `process` in `container`, feeding output to the captures. On timeout, ends the
    /// command's whole process tree inside the container (TERM, grace, KILL).
    pub async fn run(
        &self,
        container: &Container,
        process: &ProcessSpec,
        stdout: &mut Capture,
        stderr: &mut Capture,
    ) -> Result<Outcome, BackendError> {
        let docker = &self.engine.docker;
        let exec = self
            .engine
            .call(
                "create exec",
                docker.create_exec(
                    &container.id,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        attach_stdin: Some(false),
                        tty: Some(false),
                        cmd: Some(process.cmd.clone()),
                        user: Some(process.user.clone()),
                        working_dir: Some(process.working_dir.clone()),
                        env: Some(process.env.clone()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        let started = Instant::now();
        let start = self
            .engine
            .call(
                "start exec",
                docker.start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        detach: false,
                        tty: false,
                        output_capacity: Some(64 * 1024),
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
        let mut timed_out = false;
        loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(chunk)) => feed(chunk, stdout, stderr),
                    Some(Err(e)) => return Err(BackendError::Stream { reason: e.to_string() }),
                    None => break,
                },
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    self.kill_tree(container, process).await?;
                    // Keep the command's last output, but never wait on it for long.
                    let drain = tokio::time::sleep(DRAIN_AFTER_KILL);
                    tokio::pin!(drain);
                    loop {
                        tokio::select! {
                            item = output.next() => match item {
                                Some(Ok(chunk)) => feed(chunk, stdout, stderr),
                                _ => break,
                            },
                            _ = &mut drain => break,
                        }
                    }
                    break;
                }
            }
        }
        let duration = started.elapsed();
        let exit_code = if timed_out {
            None
        } else {
            self.exit_code(&exec.id).await?
        };
        Ok(Outcome {
            exit_code,
            timed_out,
            duration,
        })
    }

    async fn exit_code(&self, exec_id: &str) -> Result<Option<i64>, BackendError> {
        for _ in 0..EXIT_POLLS {
            let info = self
                .engine
                .call("inspect exec", self.engine.docker.inspect_exec(exec_id))
                .await?;
            if info.running != Some(true) {
                return Ok(info.exit_code);
            }
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
        }
        Err(BackendError::Protocol {
            what: format!("exec {exec_id} closed its output but did not report an exit code"),
        })
    }

    /// TERM then KILL every process of the command's user in the container but the init and
    /// the keeper, from inside the container.
    pub async fn kill_tree(
        &self,
        container: &Container,
        process: &ProcessSpec,
    ) -> Result<(), BackendError> {
        let docker = &self.engine.docker;
        let exec = self
            .engine
            .call(
                "create exec (kill)",
                docker.create_exec(
                    &container.id,
                    CreateExecOptions::<String> {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(plan::kill_script(process.kill_grace)),
                        user: Some(process.user.clone()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        let start = self
            .engine
            .call("start exec (kill)", docker.start_exec(&exec.id, None))
            .await?;
        if let StartExecResults::Attached { mut output, .. } = start {
            let bound = process.kill_grace + self.engine.call_timeout;
            let _ =
                tokio::time::timeout(bound, async { while output.next().await.is_some() {} }).await;
        }
        Ok(())
    }

    /// The memory cgroup's OOM-kill counter, read from inside the container (cgroup v1
    /// `memory.oom_control` or v2 `memory.events`); `None` when it cannot be read.
    pub async fn oom_kill_count(&self, container: &Container) -> Option<u64> {
        let docker = &self.engine.docker;
        let script = "cat /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null || cat /sys/fs/cgroup/memory.events";
        let exec = self
            .engine
            .call(
                "create exec (oom)",
                docker.create_exec(
                    &container.id,
                    CreateExecOptions::<String> {
                        attach_stdout: Some(true),
                        cmd: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                        user: Some(plan::KEEPER_USER.into()),
                        ..Default::default()
                    },
                ),
            )
            .await
            .ok()?;
        let start = self
            .engine
            .call("start exec (oom)", docker.start_exec(&exec.id, None))
            .await
            .ok()?;
        let StartExecResults::Attached { mut output, .. } = start else {
            return None;
        };
        let mut text = String::new();
        let read = async {
            while let Some(Ok(chunk)) = output.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        };
        tokio::time::timeout(self.engine.call_timeout, read)
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Force-removes a container (its processes are killed by the engine).
    pub async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let result = self
            .engine
            .call(
                "remove container",
                self.engine.docker.remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                ),
            )
            .await;
        match result {
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            other => other.map_err(Into::into),
        }
    }

    /// Every stockade container, optionally only those with `label=value`.
    pub async fn list_managed(
        &self,
        extra: Option<(&str, &str)>,
    ) -> Result<Vec<ContainerSummary>, BackendError> {
        let mut labels = vec![format!("{LABEL_MANAGED}=1")];
        if let Some((k, v)) = extra {
            labels.push(format!("{k}={v}"));
        }
        let filters: HashMap<String, Vec<String>> = HashMap::from([("label".to_string(), labels)]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        Ok(self
            .engine
            .call(
                "list containers",
                self.engine.docker.list_containers(Some(options)),
            )
            .await?)
    }
}

fn feed(chunk: bollard::container::LogOutput, stdout: &mut Capture, stderr: &mut Capture) {
    use bollard::container::LogOutput;
    match chunk {
        LogOutput::StdOut { message } | LogOutput::Console { message } => stdout.push(&message),
        LogOutput::StdErr { message } => stderr.push(&message),
        LogOutput::StdIn { .. } => {}
    }
}
