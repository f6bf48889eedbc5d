//! Executions of the API: the output sinks a request's face needs (a stream of events, a
//! buffer a poll reads), and the background executions kept for their polls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::backend::{Sink, Stream};
use crate::cancel::Canceller;
use crate::exec::ExecResult;

/// Text of a byte stream that arrives in pieces: a UTF-8 sequence split across two pieces is
/// held back until it is whole; what is not UTF-8 becomes U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for the rest.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{fffd}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end (an incomplete sequence, as U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// One line of an `application/x-ndjson` exec response.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// The last line: the result, as `exec --json` prints it.
    Exit(Box<ExecResult>),
}

/// A sink that turns output into events for a streaming response. What it queues is bounded
/// by the profile's output cap (a sink only gets the kept head live, and the tail at the end).
pub struct EventSink {
    tx: mpsc::UnboundedSender<Event>,
    out: Utf8Pieces,
    err: Utf8Pieces,
}

impl EventSink {
    pub fn new(tx: mpsc::UnboundedSender<Event>) -> EventSink {
        EventSink {
            tx,
            out: Utf8Pieces::default(),
            err: Utf8Pieces::default(),
        }
    }
}

impl Sink for EventSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let event = match stream {
            Stream::Stdout => Event::Stdout {
                data: self.out.push(bytes),
            },
            Stream::Stderr => Event::Stderr {
                data: self.err.push(bytes),
            },
        };
        let empty =
            matches!(&event, Event::Stdout { data } | Event::Stderr { data } if data.is_empty());
        if !empty {
            let _ = self.tx.send(event);
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        for (rest, stdout) in [(self.out.finish(), true), (self.err.finish(), false)] {
            if !rest.is_empty() {
                let _ = self.tx.send(if stdout {
                    Event::Stdout { data: rest }
                } else {
                    Event::Stderr { data: rest }
                });
            }
        }
    }
}

/// Output of a background execution so far (bounded like any sink's: by the output cap).
#[derive(Debug, Default)]
pub struct SoFar {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

pub struct BufferSink(pub Arc<Mutex<SoFar>>);

impl Sink for BufferSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let mut so_far = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match stream {
            Stream::Stdout => so_far.stdout.extend_from_slice(bytes),
            Stream::Stderr => so_far.stderr.extend_from_slice(bytes),
        }
    }
}

/// A background execution.
pub struct Job {
    pub id: String,
    pub owner: String,
    pub sandbox: Option<String>,
    pub canceller: Canceller,
    pub output: Arc<Mutex<SoFar>>,
    pub done: watch::Receiver<Option<Arc<ExecResult>>>,
    /// Where `POST .../stdin` writes; `None` once closed (or never opened).
    pub stdin: tokio::sync::Mutex<Option<tokio::io::DuplexStream>>,
}

/// The background executions, finished ones kept (oldest forgotten first) for their polls.
/// What is kept is bounded three ways: a count, the bytes of the kept output, and a count per
/// principal, so that one principal's results cannot push another's out before they are read.
#[derive(Default)]
pub struct Background {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    finished: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// (exec id, owner, bytes kept), oldest first.
    order: VecDeque<(String, String, usize)>,
    bytes: usize,
}

/// How much of finished background executions is kept.
#[derive(Debug, Clone, Copy)]
pub struct KeepLimits {
    pub results: usize,
    pub bytes: usize,
    pub per_owner: usize,
}

impl Background {
    pub fn insert(&self, job: Arc<Job>) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id.clone(), job);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Records that `id` of `owner` finished with `bytes` of output kept; forgets the oldest
    /// finished results beyond `limits` (the owner's own oldest first when it is over its
    /// share).
    pub fn finished(&self, id: &str, owner: &str, bytes: usize, limits: KeepLimits) {
        let mut kept = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        kept.order
            .push_back((id.to_string(), owner.to_string(), bytes));
        kept.bytes += bytes;
        let mut forget = Vec::new();
        let owned = kept.order.iter().filter(|(_, o, _)| o == owner).count();
        if owned > limits.per_owner {
            if let Some(at) = kept.order.iter().position(|(_, o, _)| o == owner) {
                if let Some((old, _, b)) = kept.order.remove(at) {
                    kept.bytes -= b;
                    forget.push(old);
                }
            }
        }
        while kept.order.len() > limits.results
            || (kept.bytes > limits.bytes && kept.order.len() > 1)
        {
            match kept.order.pop_front() {
                Some((old, _, b)) => {
                    kept.bytes -= b;
                    forget.push(old);
                }
                None => break,
            }
        }
        drop(kept);
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for old in forget {
            jobs.remove(&old);
        }
    }

    /// Finished results kept now: (count, bytes).
    #[cfg(test)]
    pub fn kept(&self) -> (usize, usize) {
        let kept = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        (kept.order.len(), kept.bytes)
    }
}

/// A new background execution id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the kernel's random number generator is unavailable");
    format!("ex-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, owner: &str) -> Arc<Job> {
        let (canceller, _) = crate::cancel::Cancel::new();
        let (_, done) = watch::channel(None);
        Arc::new(Job {
            id: id.to_string(),
            owner: owner.to_string(),
            sandbox: None,
            canceller,
            output: Arc::default(),
            done,
            stdin: tokio::sync::Mutex::new(None),
        })
    }

    #[test]
    fn kept_results_are_bounded_by_count_bytes_and_owner() {
        let limits = KeepLimits {
            results: 10,
            bytes: 1000,
            per_owner: 3,
        };
        let bg = Background::default();
        // One principal floods: only its own newest three stay, others' are untouched.
        bg.insert(job("alice-1", "alice"));
        bg.finished("alice-1", "alice", 10, limits);
        for i in 0..20 {
            let id = format!("mallory-{i}");
            bg.insert(job(&id, "mallory"));
            bg.finished(&id, "mallory", 10, limits);
        }
        assert!(bg.get("alice-1").is_some());
        assert!(bg.get("mallory-16").is_none() && bg.get("mallory-17").is_some());
        assert_eq!(bg.kept(), (4, 40));
        // Bytes: big results push the oldest out, down to the newest one.
        for (i, owner) in ["b", "c", "d"].iter().enumerate() {
            let id = format!("big-{i}");
            bg.insert(job(&id, owner));
            bg.finished(&id, owner, 600, limits);
        }
        assert!(bg.get("big-2").is_some() && bg.get("big-1").is_none());
        assert!(bg.kept().1 <= 1000 || bg.kept().0 == 1, "{:?}", bg.kept());
    }

    #[test]
    fn split_utf8_is_held_back_and_bad_bytes_replaced() {
        let mut p = Utf8Pieces::default();
        let snow = "é☃".as_bytes();
        assert_eq!(p.push(&snow[..1]), "");
        assert_eq!(p.push(&snow[1..3]), "é");
        assert_eq!(p.push(&snow[3..]), "☃");
        assert_eq!(p.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(p.push(&snow[..2]), "é");
        assert_eq!(p.push(&snow[2..3]), "");
        assert_eq!(p.finish(), "\u{fffd}");
    }

    proptest::proptest! {
        #[test]
        fn pieces_join_to_the_lossy_whole(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64), cut in 0usize..64) {
            let cut = cut.min(bytes.len());
            let mut p = Utf8Pieces::default();
            let mut text = p.push(&bytes[..cut]);
            text.push_str(&p.push(&bytes[cut..]));
            text.push_str(&p.finish());
            proptest::prop_assert_eq!(text, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
}
