//! A sandbox spec in the Engine API's terms. Pure: the whole request body is a value, tested as
//! one.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};

use super::labels;
use crate::agent::AGENT_IN_CONTAINER;
use crate::backend::{Network, SandboxSpec, User};

/// A session's process tree: docker-init as PID 1 and a keeper as its child, which only waits.
/// It runs as root (with no capabilities) so that the sandbox user cannot kill it and end the
/// session. With the agent mounted the keeper is the agent binary, so no image needs `sleep`.
pub const KEEPER_CMD: &[&str] = &["sleep", "infinity"];
pub const KEEPER_USER: User = User::ROOT;

/// What the container's first process (the child of docker-init) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Main {
    /// The keeper, which only waits; the agent is started later with an exec.
    Keeper,
    /// The agent itself, as PID 1 and the sandbox user, with this command line, reading its
    /// key on the container's stdin: a one-shot sandbox saves the exec that would start it
    /// (one engine round trip and a runtime exec, about a sixth of a one-shot's time). It ends
    /// with the container, which lives for one command.
    Agent { argv: Vec<String> },
}

fn tmpfs_options(spec: &SandboxSpec) -> HashMap<String, String> {
    spec.tmpfs
        .iter()
        .map(|t| {
            let exec = if t.exec { "exec" } else { "noexec" };
            (
                t.path.clone(),
                format!(
                    "rw,nosuid,nodev,{exec},size={},mode={:o},uid={},gid={}",
                    t.size_bytes, t.mode, t.owner.uid, t.owner.gid
                ),
            )
        })
        .collect()
}

fn binds(spec: &SandboxSpec) -> Vec<String> {
    let mut binds: Vec<String> = spec
        .binds
        .iter()
        .map(|b| {
            let mode = if b.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", b.source, b.target)
        })
        .collect();
    if let Some(agent) = &spec.agent {
        binds.extend(agent.binds());
    }
    binds
}

