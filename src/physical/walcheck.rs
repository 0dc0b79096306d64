//! Checks on received WAL before it is written: the long header that opens each segment must
//! carry its own address and name this server's system identifier, segment size and page
//! size, and the pages of a segment must be a run of pages that carry their own address,
//! followed only by pages that do not. Data that fails is not WAL of this cluster at this
//! position (a bug, a proxy mangling bytes, a server that was swapped) and is never archived.
//!
//! Why a segment may end in pages that are not WAL: after an XLOG_SWITCH record (from
//! `pg_switch_wal()` or `archive_timeout`) the server leaves the rest of the segment unwritten,
//! and streams whatever its file holds there: zeros, or old WAL of a recycled segment, whose
//! page addresses belong elsewhere. pg_receivewal archives those bytes and so do we (the
//! segment stays byte-identical to the server's). Such a tail can never be followed by a page
//! that carries its own address again within the same segment.
//!
//! Layout from PostgreSQL's `xlog_internal.h`: `XLogPageHeaderData` is magic (u16), info (u16),
//! tli (u32), pageaddr (u64 at offset 8), rem_len (u32); `XLogLongPageHeaderData` adds sysid
//! (u64 at 24), seg_size (u32 at 32) and xlog_blcksz (u32 at 36). Fields are in the server's
//! byte order; physical replication only works between machines of the same byte order, and we
//! read little-endian, as on every platform PostgreSQL ships binaries for that we build on.

use std::fmt;

use crate::lsn::Lsn;

const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_HEADER_CHECKED: usize = 16;
const LONG_HEADER_CHECKED: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalCheckError {
    PageAddress {
        page: Lsn,
        found: Lsn,
    },
    /// A valid page after the unwritten tail of a segment began.
    PageAfterTail {
        page: Lsn,
        tail: Lsn,
    },
    NotLongHeader {
        page: Lsn,
    },
    SystemId {
        page: Lsn,
        found: u64,
        expected: u64,
    },
    SegmentSize {
        page: Lsn,
        found: u32,
        expected: u64,
    },
    BlockSize {
        page: Lsn,
        found: u32,
        expected: u32,
    },
    /// Not a WAL page header of any PostgreSQL version (checked on stored files only).
    Magic {
        page: Lsn,
        found: u16,
    },
    /// The page says it was written on a later timeline than the file it is in (or on none).
    Timeline {
        page: Lsn,
        found: u32,
        file_tli: u32,
    },
}

impl fmt::Display for WalCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalCheckError::PageAddress { page, found } => {
                write!(f, "received WAL page at {page} has page address {found} in its header")
            }
            WalCheckError::PageAfterTail { page, tail } => write!(
                f,
                "received WAL page at {page} follows unwritten pages from {tail} in the same segment; the stream is corrupt"
            ),
            WalCheckError::NotLongHeader { page } => write!(f, "received WAL segment starting at {page} has no long page header"),
            WalCheckError::SystemId { page, found, expected } => {
                write!(f, "received WAL segment at {page} has system identifier {found}, expected {expected}")
            }
            WalCheckError::SegmentSize { page, found, expected } => {
                write!(f, "received WAL segment at {page} says its segment size is {found} bytes, expected {expected}")
            }
            WalCheckError::BlockSize { page, found, expected } => {
                write!(f, "received WAL segment at {page} says its page size is {found} bytes, expected {expected}")
            }
            WalCheckError::Magic { page, found } => {
                write!(f, "WAL page at {page} has magic number {found:04X}, which is no WAL page header")
            }
            WalCheckError::Timeline { page, found, file_tli } => {
                write!(f, "WAL page at {page} has timeline {found} in its header, but the file is of timeline {file_tli}")
            }
        }
    }
}

impl std::error::Error for WalCheckError {}

/// The long header's own fields: the flag, the system identifier (when known) and the segment
/// size. Shared by the stream check and the check of stored segments.
fn check_long_header(page: Lsn, h: &[u8], sysid: Option<u64>, seg_size: u64) -> Result<(), WalCheckError> {
    if le_u16(h, 2) & XLP_LONG_HEADER == 0 {
        return Err(WalCheckError::NotLongHeader { page });
    }
    let found = le_u64(h, 24);
    if let Some(expected) = sysid.filter(|&e| e != found) {
        return Err(WalCheckError::SystemId { page, found, expected });
    }
    let seg = le_u32(h, 32);
    if u64::from(seg) != seg_size {
        return Err(WalCheckError::SegmentSize { page, found: seg, expected: seg_size });
    }
    Ok(())
}

