//! The writer thread of pgrecvlogical: the only code that touches output and spill files. It
//! appends the lines the receiver encoded, holds streamed transactions in their spools until
//! they commit, fsyncs, rotates files, and publishes the end of the last unit of output that
//! is durable, which is all the receiver may confirm to the server.
//!
//! The durability rules are pgreceivewal's (`crate::physical::writer`): one fsync after everything the
//! channel holds is written; an fsync failure is fatal and never retried; a new file's name is
//! made durable (directory fsync) before anything in it is reported; a rotated file is fsync'ed
//! before its rename, and the directory after.
//!
//! A full disk pauses the writer (`crate::diskspace`), as in pgreceivewal: below the floor
//! (`--min-free`) before an append, or on ENOSPC from one; a short write is cut off again
//! first, so no torn line stays, what is written is made durable and confirmed, and the same
//! append is retried once space is back.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use pgrw_ffi::sys::EventFd;

use crate::diskspace::{is_no_space, Floor, GaveUp, Retention};
use crate::durable::fsync_dir;
use crate::logging::Hinted;
use crate::lsn::Lsn;
use crate::metrics;
use crate::session::{Progress, WriterFailure};
use crate::text::os_error;

use super::files::{file_name, Partial, PARTIAL_SUFFIX};
use super::output::Format;
use super::pgoutput::Context;
use super::retention::{self, Rule};
use super::spool::Spools;

/// Replayed transactions are written in pieces of this size, so their size never shows in
/// memory.
const REPLAY_CHUNK: usize = 1 << 20;
/// How often an idle writer looks at the clock for time-based rotation.
const TICK: Duration = Duration::from_secs(1);
/// The retention rule runs at least this often (after every rotation too).
const RETAIN_EVERY: Duration = Duration::from_secs(10);

/// What the receiver asks of the writer.
#[derive(Debug)]
pub enum WriterMsg {
    /// Encoded lines; `end` when they complete a unit of output, after which decoding may
    /// resume at that position.
    Lines {
        data: Vec<u8>,
        end: Option<Lsn>,
    },
    /// Framed records of streamed transaction `xid` (see `spool::push_frame`).
    Spool {
        xid: u32,
        data: Vec<u8>,
        subxacts: Vec<(u32, usize)>,
    },
    /// Streamed transaction `xid` committed or was prepared: its spool is written between
    /// `head` (its begin line) and `tail` (its commit or prepare line, ending a unit at `end`),
    /// with `fields` (what only the commit knows) spliced into each record where its frame
    /// says.
    StreamEnd {
        xid: u32,
        head: Vec<u8>,
        fields: Vec<u8>,
        tail: Vec<u8>,
        end: Lsn,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
    /// Make everything durable now (the server asked for a reply).
    Flush,
}

#[derive(Debug)]
pub enum WriterError {
    Io {
        path: PathBuf,
        action: &'static str,
        err: io::Error,
    },
    /// fsync failed: never retried.
    Fsync {
        path: PathBuf,
        err: io::Error,
    },
    /// A spooled transaction could not be read back.
    Replay {
        xid: u32,
        message: String,
    },
    /// Standard output is a pipe whose reader went away (EPIPE: Rust ignores SIGPIPE).
    StdoutClosed,
    /// The session ended while writing was paused for disk space (never leaves the writer).
    GaveUp,
}

/// A closed standard output is fatal: reconnecting would only find it closed again.
impl WriterFailure for WriterError {
    fn is_fatal(&self) -> bool {
        !matches!(self, WriterError::Io { .. } | WriterError::GaveUp)
    }
}

impl fmt::Display for WriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriterError::Io { path, action, err } => {
                write!(f, "could not {action} \"{}\": {}", path.display(), os_error(err))
            }
            WriterError::Fsync { path, err } => {
                write!(f, "could not fsync file \"{}\": {}", path.display(), os_error(err))
            }
            WriterError::Replay { xid, message } => {
                write!(f, "could not write streamed transaction {xid} at its commit: {message}")
            }
            WriterError::StdoutClosed => write!(
                f,
                "could not write to standard output: the reader of the pipe closed it (Broken pipe); stopping"
            ),
            WriterError::GaveUp => write!(f, "stopped waiting for disk space"),
        }
    }
}

