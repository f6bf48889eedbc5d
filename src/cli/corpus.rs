//! `stockade corpus run`: scores the checker against labelled and benign corpora, or (with
//! `--live`) runs the live-safe escape attempts in sandboxes and checks nothing got out.

use std::io::Write;
use std::path::PathBuf;

use serde_json::{Map, Value};

use stockade::check::corpus::{self, Corpus};
use stockade::check::Policy;
use stockade::live;

use super::{settings, GlobalArgs};

/// Score the checker against corpora.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusArgs {
    #[command(subcommand)]
    pub command: CorpusCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum CorpusCommand {
    /// Score labelled (.jsonl) and plain benign (one command per line) corpora.
    Run(CorpusRunArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CorpusRunArgs {
    /// Print the scores as JSON.
    #[arg(long)]
    pub json: bool,
    /// A directory of extra rule files (*.toml) added to the builtin rules.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Instead of scoring: run the live-safe escape attempts in sandboxes (check stage
    /// bypassed, audited) and check that nothing reaches the host
    #[arg(long)]
    pub live: bool,
    /// With --live: at most N attempts per category
    #[arg(long, value_name = "N", requires = "live")]
    pub per_category: Option<usize>,
    /// With --live: attempts run at once [default: 4]
    #[arg(long, value_name = "N", requires = "live")]
    pub jobs: Option<usize>,
    /// With --live: the sandbox profile [default: the configured default]
    #[arg(long, requires = "live")]
    pub profile: Option<String>,
    /// Corpus files (`.jsonl`: labelled; anything else: one benign command per line);
    /// default: the labelled corpora built into stockade.
    pub files: Vec<PathBuf>,
}

/// The corpora to use: the files given, or the built-in ones, with the names to show.
fn corpora(files: &[PathBuf]) -> anyhow::Result<Vec<(String, Corpus)>> {
    if files.is_empty() {
        return Ok(corpus::builtin()?);
    }
    files
        .iter()
        .map(|f| Ok((f.display().to_string(), corpus::load(f)?)))
        .collect()
}

/// `stockade corpus ...`.
pub async fn run(global: &GlobalArgs, args: &CorpusArgs) -> anyhow::Result<u8> {
    match &args.command {
        CorpusCommand::Run(run) if run.live => run_live(global, run).await,
        CorpusCommand::Run(run) => score(run),
    }
}

fn score(args: &CorpusRunArgs) -> anyhow::Result<u8> {
    let checker = super::check::checker(args.rules.as_deref())?;
    let policy = Policy::default();
    let mut labelled = Vec::new();
    let mut labelled_names = Vec::new();
    let mut plain = Vec::new();
    for (name, loaded) in corpora(&args.files)? {
        match loaded {
            Corpus::Labelled(entries) => {
                labelled.extend(entries);
                labelled_names.push(name);
            }
            Corpus::Plain(lines) => {
                plain.push((name, corpus::score_plain(&checker, &policy, &lines)))
            }
        }
    }
    let labelled_score =
        (!labelled.is_empty()).then(|| corpus::score_labelled(&checker, &policy, &labelled));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let mut obj = Map::new();
        if let Some(s) = &labelled_score {
            obj.insert(
                "labelled".into(),
                serde_json::json!({ "files": labelled_names, "score": s }),
            );
        }
        let plain_json: Vec<Value> = plain
            .iter()
            .map(|(f, s)| serde_json::json!({ "file": f, "score": s }))
            .collect();
        obj.insert("plain".into(), Value::Array(plain_json));
        serde_json::to_writer_pretty(&mut out, &Value::Object(obj))?;
        writeln!(out)?;
        return Ok(0);
    }
    if let Some(s) = &labelled_score {
        writeln!(out, "labelled corpus: {}", labelled_names.join(", "))?;
        writeln!(
            out,
            "  malicious: {} entries, detected {} ({:.1}%), denied {} ({:.1}%)",
            s.malicious.total,
            s.malicious.detected,
            s.detection_percent,
            s.malicious.denied,
            corpus::percent(s.malicious.denied, s.malicious.total)
        )?;
        for (cat, t) in &s.by_category {
            writeln!(
                out,
                "    {cat:<22} {:>3}/{:<3} detected ({:.1}%), {} denied",
                t.detected,
                t.total,
                corpus::percent(t.detected, t.total),
                t.denied
            )?;
        }
        writeln!(
            out,
            "  hard negatives: {} entries, deny {} ({:.1}%), warn {} ({:.1}%)",
            s.benign.total,
            s.benign.denied,
            s.benign_deny_percent,
            s.benign.detected - s.benign.denied,
            s.benign_warn_percent
        )?;
        for m in &s.missed {
            writeln!(out, "  missed [{}]: {}", m.category, m.command)?;
        }
        for f in &s.flagged_benign {
            writeln!(
                out,
                "  flagged benign [{} {}]: {}",
                f.decision.as_str(),
                f.rules.join(","),
                f.command
            )?;
        }
    }
    for (file, s) in &plain {
        writeln!(
            out,
            "{file}: {} lines, warn {} ({:.2}%), deny {} ({:.2}%)",
            s.lines, s.warned, s.warn_percent, s.denied, s.deny_percent
        )?;
        for f in &s.flagged {
            writeln!(
                out,
                "  line {} [{} {}]: {}",
                f.line,
                f.decision.as_str(),
                f.rules.join(","),
                f.command
            )?;
        }
    }
    Ok(0)
}

/// `stockade corpus run --live`: 0 when every attempt was contained, 1 when not.
async fn run_live(global: &GlobalArgs, args: &CorpusRunArgs) -> anyhow::Result<u8> {
    let service = settings::service(global).await?;
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for (name, loaded) in corpora(&args.files)? {
        if let Corpus::Labelled(e) = loaded {
            entries.extend(e);
        }
        names.push(name);
    }
    let entries = live::select(entries, args.per_category);
    anyhow::ensure!(
        !entries.is_empty(),
        "no live-safe escape attempts in {}",
        names.join(", ")
    );
    let options = live::LiveOptions {
        profile: args.profile.clone(),
        per_category: args.per_category,
        jobs: args.jobs.unwrap_or(live::DEFAULT_JOBS),
        timeout: live::ATTEMPT_TIMEOUT,
    };
    let cancel = settings::cancel_on_signals();
    let report = live::run(
        &service,
        &settings::principal(),
        &entries,
        &options,
        &cancel,
    )
    .await?;
    if args.json {
        super::out_json(&report)?;
    } else {
        super::out(&report);
    }
    Ok(if report.contained() { 0 } else { 1 })
}
