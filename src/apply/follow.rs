//! Reading pgrecvlogical's output directory in stream order, as it grows: the files sort by
//! name (the position each starts at, see `logical::files`), the newest one is the growing
//! `.partial`. Only complete lines (ending in `\n`) are read, and only complete units are
//! handed on; a unit whose end is not written yet is read again from its first line next
//! time, so a torn tail is never applied.
//!
//! A file is finished once a newer file exists (pgrecvlogical renames a file and opens the
//! next only after a whole unit). The reader moves on only after reading the file to its end
//! *after* seeing the newer one, so nothing appended just before the rotation is missed; a
//! finished file that ends inside a transaction is an error.
//!
//! After a crash pgrecvlogical cuts the partial file's tail back to its last complete unit and
//! writes what follows again: if the file became shorter than where we are, reading starts
//! over at its beginning. The caller skips every unit at or below the applied position, so
//! reading a unit twice never applies it twice.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::logging::Hinted;
use crate::logical::files::{parse_file_name, PARTIAL_SUFFIX};
use crate::logical::output::Format;
use crate::logical::retention::{removed_up_to, REMOVED_FILE};
use crate::lsn::Lsn;

use super::records::{parse_line, Assembler, LineRef, RecordError, Unit};

#[derive(Debug)]
pub enum FollowError {
    Io {
        path: PathBuf,
        action: &'static str,
        err: io::Error,
    },
    /// A line that is not a record of ours, or records that do not form a transaction.
    Bad {
        at: LineRef,
        message: String,
        hint: Option<String>,
    },
    /// The text format cannot be applied.
    TextFormat(PathBuf),
    /// The file the applied position is in, or the next one, is gone.
    Missing {
        dir: PathBuf,
        after: Lsn,
        first: Lsn,
    },
    EndsInsideTransaction(PathBuf),
}

impl fmt::Display for FollowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FollowError::Io { path, action, err } => write!(f, "could not {action} \"{}\": {err}", path.display()),
            FollowError::Bad { at, message, .. } => write!(f, "invalid record at {at}: {message}"),
            FollowError::TextFormat(p) => {
                write!(f, "\"{}\" is pgrecvlogical's text format, which cannot be applied", p.display())
            }
            FollowError::Missing { dir, after, first } => write!(
                f,
                "the output directory \"{}\" no longer holds the changes after {after}: its first file starts at {first}",
                dir.display()
            ),
            FollowError::EndsInsideTransaction(p) => {
                write!(f, "\"{}\" ends inside a transaction although a newer file exists", p.display())
            }
        }
    }
}

impl Hinted for FollowError {
    fn detail(&self) -> Option<String> {
        match self {
            FollowError::Missing { .. } => Some(
                "They were removed before they were applied, so the target cannot be kept in step from this directory."
                    .into(),
            ),
            FollowError::EndsInsideTransaction(_) => Some(
                "pgrecvlogical never rotates a file there, so the directory was changed by something else.".into(),
            ),
            _ => None,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            FollowError::Bad { hint, .. } => hint.clone(),
            FollowError::TextFormat(_) => Some("Write the output with --format json.".into()),
            _ => None,
        }
    }
}

impl std::error::Error for FollowError {}

/// The output files, oldest first: (start, partial, name).
pub fn list(dir: &Path) -> Result<Vec<(Lsn, bool, String)>, FollowError> {
    let io_err = |err| FollowError::Io { path: dir.to_path_buf(), action: "read directory", err };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let name = entry.map_err(io_err)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((start, format, partial)) = parse_file_name(name) {
            if format == Format::Text {
                return Err(FollowError::TextFormat(dir.join(name)));
            }
            out.push((start, partial, name.to_owned()));
        }
    }
    out.sort();
    Ok(out)
}

/// What [`Follower::next_unit`] found.
#[derive(Debug)]
pub enum Next {
    Unit(Unit),
    /// Every complete unit written so far was handed on.
    CaughtUp,
}

