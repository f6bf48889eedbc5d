//! The native backend: the same sandbox as the Docker backend's, made by stockade itself with
//! no daemon. Only this folder (and the agent's `init`, which executes what it renders)
//! touches namespaces, mounts, cgroups and seccomp:
//!
//! - `host`: what the machine offers (root or not, which cgroup hierarchies hold the
//!   controllers), probed once;
//! - `rootfs`: the base image's layer, built offline from the host's files exactly as for
//!   Docker (the same tar and digest) and unpacked once, content-addressed;
//! - `spec`: a [`SandboxSpec`] rendered into the init's [`Setup`] (pure, tested whole);
//! - `cgroup`: the sandbox's cgroup, its limits, and its end;
//! - `init`: `stockade-agent init` started with its set-up, and its control socket (start the
//!   agent, end every process, are you there).
//!
//! A sandbox is a pid namespace whose PID 1 is that init; commands run through the same agent
//! and protocol as in a container, so results are vouched for the same way. A sandbox's host
//! state is `native/<id>/` in the state directory: its record, its set-up (to build it again
//! after a reset), the init's control socket and the overlay's staging directory.

mod cgroup;
pub mod host;
mod init;
pub mod rootfs;
pub mod spec;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::cgroup::SandboxCgroup;
use self::host::Host;
use self::rootfs::{Images, Layer};
use super::{
    Backend, BackendError, BackendKind, Copied, Limits, ProcessSpec, Ran, Recovered, Runner,
    Sandbox, SandboxInfo, SandboxKind, SandboxSpec, Stdin, Streams,
};
use crate::agent::client::{self, AgentError, Launch};
use crate::agent::Channel;
use crate::cancel::Cancel;
use crate::state;

/// What the agent may say before it is ready (its error, if it fails); more is not read.
const MAX_AGENT_SAYS: usize = 4096;
/// After the hand-over, how long the agent may take to say it is ready and close its stdout.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);
/// A record is a few short fields.
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// An image's /etc/passwd is a few lines.
const MAX_PASSWD_BYTES: u64 = 256 * 1024;
const RECORD: &str = "record.json";
const SETUP: &str = "setup.bin";
const CONTROL: &str = "init.sock";
const STAGING: &str = "root";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    /// A profile option this backend cannot apply: refused, never run with less.
    #[error("the native backend cannot honour the profile's `{option}`: {why}")]
    Unsupported { option: &'static str, why: String },
    /// The host (kernel, cgroups, a surrounding container) lacks what a sandbox needs.
    #[error("the native backend cannot make a sandbox here: {what}; {fix}")]
    Host { what: String, fix: String },
    #[error("cgroup {}: {source}", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("root filesystem {}: {source}", path.display())]
    Rootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] super::docker::image::ImageError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// Building the sandbox failed inside: a namespace, a mount, a limit refused.
    #[error("the sandbox could not be built: {what}")]
    Setup { what: String },
    #[error("the sandbox's init: {what}")]
    Init { what: String },
    #[error("sandbox record {}: {why}", path.display())]
    Record { path: PathBuf, why: String },
}

/// How the backend was asked to work.
#[derive(Debug, Clone)]
pub struct NativeOptions {
    /// The state directory (records, control sockets, the agent's channels).
    pub state_dir: PathBuf,
    /// Where root filesystems are unpacked (shared by state directories).
    pub images_dir: PathBuf,
}

/// Runs sandboxes as namespaces of this host. Clones share the host probe and the compiled
/// seccomp programs.
#[derive(Debug, Clone)]
pub struct NativeBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: NativeOptions,
    images: Images,
    host: OnceLock<Host>,
    /// Seccomp programs by spec digest (which covers the profile's file and capabilities).
    filters: Mutex<HashMap<String, Arc<Vec<Vec<u8>>>>>,
}

/// What the host keeps of a sandbox (`native/<id>/record.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    kind: SandboxKind,
    owner: String,
    profile: String,
    digest: String,
    version: String,
    created: i64,
    /// The init's host pid.
    pid: i32,
    limits: Limits,
    /// The agent binary that runs the init (to build the sandbox again after a reset).
    binary: PathBuf,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn unavailable(reason: impl Into<String>) -> AgentError {
    AgentError::Unavailable {
        reason: reason.into(),
    }
}

