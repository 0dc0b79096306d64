//! Logging set-up: one global logger writing one line per message to stderr.
//!
//! Text lines are PostgreSQL's frontend messages (`pg_receivewal: error: ...`, the program
//! name taken from argv[0], see [`crate::tool::progname`]) behind a server-style
//! `log_line_prefix = '%m [%p] '`, level words included (`warning`, not `WARN`): whoever
//! greps for pg_receivewal's own words finds them, and each line still says when and which
//! process. JSON lines are one object each, for log shippers. The
//! formatting is pure ([`format_text_line`], [`format_json_line`]) so it is tested without a
//! global logger; timestamps are converted by hand (UTC only, [`crate::text::UtcTime`]) to
//! avoid a date crate.
//!
//! A message has PostgreSQL's three parts (`errmsg`, `errdetail`, `errhint`): the primary
//! message is the record's text; detail and hint travel as the record's `detail` and `hint`
//! key-values ([`Hinted`] and [`report!`](crate::report) put them there). A text log shows
//! them as lines of their own (`... detail: ...`, `... hint: ...`, written with the primary
//! line in one write); a JSON line has them as fields `"detail"` and `"hint"`.
//!
//! The level comes only from the command line: `RUST_LOG` is deliberately not read, so the
//! flags are the one interface and a stray environment variable cannot silence errors.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::SystemTime;

use crate::config::{LogFormat, LogOptions};
use crate::text::{push_json_string, push_one_line, UtcTime};

