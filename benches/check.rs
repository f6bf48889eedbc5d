//! Check-stage throughput and latency over the benign corpora (nl2bash, tldr) plus the project's
//! labelled corpus. Prints commands/second on one core and per-command percentiles, then runs the
//! same workload under criterion.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion, Throughput};
use stockade::check::corpus::{self, Corpus};
use stockade::check::{Checker, Policy};

fn workload() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("../shared/corpus/benign/nl2bash.cm"),
        root.join("../shared/corpus/benign/tldr.txt"),
    ];
    files.push(root.join("fixtures/corpus/escapes.jsonl"));
    files.push(root.join("fixtures/corpus/hard-negatives.jsonl"));
    let mut out = Vec::new();
    for f in files {
        match corpus::load(&f) {
            Ok(Corpus::Plain(lines)) => out.extend(lines.into_iter().map(|(_, l)| l)),
            Ok(Corpus::Labelled(entries)) => out.extend(entries.into_iter().map(|e| e.command)),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(checker: &Checker, commands: &[String]) {
    let policy = Policy::default();
    // Warm up caches and the regex engines' lazy DFAs.
    for c in commands {
        black_box(checker.check(c, &policy));
    }
    const ROUNDS: usize = 5;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        for c in commands {
            black_box(checker.check(c, &policy));
        }
    }
    let elapsed = start.elapsed();
    let per_sec = (ROUNDS * commands.len()) as f64 / elapsed.as_secs_f64();
    let mut each: Vec<Duration> = commands
        .iter()
        .map(|c| {
            let t = Instant::now();
            black_box(checker.check(c, &policy));
            t.elapsed()
        })
        .collect();
    each.sort();
    println!(
        "check stage: {} commands, {:.0} commands/s on one core; per command p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        commands.len(),
        per_sec,
        percentile(&each, 0.50),
        percentile(&each, 0.99),
        percentile(&each, 0.999),
        each[each.len() - 1]
    );
}

fn main() {
    let checker = Checker::builtin().expect("builtin rules load");
    let commands = workload();
    if commands.is_empty() {
        eprintln!("no commands to measure");
        return;
    }
    report(&checker, &commands);

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(commands.len() as u64));
    group.bench_function("corpora", |b| {
        let policy = Policy::default();
        b.iter(|| {
            for cmd in &commands {
                black_box(checker.check(cmd, &policy));
            }
        })
    });
    group.finish();
    c.final_summary();
}
