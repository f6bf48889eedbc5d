//! A unix-socket proxy in front of the real engine socket, to fake engine faults without
//! touching the machine's dockerd: point `DOCKER_HOST` at [`EngineProxy::docker_host`], then
//! switch it between passing traffic, refusing it ("stopped"), and stalling it ("wedged").

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often copying threads look at the mode.
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward everything.
    Pass = 0,
    /// The engine is gone: new connections are closed at once, open ones are cut.
    Stopped = 1,
    /// The engine hangs: connections are accepted, nothing is forwarded either way.
    Wedged = 2,
}

pub struct EngineProxy {
    dir: tempfile::TempDir,
    mode: Arc<AtomicU8>,
    shutdown: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// The real engine socket (`DOCKER_HOST` if it is a unix socket, else the default).
fn upstream() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

impl EngineProxy {
    pub fn start() -> EngineProxy {
        let dir = tempfile::Builder::new()
            .prefix("stockade-proxy-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let shutdown = Arc::new(AtomicBool::new(false));
        let (m, s) = (mode.clone(), shutdown.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (m, s) = (m.clone(), s.clone());
                        std::thread::spawn(move || serve(client, m, s));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => break,
                }
            }
        });
        EngineProxy {
            dir,
            mode,
            shutdown,
            accept: Some(accept),
        }
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.path().join("engine.sock").display())
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn mode(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        0 => Mode::Pass,
        1 => Mode::Stopped,
        _ => Mode::Wedged,
    }
}

fn serve(client: UnixStream, m: Arc<AtomicU8>, shutdown: Arc<AtomicBool>) {
    if mode(&m) == Mode::Stopped {
        return;
    }
    let Ok(engine) = UnixStream::connect(upstream()) else {
        return;
    };
    let pumps = [
        (client.try_clone().unwrap(), engine.try_clone().unwrap()),
        (engine, client),
    ];
    let threads: Vec<JoinHandle<()>> = pumps
        .into_iter()
        .map(|(from, to)| {
            let (m, s) = (m.clone(), shutdown.clone());
            std::thread::spawn(move || pump(from, to, &m, &s))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Copies `from` to `to` while the mode is Pass; holds still while Wedged; cuts both on
/// Stopped, on end of stream, or on shutdown.
fn pump(mut from: UnixStream, mut to: UnixStream, m: &AtomicU8, shutdown: &AtomicBool) {
    from.set_read_timeout(Some(TICK)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        match mode(m) {
            Mode::Stopped => break,
            Mode::Wedged => {
                std::thread::sleep(TICK);
                continue;
            }
            Mode::Pass => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
