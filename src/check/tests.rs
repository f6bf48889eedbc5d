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
