//! Serving files from a pgreceivewal archive to PostgreSQL's `restore_command` (pgrestorewal).
//!
//! PostgreSQL asks for one file at a time (`%f`) and wants it copied to `%p`. It reads the exit
//! status in only two ways (`RestoreArchivedFile` in xlogarchive.c, with
//! `wait_result_is_any_signal` from wait_error.c): an exit code up to 125 means "not in the archive",
//! and the server goes on to `pg_wal`, to the next timeline, or — at the end of the archive — ends
//! recovery and promotes; an exit code above 125 (or death by a signal) makes recovery fail with
//! FATAL. Every answer this module gives falls in one of these two classes on purpose: a file that
//! is simply not there is [`RestoreError::NotFound`], and everything that might be hiding WAL
//! (I/O errors, a `.partial` with later WAL after it, a hole, a file of the wrong size) stops
//! recovery, because a wrong "not found" makes PostgreSQL promote early and lose committed
//! transactions.
//!
//! The archive is the directory pgreceivewal (or pg_receivewal) writes: complete segments, at
//! most one `.partial` per timeline (the segment being written, zero-padded to full size),
//! timeline history files, and an optional `.pgreceivewal.meta` naming the segment size.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::compression::Method;
use crate::logging::Hinted;
use crate::lsn::{valid_segment_size, Lsn};
use crate::physical::archive::{parse_meta, ClusterId, META_FILE};
use crate::physical::compress;
use crate::physical::walcheck::{check_stored_segment, StoredSegment, WalCheckError, STORED_HEADER_LEN};
use crate::physical::walfile::{Tli, WalName, PARTIAL_SUFFIX};
use crate::text::os_error;

/// Exit status for a file that was restored.
pub const EXIT_RESTORED: u8 = 0;
/// Exit status for a file that is not in the archive: PostgreSQL treats every exit code up to
/// 125 as "not available" and carries on without it.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit status for everything else. PostgreSQL aborts recovery with FATAL when the command's
/// exit code is above 125 (`wait_result_is_any_signal(rc, true)`). 126 and 127 would be logged
/// as "command not executable"/"command not found", 128+n reads like death by signal n and 143
/// (128+SIGTERM) is taken for a shutdown request, so we use 255.
pub const EXIT_FATAL: u8 = 255;

/// Where the restored bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The file named `%f` itself: a complete segment, a history file, or anything else.
    File,
    /// `%f.partial`, served as segment `%f` because the complete segment does not exist.
    Partial,
}

/// A successful restore.
#[derive(Debug)]
pub struct Restored {
    /// The archive file that was copied.
    pub source: PathBuf,
    pub served: Served,
    pub bytes: u64,
    /// A `.partial` of the same segment that was ignored because the complete file exists.
    /// pg_receivewal renames `.partial` to the complete name atomically, so this is a leftover
    /// worth a warning, not an error.
    pub leftover_partial: Option<PathBuf>,
}

/// Why a file was not restored. [`RestoreError::exit_code`] says what PostgreSQL should make
/// of it.
#[derive(Debug)]
pub enum RestoreError {
    /// The file is not in the archive: the only answer that lets recovery carry on.
    NotFound {
        name: String,
    },
    /// `%f` is not a plain file name.
    BadName {
        name: String,
    },
    /// `%p` does not name a file.
    BadDestination {
        dest: PathBuf,
    },
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A `.partial` with later WAL of the same timeline after it: the segment is incomplete in
    /// the archive, so replaying it would end recovery in the middle of the timeline.
    PartialNotLast {
        partial: String,
        later: String,
    },
    /// A segment missing between WAL that is present on the same timeline.
    Hole {
        name: String,
        earlier: String,
        later: String,
    },
    /// A segment file whose size is not the archive's segment size.
    WrongSize {
        file: String,
        size: u64,
        expected: u64,
        from: SizeSource,
    },
    /// A segment file whose size is no possible segment size, with nothing to compare it to.
    ImpossibleSize {
        file: String,
        size: u64,
    },
    /// Two segment files of different sizes and no metadata to tell which is right.
    SizesDisagree {
        file: String,
        size: u64,
        other: String,
        other_size: u64,
    },
    /// The metadata file exists but its `wal_segment_size` cannot be read.
    BadMeta {
        path: PathBuf,
        detail: String,
    },
    /// A segment file whose first page is not the start of this segment of this cluster (a
    /// zero-filled file, another cluster's or another position's WAL): serving it could end
    /// recovery early.
    NotWal {
        file: String,
        problem: WalCheckError,
    },
    /// A rename failed: both names, as PostgreSQL's `durable_rename` reports it.
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// The archive changed under us while copying.
    ShortCopy {
        file: String,
        copied: u64,
        expected: u64,
    },
}

/// Where the expected segment size came from, for the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeSource {
    Meta,
    File(String),
}

impl RestoreError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::NotFound { .. } => EXIT_NOT_FOUND,
            _ => EXIT_FATAL,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RestoreError::NotFound { .. })
    }

    fn io(action: &'static str, path: &Path, source: io::Error) -> RestoreError {
        RestoreError::Io { action, path: path.to_path_buf(), source }
    }
}

impl fmt::Display for RestoreError {
    // Over 80 lines on purpose: one arm per variant, each the message of that error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NotFound { name } => write!(f, "file \"{name}\" is not in the archive"),
            RestoreError::BadName { name } => {
                write!(f, "invalid file name \"{name}\": expected a file name such as %f, without a directory")
            }
            RestoreError::BadDestination { dest } => {
                write!(f, "invalid destination \"{}\": expected a file path such as %p", dest.display())
            }
            RestoreError::Io { action, path, source } => {
                write!(f, "could not {action} \"{}\": {}", path.display(), os_error(source))
            }
            RestoreError::PartialNotLast { partial, later } => write!(
                f,
                "refusing to serve \"{partial}\": later WAL \"{later}\" exists on the same timeline, so this \
                 segment is incomplete in the archive"
            ),
            RestoreError::Hole { name, earlier, later } => write!(
                f,
                "refusing to report \"{name}\" as missing: the archive has \"{earlier}\" before it and \"{later}\" \
                 after it on the same timeline, so WAL is missing from the archive"
            ),
            RestoreError::WrongSize { file, size, expected, from } => {
                write!(f, "refusing to serve \"{file}\": it is {size} bytes but the archive's segment size is {expected} bytes")?;
                match from {
                    SizeSource::Meta => write!(f, " (from {META_FILE})")?,
                    SizeSource::File(other) => write!(f, " (the size of \"{other}\")")?,
                }
                Ok(())
            }
            RestoreError::ImpossibleSize { file, size } => write!(
                f,
                "refusing to serve \"{file}\": it is {size} bytes, which is no valid WAL segment size"
            ),
            RestoreError::SizesDisagree { file, size, other, other_size } => write!(
                f,
                "refusing to serve \"{file}\": it is {size} bytes but \"{other}\" in the same archive is \
                 {other_size} bytes, so one of them is damaged"
            ),
            RestoreError::BadMeta { path, detail } => {
                write!(f, "invalid metadata file \"{}\": {detail}", path.display())
            }
            RestoreError::NotWal { file, problem } => {
                write!(f, "refusing to serve \"{file}\": ")?;
                match problem {
                    WalCheckError::Magic { found, .. } => {
                        write!(f, "its first page has magic number {found:04X}, which is no WAL page header")?
                    }
                    WalCheckError::Timeline { found, file_tli, .. } => write!(
                        f,
                        "its first page says timeline {found}, but the file name says timeline {file_tli}"
                    )?,
                    WalCheckError::PageAddress { page, found } => {
                        write!(f, "its first page has address {found}, but the file name says {page}")?
                    }
                    WalCheckError::NotLongHeader { .. } => write!(f, "its first page has no long page header")?,
                    WalCheckError::SystemId { found, expected, .. } => write!(
                        f,
                        "it is WAL of database system {found}, but the archive holds WAL of database system {expected} (from {META_FILE})"
                    )?,
                    WalCheckError::SegmentSize { found, expected, .. } => write!(
                        f,
                        "its long page header says its segment size is {found} bytes, but it is {expected} bytes"
                    )?,
                    other => write!(f, "{other}")?,
                }
                Ok(())
            }
            RestoreError::Rename { from, to, source } => write!(
                f,
                "could not rename file \"{}\" to \"{}\": {}",
                from.display(),
                to.display(),
                os_error(source)
            ),
            RestoreError::ShortCopy { file, copied, expected } => write!(
                f,
                "could not copy \"{file}\": copied {copied} bytes instead of {expected}"
            ),
        }
    }
}

