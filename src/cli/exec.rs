//! `stockade exec`: one command, checked, run in a sandbox, audited; the result as the
//! command's own output and exit status, or as one JSON object (docs/exec-result.schema.json).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use stockade::audit::Outcome;
use stockade::backend::{BackendKind, Sink, Stream};
use stockade::cancel::{exit_status, Reason};
use stockade::display::TerminalSafe;
use stockade::exec::{ExecError, ExecOptions, ExecResult};
use stockade::exit::{EXIT_DENIED, EXIT_STOCKADE_ERROR, EXIT_TIMEOUT};
use stockade::plan::{CommandLine, ExecRequest};

use super::{out, say, settings, GlobalArgs};

/// How long the end of a run waits for a terminal or pipe that stopped reading its output.
const OUTPUT_STALL: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Profile name or path to a profile file
    #[arg(long, short)]
    pub profile: Option<String>,
    /// Run in the warm sandbox of this session (created on first use)
    #[arg(long, short)]
    pub session: Option<String>,
    /// Override the profile's timeout (e.g. 30s, 2m)
    #[arg(long, value_parser = super::parse_duration)]
    pub timeout: Option<Duration>,
    /// Working directory inside the sandbox (must exist there)
    #[arg(long)]
    pub workdir: Option<String>,
    /// Environment variable for the command (names must be allowed by the profile)
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Put secret NAME in the command's environment as NAME (see `stockade secret`); its
    /// value is redacted from the output and the audit log
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Use the elevated profile (requires allow_elevation in the configuration)
    #[arg(long)]
    pub elevated: bool,
    /// Feed stockade's stdin to the command (otherwise it reads /dev/null)
    #[arg(long)]
    pub stdin: bool,
    /// Print one JSON object (docs/exec-result.schema.json) instead of the command's output
    #[arg(long)]
    pub json: bool,
    /// With --json: also give both streams interleaved in arrival order (`output`)
    #[arg(long, requires = "json")]
    pub interleaved: bool,
    /// The command. One word is a shell command (`bash -c WORD`); several words are a program
    /// and its arguments, run without a shell (quoting kept, as `docker run` does)
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// The exit status for a result: the command's own, 124 timeout, 125 stockade error (and an
/// output flood), 126 policy denial, 128 + N when stockade got signal N.
pub fn exit_code(result: &ExecResult) -> u8 {
    match result.outcome {
        Outcome::Completed => result
            .exit_code
            .map_or(EXIT_STOCKADE_ERROR, |c| (c & 0xff) as u8),
        Outcome::TimedOut => EXIT_TIMEOUT,
        Outcome::Denied => EXIT_DENIED,
        Outcome::Interrupted => match result.cancelled {
            Some(Reason::Signal(n)) => exit_status(n),
            _ => EXIT_STOCKADE_ERROR,
        },
        Outcome::Error | Outcome::OutputLimit => EXIT_STOCKADE_ERROR,
    }
}

pub async fn run(global: &GlobalArgs, args: &ExecArgs) -> anyhow::Result<u8> {
    let service = settings::service(global).await?;
    let principal = settings::principal();
    let cancel = settings::cancel_on_signals();
    // Not UTF-8: refused (the engine API carries text), but on record, shown lossily.
    let not_utf8 = args.command.iter().position(|a| a.to_str().is_none());
    let words: Vec<String> = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let request = ExecRequest {
        command: CommandLine::from_words(words),
        session: args.session.clone(),
        timeout: args.timeout,
        workdir: args.workdir.clone(),
        env: args.env.clone(),
        stdin: args.stdin,
        stdin_given: None,
    };
    let options = ExecOptions {
        profile: args.profile.clone(),
        elevated: args.elevated,
        interleaved: args.interleaved,
        bypass_check: false,
        secrets: args.secrets.clone(),
    };
    let (sink, writer) = if args.json {
        (None, None)
    } else {
        let (sink, writer) = TerminalSink::start();
        (Some(Box::new(sink) as Box<dyn Sink>), Some(writer))
    };
    let result = match not_utf8 {
        Some(index) => service.refuse(
            &principal,
            &request,
            &options,
            ExecError::NotUtf8 {
                argument: index + 1,
            },
        ),
        None if args.stdin => {
            let mut stdin = tokio::io::stdin();
            service
                .exec(
                    &principal,
                    &request,
                    &options,
                    Some(&mut stdin),
                    sink,
                    &cancel,
                )
                .await
        }
        None => {
            service
                .exec(&principal, &request, &options, None, sink, &cancel)
                .await
        }
    };
    if let Some(writer) = writer {
        writer.finish();
    }
    report(&result, args.json);
    Ok(exit_code(&result))
}

