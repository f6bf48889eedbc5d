//! A sandbox spec as a Pod, its deny-all NetworkPolicy and its SeccompProfile. Pure: the same
//! spec and options give the same objects, tested as whole values.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodDNSConfig, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile as PodSeccomp, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;

use super::error::RenderError;
use super::labels::{self, ANNOTATION_SECCOMP_SHA256, ANNOTATION_SPEC_DIGEST, LABEL_SANDBOX};
use super::seccomp::{self, SeccompProfile};
use crate::backend::{Network, SandboxSpec};

/// The keeper as the container's PID 1: stockade's agent, built into the image (a cluster has
/// no host bind mounts, and a copy in a writable volume could be swapped by the sandbox).
pub const KEEPER_ARGV: &[&str] = &["/usr/lib/stockade/stockade-agent", "keep"];
const CONTAINER: &str = "sandbox";
/// Time the pod is given past the command's own timeout and kill grace before the kubelet's
/// `activeDeadlineSeconds` ends it: the agent and the kill sweep act first; this is the
/// backstop for a supervisor that is gone.
/// The one nameserver of a pod with no network: loopback, where no resolver listens.
const NO_NAMESERVER: &str = "127.0.0.1";
const DEADLINE_SLACK: Duration = Duration::from_secs(30);

/// What rendering needs besides the spec: facts of the cluster and of the execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    pub namespace: String,
    /// The node architecture, as `status.nodeInfo.architecture` says it (`amd64`, `arm64`).
    pub arch: String,
    /// How long the pod may live: a one-shot's timeout, or a session's lifetime.
    pub lifetime: Duration,
    pub kill_grace: Duration,
    pub image_pull_policy: String,
    /// The image to run instead of the spec's: the cluster image, which carries the agent.
    pub image: Option<String>,
}

impl RenderOptions {
    pub fn new(namespace: &str, lifetime: Duration, kill_grace: Duration) -> RenderOptions {
        RenderOptions {
            namespace: namespace.to_string(),
            arch: "amd64".to_string(),
            lifetime,
            kill_grace,
            image_pull_policy: "IfNotPresent".to_string(),
            image: None,
        }
    }
}

/// Everything a sandbox needs on a cluster, in the order to create them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifests {
    pub seccomp_profile: SeccompProfile,
    pub network_policy: NetworkPolicy,
    pub pod: Pod,
}

impl Manifests {
    /// The three objects as one list, each with its own apiVersion and kind.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        // Serializing typed API objects to JSON values cannot fail: their keys are strings.
        vec![
            serde_json::to_value(&self.seccomp_profile).expect("serializes"),
            serde_json::to_value(&self.network_policy).expect("serializes"),
            serde_json::to_value(&self.pod).expect("serializes"),
        ]
    }
}

/// Refuses what the backend cannot honour, then renders.
pub fn render(spec: &SandboxSpec, opts: &RenderOptions) -> Result<Manifests, RenderError> {
    refuse(spec)?;
    let seccomp = seccomp::render(
        &spec.profile,
        &spec.seccomp.json,
        &spec.capabilities,
        &opts.arch,
    )?;
    let labels = labels::of(spec);
    let meta = |name: &str, annotations: BTreeMap<String, String>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(opts.namespace.clone()),
        labels: Some(labels.clone()),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..Default::default()
    };
    let network_policy = NetworkPolicy {
        metadata: meta(&spec.name, BTreeMap::new()),
        // Both types named, no rules: deny all both ways (with policyTypes omitted, Egress is
        // set only when egress rules exist).
        spec: Some(NetworkPolicySpec {
            pod_selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    LABEL_SANDBOX.to_string(),
                    spec.name.clone(),
                )])),
                ..Default::default()
            },
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
        ..Default::default()
    };
    let sha = seccomp
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SECCOMP_SHA256))
        .cloned()
        .unwrap_or_default();
    let annotations = BTreeMap::from([
        (ANNOTATION_SPEC_DIGEST.to_string(), spec.digest.clone()),
        (ANNOTATION_SECCOMP_SHA256.to_string(), sha),
    ]);
    let pod = Pod {
        metadata: meta(&spec.name, annotations),
        spec: Some(pod_spec(spec, opts, &seccomp)),
        status: None,
    };
    Ok(Manifests {
        seccomp_profile: seccomp,
        network_policy,
        pod,
    })
}