impl Hinted for RestoreError {
    fn detail(&self) -> Option<String> {
        match self {
            RestoreError::WrongSize { .. } | RestoreError::ImpossibleSize { .. } => {
                Some("The file is damaged.".into())
            }
            RestoreError::NotWal { .. } => Some("The file is damaged or not WAL of this archive.".into()),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(
            match self {
                RestoreError::PartialNotLast { .. } => "Check the archive for missing segments.",
                RestoreError::Hole { .. } => {
                    "Put the segment back into the archive (the base backup's pg_wal may have it) before recovering."
                }
                RestoreError::WrongSize { .. } | RestoreError::ImpossibleSize { .. } | RestoreError::NotWal { .. } => {
                    "Restore it from a copy of the archive."
                }
                RestoreError::SizesDisagree { .. } => "Repair or remove the damaged file.",
                RestoreError::ShortCopy { .. } => "Is something else writing to the archive?",
                _ => return None,
            }
            .into(),
        )
    }
}

impl std::error::Error for RestoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestoreError::Io { source, .. } | RestoreError::Rename { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Copy the file PostgreSQL asked for (`name`, its `%f`) from `archive` to `dest` (its `%p`).
///
/// A segment whose complete file is absent is served from its `.partial` when that is the newest
/// WAL of its timeline in the archive: the end of the WAL that reached the archive.
pub fn restore(archive: &Path, name: &str, dest: &Path) -> Result<Restored, RestoreError> {
    check_name(name)?;
    let path = archive.join(name);
    match WalName::parse(name) {
        Some(WalName::Segment { tli, log, seg }) => restore_segment(archive, name, (tli, log, seg), dest),
        // History files, `.backup` files, and a `.partial` asked for by its own name are copied
        // as they are; only segments have a size PostgreSQL checks.
        _ => match open_if_exists(&path)? {
            Some(mut src) => {
                let bytes = durable_copy(&mut src, &path, None, dest)?;
                Ok(Restored { source: path, served: Served::File, bytes, leftover_partial: None })
            }
            None => {
                // Make a missing archive directory an error, not "not found": a mistyped -D
                // must stop recovery, not end it.
                check_archive_dir(archive)?;
                Err(RestoreError::NotFound { name: name.to_owned() })
            }
        },
    }
}

fn check_name(name: &str) -> Result<(), RestoreError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(RestoreError::BadName { name: name.to_owned() });
    }
    Ok(())
}

fn check_archive_dir(archive: &Path) -> Result<(), RestoreError> {
    match fs::metadata(archive) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            Err(RestoreError::io("open archive directory", archive, io::ErrorKind::NotADirectory.into()))
        }
        Err(e) => Err(RestoreError::io("open archive directory", archive, e)),
    }
}

fn open_if_exists(path: &Path) -> Result<Option<File>, RestoreError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RestoreError::io("open file", path, e)),
    }
}

/// Position of a segment within its timeline. Ordering by (xlogid, segment) is ordering by
/// segment number whatever the segment size, so comparisons need no size.
type SegPos = (u32, u32);

fn segment_name(tli: Tli, (log, seg): SegPos) -> String {
    format!("{tli:08X}{log:08X}{seg:08X}")
}

/// The segments just before and just after `pos` on its timeline, for `seg_size`-byte
/// segments (which decides where one xlogid ends and the next begins). For a size that is no
/// segment size, or a position that cannot exist at that size, only the neighbours within
/// the same xlogid: the file is refused anyway, and they serve only to name a better culprit.
fn adjacent((log, seg): SegPos, seg_size: u64) -> [Option<SegPos>; 2] {
    let per = 0x1_0000_0000u64.checked_div(seg_size).unwrap_or(0);
    if !valid_segment_size(seg_size) || u64::from(seg) >= per {
        return [seg.checked_sub(1).map(|s| (log, s)), seg.checked_add(1).map(|s| (log, s))];
    }
    let segno = u64::from(log) * per + u64::from(seg);
    let pos = |n: u64| Some((u32::try_from(n / per).ok()?, u32::try_from(n % per).ok()?));
    [segno.checked_sub(1).and_then(pos), pos(segno + 1)]
}

/// The nearest segment files (complete or `.partial`) of one timeline before and after a
/// position, by name.
#[derive(Default)]
struct Nearest {
    earlier: Option<(SegPos, String)>,
    later: Option<(SegPos, String)>,
}

