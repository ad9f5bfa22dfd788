//! Text for a terminal. Symbol names, file paths and command lines come from the traced
//! program or from a JSON file anyone may have written: printed raw, their escape and control
//! characters would drive the terminal (move the cursor, rewrite lines, set the title). They are
//! shown escaped instead: `\x1b` for a C0 control or DEL, `\u{9b}` for a C1 control or a
//! bidirectional-text override.
use std::{
    borrow::Cow,
    io::{self, Write},
};

/// Whether `c` must not reach a terminal as is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_into(out: &mut String, c: char) {
    if (c as u32) < 0x80 {
        out.push_str(&format!("\\x{:02x}", c as u32));
    } else {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    }
}

/// `text` with every control character escaped, newlines too (one field stays on one line).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer for text output that escapes any control character but the newline, whatever
/// field it came from: the fields are escaped one by one too (`printable`), this makes sure.
pub struct Printable<W: Write>(pub W);

impl<W: Write> Write for Printable<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let mut escaped = String::new();
        for chunk in buffer.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c != '\n' && is_unsafe(c) {
                    escape_into(&mut escaped, c);
                } else {
                    escaped.push(c);
                }
            }
            for byte in chunk.invalid() {
                escaped.push_str(&format!("\\x{byte:02x}"));
            }
        }
        self.0.write_all(escaped.as_bytes())?;
        Ok(buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("operator new(unsigned long)"), "operator new(unsigned long)");
        assert_eq!(printable("evil\u{1b}[31m\u{7}\nname\u{7f}"), "evil\\x1b[31m\\x07\\x0aname\\x7f");
        assert_eq!(printable("csi\u{9b}2J rtl\u{202e}txt"), "csi\\u{9b}2J rtl\\u{202e}txt");
        assert_eq!(printable("grüße, 日本"), "grüße, 日本");
        let mut out = Printable(Vec::new());
        write!(out, "line \u{1b}]0;title\u{7}\nnext\n").unwrap();
        out.write_all(b"bad \xff byte\n").unwrap();
        assert_eq!(String::from_utf8(out.0).unwrap(), "line \\x1b]0;title\\x07\nnext\nbad \\xff byte\n");
    }
}
