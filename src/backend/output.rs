//! Output capture with a cap: keeps the head and the tail of a stream, counts everything, and
//! hands the head live to a [`Sink`] (the CLI's terminal, a server's stream).

use std::collections::VecDeque;

/// Share of the cap kept from the end of the stream when output is cut.
const TAIL_SHARE: u64 = 4;

/// Which of a process's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where output goes live, as it arrives (up to each stream's cap; then, at the end, the
/// marker and the tail).
pub trait Sink: Send {
    fn write(&mut self, stream: Stream, bytes: &[u8]);
}

/// One output stream (stdout or stderr) of a command.
pub struct Capture {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("total", &self.total)
            .field("head", &self.head.len())
            .field("tail", &self.tail.len())
            .finish()
    }
}

impl Capture {
    /// `cap` bytes are kept at most: the first three quarters and the last quarter.
    pub fn new(cap: u64) -> Capture {
        let tail_limit = usize::try_from(cap / TAIL_SHARE).unwrap_or(usize::MAX);
        let head_limit = usize::try_from(cap).unwrap_or(usize::MAX) - tail_limit;
        Capture {
            head_limit,
            tail_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    /// Keeps `bytes`; returns how many of them went to the head (the part shown live).
    pub fn push(&mut self, mut bytes: &[u8]) -> usize {
        self.total += bytes.len() as u64;
        let room = self.head_limit - self.head.len();
        let mut to_head = 0;
        if room > 0 {
            to_head = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..to_head]);
            bytes = &bytes[to_head..];
        }
        if self.tail_limit == 0 || bytes.is_empty() {
            return to_head;
        }
        if bytes.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_limit..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
        to_head
    }

    /// Total bytes the command wrote to this stream.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The first bytes kept (up to three quarters of the cap).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Whether anything was cut.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    fn marker(&self) -> String {
        let kept = (self.head.len() + self.tail.len()) as u64;
        format!(
            "\n[stockade: output truncated: {} of {} bytes omitted after byte {}]\n",
            self.total - kept,
            self.total,
            self.head.len()
        )
    }

    /// What a live view still lacks at the end: when output was cut, the marker and the tail.
    pub fn rest(&self) -> Option<Vec<u8>> {
        if !self.truncated() {
            return None;
        }
        let mut bytes = self.marker().into_bytes();
        bytes.extend(self.tail.iter());
        Some(bytes)
    }

    /// The kept text: head, then (when cut) the marker and the tail. Invalid UTF-8 is replaced.
    pub fn text(&self) -> String {
        let mut bytes = self.head.clone();
        if self.truncated() {
            bytes.extend_from_slice(self.marker().as_bytes());
        }
        bytes.extend(self.tail.iter());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A process's output: each stream captured under the cap, optionally both interleaved in
/// arrival order too, and the head shown live to a sink.
pub struct Streams {
    pub stdout: Capture,
    pub stderr: Capture,
    /// Both streams as they arrived, when asked for (`--output`).
    pub output: Option<Capture>,
    sink: Option<Box<dyn Sink>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl Streams {
    pub fn new(cap: u64, interleaved: bool, sink: Option<Box<dyn Sink>>) -> Streams {
        Streams {
            stdout: Capture::new(cap),
            stderr: Capture::new(cap),
            output: interleaved.then(|| Capture::new(cap.saturating_mul(2))),
            sink,
        }
    }

    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let capture = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let shown = capture.push(bytes);
        if let Some(both) = &mut self.output {
            both.push(bytes);
        }
        if let (Some(sink), true) = (&mut self.sink, shown > 0) {
            sink.write(stream, &bytes[..shown]);
        }
    }

    /// Bytes of both streams so far.
    pub fn total(&self) -> u64 {
        self.stdout.total() + self.stderr.total()
    }

    /// Ends the live view: what was cut is said, and the tail shown.
    pub fn finish(&mut self) {
        let rests = [
            (Stream::Stdout, self.stdout.rest()),
            (Stream::Stderr, self.stderr.rest()),
        ];
        if let Some(sink) = &mut self.sink {
            for (stream, rest) in rests {
                if let Some(bytes) = rest {
                    sink.write(stream, &bytes);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_cap_nothing_is_cut() {
        let mut c = Capture::new(100);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.text(), "hello world");
        assert!(!c.truncated());
        assert_eq!(c.total(), 11);
    }

    #[test]
    fn over_the_cap_keeps_head_and_tail_and_says_where() {
        let mut c = Capture::new(8);
        for chunk in [b"abcd".as_slice(), b"efgh", b"ijkl", b"mnop"] {
            c.push(chunk);
        }
        assert!(c.truncated());
        assert_eq!(c.total(), 16);
        let text = c.text();
        assert!(text.starts_with("abcdef"), "{text}");
        assert!(text.ends_with("op"), "{text}");
        assert!(
            text.contains("8 of 16 bytes omitted after byte 6"),
            "{text}"
        );
    }

    #[test]
    fn one_huge_chunk_is_bounded() {
        let mut c = Capture::new(1024);
        c.push(&vec![b'x'; 10 << 20]);
        assert!(c.text().len() < 1200);
        assert_eq!(c.total(), 10 << 20);
    }

    #[test]
    fn the_sink_sees_the_head_live_and_the_rest_at_the_end() {
        struct Seen(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Sink for Seen {
            fn write(&mut self, _: Stream, bytes: &[u8]) {
                self.0.lock().unwrap().extend_from_slice(bytes);
            }
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut s = Streams::new(8, true, Some(Box::new(Seen(seen.clone()))));
        s.push(Stream::Stdout, b"abcdefgh");
        s.push(Stream::Stderr, b"E");
        s.push(Stream::Stdout, b"ijkl");
        assert_eq!(seen.lock().unwrap().as_slice(), b"abcdefE");
        s.finish();
        let all = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        assert!(all.ends_with("kl"), "{all}");
        assert_eq!(s.output.as_ref().unwrap().text(), "abcdefghEijkl");
        assert_eq!(s.total(), 13);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_lost() {
        let mut c = Capture::new(100);
        c.push(&[0xff, b'a']);
        assert_eq!(c.text(), "\u{fffd}a");
    }
}
