//! The Docker backend: the only module that talks to the engine about containers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions,
};
use futures_util::StreamExt;

use super::output::Capture;
use super::{BackendError, Counters, Outcome};
use crate::engine::{status_of, Engine};
use crate::plan::{
    self, ContainerSpec, ProcessSpec, LABEL_KIND, LABEL_MANAGED, LABEL_SESSION, LABEL_SPEC_DIGEST,
};

/// How long to keep reading output after the kill, for the last words of the command.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);
/// Beyond the kill script's own bound (grace + confirm), time for the exec to start and end.
const KILL_MARGIN: Duration = Duration::from_secs(1);
/// Largest output chunk the engine stream hands over at once; capture memory stays bounded
/// by the cap plus one chunk, whatever the command writes (one 100 MB line included).
const OUTPUT_CHUNK: usize = 64 * 1024;
/// The counters script prints a few short lines; more is not a cgroup file.
const MAX_COUNTERS_TEXT: usize = 4096;
/// Prints `FILE KEY VALUE` for each line of the cgroup files that count limits hit. The file
/// tells v1 from v2 (v2's `memory.events` has a `max` line too, meaning something else).
const COUNTERS_SCRIPT: &str = "cd /sys/fs/cgroup || exit 0
for f in memory/memory.oom_control pids/pids.events memory.events pids.events; do
  [ -r \"$f\" ] && while read -r k v; do echo \"$f $k $v\"; done < \"$f\"; done; exit 0";

/// Attempts at starting the kill script before giving up on it (and resetting the container).
const KILL_ATTEMPTS: u32 = 3;

enum KillResult {
    Ended,
    Incomplete,
    NotStarted,
}

/// Why a running command was stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Flood,
    Signal(i32),
}
/// Bounded polling for an exec's exit code after its output closed.
const EXIT_POLLS: u32 = 50;
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A container ready to run processes.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// A session's warm container (else a one-shot container).
    pub session: bool,
    /// stockade's agent is mounted in it (`agent::AGENT_IN_CONTAINER`).
    pub agent: bool,
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
            session: true,
            agent: spec.agent,
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
            session: spec.labels.get(LABEL_KIND).map(String::as_str) == Some(plan::KIND_SESSION),
            agent: spec.agent,
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

    /// Runs `process` in `container`, feeding output to the captures. The command is stopped
    /// (its whole process tree ended inside the container: TERM, grace, KILL) when it runs past
    /// its timeout, when its output passes the hard limit, or when `interrupt` resolves (to the
    /// signal stockade received). If that kill cannot confirm every process ended, the outcome
    /// says so (`kill_incomplete`) and the caller resets the container ([`Self::reset`]).
    ///
    /// While the command runs, the engine is pinged every call timeout: an engine that stops
    /// answering ends the call with [`BackendError::EngineLost`] instead of a hang that only
    /// the command's timeout would bound.
    pub async fn run(
        &self,
        container: &Container,
        process: &ProcessSpec,
        stdout: &mut Capture,
        stderr: &mut Capture,
        interrupt: impl std::future::Future<Output = i32>,
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
        tokio::pin!(interrupt);
        let period = self.engine.call_timeout;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The output closing is not the end: a command that closed its stdout and stderr
        // (`exec >&- 2>&-; sleep 100`) still runs, and still has its timeout.
        let mut open = true;
        let stop = loop {
            tokio::select! {
                item = output.next(), if open => match item {
                    Some(Ok(chunk)) => {
                        feed(chunk, stdout, stderr);
                        if stdout.total() + stderr.total() > process.output_hard_limit {
                            break Err(Stop::Flood);
                        }
                    }
                    Some(Err(e)) => return Err(BackendError::Stream { reason: e.to_string() }),
                    None => open = false,
                },
                _ = tokio::time::sleep(EXIT_POLL_INTERVAL), if !open => {
                    if let Some(code) = self.exec_finished(&exec.id).await? {
                        break Ok(code);
                    }
                }
                _ = &mut deadline => break Err(Stop::Timeout),
                signal = &mut interrupt => break Err(Stop::Signal(signal)),
                _ = heartbeat.tick() => {
                    if let Err(source) = self.engine.call("ping", docker.ping()).await {
                        return Err(BackendError::EngineLost { source });
                    }
                }
            }
        };
        let stop = match stop {
            Ok(exit_code) => {
                return Ok(Outcome {
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
        let kill = self.kill_tree(container, process);
        tokio::pin!(kill);
        let killed = loop {
            tokio::select! {
                killed = &mut kill => break killed,
                item = output.next(), if open => match item {
                    Some(Ok(chunk)) => feed(chunk, stdout, stderr),
                    _ => open = false,
                },
            }
        };
        let ended = killed.unwrap_or_else(|e| {
            tracing::warn!(container = %container.name, error = %e, "kill inside the container failed");
            false
        });
        // Keep the command's last output, but never wait on it for long.
        if ended && open {
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
        }
        let exit_code = match stop {
            Stop::Timeout => None,
            _ if !ended => None,
            _ => self.exit_code_now(&exec.id).await,
        };
        Ok(Outcome {
            exit_code,
            timed_out: matches!(stop, Stop::Timeout),
            flooded: matches!(stop, Stop::Flood),
            interrupted: match stop {
                Stop::Signal(s) => Some(s),
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
        let info = self
            .engine
            .call("inspect exec", self.engine.docker.inspect_exec(exec_id))
            .await?;
        Ok((info.running != Some(true)).then_some(info.exit_code))
    }

    /// The exit code of a process that was just killed, if the engine already has it.
    async fn exit_code_now(&self, exec_id: &str) -> Option<i64> {
        let info = self
            .engine
            .call("inspect exec", self.engine.docker.inspect_exec(exec_id))
            .await
            .ok()?;
        (info.running != Some(true))
            .then_some(info.exit_code)
            .flatten()
    }

    /// Ends every process of the command's user in the container but the init and the keeper
    /// (TERM, grace, KILL), from a fresh exec as that user: `stockade-agent kill` where the
    /// agent is mounted, else [`plan::kill_script`] (which needs bash in the image). `Ok(true)`
    /// when every process was seen gone; `Ok(false)` when that could not be confirmed in time
    /// (reset the container).
    pub async fn kill_tree(
        &self,
        container: &Container,
        process: &ProcessSpec,
    ) -> Result<bool, BackendError> {
        let deadline = Instant::now() + process.kill_grace + plan::KILL_CONFIRM + KILL_MARGIN;
        for _ in 0..KILL_ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.kill_once(container, process, left).await? {
                KillResult::Ended => return Ok(true),
                KillResult::Incomplete => return Ok(false),
                // With every pid taken, the runtime itself may fail to start the exec.
                KillResult::NotStarted => tokio::time::sleep(EXIT_POLL_INTERVAL).await,
            }
        }
        Ok(false)
    }

    async fn kill_once(
        &self,
        container: &Container,
        process: &ProcessSpec,
        bound: Duration,
    ) -> Result<KillResult, BackendError> {
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
                        // The script waits by reading this silent input (it must not fork).
                        attach_stdin: Some(!container.agent),
                        cmd: Some(if container.agent {
                            vec![
                                crate::agent::AGENT_IN_CONTAINER.to_string(),
                                "kill".to_string(),
                                "--grace-ms".to_string(),
                                process.kill_grace.as_millis().to_string(),
                            ]
                        } else {
                            plan::kill_script(process.kill_grace)
                        }),
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
        let StartExecResults::Attached { mut output, input } = start else {
            return Ok(KillResult::Incomplete);
        };
        // The engine may keep an exec's stream open while its input is, so the end of the
        // script is seen by polling the exec, not by the stream closing.
        let drain = async {
            while output.next().await.is_some() {}
            std::future::pending::<()>().await
        };
        let ended = async {
            loop {
                tokio::time::sleep(EXIT_POLL_INTERVAL).await;
                let info = self
                    .engine
                    .call("inspect exec (kill)", docker.inspect_exec(&exec.id))
                    .await?;
                if info.running != Some(true) {
                    return Ok::<_, BackendError>(info.exit_code);
                }
            }
        };
        let code = tokio::time::timeout(bound, async {
            tokio::select! {
                code = ended => code,
                _ = drain => Ok(None),
            }
        })
        .await;
        drop(input);
        let Ok(code) = code else {
            tracing::debug!(container = %container.name, "kill script did not finish in time");
            return Ok(KillResult::Incomplete);
        };
        let code = code?;
        tracing::debug!(container = %container.name, ?code, "kill script ended");
        Ok(match code {
            Some(0) => KillResult::Ended,
            Some(plan::KILL_INCOMPLETE) => KillResult::Incomplete,
            _ => KillResult::NotStarted,
        })
    }

    /// Ends everything in a container when the kill inside it could not: a one-shot container
    /// is removed; a session container is killed (the engine ends its whole PID namespace) and
    /// started again, so the session stays usable, with fresh tmpfs mounts.
    pub async fn reset(&self, container: &Container) -> Result<(), BackendError> {
        tracing::warn!(container = %container.name, "resetting the container: the kill inside it did not finish");
        if !container.session {
            return self.remove(&container.id).await;
        }
        let docker = &self.engine.docker;
        let killed = self
            .engine
            .call(
                "kill container",
                docker.kill_container(&container.id, None::<KillContainerOptions>),
            )
            .await;
        // 409: it already stopped.
        match killed {
            Err(e) if status_of(&e) != Some(409) => return Err(e.into()),
            _ => {}
        }
        self.wait_stopped(container).await?;
        self.engine
            .call(
                "start container",
                docker.start_container(&container.id, None),
            )
            .await?;
        Ok(())
    }

    async fn wait_stopped(&self, container: &Container) -> Result<(), BackendError> {
        for _ in 0..EXIT_POLLS {
            let info = self
                .engine
                .call(
                    "inspect container",
                    self.engine
                        .docker
                        .inspect_container(&container.id, None::<InspectContainerOptions>),
                )
                .await?;
            if info.state.and_then(|s| s.running) != Some(true) {
                return Ok(());
            }
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
        }
        Err(BackendError::Protocol {
            what: format!("container {} did not stop after SIGKILL", container.name),
        })
    }

    /// The memory and pids cgroups' counters of limits hit, read from inside the container
    /// (cgroup v1 `memory.oom_control` and `pids.events`, or v2 `memory.events` and
    /// `pids.events`); `None` when they cannot be read.
    pub async fn limit_counters(&self, container: &Container) -> Option<Counters> {
        let docker = &self.engine.docker;
        let exec = self
            .engine
            .call(
                "create exec (counters)",
                docker.create_exec(
                    &container.id,
                    CreateExecOptions::<String> {
                        attach_stdout: Some(true),
                        cmd: Some(vec!["/bin/sh".into(), "-c".into(), COUNTERS_SCRIPT.into()]),
                        user: Some(plan::KEEPER_USER.into()),
                        ..Default::default()
                    },
                ),
            )
            .await
            .ok()?;
        let start = self
            .engine
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
        tokio::time::timeout(self.engine.call_timeout, read)
            .await
            .ok()?;
        parse_counters(&text)
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

    /// Every container of the engine, stockade's or not (for the host canaries).
    pub async fn list_all(&self) -> Result<Vec<ContainerSummary>, BackendError> {
        self.list(None).await
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
        self.list(Some(HashMap::from([("label".to_string(), labels)])))
            .await
    }

    async fn list(
        &self,
        filters: Option<HashMap<String, Vec<String>>>,
    ) -> Result<Vec<ContainerSummary>, BackendError> {
        let options = ListContainersOptions {
            all: true,
            filters,
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

/// Reads the counters script's `FILE KEY VALUE` lines.
fn parse_counters(text: &str) -> Option<Counters> {
    let mut counters = Counters::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(file), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match (file, key) {
            ("memory/memory.oom_control" | "memory.events", "oom_kill") => {
                counters.oom_kills = Some(value)
            }
            ("pids/pids.events" | "pids.events", "max") => counters.pids_max = Some(value),
            _ => {}
        }
    }
    (counters != Counters::default()).then_some(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_cgroup_v1_and_v2() {
        let v1 = "memory/memory.oom_control oom_kill_disable 0\n\
                  memory/memory.oom_control under_oom 0\n\
                  memory/memory.oom_control oom_kill 2\n\
                  pids/pids.events max 17\n";
        assert_eq!(
            parse_counters(v1),
            Some(Counters {
                oom_kills: Some(2),
                pids_max: Some(17)
            })
        );
        // v2: memory.events' own `max` line is not the pids counter.
        let v2 = "memory.events max 9\nmemory.events oom_kill 1\npids.events max 0\n";
        assert_eq!(
            parse_counters(v2),
            Some(Counters {
                oom_kills: Some(1),
                pids_max: Some(0)
            })
        );
        assert_eq!(parse_counters(""), None);
    }
}