/// Prints the result: as JSON, or as messages on stderr after the command's own output.
pub fn report(result: &ExecResult, json: bool) {
    // The profile's warnings are said on stderr whatever the output mode (and are in the JSON).
    for warning in &result.warnings {
        say(format_args!("warning: {warning}"));
    }
    if json {
        match serde_json::to_string(result) {
            Ok(line) => out(line),
            Err(e) => say(format_args!("cannot serialize the result: {e}")),
        }
        return;
    }
    if let Some(error) = &result.error {
        say(error);
    } else if result.outcome == Outcome::TimedOut {
        say("timed out; the command's processes were killed inside the sandbox");
    }
    for note in &result.notes {
        say(note);
    }
}

/// The result of an `exec` that never reached the service (bad flags), in the same shape.
pub fn usage_error(message: &str, json: bool) -> u8 {
    if json {
        let mut result = ExecResult::failed("", message, BackendKind::Docker);
        result.notes.push("see `stockade exec --help`".to_string());
        report(&result, true);
    } else {
        eprint!("{message}");
    }
    EXIT_STOCKADE_ERROR
}

/// Whether a command line that failed to parse asked for `exec --json`.
pub fn wants_json(args: &[OsString]) -> bool {
    let before_dashes: Vec<&OsString> = args.iter().take_while(|a| *a != "--").collect();
    before_dashes.iter().any(|a| *a == "exec") && before_dashes.iter().any(|a| *a == "--json")
}

/// The command's output, echoed live: raw bytes into a pipe or a file, but on a terminal with
/// escape sequences and invisible characters shown instead of acted on. Writes happen on a
/// thread of their own, so a reader that stops reading can hold up neither the command's
/// timeout nor its audit record; what is queued is bounded by the output cap.
struct TerminalSink {
    queue: mpsc::Sender<(Stream, Vec<u8>)>,
}

struct Writer {
    done: mpsc::Receiver<()>,
    written: Arc<AtomicU64>,
}

impl TerminalSink {
    fn start() -> (TerminalSink, Writer) {
        let (queue, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
        let written = Arc::new(AtomicU64::new(0));
        let progress = written.clone();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = terminal_safe(std::io::stdout());
            let mut stderr = terminal_safe(std::io::stderr());
            for (stream, bytes) in rx {
                let to = match stream {
                    Stream::Stdout => &mut stdout,
                    Stream::Stderr => &mut stderr,
                };
                if to.write_all(&bytes).and_then(|()| to.flush()).is_err() {
                    continue;
                }
                progress.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            let _ = done_tx.send(());
        });
        (TerminalSink { queue }, Writer { done, written })
    }
}

impl Sink for TerminalSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let _ = self.queue.send((stream, bytes.to_vec()));
    }
}

impl Writer {
    /// Waits for the output to be written, unless the reader stalls for [`OUTPUT_STALL`].
    fn finish(self) {
        let mut seen = self.written.load(Ordering::Relaxed);
        loop {
            match self.done.recv_timeout(OUTPUT_STALL) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = self.written.load(Ordering::Relaxed);
                    if now == seen {
                        say("the command's output is not being read; the rest of it is dropped");
                        return;
                    }
                    seen = now;
                }
                _ => return,
            }
        }
    }
}

fn terminal_safe<W>(stream: W) -> Box<dyn Write + Send>
where
    W: Write + IsTerminal + Send + 'static,
{
    if stream.is_terminal() {
        Box::new(TerminalSafe::new(stream))
    } else {
        Box::new(stream)
    }
}
