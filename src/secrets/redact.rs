//! Redaction of secret values from what stockade returns, streams and records: the value
//! itself and its common encodings (base64 in its standard, unpadded and URL-safe alphabets,
//! hex in both cases, URL percent-encoding), each replaced by `[REDACTED:NAME]`.

use base64::Engine as _;

use crate::backend::{Sink, Stream};

/// What to look for: (the bytes, the name they stand for).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    needles: Vec<(Vec<u8>, String)>,
}

/// The spellings of `value` that are redacted.
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![
        value.to_vec(),
        STANDARD.encode(value).into_bytes(),
        STANDARD_NO_PAD.encode(value).into_bytes(),
        URL_SAFE.encode(value).into_bytes(),
        URL_SAFE_NO_PAD.encode(value).into_bytes(),
        hex::encode(value).into_bytes(),
        hex::encode_upper(value).into_bytes(),
        percent_encode(value, b"-._~", false),
        percent_encode(value, b"-._~", true),
        // Python's `urllib.parse.quote` leaves `/` as it is by default.
        percent_encode(value, b"-._~/", false),
        percent_encode(value, b"-._~/", true),
    ];
    // As the common tools print them: `base64` wraps at 76 columns, `xxd -p` at 60, each line
    // ending in a newline.
    for (text, width) in [
        (STANDARD.encode(value), 76),
        (hex::encode(value), 60),
        (hex::encode_upper(value), 60),
    ] {
        if text.len() > width {
            out.push(wrap(&text, width));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// RFC 3986 percent-encoding of everything but `keep` (upper- or lowercase hex digits).
fn percent_encode(value: &[u8], keep: &[u8], lower: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else if lower {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// `text` in lines of `width` characters joined by newlines.
fn wrap(text: &str, width: usize) -> Vec<u8> {
    let lines: Vec<&[u8]> = text.as_bytes().chunks(width).collect();
    lines.join(&b'\n')
}

impl Redactor {
    /// Redacts each of `secrets` (name, value) in all its spellings.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Redactor {
        let mut needles: Vec<(Vec<u8>, String)> = Vec::new();
        for (name, value) in secrets {
            for e in encodings(value) {
                needles.push((e, name.to_string()));
            }
        }
        // Longest first, so a spelling that contains another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The longest spelling: a stream keeps this many bytes less one back, in case a value is
    /// split between two writes.
    fn longest(&self) -> usize {
        self.needles.first().map_or(0, |n| n.0.len())
    }

    /// `bytes` with every spelling replaced, and how many were.
    pub fn redact(&self, bytes: &[u8]) -> (Vec<u8>, u64) {
        let (out, _, count) = self.redact_until(bytes, bytes.len());
        (out, count)
    }

    /// Redacts the spellings that start before `limit` (matched against all of `bytes`);
    /// returns the output, how far into `bytes` it reaches (at least `limit`), and the count.
    fn redact_until(&self, bytes: &[u8], limit: usize) -> (Vec<u8>, usize, u64) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut count = 0;
        let mut i = 0;
        'scan: while i < limit {
            for (needle, name) in &self.needles {
                if bytes[i..].starts_with(needle) {
                    out.extend_from_slice(format!("[REDACTED:{name}]").as_bytes());
                    i += needle.len();
                    count += 1;
                    continue 'scan;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        (out, i, count)
    }

    /// The same for text (lossless for text: replacements are ASCII).
    pub fn redact_str(&self, text: &str) -> (String, u64) {
        let (bytes, n) = self.redact(text.as_bytes());
        (String::from_utf8_lossy(&bytes).into_owned(), n)
    }

    /// `bytes` with a spelling cut off at their end (or, `at_start`, their start) replaced:
    /// output cut for the cap, or a stream that ended, can split a value in two.
    pub fn redact_partial(&self, bytes: &[u8], at_start: bool) -> (Vec<u8>, u64) {
        for (needle, name) in &self.needles {
            let longest = needle.len().saturating_sub(1).min(bytes.len());
            for len in (MIN_PARTIAL..=longest).rev() {
                let hit = if at_start {
                    bytes.starts_with(&needle[needle.len() - len..])
                } else {
                    bytes.ends_with(&needle[..len])
                };
                if hit {
                    let mark = format!("[REDACTED:{name}]");
                    let mut out = Vec::with_capacity(bytes.len());
                    if at_start {
                        out.extend_from_slice(mark.as_bytes());
                        out.extend_from_slice(&bytes[len..]);
                    } else {
                        out.extend_from_slice(&bytes[..bytes.len() - len]);
                        out.extend_from_slice(mark.as_bytes());
                    }
                    return (out, 1);
                }
            }
        }
        (bytes.to_vec(), 0)
    }

    /// Output text as returned (head, the cap's marker, tail): redacted whole, then around
    /// each cut, so a value split by the cut is not returned in two halves.
    pub fn redact_output(&self, text: &str) -> (String, u64) {
        let (clean, mut count) = self.redact_str(text);
        let Some(at) = clean.find(CUT_MARKER) else {
            return (clean, count);
        };
        let end = clean[at..].find("]\n").map_or(clean.len(), |e| at + e + 2);
        let (head, n1) = self.redact_partial(&clean.as_bytes()[..at], false);
        let (tail, n2) = self.redact_partial(&clean.as_bytes()[end..], true);
        count += n1 + n2;
        let mut out = String::from_utf8_lossy(&head).into_owned();
        out.push_str(&clean[at..end]);
        out.push_str(&String::from_utf8_lossy(&tail));
        (out, count)
    }
}

/// Shortest piece of a value redacted where output was cut.
const MIN_PARTIAL: usize = 4;
/// How the cap's marker in returned output begins (backend/output.rs).
const CUT_MARKER: &str = "\n[stockade: output truncated:";

/// A sink that redacts before passing output on. Per stream it holds back the last bytes that
/// could begin a value split across writes; they are passed on (redacted) when it is dropped.
pub struct RedactingSink {
    inner: Box<dyn Sink>,
    redactor: std::sync::Arc<Redactor>,
    held: [Vec<u8>; 2],
    pub count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RedactingSink {
    pub fn new(
        inner: Box<dyn Sink>,
        redactor: std::sync::Arc<Redactor>,
        count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> RedactingSink {
        RedactingSink {
            inner,
            redactor,
            held: [Vec::new(), Vec::new()],
            count,
        }
    }

    fn slot(stream: Stream) -> usize {
        match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

impl Sink for RedactingSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let slot = Self::slot(stream);
        let mut data = std::mem::take(&mut self.held[slot]);
        data.extend_from_slice(bytes);
        let keep = self.redactor.longest().saturating_sub(1);
        // Redact what is certain (everything but a possible start of a split value), so a
        // value straddling the cut is seen whole next time.
        let cut = data.len().saturating_sub(keep);
        // A spelling that starts before the cut ends within `data` (it is at most `keep + 1`
        // long), so it is matched whole; the rest waits for the next write.
        let (ready, consumed, count) = self.redactor.redact_until(&data, cut);
        self.count
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        self.held[slot] = data[consumed..].to_vec();
        if !ready.is_empty() {
            self.inner.write(stream, &ready);
        }
    }
}

impl Drop for RedactingSink {
    fn drop(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.held[Self::slot(stream)]);
            if !rest.is_empty() {
                let (rest, count) = self.redactor.redact(&rest);
                // The stream ends here (or was cut for the cap): a value begun and not
                // finished is not passed on either.
                let (rest, partial) = self.redactor.redact_partial(&rest, false);
                let count = count + partial;
                self.count
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                self.inner.write(stream, &rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const VALUE: &[u8] = b"s3cr3t/value+with=odd?chars";

    fn redactor() -> Redactor {
        Redactor::new([("TOKEN", VALUE)])
    }

    #[test]
    fn every_spelling_is_redacted_and_counted() {
        let r = redactor();
        for spelling in encodings(VALUE) {
            let mut text = b"before ".to_vec();
            text.extend_from_slice(&spelling);
            text.extend_from_slice(b" after");
            let (out, n) = r.redact(&text);
            assert_eq!(out, b"before [REDACTED:TOKEN] after", "{spelling:?}");
            assert_eq!(n, 1);
        }
        let (out, n) = r.redact(b"nothing here");
        assert_eq!((out.as_slice(), n), (&b"nothing here"[..], 0));
    }

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Sink for Collect {
        fn write(&mut self, _: Stream, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }

    proptest::proptest! {
        /// However the output is cut into writes, the value never passes whole, and nothing
        /// else is lost or changed.
        #[test]
        fn a_value_split_across_writes_is_still_redacted(
            prefix in "[a-z ]{0,20}",
            cuts in proptest::collection::vec(0usize..80, 0..6),
            which in 0usize..8,
        ) {
            let spellings = encodings(VALUE);
            let spelling = &spellings[which % spellings.len()];
            let mut text = prefix.clone().into_bytes();
            text.extend_from_slice(spelling);
            text.extend_from_slice(b" tail");
            let collected = Collect::default();
            let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
            {
                let mut sink = RedactingSink::new(
                    Box::new(collected.clone()),
                    Arc::new(redactor()),
                    count.clone(),
                );
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
                cuts.sort();
                let mut at = 0;
                for c in cuts.into_iter().chain([text.len()]) {
                    sink.write(Stream::Stdout, &text[at..c]);
                    at = c;
                }
            }
            let out = collected.0.lock().unwrap().clone();
            let mut want = prefix.into_bytes();
            want.extend_from_slice(b"[REDACTED:TOKEN] tail");
            proptest::prop_assert_eq!(out, want);
            proptest::prop_assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
        }
    }

    #[test]
    fn a_value_split_by_the_cap_or_wrapped_by_a_tool_is_still_redacted() {
        let secret = b"AKIAx/yz+Q9w=SECRETvalue7";
        let r = Redactor::new([("K", &secret[..])]);
        let cut = "...AKIAx/yz+Q9w\n[stockade: output truncated: 5 of 9 bytes omitted after byte 3]\n=SECRETvalue7 end";
        let (out, n) = r.redact_output(cut);
        assert!(
            !out.contains("AKIAx/yz") && !out.contains("SECRETvalue7"),
            "{out}"
        );
        assert_eq!(n, 2, "{out}");
        let long = vec![b'z'; 88];
        let r = Redactor::new([("J", &long[..])]);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&long);
        let wrapped = format!("{}\n{}\n", &b64[..76], &b64[76..]);
        let (out, n) = r.redact_str(&wrapped);
        assert_eq!(n, 1, "{out}");
        let quoted = "AKIAx/yz%2bQ9w%3dSECRETvalue7";
        let r = Redactor::new([("K", &secret[..])]);
        assert_eq!(r.redact_str(quoted).1, 1);
    }
}
