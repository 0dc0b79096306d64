//! Names of the files in a WAL archive: segments, `.partial` segments and timeline history files.
//!
//! PostgreSQL names a segment `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number split
//! into "xlogid" and the segment within it, where one xlogid spans 4 GiB of WAL whatever the
//! segment size (`XLogFileName`). Pure code, no I/O.

use std::fmt;

use crate::compression::Method;
pub use crate::lsn::Tli;

pub const PARTIAL_SUFFIX: &str = ".partial";
pub const HISTORY_SUFFIX: &str = ".history";

/// One WAL segment on one timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    pub tli: Tli,
    pub segno: u64,
}

fn segments_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

impl SegmentId {
    /// The 24-character name PostgreSQL gives this segment for the given segment size.
    pub fn file_name(&self, seg_size: u64) -> String {
        let per = segments_per_xlogid(seg_size);
        format!("{:08X}{:08X}{:08X}", self.tli, self.segno / per, self.segno % per)
    }

    pub fn partial_name(&self, seg_size: u64) -> String {
        format!("{}{}", self.file_name(seg_size), PARTIAL_SUFFIX)
    }

    /// The name of this segment compressed with `method` (pg_receivewal's `<seg>.gz`,
    /// `<seg>.gz.partial`, ...; the plain names for none).
    pub fn name_with(&self, seg_size: u64, method: Method, partial: bool) -> String {
        let suffix = if partial { PARTIAL_SUFFIX } else { "" };
        format!("{}{}{suffix}", self.file_name(seg_size), method.extension())
    }
}

/// What a file name in the archive says it is. Names are compared exactly (upper-case hex), as
/// PostgreSQL's `IsXLogFileName` does: anything else is not ours to touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalName {
    Segment { tli: Tli, log: u32, seg: u32 },
    Partial { tli: Tli, log: u32, seg: u32 },
    History { tli: Tli },
}

fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalName {
    pub fn parse(name: &str) -> Option<WalName> {
        if let Some(stem) = name.strip_suffix(HISTORY_SUFFIX) {
            return parse_hex8(stem).filter(|&tli| tli != 0).map(|tli| WalName::History { tli });
        }
        let (stem, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
            Some(stem) => (stem, true),
            None => (name, false),
        };
        // ASCII first: slicing a 24-byte name of multi-byte characters would split a character.
        if stem.len() != 24 || !stem.is_ascii() {
            return None;
        }
        let tli = parse_hex8(&stem[0..8]).filter(|&t| t != 0)?;
        let log = parse_hex8(&stem[8..16])?;
        let seg = parse_hex8(&stem[16..24])?;
        Some(if partial { WalName::Partial { tli, log, seg } } else { WalName::Segment { tli, log, seg } })
    }

    /// The segment this name denotes for a given segment size, or `None` for history files and
    /// for names that cannot exist at that size (a low part past the last segment of an xlogid).
    pub fn segment(&self, seg_size: u64) -> Option<SegmentId> {
        let (tli, log, seg) = match *self {
            WalName::Segment { tli, log, seg } | WalName::Partial { tli, log, seg } => (tli, log, seg),
            WalName::History { .. } => return None,
        };
        let per = segments_per_xlogid(seg_size);
        (u64::from(seg) < per).then(|| SegmentId { tli, segno: u64::from(log) * per + u64::from(seg) })
    }

    pub fn is_partial(&self) -> bool {
        matches!(self, WalName::Partial { .. })
    }

    /// Like [`WalName::parse`], and also the compressed forms pg_receivewal writes
    /// (`<seg>.gz`, `<seg>.gz.partial`, `<seg>.lz4`, `<seg>.lz4.partial`) and `<seg>.zst`,
    /// `<seg>.zst.partial`; with the compression the name says.
    pub fn parse_any(name: &str) -> Option<(WalName, Method)> {
        let (base, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
            Some(stem) => (stem, true),
            None => (name, false),
        };
        for method in [Method::Gzip, Method::Lz4, Method::Zstd] {
            if let Some(stem) = base.strip_suffix(method.extension()) {
                return match WalName::parse(stem)? {
                    WalName::Segment { tli, log, seg } if partial => {
                        Some((WalName::Partial { tli, log, seg }, method))
                    }
                    w @ WalName::Segment { .. } => Some((w, method)),
                    _ => None,
                };
            }
        }
        WalName::parse(name).map(|w| (w, Method::None))
    }
}

