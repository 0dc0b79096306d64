//! How far the applier is, as its log line and its metrics show it: the applied position, where
//! the directory's complete units end ([`DirEnd`]), the lag between the two in bytes, and the
//! counts of this run. The words are the streaming tools' (`crate::lag`): a line every 5
//! minutes (5 s with `-v`), and at once when the lag goes over 64 MB or back under half of it.
//!
//! The directory's end is found without reading the directory a second time: the newest
//! file's last unit end is read backwards once (`logical::files::last_unit_end`, as
//! pgrecvlogical finds where to resume), then only the lines written since are read. A unit
//! end is a line that begins `{"op":"commit","end_lsn":` (or a standalone message's); every
//! value in a line is escaped JSON, so nothing the source writes can forge one.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lag::{format_bytes, Schedule};
use crate::logical::files::last_unit_end;
use crate::logical::output::{unit_end, Format};
use crate::lsn::Lsn;
use crate::metrics;

use super::follow::{list, FollowError};

/// The directory's end is looked for at most this often.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Where the last complete unit in the directory ends, read incrementally.
#[derive(Debug)]
pub struct DirEnd {
    dir: PathBuf,
    /// The newest file as last read: its start, and the offset after its last complete line.
    file: Option<(Lsn, u64)>,
    end: Lsn,
}

/// What [`DirEnd::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Where the oldest file starts: nothing before it can be applied from here.
    pub first: Lsn,
    /// Where the last complete unit ends (the newest file's start when none is complete in it:
    /// a file starts where the unit before it ended).
    pub end: Lsn,
}

impl DirEnd {
    pub fn new(dir: &Path) -> DirEnd {
        DirEnd { dir: dir.to_path_buf(), file: None, end: Lsn(0) }
    }

    /// The directory as it is now; `None` while it has no output file.
    pub fn read(&mut self) -> Result<Option<Extent>, FollowError> {
        let files = list(&self.dir)?;
        let (Some(first), Some((start, _, name))) = (files.first(), files.last()) else {
            self.file = None;
            return Ok(None);
        };
        let (first, start) = (first.0, *start);
        let path = self.dir.join(name);
        let io = |action, err| FollowError::Io { path: path.clone(), action, err };
        let mut f = match File::open(&path) {
            Ok(f) => f,
            // Renamed by a rotation since it was listed: the next look finds it.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.file.is_some() => {
                return Ok(Some(Extent { first, end: self.end }))
            }
            Err(e) => return Err(io("open", e)),
        };
        let len = f.metadata().map_err(|e| io("stat", e))?.len();
        let (end, from) = match self.file {
            Some((s, off)) if s == start && off <= len => (self.end, off),
            // A file not read before, or one cut back after a crash: its last unit end, read
            // backwards (cheap when the file ends with one).
            _ => match last_unit_end(&mut f, len, Format::Json, |_| true).map_err(|e| io("read", e))? {
                Some((end, off)) => (end, off),
                None => (start, 0),
            },
        };
        let (end, off) = unit_ends_after(&mut f, from, len, end).map_err(|e| io("read", e))?;
        self.file = Some((start, off));
        self.end = end;
        Ok(Some(Extent { first, end }))
    }
}

/// Reads the complete lines of `f` from `from` to `len`: the last unit end among them (or
/// `end`), and the offset after the last complete line.
fn unit_ends_after(f: &mut File, from: u64, len: u64, mut end: Lsn) -> io::Result<(Lsn, u64)> {
    f.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::with_capacity(1 << 16, Read::by_ref(f).take(len - from));
    let (mut off, mut line) = (from, Vec::new());
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok((end, off));
        }
        off += n as u64;
        if let Some(e) = unit_end(&line[..n - 1], Format::Json) {
            end = e;
        }
    }
}

/// How far behind the directory's end the applier is: `done` is the applied position, or the
/// end of a later unit handed on that had nothing to apply. Before the oldest file nothing
/// counts (a new target is at 0/0).
pub fn lag_bytes(extent: Extent, done: Lsn) -> u64 {
    extent.end.0.saturating_sub(done.max(extent.first).0)
}