/// Reads the archive directory's names (no `stat` per file, nothing kept but the two
/// nearest) to find the WAL of timeline `tli` nearest to `pos` on either side.
///
/// This is the one look at the whole archive, and only two answers need it: serving a
/// `.partial`, and saying a segment is not there. Both are about whether the archive holds
/// any later WAL of the timeline, at any distance: a `.partial` followed by a copy of a far
/// later segment, or a hole of any length, is as fatal to a recovery as one next door, and a
/// directory cannot be asked for "the first name after X" without reading it (probing names
/// would need one probe per possible segment up to the end of the timeline). These answers
/// come at the end of a timeline's WAL in the archive (the `.partial`, then the segment after
/// it; a standby waiting for WAL asks again every `wal_retrieve_retry_interval`), not once
/// per segment, so a recovery as a whole stays linear in the size of the archive. Every
/// other answer, serving a complete segment, looks at no more than the file and its
/// neighbours.
fn nearest_on_timeline(archive: &Path, tli: Tli, pos: SegPos) -> Result<Nearest, RestoreError> {
    let entries =
        fs::read_dir(archive).map_err(|e| RestoreError::io("open archive directory", archive, e))?;
    let mut n = Nearest::default();
    for entry in entries {
        let entry = entry.map_err(|e| RestoreError::io("read archive directory", archive, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((WalName::Segment { tli: t, log, seg } | WalName::Partial { tli: t, log, seg }, _)) =
            WalName::parse_any(name)
        else {
            continue;
        };
        let here = (log, seg);
        if t != tli || here == pos {
            continue;
        }
        // Deterministic messages whatever the directory's order: the nearest file, and of a
        // complete segment and its `.partial`, the name that sorts last before and first after.
        let best = if here < pos { &mut n.earlier } else { &mut n.later };
        let better = match best {
            None => true,
            Some((p, b)) if here < pos => (here, name) > (*p, b.as_str()),
            Some((p, b)) => (here, name) < (*p, b.as_str()),
        };
        if better {
            *best = Some((here, name.to_owned()));
        }
    }
    Ok(n)
}

/// The first of `names` (in `dir`) that exists, opened, with its compression.
fn open_first(
    dir: &Path,
    names: impl IntoIterator<Item = (String, Method)>,
) -> Result<Option<(File, PathBuf, String, Method)>, RestoreError> {
    for (name, method) in names {
        let path = dir.join(&name);
        if let Some(f) = open_if_exists(&path)? {
            return Ok(Some((f, path, name, method)));
        }
    }
    Ok(None)
}

/// A segment's names in every form, uncompressed first: of two complete forms the first is
/// served (they hold the same WAL: one server, one timeline, one position).
fn forms(name: &str, partial: bool) -> impl Iterator<Item = (String, Method)> + '_ {
    let suffix = if partial { PARTIAL_SUFFIX } else { "" };
    Method::ALL.into_iter().map(move |m| (format!("{name}{}{suffix}", m.extension()), m))
}

fn restore_segment(
    archive: &Path,
    name: &str,
    (tli, log, seg): (Tli, u32, u32),
    dest: &Path,
) -> Result<Restored, RestoreError> {
    let pos = (log, seg);

    // A live archiver renames `.partial` to the complete name; looking at the complete name
    // again after the `.partial` has gone closes that window.
    let mut complete = open_first(archive, forms(name, false))?;
    let mut partials = Vec::new();
    if complete.is_none() {
        for (pname, m) in forms(name, true) {
            let path = archive.join(&pname);
            if let Some(f) = open_if_exists(&path)? {
                partials.push((f, path, pname, m));
            }
        }
        if partials.is_empty() {
            complete = open_first(archive, forms(name, false))?;
        }
    }

    if let Some(found) = complete {
        return serve_complete(archive, name, (tli, log, seg), found, dest);
    }
    if !partials.is_empty() {
        let first_name = partials[0].2.clone();
        if let Some((_, later)) = nearest_on_timeline(archive, tli, pos)?.later {
            return Err(RestoreError::PartialNotLast { partial: first_name, later });
        }
        return serve_partial(archive, name, (tli, log, seg), partials, dest);
    }

    // Missing. Before the first or after the last WAL of this timeline is the ordinary case
    // (the archive starts after the base backup and pg_wal has the rest; the end of the
    // archive; another timeline's probe). Strictly between is a hole: answering "not found"
    // would end recovery there and promote, dropping everything after it.
    if let Nearest { earlier: Some((_, earlier)), later: Some((_, later)) } =
        nearest_on_timeline(archive, tli, pos)?
    {
        return Err(RestoreError::Hole { name: name.to_owned(), earlier, later });
    }
    Err(RestoreError::NotFound { name: name.to_owned() })
}

/// An opened archive file: the file, its path, its name, how it is compressed.
type Opened = (File, PathBuf, String, Method);

/// Serves the complete segment `found`, after checking its size and first page.
fn serve_complete(
    archive: &Path,
    name: &str,
    (tli, log, seg): (Tli, u32, u32),
    found: Opened,
    dest: &Path,
) -> Result<Restored, RestoreError> {
    let (mut src, complete_path, file_name, method) = found;
    let leftover_partial = leftover_partial(archive, name)?;
    let meta = read_meta(archive)?;
    if method != Method::None {
        let bytes = decompress_segment(
            archive,
            src,
            &complete_path,
            &file_name,
            method,
            (tli, log, seg),
            meta.as_ref(),
            false,
            dest,
        )?
        .expect("a complete segment is served or refused");
        return Ok(Restored { source: complete_path, served: Served::File, bytes, leftover_partial });
    }
    let size = file_len(&src, &complete_path)?;
    check_size(archive, name, (tli, (log, seg)), size, meta.as_ref())?;
    if !check_header(&src, &complete_path, name, (tli, log, seg), size, meta.as_ref())? {
        // Zeros where the segment starts: whatever wrote this file, it holds no WAL, and
        // served it would end recovery here.
        return Err(RestoreError::NotWal {
            file: name.to_owned(),
            problem: WalCheckError::Magic { page: segment_start((log, seg), size), found: 0 },
        });
    }
    let bytes = durable_copy(&mut src, &complete_path, Some(size), dest)?;
    Ok(Restored { source: complete_path, served: Served::File, bytes, leftover_partial })
}

/// A `.partial` of segment `name` next to its complete form, in any compression.
fn leftover_partial(archive: &Path, name: &str) -> Result<Option<PathBuf>, RestoreError> {
    for (pname, _) in forms(name, true) {
        let p = archive.join(pname);
        match fs::symlink_metadata(&p) {
            Ok(_) => return Ok(Some(p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RestoreError::io("stat file", &p, e)),
        }
    }
    Ok(None)
}

/// Serves the `.partial` that ends the timeline (the caller checked that nothing follows it).
fn serve_partial(
    archive: &Path,
    name: &str,
    (tli, log, seg): (Tli, u32, u32),
    partials: Vec<Opened>,
    dest: &Path,
) -> Result<Restored, RestoreError> {
    let meta = read_meta(archive)?;
    let (mut src, partial_path, partial_name, method) = fullest_partial(partials)?;
    if method != Method::None {
        return match decompress_segment(
            archive,
            src,
            &partial_path,
            &partial_name,
            method,
            (tli, log, seg),
            meta.as_ref(),
            true,
            dest,
        )? {
            Some(bytes) => {
                Ok(Restored { source: partial_path, served: Served::Partial, bytes, leftover_partial: None })
            }
            None => Err(RestoreError::NotFound { name: name.to_owned() }),
        };
    }
    let size = file_len(&src, &partial_path)?;
    check_size(archive, &partial_name, (tli, (log, seg)), size, meta.as_ref())?;
    if !check_header(&src, &partial_path, &partial_name, (tli, log, seg), size, meta.as_ref())? {
        // A `.partial` padded but never written (the archiver stopped right after creating
        // it): nothing of this segment reached the archive. "Not found" lets PostgreSQL
        // look in pg_wal, where the segment may be, instead of reading zeros.
        return Err(RestoreError::NotFound { name: name.to_owned() });
    }
    let bytes = durable_copy(&mut src, &partial_path, Some(size), dest)?;
    Ok(Restored { source: partial_path, served: Served::Partial, bytes, leftover_partial: None })
}

/// Two forms of one partial (a run with another -Z that had not caught up yet): the one
/// holding the most WAL.
fn fullest_partial(mut partials: Vec<Opened>) -> Result<Opened, RestoreError> {
    if partials.len() == 1 {
        return Ok(partials.pop().expect("one"));
    }
    let mut best: Option<(u64, Opened)> = None;
    for (f, path, pname, m) in partials {
        let held = wal_held(&f, &path, m)?;
        if best.as_ref().is_none_or(|(h, _)| held > *h) {
            best = Some((held, (f, path, pname, m)));
        }
    }
    Ok(best.expect("at least two").1)
}

/// How much WAL a partial holds: its decompressed length, or for a padded plain partial the
/// end of its last non-zero byte.
fn wal_held(f: &File, path: &Path, method: Method) -> Result<u64, RestoreError> {
    let f = f.try_clone().map_err(|e| RestoreError::io("read file", path, e))?;
    let mut end = 0u64;
    let mut at = 0u64;
    let plain = method == Method::None;
    let d = compress::decode(method, f, u64::MAX - 1, &mut |b| {
        if plain {
            if let Some(i) = b.iter().rposition(|&x| x != 0) {
                end = at + i as u64 + 1;
            }
            at += b.len() as u64;
        }
        Ok(())
    })
    .map_err(|e| RestoreError::io("read file", path, e))?;
    Ok(if plain { end } else { d.len })
}

/// Serves a compressed segment or partial: decompressed into a temporary file next to `dest`,
/// checked as an uncompressed one would be (its size, its first page), then fsync'ed and
/// renamed. A partial is padded with zeros to the segment size, as PostgreSQL needs every
/// restored segment whole. `Ok(None)` for a partial holding no page header yet.
#[allow(clippy::too_many_arguments)]
fn decompress_segment(
    archive: &Path,
    src: File,
    src_path: &Path,
    file: &str,
    method: Method,
    (tli, log, seg): (Tli, u32, u32),
    meta: Option<&ClusterId>,
    partial: bool,
    dest: &Path,
) -> Result<Option<u64>, RestoreError> {
    let segment = &file[..24];
    // The largest segment PostgreSQL allows, plus one byte to see a longer stream.
    const MAX_SEGMENT: u64 = 1 << 30;
    let limit = meta.map_or(MAX_SEGMENT, |m| m.seg_size);
    let mut served = None;
    durable_install(dest, |out, tmp| {
        let mut w = io::BufWriter::with_capacity(1 << 16, &mut *out);
        let d = compress::decode(method, src, limit, &mut |b| w.write_all(b))
            .map_err(|e| RestoreError::io("decompress file", src_path, e))?;
        w.flush().map_err(|e| RestoreError::io("write file", tmp, e))?;
        drop(w);
        let len = d.len.min(limit + 1);
        let mut h = [0u8; STORED_HEADER_LEN];
        if len >= STORED_HEADER_LEN as u64 {
            out.read_exact_at(&mut h, 0).map_err(|e| RestoreError::io("read file", tmp, e))?;
        }
        let size = if partial {
            if h.iter().all(|&b| b == 0) {
                return Ok(0);
            }
            // The segment size: the archive's, else the one the segment's long header names
            // (checked against the file name's position by check_header).
            let size = meta
                .map_or(u64::from(u32::from_le_bytes(h[32..36].try_into().expect("4 bytes"))), |m| {
                    m.seg_size
                });
            if meta.is_none() && !valid_segment_size(size) {
                // No metadata, and the first page names no possible segment size.
                return Err(RestoreError::NotWal {
                    file: file.to_owned(),
                    problem: WalCheckError::SegmentSize { page: Lsn(0), found: size as u32, expected: len },
                });
            }
            if len > size {
                return Err(RestoreError::WrongSize {
                    file: file.to_owned(),
                    size: len,
                    expected: size,
                    from: if meta.is_some() { SizeSource::Meta } else { SizeSource::File(file.to_owned()) },
                });
            }
            out.set_len(size).map_err(|e| RestoreError::io("write file", tmp, e))?;
            size
        } else {
            if let Some(e) = d.stopped {
                return Err(RestoreError::io("decompress file", src_path, e));
            }
            check_size(archive, segment, (tli, (log, seg)), len, meta).map_err(|e| match e {
                RestoreError::WrongSize { size, expected, from, .. } => {
                    RestoreError::WrongSize { file: file.to_owned(), size, expected, from }
                }
                RestoreError::ImpossibleSize { size, .. } => {
                    RestoreError::ImpossibleSize { file: file.to_owned(), size }
                }
                other => other,
            })?;
            len
        };
        if !check_header(out, tmp, file, (tli, log, seg), size, meta)? {
            return Err(RestoreError::NotWal {
                file: file.to_owned(),
                problem: WalCheckError::Magic { page: segment_start((log, seg), size), found: 0 },
            });
        }
        served = Some(size);
        Ok(size)
    })
    .map(|_| served)
}

/// Where segment `pos` of a timeline starts, with `seg_size`-byte segments.
fn segment_start((log, seg): SegPos, seg_size: u64) -> Lsn {
    Lsn((u64::from(log) << 32) + u64::from(seg) * seg_size)
}

/// Checks the first page of a segment file (already known to be `size` bytes, the segment
/// size) with the archiver's own page checks, against what the archive knows: the file's
/// name, and the system identifier from the metadata file when there is one. `Ok(false)` when
/// the first page is all zeros (the caller decides what an empty file means).
fn check_header(
    src: &File,
    path: &Path,
    file: &str,
    (tli, log, seg): (Tli, u32, u32),
    size: u64,
    meta: Option<&ClusterId>,
) -> Result<bool, RestoreError> {
    let mut h = [0u8; STORED_HEADER_LEN];
    src.read_exact_at(&mut h, 0).map_err(|e| RestoreError::io("read file", path, e))?;
    if h.iter().all(|&b| b == 0) {
        return Ok(false);
    }
    let stored = StoredSegment {
        tli,
        start: segment_start((log, seg), size),
        seg_size: size,
        system_id: meta.map(|m| m.system_id),
    };
    check_stored_segment(&h, &stored)
        .map_err(|problem| RestoreError::NotWal { file: file.to_owned(), problem })?;
    Ok(true)
}

fn file_len(f: &File, path: &Path) -> Result<u64, RestoreError> {
    f.metadata().map(|m| m.len()).map_err(|e| RestoreError::io("stat file", path, e))
}

/// The segment size recorded in the archive's metadata file (written by pgreceivewal, absent
/// from an archive written by pg_receivewal). A metadata file that cannot be read is an error:
/// it is the archive's own record of what it holds.
pub fn read_meta_segment_size(archive: &Path) -> Result<Option<u64>, RestoreError> {
    Ok(read_meta(archive)?.map(|m| m.seg_size))
}

/// The cluster the archive's metadata file names, if it has one.
pub fn read_meta(archive: &Path) -> Result<Option<ClusterId>, RestoreError> {
    let path = archive.join(META_FILE);
    let content = match fs::read(&path) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RestoreError::io("read file", &path, e)),
    };
    let id = parse_meta(&content).map_err(|detail| RestoreError::BadMeta { path: path.clone(), detail })?;
    if !valid_segment_size(id.seg_size) {
        return Err(RestoreError::BadMeta {
            path,
            detail: format!("wal_segment_size {} is no valid WAL segment size", id.seg_size),
        });
    }
    Ok(Some(id))
}

