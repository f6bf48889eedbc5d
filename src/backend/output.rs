//! Output capture with a cap: keeps the head and the tail of a stream, counts everything, and
//! optionally echoes the head live.

use std::collections::VecDeque;
use std::io::Write;

/// Share of the cap kept from the end of the stream when output is cut.
const TAIL_SHARE: u64 = 4;

/// One output stream (stdout or stderr) of a command.
pub struct Capture {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    echo: Option<Box<dyn Write + Send>>,
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
    pub fn new(cap: u64, echo: Option<Box<dyn Write + Send>>) -> Capture {
        let tail_limit = usize::try_from(cap / TAIL_SHARE).unwrap_or(usize::MAX);
        let head_limit = usize::try_from(cap).unwrap_or(usize::MAX) - tail_limit;
        Capture {
            head_limit,
            tail_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            echo,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_limit - self.head.len();
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            if let Some(echo) = &mut self.echo {
                // A closed stdout (e.g. `| head`) must not stop the capture or the audit.
                let _ = echo.write_all(&bytes[..take]).and_then(|_| echo.flush());
            }
            bytes = &bytes[take..];
        }
        if self.tail_limit == 0 || bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_limit..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    /// Total bytes the command wrote to this stream.
    pub fn total(&self) -> u64 {
        self.total
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

    /// Finishes a live echo: when output was cut, writes the marker and the tail.
    pub fn finish_echo(&mut self) {
        let marker = self.truncated().then(|| self.marker());
        if let (Some(echo), Some(marker)) = (&mut self.echo, marker) {
            let _ = echo.write_all(marker.as_bytes());
            let (a, b) = self.tail.as_slices();
            let _ = echo.write_all(a).and_then(|_| echo.write_all(b)).and_then(|_| echo.flush());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_cap_nothing_is_cut() {
        let mut c = Capture::new(100, None);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.text(), "hello world");
        assert!(!c.truncated());
        assert_eq!(c.total(), 11);
    }

    #[test]
    fn over_the_cap_keeps_head_and_tail_and_says_where() {
        let mut c = Capture::new(8, None);
        for chunk in [b"abcd".as_slice(), b"efgh", b"ijkl", b"mnop"] {
            c.push(chunk);
        }
        assert!(c.truncated());
        assert_eq!(c.total(), 16);
        let text = c.text();
        assert!(text.starts_with("abcdef"), "{text}");
        assert!(text.ends_with("op"), "{text}");
        assert!(text.contains("8 of 16 bytes omitted after byte 6"), "{text}");
    }

    #[test]
    fn one_huge_chunk_is_bounded() {
        let mut c = Capture::new(1024, None);
        c.push(&vec![b'x'; 10 << 20]);
        assert!(c.text().len() < 1200);
        assert_eq!(c.total(), 10 << 20);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_lost() {
        let mut c = Capture::new(100, None);
        c.push(&[0xff, b'a']);
        assert_eq!(c.text(), "\u{fffd}a");
    }
}
