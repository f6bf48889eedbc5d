//! The warm pool of one-shot pods: filled ahead of time, each claimed by exactly one execution.
//!
//! A claim is a JSON merge patch of the pod's labels that carries the `metadata.resourceVersion`
//! the claimer listed: the API server applies it only if the pod is still that version, so of
//! two claimers racing for one pod exactly one wins and the other gets 409 Conflict and moves
//! on to the next pod (Kubernetes API conventions, "Concurrency Control and Consistency").
//! There is no lock to leak and no server-side component: the pod's own labels are the state.
//! An empty pool is an error, never a fresh pod made on the spot.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tracing::debug;

use super::error::PoolError;
use super::labels::{LABEL_MANAGED_BY, LABEL_OWNER, LABEL_PROFILE, MANAGED_BY};
use super::names;
use super::render::{deadline_seconds, render, RenderOptions};
use crate::backend::{SandboxKind, SandboxSpec};
use crate::plan::oneshot_sandbox_name;

/// Whether a pod is in the pool and whether it is taken: `warm` or `claimed`.
pub const LABEL_POOL_STATE: &str = "stockade.dev/pool-state";
/// The claim that holds a pod: set by the claim patch, checked by release.
pub const LABEL_CLAIM: &str = "stockade.dev/claim";
/// The spec digest the pod was rendered from: a pod of an older profile is never claimed.
pub const LABEL_SPEC: &str = "stockade.dev/spec";
pub const WARM: &str = "warm";
pub const CLAIMED: &str = "claimed";
/// The most pods one fill creates.
pub const MAX_FILL: usize = 64;
/// How many times a claimer lists the pool. Every pod of a round that ends in conflicts was
/// taken by someone else, so without a concurrent fill the next list is empty: the second
/// round ends the claim; more rounds only wait for pods a fill is adding.
pub const CLAIM_ROUNDS: usize = 3;
/// The most pods one list returns; a pool is small, the cap keeps a claim's work bounded.
const LIST_LIMIT: u32 = 256;

/// A pool: one profile's warm one-shot pods in one namespace, owned by one state id.
pub struct Pool {
    pods: Api<Pod>,
    policies: Api<NetworkPolicy>,
    namespace: String,
    template: SandboxSpec,
    /// The one-shot's own options: its lifetime is the command's timeout.
    opts: RenderOptions,
    /// How long a warm pod waits for a claim before its deadline ends it.
    warm_for: Duration,
}

/// A won claim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claim {
    pub pod: String,
    pub namespace: String,
    pub claim: String,
    /// The pod's resourceVersion after the claim.
    pub resource_version: String,
    /// Pods lost to other claimers (409) before this one was won.
    pub conflicts: usize,
}

/// One pod of the pool as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolPod {
    pub name: String,
    /// `warm` or `claimed`.
    pub state: String,
    pub claim: Option<String>,
    /// Rendered from the profile as it is now (else it is never claimed; drain it).
    pub current: bool,
    pub phase: Option<String>,
    pub resource_version: String,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drained {
    pub deleted: Vec<String>,
    /// Changed since listed (claimed meanwhile) or already gone: left alone.
    pub skipped: Vec<String>,
}

/// A client from a kubeconfig file (else from `KUBECONFIG`, `~/.kube/config` or the in-cluster
/// service account), and the namespace its context names.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<(kube::Client, String), PoolError> {
    connect_to(kubeconfig)
        .await
        .map(|(client, namespace, _)| (client, namespace))
}

/// [`connect`], and the API server's URL.
pub async fn connect_to(
    kubeconfig: Option<&Path>,
) -> Result<(kube::Client, String, String), PoolError> {
    let config = match kubeconfig {
        Some(path) => {
            let at = |source| PoolError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(at)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(at)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|source| PoolError::InferConfig { source })?,
    };
    // kube's read timeout also bounds an upgraded exec stream, which would cut a command that
    // is silent for that long; the backend bounds each request itself instead.
    let mut config = config;
    config.read_timeout = None;
    let namespace = config.default_namespace.clone();
    let cluster = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| PoolError::Client {
        source: Box::new(e),
    })?;
    Ok((client, namespace, cluster))
}

