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

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::archive::{fsync_dir, open_locked, LockedDirError};
use crate::lsn::Lsn;

use super::output::{unit_end, Format};

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
            FilesError::Io { path, action, err } => write!(f, "could not {action} \"{}\": {err}", path.display()),
            FilesError::NotADirectory(p) => {
                write!(f, "\"{}\" exists but is not a directory; give -D a directory for the output", p.display())
            }
            FilesError::Locked(p) => write!(
                f,
                "another pgrecvlogical is already writing into \"{}\" (it holds the lock on {LOCK_FILE}); stop it or use another directory",
                p.display()
            ),
            FilesError::OtherFormat { dir, file } => write!(
                f,
                "output directory \"{}\" holds \"{file}\", written in the other --format; use that format or another directory",
                dir.display()
            ),
            FilesError::StrayPartial(p) => write!(
                f,
                "\"{}\" is a partial file but not the newest one; move it out of the output directory",
                p.display()
            ),
        }
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

    /// Finds where the output ends and cuts an incomplete tail off the partial file. With
    /// `sync`, the cut is made durable before streaming starts.
    pub fn recover(&self, format: Format, sync: bool) -> Result<Recovered, FilesError> {
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
        let mut rec = Recovered::default();
        while let Some((start, partial, name)) = ours.pop() {
            let path = self.dir.join(&name);
            let mut file =
                OpenOptions::new().read(true).write(partial).open(&path).map_err(io_err(&path, "open"))?;
            let len = file.metadata().map_err(io_err(&path, "stat"))?.len();
            let last = last_unit_end(&mut file, len, format).map_err(io_err(&path, "read"))?;
            if !partial {
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
            let keep = last.map_or(0, |(_, off)| off);
            if keep < len {
                file.set_len(keep).map_err(io_err(&path, "truncate"))?;
                if sync {
                    file.sync_all().map_err(io_err(&path, "fsync"))?;
                }
                rec.cut = len - keep;
                log::info!(
                    "removed {} bytes of an incomplete transaction from the end of \"{}\"; the server sends it again",
                    len - keep,
                    path.display()
                );
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
}

/// The last line of the file that ends a unit: its end LSN and the offset just past it. Reads
/// backwards in growing windows, so a large file costs little when it ends well.
pub fn last_unit_end(file: &mut File, len: u64, format: Format) -> io::Result<Option<(Lsn, u64)>> {
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
            if let Some(lsn) = unit_end(&buf[line_start..end], format) {
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
        assert_eq!(last_unit_end(&mut f, len, Format::Json).unwrap(), Some((Lsn(0x100), good)));
        // No unit end at all; empty file.
        fs::write(&p, "{\"op\":\"begin\"}\npartial").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(last_unit_end(&mut f, 22, Format::Json).unwrap(), None);
        assert_eq!(last_unit_end(&mut f, 0, Format::Json).unwrap(), None);
        // The very first line, no newline before it.
        let c = commit(0x42);
        fs::write(&p, &c).unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(
            last_unit_end(&mut f, c.len() as u64, Format::Json).unwrap(),
            Some((Lsn(0x42), c.len() as u64))
        );
    }

    #[test]
    fn recovery_cuts_the_incomplete_tail() {
        let t = Tmp::new("recover");
        let out = OutputDir::open(&t.0).unwrap();
        assert!(matches!(OutputDir::open(&t.0), Err(FilesError::Locked(_))));
        assert_eq!(out.recover(Format::Json, true).unwrap(), Recovered::default());

        let done = t.0.join(file_name(Lsn(0x10), Format::Json));
        fs::write(&done, format!("{{\"op\":\"begin\"}}\n{}", commit(0x100))).unwrap();
        let partial_path = t.0.join(format!("{}{PARTIAL_SUFFIX}", file_name(Lsn(0x100), Format::Json)));
        let kept = format!("{{\"op\":\"begin\"}}\n{}", commit(0x200));
        fs::write(&partial_path, format!("{kept}{{\"op\":\"begin\"}}\n{{\"op\":\"ins")).unwrap();
        fs::write(t.0.join("README"), "not ours").unwrap();

        let r = out.recover(Format::Json, true).unwrap();
        assert_eq!(r.resume, Some(Lsn(0x200)));
        assert_eq!(
            r.partial,
            Some(Partial { path: partial_path.clone(), len: kept.len() as u64, start: Lsn(0x100) })
        );
        assert_eq!(fs::read_to_string(&partial_path).unwrap(), kept);
        assert_eq!(r.cut, 25);

        // A partial with nothing complete is removed; the complete file tells the resume point.
        fs::write(&partial_path, "{\"op\":\"begin\"}\n").unwrap();
        let r = out.recover(Format::Json, false).unwrap();
        assert_eq!((r.resume, r.partial), (Some(Lsn(0x100)), None));
        assert!(!partial_path.exists());

        // The other format is refused; a partial that is not the newest too.
        fs::write(t.0.join(file_name(Lsn(0x300), Format::Text)), "").unwrap();
        assert!(matches!(out.recover(Format::Json, false), Err(FilesError::OtherFormat { .. })));
        fs::remove_file(t.0.join(file_name(Lsn(0x300), Format::Text))).unwrap();
        fs::write(t.0.join(format!("{}{PARTIAL_SUFFIX}", file_name(Lsn(0x1), Format::Json))), "").unwrap();
        assert!(matches!(out.recover(Format::Json, false), Err(FilesError::StrayPartial(_))));
    }

    #[test]
    fn not_a_directory() {
        let t = Tmp::new("notdir");
        fs::write(&t.0, "x").unwrap();
        assert!(matches!(OutputDir::open(&t.0), Err(FilesError::NotADirectory(_))));
        let _ = fs::remove_file(&t.0);
    }
}
