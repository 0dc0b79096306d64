//! Timeline history files (`00000002.history`): which timelines led to this one and where each
//! ended. Pure parsing, following PostgreSQL's `readTimeLineHistory`.

use std::fmt;

use crate::lsn::Lsn;
use crate::lsn::Tli;

/// One ancestor timeline and the position where the next one branched off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    pub tli: Tli,
    pub switchpoint: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError {
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid timeline history at line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for HistoryError {}

/// Parses the content of the history file of timeline `tli`. Blank lines and `#` comments are
/// skipped as PostgreSQL does; every entry must name a timeline lower than the previous one's
/// successor, and the last must be below `tli` itself.
pub fn parse_history(content: &[u8], tli: Tli) -> Result<Vec<HistoryEntry>, HistoryError> {
    let text =
        std::str::from_utf8(content).map_err(|_| HistoryError { line: 0, reason: "not valid UTF-8" })?;
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let err = |reason| HistoryError { line, reason };
        let mut fields = l.split('\t');
        let t: Tli =
            fields.next().and_then(|s| s.trim().parse().ok()).ok_or(err("expected a timeline ID"))?;
        let switchpoint: Lsn =
            fields.next().and_then(|s| s.trim().parse().ok()).ok_or(err("expected a switch point"))?;
        if let Some(prev) = entries.last() {
            if t <= prev.tli {
                return Err(err("timeline IDs must be in increasing sequence"));
            }
            if switchpoint < prev.switchpoint {
                return Err(err("switch points must not go backwards"));
            }
        }
        entries.push(HistoryEntry { tli: t, switchpoint });
    }
    if entries.last().is_some_and(|e| e.tli >= tli) {
        return Err(HistoryError {
            line: 0,
            reason: "timeline IDs must be less than the child timeline's ID",
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_history() {
        let h = b"1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_history(h, 3).unwrap(),
            vec![
                HistoryEntry { tli: 1, switchpoint: Lsn(0x3000158) },
                HistoryEntry { tli: 2, switchpoint: Lsn(0x5000000) }
            ]
        );
    }

    #[test]
    fn skips_comments_and_blank_lines() {
        assert_eq!(parse_history(b"# comment\n   \n1\t0/10\n", 2).unwrap().len(), 1);
        assert_eq!(parse_history(b"", 1).unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed() {
        for (h, tli) in [
            (&b"x\t0/1\n"[..], 2),
            (b"1\n", 2),
            (b"1\tzz\n", 2),
            (b"2\t0/10\n1\t0/20\n", 3),
            (b"1\t0/20\n2\t0/10\n", 3),
            (b"2\t0/10\n", 2),
            (b"\xff\n", 2),
        ] {
            assert!(parse_history(h, tli).is_err(), "{:?}", String::from_utf8_lossy(h));
        }
        let e = parse_history(b"1\t0/1\nbad\n", 2).unwrap_err();
        assert_eq!(e.line, 2);
    }
}
