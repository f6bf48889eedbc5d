use std::time::Duration;

use super::*;

#[test]
fn sizes_parse_in_binary_units() {
    assert_eq!(parse_size("512"), Ok(512));
    assert_eq!(parse_size("64k"), Ok(64 << 10));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert!(parse_size("").is_err());
    assert!(parse_size("m").is_err());
    assert!(parse_size("-1m").is_err());
    assert!(parse_size("1.5g").is_err());
    assert!(parse_size("99999999999999999999t").is_err());
    assert!(
        parse_size("16777216t").is_err(),
        "overflow must be an error"
    );
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    for bad in ["", "10", "s", "1d", "1.5s", "-1s", "99999999999999999999h"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn builtin_default_profile_is_locked_down() {
    let p = load("default", &ProfileDirs::default()).unwrap();
    assert_eq!(p.user.to_string(), "65532:65532");
    assert!(p.read_only_root);
    assert_eq!(p.network, "none");
    assert_eq!(p.cap_drop, vec!["ALL"]);
    assert!(p.effective_caps().is_empty());
    assert!(p.no_new_privileges);
    assert!(!p.elevated);
    assert_eq!(p.timeout, Duration::from_secs(60));
    assert_eq!(p.output_cap, 1 << 20);
    assert!(p.seccomp.json.contains("defaultAction"));
    assert_eq!(p.image, crate::backend::docker::image::base_image_ref());
}

#[test]
fn elevated_profile_adds_no_dangerous_capability() {
    let p = load("elevated", &ProfileDirs::default()).unwrap();
    assert!(p.elevated);
    assert_eq!(p.network, "none");
    for cap in [
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
        "CAP_NET_ADMIN",
        "CAP_DAC_READ_SEARCH",
        "CAP_NET_RAW",
        "CAP_MKNOD",
    ] {
        assert!(!p.effective_caps().contains(cap), "{cap}");
    }
}

#[test]
fn effective_caps_follow_dockers_order() {
    let mut p = load("default", &ProfileDirs::default()).unwrap();
    p.cap_drop = vec!["CAP_NET_RAW".into()];
    p.cap_add = vec!["CAP_SYS_TIME".into()];
    let caps = p.effective_caps();
    assert!(!caps.contains("CAP_NET_RAW"));
    assert!(caps.contains("CAP_CHOWN"));
    assert!(caps.contains("CAP_SYS_TIME"));
}

#[test]
fn env_allowlist_supports_prefixes() {
    let p = load("default", &ProfileDirs::default()).unwrap();
    assert!(p.env_allowed("LANG"));
    assert!(p.env_allowed("LC_ALL"));
    assert!(!p.env_allowed("LD_PRELOAD"));
    assert!(!p.env_allowed("LANGUAGE_X"));
}

#[test]
fn capability_names_are_canonicalized_and_checked() {
    assert_eq!(
        canonical_cap("net_admin", false),
        Ok("CAP_NET_ADMIN".to_string())
    );
    assert_eq!(
        canonical_cap("CAP_CHOWN", false),
        Ok("CAP_CHOWN".to_string())
    );
    assert!(canonical_cap("CAP_FLY", false).is_err());
    assert!(canonical_cap("ALL", false).is_err());
    assert_eq!(canonical_cap("all", true), Ok("ALL".to_string()));
}

#[test]
fn bind_checks_see_through_dot_dot() {
    let bind = |source: &str, target: &str| Bind {
        source: source.into(),
        target: target.into(),
        read_only: true,
    };
    assert!(validate_bind(&bind("/srv/data", "/data")).is_ok());
    assert!(validate_bind(&bind("/srv/../etc", "/data")).is_err());
    assert!(validate_bind(&bind("/srv/data", "/proc/sys")).is_err());
    assert!(validate_bind(&bind("/srv/data", "/")).is_err());
    assert!(validate_bind(&bind("relative", "/data")).is_err());
    assert!(validate_bind(&bind("/srv/../var/run/docker.sock", "/data")).is_err());
    assert!(validate_bind(&bind("/var/lib/docker/volumes/x", "/data")).is_err());
}

#[test]
fn a_profile_file_can_name_a_builtin_seccomp_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../profiles/default.toml")
        .replace(
            "\"seccomp/default.json\"",
            "\"builtin:seccomp/default.json\"",
        )
        .replace("image = \"stockade/base\"", "image = \"myagent:1\"");
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, text).unwrap();
    let p = load(path.to_str().unwrap(), &ProfileDirs::default()).unwrap();
    assert_eq!(p.image, "myagent:1");
    let builtin = load("default", &ProfileDirs::default()).unwrap();
    assert_eq!(p.seccomp.json, builtin.seccomp.json);
    let missing = std::fs::read_to_string(&path)
        .unwrap()
        .replace("builtin:seccomp/default.json", "builtin:seccomp/nope.json");
    std::fs::write(&path, missing).unwrap();
    let err = load(path.to_str().unwrap(), &ProfileDirs::default()).unwrap_err();
    assert!(
        err.to_string().contains("not a built-in seccomp file"),
        "{err}"
    );
}
