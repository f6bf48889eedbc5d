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