pub fn history_file_name(tli: Tli) -> String {
    format!("{tli:08X}{HISTORY_SUFFIX}")
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {:X} on timeline {}", self.segno, self.tli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn names_match_postgres_for_any_segment_size() {
        let s = SegmentId { tli: 1, segno: 1 };
        assert_eq!(s.file_name(16 * MB), "000000010000000000000001");
        // 256 segments of 16 MiB per xlogid: segno 0x100 is the first of xlogid 1.
        assert_eq!(SegmentId { tli: 2, segno: 0x100 }.file_name(16 * MB), "000000020000000100000000");
        assert_eq!(SegmentId { tli: 2, segno: 0x1FF }.file_name(16 * MB), "0000000200000001000000FF");
        // 4096 segments of 1 MiB per xlogid.
        assert_eq!(SegmentId { tli: 1, segno: 0xFFF }.file_name(MB), "000000010000000000000FFF");
        assert_eq!(SegmentId { tli: 1, segno: 0x1000 }.file_name(MB), "000000010000000100000000");
        assert_eq!(SegmentId { tli: 0xA, segno: 4 }.file_name(1024 * MB), "0000000A0000000100000000");
        assert_eq!(s.partial_name(16 * MB), "000000010000000000000001.partial");
        assert_eq!(history_file_name(0x1F), "0000001F.history");
    }

    #[test]
    fn parse_round_trips() {
        for size in [MB, 16 * MB, 64 * MB, 1024 * MB] {
            for segno in [0, 1, 255, 256, 4095, 4096, 123_456] {
                let id = SegmentId { tli: 3, segno };
                let n = WalName::parse(&id.file_name(size)).unwrap();
                assert!(!n.is_partial());
                assert_eq!(n.segment(size), Some(id));
                let p = WalName::parse(&id.partial_name(size)).unwrap();
                assert!(p.is_partial());
                assert_eq!(p.segment(size), Some(id));
            }
        }
        assert_eq!(WalName::parse("00000002.history"), Some(WalName::History { tli: 2 }));
    }

    #[test]
    fn compressed_names() {
        let id = SegmentId { tli: 3, segno: 0x12 };
        for method in Method::ALL {
            for partial in [false, true] {
                let name = id.name_with(16 * MB, method, partial);
                let (w, m) = WalName::parse_any(&name).unwrap();
                assert_eq!((w.segment(16 * MB), w.is_partial(), m), (Some(id), partial, method), "{name}");
            }
        }
        assert_eq!(id.name_with(16 * MB, Method::Gzip, true), "000000030000000000000012.gz.partial");
        assert_eq!(id.name_with(16 * MB, Method::Lz4, false), "000000030000000000000012.lz4");
        assert_eq!(id.name_with(16 * MB, Method::Zstd, true), "000000030000000000000012.zst.partial");
        for bad in [
            "000000010000000000000001.partial.gz",
            "00000002.history.gz",
            "000000010000000000000001.gz.gz",
            ".gz",
        ] {
            assert_eq!(WalName::parse_any(bad), None, "{bad}");
        }
        assert_eq!(WalName::parse_any("00000002.history"), Some((WalName::History { tli: 2 }, Method::None)));
    }

    #[test]
    fn foreign_names_are_not_wal() {
        for name in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000000000001.gz",
            "000000010000000000000001.partial.gz",
            "00000001000000000000000a",
            "000000000000000000000001",
            "00000000.history",
            "0000001.history",
            "x00000001.history",
            ".pgreceivewal.lock",
            "000000010000000000000001.00000028.backup",
            // 24 bytes, but not 24 characters (found by fuzz/history_and_names).
            "0000000100000000000000\u{e9}",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}.partial",
        ] {
            assert_eq!(WalName::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn impossible_low_part_is_no_segment() {
        // 0x100 is past the last 16 MiB segment of an xlogid.
        let n = WalName::parse("000000010000000000000100").unwrap();
        assert_eq!(n.segment(16 * MB), None);
        assert!(n.segment(MB).is_some());
    }
}