impl Pool {
    /// `template` is a one-shot's spec (its name and exec id are replaced per pod); `opts` are
    /// the one-shot's render options, whose lifetime is the command's timeout.
    pub fn new(
        client: kube::Client,
        template: SandboxSpec,
        opts: RenderOptions,
        warm_for: Duration,
    ) -> Result<Pool, PoolError> {
        names::dns_label("namespace", &opts.namespace)?;
        names::label_value(LABEL_OWNER, &template.owner)?;
        names::label_value(LABEL_PROFILE, &template.profile)?;
        names::label_value(LABEL_SPEC, &template.digest)?;
        Ok(Pool {
            pods: Api::namespaced(client.clone(), &opts.namespace),
            policies: Api::namespaced(client, &opts.namespace),
            namespace: opts.namespace.clone(),
            template,
            opts,
            warm_for,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The objects a pod of this pool is rendered into (its name aside).
    pub fn manifests(&self) -> Result<super::Manifests, PoolError> {
        Ok(render(&self.template, &self.opts)?)
    }

    /// Creates `count` warm pods, each after its deny-all NetworkPolicy. Returns their names.
    pub async fn fill(&self, count: usize) -> Result<Vec<String>, PoolError> {
        if count > MAX_FILL {
            return Err(PoolError::TooMany {
                pool: self.template.profile.clone(),
                count,
                max: MAX_FILL,
            });
        }
        let mut created = Vec::with_capacity(count);
        for _ in 0..count {
            let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
            let (policy, pod) = warm_objects(&self.template, &self.opts, self.warm_for, &id)?;
            let name = pod.metadata.name.clone().unwrap_or_default();
            let post = PostParams::default();
            self.policies
                .create(&post, &policy)
                .await
                .map_err(|e| self.api("create networkpolicy", &name, e))?;
            if let Err(e) = self.pods.create(&post, &pod).await {
                // The policy alone selects nothing; removing it keeps the namespace tidy.
                let _ = self.policies.delete(&name, &DeleteParams::default()).await;
                return Err(self.api("create pod", &name, e));
            }
            debug!(pod = %name, namespace = %self.namespace, "warm pod created");
            created.push(name);
        }
        Ok(created)
    }

    /// Every pod of this profile's pool (any spec digest), by name.
    pub async fn list(&self) -> Result<Vec<PoolPod>, PoolError> {
        let selector = pool_selector(&self.template, None);
        let pods = self.list_pods(&selector).await?;
        let mut listed: Vec<PoolPod> = pods
            .iter()
            .map(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                PoolPod {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    state: labels.get(LABEL_POOL_STATE).cloned().unwrap_or_default(),
                    claim: labels.get(LABEL_CLAIM).cloned(),
                    current: labels.get(LABEL_SPEC) == Some(&self.template.digest),
                    phase: p.status.as_ref().and_then(|s| s.phase.clone()),
                    resource_version: p.metadata.resource_version.clone().unwrap_or_default(),
                }
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// Takes one warm pod for `claim` (a label value: an exec id, say).
    pub async fn claim(&self, claim: &str) -> Result<Claim, PoolError> {
        names::nonempty_label_value(LABEL_CLAIM, claim)?;
        let selector = pool_selector(&self.template, Some(WARM));
        let mut conflicts = 0;
        for round in 0..CLAIM_ROUNDS {
            let mut warm = self.list_pods(&selector).await?;
            if warm.is_empty() {
                return Err(PoolError::Empty {
                    pool: self.template.profile.clone(),
                    namespace: self.namespace.clone(),
                });
            }
            warm.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            // Claimers start at different pods, so most of them win their first patch.
            let start = uuid::Uuid::new_v4().as_u128() as usize % warm.len();
            warm.rotate_left(start);
            for pod in &warm {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let Some(rv) = pod.metadata.resource_version.clone() else {
                    continue;
                };
                let deadline = claimed_deadline(
                    pod.spec.as_ref().and_then(|s| s.active_deadline_seconds),
                    pod.status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(|t| t.0.timestamp()),
                    unix_now(),
                    deadline_seconds(&self.opts),
                );
                let patch = claim_patch(&rv, claim, deadline);
                match self
                    .pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(won) => {
                        debug!(pod = %name, claim, conflicts, "claimed");
                        return Ok(Claim {
                            pod: name,
                            namespace: self.namespace.clone(),
                            claim: claim.to_string(),
                            resource_version: won.metadata.resource_version.unwrap_or_default(),
                            conflicts,
                        });
                    }
                    // Another claimer changed it first (409), or a drain deleted it (404).
                    Err(kube::Error::Api(r)) if r.code == 409 || r.code == 404 => {
                        debug!(pod = %name, claim, round, code = r.code, "lost the pod");
                        conflicts += 1;
                    }
                    Err(e) => return Err(self.api("claim pod", &name, e)),
                }
            }
        }
        Err(PoolError::Contended {
            pool: self.template.profile.clone(),
            namespace: self.namespace.clone(),
            rounds: CLAIM_ROUNDS,
            conflicts,
        })
    }

    /// Deletes a pod `claim` holds, and its NetworkPolicy. A pod held by another claim, or
    /// still warm, is left alone; the delete is conditional on the version that showed the
    /// claim, so a pod changed meanwhile is not deleted either.
    pub async fn release(&self, pod: &str, claim: &str) -> Result<(), PoolError> {
        names::dns_label("pod name", pod)?;
        let got = self
            .pods
            .get(pod)
            .await
            .map_err(|e| self.api("get pod", pod, e))?;
        let labels = got.metadata.labels.clone().unwrap_or_default();
        let held = holder(&labels, &self.template);
        if held != format!("claim {claim}") {
            return Err(PoolError::NotHeld {
                pod: pod.to_string(),
                namespace: self.namespace.clone(),
                claim: claim.to_string(),
                held,
            });
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: got.metadata.resource_version.clone(),
                uid: got.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        self.pods
            .delete(pod, &dp)
            .await
            .map_err(|e| self.api("delete pod", pod, e))?;
        self.delete_policy(pod).await
    }

    /// Deletes the pool's warm pods (and, with `claimed`, the claimed ones too), each only if
    /// it is still the version listed.
    pub async fn drain(&self, claimed: bool) -> Result<Drained, PoolError> {
        let mut drained = Drained::default();
        for pod in self.list().await? {
            if pod.state != WARM && !claimed {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(pod.resource_version.clone()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match self.pods.delete(&pod.name, &dp).await {
                Ok(_) => {
                    self.delete_policy(&pod.name).await?;
                    drained.deleted.push(pod.name);
                }
                Err(kube::Error::Api(r)) if r.code == 409 || r.code == 404 => {
                    drained.skipped.push(pod.name)
                }
                Err(e) => return Err(self.api("delete pod", &pod.name, e)),
            }
        }
        Ok(drained)
    }

    async fn delete_policy(&self, name: &str) -> Result<(), PoolError> {
        match self.policies.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(r)) if r.code == 404 => Ok(()),
            Err(e) => Err(self.api("delete networkpolicy", name, e)),
        }
    }

    async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, PoolError> {
        let lp = ListParams::default().labels(selector).limit(LIST_LIMIT);
        self.pods
            .list(&lp)
            .await
            .map(|l| l.items)
            .map_err(|e| self.api("list pods", selector, e))
    }

    fn api(&self, action: &'static str, name: &str, error: kube::Error) -> PoolError {
        PoolError::Api {
            action,
            name: name.to_string(),
            namespace: self.namespace.clone(),
            error: Box::new(error),
        }
    }
}

/// The NetworkPolicy and Pod of a warm pod with pool id `id`, validated. A warm pod's deadline
/// covers its wait in the pool and then a one-shot's lifetime; the claim lowers it.
pub fn warm_objects(
    template: &SandboxSpec,
    opts: &RenderOptions,
    warm_for: Duration,
    id: &str,
) -> Result<(NetworkPolicy, Pod), PoolError> {
    let mut spec = template.clone();
    spec.name = oneshot_sandbox_name(id);
    spec.kind = SandboxKind::Oneshot {
        exec: id.to_string(),
    };
    names::dns_label("pod name", &spec.name)?;
    let mut warm_opts = opts.clone();
    warm_opts.lifetime = opts.lifetime.saturating_add(warm_for);
    let manifests = render(&spec, &warm_opts)?;
    let mut pod = manifests.pod;
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_POOL_STATE.into(), WARM.into());
    labels.insert(LABEL_SPEC.into(), spec.digest.clone());
    names::labels(labels)?;
    let policy = manifests.network_policy;
    if let Some(l) = &policy.metadata.labels {
        names::labels(l)?;
    }
    Ok((policy, pod))
}

/// The label selector of a profile's pool pods, of one state (`warm`) or all.
pub fn pool_selector(template: &SandboxSpec, state: Option<&str>) -> String {
    let mut s = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER}={},{LABEL_PROFILE}={}",
        template.owner, template.profile
    );
    match state {
        Some(state) => s.push_str(&format!(
            ",{LABEL_POOL_STATE}={state},{LABEL_SPEC}={}",
            template.digest
        )),
        None => s.push_str(&format!(",{LABEL_POOL_STATE}")),
    }
    s
}

/// The claim: the pod's labels say who holds it, and the `resourceVersion` makes the patch
/// conditional, so it applies only to the pod as the claimer listed it (warm): the patched
/// object keeps the `metadata.resourceVersion` the patch names, and the apiserver's registry
/// (`Store.Update`) answers 409 Conflict when that is not the stored version. A patch without
/// it would be retried by the server against whatever is stored, so both racers would win.
/// `deadline` lowers `spec.activeDeadlineSeconds`, which may only decrease.
pub fn claim_patch(
    resource_version: &str,
    claim: &str,
    deadline: Option<i64>,
) -> serde_json::Value {
    let mut patch = json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {
                LABEL_POOL_STATE: CLAIMED,
                LABEL_CLAIM: claim,
            },
        },
    });
    if let Some(d) = deadline {
        patch["spec"] = json!({ "activeDeadlineSeconds": d });
    }
    patch
}

