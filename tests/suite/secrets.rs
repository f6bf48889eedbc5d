//! Secrets end to end: stored encrypted, put in a real sandbox's environment only when asked,
//! and found nowhere else: not in the state directory, the audit log or any output, in any
//! common encoding.

use std::path::Path;

use base64::Engine as _;

use super::common::{stderr, stdout, unique, Env};
use crate::require_docker;

const VALUE: &str = "sk-live-7Hq2/x9+Zp0=Wm4rT";

fn set(env: &Env, name: &str, value: &str) -> std::process::Output {
    super::common::output_with_stdin(
        env.cmd().args(["secret", "set", name]),
        format!("{value}\n").as_bytes(),
    )
}

fn spellings(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    vec![
        value.to_string(),
        STANDARD.encode(value),
        URL_SAFE_NO_PAD.encode(value),
        hex::encode(value),
        value
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D"),
    ]
}

fn tree_contains(dir: &Path, needle: &str) -> Option<String> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.is_dir() {
            if let Some(found) = tree_contains(&path, needle) {
                return Some(found);
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return Some(path.display().to_string());
            }
        }
    }
    None
}

#[test]
fn a_secret_reaches_the_command_and_nothing_else() {
    require_docker!();
    let env = Env::new();
    let out = set(&env, "API_TOKEN", VALUE);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(VALUE) && !stderr(&out).contains(VALUE));

    let list = env
        .cmd()
        .args(["secret", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "API_TOKEN");
    assert!(!list.to_string().contains(VALUE));

    // The command sees the value; what comes back shows it in no spelling.
    let s = unique("secret");
    let command = "echo \"$API_TOKEN\"; printf %s \"$API_TOKEN\" | base64; \
                   printf %s \"$API_TOKEN\" | od -An -tx1 | tr -d ' \\n'; echo; \
                   test \"$API_TOKEN\" = 'sk-live-7Hq2/x9+Zp0=Wm4rT' && echo same";
    let out = env
        .cmd()
        .args([
            "exec",
            "--json",
            "--session",
            &s,
            "--secret",
            "API_TOKEN",
            "--",
            command,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    super::common::validate_result(&v);
    assert_eq!(v["outcome"], "completed", "{v}");
    let text = v["stdout"].as_str().unwrap();
    assert_eq!(
        text, "[REDACTED:API_TOKEN]\n[REDACTED:API_TOKEN]\n[REDACTED:API_TOKEN]\nsame\n",
        "{v}"
    );
    assert_eq!(v["redactions"], 3);
    // Not in the environment of a command that did not ask for it.
    let out = env.exec(&["--session", &s], "echo \"[${API_TOKEN:-unset}]\"");
    assert_eq!(stdout(&out), "[unset]\n");
    // Streamed to a terminal-less stdout too.
    let out = env.exec(&["--secret", "API_TOKEN"], "echo \"$API_TOKEN\"");
    assert_eq!(stdout(&out), "[REDACTED:API_TOKEN]\n", "{}", stderr(&out));

    // Nowhere in the state directory: the store, the audit log, the session files.
    for spelling in spellings(VALUE) {
        assert_eq!(
            tree_contains(&env.state_dir(), &spelling),
            None,
            "{spelling}"
        );
    }
    let audit = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(audit.contains("\"secrets\":[\"API_TOKEN\"]"));
    let out = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));

    // Rotating the key keeps the secret and the old records verifiable.
    let out = env
        .cmd()
        .args(["secret", "rotate", "--key"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.exec(
        &["--secret", "API_TOKEN"],
        "test \"$API_TOKEN\" = 'sk-live-7Hq2/x9+Zp0=Wm4rT' && echo same",
    );
    assert_eq!(stdout(&out), "same\n", "{}", stderr(&out));
    let out = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));

    // A tampered store fails with a clear error, never an empty value.
    let store = env.state_dir().join("secrets.json");
    let text = std::fs::read_to_string(&store).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ct = file["secrets"][0]["ciphertext"]
        .as_str()
        .unwrap()
        .to_string();
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(ct)
        .unwrap();
    raw[3] ^= 0x40;
    file["secrets"][0]["ciphertext"] = base64::engine::general_purpose::STANDARD.encode(raw).into();
    std::fs::write(&store, file.to_string()).unwrap();
    let out = env.exec(
        &["--json", "--secret", "API_TOKEN"],
        "echo \"[$API_TOKEN]\"",
    );
    assert_eq!(out.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "error");
    assert!(
        v["error"].as_str().unwrap().contains("cannot be decrypted"),
        "{v}"
    );
    assert_eq!(v["sandbox"], serde_json::Value::Null, "nothing ran");
    env.cleanup_sessions();
}

#[test]
fn a_secret_value_never_comes_from_argv_and_short_ones_are_refused() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["secret", "set", "A_NAME", "the-value"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(125),
        "a value argument is a usage error"
    );
    assert!(
        stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree_contains(&env.state_dir(), "the-value"), None);
    let out = set(&env, "SHORT", "1234567");
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("8 to"), "{}", stderr(&out));
    let out = set(&env, "lower", "long-enough-value");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not a secret name"),
        "{}",
        stderr(&out)
    );
}
