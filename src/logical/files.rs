//! The output directory: its lock, the names of its files, and the recovery that finds where
//! the output ends after a crash.
//!
//! Files are named after the position decoding resumed from when they were opened, as 16
//! hexadecimal digits (`00000001000000A8.jsonl`), so names sort in stream order. The file being
//! written is `<name>.partial`; it is renamed (after an fsync) when it is rotated. Files only
//! ever end, or are rotated, after a line that ends a unit (a commit, a prepare, a
//! non-transactional message), so the only incomplete output a crash can leave is the tail of
//! the `.partial` after its last unit end: recovery cuts that tail off (the server sends those
//! transactions again, since they were never confirmed) and resumes after the last unit end.
//!
//! A crash can leave worse than a torn last line: bytes never fsync'ed may come back as zeros
//! (a power loss with the later pages written, or pages dropped after a failed fsync), with a
//! complete commit line after the hole. So recovery never trusts the last line that looks like
//! a unit end. What the slot confirmed (`confirmed_flush_lsn`) was fsync'ed before it was
//! confirmed: the partial file is trusted up to its last unit end at or below that position,
//! and every line after it is checked ([`line_is_ours`], unit ends increasing); the output is
//! cut at the first line that fails, and the server sends the rest again. Without a slot
//! position the whole partial file is checked. Complete files were fsync'ed before their
//! rename and are trusted.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::durable::{fsync_dir, open_locked, LockedDirError};
use crate::logging::Hinted;
use crate::lsn::Lsn;
use crate::text::os_error;

use super::output::{line_is_ours, unit_end, Format};

pub const LOCK_FILE: &str = ".pgrecvlogical.lock";
/// Spill files of streamed transactions: temporary, emptied at every start.
pub const SPILL_DIR: &str = ".spill";
pub const PARTIAL_SUFFIX: &str = ".partial";

pub fn extension(format: Format) -> &'static str {
    match format {
        Format::Json => "jsonl",
        Format::Text => "txt",
    }
}

/// `00000001000000A8.jsonl`
pub fn file_name(start: Lsn, format: Format) -> String {
    format!("{:016X}.{}", start.0, extension(format))
}

/// A file name of ours: its start, format and whether it is the partial one.
pub fn parse_file_name(name: &str) -> Option<(Lsn, Format, bool)> {
    let (name, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
        Some(n) => (n, true),
        None => (name, false),
    };
    let (hex, ext) = name.split_once('.')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        return None;
    }
    let format = match ext {
        "jsonl" => Format::Json,
        "txt" => Format::Text,
        _ => return None,
    };
    Some((Lsn(u64::from_str_radix(hex, 16).ok()?), format, partial))
}

#[derive(Debug)]
pub enum FilesError {
    Io {
        path: PathBuf,
        action: &'static str,
        err: io::Error,
    },
    NotADirectory(PathBuf),
    Locked(PathBuf),
    OtherFormat {
        dir: PathBuf,
        file: String,
    },
    /// A `.partial` that is not the newest file: something else renamed or copied files.
    StrayPartial(PathBuf),
}

impl fmt::Display for FilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilesError::Io { path, action, err } => {
                write!(f, "could not {action} \"{}\": {}", path.display(), os_error(err))
            }
            FilesError::NotADirectory(p) => write!(f, "\"{}\" exists but is not a directory", p.display()),
            FilesError::Locked(p) => write!(
                f,
                "another pgrecvlogical is already writing into \"{}\" (it holds the lock on {LOCK_FILE})",
                p.display()
            ),
            FilesError::OtherFormat { dir, file } => write!(
                f,
                "output directory \"{}\" holds \"{file}\", written in the other --format",
                dir.display()
            ),
            FilesError::StrayPartial(p) => {
                write!(f, "\"{}\" is a partial file but not the newest one", p.display())
            }
        }
    }
}

impl Hinted for FilesError {
    fn hint(&self) -> Option<String> {
        Some(
            match self {
                FilesError::Io { .. } => return None,
                FilesError::NotADirectory(_) => "Give -D a directory for the output.",
                FilesError::Locked(_) => "Stop it or use another directory.",
                FilesError::OtherFormat { .. } => "Use that format or another directory.",
                FilesError::StrayPartial(_) => "Move it out of the output directory.",
            }
            .into(),
        )
    }
}

impl std::error::Error for FilesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FilesError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

fn io_err<'p>(path: &'p Path, action: &'static str) -> impl FnOnce(io::Error) -> FilesError + 'p {
    move |err| FilesError::Io { path: path.to_path_buf(), action, err }
}

