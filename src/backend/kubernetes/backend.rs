//! Sandboxes as pods, processes through `pods/exec`: the [`Backend`] on a cluster.
//!
//! - A one-shot takes a pod from the profile's warm pool (`pool`), or, when the pool is empty,
//!   creates one from the same rendering; a session is a pod named after it, reused while its
//!   spec digest matches and recreated (and said so) when it has gone.
//! - A process runs as `stockade-agent exec --cwd DIR --env ... -- ARGV` in the pod's one
//!   container (a cluster's exec has no working directory or environment of its own), as the
//!   pod's user. Its exit status is the Status the API server sends on the error channel: a
//!   stream that ends without one is an error, never exit 0.
//! - The timeout, an output flood or a cancel ends it inside the pod: `stockade-agent kill`
//!   (TERM, grace, KILL for every process but PID 1, the keeper, which also reaps); when that
//!   cannot be confirmed, the pod is deleted and the outcome says `sandbox_reset`. A one-shot's
//!   `activeDeadlineSeconds` is lowered to its timeout when it starts: the cluster's own
//!   backstop if stockade is gone.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::checks::{check_network, check_node_pids, NetworkEnforcement, PidsOverride};
use super::labels::{
    ANNOTATION_SECCOMP_SHA256, ANNOTATION_SPEC_DIGEST, LABEL_KIND, LABEL_MANAGED_BY, LABEL_OWNER,
    LABEL_PROFILE, LABEL_SESSION, MANAGED_BY,
};
use super::pool::{self, Pool};
use super::render::{render, Manifests, RenderOptions};
use super::PoolError;
use crate::backend::docker::counters::{parse_counters, COUNTERS_SCRIPT, MAX_COUNTERS_TEXT};
use crate::backend::docker::image::{base_image_ref, cluster_image_ref, CLUSTER_AGENT_PATH};
use crate::backend::{
    Backend, BackendError, BackendKind, Copied, Counters, Ended, LimitsHit, Placement, ProcessSpec,
    Ran, Recovered, Runner, Sandbox, SandboxInfo, SandboxKind, SandboxSpec, Stdin, Stream, Streams,
};
use crate::cancel::{Cancel, Reason};
use crate::config::KubernetesConfig;

/// The container every pod has (render.rs).
const CONTAINER: &str = "sandbox";
/// How long a pod may take to be scheduled and started.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const START_POLL: Duration = Duration::from_millis(100);
/// A one-shot's lifetime at creation: the longest timeout a profile may have (the deadline can
/// only be lowered, which the command's own timeout does when it starts).
const ONESHOT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest wait for one API request (the exec streams have their own deadlines).
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// A session pod's lifetime: `activeDeadlineSeconds` can never be raised.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Past the timeout and the grace: time for the kill sweep before the deadline ends the pod.
const DEADLINE_SLACK: i64 = 30;
/// How long stockade's own short execs (kill sweep, counters) may take past their grace.
const HELPER_TIMEOUT: Duration = Duration::from_secs(20);
/// Read size per stream; also the exec streams' buffers.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// How long to keep reading output after the kill, for the last words of the command.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);
/// The agent's `exec` exit code when the working directory cannot be entered.
const EXEC_NO_WORKDIR: i64 = 125;

/// The Kubernetes backend: one namespace of one cluster.
#[derive(Clone)]
pub struct KubernetesBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    pods: Api<Pod>,
    policies: Api<NetworkPolicy>,
    namespace: String,
    cluster: String,
    config: KubernetesConfig,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("cluster", &self.inner.cluster)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

/// What a sweep found: `None` when it could not confirm that every process ended, else the
/// counters it read once they had (`None` when not asked for or not readable).
type Swept = Option<Option<Counters>>;

/// Why a running command was stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Flood,
    Cancelled(Reason),
}

impl KubernetesBackend {
    /// Connects with `config`'s kubeconfig (else `$STOCKADE_KUBECONFIG`, then kube's usual
    /// search) to its namespace (else the context's).
    pub async fn connect(config: &KubernetesConfig) -> Result<KubernetesBackend, PoolError> {
        let env = std::env::var_os("STOCKADE_KUBECONFIG").map(std::path::PathBuf::from);
        let path = config.kubeconfig.clone().or(env);
        let (client, context_ns, cluster) = pool::connect_to(path.as_deref()).await?;
        let namespace = config.namespace.clone().unwrap_or(context_ns);
        KubernetesBackend::from_client(client, &namespace, &cluster, config)
    }

