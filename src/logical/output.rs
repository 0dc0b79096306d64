//! Decoded changes as lines: one JSON object (or one test_decoding-like text line) per change,
//! plus begin/commit (and two-phase) records. Pure: an [`Encoder`] keeps the relation schema the
//! stream described and the transaction being written, and appends lines to a buffer.
//!
//! Values are typed by the column's type OID: integers, floats and numerics as JSON numbers
//! (when finite), bool as true/false, NULL as null, an unchanged TOAST value as the explicit
//! marker `{"unchanged_toast":true}` (never null: the column keeps its old value), anything else
//! as the type's text form. With `binary = true` the common scalar types are decoded from their
//! send format; other binary values come out as `{"binary":"<hex>"}`.
//!
//! Lines that end a unit of output (commit, prepare, commit/rollback prepared, a
//! non-transactional message) carry `end_lsn` as their second field, where [`unit_end`] finds
//! it again: that is how the output directory knows where to resume after a crash.
//!
//! Everything that comes from the database (names, values, message prefixes and contents,
//! GIDs, origin names, DDL descriptions) is untrusted and escaped wherever it lands, so no
//! database role can end a line early or forge a field or a record: in JSON every control
//! character, DEL, the C1 controls and U+2028/U+2029 are `\uXXXX` escapes; in the text format
//! names are written bare only when they are plain lowercase identifiers and double-quoted
//! otherwise, other text is single-quoted, and inside quotes the quote is doubled and `\`, tab,
//! CR, LF and the same characters are backslash escapes ([`push_text_escaped`]). DDL content is
//! embedded as an object only when it is exactly one JSON object, and then re-written compactly
//! by us ([`json_object`]); anything else is an escaped string.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use crate::lsn::Lsn;
use crate::text::civil_from_days;

use super::pgoutput::{Column, Message, OldKind, RelColumn};

/// Prefix of the logical messages the `--ddl` event trigger emits.
pub const DDL_PREFIX: &str = "pgrecvlogical.ddl";

/// Output format of the change lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Type OIDs we type values by (`pg_type.dat`).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// The SQL name of a built-in type, for the text format.
pub fn builtin_type_name(type_oid: u32) -> Option<&'static str> {
    Some(match type_oid {
        oid::BOOL => "boolean",
        oid::BYTEA => "bytea",
        oid::CHAR => "\"char\"",
        oid::NAME => "name",
        oid::INT8 => "bigint",
        oid::INT2 => "smallint",
        oid::INT4 => "integer",
        oid::TEXT => "text",
        oid::OID => "oid",
        oid::JSON => "json",
        oid::XML => "xml",
        oid::FLOAT4 => "real",
        oid::FLOAT8 => "double precision",
        oid::BPCHAR => "character",
        oid::VARCHAR => "character varying",
        oid::DATE => "date",
        oid::TIME => "time without time zone",
        oid::TIMESTAMP => "timestamp without time zone",
        oid::TIMESTAMPTZ => "timestamp with time zone",
        oid::INTERVAL => "interval",
        oid::NUMERIC => "numeric",
        oid::UUID => "uuid",
        oid::JSONB => "jsonb",
        _ => return None,
    })
}

/// A relation as the last Relation message described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelInfo {
    pub namespace: String,
    pub name: String,
    pub columns: Vec<ColInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColInfo {
    pub name: String,
    pub type_oid: u32,
    pub key: bool,
}

impl RelInfo {
    pub fn from_message(namespace: &str, name: &str, columns: &[RelColumn<'_>]) -> RelInfo {
        RelInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            columns: columns
                .iter()
                .map(|c| ColInfo { name: c.name.to_owned(), type_oid: c.type_oid, key: c.is_key() })
                .collect(),
        }
    }
}

/// Relations and user types by OID, as the stream described them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub relations: HashMap<u32, RelInfo>,
    pub types: HashMap<u32, String>,
}

impl Schema {
    /// Records a Relation or Type message; false for any other message.
    pub fn learn(&mut self, msg: &Message<'_>) -> bool {
        match msg {
            Message::Relation(r) => {
                self.relations.insert(r.oid, RelInfo::from_message(r.namespace, r.name, &r.columns));
                true
            }
            Message::Type(t) => {
                // Only the text format names types; quoted as it writes names.
                self.types.insert(t.oid, format!("{}.{}", text_ident(t.namespace), text_ident(t.name)));
                true
            }
            _ => false,
        }
    }

    /// Takes over everything `other` knows (a streamed transaction's schema, at its commit).
    pub fn merge(&mut self, other: Schema) {
        self.relations.extend(other.relations);
        self.types.extend(other.types);
    }

    fn type_name(&self, type_oid: u32) -> String {
        builtin_type_name(type_oid)
            .map(str::to_owned)
            .or_else(|| self.types.get(&type_oid).cloned())
            .unwrap_or_else(|| type_oid.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputError {
    /// A row change outside a transaction.
    NoTransaction { kind: u8 },
    /// A row change for a relation no Relation message described.
    UnknownRelation(u32),
    /// A tuple with a different number of columns than its relation.
    ColumnCount { relation: u32, expected: usize, got: usize },
    /// A Begin while a transaction is open.
    NestedTransaction { xid: u32 },
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputError::NoTransaction { kind } => {
                write!(f, "pgoutput sent a '{}' message outside of a transaction", char::from(*kind))
            }
            OutputError::UnknownRelation(oid) => {
                write!(f, "pgoutput sent a change for relation {oid} before describing it")
            }
            OutputError::ColumnCount { relation, expected, got } => write!(
                f,
                "pgoutput sent a row of {got} columns for relation {relation}, which has {expected}"
            ),
            OutputError::NestedTransaction { xid } => {
                write!(f, "pgoutput began transaction {xid} while another one was open")
            }
        }
    }
}

impl std::error::Error for OutputError {}

/// The transaction whose changes are being written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Txn {
    xid: u32,
    /// The commit LSN (Begin's final LSN), or the prepare LSN of a prepared transaction.
    lsn: Lsn,
    time: i64,
    gid: Option<String>,
    /// Changes written so far; each change line carries its number, from 1.
    seq: u64,
}

/// What a message did to the output, beyond appending lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond the lines (if any).
    None,
    /// A unit of output is complete: once it is durable, decoding may resume at this position.
    UnitEnd(Lsn),
}

/// Turns messages into lines.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub format: Format,
    pub schema: Schema,
    txn: Option<Txn>,
}

