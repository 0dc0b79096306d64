//! The writer thread: the only code that touches WAL files. It creates each segment as
//! `<name>.partial`, pre-padded with zeros to the segment size, writes received WAL at its
//! offset, fsyncs, renames a completed segment to its final name, fsyncs the directory, and
//! publishes the position up to which WAL is durable so the receiver can report it.
//!
//! With compression (`-Z`), a segment is one compressed stream written from its start into
//! `<name>.<ext>.partial` (no padding: its size is not the segment's), with a flush point
//! before every fsync so that what is reported flushed decodes from the disk. A compressed
//! segment is always written from its start; while an older partial of the same segment
//! (left by an earlier run, in any form) still holds more of its WAL than the new stream,
//! the new stream stays under a temporary name, so the old file keeps covering everything
//! reported flushed; the new one takes the partial's name at the first flush after it has
//! caught up (checked byte by byte against the old file's decompressed content).
//!
//! The steps follow PostgreSQL's `walmethods.c` (open with padding, write, sync, close with or
//! without rename) and `durable_rename`. An fsync failure is fatal and never retried: after a
//! failed fsync the kernel may have dropped the dirty pages, so a retry could "succeed" over
//! lost data (PostgreSQL's fsyncgate lesson). A restart rewrites the segment from its start.
//!
//! A full disk is not a failure but a pause (`crate::diskspace`): a new segment is taken on
//! only while the free-space floor stays free after its padding, and ENOSPC while creating,
//! padding or renaming it, or writing into it, makes what is written durable and retries the
//! same step once space is back. Only our own temporary file is ever removed for that.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;
use pgrw_ffi::sys::EventFd;

use crate::compression::{Compression, Method};
use crate::config::Durability;
use crate::diskspace::{is_no_space, Floor, GaveUp, Retention};
use crate::durable::{fsync_dir, write_durably, TEMP_SUFFIX};
use crate::logging::Hinted;
use crate::lsn::Lsn;
use crate::metrics;
use crate::physical::compress::{self, Encoder};
use crate::physical::ship::ShipQueue;
use crate::physical::walcheck::{PageVerifier, WalCheckError};
use crate::physical::walfile::{SegmentId, Tli};
use crate::session::{Inbox, Progress, WriterFailure};
use crate::text::os_error;

/// Zero-padding is written in chunks this large: a 16 MiB segment costs 16 writes.
const PAD_CHUNK: usize = 1 << 20;

/// What the receiver asks of the writer.
#[derive(Debug)]
pub enum WriterMsg {
    /// WAL received on timeline `tli`, starting at `start`. `flush`: then make everything
    /// written durable, as a `Flush` right after would (--synchronous asks so with the last
    /// batch of a turn: one message, one wake-up of the writer per commit).
    Wal { tli: Tli, start: Lsn, data: Vec<u8>, flush: bool },
    /// A timeline history file, written durably before any WAL of that timeline.
    History { name: String, content: Vec<u8> },
    /// Make everything written so far durable and publish it (the server asked for a reply).
    Flush,
    /// The stream ended (end of timeline, end position, shutdown): fsync the open segment and
    /// close it, keeping `.partial` unless it is complete.
    Close,
}

#[derive(Debug)]
pub enum WriterError {
    Io {
        path: PathBuf,
        action: &'static str,
        err: io::Error,
    },
    /// A rename failed: both names, as PostgreSQL's `durable_rename` reports it.
    Rename {
        from: PathBuf,
        to: PathBuf,
        err: io::Error,
    },
    /// fsync failed: never retried (see the module comment).
    Fsync {
        path: PathBuf,
        err: io::Error,
    },
    NoSpace {
        dir: PathBuf,
        path: PathBuf,
        needed: u64,
        available: Option<u64>,
        err: io::Error,
    },
    Check(WalCheckError),
    Gap {
        tli: Tli,
        at: Lsn,
        expected: Option<Lsn>,
    },
    AlreadyComplete(PathBuf),
    /// The session ended while writing was paused for disk space (never leaves the writer).
    GaveUp,
}

impl WriterFailure for WriterError {
    fn is_fatal(&self) -> bool {
        !matches!(
            self,
            WriterError::NoSpace { .. }
                | WriterError::Io { .. }
                | WriterError::Rename { .. }
                | WriterError::GaveUp
        )
    }
}

impl fmt::Display for WriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriterError::Io { path, action, err } => {
                write!(f, "could not {action} file \"{}\": {}", path.display(), os_error(err))
            }
            WriterError::Rename { from, to, err } => {
                write!(
                    f,
                    "could not rename file \"{}\" to \"{}\": {}",
                    from.display(),
                    to.display(),
                    os_error(err)
                )
            }
            WriterError::Fsync { path, err } => {
                write!(f, "could not fsync file \"{}\": {}", path.display(), os_error(err))
            }
            WriterError::NoSpace { path, err, .. } => {
                write!(f, "could not write file \"{}\": {}", path.display(), os_error(err))
            }
            WriterError::Check(e) => write!(f, "{e}; refusing to archive it"),
            WriterError::Gap { tli, at, expected: Some(exp) } => {
                write!(f, "received WAL at {at} on timeline {tli}, but the archive's segment continues at {exp}; refusing to leave a gap")
            }
            WriterError::Gap { tli, at, expected: None } => {
                write!(f, "received WAL at {at} on timeline {tli} in the middle of a segment that is not open; refusing to leave a gap")
            }
            WriterError::AlreadyComplete(p) => write!(
                f,
                "server sent WAL for segment \"{}\", which is already complete in the archive",
                p.display()
            ),
            WriterError::GaveUp => write!(f, "stopped waiting for disk space"),
        }
    }
}

