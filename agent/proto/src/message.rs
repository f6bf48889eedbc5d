//! The messages and their encodings.

use crate::cgroup::Counters;
use crate::codec::{DecodeError, Reader, Writer};
use crate::NONCE_LEN;

/// Most argv or environment entries a request may carry (Linux's own argv limit is far lower
/// in practice: 128 KiB per argument, and the whole frame is capped at 1 MiB).
pub const MAX_LIST: usize = 65_536;

/// What the agent says when the host connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u16,
    /// Fresh per connection: the request must carry it back.
    pub nonce: [u8; NONCE_LEN],
    /// The agent's version (its `CARGO_PKG_VERSION`), for messages.
    pub version: String,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        Writer::new()
            .u16(self.protocol)
            .fixed(&self.nonce)
            .bytes(self.version.as_bytes())
            .finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Hello, DecodeError> {
        let mut r = Reader::new(bytes);
        let protocol = r.u16("protocol")?;
        let nonce = r.fixed("nonce")?;
        let version = String::from_utf8(r.bytes("version")?)
            .map_err(|_| DecodeError::Invalid { field: "version" })?;
        r.end()?;
        Ok(Hello {
            protocol,
            nonce,
            version,
        })
    }
}

/// What a request asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Run `argv` as a command.
    Run,
    /// Send the file `argv[0]` as stdout frames.
    ReadFile,
    /// Write the stdin frames to the file `argv[0]` (created or truncated).
    WriteFile,
}

/// One command for the agent. Everything the host relies on is here, under the request MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub protocol: u16,
    pub op: Op,
    /// The agent's [`Hello::nonce`] for this connection.
    pub agent_nonce: [u8; NONCE_LEN],
    /// The host's own nonce, fresh per request.
    pub host_nonce: [u8; NONCE_LEN],
    /// The program and its arguments (the first is looked up in `PATH`).
    pub argv: Vec<Vec<u8>>,
    /// `NAME=VALUE` entries added to the agent's environment.
    pub env: Vec<Vec<u8>>,
    pub workdir: Vec<u8>,
    pub timeout_ms: u64,
    /// TERM-to-KILL grace when the command is ended.
    pub grace_ms: u64,
    /// Whether stdin frames follow (else the command's stdin is /dev/null).
    pub stdin: bool,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        Writer::new()
            .u16(self.protocol)
            .u8(match self.op {
                Op::Run => 0,
                Op::ReadFile => 1,
                Op::WriteFile => 2,
            })
            .fixed(&self.agent_nonce)
            .fixed(&self.host_nonce)
            .list(&self.argv)
            .list(&self.env)
            .bytes(&self.workdir)
            .u64(self.timeout_ms)
            .u64(self.grace_ms)
            .bool(self.stdin)
            .finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let request = Request {
            protocol: r.u16("protocol")?,
            op: match r.u8("op")? {
                0 => Op::Run,
                1 => Op::ReadFile,
                2 => Op::WriteFile,
                _ => return Err(DecodeError::Invalid { field: "op" }),
            },
            agent_nonce: r.fixed("agent_nonce")?,
            host_nonce: r.fixed("host_nonce")?,
            argv: r.list("argv", MAX_LIST)?,
            env: r.list("env", MAX_LIST)?,
            workdir: r.bytes("workdir")?,
            timeout_ms: r.u64("timeout_ms")?,
            grace_ms: r.u64("grace_ms")?,
            stdin: r.bool("stdin")?,
        };
        r.end()?;
        if request.argv.is_empty() {
            return Err(DecodeError::Invalid { field: "argv" });
        }
        Ok(request)
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It could not be started (`errno` from exec: ENOENT, EACCES...).
    NotStarted(i32),
    /// A file operation failed part way (`errno`).
    Failed(i32),
    /// The working directory does not exist or is not a directory (`errno`); nothing ran.
    NoWorkdir(i32),
}

/// Whether ending processes was needed, and whether it worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReport {
    /// Nothing had to be ended.
    NotNeeded,
    /// Everything that had to be ended is gone.
    Complete,
    /// Something survived KILL: the sandbox must be reset.
    Incomplete,
}