impl NativeBackend {
    pub fn new(options: NativeOptions) -> NativeBackend {
        NativeBackend {
            inner: Arc::new(Inner {
                images: Images::new(options.images_dir.clone()),
                options,
                host: OnceLock::new(),
                filters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The host probe (kept once it succeeded).
    pub fn host(&self) -> Result<&Host, NativeError> {
        if let Some(host) = self.inner.host.get() {
            return Ok(host);
        }
        let host = Host::probe()?;
        Ok(self.inner.host.get_or_init(|| host))
    }

    /// The root filesystems.
    pub fn images(&self) -> &Images {
        &self.inner.images
    }

    /// Builds the base image's root filesystem from host files with `include`d tools.
    pub fn build_image(
        &self,
        include: &[String],
        progress: &mut dyn FnMut(&str),
    ) -> Result<Layer, NativeError> {
        self.inner.images.build(include, progress)
    }

    /// A sandbox's host directory: short (a unix socket path must fit in 108 bytes), stable.
    fn dir_of(&self, name: &str) -> PathBuf {
        let id = hex::encode(&Sha256::digest(name.as_bytes())[..8]);
        self.inner.options.state_dir.join("native").join(id)
    }

    fn channel_for(&self, kind: &SandboxKind) -> Channel {
        let state_dir = &self.inner.options.state_dir;
        match kind {
            SandboxKind::Session { name } => Channel::session(state_dir, name),
            SandboxKind::Oneshot { exec } => Channel::oneshot(state_dir, exec),
        }
    }

    fn sandbox(&self, record: &Record, recovered: Option<Recovered>) -> Sandbox {
        Sandbox {
            id: record.name.clone(),
            name: record.name.clone(),
            kind: record.kind.clone(),
            channel: Some(self.channel_for(&record.kind)),
            recovered,
            placement: None,
        }
    }

    fn read_record(&self, dir: &Path) -> Option<Record> {
        use std::io::Read;
        let file = state::open_private_file(&dir.join(RECORD), nix::fcntl::OFlag::O_RDONLY).ok()?;
        let mut text = Vec::new();
        file.take(MAX_RECORD_BYTES).read_to_end(&mut text).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write_record(&self, dir: &Path, record: &Record) -> Result<(), NativeError> {
        // Serializing a struct of strings and numbers cannot fail.
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        let tmp = dir.join(format!("{RECORD}.tmp"));
        state::write_private_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(RECORD)).map_err(|e| NativeError::Record {
            path: dir.join(RECORD),
            why: e.to_string(),
        })
    }

    /// The seccomp programs of `spec`: the profile's own file, resolved for its capabilities
    /// on this kernel and compiled by seccompiler (as `profile lint` checks it compiles),
    /// each as the bytes of its `struct sock_filter` array.
    fn filters(&self, spec: &SandboxSpec) -> Result<Arc<Vec<Vec<u8>>>, NativeError> {
        let mut cache = self
            .inner
            .filters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = cache.get(&spec.digest) {
            return Ok(found.clone());
        }
        use crate::seccomp::{compile, host_kernel, resolve, Arch};
        let resolved = resolve(
            &spec.seccomp.parsed,
            &spec.capabilities,
            Arch::host(),
            host_kernel(),
        );
        let compiled = compile(&resolved, Arch::host())?;
        // The kernel runs every filter whatever their order and keeps the strictest answer;
        // the order matters only to the installing process, which each filter already in
        // place constrains. The base filter (the profile's default action for every syscall no
        // rule names, `seccomp` itself included in a minimal profile) goes last, so that the
        // filters before it can still be installed. (Two ERRNO results, where the last
        // installed wins, never come from the base and another filter: the base allows every
        // syscall a rule names when the rule matches.)
        let mut ordered: Vec<&crate::seccomp::CompiledFilter> = compiled.filters.iter().collect();
        ordered.sort_by_key(|f| f.mismatch_action != crate::seccomp::Action::Allow);
        let programs: Vec<Vec<u8>> = ordered
            .into_iter()
            .map(|f| {
                f.program
                    .iter()
                    .flat_map(|i| {
                        let mut b = [0u8; 8];
                        b[..2].copy_from_slice(&i.code.to_ne_bytes());
                        b[2] = i.jt;
                        b[3] = i.jf;
                        b[4..].copy_from_slice(&i.k.to_ne_bytes());
                        b
                    })
                    .collect()
            })
            .collect();
        let programs = Arc::new(programs);
        cache.insert(spec.digest.clone(), programs.clone());
        Ok(programs)
    }

    /// The layer of `image`, unpacked (building the base image's on first use).
    fn layer(&self, image: &str, progress: &mut dyn FnMut(&str)) -> Result<Layer, NativeError> {
        self.inner.images.ensure(image, progress)
    }

    /// Creates the sandbox for `spec`: its set-up, its cgroup, its init.
    async fn create(&self, spec: &SandboxSpec, layer: &Layer) -> Result<Sandbox, NativeError> {
        let host = self.host()?.clone();
        let Some(agent) = &spec.agent else {
            return Err(NativeError::Unsupported {
                option: "agent",
                why: "the native backend runs every command through stockade's agent".into(),
            });
        };
        let dir = self.dir_of(&spec.name);
        state::ensure_private_dir(&self.inner.options.state_dir.join("native"))?;
        state::ensure_private_dir(&dir)?;
        state::ensure_private_dir(&dir.join(STAGING))?;
        let passwd = read_capped(&layer.path.join("etc/passwd"), MAX_PASSWD_BYTES);
        let home = spec::home_of(&passwd, spec.user.uid);
        let seccomp = self.filters(spec)?;
        let setup = spec::render(
            spec,
            spec::Paths {
                lower: &layer.path,
                staging: &dir.join(STAGING),
                control: &dir.join(CONTROL),
            },
            &host,
            &home,
            seccomp.as_ref().clone(),
        )?;
        let encoded = setup.encode();
        state::write_private_file(&dir.join(SETUP), &encoded)?;
        let mut record = Record {
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            owner: spec.owner.clone(),
            profile: spec.profile.clone(),
            digest: spec.digest.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            created: now_secs(),
            pid: 0,
            limits: spec.limits,
            binary: agent.binary.clone(),
        };
        record.pid = self.boot(&host, &record, &encoded).await?;
        self.write_record(&dir, &record)?;
        Ok(self.sandbox(&record, None))
    }

    /// Starts the init of `record`'s sandbox from its encoded set-up in a fresh cgroup; on
    /// failure nothing of it is left.
    async fn boot(&self, host: &Host, record: &Record, setup: &[u8]) -> Result<i32, NativeError> {
        let cgroup = SandboxCgroup::of(&host.cgroups, &record.name);
        // What a crashed earlier sandbox of this name left (a session's) goes first.
        cgroup.destroy((record.pid > 0).then_some(record.pid))?;
        cgroup.create(&host.cgroups, &record.limits)?;
        match init::start(&record.binary, setup, &cgroup).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                let _ = cgroup.destroy(None);
                Err(e)
            }
        }
    }

    /// The session's sandbox if it exists: built again (and said so) if its init is gone.
    async fn find_session(&self, spec: &SandboxSpec) -> Result<Option<Sandbox>, BackendError> {
        let dir = self.dir_of(&spec.name);
        let Some(mut record) = self.read_record(&dir) else {
            return Ok(None);
        };
        let session = match &spec.kind {
            SandboxKind::Session { name } => name.clone(),
            SandboxKind::Oneshot { .. } => String::new(),
        };
        if record.version != env!("CARGO_PKG_VERSION") {
            return Err(BackendError::SessionVersion {
                session,
                theirs: record.version,
                ours: env!("CARGO_PKG_VERSION").to_string(),
            });
        }
        if record.digest != spec.digest {
            return Err(BackendError::SessionMismatch {
                session,
                profile: record.profile,
            });
        }
        let host = self.host()?.clone();
        if SandboxCgroup::of(&host.cgroups, &record.name).holds(record.pid) {
            return Ok(Some(self.sandbox(&record, None)));
        }
        // Its init is gone (a reboot, a kill from outside): the same sandbox, built again.
        record.pid = self.rebuild(&host, &dir, &record).await?;
        Ok(Some(self.sandbox(&record, Some(Recovered::Restarted))))
    }

    /// Builds a sandbox again from its stored set-up (its tmpfs contents are gone).
    async fn rebuild(&self, host: &Host, dir: &Path, record: &Record) -> Result<i32, NativeError> {
        let setup = std::fs::read(dir.join(SETUP)).map_err(|e| NativeError::Record {
            path: dir.join(SETUP),
            why: e.to_string(),
        })?;
        let mut record = record.clone();
        record.pid = self.boot(host, &record, &setup).await?;
        self.write_record(dir, &record)?;
        Ok(record.pid)
    }

    fn control_of(&self, sandbox: &Sandbox) -> PathBuf {
        self.dir_of(&sandbox.name).join(CONTROL)
    }

    /// Starts a new agent in the sandbox with a fresh key (the init ends whatever was left
    /// first, an earlier agent included).
    async fn launch_agent(
        &self,
        sandbox: &Sandbox,
        channel: &Channel,
        process: &ProcessSpec,
        cancel: &Cancel,
    ) -> Result<(), AgentError> {
        let launch = Launch::prepare(channel)?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| unavailable(format!("pipe: {e}")))
        };
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        init::launch(
            &self.control_of(sandbox),
            &launch.argv(),
            process.kill_grace,
            &stdin_r,
            &stdout_w,
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
        drop((stdin_r, stdout_w));
        // The key line is far smaller than a pipe's buffer: this write never blocks.
        std::fs::File::from(stdin_w)
            .write_all(launch.key_line().as_bytes())
            .map_err(|e| unavailable(format!("cannot hand the agent its key: {e}")))?;
        let mut said = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout_r)
            .map_err(|e| unavailable(format!("pipe: {e}")))?;
        let launched = {
            let exited = async {
                use tokio::io::AsyncReadExt;
                let mut bytes = Vec::new();
                let _ = (&mut said)
                    .take(MAX_AGENT_SAYS as u64)
                    .read_to_end(&mut bytes)
                    .await;
                String::from_utf8_lossy(&bytes).into_owned()
            };
            launch.complete(channel, exited, cancel).await
        };
        if launched.is_ok() {
            // The agent says it is ready once it holds its listener, then closes its stdout:
            // the pipe stays open until then, or that line would find no reader and end it.
            let drained = async {
                use tokio::io::AsyncReadExt;
                let mut sink = [0u8; 256];
                while matches!(said.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let _ = tokio::time::timeout(READY_WITHIN, drained).await;
        }
        launched
    }

    /// The kill rule from outside the agent (by the init). `Ok(false)`: not confirmed.
    async fn kill_tree(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> Result<bool, NativeError> {
        init::kill_all(&self.control_of(sandbox), process.kill_grace).await
    }

    async fn reset_sandbox(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        tracing::warn!(sandbox = %sandbox.name, "resetting the sandbox: the kill inside it did not finish");
        if !sandbox.is_session() {
            return self.remove_sandbox(&sandbox.id);
        }
        let dir = self.dir_of(&sandbox.name);
        let record = self.read_record(&dir).ok_or_else(|| NativeError::Record {
            path: dir.join(RECORD),
            why: "missing".to_string(),
        })?;
        let host = self.host()?.clone();
        self.rebuild(&host, &dir, &record).await?;
        Ok(())
    }

    fn remove_sandbox(&self, id: &str) -> Result<(), BackendError> {
        let host = self.host()?;
        let dir = self.dir_of(id);
        let init = self.read_record(&dir).map(|r| r.pid);
        SandboxCgroup::of(&host.cgroups, id).destroy(init)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| NativeError::Record {
                path: dir.clone(),
                why: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Every record of this state directory.
    fn records(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(self.inner.options.state_dir.join("native")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| self.read_record(&e.path()))
            .collect()
    }

    async fn run_via_agent(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        mut stdin: Stdin<'_>,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Ran, BackendError> {
        let channel = sandbox
            .channel
            .as_ref()
            .ok_or_else(|| BackendError::Files {
                what: "a native sandbox without its agent's channel".to_string(),
            })?;
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
                    return Ok(Ran {
                        ended,
                        runner: Runner::Agent,
                        stdout_sha256: Some(report.stdout_sha256),
                        stderr_sha256: Some(report.stderr_sha256),
                        warnings: Vec::new(),
                    });
                }
                Err(AgentError::Unavailable { reason }) => {
                    tracing::debug!(%reason, attempt, "sandbox agent unavailable");
                    why = reason.clone();
                    if cancel.fired().is_some() || attempt == 1 {
                        break;
                    }
                    self.launch_agent(sandbox, channel, process, cancel).await?;
                }
                Err(e) => {
                    // The command may still be running: end it from outside, and reset the
                    // sandbox if that cannot be confirmed.
                    if !self.kill_tree(sandbox, process).await.unwrap_or(false) {
                        let failed = self.reset_sandbox(sandbox).await.err();
                        return Err(BackendError::Reset {
                            source: Box::new(e.into()),
                            failed: failed.map(|f| f.to_string()),
                        });
                    }
                    return Err(e.into());
                }
            }
        }
        Err(AgentError::Unavailable { reason: why }.into())
    }
}

fn read_capped(path: &Path, cap: u64) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(cap).read_to_string(&mut text);
    }
    text
}

