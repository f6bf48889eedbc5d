//! The record stays true whatever runs inside the sandbox. Each test is an attack from
//! docs/reliability.md ("Integrity under a hostile sandbox"), built the way a prompt-injected
//! agent would build it: from command text alone. Where an attack needs system calls bash
//! cannot make (binding and connecting sockets), the program is written into /workspace as
//! base64 in the command text and run from there, exactly as an agent could.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::common::{output_within, stderr, stdout, unique, Env};
use crate::require_docker;

/// A small C program for the socket attacks. `probe`: connect to every unix socket the kernel
/// lists (/proc/net/unix) and to every socket file found under /run and /tmp, send a forged
/// request to whatever answers, try to bind a socket and rename entries in the agent's
/// directory; prints one line per attempt.
const ATTACKER_C: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void try_connect(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        char forged[] = "q\0\0\0\x08forgedrq";
        write(fd, forged, sizeof forged - 1);
        printf("CONNECTED %s\n", path);
    } else {
        printf("REFUSED %s %s\n", path, strerror(errno));
    }
    close(fd);
}

static void bind_at(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 0) == 0)
        printf("BOUND %s\n", path);
    else
        printf("NOBIND %s %s\n", path, strerror(errno));
}

int main(void) {
    FILE *f = fopen("/proc/net/unix", "r");
    char line[512];
    if (f) {
        fgets(line, sizeof line, f);
        while (fgets(line, sizeof line, f)) {
            char *path = strrchr(line, ' ');
            if (!path || path[1] != '/') continue;
            path[strcspn(path, "\n")] = 0;
            try_connect(path + 1);
        }
        fclose(f);
    }
    bind_at("/run/stockade/agent.sock");
    bind_at("/run/stockade/launch-x.sock");
    DIR *d = opendir("/run/stockade");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char from[300], to[300];
        snprintf(from, sizeof from, "/run/stockade/%s", e->d_name);
        snprintf(to, sizeof to, "/tmp/%s", e->d_name);
        printf("%s %s\n", rename(from, to) == 0 ? "RENAMED" : "NORENAME", from);
    }
    printf("END\n");
    return 0;
}
"#;

/// A C program compiled on the host (gcc; .ci/run installs it), as base64 for command text.
fn compiled_base64(source: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.c");
    std::fs::write(&src, source).unwrap();
    let bin = dir.path().join("a");
    let out = Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc (the integrity tests compile their attackers; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(&bin).unwrap())
}

/// The attacker, compiled once.
fn attacker_base64() -> &'static str {
    static B64: OnceLock<String> = OnceLock::new();
    B64.get_or_init(|| compiled_base64(ATTACKER_C))
}

/// The command text that plants and runs the attacker.
fn run_attacker() -> String {
    format!(
        "echo {} | base64 -d > /workspace/a && chmod +x /workspace/a && /workspace/a",
        attacker_base64()
    )
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn audit_verifies(env: &Env) {
    let out = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_relay_cannot_stand_between_host_and_agent() {
    require_docker!();
    let env = Env::new();
    let s = unique("relay");
    let (code, v) = env.exec_json(&["--session", &s], &run_attacker());
    assert_eq!(code, 0, "{v}");
    let report = v["stdout"].as_str().unwrap();
    assert!(report.ends_with("END\n"), "{report}");
    // Nothing the sandbox can reach leads to the agent, and the agent's directory is
    // read-only: no socket can be put in front of it, nothing in it renamed.
    assert!(!report.contains("CONNECTED"), "{report}");
    assert!(!report.contains("BOUND"), "{report}");
    assert!(!report.contains("RENAMED"), "{report}");
    assert!(
        report.contains("NOBIND /run/stockade/agent.sock Read-only file system"),
        "{report}"
    );
    // The host asks for something and records exactly that, with its verified output.
    let (code, v) = env.exec_json(&["--session", &s], "echo running tests; false");
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["stdout"], "running tests\n");
    assert_eq!(v["runner"], "agent");
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["exit_code"], 1);
    use sha2::Digest;
    assert_eq!(
        finish["stdout_sha256"],
        hex::encode(sha2::Sha256::digest(b"running tests\n"))
    );
    audit_verifies(&env);
}

