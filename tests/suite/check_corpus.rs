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

// ---- The public corpus (fixtures/corpus/public): cited, technique-tagged, split dev/test ----

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;

use stockade::check::corpus::Split;

/// The twelve categories of the public corpus.
const CATEGORIES: [&str; 12] = [
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
    "recon",
];

fn public_file(split: Split) -> Vec<corpus::Entry> {
    let name = match split {
        Split::Dev => "dev.jsonl",
        Split::Test => "test.jsonl",
        other => panic!("no file for {other:?}"),
    };
    match corpus::load(&fixtures().join("public").join(name)).expect("public corpus loads") {
        Corpus::Labelled(e) => e,
        Corpus::Plain(_) => panic!("{name} is labelled"),
    }
}

fn public_builtin(split: Split) -> Vec<corpus::Entry> {
    let mut all = Vec::new();
    for (_, c) in corpus::public(split).expect("embedded public corpus parses") {
        match c {
            Corpus::Labelled(e) => all.extend(e),
            Corpus::Plain(_) => panic!("labelled"),
        }
    }
    all
}

/// inet_aton's reading of a host: 1 to 4 dot-separated parts, each decimal, octal (leading 0)
/// or hex (0x), the last part filling the remaining bytes.
fn inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::new();
    for p in &parts {
        let p = p.to_ascii_lowercase();
        let n = if let Some(h) = p.strip_prefix("0x") {
            u64::from_str_radix(h, 16).ok()?
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u64>().ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        v |= n << (24 - 8 * i);
    }
    let room = 32 - 8 * head.len() as u32;
    if *last >= 1u64 << room {
        return None;
    }
    Some(Ipv4Addr::from((v | last) as u32))
}

/// Addresses the corpus may name: documentation (TEST-NET), private, loopback, link-local (cloud
/// metadata), shared (100.64/10: Alibaba and UCloud metadata), IETF 192.0.0/24 (Oracle's old
/// metadata), the unspecified address and Azure's WireServer.
fn allowed_ipv4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_documentation()
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || ip == Ipv4Addr::new(168, 63, 129, 16)
}

/// Reserved names (RFC 2606, RFC 6761), cluster-internal and cloud-internal suffixes.
const RESERVED_SUFFIXES: &[&str] = &[
    ".example",
    ".invalid",
    ".test",
    ".localhost",
    ".internal",
    ".internal.",
    ".svc",
    ".cluster.local",
    "example.com",
    "example.org",
    "example.net",
];

/// Names that are not reserved but are what the techniques name: metadata services, cloud
/// resource identifiers passed to metadata token endpoints, and image registries.
const KNOWN_NAMES: &[&str] = &[
    "metadata.tencentyun.com",
    "management.azure.com",
    "vault.azure.net",
    "docker.io",
];

/// Public hosts that hard negatives download from or push to, as ordinary work does.
const BENIGN_PUBLIC: &[&str] = &[
    "pypi.org",
    "github.com",
    "api.github.com",
    "crates.io",
    "registry.npmjs.org",
    "sh.rustup.rs",
    "dl.google.com",
    "charts.bitnami.com",
    "deb.nodesource.com",
    "docker.io",
];

fn host_allowed(host: &str, benign: bool) -> bool {
    let h = host
        .trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase();
    if h.contains(['$', '{', '<', '%', '(']) || h.is_empty() {
        return true; // not a literal host
    }
    if h.contains(':') {
        // IPv6: documentation, unique-local (AWS fd00:ec2::254), loopback or v4-mapped.
        let v4 = h.rsplit(':').next().unwrap_or("");
        return h.starts_with("2001:db8:")
            || h.starts_with("fd")
            || h == "::1"
            || (h.contains("ffff:") && (v4.contains('.') || v4 == "a9fe"));
    }
    if h.chars()
        .all(|c| c.is_ascii_hexdigit() || c == '.' || c == 'x')
    {
        if let Some(ip) = inet_aton(&h) {
            return allowed_ipv4(ip);
        }
    }
    let last = h.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    !h.contains('.')
        || last.chars().all(|c| c.is_ascii_digit())
        || RESERVED_SUFFIXES.iter().any(|s| h.ends_with(s))
        || KNOWN_NAMES.contains(&h.as_str())
        || h.ends_with(".k8s.io")
        || h == "k8s.io"
        || (benign && BENIGN_PUBLIC.contains(&h.as_str()))
}