/// The create request for `spec`'s container (its name is `spec.name`), whose first process
/// is `main`.
pub fn render(spec: &SandboxSpec, main: &Main) -> ContainerCreateBody {
    let mut security_opt = vec![format!("seccomp={}", spec.seccomp.json)];
    if spec.no_new_privileges {
        security_opt.push("no-new-privileges".to_string());
    }
    // The agent as the first process is PID 1 itself: the kernel delivers no signal from
    // inside the sandbox that it does not handle (no SIGKILL, no SIGSTOP), and as the sandbox
    // user it runs nothing else (an init as that user would be open to its /proc/1/mem).
    let (cmd, user, stdin): (Vec<String>, User, bool) = match (main, &spec.agent) {
        (Main::Agent { argv }, Some(_)) => (argv.clone(), spec.user, true),
        (_, Some(_)) => (
            vec![AGENT_IN_CONTAINER.into(), "keep".into()],
            KEEPER_USER,
            false,
        ),
        (_, None) => (
            KEEPER_CMD.iter().map(|s| s.to_string()).collect(),
            KEEPER_USER,
            false,
        ),
    };
    let network = match &spec.network {
        Network::None => "none".to_string(),
        Network::Named(name) => name.clone(),
    };
    let binds = binds(spec);
    let host_config = HostConfig {
        readonly_rootfs: Some(spec.read_only_root),
        tmpfs: Some(tmpfs_options(spec)),
        network_mode: Some(network),
        // Everything dropped, the sandbox's own set added: the same effective set whatever
        // the engine's defaults are.
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(spec.capabilities.iter().cloned().collect()),
        security_opt: Some(security_opt),
        pids_limit: Some(spec.limits.pids),
        memory: Some(spec.limits.memory_bytes),
        // Equal to memory: no swap, so a memory bomb is OOM-killed rather than thrashing.
        memory_swap: Some(spec.limits.memory_bytes),
        nano_cpus: Some(spec.limits.nano_cpus),
        binds: (!binds.is_empty()).then_some(binds),
        init: Some(!stdin),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(cmd),
        user: Some(user.to_string()),
        working_dir: Some("/".to_string()),
        labels: Some(labels::of(spec).into_iter().collect()),
        network_disabled: Some(spec.network == Network::None),
        attach_stdin: Some(stdin),
        attach_stdout: Some(stdin),
        attach_stderr: Some(stdin),
        open_stdin: stdin.then_some(true),
        stdin_once: stdin.then_some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::plan::sandbox_spec;
    use crate::profile::{load, ProfileDirs};

    #[test]
    fn the_default_profile_renders_to_a_locked_down_container() {
        let profile = load("default", &ProfileDirs::default()).unwrap();
        let mounts = crate::agent::Mounts {
            binary: "/state/agent/stockade-agent".into(),
            run_dir: "/state/sessions/s1/run".into(),
            hostname: "/state/agent/hostname".into(),
        };
        let spec = sandbox_spec(&profile, Some("s1"), "x", "5ea7e1d", Some(&mounts));
        let body = render(&spec, &Main::Keeper);
        let labels: HashMap<String, String> = [
            ("org.stockade.managed", "1"),
            ("org.stockade.profile", "default"),
            ("org.stockade.spec-digest", spec.digest.as_str()),
            ("org.stockade.elevated", "false"),
            ("org.stockade.state", "5ea7e1d"),
            ("org.stockade.version", env!("CARGO_PKG_VERSION")),
            ("org.stockade.agent", "1"),
            ("org.stockade.kind", "session"),
            ("org.stockade.session", "s1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let tmpfs: HashMap<String, String> = [
            (
                "/tmp",
                "rw,nosuid,nodev,noexec,size=67108864,mode=1777,uid=65532,gid=65532",
            ),
            (
                "/workspace",
                "rw,nosuid,nodev,exec,size=268435456,mode=1777,uid=65532,gid=65532",
            ),
            (
                "/home/sandbox",
                "rw,nosuid,nodev,noexec,size=16777216,mode=1777,uid=65532,gid=65532",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let expected = ContainerCreateBody {
            image: Some(crate::backend::docker::image::base_image_ref()),
            cmd: Some(vec!["/run/stockade-agent".into(), "keep".into()]),
            user: Some("0:0".into()),
            working_dir: Some("/".into()),
            labels: Some(labels),
            network_disabled: Some(true),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                readonly_rootfs: Some(true),
                tmpfs: Some(tmpfs),
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(vec![]),
                security_opt: Some(vec![
                    format!("seccomp={}", profile.seccomp.json),
                    "no-new-privileges".into(),
                ]),
                pids_limit: Some(256),
                memory: Some(512 << 20),
                memory_swap: Some(512 << 20),
                nano_cpus: Some(1_000_000_000),
                binds: Some(vec![
                    "/state/agent/stockade-agent:/run/stockade-agent:ro".into(),
                    "/state/sessions/s1/run:/run/stockade:ro".into(),
                    "/state/agent/hostname:/etc/hostname:ro".into(),
                ]),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(body, expected);
    }

    #[test]
    fn without_the_agent_the_keeper_is_sleep_and_nothing_is_mounted() {
        let profile = load("elevated", &ProfileDirs::default()).unwrap();
        let spec = sandbox_spec(&profile, None, "abc", "5ea7e1d", None);
        let body = render(&spec, &Main::Keeper);
        assert_eq!(body.cmd, Some(vec!["sleep".into(), "infinity".into()]));
        let host = body.host_config.unwrap();
        assert_eq!(host.binds, None);
        assert_eq!(host.readonly_rootfs, Some(false));
        assert_eq!(
            host.cap_add,
            Some(
                [
                    "CAP_CHOWN",
                    "CAP_DAC_OVERRIDE",
                    "CAP_FOWNER",
                    "CAP_FSETID",
                    "CAP_SETGID",
                    "CAP_SETUID"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels["org.stockade.kind"], "oneshot");
        assert_eq!(labels["org.stockade.exec"], "abc");
        assert!(!labels.contains_key("org.stockade.agent"));
    }

    #[test]
    fn a_oneshot_can_start_with_the_agent_as_its_first_process() {
        let profile = load("default", &ProfileDirs::default()).unwrap();
        let mounts = crate::agent::Mounts {
            binary: "/state/agent/stockade-agent".into(),
            run_dir: "/state/run/x/run".into(),
            hostname: "/state/agent/hostname".into(),
        };
        let spec = sandbox_spec(&profile, None, "x", "5ea7e1d", Some(&mounts));
        let argv: Vec<String> = [
            "/run/stockade-agent",
            "serve",
            "--launch",
            "/run/stockade/l.sock",
        ]
        .map(String::from)
        .to_vec();
        let with = render(&spec, &Main::Agent { argv: argv.clone() });
        let mut expected = render(&spec, &Main::Keeper);
        expected.cmd = Some(argv);
        expected.user = Some("65532:65532".into());
        expected.open_stdin = Some(true);
        expected.stdin_once = Some(true);
        expected.attach_stdin = Some(true);
        expected.attach_stdout = Some(true);
        expected.attach_stderr = Some(true);
        expected.host_config.as_mut().unwrap().init = Some(false);
        assert_eq!(with, expected);
        // Without the agent mounted there is no agent to start.
        let bare = sandbox_spec(&profile, None, "x", "5ea7e1d", None);
        assert_eq!(
            render(
                &bare,
                &Main::Agent {
                    argv: vec!["x".into()]
                }
            ),
            render(&bare, &Main::Keeper)
        );
    }
}
