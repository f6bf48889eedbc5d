//! Reading the log by lines: backwards from the end (append, tail) and forwards (verify).
//!
//! Lines can be arbitrarily long (a record carries the whole command), so nothing here assumes
//! a line fits in one read: backward scans go chunk by chunk, hashes are computed streaming,
//! and only lines up to [`MAX_LINE_BYTES`] are ever held in memory whole.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// `prev` of the first record: no previous line.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line that is parsed as a record; longer lines are hashed but never loaded whole.
/// Records stockade writes stay far below (a command is at most a few hundred KiB, ARG_MAX).
pub const MAX_LINE_BYTES: u64 = 8 * 1024 * 1024;

/// Backward scans read this much at a time; a typical record is a few hundred bytes.
const BACKWARD_CHUNK: u64 = 8 * 1024;
/// Forward reads (verify, hashing a range) use this buffer size.
const FORWARD_CHUNK: usize = 64 * 1024;

/// Lowercase hex SHA-256 of a line's bytes (without its newline).
pub fn line_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Offset of the first byte of the line whose bytes end at `end` (exclusive): one past the
/// last `\n` before `end`, or 0.
pub fn line_start(file: &File, end: u64) -> io::Result<u64> {
    let mut pos = end;
    let mut buf = vec![0u8; BACKWARD_CHUNK as usize];
    while pos > 0 {
        let take = pos.min(BACKWARD_CHUNK);
        let chunk = &mut buf[..take as usize];
        file.read_exact_at(chunk, pos - take)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(pos - take + i as u64 + 1);
        }
        pos -= take;
    }
    Ok(0)
}

/// The byte at `offset`.
pub fn byte_at(file: &File, offset: u64) -> io::Result<u8> {
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset)?;
    Ok(b[0])
}

/// Hash of the bytes `[start, end)`, read in chunks.
pub fn hash_range(file: &File, start: u64, end: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; FORWARD_CHUNK];
    let mut pos = start;
    while pos < end {
        let take = (end - pos).min(FORWARD_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..take], pos)?;
        hasher.update(&buf[..take]);
        pos += take as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The bytes `[start, end)`; callers check the length against [`MAX_LINE_BYTES`] first.
pub fn read_range(file: &File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(end - start)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "range too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// One line of the log, as read forwards.
#[derive(Debug)]
pub struct Line {
    /// 1-based line number.
    pub number: u64,
    /// Offset of its first byte.
    pub offset: u64,
    /// Length without the newline.
    pub len: u64,
    /// [`line_hash`] of its bytes.
    pub hash: String,
    /// Its bytes, or `None` when longer than [`MAX_LINE_BYTES`].
    pub bytes: Option<Vec<u8>>,
    /// False for a last line without a trailing newline.
    pub terminated: bool,
}

/// Forward line reader that hashes as it goes and never buffers more than the cap.
pub struct Lines {
    reader: BufReader<File>,
    offset: u64,
    number: u64,
}

impl Lines {
    pub fn new(file: File) -> Self {
        Lines {
            reader: BufReader::with_capacity(FORWARD_CHUNK, file),
            offset: 0,
            number: 0,
        }
    }

    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        let mut hasher = Sha256::new();
        let mut bytes = Some(Vec::new());
        let mut len = 0u64;
        let mut terminated = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (part, used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            hasher.update(part);
            len += part.len() as u64;
            if len > MAX_LINE_BYTES {
                bytes = None;
            } else if let Some(b) = bytes.as_mut() {
                b.extend_from_slice(part);
            }
            self.reader.consume(used);
            if done {
                terminated = true;
                break;
            }
        }
        if len == 0 && !terminated {
            return Ok(None);
        }
        self.number += 1;
        let line = Line {
            number: self.number,
            offset: self.offset,
            len,
            hash: hex::encode(hasher.finalize()),
            bytes,
            terminated,
        };
        self.offset += len + u64::from(terminated);
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        let r = File::open(f.path()).unwrap();
        (f, r)
    }

    #[test]
    fn line_start_finds_previous_newline_across_chunks() {
        let long = vec![b'x'; 3 * BACKWARD_CHUNK as usize + 17];
        let mut content = b"first\n".to_vec();
        content.extend_from_slice(&long);
        content.push(b'\n');
        let (_t, f) = file_with(&content);
        let end = content.len() as u64 - 1;
        assert_eq!(line_start(&f, end).unwrap(), 6);
        assert_eq!(line_start(&f, 5).unwrap(), 0);
        assert_eq!(hash_range(&f, 6, end).unwrap(), line_hash(&long));
    }

    #[test]
    fn forward_lines_hash_and_mark_unterminated() {
        let (_t, f) = file_with(b"a\n\nbc");
        let mut lines = Lines::new(f);
        let a = lines.next_line().unwrap().unwrap();
        assert_eq!((a.number, a.offset, a.len, a.terminated), (1, 0, 1, true));
        assert_eq!(a.hash, line_hash(b"a"));
        let empty = lines.next_line().unwrap().unwrap();
        assert_eq!((empty.offset, empty.len, empty.terminated), (2, 0, true));
        let bc = lines.next_line().unwrap().unwrap();
        assert_eq!((bc.offset, bc.len, bc.terminated), (3, 2, false));
        assert_eq!(bc.bytes.as_deref(), Some(&b"bc"[..]));
        assert!(lines.next_line().unwrap().is_none());
    }
}
