//! The sandbox's properties, one table of cases run on every backend: `docker::*` through the
//! engine, `native::*` with `DOCKER_HOST` pointing nowhere (so `auto` takes the native backend
//! and no engine is involved, as on a machine without one). Each case uses its own state
//! directory and session names and leaves nothing running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, output_with_stdin, stderr, stdout, unique, Env};
use super::faults::{leftovers, limited_profile, session_processes, wait_for_start, HOSTILE_TREE};

/// A hang guard, never a speed claim.
const HANG: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Docker,
    Native,
}

impl Target {
    fn env(self) -> Env {
        match self {
            Target::Docker => Env::new(),
            Target::Native => Env::native(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Docker => "docker",
            Target::Native => "native",
        }
    }

    /// Whether the sandbox `name` still exists anywhere on the host: a container, or a native
    /// sandbox's cgroup.
    fn sandbox_exists(self, name: &str) -> bool {
        match self {
            Target::Docker => {
                let out = Command::new("docker")
                    .args(["ps", "-aq", "--filter", &format!("name=^{name}$")])
                    .output()
                    .unwrap();
                !out.stdout.is_empty()
            }
            Target::Native => native_cgroups(name).iter().any(|d| d.exists()),
        }
    }
}

/// Where a native sandbox's cgroup would be, on a v1 or a v2 host.
fn native_cgroups(name: &str) -> Vec<std::path::PathBuf> {
    [
        "pids/stockade",
        "memory/stockade",
        "stockade",
        "unified/stockade",
    ]
    .iter()
    .map(|base| std::path::Path::new("/sys/fs/cgroup").join(base).join(name))
    .collect()
}

/// Runs `script` with bash in a one-shot sandbox (fed on stdin, so that the check stage judges
/// only `bash -s`: these probes name what the rules rightly deny in commands).
fn probe(env: &Env, extra: &[&str], script: &str) -> (i32, String, String) {
    let mut cmd = env.cmd();
    cmd.args(["exec", "--stdin"])
        .args(extra)
        .args(["--", "bash", "-s"]);
    let out = output_with_stdin(&mut cmd, script.as_bytes());
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

/// Generates one test per case and backend: `sandbox::docker::CASE` and `sandbox::native::CASE`.
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod docker {
            $(
                #[test]
                fn $case() {
                    crate::require_docker!();
                    super::$case(super::Target::Docker);
                }
            )*
        }
        mod native {
            $(
                #[test]
                fn $case() {
                    if !crate::suite::common::native_available() {
                        return;
                    }
                    super::$case(super::Target::Native);
                }
            )*
        }
    };
}

on_every_backend!(
    non_root_without_caps_network_or_writable_root,
    the_backend_is_in_the_result_and_every_audit_record,
    masked_and_read_only_paths_are_dockers,
    only_the_usual_device_nodes,
    limits_are_the_profiles,
    namespaces_mounts_and_ptrace_are_refused,
    a_timeout_leaves_nothing_running_in_a_session,
    a_oneshot_timeout_leaves_no_sandbox,
    a_fork_bomb_hits_the_pids_limit_and_spares_other_sessions,
    a_memory_bomb_is_oom_killed,
    a_disk_filler_stops_at_the_tmpfs_size,
    a_session_keeps_its_workspace_and_rm_removes_it,
    stdin_and_files_reach_the_sandbox_byte_exact,
    elevated_is_root_with_a_writable_root,
    sigterm_ends_the_command_and_removes_the_sandbox,
    kill_9_leaves_an_orphan_that_the_next_invocation_removes,
    live_escape_attempts_are_contained,
);