impl Backend for NativeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn uses_agent(&self) -> bool {
        true
    }

    async fn acquire(
        &self,
        spec: &SandboxSpec,
        known: bool,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox, BackendError> {
        self.host()?;
        if let Some(e) = spec::unsupported(&spec.network, &spec.image) {
            return Err(e.into());
        }
        let session = matches!(spec.kind, SandboxKind::Session { .. });
        if session {
            if let Some(found) = self.find_session(spec).await? {
                return Ok(found);
            }
        }
        let layer = self.layer(&spec.image, &mut |line| progress(line))?;
        let created = self.create(spec, &layer).await?;
        Ok(Sandbox {
            recovered: (session && known).then_some(Recovered::Recreated),
            placement: None,
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
        self.run_via_agent(sandbox, process, stdin, streams, cancel)
            .await
    }

    async fn kill_all(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> Result<bool, BackendError> {
        Ok(self.kill_tree(sandbox, process).await?)
    }

    async fn reset(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        self.reset_sandbox(sandbox).await
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        self.remove_sandbox(id)
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<SandboxInfo>, BackendError> {
        let host = self.host()?.clone();
        Ok(self
            .records()
            .into_iter()
            .filter(|r| owner.map_or(true, |o| o == r.owner))
            .map(|r| {
                let running = SandboxCgroup::of(&host.cgroups, &r.name).holds(r.pid);
                SandboxInfo {
                    id: r.name.clone(),
                    name: r.name,
                    kind: r.kind,
                    owner: r.owner,
                    profile: r.profile,
                    state: if running { "running" } else { "exited" }.to_string(),
                    created: r.created,
                    version: Some(r.version),
                }
            })
            .collect())
    }

    async fn census(&self) -> Result<Vec<(String, bool)>, BackendError> {
        let host = self.host()?;
        Ok(cgroup::names(&host.cgroups)
            .into_iter()
            .map(|name| (name, true))
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
        let channel = sandbox
            .channel
            .as_ref()
            .ok_or_else(|| BackendError::Files {
                what: "a native sandbox without its agent's channel".to_string(),
            })?;
        for attempt in 0..2 {
            match client::write_file(channel, process, path, &mut *source, size).await {
                Err(AgentError::Unavailable { .. }) if attempt == 0 => {
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
        let channel = sandbox
            .channel
            .as_ref()
            .ok_or_else(|| BackendError::Files {
                what: "a native sandbox without its agent's channel".to_string(),
            })?;
        for attempt in 0..2 {
            match client::read_file(channel, process, path, &mut *sink).await {
                Err(AgentError::Unavailable { .. }) if attempt == 0 => {
                    self.launch_agent(sandbox, channel, process, &Cancel::never())
                        .await?;
                }
                other => return other.map_err(Into::into),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}
