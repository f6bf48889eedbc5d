//! Concurrent sessions from separate processes: every command gets its own output, every one
//! is audited once in one valid chain, and nothing is left after `session prune`. The full
//! 32 x 20 run with throughput and latency figures is `scripts/load-test`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::common::{self, stderr, unique, Env};
use crate::require_docker;

const SESSIONS: usize = 8;
const COMMANDS: usize = 5;

#[test]
fn concurrent_sessions_get_their_own_output_and_one_valid_audit_chain() {
    require_docker!();
    let env = Env::new();
    let sessions: Vec<String> = (0..SESSIONS).map(|_| unique("load")).collect();
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let env = &env;
                scope.spawn(move || {
                    let mut took = Vec::new();
                    for j in 0..COMMANDS {
                        // Output that only this command can produce, on both streams.
                        let token = format!("tok-{i}-{j}");
                        let t = Instant::now();
                        let (code, v) = env.exec_json(
                            &["--session", s],
                            &format!("echo {token}; echo {token} >&2; echo $((6*7))"),
                        );
                        took.push(t.elapsed());
                        assert_eq!(code, 0, "{v}");
                        assert_eq!(v["stdout"], format!("{token}\n42\n"), "{v}");
                        assert_eq!(v["stderr"], format!("{token}\n"), "{v}");
                        assert_eq!(v["session"], s.as_str());
                    }
                    took
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    let mut sorted = latencies.clone();
    sorted.sort();
    eprintln!(
        "load: {} commands in {elapsed:?} ({:.1}/s), p50 {:?}, max {:?}",
        sorted.len(),
        sorted.len() as f64 / elapsed.as_secs_f64(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );

    // Every execution has exactly one start and one finish, in one chain.
    let records = env.audit_records();
    assert_eq!(records.len(), 2 * SESSIONS * COMMANDS);
    let mut kinds: HashMap<String, Vec<String>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as u64);
        kinds
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default()
            .push(r["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.len(), SESSIONS * COMMANDS);
    assert!(
        kinds.values().all(|k| k == &["start", "finish"]),
        "{kinds:?}"
    );
    let verify = env.cmd().args(["audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", common::stdout(&verify));

    let prune = env
        .cmd()
        .args(["session", "prune", "--idle", "0s"])
        .output()
        .unwrap();
    assert!(prune.status.success(), "{}", stderr(&prune));
    for s in &sessions {
        let left = common::containers_with_label(&format!("org.stockade.session={s}"));
        assert!(left.is_empty(), "{s}: {left:?}");
    }
}