fn non_root_without_caps_network_or_writable_root(t: Target) {
    let env = t.env();
    let out = env.exec(
        &[],
        "id -u; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
         touch /rootfs-probe 2>/dev/null && echo root-writable || echo root-read-only; \
         touch /tmp/ok && echo tmp-writable; grep -c '^NoNewPrivs:.1' /proc/self/status; \
         grep -E '^Seccomp:' /proc/self/status",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text} {}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "65532", "{text}");
    for cap_line in &lines[1..6] {
        assert!(
            cap_line.ends_with("0000000000000000"),
            "capability set not empty: {cap_line}"
        );
    }
    assert_eq!(lines[6], "lo", "only the loopback interface: {text}");
    assert_eq!(lines[7], "root-read-only");
    assert_eq!(lines[8], "tmp-writable");
    assert_eq!(lines[9], "1", "no-new-privileges: {text}");
    assert_eq!(lines[10], "Seccomp:\t2", "a seccomp filter: {text}");
    // Loopback works and nothing else is reachable.
    let (code, out, err) = probe(
        &env,
        &[],
        "exec 3<>/dev/tcp/127.0.0.1/9 2>/dev/null; echo lo=$?; \
         timeout 2 bash -c 'exec 3<>/dev/tcp/10.0.0.1/80' 2>/dev/null; echo out=$?",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lo=1"), "loopback answers (refused): {out}");
    assert!(!out.contains("out=0"), "no route out: {out}");
}

fn the_backend_is_in_the_result_and_every_audit_record(t: Target) {
    let env = t.env();
    let (code, v) = env.exec_json(&[], "echo hi");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backend"], t.name());
    assert_eq!(v["runner"], "agent");
    assert!(v["stdout_sha256"].is_string(), "the agent vouches: {v}");
    let records = env.audit_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["backend"], t.name());
    let verify = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
}

fn masked_and_read_only_paths_are_dockers(t: Target) {
    let env = t.env();
    // What the mount table says (reading the files is what the rules deny).
    let (code, out, err) = probe(
        &env,
        &[],
        "for p in /proc/kcore /proc/keys /proc/timer_list /sys/firmware \
                  /proc/sys /proc/bus /proc/fs /proc/irq /proc/sysrq-trigger; do
           [ -e $p ] || { echo \"$p absent\"; continue; }
           o=$(awk -v p=$p '$5==p {o=$6} END {print o}' /proc/self/mountinfo)
           echo \"$p ${o:-unmounted} $(stat -c %s $p 2>/dev/null)\"
         done
         ls -A /sys/firmware | wc -l",
    );
    assert_eq!(code, 0, "{err}");
    let line = |p: &str| {
        out.lines()
            .find(|l| l.split(' ').next() == Some(p))
            .unwrap_or_else(|| panic!("{p}: {out}"))
            .to_string()
    };
    for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        let l = line(p);
        assert!(!l.contains("unmounted"), "masked: {l}");
        if !l.ends_with("absent") {
            // /dev/null over it: nothing to read.
            assert!(l.ends_with(" 0"), "{l}");
        }
    }
    assert!(line("/sys/firmware").contains(" ro"), "{out}");
    for p in [
        "/proc/sys",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sysrq-trigger",
    ] {
        let l = line(p);
        if !l.ends_with("absent") {
            assert!(
                l.split(' ').nth(1).unwrap().starts_with("ro"),
                "read-only: {l}"
            );
        }
    }
    assert_eq!(
        out.lines().last(),
        Some("0"),
        "/sys/firmware is empty: {out}"
    );
    // A write through /proc/sys fails however it is tried.
    let (_, out, _) = probe(
        &env,
        &[],
        "echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo wrote || echo refused",
    );
    assert_eq!(out, "refused\n");
}

fn only_the_usual_device_nodes(t: Target) {
    let env = t.env();
    let (code, v) = env.exec_json(
        &[],
        "find /dev -maxdepth 1 -type c | sort | tr '\\n' ' '; echo; \
         readlink /dev/fd /dev/stdin /dev/ptmx | tr '\\n' ' '",
    );
    assert_eq!(code, 0, "{v}");
    let text = v["stdout"].as_str().unwrap();
    let nodes = text.lines().next().unwrap().trim();
    assert_eq!(
        nodes,
        "/dev/full /dev/null /dev/random /dev/tty /dev/urandom /dev/zero"
    );
    assert_eq!(
        text.lines().nth(1).unwrap().trim(),
        "/proc/self/fd /proc/self/fd/0 pts/ptmx"
    );
}

fn limits_are_the_profiles(t: Target) {
    let env = t.env();
    // The sandbox's own cgroup, read-only: v1 has a directory per controller, v2 one.
    let (code, v) = env.exec_json(
        &[],
        "cd /sys/fs/cgroup; \
         cat pids/pids.max pids.max 2>/dev/null; \
         cat memory/memory.limit_in_bytes memory.max 2>/dev/null; \
         cat cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 cpu.max; \
         touch pids.max 2>/dev/null || echo cgroup-read-only; ulimit -c",
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["stdout"], "256\n536870912\n100000\ncgroup-read-only\n0\n",
        "{v}"
    );
}

fn namespaces_mounts_and_ptrace_are_refused(t: Target) {
    let env = t.env();
    let (code, out, err) = probe(
        &env,
        &[],
        "unshare -U true 2>/dev/null; echo userns=$?
         unshare -m true 2>/dev/null; echo mountns=$?
         unshare -n true 2>/dev/null; echo netns=$?
         mount -t tmpfs none /tmp 2>/dev/null; echo mount=$?
         strace -o /dev/null true 2>/dev/null; echo ptrace=$?
         chroot / true 2>/dev/null; echo chroot=$?",
    );
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        assert!(!line.ends_with("=0"), "allowed: {line} (all: {out})");
    }
    assert_eq!(out.lines().count(), 6, "{out}");
}

