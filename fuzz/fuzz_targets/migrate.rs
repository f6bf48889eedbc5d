//! The OpenClaw config reader and the migration planner on arbitrary text: no panic, no stack
//! overflow on deep nesting, the size and depth caps hold, and a plan is always a whole report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockade::migrate::json5::{self, MAX_DEPTH, MAX_INPUT_BYTES};
use stockade::migrate::{openclaw, Host, Options};

fn depth(v: &json5::Value) -> usize {
    match v {
        json5::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        json5::Value::Object(o) => 1 + o.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match json5::parse(text) {
        Ok(v) => {
            assert!(text.len() <= MAX_INPUT_BYTES);
            assert!(depth(&v) <= MAX_DEPTH);
        }
        Err(_) => return,
    }
    // Host paths named by the input are only read (seccomp files, capped) and stat'ed.
    let host = Host::default();
    for allow_unsafe in [false, true] {
        if let Ok(m) = openclaw::plan("fuzz", text, Options { allow_unsafe }, &host) {
            assert_eq!(m.report.blocked, !allow_unsafe && m.report.blocking().next().is_some());
            assert_eq!(m.files.len(), m.report.files.len());
        }
    }
});
