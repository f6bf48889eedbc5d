//! Facts of the cluster a sandbox depends on but no pod field sets: refused when they are
//! looser than the profile, never silently accepted.

use super::error::RenderError;
use crate::backend::{Network, SandboxSpec};

/// Whether the cluster's CNI enforces NetworkPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkEnforcement {
    /// Not probed, or the probe connected: the deny-all policy may be a no-op.
    Unknown,
    /// The probe was refused by the policy.
    Enforced,
    /// The operator asserts it (`network_enforcement = "trusted"`); audited as such.
    Trusted,
}

/// An explicit, audited acceptance of a node pids limit looser than the profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PidsOverride(pub bool);

/// `network = "none"` holds only where the deny-all NetworkPolicy is enforced.
pub fn check_network(
    spec: &SandboxSpec,
    enforcement: NetworkEnforcement,
) -> Result<(), RenderError> {
    match (&spec.network, enforcement) {
        (Network::Named(network), _) => Err(RenderError::Network {
            profile: spec.profile.clone(),
            network: network.clone(),
        }),
        (Network::None, NetworkEnforcement::Unknown) => Err(RenderError::NetworkNotEnforced {
            profile: spec.profile.clone(),
        }),
        (Network::None, _) => Ok(()),
    }
}

/// The pids limit is the kubelet's `podPidsLimit` (none, or -1, means unlimited), applied to
/// every pod of the node: a node looser than the profile is refused unless overridden.
pub fn check_node_pids(
    spec: &SandboxSpec,
    node: &str,
    pod_pids_limit: Option<i64>,
    allow: PidsOverride,
) -> Result<(), RenderError> {
    let looser = match pod_pids_limit {
        Some(n) if n > 0 => n > spec.limits.pids,
        _ => true,
    };
    if looser && !allow.0 {
        return Err(RenderError::PidsLooser {
            profile: spec.profile.clone(),
            node: node.to_string(),
            profile_limit: spec.limits.pids,
            node_limit: match pod_pids_limit {
                Some(n) if n > 0 => n.to_string(),
                _ => "unlimited".to_string(),
            },
        });
    }
    Ok(())
}