#[test]
fn the_agents_key_and_listener_are_out_of_the_sandboxs_reach() {
    require_docker!();
    let env = Env::new();
    let s = unique("keytheft");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let key = std::fs::read_to_string(env.session_dir(&s).join("key")).unwrap();
    // The binary is execute-only, so the agent is non-dumpable from execve on: its fds,
    // memory and environment are closed to every other process of the same user.
    let probe = "cat /run/stockade-agent >/dev/null 2>&1 && echo READ-BINARY; \
        for p in $(pgrep -f '^/run/stockade-agent serve'); do \
          for f in fd/0 fd/3 environ mem maps; do \
            cat /proc/$p/$f >/dev/null 2>&1 && echo OPENED $f; done; \
          ls /proc/$p/fd >/dev/null 2>&1 && echo LISTED fd; done; echo probed";
    let (code, v) = env.exec_json(&["--session", &s], probe);
    assert_eq!((code, v["stdout"].as_str()), (0, Some("probed\n")), "{v}");
    // The race the old design lost: a thief keeps trying the agent's stdin while the agent is
    // killed to force a relaunch. Nothing of the sandbox outlives its command, so no thief is
    // there when the next agent starts; and nothing it could open would give it the key.
    let thief = "( while :; do for p in $(pgrep -f '^/run/stockade-agent serve'); do \
        cat /proc/$p/fd/0 >> /workspace/loot 2>/dev/null; done; done ) & \
        sleep 0.5; pkill -f 'stockade-agent serve'; sleep 2";
    let out = env.exec(&["--session", &s], thief);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let (code, v) = env.exec_json(
        &["--session", &s],
        "cat /workspace/loot 2>/dev/null; ps -eo user=,comm= > /tmp/ps.txt; grep -c '^sandbox *bash$' /tmp/ps.txt || true",
    );
    assert_eq!(code, 0, "{v}");
    let new_key = std::fs::read_to_string(env.session_dir(&s).join("key")).unwrap();
    assert_ne!(key, new_key, "the agent was relaunched with a fresh key");
    let seen = v["stdout"].as_str().unwrap();
    assert!(
        !seen.contains(key.trim()) && !seen.contains(new_key.trim()),
        "{seen}"
    );
    // One bash: this command's own.
    assert!(
        seen.ends_with("1\n"),
        "a thief survived its command: {seen}"
    );
    audit_verifies(&env);
}

#[test]
fn a_stopped_agent_cannot_hang_the_host() {
    require_docker!();
    let env = Env::new();
    let s = unique("tarpit");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    // The sandbox freezes its own agent mid-command: the host gives up within the command's
    // bounds, ends what runs from outside, and the next command gets a new agent.
    let out = output_within(
        env.cmd().args([
            "exec",
            "--json",
            "--session",
            &s,
            "--timeout",
            "2s",
            "--",
            "kill -STOP $(pgrep -f '^/run/stockade-agent serve'); sleep 60",
        ]),
        Duration::from_secs(60),
    );
    let v = json(&out);
    assert_eq!(out.status.code(), Some(125), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("stopped answering"),
        "{v}"
    );
    let out = output_within(
        env.cmd()
            .args(["exec", "--json", "--session", &s, "--", "echo next"]),
        Duration::from_secs(60),
    );
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["stdout"].as_str()),
        (Some(0), Some("next\n")),
        "{v}"
    );
    // SIGTERM during a wedged wait is honoured: stockade exits 128+15 once the command is
    // ended from outside.
    let mut child = env
        .cmd()
        .args([
            "exec",
            "--session",
            &s,
            "--",
            "kill -STOP $(pgrep -f '^/run/stockade-agent serve'); sleep 60",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < until,
            "SIGTERM was not honoured"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143));
}

