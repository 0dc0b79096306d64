//! Logging set-up: one global logger writing one line per message to stderr.
//!
//! Text lines look like PostgreSQL's own `log_line_prefix = '%m [%p] '` output, level words
//! included (`warning`, not `WARN`); JSON lines are one object each, for log shippers. The
//! formatting is pure ([`format_text_line`], [`format_json_line`]) so it is tested without a
//! global logger; timestamps are converted by hand (UTC only) to avoid a date crate.
//!
//! The level comes only from the command line: `RUST_LOG` is deliberately not read, so the
//! flags are the one interface and a stray environment variable cannot silence errors.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{LogFormat, LogOptions};

/// One message, with everything a line may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: SystemTime,
    pub program: &'a str,
    pub pid: u32,
    pub level: log::Level,
    /// The `log` target, normally the module path (`pgreceivewal::writer`).
    pub target: &'a str,
    pub message: &'a str,
    /// Source file and line, shown only when asked for (`--log-add-source`).
    pub source: Option<(&'a str, u32)>,
}

/// Install the global logger for `program`. Call once, early in `main`; a second call (or a
/// logger installed by someone else) leaves the first one in place.
pub fn init(opts: &LogOptions, program: &'static str) {
    let format = opts.format;
    let add_source = opts.add_source;
    let pid = std::process::id();
    // Builder::new(), not from_env(): RUST_LOG and RUST_LOG_STYLE are ignored on purpose.
    let _ = env_logger::Builder::new()
        .filter_level(opts.level)
        .target(env_logger::Target::Stderr)
        .write_style(env_logger::WriteStyle::Never)
        .format(move |buf, record| {
            let message = record.args().to_string();
            let source = match (add_source, record.file(), record.line()) {
                (true, Some(file), Some(line)) => Some((file, line)),
                _ => None,
            };
            let line = LogLine {
                time: SystemTime::now(),
                program,
                pid,
                level: record.level(),
                target: record.target(),
                message: &message,
                source,
            };
            // One write per record: env_logger hands the buffer to stderr whole, so lines
            // from the receiver and writer threads never interleave.
            match format {
                LogFormat::Text => writeln!(buf, "{}", format_text_line(&line)),
                LogFormat::Json => writeln!(buf, "{}", format_json_line(&line)),
            }
        })
        .try_init();
}

/// PostgreSQL's words for the levels (`elog.c`'s `error_severity`, lowercased as the
/// frontend tools print them).
pub fn level_word(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// `2026-11-21 23:35:16.123 UTC pgreceivewal[4242] info: message (src/writer.rs:123)`,
/// without the newline.
pub fn format_text_line(line: &LogLine<'_>) -> String {
    let t = UtcTime::from_system_time(line.time);
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC {}[{}] {}: {}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millis,
        line.program,
        line.pid,
        level_word(line.level),
        line.message
    );
    if let Some((file, no)) = line.source {
        let _ = write!(s, " ({file}:{no})");
    }
    s
}

/// `{"ts":"2026-11-21T23:35:16.123Z","level":"info","program":"pgreceivewal","pid":4242,
/// "msg":"...","target":"pgreceivewal::writer"}` (plus `"file"` and `"line"` with a source),
/// on one line, without the newline.
pub fn format_json_line(line: &LogLine<'_>) -> String {
    let t = UtcTime::from_system_time(line.time);
    let mut s = String::with_capacity(128 + line.message.len());
    let _ = write!(
        s,
        "{{\"ts\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"program\":",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millis,
        level_word(line.level)
    );
    push_json_string(&mut s, line.program);
    let _ = write!(s, ",\"pid\":{},\"msg\":", line.pid);
    push_json_string(&mut s, line.message);
    s.push_str(",\"target\":");
    push_json_string(&mut s, line.target);
    if let Some((file, no)) = line.source {
        s.push_str(",\"file\":");
        push_json_string(&mut s, file);
        let _ = write!(s, ",\"line\":{no}");
    }
    s.push('}');
    s
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
    use std::time::Duration;

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

    fn sample(message: &str) -> LogLine<'_> {
        LogLine {
            time: at(T, 123),
            program: "pgreceivewal",
            pid: 4242,
            level: log::Level::Info,
            target: "pgreceivewal::writer",
            message,
            source: None,
        }
    }

    #[test]
    fn text_line() {
        assert_eq!(
            format_text_line(&sample("finished segment at 0/3000000 (timeline 1)")),
            "2026-11-21 23:35:16.123 UTC pgreceivewal[4242] info: \
             finished segment at 0/3000000 (timeline 1)"
        );
        let line = LogLine {
            level: log::Level::Warn,
            source: Some(("src/writer.rs", 123)),
            time: at(T, 7),
            ..sample("disk is slow")
        };
        assert_eq!(
            format_text_line(&line),
            "2026-11-21 23:35:16.007 UTC pgreceivewal[4242] warning: disk is slow \
             (src/writer.rs:123)"
        );
    }

    #[test]
    fn level_words() {
        use log::Level::*;
        let words: Vec<_> = [Error, Warn, Info, Debug, Trace].into_iter().map(level_word).collect();
        assert_eq!(words, ["error", "warning", "info", "debug", "trace"]);
    }

    #[test]
    fn json_line() {
        assert_eq!(
            format_json_line(&sample("starting log streaming at 0/1000000 (timeline 1)")),
            r#"{"ts":"2026-11-21T23:35:16.123Z","level":"info","program":"pgreceivewal","pid":4242,"msg":"starting log streaming at 0/1000000 (timeline 1)","target":"pgreceivewal::writer"}"#
        );
        let line = LogLine {
            level: log::Level::Error,
            source: Some(("src/writer.rs", 9)),
            ..sample("could not fsync file \"x\"")
        };
        assert_eq!(
            format_json_line(&line),
            r#"{"ts":"2026-11-21T23:35:16.123Z","level":"error","program":"pgreceivewal","pid":4242,"msg":"could not fsync file \"x\"","target":"pgreceivewal::writer","file":"src/writer.rs","line":9}"#
        );
    }

    #[test]
    fn json_line_stays_on_one_line() {
        let s = format_json_line(&sample("a\nb\r\nc"));
        assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
        assert!(s.contains(r#""msg":"a\nb\r\nc""#), "{s}");
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

    #[test]
    fn init_installs_once() {
        let opts = LogOptions { level: log::LevelFilter::Warn, format: LogFormat::Text, add_source: false };
        init(&opts, "pgreceivewal");
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
        // A second call is harmless and keeps the first logger.
        init(&LogOptions { level: log::LevelFilter::Trace, ..opts }, "pgreceivewal");
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
    }
}