/// The `activeDeadlineSeconds` a claimed pod gets: the time it has already run (counted from
/// `startTime`, which the kubelet sets; none while it is unscheduled) plus a one-shot's
/// deadline, if that is lower than its warm deadline (the API refuses a raise).
pub fn claimed_deadline(
    current: Option<i64>,
    started_unix: Option<i64>,
    now_unix: i64,
    oneshot: i64,
) -> Option<i64> {
    // One second up for the part of a second already gone and the clocks' rounding.
    let ran = started_unix.map_or(0, |s| (now_unix - s).max(0) + 1);
    let want = ran.saturating_add(oneshot).max(1);
    match current {
        Some(c) if c <= want => None,
        _ => Some(want),
    }
}

/// Who holds a pool pod, as `release` words it: `claim ID`, `warm`, or why it is not ours.
pub fn holder(labels: &BTreeMap<String, String>, template: &SandboxSpec) -> String {
    let ours = labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(LABEL_OWNER) == Some(&template.owner)
        && labels.get(LABEL_PROFILE) == Some(&template.profile);
    match (ours, labels.get(LABEL_POOL_STATE).map(String::as_str)) {
        (false, _) => "not a pod of this pool".to_string(),
        (true, Some(CLAIMED)) => match labels.get(LABEL_CLAIM) {
            Some(c) => format!("claim {c}"),
            None => "claimed without a claim id".to_string(),
        },
        (true, Some(WARM)) => "warm, not claimed".to_string(),
        (true, _) => "not in the pool".to_string(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
