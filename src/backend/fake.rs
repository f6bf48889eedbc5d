//! A scripted backend for unit tests of the flow above the backend boundary: it records every
//! call and does what the test scripted (succeed, fail, hang until cancelled, leave the kill
//! unconfirmed), so the exec flow's decisions are tested without an engine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    Backend, BackendError, BackendKind, Copied, Ended, ProcessSpec, Ran, Recovered, Runner,
    Sandbox, SandboxInfo, SandboxKind, SandboxSpec, Stdin, Stream, Streams,
};
use crate::cancel::Cancel;

/// A call the flow made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Acquire { name: String, known: bool },
    Run { argv: Vec<String> },
    KillAll { name: String },
    Reset { name: String },
    Remove { id: String },
    List,
    CopyIn { path: String },
    CopyOut { path: String },
}

/// What `acquire` does.
#[derive(Debug, Clone, Default)]
pub enum Acquire {
    /// Hands out a sandbox (brought back as said, for a session).
    #[default]
    Ready,
    Recovered(Recovered),
    /// Fails as the engine would.
    Fail(String),
    /// Never finishes (the flow must give way to cancellation).
    Hang,
}

/// What `run` does.
#[derive(Debug, Clone)]
pub enum Run {
    /// Writes `stdout`, then exits with `code`.
    Exit { code: i64, stdout: Vec<u8> },
    /// Runs past its timeout (reported as timed out, its processes ended).
    Timeout,
    /// Floods its output.
    Flood,
    /// Waits for the cancellation, then reports being interrupted.
    UntilCancelled,
    /// Exits, but ending what it left could not be confirmed: the sandbox must be reset.
    KillIncomplete,
    /// The backend fails mid-run.
    Fail(String),
    /// The backend fails mid-run and resets the sandbox, since the command's end is unknown.
    FailAndReset(String),
    /// Prints the value of environment variable `name`, then its base64, each split across
    /// two writes (as `echo "$NAME"; echo "$NAME" | base64` might arrive).
    PrintEnv { name: String },
}