    /// The backend over an existing client (`cluster` names it in the audit).
    pub fn from_client(
        client: kube::Client,
        namespace: &str,
        cluster: &str,
        config: &KubernetesConfig,
    ) -> Result<KubernetesBackend, PoolError> {
        super::names::dns_label("namespace", namespace)?;
        Ok(KubernetesBackend {
            inner: Arc::new(Inner {
                pods: Api::namespaced(client.clone(), namespace),
                policies: Api::namespaced(client.clone(), namespace),
                client,
                namespace: namespace.to_string(),
                cluster: cluster.to_string(),
                config: config.clone(),
            }),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// The render options of a pod living `lifetime`, with the cluster image.
    pub fn render_options(&self, lifetime: Duration, kill_grace: Duration) -> RenderOptions {
        cluster_render_options(
            &self.inner.config,
            &self.inner.namespace,
            lifetime,
            kill_grace,
        )
    }

    /// Why `spec` would be refused on this cluster, before anything is asked of it
    /// (`profile show`).
    pub fn refusal(&self, spec: &SandboxSpec) -> Option<String> {
        if let Err(e) = self.vouch(spec) {
            return Some(e.to_string());
        }
        render(
            spec,
            &self.render_options(ONESHOT_LIFETIME, Duration::from_secs(2)),
        )
        .err()
        .map(|e| e.to_string())
    }

    /// What the operator asserted for `spec`, refused where neither the cluster nor the
    /// operator vouches for it.
    fn vouch(&self, spec: &SandboxSpec) -> Result<Vec<String>, BackendError> {
        let config = &self.inner.config;
        let mut asserted = Vec::new();
        let enforcement = match config.network_enforcement.as_deref() {
            None => NetworkEnforcement::Unknown,
            Some("trusted") => {
                asserted.push("network_enforcement=trusted".to_string());
                NetworkEnforcement::Trusted
            }
            Some(other) => {
                return Err(BackendError::Cluster {
                    what: format!(
                        "[kubernetes] network_enforcement = {other:?}: the only value is \
                         \"trusted\" (the operator asserts the CNI enforces NetworkPolicy)"
                    ),
                })
            }
        };
        check_network(spec, enforcement).map_err(refused)?;
        check_node_pids(
            spec,
            "every node",
            config.node_pids_limit,
            PidsOverride(config.allow_looser_pids),
        )
        .map_err(refused)?;
        if let Some(n) = config.node_pids_limit {
            asserted.push(format!("node_pids_limit={n}"));
        }
        if config.allow_looser_pids {
            asserted.push("allow_looser_pids".to_string());
        }
        Ok(asserted)
    }

    fn install_seccomp(&self, manifests: &Manifests) -> Result<(), BackendError> {
        install_seccomp(&self.inner.config, manifests)
    }

    /// Creates the NetworkPolicy and Pod for `spec`.
    async fn create(&self, spec: &SandboxSpec, lifetime: Duration) -> Result<String, BackendError> {
        let opts = self.render_options(lifetime, Duration::from_secs(2));
        let manifests = render(spec, &opts).map_err(refused)?;
        self.install_seccomp(&manifests)?;
        let name = spec.name.clone();
        super::names::dns_label("pod name", &name).map_err(|e| BackendError::Cluster {
            what: e.to_string(),
        })?;
        let post = PostParams::default();
        match bounded(
            "create the NetworkPolicy",
            &name,
            self.inner.policies.create(&post, &manifests.network_policy),
        )
        .await?
        {
            Ok(_) => {}
            // A session's policy outlives a pod that went (the name is the session's).
            Err(kube::Error::Api(r)) if r.code == 409 => {}
            Err(e) => return Err(api("create the NetworkPolicy", &name, e)),
        }
        if let Err(e) = bounded(
            "create the pod",
            &name,
            self.inner.pods.create(&post, &manifests.pod),
        )
        .await?
        {
            let _ = bounded(
                "delete the NetworkPolicy",
                &name,
                self.inner.policies.delete(&name, &DeleteParams::default()),
            )
            .await;
            return Err(api("create the pod", &name, e));
        }
        Ok(name)
    }

    /// Waits until the pod's container runs; a pod that cannot start is an error naming why.
    async fn wait_running(&self, name: &str) -> Result<Pod, BackendError> {
        let started = Instant::now();
        loop {
            let pod = timed("read the pod", name, self.inner.pods.get(name)).await?;
            let status = pod.status.clone().unwrap_or_default();
            let phase = status.phase.clone().unwrap_or_default();
            let container = status
                .container_statuses
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.name == CONTAINER).cloned());
            if phase == "Running" {
                if let Some(c) = &container {
                    if c.state.as_ref().and_then(|s| s.running.as_ref()).is_some() {
                        return Ok(pod);
                    }
                }
            }
            if phase == "Failed" || phase == "Succeeded" {
                return Err(BackendError::Cluster {
                    what: format!(
                        "pod {name} ended before it could run anything ({phase}: {})",
                        status.reason.or(status.message).unwrap_or_default()
                    ),
                });
            }
            if let Some(waiting) = container
                .as_ref()
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
            {
                let reason = waiting.reason.clone().unwrap_or_default();
                if matches!(
                    reason.as_str(),
                    "ErrImageNeverPull"
                        | "ErrImagePull"
                        | "ImagePullBackOff"
                        | "InvalidImageName"
                        | "CreateContainerConfigError"
                        | "CreateContainerError"
                        | "RunContainerError"
                ) {
                    let _ = self.delete(name).await;
                    return Err(BackendError::Cluster {
                        what: format!(
                            "pod {name} cannot start: {reason}: {} (the nodes need the image \
                             `stockade k8s image` builds, and the seccomp profile installed)",
                            waiting.message.clone().unwrap_or_default()
                        ),
                    });
                }
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = self.delete(name).await;
                return Err(BackendError::Cluster {
                    what: format!(
                        "pod {name} was not running after {} s (phase {phase:?}): is a node \
                         Ready and a scheduler running?",
                        START_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    fn placement(&self, pod: &Pod, from_pool: bool, asserted: Vec<String>) -> Placement {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        Placement {
            cluster: self.inner.cluster.clone(),
            namespace: self.inner.namespace.clone(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            seccomp_sha256: annotations
                .get(ANNOTATION_SECCOMP_SHA256)
                .cloned()
                .unwrap_or_default(),
            image: pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            image_id: pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
                .map(|c| c.image_id.clone())
                .unwrap_or_default(),
            from_pool,
            asserted,
        }
    }

    /// A one-shot's pod: from the warm pool, else created.
    async fn oneshot(
        &self,
        spec: &SandboxSpec,
        exec: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(String, bool), BackendError> {
        let opts = self.render_options(ONESHOT_LIFETIME, Duration::from_secs(2));
        let pool = Pool::new(
            self.inner.client.clone(),
            spec.clone(),
            opts,
            Duration::ZERO,
        )
        .map_err(pool_error)?;
        let claimed = tokio::time::timeout(API_TIMEOUT, pool.claim(exec))
            .await
            .map_err(|_| BackendError::Cluster {
                what: format!(
                    "claiming a warm pod took more than {} s; the API server is slow or gone",
                    API_TIMEOUT.as_secs()
                ),
            })?;
        match claimed {
            Ok(claim) => {
                progress(&format!("claimed warm pod {}", claim.pod));
                Ok((claim.pod, true))
            }
            Err(PoolError::Empty { .. }) => {
                progress("the warm pool is empty: creating a pod");
                Ok((self.create(spec, ONESHOT_LIFETIME).await?, false))
            }
            Err(e) => Err(pool_error(e)),
        }
    }

    /// A session's pod: the running one of the same spec, else a new one.
    async fn session(
        &self,
        spec: &SandboxSpec,
        session: &str,
        known: bool,
    ) -> Result<(String, Option<Recovered>), BackendError> {
        let name = spec.name.clone();
        match bounded("read the pod", &name, self.inner.pods.get_opt(&name)).await? {
            Err(e) => Err(api("read the pod", &name, e)),
            Ok(Some(pod)) => {
                let digest = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_SPEC_DIGEST))
                    .cloned();
                if digest.as_deref() != Some(spec.digest.as_str()) {
                    return Err(BackendError::SessionMismatch {
                        session: session.to_string(),
                        profile: spec.profile.clone(),
                    });
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                if matches!(phase.as_deref(), Some("Failed") | Some("Succeeded"))
                    || pod.metadata.deletion_timestamp.is_some()
                {
                    // Ended (its deadline, an eviction, a reset): a fresh pod, and say so.
                    self.delete_and_wait(&name).await?;
                    self.create(spec, SESSION_LIFETIME).await?;
                    return Ok((name, Some(Recovered::Recreated)));
                }
                Ok((name, None))
            }
            Ok(None) => {
                self.create(spec, SESSION_LIFETIME).await?;
                Ok((name, known.then_some(Recovered::Recreated)))
            }
        }
    }

    /// Deletes the pod at once (no grace: what runs in it is ended either way). `false`: it
    /// was gone already.
    async fn delete_pod(&self, name: &str) -> Result<bool, BackendError> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match bounded("delete the pod", name, self.inner.pods.delete(name, &dp)).await? {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(r)) if r.code == 404 => Ok(false),
            Err(e) => Err(api("delete the pod", name, e)),
        }
    }

    /// Deletes the pod and its NetworkPolicy; gone already is not an error.
    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.delete_pod(name).await?;
        match bounded(
            "delete the NetworkPolicy",
            name,
            self.inner.policies.delete(name, &DeleteParams::default()),
        )
        .await?
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(r)) if r.code == 404 => Ok(()),
            Err(e) => Err(api("delete the NetworkPolicy", name, e)),
        }
    }

    /// Deletes the pod and waits until the name is free (a session's pod is recreated under it).
    async fn delete_and_wait(&self, name: &str) -> Result<(), BackendError> {
        if !self.delete_pod(name).await? {
            return Ok(());
        }
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            match bounded("read the pod", name, self.inner.pods.get_opt(name)).await? {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => tokio::time::sleep(START_POLL).await,
                Err(e) => return Err(api("read the pod", name, e)),
            }
        }
        Err(BackendError::Cluster {
            what: format!(
                "pod {name} was still there {} s after its deletion",
                START_TIMEOUT.as_secs()
            ),
        })
    }

    /// Checks that the pod's `activeDeadlineSeconds` leaves room for this command's timeout,
    /// grace and slack, and with `lower` (a one-shot) lowers it to exactly that.
    async fn fit_deadline(
        &self,
        name: &str,
        process: &ProcessSpec,
        lower: bool,
    ) -> Result<(), BackendError> {
        let pod = timed("read the pod", name, self.inner.pods.get(name)).await?;
        let current = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.timestamp());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let ran = started.map(|s| (now - s).max(0)).unwrap_or(0);
        let wanted =
            ran + ceil_secs(process.timeout) + ceil_secs(process.kill_grace) + DEADLINE_SLACK;
        // The deadline can only be lowered: a pod that would end inside this command's
        // timeout would make the cluster's kill look like the command's own exit.
        if let Some(c) = current.filter(|c| *c < wanted) {
            return Err(BackendError::Cluster {
                what: format!(
                    "pod {name} ends in {} s (activeDeadlineSeconds {c}), before this command's \
                     timeout of {} s could: {}",
                    (c - ran).max(0),
                    ceil_secs(process.timeout),
                    if lower {
                        "the warm pool was filled for shorter commands; drain it (stockade k8s \
                         pool drain) or fill it with a longer --warm-for"
                    } else {
                        "the session's pod is near the end of its lifetime; remove the session \
                         (stockade session rm) for a fresh pod"
                    }
                ),
            });
        }
        if !lower || current == Some(wanted) {
            return Ok(());
        }
        let patch = json!({"spec": {"activeDeadlineSeconds": wanted}});
        timed(
            "lower the pod's deadline",
            name,
            self.inner
                .pods
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        Ok(())
    }

    /// Runs a short helper in the pod and returns (exit code, stdout), bounded in time and
    /// size.
    async fn helper(
        &self,
        pod: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(i64, String), BackendError> {
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(false)
            .stdout(true)
            .stderr(false);
        let run = async {
            let mut attached =
                timed("exec in", pod, self.inner.pods.exec(pod, argv, &params)).await?;
            let status = attached.take_status();
            let mut text = Vec::new();
            if let Some(mut out) = attached.stdout() {
                let mut buf = [0u8; 4096];
                loop {
                    match out.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) if text.len() < MAX_COUNTERS_TEXT => {
                            text.extend_from_slice(&buf[..n])
                        }
                        Ok(_) => {}
                    }
                }
            }
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            let code = exit_code(status.as_ref())?;
            Ok((code, String::from_utf8_lossy(&text).into_owned()))
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| BackendError::Cluster {
                what: format!(
                    "a helper exec in pod {pod} took more than {} s",
                    timeout.as_secs()
                ),
            })?
    }

    /// The kill rule inside the pod: every process but PID 1 (the keeper) and the sweep.
    async fn kill_tree(&self, pod: &str, process: &ProcessSpec) -> bool {
        self.sweep(pod, process, false).await.is_some()
    }

    /// The sweep, and with `counters` the counters it read once nothing else of the user ran
    /// (so no process of the command's is left to forge them). `None`: not confirmed.
    async fn sweep(&self, pod: &str, process: &ProcessSpec, counters: bool) -> Swept {
        let grace = process.kill_grace;
        let mut argv = vec![
            CLUSTER_AGENT_PATH.to_string(),
            "kill".to_string(),
            "--grace-ms".to_string(),
            grace.as_millis().to_string(),
        ];
        if counters {
            argv.push("--counters".to_string());
        }
        match self.helper(pod, argv, grace + HELPER_TIMEOUT).await {
            Ok((0, text)) => Some(counters.then(|| parse_counters(&text)).flatten()),
            Ok((code, _)) => {
                tracing::warn!(pod, code, "the kill sweep could not end every process");
                None
            }
            Err(e) => {
                tracing::warn!(pod, error = %e, "the kill sweep failed");
                None
            }
        }
    }

    /// Whether `dir` cannot be entered in the pod (the agent's own exit 125, nothing run).
    async fn workdir_missing(&self, pod: &str, dir: &str) -> bool {
        let argv = vec![
            CLUSTER_AGENT_PATH.to_string(),
            "exec".to_string(),
            "--cwd".to_string(),
            dir.to_string(),
            "--".to_string(),
            "/bin/true".to_string(),
        ];
        matches!(
            self.helper(pod, argv, HELPER_TIMEOUT).await,
            Ok((EXEC_NO_WORKDIR, _))
        )
    }

    async fn counters(&self, pod: &str) -> Option<Counters> {
        let argv = vec!["/bin/sh".into(), "-c".into(), COUNTERS_SCRIPT.into()];
        let (_, text) = self.helper(pod, argv, HELPER_TIMEOUT).await.ok()?;
        parse_counters(&text)
    }

    /// Runs `process` in `pod`, feeding the captures, until it ends, times out, floods or is
    /// cancelled (then the kill rule ends it inside the pod). With the outcome comes the sweep
    /// that stopped it, if one did: `Some(reading)` once it was confirmed.
    async fn exec_run(
        &self,
        pod: &str,
        process: &ProcessSpec,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<(Ended, Option<Swept>), BackendError> {
        let block = env_block(process);
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(!block.is_empty())
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(OUTPUT_CHUNK)
            .max_stderr_buf_size(OUTPUT_CHUNK);
        let started = Instant::now();
        let mut attached = timed(
            "exec in",
            pod,
            self.inner.pods.exec(pod, agent_argv(process), &params),
        )
        .await?;
        // Held until the end: dropping the writer closes the whole stream, Status and all.
        let mut stdin = attached.stdin();
        if let Some(writer) = stdin.as_mut() {
            let write = async {
                writer.write_all(&block).await?;
                writer.flush().await
            };
            match tokio::time::timeout(API_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(BackendError::Stream {
                        reason: "the command's environment could not be sent on the exec stream"
                            .to_string(),
                    })
                }
            }
        }
        let status = attached.take_status();
        let (Some(mut stdout), Some(mut stderr), Some(status)) =
            (attached.stdout(), attached.stderr(), status)
        else {
            return Err(BackendError::Protocol {
                what: "the exec stream has no stdout, stderr or status".to_string(),
            });
        };
        tokio::pin!(status);
        let deadline = tokio::time::sleep(process.timeout);
        tokio::pin!(deadline);
        let interrupt = cancel.wait();
        tokio::pin!(interrupt);
        let mut out_buf = vec![0u8; OUTPUT_CHUNK];
        let mut err_buf = vec![0u8; OUTPUT_CHUNK];
        let (mut out_open, mut err_open) = (true, true);
        let stop = loop {
            tokio::select! {
                n = stdout.read(&mut out_buf), if out_open => {
                    feed(n, &mut out_open, Stream::Stdout, &out_buf, streams);
                    if streams.total() > process.output_hard_limit {
                        break Err(Stop::Flood);
                    }
                }
                n = stderr.read(&mut err_buf), if err_open => {
                    feed(n, &mut err_open, Stream::Stderr, &err_buf, streams);
                    if streams.total() > process.output_hard_limit {
                        break Err(Stop::Flood);
                    }
                }
                // The Status comes after the output; with output still unread it waits.
                s = &mut status, if !out_open && !err_open => break Ok(s),
                _ = &mut deadline => break Err(Stop::Timeout),
                reason = &mut interrupt => break Err(Stop::Cancelled(reason)),
            }
        };
        let stop = match stop {
            Ok(status) => {
                let code = match exit_code(status.as_ref()) {
                    Ok(code) => code,
                    Err(e) => {
                        // No status: the command may still run. End it before saying so, and
                        // where that cannot be confirmed, end the pod.
                        if self.kill_tree(pod, process).await {
                            return Err(e);
                        }
                        let failed = self.delete(pod).await.err().map(|e| e.to_string());
                        return Err(BackendError::Reset {
                            source: Box::new(e),
                            failed,
                        });
                    }
                };
                let ended = Ended {
                    exit_code: Some(code),
                    timed_out: false,
                    flooded: false,
                    interrupted: None,
                    kill_incomplete: false,
                    duration: started.elapsed(),
                    hits: None,
                    leftovers: 0,
                    ipc_removed: 0,
                };
                return Ok((ended, None));
            }
            Err(stop) => stop,
        };
        // Output keeps being read while the kill runs, so the command's writes never block
        // the stream the kill's own status comes back beside.
        let kill = self.sweep(pod, process, true);
        tokio::pin!(kill);
        let swept = loop {
            tokio::select! {
                swept = &mut kill => break swept,
                n = stdout.read(&mut out_buf), if out_open => {
                    feed(n, &mut out_open, Stream::Stdout, &out_buf, streams)
                }
                n = stderr.read(&mut err_buf), if err_open => {
                    feed(n, &mut err_open, Stream::Stderr, &err_buf, streams)
                }
            }
        };
        let ended = swept.is_some();
        let mut code = None;
        if ended {
            let drain = tokio::time::sleep(DRAIN_AFTER_KILL);
            tokio::pin!(drain);
            loop {
                tokio::select! {
                    n = stdout.read(&mut out_buf), if out_open => {
                        feed(n, &mut out_open, Stream::Stdout, &out_buf, streams)
                    }
                    n = stderr.read(&mut err_buf), if err_open => {
                        feed(n, &mut err_open, Stream::Stderr, &err_buf, streams)
                    }
                    s = &mut status, if !out_open && !err_open => {
                        code = exit_code(s.as_ref()).ok();
                        break;
                    }
                    _ = &mut drain => break,
                }
            }
        }
        attached.abort();
        drop(stdin);
        let ended = Ended {
            exit_code: match stop {
                Stop::Timeout => None,
                _ => code,
            },
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
        };
        Ok((ended, Some(swept)))
    }
}

/// Writes the seccomp profile where the node's kubelet reads `operator/` profiles, when
/// `config` says to (`seccomp_dir`: no Security Profiles Operator). Content-addressed: an
/// existing file of the same name holding the same bytes is left as it is.
pub fn install_seccomp(
    config: &KubernetesConfig,
    manifests: &Manifests,
) -> Result<(), BackendError> {
    let Some(dir) = &config.seccomp_dir else {
        return Ok(());
    };
    let object = &manifests.seccomp_profile;
    let body = serde_json::to_vec(&object.spec).map_err(|e| BackendError::Cluster {
        what: format!("seccomp profile: {e}"),
    })?;
    let name = object.metadata.name.clone().unwrap_or_default();
    let path = dir.join("operator").join(format!("{name}.json"));
    let fail = |e: crate::state::StateError| BackendError::Cluster {
        what: format!(
            "cannot write the seccomp profile to {} ([kubernetes] seccomp_dir): {e}",
            path.display()
        ),
    };
    if std::fs::read(&path).is_ok_and(|existing| existing == body) {
        return Ok(());
    }
    crate::state::ensure_private_dir(&dir.join("operator")).map_err(fail)?;
    crate::state::write_private_file(&path, &body).map_err(fail)
}

/// The render options of `config` for a pod in `namespace`: the cluster image unless one is
/// configured (the base image has no agent to be PID 1).
pub fn cluster_render_options(
    config: &KubernetesConfig,
    namespace: &str,
    lifetime: Duration,
    kill_grace: Duration,
) -> RenderOptions {
    let mut opts = RenderOptions::new(namespace, lifetime, kill_grace);
    opts.image = Some(config.image.clone().unwrap_or_else(cluster_image_ref));
    if let Some(policy) = &config.image_pull_policy {
        opts.image_pull_policy = policy.clone();
    }
    opts
}

/// One read of an exec stream: its bytes to the captures; its end (or an error) closes it.
fn feed(
    read: std::io::Result<usize>,
    open: &mut bool,
    which: Stream,
    buf: &[u8],
    streams: &mut Streams,
) {
    match read {
        Ok(0) | Err(_) => *open = false,
        Ok(n) => streams.push(which, &buf[..n]),
    }
}

/// `stockade-agent exec --cwd DIR [--env-stdin BYTES] -- ARGV`. The environment goes over the
/// stream's stdin ([`env_block`]), never in the exec request's URL, which API servers log
/// (the secrets of a command are in its environment).
fn agent_argv(process: &ProcessSpec) -> Vec<String> {
    let mut argv = vec![
        CLUSTER_AGENT_PATH.to_string(),
        "exec".to_string(),
        "--cwd".to_string(),
        process.working_dir.clone(),
    ];
    let block = env_block(process);
    if !block.is_empty() {
        argv.push("--env-stdin".to_string());
        argv.push(block.len().to_string());
    }
    argv.push("--".to_string());
    argv.extend(process.argv.iter().cloned());
    argv
}

/// The environment as NUL-separated `NAME=VALUE` entries.
fn env_block(process: &ProcessSpec) -> Vec<u8> {
    let mut block = Vec::new();
    for e in &process.env {
        block.extend_from_slice(e.as_bytes());
        block.push(0);
    }
    block
}

/// The exit code in the exec's Status (`Success`, or `NonZeroExitCode` with an `ExitCode`
/// cause); anything else, or no Status at all, is an error: never taken for exit 0.
fn exit_code(status: Option<&Status>) -> Result<i64, BackendError> {
    let Some(status) = status else {
        return Err(BackendError::Stream {
            reason: "the exec stream ended without an exit status (the kubelet's streaming \
                     idle timeout, or the API server or kubelet restarting)"
                .to_string(),
        });
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<i64>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(BackendError::Protocol {
        what: format!(
            "the exec ended with a status that carries no exit code: {}",
            status.message.clone().unwrap_or_default()
        ),
    })
}

fn ceil_secs(d: Duration) -> i64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)) as i64
}