/// `2024-05-01T12:00:00.123456Z` from microseconds since 2000-01-01 UTC (`TimestampTz`).
pub fn format_pg_time(t: i64) -> String {
    const PG_EPOCH_DAYS: i64 = 10_957; // 2000-01-01 - 1970-01-01
    let micros = t.rem_euclid(1_000_000);
    let secs = t.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400) + PG_EPOCH_DAYS;
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Whether `b` is a JSON number (RFC 8259 §6): what PostgreSQL prints for finite integers,
/// floats and numerics, and nothing else (`NaN`, `Infinity`, `+1`, `.5` are not).
pub fn is_json_number(b: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Characters never written raw: they end a line for some reader (Python's `splitlines`
/// splits on U+001C-U+001E, U+0085, U+2028 and U+2029 too) or are invisible controls.
fn must_escape(c: char) -> bool {
    c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}'
}

/// A JSON string of untrusted text: JSON's own escapes, and `\uXXXX` for every character
/// [`must_escape`] names, so a line of ours is one line for every reader.
pub fn push_json_text(out: &mut String, value: &str) {
    out.push('"');
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

fn text_ident(name: &str) -> String {
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

fn is_numeric_type(type_oid: u32) -> bool {
    matches!(
        type_oid,
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID | oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC
    )
}

fn push_hex(out: &mut String, b: &[u8]) {
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

/// A value decoded from a type's binary send format, when we know the type.
enum Decoded {
    Number(String),
    Bool(bool),
    Text(String),
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// `numeric_send`: ndigits, weight, sign, dscale, then base-10000 digits.
fn decode_numeric(b: &[u8]) -> Option<String> {
    if b.len() < 8 {
        return None;
    }
    let ndigits = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let weight = i32::from(i16::from_be_bytes([b[2], b[3]]));
    let sign = u16::from_be_bytes([b[4], b[5]]);
    let dscale = usize::from(u16::from_be_bytes([b[6], b[7]]));
    if b.len() != 8 + 2 * ndigits || dscale > 0x3FFF {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| u16::from_be_bytes([b[8 + 2 * i], b[9 + 2 * i]])).collect();
    if digits.iter().any(|&d| d > 9999) {
        return None;
    }
    let digit = |i: i32| -> u16 { usize::try_from(i).ok().and_then(|i| digits.get(i).copied()).unwrap_or(0) };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    // Integer part: base-10000 digits at weights weight..=0.
    if weight < 0 {
        s.push('0');
    } else {
        for w in 0..=weight {
            let d = digit(w);
            if w == 0 {
                let _ = write!(s, "{d}");
            } else {
                let _ = write!(s, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push_str(&frac);
    }
    Some(s)
}

/// A float as PostgreSQL's `float8out`/`float4out` print it (shortest digits that read back
/// as the same value, as Ryu gives them): fixed notation while the decimal exponent is in
/// -4..`fixed_below` (15 for float8, 6 for float4), else `d.ddde+XX` with at least two exponent
/// digits. `sci` is Rust's shortest `{:e}` text of the value in its own width.
fn pg_float_text(sci: &str, fixed_below: i32) -> String {
    let (neg, sci) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if (-4..fixed_below).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

fn float_text(v: f64, sci: String, fixed_below: i32) -> Decoded {
    if v.is_nan() {
        Decoded::Text("NaN".into())
    } else if v.is_infinite() {
        Decoded::Text(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Decoded::Number(pg_float_text(&sci, fixed_below))
    }
}

fn decode_binary(type_oid: u32, b: &[u8]) -> Option<Decoded> {
    Some(match type_oid {
        oid::BOOL => Decoded::Bool(match b {
            [0] => false,
            [1] => true,
            _ => return None,
        }),
        oid::INT2 => Decoded::Number(i16::from_be_bytes(be(b)?).to_string()),
        oid::INT4 => Decoded::Number(i32::from_be_bytes(be(b)?).to_string()),
        oid::INT8 => Decoded::Number(i64::from_be_bytes(be(b)?).to_string()),
        oid::OID => Decoded::Number(u32::from_be_bytes(be(b)?).to_string()),
        oid::FLOAT4 => {
            let v = f32::from_be_bytes(be(b)?);
            float_text(f64::from(v), format!("{v:e}"), 6)
        }
        oid::FLOAT8 => {
            let v = f64::from_be_bytes(be(b)?);
            float_text(v, format!("{v:e}"), 15)
        }
        oid::NUMERIC => {
            let s = decode_numeric(b)?;
            if is_json_number(s.as_bytes()) {
                Decoded::Number(s)
            } else {
                Decoded::Text(s)
            }
        }
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON | oid::XML | oid::CHAR => {
            Decoded::Text(String::from_utf8(b.to_vec()).ok()?)
        }
        oid::JSONB => match b.split_first() {
            Some((1, rest)) => Decoded::Text(String::from_utf8(rest.to_vec()).ok()?),
            _ => return None,
        },
        oid::UUID => {
            let a: [u8; 16] = be(b)?;
            let mut s = String::with_capacity(36);
            for (i, x) in a.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{x:02x}");
            }
            Decoded::Text(s)
        }
        _ => return None,
    })
}

/// Appends one column value as JSON.
pub fn push_json_value(out: &mut String, type_oid: u32, col: &Column<'_>) {
    match col {
        Column::Null => out.push_str("null"),
        Column::Unchanged => out.push_str("{\"unchanged_toast\":true}"),
        Column::Text(b) => {
            if is_numeric_type(type_oid) && is_json_number(b) {
                // Checked above: ASCII digits, signs, '.', 'e'.
                out.push_str(std::str::from_utf8(b).unwrap_or("null"));
            } else if type_oid == oid::BOOL && (*b == b"t" || *b == b"f") {
                out.push_str(if *b == b"t" { "true" } else { "false" });
            } else {
                push_json_text(out, &String::from_utf8_lossy(b));
            }
        }
        Column::Binary(b) => match decode_binary(type_oid, b) {
            Some(Decoded::Number(n)) => out.push_str(&n),
            Some(Decoded::Bool(v)) => out.push_str(if v { "true" } else { "false" }),
            Some(Decoded::Text(s)) => push_json_text(out, &s),
            None => {
                out.push_str("{\"binary\":\"");
                push_hex(out, b);
                out.push_str("\"}");
            }
        },
    }
}

/// Appends one column value as text: numbers and booleans bare, text quoted as SQL literals.
fn push_text_value(out: &mut String, type_oid: u32, col: &Column<'_>) {
    let quoted = push_text_literal;
    match col {
        Column::Null => out.push_str("null"),
        Column::Unchanged => out.push_str("unchanged-toast-datum"),
        Column::Text(b) => {
            let s = String::from_utf8_lossy(b);
            if is_numeric_type(type_oid) && is_json_number(b) {
                out.push_str(&s);
            } else if type_oid == oid::BOOL && (*b == b"t" || *b == b"f") {
                out.push_str(if *b == b"t" { "true" } else { "false" });
            } else {
                quoted(out, &s);
            }
        }
        Column::Binary(b) => match decode_binary(type_oid, b) {
            Some(Decoded::Number(n)) => out.push_str(&n),
            Some(Decoded::Bool(v)) => out.push_str(if v { "true" } else { "false" }),
            Some(Decoded::Text(s)) => quoted(out, &s),
            None => {
                out.push_str("\\x");
                push_hex(out, b);
            }
        },
    }
}

impl Encoder {
    pub fn new(format: Format) -> Encoder {
        Encoder { format, schema: Schema::default(), txn: None }
    }

    /// Whether a transaction is open (between Begin or Begin Prepare and its end).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    fn begin_txn(&mut self, t: Txn) -> Result<(), OutputError> {
        if let Some(open) = &self.txn {
            return Err(OutputError::NestedTransaction { xid: open.xid });
        }
        self.txn = Some(t);
        Ok(())
    }

    fn relation(&self, oid: u32) -> Result<&RelInfo, OutputError> {
        self.schema.relations.get(&oid).ok_or(OutputError::UnknownRelation(oid))
    }

    /// Writes the lines for `msg`, received at `lsn` (its XLogData start). Stream control
    /// messages (Stream Start/Stop/Commit/Abort/Prepare) are the caller's: it spools streamed
    /// transactions and replays them here as Begin ... Commit.
    pub fn encode(&mut self, out: &mut Vec<u8>, lsn: Lsn, msg: &Message<'_>) -> Result<Effect, OutputError> {
        let mut s = String::new();
        let effect = self.encode_str(&mut s, lsn, msg)?;
        out.extend_from_slice(s.as_bytes());
        Ok(effect)
    }

    fn encode_str(&mut self, s: &mut String, lsn: Lsn, msg: &Message<'_>) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        match msg {
            Message::Relation(_) | Message::Type(_) => {
                self.schema.learn(msg);
                Ok(Effect::None)
            }
            Message::Begin(b) => {
                self.begin_txn(Txn { xid: b.xid, lsn: b.final_lsn, time: b.commit_time, gid: None, seq: 0 })?;
                if json {
                    let _ = writeln!(
                        s,
                        "{{\"op\":\"begin\",\"xid\":{},\"commit_lsn\":\"{}\",\"ts\":\"{}\"}}",
                        b.xid,
                        b.final_lsn,
                        format_pg_time(b.commit_time)
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "BEGIN xid={} commit_lsn={} ts={}",
                        b.xid,
                        b.final_lsn,
                        format_pg_time(b.commit_time)
                    );
                }
                Ok(Effect::None)
            }
            Message::BeginPrepare(b) => {
                self.begin_txn(Txn {
                    xid: b.xid,
                    lsn: b.prepare_lsn,
                    time: b.prepare_time,
                    gid: Some(b.gid.to_owned()),
                    seq: 0,
                })?;
                if json {
                    let _ = write!(
                        s,
                        "{{\"op\":\"begin_prepare\",\"xid\":{},\"prepare_lsn\":\"{}\",\"ts\":\"{}\",\"gid\":",
                        b.xid,
                        b.prepare_lsn,
                        format_pg_time(b.prepare_time)
                    );
                    push_json_text(s, b.gid);
                    s.push_str("}\n");
                } else {
                    let _ = write!(
                        s,
                        "BEGIN PREPARE xid={} prepare_lsn={} ts={} gid=",
                        b.xid,
                        b.prepare_lsn,
                        format_pg_time(b.prepare_time),
                    );
                    push_text_literal(s, b.gid);
                    s.push('\n');
                }
                Ok(Effect::None)
            }
            Message::Commit(c) => {
                let txn = self.txn.take().ok_or(OutputError::NoTransaction { kind: b'C' })?;
                if json {
                    let _ = writeln!(
                        s,
                        "{{\"op\":\"commit\",\"end_lsn\":\"{}\",\"xid\":{},\"commit_lsn\":\"{}\",\"ts\":\"{}\",\"changes\":{}}}",
                        c.end_lsn,
                        txn.xid,
                        c.commit_lsn,
                        format_pg_time(c.commit_time),
                        txn.seq
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "COMMIT end_lsn={} xid={} commit_lsn={} ts={} changes={}",
                        c.end_lsn,
                        txn.xid,
                        c.commit_lsn,
                        format_pg_time(c.commit_time),
                        txn.seq
                    );
                }
                Ok(Effect::UnitEnd(c.end_lsn))
            }
            Message::Prepare(p) | Message::StreamPrepare(p) => {
                let txn = self.txn.take().ok_or(OutputError::NoTransaction { kind: msg.kind() })?;
                if json {
                    let _ = write!(
                        s,
                        "{{\"op\":\"prepare\",\"end_lsn\":\"{}\",\"xid\":{},\"prepare_lsn\":\"{}\",\"ts\":\"{}\",\"changes\":{},\"gid\":",
                        p.end_lsn,
                        txn.xid,
                        p.prepare_lsn,
                        format_pg_time(p.prepare_time),
                        txn.seq
                    );
                    push_json_text(s, p.gid);
                    s.push_str("}\n");
                } else {
                    let _ = write!(
                        s,
                        "PREPARE end_lsn={} xid={} prepare_lsn={} ts={} changes={} gid=",
                        p.end_lsn,
                        txn.xid,
                        p.prepare_lsn,
                        format_pg_time(p.prepare_time),
                        txn.seq,
                    );
                    push_text_literal(s, p.gid);
                    s.push('\n');
                }
                Ok(Effect::UnitEnd(p.end_lsn))
            }
            Message::CommitPrepared(c) => {
                if json {
                    let _ = write!(
                        s,
                        "{{\"op\":\"commit_prepared\",\"end_lsn\":\"{}\",\"xid\":{},\"commit_lsn\":\"{}\",\"ts\":\"{}\",\"gid\":",
                        c.end_lsn,
                        c.xid,
                        c.commit_lsn,
                        format_pg_time(c.commit_time)
                    );
                    push_json_text(s, c.gid);
                    s.push_str("}\n");
                } else {
                    let _ = write!(
                        s,
                        "COMMIT PREPARED end_lsn={} xid={} commit_lsn={} ts={} gid=",
                        c.end_lsn,
                        c.xid,
                        c.commit_lsn,
                        format_pg_time(c.commit_time),
                    );
                    push_text_literal(s, c.gid);
                    s.push('\n');
                }
                Ok(Effect::UnitEnd(c.end_lsn))
            }
            Message::RollbackPrepared(r) => {
                if json {
                    let _ = write!(
                        s,
                        "{{\"op\":\"rollback_prepared\",\"end_lsn\":\"{}\",\"xid\":{},\"prepare_end_lsn\":\"{}\",\"ts\":\"{}\",\"gid\":",
                        r.rollback_end_lsn,
                        r.xid,
                        r.prepare_end_lsn,
                        format_pg_time(r.rollback_time)
                    );
                    push_json_text(s, r.gid);
                    s.push_str("}\n");
                } else {
                    let _ = write!(
                        s,
                        "ROLLBACK PREPARED end_lsn={} xid={} prepare_end_lsn={} ts={} gid=",
                        r.rollback_end_lsn,
                        r.xid,
                        r.prepare_end_lsn,
                        format_pg_time(r.rollback_time),
                    );
                    push_text_literal(s, r.gid);
                    s.push('\n');
                }
                Ok(Effect::UnitEnd(r.rollback_end_lsn))
            }
            Message::Origin { lsn: origin_lsn, name } => {
                let txn = self.txn.as_ref().ok_or(OutputError::NoTransaction { kind: b'O' })?;
                if json {
                    let _ = write!(
                        s,
                        "{{\"op\":\"origin\",\"xid\":{},\"origin_lsn\":\"{origin_lsn}\",\"origin\":",
                        txn.xid
                    );
                    push_json_text(s, name);
                    s.push_str("}\n");
                } else {
                    let _ = write!(s, "ORIGIN xid={} origin_lsn={origin_lsn} origin=", txn.xid);
                    push_text_literal(s, name);
                    s.push('\n');
                }
                Ok(Effect::None)
            }
            Message::Insert(_) | Message::Update(_) | Message::Delete(_) | Message::Truncate(_) => {
                self.change(s, lsn, msg)?;
                Ok(Effect::None)
            }
            Message::Message(m) => {
                // A non-transactional message stands alone: it is a unit of its own, ending just
                // past its LSN (decoding resumes after it; no other record starts there).
                let end = (!m.transactional).then(|| Lsn(m.lsn.0 + 1));
                let txn = if m.transactional {
                    let t = self.txn.as_mut().ok_or(OutputError::NoTransaction { kind: b'M' })?;
                    t.seq += 1;
                    Some(&*t)
                } else {
                    None
                };
                let ddl = m.transactional && m.prefix == DDL_PREFIX;
                let content = std::str::from_utf8(m.content).ok();
                if json {
                    s.push_str(if ddl { "{\"op\":\"ddl\"" } else { "{\"op\":\"message\"" });
                    if let Some(end) = end {
                        let _ = write!(s, ",\"end_lsn\":\"{end}\"");
                    }
                    if let Some(t) = txn {
                        push_txn_fields(s, t);
                    }
                    let _ =
                        write!(s, ",\"lsn\":\"{}\",\"transactional\":{},\"prefix\":", m.lsn, m.transactional);
                    push_json_text(s, m.prefix);
                    // Our event trigger builds the content with jsonb_build_object, but any role
                    // may emit a message with our prefix: embed it only when it is exactly one
                    // object, written again by us.
                    let object = content.filter(|_| ddl).and_then(json_object);
                    match (object, content) {
                        (Some(obj), _) => {
                            s.push_str(",\"ddl\":");
                            s.push_str(&obj);
                        }
                        (None, Some(c)) => {
                            s.push_str(",\"content\":");
                            push_json_text(s, c);
                        }
                        (None, None) => {
                            s.push_str(",\"content_hex\":\"");
                            push_hex(s, m.content);
                            s.push('"');
                        }
                    }
                    s.push_str("}\n");
                } else {
                    s.push_str(if ddl { "DDL" } else { "MESSAGE" });
                    if let Some(end) = end {
                        let _ = write!(s, " end_lsn={end}");
                    }
                    if let Some(t) = txn {
                        let _ = write!(s, " xid={} seq={}", t.xid, t.seq);
                    }
                    let _ = write!(s, " lsn={} transactional={} prefix=", m.lsn, m.transactional);
                    push_text_literal(s, m.prefix);
                    s.push_str(" content=");
                    match content {
                        Some(c) => push_text_value(s, oid::TEXT, &Column::Text(c.as_bytes())),
                        None => {
                            s.push_str("\\x");
                            push_hex(s, m.content);
                        }
                    }
                    s.push('\n');
                }
                Ok(end.map_or(Effect::None, Effect::UnitEnd))
            }
            Message::StreamStart(_)
            | Message::StreamStop
            | Message::StreamCommit(_)
            | Message::StreamAbort(_) => Ok(Effect::None),
        }
    }

    fn change(&mut self, s: &mut String, lsn: Lsn, msg: &Message<'_>) -> Result<(), OutputError> {
        let json = self.format == Format::Json;
        let Some(txn) = self.txn.as_mut() else {
            return Err(OutputError::NoTransaction { kind: msg.kind() });
        };
        txn.seq += 1;
        let txn = self.txn.clone().expect("checked above");
        if let Message::Truncate(t) = msg {
            let rels = t.relations.iter().map(|&o| self.relation(o)).collect::<Result<Vec<_>, _>>()?;
            if json {
                s.push_str("{\"op\":\"truncate\"");
                push_txn_fields(s, &txn);
                let _ = write!(s, ",\"lsn\":\"{lsn}\",\"tables\":[");
                for (i, r) in rels.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str("{\"schema\":");
                    push_json_text(s, &r.namespace);
                    s.push_str(",\"table\":");
                    push_json_text(s, &r.name);
                    s.push('}');
                }
                let _ = writeln!(
                    s,
                    "],\"cascade\":{},\"restart_identity\":{}}}",
                    t.cascade(),
                    t.restart_identity()
                );
            } else {
                let names: Vec<String> = rels
                    .iter()
                    .map(|r| format!("{}.{}", text_ident(&r.namespace), text_ident(&r.name)))
                    .collect();
                let _ = write!(
                    s,
                    "table {}: TRUNCATE: xid={} seq={} lsn={lsn}",
                    names.join(", "),
                    txn.xid,
                    txn.seq
                );
                if t.cascade() {
                    s.push_str(" cascade");
                }
                if t.restart_identity() {
                    s.push_str(" restart_seqs");
                }
                s.push('\n');
            }
            return Ok(());
        }
        type Old<'t, 'a> = Option<(OldKind, &'t [Column<'a>])>;
        let (op, relid, old, new): (&str, u32, Old<'_, '_>, Option<&[Column<'_>]>) = match msg {
            Message::Insert(i) => ("insert", i.relation, None, Some(&i.new)),
            Message::Update(u) => {
                ("update", u.relation, u.old.as_ref().map(|(k, t)| (*k, t.as_slice())), Some(&u.new))
            }
            Message::Delete(d) => ("delete", d.relation, Some((d.old_kind, d.old.as_slice())), None),
            _ => unreachable!("change() is called for row changes only"),
        };
        let rel = self.relation(relid)?;
        for t in old.map(|(_, t)| t).into_iter().chain(new) {
            if t.len() != rel.columns.len() {
                return Err(OutputError::ColumnCount {
                    relation: relid,
                    expected: rel.columns.len(),
                    got: t.len(),
                });
            }
        }
        // The key's values: from the old key or row when sent (the key changed, or a delete),
        // else from the new row.
        let key_source = old.map(|(_, t)| t).or(new).unwrap_or(&[]);
        if json {
            let _ = write!(s, "{{\"op\":\"{op}\"");
            push_txn_fields(s, &txn);
            let _ = write!(s, ",\"lsn\":\"{lsn}\",\"schema\":");
            push_json_text(s, &rel.namespace);
            s.push_str(",\"table\":");
            push_json_text(s, &rel.name);
            s.push_str(",\"key\":");
            push_json_row(s, rel, key_source, |c| c.key);
            if let Some(t) = new {
                s.push_str(",\"new\":");
                push_json_row(s, rel, t, |_| true);
            }
            if let Some((kind, t)) = old {
                s.push_str(",\"old\":");
                // A key-only old tuple has nulls in the other columns: leave them out.
                push_json_row(s, rel, t, |c| kind == OldKind::Full || c.key);
            }
            s.push_str("}\n");
        } else {
            let _ = write!(
                s,
                "table {}.{}: {}: xid={} seq={} lsn={lsn}",
                text_ident(&rel.namespace),
                text_ident(&rel.name),
                op.to_ascii_uppercase(),
                txn.xid,
                txn.seq
            );
            if let Some((kind, t)) = old {
                s.push_str(if kind == OldKind::Full { " old-tuple:" } else { " old-key:" });
                self.push_text_row(s, rel, t, |c| kind == OldKind::Full || c.key);
                if new.is_some() {
                    s.push_str(" new-tuple:");
                }
            }
            if let Some(t) = new {
                self.push_text_row(s, rel, t, |_| true);
            }
            s.push('\n');
        }
        Ok(())
    }

    fn push_text_row(
        &self,
        s: &mut String,
        rel: &RelInfo,
        t: &[Column<'_>],
        keep: impl Fn(&ColInfo) -> bool,
    ) {
        for (c, v) in rel.columns.iter().zip(t) {
            if keep(c) {
                s.push(' ');
                push_text_ident(s, &c.name);
                let _ = write!(s, "[{}]:", self.schema.type_name(c.type_oid));
                push_text_value(s, c.type_oid, v);
            }
        }
    }
}

fn push_txn_fields(s: &mut String, t: &Txn) {
    let _ = write!(s, ",\"xid\":{}", t.xid);
    match &t.gid {
        None => {
            let _ = write!(s, ",\"commit_lsn\":\"{}\"", t.lsn);
        }
        Some(gid) => {
            let _ = write!(s, ",\"prepare_lsn\":\"{}\",\"gid\":", t.lsn);
            push_json_text(s, gid);
        }
    }
    let _ = write!(s, ",\"ts\":\"{}\",\"seq\":{}", format_pg_time(t.time), t.seq);
}

fn push_json_row(s: &mut String, rel: &RelInfo, t: &[Column<'_>], keep: impl Fn(&ColInfo) -> bool) {
    s.push('{');
    let mut first = true;
    for (c, v) in rel.columns.iter().zip(t) {
        if !keep(c) {
            continue;
        }
        if !first {
            s.push(',');
        }
        first = false;
        push_json_text(s, &c.name);
        s.push(':');
        push_json_value(s, c.type_oid, v);
    }
    s.push('}');
}

/// How every text-format line begins: recovery takes anything else for damage.
const TEXT_LINE_HEADS: [&str; 10] = [
    "BEGIN ",
    "BEGIN PREPARE ",
    "COMMIT ",
    "PREPARE ",
    "COMMIT PREPARED ",
    "ROLLBACK PREPARED ",
    "ORIGIN ",
    "MESSAGE ",
    "DDL ",
    "table ",
];

/// Whether `line` (without its newline) can be a line we wrote: UTF-8, no NUL byte, and the
/// beginning and end every line of the format has. What a crash leaves in a file's unsynced
/// tail (blocks of zeros, a torn write, stale blocks) fails this, so recovery never resumes
/// past it. Lenient about other control characters, which files written before they were
/// escaped may hold.
pub fn line_is_ours(line: &[u8], format: Format) -> bool {
    let Ok(text) = std::str::from_utf8(line) else { return false };
    if text.contains('\0') {
        return false;
    }
    match format {
        Format::Json => text.starts_with("{\"op\":\"") && text.ends_with('}'),
        Format::Text => TEXT_LINE_HEADS.iter().any(|h| text.starts_with(h)),
    }
}

/// The `end_lsn` of a line that ends a unit of output, `None` for any other line.
pub fn unit_end(line: &[u8], format: Format) -> Option<Lsn> {
    let text = std::str::from_utf8(line).ok()?;
    match format {
        Format::Json => {
            let rest = ["commit", "prepare", "commit_prepared", "rollback_prepared", "message", "ddl"]
                .iter()
                .find_map(|op| text.strip_prefix(&format!("{{\"op\":\"{op}\",\"end_lsn\":\"")))?;
            rest.split('"').next()?.parse().ok()
        }
        Format::Text => {
            // "COMMIT " is also how "COMMIT PREPARED " begins: look for end_lsn after each.
            let rest = ["COMMIT ", "PREPARE ", "COMMIT PREPARED ", "ROLLBACK PREPARED ", "MESSAGE ", "DDL "]
                .iter()
                .find_map(|k| text.strip_prefix(k)?.strip_prefix("end_lsn="))?;
            rest.split(' ').next()?.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::pgoutput::*;

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec()).unwrap().lines().map(str::to_owned).collect()
    }

    fn relation() -> Message<'static> {
        Message::Relation(Relation {
            xid: None,
            oid: 16384,
            namespace: "public",
            name: "t",
            replica_identity: b'd',
            columns: vec![
                RelColumn { flags: 1, name: "id", type_oid: oid::INT4, type_modifier: -1 },
                RelColumn { flags: 0, name: "amount", type_oid: oid::NUMERIC, type_modifier: -1 },
                RelColumn { flags: 0, name: "ok", type_oid: oid::BOOL, type_modifier: -1 },
                RelColumn { flags: 0, name: "note", type_oid: oid::TEXT, type_modifier: -1 },
                RelColumn { flags: 0, name: "at", type_oid: oid::TIMESTAMPTZ, type_modifier: -1 },
            ],
        })
    }

    fn begin() -> Message<'static> {
        Message::Begin(Begin { final_lsn: Lsn(0x100), commit_time: 0, xid: 7 })
    }

    #[test]
    fn pg_times() {
        assert_eq!(format_pg_time(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(format_pg_time(1), "2000-01-01T00:00:00.000001Z");
        assert_eq!(format_pg_time(-1), "1999-12-31T23:59:59.999999Z");
        // 2024-02-29 12:34:56.5 UTC: 8825 days after 2000-01-01.
        let t = (8825 * 86_400 + 12 * 3600 + 34 * 60 + 56) * 1_000_000 + 500_000;
        assert_eq!(format_pg_time(t), "2024-02-29T12:34:56.500000Z");
    }

    #[test]
    fn json_numbers() {
        for ok in [
            "0",
            "-0",
            "1",
            "-12",
            "1.5",
            "0.001",
            "1e10",
            "1E+10",
            "-2.5e-3",
            "123456789012345678901234567890",
        ] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "-",
            "+1",
            ".5",
            "1.",
            "01",
            "1e",
            "1e+",
            "NaN",
            "Infinity",
            "-Infinity",
            "1 ",
            "0x1",
            "1.2.3",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn typed_text_values() {
        let v = |t, c: Column<'_>| {
            let mut s = String::new();
            push_json_value(&mut s, t, &c);
            s
        };
        assert_eq!(v(oid::INT4, Column::Text(b"-42")), "-42");
        assert_eq!(v(oid::INT8, Column::Text(b"9223372036854775807")), "9223372036854775807");
        assert_eq!(v(oid::NUMERIC, Column::Text(b"1.50")), "1.50");
        assert_eq!(v(oid::NUMERIC, Column::Text(b"NaN")), "\"NaN\"");
        assert_eq!(v(oid::FLOAT8, Column::Text(b"-Infinity")), "\"-Infinity\"");
        assert_eq!(v(oid::FLOAT4, Column::Text(b"1e+20")), "1e+20");
        assert_eq!(v(oid::BOOL, Column::Text(b"t")), "true");
        assert_eq!(v(oid::BOOL, Column::Text(b"f")), "false");
        assert_eq!(v(oid::TEXT, Column::Text(b"a\"b\n")), "\"a\\\"b\\n\"");
        assert_eq!(v(oid::TEXT, Column::Text(b"12")), "\"12\"");
        assert_eq!(v(oid::JSONB, Column::Text(b"{\"a\": 1}")), "\"{\\\"a\\\": 1}\"");
        assert_eq!(
            v(oid::TIMESTAMPTZ, Column::Text(b"2024-01-01 00:00:00+00")),
            "\"2024-01-01 00:00:00+00\""
        );
        assert_eq!(v(oid::TEXT, Column::Null), "null");
        assert_eq!(v(oid::TEXT, Column::Unchanged), "{\"unchanged_toast\":true}");
        // Not UTF-8 (a SQL_ASCII database): replaced, never an invalid line.
        assert_eq!(v(oid::TEXT, Column::Text(b"\xff")), "\"\u{FFFD}\"");
    }

    #[test]
    fn typed_binary_values() {
        let v = |t, b: &[u8]| {
            let mut s = String::new();
            push_json_value(&mut s, t, &Column::Binary(b));
            s
        };
        assert_eq!(v(oid::BOOL, &[1]), "true");
        assert_eq!(v(oid::INT2, &(-5i16).to_be_bytes()), "-5");
        assert_eq!(v(oid::INT4, &7i32.to_be_bytes()), "7");
        assert_eq!(v(oid::INT8, &i64::MIN.to_be_bytes()), "-9223372036854775808");
        assert_eq!(v(oid::FLOAT8, &0.1f64.to_be_bytes()), "0.1");
        assert_eq!(v(oid::FLOAT8, &2.0f64.to_be_bytes()), "2");
        assert_eq!(v(oid::FLOAT8, &f64::NAN.to_be_bytes()), "\"NaN\"");
        assert_eq!(v(oid::FLOAT4, &1.5f32.to_be_bytes()), "1.5");
        assert_eq!(v(oid::TEXT, b"hi"), "\"hi\"");
        assert_eq!(v(oid::JSONB, b"\x01{}"), "\"{}\"");
        assert_eq!(
            v(oid::UUID, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7]),
            "\"12345678-9abc-def0-0001-020304050607\""
        );
        // Wrong length for the type, or a type we do not decode: explicit hex.
        assert_eq!(v(oid::INT4, &[1, 2]), "{\"binary\":\"0102\"}");
        assert_eq!(v(oid::DATE, &[0, 0, 0, 1]), "{\"binary\":\"00000001\"}");
    }

    #[test]
    fn floats_print_as_postgres_prints_them() {
        let f8 = |v: f64| pg_float_text(&format!("{v:e}"), 15);
        let f4 = |v: f32| pg_float_text(&format!("{v:e}"), 6);
        // What SELECT x::float8 / x::float4 prints on PostgreSQL 12 and later.
        for (v, pg) in [
            (1.0, "1"),
            (0.25, "0.25"),
            (-0.5, "-0.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e-300, "1e-300"),
            (123.456, "123.456"),
            (999999999999999.0, "999999999999999"),
            (1e15, "1e+15"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.0, "0"),
            (-0.0, "-0"),
            (100.0, "100"),
        ] {
            assert_eq!(f8(v), pg, "{v}");
        }
        for (v, pg) in
            [(1.0f32, "1"), (0.1, "0.1"), (123456.0, "123456"), (1000000.0, "1e+06"), (1.5e-5, "1.5e-05")]
        {
            assert_eq!(f4(v), pg, "{v}");
        }
    }

    fn numeric_bytes(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for x in [ndigits, weight as u16, sign, dscale] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn binary_numerics() {
        // 12345.678 = 1|2345|6780 with weight 1, dscale 3.
        assert_eq!(
            decode_numeric(&numeric_bytes(3, 1, 0, 3, &[1, 2345, 6780])).as_deref(),
            Some("12345.678")
        );
        // -0.0012 = 12 at weight -1 ("0.0012"), dscale 4.
        assert_eq!(decode_numeric(&numeric_bytes(1, -1, 0x4000, 4, &[12])).as_deref(), Some("-0.0012"));
        // 10000 = 1 at weight 1, no digits after it.
        assert_eq!(decode_numeric(&numeric_bytes(1, 1, 0, 0, &[1])).as_deref(), Some("10000"));
        assert_eq!(decode_numeric(&numeric_bytes(0, 0, 0, 2, &[])).as_deref(), Some("0.00"));
        assert_eq!(decode_numeric(&numeric_bytes(0, 0, 0xC000, 0, &[])).as_deref(), Some("NaN"));
        assert_eq!(decode_numeric(&numeric_bytes(1, 0, 0, 0, &[10000])), None);
        assert_eq!(decode_numeric(&[0, 1]), None);
        assert_eq!(decode_numeric(&numeric_bytes(2, 0, 0, 0, &[1])), None);
    }

    #[test]
    fn a_transaction_in_json() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        assert_eq!(e.encode(&mut out, Lsn(1), &relation()).unwrap(), Effect::None);
        assert!(out.is_empty());
        e.encode(&mut out, Lsn(0x10), &begin()).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![
                Column::Text(b"1"),
                Column::Text(b"2.50"),
                Column::Text(b"t"),
                Column::Text(b"x"),
                Column::Null,
            ],
        });
        e.encode(&mut out, Lsn(0x20), &ins).unwrap();
        let upd = Message::Update(Update {
            xid: None,
            relation: 16384,
            old: Some((
                OldKind::Key,
                vec![Column::Text(b"1"), Column::Null, Column::Null, Column::Null, Column::Null],
            )),
            new: vec![
                Column::Text(b"2"),
                Column::Text(b"NaN"),
                Column::Text(b"f"),
                Column::Unchanged,
                Column::Null,
            ],
        });
        e.encode(&mut out, Lsn(0x30), &upd).unwrap();
        let del = Message::Delete(Delete {
            xid: None,
            relation: 16384,
            old_kind: OldKind::Key,
            old: vec![Column::Text(b"2"), Column::Null, Column::Null, Column::Null, Column::Null],
        });
        e.encode(&mut out, Lsn(0x40), &del).unwrap();
        let tr = Message::Truncate(Truncate { xid: None, options: 1, relations: vec![16384] });
        e.encode(&mut out, Lsn(0x50), &tr).unwrap();
        let commit =
            Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x100), end_lsn: Lsn(0x128), commit_time: 0 });
        assert_eq!(e.encode(&mut out, Lsn(0x100), &commit).unwrap(), Effect::UnitEnd(Lsn(0x128)));
        assert!(!e.in_transaction());
        let l = lines(&out);
        let ts = "2000-01-01T00:00:00.000000Z";
        let txn = format!("\"xid\":7,\"commit_lsn\":\"0/100\",\"ts\":\"{ts}\"");
        assert_eq!(l[0], format!("{{\"op\":\"begin\",{txn}}}"));
        assert_eq!(
            l[1],
            format!(
                "{{\"op\":\"insert\",{txn},\"seq\":1,\"lsn\":\"0/20\",\"schema\":\"public\",\"table\":\"t\",\
                 \"key\":{{\"id\":1}},\"new\":{{\"id\":1,\"amount\":2.50,\"ok\":true,\"note\":\"x\",\"at\":null}}}}"
            )
        );
        assert_eq!(
            l[2],
            format!(
                "{{\"op\":\"update\",{txn},\"seq\":2,\"lsn\":\"0/30\",\"schema\":\"public\",\"table\":\"t\",\
                 \"key\":{{\"id\":1}},\"new\":{{\"id\":2,\"amount\":\"NaN\",\"ok\":false,\
                 \"note\":{{\"unchanged_toast\":true}},\"at\":null}},\"old\":{{\"id\":1}}}}"
            )
        );
        assert_eq!(
            l[3],
            format!(
                "{{\"op\":\"delete\",{txn},\"seq\":3,\"lsn\":\"0/40\",\"schema\":\"public\",\"table\":\"t\",\
                 \"key\":{{\"id\":2}},\"old\":{{\"id\":2}}}}"
            )
        );
        assert_eq!(
            l[4],
            format!(
                "{{\"op\":\"truncate\",{txn},\"seq\":4,\"lsn\":\"0/50\",\
                 \"tables\":[{{\"schema\":\"public\",\"table\":\"t\"}}],\"cascade\":true,\"restart_identity\":false}}"
            )
        );
        assert_eq!(
            l[5],
            format!("{{\"op\":\"commit\",\"end_lsn\":\"0/128\",\"xid\":7,\"commit_lsn\":\"0/100\",\"ts\":\"{ts}\",\"changes\":4}}")
        );
        assert_eq!(unit_end(l[5].as_bytes(), Format::Json), Some(Lsn(0x128)));
        for line in &l[..5] {
            assert_eq!(unit_end(line.as_bytes(), Format::Json), None, "{line}");
        }
    }

    #[test]
    fn a_transaction_in_text() {
        let mut e = Encoder::new(Format::Text);
        let mut out = Vec::new();
        e.encode(&mut out, Lsn(1), &relation()).unwrap();
        e.encode(&mut out, Lsn(0x10), &begin()).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![
                Column::Text(b"1"),
                Column::Null,
                Column::Text(b"t"),
                Column::Text(b"it's"),
                Column::Unchanged,
            ],
        });
        e.encode(&mut out, Lsn(0x20), &ins).unwrap();
        let commit =
            Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x100), end_lsn: Lsn(0x128), commit_time: 0 });
        e.encode(&mut out, Lsn(0x100), &commit).unwrap();
        let l = lines(&out);
        assert_eq!(l[0], "BEGIN xid=7 commit_lsn=0/100 ts=2000-01-01T00:00:00.000000Z");
        assert_eq!(
            l[1],
            "table public.t: INSERT: xid=7 seq=1 lsn=0/20 id[integer]:1 amount[numeric]:null ok[boolean]:true \
             note[text]:'it''s' at[timestamp with time zone]:unchanged-toast-datum"
        );
        assert_eq!(
            l[2],
            "COMMIT end_lsn=0/128 xid=7 commit_lsn=0/100 ts=2000-01-01T00:00:00.000000Z changes=1"
        );
        assert_eq!(unit_end(l[2].as_bytes(), Format::Text), Some(Lsn(0x128)));
        assert_eq!(unit_end(l[1].as_bytes(), Format::Text), None);
    }

    #[test]
    fn two_phase_records() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        e.encode(&mut out, Lsn(1), &relation()).unwrap();
        let bp = Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: "g\"1",
        });
        e.encode(&mut out, Lsn(0x10), &bp).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![Column::Text(b"5"), Column::Null, Column::Null, Column::Null, Column::Null],
        });
        e.encode(&mut out, Lsn(0x20), &ins).unwrap();
        let p = Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: "g\"1",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x200), &p).unwrap(), Effect::UnitEnd(Lsn(0x228)));
        let cp = Message::CommitPrepared(CommitPrepared {
            flags: 0,
            commit_lsn: Lsn(0x300),
            end_lsn: Lsn(0x328),
            commit_time: 0,
            xid: 9,
            gid: "g\"1",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x300), &cp).unwrap(), Effect::UnitEnd(Lsn(0x328)));
        let rp = Message::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(0x228),
            rollback_end_lsn: Lsn(0x428),
            prepare_time: 0,
            rollback_time: 0,
            xid: 9,
            gid: "g",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x400), &rp).unwrap(), Effect::UnitEnd(Lsn(0x428)));
        let l = lines(&out);
        assert!(
            l[0].starts_with("{\"op\":\"begin_prepare\",\"xid\":9,\"prepare_lsn\":\"0/200\""),
            "{}",
            l[0]
        );
        assert!(l[1].contains("\"prepare_lsn\":\"0/200\",\"gid\":\"g\\\"1\""), "{}", l[1]);
        assert!(l[2].starts_with("{\"op\":\"prepare\",\"end_lsn\":\"0/228\""), "{}", l[2]);
        assert!(l[3].starts_with("{\"op\":\"commit_prepared\",\"end_lsn\":\"0/328\""), "{}", l[3]);
        assert!(l[4].starts_with("{\"op\":\"rollback_prepared\",\"end_lsn\":\"0/428\""), "{}", l[4]);
        let ends: Vec<_> = l.iter().filter_map(|x| unit_end(x.as_bytes(), Format::Json)).collect();
        assert_eq!(ends, vec![Lsn(0x228), Lsn(0x328), Lsn(0x428)]);
    }

    #[test]
    fn messages_and_ddl() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        let m = Message::Message(LogicalMessage {
            xid: None,
            transactional: false,
            lsn: Lsn(0x50),
            prefix: "app",
            content: b"\xff\x00",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x50), &m).unwrap(), Effect::UnitEnd(Lsn(0x51)));
        e.encode(&mut out, Lsn(0x60), &begin()).unwrap();
        let ddl = Message::Message(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x70),
            prefix: DDL_PREFIX,
            content: b"{\"tag\":\"CREATE TABLE\"}",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x70), &ddl).unwrap(), Effect::None);
        let l = lines(&out);
        assert_eq!(
            l[0],
            "{\"op\":\"message\",\"end_lsn\":\"0/51\",\"lsn\":\"0/50\",\"transactional\":false,\"prefix\":\"app\",\"content_hex\":\"ff00\"}"
        );
        assert_eq!(unit_end(l[0].as_bytes(), Format::Json), Some(Lsn(0x51)));
        assert!(l[2].starts_with("{\"op\":\"ddl\",\"xid\":7,"), "{}", l[2]);
        assert!(l[2].ends_with("\"ddl\":{\"tag\":\"CREATE TABLE\"}}"), "{}", l[2]);
        assert_eq!(unit_end(l[2].as_bytes(), Format::Json), None);
        // A transactional message outside a transaction is a protocol error.
        let mut e = Encoder::new(Format::Text);
        assert_eq!(e.encode(&mut out, Lsn(0x70), &ddl), Err(OutputError::NoTransaction { kind: b'M' }));
    }

    #[test]
    fn protocol_errors() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        let ins = Message::Insert(Insert { xid: None, relation: 1, new: vec![] });
        assert_eq!(e.encode(&mut out, Lsn(1), &ins), Err(OutputError::NoTransaction { kind: b'I' }));
        e.encode(&mut out, Lsn(1), &begin()).unwrap();
        assert_eq!(e.encode(&mut out, Lsn(1), &begin()), Err(OutputError::NestedTransaction { xid: 7 }));
        assert_eq!(e.encode(&mut out, Lsn(1), &ins), Err(OutputError::UnknownRelation(1)));
        e.encode(&mut out, Lsn(1), &relation()).unwrap();
        let short = Message::Insert(Insert { xid: None, relation: 16384, new: vec![Column::Null] });
        assert_eq!(
            e.encode(&mut out, Lsn(1), &short),
            Err(OutputError::ColumnCount { relation: 16384, expected: 5, got: 1 })
        );
        let c = Message::Commit(Commit { flags: 0, commit_lsn: Lsn(1), end_lsn: Lsn(2), commit_time: 0 });
        let mut fresh = Encoder::new(Format::Json);
        assert_eq!(fresh.encode(&mut out, Lsn(1), &c), Err(OutputError::NoTransaction { kind: b'C' }));
        for err in [OutputError::UnknownRelation(5), OutputError::NestedTransaction { xid: 1 }] {
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn user_types_are_named_in_text() {
        let mut e = Encoder::new(Format::Text);
        let mut out = Vec::new();
        let ty = Message::Type(TypeInfo { xid: None, oid: 90_000, namespace: "public", name: "mood" });
        e.encode(&mut out, Lsn(1), &ty).unwrap();
        let rel = Message::Relation(Relation {
            xid: None,
            oid: 5,
            namespace: "s",
            name: "r",
            replica_identity: b'f',
            columns: vec![
                RelColumn { flags: 1, name: "m", type_oid: 90_000, type_modifier: -1 },
                RelColumn { flags: 1, name: "x", type_oid: 91_000, type_modifier: -1 },
            ],
        });
        e.encode(&mut out, Lsn(1), &rel).unwrap();
        e.encode(&mut out, Lsn(1), &begin()).unwrap();
        let del = Message::Delete(Delete {
            xid: None,
            relation: 5,
            old_kind: OldKind::Full,
            old: vec![Column::Text(b"happy"), Column::Binary(b"\x01")],
        });
        e.encode(&mut out, Lsn(2), &del).unwrap();
        let l = lines(&out);
        assert_eq!(
            l[1],
            "table s.r: DELETE: xid=7 seq=1 lsn=0/2 old-tuple: m[public.mood]:'happy' x[91000]:\\x01"
        );
    }

    #[test]
    fn text_names_prefixes_and_gids_are_escaped() {
        let forged = "x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1";
        let mut e = Encoder::new(Format::Text);
        let mut out = Vec::new();
        let ty = Message::Type(TypeInfo { xid: None, oid: 90_000, namespace: "a b", name: forged });
        e.encode(&mut out, Lsn(1), &ty).unwrap();
        let rel = Message::Relation(Relation {
            xid: None,
            oid: 5,
            namespace: "Sch\"ema",
            name: forged,
            replica_identity: b'd',
            columns: vec![
                RelColumn { flags: 1, name: "id[integer]:1 x", type_oid: 90_000, type_modifier: -1 },
                RelColumn { flags: 0, name: "v", type_oid: oid::TEXT, type_modifier: -1 },
            ],
        });
        e.encode(&mut out, Lsn(1), &rel).unwrap();
        let m = Message::Message(LogicalMessage {
            xid: None,
            transactional: false,
            lsn: Lsn(0x50),
            prefix: forged,
            content: "c\\n\u{2028}'".as_bytes(),
        });
        assert_eq!(e.encode(&mut out, Lsn(0x50), &m).unwrap(), Effect::UnitEnd(Lsn(0x51)));
        let bp = Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: forged,
        });
        e.encode(&mut out, Lsn(0x60), &bp).unwrap();
        e.encode(&mut out, Lsn(0x60), &Message::Origin { lsn: Lsn(1), name: forged }).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 5,
            new: vec![Column::Text(b"1"), Column::Text(b"a\\b\tc\x1e\x7f")],
        });
        e.encode(&mut out, Lsn(0x70), &ins).unwrap();
        let p = Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: forged,
        });
        assert_eq!(e.encode(&mut out, Lsn(0x200), &p).unwrap(), Effect::UnitEnd(Lsn(0x228)));
        let l = lines(&out);
        assert_eq!(l.len(), 5, "{l:#?}");
        let q = r"'x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1'";
        assert_eq!(
            l[0],
            format!(r"MESSAGE end_lsn=0/51 lsn=0/50 transactional=false prefix={q} content='c\\n\u2028'''")
        );
        assert!(l[1].ends_with(&format!(" gid={q}")), "{}", l[1]);
        assert!(l[2].ends_with(&format!(" origin={q}")), "{}", l[2]);
        assert_eq!(
            l[3],
            r#"table "Sch""ema"."x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1": INSERT: xid=9 seq=1 lsn=0/70 "id[integer]:1 x"["a b"."x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1"]:'1' v[text]:'a\\b\tc\u001e\u007f'"#
        );
        assert!(
            l[4].starts_with("PREPARE end_lsn=0/228 ") && l[4].ends_with(&format!(" gid={q}")),
            "{}",
            l[4]
        );
        let ends: Vec<_> = l.iter().filter_map(|x| unit_end(x.as_bytes(), Format::Text)).collect();
        assert_eq!(ends, vec![Lsn(0x51), Lsn(0x228)]);
    }

    #[test]
    fn json_escapes_every_line_break() {
        let mut s = String::new();
        push_json_text(&mut s, "a\u{85}b\u{2028}c\u{2029}d\u{7f}\u{1c}\"\\\n");
        assert_eq!(s, r#""a\u0085b\u2028c\u2029d\u007f\u001c\"\\\n""#);
    }

    #[test]
    fn ddl_content_is_embedded_only_as_one_object() {
        // What jsonb's text output gives: embedded, written compactly.
        assert_eq!(
            json_object(
                r#"{"tag": "CREATE TABLE", "objects": [{"a": 1.5e3, "b": null}, true], "q": "x\"\u00e9\n"}"#
            )
            .as_deref(),
            Some(r#"{"tag":"CREATE TABLE","objects":[{"a":1.5e3,"b":null},true],"q":"x\"\u00e9\n"}"#)
        );
        assert_eq!(json_object(" {} ").as_deref(), Some("{}"));
        assert_eq!(json_object("{\"a\":\"\u{2028}\"}").as_deref(), Some(r#"{"a":"\u2028"}"#));
        assert_eq!(json_object(r#"{"a":"\ud83d\ude00"}"#).as_deref(), Some(r#"{"a":"\ud83d\ude00"}"#));
        for bad in [
            r#"{}, "op":"insert", "x":{}"#,
            r#"{"a":1}{"b":2}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "{\"a\":\"\n\"}",
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":01}"#,
            r#"{"a":tru}"#,
            r#"[1]"#,
            r#""{}""#,
            "{",
            "",
        ] {
            assert_eq!(json_object(bad), None, "{bad}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(json_object(&deep), None);
        assert_eq!(json_object_keys(r#"{"op":1,"b":{"op":2}}"#), Some(vec!["op".to_owned(), "b".to_owned()]));

        // A forged "object" comes out as a string: the record keeps one "op".
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        e.encode(&mut out, Lsn(0x60), &begin()).unwrap();
        let ddl = Message::Message(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x70),
            prefix: DDL_PREFIX,
            content: br#"{}, "op":"insert", "x":{}"#,
        });
        e.encode(&mut out, Lsn(0x70), &ddl).unwrap();
        let l = lines(&out);
        let keys = json_object_keys(&l[1]).unwrap();
        assert_eq!(keys.iter().filter(|k| *k == "op").count(), 1, "{}", l[1]);
        assert!(l[1].ends_with(r#","content":"{}, \"op\":\"insert\", \"x\":{}"}"#), "{}", l[1]);
    }

    #[test]
    fn recovery_knows_our_lines() {
        for l in ["{\"op\":\"begin\",\"xid\":1}", "{\"op\":\"x\"}"] {
            assert!(line_is_ours(l.as_bytes(), Format::Json), "{l}");
        }
        for l in ["", "{\"op\":\"begin\"", "\0\0{\"op\":\"commit\"}", "{\"op\":\"x\0\"}", "{\"o\":1}"] {
            assert!(!line_is_ours(l.as_bytes(), Format::Json), "{l:?}");
        }
        assert!(!line_is_ours(b"{\"op\":\"\xff\"}", Format::Json));
        for l in ["BEGIN xid=1", "table a.b: INSERT: x", "COMMIT PREPARED end_lsn=0/1", "DDL x"] {
            assert!(line_is_ours(l.as_bytes(), Format::Text), "{l}");
        }
        for l in ["", "BEGINxid", "\0COMMIT end_lsn=0/1", "COMMIT end_lsn=0/1 \0", "tablea"] {
            assert!(!line_is_ours(l.as_bytes(), Format::Text), "{l:?}");
        }
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Untrusted text, heavy on what could break a line or forge a field or record.
        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "\n",
                "\r",
                "\r\n",
                "\t",
                "\0",
                "\u{b}",
                "\u{c}",
                "\u{1c}",
                "\u{1e}",
                "\u{7f}",
                "\u{85}",
                "\u{2028}",
                "\u{2029}",
                "\"",
                "'",
                "\\",
                "\\n",
                "\\u2028",
                "{",
                "}",
                "[",
                "]",
                ":",
                ",",
                ".",
                " ",
                "=",
                "é",
                "😀",
                "a",
                "Z",
                "7",
                "''",
                "COMMIT end_lsn=FFFFFFFF/0 ",
                "\nCOMMIT end_lsn=FFFFFFFF/0\n",
                "{\"op\":\"commit\",\"end_lsn\":\"FFFFFFFF/0\"}",
                "\n{\"op\":\"commit\",\"end_lsn\":\"FFFFFFFF/0\",\"xid\":1}\n",
                "\"op\":\"insert\"",
                "{}, \"op\":\"insert\", \"x\":{}",
                "MESSAGE end_lsn=1/0 ",
            ];
            let n = self.below(8);
            let mut s = String::new();
            for _ in 0..n {
                if self.below(4) == 0 {
                    if let Some(c) = char::from_u32(self.below(0x11_0000) as u32) {
                        s.push(c);
                    }
                } else {
                    s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
                }
            }
            s
        }
        fn bytes(&mut self) -> Vec<u8> {
            if self.below(4) == 0 {
                (0..self.below(10)).map(|_| self.below(256) as u8).collect()
            } else {
                self.text().into_bytes()
            }
        }
    }

    /// Property: whatever the database puts into names, prefixes, GIDs, origins, values and
    /// message contents, every record is one line, recovery finds exactly the real unit ends,
    /// every line passes recovery's check, no line holds a character that breaks lines, and
    /// every JSON line is one object with one "op".
    #[test]
    fn untrusted_text_never_changes_what_recovery_reads() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut recovery_dir = None;
        for format in [Format::Json, Format::Text] {
            if let Some((dir, _)) = recovery_dir.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
            for round in 0..1500u64 {
                let names: Vec<String> = (0..8).map(|_| rng.text()).collect();
                let values: Vec<Vec<u8>> = (0..4).map(|_| rng.bytes()).collect();
                let (prefix, content, ddl_content, gid) = (rng.text(), rng.bytes(), rng.text(), rng.text());
                let ddl_content = match rng.below(3) {
                    0 => {
                        let mut o = "{\"tag\":\"x\",\"command\":".to_owned();
                        push_json_text(&mut o, &ddl_content);
                        o + "}"
                    }
                    1 => format!("{{{ddl_content}}}"),
                    _ => ddl_content,
                };
                let cols = [(oid::INT4, 1u8), (oid::TEXT, 0), (90_000, 0), (oid::BOOL, 0)];
                let base = (round + 1) << 16;
                let row: Vec<Column<'_>> = values.iter().map(|v| Column::Text(v)).collect();
                let msg = |transactional, prefix, content| {
                    Message::Message(LogicalMessage {
                        xid: None,
                        transactional,
                        lsn: Lsn(base + 1),
                        prefix,
                        content,
                    })
                };
                let msgs: Vec<Message<'_>> = vec![
                    Message::Type(TypeInfo { xid: None, oid: 90_000, namespace: &names[0], name: &names[1] }),
                    Message::Relation(Relation {
                        xid: None,
                        oid: 5,
                        namespace: &names[2],
                        name: &names[3],
                        replica_identity: b'd',
                        columns: cols
                            .iter()
                            .enumerate()
                            .map(|(i, &(t, flags))| RelColumn {
                                flags,
                                name: &names[4 + i],
                                type_oid: t,
                                type_modifier: -1,
                            })
                            .collect(),
                    }),
                    msg(false, &prefix, &content),
                    Message::Begin(Begin { final_lsn: Lsn(base + 0x100), commit_time: 0, xid: 7 }),
                    Message::Origin { lsn: Lsn(1), name: &names[0] },
                    Message::Insert(Insert { xid: None, relation: 5, new: row.clone() }),
                    msg(true, &prefix, &content),
                    msg(true, DDL_PREFIX, ddl_content.as_bytes()),
                    Message::Update(Update {
                        xid: None,
                        relation: 5,
                        old: Some((OldKind::Full, row.clone())),
                        new: row.clone(),
                    }),
                    Message::Delete(Delete {
                        xid: None,
                        relation: 5,
                        old_kind: OldKind::Key,
                        old: row.clone(),
                    }),
                    Message::Truncate(Truncate { xid: None, options: 0, relations: vec![5] }),
                    Message::Commit(Commit {
                        flags: 0,
                        commit_lsn: Lsn(base + 0x100),
                        end_lsn: Lsn(base + 0x128),
                        commit_time: 0,
                    }),
                    Message::BeginPrepare(BeginPrepare {
                        prepare_lsn: Lsn(base + 0x200),
                        end_lsn: Lsn(base + 0x228),
                        prepare_time: 0,
                        xid: 8,
                        gid: &gid,
                    }),
                    Message::Insert(Insert { xid: None, relation: 5, new: row.clone() }),
                    Message::Prepare(Prepare {
                        flags: 0,
                        prepare_lsn: Lsn(base + 0x200),
                        end_lsn: Lsn(base + 0x228),
                        prepare_time: 0,
                        xid: 8,
                        gid: &gid,
                    }),
                    Message::CommitPrepared(CommitPrepared {
                        flags: 0,
                        commit_lsn: Lsn(base + 0x300),
                        end_lsn: Lsn(base + 0x328),
                        commit_time: 0,
                        xid: 8,
                        gid: &gid,
                    }),
                    Message::RollbackPrepared(RollbackPrepared {
                        flags: 0,
                        prepare_end_lsn: Lsn(base + 0x228),
                        rollback_end_lsn: Lsn(base + 0x428),
                        prepare_time: 0,
                        rollback_time: 0,
                        xid: 9,
                        gid: &gid,
                    }),
                ];
                let mut e = Encoder::new(format);
                let mut out = Vec::new();
                let mut ends = Vec::new();
                let mut records = 0;
                for m in &msgs {
                    if !matches!(m, Message::Relation(_) | Message::Type(_)) {
                        records += 1;
                    }
                    if let Effect::UnitEnd(end) = e.encode(&mut out, Lsn(base + 0x10), m).unwrap() {
                        ends.push(end);
                    }
                }
                assert_eq!(out.last(), Some(&b'\n'));
                let text = String::from_utf8(out).unwrap();
                let lines: Vec<&str> = text.split_terminator('\n').collect();
                let ctx = || format!("{format:?} round {round}:\n{text}");
                assert_eq!(lines.len(), records, "{}", ctx());
                let found: Vec<Lsn> = lines.iter().filter_map(|l| unit_end(l.as_bytes(), format)).collect();
                assert_eq!(found, ends, "{}", ctx());
                if round % 50 == 0 {
                    // And recovery itself, on a partial file of these lines.
                    let (dir, out) = recovery_dir.get_or_insert_with(|| {
                        let d = std::env::temp_dir().join(format!("pgrl-output-prop-{}", std::process::id()));
                        let _ = std::fs::remove_dir_all(&d);
                        let out = crate::logical::files::OutputDir::open(&d).unwrap();
                        (d, out)
                    });
                    for f in std::fs::read_dir(&*dir).unwrap() {
                        let f = f.unwrap();
                        if !f.file_name().to_string_lossy().starts_with('.') {
                            std::fs::remove_file(f.path()).unwrap();
                        }
                    }
                    let name = crate::logical::files::file_name(Lsn(base), format) + ".partial";
                    std::fs::write(dir.join(name), &text).unwrap();
                    let r = out.recover(format, false, None).unwrap();
                    assert_eq!((r.resume, r.cut), (ends.last().copied(), 0), "{}", ctx());
                }
                for l in &lines {
                    assert!(line_is_ours(l.as_bytes(), format), "{l:?}\n{}", ctx());
                    assert!(!l.chars().any(must_escape), "{l:?}");
                    if format == Format::Json {
                        let keys = json_object_keys(l).unwrap_or_else(|| panic!("not one object: {l:?}"));
                        assert_eq!(keys.first().map(String::as_str), Some("op"), "{l:?}");
                        let mut sorted = keys.clone();
                        sorted.sort();
                        sorted.dedup();
                        assert_eq!(sorted.len(), keys.len(), "duplicate keys in {l:?}");
                    }
                }
            }
        }
        if let Some((dir, out)) = recovery_dir {
            drop(out);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Property: the DDL-content check never panics on any text, and what it gives back is one
    /// line, checks again to itself, and holds no character that breaks lines.
    #[test]
    fn json_object_check_is_total_and_idempotent() {
        const PIECES: &[&str] = &[
            "{", "}", "[", "]", "\"", "\\", "\\u", "d800", "dc00", "00e9", ":", ",", "0", "-", "1.5", "e",
            "E+", "true", "fals", "null", " ", "\n", "\t", "\u{2028}", "\u{85}", "\u{1}", "é", "a", "\"op\"",
        ];
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut objects = 0;
        for _ in 0..50_000 {
            let mut s = String::from("{");
            for _ in 0..rng.below(16) {
                if rng.below(8) == 0 {
                    s.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x'));
                } else {
                    s.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
                }
            }
            if rng.below(2) == 0 {
                s.push('}');
            }
            if let Some(o) = json_object(&s) {
                objects += 1;
                assert_eq!(json_object(&o).as_deref(), Some(o.as_str()), "{s:?}");
                assert!(!o.chars().any(must_escape), "{o:?} from {s:?}");
                assert!(json_object_keys(&o).is_some());
            }
        }
        assert!(objects > 100, "the generator makes objects too: {objects}");
    }
}
