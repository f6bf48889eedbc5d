//! `stockade profile lint` and `stockade profile diff`: argument structs and handlers.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

use stockade::profile::{self, Profile, ProfileDirs};
use stockade::seccomp::{
    caps, diff, effective_caps, lint_caps, lint_profile_for, lint_seccomp, load_profile_json,
    parse_kernel, resolve, Arch, LintReport, LoadOptions, ResolvedProfile, MAX_PROFILE_BYTES,
};

/// Exit status when lint found a critical problem, or diff found a difference.
pub const EXIT_FINDINGS: u8 = 1;

/// How to resolve a profile before linting or diffing it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ResolveArgs {
    /// Architecture to resolve for (x86_64 or aarch64) [default: this host's]
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Kernel version for `minKernel` rules, as "6.1" [default: this host's]
    #[arg(long)]
    pub kernel: Option<String>,
    /// For seccomp JSON files: capability added to Docker's default set (repeatable;
    /// SYS_ADMIN, CAP_SYS_ADMIN or ALL). Sandbox profiles bring their own.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// For seccomp JSON files: capability removed from Docker's default set (repeatable, or ALL)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Skip syscall names that are no syscall on any architecture instead of failing
    #[arg(long)]
    pub allow_unknown_syscalls: bool,
}

/// `stockade profile lint P`
#[derive(clap::Args, Debug, Clone)]
pub struct LintArgs {
    /// A sandbox profile (name or .toml path) or a Docker/OCI seccomp JSON file (*.json)
    pub profile: String,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: ResolveArgs,
}

/// `stockade profile diff A B`
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// The old side: a sandbox profile (name or .toml path) or a seccomp JSON file (*.json)
    pub a: String,
    /// The new side: a sandbox profile (name or .toml path) or a seccomp JSON file (*.json)
    pub b: String,
    /// Print the diff as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: ResolveArgs,
}

/// A profile resolved for the capabilities it runs with.
struct Loaded {
    label: String,
    resolved: ResolvedProfile,
    caps: BTreeSet<String>,
    /// Set when the input was a sandbox profile rather than a seccomp file.
    profile: Option<Profile>,
}

fn read_capped(path: &Path) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    // One byte over the cap is enough to know the file is too large.
    let limit = u64::try_from(MAX_PROFILE_BYTES).unwrap_or(u64::MAX) + 1;
    file.take(limit)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text)
}

fn caps_from(args: &ResolveArgs) -> anyhow::Result<BTreeSet<String>> {
    let canon = |list: &[String]| -> anyhow::Result<Vec<String>> {
        list.iter()
            .map(|c| caps::canonical(c).with_context(|| format!("unknown capability {c:?}")))
            .collect()
    };
    Ok(caps::effective(
        &canon(&args.cap_drop)?,
        &canon(&args.cap_add)?,
    ))
}

fn target(args: &ResolveArgs) -> anyhow::Result<(Arch, Option<(u32, u32)>)> {
    let arch = args.arch.unwrap_or_else(Arch::host);
    let kernel = match args.kernel.as_deref() {
        None => stockade::seccomp::host_kernel(),
        Some(text) => match parse_kernel(text) {
            Some(k) => Some(k),
            None => bail!("--kernel {text:?}: expected a version such as 6.1"),
        },
    };
    Ok((arch, kernel))
}

/// A `*.json` argument is a seccomp file; anything else names a sandbox profile.
fn load(arg: &str, args: &ResolveArgs, dirs: &ProfileDirs) -> anyhow::Result<Loaded> {
    let (arch, kernel) = target(args)?;
    let opts = LoadOptions {
        allow_unknown_syscalls: args.allow_unknown_syscalls,
    };
    if !arg.ends_with(".json") {
        let p = profile::load(arg, dirs)?;
        let seccomp = load_profile_json(&p.seccomp.json, &opts)
            .with_context(|| p.seccomp.path.display().to_string())?;
        let caps = effective_caps(&p);
        return Ok(Loaded {
            label: format!("{} ({})", p.name, p.source),
            resolved: resolve(&seccomp, &caps, arch, kernel),
            caps,
            profile: Some(p),
        });
    }
    let path = Path::new(arg);
    let json = read_capped(path)?;
    let seccomp = load_profile_json(&json, &opts).with_context(|| path.display().to_string())?;
    let caps = caps_from(args)?;
    Ok(Loaded {
        label: arg.to_string(),
        resolved: resolve(&seccomp, &caps, arch, kernel),
        caps,
        profile: None,
    })
}

/// Lints one profile and prints the report; returns [`EXIT_FINDINGS`] if any finding is
/// critical, else 0.
pub fn run_lint(args: &LintArgs, dirs: &ProfileDirs) -> anyhow::Result<u8> {
    let loaded = load(&args.profile, &args.resolve, dirs)?;
    let report = match &loaded.profile {
        Some(p) => {
            let (arch, kernel) = target(&args.resolve)?;
            let mut report = lint_profile_for(p, arch, kernel);
            report.subject = loaded.label;
            report
        }
        None => {
            let mut findings = lint_seccomp(&loaded.resolved);
            findings.extend(lint_caps(&loaded.caps));
            LintReport::new(loaded.label, findings)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.critical > 0 {
        EXIT_FINDINGS
    } else {
        0
    })
}

/// Diffs two profiles and prints the diff; returns [`EXIT_FINDINGS`] if they differ, else 0.
pub fn run_diff(args: &DiffArgs, dirs: &ProfileDirs) -> anyhow::Result<u8> {
    let a = load(&args.a, &args.resolve, dirs)?;
    let b = load(&args.b, &args.resolve, dirs)?;
    let d = diff(&a.resolved, &b.resolved, &a.caps, &b.caps).labelled(a.label, b.label);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{d}");
    }
    Ok(if d.is_empty() { 0 } else { EXIT_FINDINGS })
}