/// `applying: applied 0/5000000; directory at 0/5100000 (1.0 MB behind); 120 transactions,
/// 4800 rows in this run (300 rows/s)`.
pub fn log_line(applied: Lsn, dir: Option<(Lsn, u64)>, transactions: u64, rows: u64, secs: f64) -> String {
    let dir = match dir {
        Some((end, lag)) => format!("directory at {} ({} behind)", end, format_bytes(lag)),
        None => "directory end not known yet".to_owned(),
    };
    format!(
        "applying: applied {applied}; {dir}; {transactions} transactions, {rows} rows in this run ({:.0} rows/s)",
        rows as f64 / secs.max(1e-3)
    )
}

/// The applier's view of its progress: publishes it to the metrics on each pass of the loop,
/// and logs the line when it is due.
pub struct Watch {
    dir_end: DirEnd,
    schedule: Schedule,
    scanned: Option<Instant>,
    extent: Option<Extent>,
    warned: bool,
    started: Instant,
    /// The end of the last unit handed on, applied or not.
    pub seen: Lsn,
}

impl Watch {
    pub fn new(dir: &Path) -> Watch {
        let now = Instant::now();
        Watch {
            dir_end: DirEnd::new(dir),
            schedule: Schedule::new(now),
            scanned: None,
            extent: None,
            warned: false,
            started: now,
            seen: Lsn(0),
        }
    }

