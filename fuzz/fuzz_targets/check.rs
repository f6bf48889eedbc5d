//! Parser and normalizer on arbitrary input: no panic, no hang, bounded work.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stockade::check::{parse, Checker, Policy};

fn checker() -> &'static Checker {
    static C: OnceLock<Checker> = OnceLock::new();
    C.get_or_init(|| Checker::builtin_verified().expect("builtin rules load"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse::parse(&text);
    let _ = checker().check(&text, &Policy::default());
});
