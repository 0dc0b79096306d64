//! The archive directory: creating it, locking it against a second archiver, the metadata file
//! that ties it to one cluster, and the scan that finds where streaming resumes.
//!
//! Nothing here writes WAL: the writer thread does. Nothing here ever deletes, truncates or
//! renames a WAL file: a file we do not understand is reported and left alone.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::compression::Method;
use crate::durable::{fsync_dir, open_locked, write_durably, LockedDirError, TEMP_SUFFIX};
use crate::logging::Hinted;
use crate::lsn::Lsn;
use crate::physical::compress;
use crate::physical::walfile::{SegmentId, Tli, WalName};
use crate::text::os_error;

pub const LOCK_FILE: &str = ".pgreceivewal.lock";
pub const META_FILE: &str = ".pgreceivewal.meta";

#[derive(Debug)]
pub enum ArchiveError {
    Io {
        path: PathBuf,
        action: &'static str,
        err: io::Error,
    },
    NotADirectory(PathBuf),
    Locked(PathBuf),
    BadSize {
        path: PathBuf,
        size: u64,
        seg_size: u64,
    },
    /// A completed compressed segment that does not decompress to one whole segment.
    BadCompressed {
        path: PathBuf,
        decoded: u64,
        seg_size: u64,
        stopped: Option<String>,
    },
    EmptySegment(PathBuf),
    OtherCluster {
        dir: PathBuf,
        archive: String,
        server: String,
    },
    ForeignSegment {
        path: PathBuf,
        found: String,
        server: String,
    },
    BadMetadata {
        path: PathBuf,
        reason: String,
    },
    FutureTimeline {
        dir: PathBuf,
        archive_tli: Tli,
        server_tli: Tli,
    },
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::Io { path, action, err } => {
                write!(f, "could not {action} \"{}\": {}", path.display(), os_error(err))
            }
            ArchiveError::NotADirectory(p) => write!(f, "\"{}\" exists but is not a directory", p.display()),
            ArchiveError::Locked(p) => write!(
                f,
                "another pgreceivewal is already archiving into \"{}\" (it holds the lock on {LOCK_FILE})",
                p.display()
            ),
            ArchiveError::BadSize { path, size, seg_size } => {
                write!(f, "WAL file \"{}\" has {size} bytes, should be 0 or {seg_size}", path.display())
            }
            ArchiveError::BadCompressed { path, decoded, seg_size, stopped } => {
                write!(f, "compressed WAL segment \"{}\" decompresses to {decoded} bytes, should be {seg_size}", path.display())?;
                if let Some(why) = stopped {
                    write!(f, " ({why})")?;
                }
                Ok(())
            }
            ArchiveError::EmptySegment(p) => write!(f, "completed WAL segment \"{}\" is empty", p.display()),
            ArchiveError::OtherCluster { dir, archive, server } => {
                write!(f, "archive \"{}\" holds WAL of {archive}, but the server is {server}", dir.display())
            }
            ArchiveError::ForeignSegment { path, found, server } => {
                write!(f, "WAL file \"{}\" belongs to {found}, but the server is {server}", path.display())
            }
            ArchiveError::BadMetadata { path, reason } => {
                write!(f, "invalid archive metadata file \"{}\": {reason}", path.display())
            }
            ArchiveError::FutureTimeline { dir, archive_tli, server_tli } => write!(
                f,
                "archive \"{}\" has WAL of timeline {archive_tli}, but the server is on timeline {server_tli}",
                dir.display()
            ),
        }
    }
}

impl Hinted for ArchiveError {
    fn detail(&self) -> Option<String> {
        Some(
            match self {
                ArchiveError::BadSize { .. } => "It was not written by a WAL archiver of this server.",
                ArchiveError::FutureTimeline { .. } => {
                    "The archive belongs to a different history of this cluster."
                }
                _ => return None,
            }
            .into(),
        )
    }

