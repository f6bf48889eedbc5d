//! What the CLI reads from its flags and environment, in one place, and the service it builds
//! from them (`STOCKADE_BACKEND` and `STOCKADE_IMAGES_DIR` among them).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use stockade::backend::docker::engine::{self, DEFAULT_CALL_TIMEOUT, DEFAULT_HOST};
use stockade::backend::docker::{DockerBackend, DockerOptions};
use stockade::backend::native::{NativeBackend, NativeOptions};
use stockade::backend::{AnyBackend, Choice};
use stockade::cancel::{Cancel, Reason};
use stockade::check::Checker;
use stockade::config::{self, Config};
use stockade::profile::ProfileDirs;
use stockade::service::{Principal, Service, Settings};
use stockade::state;

use super::GlobalArgs;

/// The signals that cancel a running command (it is ended inside its sandbox, its audit
/// `finish` written, and stockade exits 128 + N).
const CANCEL_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The state directory: `--state-dir`, `STOCKADE_STATE_DIR`, or the XDG state directory.
pub fn state_dir(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    Ok(state::resolve_state_dir(global.state_dir.clone(), env)?)
}

/// Profile directories: `--profiles-dir` or `STOCKADE_PROFILES_DIR` first, then the config
/// directory's `profiles/`; and the engine socket `DOCKER_HOST` names, which profiles may not
/// reach.
pub fn profile_dirs(global: &GlobalArgs) -> ProfileDirs {
    let mut dirs = Vec::new();
    if let Some(dir) = global
        .profiles_dir
        .clone()
        .or_else(|| env("STOCKADE_PROFILES_DIR").map(PathBuf::from))
    {
        dirs.push(dir);
    }
    if let Some(config) = config::config_dir(&env) {
        dirs.push(config.join("profiles"));
    }
    let mut profile_dirs = ProfileDirs::new(dirs);
    if let Some(socket) = engine_host().strip_prefix("unix://") {
        profile_dirs.engine_sockets.push(PathBuf::from(socket));
    }
    profile_dirs
}

/// The configuration: `--config`, `STOCKADE_CONFIG` (either must exist), or `config.toml` in
/// the config directory (the defaults when it does not exist).
pub fn config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let named = global
        .config
        .clone()
        .or_else(|| env("STOCKADE_CONFIG").map(PathBuf::from));
    Ok(match named {
        Some(path) => Config::load(&path, true)?,
        None => match config::config_dir(&env) {
            Some(dir) => Config::load(&dir.join("config.toml"), false)?,
            None => Config::default(),
        },
    })
}

pub fn settings(global: &GlobalArgs) -> anyhow::Result<Settings> {
    Ok(Settings {
        state_dir: state_dir(global)?,
        profile_dirs: profile_dirs(global),
        config: config(global)?,
        secrets_key: env("STOCKADE_SECRETS_KEY").map(PathBuf::from),
    })
}

/// The home directory (`HOME`), which `~` in other tools' configs stands for.
pub fn home_dir() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// `DOCKER_HOST`, or the local socket.
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// The bound on one engine call: `STOCKADE_ENGINE_TIMEOUT` (`10s`) or the default.
pub fn call_timeout() -> anyhow::Result<Duration> {
    match std::env::var("STOCKADE_ENGINE_TIMEOUT") {
        Ok(t) if !t.is_empty() => {
            let d = stockade::profile::parse_duration(&t)
                .map_err(|e| anyhow::anyhow!("STOCKADE_ENGINE_TIMEOUT={t:?}: {e}"))?;
            anyhow::ensure!(!d.is_zero(), "STOCKADE_ENGINE_TIMEOUT must not be zero");
            Ok(d)
        }
        _ => Ok(DEFAULT_CALL_TIMEOUT),
    }
}

/// The Docker backend, not yet connected. Commands run through stockade's agent when the
/// engine is local (the agent and its channel are bind-mounted from this machine) unless
/// `STOCKADE_NO_AGENT` is set (then each is the engine's own exec, in the same sandbox).
pub fn docker(state_dir: &std::path::Path) -> anyhow::Result<DockerBackend> {
    let host = engine_host();
    let agent = engine::is_local(&host) && std::env::var_os("STOCKADE_NO_AGENT").is_none();
    Ok(DockerBackend::new(
        &host,
        call_timeout()?,
        DockerOptions {
            state_dir: state_dir.to_path_buf(),
            agent,
        },
    ))
}

/// How long `auto` waits for an engine to answer before it takes the native backend.
const AUTO_PROBE: Duration = Duration::from_secs(3);