/// What the agent saw on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamDigest {
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// The agent's account of one command, sent under the result MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub status: Status,
    /// The command ran past its timeout and was ended.
    pub timed_out: bool,
    /// The host asked for it to be ended (interrupt, output limit).
    pub stopped: bool,
    pub kill: KillReport,
    /// Processes of the sandbox user still running when the command exited, which were ended.
    pub leftovers: u32,
    /// Processes of earlier executions found running before this one started, which were ended.
    pub stale: u32,
    /// System V IPC objects and message queues the command left, which were removed.
    pub ipc_removed: u32,
    /// The sandbox's cgroup counters right before the command started...
    pub before: Counters,
    /// ... and once it and everything it left were gone.
    pub after: Counters,
    pub stdout: StreamDigest,
    pub stderr: StreamDigest,
    pub stdin: StreamDigest,
    pub duration_ms: u64,
}

fn put_counters(w: &mut Writer, c: &Counters) {
    w.bool(c.pids_max.is_some())
        .u64(c.pids_max.unwrap_or(0))
        .bool(c.oom_kills.is_some())
        .u64(c.oom_kills.unwrap_or(0));
}

fn get_counters(r: &mut Reader<'_>) -> Result<Counters, DecodeError> {
    let has_pids = r.bool("pids_max")?;
    let pids = r.u64("pids_max")?;
    let has_oom = r.bool("oom_kills")?;
    let oom = r.u64("oom_kills")?;
    // One encoding per value: an absent counter is written as 0.
    if (!has_pids && pids != 0) || (!has_oom && oom != 0) {
        return Err(DecodeError::Invalid { field: "counters" });
    }
    Ok(Counters {
        pids_max: has_pids.then_some(pids),
        oom_kills: has_oom.then_some(oom),
    })
}

fn put_digest(w: &mut Writer, d: &StreamDigest) {
    w.fixed(&d.sha256).u64(d.bytes);
}

fn get_digest(r: &mut Reader<'_>, field: &'static str) -> Result<StreamDigest, DecodeError> {
    Ok(StreamDigest {
        sha256: r.fixed(field)?,
        bytes: r.u64(field)?,
    })
}