    /// One pass of the loop, at `applied` with this run's counts.
    pub fn tick(&mut self, applied: Lsn, transactions: u64, rows: u64, debug: bool) {
        let now = Instant::now();
        if self.scanned.is_none_or(|t| now.duration_since(t) >= SCAN_EVERY) {
            self.scanned = Some(now);
            match self.dir_end.read() {
                Ok(e) => self.extent = e,
                // Only the lag is not known: the follower reports what stops the run.
                Err(e) if !self.warned => {
                    log::warn!("could not find the end of the output directory: {e}");
                    self.warned = true;
                }
                Err(_) => {}
            }
        }
        let m = metrics::get();
        m.applied_lsn.set_lsn(applied);
        let done = applied.max(self.seen);
        let dir = self.extent.map(|x| (x.end.max(done), lag_bytes(x, done)));
        if let Some((end, lag)) = dir {
            m.directory_end_lsn.set_lsn(end);
            m.apply_lag_bytes.set(lag);
        }
        let due = self.schedule.tick(now, dir.map(|d| d.1), debug);
        if let Some(level) = due.line {
            let secs = now.duration_since(self.started).as_secs_f64();
            let line = log_line(applied, dir, transactions, rows, secs);
            let threshold = self.schedule.threshold;
            match due.crossed {
                Some(true) => log::log!(level, "{line}; lag is over {}", format_bytes(threshold)),
                Some(false) => log::log!(level, "{line}; lag is back under {}", format_bytes(threshold / 2)),
                None => log::log!(level, "{line}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("pgapply-progress-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    fn txn(xid: u64, end: u64) -> String {
        format!(
            "{{\"op\":\"begin\",\"xid\":{xid},\"commit_lsn\":\"0/1\",\"ts\":\"t\"}}\n\
             {{\"op\":\"insert\",\"xid\":{xid},\"commit_lsn\":\"0/1\",\"ts\":\"t\",\"seq\":1,\"lsn\":\"0/1\",\"schema\":\"public\",\"table\":\"t\",\"key\":{{\"id\":1}},\"new\":{{\"id\":1,\"v\":\"{{\\\"op\\\":\\\"commit\\\",\\\"end_lsn\\\":\\\"F/0\\\"}}\"}}}}\n\
             {{\"op\":\"commit\",\"end_lsn\":\"0/{end:X}\",\"xid\":{xid},\"commit_lsn\":\"0/1\",\"ts\":\"t\",\"changes\":1}}\n"
        )
    }

    fn append(path: &Path, s: &str) {
        fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(s.as_bytes()).unwrap();
    }

    fn at(first: u64, end: u64) -> Option<Extent> {
        Some(Extent { first: Lsn(first), end: Lsn(end) })
    }

    /// Growth, a torn line, a rotation, a file cut back: always the last complete unit end,
    /// never a value that looks like one.
    #[test]
    fn finds_the_last_complete_unit_end() {
        let t = tmp("end");
        let mut d = DirEnd::new(&t.0);
        assert_eq!(d.read().unwrap(), None, "no file yet");
        let p1 = t.0.join("0000000000000100.jsonl.partial");
        append(&p1, "");
        assert_eq!(d.read().unwrap(), at(0x100, 0x100), "an empty file: where it starts");
        append(&p1, &txn(1, 0x200));
        append(&p1, &txn(2, 0x300));
        assert_eq!(d.read().unwrap(), at(0x100, 0x300));
        // A transaction half written, its commit line torn: not complete.
        let next = txn(3, 0x400);
        let cut = next.len() - 10;
        append(&p1, &next[..cut]);
        assert_eq!(d.read().unwrap(), at(0x100, 0x300));
        append(&p1, &next[cut..]);
        assert_eq!(d.read().unwrap(), at(0x100, 0x400));
        // Rotated: the new file starts at the last end; a standalone message ends a unit too.
        fs::rename(&p1, t.0.join("0000000000000100.jsonl")).unwrap();
        let p2 = t.0.join("0000000000000400.jsonl.partial");
        append(&p2, "{\"op\":\"begin\",\"xid\":5,\"commit_lsn\":\"0/1\",\"ts\":\"t\"}\n");
        assert_eq!(d.read().unwrap(), at(0x100, 0x400));
        append(&p2, &txn(5, 0x500));
        append(&p2, "{\"op\":\"message\",\"end_lsn\":\"0/580\",\"lsn\":\"0/57F\",\"transactional\":false,\"prefix\":\"p\",\"content\":\"c\"}\n");
        assert_eq!(d.read().unwrap(), at(0x100, 0x580));
        // Cut back after a crash (pgrecvlogical removes an incomplete tail): read again.
        let keep = fs::read_to_string(&p2).unwrap().find("{\"op\":\"message\"").unwrap();
        fs::OpenOptions::new().write(true).open(&p2).unwrap().set_len(keep as u64 - 20).unwrap();
        assert_eq!(d.read().unwrap(), at(0x100, 0x400));
        // A reader starting late reads the newest file backwards.
        assert_eq!(DirEnd::new(&t.0).read().unwrap(), at(0x100, 0x400));
        append(&p2, &txn(6, 0x600)[..5]);
        assert_eq!(DirEnd::new(&t.0).read().unwrap(), at(0x100, 0x400));
        fs::write(t.0.join("0000000000000700.txt"), "").unwrap();
        assert!(matches!(d.read(), Err(FollowError::TextFormat(_))));
    }

    #[test]
    fn lag_and_line() {
        let x = Extent { first: Lsn(0x100), end: Lsn(0x300) };
        assert_eq!(lag_bytes(x, Lsn(0x200)), 0x100);
        assert_eq!(lag_bytes(x, Lsn(0)), 0x200, "a new target counts from the oldest file");
        assert_eq!(lag_bytes(x, Lsn(0x400)), 0, "applied past what was read");
        assert_eq!(
            log_line(Lsn(0x5000000), Some((Lsn(0x5100000), 0x100000)), 120, 4800, 16.0),
            "applying: applied 0/5000000; directory at 0/5100000 (1.0 MB behind); 120 transactions, 4800 rows in this run (300 rows/s)"
        );
        assert_eq!(
            log_line(Lsn(0), None, 0, 0, 0.0),
            "applying: applied 0/0; directory end not known yet; 0 transactions, 0 rows in this run (0 rows/s)"
        );
    }
}
