//! The `-Z/--compress` specification, parsed as pg_receivewal 15 to 18 parses it
//! (`parse_compress_options`, `parse_compress_specification` and
//! `validate_compress_specification` in PostgreSQL's `src/common/compression.c`), with its
//! messages, so scripts written for pg_receivewal mean the same here. Pure code: the encoders
//! live with the archiver (`physical::compress`).
//!
//! Forms: a bare integer (`-Z 0` is none, `-Z 1`..`-Z 9` are gzip levels, PostgreSQL 14's
//! spelling), `METHOD`, `METHOD:LEVEL`, and `METHOD:level=N[,long]`.

use std::fmt;

/// How archived segments are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    None,
    Gzip,
    Lz4,
    Zstd,
}

impl Method {
    /// The name pg_receivewal spells it with (`get_compress_algorithm_name`).
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Gzip => "gzip",
            Method::Lz4 => "lz4",
            Method::Zstd => "zstd",
        }
    }

    /// What the method adds to a segment's name, before `.partial`: pg_receivewal's
    /// `dir_get_file_name` (`.gz`, `.lz4`), and `.zst` as the zstd tool names its files.
    pub fn extension(self) -> &'static str {
        match self {
            Method::None => "",
            Method::Gzip => ".gz",
            Method::Lz4 => ".lz4",
            Method::Zstd => ".zst",
        }
    }

    /// Every form a segment can take in an archive, uncompressed first: the order in which
    /// two forms of one segment are preferred.
    pub const ALL: [Method; 4] = [Method::None, Method::Gzip, Method::Lz4, Method::Zstd];
}

/// A compression method and its level (the method's default when none was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    pub method: Method,
    pub level: i32,
    /// zstd's long-distance matching (`long`).
    pub long_distance: bool,
}

impl Compression {
    pub const NONE: Compression = Compression { method: Method::None, level: 0, long_distance: false };

    pub fn is_none(&self) -> bool {
        self.method == Method::None
    }
}

impl Default for Compression {
    fn default() -> Compression {
        Compression::NONE
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.method.name())?;
        if self.method != Method::None {
            write!(f, ":level={}", self.level)?;
        }
        if self.long_distance {
            write!(f, ",long")?;
        }
        Ok(())
    }
}

/// zstd's level range (`ZSTD_minCLevel()`, `ZSTD_maxCLevel()`) and default.
const ZSTD_MIN_LEVEL: i64 = -(1 << 17);
const ZSTD_MAX_LEVEL: i64 = 22;
const ZSTD_DEFAULT_LEVEL: i64 = 3;

/// C's `strtol(s, &end, 10)` followed by `*end == '\0'`: leading white space, an optional
/// sign, digits, nothing after. `Some(None)` for a number too large for a `long` (strtol
/// clamps it; every level check refuses it). `None` when the string is not all number.
fn whole_integer(s: &str) -> Option<Option<i64>> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(t.parse::<i64>().ok())
}

/// Parses a `-Z/--compress` value. The error is the message pg_receivewal prints, without
/// its `pg_receivewal: error: ` prefix.
pub fn parse(option: &str) -> Result<Compression, String> {
    // parse_compress_options: a bare integer is "none" when zero and a gzip level otherwise;
    // strtol on an empty string converts nothing and stops at the end, so "" is 0, none.
    let (algorithm, detail) = if option.is_empty() {
        ("none", None)
    } else if let Some(n) = whole_integer(option) {
        if n == Some(0) {
            ("none", None)
        } else {
            ("gzip", Some(option))
        }
    } else {
        match option.split_once(':') {
            Some((a, d)) => (a, Some(d)),
            None => (option, None),
        }
    };
    let (method, default_level) = match algorithm {
        "none" => (Method::None, 0),
        "gzip" => (Method::Gzip, -1),
        "lz4" => (Method::Lz4, 0),
        "zstd" => (Method::Zstd, ZSTD_DEFAULT_LEVEL),
        _ => return Err(format!("unrecognized compression algorithm: \"{algorithm}\"")),
    };
    let invalid = |detail: String| format!("invalid compression specification: {detail}");
    let mut level = Some(default_level);
    let (mut workers, mut long) = (false, None);
    if let Some(detail) = detail {
        if let Some(n) = whole_integer(detail) {
            level = n;
        } else {
            parse_keywords(detail, &mut level, &mut workers, &mut long).map_err(invalid)?;
        }
    }
    let name = method.name();
    let (min, max) = match method {
        Method::None => (1, 1),
        Method::Gzip => (1, 9),
        Method::Lz4 => (1, 12),
        Method::Zstd => (ZSTD_MIN_LEVEL, ZSTD_MAX_LEVEL),
    };
    if method == Method::None && level != Some(0) {
        return Err(invalid(format!("compression algorithm \"{name}\" does not accept a compression level")));
    }
    let level = match level {
        Some(l) if l == default_level || (min..=max).contains(&l) => l as i32,
        _ => {
            return Err(invalid(format!(
                "compression algorithm \"{name}\" expects a compression level between {min} and {max} (default at {default_level})"
            )))
        }
    };
    if workers {
        if method != Method::Zstd {
            return Err(invalid(format!("compression algorithm \"{name}\" does not accept a worker count")));
        }
        // pg_receivewal refuses zstd altogether; we compress it on the writer thread only.
        return Err(invalid(
            "pgreceivewal compresses on one thread and does not accept a worker count; leave \"workers\" out"
                .to_string(),
        ));
    }
    // PostgreSQL refuses the keyword on other methods whatever its value ("long=off" too).
    if long.is_some() && method != Method::Zstd {
        return Err(invalid(format!("compression algorithm \"{name}\" does not support long-distance mode")));
    }
    Ok(Compression { method, level, long_distance: long == Some(true) })
}

