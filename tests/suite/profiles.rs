//! Every profile rule is enforced at load, with the file and field named.

use super::common::{stderr, Env};

const VALID: &str = r#"
image = "stockade/base"
user = "1000:1000"
workdir = "/workspace"
read_only_root = true
network = "none"
seccomp = "seccomp.json"
[tmpfs]
"/tmp" = "16m"
[capabilities]
drop = ["ALL"]
[limits]
pids = 64
memory = "256m"
cpus = 0.5
timeout = "10s"
output_cap = "64k"
"#;

fn env_with_seccomp() -> Env {
    let env = Env::new();
    std::fs::create_dir_all(env.profiles_dir()).unwrap();
    std::fs::copy("profiles/seccomp/default.json", env.profiles_dir().join("seccomp.json")).unwrap();
    env
}

/// Writes `text` as profile `bad`, loads it with `profile show`, returns stderr.
fn rejected(text: &str) -> String {
    let env = env_with_seccomp();
    env.write_profile("bad", text);
    let out = env.cmd().args(["profile", "show", "bad"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "accepted: {text}");
    let err = stderr(&out);
    assert!(err.contains("bad.toml"), "file not named: {err}");
    err
}

fn with(line_before: &str, replacement: &str) -> String {
    assert!(VALID.contains(line_before), "{line_before}");
    VALID.replace(line_before, replacement)
}

#[test]
fn the_valid_profile_loads() {
    let env = env_with_seccomp();
    env.write_profile("good", VALID);
    let out = env.cmd().args(["profile", "show", "good"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn shipped_profiles_load() {
    let env = Env::new();
    for name in ["default", "elevated"] {
        let out = env.cmd().args(["profile", "show", name]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
}

#[test]
fn unknown_field_is_rejected() {
    let err = rejected(&format!("privileged = true\n{VALID}"));
    assert!(err.contains("privileged"), "{err}");
}

#[test]
fn unknown_capability_is_rejected() {
    let err = rejected(&with("drop = [\"ALL\"]", "drop = [\"ALL\"]\nadd = [\"CAP_FLY\"]"));
    assert!(err.contains("capabilities.add") && err.contains("CAP_FLY"), "{err}");
}

#[test]
fn adding_all_capabilities_is_rejected() {
    let err = rejected(&with("drop = [\"ALL\"]", "drop = []\nadd = [\"ALL\"]"));
    assert!(err.contains("capabilities.add"), "{err}");
}

#[test]
fn bad_size_is_rejected() {
    let err = rejected(&with("memory = \"256m\"", "memory = \"lots\""));
    assert!(err.contains("limits.memory") && err.contains("not a size"), "{err}");
}

#[test]
fn bad_duration_is_rejected() {
    let err = rejected(&with("timeout = \"10s\"", "timeout = \"10 parsecs\""));
    assert!(err.contains("limits.timeout") && err.contains("not a duration"), "{err}");
}

#[test]
fn docker_socket_bind_is_rejected() {
    for source in ["/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run/containerd/containerd.sock"] {
        let err = rejected(&format!("{VALID}\n[[binds]]\nsource = \"{source}\"\ntarget = \"/s\"\n"));
        assert!(err.contains("binds"), "{source}: {err}");
    }
}

#[test]
fn symlink_to_docker_socket_is_rejected() {
    let env = env_with_seccomp();
    let link = env.dir.path().join("innocent");
    std::os::unix::fs::symlink("/var/run/docker.sock", &link).unwrap();
    env.write_profile(
        "bad",
        &format!("{VALID}\n[[binds]]\nsource = \"{}\"\ntarget = \"/s\"\n", link.display()),
    );
    let out = env.cmd().args(["profile", "show", "bad"]).output().unwrap();
    if std::path::Path::new("/var/run/docker.sock").exists() {
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("container runtime"), "{}", stderr(&out));
    }
}

#[test]
fn system_path_binds_are_rejected() {
    for source in ["/", "/proc", "/sys", "/dev", "/etc", "/proc/1/root", "/etc/shadow", "/tmp/../etc"] {
        let err = rejected(&format!("{VALID}\n[[binds]]\nsource = \"{source}\"\ntarget = \"/mnt/x\"\n"));
        assert!(err.contains("binds"), "{source}: {err}");
    }
}

#[test]
fn network_host_is_rejected() {
    let err = rejected(&with("network = \"none\"", "network = \"host\""));
    assert!(err.contains("network"), "{err}");
    rejected(&with("network = \"none\"", "network = \"container:abc\""));
}

#[test]
fn seccomp_unconfined_is_rejected() {
    let err = rejected(&with("seccomp = \"seccomp.json\"", "seccomp = \"unconfined\""));
    assert!(err.contains("seccomp") && err.contains("unconfined"), "{err}");
}

#[test]
fn missing_seccomp_file_is_rejected() {
    let err = rejected(&with("seccomp = \"seccomp.json\"", "seccomp = \"nope.json\""));
    assert!(err.contains("seccomp"), "{err}");
}

#[test]
fn root_user_needs_an_elevated_profile() {
    let err = rejected(&with("user = \"1000:1000\"", "user = \"0\""));
    assert!(err.contains("user") && err.contains("elevated"), "{err}");
}

#[test]
fn no_new_privileges_cannot_be_turned_off() {
    let err = rejected(&format!("no_new_privileges = false\n{VALID}"));
    assert!(err.contains("no_new_privileges"), "{err}");
}

#[test]
fn unknown_profile_name_says_where_it_looked() {
    let env = Env::new();
    let out = env.cmd().args(["exec", "--profile", "nosuch", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("unknown profile \"nosuch\""), "{}", stderr(&out));
}