    fn hint(&self) -> Option<String> {
        Some(
            match self {
                ArchiveError::Io { .. } => return None,
                ArchiveError::NotADirectory(_) => "Give -D a directory for the archive.",
                ArchiveError::Locked(_) => "Stop it or use another directory.",
                ArchiveError::BadSize { .. } => "Move it out of the archive.",
                ArchiveError::EmptySegment(_) | ArchiveError::BadCompressed { .. } => {
                    "Move it out of the archive so the segment can be streamed again."
                }
                ArchiveError::OtherCluster { .. } => "Archive each cluster into its own directory.",
                ArchiveError::ForeignSegment { .. } => {
                    "Move it out of the archive (archive each cluster into its own directory)."
                }
                ArchiveError::BadMetadata { .. } => "Restore it or remove it to re-create it.",
                ArchiveError::FutureTimeline { .. } => "Archive into a new directory.",
            }
            .into(),
        )
    }
}

impl std::error::Error for ArchiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ArchiveError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

fn io_err<'p>(path: &'p Path, action: &'static str) -> impl FnOnce(io::Error) -> ArchiveError + 'p {
    move |err| ArchiveError::Io { path: path.to_path_buf(), action, err }
}

/// The identity of the cluster an archive holds WAL of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterId {
    pub system_id: u64,
    pub seg_size: u64,
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database system {} (wal_segment_size {} bytes)", self.system_id, self.seg_size)
    }
}

/// What is in the directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The newest segment (highest number, then highest timeline) and whether it is partial.
    pub newest: Option<(SegmentId, bool)>,
    /// That segment's file name and compression (of two forms of it, the first found).
    pub newest_file: Option<(String, Method)>,
    /// The highest timeline any WAL or history file in the archive belongs to.
    pub max_tli: Option<Tli>,
    /// File names that are not WAL, not ours: reported, never touched.
    pub foreign: Vec<String>,
    /// Our own leftover temporary files (a crash while padding a new segment).
    pub leftovers: Vec<PathBuf>,
}

impl Scan {
    /// Where streaming resumes: the start of the newest partial segment (it is written again
    /// from its start, as pg_receivewal does), or the start of the segment after the newest
    /// complete one, on that file's timeline.
    pub fn resume_point(&self, seg_size: u64) -> Option<(Lsn, Tli)> {
        self.newest.map(|(id, partial)| {
            let segno = if partial { id.segno } else { id.segno + 1 };
            (Lsn(segno * seg_size), id.tli)
        })
    }
}

/// An open, locked archive directory.
pub struct Archive {
    pub dir: PathBuf,
    /// Held for the life of the process: flock is released when the descriptor closes, also
    /// when we are killed, so no stale lock survives a crash.
    _lock: File,
}

impl Archive {
    /// Opens the directory, creating it (mode 0700) if missing, and takes its lock.
    pub fn open(dir: &Path) -> Result<Archive, ArchiveError> {
        let lock = open_locked(dir, LOCK_FILE).map_err(|e| match e {
            LockedDirError::NotADirectory(p) => ArchiveError::NotADirectory(p),
            LockedDirError::Locked(p) => ArchiveError::Locked(p),
            LockedDirError::Io { path, action, err } => ArchiveError::Io { path, action, err },
        })?;
        Ok(Archive { dir: dir.to_path_buf(), _lock: lock })
    }