/// A segment must be exactly the segment size: PostgreSQL itself stops with "archive file has
/// wrong size" when it is not, but only after we said "restored"; we say why, with names.
///
/// Without metadata (an archive written by pg_receivewal) the segment size is the one the
/// segment files share, complete or padded `.partial`: `file` is compared with the files of
/// its own segment and of the segments right before and after it. Comparing with every file
/// of the archive, as this once did, costs a `stat` per file on every call. The neighbours
/// are enough: recovery asks for consecutive segments, so every pair of segments it replays
/// one after the other is compared, and a file of another size next to them is refused when
/// its neighbour is served, before recovery could read it. A file of another size that is
/// no neighbour of anything recovery reads is never served; and whatever this check lets
/// through, the segment's own long page header must name its size (`check_header`), and
/// PostgreSQL refuses a restored segment that is not its own segment size with FATAL.
fn check_size(
    archive: &Path,
    file: &str,
    (tli, pos): (Tli, SegPos),
    size: u64,
    meta: Option<&ClusterId>,
) -> Result<(), RestoreError> {
    if let Some(expected) = meta.map(|m| m.seg_size) {
        if size != expected {
            return Err(RestoreError::WrongSize {
                file: file.to_owned(),
                size,
                expected,
                from: SizeSource::Meta,
            });
        }
        return Ok(());
    }
    let [before, after] = adjacent(pos, size);
    // In name order, so the message names the same file whichever way the probes went.
    let others = [before, Some(pos), after]
        .into_iter()
        .flatten()
        .flat_map(|p| {
            let name = segment_name(tli, p);
            [format!("{name}{PARTIAL_SUFFIX}"), name].into_iter().rev()
        })
        .filter(|other| other != file);
    for other in others {
        let other_size = match fs::metadata(archive.join(&other)) {
            Ok(m) => m.len(),
            // Not there, or renamed by a live archiver as we looked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RestoreError::io("stat file", &archive.join(&other), e)),
        };
        if other_size != size {
            if !valid_segment_size(size) {
                return Err(RestoreError::WrongSize {
                    file: file.to_owned(),
                    size,
                    expected: other_size,
                    from: SizeSource::File(other),
                });
            }
            return Err(RestoreError::SizesDisagree { file: file.to_owned(), size, other, other_size });
        }
    }
    if !valid_segment_size(size) {
        return Err(RestoreError::ImpossibleSize { file: file.to_owned(), size });
    }
    Ok(())
}