/// Bytes of a stored segment [`check_stored_segment`] reads: the long page header's fields.
pub const STORED_HEADER_LEN: usize = LONG_HEADER_CHECKED;

/// What the archive knows about a segment file it is about to serve.
#[derive(Debug, Clone, Copy)]
pub struct StoredSegment {
    /// The timeline in the file's name.
    pub tli: u32,
    /// The LSN the segment starts at (from its name and the segment size).
    pub start: Lsn,
    pub seg_size: u64,
    /// The cluster's system identifier, when the archive's metadata records it.
    pub system_id: Option<u64>,
}

/// Checks the long header that opens a stored segment (its first [`STORED_HEADER_LEN`] bytes)
/// before the file is served for recovery: a WAL page magic number, a timeline no later than
/// the file's (the first page of a new timeline's segment is a copy written on the old one),
/// its own address, and the long header's fields. A zero-filled or foreign file fails, and
/// would otherwise end recovery early at its start.
pub fn check_stored_segment(h: &[u8], seg: &StoredSegment) -> Result<(), WalCheckError> {
    let page = seg.start;
    if h.len() < LONG_HEADER_CHECKED {
        return Err(WalCheckError::NotLongHeader { page });
    }
    // XLOG_PAGE_MAGIC changes with every major version (0xD110 in 15, 0xD118 in 18) and the
    // archive does not record which one wrote it; every release since 9.0 uses 0xD0xx-0xD1xx.
    let magic = le_u16(h, 0);
    if !matches!(magic >> 8, 0xD0 | 0xD1) {
        return Err(WalCheckError::Magic { page, found: magic });
    }
    let tli = le_u32(h, 4);
    if tli == 0 || tli > seg.tli {
        return Err(WalCheckError::Timeline { page, found: tli, file_tli: seg.tli });
    }
    let found = Lsn(le_u64(h, 8));
    if found != page {
        return Err(WalCheckError::PageAddress { page, found });
    }
    check_long_header(page, h, seg.system_id, seg.seg_size)
}

/// Verifies a contiguous stream of WAL chunks, carrying a page header that straddles two
/// chunks over to the next call.
#[derive(Debug)]
pub struct PageVerifier {
    sysid: u64,
    seg_size: u64,
    blcksz: u32,
    /// A header seen only in part: where its page starts and the bytes received so far.
    pending: Option<(Lsn, Vec<u8>)>,
    /// Where the last chunk ended, to detect a stream that restarted elsewhere.
    next: Option<Lsn>,
    /// The first page of the current segment that did not carry its own address.
    tail: Option<Lsn>,
}