#[test]
fn nothing_the_sandbox_writes_lands_on_a_host_disk() {
    require_docker!();
    let env = Env::new();
    env.write_config("allow_elevation = true\n");
    for (who, extra) in [("default", vec![]), ("elevated", vec!["--elevated"])] {
        let s = unique(who);
        let mut args = vec!["--session", s.as_str()];
        args.extend(extra.iter().copied());
        // No writable mount is a host filesystem (an elevated profile's writable root is the
        // container's own layer, removed with it); the profile's tmpfs mounts are sized,
        // nosuid and nodev; the agent's own mounts are read-only.
        let mounts = "awk '{ for (i = 7; $i != \"-\"; i++); print $5, $6, $(i+1), $(i+3) }' \
                      /proc/self/mountinfo";
        let (code, v) = env.exec_json(&args, mounts);
        assert_eq!(code, 0, "{v}");
        let pseudo = [
            "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "tmpfs",
        ];
        for line in v["stdout"].as_str().unwrap().lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (target, options, fstype, super_options) =
                (fields[0], fields[1], fields[2], fields[3]);
            let writable = options.split(',').any(|o| o == "rw");
            if writable && target != "/" {
                assert!(
                    pseudo.contains(&fstype),
                    "{who}: host filesystem writable: {line}"
                );
            }
            if target.starts_with("/run/stockade") {
                assert!(!writable, "{who}: the agent's mount is writable: {line}");
            }
            if ["/tmp", "/workspace", "/home/sandbox"].contains(&target) {
                assert!(super_options.contains("size="), "{who}: unsized {line}");
                assert!(
                    options.contains("nosuid") && options.contains("nodev"),
                    "{who}: {line}"
                );
            }
        }
        // The agent's directories are read-only; a setuid copy or a disk filler goes nowhere.
        let attack = "cp /bin/bash /run/stockade/sh 2>&1; mkdir /run/stockade/agent.sock 2>&1; \
            dd if=/dev/zero of=/run/stockade/fill bs=1M count=8 2>&1 | tail -1; \
            echo done";
        let (code, v) = env.exec_json(&args, attack);
        assert_eq!(code, 0, "{v}");
        let said = v["stdout"].as_str().unwrap();
        assert_eq!(
            said.matches("Read-only file system").count(),
            3,
            "{who}: {said}"
        );
        let run_dir = env.session_dir(&s).join("run");
        let left: Vec<_> = std::fs::read_dir(&run_dir).unwrap().collect();
        assert!(
            left.is_empty(),
            "{who}: the sandbox left {left:?} on the host"
        );
        let out = env.cmd().args(["session", "rm", &s]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            !env.session_dir(&s).exists(),
            "{who}: host directory survives rm"
        );
    }
}

/// A directory on the same filesystem as the engine's socket, for a hard link to it.
fn beside_the_engine_socket() -> tempfile::TempDir {
    let socket = std::fs::canonicalize("/var/run/docker.sock").unwrap();
    tempfile::Builder::new()
        .prefix("stockade-test-")
        .tempdir_in(socket.parent().unwrap())
        .unwrap()
}

#[test]
fn a_hard_linked_engine_socket_and_its_group_are_refused() {
    require_docker!();
    let env = Env::new();
    let dir = beside_the_engine_socket();
    let link = dir.path().join("data");
    std::fs::hard_link(
        std::fs::canonicalize("/var/run/docker.sock").unwrap(),
        &link,
    )
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    let docker_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid();
    let bind = |source: &Path| {
        format!(
            "binds = [{{ source = \"{}\", target = \"/data\", read_only = false }}]\n",
            source.display()
        )
    };
    for (name, user, source, says) in [
        (
            "hardlink",
            "65532:65532".to_string(),
            link.clone(),
            "runtime's socket",
        ),
        (
            "holder",
            "65532:65532".to_string(),
            dir.path().to_path_buf(),
            "holds a socket",
        ),
        (
            "group",
            format!("65532:{docker_gid}"),
            link.clone(),
            "group of the container runtime",
        ),
    ] {
        let binds = bind(&source);
        let p = env.write_variant(
            name,
            &[
                ("user = \"65532:65532\"", &format!("user = \"{user}\"")),
                ("[tmpfs]", &format!("{binds}[tmpfs]")),
            ],
            "",
        );
        let out = env.exec(&["--profile", &p], "echo reached");
        assert_eq!(out.status.code(), Some(125), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains(says), "{name}: {}", stderr(&out));
        assert!(!stdout(&out).contains("reached"));
    }
}