impl Hinted for WriterError {
    fn detail(&self) -> Option<String> {
        match self {
            WriterError::Fsync { .. } => Some(
                "The disk may have lost written output, so pgrecvlogical stops (a restart resumes from what is on disk)."
                    .into(),
            ),
            _ => None,
        }
    }
}

impl std::error::Error for WriterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriterError::Io { err, .. } | WriterError::Fsync { err, .. } => Some(err),
            WriterError::Replay { .. } | WriterError::StdoutClosed | WriterError::GaveUp => None,
        }
    }
}

/// Where the output goes.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Directory {
        dir: PathBuf,
        rotate_size: u64,
        rotate_interval: Option<Duration>,
        partial: Option<Partial>,
        /// `--retain-size`/`--retain-age` (see `retention`).
        retain: Rule,
    },
    Stdout,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub sink: SinkConfig,
    pub format: Format,
    /// How the receiver parses messages (protocol version, abort information).
    pub parse: Context,
    /// false with --no-sync.
    pub sync: bool,
    pub memory_limit: u64,
    pub spill_dir: PathBuf,
    /// Where decoding starts: names the first new file.
    pub start: Lsn,
    /// `--min-free` for the output directory (0: only ENOSPC pauses).
    pub min_free: u64,
    /// The slot, named in the disk-full warning: it keeps the WAL meanwhile.
    pub slot: String,
}

struct OpenFile {
    file: File,
    path: PathBuf,
    done: PathBuf,
    len: u64,
    /// Length up to the end of the last complete unit.
    unit_len: u64,
    opened: Instant,
    dirty: bool,
}

struct DirSink {
    dir: PathBuf,
    format: Format,
    rotate_size: u64,
    rotate_interval: Option<Duration>,
    cur: Option<OpenFile>,
    dir_dirty: bool,
    next_start: Lsn,
    retain: Rule,
    /// When retention last ran.
    retained: Instant,
}

enum Sink {
    Dir(DirSink),
    Stdout { out: BufWriter<io::Stdout>, since_unit: u64 },
}

/// Counters for the log and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub bytes: u64,
    pub units: u64,
    pub fsyncs: u64,
}

pub struct Writer {
    cfg: WriterConfig,
    sink: Sink,
    spools: Spools,
    progress: Arc<Progress>,
    wake: Arc<EventFd>,
    /// The last unit end written, not yet durable.
    pending: Option<Lsn>,
    stats: WriterStats,
    /// The output directory's floor (none on standard output).
    floor: Option<Floor>,
    /// The session ended while writing was paused: output still arriving is dropped, and
    /// the server sends it again, since it was never confirmed.
    gave_up: bool,
}

impl Writer {
    /// Fails when the partial file recovery found cannot be reopened and made durable: output
    /// must continue in that file, never in a second partial one the next start refuses.
    pub fn new(
        cfg: WriterConfig,
        progress: Arc<Progress>,
        wake: Arc<EventFd>,
    ) -> Result<Writer, WriterError> {
        let sink = match &cfg.sink {
            SinkConfig::Directory { dir, rotate_size, rotate_interval, partial, retain } => {
                let cur = match partial {
                    Some(p) => Some(reopen(dir, p, cfg.format, cfg.sync)?),
                    None => None,
                };
                Sink::Dir(DirSink {
                    dir: dir.clone(),
                    format: cfg.format,
                    rotate_size: *rotate_size,
                    rotate_interval: *rotate_interval,
                    cur,
                    dir_dirty: false,
                    next_start: cfg.start,
                    retain: *retain,
                    retained: Instant::now(),
                })
            }
            SinkConfig::Stdout => {
                Sink::Stdout { out: BufWriter::with_capacity(1 << 16, io::stdout()), since_unit: 0 }
            }
        };
        let spools = Spools::new(&cfg.spill_dir, cfg.memory_limit);
        let floor = match &cfg.sink {
            SinkConfig::Directory { dir, .. } => Some(Floor::new(
                dir.clone(),
                cfg.min_free,
                Retention::LogicalSlot(cfg.slot.clone()),
                progress.clone(),
            )),
            SinkConfig::Stdout => None,
        };
        Ok(Writer {
            cfg,
            sink,
            spools,
            progress,
            wake,
            pending: None,
            stats: WriterStats::default(),
            floor,
            gave_up: false,
        })
    }