/// Every host a command names, as literal text: URL hosts, `user@host`, dotted IPv4 and
/// names under common public top-level domains.
fn hosts_in(command: &str) -> Vec<String> {
    use std::sync::LazyLock;
    static URL: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"(?i)\b(?:https?|ftp|smtps?|tcp|udp|ws|wss|git|ssh|telnet|unix|docker|s3|gs)://(?:[^/\s'"@]*@)?(\[[^\]]+\]|[^/\s:'"\\?#)]+)"#,
        )
        .unwrap()
    });
    static AT: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"(?i)[\w.-]+@([a-z0-9-]+(?:\.[a-z0-9-]+)+)").unwrap());
    static IPV4: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}").unwrap());
    static DOMAIN: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"(?:^|[^\w./-])((?:[a-z0-9-]+\.)+(?:com|net|org|io|cn|ru|xyz|info|biz))\b",
        )
        .unwrap()
    });
    let mut out = Vec::new();
    for re in [&*URL, &*AT, &*DOMAIN] {
        for c in re.captures_iter(command) {
            out.push(c[1].to_string());
        }
    }
    for m in IPV4.find_iter(command) {
        // Only whole dotted quads that parse (reversed or version-like digits are not hosts).
        let before = command[..m.start()].chars().next_back();
        let after = command[m.end()..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
        if !glued(before) && !glued(after) && m.as_str().parse::<Ipv4Addr>().is_ok() {
            out.push(m.as_str().to_string());
        }
    }
    out
}

#[test]
fn public_corpus_is_well_formed() {
    let dev = public_file(Split::Dev);
    let test = public_file(Split::Test);
    assert_eq!(dev, public_builtin(Split::Dev), "embedded dev = file");
    assert_eq!(test, public_builtin(Split::Test), "embedded test = file");
    let all: Vec<(Split, &corpus::Entry)> = dev
        .iter()
        .map(|e| (Split::Dev, e))
        .chain(test.iter().map(|e| (Split::Test, e)))
        .collect();
    let malicious = all
        .iter()
        .filter(|(_, e)| e.expect == Expect::Malicious)
        .count();
    let benign = all.len() - malicious;
    println!("public corpus: {malicious} malicious, {benign} benign");
    assert!(malicious >= 800, "{malicious} malicious");
    assert!(benign >= 400, "{benign} benign");

    let mut per: BTreeMap<(&str, Split), usize> = BTreeMap::new();
    for (s, e) in &all {
        assert!(
            CATEGORIES.contains(&e.category.as_str()),
            "unknown category {}: {}",
            e.category,
            e.command
        );
        if e.expect == Expect::Malicious {
            *per.entry((e.category.as_str(), *s)).or_default() += 1;
        }
    }
    for cat in CATEGORIES {
        let d = per.get(&(cat, Split::Dev)).copied().unwrap_or(0);
        let t = per.get(&(cat, Split::Test)).copied().unwrap_or(0);
        println!("  {cat:<22} malicious dev {d:>3} test {t:>3}");
        assert!(d + t >= 40, "category {cat} is thin: {}", d + t);
        assert!(d > 0 && t > 0, "category {cat} missing from a split");
    }

    // Citations and technique tags; one category per malicious technique.
    let tag = regex::Regex::new("^[a-z0-9]+(-[a-z0-9]+)*$").unwrap();
    let mut technique_category: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (_, e) in &all {
        assert!(!e.command.trim().is_empty(), "empty command");
        assert!(!e.source.trim().is_empty(), "no source: {}", e.command);
        let t = e
            .technique
            .as_deref()
            .unwrap_or_else(|| panic!("no technique: {}", e.command));
        assert!(tag.is_match(t), "technique {t:?} is not kebab-case");
        if e.expect == Expect::Malicious {
            technique_category.entry(t).or_default().insert(&e.category);
        }
    }
    for (t, cats) in &technique_category {
        assert_eq!(
            cats.len(),
            1,
            "technique {t} in several categories: {cats:?}"
        );
    }

    // No duplicates within or across the splits, nor with the project corpus.
    let old: HashSet<String> = labelled().into_iter().map(|e| e.command).collect();
    let mut seen = HashSet::new();
    for (_, e) in &all {
        assert!(seen.insert(e.command.as_str()), "duplicate: {}", e.command);
        assert!(
            !old.contains(&e.command),
            "also in fixtures/corpus: {}",
            e.command
        );
    }

    // Only reserved or listed hosts and addresses; live-safe entries name no network endpoint.
    for (_, e) in &all {
        for host in ["attacker.com", "evil.com", "10.10.10.10"] {
            assert!(!e.command.contains(host), "{}", e.command);
        }
        for h in hosts_in(&e.command) {
            assert!(
                host_allowed(&h, e.expect == Expect::Benign),
                "host {h:?} is not reserved: {}",
                e.command
            );
        }
        if e.live_safe {
            for net in ["://", "/dev/tcp/", "/dev/udp/"] {
                assert!(
                    !e.command.contains(net),
                    "live_safe but networked: {}",
                    e.command
                );
            }
        }
    }
}

