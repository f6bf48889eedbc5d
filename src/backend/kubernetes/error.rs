//! What the Kubernetes backend refuses, each naming the profile option (or cluster fact) at
//! fault.

/// A sandbox this backend will not run as asked: never a silent weakening.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error(
        "profile {profile}: user = \"{uid}:{gid}\": a pod runs as root only with user namespaces \
         (hostUsers: false), which this backend does not yet require; use a non-root user"
    )]
    RootUser { profile: String, uid: u32, gid: u32 },
    #[error(
        "profile {profile}: read_only_root = false: a writable root filesystem is the node's \
         disk, unbounded by the pod's limits; set read_only_root = true and use [tmpfs]"
    )]
    WritableRoot { profile: String },
    #[error(
        "profile {profile}: [[binds]] target {target}: host paths (hostPath) are refused on a \
         cluster (Pod Security forbids them and they tie a pod to one node)"
    )]
    Bind { profile: String, target: String },
    #[error(
        "profile {profile}: network = {network:?}: only network = \"none\" (a deny-all \
         NetworkPolicy) is offered on Kubernetes"
    )]
    Network { profile: String, network: String },
    #[error(
        "profile {profile}: network = \"none\": the cluster's NetworkPolicy is not known to be \
         enforced, so the pod would keep a working network; run on a cluster whose CNI enforces \
         NetworkPolicy, or assert it with network_enforcement = \"trusted\""
    )]
    NetworkNotEnforced { profile: String },
    #[error(
        "profile {profile}: limits.pids = {profile_limit}: node {node}'s podPidsLimit is \
         {node_limit}, looser than the profile's (the limit is the kubelet's, not the pod's); \
         lower the node's podPidsLimit or override explicitly"
    )]
    PidsLooser {
        profile: String,
        node: String,
        profile_limit: i64,
        node_limit: String,
    },
    #[error(
        "profile {profile}: seccomp: defaultErrnoRet = {value}: the Security Profiles Operator's \
         SeccompProfile has no such field (the node would return EPERM); use 1 or omit it"
    )]
    SeccompErrnoRet { profile: String, value: u64 },
    #[error(
        "profile {profile}: seccomp: syscalls[{rule}].args[{arg}].{field} = {value}: the \
         SeccompProfile CRD holds a signed 64-bit value"
    )]
    SeccompArgValue {
        profile: String,
        rule: usize,
        arg: usize,
        field: &'static str,
        value: u64,
    },
    #[error("profile {profile}: seccomp: {field}: {why}")]
    Seccomp {
        profile: String,
        field: String,
        why: String,
    },
    #[error("profile {profile}: seccomp JSON does not parse: {source}")]
    SeccompJson {
        profile: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("node architecture {arch:?} is not one stockade's seccomp profiles name")]
    Arch { arch: String },
}

/// A name or label value the API server would refuse, refused before any request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("{what} {value:?} {why} (a DNS-1123 label)")]
    Name {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("label {key}: value {value:?} {why}")]
    LabelValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("label key {key:?} {why}")]
    LabelKey { key: String, why: &'static str },
}

/// What the warm pool could not do, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("pool {pool}: a fill of {count} pods is more than {max}; fill in smaller steps")]
    TooMany {
        pool: String,
        count: usize,
        max: usize,
    },
    #[error(
        "pool {pool} in namespace {namespace} has no unclaimed pod; fill it \
         (stockade k8s pool fill) and claim again"
    )]
    Empty { pool: String, namespace: String },
    #[error(
        "pool {pool} in namespace {namespace}: every unclaimed pod was taken by another claimer \
         in {rounds} rounds ({conflicts} conflicts); claim again, or fill the pool"
    )]
    Contended {
        pool: String,
        namespace: String,
        rounds: usize,
        conflicts: usize,
    },
    #[error(
        "pod {pod} in namespace {namespace} is not held by claim {claim} ({held}); nothing was \
         deleted: release only a pod your claim holds"
    )]
    NotHeld {
        pod: String,
        namespace: String,
        claim: String,
        held: String,
    },
    // The message leaves the source out: kube's kubeconfig errors repeat their own source.
    #[error("kubeconfig {path} cannot be used (pass a readable kubeconfig with --kubeconfig)")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no kubeconfig found (pass one with --kubeconfig or set KUBECONFIG)")]
    InferConfig {
        #[source]
        source: kube::config::InferConfigError,
    },
    #[error("cannot build a Kubernetes client: {source}")]
    Client {
        #[source]
        source: Box<kube::Error>,
    },
    /// `error` is not a `#[source]`: its text is in this message once, where kube's own
    /// chain would repeat the server's message three times.
    #[error(
        "{action} {name} in namespace {namespace}: {}{}",
        api_detail(error),
        api_hint(error)
    )]
    Api {
        action: &'static str,
        name: String,
        namespace: String,
        error: Box<kube::Error>,
    },
}

/// The server's own words and status, or the transport's error.
fn api_detail(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) => format!("{} ({} {})", r.message, r.code, r.reason),
        other => {
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    }
}

/// What to do about an API error, by its status code.
fn api_hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(r) if r.code == 401 => {
            "; the kubeconfig's credentials were refused: check them"
        }
        kube::Error::Api(r) if r.code == 403 => {
            "; stockade's identity lacks a permission: grant the Role in docs/kubernetes.md"
        }
        kube::Error::Api(r) if r.code == 404 => "; check the namespace exists",
        kube::Error::Api(_) => "",
        _ => "; check the API server is reachable at the kubeconfig's address",
    }
}