/// One message, with everything a line may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: SystemTime,
    pub program: &'a str,
    pub pid: u32,
    pub level: log::Level,
    /// The `log` target, normally the module path (`pgreceivewal::physical::writer`).
    pub target: &'a str,
    pub message: &'a str,
    /// PostgreSQL's `errdetail`: a full sentence or more, capitalised, ending in a period.
    pub detail: Option<&'a str>,
    /// PostgreSQL's `errhint`: what to do about it, a full sentence.
    pub hint: Option<&'a str>,
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
            let kv = record.key_values();
            let (detail, hint) = (kv.get("detail".into()), kv.get("hint".into()));
            let line = LogLine {
                time: SystemTime::now(),
                program,
                pid,
                level: record.level(),
                target: record.target(),
                message: &message,
                detail: detail.as_ref().and_then(|v| v.to_borrowed_str()),
                hint: hint.as_ref().and_then(|v| v.to_borrowed_str()),
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

/// An error (or warning) that can say more than its one-line primary message, the way
/// PostgreSQL's `ereport` does: the `Display` text is the primary message (lowercase, no
/// trailing period), [`Hinted::detail`] and [`Hinted::hint`] are separate sentences
/// (capitalised, ending in a period). The fix-it goes into the hint, never glued onto the
/// primary message with "; ".
pub trait Hinted: fmt::Display {
    /// More about what happened (`errdetail`).
    fn detail(&self) -> Option<String> {
        None
    }
    /// What to do about it (`errhint`).
    fn hint(&self) -> Option<String> {
        None
    }
}

/// A message built on the spot, for errors that carry free text rather than a variant of
/// their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub text: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Message {
    pub fn new(text: impl Into<String>) -> Message {
        Message { text: text.into(), detail: None, hint: None }
    }

    pub fn detail(self, detail: impl Into<String>) -> Message {
        Message { detail: Some(detail.into()), ..self }
    }

    pub fn hint(self, hint: impl Into<String>) -> Message {
        Message { hint: Some(hint.into()), ..self }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Hinted for Message {
    fn detail(&self) -> Option<String> {
        self.detail.clone()
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

impl std::error::Error for Message {}

/// Logs a [`Hinted`] error at `level` with its detail and hint, from the caller's module (so
/// the target and `--log-add-source` name the caller). An optional format replaces the
/// primary text: `report!(log::Level::Warn, e; "{e}; trying again in {s} s")`.
#[macro_export]
macro_rules! report {
    ($level:expr, $err:expr) => {{
        let e = &$err;
        let detail = $crate::logging::Hinted::detail(e);
        let hint = $crate::logging::Hinted::hint(e);
        ::log::log!($level, detail = detail.as_deref(), hint = hint.as_deref(); "{}", e)
    }};
    ($level:expr, $err:expr; $($fmt:tt)+) => {{
        let e = &$err;
        let detail = $crate::logging::Hinted::detail(e);
        let hint = $crate::logging::Hinted::hint(e);
        ::log::log!($level, detail = detail.as_deref(), hint = hint.as_deref(); $($fmt)+)
    }};
}

/// The lines a command-line tool prints on stderr when it runs without the logger (usage
/// errors, pgrestorewal), as PostgreSQL's frontend tools do (`src/common/logging.c`):
/// `prog: error: primary`, then `prog: detail: ...` and `prog: hint: ...`, each line ending in
/// a newline.
pub fn plain_lines(program: &str, level: &str, e: &(impl Hinted + ?Sized)) -> String {
    let mut s = String::new();
    for (word, text) in [(level, Some(e.to_string())), ("detail", e.detail()), ("hint", e.hint())] {
        if let Some(text) = text {
            let _ = write!(s, "{program}: {word}: ");
            push_one_line(&mut s, &text);
            s.push('\n');
        }
    }
    s
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

/// `2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: info: message (src/physical/writer.rs:123)`,
/// without the newline; a detail and a hint follow on lines of their own with the same
/// prefix (`... pgreceivewal: detail: ...`, `... pgreceivewal: hint: ...`), as PostgreSQL's
/// tools print them. Messages carry text from outside (the server's words, names from the
/// database): each part is one line, whatever that text holds.
pub fn format_text_line(line: &LogLine<'_>) -> String {
    let t = UtcTime::from_system_time(line.time);
    let prefix = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC [{}] {}: ",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis, line.pid, line.program,
    );
    let mut s = format!("{prefix}{}: ", level_word(line.level));
    push_one_line(&mut s, line.message);
    if let Some((file, no)) = line.source {
        let _ = write!(s, " ({file}:{no})");
    }
    for (word, text) in [("detail", line.detail), ("hint", line.hint)] {
        if let Some(text) = text {
            let _ = write!(s, "\n{prefix}{word}: ");
            push_one_line(&mut s, text);
        }
    }
    s
}

/// `{"ts":"2026-11-21T23:35:16.123Z","level":"info","program":"pgreceivewal","pid":4242,
/// "msg":"...","target":"pgreceivewal::physical::writer"}` (plus `"detail"` and `"hint"` after
/// `"msg"` when the message has them, and `"file"` and `"line"` with a source), on one line,
/// without the newline.
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
    for (key, text) in [("detail", line.detail), ("hint", line.hint)] {
        if let Some(text) = text {
            let _ = write!(s, ",\"{key}\":");
            push_json_string(&mut s, text);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    // 2026-11-21 23:35:16 UTC
    const T: u64 = 1_795_304_116;

    fn sample(message: &str) -> LogLine<'_> {
        LogLine {
            time: at(T, 123),
            program: "pgreceivewal",
            pid: 4242,
            level: log::Level::Info,
            target: "pgreceivewal::physical::writer",
            message,
            detail: None,
            hint: None,
            source: None,
        }
    }

    #[test]
    fn text_line() {
        assert_eq!(
            format_text_line(&sample("finished segment at 0/3000000 (timeline 1)")),
            "2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: info: \
             finished segment at 0/3000000 (timeline 1)"
        );
        let line = LogLine {
            level: log::Level::Warn,
            source: Some(("src/physical/writer.rs", 123)),
            time: at(T, 7),
            ..sample("disk is slow")
        };
        assert_eq!(
            format_text_line(&line),
            "2026-11-21 23:35:16.007 UTC [4242] pgreceivewal: warning: disk is slow \
             (src/physical/writer.rs:123)"
        );
    }

    /// Started as a `pg_receivewal` symlink, a line holds pg_receivewal's own words, as
    /// PostgreSQL's TAP suite greps for them (`pg_receivewal: error: replication slot ...`).
    #[test]
    fn text_line_speaks_as_the_program_started() {
        let line = LogLine {
            program: "pg_receivewal",
            level: log::Level::Error,
            ..sample("replication slot \"x\" does not exist")
        };
        assert_eq!(
            format_text_line(&line),
            "2026-11-21 23:35:16.123 UTC [4242] pg_receivewal: error: replication slot \"x\" does not exist"
        );
    }

    /// A table name or a server message with a line break, a terminal escape or U+2028 stays
    /// inside its one log line.
    #[test]
    fn text_line_of_untrusted_text_is_one_line() {
        let l = format_text_line(&sample("relation \"a\nerror: forged\r\u{1b}[2J\u{2028}\u{85}\" is gone"));
        assert_eq!(
            l,
            "2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: info: \
             relation \"a\\nerror: forged\\r\\u001b[2J\\u2028\\u0085\" is gone"
        );
        assert!(!l.chars().any(crate::text::must_escape), "{l:?}");
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
            r#"{"ts":"2026-11-21T23:35:16.123Z","level":"info","program":"pgreceivewal","pid":4242,"msg":"starting log streaming at 0/1000000 (timeline 1)","target":"pgreceivewal::physical::writer"}"#
        );
        let line = LogLine {
            level: log::Level::Error,
            source: Some(("src/physical/writer.rs", 9)),
            ..sample("could not fsync file \"x\"")
        };
        assert_eq!(
            format_json_line(&line),
            r#"{"ts":"2026-11-21T23:35:16.123Z","level":"error","program":"pgreceivewal","pid":4242,"msg":"could not fsync file \"x\"","target":"pgreceivewal::physical::writer","file":"src/physical/writer.rs","line":9}"#
        );
    }

    /// Detail and hint are lines of their own in text, with the same prefix, and fields of
    /// their own in JSON; untrusted text in them cannot add a line either.
    #[test]
    fn detail_and_hint() {
        let line = LogLine {
            level: log::Level::Error,
            detail: Some("The disk may have lost written WAL."),
            hint: Some("Free space in \"/a\nb\"."),
            ..sample("could not fsync file \"x\": Input/output error")
        };
        assert_eq!(
            format_text_line(&line),
            "2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: error: could not fsync file \"x\": Input/output error\n\
             2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: detail: The disk may have lost written WAL.\n\
             2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: hint: Free space in \"/a\\nb\"."
        );
        assert_eq!(
            format_json_line(&line),
            r#"{"ts":"2026-11-21T23:35:16.123Z","level":"error","program":"pgreceivewal","pid":4242,"msg":"could not fsync file \"x\": Input/output error","detail":"The disk may have lost written WAL.","hint":"Free space in \"/a\nb\".","target":"pgreceivewal::physical::writer"}"#
        );
        let only_hint = LogLine { hint: Some("Use -S."), ..sample("no slot") };
        assert!(format_text_line(&only_hint)
            .ends_with("info: no slot\n2026-11-21 23:35:16.123 UTC [4242] pgreceivewal: hint: Use -S."));
        assert!(format_json_line(&only_hint).contains(r#""msg":"no slot","hint":"Use -S.","target""#));
    }

    #[test]
    fn plain_lines_as_frontend_tools_print_them() {
        let m = Message::new("cannot serve \"f\"").detail("It is damaged.").hint("Restore it.");
        assert_eq!(
            plain_lines("pgrestorewal", "error", &m),
            "pgrestorewal: error: cannot serve \"f\"\npgrestorewal: detail: It is damaged.\npgrestorewal: hint: Restore it.\n"
        );
        assert_eq!(plain_lines("p", "warning", &Message::new("a\nb")), "p: warning: a\\nb\n");
    }

    #[test]
    fn json_line_stays_on_one_line() {
        let s = format_json_line(&sample("a\nb\r\nc"));
        assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
        assert!(s.contains(r#""msg":"a\nb\r\nc""#), "{s}");
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
