//! The Docker backend: sandboxes are containers, run through the Engine API (bollard, never the
//! CLI). Only this folder speaks the engine's language: the connection (`engine`), the request
//! a spec becomes (`spec`, pure), the labels that mark stockade's containers (`labels`), the
//! offline base image (`image`), the agent's launch through an exec (`agent`), the engine's own
//! exec where the agent cannot run (`exec`), and the kill rule from outside (`kill`).

mod agent;
pub(crate) mod counters;
pub mod engine;
mod exec;
pub mod image;
mod kill;
pub mod labels;
pub mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use self::engine::{status_of, Engine};
use super::{
    Backend, BackendError, BackendKind, Copied, ProcessSpec, Ran, Recovered, Sandbox, SandboxInfo,
    SandboxKind, SandboxSpec, Stdin, Streams,
};
use crate::agent::Channel;
use crate::cancel::Cancel;

pub use self::kill::{kill_script, KILL_CONFIRM, KILL_INCOMPLETE};

/// How the backend was asked to work.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Where the agent's channels and binary live (the state directory).
    pub state_dir: PathBuf,
    /// Whether the agent runs the sandboxes' processes: the engine must be local, since the
    /// agent is bind-mounted from this machine's state directory.
    pub agent: bool,
}

/// Runs sandboxes as containers. Clones share one engine connection, made on first use (so a
/// command the check denies never needs the engine) or ahead of it by [`DockerBackend::warm_up`].
#[derive(Debug, Clone)]
pub struct DockerBackend {
    connection: Arc<Connection>,
    options: DockerOptions,
}

#[derive(Debug)]
struct Connection {
    host: String,
    call_timeout: Duration,
    engine: tokio::sync::OnceCell<Engine>,
}

impl DockerBackend {
    /// A backend for the engine at `host` (see [`Engine::connect`]); nothing is contacted yet.
    pub fn new(host: &str, call_timeout: Duration, options: DockerOptions) -> Self {
        DockerBackend {
            connection: Arc::new(Connection {
                host: host.to_string(),
                call_timeout,
                engine: tokio::sync::OnceCell::new(),
            }),
            options,
        }
    }

    /// The engine's address.
    pub fn host(&self) -> &str {
        &self.connection.host
    }

    /// Connects now, in the background, so that the first call finds the connection made.
    pub fn warm_up(&self) {
        let backend = self.clone();
        tokio::spawn(async move {
            let _ = backend.engine().await;
        });
    }

    /// Whether an engine answers at the address within `bound` (the connection is kept).
    pub async fn answers(&self, bound: Duration) -> bool {
        matches!(tokio::time::timeout(bound, self.engine()).await, Ok(Ok(_)))
    }

    /// The connection, made on first use. A failure is not kept: the next call tries again.
    async fn engine(&self) -> Result<&Engine, BackendError> {
        let c = &self.connection;
        Ok(c.engine
            .get_or_try_init(|| Engine::connect(&c.host, c.call_timeout))
            .await?)
    }

