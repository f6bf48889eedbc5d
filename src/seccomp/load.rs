//! Parsing and validating the Docker/OCI seccomp JSON format (Docker's template form with
//! `archMap` and `includes`/`excludes`, the plain OCI form, and Podman's `errno` names).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::model::{ArgCond, CmpOp, Filter, Rule, SeccompProfile, DEFAULT_ERRNO, MAX_ERRNO};
use super::{caps, compile, resolve, syscalls, Action, Arch, SeccompError};

/// Largest profile accepted. Docker's default is 14 KB and Podman's 18 KB; a megabyte leaves
/// room for generated profiles while bounding what an untrusted file can make us allocate.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// seccomp_data carries six syscall arguments (linux/seccomp.h).
const MAX_ARG_INDEX: u32 = 5;

/// Choices the caller makes about strictness.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Skip syscall names that are not a syscall on any architecture instead of failing.
    /// runc and libseccomp skip them silently; stockade makes it an explicit choice because a
    /// misspelt name in an ERRNO rule is a hole.
    pub allow_unknown_syscalls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    #[serde(default)]
    default_action: Option<String>,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    /// Podman's spelling of the default errno by name.
    #[serde(default)]
    default_errno: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<RawArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSyscall {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// Docker's deprecated single-name form.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    /// Podman's errno by name.
    #[serde(default)]
    errno: Option<String>,
    #[serde(default)]
    args: Option<Vec<RawArg>>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<RawFilter>,
    #[serde(default)]
    excludes: Option<RawFilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFilter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// libseccomp native architecture names accepted in `includes.arches` / `excludes.arches`
/// (moby profiles/seccomp `goToNative` / `nativeToSeccomp`, plus `x32`).
const NATIVE_ARCHES: &[&str] = &[
    "x86",
    "amd64",
    "x32",
    "arm",
    "arm64",
    "loong64",
    "loongarch64",
    "mips",
    "mipsle",
    "mipsel",
    "mips64",
    "mips64n32",
    "mipsel64",
    "mips3l64n32",
    "mipsel64n32",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390",
    "s390x",
    "parisc",
    "parisc64",
    "m68k",
    "sh",
    "sheb",
];

/// libseccomp `SCMP_ARCH_*` names accepted in `architectures` and `archMap`.
const SCMP_ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// Filter flags runc understands (runtime-spec config-linux.md, seccomp `flags`).
const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

fn invalid(at: &str, message: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        at: at.to_string(),
        message: message.into(),
    }
}

/// Parses and validates a Docker/OCI seccomp profile.
///
/// Checks, all at load so that a profile that loads can be applied: size cap, strict JSON shape
/// (unknown fields and duplicate keys rejected), known actions, operators, capabilities,
/// architectures and kernel versions, argument indexes 0-5, errno range, every syscall name a
/// real syscall (unless `opts.allow_unknown_syscalls`), and that the widest resolution of the
/// profile (every rule kept) compiles to a BPF program on x86_64 and aarch64.
pub fn load_profile_json(json: &str, opts: &LoadOptions) -> Result<SeccompProfile, SeccompError> {
    if json.len() > MAX_PROFILE_BYTES {
        return Err(SeccompError::TooLarge {
            size: json.len(),
            max: MAX_PROFILE_BYTES,
        });
    }
    let raw: RawProfile =
        serde_json::from_str(json).map_err(|source| SeccompError::Parse { source })?;
    let profile = convert(raw, opts)?;
    for arch in Arch::ALL {
        compile(&resolve::widest(&profile, arch), arch)?;
    }
    Ok(profile)
}

