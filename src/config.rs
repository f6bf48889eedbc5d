//! stockade's own configuration (`config.toml`): what the operator allows.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
}

/// The operator's configuration. Every field defaults to the safe choice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Whether `--elevated` (and any profile with `elevated = true`) may be used at all.
    #[serde(default)]
    pub allow_elevation: bool,
    /// The profile `--elevated` selects when `--profile` is not given.
    #[serde(default = "default_elevated_profile")]
    pub elevated_profile: String,
    /// The profile used when `--profile` is not given.
    #[serde(default = "default_profile")]
    pub default_profile: String,
    /// Which backend runs sandboxes (`--backend` overrides it).
    #[serde(default)]
    pub backend: crate::backend::Choice,
    /// What happens to a command whose audit start record cannot be written.
    #[serde(default)]
    pub on_audit_failure: OnAuditFailure,
    /// The cluster `backend = "kubernetes"` runs sandboxes on (docs/kubernetes.md).
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// `[kubernetes]`: where and how sandboxes run on a cluster. The facts stockade cannot read
/// from the API (the node's pids limit, whether NetworkPolicy is enforced) are the operator's
/// assertions here, recorded in every audit record of a pod; none can come from a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubeconfig (else `$STOCKADE_KUBECONFIG`, `KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace (else the kubeconfig context's).
    pub namespace: Option<String>,
    /// The image pods run (else `stockade/cluster:<version>`, `stockade k8s image`).
    pub image: Option<String>,
    /// `Never` where the nodes hold the image already (a registry-less node), else the
    /// cluster's default (`IfNotPresent`).
    pub image_pull_policy: Option<String>,
    /// Where the node's kubelet reads `operator/` seccomp profiles, when stockade writes them
    /// itself (a node on this machine) instead of the Security Profiles Operator.
    pub seccomp_dir: Option<PathBuf>,
    /// `"trusted"`: the operator asserts the CNI enforces NetworkPolicy. Unset, a sandbox
    /// with `network = "none"` is refused.
    pub network_enforcement: Option<String>,
    /// The nodes' kubelet `podPidsLimit`, as the operator knows it; unset or looser than a
    /// profile's `limits.pids` refuses that profile unless `allow_looser_pids`.
    pub node_pids_limit: Option<i64>,
    #[serde(default)]
    pub allow_looser_pids: bool,
}

/// `on_audit_failure`: whether an execution the audit log cannot record still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAuditFailure {
    /// Nothing runs unrecorded (the default).
    #[default]
    Refuse,
    /// The command runs; its result says the audit failed and why, and its records are held
    /// and written after a `gap` record once the log can be written again.
    Run,
}

fn default_elevated_profile() -> String {
    "elevated".to_string()
}

fn default_profile() -> String {
    "default".to_string()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allow_elevation: false,
            elevated_profile: default_elevated_profile(),
            default_profile: default_profile(),
            on_audit_failure: OnAuditFailure::default(),
            backend: crate::backend::Choice::Auto,
            kubernetes: KubernetesConfig::default(),
        }
    }
}

/// `$XDG_CONFIG_HOME/stockade`, else `~/.config/stockade`, from the environment `env`.
pub fn config_dir(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(dir) = env("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("stockade"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".config").join("stockade"))
}

impl Config {
    /// Reads `path`. A missing file means the defaults unless it is `required` (named by the
    /// user), which makes it an error.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(source) => return Err(ConfigError::Read { file, source }),
            Ok(meta) if meta.len() > MAX_CONFIG_BYTES => {
                return Err(ConfigError::Syntax {
                    file,
                    message: format!("larger than {MAX_CONFIG_BYTES} bytes"),
                })
            }
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            file,
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }
}