    /// Lists the directory, checking every WAL file's size against the segment size.
    pub fn scan(&self, seg_size: u64) -> Result<Scan, ArchiveError> {
        let mut scan = Scan::default();
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir, "read directory"))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir, "read directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == LOCK_FILE || name == META_FILE || name == crate::physical::ship::MARKER_FILE {
                continue;
            }
            if name.ends_with(TEMP_SUFFIX) {
                scan.leftovers.push(entry.path());
                continue;
            }
            let Some((wal, method)) = WalName::parse_any(&name) else {
                scan.foreign.push(name);
                continue;
            };
            if let WalName::History { tli } = wal {
                scan.max_tli = scan.max_tli.max(Some(tli));
                continue;
            }
            let Some(id) = wal.segment(seg_size) else {
                scan.foreign.push(name);
                continue;
            };
            let path = entry.path();
            let size = fs::metadata(&path).map_err(io_err(&path, "stat"))?.len();
            match (size, wal.is_partial(), method) {
                // A compressed partial has no set size (pg_receivewal writes gzip's header
                // with the first WAL); it is written again from its start anyway.
                (_, true, m) if m != Method::None => {}
                (0, _, _) if !wal.is_partial() => return Err(ArchiveError::EmptySegment(path)),
                (_, false, Method::Gzip) => check_gzip_size(&path, seg_size)?,
                (_, false, m) if m != Method::None => {}
                (s, _, _) if s == seg_size => {}
                (0, true, _) => {}
                (size, _, _) => return Err(ArchiveError::BadSize { path, size, seg_size }),
            }
            scan.max_tli = scan.max_tli.max(Some(id.tli));
            let newer = match scan.newest {
                None => true,
                Some((best, best_partial)) => {
                    (id.segno, id.tli) > (best.segno, best.tli)
                        // The same segment complete and partial: the complete file is newer.
                        || (id == best && best_partial && !wal.is_partial())
                }
            };
            if newer {
                scan.newest = Some((id, wal.is_partial()));
                scan.newest_file = Some((name, method));
            }
        }
        // Resuming after a complete compressed segment trusts it to hold the whole segment:
        // decompress it, as pg_receivewal does for `.lz4`.
        if let (Some((_, false)), Some((name, method))) = (scan.newest, &scan.newest_file) {
            if *method != Method::None {
                let path = self.dir.join(name);
                let f = File::open(&path).map_err(io_err(&path, "open"))?;
                let d =
                    compress::decode(*method, f, seg_size, &mut |_| Ok(())).map_err(io_err(&path, "read"))?;
                if d.len != seg_size || d.stopped.is_some() {
                    return Err(ArchiveError::BadCompressed {
                        path,
                        decoded: d.len.min(seg_size + 1),
                        seg_size,
                        stopped: d.stopped.map(|e| e.to_string()),
                    });
                }
            }
        }
        scan.foreign.sort();
        Ok(scan)
    }

    /// Ties the archive to one cluster: records the server's identity on first use, refuses a
    /// different server later. An archive begun by another tool (no metadata file yet) is
    /// checked through the long page header of its newest segment.
    pub fn check_cluster(&self, server: ClusterId, scan: &Scan) -> Result<(), ArchiveError> {
        // The newest segment is where streaming resumes: whoever put it there, it must be WAL
        // of this server, whether or not the metadata file agrees.
        if let Some((name, method)) = &scan.newest_file {
            let path = self.dir.join(name);
            if let Some(found) = read_segment_identity(&path, *method).map_err(io_err(&path, "read"))? {
                if found != server {
                    return Err(ArchiveError::ForeignSegment {
                        path,
                        found: found.to_string(),
                        server: server.to_string(),
                    });
                }
            }
        }
        let meta = self.dir.join(META_FILE);
        match fs::read(&meta) {
            Ok(content) => {
                let archive = parse_meta(&content)
                    .map_err(|reason| ArchiveError::BadMetadata { path: meta.clone(), reason })?;
                if archive != server {
                    return Err(ArchiveError::OtherCluster {
                        dir: self.dir.clone(),
                        archive: archive.to_string(),
                        server: server.to_string(),
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let content = format!(
                    "# pgreceivewal archive metadata: the cluster this directory archives; do not edit\nsystem_identifier={}\nwal_segment_size={}\n",
                    server.system_id, server.seg_size
                );
                write_durably(&meta, content.as_bytes(), 0o600).map_err(io_err(&meta, "write"))
            }
            Err(e) => Err(ArchiveError::Io { path: meta, action: "read", err: e }),
        }
    }

    /// The replication slot the archive was last streamed with, from the metadata file
    /// (`None` for an archive not yet streamed with a slot, or from before slots were recorded).
    pub fn recorded_slot(&self) -> Result<Option<String>, ArchiveError> {
        let meta = self.dir.join(META_FILE);
        match fs::read(&meta) {
            Ok(content) => {
                parse_meta_slot(&content).map_err(|reason| ArchiveError::BadMetadata { path: meta, reason })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ArchiveError::Io { path: meta, action: "read", err: e }),
        }
    }

    /// Records `slot` in the metadata file written by [`Archive::check_cluster`], keeping its
    /// other lines (keys of later versions included) as they are.
    pub fn record_slot(&self, slot: &str) -> Result<(), ArchiveError> {
        let meta = self.dir.join(META_FILE);
        let content = fs::read(&meta).map_err(io_err(&meta, "read"))?;
        let text = std::str::from_utf8(&content)
            .map_err(|_| ArchiveError::BadMetadata { path: meta.clone(), reason: "not UTF-8".into() })?;
        let mut out: String = text
            .lines()
            .filter(|l| l.split_once('=').is_none_or(|(k, _)| k.trim() != "slot"))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&format!("slot={slot}\n"));
        write_durably(&meta, out.as_bytes(), 0o600).map_err(io_err(&meta, "write"))
    }

    /// Removes our own temporary files left by a crash (never anything else).
    pub fn remove_leftovers(&self, scan: &Scan) -> Result<(), ArchiveError> {
        for p in &scan.leftovers {
            match fs::remove_file(p) {
                // Gone since the scan: the metadata is rewritten through the same temporary
                // name (write_durably) between a scan and this, so a leftover of it is
                // renamed away, which is what removing it was for.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                res => res.map_err(io_err(p, "remove leftover temporary file"))?,
            }
        }
        if !scan.leftovers.is_empty() {
            fsync_dir(&self.dir).map_err(io_err(&self.dir, "fsync directory"))?;
        }
        Ok(())
    }

    /// File mode for new files: 0600, or 0640 when the server's data directory allows group
    /// read, as pg_receivewal does.
    pub fn file_mode(group_access: bool) -> u32 {
        if group_access {
            0o640
        } else {
            0o600
        }
    }

    /// Gives the directory itself the matching mode when we created it.
    pub fn set_group_access(&self, group_access: bool) -> Result<(), ArchiveError> {
        if group_access {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o750))
                .map_err(io_err(&self.dir, "chmod"))?;
        }
        Ok(())
    }
}