/// Little-endian fields of WAL page and record headers (xlogrecord.rs reads them too).
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl PageVerifier {
    pub fn new(sysid: u64, seg_size: u64, blcksz: u32) -> PageVerifier {
        PageVerifier { sysid, seg_size, blcksz, pending: None, next: None, tail: None }
    }

    fn header_len(&self, page: Lsn) -> usize {
        if page.segment_offset(self.seg_size) == 0 {
            LONG_HEADER_CHECKED
        } else {
            SHORT_HEADER_CHECKED
        }
    }

    fn check_header(&mut self, page: Lsn, h: &[u8]) -> Result<(), WalCheckError> {
        let found = Lsn(le_u64(h, 8));
        let segment_start = page.segment_offset(self.seg_size) == 0;
        if segment_start {
            self.tail = None;
        } else if let Some(tail) =
            self.tail.filter(|t| t.segment(self.seg_size) == page.segment(self.seg_size))
        {
            return if found == page { Err(WalCheckError::PageAfterTail { page, tail }) } else { Ok(()) };
        }
        if found != page {
            if segment_start {
                return Err(WalCheckError::PageAddress { page, found });
            }
            log::debug!("WAL from {page} to the end of its segment is unwritten (after a WAL switch)");
            self.tail = Some(page);
            return Ok(());
        }
        if segment_start {
            check_long_header(page, h, Some(self.sysid), self.seg_size)?;
            let blck = le_u32(h, 36);
            if blck != self.blcksz {
                return Err(WalCheckError::BlockSize { page, found: blck, expected: self.blcksz });
            }
        }
        Ok(())
    }

    /// Checks every page header that `data`, starting at `start`, contains or completes.
    pub fn check(&mut self, start: Lsn, data: &[u8]) -> Result<(), WalCheckError> {
        if self.next != Some(start) {
            self.pending = None;
            self.tail = None;
        }
        self.next = start.checked_add(data.len() as u64);
        let blck = u64::from(self.blcksz);
        let end = start.0 + data.len() as u64;

        // Finish a header begun in an earlier chunk.
        if let Some((page, mut buf)) = self.pending.take() {
            let need = self.header_len(page) - buf.len();
            let take = need.min(data.len());
            buf.extend_from_slice(&data[..take]);
            if buf.len() == self.header_len(page) {
                self.check_header(page, &buf)?;
            } else {
                self.pending = Some((page, buf));
                return Ok(());
            }
        }

        let mut page = start.0.div_ceil(blck) * blck;
        while page < end {
            let at = (page - start.0) as usize;
            let need = self.header_len(Lsn(page));
            if data.len() - at >= need {
                self.check_header(Lsn(page), &data[at..at + need])?;
            } else {
                self.pending = Some((Lsn(page), data[at..].to_vec()));
            }
            page += blck;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const BLCK: u32 = 8192;
    const SYSID: u64 = 7_312_345_678_901_234_567;

    /// Builds `pages` pages of fake WAL starting at `start` with correct headers.
    fn wal(start: u64, pages: usize) -> Vec<u8> {
        let mut v = vec![0u8; pages * BLCK as usize];
        for i in 0..pages {
            let addr = start + (i as u64) * u64::from(BLCK);
            let p = &mut v[i * BLCK as usize..];
            p[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
            p[8..16].copy_from_slice(&addr.to_le_bytes());
            if addr.is_multiple_of(SEG) {
                p[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
                p[24..32].copy_from_slice(&SYSID.to_le_bytes());
                p[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                p[36..40].copy_from_slice(&BLCK.to_le_bytes());
            }
        }
        v
    }

    #[test]
    fn accepts_good_wal_in_any_chunking() {
        let start = 3 * SEG - 2 * u64::from(BLCK);
        let data = wal(start, 6);
        for chunk in [1, 7, 16, 17, 39, 40, 41, 100, 8192, 8193, 20000, data.len()] {
            let mut v = PageVerifier::new(SYSID, SEG, BLCK);
            for (i, c) in data.chunks(chunk).enumerate() {
                v.check(Lsn(start + (i * chunk) as u64), c).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            }
        }
    }

    #[test]
    fn starting_mid_page_checks_only_later_pages() {
        let data = wal(0, 2);
        let mut v = PageVerifier::new(SYSID, SEG, BLCK);
        v.check(Lsn(100), &data[100..]).unwrap();
    }

    #[test]
    fn unwritten_tail_after_a_switch_is_accepted() {
        // Two good pages, then zeros and a recycled page to the end of the segment, then the
        // next segment's long header.
        let b = BLCK as usize;
        let mut data = wal(SEG, SEG as usize / b + 1);
        data[2 * b..3 * b].fill(0);
        data[3 * b + 8..3 * b + 16].copy_from_slice(&(7 * SEG).to_le_bytes());
        data[4 * b..SEG as usize].fill(0);
        for chunk in [100, b, data.len()] {
            let mut v = PageVerifier::new(SYSID, SEG, BLCK);
            for (i, c) in data.chunks(chunk).enumerate() {
                v.check(Lsn(SEG + (i * chunk) as u64), c).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            }
        }
    }

    #[test]
    fn valid_page_after_the_tail_is_refused() {
        let b = BLCK as usize;
        let mut data = wal(SEG, 4);
        data[b + 8] ^= 1;
        let e = PageVerifier::new(SYSID, SEG, BLCK).check(Lsn(SEG), &data).unwrap_err();
        assert_eq!(
            e,
            WalCheckError::PageAfterTail { page: Lsn(SEG + 2 * BLCK as u64), tail: Lsn(SEG + BLCK as u64) }
        );
    }

    #[test]
    fn segment_start_must_be_wal() {
        let e = PageVerifier::new(SYSID, SEG, BLCK).check(Lsn(SEG), &vec![0; 2 * BLCK as usize]).unwrap_err();
        assert_eq!(e, WalCheckError::PageAddress { page: Lsn(SEG), found: Lsn(0) });
        let mut data = wal(SEG, 1);
        data[8] ^= 1;
        assert!(matches!(
            PageVerifier::new(SYSID, SEG, BLCK).check(Lsn(SEG), &data),
            Err(WalCheckError::PageAddress { .. })
        ));
    }

    #[test]
    fn foreign_cluster_is_refused() {
        let data = wal(SEG, 1);
        let e = PageVerifier::new(SYSID + 1, SEG, BLCK).check(Lsn(SEG), &data).unwrap_err();
        assert!(matches!(e, WalCheckError::SystemId { .. }), "{e}");
        let e = PageVerifier::new(SYSID, 2 * SEG, BLCK).check(Lsn(2 * SEG), &wal(2 * SEG, 1)).unwrap_err();
        assert!(matches!(e, WalCheckError::SegmentSize { .. }), "{e}");
        let mut d = wal(SEG, 1);
        d[2] = 0;
        let e = PageVerifier::new(SYSID, SEG, BLCK).check(Lsn(SEG), &d).unwrap_err();
        assert_eq!(e, WalCheckError::NotLongHeader { page: Lsn(SEG) });
    }

    fn stored(tli: u32, start: u64, system_id: Option<u64>) -> StoredSegment {
        StoredSegment { tli, start: Lsn(start), seg_size: SEG, system_id }
    }

    fn with_tli(mut data: Vec<u8>, tli: u32) -> Vec<u8> {
        data[4..8].copy_from_slice(&tli.to_le_bytes());
        data
    }

    #[test]
    fn stored_segment_header() {
        let good = with_tli(wal(3 * SEG, 1), 2);
        check_stored_segment(&good, &stored(2, 3 * SEG, Some(SYSID))).unwrap();
        check_stored_segment(&good, &stored(2, 3 * SEG, None)).unwrap();
        // A new timeline's segment opens with a page written on the old one.
        check_stored_segment(&good, &stored(3, 3 * SEG, Some(SYSID))).unwrap();
        let e = |h: &[u8], s: StoredSegment| check_stored_segment(h, &s).unwrap_err();
        assert_eq!(
            e(&vec![0; 8192], stored(2, 3 * SEG, None)),
            WalCheckError::Magic { page: Lsn(3 * SEG), found: 0 }
        );
        assert_eq!(
            e(&good, stored(1, 3 * SEG, None)),
            WalCheckError::Timeline { page: Lsn(3 * SEG), found: 2, file_tli: 1 }
        );
        assert!(matches!(
            e(&with_tli(good.clone(), 0), stored(2, 3 * SEG, None)),
            WalCheckError::Timeline { .. }
        ));
        assert_eq!(
            e(&good, stored(2, 4 * SEG, None)),
            WalCheckError::PageAddress { page: Lsn(4 * SEG), found: Lsn(3 * SEG) }
        );
        assert!(matches!(e(&good, stored(2, 3 * SEG, Some(SYSID + 1))), WalCheckError::SystemId { .. }));
        let mut short = good.clone();
        short[2] = 0;
        assert!(matches!(e(&short, stored(2, 3 * SEG, None)), WalCheckError::NotLongHeader { .. }));
        let s = StoredSegment { seg_size: 2 * SEG, start: Lsn(6 * SEG), ..stored(2, 0, None) };
        let two = with_tli(wal(6 * SEG, 1), 2);
        assert!(matches!(e(&two, s), WalCheckError::SegmentSize { .. }));
        assert!(matches!(e(&good[..39], stored(2, 3 * SEG, None)), WalCheckError::NotLongHeader { .. }));
    }

    #[test]
    fn split_bad_header_is_caught_in_the_next_chunk() {
        let mut data = wal(2 * SEG - u64::from(BLCK), 2);
        data[BLCK as usize + 30] = 0xAA;
        let mut v = PageVerifier::new(SYSID, SEG, BLCK);
        let cut = BLCK as usize + 10;
        v.check(Lsn(2 * SEG - u64::from(BLCK)), &data[..cut]).unwrap();
        assert!(matches!(
            v.check(Lsn(2 * SEG - u64::from(BLCK) + cut as u64), &data[cut..]),
            Err(WalCheckError::SystemId { .. })
        ));
    }
}
