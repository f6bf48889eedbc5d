//! The labels that make a pod stockade's. The API limits a label value to 63 characters of
//! `[A-Za-z0-9._-]`, starting and ending alphanumeric; names are written as they are, so one
//! outside those limits is refused by the API server (it fails closed; see docs/kubernetes.md).

use std::collections::BTreeMap;

use crate::backend::{SandboxKind, SandboxSpec};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "stockade";
/// The state directory that owns it: one state id never lists or prunes another's.
pub const LABEL_OWNER: &str = "stockade.dev/owner";
pub const LABEL_SESSION: &str = "stockade.dev/session";
pub const LABEL_PROFILE: &str = "stockade.dev/profile";
/// The sandbox itself: the NetworkPolicy selects its pod by this label.
pub const LABEL_SANDBOX: &str = "stockade.dev/sandbox";
pub const LABEL_KIND: &str = "stockade.dev/kind";
pub const ANNOTATION_SPEC_DIGEST: &str = "stockade.dev/spec-digest";
pub const ANNOTATION_SECCOMP_SHA256: &str = "stockade.dev/seccomp-sha256";

/// The labels of a spec's pod.
pub fn of(spec: &SandboxSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        labels.insert(k.to_string(), v.to_string());
    };
    put(LABEL_MANAGED_BY, MANAGED_BY);
    put(LABEL_OWNER, &spec.owner);
    put(LABEL_PROFILE, &spec.profile);
    put(LABEL_SANDBOX, &spec.name);
    match &spec.kind {
        SandboxKind::Session { name } => {
            put(LABEL_KIND, "session");
            put(LABEL_SESSION, name);
        }
        SandboxKind::Oneshot { .. } => put(LABEL_KIND, "oneshot"),
    }
    labels
}
