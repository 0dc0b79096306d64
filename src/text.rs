//! Small parsers and formatters of text that several modules share, kept free of I/O so they
//! are tested alone: sizes as `SHOW` prints them, UTC calendar dates without a date crate, and
//! JSON strings for the log, operating-system errors as PostgreSQL's `%m` prints them.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Parses a size as `SHOW` prints it ("16MB", "1GB", "8192", "8kB").
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let mult = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// An `io::Error` the way PostgreSQL's `%m` prints it: "No such file or directory", without
/// the " (os error 2)" Rust's `Display` adds. Every message that shows an `io::Error` goes
/// through here; it lives in `ffi/` so that crate's messages read the same.
pub use pgrw_ffi::os_error;

/// Characters never written raw into our own lines: they end a line for some reader (Python's
/// `splitlines` splits on U+001C-U+001E, U+0085, U+2028 and U+2029 too) or are invisible
/// controls (a terminal escape sequence starts with one).
pub fn must_escape(c: char) -> bool {
    c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}'
}

/// Appends `value` so that it stays on one line and shows no control character: `\n`, `\r`,
/// `\t`, and `\uXXXX` for the rest of what [`must_escape`] names. For text that reaches a log
/// line from outside (a server's message, a name from the database).
pub fn push_one_line(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Append `value` as a JSON string (RFC 8259 §7): quotes and backslashes escaped, control
/// characters as `\n`-style short escapes or `\u00XX`; everything else, non-ASCII included,
/// as it is (the output is UTF-8).
pub fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if c < '\u{20}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A UTC calendar time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl UtcTime {
    /// Times before 1970 (a clock set far back) show as the epoch rather than failing.
    pub fn from_system_time(t: SystemTime) -> UtcTime {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = (secs % 86_400) as u32;
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis: since.subsec_millis(),
        }
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) in the proleptic Gregorian
/// calendar: Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).
/// Eras are 400-year cycles starting 0000-03-01, so the leap day is the last day of a
/// (March-based) year and leap rules need no special case.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year, 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::Duration;

    #[test]
    fn os_errors_read_like_postgres() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(os_error(&e), "No such file or directory");
        assert_eq!(os_error(&io::Error::from_raw_os_error(28)), "No space left on device");
        assert_eq!(os_error(&io::Error::other("custom")), "custom");
    }

    /// Every error that carries an `io::Error` shows it as PostgreSQL does: Rust's
    /// " (os error N)" never reaches a message, nor its detail or hint.
    #[test]
    fn no_rust_os_error_suffix_in_messages() {
        use crate::logging::Hinted;
        use crate::logical::files::FilesError;
        use crate::logical::writer::WriterError as LogicalWriterError;
        use crate::physical::archive::ArchiveError;
        use crate::physical::restore::RestoreError;
        use crate::physical::writer::WriterError;
        use std::path::PathBuf;

        let err = || io::Error::from_raw_os_error(28);
        let path = || PathBuf::from("/a/000000010000000000000001");
        let messages: Vec<(String, Option<String>, Option<String>)> = {
            fn parts(e: &dyn Hinted) -> (String, Option<String>, Option<String>) {
                (e.to_string(), e.detail(), e.hint())
            }
            vec![
                parts(&ArchiveError::Io { path: path(), action: "open", err: err() }),
                parts(&WriterError::Io { path: path(), action: "write", err: err() }),
                parts(&WriterError::Rename { from: path(), to: path(), err: err() }),
                parts(&WriterError::Fsync { path: path(), err: err() }),
                parts(&WriterError::NoSpace {
                    dir: "/a".into(),
                    path: path(),
                    needed: 1,
                    available: Some(0),
                    err: err(),
                }),
                parts(&RestoreError::Io { action: "open", path: path(), source: err() }),
                parts(&RestoreError::Rename { from: path(), to: path(), source: err() }),
                parts(&FilesError::Io { path: path(), action: "read", err: err() }),
                parts(&LogicalWriterError::Io { path: path(), action: "write", err: err() }),
                parts(&LogicalWriterError::Fsync { path: path(), err: err() }),
                parts(&crate::metrics::listen_error("127.0.0.1:9187", &err())),
            ]
        };
        for (message, detail, hint) in &messages {
            let all = format!("{message} {detail:?} {hint:?}");
            assert!(message.ends_with(": No space left on device"), "{all}");
            assert!(!all.contains("(os error"), "{all}");
        }
        // A rename that fails inside write_durably: its own words wrap the cause.
        let d = std::env::temp_dir().join(format!("pgrw-text-oserror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("target")).unwrap();
        let e = crate::durable::write_durably(&d.join("target"), b"x", 0o600).unwrap_err();
        std::fs::remove_dir_all(&d).unwrap();
        let text = os_error(&e);
        assert!(text.starts_with("could not rename file") && !text.contains("(os error"), "{text}");
    }

    #[test]
    fn sizes_as_show_prints_them() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("8192"), Some(8192));
        assert_eq!(parse_size("8kB"), Some(8192));
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("16 XB"), None);
        assert_eq!(parse_size(""), None);
    }

    fn leap(y: i64) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    fn month_len(y: i64, m: u32) -> u32 {
        match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days since the epoch for a date, the slow obvious way, to check the fast one.
    fn days_from_civil_slow(year: i64, month: u32, day: u32) -> i64 {
        let years: i64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
        let months: i64 = (1..month).map(|m| i64::from(month_len(year, m))).sum();
        years + months + i64::from(day) - 1
    }

    #[test]
    fn civil_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1)); // 1970 is not a leap year
        assert_eq!(civil_from_days(789), (1972, 2, 29)); // first leap day after the epoch
        assert_eq!(civil_from_days(790), (1972, 3, 1));
        assert_eq!(civil_from_days(10_956), (1999, 12, 31));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29)); // 2000: divisible by 400, leap
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
        assert_eq!(civil_from_days(24_855), (2038, 1, 19)); // the 32-bit time_t limit
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1)); // 2100: divisible by 100, not leap
    }

    #[test]
    fn civil_matches_slow_count() {
        for (y, m, d) in [
            (1970, 1, 1),
            (1972, 2, 29),
            (1999, 12, 31),
            (2000, 2, 29),
            (2000, 12, 31),
            (2026, 11, 21),
            (2100, 2, 28),
            (2100, 3, 1),
            (2400, 2, 29),
            (2400, 12, 31),
        ] {
            assert_eq!(civil_from_days(days_from_civil_slow(y, m, d)), (y, m, d));
        }
        // Every day across two 400-year cycles runs in order with no gap.
        let mut prev = civil_from_days(0);
        for days in 1..(2 * 146_097) {
            let next = civil_from_days(days);
            let (py, pm, pd) = prev;
            let ok = next == (py, pm, pd + 1)
                || (pd == month_len(py, pm)
                    && (next == (py, pm + 1, 1) || (pm == 12 && next == (py + 1, 1, 1))));
            assert!(ok, "{prev:?} -> {next:?}");
            prev = next;
        }
        // Two 400-year cycles are exactly 2 * 146097 days.
        assert_eq!(prev, (2769, 12, 31));
        assert_eq!(civil_from_days(2 * 146_097), (2770, 1, 1));
        // Far from the epoch in both directions.
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    // 2026-11-21 23:35:16 UTC
    const T: u64 = 1_795_304_116;

    #[test]
    fn utc_time() {
        assert_eq!(
            UtcTime::from_system_time(at(T, 123)),
            UtcTime { year: 2026, month: 11, day: 21, hour: 23, minute: 35, second: 16, millis: 123 }
        );
        let before_epoch = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(UtcTime::from_system_time(before_epoch), UtcTime::from_system_time(UNIX_EPOCH));
        // Sub-millisecond parts are truncated, never rounded up into the next second.
        let t = UtcTime::from_system_time(UNIX_EPOCH + Duration::from_nanos(999_999_999));
        assert_eq!((t.second, t.millis), (0, 999));
    }

    fn json(value: &str) -> String {
        let mut s = String::new();
        push_json_string(&mut s, value);
        s
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json(""), r#""""#);
        assert_eq!(json("plain"), r#""plain""#);
        assert_eq!(json(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(json(r"C:\dir\"), r#""C:\\dir\\""#);
        assert_eq!(json("a\nb\tc\rd"), r#""a\nb\tc\rd""#);
        assert_eq!(json("\u{08}\u{0C}"), r#""\b\f""#);
        assert_eq!(json("\u{0}\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
        // DEL and non-ASCII need no escaping in UTF-8 JSON; '/' is left alone too.
        assert_eq!(json("\u{7f}é€😀/"), "\"\u{7f}é€😀/\"");
    }

    #[test]
    fn json_escaping_round_trips_every_control_character() {
        for c in (0u32..0x20).filter_map(char::from_u32) {
            let s = json(&c.to_string());
            assert!(s.chars().all(|ch| ch >= ' '), "{c:?} -> {s}");
            assert!(s.starts_with("\"\\") && s.ends_with('"'), "{c:?} -> {s}");
        }
    }
}
