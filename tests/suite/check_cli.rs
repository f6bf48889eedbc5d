//! `stockade check` and `stockade corpus run`, through the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn stockade(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stockade");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait stockade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_exit_codes_follow_the_verdict() {
    let allow = stockade(&["check", "--", "ls -la"], None);
    assert_eq!(allow.status.code(), Some(0), "{}", stdout(&allow));
    assert!(stdout(&allow).starts_with("allow: ls -la"));

    let warn = stockade(&["check", "--", "unshare", "-r", "sh"], None);
    assert_eq!(
        warn.status.code(),
        Some(i32::from(stockade::exit::EXIT_CHECK_WARN))
    );
    assert!(stdout(&warn).contains("ns.unshare"));

    let deny = stockade(&["check", "--", "n''sent'e'r -t 1 -m sh"], None);
    assert_eq!(
        deny.status.code(),
        Some(i32::from(stockade::exit::EXIT_CHECK_DENY))
    );
    let out = stdout(&deny);
    assert!(
        out.contains("ns.nsenter") && out.contains("obf.obfuscated-name"),
        "{out}"
    );
    assert!(out.contains("why: "), "{out}");
}

#[test]
fn check_json_carries_every_hit() {
    let o = stockade(
        &[
            "check",
            "--json",
            "--",
            "echo bnNlbnRlciAtdCAxIC1tIHNo | base64 -d | sh",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(11));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json verdict");
    assert_eq!(v["decision"], "deny");
    let ids: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"ns.nsenter") && ids.contains(&"obf.decoded-exec"),
        "{ids:?}"
    );
    let hit = &v["rules"][0];
    for field in ["id", "category", "severity", "decision", "fragment", "why"] {
        assert!(hit.get(field).is_some(), "missing {field}");
    }
}

#[test]
fn allow_rule_flag_reports_but_allows() {
    let o = stockade(
        &[
            "check",
            "--allow-rule",
            "ns.unshare",
            "--",
            "unshare -r true",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("ns.unshare"));
}

#[test]
fn jsonl_keeps_fields_and_flags_bad_lines() {
    let input = concat!(
        "{\"id\": 1, \"command\": \"ls\"}\n",
        "{\"id\": 2, \"command\": \"nsenter -t 1 -m sh\"}\n",
        "not json\n",
        "{\"id\": 4}\n",
        "\n",
        "{\"id\": 5, \"command\": \"unshare -r sh\"}\n",
    );
    let o = stockade(&["check", "--jsonl"], Some(input));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["rules"], serde_json::json!([]));
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["rules"], serde_json::json!(["ns.nsenter"]));
    assert!(lines[2]["error"].is_string());
    assert!(lines[3]["error"].as_str().unwrap().contains("command"));
    assert_eq!(lines[4]["decision"], "warn");
    assert_ne!(
        o.status.code(),
        Some(0),
        "malformed lines make the exit non-zero"
    );

    let ok = stockade(&["check", "--jsonl"], Some("{\"command\": \"ls\"}\n"));
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn user_rules_extend_the_builtin_set_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("local.toml"),
        r#"
[[rule]]
id = "local.no-rm-rf-root"
category = "local"
severity = "high"
why = "never wipe the root"
command = ["rm"]
args = '(^|\s)-[a-zA-Z]*r[a-zA-Z]*f?\s+/(\s|$)'
match = ["rm -rf /", "sudo rm -r /"]
not_match = ["rm -rf ./build"]
"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = stockade(&["check", "--rules", d, "--", "timeout 5 rm -rf /"], None);
    assert_eq!(o.status.code(), Some(11), "{}", stdout(&o));
    assert!(stdout(&o).contains("local.no-rm-rf-root"));

    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nid='b'\ncategory='c'\nseverity='high'\nwhy='w'\ncommand=['x']\nmatch=['y']\n",
    )
    .unwrap();
    let o = stockade(&["check", "--rules", d, "--", "ls"], None);
    assert_eq!(
        o.status.code(),
        Some(i32::from(stockade::exit::EXIT_STOCKADE_ERROR))
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rule b") && err.contains("\"y\""), "{err}");
}

#[test]
fn corpus_run_scores_labelled_and_plain_files() {
    let o = stockade(&["corpus", "run"], None);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("malicious:") && out.contains("hard negatives:"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("benign.txt");
    std::fs::write(
        &plain,
        "ls -la\n\ngrep -rn nsenter docs/\nnsenter -t 1 -m sh\n",
    )
    .unwrap();
    let o = stockade(&["corpus", "run", "--json", plain.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let score = &v["plain"][0]["score"];
    assert_eq!(score["lines"], 3);
    assert_eq!(score["denied"], 1);
    assert_eq!(score["flagged"][0]["line"], 4);
}
