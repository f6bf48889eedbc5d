//! Text from a sandbox (command text, output) shown to a human without letting it act on the
//! terminal: escape sequences (OSC 52 clipboard writes, screen clears, title changes), C1
//! controls, and the invisible or reordering characters that make a line read differently from
//! what it holds (bidi overrides and isolates, zero-width characters; "Trojan Source",
//! CVE-2021-42574). Everything shown is escaped visibly, never dropped.

use std::io::{self, Write};

/// Characters a terminal acts on or a reader cannot see: C0 controls (but tab, newline and
/// carriage return), DEL, C1 controls, and Unicode format characters that hide text or change
/// its order.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{ad}' | '\u{61c}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}')
}

/// How a hidden character is shown: `^[` style for C0 and DEL, `<U+202E>` for the rest.
fn escape(c: char, out: &mut String) {
    let n = c as u32;
    if n < 0x20 {
        out.push('^');
        out.push(char::from_u32(n + 0x40).unwrap_or('?'));
    } else if n == 0x7f {
        out.push_str("^?");
    } else {
        out.push_str(&format!("<U+{n:04X}>"));
    }
}

/// One line for a terminal: hidden characters escaped, and newlines and tabs too.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_hidden(c) || matches!(c, '\n' | '\r' | '\t') {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON text with every hidden character written as a `\uXXXX` escape (JSON escapes for
/// non-ASCII are valid and mean the same), so that the raw JSON is also safe on a terminal.
pub fn json_escaped(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer that shows bytes safely on a terminal: valid UTF-8 passes except hidden
/// characters, which are escaped; bytes that are not UTF-8 are shown as `\xNN`. A character
/// split across two writes is held until it completes.
pub struct TerminalSafe<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> TerminalSafe<W> {
    pub fn new(inner: W) -> TerminalSafe<W> {
        TerminalSafe {
            inner,
            pending: Vec::new(),
        }
    }

    fn render(&mut self, bytes: &[u8], at_end: bool) -> String {
        let mut data = std::mem::take(&mut self.pending);
        data.extend_from_slice(bytes);
        let mut out = String::with_capacity(data.len());
        let mut rest = data.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    push_text(text, &mut out);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Checked valid just above.
                    push_text(std::str::from_utf8(valid).unwrap_or(""), &mut out);
                    match e.error_len() {
                        Some(len) => {
                            for b in &after[..len] {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                            rest = &after[len..];
                        }
                        // An incomplete character at the end: wait for the rest of it.
                        None if !at_end => {
                            self.pending = after.to_vec();
                            break;
                        }
                        None => {
                            for b in after {
                                out.push_str(&format!("\\x{b:02x}"));
                            }
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

fn push_text(text: &str, out: &mut String) {
    for c in text.chars() {
        if is_hidden(c) {
            escape(c, out);
        } else {
            out.push(c);
        }
    }
}

impl<W: Write> Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shown = self.render(buf, false);
        self.inner.write_all(shown.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for TerminalSafe<W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let shown = self.render(&[], true);
            let _ = self.inner.write_all(shown.as_bytes());
            let _ = self.inner.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        {
            let mut w = TerminalSafe::new(&mut out);
            for c in chunks {
                w.write_all(c).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escape_sequences_and_c1_controls_are_shown_not_acted_on() {
        // OSC 52 (clipboard), a screen clear, a C1 CSI.
        let s = shown(&[b"\x1b]52;c;aGk=\x07\x1b[2Jok\xc2\x9b31m\n"]);
        assert_eq!(s, "^[]52;c;aGk=^G^[[2Jok<U+009B>31m\n");
        assert!(!s.contains('\x1b'));
    }

    #[test]
    fn utf8_split_across_writes_and_invalid_bytes() {
        let e_acute = "é".as_bytes();
        assert_eq!(shown(&[&e_acute[..1], &e_acute[1..], b"\n"]), "é\n");
        assert_eq!(shown(&[b"a\xffb"]), "a\\xffb");
        assert_eq!(shown(&[b"tail\xe2\x80"]), "tail\\xe2\\x80");
        let rlo = "\u{202e}".as_bytes();
        assert_eq!(shown(&[&rlo[..2], &rlo[2..]]), "<U+202E>");
    }

    #[test]
    fn text_a_reader_trusts_passes() {
        assert_eq!(shown(&[b"plain\ttext\r\nnext\n"]), "plain\ttext\r\nnext\n");
        assert_eq!(shown(&["日本語 ✓".as_bytes()]), "日本語 ✓");
    }

    #[test]
    fn one_line_and_json_views_escape_reordering_characters() {
        let trojan = "echo ok \u{202e}// safe\u{2066}\nrm -rf x";
        let line = one_line(trojan);
        assert!(!line.chars().any(is_hidden));
        assert!(!line.contains('\n'));
        assert!(
            line.contains("<U+202E>") && line.contains("<U+2066>"),
            "{line}"
        );
        let json = serde_json::to_string(&trojan).unwrap();
        let escaped = json_escaped(&json);
        assert!(escaped.contains("\\u202e"), "{escaped}");
        assert_eq!(
            serde_json::from_str::<String>(&escaped).unwrap(),
            trojan,
            "the same string"
        );
        let tag = json_escaped(&serde_json::to_string("\u{e0041}").unwrap());
        assert_eq!(serde_json::from_str::<String>(&tag).unwrap(), "\u{e0041}");
    }
}