fn a_timeout_leaves_nothing_running_in_a_session(t: Target) {
    let env = t.env();
    let s = unique("to");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let mut cmd = env.cmd();
    cmd.args(["exec", "--json", "--session", &s, "--timeout", "1s", "--"])
        .arg(HOSTILE_TREE);
    let out = common::output_within(&mut cmd, HANG);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(124), "{v}");
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stdout"], "started\n");
    let ps = session_processes(&env, &s);
    assert!(leftovers(&ps).is_empty(), "left running:\n{ps}");
    let out = env.exec(
        &["--session", &s],
        "echo ok > /workspace/f; cat /workspace/f",
    );
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
}

fn a_oneshot_timeout_leaves_no_sandbox(t: Target) {
    let env = t.env();
    // Sleeps of lengths no other test uses (the faults tests and the other backend's run of
    // this one use HOSTILE_TREE's own, at the same time), so `ps` below sees only this run's.
    let marker = match t {
        Target::Docker => "sleep 7",
        Target::Native => "sleep 6",
    };
    let tree = HOSTILE_TREE.replace("sleep 9", marker);
    let (code, v) = env.exec_json(&["--timeout", "1s"], &tree);
    assert_eq!(code, 124, "{v}");
    let name = v["sandbox"].as_str().unwrap();
    assert!(!t.sandbox_exists(name), "{name} left behind");
    // And no process of the sandbox user is left on the host.
    let host = Command::new("ps")
        .args(["-u", "65532", "-o", "args="])
        .output()
        .unwrap();
    let left: Vec<String> = stdout(&host)
        .lines()
        .filter(|l| l.contains(marker))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "on the host: {left:?}");
}

fn a_fork_bomb_hits_the_pids_limit_and_spares_other_sessions(t: Target) {
    let env = t.env();
    let (bomb, bystander) = (unique("bomb"), unique("bystander"));
    for s in [&bomb, &bystander] {
        assert_eq!(env.exec(&["--session", s], "true").status.code(), Some(0));
    }
    let mut child = env
        .cmd()
        .args([
            "exec",
            "--json",
            "--session",
            &bomb,
            "--timeout",
            "3s",
            "--",
        ])
        .arg("b() { b | b & }; b; sleep 30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_start(&env, "b() { b | b & }");
    let (code, v) = env.exec_json(&["--session", &bystander], "echo fine");
    assert_eq!((code, v["stdout"].as_str()), (0, Some("fine\n")), "{v}");
    let out = common::wait_output(&mut child);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(124), "{v}");
    assert_eq!(v["pids_limit_hit"], true, "{v}");
    let ps = session_processes(&env, &bomb);
    assert!(leftovers(&ps).is_empty(), "left running:\n{ps}");
}

fn a_memory_bomb_is_oom_killed(t: Target) {
    let env = t.env();
    let p = limited_profile(&env, "smallmem", &[("memory", "\"64m\"")]);
    let s = unique("oom");
    // The command, not the agent that reports it, is the memory killer's first choice. The
    // agent raises the score once the command has exec'd; the pause leaves it that moment.
    let (code, v) = env.exec_json(&["--profile", &p], "sleep 0.5; cat /proc/$$/oom_score_adj");
    assert_eq!((code, v["stdout"].as_str()), (0, Some("1000\n")), "{v}");
    for session in [None, Some(s.as_str())] {
        let mut args = vec!["--profile", p.as_str()];
        if let Some(s) = session {
            args.extend(["--session", s]);
        }
        let (code, v) = env.exec_json(&args, "x=$(head -c 200000000 /dev/zero | tr '\\0' a)");
        assert_eq!(code, 137, "{v}");
        assert_eq!(v["oom_killed"], true, "{v}");
    }
    // A later command that exits 137 by itself is not an OOM kill.
    let (code, v) = env.exec_json(&["--profile", &p, "--session", &s], "exit 137");
    assert_eq!(code, 137);
    assert_eq!(v["oom_killed"], false, "{v}");
}

