//! The sandbox agent: every command runs through it, its results are verified, and whatever
//! happens to it or its host-side files, it is replaced and nothing is trusted without proof.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use super::common::{output_within, stderr, stdout, unique, Env};
use crate::require_docker;

#[test]
fn commands_run_through_the_agent_as_the_sandbox_user() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent");
    let (code, v) = env.exec_json(&["--session", &s], "ps -eo user=,args=");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["runner"], "agent", "{v}");
    let ps = v["stdout"].as_str().unwrap();
    assert!(
        ps.lines()
            .any(|l| l.starts_with("sandbox") && l.contains("stockade-agent serve")),
        "{ps}"
    );
    // The keeper is the agent binary too, as root (the sandbox user cannot end it).
    assert!(
        ps.lines()
            .any(|l| l.starts_with("root") && l.contains("stockade-agent keep")),
        "{ps}"
    );
    let (code, v) = env.exec_json(&["--session", &s], "id -u; grep CapEff /proc/self/status");
    assert_eq!(code, 0);
    assert_eq!(v["stdout"], "65532\nCapEff:\t0000000000000000\n");
    // One-shots too.
    let (code, v) = env.exec_json(&[], "echo one");
    assert_eq!((code, v["runner"].as_str()), (0, Some("agent")), "{v}");
    // The verified digest of the output is on record.
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["stdout_sha256"], sha256_hex(b"one\n"), "{finish}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_killed_agent_is_replaced_and_commands_still_run() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent-kill");
    env.exec(&["--session", &s], "true");
    // Killing the agent from inside ends that command with an error (its result is unknown).
    let out = env.exec(
        &["--session", &s],
        "pkill -f 'stockade-agent serve'; sleep 1",
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let (code, v) = env.exec_json(&["--session", &s], "echo still-here");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["stdout"], "still-here\n");
    assert_eq!(v["runner"], "agent", "{v}");
}

#[test]
fn a_result_that_does_not_verify_is_refused() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent-forge");
    env.exec(&["--session", &s], "true");
    // An impostor at the host-side socket path (where nothing in the sandbox can reach): it
    // knows the protocol but not the key.
    let socket = env.session_dir(&s).join("agent.sock");
    std::fs::remove_file(&socket).unwrap();
    let listener = UnixListener::bind(&socket).unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let frame = |tag: u8, payload: &[u8]| {
            let mut f = vec![tag];
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        let mut hello = stockade_proto::PROTOCOL.to_be_bytes().to_vec();
        hello.extend_from_slice(&[7u8; 16]);
        hello.extend_from_slice(&5u32.to_be_bytes());
        hello.extend_from_slice(b"0.1.0");
        conn.write_all(&frame(b'h', &hello)).unwrap();
        let mut header = [0u8; 5];
        conn.read_exact(&mut header).unwrap();
        let mut request = vec![0u8; u32::from_be_bytes(header[1..].try_into().unwrap()) as usize];
        conn.read_exact(&mut request).unwrap();
        conn.write_all(&frame(b'a', b"")).unwrap();
        conn.write_all(&frame(b'o', b"all good\n")).unwrap();
        conn.write_all(&frame(b'x', &[0u8; 200])).unwrap();
    });
    let (code, v) = env.exec_json(&["--session", &s], "echo real");
    impostor.join().unwrap();
    assert_eq!(code, 125, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("failed verification"),
        "{v}"
    );
    let finish = env.audit_records().pop().unwrap();
    assert_eq!(finish["outcome"], "error");
    assert!(finish.get("stdout_sha256").is_none(), "{finish}");
}