fn refuse(spec: &SandboxSpec) -> Result<(), RenderError> {
    let profile = || spec.profile.clone();
    if spec.user.uid == 0 || spec.user.gid == 0 {
        return Err(RenderError::RootUser {
            profile: profile(),
            uid: spec.user.uid,
            gid: spec.user.gid,
        });
    }
    if !spec.read_only_root {
        return Err(RenderError::WritableRoot { profile: profile() });
    }
    if let Some(b) = spec.binds.first() {
        return Err(RenderError::Bind {
            profile: profile(),
            target: b.target.clone(),
        });
    }
    if let Network::Named(network) = &spec.network {
        return Err(RenderError::Network {
            profile: profile(),
            network: network.clone(),
        });
    }
    Ok(())
}

fn volume_name(i: usize) -> String {
    format!("tmpfs-{i}")
}

fn pod_spec(spec: &SandboxSpec, opts: &RenderOptions, seccomp: &SeccompProfile) -> PodSpec {
    let uid = i64::from(spec.user.uid);
    let gid = i64::from(spec.user.gid);
    // Memory-backed emptyDirs count against the memory limit; sizeLimit makes them ENOSPC at
    // their own size where SizeMemoryBackedVolumes is on (default since 1.22).
    let volumes: Vec<Volume> = spec
        .tmpfs
        .iter()
        .enumerate()
        .map(|(i, t)| Volume {
            name: volume_name(i),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(t.size_bytes.to_string())),
            }),
            ..Default::default()
        })
        .collect();
    let mounts: Vec<VolumeMount> = spec
        .tmpfs
        .iter()
        .enumerate()
        .map(|(i, t)| VolumeMount {
            name: volume_name(i),
            mount_path: t.path.clone(),
            ..Default::default()
        })
        .collect();
    // Limits equal requests: Guaranteed QoS, so the pod is neither throttled below nor
    // allowed above what the profile says, and gets no swap.
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu(spec.limits.nano_cpus))),
        (
            "memory".to_string(),
            Quantity(spec.limits.memory_bytes.to_string()),
        ),
    ]);
    let caps = spec
        .capabilities
        .iter()
        .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_string())
        .collect::<Vec<_>>();
    let localhost = PodSeccomp {
        type_: "Localhost".into(),
        localhost_profile: Some(seccomp.localhost_path()),
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(opts.image.clone().unwrap_or_else(|| spec.image.clone())),
        image_pull_policy: Some(opts.image_pull_policy.clone()),
        command: Some(KEEPER_ARGV.iter().map(|s| s.to_string()).collect()),
        working_dir: Some("/".into()),
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            read_only_root_filesystem: Some(true),
            // Stricter than a profile with no_new_privileges = false: a setuid binary gains
            // nothing in a pod (there is no user namespace to keep it in).
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: (!caps.is_empty()).then_some(caps),
            }),
            seccomp_profile: Some(localhost.clone()),
            ..Default::default()
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        active_deadline_seconds: Some(deadline_seconds(opts)),
        termination_grace_period_seconds: Some(ceil_secs(opts.kill_grace)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        share_process_namespace: Some(false),
        // network = "none": no cluster DNS in resolv.conf (the NetworkPolicy denies the rest).
        // The API server requires at least one nameserver with dnsPolicy None
        // (pkg/apis/core/validation validatePodDNSConfig): loopback, where nothing answers.
        dns_policy: Some("None".into()),
        dns_config: Some(PodDNSConfig {
            nameservers: Some(vec![NO_NAMESERVER.into()]),
            ..Default::default()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            fs_group: Some(gid),
            seccomp_profile: Some(localhost),
            ..Default::default()
        }),
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..Default::default()
    }
}

/// CPU in millicores, the finest unit the API keeps.
fn cpu(nano_cpus: i64) -> String {
    format!("{}m", (nano_cpus / 1_000_000).max(1))
}

fn ceil_secs(d: Duration) -> i64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(s).unwrap_or(i64::MAX)
}

pub(super) fn deadline_seconds(opts: &RenderOptions) -> i64 {
    ceil_secs(opts.lifetime + opts.kill_grace + DEADLINE_SLACK).max(1)
}