impl Hinted for WriterError {
    fn detail(&self) -> Option<String> {
        match self {
            WriterError::Fsync { .. } => Some(
                "The disk may have lost written WAL, so pgreceivewal stops (a restart streams the segment again)."
                    .into(),
            ),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            WriterError::NoSpace { dir, needed, available, .. } => {
                let available = available.map(|a| format!(" ({a} bytes available)")).unwrap_or_default();
                Some(format!("Free at least {needed} bytes in \"{}\"{available}.", dir.display()))
            }
            WriterError::AlreadyComplete(_) => {
                Some("Move the archive's newer files aside or archive into a new directory.".into())
            }
            _ => None,
        }
    }
}

impl std::error::Error for WriterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriterError::Io { err, .. }
            | WriterError::Rename { err, .. }
            | WriterError::Fsync { err, .. }
            | WriterError::NoSpace { err, .. } => Some(err),
            WriterError::Check(e) => Some(e),
            _ => None,
        }
    }
}

/// What the writer needs to know about the archive and the server.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dir: PathBuf,
    pub seg_size: u64,
    pub durability: Durability,
    pub file_mode: u32,
    pub system_id: u64,
    pub block_size: u32,
    /// `--segment-command`: completed files go to the shipper once durable.
    pub ship: Option<ShipQueue>,
    /// `--min-free`: bytes to leave free on the archive's disk (0: only ENOSPC pauses).
    pub min_free: u64,
    /// What the server keeps for us while writing is paused.
    pub retention: Retention,
    pub compression: Compression,
}

/// An older partial of the segment being written compressed, read alongside the new stream.
struct OldPartial {
    path: PathBuf,
    /// Its decompressed content from where the new stream is; `None` once it stopped matching
    /// the WAL written (its end, a torn tail, zero padding): from there it covers nothing more.
    content: Option<Box<dyn Read + Send>>,
}

/// How an open segment is written.
enum Output {
    /// In place, into the pre-padded `.partial`.
    Plain(File),
    Compressed(Box<CompressedOutput>),
}

struct CompressedOutput {
    enc: Encoder,
    /// Whether the stream has its `.partial` name yet (else it is under a temporary name).
    named: bool,
    /// The `.partial` name it takes.
    partial: PathBuf,
    olds: Vec<OldPartial>,
}

impl CompressedOutput {
    /// Whether some older partial still holds all the WAL written to the new stream.
    fn covered(&self) -> bool {
        self.olds.iter().any(|o| o.content.is_some())
    }

    /// Reads the next `data.len()` bytes of each older partial and forgets those that differ.
    fn compare(&mut self, data: &[u8]) {
        let mut buf = vec![0u8; data.len()];
        for old in &mut self.olds {
            if let Some(r) = &mut old.content {
                if r.read_exact(&mut buf).is_err() || buf != data {
                    old.content = None;
                }
            }
        }
    }
}

struct OpenSegment {
    id: SegmentId,
    out: Output,
    /// Where the bytes go now: the `.partial`, or the compressed stream's temporary name.
    path: PathBuf,
    /// Partials of this segment in other forms than the one written (an earlier run with
    /// another -Z), superseded when this one completes.
    others: Vec<PathBuf>,
    /// Offset where the next byte must go: WAL arrives in order, and a gap is refused.
    next: u64,
    /// Written since the last fsync.
    dirty: bool,
}

pub struct Writer {
    cfg: WriterConfig,
    current: Option<OpenSegment>,
    verifier: PageVerifier,
    progress: Arc<Progress>,
    wake: Arc<EventFd>,
    recycle: Option<Sender<Vec<u8>>>,
    floor: Floor,
    /// The session ended while writing was paused: WAL still arriving is dropped (a gap must
    /// never be written around), and the next session streams it again.
    gave_up: bool,
}

impl Writer {
    pub fn new(cfg: WriterConfig, progress: Arc<Progress>, wake: Arc<EventFd>) -> Writer {
        let verifier = PageVerifier::new(cfg.system_id, cfg.seg_size, cfg.block_size);
        let floor = Floor::new(cfg.dir.clone(), cfg.min_free, cfg.retention.clone(), progress.clone());
        Writer { cfg, current: None, verifier, progress, wake, recycle: None, floor, gave_up: false }
    }

    /// Hands every written WAL buffer back to the receiver for reuse: a fresh multi-megabyte
    /// allocation per batch costs a page fault per 4 KiB, more CPU than the copy itself.
    pub fn recycle_into(mut self, tx: Sender<Vec<u8>>) -> Writer {
        self.recycle = Some(tx);
        self
    }

    /// The thread body: handles messages until the receiver drops its sender, then closes the
    /// open segment. With --synchronous the receiver asks for each fsync (`Flush`), after the
    /// batches the channel holds, so one fsync covers them all.
    /// The session core marks the writer stopped and wakes the receiver when this returns.
    pub fn run(mut self, rx: Inbox<WriterMsg>) -> Result<(), WriterError> {
        while let Ok(msg) = rx.recv() {
            // Requests to fsync are gathered over what the channel holds: one fsync after the
            // last batch covers every request, however many hand-overs came meanwhile. A
            // writer paused for disk space made what it wrote durable before waiting, and
            // `sync` reports only what is written, so a request gathered around a pause (or
            // after giving up, when WAL is dropped) never reports WAL that is not on disk.
            let mut sync = false;
            let mut next = Some(msg);
            while let Some(msg) = next {
                match msg {
                    WriterMsg::Flush => sync = true,
                    WriterMsg::Wal { tli, start, data, flush } => {
                        sync |= flush;
                        self.take(WriterMsg::Wal { tli, start, data, flush: false })?;
                    }
                    msg => self.take(msg)?,
                }
                next = rx.try_recv().ok();
            }
            if sync {
                self.sync()?;
            }
        }
        self.close()
    }