#[test]
fn an_allow_all_seccomp_file_is_refused_unless_unsafe_says_so() {
    require_docker!();
    let env = Env::new();
    let seccomp = env.dir.path().join("allow.json");
    std::fs::write(
        &seccomp,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#,
    )
    .unwrap();
    let swap = format!("seccomp = \"{}\"", seccomp.display());
    let current = super::common::default_profile_text()
        .lines()
        .find(|l| l.starts_with("seccomp ="))
        .unwrap()
        .to_string();
    let p = env.write_variant("allowall", &[(&current, &swap)], "");
    let out = env.exec(&["--profile", &p], "echo unconfined");
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("[unsafe] permissive_seccomp = true"),
        "{}",
        stderr(&out)
    );
    // The opt-out exists, is loud, and is on record.
    let p = env.write_variant(
        "allowall-unsafe",
        &[(&current, &swap)],
        "\n[unsafe]\npermissive_seccomp = true\n",
    );
    let (code, v) = env.exec_json(&["--profile", &p], "echo unconfined");
    assert_eq!(code, 0, "{v}");
    let start = env
        .audit_records()
        .into_iter()
        .rev()
        .find(|r| r["kind"] == "start")
        .unwrap();
    assert_eq!(
        start["unsafe"],
        serde_json::json!(["permissive_seccomp"]),
        "{start}"
    );
    let lint = env.cmd().args(["profile", "lint", &p]).output().unwrap();
    assert!(
        stdout(&lint).contains("unsafe-opt-out"),
        "{}",
        stdout(&lint)
    );
}

#[test]
fn a_non_elevated_profile_cannot_add_dangerous_capabilities() {
    require_docker!();
    let env = Env::new();
    for cap in ["SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE"] {
        let p = env.write_variant(
            &format!("cap-{cap}"),
            &[("add = []", &format!("add = [\"{cap}\"]"))],
            "",
        );
        let out = env.exec(
            &["--profile", &p],
            "unshare -Urm true && mount -t tmpfs x /mnt && echo escaped",
        );
        assert_eq!(out.status.code(), Some(125), "{cap}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&format!("CAP_{cap}")),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("[unsafe] dangerous_capabilities = true"),
            "{}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("escaped"));
    }
}

fn limits_are_credited_to_their_command(env: &Env, no_agent: bool) {
    let s = unique(if no_agent { "credit-exec" } else { "credit" });
    let run = |command: &str| {
        let mut cmd = env.cmd();
        if no_agent {
            cmd.env("STOCKADE_NO_AGENT", "1");
        }
        let out = output_within(
            cmd.args([
                "exec",
                "--json",
                "--session",
                &s,
                "--timeout",
                "20s",
                "--",
                command,
            ]),
            Duration::from_secs(120),
        );
        let v = json(&out);
        (out.status.code(), v)
    };
    // The classic bomb returns with status 0 and leaves the bomb running (the second lets it
    // reach the limit before the shell exits; ended sooner it would rightly not hit it).
    let (code, v) = run("f(){ f|f& }; f; sleep 1");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["pids_limit_hit"], true, "the bomb that exited 0: {v}");
    // Only this command's own shell is left of bash (counted without a pipeline: a forked
    // pipeline member is `bash` until it execs, and ps may see it so).
    let (code, v) =
        run("ps -eo user=,comm= > /tmp/ps.txt; grep -c '^sandbox *bash$' /tmp/ps.txt || true");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["pids_limit_hit"], false,
        "blamed on the next command: {v}"
    );
    assert_eq!(v["stdout"], "1\n", "the bomb outlived its command: {v}");
    // A memory bomb in a pipeline the shell shrugs off. The subshell makes itself the memory
    // killer's choice before it forks the pipeline: the agent raises the command's score only
    // once it has exec'd, and a pipeline forked before that write would keep the lower score
    // and leave the shell to be taken first.
    let (code, v) = run(
        "(echo 1000 > /proc/self/oom_score_adj; head -c 700m /dev/zero | tail) > /dev/null; true",
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["oom_killed"], true, "{v}");
    let (code, v) = run("false");
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["oom_killed"], false, "blamed on the next command: {v}");
    assert_eq!(v["pids_limit_hit"], false, "{v}");
}

