//! Column values by type: the text PostgreSQL sends, or the binary send format of the common
//! scalar types decoded to the text PostgreSQL would print, written as JSON or text-format values.

use std::fmt::Write as _;

use crate::logical::pgoutput::Column;
use crate::text::civil_from_days;

use super::escape::{push_json_text, push_text_literal};

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

fn is_numeric_type(type_oid: u32) -> bool {
    matches!(
        type_oid,
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID | oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC
    )
}

pub(super) fn push_hex(out: &mut String, b: &[u8]) {
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
pub(super) fn push_text_value(out: &mut String, type_oid: u32, col: &Column<'_>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::pgoutput::*;

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
}