/// The partial file output continues in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub path: PathBuf,
    /// Its length, which ends with a unit end (or is 0).
    pub len: u64,
    pub start: Lsn,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Where decoding resumes: the end of the last unit in the output.
    pub resume: Option<Lsn>,
    pub partial: Option<Partial>,
    /// Bytes of an incomplete tail cut off the partial file.
    pub cut: u64,
}

/// An open, locked output directory.
pub struct OutputDir {
    pub dir: PathBuf,
    _lock: File,
}

impl OutputDir {
    /// Opens the directory, creating it (mode 0700) if missing, and takes its lock.
    pub fn open(dir: &Path) -> Result<OutputDir, FilesError> {
        let lock = open_locked(dir, LOCK_FILE).map_err(|e| match e {
            LockedDirError::NotADirectory(p) => FilesError::NotADirectory(p),
            LockedDirError::Locked(p) => FilesError::Locked(p),
            LockedDirError::Io { path, action, err } => FilesError::Io { path, action, err },
        })?;
        Ok(OutputDir { dir: dir.to_path_buf(), _lock: lock })
    }

    pub fn spill_dir(&self) -> PathBuf {
        self.dir.join(SPILL_DIR)
    }

    /// Finds where the output ends and cuts an incomplete or damaged tail off the partial file
    /// (see the module comment). `durable` is the slot's `confirmed_flush_lsn`, `None` when
    /// there is no slot yet. With `sync`, the cut is made durable before streaming starts.
    pub fn recover(&self, format: Format, sync: bool, durable: Option<Lsn>) -> Result<Recovered, FilesError> {
        let mut ours = self.our_files(format)?;
        let mut rec = Recovered::default();
        while let Some((start, partial, name)) = ours.pop() {
            let path = self.dir.join(&name);
            let mut file =
                OpenOptions::new().read(true).write(partial).open(&path).map_err(io_err(&path, "open"))?;
            let len = file.metadata().map_err(io_err(&path, "stat"))?.len();
            if !partial {
                let last = last_unit_end(&mut file, len, format, |_| true).map_err(io_err(&path, "read"))?;
                // A complete file ends with a unit end; if it does not (edited by hand), resume
                // from the last one it has.
                rec.resume = last.map(|(lsn, _)| lsn);
                if rec.resume.is_none() && len > 0 {
                    log::warn!("\"{}\" holds no complete transaction", path.display());
                }
                if rec.resume.is_some() {
                    break;
                }
                continue;
            }
            let (last, cut) = self.cut_tail(&mut file, &path, len, format, sync, durable)?;
            if cut > 0 {
                rec.cut = cut;
            }
            match last {
                Some((lsn, off)) => {
                    rec.resume = Some(lsn);
                    rec.partial = Some(Partial { path, len: off, start });
                    break;
                }
                None => {
                    // Nothing complete in it: it holds nothing, and its name would no longer
                    // tell where its content starts.
                    drop(file);
                    fs::remove_file(&path).map_err(io_err(&path, "remove"))?;
                    if sync {
                        fsync_dir(&self.dir).map_err(io_err(&self.dir, "fsync directory"))?;
                    }
                }
            }
        }
        Ok(rec)
    }