/// Parses `.pgreceivewal.meta`.
pub fn parse_meta(content: &[u8]) -> Result<ClusterId, String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_string())?;
    let (mut sysid, mut seg) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (k, v) = line.split_once('=').ok_or_else(|| format!("line \"{line}\" is not key=value"))?;
        let num = || v.trim().parse::<u64>().map_err(|_| format!("{k} has invalid value \"{v}\""));
        match k.trim() {
            "system_identifier" => sysid = Some(num()?),
            "wal_segment_size" => seg = Some(num()?),
            _ => {} // Keys from later versions are kept by not being rewritten.
        }
    }
    match (sysid, seg) {
        (Some(system_id), Some(seg_size)) => Ok(ClusterId { system_id, seg_size }),
        _ => Err("system_identifier or wal_segment_size is missing".into()),
    }
}

/// The `slot` key of `.pgreceivewal.meta`, checked as a slot name (the file may have been
/// edited; a name that is not one must never reach a replication command).
pub fn parse_meta_slot(content: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_string())?;
    let mut slot = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == "slot" {
                let v = v.trim();
                let valid = (1..=63).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(format!("slot has invalid value \"{v}\""));
                }
                slot = Some(v.to_owned());
            }
        }
    }
    Ok(slot)
}

/// The uncompressed size of a completed `.gz` segment, from the gzip trailer's ISIZE (its
/// last 4 bytes), as pg_receivewal's `FindStreamingStart` checks it.
fn check_gzip_size(path: &Path, seg_size: u64) -> Result<(), ArchiveError> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).map_err(io_err(path, "open"))?;
    let len = f.metadata().map_err(io_err(path, "stat"))?.len();
    let mut t = [0u8; 4];
    if len >= 18 {
        f.read_exact_at(&mut t, len - 4).map_err(io_err(path, "read"))?;
    }
    let isize = u64::from(u32::from_le_bytes(t));
    // ISIZE is the size modulo 2^32, as gzip stores it.
    if isize != seg_size % (1 << 32) {
        return Err(ArchiveError::BadCompressed {
            path: path.to_path_buf(),
            decoded: isize,
            seg_size,
            stopped: None,
        });
    }
    Ok(())
}