impl Exit {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self.status {
            Status::Exited(c) => w.u8(0).i32(c),
            Status::Signaled(s) => w.u8(1).i32(s),
            Status::NotStarted(e) => w.u8(2).i32(e),
            Status::Failed(e) => w.u8(3).i32(e),
            Status::NoWorkdir(e) => w.u8(4).i32(e),
        };
        w.bool(self.timed_out)
            .bool(self.stopped)
            .u8(match self.kill {
                KillReport::NotNeeded => 0,
                KillReport::Complete => 1,
                KillReport::Incomplete => 2,
            });
        w.u32(self.leftovers).u32(self.stale).u32(self.ipc_removed);
        put_counters(&mut w, &self.before);
        put_counters(&mut w, &self.after);
        put_digest(&mut w, &self.stdout);
        put_digest(&mut w, &self.stderr);
        put_digest(&mut w, &self.stdin);
        w.u64(self.duration_ms);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Exit, DecodeError> {
        let mut r = Reader::new(bytes);
        let kind = r.u8("status")?;
        let value = r.i32("status")?;
        let status = match kind {
            0 => Status::Exited(value),
            1 => Status::Signaled(value),
            2 => Status::NotStarted(value),
            3 => Status::Failed(value),
            4 => Status::NoWorkdir(value),
            _ => return Err(DecodeError::Invalid { field: "status" }),
        };
        let timed_out = r.bool("timed_out")?;
        let stopped = r.bool("stopped")?;
        let kill = match r.u8("kill")? {
            0 => KillReport::NotNeeded,
            1 => KillReport::Complete,
            2 => KillReport::Incomplete,
            _ => return Err(DecodeError::Invalid { field: "kill" }),
        };
        let exit = Exit {
            status,
            timed_out,
            stopped,
            kill,
            leftovers: r.u32("leftovers")?,
            stale: r.u32("stale")?,
            ipc_removed: r.u32("ipc_removed")?,
            before: get_counters(&mut r)?,
            after: get_counters(&mut r)?,
            stdout: get_digest(&mut r, "stdout")?,
            stderr: get_digest(&mut r, "stderr")?,
            stdin: get_digest(&mut r, "stdin")?,
            duration_ms: r.u64("duration_ms")?,
        };
        r.end()?;
        Ok(exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_request() -> Request {
        Request {
            protocol: crate::PROTOCOL,
            op: Op::Run,
            agent_nonce: [1; 16],
            host_nonce: [2; 16],
            argv: vec![
                b"bash".to_vec(),
                b"-c".to_vec(),
                b"echo 'hi there'".to_vec(),
            ],
            env: vec![b"LANG=C.UTF-8".to_vec()],
            workdir: b"/workspace".to_vec(),
            timeout_ms: 60_000,
            grace_ms: 2_000,
            stdin: true,
        }
    }

    pub(crate) fn sample_exit() -> Exit {
        Exit {
            status: Status::Signaled(9),
            timed_out: true,
            stopped: false,
            kill: KillReport::Complete,
            leftovers: 3,
            stale: 1,
            ipc_removed: 2,
            before: Counters {
                pids_max: Some(0),
                oom_kills: None,
            },
            after: Counters {
                pids_max: Some(17),
                oom_kills: Some(1),
            },
            stdout: StreamDigest {
                sha256: [9; 32],
                bytes: 12,
            },
            stderr: StreamDigest::default(),
            stdin: StreamDigest {
                sha256: [3; 32],
                bytes: 0,
            },
            duration_ms: 1234,
        }
    }

    #[test]
    fn messages_round_trip() {
        let req = sample_request();
        assert_eq!(Request::decode(&req.encode()), Ok(req));
        let exit = sample_exit();
        assert_eq!(Exit::decode(&exit.encode()), Ok(exit));
        let hello = Hello {
            protocol: 2,
            nonce: [5; 16],
            version: "0.1.0".into(),
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
    }

    #[test]
    fn truncated_trailing_and_invalid_payloads_are_refused() {
        let bytes = sample_request().encode();
        for cut in 0..bytes.len() {
            assert!(Request::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Request::decode(&long),
            Err(DecodeError::Trailing { bytes: 1 })
        );
        let exit = sample_exit().encode();
        let mut bad = exit.clone();
        bad[0] = 7;
        assert_eq!(
            Exit::decode(&bad),
            Err(DecodeError::Invalid { field: "status" })
        );
        let empty_argv = Request {
            argv: vec![],
            ..sample_request()
        };
        assert!(Request::decode(&empty_argv.encode()).is_err());
    }

    #[test]
    fn an_absent_counter_has_one_encoding() {
        // Found by the `wire` fuzz target: an absent counter with a value decoded, and encoded
        // back differently.
        let mut bytes = sample_exit().encode();
        // status (5), flags and kill (3), leftovers, stale and ipc (12), the counters before (18):
        // the flag of `after.pids_max`, which is Some(17).
        let after_pids = 5 + 3 + 12 + 18;
        bytes[after_pids] = 0;
        assert_eq!(
            Exit::decode(&bytes),
            Err(DecodeError::Invalid { field: "counters" })
        );
    }

    #[test]
    fn a_huge_list_count_allocates_nothing() {
        let mut w = Writer::new();
        w.u16(2).u8(0).fixed(&[0; 16]).fixed(&[0; 16]).u32(u32::MAX);
        assert!(matches!(
            Request::decode(&w.finish()),
            Err(DecodeError::TooMany { .. })
        ));
        let mut w = Writer::new();
        w.u16(2).u8(0).fixed(&[0; 16]).fixed(&[0; 16]).u32(60_000);
        assert_eq!(
            Request::decode(&w.finish()),
            Err(DecodeError::Truncated { field: "argv" })
        );
    }

    /// A small deterministic generator: the decoders never panic on any input.
    #[test]
    fn decoders_never_panic_on_noise() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [sample_request().encode(), sample_exit().encode()];
        for i in 0..20_000 {
            let mut bytes = seeds[i % 2].clone();
            let flips = (next() % 8) as usize;
            for _ in 0..flips {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate((next() as usize) % (bytes.len() + 1));
            let _ = Request::decode(&bytes);
            let _ = Exit::decode(&bytes);
            let _ = Hello::decode(&bytes);
        }
    }
}
