//! Log sequence numbers and the segment arithmetic PostgreSQL derives from them.
//!
//! Everything here is pure: no I/O, so it is tested exhaustively next to the code.

use std::fmt;
use std::str::FromStr;

/// Timeline IDs are `TimeLineID`, a `uint32`; timeline 0 does not exist.
pub type Tli = u32;

/// A position in the write-ahead log (PostgreSQL's `XLogRecPtr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// PostgreSQL's `InvalidXLogRecPtr`: "no position", sent as apply/flush when we have none.
    pub const INVALID: Lsn = Lsn(0);

    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }

    /// Number of the segment holding this position (`XLByteToSeg`).
    pub fn segment(self, seg_size: u64) -> u64 {
        self.0 / seg_size
    }

    /// Offset of this position inside its segment (`XLogSegmentOffset`).
    pub fn segment_offset(self, seg_size: u64) -> u64 {
        self.0 % seg_size
    }

    /// The first byte of the segment holding this position.
    pub fn segment_start(self, seg_size: u64) -> Lsn {
        Lsn(self.0 - self.segment_offset(seg_size))
    }

    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }
}

impl fmt::Display for Lsn {
    /// The `%X/%X` form every PostgreSQL tool prints and accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLsnError(pub String);

impl fmt::Display for ParseLsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid LSN \"{}\": expected two hexadecimal numbers like 0/16B3748", self.0)
    }
}

impl std::error::Error for ParseLsnError {}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Lsn, ParseLsnError> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let part = |p: &str| {
            // from_str_radix accepts a leading '+', PostgreSQL's pg_lsn input does not.
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

/// Segment sizes PostgreSQL accepts for `initdb --wal-segsize` (its `IsValidWalSegSize`): powers
/// of two, 1 MiB to 1 GiB.
pub fn valid_segment_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parses_and_round_trips() {
        for s in ["0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF", "A/B"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert_eq!("0/16b3748".parse::<Lsn>().unwrap(), Lsn(0x16B3748));
        assert_eq!("00000001/00000002".parse::<Lsn>().unwrap(), Lsn(0x1_0000_0002));
    }

    #[test]
    fn rejects_malformed() {
        for s in
            ["", "/", "0", "0/", "/0", "0/0/0", "g/0", "0/+1", "+0/1", "100000000/0", "0 /1", "-1/0", "0x1/0"]
        {
            assert!(s.parse::<Lsn>().is_err(), "{s:?} should be rejected");
        }
        let msg = "zz".parse::<Lsn>().unwrap_err().to_string();
        assert!(msg.contains("\"zz\""), "{msg}");
    }

    #[test]
    fn segment_arithmetic() {
        let mb16 = 16 << 20;
        let l = Lsn(0x3_0100_0123);
        assert_eq!(l.segment(mb16), 0x3_0100_0123 / mb16);
        assert_eq!(l.segment_offset(mb16), 0x123);
        assert_eq!(l.segment_start(mb16), Lsn(0x3_0100_0000));
        let mb1 = 1 << 20;
        assert_eq!(Lsn(0x2F_FFFF).segment(mb1), 0x2);
        assert_eq!(Lsn(0x30_0000).segment(mb1), 0x3);
    }

    #[test]
    fn segment_sizes() {
        assert!(valid_segment_size(1 << 20));
        assert!(valid_segment_size(16 << 20));
        assert!(valid_segment_size(1 << 30));
        assert!(!valid_segment_size(1 << 19));
        assert!(!valid_segment_size(2 << 30));
        assert!(!valid_segment_size(3 << 20));
        assert!(!valid_segment_size(0));
    }
}