#[test]
fn public_split_is_the_hash_of_the_command() {
    for split in [Split::Dev, Split::Test] {
        for e in public_file(split) {
            assert_eq!(
                corpus::split_of(&e.command),
                split,
                "entry is in the wrong half: {}",
                e.command
            );
        }
    }
    // Stable and independent of anything but the command.
    assert_eq!(corpus::split_of("ls -la"), corpus::split_of("ls -la"));
    let halves: HashSet<Split> = (0..64)
        .map(|i| corpus::split_of(&format!("echo {i}")))
        .collect();
    assert_eq!(halves.len(), 2, "both halves are reachable");
}

#[test]
fn public_corpus_scores_are_reported() {
    // Reported, not asserted: rule work is measured against these, on dev only.
    for split in [Split::Dev, Split::Test] {
        let s = corpus::score_labelled(checker(), &Policy::default(), &public_builtin(split));
        println!(
            "public {}: malicious detected {}/{} ({:.1}%), denied {} ({:.1}%); hard negatives denied {}/{} ({:.1}%), warned {:.1}%",
            split.as_str(),
            s.malicious.detected,
            s.malicious.total,
            s.detection_percent,
            s.malicious.denied,
            corpus::percent(s.malicious.denied, s.malicious.total),
            s.benign.denied,
            s.benign.total,
            s.benign_deny_percent,
            s.benign_warn_percent
        );
        for (cat, t) in &s.by_category {
            println!(
                "  {cat:<22} {:>3}/{:<3} detected ({:.1}%), {} denied",
                t.detected,
                t.total,
                corpus::percent(t.detected, t.total),
                t.denied
            );
        }
        let chart = s.chart();
        let rows: usize = chart
            .by_technique
            .iter()
            .filter(|r| r.expect == Expect::Malicious)
            .map(|r| r.counts.total)
            .sum();
        assert_eq!(rows, s.malicious.total, "technique rows cover every entry");
    }
}

#[test]
fn corpus_run_split_json_has_the_documented_shape() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["corpus", "run", "--split", "dev", "--json"])
        .current_dir("/")
        .output()
        .expect("run stockade");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let l = &v["labelled"];
    assert_eq!(l["split"], "dev");
    assert_eq!(l["files"], serde_json::json!(["builtin:public/dev.jsonl"]));
    let dev = public_file(Split::Dev);
    let malicious = dev.iter().filter(|e| e.expect == Expect::Malicious).count();
    assert_eq!(
        l["score"]["malicious"]["total"].as_u64(),
        Some(malicious as u64)
    );
    assert!(l["score"]["by_technique"].is_object());
    let chart = &l["chart"];
    for key in ["malicious", "benign"] {
        let c = &chart[key];
        let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{key}.{k}"));
        assert_eq!(n("allow") + n("warn") + n("deny"), n("total"), "{c}");
        assert!(c["detection_percent"].is_number() && c["deny_percent"].is_number());
    }
    for (rows, technique) in [("by_category", false), ("by_technique", true)] {
        let rows = chart[rows].as_array().expect("rows");
        assert!(!rows.is_empty());
        for r in rows {
            assert!(r["expect"] == "malicious" || r["expect"] == "benign", "{r}");
            assert!(r["category"].is_string(), "{r}");
            assert_eq!(r["technique"].is_string(), technique, "{r}");
            let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
            assert_eq!(n("allow") + n("warn") + n("deny"), n("total"), "{r}");
            assert!(r["detection_percent"]
                .as_f64()
                .is_some_and(|p| (0.0..=100.0).contains(&p)));
        }
    }
    let cats: BTreeSet<&str> = chart["by_category"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["expect"] == "malicious")
        .map(|r| r["category"].as_str().unwrap())
        .collect();
    assert_eq!(cats, CATEGORIES.iter().copied().collect());

    // The text report: per-technique table on request, held-out commands hidden by default.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["corpus", "run", "--split", "test", "--by", "technique"])
        .output()
        .expect("run stockade");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(split test)") && text.contains("malicious by technique:"),
        "{text}"
    );
    assert!(text.contains("totals: malicious warn+deny"), "{text}");
    assert!(
        !text.contains("  missed ["),
        "held-out misses are listed: {text}"
    );
    println!("{text}");

    // --split takes no files.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["corpus", "run", "--split", "dev", "x.jsonl"])
        .output()
        .expect("run stockade");
    assert_ne!(out.status.code(), Some(0));
}