/// Reads the identity from a segment's first page (its long header), `None` if that page was
/// never written (a freshly padded partial segment, a compressed one holding less than a header).
pub fn read_segment_identity(path: &Path, method: Method) -> io::Result<Option<ClusterId>> {
    let mut h = [0u8; 40];
    let mut r = compress::reader(method, File::open(path)?)?;
    if r.read_exact(&mut h).is_err() || h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let system_id = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
    let seg_size = u64::from(u32::from_le_bytes(h[32..36].try_into().expect("4 bytes")));
    Ok(Some(ClusterId { system_id, seg_size }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("pgrw-archive-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            Dir(p)
        }
        fn file(&self, name: &str, size: u64) {
            let f = File::create(self.0.join(name)).unwrap();
            f.set_len(size).unwrap();
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn creates_directory_0700_and_locks_it() {
        let d = Dir::new("lock");
        let a = Archive::open(&d.0).unwrap();
        assert_eq!(fs::metadata(&d.0).unwrap().permissions().mode() & 0o777, 0o700);
        let e = Archive::open(&d.0).err().unwrap();
        assert!(matches!(e, ArchiveError::Locked(_)), "{e}");
        assert!(e.to_string().contains("another pgreceivewal"));
        drop(a);
        Archive::open(&d.0).unwrap();
    }

    #[test]
    fn a_file_is_not_an_archive() {
        let d = Dir::new("notdir");
        fs::write(&d.0, b"x").unwrap();
        let e = Archive::open(&d.0).err().unwrap();
        assert!(e.to_string().contains("not a directory"), "{e}");
        fs::remove_file(&d.0).unwrap();
    }

    #[test]
    fn resumes_after_newest_complete_or_at_newest_partial() {
        let d = Dir::new("scan");
        let a = Archive::open(&d.0).unwrap();
        assert_eq!(a.scan(SEG).unwrap().resume_point(SEG), None);
        d.file("000000010000000000000003", SEG);
        d.file("000000010000000000000004", SEG);
        d.file("README.txt", 5);
        assert_eq!(a.scan(SEG).unwrap().resume_point(SEG), Some((Lsn(5 * SEG), 1)));
        d.file("000000010000000000000005.partial", SEG);
        assert_eq!(a.scan(SEG).unwrap().resume_point(SEG), Some((Lsn(5 * SEG), 1)));
        // A timeline switch in segment 5: the new timeline's copy of it is newer.
        d.file("000000020000000000000005.partial", 0);
        d.file("00000002.history", 30);
        let s = a.scan(SEG).unwrap();
        assert_eq!(s.resume_point(SEG), Some((Lsn(5 * SEG), 2)));
        assert_eq!(s.max_tli, Some(2));
        assert_eq!(s.foreign, vec!["README.txt".to_string()]);
    }

    #[test]
    fn complete_beats_partial_of_the_same_segment() {
        let d = Dir::new("both");
        let a = Archive::open(&d.0).unwrap();
        d.file("000000010000000000000007.partial", SEG);
        d.file("000000010000000000000007", SEG);
        assert_eq!(a.scan(SEG).unwrap().newest, Some((SegmentId { tli: 1, segno: 7 }, false)));
    }

    #[test]
    fn wrong_sizes_are_refused_and_left_alone() {
        let d = Dir::new("size");
        let a = Archive::open(&d.0).unwrap();
        d.file("000000010000000000000003.partial", 1000);
        let e = a.scan(SEG).unwrap_err();
        assert!(
            e.to_string()
                .contains("000000010000000000000003.partial\" has 1000 bytes, should be 0 or 1048576"),
            "{e}"
        );
        assert_eq!(fs::metadata(d.0.join("000000010000000000000003.partial")).unwrap().len(), 1000);
        fs::remove_file(d.0.join("000000010000000000000003.partial")).unwrap();
        d.file("000000010000000000000003", 0);
        assert!(matches!(a.scan(SEG).unwrap_err(), ArchiveError::EmptySegment(_)));
    }

    #[test]
    fn leftover_temp_files_are_ours_to_remove() {
        let d = Dir::new("tmp");
        let a = Archive::open(&d.0).unwrap();
        d.file(&format!("000000010000000000000003.partial{TEMP_SUFFIX}"), 10);
        let s = a.scan(SEG).unwrap();
        assert_eq!(s.leftovers.len(), 1);
        a.remove_leftovers(&s).unwrap();
        assert!(a.scan(SEG).unwrap().leftovers.is_empty());
        // A leftover that is gone by the time it is removed (renamed away by a metadata
        // write since the scan) is no error.
        a.remove_leftovers(&s).unwrap();
    }

    #[test]
    fn metadata_ties_archive_to_one_cluster() {
        let d = Dir::new("meta");
        let a = Archive::open(&d.0).unwrap();
        let me = ClusterId { system_id: 42, seg_size: SEG };
        a.check_cluster(me, &Scan::default()).unwrap();
        a.check_cluster(me, &Scan::default()).unwrap();
        let other = ClusterId { system_id: 43, seg_size: SEG };
        let e = a.check_cluster(other, &Scan::default()).unwrap_err();
        assert!(e.to_string().contains("database system 42"), "{e}");
        assert!(e.to_string().contains("database system 43"), "{e}");
        fs::write(d.0.join(META_FILE), "system_identifier=x\n").unwrap();
        assert!(matches!(a.check_cluster(me, &Scan::default()), Err(ArchiveError::BadMetadata { .. })));
    }

    #[test]
    fn archive_from_another_tool_is_checked_by_its_wal() {
        let d = Dir::new("foreignwal");
        let a = Archive::open(&d.0).unwrap();
        let mut page = vec![0u8; SEG as usize];
        page[24..32].copy_from_slice(&7u64.to_le_bytes());
        page[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
        fs::write(d.0.join("000000010000000000000002"), &page).unwrap();
        let scan = a.scan(SEG).unwrap();
        let e = a.check_cluster(ClusterId { system_id: 8, seg_size: SEG }, &scan).unwrap_err();
        assert!(matches!(e, ArchiveError::ForeignSegment { .. }), "{e}");
        assert!(
            e.to_string().contains("000000010000000000000002") && e.to_string().contains("database system 7"),
            "{e}"
        );
        a.check_cluster(ClusterId { system_id: 7, seg_size: SEG }, &scan).unwrap();
        // With the metadata file now written, a foreign newest segment is still caught.
        page[24..32].copy_from_slice(&9u64.to_le_bytes());
        fs::write(d.0.join("000000010000000000000003"), &page).unwrap();
        let scan = a.scan(SEG).unwrap();
        let e = a.check_cluster(ClusterId { system_id: 7, seg_size: SEG }, &scan).unwrap_err();
        assert!(matches!(e, ArchiveError::ForeignSegment { .. }), "{e}");
    }

    #[test]
    fn a_failed_durable_write_names_both_files() {
        let d = Dir::new("rename");
        fs::create_dir_all(d.0.join("target/inner")).unwrap();
        let e = write_durably(&d.0.join("target"), b"x", 0o600).unwrap_err();
        let tmp = d.0.join(format!("target{TEMP_SUFFIX}"));
        assert!(
            e.to_string().starts_with(&format!(
                "could not rename file \"{}\" to \"{}\": ",
                tmp.display(),
                d.0.join("target").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn slot_is_recorded_in_the_metadata() {
        let d = Dir::new("metaslot");
        let a = Archive::open(&d.0).unwrap();
        let me = ClusterId { system_id: 42, seg_size: SEG };
        a.check_cluster(me, &Scan::default()).unwrap();
        // A metadata file from before slots were recorded reads as "no slot".
        assert_eq!(a.recorded_slot().unwrap(), None);
        let mut old = fs::read_to_string(d.0.join(META_FILE)).unwrap();
        old.push_str("future=3\n");
        fs::write(d.0.join(META_FILE), &old).unwrap();
        a.record_slot("one").unwrap();
        a.record_slot("two").unwrap();
        assert_eq!(a.recorded_slot().unwrap().as_deref(), Some("two"));
        let text = fs::read_to_string(d.0.join(META_FILE)).unwrap();
        assert_eq!(text, format!("{old}slot=two\n"), "other lines are kept, one slot line");
        a.check_cluster(me, &Scan::default()).unwrap();
        assert_eq!(parse_meta(text.as_bytes()).unwrap(), me);
        fs::write(d.0.join(META_FILE), format!("{old}slot=a b\n")).unwrap();
        assert!(matches!(a.recorded_slot(), Err(ArchiveError::BadMetadata { .. })));
        assert_eq!(parse_meta_slot(b"slot= s_1 \n").unwrap().as_deref(), Some("s_1"));
    }

    #[test]
    fn meta_parsing() {
        assert_eq!(
            parse_meta(b"# c\nsystem_identifier=1\nwal_segment_size=2\nfuture=3\n").unwrap(),
            ClusterId { system_id: 1, seg_size: 2 }
        );
        assert!(parse_meta(b"system_identifier=1\n").is_err());
        assert!(parse_meta(b"garbage\n").is_err());
    }

    fn compressed(d: &Dir, name: &str, method: Method, content: &[u8], finish: bool) {
        let f = File::create(d.0.join(name)).unwrap();
        let spec = crate::compression::parse(method.name()).unwrap();
        let mut e = compress::Encoder::new(spec, f).unwrap();
        e.write_all(content).unwrap();
        if finish {
            e.finish().unwrap();
        } else {
            e.flush_point().unwrap();
        }
    }

    fn segment(sysid: u64) -> Vec<u8> {
        let mut page = vec![0u8; SEG as usize];
        page[24..32].copy_from_slice(&sysid.to_le_bytes());
        page[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
        page
    }

    #[test]
    fn compressed_segments_are_segments() {
        let d = Dir::new("compressed");
        let a = Archive::open(&d.0).unwrap();
        compressed(&d, "000000010000000000000003.gz", Method::Gzip, &segment(7), true);
        compressed(&d, "000000010000000000000004.lz4", Method::Lz4, &segment(7), true);
        let s = a.scan(SEG).unwrap();
        assert_eq!(s.resume_point(SEG), Some((Lsn(5 * SEG), 1)));
        assert_eq!(s.newest_file, Some(("000000010000000000000004.lz4".into(), Method::Lz4)));
        a.check_cluster(ClusterId { system_id: 7, seg_size: SEG }, &s).unwrap();
        // A compressed partial is resumed at its segment's start, and checked by its WAL.
        compressed(&d, "000000010000000000000005.zst.partial", Method::Zstd, &segment(8)[..100_000], false);
        let s = a.scan(SEG).unwrap();
        assert_eq!(s.resume_point(SEG), Some((Lsn(5 * SEG), 1)));
        let e = a.check_cluster(ClusterId { system_id: 7, seg_size: SEG }, &s).unwrap_err();
        assert!(matches!(e, ArchiveError::ForeignSegment { .. }), "{e}");
    }

    #[test]
    fn short_compressed_segments_are_refused() {
        let d = Dir::new("shortgz");
        let a = Archive::open(&d.0).unwrap();
        // gzip: by its trailer, as pg_receivewal checks it, for every .gz.
        compressed(&d, "000000010000000000000003.gz", Method::Gzip, &segment(7)[..1000], true);
        fs::write(d.0.join("000000010000000000000004"), segment(7)).unwrap();
        let e = a.scan(SEG).unwrap_err();
        assert!(
            e.to_string()
                .contains("000000010000000000000003.gz\" decompresses to 1000 bytes, should be 1048576"),
            "{e}"
        );
        fs::remove_file(d.0.join("000000010000000000000003.gz")).unwrap();
        // The newest complete segment of any method: decompressed in full.
        compressed(&d, "000000010000000000000005.zst", Method::Zstd, &segment(7)[..SEG as usize - 1], true);
        let e = a.scan(SEG).unwrap_err();
        assert!(matches!(e, ArchiveError::BadCompressed { decoded, .. } if decoded == SEG - 1), "{e}");
    }
}