/// The temporary name `dest` is written under before it is renamed into place:
/// `<dest>.pgrestorewal.<pid>.<n>.tmp`, unique to this process and this copy, so runs that
/// restore into one destination at once (a restarted recovery while the old command still
/// runs, two standbys sharing a directory by mistake) never remove each other's file.
fn temp_path(dest: &Path) -> Result<PathBuf, RestoreError> {
    static COPIES: AtomicU64 = AtomicU64::new(0);
    let file_name =
        dest.file_name().ok_or_else(|| RestoreError::BadDestination { dest: dest.to_path_buf() })?;
    let mut tmp = OsString::from(file_name);
    tmp.push(format!(
        "{TEMP_INFIX}{}.{}{TEMP_SUFFIX}",
        std::process::id(),
        COPIES.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(dest.with_file_name(tmp))
}

const TEMP_INFIX: &str = ".pgrestorewal.";
const TEMP_SUFFIX: &str = ".tmp";

/// Removes temporary files of earlier copies to `dest` whose process is gone (killed while
/// copying). A file of a live process is left alone: it may be renamed into place any moment.
fn remove_stale_temps(dest: &Path) {
    let (Some(dir), Some(name)) = (Some(parent_dir(dest)), dest.file_name()) else { return };
    let prefix = format!("{}{TEMP_INFIX}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest.strip_suffix(TEMP_SUFFIX).and_then(|r| r.split('.').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `dest`'s directory, "." for a bare file name (PostgreSQL passes `pg_wal/RECOVERYXLOG`
/// relative to the data directory).
fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Copy `src` to `dest` the way PostgreSQL's `durable_rename` would leave it: written to a
/// temporary file in `dest`'s directory, fsync'ed, renamed over `dest`, and the directory
/// fsync'ed, so after a crash `dest` is either absent, the old file, or the complete copy.
fn durable_copy(
    src: &mut File,
    src_path: &Path,
    expected: Option<u64>,
    dest: &Path,
) -> Result<u64, RestoreError> {
    durable_install(dest, |out, tmp| {
        let copied = io::copy(src, out).map_err(|e| RestoreError::io("copy to file", tmp, e))?;
        if let Some(expected) = expected.filter(|&n| n != copied) {
            return Err(RestoreError::ShortCopy { file: src_path.display().to_string(), copied, expected });
        }
        Ok(copied)
    })
}

/// Has `fill` write a temporary file in `dest`'s directory, then fsyncs it, renames it over
/// `dest` and fsyncs the directory. On an error, or when `fill` reports 0 bytes (nothing to
/// serve), the temporary file is removed and `dest` left as it was.
fn durable_install(
    dest: &Path,
    fill: impl FnOnce(&mut File, &Path) -> Result<u64, RestoreError>,
) -> Result<u64, RestoreError> {
    let tmp = temp_path(dest)?;
    let dir = parent_dir(dest);
    remove_stale_temps(dest);
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| RestoreError::io("create file", &tmp, e))?;
    let result = (|| {
        let n = fill(&mut out, &tmp)?;
        if n > 0 {
            out.sync_all().map_err(|e| RestoreError::io("fsync file", &tmp, e))?;
        }
        Ok(n)
    })();
    drop(out);
    let copied = match result {
        Ok(n) if n > 0 => n,
        other => {
            let _ = fs::remove_file(&tmp);
            return other;
        }
    };
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(RestoreError::Rename { from: tmp, to: dest.to_path_buf(), source: e });
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RestoreError::io("fsync directory", dir, e))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MB: u64 = 1 << 20;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pgrestorewal-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn sub(&self, name: &str) -> PathBuf {
            let p = self.0.join(name);
            fs::create_dir_all(&p).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const SYSID: u64 = 7;
    const TAG_AT: usize = 100;

    /// The long page header a segment named `name` opens with, written on timeline `tli`.
    fn header(name: &str, size: u64, tli: u32, sysid: u64) -> [u8; 40] {
        let (log, seg) = match WalName::parse(name) {
            Some(WalName::Segment { log, seg, .. } | WalName::Partial { log, seg, .. }) => (log, seg),
            _ => panic!("{name} is no segment name"),
        };
        let mut h = [0u8; 40];
        h[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
        h[2..4].copy_from_slice(&2u16.to_le_bytes());
        h[4..8].copy_from_slice(&tli.to_le_bytes());
        h[8..16].copy_from_slice(&segment_start((log, seg), size).0.to_le_bytes());
        h[24..32].copy_from_slice(&sysid.to_le_bytes());
        h[32..36].copy_from_slice(&(size as u32).to_le_bytes());
        h[36..40].copy_from_slice(&8192u32.to_le_bytes());
        h
    }

    /// A file whose byte TAG_AT tells which one it is; a segment-named one opens with the
    /// long page header its name calls for.
    fn put(dir: &Path, name: &str, size: u64, tag: u8) {
        let mut data = vec![0u8; size as usize];
        match WalName::parse(name) {
            Some(WalName::Segment { tli, .. } | WalName::Partial { tli, .. }) => {
                data[..40].copy_from_slice(&header(name, size, tli, SYSID));
                data[TAG_AT] = tag;
            }
            _ => data[0] = tag,
        }
        fs::write(dir.join(name), data).unwrap();
    }

    fn tag(path: &Path) -> u8 {
        fs::read(path).unwrap()[TAG_AT]
    }

    struct Setup {
        _tmp: TempDir,
        archive: PathBuf,
        pg_wal: PathBuf,
    }

    fn setup() -> Setup {
        let tmp = TempDir::new();
        let archive = tmp.sub("archive");
        let pg_wal = tmp.sub("data/pg_wal");
        Setup { _tmp: tmp, archive, pg_wal }
    }

    fn only_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn complete_segment_is_served() {
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        put(&s.archive, "000000010000000000000002", MB, 2);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let r = restore(&s.archive, "000000010000000000000002", &dest).unwrap();
        assert_eq!(r.served, Served::File);
        assert_eq!(r.bytes, MB);
        assert_eq!(r.source, s.archive.join("000000010000000000000002"));
        assert!(r.leftover_partial.is_none());
        assert_eq!(tag(&dest), 2);
        assert_eq!(fs::metadata(&dest).unwrap().len(), MB);
    }

    #[test]
    fn newest_partial_is_served_as_its_segment() {
        let s = setup();
        put(&s.archive, "000000010000000000000004", MB, 4);
        put(&s.archive, "000000010000000000000005.partial", MB, 5);
        // Later WAL on another timeline is the normal shape after a promotion.
        put(&s.archive, "000000020000000000000005", MB, 25);
        put(&s.archive, "000000020000000000000006", MB, 26);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let r = restore(&s.archive, "000000010000000000000005", &dest).unwrap();
        assert_eq!(r.served, Served::Partial);
        assert_eq!(r.source, s.archive.join("000000010000000000000005.partial"));
        assert_eq!(tag(&dest), 5);
    }

    #[test]
    fn missing_file_is_not_found() {
        let s = setup();
        put(&s.archive, "000000010000000000000004", MB, 4);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        for name in [
            "000000010000000000000005",
            "000000010000000000000003",
            "00000002.history",
            "000000020000000000000004",
        ] {
            let e = restore(&s.archive, name, &dest).unwrap_err();
            assert!(e.is_not_found(), "{name}: {e}");
            assert_eq!(e.exit_code(), EXIT_NOT_FOUND);
        }
        assert!(only_entries(&s.pg_wal).is_empty());
    }

    #[test]
    fn missing_archive_directory_is_fatal() {
        let s = setup();
        let e = restore(&s.archive.join("nope"), "00000002.history", &s.pg_wal.join("RECOVERYHISTORY"))
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert!(e.to_string().starts_with("could not open archive directory"), "{e}");
        let e = restore(&s.archive.join("nope"), "000000010000000000000001", &s.pg_wal.join("RECOVERYXLOG"))
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        // A file where the directory should be.
        fs::write(s.archive.join("file"), "").unwrap();
        let e = restore(&s.archive.join("file"), "00000002.history", &s.pg_wal.join("RECOVERYHISTORY"))
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert!(e.to_string().ends_with(": Not a directory"), "{e}");
    }

    #[test]
    fn partial_followed_by_later_wal_is_refused() {
        for later in
            ["000000010000000000000007", "000000010000000000000007.partial", "000000010000000100000000"]
        {
            let s = setup();
            put(&s.archive, "000000010000000000000005.partial", MB, 5);
            put(&s.archive, later, MB, 7);
            let e =
                restore(&s.archive, "000000010000000000000005", &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
            assert_eq!(e.exit_code(), EXIT_FATAL);
            assert_eq!(
                e.to_string(),
                format!(
                    "refusing to serve \"000000010000000000000005.partial\": later WAL \"{later}\" exists on the \
                     same timeline, so this segment is incomplete in the archive"
                )
            );
            assert_eq!(e.hint().as_deref(), Some("Check the archive for missing segments."));
            assert!(only_entries(&s.pg_wal).is_empty());
        }
    }

    #[test]
    fn hole_inside_a_timeline_is_refused() {
        let s = setup();
        put(&s.archive, "000000010000000000000004", MB, 4);
        put(&s.archive, "000000010000000000000006", MB, 6);
        let e = restore(&s.archive, "000000010000000000000005", &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert!(
            matches!(&e, RestoreError::Hole { earlier, later, .. }
            if earlier == "000000010000000000000004" && later == "000000010000000000000006"),
            "{e}"
        );
        // Before the first segment is not a hole: the base backup's pg_wal may have it.
        assert!(restore(&s.archive, "000000010000000000000003", &s.pg_wal.join("RECOVERYXLOG"))
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn hole_names_the_nearest_files() {
        let s = setup();
        for name in [
            "000000010000000000000002",
            "000000010000000000000004",
            "000000010000000000000004.partial",
            "000000010000000000000008",
            "000000010000000000000008.partial",
            "000000010000000000000009",
            "000000020000000000000006",
        ] {
            put(&s.archive, name, MB, 1);
        }
        let e = restore(&s.archive, "000000010000000000000006", &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
        assert!(
            matches!(&e, RestoreError::Hole { earlier, later, .. }
            if earlier == "000000010000000000000004.partial" && later == "000000010000000000000008"),
            "{e}"
        );
    }

    #[test]
    fn wrong_size_is_refused() {
        // Disagreeing files, no metadata.
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        put(&s.archive, "000000010000000000000002", MB / 2, 2);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let e = restore(&s.archive, "000000010000000000000002", &dest).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert!(
            e.to_string().starts_with("refusing to serve \"000000010000000000000002\": it is 524288 bytes"),
            "{e}"
        );
        // A good file is refused too while the archive disagrees with itself.
        let e = restore(&s.archive, "000000010000000000000001", &dest).unwrap_err();
        assert!(matches!(e, RestoreError::SizesDisagree { .. }), "{e}");

        // A lone file of impossible size.
        let s = setup();
        put(&s.archive, "000000010000000000000003.partial", 1000, 3);
        let e = restore(&s.archive, "000000010000000000000003", &dest).unwrap_err();
        assert!(matches!(e, RestoreError::ImpossibleSize { size: 1000, .. }), "{e}");

        // The metadata file decides.
        let s = setup();
        fs::write(
            s.archive.join(META_FILE),
            "# written by pgreceivewal\nsystem_identifier=1\nwal_segment_size = 16777216\n",
        )
        .unwrap();
        put(&s.archive, "000000010000000000000001", MB, 1);
        let e = restore(&s.archive, "000000010000000000000001", &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
        assert!(
            matches!(e, RestoreError::WrongSize { expected: 16777216, from: SizeSource::Meta, .. }),
            "{e}"
        );
        assert!(only_entries(&s.pg_wal).is_empty());
    }

    #[test]
    fn meta_file_is_read() {
        let s = setup();
        assert_eq!(read_meta_segment_size(&s.archive).unwrap(), None);
        fs::write(s.archive.join(META_FILE), "system_identifier=7\nwal_segment_size=1048576\n").unwrap();
        assert_eq!(read_meta_segment_size(&s.archive).unwrap(), Some(MB));
        for bad in [
            "system_identifier=7\nwal_segment_size=1000\n",
            "system_identifier=7\nwal_segment_size=\n",
            "system_identifier=7\nwal_segment_size=2147483648\n",
            "wal_segment_size=1048576\n",
            "garbage\n",
        ] {
            fs::write(s.archive.join(META_FILE), bad).unwrap();
            let e = read_meta_segment_size(&s.archive).unwrap_err();
            assert!(matches!(e, RestoreError::BadMeta { .. }), "{bad:?}: {e}");
            assert_eq!(e.exit_code(), EXIT_FATAL);
        }
    }

    #[test]
    fn history_file_is_served() {
        let s = setup();
        fs::write(s.archive.join("00000002.history"), "1\t0/5000000\tno recovery target specified\n")
            .unwrap();
        let dest = s.pg_wal.join("RECOVERYHISTORY");
        let r = restore(&s.archive, "00000002.history", &dest).unwrap();
        assert_eq!(r.served, Served::File);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "1\t0/5000000\tno recovery target specified\n");
        // Any other name is copied as it is.
        fs::write(s.archive.join("000000010000000000000002.00000028.backup"), "START WAL LOCATION").unwrap();
        restore(&s.archive, "000000010000000000000002.00000028.backup", &dest).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "START WAL LOCATION");
    }

    #[test]
    fn complete_file_wins_over_leftover_partial() {
        let s = setup();
        put(&s.archive, "000000010000000000000005", MB, 50);
        put(&s.archive, "000000010000000000000005.partial", MB, 5);
        put(&s.archive, "000000010000000000000006.partial", MB, 6);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let r = restore(&s.archive, "000000010000000000000005", &dest).unwrap();
        assert_eq!(r.served, Served::File);
        assert_eq!(r.leftover_partial, Some(s.archive.join("000000010000000000000005.partial")));
        assert_eq!(tag(&dest), 50);
    }

    #[test]
    fn copy_is_durable_and_leaves_no_temp_file() {
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        put(&s.archive, "000000010000000000000002", MB, 2);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        // PostgreSQL removes %p first, but an old file there must be replaced whole, and a
        // temp file left by a killed copy must not get in the way.
        put(&s.pg_wal, "RECOVERYXLOG", 10, 9);
        // No process has pid 999999999 (above Linux's pid_max): its file is a leftover. Pid 1
        // is alive, so its file may still be renamed into place and is left alone.
        fs::write(s.pg_wal.join("RECOVERYXLOG.pgrestorewal.999999999.0.tmp"), "stale").unwrap();
        fs::write(s.pg_wal.join("RECOVERYXLOG.pgrestorewal.1.0.tmp"), "live").unwrap();
        restore(&s.archive, "000000010000000000000001", &dest).unwrap();
        assert_eq!(only_entries(&s.pg_wal), ["RECOVERYXLOG", "RECOVERYXLOG.pgrestorewal.1.0.tmp"]);
        fs::remove_file(s.pg_wal.join("RECOVERYXLOG.pgrestorewal.1.0.tmp")).unwrap();
        assert_eq!(tag(&dest), 1);
        assert_eq!(fs::metadata(&dest).unwrap().len(), MB);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        // A failed restore leaves nothing behind either.
        put(&s.archive, "000000010000000000000003.partial", MB, 3);
        put(&s.archive, "000000010000000000000004", MB, 4);
        restore(&s.archive, "000000010000000000000003", &dest).unwrap_err();
        assert_eq!(only_entries(&s.pg_wal), ["RECOVERYXLOG"]);
        assert_eq!(tag(&dest), 1);
        assert_eq!(only_entries(&s.archive).len(), 4);
    }

    #[test]
    fn zero_filled_segment_is_refused() {
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        fs::write(s.archive.join("000000010000000000000002"), vec![0u8; MB as usize]).unwrap();
        put(&s.archive, "000000010000000000000003", MB, 3);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let e = restore(&s.archive, "000000010000000000000002", &dest).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert_eq!(
            crate::logging::plain_lines("pgrestorewal", "error", &e),
            "pgrestorewal: error: refusing to serve \"000000010000000000000002\": its first page has magic \
             number 0000, which is no WAL page header\n\
             pgrestorewal: detail: The file is damaged or not WAL of this archive.\n\
             pgrestorewal: hint: Restore it from a copy of the archive.\n"
        );
        assert!(only_entries(&s.pg_wal).is_empty());
    }

    #[test]
    fn unwritten_newest_partial_is_not_found() {
        // Padded, never written: nothing of the segment reached the archive; pg_wal may have it.
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        fs::write(s.archive.join("000000010000000000000002.partial"), vec![0u8; MB as usize]).unwrap();
        let e = restore(&s.archive, "000000010000000000000002", &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn foreign_or_misplaced_segments_are_refused() {
        let s = setup();
        let dest = s.pg_wal.join("RECOVERYXLOG");
        fs::write(s.archive.join(META_FILE), format!("system_identifier={SYSID}\nwal_segment_size={MB}\n"))
            .unwrap();
        let name = "000000020000000000000005";
        let write = |h: [u8; 40]| {
            let mut data = vec![0u8; MB as usize];
            data[..40].copy_from_slice(&h);
            fs::write(s.archive.join(name), data).unwrap();
        };
        write(header(name, MB, 2, SYSID + 1));
        let e = restore(&s.archive, name, &dest).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert!(
            e.to_string()
                .contains("it is WAL of database system 8, but the archive holds WAL of database system 7"),
            "{e}"
        );
        write(header(name, MB, 3, SYSID));
        let e = restore(&s.archive, name, &dest).unwrap_err();
        assert!(
            e.to_string().contains("its first page says timeline 3, but the file name says timeline 2"),
            "{e}"
        );
        write(header("000000020000000000000004", MB, 2, SYSID));
        let e = restore(&s.archive, name, &dest).unwrap_err();
        assert!(
            e.to_string().contains("its first page has address 0/400000, but the file name says 0/500000"),
            "{e}"
        );
        // A new timeline's segment opens with a page written on the old timeline: fine.
        write(header(name, MB, 1, SYSID));
        restore(&s.archive, name, &dest).unwrap();
        // The same checks for a .partial.
        fs::remove_file(s.archive.join(name)).unwrap();
        let partial = format!("{name}.partial");
        let mut data = vec![0u8; MB as usize];
        data[..40].copy_from_slice(&header(name, MB, 2, SYSID + 1));
        fs::write(s.archive.join(&partial), data).unwrap();
        let e = restore(&s.archive, name, &dest).unwrap_err();
        assert!(matches!(e, RestoreError::NotWal { problem: WalCheckError::SystemId { .. }, .. }), "{e}");
    }

    #[test]
    fn concurrent_copies_to_one_destination_all_succeed() {
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        std::thread::scope(|sc| {
            let runs: Vec<_> = (0..8)
                .map(|_| {
                    sc.spawn(|| {
                        for _ in 0..10 {
                            restore(&s.archive, "000000010000000000000001", &dest).unwrap();
                        }
                    })
                })
                .collect();
            for r in runs {
                r.join().unwrap();
            }
        });
        assert_eq!(tag(&dest), 1);
        assert_eq!(only_entries(&s.pg_wal), ["RECOVERYXLOG"]);
    }

    #[test]
    fn destination_in_another_directory() {
        let s = setup();
        put(&s.archive, "000000010000000000000001", MB, 1);
        let elsewhere = s._tmp.sub("elsewhere/deeper");
        let dest = elsewhere.join("000000010000000000000001");
        restore(&s.archive, "000000010000000000000001", &dest).unwrap();
        assert_eq!(tag(&dest), 1);
        assert_eq!(only_entries(&elsewhere), ["000000010000000000000001"]);
        // A destination directory that does not exist is an error, not "not found".
        let e = restore(&s.archive, "000000010000000000000001", &s._tmp.0.join("missing/RECOVERYXLOG"))
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL);
        assert!(e.to_string().starts_with("could not create file"), "{e}");
    }

    #[test]
    fn names_with_directories_are_refused() {
        let s = setup();
        for name in ["", ".", "..", "../etc/passwd", "a/b"] {
            let e = restore(&s.archive, name, &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
            assert!(matches!(e, RestoreError::BadName { .. }), "{name:?}: {e}");
            assert_eq!(e.exit_code(), EXIT_FATAL);
        }
    }

    #[test]
    fn adjacent_segments() {
        const SEG16: u64 = 16 * MB;
        assert_eq!(adjacent((0, 5), MB), [Some((0, 4)), Some((0, 6))]);
        assert_eq!(adjacent((0, 0), SEG16), [None, Some((0, 1))]);
        // One xlogid holds 4 GiB of WAL: 256 segments of 16 MiB, 4096 of 1 MiB.
        assert_eq!(adjacent((1, 0), SEG16), [Some((0, 0xFF)), Some((1, 1))]);
        assert_eq!(adjacent((0, 0xFF), SEG16), [Some((0, 0xFE)), Some((1, 0))]);
        assert_eq!(adjacent((3, 0xFFF), MB), [Some((3, 0xFFE)), Some((4, 0))]);
        assert_eq!(adjacent((7, 3), 1024 * MB), [Some((7, 2)), Some((8, 0))]);
        assert_eq!(adjacent((u32::MAX, 0xFF), SEG16), [Some((u32::MAX, 0xFE)), None]);
        // No segment size, or a name that cannot exist at this size: the same xlogid only.
        assert_eq!(adjacent((1, 0), 1000), [None, Some((1, 1))]);
        assert_eq!(adjacent((1, 0x100), SEG16), [Some((1, 0xFF)), Some((1, 0x101))]);
        assert_eq!(adjacent((1, u32::MAX), 0), [Some((1, u32::MAX - 1)), None]);
    }

    /// `put`, compressed with `method` into `<name-with-extension>`; `len` bytes of it (a
    /// partial holds less than a segment), the stream ended or only flushed.
    fn put_compressed(
        dir: &Path,
        name: &str,
        method: Method,
        seg_size: u64,
        len: usize,
        tag: u8,
        finish: bool,
    ) {
        let plain = dir.join(".plain");
        put(dir, name, seg_size, tag);
        fs::rename(dir.join(name), &plain).unwrap();
        let data = fs::read(&plain).unwrap();
        fs::remove_file(&plain).unwrap();
        let (stem, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
            Some(s) => (s, PARTIAL_SUFFIX),
            None => (name, ""),
        };
        let f = File::create(dir.join(format!("{stem}{}{partial}", method.extension()))).unwrap();
        let mut e = compress::Encoder::new(crate::compression::parse(method.name()).unwrap(), f).unwrap();
        e.write_all(&data[..len]).unwrap();
        if finish {
            e.finish().unwrap();
        } else {
            e.flush_point().unwrap();
        }
    }

    #[test]
    fn compressed_segments_are_served_decompressed() {
        for m in [Method::Gzip, Method::Lz4, Method::Zstd] {
            let s = setup();
            put_compressed(&s.archive, "000000010000000000000004", m, MB, MB as usize, 4, true);
            // pg_receivewal's unfinished partial: a stream without its end, flushed.
            put_compressed(&s.archive, "000000010000000000000005.partial", m, MB, 70_000, 5, false);
            let dest = s.pg_wal.join("RECOVERYXLOG");
            let r = restore(&s.archive, "000000010000000000000004", &dest).unwrap();
            assert_eq!((r.served, r.bytes), (Served::File, MB), "{m:?}");
            assert_eq!(fs::read(&dest).unwrap().len() as u64, MB);
            assert_eq!(tag(&dest), 4);
            let r = restore(&s.archive, "000000010000000000000005", &dest).unwrap();
            assert_eq!(r.served, Served::Partial, "{m:?}");
            let got = fs::read(&dest).unwrap();
            assert_eq!(got.len() as u64, MB, "{m:?}: padded to the segment size");
            assert_eq!(got[TAG_AT], 5);
            assert_eq!(only_entries(&s.pg_wal), vec!["RECOVERYXLOG"], "no temporary file left");
            // The segment after the partial: not there, and no hole.
            let e = restore(&s.archive, "000000010000000000000006", &dest).unwrap_err();
            assert!(e.is_not_found(), "{e}");
        }
    }

    #[test]
    fn damaged_compressed_segments_are_refused() {
        let s = setup();
        let dest = s.pg_wal.join("RECOVERYXLOG");
        // Short: a stream that ends properly but holds less than a segment.
        put_compressed(&s.archive, "000000010000000000000004", Method::Gzip, MB, 100_000, 4, true);
        let e = restore(&s.archive, "000000010000000000000004", &dest).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL, "{e}");
        assert!(e.to_string().contains("000000010000000000000004.gz"), "{e}");
        // Torn: a complete name on a stream without its end.
        put_compressed(&s.archive, "000000010000000000000006", Method::Lz4, MB, MB as usize / 2, 6, false);
        fs::remove_file(s.archive.join("000000010000000000000004.gz")).unwrap();
        let e = restore(&s.archive, "000000010000000000000006", &dest).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL, "{e}");
        // Another cluster's WAL, found on the decompressed first page.
        fs::write(s.archive.join(META_FILE), format!("system_identifier=99\nwal_segment_size={MB}\n"))
            .unwrap();
        fs::remove_file(s.archive.join("000000010000000000000006.lz4")).unwrap();
        put_compressed(&s.archive, "000000010000000000000007", Method::Zstd, MB, MB as usize, 7, true);
        let e = restore(&s.archive, "000000010000000000000007", &dest).unwrap_err();
        assert!(matches!(e, RestoreError::NotWal { .. }), "{e}");
        assert!(!dest.exists());
        assert_eq!(only_entries(&s.pg_wal), Vec::<String>::new(), "no temporary file left");
    }

    #[test]
    fn compressed_files_count_for_holes_and_later_wal() {
        let s = setup();
        put_compressed(&s.archive, "000000010000000000000004", Method::Gzip, MB, MB as usize, 4, true);
        put(&s.archive, "000000010000000000000005.partial", MB, 5);
        put_compressed(&s.archive, "000000010000000000000007", Method::Lz4, MB, MB as usize, 7, true);
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let e = restore(&s.archive, "000000010000000000000006", &dest).unwrap_err();
        assert!(matches!(e, RestoreError::Hole { .. }), "{e}");
        let e = restore(&s.archive, "000000010000000000000005", &dest).unwrap_err();
        assert!(matches!(e, RestoreError::PartialNotLast { .. }), "{e}");
    }

    #[test]
    fn of_two_partial_forms_the_one_holding_more_wal_is_served() {
        let s = setup();
        let mut plain = vec![0u8; MB as usize];
        plain[..40].copy_from_slice(&header("000000010000000000000005", MB, 1, SYSID));
        plain[TAG_AT] = 1;
        fs::write(s.archive.join("000000010000000000000005.partial"), &plain).unwrap();
        put_compressed(&s.archive, "000000010000000000000005.partial", Method::Gzip, MB, 50_000, 2, false);
        // The plain one's last non-zero byte is at TAG_AT: the gzip one holds more.
        let dest = s.pg_wal.join("RECOVERYXLOG");
        let r = restore(&s.archive, "000000010000000000000005", &dest).unwrap();
        assert_eq!(r.source, s.archive.join("000000010000000000000005.gz.partial"));
        assert_eq!(tag(&dest), 2);
    }

    #[test]
    fn compressed_partial_with_an_impossible_size_is_refused() {
        let s = setup();
        // Without metadata the segment size comes from the long header: 3 bytes is none.
        put_compressed(&s.archive, "000000010000000000000005.partial", Method::Zstd, MB, 50_000, 5, false);
        let zst = s.archive.join("000000010000000000000005.zst.partial");
        let mut data = vec![0u8; 50_000];
        data[..40].copy_from_slice(&header("000000010000000000000005", MB, 1, SYSID));
        data[32..36].copy_from_slice(&3u32.to_le_bytes());
        let mut e =
            compress::Encoder::new(crate::compression::parse("zstd").unwrap(), File::create(&zst).unwrap())
                .unwrap();
        e.write_all(&data).unwrap();
        e.finish().unwrap();
        let e = restore(&s.archive, "000000010000000000000005", &s.pg_wal.join("RECOVERYXLOG")).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_FATAL, "{e}");
        assert!(e.to_string().contains("segment size is 3 bytes"), "{e}");
        assert_eq!(only_entries(&s.pg_wal), Vec::<String>::new());
    }
}
