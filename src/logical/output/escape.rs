//! Escaping of untrusted text into our lines, and the check that DDL content is exactly one JSON
//! object before it is embedded as one.

use std::fmt::Write as _;

use super::types::is_json_number;

pub(super) use crate::text::must_escape;

/// A JSON string of untrusted text: JSON's own escapes, and `\uXXXX` for every character
/// [`must_escape`] names, so a line of ours is one line for every reader.
///
/// Runs of characters written as they are (printable ASCII but `"` and `\`, and whatever else
/// [`must_escape`] leaves alone) are copied whole: nearly every value is one such run.
pub fn push_json_text(out: &mut String, value: &str) {
    out.push('"');
    let bytes = value.as_bytes();
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        // Eight plain bytes at a time: the check is exact for a whole word.
        if let Some(word) = bytes.get(i..i + 8) {
            if plain_word(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if (b' '..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        let c = value[i..].chars().next().expect("i is at a character boundary");
        if !b.is_ascii() && !must_escape(c) {
            i += c.len_utf8();
            continue;
        }
        out.push_str(&value[run..i]);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        i += c.len_utf8();
        run = i;
    }
    out.push_str(&value[run..]);
    out.push('"');
}

/// Whether none of the 8 bytes of `w` needs a look: each is printable ASCII (0x20..0x7f) and
/// neither `"` nor `\`. (The usual word tricks: a byte below `n` leaves its high bit set in
/// `byte - n` only when it was below `n` and itself below 0x80, so with high bytes ruled out
/// first they are exact.)
fn plain_word(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let has = |b: u8| below(w ^ (ONES * u64::from(b)), 1);
    w & HIGH == 0 && below(w, b' ') == 0 && has(b'"') == 0 && has(b'\\') == 0 && has(0x7f) == 0
}

/// Untrusted text inside a quoted field of the text format: `quote` doubled (as SQL does),
/// and backslash escapes for `\`, tab, CR, LF and every other character [`must_escape`] names
/// (`\u0085`), so a value can never end its field or its line.
pub fn push_text_escaped(out: &mut String, value: &str, quote: char) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push(c);
                out.push(c);
            }
            c if must_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A text-format string: `'it''s'`.
pub fn push_text_literal(out: &mut String, value: &str) {
    out.push('\'');
    push_text_escaped(out, value, '\'');
    out.push('\'');
}

/// A name in the text format: bare when it is a plain lowercase identifier (as
/// `quote_identifier` leaves it), else double-quoted, so `.`, `:`, `[`, spaces or quotes in a
/// name cannot be read as our separators.
pub fn push_text_ident(out: &mut String, name: &str) {
    let plain = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        out.push_str(name);
    } else {
        out.push('"');
        push_text_escaped(out, name, '"');
        out.push('"');
    }
}

pub(super) fn text_ident(name: &str) -> String {
    let mut s = String::new();
    push_text_ident(&mut s, name);
    s
}

/// Checks that `s` is exactly one JSON object (RFC 8259, whitespace around it allowed) and
/// writes it again compactly, with the characters [`must_escape`] names escaped: what the
/// `--ddl` trigger sends is embedded only then, so a message that merely looks like an object
/// (`{}, "op":"insert", "x":{}`) cannot add fields to our record. `None` for anything else,
/// including lone UTF-16 surrogates (strict readers refuse them) and nesting deeper than 64.
pub fn json_object(s: &str) -> Option<String> {
    let mut p = JsonCheck { s, i: 0, out: String::with_capacity(s.len()), depth: 0, keys: Vec::new() };
    p.ws();
    if p.peek() != Some(b'{') {
        return None;
    }
    p.value()?;
    p.ws();
    (p.i == s.len()).then_some(p.out)
}

/// The top-level keys of a JSON object, as written (escapes kept), or `None` when `s` is not
/// exactly one object.
pub fn json_object_keys(s: &str) -> Option<Vec<String>> {
    let mut p = JsonCheck { s, i: 0, out: String::new(), depth: 0, keys: Vec::new() };
    p.ws();
    if p.peek() != Some(b'{') {
        return None;
    }
    p.value()?;
    p.ws();
    (p.i == s.len()).then_some(p.keys)
}

const JSON_MAX_DEPTH: u32 = 64;