    /// [`handle`](Self::handle), unless the writer gave up waiting for disk space: then WAL
    /// is dropped, and only the steps that make what is written durable are taken.
    fn take(&mut self, msg: WriterMsg) -> Result<(), WriterError> {
        if self.gave_up && matches!(msg, WriterMsg::Wal { .. } | WriterMsg::History { .. }) {
            return Ok(());
        }
        match self.handle(msg) {
            Err(WriterError::GaveUp) => {
                self.gave_up = true;
                self.progress.mark_gave_up();
                self.wake.notify();
                log::info!(
                    "stopped waiting for disk space: WAL after {} was received but not written, and is streamed again by the next run",
                    self.progress.flushed()
                );
                Ok(())
            }
            res => res,
        }
    }

    fn handle(&mut self, msg: WriterMsg) -> Result<(), WriterError> {
        match msg {
            WriterMsg::Wal { tli, start, mut data, flush } => {
                self.write_wal(tli, start, &data)?;
                if let Some(tx) = &self.recycle {
                    data.clear();
                    // A full return channel just means the receiver has enough spare buffers.
                    let _ = tx.try_send(data);
                }
                if flush {
                    self.sync()?;
                }
                Ok(())
            }
            WriterMsg::History { name, content } => self.write_history(&name, &content),
            WriterMsg::Flush => self.sync(),
            WriterMsg::Close => self.close(),
        }
    }

    fn fsync(&self, file: &File, path: &Path) -> Result<(), WriterError> {
        if self.cfg.durability == Durability::NoSync {
            return Ok(());
        }
        metrics::get()
            .fsync
            .time(|| file.sync_data())
            .map_err(|err| WriterError::Fsync { path: path.to_path_buf(), err })
    }

    fn fsync_dir(&self) -> Result<(), WriterError> {
        if self.cfg.durability == Durability::NoSync {
            return Ok(());
        }
        metrics::get()
            .fsync
            .time(|| fsync_dir(&self.cfg.dir))
            .map_err(|err| WriterError::Fsync { path: self.cfg.dir.clone(), err })
    }

    fn publish(&self, flushed: Lsn) {
        self.progress.advance_flushed(flushed);
        self.wake.notify();
    }

    /// Makes what was written durable and publishes the new flush position.
    fn sync(&mut self) -> Result<(), WriterError> {
        let Some(mut seg) = self.current.take() else { return Ok(()) };
        let res = self.sync_segment(&mut seg);
        self.current = Some(seg);
        res
    }

    fn sync_segment(&self, seg: &mut OpenSegment) -> Result<(), WriterError> {
        if !seg.dirty {
            return Ok(());
        }
        match &mut seg.out {
            Output::Plain(file) => self.fsync(file, &seg.path)?,
            Output::Compressed(c) => {
                c.enc.flush_point().map_err(|err| self.io_error(&seg.path, "write", err, 0))?;
                self.fsync(c.enc.file(), &seg.path)?;
                if !c.named && !c.covered() {
                    // The new stream now holds WAL no older partial has: it takes the name,
                    // replacing the older partial of its own form, and the others go.
                    self.rename(&seg.path, &c.partial)?;
                    self.fsync_dir()?;
                    seg.path = c.partial.clone();
                    c.named = true;
                    self.remove_superseded(c.olds.iter().map(|o| &o.path).filter(|p| **p != c.partial))?;
                }
            }
        }
        seg.dirty = false;
        self.publish(Lsn(seg.id.segno * self.cfg.seg_size + seg.next));
        Ok(())
    }