#[test]
fn limits_are_credited_to_the_command_that_hit_them_via_the_agent() {
    require_docker!();
    limits_are_credited_to_their_command(&Env::new(), false);
}

#[test]
fn limits_are_credited_to_the_command_that_hit_them_via_exec() {
    require_docker!();
    limits_are_credited_to_their_command(&Env::new(), true);
}

#[test]
fn closing_stdio_does_not_dodge_the_timeout() {
    require_docker!();
    let env = Env::new();
    for no_agent in [false, true] {
        for session in [None, Some(unique("stdio"))] {
            let mut cmd = env.cmd();
            if no_agent {
                cmd.env("STOCKADE_NO_AGENT", "1");
            }
            cmd.args(["exec", "--json", "--timeout", "3s"]);
            if let Some(s) = &session {
                cmd.args(["--session", s]);
            }
            cmd.args(["--", "exec >&- 2>&-; sleep 100"]);
            let out = output_within(&mut cmd, Duration::from_secs(40));
            let v = json(&out);
            assert_eq!(out.status.code(), Some(124), "agent={}: {v}", !no_agent);
            assert_eq!(v["timed_out"], true, "{v}");
            let finish = env.audit_records().pop().unwrap();
            assert_eq!(finish["outcome"], "timed_out", "{finish}");
        }
    }
}

