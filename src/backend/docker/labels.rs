//! The labels that make a container stockade's, and what they say about it.

use std::collections::{BTreeMap, HashMap};

use crate::backend::{SandboxInfo, SandboxKind, SandboxSpec};

/// Labels every stockade container carries.
pub const LABEL_MANAGED: &str = "org.stockade.managed";
pub const LABEL_KIND: &str = "org.stockade.kind";
pub const LABEL_SESSION: &str = "org.stockade.session";
pub const LABEL_PROFILE: &str = "org.stockade.profile";
pub const LABEL_SPEC_DIGEST: &str = "org.stockade.spec-digest";
/// The execution a one-shot container belongs to (its in-flight marker has the same id).
pub const LABEL_EXEC: &str = "org.stockade.exec";
pub const LABEL_ELEVATED: &str = "org.stockade.elevated";
pub const LABEL_AGENT: &str = "org.stockade.agent";
/// Which state directory a container belongs to: sessions are scoped to one, so two users (or
/// test runs) on one engine never reuse or prune each other's sessions.
pub const LABEL_STATE: &str = "org.stockade.state";
/// The stockade version that created it.
pub const LABEL_VERSION: &str = "org.stockade.version";

pub const KIND_ONESHOT: &str = "oneshot";
pub const KIND_SESSION: &str = "session";

/// The labels of a spec's container.
pub fn of(spec: &SandboxSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        labels.insert(k.to_string(), v.to_string());
    };
    put(LABEL_MANAGED, "1");
    put(LABEL_PROFILE, &spec.profile);
    put(LABEL_SPEC_DIGEST, &spec.digest);
    put(LABEL_ELEVATED, if spec.elevated { "true" } else { "false" });
    put(LABEL_STATE, &spec.owner);
    put(LABEL_VERSION, env!("CARGO_PKG_VERSION"));
    if spec.agent.is_some() {
        put(LABEL_AGENT, "1");
    }
    match &spec.kind {
        SandboxKind::Session { name } => {
            put(LABEL_KIND, KIND_SESSION);
            put(LABEL_SESSION, name);
        }
        SandboxKind::Oneshot { exec } => {
            put(LABEL_KIND, KIND_ONESHOT);
            put(LABEL_EXEC, exec);
        }
    }
    labels
}

/// What a stockade container's labels say; `None` for a container that is not one.
pub fn info(
    id: &str,
    name: &str,
    labels: &HashMap<String, String>,
    state: String,
    created: i64,
) -> Option<SandboxInfo> {
    if labels.get(LABEL_MANAGED).map(String::as_str) != Some("1") {
        return None;
    }
    let kind = match labels.get(LABEL_KIND).map(String::as_str) {
        Some(KIND_SESSION) => SandboxKind::Session {
            name: labels.get(LABEL_SESSION).cloned().unwrap_or_default(),
        },
        Some(KIND_ONESHOT) => SandboxKind::Oneshot {
            exec: labels
                .get(LABEL_EXEC)
                .cloned()
                .or_else(|| name.strip_prefix("stockade-x-").map(str::to_string))
                .unwrap_or_default(),
        },
        _ => return None,
    };
    Some(SandboxInfo {
        id: id.to_string(),
        name: name.to_string(),
        kind,
        owner: labels.get(LABEL_STATE).cloned().unwrap_or_default(),
        profile: labels.get(LABEL_PROFILE).cloned().unwrap_or_default(),
        state,
        created,
        version: labels.get(LABEL_VERSION).cloned(),
    })
}