fn convert(raw: RawProfile, opts: &LoadOptions) -> Result<SeccompProfile, SeccompError> {
    let raw_rules = raw.syscalls.unwrap_or_default();
    let architectures = raw.architectures.unwrap_or_default();
    let arch_map_raw = raw.arch_map.unwrap_or_default();
    if !architectures.is_empty() && !arch_map_raw.is_empty() {
        // Same refusal as dockerd's setupSeccomp.
        return Err(invalid(
            "architectures",
            "both 'architectures' and 'archMap' are set; use one",
        ));
    }
    for (i, a) in architectures.iter().enumerate() {
        check_scmp_arch(&format!("architectures[{i}]"), a)?;
    }
    let mut arch_map = Vec::with_capacity(arch_map_raw.len());
    for (i, m) in arch_map_raw.into_iter().enumerate() {
        let at = format!("archMap[{i}]");
        check_scmp_arch(&at, &m.architecture)?;
        let subs = m.sub_architectures.unwrap_or_default();
        for s in &subs {
            check_scmp_arch(&at, s)?;
        }
        arch_map.push((m.architecture, subs));
    }
    let flags = raw.flags.unwrap_or_default();
    for f in &flags {
        if !FLAGS.contains(&f.as_str()) {
            return Err(invalid("flags", format!("unknown flag {f:?}")));
        }
    }
    if raw.listener_metadata.is_some() && raw.listener_path.is_none() {
        return Err(invalid(
            "listenerMetadata",
            "set without listenerPath (runtime-spec forbids it)",
        ));
    }

    let default_action = match raw.default_action.as_deref() {
        None | Some("") if raw_rules.is_empty() => None,
        None | Some("") => {
            return Err(invalid(
                "defaultAction",
                "missing, but the profile has rules",
            ))
        }
        Some(name) => Some(parse_action(
            "defaultAction",
            name,
            raw.default_errno_ret,
            raw.default_errno.as_deref(),
        )?),
    };
    if default_action.is_none() && (raw.default_errno_ret.is_some() || raw.default_errno.is_some())
    {
        return Err(invalid("defaultErrnoRet", "set without defaultAction"));
    }

    let mut rules = Vec::with_capacity(raw_rules.len());
    let mut unknown = BTreeSet::new();
    for (index, r) in raw_rules.into_iter().enumerate() {
        let at = format!("syscalls[{index}]");
        let mut names = match (r.name, r.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(invalid(&at, "both 'name' and 'names' are set; use 'names'"))
            }
            (Some(name), _) => vec![name],
            (None, names) => names.unwrap_or_default(),
        };
        if names.is_empty() {
            return Err(invalid(&at, "the rule names no syscall"));
        }
        for n in &names {
            if !syscalls::is_known_syscall(n) {
                unknown.insert(n.clone());
            }
        }
        if opts.allow_unknown_syscalls {
            names.retain(|n| syscalls::is_known_syscall(n));
        }
        let action = parse_action(&at, &r.action, r.errno_ret, r.errno.as_deref())?;
        let mut args = Vec::new();
        for (j, a) in r.args.unwrap_or_default().into_iter().enumerate() {
            args.push(parse_arg(&format!("{at}.args[{j}]"), a)?);
        }
        rules.push(Rule {
            index,
            names,
            action,
            args,
            comment: r.comment.filter(|c| !c.is_empty()),
            includes: parse_filter(&format!("{at}.includes"), r.includes)?,
            excludes: parse_filter(&format!("{at}.excludes"), r.excludes)?,
        });
    }
    if !unknown.is_empty() && !opts.allow_unknown_syscalls {
        return Err(SeccompError::UnknownSyscalls {
            names: unknown.into_iter().collect(),
        });
    }
    Ok(SeccompProfile {
        default_action,
        architectures,
        arch_map,
        flags,
        listener_path: raw.listener_path,
        rules,
        unknown_names: unknown.into_iter().collect(),
    })
}

fn check_scmp_arch(at: &str, name: &str) -> Result<(), SeccompError> {
    if SCMP_ARCHES.contains(&name) {
        Ok(())
    } else {
        Err(SeccompError::UnknownArch {
            at: at.to_string(),
            arch: name.to_string(),
        })
    }
}

fn parse_action(
    at: &str,
    name: &str,
    errno_ret: Option<u32>,
    errno_name: Option<&str>,
) -> Result<Action, SeccompError> {
    let by_name = match errno_name {
        None | Some("") => None,
        Some(n) => match super::model::ERRNO_NAMES
            .iter()
            .find(|(name, _)| *name == n)
        {
            Some((_, v)) => Some(u32::from(*v)),
            None => return Err(invalid(at, format!("unknown errno name {n:?}"))),
        },
    };
    let errno = match (errno_ret, by_name) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                at,
                format!("errnoRet {a} and errno name (= {b}) disagree"),
            ))
        }
        (Some(v), _) | (None, Some(v)) => Some(v),
        (None, None) => None,
    };
    let errno_value = |errno: Option<u32>| -> Result<u16, SeccompError> {
        match errno {
            None => Ok(DEFAULT_ERRNO),
            Some(v) if v <= MAX_ERRNO => u16::try_from(v).map_err(|_| invalid(at, "errno")),
            Some(v) => Err(invalid(
                at,
                format!("errnoRet {v} is out of range (0-{MAX_ERRNO})"),
            )),
        }
    };
    let action = match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_ERRNO" => return Ok(Action::Errno(errno_value(errno)?)),
        "SCMP_ACT_TRACE" => return Ok(Action::Trace(errno_value(errno)?)),
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => Action::Notify,
        _ => {
            return Err(SeccompError::UnknownAction {
                at: at.to_string(),
                action: name.to_string(),
            })
        }
    };
    if errno.is_some() {
        // runc refuses errnoRet on actions that return no errno.
        return Err(invalid(
            at,
            format!(
                "errnoRet is only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}"
            ),
        ));
    }
    Ok(action)
}