/// `fut`, an API request, bounded by [`API_TIMEOUT`]: its own result, or the timeout's error.
async fn bounded<T>(
    action: &str,
    name: &str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, BackendError> {
    tokio::time::timeout(API_TIMEOUT, fut)
        .await
        .map_err(|_| BackendError::Cluster {
            what: format!(
                "the API server did not answer within {} s (to {action} {name}); the next call \
                 cleans up what this one left",
                API_TIMEOUT.as_secs()
            ),
        })
}

/// [`bounded`], its error explained.
async fn timed<T>(
    action: &str,
    name: &str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, BackendError> {
    bounded(action, name, fut)
        .await?
        .map_err(|e| api(action, name, e))
}

fn api(action: &str, name: &str, e: kube::Error) -> BackendError {
    BackendError::Cluster {
        what: match &e {
            kube::Error::Api(r) if r.code == 403 => format!(
                "the cluster refused to {action} {name}: {} (stockade's identity needs the Role \
                 in docs/kubernetes.md)",
                r.message
            ),
            _ => format!("cannot {action} {name}: {e}"),
        },
    }
}

fn refused(e: super::RenderError) -> BackendError {
    BackendError::Cluster {
        what: e.to_string(),
    }
}

fn pool_error(e: PoolError) -> BackendError {
    BackendError::Cluster {
        what: e.to_string(),
    }
}

impl Backend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    fn uses_agent(&self) -> bool {
        false
    }

    async fn acquire(
        &self,
        spec: &SandboxSpec,
        known: bool,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox, BackendError> {
        let asserted = self.vouch(spec)?;
        if spec.image != base_image_ref() && self.inner.config.image.is_none() {
            return Err(BackendError::Cluster {
                what: format!(
                    "profile {}: image {:?}: a pod runs the cluster image (stockade k8s image) or \
                     the one [kubernetes] image names, which must carry stockade's agent",
                    spec.profile, spec.image
                ),
            });
        }
        let (name, from_pool, recovered) = match &spec.kind {
            SandboxKind::Oneshot { exec } => {
                let (name, from_pool) = self.oneshot(spec, exec, progress).await?;
                (name, from_pool, None)
            }
            SandboxKind::Session { name } => {
                let (pod, recovered) = self.session(spec, name, known).await?;
                (pod, false, recovered)
            }
        };
        let pod = match self.wait_running(&name).await {
            Ok(pod) => pod,
            Err(e) => {
                if !matches!(spec.kind, SandboxKind::Session { .. }) {
                    let _ = self.delete(&name).await;
                }
                return Err(e);
            }
        };
        Ok(Sandbox {
            id: name.clone(),
            name,
            kind: spec.kind.clone(),
            channel: None,
            recovered,
            placement: Some(self.placement(&pod, from_pool, asserted)),
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
        if process.stdin || stdin.is_some() {
            return Err(BackendError::Files {
                what: "stdin is not supported on the kubernetes backend: the exec stream of a \
                       Kubernetes 1.20-1.28 API server cannot close stdin, so the command would \
                       never see its end (pass the input in a file in /workspace instead)"
                    .to_string(),
            });
        }
        let pod = &sandbox.id;
        let before = if sandbox.is_session() {
            self.fit_deadline(pod, process, false).await?;
            self.counters(pod).await
        } else {
            self.fit_deadline(pod, process, true).await?;
            Some(Counters {
                pids_max: Some(0),
                oom_kills: Some(0),
            })
        };
        let (mut ended, stopped_by) = self.exec_run(pod, process, streams, cancel).await?;
        // Whatever the command left is ended before anything is read from the pod (a stopped
        // command's sweep did that already): none of its processes is left to forge the
        // reading, which the sweep itself takes.
        let swept = match stopped_by {
            Some(swept) => swept,
            None => self.sweep(pod, process, true).await,
        };
        let after = match swept {
            Some(read) => read,
            None => {
                ended.kill_incomplete = true;
                None
            }
        };
        // Exit 125 with the agent's words may be the command's own: the directory is tried
        // again by a fresh exec that runs nothing.
        if ended.exit_code == Some(EXEC_NO_WORKDIR)
            && !ended.kill_incomplete
            && String::from_utf8_lossy(streams.stderr.head())
                .starts_with("stockade-agent: cannot enter the working directory")
            && self.workdir_missing(pod, &process.working_dir).await
        {
            return Err(BackendError::Workdir {
                workdir: process.working_dir.clone(),
            });
        }
        ended.hits = Some(match (before, after) {
            (Some(b), Some(a)) => b.hits(&a),
            _ => LimitsHit {
                unmeasured: true,
                ..Default::default()
            },
        });
        Ok(Ran {
            ended,
            runner: Runner::Exec,
            stdout_sha256: None,
            stderr_sha256: None,
            warnings: Vec::new(),
        })
    }

    async fn kill_all(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> Result<bool, BackendError> {
        Ok(self.kill_tree(&sandbox.id, process).await)
    }

    async fn reset(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        // A pod cannot be restarted in place: it goes, and a session's next command gets a
        // fresh one (and is told so).
        self.delete(&sandbox.id).await
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        self.delete(id).await
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<SandboxInfo>, BackendError> {
        let mut selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        if let Some(owner) = owner {
            selector.push_str(&format!(",{LABEL_OWNER}={owner}"));
        }
        let pods = timed(
            "list the pods of",
            &self.inner.namespace,
            self.inner
                .pods
                .list(&ListParams::default().labels(&selector).limit(1000)),
        )
        .await?;
        Ok(pods
            .items
            .iter()
            .filter_map(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let name = p.metadata.name.clone()?;
                // A warm pod is the pool's, not an execution's: only `k8s pool drain` ends it.
                if labels.get(pool::LABEL_POOL_STATE).map(String::as_str) == Some(pool::WARM) {
                    return None;
                }
                let kind = match labels.get(LABEL_KIND).map(String::as_str) {
                    Some("session") => SandboxKind::Session {
                        name: labels.get(LABEL_SESSION).cloned().unwrap_or_default(),
                    },
                    // A claimed pod's execution is its claim; a created one's is in its name.
                    _ => SandboxKind::Oneshot {
                        exec: labels.get(pool::LABEL_CLAIM).cloned().unwrap_or_else(|| {
                            name.strip_prefix("stockade-x-")
                                .unwrap_or(&name)
                                .to_string()
                        }),
                    },
                };
                Some(SandboxInfo {
                    id: name.clone(),
                    name,
                    kind,
                    owner: labels.get(LABEL_OWNER).cloned().unwrap_or_default(),
                    profile: labels.get(LABEL_PROFILE).cloned().unwrap_or_default(),
                    state: p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default()
                        .to_lowercase(),
                    created: p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.timestamp())
                        .unwrap_or(0),
                    version: None,
                })
            })
            .collect())
    }

    async fn census(&self) -> Result<Vec<(String, bool)>, BackendError> {
        let pods = timed(
            "list the pods of",
            &self.inner.namespace,
            self.inner.pods.list(&ListParams::default().limit(1000)),
        )
        .await?;
        Ok(pods
            .items
            .iter()
            .map(|p| {
                let ours = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_MANAGED_BY))
                    .is_some_and(|v| v == MANAGED_BY);
                (p.metadata.name.clone().unwrap_or_default(), ours)
            })
            .collect())
    }

    async fn copy_in(
        &self,
        _sandbox: &Sandbox,
        _process: &ProcessSpec,
        path: &str,
        _source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        _size: Option<u64>,
    ) -> Result<Copied, BackendError> {
        Err(BackendError::Files {
            what: format!(
                "cp into {path}: not supported on the kubernetes backend yet (the exec stream of \
                 a 1.20-1.28 API server cannot close stdin)"
            ),
        })
    }

    async fn copy_out(
        &self,
        _sandbox: &Sandbox,
        _process: &ProcessSpec,
        path: &str,
        _sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Copied, BackendError> {
        Err(BackendError::Files {
            what: format!("cp out of {path}: not supported on the kubernetes backend yet"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn failure(causes: Option<Vec<StatusCause>>) -> Status {
        Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails {
                causes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_exit_code_is_the_status_and_nothing_else() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&ok)).unwrap(), 0);
        let three = failure(Some(vec![StatusCause {
            reason: Some("ExitCode".into()),
            message: Some("3".into()),
            ..Default::default()
        }]));
        assert_eq!(exit_code(Some(&three)).unwrap(), 3);
        // A stream that ended without a Status is an error, never exit 0.
        assert!(matches!(exit_code(None), Err(BackendError::Stream { .. })));
        // A failure without an exit code (the kubelet could not start it) is no exit code.
        assert!(matches!(
            exit_code(Some(&failure(None))),
            Err(BackendError::Protocol { .. })
        ));
        let garbled = failure(Some(vec![StatusCause {
            reason: Some("ExitCode".into()),
            message: Some("x".into()),
            ..Default::default()
        }]));
        assert!(exit_code(Some(&garbled)).is_err());
        let internal = Status {
            status: Some("Failure".into()),
            reason: Some("InternalError".into()),
            ..Default::default()
        };
        assert!(exit_code(Some(&internal)).is_err());
    }

    fn default_spec() -> SandboxSpec {
        let p = crate::profile::load("default", &crate::profile::ProfileDirs::default()).unwrap();
        crate::plan::sandbox_spec(&p, None, "x", "0123456789ab", None)
    }

    /// A backend whose client points at a port nothing listens on: what is refused before
    /// any request is refused without one.
    fn offline(config: KubernetesConfig) -> KubernetesBackend {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        KubernetesBackend::from_client(client, "ns", "http://127.0.0.1:9", &config).unwrap()
    }

    fn trusted(pids: Option<i64>) -> KubernetesConfig {
        KubernetesConfig {
            network_enforcement: Some("trusted".into()),
            node_pids_limit: pids,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn what_the_cluster_cannot_prove_is_refused_unless_the_operator_asserts_it() {
        let spec = default_spec();
        let refused = |config: KubernetesConfig| match offline(config).vouch(&spec) {
            Err(BackendError::Cluster { what }) => what,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // No assertion about NetworkPolicy: network = "none" cannot be promised.
        let what = refused(KubernetesConfig {
            node_pids_limit: Some(256),
            ..Default::default()
        });
        assert!(what.contains("NetworkPolicy"), "{what}");
        assert!(refused(KubernetesConfig {
            network_enforcement: Some("yes".into()),
            node_pids_limit: Some(256),
            ..Default::default()
        })
        .contains("\"trusted\""));
        // The node's pids limit unknown, or looser than the profile's 256.
        assert!(refused(trusted(None)).contains("256"));
        assert!(refused(trusted(Some(512))).contains("512"));
        assert!(refused(trusted(Some(0))).contains("unlimited"));
        // Asserted, and the assertions are what the audit records.
        assert_eq!(
            offline(trusted(Some(256))).vouch(&spec).unwrap(),
            ["network_enforcement=trusted", "node_pids_limit=256"]
        );
        assert_eq!(
            offline(trusted(Some(128))).vouch(&spec).unwrap(),
            ["network_enforcement=trusted", "node_pids_limit=128"]
        );
        let looser = KubernetesConfig {
            allow_looser_pids: true,
            ..trusted(None)
        };
        assert_eq!(
            offline(looser).vouch(&spec).unwrap(),
            ["network_enforcement=trusted", "allow_looser_pids"]
        );
    }

    #[tokio::test]
    async fn an_image_without_the_agent_is_refused_before_any_request() {
        let mut spec = default_spec();
        spec.image = "debian:12".into();
        let backend = offline(trusted(Some(256)));
        match backend.acquire(&spec, false, &mut |_| {}).await {
            Err(BackendError::Cluster { what }) => assert!(what.contains("debian:12"), "{what}"),
            other => panic!("expected the image refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_agent_enters_the_directory_and_gets_the_environment_on_stdin() {
        let process = ProcessSpec {
            argv: vec!["bash".into(), "-c".into(), "echo $A".into()],
            user: crate::profile::User {
                uid: 65532,
                gid: 65532,
            },
            working_dir: "/workspace".into(),
            env: vec!["A=1".into(), "B=x y".into()],
            timeout: Duration::from_secs(1),
            kill_grace: Duration::from_secs(1),
            output_cap: 1,
            output_hard_limit: 1,
            stdin: false,
        };
        assert_eq!(
            agent_argv(&process),
            [
                CLUSTER_AGENT_PATH,
                "exec",
                "--cwd",
                "/workspace",
                "--env-stdin",
                "10",
                "--",
                "bash",
                "-c",
                "echo $A"
            ]
        );
        // The values go on the stream, NUL-separated, never into the URL's argv.
        assert_eq!(env_block(&process), b"A=1\0B=x y\0");
        let none = ProcessSpec {
            env: Vec::new(),
            ..process
        };
        assert!(!agent_argv(&none).contains(&"--env-stdin".to_string()));
    }
}
