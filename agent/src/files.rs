//! Moving a file into or out of the sandbox, as the sandbox user, with the sandbox's view of the
//! filesystem: what it may not write (a read-only root) it may not write here either. The bytes
//! are streamed (bounded memory either way) and their SHA-256 and count go into the MACed exit,
//! so the host knows the file arrived whole.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stockade_proto::{frame, mac, Exit, KillReport, Request, Status, StreamDigest};

use crate::launch::read_frame;
use crate::run::Held;

const CHUNK: usize = 64 * 1024;

fn digest(sha: Sha256, bytes: u64) -> StreamDigest {
    StreamDigest {
        sha256: sha.finalize().into(),
        bytes,
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn report(
    held: &Held,
    conn: &mut UnixStream,
    encoded_request: &[u8],
    status: Status,
    stdout: StreamDigest,
    stdin: StreamDigest,
    started: Instant,
) -> std::io::Result<()> {
    let counters = held.counters.read();
    let exit = Exit {
        status,
        timed_out: false,
        stopped: false,
        kill: KillReport::NotNeeded,
        leftovers: 0,
        stale: 0,
        ipc_removed: 0,
        before: counters,
        after: counters,
        stdout,
        stderr: StreamDigest {
            sha256: Sha256::digest(b"").into(),
            bytes: 0,
        },
        stdin,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let encoded = exit.encode();
    let mut payload = encoded.clone();
    payload.extend_from_slice(&mac::result(&held.key, encoded_request, &encoded));
    conn.write_all(&frame::encode(frame::EXIT, &payload))?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn no_stdin() -> StreamDigest {
    digest(Sha256::new(), 0)
}

/// Sends the file `request.argv[0]` as stdout frames.
pub fn read(
    held: &Held,
    mut conn: UnixStream,
    encoded_request: &[u8],
    request: &Request,
) -> std::io::Result<()> {
    let started = Instant::now();
    conn.set_write_timeout(Some(Duration::from_millis(request.timeout_ms.max(1))))?;
    conn.write_all(&frame::encode(frame::ACCEPTED, b""))?;
    let path = OsStr::from_bytes(&request.argv[0]);
    let mut sha = Sha256::new();
    let mut sent = 0u64;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO planted under the name must not hold the agent: refused below.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let status = match opened.and_then(|f| {
        if f.metadata()?.is_file() {
            Ok(f)
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        }
    }) {
        Err(e) => Status::NotStarted(errno(&e)),
        Ok(mut file) => {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break Status::Exited(0),
                    Ok(n) => {
                        sha.update(&buf[..n]);
                        sent += n as u64;
                        conn.write_all(&frame::encode(frame::STDOUT, &buf[..n]))?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Status::Failed(errno(&e)),
                }
            }
        }
    };
    report(
        held,
        &mut conn,
        encoded_request,
        status,
        digest(sha, sent),
        no_stdin(),
        started,
    )
}

/// Writes the stdin frames to the file `request.argv[0]`: into a new file beside it, renamed
/// over it only once whole, so a failed or interrupted copy leaves the old file as it was.
pub fn write(
    held: &Held,
    mut conn: UnixStream,
    encoded_request: &[u8],
    request: &Request,
) -> std::io::Result<()> {
    let started = Instant::now();
    conn.set_read_timeout(Some(Duration::from_millis(request.timeout_ms.max(1))))?;
    conn.write_all(&frame::encode(frame::ACCEPTED, b""))?;
    let path = std::path::Path::new(OsStr::from_bytes(&request.argv[0]));
    let mut file = match Partial::create(path) {
        Ok(f) => f,
        Err(e) => {
            let status = Status::NotStarted(errno(&e));
            return report(
                held,
                &mut conn,
                encoded_request,
                status,
                no_stdin(),
                no_stdin(),
                started,
            );
        }
    };
    let mut sha = Sha256::new();
    let mut received = 0u64;
    let status = loop {
        let (tag, payload) = match read_frame(&mut conn) {
            Ok(f) => f,
            // The host went away or stopped: what arrived stays, and is said to be short.
            Err(e) => break Status::Failed(errno(&e).max(libc::EPIPE)),
        };
        match tag {
            frame::STDIN => {
                sha.update(&payload);
                received += payload.len() as u64;
                if let Err(e) = file.file.write_all(&payload) {
                    break Status::Failed(errno(&e));
                }
            }
            frame::STDIN_EOF => match file.keep() {
                Ok(()) => break Status::Exited(0),
                Err(e) => break Status::Failed(errno(&e)),
            },
            _ => break Status::Failed(libc::EPROTO),
        }
    };
    report(
        held,
        &mut conn,
        encoded_request,
        status,
        no_stdin(),
        digest(sha, received),
        started,
    )
}

/// A file being written beside its destination (same directory, so the rename is atomic),
/// removed unless kept.
struct Partial {
    file: std::fs::File,
    temp: std::path::PathBuf,
    dest: std::path::PathBuf,
    kept: bool,
}

impl Partial {
    fn create(dest: &std::path::Path) -> std::io::Result<Partial> {
        // Only a regular file (or nothing) is replaced: not a directory, a FIFO or a device.
        match std::fs::metadata(dest) {
            Ok(m) if !m.is_file() => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let name = dest
            .file_name()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".stockade-{}.part", std::process::id()));
        let temp = dest.with_file_name(temp_name);
        let _ = std::fs::remove_file(&temp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&temp)?;
        Ok(Partial {
            file,
            temp,
            dest: dest.to_path_buf(),
            kept: false,
        })
    }

    fn keep(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.dest)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
