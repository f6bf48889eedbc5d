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
#[derive(Default)]
pub struct Background {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    finished: Mutex<VecDeque<String>>,
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

    /// Records that `id` finished; forgets the oldest finished beyond `keep`.
    pub fn finished(&self, id: &str, keep: usize) {
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        finished.push_back(id.to_string());
        while finished.len() > keep {
            if let Some(old) = finished.pop_front() {
                self.jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&old);
            }
        }
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
