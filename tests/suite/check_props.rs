//! Property tests: the checker takes any string without panicking and with bounded work.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use stockade::check::{parse, Checker, Policy};

fn checker() -> &'static Checker {
    static C: OnceLock<Checker> = OnceLock::new();
    C.get_or_init(|| Checker::builtin_verified().expect("builtin rules load"))
}

/// A generous per-input bound: the point is "no hang", not speed (the bench measures speed).
const BOUND: Duration = Duration::from_secs(2);

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
        let start = Instant::now();
        let _ = parse::parse(&s);
        let v = checker().check(&s, &Policy::default());
        prop_assert!(start.elapsed() < BOUND);
        // Judging is deterministic.
        prop_assert_eq!(v, checker().check(&s, &Policy::default()));
    }

    #[test]
    fn shell_like_strings_are_judged(s in shellish()) {
        let start = Instant::now();
        let _ = checker().check(&s, &Policy::default());
        prop_assert!(start.elapsed() < BOUND);
    }

    #[test]
    fn repeated_nesting_is_bounded(unit in prop::sample::select(vec!["$(", "`", "(", "{ ", "\"$(", "$((", "<(", "eval ", "sh -c '"]), n in 0usize..4000) {
        let s = unit.repeat(n);
        let start = Instant::now();
        let _ = checker().check(&s, &Policy::default());
        prop_assert!(start.elapsed() < BOUND);
    }
}

#[test]
fn one_mebibyte_inputs_are_bounded() {
    for unit in ["a", "a;", "$(", "'", "\"", "echo ${IFS}", "x|", "\\\n"] {
        let s = unit.repeat((1 << 20) / unit.len());
        let start = Instant::now();
        let _ = checker().check(&s, &Policy::default());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{unit:?} took {:?}",
            start.elapsed()
        );
    }
}
