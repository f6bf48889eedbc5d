//! `stockade profile record` and `stockade profile verify`: argument structs, handlers and the
//! printed report.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use stockade::backend::{Sink, Stream};
use stockade::exit::{EXIT_DENIED, EXIT_STOCKADE_ERROR};
use stockade::plan::CommandLine;
use stockade::seccomp::{
    read_profile_file, record, seccomp_policy, verify, RecordError, RecordRequest, Recording,
    Verification, VerifyRequest,
};

use super::lint::EXIT_FINDINGS;
use super::{parse_duration, settings, GlobalArgs};

/// `stockade profile record [--profile P] [--merge EXISTING.json] [-o OUT.json] -- COMMAND`
#[derive(clap::Args, Debug, Clone)]
pub struct RecordArgs {
    /// Sandbox profile to record in (name or .toml path) [default: the configured default]
    #[arg(long, short)]
    pub profile: Option<String>,
    /// A profile an earlier `profile record` wrote: the result allows both workloads
    #[arg(long, value_name = "EXISTING.json")]
    pub merge: Option<PathBuf>,
    /// Write the profile here (and the report to stdout) [default: profile to stdout, report
    /// to stderr, workload output not shown]
    #[arg(short = 'o', long = "output", value_name = "OUT.json")]
    pub output: Option<PathBuf>,
    /// Then rerun the workload under the result and check that unshare and mount are refused
    #[arg(long)]
    pub verify: bool,
    /// Override the profile's timeout (e.g. 30s, 2m)
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The workload, as `exec` takes it (one word: shell text; several: a program and its
    /// arguments)
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// `stockade profile verify SECCOMP.json [--profile P] -- COMMAND`
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The seccomp profile to verify (Docker/OCI JSON, for example one `profile record` wrote)
    pub seccomp: PathBuf,
    /// Sandbox profile whose seccomp file it replaces [default: the configured default]
    #[arg(long, short)]
    pub profile: Option<String>,
    /// The exit status the workload must end with
    #[arg(long, default_value_t = 0)]
    pub expect_exit: i64,
    /// Override the profile's timeout (e.g. 30s, 2m)
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The workload, as `exec` takes it (one word: shell text; several: a program and its
    /// arguments)
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Records, writes the profile, optionally verifies; returns the exit status (0, or
/// [`EXIT_FINDINGS`] when verification failed; stockade errors and refusals as for `exec`).
pub async fn run_record(global: &GlobalArgs, args: &RecordArgs) -> anyhow::Result<u8> {
    let service = settings::service(global).await?;
    let principal = settings::principal();
    let req = RecordRequest {
        profile: args.profile.clone(),
        command: CommandLine::from_words(args.command.clone()).text(),
        timeout: args.timeout,
        merge: args.merge.clone(),
        principal: Some(principal.clone()),
    };
    // With the profile going to a file, the workload's output is shown (on stderr: stdout
    // carries the report).
    let sink = args
        .output
        .is_some()
        .then(|| Box::new(StderrSink) as Box<dyn Sink>);
    let rec = match record(&service, &req, sink).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut report = render(&rec);
    match &args.output {
        Some(path) => {
            std::fs::write(path, &rec.json)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let _ = writeln!(report, "written   {}", path.display());
        }
        None => print!("{}", rec.json),
    }
    let mut status = 0;
    if args.verify {
        let label = args
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from("recorded profile"));
        let req = VerifyRequest {
            profile: args.profile.clone(),
            seccomp: match seccomp_policy(label, rec.json.clone()) {
                Ok(s) => s,
                Err(e) => return fail(e),
            },
            command: req.command.clone(),
            expect_exit: rec.exit_code.unwrap_or(0),
            timeout: args.timeout,
        };
        match verify(&service, &principal, &req).await {
            Ok(v) => {
                report.push_str(&render_verification(&v));
                if !v.passed() {
                    status = EXIT_FINDINGS;
                }
            }
            Err(e) => return fail(e),
        }
    }
    emit(&report, args.output.is_some());
    Ok(status)
}

/// Verifies a seccomp file against a workload; 0 when every check passed, else
/// [`EXIT_FINDINGS`].
pub async fn run_verify(global: &GlobalArgs, args: &VerifyArgs) -> anyhow::Result<u8> {
    let service = settings::service(global).await?;
    let json = match read_profile_file(&args.seccomp) {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    let req = VerifyRequest {
        profile: args.profile.clone(),
        seccomp: match seccomp_policy(args.seccomp.clone(), json) {
            Ok(s) => s,
            Err(e) => return fail(e),
        },
        command: CommandLine::from_words(args.command.clone()).text(),
        expect_exit: args.expect_exit,
        timeout: args.timeout,
    };
    let v = match verify(&service, &settings::principal(), &req).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    print!(
        "verify    {} under {}\n{}",
        req.command,
        args.seccomp.display(),
        render_verification(&v)
    );
    Ok(if v.passed() { 0 } else { EXIT_FINDINGS })
}

fn fail(e: RecordError) -> anyhow::Result<u8> {
    super::say(&e);
    Ok(if e.is_denial() {
        EXIT_DENIED
    } else {
        EXIT_STOCKADE_ERROR
    })
}

/// The workload's output, on stderr as it comes.
struct StderrSink;

impl Sink for StderrSink {
    fn write(&mut self, _: Stream, bytes: &[u8]) {
        use std::io::Write;
        let _ = std::io::stderr().write_all(bytes);
    }
}

fn emit(report: &str, to_stdout: bool) {
    if to_stdout {
        print!("{report}");
    } else {
        eprint!("{report}");
    }
}

fn list(names: &std::collections::BTreeSet<String>) -> String {
    if names.is_empty() {
        "-".to_string()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(" ")
    }
}

/// The recording report: what ran, what the trace held, what the profile allows.
pub fn render(r: &Recording) -> String {
    let mut s = String::new();
    let exit = match (r.timed_out, r.exit_code) {
        (true, _) => "timed out".to_string(),
        (false, Some(c)) => format!("exit {c}"),
        (false, None) => "no exit status".to_string(),
    };
    let _ = writeln!(
        s,
        "recorded  {} ({exit}; workload {:.1} s, recording {:.1} s; profile {}, {})",
        r.command,
        r.workload_time.as_secs_f64(),
        r.total_time.as_secs_f64(),
        r.profile.name,
        r.arch
    );
    let _ = writeln!(
        s,
        "trace     {} calls by {} process(es), {} bytes{}",
        r.trace_calls,
        r.trace_processes,
        r.trace_bytes,
        if r.unparsed_lines > 0 {
            format!("; {} line(s) not understood", r.unparsed_lines)
        } else {
            String::new()
        }
    );
    let c = &r.classified;
    let _ = writeln!(
        s,
        "workload  {} syscall(s): {}",
        c.used.len(),
        list(&c.used)
    );
    let _ = writeln!(
        s,
        "baseline  {} syscall(s) for runc init, docker-init, the keeper and stockade's own execs; {} not used by the workload: {}",
        r.baseline.len(),
        r.baseline_only().len(),
        list(&r.baseline_only())
    );
    let _ = writeln!(
        s,
        "refused   only EPERM in the trace (left out, still EPERM): {}",
        list(&c.refused)
    );
    let _ = writeln!(
        s,
        "absent    only ENOSYS in the trace, or clone3 (answered ENOSYS): {}",
        list(&r.set.enosys)
    );
    if !c.unknown.is_empty() {
        let _ = writeln!(
            s,
            "unknown   not syscalls of {} (left out): {}",
            r.arch,
            list(&c.unknown)
        );
    }
    if let Some((path, added)) = &r.merged {
        let _ = writeln!(
            s,
            "merged    {}: {added} syscall(s) this run did not need",
            path.display()
        );
    }
    for m in &r.strace_messages {
        let _ = writeln!(s, "warning   {m}");
    }
    if r.timed_out {
        let _ = writeln!(
            s,
            "warning   the workload timed out: the profile covers only what ran before"
        );
    }
    let _ = writeln!(
        s,
        "profile   {} syscall(s) allowed; Docker's default allows {} with the same capabilities",
        r.allowed, r.docker_default_allowed
    );
    let _ = writeln!(
        s,
        "lint      score {}/100 ({} critical, {} warn, {} info)",
        r.lint.score, r.lint.critical, r.lint.warn, r.lint.info
    );
    for f in &r.lint.findings {
        let _ = writeln!(
            s,
            "          {} {} {}: {}",
            f.severity, f.id, f.subject, f.message
        );
    }
    s
}

fn render_verification(v: &Verification) -> String {
    format!("verify\n{v}")
}