#[test]
fn whatever_sits_at_the_host_side_socket_the_agent_is_relaunched() {
    require_docker!();
    let env = Env::new();
    let s = unique("agent-dir");
    assert_eq!(env.exec(&["--session", &s], "true").status.code(), Some(0));
    let socket = env.session_dir(&s).join("agent.sock");
    for plant in ["directory", "file", "tarpit"] {
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_dir_all(&socket);
        // A listener with a full queue that never accepts: connect must not wait forever.
        let mut keep = Vec::new();
        match plant {
            "directory" => std::fs::create_dir(&socket).unwrap(),
            "file" => std::fs::write(&socket, b"junk").unwrap(),
            _ => {
                let listener = UnixListener::bind(&socket).unwrap();
                for _ in 0..64 {
                    match std::os::unix::net::UnixStream::connect(&socket) {
                        Ok(c) => keep.push(c),
                        Err(_) => break,
                    }
                }
                std::mem::forget(listener);
            }
        }
        let out = output_within(
            env.cmd()
                .args(["exec", "--json", "--session", &s, "--", "echo fine"]),
            Duration::from_secs(60),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{plant}: {v}");
        assert_eq!(v["stdout"], "fine\n", "{plant}: {v}");
        assert_eq!(v["runner"], "agent", "{plant}: {v}");
    }
    // `session rm` deletes the session's host directory.
    let out = env.cmd().args(["session", "rm", &s]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!env.session_dir(&s).exists());
}

#[test]
fn without_the_agent_commands_run_as_docker_exec() {
    require_docker!();
    let env = Env::new();
    let s = unique("no-agent");
    let out = env
        .cmd()
        .env("STOCKADE_NO_AGENT", "1")
        .args(["exec", "--json", "--session", &s, "--", "echo plain"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["runner"], "exec", "{v}");
    assert_eq!(v["stdout"], "plain\n");
    assert!(stdout(&out).contains("\"stdout_sha256\":null"));
}

/// Imports an image holding nothing but bash and the libraries it loads: no coreutils, no
/// `sleep`, none of the base image's layout. Returns its reference; removed on drop.
struct MinimalImage(String);

impl MinimalImage {
    fn import() -> MinimalImage {
        let reference = format!("stockade-test/bash-only:{}", std::process::id());
        let mut files = vec![std::path::PathBuf::from("/bin/bash")];
        let ldd = std::process::Command::new("ldd")
            .arg("/bin/bash")
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            if let Some(path) = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(std::path::PathBuf::from)
            {
                files.push(path);
            }
        }
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(true);
        for file in &files {
            let name = file.strip_prefix("/").unwrap();
            tar.append_path_with_name(file, name).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut import = std::process::Command::new("docker")
            .args(["import", "-", &reference])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        import.stdin.take().unwrap().write_all(&tar).unwrap();
        assert!(import.wait().unwrap().success(), "docker import");
        MinimalImage(reference)
    }
}

impl Drop for MinimalImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[test]
fn the_agent_runs_in_an_image_of_the_users_own() {
    require_docker!();
    let env = Env::new();
    let image = MinimalImage::import();
    let p = env.write_variant(
        "bash-only",
        &[(
            "image = \"stockade/base\"",
            &format!("image = \"{}\"", image.0),
        )],
        "",
    );
    let s = unique("own-image");
    for round in 0..2 {
        let (code, v) = env.exec_json(
            &["--profile", &p, "--session", &s],
            "echo $((6 * 7)) > /workspace/n; read n < /workspace/n; echo $n $UID",
        );
        assert_eq!(code, 0, "round {round}: {v}");
        assert_eq!(v["stdout"], "42 65532\n", "{v}");
        assert_eq!(v["runner"], "agent", "round {round}: the warm path: {v}");
    }
    // The timeout and the leftovers still hold without any tool in the image.
    let (code, v) = env.exec_json(
        &["--profile", &p, "--session", &s, "--timeout", "1s"],
        "while :; do :; done",
    );
    assert_eq!(code, 124, "{v}");
    let (code, v) = env.exec_json(&["--profile", &p, "--session", &s], "echo fine");
    assert_eq!((code, v["stdout"].as_str()), (0, Some("fine\n")), "{v}");
    env.cleanup_sessions();
}
