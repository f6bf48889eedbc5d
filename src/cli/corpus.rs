//! `stockade corpus run`: scores the checker against labelled and benign corpora, or (with
//! `--live`) runs the live-safe escape attempts in sandboxes and checks nothing got out.

use std::io::Write;
use std::path::PathBuf;

use serde_json::{Map, Value};

use stockade::check::corpus::{self, Corpus, LabelledScore, Split, Tally};
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
    /// Score a half of the public corpus built into stockade (fixtures/corpus/public): `dev`
    /// for rule work, `test` held out, or `all`
    #[arg(long, value_enum, value_name = "SPLIT", conflicts_with_all = ["files", "live"])]
    pub split: Option<SplitArg>,
    /// Break the scores down by category (default) or also by technique
    #[arg(long, value_enum, value_name = "WHAT", default_value = "category")]
    pub by: By,
    /// With --split test or all: also list the held-out commands that were missed or flagged
    /// (hidden by default so that rule work does not look at them)
    #[arg(long, requires = "split")]
    pub list_commands: bool,
    /// Corpus files (`.jsonl`: labelled; anything else: one benign command per line);
    /// default: the labelled corpora built into stockade.
    pub files: Vec<PathBuf>,
}

/// `--split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Dev,
    Test,
    All,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Dev => Split::Dev,
            SplitArg::Test => Split::Test,
            SplitArg::All => Split::All,
        }
    }
}

/// `--by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Category,
    Technique,
}

/// The corpora to use: a public split, the files given, or the built-in ones, with the names
/// to show.
fn corpora(files: &[PathBuf], split: Option<SplitArg>) -> anyhow::Result<Vec<(String, Corpus)>> {
    if let Some(split) = split {
        return Ok(corpus::public(split.into())?);
    }
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
    for (name, loaded) in corpora(&args.files, args.split)? {
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
    let split = args.split.map(Split::from);
    if args.json {
        let mut obj = Map::new();
        if let Some(s) = &labelled_score {
            let mut labelled = serde_json::json!({
                "files": labelled_names,
                "score": s,
                "chart": s.chart(),
            });
            if let Some(split) = split {
                labelled["split"] = split.as_str().into();
            }
            obj.insert("labelled".into(), labelled);
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
        match split {
            Some(split) => writeln!(
                out,
                "labelled corpus: {} (split {})",
                labelled_names.join(", "),
                split.as_str()
            )?,
            None => writeln!(out, "labelled corpus: {}", labelled_names.join(", "))?,
        }
        let hide = matches!(split, Some(Split::Test | Split::All)) && !args.list_commands;
        write_labelled(&mut out, s, args.by, hide)?;
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

/// One line of a breakdown table.
fn write_tally(out: &mut impl Write, name: &str, t: &Tally) -> std::io::Result<()> {
    writeln!(
        out,
        "    {name:<40} {:>3}/{:<3} detected ({:.1}%), {} denied",
        t.detected,
        t.total,
        corpus::percent(t.detected, t.total),
        t.denied
    )
}

/// The text report of a labelled score; `hide` leaves out the per-command lists.
fn write_labelled(
    out: &mut impl Write,
    s: &LabelledScore,
    by: By,
    hide: bool,
) -> anyhow::Result<()> {
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
    if by == By::Technique {
        writeln!(out, "  malicious by technique:")?;
        for (cat, techniques) in &s.by_technique {
            for (technique, t) in techniques {
                write_tally(out, &format!("{cat} / {technique}"), t)?;
            }
        }
        writeln!(
            out,
            "  hard negatives by technique (detected = warned or denied):"
        )?;
        for (cat, techniques) in &s.benign_by_technique {
            for (technique, t) in techniques {
                write_tally(out, &format!("{cat} / {technique}"), t)?;
            }
        }
    }
    writeln!(
        out,
        "  totals: malicious warn+deny {}/{} ({:.1}%), deny {}/{} ({:.1}%); hard negatives denied {}/{} ({:.1}%), warned {}/{} ({:.1}%)",
        s.malicious.detected,
        s.malicious.total,
        s.detection_percent,
        s.malicious.denied,
        s.malicious.total,
        corpus::percent(s.malicious.denied, s.malicious.total),
        s.benign.denied,
        s.benign.total,
        s.benign_deny_percent,
        s.benign.detected - s.benign.denied,
        s.benign.total,
        s.benign_warn_percent
    )?;
    if hide {
        writeln!(
            out,
            "  ({} missed and {} flagged held-out commands not listed; --list-commands lists them)",
            s.missed.len(),
            s.flagged_benign.len()
        )?;
        return Ok(());
    }
    for m in &s.missed {
        match &m.technique {
            Some(t) => writeln!(out, "  missed [{} {t}]: {}", m.category, m.command)?,
            None => writeln!(out, "  missed [{}]: {}", m.category, m.command)?,
        }
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
    Ok(())
}

/// `stockade corpus run --live`: 0 when every attempt was contained, 1 when not.
async fn run_live(global: &GlobalArgs, args: &CorpusRunArgs) -> anyhow::Result<u8> {
    let service = settings::service(global).await?;
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for (name, loaded) in corpora(&args.files, None)? {
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