    /// Removes partials of a segment that a newer file of it holds all WAL of.
    fn remove_superseded<'a>(&self, paths: impl Iterator<Item = &'a PathBuf>) -> Result<(), WriterError> {
        let mut removed = false;
        for p in paths {
            match fs::remove_file(p) {
                Ok(()) => {
                    log::info!("removed \"{}\": a newer file of its segment holds all its WAL", p.display());
                    removed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(WriterError::Io { path: p.clone(), action: "remove", err }),
            }
        }
        if removed {
            self.fsync_dir()?;
        }
        Ok(())
    }

    /// Closes the open segment without renaming it (it is not complete).
    fn close(&mut self) -> Result<(), WriterError> {
        self.sync()?;
        if let Some(seg) = self.current.take() {
            if let Output::Compressed(c) = seg.out {
                if c.named {
                    // Ends the stream as pg_receivewal's close does: the partial becomes a
                    // whole gzip member / LZ4 frame / zstd frame that any tool reads.
                    let file = c.enc.finish().map_err(|err| self.io_error(&seg.path, "write", err, 0))?;
                    self.fsync(&file, &seg.path)?;
                } else {
                    // An older partial holds all of it (everything reported flushed included).
                    drop(c.enc);
                    fs::remove_file(&seg.path).map_err(|err| WriterError::Io {
                        path: seg.path.clone(),
                        action: "remove",
                        err,
                    })?;
                }
            }
            log::debug!("closed {} at offset {} as \"{}\"", seg.id, seg.next, seg.path.display());
        }
        Ok(())
    }

    fn write_history(&mut self, name: &str, content: &[u8]) -> Result<(), WriterError> {
        let path = self.cfg.dir.join(name);
        if path.exists() {
            // History files never change once written; pg_receivewal keeps the existing one too.
            return Ok(());
        }
        // The floor only: its write and fsyncs are one step (write_durably), and an ENOSPC
        // from an fsync must not be retried, so ENOSPC here ends the session as before.
        self.reserve(content.len() as u64)?;
        let res = if self.cfg.durability == Durability::NoSync {
            fs::write(&path, content)
        } else {
            write_durably(&path, content, self.cfg.file_mode)
        };
        res.map_err(|err| self.io_error(&path, "write", err, content.len() as u64))?;
        self.floor.resumed();
        log::info!("wrote timeline history file \"{name}\"");
        if let Some(q) = &self.cfg.ship {
            q.push(name);
        }
        Ok(())
    }

    fn io_error(&self, path: &Path, action: &'static str, err: io::Error, needed: u64) -> WriterError {
        if is_no_space(&err) {
            WriterError::NoSpace {
                dir: self.cfg.dir.clone(),
                path: path.to_path_buf(),
                needed,
                available: pgrw_ffi::sys::free_space(&self.cfg.dir).ok(),
                err,
            }
        } else {
            WriterError::Io { path: path.to_path_buf(), action, err }
        }
    }

    /// Renames `from` to `to`; a full disk is reported as such, anything else names both.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), WriterError> {
        fs::rename(from, to).map_err(|err| {
            if is_no_space(&err) {
                self.io_error(to, "rename", err, 0)
            } else {
                WriterError::Rename { from: from.to_path_buf(), to: to.to_path_buf(), err }
            }
        })
    }

    fn write_wal(&mut self, tli: Tli, start: Lsn, mut data: &[u8]) -> Result<(), WriterError> {
        self.verifier.check(start, data).map_err(WriterError::Check)?;
        let seg_size = self.cfg.seg_size;
        let mut pos = start;
        while !data.is_empty() {
            let id = SegmentId { tli, segno: pos.segment(seg_size) };
            let offset = pos.segment_offset(seg_size);
            if self.current.as_ref().map(|s| s.id) != Some(id) {
                // A segment left incomplete (a timeline switch inside it) stays `.partial`.
                self.close()?;
                if offset != 0 {
                    return Err(WriterError::Gap { tli, at: pos, expected: None });
                }
                self.current = Some(self.open_segment(id)?);
            }
            let seg = self.current.as_mut().expect("segment is open");
            if offset != seg.next {
                return Err(WriterError::Gap {
                    tli,
                    at: pos,
                    expected: Some(Lsn(id.segno * seg_size + seg.next)),
                });
            }
            let n = data.len().min((seg_size - offset) as usize);
            self.write_at(&data[..n], offset)?;
            let seg = self.current.as_mut().expect("segment is open");
            seg.next += n as u64;
            seg.dirty = true;
            metrics::get().written_bytes.add(n as u64);
            data = &data[n..];
            pos = Lsn(pos.0 + n as u64);
            // Written, not yet durable: the `write` of status updates (remote_write).
            self.progress.advance_written(pos);
            if seg.next == seg_size {
                self.complete_segment()?;
            }
        }
        Ok(())
    }

    /// Before taking `needed` more bytes of disk: below the floor, what is written is made
    /// durable and reported first (an fsync asked for and still gathered in `run` would
    /// otherwise wait out the whole pause, and a synchronous commit with it), then the
    /// writer pauses until the floor stays free.
    fn reserve(&mut self, needed: u64) -> Result<(), WriterError> {
        if self.floor.enough(needed) {
            return Ok(());
        }
        self.sync()?;
        self.floor.reserve(needed).map_err(|GaveUp| WriterError::GaveUp)
    }

    /// Writes into the open, padded segment. Its blocks exist, so ENOSPC is rare here, but
    /// a copy-on-write filesystem (or a quota) can still refuse: then what is written so far
    /// is made durable and reported, and the same write is retried at the same offset once
    /// space is back (bytes a short write left are overwritten; nothing past `next` is ever
    /// reported).
    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), WriterError> {
        loop {
            let seg = self.current.as_mut().expect("segment is open");
            let err = match &mut seg.out {
                Output::Plain(file) => match file.write_all_at(data, offset) {
                    Ok(()) => break,
                    Err(err) => err,
                },
                Output::Compressed(c) => {
                    if !c.named {
                        c.compare(data);
                    }
                    // A compressed stream cannot take a write again after part of it failed:
                    // a full disk here ends the session, whose restart writes the segment
                    // anew (the floor, checked before each segment, pauses instead).
                    match c.enc.write_all(data) {
                        Ok(()) => break,
                        Err(err) => {
                            let path = seg.path.clone();
                            return Err(WriterError::Io { path, action: "write", err });
                        }
                    }
                }
            };
            let path = seg.path.clone();
            if !is_no_space(&err) {
                return Err(self.io_error(&path, "write", err, data.len() as u64));
            }
            self.sync()?;
            self.floor.no_space(&path, &err, data.len() as u64).map_err(|GaveUp| WriterError::GaveUp)?;
        }
        self.floor.resumed();
        Ok(())
    }

    /// A full segment: fsync it, give it its final name, fsync the directory, and only then
    /// report its end as flushed.
    fn complete_segment(&mut self) -> Result<(), WriterError> {
        let seg = self.current.take().expect("segment is open");
        let (file, mut superseded) = match seg.out {
            Output::Plain(file) => (file, vec![]),
            Output::Compressed(c) => {
                let file = c.enc.finish().map_err(|err| self.io_error(&seg.path, "write", err, 0))?;
                let olds: Vec<PathBuf> =
                    c.olds.into_iter().map(|o| o.path).filter(|p| *p != seg.path).collect();
                (file, olds)
            }
        };
        superseded.extend(seg.others.iter().cloned());
        self.fsync(&file, &seg.path)?;
        let done = self.cfg.dir.join(seg.id.name_with(self.cfg.seg_size, self.cfg.compression.method, false));
        // A directory that must grow for the new name can be refused on a full disk: the
        // segment is durable under its `.partial` name, so the rename is simply tried again.
        loop {
            match self.rename(&seg.path, &done) {
                Ok(()) => break,
                Err(WriterError::NoSpace { path, err, .. }) => {
                    self.floor.no_space(&path, &err, 0).map_err(|GaveUp| WriterError::GaveUp)?
                }
                Err(e) => return Err(e),
            }
        }
        self.floor.resumed();
        self.fsync_dir()?;
        self.remove_superseded(superseded.iter().filter(|p| **p != done))?;
        pgrw_ffi::sys::drop_from_page_cache(&file);
        let name = done.file_name().unwrap_or_default().to_string_lossy().into_owned();
        log::debug!("finished segment \"{name}\"");
        if let Some(q) = &self.cfg.ship {
            // Complete and durable (the rename and the directory fsync are done): ship it.
            q.push(&name);
        }
        let m = metrics::get();
        m.last_segment_lsn.set(seg.id.segno * self.cfg.seg_size);
        m.last_segment_timeline.set(seg.id.tli.into());
        m.last_segment_time.set_now();
        m.segments.inc();
        self.publish(Lsn((seg.id.segno + 1) * self.cfg.seg_size));
        Ok(())
    }

    /// Opens `<segment>.partial` for writing: an existing one of full size is reused (it and
    /// the directory fsync'ed, in case an earlier run used --no-sync or was killed before its
    /// directory fsync), an empty one is padded, a missing one
    /// is created padded under a temporary name and renamed, so a crash never leaves a
    /// half-padded `.partial` behind.
    fn open_segment(&mut self, id: SegmentId) -> Result<OpenSegment, WriterError> {
        let seg_size = self.cfg.seg_size;
        let method = self.cfg.compression.method;
        // Complete in any form: pg_receivewal's `.gz` of a segment is that segment.
        for m in Method::ALL {
            let done = self.cfg.dir.join(id.name_with(seg_size, m, false));
            if done.exists() {
                return Err(WriterError::AlreadyComplete(done));
            }
        }
        let others: Vec<PathBuf> = Method::ALL
            .into_iter()
            .filter(|&m| m != method)
            .map(|m| self.cfg.dir.join(id.name_with(seg_size, m, true)))
            .filter(|p| p.exists())
            .collect();
        if method != Method::None {
            // The other forms are among the older partials it compares with.
            return self.open_compressed(id);
        }
        let path = self.cfg.dir.join(id.partial_name(seg_size));
        let open = |p: &Path| OpenOptions::new().write(true).open(p);
        match fs::metadata(&path) {
            Ok(m) if m.len() == seg_size => {
                let file =
                    open(&path).map_err(|err| WriterError::Io { path: path.clone(), action: "open", err })?;
                // The file and its name, as walmethods.c does on every open: a kill between an
                // earlier run's rename and its directory fsync leaves a name that a power loss
                // can still take back, and flushes reported inside the file would go with it.
                self.fsync(&file, &path)?;
                self.fsync_dir()?;
                log::debug!("reusing \"{}\"", path.display());
                return Ok(OpenSegment { id, out: Output::Plain(file), path, others, next: 0, dirty: false });
            }
            Ok(m) if m.len() != 0 => {
                // The archive scan refuses these before streaming; never overwrite one.
                return Err(WriterError::Io {
                    path: path.clone(),
                    action: "reuse",
                    err: io::Error::other(format!("it has {} bytes, should be 0 or {seg_size}", m.len())),
                });
            }
            _ => {}
        }
        let tmp = self.cfg.dir.join(format!("{}{TEMP_SUFFIX}", id.partial_name(seg_size)));
        loop {
            // The floor counts the padding: after it, at least --min-free stays free.
            self.reserve(seg_size)?;
            match self.create_padded(&tmp, &path) {
                Ok(file) => {
                    self.floor.resumed();
                    return Ok(OpenSegment {
                        id,
                        out: Output::Plain(file),
                        path,
                        others,
                        next: 0,
                        dirty: false,
                    });
                }
                Err(WriterError::NoSpace { path: p, err, needed, .. }) => {
                    // The temporary file is ours and holds nothing: do not leave it filling
                    // the disk (the free space the warning reports is measured after this).
                    let _ = fs::remove_file(&tmp);
                    self.floor.no_space(&p, &err, needed).map_err(|GaveUp| WriterError::GaveUp)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates `tmp` padded to the segment size, makes it durable and renames it to `path`,
    /// so a crash never leaves a half-padded `.partial` behind.
    fn create_padded(&self, tmp: &Path, path: &Path) -> Result<File, WriterError> {
        let seg_size = self.cfg.seg_size;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.cfg.file_mode)
            .open(tmp)
            .map_err(|err| self.io_error(tmp, "create", err, seg_size))?;
        self.pad(&file, tmp)?;
        self.fsync(&file, tmp)?;
        self.rename(tmp, path)?;
        self.fsync_dir()?;
        log::trace!("created \"{}\"", path.display());
        Ok(file)
    }

    /// Starts a compressed stream for segment `id` under a temporary name, with every older
    /// partial of the segment (any form) opened for comparison: see the module comment.
    fn open_compressed(&mut self, id: SegmentId) -> Result<OpenSegment, WriterError> {
        let seg_size = self.cfg.seg_size;
        // The floor, counting a whole segment: how small it compresses is not known ahead.
        self.reserve(seg_size)?;
        let partial = self.cfg.dir.join(id.name_with(seg_size, self.cfg.compression.method, true));
        let mut olds = Vec::new();
        for m in Method::ALL {
            let p = self.cfg.dir.join(id.name_with(seg_size, m, true));
            match File::open(&p) {
                Ok(f) => {
                    let content = compress::reader(m, f).map_err(|err| WriterError::Io {
                        path: p.clone(),
                        action: "read",
                        err,
                    })?;
                    olds.push(OldPartial { path: p, content: Some(content) });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(WriterError::Io { path: p, action: "open", err }),
            }
        }
        let tmp = self
            .cfg
            .dir
            .join(format!("{}{TEMP_SUFFIX}", id.name_with(seg_size, self.cfg.compression.method, true)));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.cfg.file_mode)
            .open(&tmp)
            .map_err(|err| self.io_error(&tmp, "create", err, 0))?;
        let enc =
            Encoder::new(self.cfg.compression, file).map_err(|err| self.io_error(&tmp, "create", err, 0))?;
        log::trace!("created \"{}\"", tmp.display());
        let out = Output::Compressed(Box::new(CompressedOutput { enc, named: false, partial, olds }));
        Ok(OpenSegment { id, out, path: tmp, others: Vec::new(), next: 0, dirty: false })
    }

    /// Writes zeros over the whole segment so later writes need no block allocation (and a
    /// full disk shows up here, before any WAL is written into the file).
    fn pad(&self, file: &File, path: &Path) -> Result<(), WriterError> {
        static ZEROS: [u8; PAD_CHUNK] = [0; PAD_CHUNK];
        let mut w = io::BufWriter::with_capacity(0, file);
        let mut left = self.cfg.seg_size as usize;
        while left > 0 {
            let n = left.min(PAD_CHUNK);
            w.write_all(&ZEROS[..n]).map_err(|err| self.io_error(path, "pad", err, self.cfg.seg_size))?;
            left -= n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const BLCK: u32 = 8192;
    const SYSID: u64 = 99;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn setup(tag: &str, durability: Durability) -> (Dir, Writer, Arc<Progress>) {
        setup_with(tag, durability, Compression::NONE)
    }

    fn setup_with(
        tag: &str,
        durability: Durability,
        compression: Compression,
    ) -> (Dir, Writer, Arc<Progress>) {
        let p = std::env::temp_dir().join(format!("pgrw-writer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        let cfg = WriterConfig {
            dir: p.clone(),
            seg_size: SEG,
            durability,
            file_mode: 0o600,
            system_id: SYSID,
            block_size: BLCK,
            ship: None,
            min_free: 0,
            retention: Retention::None,
            compression,
        };
        let progress = Arc::new(Progress::new(Lsn(0)));
        let w = Writer::new(cfg, progress.clone(), Arc::new(EventFd::new().unwrap()));
        (Dir(p), w, progress)
    }

    /// Fake WAL with valid page headers for `[start, start+len)`.
    fn wal(start: u64, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let b = u64::from(BLCK);
        let mut page = start.div_ceil(b) * b;
        while page < start + len as u64 {
            let at = (page - start) as usize;
            let h = &mut v[at..];
            h[8..16].copy_from_slice(&page.to_le_bytes());
            if page.is_multiple_of(SEG) {
                h[2..4].copy_from_slice(&2u16.to_le_bytes());
                h[24..32].copy_from_slice(&SYSID.to_le_bytes());
                h[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                h[36..40].copy_from_slice(&BLCK.to_le_bytes());
            }
            page += b;
        }
        v
    }

    #[test]
    fn writes_partial_then_renames_complete_segments() {
        let (d, mut w, progress) = setup("complete", Durability::Default);
        let data = wal(SEG, (SEG + SEG / 2) as usize);
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(SEG), data: data[..1000].to_vec(), flush: false })
            .unwrap();
        let partial = d.0.join("000000010000000000000001.partial");
        assert_eq!(fs::metadata(&partial).unwrap().len(), SEG, "pre-padded to the segment size");
        assert_eq!(progress.flushed(), Lsn(0), "nothing reported before an fsync");
        w.handle(WriterMsg::Wal {
            tli: 1,
            start: Lsn(SEG + 1000),
            data: data[1000..].to_vec(),
            flush: false,
        })
        .unwrap();
        assert_eq!(fs::read(d.0.join("000000010000000000000001")).unwrap(), &data[..SEG as usize]);
        assert!(!partial.exists());
        assert_eq!(progress.flushed(), Lsn(2 * SEG));
        w.handle(WriterMsg::Close).unwrap();
        assert_eq!(progress.flushed(), Lsn(SEG + data.len() as u64));
        let p2 = fs::read(d.0.join("000000010000000000000002.partial")).unwrap();
        assert_eq!(p2.len() as u64, SEG);
        assert_eq!(&p2[..SEG as usize / 2], &data[SEG as usize..]);
        assert!(p2[SEG as usize / 2..].iter().all(|&b| b == 0), "tail stays zero");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(d.0.join("000000010000000000000001")).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn synchronous_flush_reports_exact_position() {
        let (_d, mut w, progress) = setup("flush", Durability::Synchronous);
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 5000), flush: false }).unwrap();
        w.handle(WriterMsg::Flush).unwrap();
        assert_eq!(progress.flushed(), Lsn(5000));
    }

    #[test]
    fn refuses_gaps_and_mid_segment_starts() {
        let (_d, mut w, _) = setup("gap", Durability::Default);
        let e = w
            .handle(WriterMsg::Wal { tli: 1, start: Lsn(100), data: wal(100, 10), flush: false })
            .unwrap_err();
        assert!(matches!(e, WriterError::Gap { expected: None, .. }), "{e}");
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 100), flush: false }).unwrap();
        let e = w
            .handle(WriterMsg::Wal { tli: 1, start: Lsn(200), data: wal(200, 10), flush: false })
            .unwrap_err();
        assert!(e.to_string().contains("refusing to leave a gap"), "{e}");
    }

    #[test]
    fn refuses_data_that_is_not_wal() {
        let (d, mut w, _) = setup("garbage", Durability::Default);
        let e = w
            .handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: vec![0xAB; 9000], flush: false })
            .unwrap_err();
        assert!(matches!(e, WriterError::Check(_)), "{e}");
        assert!(e.is_fatal());
        assert_eq!(fs::read_dir(&d.0).unwrap().count(), 0, "nothing archived");
    }

    #[test]
    fn reuses_a_full_partial_and_rewrites_it_from_the_start() {
        let (d, mut w, _) = setup("reuse", Durability::Default);
        let data = wal(0, 20_000);
        fs::write(d.0.join("000000010000000000000000.partial"), vec![0u8; SEG as usize]).unwrap();
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data.clone(), flush: false }).unwrap();
        w.handle(WriterMsg::Close).unwrap();
        let got = fs::read(d.0.join("000000010000000000000000.partial")).unwrap();
        assert_eq!(&got[..data.len()], &data[..]);
    }

    #[test]
    fn a_failed_rename_names_both_files() {
        let (d, mut w, _) = setup("rename", Durability::Default);
        let data = wal(0, SEG as usize);
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data[..100].to_vec(), flush: false }).unwrap();
        // Something takes the final name while the segment is being written: a non-empty
        // directory, which rename(2) cannot replace.
        let done = d.0.join("000000010000000000000000");
        fs::create_dir(&done).unwrap();
        fs::write(done.join("x"), b"x").unwrap();
        let e = w
            .handle(WriterMsg::Wal { tli: 1, start: Lsn(100), data: data[100..].to_vec(), flush: false })
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, WriterError::Rename { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "could not rename file \"{}\" to \"{}\": ",
                d.0.join("000000010000000000000000.partial").display(),
                done.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn never_overwrites_a_complete_segment() {
        let (d, mut w, _) = setup("nooverwrite", Durability::Default);
        fs::write(d.0.join("000000010000000000000000"), b"keep").unwrap();
        let e =
            w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 100), flush: false }).unwrap_err();
        assert!(matches!(e, WriterError::AlreadyComplete(_)), "{e}");
        assert_eq!(fs::read(d.0.join("000000010000000000000000")).unwrap(), b"keep");
    }

    #[test]
    fn timeline_switch_leaves_old_partial_and_starts_new_segment_at_its_start() {
        let (d, mut w, _) = setup("tli", Durability::Default);
        let data = wal(0, 30_000);
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data[..20_000].to_vec(), flush: false })
            .unwrap();
        w.handle(WriterMsg::Close).unwrap();
        w.handle(WriterMsg::History { name: "00000002.history".into(), content: b"1\t0/4E20\tx\n".to_vec() })
            .unwrap();
        w.handle(WriterMsg::Wal { tli: 2, start: Lsn(0), data: data.clone(), flush: false }).unwrap();
        w.handle(WriterMsg::Close).unwrap();
        assert!(d.0.join("000000010000000000000000.partial").exists());
        assert!(d.0.join("000000020000000000000000.partial").exists());
        assert_eq!(fs::read(d.0.join("00000002.history")).unwrap(), b"1\t0/4E20\tx\n");
    }

    /// --synchronous hands a commit over as one message: its WAL is made durable and
    /// published while the channel is still open, with no separate `Flush`.
    #[test]
    fn wal_that_asks_for_flush_is_made_durable_at_once() {
        let (_d, w, progress) = setup("walflush", Durability::Synchronous);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let t = std::thread::spawn(move || w.run(Inbox::new(rx)));
        tx.send(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 4096), flush: false }).unwrap();
        tx.send(WriterMsg::Wal { tli: 1, start: Lsn(4096), data: wal(4096, 4096), flush: true }).unwrap();
        t.thread().unpark();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while progress.flushed() < Lsn(8192) {
            assert!(std::time::Instant::now() < deadline, "flush position never reached 8192");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(tx);
        t.thread().unpark();
        t.join().unwrap().unwrap();
    }

    /// Below the floor a new segment is not taken on; a stop while waiting drops the WAL (the
    /// next run streams it again) and leaves what is durable as it was: no new file, no
    /// position moved, and later WAL is dropped too, never written after a hole.
    #[test]
    fn below_the_floor_no_segment_is_started_and_a_stop_drops_the_wal() {
        let (d, mut w, progress) = setup("floor", Durability::Default);
        let data = wal(0, 3 * SEG as usize);
        w.take(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data[..SEG as usize].to_vec(), flush: false })
            .unwrap();
        assert!(d.0.join("000000010000000000000000").exists());
        // More than any disk has free: the next segment waits, until the session gives up.
        w.floor = Floor::new(d.0.clone(), u64::MAX / 4, Retention::None, progress.clone());
        progress.give_up();
        let rest = |from: u64, to: u64| WriterMsg::Wal {
            tli: 1,
            start: Lsn(from),
            data: data[from as usize..to as usize].to_vec(),
            flush: false,
        };
        w.take(rest(SEG, SEG + 100)).unwrap();
        assert!(w.gave_up);
        w.take(rest(SEG + 100, 2 * SEG)).unwrap();
        w.take(WriterMsg::Close).unwrap();
        assert_eq!(progress.flushed(), Lsn(SEG), "nothing past the first segment is reported");
        let names: Vec<String> = fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["000000010000000000000000"], "no new segment, no temporary file");
    }

    /// run() gathers fsync requests over the channel: one gathered before a pause is
    /// honoured before the writer waits (what is written becomes durable and is reported),
    /// never for more than is written, and a stop while paused ends run() cleanly.
    #[test]
    fn a_paused_run_honours_gathered_flushes_and_stops_cleanly() {
        let (d, mut w, progress) = setup("pausedrun", Durability::Default);
        // Written, not yet durable; then more than any disk has free: the history file below
        // waits for space.
        w.take(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 4096), flush: false }).unwrap();
        w.floor = Floor::new(d.0.clone(), u64::MAX / 4, Retention::None, progress.clone());
        // All in the channel before run() starts: one drain gathers the first Flush, and
        // reaches the pause before its fsync at the end of the drain.
        let (tx, rx) = crossbeam_channel::bounded(8);
        tx.send(WriterMsg::Flush).unwrap();
        tx.send(WriterMsg::History { name: "00000002.history".into(), content: b"1\t0/1000\tx\n".to_vec() })
            .unwrap();
        tx.send(WriterMsg::Flush).unwrap();
        let t = std::thread::spawn(move || w.run(Inbox::new(rx)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while progress.flushed() != Lsn(4096) {
            assert!(
                std::time::Instant::now() < deadline,
                "the flush asked for before the pause is never done"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!t.is_finished(), "the writer waits for space");
        progress.give_up();
        t.thread().unpark();
        drop(tx);
        // A writer parked in its inbox sees the closed channel when woken (WriterHandle does this).
        t.thread().unpark();
        t.join().unwrap().unwrap();
        assert_eq!(progress.flushed(), Lsn(4096), "nothing past what is written is reported");
        assert!(progress.gave_up());
        assert!(!d.0.join("00000002.history").exists());
        assert!(d.0.join("000000010000000000000000.partial").exists());
    }

    #[test]
    fn run_drains_channel_and_closes_on_disconnect() {
        let (d, w, progress) = setup("run", Durability::Synchronous);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let t = std::thread::spawn(move || w.run(Inbox::new(rx)));
        tx.send(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 4096), flush: false }).unwrap();
        t.thread().unpark();
        drop(tx);
        t.thread().unpark();
        t.join().unwrap().unwrap();
        assert_eq!(progress.flushed(), Lsn(4096));
        assert!(d.0.join("000000010000000000000000.partial").exists());
    }

    fn decoded(method: Method, path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        compress::decode(method, File::open(path).unwrap(), u64::MAX - 1, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    fn spec(m: Method) -> Compression {
        crate::compression::parse(m.name()).unwrap()
    }

    #[test]
    fn compressed_segments_complete_and_flushed_partials_decode() {
        for m in [Method::Gzip, Method::Lz4, Method::Zstd] {
            let (d, mut w, progress) = setup_with(&format!("z-{}", m.name()), Durability::Default, spec(m));
            let data = wal(SEG, (SEG + SEG / 2) as usize);
            w.handle(WriterMsg::Wal { tli: 1, start: Lsn(SEG), data: data[..5000].to_vec(), flush: false })
                .unwrap();
            let partial = d.0.join(format!("000000010000000000000001{}.partial", m.extension()));
            assert!(!partial.exists(), "{m:?}: no name before the first flush");
            w.handle(WriterMsg::Flush).unwrap();
            assert_eq!(progress.flushed(), Lsn(SEG + 5000));
            // What was reported flushed decodes from the file as it is, stream unfinished.
            assert_eq!(decoded(m, &partial), &data[..5000], "{m:?}");
            w.handle(WriterMsg::Wal {
                tli: 1,
                start: Lsn(SEG + 5000),
                data: data[5000..].to_vec(),
                flush: false,
            })
            .unwrap();
            let done = d.0.join(format!("000000010000000000000001{}", m.extension()));
            assert!(decoded(m, &done) == data[..SEG as usize], "{m:?}");
            assert!(!partial.exists());
            assert_eq!(progress.flushed(), Lsn(2 * SEG));
            w.handle(WriterMsg::Close).unwrap();
            let p2 = d.0.join(format!("000000010000000000000002{}.partial", m.extension()));
            assert!(decoded(m, &p2) == data[SEG as usize..], "{m:?}: a closed partial holds all");
            assert!(fs::metadata(&p2).unwrap().len() < SEG / 4, "{m:?}: not padded");
        }
    }

    /// A restart rewrites a compressed segment from its start: the older partial keeps its
    /// name (and everything reported flushed stays on disk) until the new stream holds more.
    #[test]
    fn older_partial_stays_until_the_new_stream_passes_it() {
        let m = Method::Gzip;
        let (d, mut w, progress) = setup_with("z-resume", Durability::Default, spec(m));
        let data = wal(0, 100_000);
        w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data[..60_000].to_vec(), flush: false })
            .unwrap();
        w.handle(WriterMsg::Close).unwrap();
        // A plain padded partial of the same segment from a run without -Z, holding less.
        let plain = d.0.join("000000010000000000000000.partial");
        let mut padded = data[..30_000].to_vec();
        padded.resize(SEG as usize, 0);
        fs::write(&plain, &padded).unwrap();
        let (_d2, mut w2, progress2) = {
            let cfg = w.cfg.clone();
            let p = Arc::new(Progress::new(Lsn(0)));
            (0, Writer::new(cfg, p.clone(), Arc::new(EventFd::new().unwrap())), p)
        };
        drop(progress);
        let gz = d.0.join("000000010000000000000000.gz.partial");
        w2.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data[..40_000].to_vec(), flush: false })
            .unwrap();
        w2.handle(WriterMsg::Flush).unwrap();
        assert_eq!(progress2.flushed(), Lsn(40_000));
        assert_eq!(decoded(m, &gz), &data[..60_000], "the older, longer partial is untouched");
        assert!(plain.exists());
        w2.handle(WriterMsg::Wal {
            tli: 1,
            start: Lsn(40_000),
            data: data[40_000..70_000].to_vec(),
            flush: false,
        })
        .unwrap();
        w2.handle(WriterMsg::Flush).unwrap();
        assert_eq!(decoded(m, &gz), &data[..70_000], "renamed over the older partial");
        assert!(!plain.exists(), "the plain partial is superseded");
        assert!(fs::read_dir(&d.0).unwrap().count() == 1, "no temporary file left");
        // A close before catching up leaves the older partial as it was.
        let (_d3, mut w3) = (0, Writer::new(w2.cfg.clone(), progress2, Arc::new(EventFd::new().unwrap())));
        w3.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: data[..10_000].to_vec(), flush: false })
            .unwrap();
        w3.handle(WriterMsg::Close).unwrap();
        assert_eq!(decoded(m, &gz), &data[..70_000]);
        assert!(fs::read_dir(&d.0).unwrap().count() == 1, "no temporary file left");
    }

    #[test]
    fn a_complete_compressed_segment_is_never_overwritten() {
        let (d, mut w, _) = setup("znooverwrite", Durability::Default);
        fs::write(d.0.join("000000010000000000000000.lz4"), b"keep").unwrap();
        let e =
            w.handle(WriterMsg::Wal { tli: 1, start: Lsn(0), data: wal(0, 100), flush: false }).unwrap_err();
        assert!(matches!(e, WriterError::AlreadyComplete(_)), "{e}");
    }
}
