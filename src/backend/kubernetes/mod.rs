//! The Kubernetes backend (cargo feature `kubernetes`): a sandbox spec rendered as the objects
//! a cluster runs it from (pure), the warm pool of one-shot pods (`pool`), and the backend
//! that runs processes in pods (`backend`). The objects are typed k8s-openapi structs (API v1.26, the oldest
//! the crate offers), so a misspelt security field cannot be written; the API server would
//! drop it silently.

mod backend;
mod checks;
mod error;
mod labels;
pub mod names;
pub mod pool;
mod render;
mod seccomp;

pub use backend::{cluster_render_options, install_seccomp, KubernetesBackend};
pub use checks::{check_network, check_node_pids, NetworkEnforcement, PidsOverride};
pub use error::{NameError, PoolError, RenderError};
pub use labels::{
    LABEL_MANAGED_BY, LABEL_OWNER, LABEL_PROFILE, LABEL_SANDBOX, LABEL_SESSION, MANAGED_BY,
};
pub use render::{render, Manifests, RenderOptions, KEEPER_ARGV};
pub use seccomp::{SeccompProfile, SeccompProfileSpec, SeccompRule, SPO_API_VERSION};

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "pool_tests.rs"]
mod pool_tests;