    /// Builds (or rebuilds) the base image from host files, with `include`d tools.
    pub async fn build_image(
        &self,
        include: &[String],
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, BackendError> {
        let engine = self.engine().await?;
        Ok(image::build_base_image(&engine.docker, include, progress).await?)
    }

    /// Loads a base image root filesystem already built (so that another backend can unpack
    /// the very same layer).
    pub async fn load_image(
        &self,
        rootfs: &image::RootfsTar,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, BackendError> {
        let engine = self.engine().await?;
        Ok(image::load_base_image(&engine.docker, rootfs, progress).await?)
    }

    /// Loads `rootfs` as `image` (the cluster image, for a node sharing this engine).
    pub async fn load_image_as(
        &self,
        rootfs: &image::RootfsTar,
        name: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, BackendError> {
        let engine = self.engine().await?;
        Ok(image::load_image(&engine.docker, rootfs, name, progress).await?)
    }

    fn channel_for(&self, kind: &SandboxKind) -> Channel {
        match kind {
            SandboxKind::Session { name } => Channel::session(&self.options.state_dir, name),
            SandboxKind::Oneshot { exec } => Channel::oneshot(&self.options.state_dir, exec),
        }
    }

    fn sandbox(&self, id: String, spec: &SandboxSpec, recovered: Option<Recovered>) -> Sandbox {
        Sandbox {
            id,
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            channel: spec.agent.as_ref().map(|_| self.channel_for(&spec.kind)),
            recovered,
            placement: None,
        }
    }

    /// The session container for `spec` if it exists (started again if it had stopped).
    async fn find_session(&self, spec: &SandboxSpec) -> Result<Option<Sandbox>, BackendError> {
        let engine = self.engine().await?;
        let docker = &engine.docker;
        let inspect = engine
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
        let found = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let session = match &spec.kind {
            SandboxKind::Session { name } => name.clone(),
            SandboxKind::Oneshot { .. } => String::new(),
        };
        let theirs = found
            .get(labels::LABEL_VERSION)
            .cloned()
            .unwrap_or_default();
        if theirs != env!("CARGO_PKG_VERSION") {
            return Err(BackendError::SessionVersion {
                session,
                theirs: if theirs.is_empty() {
                    "an earlier version".to_string()
                } else {
                    theirs
                },
                ours: env!("CARGO_PKG_VERSION").to_string(),
            });
        }
        if found.get(labels::LABEL_SPEC_DIGEST) != Some(&spec.digest) {
            return Err(BackendError::SessionMismatch {
                session,
                profile: found
                    .get(labels::LABEL_PROFILE)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let mut recovered = None;
        if !running {
            engine
                .call("start container", docker.start_container(&id, None))
                .await?;
            recovered = Some(Recovered::Restarted);
        }
        Ok(Some(self.sandbox(id, spec, recovered)))
    }

    async fn create_and_start(&self, spec: &SandboxSpec) -> Result<Sandbox, BackendError> {
        let oneshot = matches!(spec.kind, SandboxKind::Oneshot { .. });
        if oneshot && spec.agent.is_some() {
            match self.create_with_agent(spec).await {
                Ok(sandbox) => return Ok(sandbox),
                // The agent could not start as the first process: the sandbox is made the
                // usual way, and the run says how the agent fared there.
                Err(e) => tracing::debug!(error = %e, "the one-shot's agent did not start"),
            }
        }
        let id = self.create(spec, &spec::Main::Keeper).await?;
        self.start(&id).await?;
        Ok(self.sandbox(id, spec, None))
    }

    async fn create(&self, spec: &SandboxSpec, main: &spec::Main) -> Result<String, BackendError> {
        let engine = self.engine().await?;
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = engine
            .call(
                "create container",
                engine
                    .docker
                    .create_container(Some(options), spec::render(spec, main)),
            )
            .await?;
        Ok(created.id)
    }

    /// Starts a created container; one that does not start is removed.
    async fn start(&self, id: &str) -> Result<(), BackendError> {
        let engine = self.engine().await?;
        if let Err(e) = engine
            .call("start container", engine.docker.start_container(id, None))
            .await
        {
            let _ = self.remove_container(id).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// A one-shot whose first process is the agent, its key written to the container's stdin
    /// and its proof awaited before the sandbox is handed out. On failure nothing is left.
    async fn create_with_agent(&self, spec: &SandboxSpec) -> Result<Sandbox, BackendError> {
        let channel = self.channel_for(&spec.kind);
        let launch = crate::agent::client::Launch::prepare(&channel)?;
        let main = spec::Main::Agent {
            argv: launch.argv(),
        };
        let id = self.create(spec, &main).await?;
        let launched = async {
            let engine = self.engine().await?;
            let options = AttachContainerOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                stream: true,
                ..Default::default()
            };
            let attached = engine
                .call(
                    "attach container",
                    engine.docker.attach_container(&id, Some(options)),
                )
                .await?;
            self.start(&id).await?;
            let bollard::container::AttachContainerResults {
                mut output,
                mut input,
            } = attached;
            input
                .write_all(launch.key_line().as_bytes())
                .await
                .map_err(|e| BackendError::Files {
                    what: format!("cannot hand the agent its key: {e}"),
                })?;
            let _ = input.shutdown().await;
            let exited = async move {
                let mut said = String::new();
                while let Some(Ok(chunk)) = output.next().await {
                    if said.len() < agent::MAX_AGENT_SAYS {
                        said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    }
                }
                said
            };
            launch.complete(&channel, exited, &Cancel::never()).await?;
            Ok::<(), BackendError>(())
        };
        match launched.await {
            Ok(()) => Ok(self.sandbox(id, spec, None)),
            Err(e) => {
                let _ = self.remove_container(&id).await;
                Err(e)
            }
        }
    }

    /// Force-removes a container (its processes are killed by the engine).
    async fn remove_container(&self, id: &str) -> Result<(), BackendError> {
        let engine = self.engine().await?;
        let result = engine
            .call(
                "remove container",
                engine.docker.remove_container(
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

    async fn list_containers(
        &self,
        filters: Option<HashMap<String, Vec<String>>>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, BackendError> {
        let engine = self.engine().await?;
        let options = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        Ok(engine
            .call(
                "list containers",
                engine.docker.list_containers(Some(options)),
            )
            .await?)
    }

    /// Runs as the engine's exec. The cgroup counters are read before (sessions; a fresh
    /// one-shot starts from zero) and after, and what the command left running is ended before
    /// the second reading, so the limits it hit are its own.
    async fn run_via_exec(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Ran, BackendError> {
        let before = if sandbox.is_session() {
            self.limit_counters(sandbox).await
        } else {
            Some(super::Counters {
                pids_max: Some(0),
                oom_kills: Some(0),
            })
        };
        let mut ended = self.exec_run(sandbox, process, streams, cancel).await?;
        // The engine's own refusal to start the process comes as output and exit code 126.
        if ended.exit_code == Some(126) {
            let said = String::from_utf8_lossy(streams.stdout.head()).into_owned()
                + &String::from_utf8_lossy(streams.stderr.head());
            if said.starts_with("OCI runtime exec failed") {
                if said.contains("chdir to cwd") {
                    return Err(BackendError::Workdir {
                        workdir: process.working_dir.clone(),
                    });
                }
                ended.exit_code = Some(127);
            }
        }
        // Stopped commands were ended by `exec_run`; a finished one may have left processes.
        if !ended.kill_incomplete && sandbox.is_session() && ended.exit_code.is_some() {
            ended.kill_incomplete = !self.kill_tree(sandbox, process).await.unwrap_or(false);
        }
        let after = self.limit_counters(sandbox).await;
        ended.hits = Some(match (before, after) {
            (Some(b), Some(a)) => b.hits(&a),
            _ => super::LimitsHit {
                unmeasured: true,
                ..Default::default()
            },
        });
        Ok(Ran {
            ended,
            runner: super::Runner::Exec,
            stdout_sha256: None,
            stderr_sha256: None,
            warnings: Vec::new(),
        })
    }
}

fn name_of(c: &bollard::models::ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn uses_agent(&self) -> bool {
        self.options.agent
    }

    async fn acquire(
        &self,
        spec: &SandboxSpec,
        known: bool,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox, BackendError> {
        let engine = self.engine().await?;
        let session = matches!(spec.kind, SandboxKind::Session { .. });
        // A live session container needs no image check: one engine call saved per command.
        if session {
            if let Some(found) = self.find_session(spec).await? {
                return Ok(found);
            }
        }
        image::ensure_image(
            &engine.docker,
            &spec.image,
            &self.options.state_dir,
            progress,
        )
        .await?;
        let created = match self.create_and_start(spec).await {
            // Another process created the session container first: use theirs.
            Err(BackendError::Engine(e)) if session && status_of(&e) == Some(409) => {
                return self
                    .find_session(spec)
                    .await?
                    .ok_or(BackendError::Engine(e))
            }
            other => other?,
        };
        Ok(Sandbox {
            placement: None,
            recovered: (session && known).then_some(Recovered::Recreated),
            ..created
        })
    }

    async fn run(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        stdin: Stdin<'_>,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Ran, BackendError> {
        let mut fallback = None;
        if let Some(channel) = &sandbox.channel {
            match self
                .run_via_agent(sandbox, channel, process, stdin, streams, cancel)
                .await?
            {
                Ok(ran) => return Ok(ran),
                Err(why) => fallback = Some(why),
            }
        } else if process.stdin {
            return Err(BackendError::Files {
                what: "stdin needs stockade's agent, which this sandbox does not have (a remote engine, or STOCKADE_NO_AGENT)".to_string(),
            });
        }
        let mut ran = self.run_via_exec(sandbox, process, streams, cancel).await?;
        if let Some(why) = fallback {
            ran.warnings.push(format!(
                "stockade's agent could not be started in the sandbox ({why}); the command ran \
                 as the engine's exec instead, in the same sandbox, but its output and exit \
                 status are not vouched for by the agent"
            ));
        }
        Ok(ran)
    }

    async fn kill_all(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> Result<bool, BackendError> {
        self.kill_tree(sandbox, process).await
    }

    async fn reset(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        self.reset_container(sandbox).await
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        self.remove_container(id).await
    }

    async fn census(&self) -> Result<Vec<(String, bool)>, BackendError> {
        Ok(self
            .list_containers(None)
            .await?
            .into_iter()
            .filter_map(|c| {
                let managed = c
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(labels::LABEL_MANAGED));
                Some((c.id?, managed))
            })
            .collect())
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<SandboxInfo>, BackendError> {
        let mut wanted = vec![format!("{}=1", labels::LABEL_MANAGED)];
        if let Some(owner) = owner {
            wanted.push(format!("{}={owner}", labels::LABEL_STATE));
        }
        let filters = HashMap::from([("label".to_string(), wanted)]);
        Ok(self
            .list_containers(Some(filters))
            .await?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.clone().unwrap_or_default();
                labels::info(
                    c.id.as_deref().unwrap_or_default(),
                    &name_of(&c),
                    &labels,
                    c.state.map(|s| s.to_string()).unwrap_or_default(),
                    c.created.unwrap_or_default(),
                )
            })
            .collect())
    }

    async fn copy_in(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        path: &str,
        source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        size: Option<u64>,
    ) -> Result<Copied, BackendError> {
        let channel = file_channel(sandbox)?;
        for attempt in 0..2 {
            match crate::agent::client::write_file(channel, process, path, &mut *source, size).await
            {
                Err(crate::agent::client::AgentError::Unavailable { .. }) if attempt == 0 => {
                    self.launch_agent(sandbox, channel, process, &Cancel::never())
                        .await?;
                }
                other => return other.map_err(Into::into),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn copy_out(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        path: &str,
        sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Copied, BackendError> {
        let channel = file_channel(sandbox)?;
        for attempt in 0..2 {
            match crate::agent::client::read_file(channel, process, path, &mut *sink).await {
                Err(crate::agent::client::AgentError::Unavailable { .. }) if attempt == 0 => {
                    self.launch_agent(sandbox, channel, process, &Cancel::never())
                        .await?;
                }
                other => return other.map_err(Into::into),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

/// Files move through the agent (the engine's archive API refuses read-only roots and tmpfs).
fn file_channel(sandbox: &Sandbox) -> Result<&Channel, BackendError> {
    sandbox.channel.as_ref().ok_or_else(|| BackendError::Files {
        what: "copying files needs stockade's agent, which this sandbox does not have (a remote engine, or STOCKADE_NO_AGENT)".to_string(),
    })
}