fn parse_arg(at: &str, a: RawArg) -> Result<ArgCond, SeccompError> {
    if a.index > MAX_ARG_INDEX {
        return Err(invalid(
            at,
            format!(
                "argument index {} is out of range (0-{MAX_ARG_INDEX})",
                a.index
            ),
        ));
    }
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
        other => return Err(invalid(at, format!("unknown operator {other:?}"))),
    };
    Ok(ArgCond {
        // Checked against MAX_ARG_INDEX above, so it fits.
        index: u8::try_from(a.index).unwrap_or(u8::MAX),
        op,
        value: a.value,
        value_two: a.value_two.unwrap_or(0),
    })
}

fn parse_filter(at: &str, raw: Option<RawFilter>) -> Result<Filter, SeccompError> {
    let Some(raw) = raw else {
        return Ok(Filter::default());
    };
    let caps = raw.caps.unwrap_or_default();
    for c in &caps {
        if !caps::is_known(c) {
            // dockerd compares these strings with the bounding set verbatim, so `SYS_ADMIN`
            // would never match: a rule that silently never applies.
            let hint = match caps::canonical(c) {
                Some(canon) => format!(" (write {canon:?})"),
                None => String::new(),
            };
            return Err(SeccompError::UnknownCapability {
                at: at.to_string(),
                cap: c.clone(),
                hint,
            });
        }
    }
    let arches = raw.arches.unwrap_or_default();
    for a in &arches {
        if !NATIVE_ARCHES.contains(&a.as_str()) {
            return Err(SeccompError::UnknownArch {
                at: at.to_string(),
                arch: a.clone(),
            });
        }
    }
    let min_kernel = match raw.min_kernel.as_deref() {
        None | Some("") => None,
        Some(v) => Some(parse_min_kernel(at, v)?),
    };
    Ok(Filter {
        caps,
        arches,
        min_kernel,
    })
}

/// `"<kernel>.<major>"`, each 0-255 and not both zero, as moby's KernelVersion.UnmarshalJSON.
fn parse_min_kernel(at: &str, v: &str) -> Result<(u32, u32), SeccompError> {
    let err = || SeccompError::KernelVersion {
        at: at.to_string(),
        value: v.to_string(),
    };
    let (a, b) = v.split_once('.').ok_or_else(err)?;
    let major: u8 = a.parse().map_err(|_| err())?;
    let minor: u8 = b.parse().map_err(|_| err())?;
    if major == 0 && minor == 0 {
        return Err(err());
    }
    Ok((u32::from(major), u32::from(minor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<SeccompProfile, SeccompError> {
        load_profile_json(json, &LoadOptions::default())
    }

    #[test]
    fn minimal_profile_loads() {
        let p = load(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#)
            .unwrap();
        assert_eq!(p.default_action, Some(Action::Errno(DEFAULT_ERRNO)));
        assert_eq!(p.rules.len(), 1);
    }

    #[test]
    fn empty_object_means_seccomp_disabled() {
        assert_eq!(load("{}").unwrap().default_action, None);
    }

    #[test]
    fn unknown_syscall_is_an_error_by_default() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","opne","exit_gruop"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let err = load(json).unwrap_err();
        match &err {
            SeccompError::UnknownSyscalls { names } => {
                assert_eq!(names, &vec!["exit_gruop".to_string(), "opne".to_string()])
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("--allow-unknown-syscalls"));
        let p = load_profile_json(
            json,
            &LoadOptions {
                allow_unknown_syscalls: true,
            },
        )
        .unwrap();
        assert_eq!(p.rules[0].names, vec!["read"]);
        assert_eq!(p.unknown_names, vec!["exit_gruop", "opne"]);
    }

    #[test]
    fn unknown_fields_and_duplicate_keys_are_rejected() {
        assert!(matches!(
            load(r#"{"defaultAction":"SCMP_ACT_ERRNO","sycalls":[]}"#),
            Err(SeccompError::Parse { .. })
        ));
        assert!(matches!(
            load(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}"#),
            Err(SeccompError::Parse { .. })
        ));
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                r#"{"defaultAction":"SCMP_ACT_EXPLODE"}"#,
                "SCMP_ACT_EXPLODE",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#,
                "errnoRet",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#,
                "out of range",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "argument index 6",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_APPROX"}]}]}"#,
                "SCMP_CMP_APPROX",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["SYS_ADMIN"]}}]}"#,
                "CAP_SYS_ADMIN",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd46"]}}]}"#,
                "amd46",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}]}"#,
                "kernel version",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
                "names no syscall",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "both 'name' and 'names'",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
                "archMap",
            ),
            (
                r#"{"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "defaultAction",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errno":"EPERM","errnoRet":38}]}"#,
                "disagree",
            ),
        ];
        for (json, needle) in cases {
            let err = load(json).expect_err(json).to_string();
            assert!(err.contains(needle), "{json}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = " ".repeat(MAX_PROFILE_BYTES + 1);
        assert!(matches!(load(&big), Err(SeccompError::TooLarge { .. })));
    }

    #[test]
    fn notify_cannot_compile_and_says_why() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/x.sock","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#;
        let err = load(json).unwrap_err();
        assert!(matches!(err, SeccompError::Compile { .. }), "{err:?}");
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");
    }
}