    /// The thread body: handles messages until the receiver drops its sender, then makes the
    /// output durable and cuts off an incomplete transaction this session left.
    pub fn run(mut self, rx: crate::session::Inbox<WriterMsg>) -> Result<WriterStats, WriterError> {
        let result = (|| {
            loop {
                match rx.recv_timeout(TICK) {
                    Ok(msg) => {
                        self.take(msg)?;
                        while let Ok(msg) = rx.try_recv() {
                            self.take(msg)?;
                        }
                        // Only complete units are worth an fsync: nothing else is reported.
                        if self.pending.is_some() {
                            self.sync()?;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                self.rotate_if_due()?;
            }
            self.close()?;
            Ok(self.stats)
        })();
        // The session core marks the writer stopped and wakes the receiver when this returns.
        result
    }

    /// [`handle`](Self::handle), unless the writer gave up waiting for disk space: then only
    /// what is written is made durable, and the rest is dropped (never confirmed, so sent
    /// again; `close` cuts off the transaction left incomplete).
    fn take(&mut self, msg: WriterMsg) -> Result<(), WriterError> {
        if self.gave_up && !matches!(msg, WriterMsg::Flush) {
            return Ok(());
        }
        match self.handle(msg) {
            Err(WriterError::GaveUp) => {
                self.gave_up = true;
                self.progress.mark_gave_up();
                self.wake.notify();
                log::info!(
                    "stopped waiting for disk space: changes after {} were received but not written, and the server sends them again",
                    self.progress.flushed()
                );
                Ok(())
            }
            res => res,
        }
    }

    fn handle(&mut self, msg: WriterMsg) -> Result<(), WriterError> {
        match msg {
            WriterMsg::Lines { data, end } => {
                self.write(&data)?;
                if let Some(end) = end {
                    self.unit_end(end);
                }
                Ok(())
            }
            WriterMsg::Spool { xid, data, subxacts } => {
                // The floor only: a spill file is not retried after ENOSPC (see the notes of
                // issue 12), so the floor keeps spills from filling the output's disk.
                self.reserve(data.len() as u64)?;
                self.spools.append(xid, &data, &subxacts).map_err(|err| self.spill_error(xid, "write", err))
            }
            WriterMsg::StreamAbort { xid, subxid } => {
                self.spools.abort(xid, subxid).map_err(|err| self.spill_error(xid, "truncate", err))
            }
            WriterMsg::StreamEnd { xid, head, fields, tail, end } => {
                self.replay(xid, &head, &fields, &tail, end)
            }
            WriterMsg::Flush => self.sync(),
        }
    }

    fn spill_error(&self, xid: u32, action: &'static str, err: io::Error) -> WriterError {
        WriterError::Io { path: self.cfg.spill_dir.join(format!("{xid}.spill")), action, err }
    }

    /// Writes a streamed transaction out of its spool, between `head` and `tail`, with
    /// `fields` spliced into each record where the receiver left them out.
    fn replay(
        &mut self,
        xid: u32,
        head: &[u8],
        fields: &[u8],
        tail: &[u8],
        end: Lsn,
    ) -> Result<(), WriterError> {
        let mut reader = self.spools.take(xid).map_err(|err| self.spill_error(xid, "read", err))?;
        let mut out = Vec::with_capacity(REPLAY_CHUNK + (64 << 10));
        out.extend_from_slice(head);
        let mut buf = Vec::new();
        let mut records = 0u64;
        while let Some(split) = reader.next_into(&mut buf).map_err(|err| match err.kind() {
            io::ErrorKind::InvalidData => WriterError::Replay { xid, message: err.to_string() },
            _ => self.spill_error(xid, "read", err),
        })? {
            match split {
                Some(at) => {
                    out.extend_from_slice(&buf[..at]);
                    out.extend_from_slice(fields);
                    out.extend_from_slice(&buf[at..]);
                }
                None => out.extend_from_slice(&buf),
            }
            records += 1;
            if out.len() >= REPLAY_CHUNK {
                self.write(&out)?;
                out.clear();
            }
        }
        out.extend_from_slice(tail);
        self.write(&out)?;
        self.unit_end(end);
        log::debug!("wrote streamed transaction {xid} ({records} records)");
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), WriterError> {
        if data.is_empty() {
            return Ok(());
        }
        self.stats.bytes += data.len() as u64;
        metrics::get().written_bytes.add(data.len() as u64);
        match &mut self.sink {
            Sink::Stdout { out, since_unit } => {
                *since_unit += data.len() as u64;
                out.write_all(data).map_err(stdout_error)
            }
            Sink::Dir(_) => self.append(data),
        }
    }

    /// Below the floor: makes what is written durable (and confirmed), then pauses.
    fn reserve(&mut self, needed: u64) -> Result<(), WriterError> {
        if self.floor.as_mut().is_none_or(|f| f.enough(needed)) {
            return Ok(());
        }
        self.sync()?;
        let floor = self.floor.as_mut().expect("checked above");
        floor.reserve(needed).map_err(|GaveUp| WriterError::GaveUp)
    }

    /// Appends to the directory's open file, pausing for disk space as needed. An append that
    /// fails with ENOSPC is cut off again before the pause, so neither a retry nor a stop
    /// leaves a torn line; the retry writes the same bytes at the same place.
    fn append(&mut self, data: &[u8]) -> Result<(), WriterError> {
        let n = data.len() as u64;
        loop {
            self.reserve(n)?;
            let Sink::Dir(d) = &mut self.sink else { unreachable!("append is for the directory sink") };
            let (path, err) = match d.open_if_needed() {
                Err(WriterError::Io { path, err, .. }) if is_no_space(&err) => (path, err),
                Err(e) => return Err(e),
                Ok(f) => match f.file.write_all_at(data, f.len) {
                    Ok(()) => {
                        f.len += n;
                        f.dirty = true;
                        if let Some(floor) = &mut self.floor {
                            floor.resumed();
                        }
                        return Ok(());
                    }
                    Err(err) if is_no_space(&err) => {
                        f.file.set_len(f.len).map_err(|err| WriterError::Io {
                            path: f.path.clone(),
                            action: "truncate",
                            err,
                        })?;
                        (f.path.clone(), err)
                    }
                    Err(err) => return Err(WriterError::Io { path: f.path.clone(), action: "write", err }),
                },
            };
            self.sync()?;
            let floor = self.floor.as_mut().expect("the directory sink has a floor");
            floor.no_space(&path, &err, n).map_err(|GaveUp| WriterError::GaveUp)?;
        }
    }

    fn unit_end(&mut self, end: Lsn) {
        self.stats.units += 1;
        self.pending = Some(end);
        match &mut self.sink {
            Sink::Stdout { since_unit, .. } => *since_unit = 0,
            Sink::Dir(d) => {
                d.next_start = end;
                if let Some(f) = &mut d.cur {
                    f.unit_len = f.len;
                }
            }
        }
    }

    /// Makes what was written durable and publishes the end of the last complete unit.
    fn sync(&mut self) -> Result<(), WriterError> {
        match &mut self.sink {
            Sink::Stdout { out, .. } => out.flush().map_err(stdout_error)?,
            Sink::Dir(d) => {
                if let Some(f) = &mut d.cur {
                    if f.dirty {
                        if self.cfg.sync {
                            metrics::get()
                                .fsync
                                .time(|| f.file.sync_data())
                                .map_err(|err| WriterError::Fsync { path: f.path.clone(), err })?;
                            self.stats.fsyncs += 1;
                        }
                        f.dirty = false;
                    }
                }
                if d.dir_dirty {
                    if self.cfg.sync {
                        metrics::get()
                            .fsync
                            .time(|| fsync_dir(&d.dir))
                            .map_err(|err| WriterError::Fsync { path: d.dir.clone(), err })?;
                    }
                    d.dir_dirty = false;
                }
            }
        }
        if let Some(end) = self.pending.take() {
            self.progress.advance_flushed(end);
            self.wake.notify();
        }
        Ok(())
    }

    /// Applies the retention rule after a rotation, and at least every [`RETAIN_EVERY`] (for
    /// `--retain-age` and for consumers that moved on). Removing a file is not a durability
    /// step: a failure is logged and tried again later.
    fn retain_if_due(&mut self, rotated: bool) {
        let Sink::Dir(d) = &mut self.sink else { return };
        if !d.retain.is_set() || (!rotated && d.retained.elapsed() < RETAIN_EVERY) {
            return;
        }
        d.retained = Instant::now();
        match retention::enforce(&d.dir, d.retain) {
            Ok(gone) => {
                for name in gone {
                    log::info!("removed \"{}\" (retention)", d.dir.join(name).display());
                }
            }
            Err(e) => log::warn!("could not apply the retention rule in \"{}\": {e}", d.dir.display()),
        }
    }

    fn rotate_if_due(&mut self) -> Result<(), WriterError> {
        let rotated = self.rotate()?;
        self.retain_if_due(rotated);
        Ok(())
    }

    /// Rotates the current file if it is due; true when it did.
    fn rotate(&mut self) -> Result<bool, WriterError> {
        let Sink::Dir(d) = &self.sink else { return Ok(false) };
        let Some(f) = &d.cur else { return Ok(false) };
        let due = f.len >= d.rotate_size || d.rotate_interval.is_some_and(|iv| f.opened.elapsed() >= iv);
        // Only at a unit boundary, so every file holds whole transactions.
        if !due || f.len == 0 || f.len != f.unit_len {
            return Ok(false);
        }
        self.sync()?;
        let Sink::Dir(d) = &mut self.sink else { unreachable!() };
        let f = d.cur.take().expect("checked above");
        if self.cfg.sync {
            metrics::get()
                .fsync
                .time(|| f.file.sync_all())
                .map_err(|err| WriterError::Fsync { path: f.path.clone(), err })?;
        }
        fs::rename(&f.path, &f.done).map_err(|err| WriterError::Io {
            path: f.done.clone(),
            action: "rename",
            err,
        })?;
        if self.cfg.sync {
            metrics::get()
                .fsync
                .time(|| fsync_dir(&d.dir))
                .map_err(|err| WriterError::Fsync { path: d.dir.clone(), err })?;
        }
        log::debug!("finished \"{}\" ({} bytes)", f.done.display(), f.len);
        Ok(true)
    }

    /// The end of a session: anything after the last unit end belongs to a transaction the
    /// server sends again, so it is cut off (or, on standard output, marked).
    fn close(&mut self) -> Result<(), WriterError> {
        match &mut self.sink {
            Sink::Dir(d) => {
                if let Some(f) = &mut d.cur {
                    if f.len > f.unit_len {
                        f.file.set_len(f.unit_len).map_err(|err| WriterError::Io {
                            path: f.path.clone(),
                            action: "truncate",
                            err,
                        })?;
                        log::debug!(
                            "cut {} bytes of an incomplete transaction off \"{}\"",
                            f.len - f.unit_len,
                            f.path.display()
                        );
                        f.len = f.unit_len;
                        f.dirty = true;
                    }
                }
            }
            Sink::Stdout { out, since_unit } => {
                if *since_unit > 0 {
                    let marker: &[u8] = match self.cfg.format {
                        Format::Json => b"{\"op\":\"rollback_incomplete\"}\n",
                        Format::Text => b"ROLLBACK INCOMPLETE\n",
                    };
                    out.write_all(marker).map_err(stdout_error)?;
                    *since_unit = 0;
                }
            }
        }
        self.sync()?;
        log::debug!(
            "writer done: {} bytes, {} units, {} fsyncs, {} streamed transactions left open",
            self.stats.bytes,
            self.stats.units,
            self.stats.fsyncs,
            self.spools.open_transactions()
        );
        Ok(())
    }
}

/// Opens the partial file output continues in, and fsyncs it and its directory first, as
/// PostgreSQL's `walmethods.c` does on every open: what an earlier run wrote may still be only
/// in the page cache (that run may have died before its fsync, or its fsync failed), and the
/// file's name may not be durable yet, yet this run will confirm positions after it.
fn reopen(dir: &Path, p: &Partial, format: Format, sync: bool) -> Result<OpenFile, WriterError> {
    let file = OpenOptions::new().write(true).open(&p.path).map_err(|err| WriterError::Io {
        path: p.path.clone(),
        action: "reopen",
        err,
    })?;
    if sync {
        file.sync_all().map_err(|err| WriterError::Fsync { path: p.path.clone(), err })?;
        fsync_dir(dir).map_err(|err| WriterError::Fsync { path: dir.to_path_buf(), err })?;
    }
    Ok(OpenFile {
        file,
        path: p.path.clone(),
        done: p.path.with_file_name(file_name(p.start, format)),
        len: p.len,
        unit_len: p.len,
        opened: Instant::now(),
        dirty: false,
    })
}

impl DirSink {
    fn open_if_needed(&mut self) -> Result<&mut OpenFile, WriterError> {
        if self.cur.is_none() {
            self.cur = Some(self.open_new()?);
        }
        Ok(self.cur.as_mut().expect("opened above"))
    }

    fn open_new(&mut self) -> Result<OpenFile, WriterError> {
        let done = self.dir.join(file_name(self.next_start, self.format));
        let path = partial_path(&done);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|err| WriterError::Io { path: path.clone(), action: "create", err })?;
        // The name must be durable before anything written into the file is reported.
        self.dir_dirty = true;
        log::debug!("writing \"{}\"", path.display());
        Ok(OpenFile { file, path, done, len: 0, unit_len: 0, opened: Instant::now(), dirty: false })
    }
}

/// A write to standard output failed. A broken pipe ends the program, with one line and
/// status 1, and is never retried: the reader is gone for good (`pgrecvlogical -f - | head`).
/// Not status 0 as for a finished job: what was written into the pipe but never read was
/// already confirmed to the server, so the reader may have missed transactions the slot will
/// not send again, and a script or service manager must be able to see that. PostgreSQL's
/// pg_recvlogical dies of SIGPIPE there, which a shell reports as a failure too.
fn stdout_error(err: io::Error) -> WriterError {
    if err.kind() == io::ErrorKind::BrokenPipe {
        WriterError::StdoutClosed
    } else {
        WriterError::Io { path: "-".into(), action: "write to", err }
    }
}

fn partial_path(done: &Path) -> PathBuf {
    let mut s = done.as_os_str().to_owned();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::files::{OutputDir, Recovered};
    use crate::logical::spool::push_frame;

    fn tmp(label: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pgrl-writer-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn config(dir: &Path, rotate_size: u64, partial: Option<Partial>, start: Lsn) -> WriterConfig {
        WriterConfig {
            sink: SinkConfig::Directory {
                dir: dir.to_path_buf(),
                rotate_size,
                rotate_interval: None,
                partial,
                retain: Rule::default(),
            },
            format: Format::Json,
            parse: Context::new(4),
            sync: true,
            memory_limit: 64,
            spill_dir: dir.join(".spill"),
            start,
            min_free: 0,
            slot: "s".into(),
        }
    }

    fn writer(dir: &Path, rotate_size: u64, partial: Option<Partial>, start: Lsn) -> (Writer, Arc<Progress>) {
        let progress = Arc::new(Progress::new(Lsn::INVALID));
        let cfg = config(dir, rotate_size, partial, start);
        (Writer::new(cfg, progress.clone(), Arc::new(EventFd::new().unwrap())).unwrap(), progress)
    }

    fn unit(end: u64) -> WriterMsg {
        WriterMsg::Lines {
            data: format!("{{\"op\":\"begin\"}}\n{{\"op\":\"commit\",\"end_lsn\":\"{}\"}}\n", Lsn(end))
                .into_bytes(),
            end: Some(Lsn(end)),
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publishes_only_complete_units_and_rotates_at_their_ends() {
        let dir = tmp("units");
        let (mut w, progress) = writer(&dir, 60, None, Lsn(0x10));
        w.handle(WriterMsg::Lines { data: b"{\"op\":\"begin\"}\n".to_vec(), end: None }).unwrap();
        w.sync().unwrap();
        assert_eq!(progress.flushed(), Lsn::INVALID, "half a transaction is not durable output");
        w.handle(unit(0x100)).unwrap();
        w.sync().unwrap();
        assert_eq!(progress.flushed(), Lsn(0x100));
        w.rotate_if_due().unwrap();
        // 15 + 15 + 34 bytes > 60: rotated after the unit, named after where it started.
        assert_eq!(files(&dir), vec!["0000000000000010.jsonl"]);
        w.handle(unit(0x200)).unwrap();
        w.handle(WriterMsg::Lines { data: b"{\"op\":\"begin\"}\n".to_vec(), end: None }).unwrap();
        w.sync().unwrap();
        w.rotate_if_due().unwrap();
        assert_eq!(files(&dir), vec!["0000000000000010.jsonl", "0000000000000100.jsonl.partial"]);
        w.close().unwrap();
        // The incomplete transaction is cut off at the end of the session.
        let partial = fs::read_to_string(dir.join("0000000000000100.jsonl.partial")).unwrap();
        assert!(partial.ends_with("\"end_lsn\":\"0/200\"}\n"), "{partial}");
        assert_eq!(progress.flushed(), Lsn(0x200));

        // The next run continues the partial file after recovery.
        let out = OutputDir::open(&dir).unwrap();
        let rec: Recovered = out.recover(Format::Json, true, None).unwrap();
        assert_eq!(rec.resume, Some(Lsn(0x200)));
        let (mut w, _) = writer(&dir, 1 << 20, rec.partial, Lsn(0x200));
        w.handle(unit(0x300)).unwrap();
        w.close().unwrap();
        let partial = fs::read_to_string(dir.join("0000000000000100.jsonl.partial")).unwrap();
        assert_eq!(partial.matches("\"op\":\"commit\"").count(), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Below the floor the writer makes what it has durable before it waits, and a stop while
    /// it waits drops the rest: the half-written transaction is cut off, later units are not
    /// written after the hole, and only the last durable unit end is reported.
    #[test]
    fn below_the_floor_what_is_written_is_confirmed_and_a_stop_drops_the_rest() {
        let dir = tmp("floor");
        let (mut w, progress) = writer(&dir, 1 << 20, None, Lsn(0x10));
        w.take(unit(0x100)).unwrap();
        w.take(WriterMsg::Lines { data: b"{\"op\":\"begin\"}\n".to_vec(), end: None }).unwrap();
        w.floor =
            Some(Floor::new(dir.clone(), u64::MAX / 4, Retention::LogicalSlot("s".into()), progress.clone()));
        progress.give_up();
        w.take(WriterMsg::Lines { data: b"{\"op\":\"insert\"}\n".to_vec(), end: None }).unwrap();
        assert!(w.gave_up);
        assert_eq!(progress.flushed(), Lsn(0x100), "made durable before the pause");
        w.take(unit(0x300)).unwrap();
        w.close().unwrap();
        assert_eq!(progress.flushed(), Lsn(0x100));
        let partial = fs::read_to_string(dir.join("0000000000000010.jsonl.partial")).unwrap();
        assert!(partial.ends_with("\"end_lsn\":\"0/100\"}\n"), "{partial}");
        assert_eq!(partial.matches('\n').count(), 2, "{partial}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotates_by_time_at_unit_ends_only() {
        let dir = tmp("time");
        let (mut w, _) = writer(&dir, 1 << 30, None, Lsn(0x10));
        if let Sink::Dir(d) = &mut w.sink {
            d.rotate_interval = Some(Duration::ZERO);
        }
        w.handle(WriterMsg::Lines { data: b"{\"op\":\"begin\"}\n".to_vec(), end: None }).unwrap();
        w.rotate_if_due().unwrap();
        assert_eq!(files(&dir), vec!["0000000000000010.jsonl.partial"], "not inside a transaction");
        w.handle(unit(0x100)).unwrap();
        w.rotate_if_due().unwrap();
        assert_eq!(files(&dir), vec!["0000000000000010.jsonl"]);
        // Nothing written since: no empty file is made.
        w.rotate_if_due().unwrap();
        w.close().unwrap();
        assert_eq!(files(&dir), vec!["0000000000000010.jsonl"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A streamed record as the receiver spools it: an insert line whose commit fields go
    /// after its xid.
    fn record(xid: u32, v: &str) -> Vec<u8> {
        let head = format!("{{\"op\":\"insert\",\"xid\":{xid}");
        let mut c = Vec::new();
        push_frame(&mut c, Some(head.len()), format!("{head},\"seq\":1,\"v\":\"{v}\"}}\n").as_bytes());
        c
    }

    fn stream_end(xid: u32, lsn: &str, end: u64) -> WriterMsg {
        WriterMsg::StreamEnd {
            xid,
            head: format!("{{\"op\":\"begin\",\"xid\":{xid}}}\n").into_bytes(),
            fields: format!(",\"commit_lsn\":\"{lsn}\"").into_bytes(),
            tail: format!("{{\"op\":\"commit\",\"end_lsn\":\"{}\"}}\n", Lsn(end)).into_bytes(),
            end: Lsn(end),
        }
    }

    #[test]
    fn streamed_transactions_in_commit_order() {
        let dir = tmp("stream");
        let (mut w, progress) = writer(&dir, 1 << 20, None, Lsn(0x10));
        for (xid, v) in [(5, "five"), (6, "six"), (7, "seven")] {
            w.handle(WriterMsg::Spool { xid, data: record(xid, v), subxacts: vec![(xid, 0)] }).unwrap();
        }
        w.handle(WriterMsg::StreamAbort { xid: 7, subxid: 7 }).unwrap();
        w.handle(stream_end(6, "0/500", 0x528)).unwrap();
        w.handle(stream_end(5, "0/600", 0x628)).unwrap();
        w.close().unwrap();
        assert_eq!(progress.flushed(), Lsn(0x628));
        let out = fs::read_to_string(dir.join("0000000000000010.jsonl.partial")).unwrap();
        let l: Vec<&str> = out.lines().collect();
        assert_eq!(
            l,
            vec![
                "{\"op\":\"begin\",\"xid\":6}",
                "{\"op\":\"insert\",\"xid\":6,\"commit_lsn\":\"0/500\",\"seq\":1,\"v\":\"six\"}",
                "{\"op\":\"commit\",\"end_lsn\":\"0/528\"}",
                "{\"op\":\"begin\",\"xid\":5}",
                "{\"op\":\"insert\",\"xid\":5,\"commit_lsn\":\"0/600\",\"seq\":1,\"v\":\"five\"}",
                "{\"op\":\"commit\",\"end_lsn\":\"0/628\"}",
            ],
            "{out}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// Spools past the memory limit (64 bytes here) are written out the same from disk.
    #[test]
    fn spilled_streamed_transactions_round_trip() {
        let dir = tmp("spill");
        let (mut w, _) = writer(&dir, 1 << 20, None, Lsn(0x10));
        let mut expected = String::new();
        for i in 0..50 {
            let v = format!("value {i}");
            w.handle(WriterMsg::Spool { xid: 9, data: record(9, &v), subxacts: vec![] }).unwrap();
            expected.push_str(&format!(
                "{{\"op\":\"insert\",\"xid\":9,\"commit_lsn\":\"0/900\",\"seq\":1,\"v\":\"{v}\"}}\n"
            ));
        }
        assert!(w.spools.spilled(9));
        w.handle(stream_end(9, "0/900", 0x928)).unwrap();
        w.close().unwrap();
        let out = fs::read_to_string(dir.join("0000000000000010.jsonl.partial")).unwrap();
        assert_eq!(
            out,
            format!(
                "{{\"op\":\"begin\",\"xid\":9}}\n{expected}{{\"op\":\"commit\",\"end_lsn\":\"0/928\"}}\n"
            )
        );
        assert_eq!(fs::read_dir(dir.join(".spill")).unwrap().count(), 0, "spill file removed");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_errors_are_fatal() {
        let dir = tmp("replay");
        let (mut w, _) = writer(&dir, 1 << 20, None, Lsn(0x10));
        let mut bad = Vec::new();
        push_frame(&mut bad, Some(99), b"short");
        w.handle(WriterMsg::Spool { xid: 1, data: bad, subxacts: vec![] }).unwrap();
        let e = w.handle(stream_end(1, "0/2", 3)).unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("streamed transaction 1"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// The partial file recovery found must be where output continues: if it cannot be
    /// reopened, that is an error, not a second partial file the next start would refuse.
    #[test]
    fn a_failed_reopen_is_an_error() {
        let dir = tmp("reopen");
        let path = dir.join("0000000000000010.jsonl.partial");
        let partial = Partial { path: path.clone(), len: 0, start: Lsn(0x10) };
        let progress = Arc::new(Progress::new(Lsn::INVALID));
        let cfg = |partial| config(&dir, 1 << 20, partial, Lsn(0x100));
        let wake = || Arc::new(EventFd::new().unwrap());
        let e = Writer::new(cfg(Some(partial.clone())), progress.clone(), wake()).err().expect("an error");
        assert!(e.to_string().contains("could not reopen") && e.to_string().contains(".partial"), "{e}");
        assert!(files(&dir).is_empty(), "no second partial file: {:?}", files(&dir));
        // When it is there, it is reopened (and fsync'ed with its directory) and continued.
        fs::write(&path, "x\n").unwrap();
        let mut w = Writer::new(cfg(Some(Partial { len: 2, ..partial })), progress, wake()).unwrap();
        w.handle(unit(0x200)).unwrap();
        w.close().unwrap();
        assert_eq!(files(&dir), vec!["0000000000000010.jsonl.partial"]);
        assert!(fs::read_to_string(&path).unwrap().starts_with("x\n{\"op\":\"begin\"}"));
        let _ = fs::remove_dir_all(&dir);
    }
}
