//! The profile's seccomp JSON as a Security Profiles Operator `SeccompProfile`: resolved for the
//! sandbox's capabilities and the node's architecture (the CRD has no `archMap`, `includes`,
//! `excludes` or `comment`), named by the SHA-256 of what it says, so a changed profile is a new
//! object and never an update in place.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::RenderError;
use super::labels::{ANNOTATION_SECCOMP_SHA256, LABEL_MANAGED_BY, MANAGED_BY};

pub const SPO_API_VERSION: &str = "security-profiles-operator.x-k8s.io/v1beta1";
pub const SPO_KIND: &str = "SeccompProfile";
/// SPO writes a profile to `<kubelet seccomp root>/operator/<name>.json`.
const LOCALHOST_DIR: &str = "operator";
/// Hex digits of the digest in the object's name (the full digest is an annotation).
const NAME_DIGEST_LEN: usize = 12;
/// The errno SPO's nodes return for `SCMP_ACT_ERRNO` (it has no `defaultErrnoRet`).
const SPO_DEFAULT_ERRNO: u64 = 1;

/// A Security Profiles Operator `SeccompProfile` (cluster-scoped in SPO >= 0.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompProfile {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: SeccompProfileSpec,
}

/// The OCI seccomp fields SPO's CRD holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompProfileSpec {
    pub default_action: String,
    pub architectures: Vec<String>,
    pub syscalls: Vec<SeccompRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompRule {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompArg {
    pub index: u64,
    pub value: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_two: Option<u64>,
    pub op: String,
}

impl SeccompProfile {
    /// `localhostProfile` for a pod that uses it.
    pub fn localhost_path(&self) -> String {
        format!(
            "{LOCALHOST_DIR}/{}.json",
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

/// The node architecture (`status.nodeInfo.architecture`, Go's GOARCH) as libseccomp names it.
pub fn scmp_arch(goarch: &str) -> Result<&'static str, RenderError> {
    Ok(match goarch {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "386" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        other => {
            return Err(RenderError::Arch {
                arch: other.to_string(),
            })
        }
    })
}

/// Resolves `json` (Docker's format, already validated at profile load) for `caps` and the
/// node architecture `goarch`, as dockerd does (moby profiles/seccomp/seccomp_linux.go).
pub fn render(
    profile: &str,
    json: &str,
    caps: &BTreeSet<String>,
    goarch: &str,
) -> Result<SeccompProfile, RenderError> {
    let bad = |field: String, why: &str| RenderError::Seccomp {
        profile: profile.to_string(),
        field,
        why: why.to_string(),
    };
    let doc: Value = serde_json::from_str(json).map_err(|source| RenderError::SeccompJson {
        profile: profile.to_string(),
        source,
    })?;
    if let Some(v) = doc.get("defaultErrnoRet") {
        let value = v
            .as_u64()
            .ok_or_else(|| bad("defaultErrnoRet".into(), "not a number"))?;
        if value != SPO_DEFAULT_ERRNO {
            return Err(RenderError::SeccompErrnoRet {
                profile: profile.to_string(),
                value,
            });
        }
    }
    let default_action = doc
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("defaultAction".into(), "missing"))?
        .to_string();
    let arch = scmp_arch(goarch)?;
    let native = native_arch(goarch);
    let mut architectures = vec![arch.to_string()];
    for entry in doc
        .get("archMap")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if entry.get("architecture").and_then(Value::as_str) == Some(arch) {
            architectures.extend(strings(entry.get("subArchitectures")));
        }
    }
    let caps: BTreeSet<String> = caps.iter().map(|c| full_cap(c)).collect();
    let mut syscalls = Vec::new();
    for (i, rule) in doc
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !applies(rule.get("includes"), native, &caps, true)
            || applies(rule.get("excludes"), native, &caps, false)
        {
            continue;
        }
        let mut names = strings(rule.get("names"));
        if let Some(name) = rule.get("name").and_then(Value::as_str) {
            names.push(name.to_string());
        }
        let action = rule
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("syscalls[{i}].action"), "missing"))?
            .to_string();
        let errno_ret = rule.get("errnoRet").and_then(Value::as_u64);
        let mut args = Vec::new();
        for (j, a) in rule
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let num = |field: &'static str| -> Result<Option<u64>, RenderError> {
                match a.get(field).and_then(Value::as_u64) {
                    Some(value) if value > i64::MAX as u64 => Err(RenderError::SeccompArgValue {
                        profile: profile.to_string(),
                        rule: i,
                        arg: j,
                        field,
                        value,
                    }),
                    v => Ok(v),
                }
            };
            args.push(SeccompArg {
                index: num("index")?.unwrap_or_default(),
                value: num("value")?.unwrap_or_default(),
                value_two: num("valueTwo")?.filter(|v| *v != 0),
                op: a
                    .get("op")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("syscalls[{i}].args[{j}].op"), "missing"))?
                    .to_string(),
            });
        }
        syscalls.push(SeccompRule {
            names,
            action,
            errno_ret,
            args,
        });
    }
    let spec = SeccompProfileSpec {
        default_action,
        architectures,
        syscalls,
    };
    // serde_json writes struct fields in declaration order: the same spec, the same bytes.
    let canonical = serde_json::to_vec(&spec).expect("a struct of strings and numbers serializes");
    let sha = hex::encode(Sha256::digest(&canonical));
    let name = format!("stockade-{profile}-{}", &sha[..NAME_DIGEST_LEN]);
    Ok(SeccompProfile {
        api_version: SPO_API_VERSION.to_string(),
        kind: SPO_KIND.to_string(),
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_SECCOMP_SHA256.to_string(),
                sha,
            )])),
            ..Default::default()
        },
        spec,
    })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn full_cap(cap: &str) -> String {
    if cap.starts_with("CAP_") {
        cap.to_string()
    } else {
        format!("CAP_{cap}")
    }
}

/// The name a profile's `includes.arches` / `excludes.arches` use for the node architecture
/// (`goarch`, already checked by [`scmp_arch`]): moby's `goToNative`, as
/// `seccomp::Arch::docker_name` for the architectures stockade itself compiles for.
fn native_arch(goarch: &str) -> &str {
    match goarch {
        "386" => "x86",
        other => other,
    }
}

/// Whether a rule's `includes` (all listed must hold; absent holds) or `excludes` (any listed
/// holds; absent does not) matches the architecture (its native name, [`native_arch`]) and
/// capabilities.
fn applies(cond: Option<&Value>, arch: &str, caps: &BTreeSet<String>, all: bool) -> bool {
    let Some(cond) = cond else { return all };
    let arches = strings(cond.get("arches"));
    let want_caps: Vec<String> = strings(cond.get("caps"))
        .iter()
        .map(|c| full_cap(c))
        .collect();
    if all {
        (arches.is_empty() || arches.iter().any(|a| a == arch))
            && want_caps.iter().all(|c| caps.contains(c))
    } else {
        // An unknown node kernel counts as new enough for every minKernel, as in
        // seccomp::resolve.
        cond.get("minKernel").is_some()
            || arches.iter().any(|a| a == arch)
            || want_caps.iter().any(|c| caps.contains(c))
    }
}
