//! The WAL record chain, read the way PostgreSQL's `xlogreader.c` reads it: page headers
//! (`XLogReaderValidatePageHeader`), record headers (`ValidXLogRecordHeader`), records continued
//! across pages (`XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len`), the CRC-32C of every record
//! (`ValidXLogRecord`) and the back-link `xl_prev` from each record to the one before it. Pure
//! code: the caller feeds pages in order, so a segment is streamed, never held whole.
//!
//! Layout (`xlogrecord.h`, `xlog_internal.h`): `XLogRecord` is xl_tot_len (u32), xl_xid (u32),
//! xl_prev (u64), xl_info (u8), xl_rmid (u8), 2 bytes of padding and xl_crc (u32 at 20): 24
//! bytes. Records start MAXALIGNed (8). A page starts with a 24-byte header (20 bytes of
//! fields, MAXALIGNed), or a 40-byte long one on a segment's first page. Little-endian, as in
//! walcheck.rs.

use std::fmt;

use crate::lsn::{Lsn, Tli};
use crate::physical::walcheck::{le_u16, le_u32, le_u64};

/// `SizeOfXLogRecord`.
pub const RECORD_HEADER: usize = 24;
/// `offsetof(XLogRecord, xl_crc)`.
const CRC_OFFSET: usize = 20;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;

const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
const XLR_INFO_MASK: u8 = 0x0F;
/// `RM_MAX_BUILTIN_ID` of PostgreSQL 15 to 18 (logical messages, 21); 128-255 are custom
/// resource managers (`RmgrIdIsValid`).
const RM_MAX_BUILTIN_ID: u8 = 21;
const RM_MIN_CUSTOM_ID: u8 = 128;

const fn maxalign(n: u64) -> u64 {
    (n + 7) & !7
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as PostgreSQL's `pg_crc32c`, eight
/// bytes at a time ("slicing by 8"): verifying an archive reads every byte of it.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            s += 1;
        }
        i += 1;
    }
    t
};

/// Continues a CRC-32C over `data`; start from `!0` (`INIT_CRC32C`) and invert at the end
/// (`FIN_CRC32C`), as [`crc32c`] does.
pub fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// Why the chain stops at a position: PostgreSQL's own reasons, in its words where it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// `xl_tot_len` is zero: where a server stopped writing, the end of valid WAL.
    ZeroLength,
    Length {
        found: u32,
    },
    ResourceManager {
        found: u8,
    },
    PrevLink {
        found: Lsn,
        expected: Lsn,
    },
    Crc {
        stored: u32,
        computed: u32,
    },
    /// A record begins where the page says the previous record continues.
    ContrecordRequested,
    /// A record goes on past its page, but the next page does not continue it.
    NoContrecord {
        page: Lsn,
    },
    ContrecordLength {
        page: Lsn,
        found: u32,
        expected: u32,
    },
    PageMagic {
        page: Lsn,
        found: u16,
        expected: u16,
    },
    PageInfo {
        page: Lsn,
        found: u16,
    },
    PageNotLong {
        page: Lsn,
    },
    PageAddress {
        page: Lsn,
        found: Lsn,
    },
    PageTimeline {
        page: Lsn,
        found: Tli,
        after: Tli,
        file_tli: Tli,
    },
    PageSystemId {
        page: Lsn,
        found: u64,
        expected: u64,
    },
    PageSegmentSize {
        page: Lsn,
        found: u32,
        expected: u64,
    },
    PageBlockSize {
        page: Lsn,
        found: u32,
        expected: u32,
    },
}

impl RecordError {
    /// A fault of a page header rather than of a record.
    pub fn page(&self) -> Option<Lsn> {
        match *self {
            RecordError::PageMagic { page, .. }
            | RecordError::PageInfo { page, .. }
            | RecordError::PageNotLong { page }
            | RecordError::PageAddress { page, .. }
            | RecordError::PageTimeline { page, .. }
            | RecordError::PageSystemId { page, .. }
            | RecordError::PageSegmentSize { page, .. }
            | RecordError::PageBlockSize { page, .. } => Some(page),
            _ => None,
        }
    }

