//! The command contract, end to end with the real binary and engine: argv and shell forms,
//! exit codes that never collide, one JSON result for every outcome, stdin, files in and out of
//! sessions, tools in the image, and sessions that say what happened to them.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::common::{self, run_measured, stderr, stdout, unique, validate_result, Env};
use crate::require_docker;

/// `stockade exec [extra] -- words...` (several words: an argv).
fn exec_words(env: &Env, extra: &[&str], words: &[&str]) -> std::process::Output {
    env.cmd()
        .arg("exec")
        .args(extra)
        .arg("--")
        .args(words)
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} / {}", stdout(out), stderr(out)));
    validate_result(&v);
    v
}

#[test]
fn several_words_are_an_argv_with_their_quoting_kept() {
    require_docker!();
    let env = Env::new();
    let out = exec_words(&env, &[], &["python3", "-c", "print(\"hi there\")"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi there\n");
    let s = unique("argv");
    let made = exec_words(&env, &["-s", &s], &["mkdir", "/tmp/my dir"]);
    assert_eq!(made.status.code(), Some(0), "{}", stderr(&made));
    let out = exec_words(&env, &["-s", &s], &["ls", "-d", "/tmp/my dir"]);
    assert_eq!(stdout(&out), "/tmp/my dir\n", "{}", stderr(&out));
    // No shell: its metacharacters are plain bytes of an argument.
    let out = exec_words(&env, &["-s", &s], &["echo", "$HOME;", "`id`", "|", "*"]);
    assert_eq!(stdout(&out), "$HOME; `id` | *\n");
    // The audit records the argv as a shell would need to be given it.
    let start = env
        .audit_records()
        .into_iter()
        .rev()
        .find(|r| r["kind"] == "start")
        .unwrap();
    assert_eq!(start["command"], r#"echo '$HOME;' '`id`' '|' '*'"#);
    // One word is shell text, as before.
    let out = env.exec(&["-s", &s], "echo a; echo b");
    assert_eq!(stdout(&out), "a\nb\n");
}

#[test]
fn exit_codes_never_collide() {
    require_docker!();
    let env = Env::new();
    let code = |out: &std::process::Output| out.status.code().unwrap();
    // Usage errors: 125, not clap's 2.
    for args in [
        &["exec", "--bogus", "--", "true"][..],
        &["exec", "--timeout", "abc", "--", "true"],
        &["exec"],
        &["check", "--bogus"],
        &["session", "prune", "--idle", "soon"],
        &["cp", "a"],
    ] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(code(&out), 125, "{args:?}: {}", stderr(&out));
    }
    for args in [&["--help"][..], &["--version"], &["exec", "--help"]] {
        assert_eq!(code(&env.cmd().args(args).output().unwrap()), 0, "{args:?}");
    }
    // The command's own code, whatever it is (a shell's `exit 2` is not a usage error).
    assert_eq!(code(&env.exec(&[], "exit 2")), 2);
    // A missing working directory is stockade's error, said plainly, not a policy denial.
    let out = env.exec(&["--workdir", "/nonexist"], "true");
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("\"/nonexist\" does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("OCI"), "{}", stdout(&out));
    // Not found: 127, as a shell, in both forms.
    assert_eq!(code(&exec_words(&env, &[], &["no-such-program", "x"])), 127);
    assert_eq!(code(&env.exec(&[], "no-such-program")), 127);
    // Timeout 124, denial 126.
    assert_eq!(code(&env.exec(&["--timeout", "1s"], "sleep 30")), 124);
    assert_eq!(code(&env.exec(&[], "nsenter -t 1 -m sh")), 126);
    // `check`: 0 allow, 10 warn, 11 deny.
    let check = |command: &str| code(&env.cmd().args(["check", "--", command]).output().unwrap());
    assert_eq!(check("ls -la /tmp"), 0);
    assert_eq!(check("cat /proc/1/environ"), 10);
    assert_eq!(check("nsenter -t 1 -m sh"), 11);
}

#[test]
fn every_outcome_has_the_one_json_shape() {
    require_docker!();
    let env = Env::new();
    let outcome = |out: &std::process::Output| json_of(out)["outcome"].clone();
    let completed = env.exec(
        &["--json", "--interleaved"],
        "echo out; echo err >&2; exit 4",
    );
    let v = json_of(&completed);
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["output"], "out\nerr\n");
    assert_eq!(v["backend"], "docker");
    assert_eq!(v["runner"], "agent");
    assert_eq!(completed.status.code(), Some(4));
    assert_eq!(
        outcome(&env.exec(&["--json", "--timeout", "1s"], "sleep 30")),
        "timed_out"
    );
    let denied = env.exec(&["--json"], "nsenter -t 1 -m sh");
    let v = json_of(&denied);
    assert_eq!(v["outcome"], "denied");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rules"][0]["id"], "ns.nsenter");
    assert_eq!(denied.status.code(), Some(126));
    // Errors of every kind: an unknown profile, a bad flag value, a missing workdir.
    for extra in [
        &["--json", "--profile", "no-such-profile"][..],
        &["--json", "--timeout", "abc"],
        &["--json", "--workdir", "/nonexist"],
        &["--json", "--bogus"],
    ] {
        let out = env.exec(extra, "true");
        let v = json_of(&out);
        assert_eq!(v["outcome"], "error", "{extra:?}: {v}");
        assert!(v["error"].as_str().unwrap().len() > 10, "{v}");
        assert_eq!(out.status.code(), Some(125), "{extra:?}");
    }
    let p = super::faults::limited_profile(&env, "tinycap", &[("output_cap", "\"16k\"")]);
    let flood = env.exec(&["--json", "--profile", &p], "yes");
    assert_eq!(outcome(&flood), "output_limit");
    assert_eq!(flood.status.code(), Some(125));
    // Interrupted: stockade gets SIGTERM while the command runs.
    let mut child = env
        .cmd()
        .args(["exec", "--json", "--", "echo started; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    super::faults::wait_for_start(&env, "echo started; sleep 60");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = common::wait_output(&mut child);
    let v = json_of(&out);
    assert_eq!(v["outcome"], "interrupted", "{v}");
    assert_eq!(v["interrupted"], "SIGTERM");
    assert_eq!(out.status.code(), Some(143));
}

#[test]
fn stdin_is_passed_only_when_asked() {
    require_docker!();
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["exec", "--stdin", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // More than any pipe buffer, so it must stream.
    let text = "hello stdin\n".repeat(20_000);
    let writer = {
        let text = text.clone();
        std::thread::spawn(move || input.write_all(text.as_bytes()))
    };
    let out = common::wait_output(&mut child);
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = stdout(&out);
    assert_eq!(
        got.len(),
        text.len(),
        "stdout has {} of {} bytes",
        got.len(),
        text.len()
    );
    assert!(
        got == text.to_uppercase(),
        "stdout is not the input upper-cased"
    );
    // Without --stdin the command reads nothing, even if stockade's stdin has data.
    let mut child = env
        .cmd()
        .args(["exec", "--", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"ignored\n");
    let out = common::wait_output(&mut child);
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
fn cp_moves_50_mib_both_ways_byte_exact_in_bounded_memory() {
    require_docker!();
    let env = Env::new();
    let s = unique("cp");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.bin");
    // Incompressible and position-dependent: a dropped or reordered chunk changes the digest.
    let mut data = Vec::with_capacity(50 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 50 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&source, &data).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let target = format!("{s}:/workspace/big.bin");
    let mut cmd = env.cmd();
    cmd.args(["cp", "--json", source.to_str().unwrap(), &target]);
    let (out, rss_in) = run_measured(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(copied["bytes"], 50 << 20);
    assert_eq!(copied["sha256"], digest.as_str());
    let inside = env.exec(&["-s", &s], "sha256sum /workspace/big.bin");
    assert!(stdout(&inside).starts_with(&digest), "{}", stdout(&inside));

    let back = dir.path().join("back.bin");
    let mut cmd = env.cmd();
    cmd.args(["cp", &target, back.to_str().unwrap()]);
    let (out, rss_out) = run_measured(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the copy out differs"
    );
    eprintln!("cp 50 MiB: peak RSS in {rss_in} KiB, out {rss_out} KiB");
    assert!(
        rss_in < 64 * 1024 && rss_out < 64 * 1024,
        "{rss_in} / {rss_out} KiB"
    );

    // Through stdin and stdout too.
    let out = common::output_with_stdin(
        env.cmd().args(["cp", "-", &format!("{s}:/tmp/piped")]),
        b"via\x00stdin\xff",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env
        .cmd()
        .args(["cp", &format!("{s}:/tmp/piped"), "-"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"via\x00stdin\xff");

    // Refused outside the writable paths, with what to do; a failed copy out leaves nothing.
    let out = env
        .cmd()
        .args(["cp", source.to_str().unwrap(), &format!("{s}:/etc/passwd")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("only the profile's tmpfs mounts"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("missing.bin");
    let out = env
        .cmd()
        .args([
            "cp",
            &format!("{s}:/workspace/nope"),
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("No such file"), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // Every copy is on record, with its digest.
    let finishes: Vec<serde_json::Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "finish" && r["file_sha256"] == digest.as_str())
        .collect();
    assert_eq!(finishes.len(), 2);
}

#[test]
fn an_image_with_python3_keeps_the_warm_path() {
    require_docker!();
    let env = Env::new();
    let s = unique("py");
    let script = "import json, sqlite3, hashlib, zlib; print(json.dumps(sorted(['b', 'a'])))";
    for _ in 0..2 {
        let (code, v) = env.exec_json(&["-s", &s], &format!("python3 -c \"{script}\""));
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["stdout"], "[\"a\", \"b\"]\n");
        assert_eq!(v["runner"], "agent", "{v}");
    }
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.stockade.include\"}}",
            &stockade::backend::docker::image::base_image_ref(),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&inspect).trim(), "python3");
}

fn session_container(env: &Env, session: &str) -> String {
    let (_, v) = env.exec_json(&["-s", session], "true");
    v["sandbox"].as_str().unwrap().to_string()
}

#[test]
fn a_session_whose_sandbox_was_stopped_or_removed_says_so() {
    require_docker!();
    let env = Env::new();
    let s = unique("reset");
    let name = session_container(&env, &s);
    env.exec(&["-s", &s], "echo kept > /workspace/f");
    let (_, v) = env.exec_json(&["-s", &s], "cat /workspace/f");
    assert_eq!(
        (v["stdout"].as_str(), v["sandbox_reset"].as_bool()),
        (Some("kept\n"), Some(false))
    );

    let stopped = Command::new("docker")
        .args(["stop", "-t", "0", &name])
        .output()
        .unwrap();
    assert!(stopped.status.success());
    let (code, v) = env.exec_json(&["-s", &s], "cat /workspace/f 2>/dev/null; echo after-stop");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "after-stop\n");
    assert_eq!(v["sandbox_reset"], true);
    assert!(v["notes"].to_string().contains("had stopped"), "{v}");

    let removed = Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    assert!(removed.status.success());
    let (code, v) = env.exec_json(&["-s", &s], "echo after-rm");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["sandbox_reset"], true);
    assert!(v["notes"].to_string().contains("was gone"), "{v}");
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["sandbox_reset"], true);
    // Once brought back, it is a session like any other.
    let (_, v) = env.exec_json(&["-s", &s], "true");
    assert_eq!(v["sandbox_reset"], false);
}

#[test]
fn sessions_list_their_times_and_prune_keeps_the_recent_ones() {
    require_docker!();
    let env = Env::new();
    let s = unique("idle");
    session_container(&env, &s);
    let out = env
        .cmd()
        .args(["session", "ls", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &list.as_array().unwrap()[0];
    assert_eq!(row["session"], s.as_str());
    assert!(row["created"].as_i64().unwrap() > 1_700_000_000, "{row}");
    assert!(row["last_used"].as_i64().unwrap() >= row["created"].as_i64().unwrap());
    assert_eq!(row["busy"], false);
    let table = stdout(&env.cmd().args(["session", "ls"]).output().unwrap());
    assert!(
        table.contains("LAST USED") && table.contains(" ago"),
        "{table}"
    );

    // Used a moment ago: the default threshold (30m) keeps it, and so does --idle 1h.
    for extra in [&[][..], &["--idle", "1h"]] {
        let out = env
            .cmd()
            .args(["session", "prune", "--json"])
            .args(extra)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["recent"], serde_json::json!([s]), "{report}");
        assert_eq!(report["sessions"], serde_json::json!([]));
    }
    let out = env
        .cmd()
        .args(["session", "prune", "--json", "--idle", "0s"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sessions"], serde_json::json!([s]), "{report}");
    assert!(common::containers_with_label(&format!("org.stockade.session={s}")).is_empty());
}

#[test]
fn a_session_from_another_version_is_refused_by_name() {
    require_docker!();
    let env = Env::new();
    let s = unique("version");
    let name = session_container(&env, &s);
    // The same session's container, as another version of stockade would have labelled it.
    let labels = Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Labels}}", &name])
        .output()
        .unwrap();
    let mut labels: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&labels.stdout).unwrap();
    labels.insert("org.stockade.version".into(), "0.0.9".into());
    assert!(Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap()
        .status
        .success());
    let mut create = Command::new("docker");
    create.args(["create", "--name", &name, "--network", "none"]);
    for (k, v) in &labels {
        create.args(["--label", &format!("{k}={}", v.as_str().unwrap())]);
    }
    create.args([
        &stockade::backend::docker::image::base_image_ref(),
        "sleep",
        "1000",
    ]);
    assert!(create.output().unwrap().status.success());
    let out = env.exec(&["-s", &s], "true");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("created by stockade 0.0.9"), "{err}");
    assert!(err.contains(&format!("stockade session rm {s}")), "{err}");
    let rm = env.cmd().args(["session", "rm", &s]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
}

#[test]
fn the_builtin_corpus_and_rules_need_no_checkout() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["corpus", "run", "--json"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = v["labelled"]["files"].to_string();
    assert!(files.contains("builtin:escapes.jsonl"), "{files}");
    assert!(
        v["labelled"]["score"]["malicious"]["total"]
            .as_u64()
            .unwrap()
            > 100
    );
    let out = env
        .cmd()
        .args(["rules", "check"])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(", 0 failed"), "{}", stdout(&out));
}

/// An attacker's argv cannot hide a command in words a shell would expand: it is judged as the
/// shell would run it, and denied before any sandbox exists.
#[test]
fn an_argv_with_braces_is_judged_as_the_shell_expands_it() {
    require_docker!();
    let env = Env::new();
    for words in [
        &["bash", "-c", "{nsenter,-t,1,-m,sh}"][..],
        &["sh", "-c", "{chmod,4755,/workspace/sh}"][..],
    ] {
        let out = exec_words(&env, &["--json"], words);
        assert_eq!(out.status.code(), Some(126), "{words:?}: {}", stdout(&out));
        let v = json_of(&out);
        assert_eq!(v["outcome"], "denied");
        assert_eq!(v["sandbox"], serde_json::Value::Null);
    }
}

/// A copy that fails halfway leaves the file it would have replaced as it was, in the sandbox
/// and on the host; a copy out never writes through a host symlink and never replaces a device.
#[test]
fn cp_never_leaves_half_a_file_and_never_writes_through_a_link() {
    require_docker!();
    let env = Env::new();
    let s = unique("cpsafe");
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"the old contents\n").unwrap();
    let target = format!("{s}:/tmp/keep");
    let out = env
        .cmd()
        .args(["cp", small.to_str().unwrap(), &target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // 80 MiB into a 64 MiB tmpfs: the write fails partway.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![0x5a; 80 << 20]).unwrap();
    let out = env
        .cmd()
        .args(["cp", big.to_str().unwrap(), &target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let inside = env.exec(&["-s", &s], "cat /tmp/keep; ls -A /tmp");
    assert_eq!(
        stdout(&inside),
        "the old contents\nkeep\n",
        "{}",
        stderr(&inside)
    );

    // A host symlink as the destination is refused; what it points to is untouched.
    let pointed = dir.path().join("pointed");
    std::fs::write(&pointed, b"mine").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&pointed, &link).unwrap();
    let out = env
        .cmd()
        .args(["cp", &target, link.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&pointed).unwrap(), b"mine");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // A character device is written to, not replaced by a file.
    let out = env
        .cmd()
        .args(["cp", &target, "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    env.cleanup_sessions();
}