#[test]
fn prune_removes_only_what_its_state_directory_owns_and_no_longer_runs() {
    require_docker!();
    let owner = Env::new();
    let other = Env::new();
    // The owner runs in a pid namespace of its own (as a stockade inside a container does):
    // its pid means nothing here.
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(super::common::BIN)
        .args(["exec", "--timeout", "60s", "--", "echo up; sleep 59"])
        .env("STOCKADE_STATE_DIR", owner.state_dir())
        .env("XDG_CONFIG_HOME", owner.config_home())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare (util-linux; the test runs as root, as CI does)");
    let container = loop {
        let found = super::common::containers_with_label("org.stockade.kind=oneshot")
            .into_iter()
            .find(|name| {
                let id = name.trim_start_matches("stockade-x-");
                owner
                    .audit_records()
                    .iter()
                    .any(|r| r["kind"] == "start" && r["id"] == id)
            });
        if let Some(name) = found {
            let top = Command::new("docker")
                .args(["top", &name])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&top.stdout).contains("sleep 59") {
                break name;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the owner ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    let exists = |name: &str| {
        !Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^{name}$")])
            .output()
            .unwrap()
            .stdout
            .is_empty()
    };
    // Another state directory never touches it; its own state directory sees it in flight.
    for env in [&other, &owner] {
        let out = env
            .cmd()
            .args(["session", "prune", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            exists(&container),
            "prune removed a running command's container"
        );
    }
    // Once its owner is gone (kill -9: no chance to clean up), it is an orphan.
    child.kill().unwrap();
    child.wait().unwrap();
    let out = owner
        .cmd()
        .args(["session", "prune", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["orphans"].to_string().contains(&container),
        "{report}"
    );
    assert!(!exists(&container));
}

#[test]
fn the_check_cannot_be_skipped_from_the_command_line() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["exec", "--unsafe-skip-check", "--", "true"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_host_account_uid_is_warned_about() {
    require_docker!();
    let env = Env::new();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let uid = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok())
        .find(|&uid| uid != 0)
        .unwrap();
    let p = env.write_variant(
        "hostuid",
        &[("user = \"65532:65532\"", &format!("user = \"{uid}:65532\""))],
        "",
    );
    let out = env.exec(&["--profile", &p], "id -u");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is the host account"),
        "{}",
        stderr(&out)
    );
    let show = env.cmd().args(["profile", "show", &p]).output().unwrap();
    assert!(stdout(&show).contains("host account"), "{}", stdout(&show));
}

#[test]
fn the_audit_view_shows_reordering_and_control_characters_escaped() {
    require_docker!();
    let env = Env::new();
    // "Trojan Source": the line reads differently from what it holds.
    let trojan = "echo ok #\u{202e} }\u{2066}safe\u{2069}{ \x1b]52;c;aGk=\x07";
    let out = env.exec(&[], trojan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tail = env
        .cmd()
        .args(["audit", "tail", "-n", "1"])
        .output()
        .unwrap();
    let shown = stdout(&tail);
    assert!(
        shown.contains("<U+202E>") && shown.contains("<U+2066>"),
        "{shown}"
    );
    assert!(shown.contains("^[]52"), "{shown}");
    for raw in ['\u{202e}', '\u{2066}', '\u{2069}', '\x1b', '\x07'] {
        assert!(!shown.contains(raw), "{raw:?} shown raw: {shown}");
    }
    let json = env
        .cmd()
        .args(["audit", "tail", "--json", "-n", "2"])
        .output()
        .unwrap();
    let raw = stdout(&json);
    assert!(
        !raw.contains('\u{202e}') && raw.contains("\\u202e"),
        "{raw}"
    );
    // Escaped, not changed: the record still holds exactly the command.
    let start: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(start["command"], trojan);
}

/// Runs `stockade exec -- command` with its stdout and stderr on a new pseudo-terminal and
/// returns what the terminal received.
fn exec_on_a_terminal(env: &Env, command: &str) -> Vec<u8> {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the other pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: openpty returned two new descriptors that we own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = env
        .cmd()
        .args(["exec", "--", command])
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut master = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The slave side is closed: reading ends with EIO once the buffer is empty.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

#[test]
fn on_a_terminal_the_sandboxs_escape_sequences_are_shown_not_obeyed() {
    require_docker!();
    let env = Env::new();
    let hostile = r"printf 'hi\033]52;c;aGk=\007\033[2J\033]0;pwned\007\302\233\n'";
    let seen = exec_on_a_terminal(&env, hostile);
    let text = String::from_utf8_lossy(&seen);
    assert!(
        !seen.contains(&0x1b),
        "raw ESC reached the terminal: {text:?}"
    );
    assert!(text.contains("^[]52;c;aGk=^G^[[2J"), "{text:?}");
    assert!(text.contains("<U+009B>"), "{text:?}");
    // Piped, the bytes are the command's own.
    let out = env.exec(&[], hostile);
    assert!(
        out.stdout.windows(5).any(|w| w == b"\x1b]52;"),
        "{:?}",
        out.stdout
    );
}

/// The red-team attacks: `survivor` detaches, ignores what it can, kills the running agent
/// once, then lets its main thread exit while a worker thread lives on (a zombie leader with a
/// live thread group) and writes into the stdout of every later command's shell;
/// `prlimit PID RES VALUE` lowers another process's limit; `shm MB` leaves System V shared
/// memory behind.
const TRICKS_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned char seen[1 << 22];
static int me;

static int cmdline(int p, char *buf, int size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", p);
    int f = open(path, O_RDONLY);
    if (f < 0) return -1;
    int n = read(f, buf, size - 1);
    close(f);
    if (n <= 0) return -1;
    buf[n] = 0;
    return n;
}

static void *worker(void *unused) {
    int killed = 0;
    char cmd[256], path[64];
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int p = atoi(e->d_name);
            if (p <= 1 || p == me || p >= (1 << 22) || seen[p]) continue;
            int n = cmdline(p, cmd, sizeof cmd);
            if (n < 0) continue;
            char *arg1 = cmd + strlen(cmd) + 1;
            if (arg1 >= cmd + n) arg1 = "";
            if (!strcmp(cmd, "/run/stockade-agent") && !strcmp(arg1, "serve") && !killed) {
                killed = 1;
                seen[p] = 1;
                kill(p, SIGKILL);
            } else if (!strcmp(cmd, "bash")) {
                seen[p] = 1;
                snprintf(path, sizeof path, "/proc/%d/fd/1", p);
                int o = open(path, O_WRONLY);
                if (o >= 0) { dprintf(o, "INJECTED\n"); close(o); }
            }
        }
        if (d) closedir(d);
        usleep(200);
    }
    return unused;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "survivor")) {
        if (fork()) return 0;
        setsid();
        if (fork()) _exit(0);
        for (int s = 1; s < 32; s++)
            if (s != SIGKILL && s != SIGSTOP && s != SIGCHLD) signal(s, SIG_IGN);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0); dup2(null, 1); dup2(null, 2);
        me = getpid();
        pthread_t t;
        pthread_create(&t, 0, worker, 0);
        syscall(SYS_exit, 0);
    }
    if (argc > 4 && !strcmp(argv[1], "prlimit")) {
        struct rlimit r = { strtoull(argv[4], 0, 0), strtoull(argv[4], 0, 0) };
        if (prlimit(atoi(argv[2]), atoi(argv[3]), &r, 0)) { perror("prlimit"); return 1; }
        printf("LOWERED\n");
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "shm")) {
        long mb = atol(argv[2]), done = 0;
        while (done < mb) {
            int id = shmget(IPC_PRIVATE, 4 << 20, IPC_CREAT | 0600);
            if (id < 0) { perror("shmget"); break; }
            char *p = shmat(id, 0, 0);
            if (p == (void *)-1) { perror("shmat"); break; }
            memset(p, 1, 4 << 20);
            shmdt(p);
            done += 4;
        }
        printf("held %ld MB\n", done);
        return 0;
    }
    return 2;
}
"#;

