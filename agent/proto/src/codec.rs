//! A fixed-layout binary encoding: big-endian integers, byte strings as a u32 length and the
//! bytes, lists as a u32 count and the items. The reader checks every length against what is
//! left before it allocates, so hostile input costs at most its own size.

use std::fmt;

/// Why a payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends before the field `field`.
    Truncated { field: &'static str },
    /// Bytes are left after the last field.
    Trailing { bytes: usize },
    /// A field holds a value the protocol does not define.
    Invalid { field: &'static str },
    /// A list is longer than its limit.
    TooMany { field: &'static str, limit: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { field } => write!(f, "truncated at {field}"),
            DecodeError::Trailing { bytes } => write!(f, "{bytes} bytes after the last field"),
            DecodeError::Invalid { field } => write!(f, "invalid value in {field}"),
            DecodeError::TooMany { field, limit } => write!(f, "{field}: more than {limit} items"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Builds an encoding.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Fixed-size bytes (a nonce, a digest): no length prefix.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A byte string with its u32 length. Encoded values are bounded by the frame limit
    /// (1 MiB), so the length always fits.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.fixed(bytes)
    }

    pub fn list(&mut self, items: &[Vec<u8>]) -> &mut Self {
        self.u32(items.len() as u32);
        for item in items {
            self.bytes(item);
        }
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Reads an encoding field by field.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>(field)?[0])
    }

    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { field }),
        }
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.fixed(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.fixed(field)?))
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.fixed(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.fixed(field)?))
    }

    pub fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(field)? as usize;
        Ok(self.take(len, field)?.to_vec())
    }

    /// A list of at most `limit` byte strings.
    pub fn list(&mut self, field: &'static str, limit: usize) -> Result<Vec<Vec<u8>>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > limit {
            return Err(DecodeError::TooMany { field, limit });
        }
        // Each item takes at least its 4-byte length, so a count the payload cannot hold is
        // refused before anything is allocated.
        if count.saturating_mul(4) > self.rest.len() {
            return Err(DecodeError::Truncated { field });
        }
        (0..count).map(|_| self.bytes(field)).collect()
    }

    /// Ends decoding: every byte must have been read.
    pub fn end(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                bytes: self.rest.len(),
            })
        }
    }
}