pub struct Follower {
    dir: PathBuf,
    /// The applied position when we started: where to begin.
    start_after: Lsn,
    /// The file being read (its start) and the offset of the first line not yet handed on.
    file: Option<Lsn>,
    offset: u64,
    line: u64,
    /// The open file and its name when opened (the partial one is renamed when rotated; the
    /// open file stays the same).
    reader: Option<(BufReader<File>, String)>,
    /// Files read to their end, for `--remove-applied`.
    finished: Vec<PathBuf>,
}

impl Follower {
    pub fn new(dir: &Path, applied: Lsn) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            start_after: applied,
            file: None,
            offset: 0,
            line: 0,
            reader: None,
            finished: Vec::new(),
        }
    }

    /// Files every unit of which was handed on (and, since the caller asks for the next unit
    /// only after applying the last, applied): safe to remove.
    pub fn take_finished(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.finished)
    }

    /// The file name of our file as it is now (the partial one may have been renamed).
    fn current(&self, files: &[(Lsn, bool, String)]) -> Option<String> {
        let start = self.file?;
        files.iter().find(|(s, _, _)| *s == start).map(|(_, _, n)| n.clone())
    }

    /// The next complete unit, or `CaughtUp`.
    pub fn next_unit(&mut self) -> Result<Next, FollowError> {
        loop {
            if self.file.is_none() {
                let files = list(&self.dir)?;
                let Some(first) = files.first() else { return Ok(Next::CaughtUp) };
                // Files before the last one starting at or below the applied position hold
                // only units that end at or below it (a file starts where the previous unit
                // ended).
                let pick = files.iter().rev().find(|(s, _, _)| *s <= self.start_after).unwrap_or(first);
                // pgrecvlogical's retention says where what it left begins: below it, even a
                // new target (position 0/0) would miss what was removed.
                let removed = removed_up_to(&self.dir).map_err(|err| FollowError::Io {
                    path: self.dir.join(REMOVED_FILE),
                    action: "read",
                    err,
                })?;
                if let Some(r) = removed.filter(|&r| self.start_after < r) {
                    return Err(FollowError::Missing {
                        dir: self.dir.clone(),
                        after: self.start_after,
                        first: r,
                    });
                }
                if self.start_after.0 != 0 && pick.0 > self.start_after {
                    return Err(FollowError::Missing {
                        dir: self.dir.clone(),
                        after: self.start_after,
                        first: pick.0,
                    });
                }
                // Every file before it is applied already.
                let pick = pick.0;
                self.finished.extend(
                    files
                        .iter()
                        .filter(|(s, partial, _)| *s < pick && !partial)
                        .map(|(_, _, n)| self.dir.join(n)),
                );
                self.open_at(pick, 0, 0);
            }
            if let Some(unit) = self.read_unit(false)? {
                return Ok(Next::Unit(unit));
            }
            // Nothing complete in our file now. Is it finished?
            let files = list(&self.dir)?;
            let start = self.file.expect("a file is open");
            let Some(name) = self.current(&files) else {
                return Err(FollowError::Io {
                    path: self.dir.join(format!("{:016X}.jsonl", start.0)),
                    action: "find",
                    err: io::Error::from(io::ErrorKind::NotFound),
                });
            };
            let path = self.dir.join(&name);
            let len = fs::metadata(&path)
                .map_err(|err| FollowError::Io { path: path.clone(), action: "stat", err })?
                .len();
            if len < self.offset {
                log::warn!(
                    "\"{}\" became shorter than the position read ({} < {}): pgrecvlogical cut its tail after a crash; reading it again from its beginning",
                    path.display(),
                    len,
                    self.offset
                );
                self.open_at(start, 0, 0);
                continue;
            }
            let Some(next) = files.iter().find(|(s, _, _)| *s > start).map(|(s, _, _)| *s) else {
                return Ok(Next::CaughtUp);
            };
            // A newer file exists, so ours is complete: read it to its end once more.
            if let Some(unit) = self.read_unit(true)? {
                return Ok(Next::Unit(unit));
            }
            self.finished.push(self.dir.join(name.trim_end_matches(PARTIAL_SUFFIX)));
            self.open_at(next, 0, 0);
        }
    }

    fn open_at(&mut self, start: Lsn, offset: u64, line: u64) {
        self.file = Some(start);
        self.offset = offset;
        self.line = line;
        self.reader = None;
    }

    /// Reads from the offset to the next unit end; `None` (and nothing consumed) when the
    /// lines there do not complete a unit yet. With `finished`, leftover lines are an error.
    fn read_unit(&mut self, finished: bool) -> Result<Option<Unit>, FollowError> {
        let start = self.file.expect("a file is open");
        if self.reader.is_none() {
            let files = list(&self.dir)?;
            let Some(name) = self.current(&files) else { return Ok(None) };
            let path = self.dir.join(&name);
            let mut f = File::open(&path).map_err(|err| FollowError::Io {
                path: path.clone(),
                action: "open",
                err,
            })?;
            f.seek(SeekFrom::Start(self.offset)).map_err(|err| FollowError::Io {
                path: path.clone(),
                action: "seek in",
                err,
            })?;
            self.reader = Some((BufReader::with_capacity(1 << 20, f), name));
        }
        let (reader, name) = self.reader.as_mut().expect("opened above");
        let name = name.clone();
        let path = self.dir.join(&name);
        let mut asm = Assembler::default();
        let (mut pos, mut line_no) = (self.offset, self.line);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(|err| FollowError::Io {
                path: path.clone(),
                action: "read",
                err,
            })?;
            if n == 0 || buf.last() != Some(&b'\n') {
                // The end of what is written, or a line still being written: nothing of it is
                // consumed; the next read starts again at the offset.
                self.reader = None;
                if finished && (n > 0 || asm.in_transaction()) {
                    return Err(FollowError::EndsInsideTransaction(path));
                }
                return Ok(None);
            }
            pos += n as u64;
            line_no += 1;
            let at = LineRef { file: name.trim_end_matches(PARTIAL_SUFFIX).to_owned(), line: line_no };
            let bad = |e: RecordError| FollowError::Bad { at: at.clone(), message: e.0, hint: e.1 };
            let text = std::str::from_utf8(&buf[..buf.len() - 1])
                .map_err(|_| bad(RecordError("not UTF-8".into(), None)))?;
            let rec = parse_line(text).map_err(bad)?;
            if let Some(unit) = asm.push(rec, at.clone()).map_err(bad)? {
                self.offset = pos;
                self.line = line_no;
                debug_assert_eq!(self.file, Some(start));
                return Ok(Some(unit));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn txn(xid: u64, commit: u64, end: u64) -> String {
        format!(
            "{{\"op\":\"begin\",\"xid\":{xid},\"commit_lsn\":\"0/{commit:X}\",\"ts\":\"t\"}}\n\
             {{\"op\":\"insert\",\"xid\":{xid},\"commit_lsn\":\"0/{commit:X}\",\"ts\":\"t\",\"seq\":1,\"lsn\":\"0/{commit:X}\",\"schema\":\"public\",\"table\":\"t\",\"key\":{{\"id\":{xid}}},\"new\":{{\"id\":{xid}}}}}\n\
             {{\"op\":\"commit\",\"end_lsn\":\"0/{end:X}\",\"xid\":{xid},\"commit_lsn\":\"0/{commit:X}\",\"ts\":\"t\",\"changes\":1}}\n"
        )
    }

    fn append(path: &Path, s: &str) {
        fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(s.as_bytes()).unwrap();
    }

    fn ends(f: &mut Follower) -> Vec<u64> {
        let mut out = Vec::new();
        while let Next::Unit(u) = f.next_unit().unwrap() {
            out.push(u.end_lsn.0);
        }
        out
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgapply-follow-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn follows_growth_torn_lines_and_rotation() {
        let d = tmp("grow");
        let p1 = d.join("0000000000000010.jsonl.partial");
        append(&p1, &txn(1, 0x20, 0x30));
        let t2 = txn(2, 0x40, 0x50);
        // The second transaction only up to the middle of its commit line: not handed on.
        let cut = t2.len() - 10;
        append(&p1, &t2[..cut]);
        let mut f = Follower::new(&d, Lsn(0));
        assert_eq!(ends(&mut f), vec![0x30]);
        append(&p1, &t2[cut..]);
        assert_eq!(ends(&mut f), vec![0x50]);
        // Rotation: renamed, a unit appended just before, then a new partial.
        append(&p1, &txn(3, 0x60, 0x70));
        fs::rename(&p1, d.join("0000000000000010.jsonl")).unwrap();
        append(&d.join("0000000000000070.jsonl.partial"), &txn(4, 0x80, 0x90));
        assert_eq!(ends(&mut f), vec![0x70, 0x90]);
        assert_eq!(f.take_finished(), vec![d.join("0000000000000010.jsonl")]);
        // Started again at an applied position: from the file holding it.
        let mut g = Follower::new(&d, Lsn(0x70));
        assert_eq!(ends(&mut g), vec![0x90]);
        // The files before the one it started in were applied before: removable.
        assert_eq!(g.take_finished(), vec![d.join("0000000000000010.jsonl")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_cut_tail_is_read_again() {
        let d = tmp("cut");
        let p = d.join("0000000000000010.jsonl.partial");
        append(&p, &txn(1, 0x20, 0x30));
        append(&p, &txn(2, 0x40, 0x50));
        let mut f = Follower::new(&d, Lsn(0));
        assert_eq!(ends(&mut f), vec![0x30, 0x50]);
        // pgrecvlogical cut the file (a power loss took the unsynced tail) and wrote on.
        let one = txn(1, 0x20, 0x30);
        fs::write(&p, &one).unwrap();
        assert_eq!(ends(&mut f), vec![0x30]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refusals() {
        let d = tmp("refuse");
        append(&d.join("0000000000000010.jsonl"), &txn(1, 0x20, 0x30)[..60]);
        append(&d.join("0000000000000030.jsonl.partial"), &txn(2, 0x40, 0x50));
        let mut f = Follower::new(&d, Lsn(0));
        assert!(matches!(f.next_unit(), Err(FollowError::EndsInsideTransaction(_))));
        // Applied up to 0/8, but the directory starts later: removed before applied.
        fs::remove_file(d.join("0000000000000010.jsonl")).unwrap();
        let mut f = Follower::new(&d, Lsn(8));
        assert!(matches!(f.next_unit(), Err(FollowError::Missing { .. })));
        // Retention's marker: a new target (0/0) below it is refused too.
        fs::write(d.join(REMOVED_FILE), "position=0/30\n").unwrap();
        assert!(matches!(Follower::new(&d, Lsn(0)).next_unit(), Err(FollowError::Missing { .. })));
        assert!(matches!(Follower::new(&d, Lsn(0x30)).next_unit(), Ok(Next::Unit(_))));
        fs::remove_file(d.join(REMOVED_FILE)).unwrap();
        append(&d.join("0000000000000060.txt"), "BEGIN\n");
        assert!(matches!(Follower::new(&d, Lsn(0)).next_unit(), Err(FollowError::TextFormat(_))));
        fs::remove_dir_all(&d).unwrap();
        let d = tmp("garbage");
        append(&d.join("0000000000000010.jsonl.partial"), "\0\0\0\n");
        assert!(matches!(Follower::new(&d, Lsn(0)).next_unit(), Err(FollowError::Bad { .. })));
        fs::remove_dir_all(&d).unwrap();
    }
}