    /// Our files in the directory, oldest first; only the newest may be a partial file.
    fn our_files(&self, format: Format) -> Result<Vec<(Lsn, bool, String)>, FilesError> {
        let mut ours: Vec<(Lsn, bool, String)> = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir, "read directory"))? {
            let entry = entry.map_err(io_err(&self.dir, "read directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == LOCK_FILE || name == SPILL_DIR || name == super::meta::META_FILE {
                continue;
            }
            match parse_file_name(&name) {
                Some((_, f, _)) if f != format => {
                    return Err(FilesError::OtherFormat { dir: self.dir.clone(), file: name })
                }
                Some((start, _, partial)) => ours.push((start, partial, name)),
                None => log::warn!(
                    "ignoring file \"{name}\" in output directory \"{}\": not ours",
                    self.dir.display()
                ),
            }
        }
        // Newest last; at one start the complete file sorts before a partial (it cannot
        // happen, but a partial must never hide behind its complete twin).
        ours.sort();
        for (_, partial, name) in ours.iter().rev().skip(1) {
            if *partial {
                return Err(FilesError::StrayPartial(self.dir.join(name)));
            }
        }
        Ok(ours)
    }

    /// Cuts what cannot be trusted off the end of the partial file: it keeps what the slot
    /// confirmed (`durable`) and every checked line after it, up to the last unit end. That
    /// unit end and its offset, and the number of bytes cut.
    fn cut_tail(
        &self,
        file: &mut File,
        path: &Path,
        len: u64,
        format: Format,
        sync: bool,
        durable: Option<Lsn>,
    ) -> Result<(Option<(Lsn, u64)>, u64), FilesError> {
        // Known durable: up to the last unit end the slot confirmed. Checked: every line after.
        let trusted = match durable {
            Some(c) => last_unit_end(file, len, format, |end| end <= c).map_err(io_err(path, "read"))?,
            None => None,
        };
        let checked = check_tail(file, trusted, len, format).map_err(io_err(path, "read"))?;
        let last = checked.last.or(trusted);
        let keep = last.map_or(0, |(_, off)| off);
        if let Some(at) = checked.damage {
            log::warn!(
                "\"{}\" holds {} bytes at offset {at} that are not output of ours (a crash lost writes that were never fsync'ed); cutting the file back to offset {keep}{}",
                path.display(),
                len - at,
                if durable.is_some() {
                    ", after the last transaction the slot confirmed or a checked one: the server sends the rest again"
                } else {
                    "; there is no slot, so transactions after it cannot be sent again"
                }
            );
        }
        if keep < len {
            file.set_len(keep).map_err(io_err(path, "truncate"))?;
            if sync {
                file.sync_all().map_err(io_err(path, "fsync"))?;
            }
            log::info!(
                "removed {} bytes of an incomplete transaction from the end of \"{}\"; the server sends it again",
                len - keep,
                path.display()
            );
        }
        Ok((last, len.saturating_sub(keep)))
    }
}

/// The last line of the file that ends a unit at a position `wanted` accepts: its end LSN and
/// the offset just past it. Reads backwards in growing windows, so a large file costs little
/// when it ends well.
pub fn last_unit_end(
    file: &mut File,
    len: u64,
    format: Format,
    wanted: impl Fn(Lsn) -> bool,
) -> io::Result<Option<(Lsn, u64)>> {
    let mut window: u64 = 64 << 10;
    loop {
        let from = len.saturating_sub(window);
        file.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::with_capacity((len - from) as usize);
        Read::by_ref(file).take(len - from).read_to_end(&mut buf)?;
        // Complete lines only: the bytes after the last newline are a torn write, and the
        // bytes before the first newline may be the end of a line that starts earlier.
        let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
            if from == 0 {
                return Ok(None);
            }
            window = window.saturating_mul(4);
            continue;
        };
        let mut end = last_nl;
        loop {
            let start = buf[..end].iter().rposition(|&b| b == b'\n').map(|p| p + 1);
            let line_start = match start {
                Some(s) => s,
                None if from == 0 => 0,
                None => break,
            };
            if let Some(lsn) = unit_end(&buf[line_start..end], format).filter(|&l| wanted(l)) {
                return Ok(Some((lsn, from + end as u64 + 1)));
            }
            if line_start == 0 {
                break;
            }
            end = line_start - 1;
        }
        if from == 0 {
            return Ok(None);
        }
        window = window.saturating_mul(4);
    }
}

/// What checking the tail of a partial file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checked {
    /// The last unit end in the checked part, before any damage.
    last: Option<(Lsn, u64)>,
    /// Offset of the first line that is not ours (or ends no later than the unit before it).
    damage: Option<u64>,
}