struct JsonCheck<'a> {
    s: &'a str,
    i: usize,
    out: String,
    depth: u32,
    keys: Vec<String>,
}

impl JsonCheck<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.ws();
        if self.peek() != Some(b) {
            return None;
        }
        self.i += 1;
        self.out.push(char::from(b));
        Some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        if !self.s[self.i..].starts_with(word) {
            return None;
        }
        self.i += word.len();
        self.out.push_str(word);
        Some(())
    }

    fn value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            open @ (b'{' | b'[') => {
                self.depth += 1;
                if self.depth > JSON_MAX_DEPTH {
                    return None;
                }
                self.expect(open)?;
                let close = if open == b'{' { b'}' } else { b']' };
                self.ws();
                if self.peek() == Some(close) {
                    self.expect(close)?;
                } else {
                    loop {
                        if open == b'{' {
                            self.ws();
                            let start = self.out.len();
                            self.string()?;
                            if self.depth == 1 {
                                self.keys.push(self.out[start + 1..self.out.len() - 1].to_owned());
                            }
                            self.expect(b':')?;
                        }
                        self.value()?;
                        self.ws();
                        match self.peek()? {
                            b',' => self.expect(b',')?,
                            c if c == close => {
                                self.expect(close)?;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(())
            }
            b'"' => self.string(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => {
                let b = self.s.as_bytes();
                let start = self.i;
                while self.i < b.len() && matches!(b[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.i += 1;
                }
                let num = &self.s[start..self.i];
                if !is_json_number(num.as_bytes()) {
                    return None;
                }
                self.out.push_str(num);
                Some(())
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let h = self.s.get(self.i..self.i + 4)?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u16::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.i += 1;
        self.out.push('"');
        loop {
            let c = self.s[self.i..].chars().next()?;
            self.i += c.len_utf8();
            match c {
                '"' => {
                    self.out.push('"');
                    return Some(());
                }
                '\\' => {
                    let e = self.s[self.i..].chars().next()?;
                    self.i += e.len_utf8();
                    match e {
                        '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => {
                            self.out.push('\\');
                            self.out.push(e);
                        }
                        'u' => {
                            let u = self.hex4()?;
                            let _ = write!(self.out, "\\u{u:04x}");
                            if (0xDC00..0xE000).contains(&u) {
                                return None;
                            }
                            if (0xD800..0xDC00).contains(&u) {
                                if !self.s[self.i..].starts_with("\\u") {
                                    return None;
                                }
                                self.i += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                let _ = write!(self.out, "\\u{low:04x}");
                            }
                        }
                        _ => return None,
                    }
                }
                c if c < ' ' => return None,
                c if must_escape(c) => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`push_json_text`] as it was written before its fast path: one character at a time.
    fn json_text_per_char(value: &str) -> String {
        let mut out = String::from("\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if must_escape(c) => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// The fast path writes exactly what the per-character escaping wrote: every character
    /// below U+3000 and some beyond, alone, in runs, and at the start, middle and end of
    /// plain text.
    #[test]
    fn json_text_fast_path_is_byte_identical() {
        let mut samples: Vec<String> = ["", "plain", "name 12345", "é", "日本語", "😀x", "a\"b\\c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for c in (0..0x3000u32).chain([0xfeff, 0xfffd, 0x1_f600, 0x10_ffff]).filter_map(char::from_u32) {
            samples.push(c.to_string());
            samples.push(format!("ab{c}"));
            samples.push(format!("{c}cd"));
            samples.push(format!("x{c}{c}y\u{85}z"));
            // Through the word-at-a-time path: before, inside and after whole words.
            for at in [0, 3, 7, 8, 9, 15, 16, 17] {
                let mut long = "0123456789abcdefghijklmnop".to_string();
                long.insert(at, c);
                samples.push(long);
            }
        }
        for v in &samples {
            let mut fast = String::new();
            push_json_text(&mut fast, v);
            assert_eq!(fast, json_text_per_char(v), "{v:?}");
        }
    }

    #[test]
    fn json_escapes_every_line_break() {
        let mut s = String::new();
        push_json_text(&mut s, "a\u{85}b\u{2028}c\u{2029}d\u{7f}\u{1c}\"\\\n");
        assert_eq!(s, r#""a\u0085b\u2028c\u2029d\u007f\u001c\"\\\n""#);
    }
}
