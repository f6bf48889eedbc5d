//! Property tests: the checker takes any string without panicking and with bounded work.
//! Work is counted in bytes parsed (nested parses included), not in time: a busy machine
//! makes no difference, and a blow-up (re-parsing per nesting level, per substitution) does.

use std::sync::OnceLock;

use proptest::prelude::*;
use stockade::check::{parse, Checker, Policy};

fn checker() -> &'static Checker {
    static C: OnceLock<Checker> = OnceLock::new();
    C.get_or_init(|| Checker::builtin_verified().expect("builtin rules load"))
}

/// The most bytes the checker may parse for an `n`-byte command: each of the few nesting
/// levels it follows reparses at most the text it is given, plus decoded text, which is capped.
fn work_bound(n: usize) -> u64 {
    let depth = u64::from(stockade::check::normalize::MAX_SCRIPT_DEPTH) + 2;
    depth * (n as u64 + 1) * 4 + (8 << 20)
}

/// Judges `s`; returns the work it took (bytes parsed).
fn judged_work(s: &str) -> u64 {
    let before = parse::parsed_bytes();
    let _ = checker().check(s, &Policy::default());
    parse::parsed_bytes() - before
}

/// Shell-heavy text: quotes, substitutions, operators and escapes in any order.
fn shellish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "$(",
        ")",
        "`",
        "'",
        "\"",
        "$'\\x6e",
        "${",
        "}",
        "${IFS}",
        "<<EOF\n",
        "\nEOF\n",
        "<<<",
        "<(",
        ">(",
        "|",
        "||",
        "&&",
        ";",
        "&",
        "\\",
        "\n",
        " ",
        "nsenter",
        "-t",
        "1",
        "sh",
        "-c",
        "eval",
        "base64 -d",
        "echo",
        "bnNl",
        "*",
        "?",
        "[",
        "{a,b}",
        "a=",
        "$a",
        "((",
        "))",
        "#",
        "\0",
        "é",
        "python3 -c",
        "os.system(\"",
        "find . -exec",
        "\\;",
        "xargs",
        "sudo",
        "env",
        "/dev/tcp/h/1",
    ]);
    prop::collection::vec(atoms, 0..64).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_string_is_judged(s in any::<String>()) {
        let _ = parse::parse(&s);
        prop_assert!(judged_work(&s) <= work_bound(s.len()));
        let v = checker().check(&s, &Policy::default());
        // Judging is deterministic.
        prop_assert_eq!(v, checker().check(&s, &Policy::default()));
    }

    #[test]
    fn shell_like_strings_are_judged(s in shellish()) {
        prop_assert!(judged_work(&s) <= work_bound(s.len()));
    }

    #[test]
    fn repeated_nesting_is_bounded(unit in prop::sample::select(vec!["$(", "`", "(", "{ ", "\"$(", "$((", "<(", "eval ", "sh -c '"]), n in 0usize..4000) {
        let s = unit.repeat(n);
        prop_assert!(judged_work(&s) <= work_bound(s.len()));
    }
}

#[test]
fn one_mebibyte_inputs_are_bounded() {
    for unit in ["a", "a;", "$(", "'", "\"", "echo ${IFS}", "x|", "\\\n"] {
        let s = unit.repeat((1 << 20) / unit.len());
        let work = judged_work(&s);
        assert!(work <= work_bound(s.len()), "{unit:?}: {work} bytes parsed");
    }
}
