//! One backend chosen at start-up, behind the same trait: `Backend`'s methods return
//! `impl Future`, so the choice is an enum that delegates, not a trait object.

use super::docker::DockerBackend;
#[cfg(feature = "kubernetes")]
use super::kubernetes::KubernetesBackend;
use super::native::NativeBackend;
use super::{
    Backend, BackendError, BackendKind, Copied, ProcessSpec, Ran, Sandbox, SandboxInfo,
    SandboxSpec, Stdin, Streams,
};
use crate::cancel::Cancel;

/// Which backend to use: `auto` picks Docker when an engine answers, native otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    #[default]
    Auto,
    Docker,
    Native,
    /// A cluster: accepted only in a build with the `kubernetes` feature.
    Kubernetes,
}

/// Why `--backend kubernetes` cannot run a sandbox in this build.
pub const KUBERNETES_STATE: &str = "this stockade was built without the Kubernetes backend: \
     build it with `cargo build --features kubernetes`";

impl std::str::FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Choice, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "docker" => Ok(Choice::Docker),
            "native" => Ok(Choice::Native),
            "kubernetes" if cfg!(feature = "kubernetes") => Ok(Choice::Kubernetes),
            "kubernetes" => Err(KUBERNETES_STATE.to_string()),
            other => Err(format!(
                "unknown backend {other:?}: expected docker, native or auto"
            )),
        }
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Choice::Auto => "auto",
            Choice::Docker => "docker",
            Choice::Native => "native",
            Choice::Kubernetes => "kubernetes",
        })
    }
}

/// The backend the face chose.
#[derive(Debug, Clone)]
pub enum AnyBackend {
    Docker(DockerBackend),
    Native(NativeBackend),
    #[cfg(feature = "kubernetes")]
    Kubernetes(KubernetesBackend),
}

macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            AnyBackend::Docker($b) => $call,
            AnyBackend::Native($b) => $call,
            #[cfg(feature = "kubernetes")]
            AnyBackend::Kubernetes($b) => $call,
        }
    };
}

impl Backend for AnyBackend {
    fn kind(&self) -> BackendKind {
        delegate!(self, b => b.kind())
    }

    fn uses_agent(&self) -> bool {
        delegate!(self, b => b.uses_agent())
    }

    async fn acquire(
        &self,
        spec: &SandboxSpec,
        known: bool,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox, BackendError> {
        delegate!(self, b => b.acquire(spec, known, progress).await)
    }

    async fn run(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        stdin: Stdin<'_>,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Ran, BackendError> {
        delegate!(self, b => b.run(sandbox, process, stdin, streams, cancel).await)
    }

    async fn kill_all(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> Result<bool, BackendError> {
        delegate!(self, b => b.kill_all(sandbox, process).await)
    }

    async fn reset(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        delegate!(self, b => b.reset(sandbox).await)
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        delegate!(self, b => b.remove(id).await)
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<SandboxInfo>, BackendError> {
        delegate!(self, b => b.list(owner).await)
    }

    async fn census(&self) -> Result<Vec<(String, bool)>, BackendError> {
        delegate!(self, b => b.census().await)
    }

    async fn copy_in(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        path: &str,
        source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        size: Option<u64>,
    ) -> Result<Copied, BackendError> {
        delegate!(self, b => b.copy_in(sandbox, process, path, source, size).await)
    }

    async fn copy_out(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        path: &str,
        sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Copied, BackendError> {
        delegate!(self, b => b.copy_out(sandbox, process, path, sink).await)
    }
}
