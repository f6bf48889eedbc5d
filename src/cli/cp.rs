//! `stockade cp`: a file into or out of a session's sandbox, as `docker cp` names them
//! (`SESSION:/PATH` for the sandbox side, `-` for stdin or stdout), streamed and byte-exact.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use stockade::audit::Direction;
use stockade::exec::ExecOptions;
use stockade::files::{CopyError, CopyRequest, CopyResult, Host};
use stockade::plan::validate_session_id;

use super::{out_json, say, settings, GlobalArgs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  stockade cp data.csv work:/workspace/data.csv\n  \
    stockade cp work:/workspace/out.json ./out.json\n  \
    tar c src | stockade cp - work:/workspace/src.tar\n\n\
    The sandbox side is SESSION:/ABSOLUTE/PATH; a host path containing ':' can be written \
    ./like:this. Only the profile's writable mounts (/workspace, /tmp) take files."
)]
pub struct CpArgs {
    /// Where from: a host file, `-` (stdin), or SESSION:/PATH
    pub from: String,
    /// Where to: SESSION:/PATH, or a host file or directory, or `-` (stdout)
    pub to: String,
    /// The profile to create the session under, if it does not exist yet
    #[arg(long, short)]
    pub profile: Option<String>,
    /// Print one JSON object (session, path, direction, bytes, sha256, audit_id)
    #[arg(long)]
    pub json: bool,
}

/// `SESSION:/PATH`, when `arg` names the sandbox side.
fn remote(arg: &str) -> Option<(String, String)> {
    let (session, path) = arg.split_once(':')?;
    (validate_session_id(session).is_ok() && path.starts_with('/'))
        .then(|| (session.to_string(), path.to_string()))
}

pub async fn run(global: &GlobalArgs, args: &CpArgs) -> anyhow::Result<u8> {
    let (request, host_side) = match (remote(&args.from), remote(&args.to)) {
        (None, Some((session, path))) => (
            CopyRequest {
                session,
                path,
                direction: Direction::In,
            },
            args.from.as_str(),
        ),
        (Some((session, path)), None) => (
            CopyRequest {
                session,
                path,
                direction: Direction::Out,
            },
            args.to.as_str(),
        ),
        (Some(_), Some(_)) => anyhow::bail!(
            "both sides name a sandbox; copy through the host (stockade cp A:/x ./x; stockade cp ./x B:/x)"
        ),
        (None, None) => anyhow::bail!(
            "neither side names a sandbox: write one side as SESSION:/ABSOLUTE/PATH"
        ),
    };
    let service = settings::service(global).await?;
    let principal = settings::principal();
    let cancel = settings::cancel_on_signals();
    let options = ExecOptions {
        profile: args.profile.clone(),
        ..Default::default()
    };
    let result = match request.direction {
        Direction::In => {
            let copied = if host_side == "-" {
                let mut stdin = tokio::io::stdin();
                let host = Host::Source {
                    reader: &mut stdin,
                    size: None,
                };
                service
                    .copy(&principal, &request, &options, host, &cancel)
                    .await
            } else {
                let mut file = open_source(Path::new(host_side)).await?;
                let size = file.metadata().await?.len();
                let host = Host::Source {
                    reader: &mut file,
                    size: Some(size),
                };
                service
                    .copy(&principal, &request, &options, host, &cancel)
                    .await
            };
            copied
        }
        Direction::Out if host_side == "-" => {
            use std::io::IsTerminal as _;
            // On a terminal the file's bytes are shown, not obeyed (no escape sequences).
            let mut terminal;
            let mut stdout;
            let sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send) =
                if std::io::stdout().is_terminal() {
                    terminal = Blocking(stockade::display::TerminalSafe::new(std::io::stdout()));
                    &mut terminal
                } else {
                    stdout = tokio::io::stdout();
                    &mut stdout
                };
            service
                .copy(&principal, &request, &options, Host::Sink(sink), &cancel)
                .await
        }
        Direction::Out => {
            let dest = destination(Path::new(host_side), &request.path);
            if let Some(mut special) = special_destination(&dest).await? {
                let copied = service
                    .copy(
                        &principal,
                        &request,
                        &options,
                        Host::Sink(&mut special),
                        &cancel,
                    )
                    .await;
                return finish(copied, args.json);
            }
            let mut part = Partial::create(&dest).await?;
            let copied = service
                .copy(
                    &principal,
                    &request,
                    &options,
                    Host::Sink(&mut part.file),
                    &cancel,
                )
                .await;
            if copied.is_ok() {
                part.keep().await?;
            }
            copied
        }
    };
    finish(result, args.json)
}

fn finish(result: Result<CopyResult, CopyError>, json: bool) -> anyhow::Result<u8> {
    match result {
        Ok(r) => {
            for note in &r.notes {
                say(note);
            }
            if json {
                out_json(&r)?;
            } else {
                let (from, to) = match r.direction {
                    Direction::In => ("host".to_string(), format!("{}:{}", r.session, r.path)),
                    Direction::Out => (format!("{}:{}", r.session, r.path), "host".to_string()),
                };
                say(format_args!(
                    "copied {} bytes {from} -> {to} (sha256 {})",
                    r.bytes, r.sha256
                ));
            }
            Ok(0)
        }
        Err(CopyError::Exec(e)) if e.is_denial() => {
            say(&e);
            Ok(stockade::exit::EXIT_DENIED)
        }
        Err(e) => Err(e.into()),
    }
}