fn tricks_base64() -> &'static str {
    static B64: OnceLock<String> = OnceLock::new();
    B64.get_or_init(|| compiled_base64(TRICKS_C))
}

fn plant_tricks(env: &Env, session: &str) {
    let (code, v) = env.exec_json(
        &["--session", session],
        &format!(
            "echo {} | base64 -d > /workspace/t && chmod +x /workspace/t",
            tricks_base64()
        ),
    );
    assert_eq!(code, 0, "{v}");
}

fn session_json(
    env: &Env,
    session: &str,
    extra: &[&str],
    command: &str,
) -> (Option<i32>, serde_json::Value) {
    let out = output_within(
        env.cmd()
            .args(["exec", "--json", "--session", session])
            .args(extra)
            .args(["--", command]),
        Duration::from_secs(90),
    );
    let v = json(&out);
    (out.status.code(), v)
}

#[test]
fn a_zombie_leader_with_a_live_thread_does_not_outlive_its_command() {
    require_docker!();
    let env = Env::new();
    let s = unique("survivor");
    plant_tricks(&env, &s);
    let (code, v) = session_json(&env, &s, &[], "/workspace/t survivor; sleep 2");
    // Killing the agent mid-command is an error; what matters is what comes after.
    assert!(code == Some(125) || code == Some(0), "{v}");
    for i in 0..3 {
        let (code, v) = session_json(&env, &s, &[], &format!("echo later {i}"));
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(
            v["stdout"],
            format!("later {i}\n"),
            "injected into a later command: {v}"
        );
    }
    let (_, v) = session_json(
        &env,
        &s,
        &[],
        "ps -eo user=,comm= | grep -c '^sandbox *t$' || true",
    );
    assert_eq!(v["stdout"], "0\n", "the survivor lives on: {v}");
}

