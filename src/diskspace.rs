//! Disk back-pressure, shared by both writers: the free-space floor (`--min-free`) checked
//! before the writer takes on more disk, and the pause when the disk is below it or a write
//! fails with ENOSPC. A paused writer keeps what it has (made durable and reported), waits on
//! a timer, and retries on its own once space is back; the receiver meanwhile keeps the
//! connection alive and reports only what is on disk, so the server keeps the WAL a slot needs
//! and nothing is lost. Only a stop (or a session that ended anyway) makes the writer give up
//! waiting: what it had not written is streamed again by the next run.
//!
//! Only failures that freeing space cures pause: ENOSPC and EDQUOT from creating or writing a
//! file. An fsync failure, whatever its errno, stays fatal (PostgreSQL's rule: fsync errors
//! are never retried), and callers never route one here.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lag::format_bytes;
use crate::logging::Message;
use crate::session::Progress;
use crate::text::os_error;

/// The default floor: room for the rest of the host (logs, the database's own files if they
/// share the disk) and for our own small writes (history files, metadata, a directory that
/// grows), on top of the segment a new file needs. Four 16 MiB segments: a margin a full disk
/// is easy to notice in, small next to any disk worth archiving onto.
pub const DEFAULT_MIN_FREE: u64 = 64 << 20;

/// How often a paused writer looks at the free space again.
const RETRY: Duration = Duration::from_secs(1);

/// Free space is measured again after at most this much output (pgrecvlogical's appends):
/// a statvfs per write would cost more than the write, and other programs use the disk too.
const CHECK_EVERY: u64 = 1 << 20;

/// ENOSPC or EDQUOT (Linux numbers): the disk or the user's quota is full, which freeing
/// space cures, unlike other I/O errors.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122))
}

/// What the server keeps for us while writing is paused, for the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// A physical slot: its restart_lsn follows the flush position we report.
    PhysicalSlot(String),
    /// A logical slot: its restart_lsn is at or before the confirmed position we report.
    LogicalSlot(String),
    /// No slot: the server may recycle WAL we have not stored.
    None,
}

/// The stop signal came (or the session ended) while the writer waited for disk space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp;

/// Why writing paused.
#[derive(Debug)]
pub enum Cause<'a> {
    /// Free space is below the floor (or below what the next file needs on top of it).
    Floor { needed: u64 },
    /// A write failed: the disk or the quota is full.
    NoSpace { path: &'a Path, err: &'a io::Error, needed: u64 },
}

/// The floor and the state of one writer's pause.
#[derive(Debug)]
pub struct Floor {
    dir: PathBuf,
    min_free: u64,
    retention: Retention,
    progress: Arc<Progress>,
    /// Since when writing is paused (an episode: one warning, one line when it ends).
    paused: Option<Instant>,
    /// Bytes that may still be written before free space is measured again.
    allowance: u64,
}

impl Floor {
    pub fn new(dir: PathBuf, min_free: u64, retention: Retention, progress: Arc<Progress>) -> Floor {
        Floor { dir, min_free, retention, progress, paused: None, allowance: 0 }
    }

    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    fn free(&self) -> Option<u64> {
        pgrw_ffi::sys::free_space(&self.dir).ok()
    }

    /// Whether `needed` more bytes of disk leave at least the floor free, without waiting
    /// (true at once when the floor is 0). A writer that gets false makes what it wrote
    /// durable, then calls [`reserve`](Self::reserve), which pauses.
    pub fn enough(&mut self, needed: u64) -> bool {
        if self.paused.is_some() {
            return false;
        }
        if self.min_free == 0 {
            return true;
        }
        if needed <= self.allowance {
            self.allowance -= needed;
            return true;
        }
        // A failed statvfs tells nothing about space: write, and let ENOSPC decide.
        let Some(free) = self.free() else { return true };
        let want = needed.saturating_add(self.min_free);
        if free >= want {
            self.allowance = (free - want).min(CHECK_EVERY);
            return true;
        }
        false
    }

    /// Before taking `needed` more bytes of disk: returns at once when, after them, at least
    /// the floor stays free (or the floor is 0); else pauses until it does.
    pub fn reserve(&mut self, needed: u64) -> Result<(), GaveUp> {
        if self.enough(needed) {
            return Ok(());
        }
        // A failed statvfs tells nothing about space: write, and let ENOSPC decide.
        while let Some(free) = self.free() {
            let want = needed.saturating_add(self.min_free);
            if free >= want {
                self.allowance = (free - want).min(CHECK_EVERY);
                break;
            }
            self.pause(free, &Cause::Floor { needed })?;
        }
        // The pause ends with the write that goes through: the caller's `resumed`.
        Ok(())
    }

    /// A write of `needed` bytes failed with ENOSPC or EDQUOT and the caller undid what it
    /// left: waits until that much (and the floor) is free again, then the caller retries.
    pub fn no_space(&mut self, path: &Path, err: &io::Error, needed: u64) -> Result<(), GaveUp> {
        let cause = Cause::NoSpace { path, err, needed };
        loop {
            let free = self.free().unwrap_or(0);
            self.pause(free, &cause)?;
            // At least one wait: a disk that reports space but refuses writes (reserved
            // blocks, a quota) is then retried once a second, not in a busy loop.
            if self.free().is_some_and(|f| f >= needed.saturating_add(self.min_free)) {
                self.allowance = 0;
                return Ok(());
            }
        }
    }

    /// A write went through: ends a pause, with a line saying so.
    pub fn resumed(&mut self) {
        if let Some(since) = self.paused.take() {
            let free = self.free().map_or("unknown".to_owned(), format_bytes);
            log::info!(
                "resuming writes to \"{}\" after {} s: {free} free",
                self.dir.display(),
                since.elapsed().as_secs()
            );
        }
    }