fn a_disk_filler_stops_at_the_tmpfs_size(t: Target) {
    let env = t.env();
    let (code, v) = env.exec_json(
        &[],
        "head -c 200m /dev/zero > /tmp/fill; echo rc=$?; stat -c %s /tmp/fill",
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "rc=1\n67108864\n");
}

fn a_session_keeps_its_workspace_and_rm_removes_it(t: Target) {
    let env = t.env();
    let s = unique("reuse");
    let (code, first) = env.exec_json(&["--session", &s], "echo remembered > /workspace/note");
    assert_eq!(code, 0, "{first}");
    let (code, second) = env.exec_json(&["--session", &s], "cat /workspace/note");
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["stdout"], "remembered\n");
    assert_eq!(first["sandbox"], second["sandbox"]);
    let ls = env
        .cmd()
        .args(["session", "ls", "--json"])
        .output()
        .unwrap();
    let sessions: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let row = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["session"] == s.as_str())
        .unwrap_or_else(|| panic!("{sessions}"));
    assert_eq!(row["state"], "running");
    let rm = env.cmd().args(["session", "rm", &s]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    let name = first["sandbox"].as_str().unwrap();
    assert!(!t.sandbox_exists(name), "{name} left behind");
    // Gone: the next command gets a fresh sandbox.
    let (_, again) = env.exec_json(&["--session", &s], "cat /workspace/note 2>&1; true");
    assert!(
        again["stdout"].as_str().unwrap().contains("No such file"),
        "{again}"
    );
}

fn stdin_and_files_reach_the_sandbox_byte_exact(t: Target) {
    let env = t.env();
    let mut cmd = env.cmd();
    cmd.args(["exec", "--stdin", "--", "sha256sum"]);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = output_with_stdin(&mut cmd, &data);
    use sha2::Digest;
    let want = hex::encode(sha2::Sha256::digest(&data));
    assert!(stdout(&out).starts_with(&want), "{}", stdout(&out));
    let s = unique("files");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let host = env.dir.path().join("in.bin");
    std::fs::write(&host, &data).unwrap();
    let cp = env
        .cmd()
        .args([
            "cp",
            host.to_str().unwrap(),
            &format!("{s}:/workspace/in.bin"),
        ])
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", stderr(&cp));
    let back = env.dir.path().join("back.bin");
    let cp = env
        .cmd()
        .args([
            "cp",
            &format!("{s}:/workspace/in.bin"),
            back.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", stderr(&cp));
    assert_eq!(std::fs::read(back).unwrap(), data);
}

fn elevated_is_root_with_a_writable_root(t: Target) {
    let env = t.env();
    env.write_config("allow_elevation = true\n");
    let (code, v) = env.exec_json(
        &["--elevated"],
        "id -u; touch /opt-probe && echo writable; grep -E '^CapEff' /proc/self/status",
    );
    assert_eq!(code, 0, "{v}");
    // CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID.
    assert_eq!(
        v["stdout"], "0\nwritable\nCapEff:\t00000000000000db\n",
        "{v}"
    );
    assert_eq!(v["elevated"], true);
}

fn sigterm_ends_the_command_and_removes_the_sandbox(t: Target) {
    let env = t.env();
    let marker = "sleep 613";
    let child = env.cmd().args(["exec", "--", marker]).spawn().unwrap();
    let id = wait_for_start(&env, marker);
    let sandbox = format!("stockade-x-{id}");
    let until = Instant::now() + HANG;
    while !t.sandbox_exists(&sandbox) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(!t.sandbox_exists(&sandbox), "{sandbox} left behind");
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["id"], id.as_str());
    assert_eq!(finish["outcome"], "interrupted");
}

fn kill_9_leaves_an_orphan_that_the_next_invocation_removes(t: Target) {
    let env = t.env();
    let mut child = env.cmd().args(["exec", "--", "sleep 681"]).spawn().unwrap();
    let id = wait_for_start(&env, "sleep 681");
    let sandbox = format!("stockade-x-{id}");
    let until = Instant::now() + HANG;
    while !t.sandbox_exists(&sandbox) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(t.sandbox_exists(&sandbox), "nobody removed it yet");
    let out = env.exec(&[], "true");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let until = Instant::now() + Duration::from_secs(60);
    while t.sandbox_exists(&sandbox) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!t.sandbox_exists(&sandbox), "orphan {sandbox} not removed");
}

