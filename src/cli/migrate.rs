//! `stockade migrate openclaw CONFIG --out DIR`: another sandbox's config as stockade profiles
//! and a config.toml, with a report of what became of every key (docs/migrate.md).

use std::path::PathBuf;

use stockade::migrate::{self, openclaw, Host, Migration, Options, Report, Status};

use super::{out, say, settings, GlobalArgs};

/// Exit status when the config asks for what stockade refuses to run (as lint's critical).
pub const EXIT_REFUSED: u8 = 1;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub from: MigrateFrom,
}

#[derive(Debug, clap::Subcommand)]
pub enum MigrateFrom {
    /// An OpenClaw (Moltbot, Clawdbot) config, JSON5: one profile per distinct sandbox and a
    /// config.toml (exit 0 migrated, 1 refused, 125 error)
    Openclaw(OpenclawArgs),
}

#[derive(Debug, clap::Args)]
pub struct OpenclawArgs {
    /// The config: ~/.openclaw/openclaw.json (legacy ~/.clawdbot/clawdbot.json, moltbot.json)
    pub config: PathBuf,
    /// Where to write config.toml and profiles/ (created 0700; files 0600)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print the report and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write even when keys are refused: each refused value is replaced by stockade's safe one,
    /// the refusals and the profiles' lint findings are printed
    #[arg(long)]
    pub allow_unsafe: bool,
    /// Replace files a previous migration wrote
    #[arg(long)]
    pub force: bool,
    /// The report as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &MigrateArgs) -> anyhow::Result<u8> {
    match &args.from {
        MigrateFrom::Openclaw(a) => run_openclaw(global, a),
    }
}

fn run_openclaw(global: &GlobalArgs, args: &OpenclawArgs) -> anyhow::Result<u8> {
    let host = Host {
        home: settings::home_dir(),
        engine_sockets: settings::profile_dirs(global).engine_sockets,
    };
    let source = args.config.display().to_string();
    let text = migrate::read_config(&args.config)?;
    let migration = openclaw::plan(
        &source,
        &text,
        Options {
            allow_unsafe: args.allow_unsafe,
        },
        &host,
    )?;
    let report = &migration.report;
    let mut written = Vec::new();
    if !report.blocked && !args.dry_run {
        written = migrate::write(&migration, &args.out, args.force, &host.engine_sockets)?;
    }
    if args.json {
        let mut value = serde_json::to_value(report)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("dry_run".into(), args.dry_run.into());
            obj.insert(
                "written".into(),
                written
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        out(serde_json::to_string_pretty(&value)?);
    } else {
        print_report(report);
        print_outcome(&migration, args, &written);
    }
    if report.blocked {
        say(format_args!(
            "refused: {} reason(s) above; nothing written (--allow-unsafe writes the profiles with each refused value replaced by stockade's safe one)",
            report.blocking().count()
        ));
        return Ok(EXIT_REFUSED);
    }
    Ok(0)
}

fn print_report(report: &Report) {
    out(format_args!("migrate openclaw: {}", report.source));
    out(format_args!("layout: {}", report.layout));
    for section in &report.sections {
        out("");
        match &section.profile {
            Some(p) => out(format_args!("{} -> profile {p}", section.title)),
            None => out(&section.title),
        }
        for e in &section.entries {
            let value = e
                .value
                .as_deref()
                .map(|v| format!(" = {v}"))
                .unwrap_or_default();
            let legacy = e
                .legacy_of
                .as_deref()
                .map(|c| format!("  (legacy: now {c})"))
                .unwrap_or_default();
            out(format_args!("  {:<13} {}{value}{legacy}", e.status, e.key));
            out(format_args!("  {:<13} {}", "", e.reason));
        }
    }
    out("");
    out("profiles");
    for p in &report.profiles {
        out(format_args!(
            "  {}  ({}; used by {})",
            p.name,
            p.file,
            p.used_by.join(", ")
        ));
        for line in p.lint.to_string().lines() {
            out(format_args!("    {line}"));
        }
    }
    out(format_args!(
        "config.toml: default_profile = {:?}, allow_elevation = false",
        report.default_profile
    ));
    let c = report.counts;
    out("");
    out(format_args!(
        "{} mapped, {} approximated, {} ignored, {} refused, {} unknown",
        c.mapped, c.approximated, c.ignored, c.refused, c.unknown
    ));
    if report.blocking().next().is_some() {
        out(if report.allow_unsafe {
            "refused (written anyway because of --allow-unsafe, each with stockade's safe value):"
        } else {
            "refused:"
        });
        for (section, e) in report.blocking() {
            let what = if e.status == Status::Unknown {
                "unknown key"
            } else {
                "refused"
            };
            let value = e
                .value
                .as_deref()
                .map(|v| format!(" = {v}"))
                .unwrap_or_default();
            out(format_args!(
                "  {}{value} ({what}; {}): {}",
                e.key, section.title, e.reason
            ));
        }
    }
}

fn print_outcome(migration: &Migration, args: &OpenclawArgs, written: &[PathBuf]) {
    let report = &migration.report;
    let dir = args.out.display();
    if report.blocked {
        return;
    }
    if args.dry_run {
        out(format_args!(
            "dry run: nothing written; would write in {dir}:"
        ));
        for f in &report.files {
            let exists = args.out.join(f).symlink_metadata().is_ok();
            out(format_args!(
                "  {f}{}",
                if exists {
                    " (exists: --force replaces it)"
                } else {
                    ""
                }
            ));
        }
        return;
    }
    out(format_args!(
        "wrote {} file(s), each loaded back by stockade:",
        written.len()
    ));
    for p in written {
        out(format_args!("  {}", p.display()));
    }
    out(format_args!(
        "use them with: stockade --config {dir}/config.toml --profiles-dir {dir}/profiles profile show {}",
        report.default_profile
    ));
    out("(or copy config.toml and profiles/ into ~/.config/stockade/); API tokens: `stockade token create --name NAME`");
}
