//! The Kubernetes backend (cargo feature `kubernetes`), first tier: a sandbox spec rendered as
//! the objects a cluster runs it from. Pure: nothing here talks to a cluster. The objects are
//! typed k8s-openapi structs (API v1.26, the oldest the crate offers), so a misspelt security
//! field cannot be written; the API server would drop it silently.

mod checks;
mod error;
mod labels;
mod render;
mod seccomp;

pub use checks::{check_network, check_node_pids, NetworkEnforcement, PidsOverride};
pub use error::RenderError;
pub use labels::{
    LABEL_MANAGED_BY, LABEL_OWNER, LABEL_PROFILE, LABEL_SANDBOX, LABEL_SESSION, MANAGED_BY,
};
pub use render::{render, Manifests, RenderOptions, KEEPER_ARGV};
pub use seccomp::{SeccompProfile, SeccompProfileSpec, SeccompRule, SPO_API_VERSION};

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