/// The `keyword[=value],...` form of a compression detail (`parse_compress_specification`).
/// A level that does not fit an `int` becomes `None`, refused by the range check.
fn parse_keywords(
    detail: &str,
    level: &mut Option<i64>,
    workers: &mut bool,
    long: &mut Option<bool>,
) -> Result<(), String> {
    for item in detail.split(',') {
        let (keyword, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        if keyword.is_empty() {
            return Err("found empty string where a compression option was expected".into());
        }
        let integer = |value: Option<&str>| -> Result<Option<i64>, String> {
            let v = value.ok_or_else(|| format!("compression option \"{keyword}\" requires a value"))?;
            let n = whole_integer(v)
                .ok_or_else(|| format!("value for compression option \"{keyword}\" must be an integer"))?;
            Ok(n.filter(|n| i32::try_from(*n).is_ok()))
        };
        match keyword {
            "level" => *level = integer(value)?,
            "workers" => {
                integer(value)?;
                *workers = true;
            }
            "long" => {
                *long = Some(match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("yes" | "on" | "1") => true,
                    Some("no" | "off" | "0") => false,
                    Some(_) => {
                        return Err(format!(
                            "value for compression option \"{keyword}\" must be a Boolean value"
                        ))
                    }
                });
            }
            _ => return Err(format!("unrecognized compression option: \"{keyword}\"")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Compression {
        parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn methods_and_levels() {
        assert_eq!(ok("none"), Compression::NONE);
        assert_eq!(ok("0"), Compression::NONE);
        assert_eq!(ok(""), Compression::NONE);
        assert_eq!(ok("none:0"), Compression::NONE);
        assert_eq!(ok("gzip"), Compression { method: Method::Gzip, level: -1, long_distance: false });
        // PostgreSQL 14's -Z 0-9: gzip levels.
        assert_eq!(ok("5").method, Method::Gzip);
        assert_eq!(ok("5").level, 5);
        assert_eq!(ok("+9").level, 9);
        assert_eq!(ok("gzip:1").level, 1);
        assert_eq!(ok("gzip:level=7").level, 7);
        assert_eq!(ok("lz4"), Compression { method: Method::Lz4, level: 0, long_distance: false });
        assert_eq!(ok("lz4:12").level, 12);
        assert_eq!(ok("zstd").level, 3);
        assert_eq!(ok("zstd:level=-5").level, -5);
        assert_eq!(ok("zstd:19").level, 19);
        assert!(ok("zstd:level=1,long").long_distance);
        assert!(!ok("zstd:long=off").long_distance);
        assert_eq!(ok("gzip:level=3").to_string(), "gzip:level=3");
    }

    #[test]
    fn refusals_read_like_pg_receivewal() {
        for (spec, msg) in [
            ("nonexistentcompression", "unrecognized compression algorithm: \"nonexistentcompression\""),
            ("GZIP", "unrecognized compression algorithm: \"GZIP\""),
            ("none:1", "invalid compression specification: compression algorithm \"none\" does not accept a compression level"),
            ("10", "invalid compression specification: compression algorithm \"gzip\" expects a compression level between 1 and 9 (default at -1)"),
            ("gzip:0", "invalid compression specification: compression algorithm \"gzip\" expects a compression level between 1 and 9 (default at -1)"),
            ("lz4:13", "invalid compression specification: compression algorithm \"lz4\" expects a compression level between 1 and 12 (default at 0)"),
            ("zstd:23", "invalid compression specification: compression algorithm \"zstd\" expects a compression level between -131072 and 22 (default at 3)"),
            ("gzip:", "invalid compression specification: found empty string where a compression option was expected"),
            ("gzip:level=5,", "invalid compression specification: found empty string where a compression option was expected"),
            ("gzip:fast", "invalid compression specification: unrecognized compression option: \"fast\""),
            ("gzip:level", "invalid compression specification: compression option \"level\" requires a value"),
            ("gzip:level=x", "invalid compression specification: value for compression option \"level\" must be an integer"),
            ("gzip:level=99999999999", "invalid compression specification: compression algorithm \"gzip\" expects a compression level between 1 and 9 (default at -1)"),
            ("gzip:workers=2", "invalid compression specification: compression algorithm \"gzip\" does not accept a worker count"),
            ("lz4:long", "invalid compression specification: compression algorithm \"lz4\" does not support long-distance mode"),
            ("zstd:long=maybe", "invalid compression specification: value for compression option \"long\" must be a Boolean value"),
        ] {
            assert_eq!(parse(spec).unwrap_err(), msg, "{spec:?}");
        }
        assert!(parse("zstd:workers=2").unwrap_err().contains("worker count"));
    }

    #[test]
    fn extensions_are_pg_receivewals() {
        assert_eq!(Method::Gzip.extension(), ".gz");
        assert_eq!(Method::Lz4.extension(), ".lz4");
        assert_eq!(Method::Zstd.extension(), ".zst");
        assert_eq!(Method::None.extension(), "");
    }
}