fn live_escape_attempts_are_contained(t: Target) {
    let env = t.env();
    let out = env
        .cmd()
        .args(["corpus", "run", "--live", "--per-category", "2", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["contained"], true, "{report:#}");
    assert_eq!(report["changes"].as_array().unwrap().len(), 0);
    assert_eq!(report["containers_left"].as_array().unwrap().len(), 0);
    for a in report["attempts"].as_array().unwrap() {
        assert!(a["error"].is_null(), "not run: {a}");
    }
}

// ---- what only one backend has ------------------------------------------------------------

/// The README's command, with no engine reachable: the same sandbox properties.
#[test]
fn the_readme_command_runs_natively_with_no_engine() {
    if !common::native_available() {
        return;
    }
    let env = Env::native();
    let out = env.exec(
        &[],
        "id; grep Cap /proc/self/status; cat /proc/net/dev; touch /x || echo read-only root",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text} {}", stderr(&out));
    assert!(
        text.starts_with("uid=65532(sandbox) gid=65532(sandbox)"),
        "{text}"
    );
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("lo:"), "{text}");
    assert!(!text.contains("eth0"), "{text}");
    assert!(text.ends_with("read-only root\n"), "{text}");
}

#[test]
fn a_profile_option_native_cannot_honour_is_an_error_naming_it() {
    if !common::native_available() {
        return;
    }
    let env = Env::native();
    let p = env.write_variant(
        "bridged",
        &[("network = \"none\"", "network = \"bridge\"")],
        "",
    );
    let out = env.exec(&["--profile", &p], "true");
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`network`") && err.contains("--backend docker"),
        "{err}"
    );
    // `profile show` says so before anything runs into it.
    let show = env.cmd().args(["profile", "show", &p]).output().unwrap();
    let text = stdout(&show);
    assert!(text.contains("backend         native"), "{text}");
    assert!(
        text.contains("REFUSED") && text.contains("`network`"),
        "{text}"
    );
}

#[test]
fn no_agent_is_a_docker_option_and_native_says_so() {
    let env = Env::native();
    let out = env
        .cmd()
        .env("STOCKADE_NO_AGENT", "1")
        .args(["exec", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("STOCKADE_NO_AGENT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn auto_takes_docker_when_an_engine_answers() {
    crate::require_docker!();
    let env = Env::new();
    let (code, v) = {
        let mut cmd = env.cmd();
        cmd.env_remove("STOCKADE_BACKEND")
            .args(["exec", "--json", "--", "true"]);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        )
    };
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["backend"], "docker");
    // The configuration can name the backend; the flag wins over it.
    env.write_config("backend = \"native\"\n");
    let out = env
        .cmd()
        .env_remove("STOCKADE_BACKEND")
        .args(["--backend", "docker", "profile", "show", "default"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("backend         docker"),
        "{}",
        stdout(&out)
    );
    let out = env
        .cmd()
        .env_remove("STOCKADE_BACKEND")
        .args(["profile", "show", "default"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("backend         native"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn native_session_prune_removes_idle_sessions_and_orphans() {
    if !common::native_available() {
        return;
    }
    let env = Env::native();
    let s = unique("idle");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let out = env
        .cmd()
        .args(["session", "prune", "--idle", "0s", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == s.as_str()),
        "{report}"
    );
    let ls = env
        .cmd()
        .args(["session", "ls", "--json"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ls).trim(), "[]");
}

/// `profile record --verify` on the native backend: the recorded profile runs its workload
/// under stockade's own filter and refuses `unshare` and `mount`.
#[test]
fn profile_record_works_natively() {
    if !common::native_available() {
        return;
    }
    let env = Env::native();
    let profile = env.dir.path().join("recorded.json");
    let out = env
        .cmd()
        .args(["profile", "record", "-o"])
        .arg(&profile)
        .args(["--verify", "--", "ls -la / && cat /etc/os-release"])
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("workload ok"), "{report}");
    assert!(report.contains("unshare  ok    denied (EPERM)"), "{report}");
    assert!(report.contains("mount    ok    denied (EPERM)"), "{report}");
    assert!(report.contains("verify passed"), "{report}");
    assert!(profile.exists());
    let ls = env
        .cmd()
        .args(["session", "ls", "--json"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ls).trim(), "[]", "the recording session is removed");
}
