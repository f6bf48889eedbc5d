//! The project's labelled corpus and the real benign corpora, scored against the builtin rules.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use stockade::check::corpus::{self, Corpus, Expect};
use stockade::check::{Checker, Policy};

fn checker() -> &'static Checker {
    static C: OnceLock<Checker> = OnceLock::new();
    C.get_or_init(|| Checker::builtin_verified().expect("builtin rules load"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus")
}

fn labelled() -> Vec<corpus::Entry> {
    let mut all = Vec::new();
    for f in ["escapes.jsonl", "hard-negatives.jsonl"] {
        match corpus::load(&fixtures().join(f)).expect("corpus loads") {
            Corpus::Labelled(e) => all.extend(e),
            Corpus::Plain(_) => panic!("{f} is labelled"),
        }
    }
    all
}

#[test]
fn corpus_is_well_formed() {
    let entries = labelled();
    let malicious: Vec<_> = entries
        .iter()
        .filter(|e| e.expect == Expect::Malicious)
        .collect();
    let benign = entries.len() - malicious.len();
    assert!(malicious.len() >= 150, "{} malicious", malicious.len());
    assert!(benign >= 60, "{benign} benign");
    for cat in [
        "namespace-escape",
        "runtime-socket",
        "cgroup-escape",
        "kernel-helper",
        "raw-device",
        "kernel-module",
        "cloud-metadata",
        "reverse-shell",
        "privilege-escalation",
        "secret-exfiltration",
        "obfuscation",
    ] {
        assert!(
            malicious.iter().filter(|e| e.category == cat).count() >= 8,
            "category {cat} is thin"
        );
    }
    for e in &entries {
        assert!(!e.source.is_empty() && !e.command.is_empty());
        // Remote hosts only as reserved names.
        for host in ["attacker.com", "evil.com", "10.10.10.10"] {
            assert!(!e.command.contains(host), "{}", e.command);
        }
    }
}

#[test]
fn detection_and_hard_negative_rates_meet_the_bar() {
    let s = corpus::score_labelled(checker(), &Policy::default(), &labelled());
    for m in &s.missed {
        println!("missed [{}]: {}", m.category, m.command);
    }
    for f in &s.flagged_benign {
        println!(
            "flagged benign [{:?} {:?}]: {}",
            f.decision, f.rules, f.command
        );
    }
    println!(
        "detection {:.1}%, hard-negative deny {:.1}% warn {:.1}%",
        s.detection_percent, s.benign_deny_percent, s.benign_warn_percent
    );
    assert!(
        s.detection_percent >= 97.0,
        "detection {:.1}%",
        s.detection_percent
    );
    assert!(
        s.benign_deny_percent <= 3.0,
        "hard-negative deny {:.1}%",
        s.benign_deny_percent
    );
}

#[test]
fn real_benign_corpora_stay_quiet() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/benign");
    for name in ["nl2bash.cm", "tldr.txt"] {
        let path = dir.join(name);
        if !path.exists() {
            println!("skipping {name}: {} not found", path.display());
            continue;
        }
        let Corpus::Plain(lines) = corpus::load(&path).expect("benign corpus loads") else {
            panic!("plain text")
        };
        let s = corpus::score_plain(checker(), &Policy::default(), &lines);
        for f in &s.flagged {
            println!(
                "{name}:{} [{:?} {:?}] {}",
                f.line, f.decision, f.rules, f.command
            );
        }
        println!(
            "{name}: {} lines, deny {:.3}%, warn {:.3}%",
            s.lines, s.deny_percent, s.warn_percent
        );
        assert!(s.deny_percent <= 0.1, "{name}: deny {:.3}%", s.deny_percent);
        assert!(
            s.deny_percent + s.warn_percent <= 0.5,
            "{name}: warn+deny {:.3}%",
            s.deny_percent + s.warn_percent
        );
    }
}