    /// A short name for scripts: `crc`, `prev_link`, `page_header`, `system_identifier`,
    /// `end_of_wal` or `record`.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Crc { .. } => "crc",
            RecordError::PrevLink { .. } => "prev_link",
            RecordError::ZeroLength => "end_of_wal",
            RecordError::PageSystemId { .. } => "system_identifier",
            e if e.page().is_some() => "page_header",
            _ => "record",
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::ZeroLength => write!(f, "invalid record length: expected at least {RECORD_HEADER}, got 0"),
            RecordError::Length { found } => {
                write!(f, "invalid record length: expected at least {RECORD_HEADER}, got {found}")
            }
            RecordError::ResourceManager { found } => write!(f, "invalid resource manager ID {found}"),
            RecordError::PrevLink { found, expected } => {
                write!(f, "record with incorrect prev-link {found} (the previous record is at {expected})")
            }
            RecordError::Crc { stored, computed } => write!(
                f,
                "incorrect resource manager data checksum (stored {stored:08X}, computed {computed:08X})"
            ),
            RecordError::ContrecordRequested => write!(f, "contrecord is requested: the page says a record continues here"),
            RecordError::NoContrecord { page } => write!(f, "there is no contrecord flag on page {page}"),
            RecordError::ContrecordLength { page, found, expected } => {
                write!(f, "invalid contrecord length {found} (expected {expected}) on page {page}")
            }
            RecordError::PageMagic { page, found, expected } => {
                write!(f, "invalid magic number {found:04X} in the header of page {page} (expected {expected:04X})")
            }
            RecordError::PageInfo { page, found } => write!(f, "invalid info bits {found:04X} in the header of page {page}"),
            RecordError::PageNotLong { page } => {
                write!(f, "the first page of the segment, {page}, has no long page header")
            }
            RecordError::PageAddress { page, found } => write!(f, "unexpected pageaddr {found} in the header of page {page}"),
            RecordError::PageTimeline { page, found, after, file_tli } => write!(
                f,
                "out-of-sequence timeline ID {found} (after {after}, in a file of timeline {file_tli}) in the header of page {page}"
            ),
            RecordError::PageSystemId { page, found, expected } => write!(
                f,
                "page {page} is WAL of database system {found}, but the archive holds WAL of database system {expected}"
            ),
            RecordError::PageSegmentSize { page, found, expected } => {
                write!(f, "page {page} says the segment size is {found} bytes, expected {expected}")
            }
            RecordError::PageBlockSize { page, found, expected } => {
                write!(f, "page {page} says the page size is {found} bytes, expected {expected}")
            }
        }
    }
}

/// Where and why the chain stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The record (or, for a page header, the page) at fault.
    pub at: Lsn,
    pub error: RecordError,
}

/// A record that began on an earlier page and is not complete yet.
#[derive(Debug, Clone)]
struct Partial {
    start: Lsn,
    total: u32,
    got: u32,
    header: [u8; RECORD_HEADER],
    header_checked: bool,
    /// CRC of the data after the header so far (not yet inverted).
    crc: u32,
}

#[derive(Debug, Clone)]
enum State {
    /// At the start of the walk, or after a gap: the first page may open with the rest of a
    /// record we never saw, which is skipped (`XLogFindNextRecord`).
    Start,
    /// The next record starts here (a page boundary included). Pages that end before it (the
    /// rest of a segment after a WAL switch) are not read.
    Next(Lsn),
    Within(Box<Partial>),
}

/// What the walker knows of the cluster whose WAL it reads.
#[derive(Debug, Clone, Copy)]
pub struct WalShape {
    pub seg_size: u64,
    pub blcksz: u32,
    pub system_id: Option<u64>,
}