async fn open_source(path: &Path) -> anyhow::Result<tokio::fs::File> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata().await?;
    anyhow::ensure!(
        meta.is_file(),
        "{} is not a regular file (copy a directory as an archive: tar c DIR | stockade cp - SESSION:/workspace/dir.tar)",
        path.display()
    );
    Ok(file)
}

/// The host file a copy out writes: `to` itself, or the sandbox file's name inside `to` when
/// that is a directory.
fn destination(to: &Path, sandbox_path: &str) -> PathBuf {
    if to.is_dir() {
        let name = Path::new(sandbox_path)
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_os_string());
        to.join(name)
    } else {
        to.to_path_buf()
    }
}

/// A destination that is not a plain file: a symbolic link is refused (the copy would land
/// wherever it points); a FIFO, a character device or a socket is written to as it is, never
/// replaced by a file. `None` for a regular file or nothing yet.
async fn special_destination(dest: &Path) -> anyhow::Result<Option<tokio::fs::File>> {
    use std::os::unix::fs::FileTypeExt as _;
    let meta = match tokio::fs::symlink_metadata(dest).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", dest.display())),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        anyhow::bail!(
            "{} is a symbolic link; stockade does not write through links: name the file it points to, or remove the link",
            dest.display()
        );
    }
    if kind.is_file() {
        return Ok(None);
    }
    if kind.is_fifo() || kind.is_char_device() {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(dest)
            .await
            .with_context(|| format!("cannot open {}", dest.display()))?;
        return Ok(Some(file));
    }
    anyhow::bail!(
        "{} is not a regular file, a FIFO or a character device; name a file to write",
        dest.display()
    )
}

/// A blocking writer (a terminal) as an async one; a CLI writes little enough to a terminal
/// that blocking the task is harmless.
struct Blocking<W: std::io::Write>(W);

impl<W: std::io::Write + Unpin> tokio::io::AsyncWrite for Blocking<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.0.write(buf))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.0.flush())
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.0.flush())
    }
}

/// A copy being written next to its destination, renamed over it only once whole: a failed
/// or interrupted copy leaves the destination as it was.
struct Partial {
    file: tokio::fs::File,
    path: PathBuf,
    dest: PathBuf,
    kept: bool,
}

impl Partial {
    async fn create(dest: &Path) -> anyhow::Result<Partial> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map_or_else(|| "copy".into(), |n| n.to_string_lossy().into_owned());
        let path = dir.join(format!(".{name}.stockade-{}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Partial {
            file,
            path,
            dest: dest.to_path_buf(),
            kept: false,
        })
    }

    async fn keep(&mut self) -> anyhow::Result<()> {
        self.file.sync_all().await?;
        tokio::fs::rename(&self.path, &self.dest)
            .await
            .with_context(|| format!("cannot move the copy to {}", self.dest.display()))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt as _;

    #[test]
    fn the_sandbox_side_is_session_colon_absolute_path() {
        assert_eq!(
            remote("work:/workspace/a b"),
            Some(("work".into(), "/workspace/a b".into()))
        );
        for host in [
            "./a:/b",
            "file.txt",
            "-",
            "work:relative",
            "/abs:/x",
            ":/x",
            "a b:/x",
        ] {
            assert_eq!(remote(host), None, "{host}");
        }
    }

    #[tokio::test]
    async fn links_are_refused_and_devices_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = special_destination(&link).await.unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(special_destination(&target).await.unwrap().is_none());
        assert!(special_destination(&dir.path().join("new"))
            .await
            .unwrap()
            .is_none());
        assert!(special_destination(Path::new("/dev/null"))
            .await
            .unwrap()
            .is_some());
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Opened for writing only once a reader is there.
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::read(fifo).unwrap()
        });
        let mut w = special_destination(&fifo).await.unwrap().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut w, b"via fifo")
            .await
            .unwrap();
        drop(w);
        assert_eq!(reader.join().unwrap(), b"via fifo");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn a_directory_destination_takes_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            destination(dir.path(), "/workspace/out.json"),
            dir.path().join("out.json")
        );
        let file = dir.path().join("named");
        assert_eq!(destination(&file, "/workspace/out.json"), file);
    }

    proptest::proptest! {
        #[test]
        fn a_sandbox_side_is_exactly_session_colon_path(arg in "[a-z0-9:/._ -]{0,40}") {
            if let Some((session, path)) = remote(&arg) {
                proptest::prop_assert!(validate_session_id(&session).is_ok());
                proptest::prop_assert!(path.starts_with('/'));
                proptest::prop_assert_eq!(format!("{session}:{path}"), arg);
            }
        }
    }
}