/// Where the native backend's root filesystems are unpacked: `STOCKADE_IMAGES_DIR`, else
/// `$XDG_DATA_HOME/stockade/images` (else `~/.local/share/stockade/images`), shared by every
/// state directory of the user as an engine's images are; else the state directory's
/// `images/`.
pub fn images_dir(state_dir: &std::path::Path) -> PathBuf {
    if let Some(dir) = env("STOCKADE_IMAGES_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(data) = env("XDG_DATA_HOME") {
        return PathBuf::from(data).join("stockade").join("images");
    }
    match env("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/stockade/images"),
        None => state_dir.join("images"),
    }
}

/// The native backend (nothing is probed yet).
pub fn native(state_dir: &std::path::Path) -> NativeBackend {
    NativeBackend::new(NativeOptions {
        state_dir: state_dir.to_path_buf(),
        images_dir: images_dir(state_dir),
    })
}

/// The backend asked for: `--backend`, `STOCKADE_BACKEND`, the configuration's `backend`.
pub fn choice(global: &GlobalArgs, config: &Config) -> anyhow::Result<Choice> {
    if let Some(choice) = global.backend {
        return Ok(choice);
    }
    if let Some(value) = env("STOCKADE_BACKEND") {
        let text = value.to_string_lossy();
        return text
            .parse()
            .map_err(|e: String| anyhow::anyhow!("STOCKADE_BACKEND={text:?}: {e}"));
    }
    Ok(config.backend)
}

/// The chosen backend: Docker (connecting in the background), native, or for `auto` Docker
/// when an engine answers within [`AUTO_PROBE`] and native otherwise.
pub async fn backend(global: &GlobalArgs, settings: &Settings) -> anyhow::Result<AnyBackend> {
    let state_dir = &settings.state_dir;
    let no_agent = std::env::var_os("STOCKADE_NO_AGENT").is_some();
    let native = || {
        anyhow::ensure!(
            !no_agent,
            "STOCKADE_NO_AGENT applies to the Docker backend; the native backend runs every \
             command through stockade's agent (unset it, or use --backend docker)"
        );
        Ok(AnyBackend::Native(native(state_dir)))
    };
    match choice(global, &settings.config)? {
        Choice::Docker => {
            let docker = docker(state_dir)?;
            docker.warm_up();
            Ok(AnyBackend::Docker(docker))
        }
        Choice::Native => native(),
        #[cfg(feature = "kubernetes")]
        Choice::Kubernetes => Ok(AnyBackend::Kubernetes(
            stockade::backend::kubernetes::KubernetesBackend::connect(&settings.config.kubernetes)
                .await?,
        )),
        #[cfg(not(feature = "kubernetes"))]
        Choice::Kubernetes => anyhow::bail!(
            "--backend kubernetes: {}",
            stockade::backend::KUBERNETES_STATE
        ),
        Choice::Auto => {
            let docker = docker(state_dir)?;
            if docker.answers(AUTO_PROBE.min(call_timeout()?)).await {
                Ok(AnyBackend::Docker(docker))
            } else {
                tracing::info!(
                    host = docker.host(),
                    "no engine answers: the native backend runs sandboxes"
                );
                native()
            }
        }
    }
}

/// The service: the rules compile on a thread of their own while the backend is chosen (and
/// the engine connection made).
pub async fn service(global: &GlobalArgs) -> anyhow::Result<Service<AnyBackend>> {
    let settings = settings(global)?;
    let checker = tokio::task::spawn_blocking(Checker::builtin);
    let backend = backend(global, &settings).await?;
    let checker = checker.await?.context("compiling the builtin rules")?;
    Ok(Service::with_checker(
        backend,
        settings,
        std::sync::Arc::new(checker),
    ))
}

/// Who runs the CLI, for the audit log: `STOCKADE_USER` (set by a front end that knows the
/// agent or user), else the login name, else the uid.
pub fn principal() -> Principal {
    if let Some(user) = std::env::var("STOCKADE_USER")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Principal::new(user);
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Principal::new(u.name),
        _ => Principal::new(format!("uid:{uid}")),
    }
}

/// A cancellation fired by SIGINT, SIGTERM or SIGHUP (the first one wins).
pub fn cancel_on_signals() -> Cancel {
    use tokio::signal::unix::{signal, SignalKind};
    let (canceller, cancel) = Cancel::new();
    for number in CANCEL_SIGNALS {
        match signal(SignalKind::from_raw(number)) {
            Ok(mut stream) => {
                let canceller = canceller.clone();
                tokio::spawn(async move {
                    if stream.recv().await.is_some() {
                        canceller.cancel(Reason::Signal(number));
                    }
                });
            }
            Err(e) => tracing::warn!(signal = number, error = %e, "cannot handle signal"),
        }
    }
    cancel
}