/// Walks the record chain of one timeline, page by page.
#[derive(Debug, Clone)]
pub struct Walker {
    shape: WalShape,
    /// The page magic of the first page read: one archive is one major version.
    magic: Option<u16>,
    latest_tli: Tli,
    state: State,
    /// The start of the last record read, which the next one's `xl_prev` must name; `None`
    /// at the start and after a gap, where PostgreSQL cannot check it either.
    prev: Option<Lsn>,
    /// Where the record after the last valid one starts: the end of valid WAL so far.
    end: Option<Lsn>,
    records: u64,
    /// Positions someone wants to know are record boundaries (switch points of history files).
    watch: Vec<Lsn>,
    seen: Vec<Lsn>,
}

impl Walker {
    pub fn new(shape: WalShape) -> Walker {
        Walker {
            shape,
            magic: None,
            latest_tli: 0,
            state: State::Start,
            prev: None,
            end: None,
            records: 0,
            watch: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Asks the walker to note whether a record ends exactly at `lsn`.
    pub fn watch(&mut self, lsn: Lsn) {
        self.watch.push(lsn);
    }

    /// The watched positions where a record ended.
    pub fn seen(&self) -> &[Lsn] {
        &self.seen
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Where the valid WAL read so far ends: after the last complete record.
    pub fn end(&self) -> Option<Lsn> {
        self.end
    }

    /// The position of the record under way, if one began on an earlier page.
    pub fn pending_record(&self) -> Option<Lsn> {
        match &self.state {
            State::Within(p) => Some(p.start),
            _ => None,
        }
    }

    /// Forgets the chain: the next page is read as the first one (after a gap or damage).
    pub fn restart(&mut self) {
        self.state = State::Start;
        self.prev = None;
    }

    /// Whether `p` looks like a written WAL page at `page` (its magic and its own address):
    /// after the end of the WAL in a `.partial`, such a page means the end was damage.
    pub fn is_wal_page(&self, page: Lsn, p: &[u8]) -> bool {
        p.len() >= SHORT_PAGE_HEADER
            && self.magic.is_none_or(|m| le_u16(p, 0) == m)
            && matches!(le_u16(p, 0) >> 8, 0xD0 | 0xD1)
            && le_u64(p, 8) == page.0
    }

    fn check_page_header(&mut self, page: Lsn, p: &[u8], file_tli: Tli) -> Result<usize, RecordError> {
        let magic = le_u16(p, 0);
        match self.magic {
            Some(expected) if magic != expected => {
                return Err(RecordError::PageMagic { page, found: magic, expected })
            }
            None if !matches!(magic >> 8, 0xD0 | 0xD1) => {
                return Err(RecordError::PageMagic { page, found: magic, expected: 0xD000 })
            }
            _ => {}
        }
        let info = le_u16(p, 2);
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(RecordError::PageInfo { page, found: info });
        }
        let long = info & XLP_LONG_HEADER != 0;
        if long {
            let sysid = le_u64(p, 24);
            if let Some(expected) = self.shape.system_id.filter(|&e| e != sysid) {
                return Err(RecordError::PageSystemId { page, found: sysid, expected });
            }
            let seg = le_u32(p, 32);
            if u64::from(seg) != self.shape.seg_size {
                return Err(RecordError::PageSegmentSize { page, found: seg, expected: self.shape.seg_size });
            }
            let blck = le_u32(p, 36);
            if blck != self.shape.blcksz {
                return Err(RecordError::PageBlockSize { page, found: blck, expected: self.shape.blcksz });
            }
        } else if page.segment_offset(self.shape.seg_size) == 0 {
            return Err(RecordError::PageNotLong { page });
        }
        let found = Lsn(le_u64(p, 8));
        if found != page {
            return Err(RecordError::PageAddress { page, found });
        }
        // Timelines only grow along a chain of WAL; and a page cannot have been written on a
        // later timeline than the file it is in (a new timeline's first segment opens with a
        // copy of its parent's WAL, written on the parent).
        let tli = le_u32(p, 4);
        if tli == 0 || tli < self.latest_tli || tli > file_tli {
            return Err(RecordError::PageTimeline { page, found: tli, after: self.latest_tli, file_tli });
        }
        self.magic = Some(magic);
        self.latest_tli = tli;
        Ok(if long { LONG_PAGE_HEADER } else { SHORT_PAGE_HEADER })
    }

    /// `ValidXLogRecordHeader`.
    fn check_record_header(&self, h: &[u8]) -> Result<(), RecordError> {
        let total = le_u32(h, 0);
        if total == 0 {
            return Err(RecordError::ZeroLength);
        }
        if (total as usize) < RECORD_HEADER {
            return Err(RecordError::Length { found: total });
        }
        let rmid = h[17];
        if rmid > RM_MAX_BUILTIN_ID && rmid < RM_MIN_CUSTOM_ID {
            return Err(RecordError::ResourceManager { found: rmid });
        }
        let found = Lsn(le_u64(h, 8));
        if let Some(expected) = self.prev.filter(|&e| e != found) {
            return Err(RecordError::PrevLink { found, expected });
        }
        Ok(())
    }

    /// A record is complete and its CRC is right: move on past it. Returns where the next
    /// record starts.
    fn finish(&mut self, start: Lsn, header: &[u8], next: Lsn) -> Lsn {
        self.records += 1;
        self.prev = Some(start);
        let mut next = next;
        if header[17] == RM_XLOG_ID && header[16] & !XLR_INFO_MASK == XLOG_SWITCH {
            // The rest of the segment belongs to the switch record (XLogReadRecord).
            let seg = self.shape.seg_size;
            next = Lsn(next.0.div_ceil(seg) * seg);
        }
        if self.watch.contains(&next) && !self.seen.contains(&next) {
            self.seen.push(next);
        }
        self.end = Some(next);
        self.state = State::Next(next);
        next
    }

    /// Reads the page at `page` (`blcksz` bytes) of a file of timeline `file_tli`. On `Err`
    /// the chain is broken there; call [`Walker::restart`] to go on after it.
    // Over 80 lines on purpose: one sequential procedure following XLogReadRecord step by step
    // (where the page's first record starts, by the walker's state, then each record that
    // starts on the page), so that it can be read against xlogreader.c.
    pub fn page(&mut self, page: Lsn, p: &[u8], file_tli: Tli) -> Result<(), Stop> {
        let blcksz = self.shape.blcksz as usize;
        debug_assert_eq!(p.len(), blcksz);
        let page_end = Lsn(page.0 + blcksz as u64);
        if let State::Next(next) = self.state {
            if next >= page_end {
                return Ok(());
            }
        }
        let header_len =
            self.check_page_header(page, p, file_tli).map_err(|error| Stop { at: page, error })?;
        let info = le_u16(p, 2);
        let rem_len = le_u32(p, 16);
        let mut pos = match std::mem::replace(&mut self.state, State::Start) {
            State::Start => {
                if info & XLP_FIRST_IS_CONTRECORD != 0 {
                    let skip = maxalign(u64::from(rem_len));
                    if skip >= (blcksz - header_len) as u64 {
                        return Ok(());
                    }
                    header_len + skip as usize
                } else {
                    header_len
                }
            }
            State::Next(next) => {
                let off = (next.0 - page.0) as usize;
                if off == 0 {
                    if info & XLP_FIRST_IS_CONTRECORD != 0 {
                        return Err(Stop {
                            at: Lsn(page.0 + header_len as u64),
                            error: RecordError::ContrecordRequested,
                        });
                    }
                    header_len
                } else {
                    off
                }
            }
            State::Within(mut rec) => {
                if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The rest of this record was never written: after a crash the server
                    // wrote new WAL here instead, and the record is void (XLogReadRecord
                    // restarts at this page; the new record points back past the void one).
                    header_len
                } else {
                    if info & XLP_FIRST_IS_CONTRECORD == 0 {
                        return Err(Stop { at: rec.start, error: RecordError::NoContrecord { page } });
                    }
                    let expected = rec.total - rec.got;
                    if rem_len == 0 || rem_len != expected {
                        return Err(Stop {
                            at: rec.start,
                            error: RecordError::ContrecordLength { page, found: rem_len, expected },
                        });
                    }
                    let take = (rem_len as usize).min(blcksz - header_len);
                    self.feed(&mut rec, &p[header_len..header_len + take])?;
                    if rec.got < rec.total {
                        self.state = State::Within(rec);
                        return Ok(());
                    }
                    self.complete(&rec)?;
                    let next = Lsn(page.0 + header_len as u64 + maxalign(u64::from(rem_len)));
                    let next = self.finish(rec.start, &rec.header, next);
                    if next >= page_end {
                        return Ok(());
                    }
                    (next.0 - page.0) as usize
                }
            }
        };
        // Records that start on this page.
        while pos < blcksz {
            let start = Lsn(page.0 + pos as u64);
            let avail = blcksz - pos;
            let total = le_u32(p, pos);
            if avail >= RECORD_HEADER {
                self.check_record_header(&p[pos..pos + RECORD_HEADER])
                    .map_err(|error| Stop { at: start, error })?;
            } else if total == 0 {
                return Err(Stop { at: start, error: RecordError::ZeroLength });
            } else if (total as usize) < RECORD_HEADER {
                return Err(Stop { at: start, error: RecordError::Length { found: total } });
            }
            if total as usize <= avail {
                let rec = &p[pos..pos + total as usize];
                let computed = !crc32c_update(crc32c_update(!0, &rec[RECORD_HEADER..]), &rec[..CRC_OFFSET]);
                let stored = le_u32(rec, CRC_OFFSET);
                if computed != stored {
                    return Err(Stop { at: start, error: RecordError::Crc { stored, computed } });
                }
                let next = Lsn(start.0 + maxalign(u64::from(total)));
                let mut header = [0u8; RECORD_HEADER];
                header.copy_from_slice(&rec[..RECORD_HEADER]);
                let next = self.finish(start, &header, next);
                if next >= page_end {
                    return Ok(());
                }
                pos = (next.0 - page.0) as usize;
            } else {
                let mut rec = Box::new(Partial {
                    start,
                    total,
                    got: 0,
                    header: [0; RECORD_HEADER],
                    header_checked: avail >= RECORD_HEADER,
                    crc: !0,
                });
                self.feed(&mut rec, &p[pos..])?;
                self.state = State::Within(rec);
                return Ok(());
            }
        }
        self.state = State::Next(page_end);
        Ok(())
    }

    /// Adds the next bytes of a record spanning pages: the header first (checked once whole),
    /// then the data into the running CRC.
    fn feed(&self, rec: &mut Partial, mut data: &[u8]) -> Result<(), Stop> {
        rec.got += data.len() as u32;
        let have = (rec.got as usize - data.len()).min(RECORD_HEADER);
        if have < RECORD_HEADER {
            let n = (RECORD_HEADER - have).min(data.len());
            rec.header[have..have + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            if have + n == RECORD_HEADER && !rec.header_checked {
                self.check_record_header(&rec.header).map_err(|error| Stop { at: rec.start, error })?;
                rec.header_checked = true;
            }
        }
        rec.crc = crc32c_update(rec.crc, data);
        Ok(())
    }

    /// The last piece of a spanning record is in: check its CRC.
    fn complete(&self, rec: &Partial) -> Result<(), Stop> {
        let computed = !crc32c_update(rec.crc, &rec.header[..CRC_OFFSET]);
        let stored = le_u32(&rec.header, CRC_OFFSET);
        if computed != stored {
            return Err(Stop { at: rec.start, error: RecordError::Crc { stored, computed } });
        }
        Ok(())
    }
}

/// Synthetic WAL for the tests of this module and of verify.rs.
#[cfg(test)]
pub(crate) mod testwal {
    use super::*;

    pub const SEG: u64 = 1 << 20;
    pub const BLCK: usize = 8192;
    pub const SYSID: u64 = 7_000_000_000_000_000_001;

    /// Synthetic WAL: lays out records as the server does and fills in page headers.
    pub(crate) struct Wal {
        pub start: u64,
        pub bytes: Vec<u8>,
        /// Where the next record goes, and where the last one began.
        pub pos: u64,
        pub prev: u64,
        pub starts: Vec<u64>,
    }

    impl Wal {
        /// Pages from `start` (a segment start) on timeline 1.
        pub fn new(start: u64) -> Wal {
            let mut w = Wal { start, bytes: Vec::new(), pos: start, prev: 0, starts: Vec::new() };
            w.pos += w.header_len(start) as u64;
            w
        }

        pub fn header_len(&self, page: u64) -> usize {
            if page.is_multiple_of(SEG) {
                LONG_PAGE_HEADER
            } else {
                SHORT_PAGE_HEADER
            }
        }

        pub fn ensure_page(&mut self, page: u64, rem_len: u32) {
            let at = (page - self.start) as usize;
            if self.bytes.len() < at + BLCK {
                self.bytes.resize(at + BLCK, 0);
                let p = &mut self.bytes[at..at + BLCK];
                p[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
                let mut info = if rem_len > 0 { XLP_FIRST_IS_CONTRECORD } else { 0 };
                p[4..8].copy_from_slice(&1u32.to_le_bytes());
                p[8..16].copy_from_slice(&page.to_le_bytes());
                p[16..20].copy_from_slice(&rem_len.to_le_bytes());
                if page.is_multiple_of(SEG) {
                    info |= XLP_LONG_HEADER;
                    p[24..32].copy_from_slice(&SYSID.to_le_bytes());
                    p[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                    p[36..40].copy_from_slice(&(BLCK as u32).to_le_bytes());
                }
                p[2..4].copy_from_slice(&info.to_le_bytes());
            }
        }

        /// Appends a record of `data_len` bytes after its header; returns where it starts.
        pub fn record(&mut self, rmid: u8, info: u8, data_len: usize) -> u64 {
            let total = RECORD_HEADER + data_len;
            let mut rec = vec![0u8; total];
            rec[0..4].copy_from_slice(&(total as u32).to_le_bytes());
            rec[8..16].copy_from_slice(&self.prev.to_le_bytes());
            rec[16] = info;
            rec[17] = rmid;
            for (i, b) in rec[RECORD_HEADER..].iter_mut().enumerate() {
                *b = (i * 31 + total) as u8;
            }
            let crc = !crc32c_update(crc32c_update(!0, &rec[RECORD_HEADER..]), &rec[..CRC_OFFSET]);
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            let start = self.pos;
            let mut left = &rec[..];
            let mut pos = self.pos;
            self.ensure_page(pos - pos % BLCK as u64, 0);
            while !left.is_empty() {
                let page = pos - pos % BLCK as u64;
                let room = (page + BLCK as u64 - pos) as usize;
                let n = room.min(left.len());
                let at = (pos - self.start) as usize;
                self.bytes[at..at + n].copy_from_slice(&left[..n]);
                left = &left[n..];
                pos += n as u64;
                if !left.is_empty() {
                    let next = page + BLCK as u64;
                    self.ensure_page(next, left.len() as u32);
                    pos = next + self.header_len(next) as u64;
                }
            }
            pos = maxalign(pos);
            if pos.is_multiple_of(BLCK as u64) {
                self.ensure_page(pos, 0);
                pos += self.header_len(pos) as u64;
            }
            self.pos = pos;
            self.prev = start;
            self.starts.push(start);
            start
        }

        pub fn pad_to(&mut self, end: u64) {
            let mut page = self.start + self.bytes.len() as u64;
            while page < end {
                self.ensure_page(page, 0);
                page += BLCK as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testwal::*;
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF, and ascending.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let asc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&asc), 0x46DD_794E);
        // In pieces of any length, as records spanning pages are summed.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for cut in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(!crc32c_update(crc32c_update(!0, a), b), crc32c(&data), "cut at {cut}");
        }
    }

    fn shape() -> WalShape {
        WalShape { seg_size: SEG, blcksz: BLCK as u32, system_id: Some(SYSID) }
    }

    fn walk(w: &mut Walker, start: u64, bytes: &[u8]) -> Result<(), Stop> {
        for (i, p) in bytes.chunks(BLCK).enumerate() {
            w.page(Lsn(start + (i * BLCK) as u64), p, 1)?;
        }
        Ok(())
    }

    /// Records of every size around page and segment boundaries, a long one over several
    /// pages and one over a segment boundary: the chain is walked to its end.
    fn sample() -> Wal {
        let mut w = Wal::new(SEG);
        for n in 0..400 {
            w.record(10, 0, (n * 37) % 300);
        }
        w.record(10, 0, 3 * BLCK + 100);
        while w.pos < 2 * SEG - 5000 {
            w.record(11, 0, 2000);
        }
        w.record(10, 0, 20_000);
        for _ in 0..50 {
            w.record(9, 0, 100);
        }
        w.pad_to(3 * SEG);
        w
    }

    #[test]
    fn walks_a_good_chain_across_pages_and_segments() {
        let wal = sample();
        let mut walker = Walker::new(shape());
        let last = *wal.starts.last().unwrap();
        walker.watch(Lsn(last));
        walk(&mut walker, SEG, &wal.bytes).map(|_| ()).unwrap_or_else(|s| {
            // The zeros after the last record are the end of the WAL.
            assert_eq!(s.error, RecordError::ZeroLength, "{s:?}");
            assert_eq!(s.at, Lsn(wal.pos));
        });
        assert_eq!(walker.records(), wal.starts.len() as u64);
        assert_eq!(walker.end(), Some(Lsn(wal.pos)));
        assert_eq!(walker.seen(), &[Lsn(last)], "the last record starts where the one before ends");
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_is_found_with_its_lsn() {
        let wal = sample();
        // In a short record, in the header of a record split over pages, in the middle of
        // the long records' data.
        let long = wal.starts[400];
        let split = *wal.starts.iter().find(|&&s| (s % BLCK as u64) > (BLCK - RECORD_HEADER) as u64).unwrap();
        for (target, off) in [(wal.starts[7], 30u64), (long, 3 * BLCK as u64), (split, 4)] {
            let mut bytes = wal.bytes.clone();
            let at = (target + off - SEG) as usize;
            bytes[at] ^= 0x10;
            let mut walker = Walker::new(shape());
            let stop = walk(&mut walker, SEG, &bytes).unwrap_err();
            assert_eq!(stop.at, Lsn(target), "{stop:?}");
            assert!(matches!(stop.error, RecordError::Crc { .. } | RecordError::PrevLink { .. }), "{stop:?}");
        }
    }

    #[test]
    fn flipped_bits_in_page_headers_and_links() {
        let wal = sample();
        let page = SEG + 5 * BLCK as u64;
        // The page address, the timeline, the magic.
        for (off, want) in [(9, "page_header"), (5, "page_header"), (1, "page_header")] {
            let mut bytes = wal.bytes.clone();
            bytes[(page - SEG) as usize + off] ^= 1;
            let stop = walk(&mut Walker::new(shape()), SEG, &bytes).unwrap_err();
            assert_eq!((stop.at, stop.error.kind()), (Lsn(page), want), "{stop:?}");
        }
        // Another cluster's long header at a segment start.
        let mut bytes = wal.bytes.clone();
        bytes[SEG as usize + 24] ^= 1;
        let stop = walk(&mut Walker::new(shape()), SEG, &bytes).unwrap_err();
        assert_eq!((stop.at, stop.error.kind()), (Lsn(2 * SEG), "system_identifier"));
        // xl_prev: the CRC covers it, so a prev-link that is wrong with a right CRC is a
        // record copied from elsewhere; rebuild one with a wrong link.
        let mut w = Wal::new(SEG);
        w.record(10, 0, 50);
        w.prev = 12345;
        let bad = w.record(10, 0, 50);
        let stop = walk(&mut Walker::new(shape()), SEG, &w.bytes).unwrap_err();
        assert_eq!(stop.at, Lsn(bad));
        assert_eq!(stop.error, RecordError::PrevLink { found: Lsn(12345), expected: Lsn(SEG + 40) });
    }

    #[test]
    fn a_switch_record_skips_to_the_segment_end() {
        let mut w = Wal::new(SEG);
        w.record(10, 0, 100);
        let switch = w.record(RM_XLOG_ID, XLOG_SWITCH, 0);
        // The rest of the segment: pages of old WAL a recycled file held, and garbage.
        w.pad_to(2 * SEG);
        for b in &mut w.bytes[(3 * BLCK)..] {
            *b = 0x5A;
        }
        w.pos = 2 * SEG + LONG_PAGE_HEADER as u64;
        w.ensure_page(2 * SEG, 0);
        let after = w.record(10, 0, 100);
        let mut walker = Walker::new(shape());
        walker.watch(Lsn(2 * SEG));
        let stop = walk(&mut walker, SEG, &w.bytes).unwrap_err();
        assert_eq!(stop.error, RecordError::ZeroLength, "{stop:?}");
        assert_eq!(walker.records(), 3, "{stop:?}");
        assert_eq!(walker.seen(), &[Lsn(2 * SEG)]);
        assert!(switch < after);
    }

    #[test]
    fn the_chain_starts_after_a_continuation_and_after_a_restart() {
        let wal = sample();
        // Start at a page that opens with the rest of the long record.
        let long = wal.starts[400];
        let from = (long - long % BLCK as u64) + 2 * BLCK as u64;
        let mut walker = Walker::new(shape());
        walk(&mut walker, from, &wal.bytes[(from - SEG) as usize..(2 * SEG - SEG) as usize]).unwrap();
        assert!(walker.records() > 0);
        let after = wal.starts.iter().filter(|&&s| s > long && s < 2 * SEG).count() as u64;
        assert!(
            walker.records() <= after && walker.records() + 2 >= after,
            "{} of {after}",
            walker.records()
        );
    }

    #[test]
    fn damage_in_continuation_headers() {
        let wal = sample();
        let long = wal.starts[400];
        let cont = long - long % BLCK as u64 + BLCK as u64;
        // rem_len off by one, and the continuation flag cleared.
        for (off, mask) in [(16usize, 1u8), (2, 1)] {
            let mut bytes = wal.bytes.clone();
            bytes[(cont - SEG) as usize + off] ^= mask;
            let stop = walk(&mut Walker::new(shape()), SEG, &bytes).unwrap_err();
            assert_eq!(stop.at, Lsn(long), "{stop:?}");
            assert!(
                matches!(stop.error, RecordError::ContrecordLength { .. } | RecordError::NoContrecord { .. }),
                "{stop:?}"
            );
        }
    }

    #[test]
    fn an_overwritten_continuation_is_skipped_like_postgres() {
        let mut w = Wal::new(SEG);
        w.record(10, 0, 100);
        let before = w.prev;
        let aborted = w.record(10, 0, BLCK);
        // The crash: the continuation never reached disk; the server wrote a new record on
        // the next page instead and flagged the page.
        let page = aborted - aborted % BLCK as u64 + BLCK as u64;
        let at = (page - SEG) as usize;
        w.bytes.truncate(at);
        w.ensure_page(page, 0);
        let info = le_u16(&w.bytes[at..], 2) | XLP_FIRST_IS_OVERWRITE_CONTRECORD;
        w.bytes[at + 2..at + 4].copy_from_slice(&info.to_le_bytes());
        w.pos = page + SHORT_PAGE_HEADER as u64;
        w.prev = before;
        w.record(0, 0xD0, 16);
        let mut walker = Walker::new(shape());
        assert_eq!(walk(&mut walker, SEG, &w.bytes).unwrap_err().error, RecordError::ZeroLength);
        assert_eq!(walker.records(), 2, "the aborted record is not counted");
    }

    #[test]
    fn is_wal_page_tells_written_pages() {
        let wal = sample();
        let mut walker = Walker::new(shape());
        walk(&mut walker, SEG, &wal.bytes[..BLCK]).unwrap();
        assert!(walker.is_wal_page(Lsn(SEG + BLCK as u64), &wal.bytes[BLCK..2 * BLCK]));
        assert!(!walker.is_wal_page(Lsn(SEG + 2 * BLCK as u64), &wal.bytes[BLCK..2 * BLCK]));
        assert!(!walker.is_wal_page(Lsn(SEG), &[0; BLCK]));
    }
}