    /// One wait of a pause; the first of an episode makes what is written durable first (the
    /// caller's `sync`, done before this) and logs the warning.
    fn pause(&mut self, free: u64, cause: &Cause<'_>) -> Result<(), GaveUp> {
        if self.progress.giving_up() {
            return Err(GaveUp);
        }
        if self.paused.is_none() {
            self.paused = Some(Instant::now());
            crate::report!(log::Level::Warn, self.warning(free, cause));
        }
        std::thread::park_timeout(RETRY);
        if self.progress.giving_up() {
            return Err(GaveUp);
        }
        Ok(())
    }

    /// The warning of an episode: the numbers as the primary message, the fix-it as the
    /// hint, and what keeps running meanwhile (and whether the server keeps the WAL) as the
    /// detail.
    pub fn warning(&self, free: u64, cause: &Cause<'_>) -> Message {
        let dir = self.dir.display();
        let (text, fix) = match cause {
            Cause::Floor { needed } => (
                format!(
                    "free space in \"{dir}\" is below the floor: {} free, --min-free is {}, and {} more are to be written",
                    format_bytes(free),
                    format_bytes(self.min_free),
                    format_bytes(*needed)
                ),
                "Free space or lower --min-free.".to_owned(),
            ),
            Cause::NoSpace { path, err, needed } => (
                format!("could not write file \"{}\": {}", path.display(), os_error(err)),
                format!(
                    "Free at least {} bytes in \"{dir}\" ({free} bytes available).",
                    needed.saturating_add(self.min_free)
                ),
            ),
        };
        let flushed = self.progress.flushed();
        let server_end = self.progress.server_end();
        let retained = if server_end > flushed {
            format!("at least {} from {flushed} to {server_end}", format_bytes(server_end.0 - flushed.0))
        } else {
            format!("from {flushed} on")
        };
        let (kept, fix) = match &self.retention {
            Retention::PhysicalSlot(s) | Retention::LogicalSlot(s) => (
                format!(
                    "The server keeps the WAL for replication slot \"{s}\" meanwhile ({retained}), so nothing is lost."
                ),
                fix,
            ),
            Retention::None => (
                format!(
                    "Without a replication slot the server may recycle WAL not yet archived ({retained}) meanwhile, and the archive then has a gap."
                ),
                format!("{fix} Use -S."),
            ),
        };
        Message::new(format!("{text}; writing is paused")).detail(format!(
            "Writing resumes on its own once space is free. The connection stays open and reports only what is in \"{dir}\" (durable up to {flushed}). {kept}"
        )).hint(fix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn floor(min_free: u64, retention: Retention) -> Floor {
        let p = Arc::new(Progress::new(Lsn(0x300_0000)));
        p.saw_server_end(Lsn(0x580_0000));
        Floor::new(PathBuf::from("/arch"), min_free, retention, p)
    }

    #[test]
    fn warning_says_the_numbers_and_that_the_slot_keeps_the_wal() {
        let f = floor(64 << 20, Retention::PhysicalSlot("arch".into()));
        let w = f.warning(12 << 20, &Cause::Floor { needed: 16 << 20 });
        assert_eq!(
            w.text,
            "free space in \"/arch\" is below the floor: 12.0 MB free, --min-free is 64.0 MB, and 16.0 MB more are to be written; writing is paused"
        );
        let detail = w.detail.as_deref().unwrap();
        assert!(detail.contains("reports only what is in \"/arch\" (durable up to 0/3000000)"), "{detail}");
        assert!(
            detail.ends_with("The server keeps the WAL for replication slot \"arch\" meanwhile (at least 40.0 MB from 0/3000000 to 0/5800000), so nothing is lost."),
            "{detail}"
        );
        assert_eq!(w.hint.as_deref(), Some("Free space or lower --min-free."));
    }

    #[test]
    fn warning_without_a_slot_says_wal_may_be_lost() {
        let f = floor(0, Retention::None);
        let err = io::Error::from_raw_os_error(28);
        let w = f.warning(4096, &Cause::NoSpace { path: Path::new("/arch/x"), err: &err, needed: 1 << 20 });
        assert_eq!(w.text, "could not write file \"/arch/x\": No space left on device; writing is paused");
        assert!(w.detail.as_deref().unwrap().contains("may recycle WAL not yet archived"), "{w:?}");
        assert_eq!(
            w.hint.as_deref(),
            Some("Free at least 1048576 bytes in \"/arch\" (4096 bytes available). Use -S.")
        );
    }

    #[test]
    fn floor_zero_never_measures() {
        // A directory that does not exist: a statvfs would fail, and is not even tried.
        let mut f = floor(0, Retention::None);
        assert_eq!(f.reserve(u64::MAX), Ok(()));
    }

    #[test]
    fn floor_checks_free_space_and_gives_up_on_stop() {
        let dir = std::env::temp_dir();
        let p = Arc::new(Progress::new(Lsn(0)));
        let mut f = Floor::new(dir.clone(), 1, Retention::None, p.clone());
        assert_eq!(f.reserve(4096), Ok(()), "a temporary directory has a page free");
        // More than any disk has: the writer pauses, and a stop ends the wait.
        p.give_up();
        assert_eq!(f.reserve(u64::MAX / 2), Err(GaveUp));
        assert!(f.paused.is_none(), "giving up before the first wait is no episode");
    }

    #[test]
    fn only_enospc_and_edquot_pause() {
        assert!(is_no_space(&io::Error::from_raw_os_error(28)));
        assert!(is_no_space(&io::Error::from_raw_os_error(122)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(5)), "EIO is not cured by freeing space");
    }
}