#[test]
fn a_lowered_limit_on_the_agent_does_not_hide_limits_or_break_the_session() {
    require_docker!();
    let env = Env::new();
    let s = unique("prlimit");
    plant_tricks(&env, &s);
    // RLIMIT_NOFILE is 7. The default seccomp profile lets a process change only its own
    // limits; the agent also refuses to serve with lowered ones, whatever the profile.
    let lower = "/workspace/t prlimit $(pgrep -f '^/run/stockade-agent serve') 7 6; \
                 f(){ f|f& }; f; sleep 1";
    let (code, v) = session_json(&env, &s, &["--timeout", "20s"], lower);
    assert_eq!(code, Some(0), "{v}");
    assert!(
        !v["stdout"].as_str().unwrap().contains("LOWERED"),
        "prlimit on the agent worked: {v}"
    );
    assert_eq!(v["pids_limit_hit"], true, "the bomb was hidden: {v}");
    let (code, v) = session_json(&env, &s, &[], "echo still");
    assert_eq!(
        (code, v["stdout"].as_str()),
        (Some(0), Some("still\n")),
        "{v}"
    );
    // Under a profile that allows prlimit on others (Docker's own seccomp profile), the agent
    // notices and is replaced: the next command still runs.
    let docker = format!(
        "seccomp = \"{}/profiles/seccomp/docker-default.json\"",
        env!("CARGO_MANIFEST_DIR")
    );
    let current = super::common::default_profile_text()
        .lines()
        .find(|l| l.starts_with("seccomp ="))
        .unwrap()
        .to_string();
    let p = env.write_variant("dockerseccomp", &[(&current, &docker)], "");
    let s2 = unique("prlimit-docker");
    let plant = format!(
        "echo {} | base64 -d > /workspace/t && chmod +x /workspace/t",
        tricks_base64()
    );
    let (code, v) = session_json(&env, &s2, &["--profile", &p], &plant);
    assert_eq!(code, Some(0), "{v}");
    let (_, v) = session_json(
        &env,
        &s2,
        &["--profile", &p],
        "/workspace/t prlimit $(pgrep -f '^/run/stockade-agent serve') 7 6",
    );
    assert!(v["stdout"].as_str().unwrap().contains("LOWERED"), "{v}");
    let (code, v) = session_json(&env, &s2, &["--profile", &p], "echo fresh agent");
    assert_eq!(
        (code, v["stdout"].as_str()),
        (Some(0), Some("fresh agent\n")),
        "{v}"
    );
}

#[test]
fn a_stopped_agent_does_not_turn_an_overrun_into_a_completion() {
    require_docker!();
    let env = Env::new();
    let s = unique("overrun");
    let (code, _) = session_json(&env, &s, &[], "true");
    assert_eq!(code, Some(0));
    let trick = "A=$(pgrep -f '^/run/stockade-agent serve'); kill -STOP $A; \
                 (sleep 5; kill -CONT $A) & sleep 4; echo ran; exit 0";
    let (code, v) = session_json(&env, &s, &["--timeout", "2s"], trick);
    assert_ne!(v["outcome"].as_str().or(Some("")), Some("completed"));
    assert_ne!(
        code,
        Some(0),
        "a 4 s command under a 2 s timeout recorded as done: {v}"
    );
    let finish = env.audit_records().pop().unwrap();
    assert_ne!(finish["outcome"], "completed", "{finish}");
}

#[test]
fn shared_memory_a_command_leaves_is_removed_with_it() {
    require_docker!();
    let env = Env::new();
    let s = unique("shm");
    plant_tricks(&env, &s);
    let (code, v) = session_json(&env, &s, &[], "/workspace/t shm 400");
    assert_eq!(code, Some(0), "{v}");
    assert!(v["ipc_removed"].as_u64().unwrap() > 0, "{v}");
    // The memory is free again: a harmless 100 MB string in the next command is not killed.
    let (code, v) = session_json(
        &env,
        &s,
        &[],
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}",
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["oom_killed"], false, "{v}");
    let (_, v) = session_json(&env, &s, &[], "grep -c . /proc/sysvipc/shm");
    assert_eq!(v["stdout"], "1\n", "only the header line: {v}");
}

#[test]
fn a_oneshots_agent_is_pid_1_and_out_of_its_commands_reach() {
    require_docker!();
    let env = Env::new();
    // The kernel delivers no signal to a namespace's init from inside it unless the init
    // handles it: neither KILL nor STOP reaches the agent, and the command's result stands.
    let (code, v) = env.exec_json(
        &[],
        "ps -o user=,args= -p 1; kill -KILL 1; kill -STOP 1; kill -TERM 1; sleep 0.2; echo still",
    );
    assert_eq!(code, 0, "{v}");
    let out = v["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("sandbox  /run/stockade-agent serve"),
        "{out}"
    );
    assert!(out.ends_with("still\n"), "{out}");
    assert_eq!(v["runner"], "agent", "{v}");
    assert!(v["stdout_sha256"].is_string(), "{v}");
}