impl Default for Run {
    fn default() -> Self {
        Run::Exit {
            code: 0,
            stdout: b"ok\n".to_vec(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    acquire: Acquire,
    run: Run,
    sandboxes: Vec<SandboxInfo>,
    file: Vec<u8>,
}

/// The scripted backend; clones share their script and their record of calls.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    state: Arc<Mutex<State>>,
}

impl FakeBackend {
    pub fn new(acquire: Acquire, run: Run) -> FakeBackend {
        let fake = FakeBackend::default();
        {
            let mut state = fake.state.lock().unwrap();
            state.acquire = acquire;
            state.run = run;
        }
        fake
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn record(&self, call: Call) {
        self.state.lock().unwrap().calls.push(call);
    }

    /// Whether the flow asked for a sandbox at all.
    pub fn acquired(&self) -> bool {
        self.calls()
            .iter()
            .any(|c| matches!(c, Call::Acquire { .. }))
    }

    /// The file `copy_in` received last.
    pub fn file(&self) -> Vec<u8> {
        self.state.lock().unwrap().file.clone()
    }
}

fn ended(exit_code: Option<i64>) -> Ended {
    Ended {
        exit_code,
        timed_out: false,
        flooded: false,
        interrupted: None,
        kill_incomplete: false,
        duration: Duration::from_millis(1),
        hits: Some(Default::default()),
        leftovers: 0,
        ipc_removed: 0,
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn uses_agent(&self) -> bool {
        false
    }

    async fn acquire(
        &self,
        spec: &SandboxSpec,
        known: bool,
        _progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox, BackendError> {
        self.record(Call::Acquire {
            name: spec.name.clone(),
            known,
        });
        let acquire = self.state.lock().unwrap().acquire.clone();
        let recovered = match acquire {
            Acquire::Ready => None,
            Acquire::Recovered(r) => Some(r),
            Acquire::Fail(what) => return Err(BackendError::Protocol { what }),
            Acquire::Hang => std::future::pending().await,
        };
        self.state.lock().unwrap().sandboxes.push(SandboxInfo {
            id: format!("id-{}", spec.name),
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            owner: spec.owner.clone(),
            profile: spec.profile.clone(),
            state: "running".into(),
            created: 0,
            version: Some(env!("CARGO_PKG_VERSION").into()),
        });
        Ok(Sandbox {
            id: format!("id-{}", spec.name),
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            channel: None,
            recovered,
            placement: None,
        })
    }

    async fn run(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        _stdin: Stdin<'_>,
        streams: &mut Streams,
        cancel: &Cancel,
    ) -> Result<Ran, BackendError> {
        self.record(Call::Run {
            argv: process.argv.clone(),
        });
        let run = self.state.lock().unwrap().run.clone();
        let ended = match run {
            Run::Exit { code, stdout } => {
                streams.push(Stream::Stdout, &stdout);
                ended(Some(code))
            }
            Run::PrintEnv { name } => {
                use base64::Engine as _;
                let prefix = format!("{name}=");
                let value = process
                    .env
                    .iter()
                    .find_map(|e| e.strip_prefix(&prefix))
                    .unwrap_or_default()
                    .to_string();
                let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
                for text in [value, b64] {
                    let line = format!("{text}\n").into_bytes();
                    let (a, b) = line.split_at(line.len() / 2);
                    streams.push(Stream::Stdout, a);
                    streams.push(Stream::Stdout, b);
                }
                ended(Some(0))
            }
            Run::Timeout => Ended {
                timed_out: true,
                ..ended(None)
            },
            Run::Flood => {
                let chunk = vec![b'y'; 1 << 16];
                while streams.total() <= process.output_hard_limit {
                    streams.push(Stream::Stdout, &chunk);
                }
                Ended {
                    flooded: true,
                    ..ended(None)
                }
            }
            Run::UntilCancelled => Ended {
                interrupted: Some(cancel.wait().await),
                ..ended(None)
            },
            Run::KillIncomplete => Ended {
                kill_incomplete: true,
                ..ended(Some(0))
            },
            Run::Fail(what) => return Err(BackendError::Protocol { what }),
            Run::FailAndReset(what) => {
                self.record(Call::Reset {
                    name: sandbox.name.clone(),
                });
                return Err(BackendError::Reset {
                    source: Box::new(BackendError::Protocol { what }),
                    failed: None,
                });
            }
        };
        Ok(Ran {
            ended,
            runner: Runner::Agent,
            stdout_sha256: None,
            stderr_sha256: None,
            warnings: Vec::new(),
        })
    }

    async fn kill_all(&self, sandbox: &Sandbox, _: &ProcessSpec) -> Result<bool, BackendError> {
        self.record(Call::KillAll {
            name: sandbox.name.clone(),
        });
        Ok(true)
    }

    async fn reset(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        self.record(Call::Reset {
            name: sandbox.name.clone(),
        });
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        self.record(Call::Remove { id: id.to_string() });
        self.state
            .lock()
            .unwrap()
            .sandboxes
            .retain(|s| s.id != id && s.name != id);
        Ok(())
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<SandboxInfo>, BackendError> {
        self.record(Call::List);
        Ok(self
            .state
            .lock()
            .unwrap()
            .sandboxes
            .iter()
            .filter(|s| owner.map_or(true, |o| s.owner == o))
            .cloned()
            .collect())
    }

    async fn census(&self) -> Result<Vec<(String, bool)>, BackendError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .sandboxes
            .iter()
            .map(|s| (s.id.clone(), true))
            .collect())
    }

    async fn copy_in(
        &self,
        _sandbox: &Sandbox,
        _process: &ProcessSpec,
        path: &str,
        source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
        _size: Option<u64>,
    ) -> Result<Copied, BackendError> {
        use sha2::Digest;
        use tokio::io::AsyncReadExt;
        self.record(Call::CopyIn {
            path: path.to_string(),
        });
        let mut file = Vec::new();
        source
            .read_to_end(&mut file)
            .await
            .map_err(|e| BackendError::Files {
                what: e.to_string(),
            })?;
        let copied = Copied {
            bytes: file.len() as u64,
            sha256: sha2::Sha256::digest(&file).into(),
        };
        self.state.lock().unwrap().file = file;
        Ok(copied)
    }

    async fn copy_out(
        &self,
        _sandbox: &Sandbox,
        _process: &ProcessSpec,
        path: &str,
        sink: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Copied, BackendError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        self.record(Call::CopyOut {
            path: path.to_string(),
        });
        let file = self.state.lock().unwrap().file.clone();
        sink.write_all(&file)
            .await
            .map_err(|e| BackendError::Files {
                what: e.to_string(),
            })?;
        Ok(Copied {
            bytes: file.len() as u64,
            sha256: sha2::Sha256::digest(&file).into(),
        })
    }
}

/// A session's sandbox kind, for tests.
pub fn session_kind(name: &str) -> SandboxKind {
    SandboxKind::Session {
        name: name.to_string(),
    }
}