/// Reads every line after `after` (a unit end and its offset; the start of the file when
/// `None`) and stops at the first one that [`line_is_ours`] refuses, or that ends a unit at or
/// before the one before it. A last line without its newline is a torn write, not damage.
fn check_tail(file: &mut File, after: Option<(Lsn, u64)>, len: u64, format: Format) -> io::Result<Checked> {
    let (mut prev, mut off) = match after {
        Some((lsn, off)) => (Some(lsn), off),
        None => (None, 0),
    };
    file.seek(SeekFrom::Start(off))?;
    let mut reader = BufReader::with_capacity(1 << 16, Read::by_ref(file).take(len - off));
    let mut line = Vec::new();
    let mut last = None;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(Checked { last, damage: None });
        }
        let body = &line[..n - 1];
        if !line_is_ours(body, format) {
            return Ok(Checked { last, damage: Some(off) });
        }
        off += n as u64;
        if let Some(end) = unit_end(body, format) {
            if prev.is_some_and(|p| end <= p) {
                return Ok(Checked { last, damage: Some(off - n as u64) });
            }
            prev = Some(end);
            last = Some((end, off));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(label: &str) -> Tmp {
            let p = std::env::temp_dir().join(format!("pgrl-files-{label}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn commit(end: u64) -> String {
        format!("{{\"op\":\"commit\",\"end_lsn\":\"{}\",\"xid\":1}}\n", Lsn(end))
    }

    #[test]
    fn names() {
        assert_eq!(file_name(Lsn(0x1_0000_00A8), Format::Json), "00000001000000A8.jsonl");
        assert_eq!(file_name(Lsn(0), Format::Text), "0000000000000000.txt");
        assert_eq!(
            parse_file_name("00000001000000A8.jsonl"),
            Some((Lsn(0x1_0000_00A8), Format::Json, false))
        );
        assert_eq!(
            parse_file_name("00000001000000A8.txt.partial"),
            Some((Lsn(0x1_0000_00A8), Format::Text, true))
        );
        for bad in
            ["00000001000000a8.jsonl", "1.jsonl", "00000001000000A8.json", "00000001000000A8", ".spill"]
        {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn finds_the_last_unit_end() {
        let t = Tmp::new("last");
        fs::create_dir_all(&t.0).unwrap();
        let p = t.0.join("f");
        let mut content = String::new();
        content.push_str("{\"op\":\"begin\"}\n");
        content.push_str(&commit(0x100));
        let good = content.len() as u64;
        content.push_str("{\"op\":\"begin\"}\n{\"op\":\"insert\",\"x\":\"");
        content.push_str(&"y".repeat(300_000)); // longer than the first window
        content.push_str("\"}\n{\"op\":\"comm");
        fs::write(&p, &content).unwrap();
        let mut f = File::open(&p).unwrap();
        let len = content.len() as u64;
        assert_eq!(last_unit_end(&mut f, len, Format::Json, |_| true).unwrap(), Some((Lsn(0x100), good)));
        // No unit end at all; empty file.
        fs::write(&p, "{\"op\":\"begin\"}\npartial").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(last_unit_end(&mut f, 22, Format::Json, |_| true).unwrap(), None);
        assert_eq!(last_unit_end(&mut f, 0, Format::Json, |_| true).unwrap(), None);
        // The very first line, no newline before it.
        let c = commit(0x42);
        fs::write(&p, &c).unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(
            last_unit_end(&mut f, c.len() as u64, Format::Json, |_| true).unwrap(),
            Some((Lsn(0x42), c.len() as u64))
        );
    }

    #[test]
    fn recovery_cuts_the_incomplete_tail() {
        let t = Tmp::new("recover");
        let out = OutputDir::open(&t.0).unwrap();
        assert!(matches!(OutputDir::open(&t.0), Err(FilesError::Locked(_))));
        assert_eq!(out.recover(Format::Json, true, None).unwrap(), Recovered::default());

        let done = t.0.join(file_name(Lsn(0x10), Format::Json));
        fs::write(&done, format!("{{\"op\":\"begin\"}}\n{}", commit(0x100))).unwrap();
        let partial_path = t.0.join(format!("{}{PARTIAL_SUFFIX}", file_name(Lsn(0x100), Format::Json)));
        let kept = format!("{{\"op\":\"begin\"}}\n{}", commit(0x200));
        fs::write(&partial_path, format!("{kept}{{\"op\":\"begin\"}}\n{{\"op\":\"ins")).unwrap();
        fs::write(t.0.join("README"), "not ours").unwrap();

        let r = out.recover(Format::Json, true, None).unwrap();
        assert_eq!(r.resume, Some(Lsn(0x200)));
        assert_eq!(
            r.partial,
            Some(Partial { path: partial_path.clone(), len: kept.len() as u64, start: Lsn(0x100) })
        );
        assert_eq!(fs::read_to_string(&partial_path).unwrap(), kept);
        assert_eq!(r.cut, 25);

        // A partial with nothing complete is removed; the complete file tells the resume point.
        fs::write(&partial_path, "{\"op\":\"begin\"}\n").unwrap();
        let r = out.recover(Format::Json, false, None).unwrap();
        assert_eq!((r.resume, r.partial), (Some(Lsn(0x100)), None));
        assert!(!partial_path.exists());

        // The other format is refused; a partial that is not the newest too.
        fs::write(t.0.join(file_name(Lsn(0x300), Format::Text)), "").unwrap();
        assert!(matches!(out.recover(Format::Json, false, None), Err(FilesError::OtherFormat { .. })));
        fs::remove_file(t.0.join(file_name(Lsn(0x300), Format::Text))).unwrap();
        fs::write(t.0.join(format!("{}{PARTIAL_SUFFIX}", file_name(Lsn(0x1), Format::Json))), "").unwrap();
        assert!(matches!(out.recover(Format::Json, false, None), Err(FilesError::StrayPartial(_))));
    }

    #[test]
    fn not_a_directory() {
        let t = Tmp::new("notdir");
        fs::write(&t.0, "x").unwrap();
        assert!(matches!(OutputDir::open(&t.0), Err(FilesError::NotADirectory(_))));
        let _ = fs::remove_file(&t.0);
    }

    /// Zeros where a crash lost unsynced pages, then a commit line that did reach the disk:
    /// recovery must not resume after that line, or the slot would skip the transactions in
    /// the hole for ever.
    #[test]
    fn a_hole_in_the_tail_stops_recovery() {
        let t = Tmp::new("hole");
        let out = OutputDir::open(&t.0).unwrap();
        let p = t.0.join(format!("{}{PARTIAL_SUFFIX}", file_name(Lsn(0x10), Format::Json)));
        let first = format!("{{\"op\":\"begin\"}}\n{}", commit(0x100));
        let second =
            format!("{{\"op\":\"begin\"}}\n{{\"op\":\"insert\",\"v\":\"\\u0000\"}}\n{}", commit(0x200));
        let good = format!("{first}{second}");
        let mut holey = good.clone().into_bytes();
        // Pages are lost whole: the surviving page starts in the middle of a line.
        holey.extend(std::iter::repeat_n(0u8, 8192));
        holey.extend(b"middle of a line\"}\n");
        holey.extend(commit(0x900).bytes());
        for durable in [None, Some(Lsn(0x100)), Some(Lsn(0x50)), Some(Lsn(0x300))] {
            fs::write(&p, &holey).unwrap();
            let r = out.recover(Format::Json, true, durable).unwrap();
            assert_eq!(r.resume, Some(Lsn(0x200)), "slot at {durable:?}");
            assert_eq!(fs::read_to_string(&p).unwrap(), good);
            assert_eq!(r.cut, holey.len() as u64 - good.len() as u64);
        }
        // A hole right after the confirmed unit: nothing after it is kept.
        let mut holey = first.clone().into_bytes();
        holey.extend([0u8; 100]);
        holey.push(b'\n');
        holey.extend(second.bytes());
        fs::write(&p, &holey).unwrap();
        let r = out.recover(Format::Json, true, Some(Lsn(0x100))).unwrap();
        assert_eq!((r.resume, fs::read_to_string(&p).unwrap()), (Some(Lsn(0x100)), first.clone()));
        // The slot confirmed the line after the hole: it was fsync'ed then, and the server
        // sends nothing before it again, so that is where decoding resumes.
        fs::write(&p, &holey).unwrap();
        let r = out.recover(Format::Json, true, Some(Lsn(0x200))).unwrap();
        assert_eq!(r.resume, Some(Lsn(0x200)));
        // Unit ends that go backwards are stale blocks, not our output.
        fs::write(&p, format!("{first}{}{}", commit(0x300), commit(0x250))).unwrap();
        let r = out.recover(Format::Json, true, None).unwrap();
        assert_eq!(r.resume, Some(Lsn(0x300)));
        // Nothing before the hole: the file goes, and the slot tells where to resume.
        let mut holey = vec![0u8; 4096];
        holey.extend(b"x\"}\n");
        holey.extend(commit(0x900).bytes());
        fs::write(&p, &holey).unwrap();
        let r = out.recover(Format::Json, true, Some(Lsn(0x80))).unwrap();
        assert_eq!((r.resume, r.partial), (None, None));
        assert!(!p.exists());
    }

    #[test]
    fn a_hole_in_a_text_file_and_lines_written_before_escaping() {
        let t = Tmp::new("holetext");
        let out = OutputDir::open(&t.0).unwrap();
        let p = t.0.join(format!("{}{PARTIAL_SUFFIX}", file_name(Lsn(0x10), Format::Text)));
        // Raw control characters in a value: what files written before escaping may hold.
        let good = "BEGIN xid=1 commit_lsn=0/100 ts=x\n\
                    table public.t: INSERT: xid=1 seq=1 lsn=0/20 v[text]:'a\tb\x01'\n\
                    COMMIT end_lsn=0/128 xid=1 commit_lsn=0/100 ts=x changes=1\n";
        let mut holey = good.as_bytes().to_vec();
        holey.extend([0u8; 512]);
        holey.extend(b"x'\nCOMMIT end_lsn=FFFFFFFF/0 xid=2 commit_lsn=0/100 ts=x changes=1\n");
        fs::write(&p, &holey).unwrap();
        let r = out.recover(Format::Text, true, Some(Lsn(0x10))).unwrap();
        assert_eq!(r.resume, Some(Lsn(0x128)));
        assert_eq!(fs::read_to_string(&p).unwrap(), good);
    }
}
