//! `--segment-command`: ships each completed segment and history file off the host with a
//! command of the user's (`aws s3 cp %p s3://bucket/%f`, `rclone copyto`, `wal-g wal-push`),
//! one at a time, in archive order, like PostgreSQL's `archive_command`.
//!
//! The writer hands a file's name to the shipper thread once the file has its final name and
//! the directory entry is durable ([`ShipQueue::push`]); it never waits: the queue is bounded
//! and a full queue only drops the entry and flags a rescan. The shipper runs `sh -c CMD`
//! with `%p` (the file's path), `%f` (its name) and `%%` replaced; a non-zero exit is retried
//! with back-off (1 s doubling to 60 s). After each success it durably replaces
//! `.pgreceivewal.shipped` in the archive with the file's name, so a restart ships the next
//! completed file after it (found by scanning the archive) and repeats at most the one that
//! was in flight when the process died.
//!
//! Archive order: segments by position, then timeline; a timeline's history file just before
//! the first segment of that timeline (at the segment of its switch point), which is the
//! order in which the writer completes them.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::durable::write_durably;
use crate::lsn::{Lsn, Tli};
use crate::metrics;
use crate::physical::archive::ArchiveError;
use crate::physical::timeline::parse_history;
use crate::physical::walfile::WalName;

/// The durable record of the last file shipped, in the archive directory.
pub const MARKER_FILE: &str = ".pgreceivewal.shipped";

/// Files the writer may queue ahead of the shipper; beyond it the shipper rescans.
pub const QUEUE_BOUND: usize = 256;

const FIRST_DELAY: Duration = Duration::from_secs(1);
/// How often an idle or waiting shipper looks at the stop request.
const STOP_POLL: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Where a completed file stands in archive order: the start of its segment (for a history
/// file, of the segment holding its switch point), its timeline, and 0 for a history file, 1
/// for a segment (a timeline's history goes before its first segment).
pub type Key = (u64, Tli, u8);

/// The writer's end: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct ShipQueue {
    tx: Sender<String>,
    overflow: Arc<AtomicBool>,
    depth: Arc<AtomicUsize>,
}

impl ShipQueue {
    /// Queues a completed, durable file for shipping. A full queue drops the entry and has
    /// the shipper rescan the archive once it has caught up, so receiving never waits.
    pub fn push(&self, name: &str) {
        match self.tx.try_send(name.to_owned()) {
            Ok(()) => {
                let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::get().ship_queue.set(depth as u64);
            }
            Err(TrySendError::Full(_)) => self.overflow.store(true, Ordering::Relaxed),
            // The shipper stopped (the run is ending): the next run's scan finds the file.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The shipper thread and the writer's end of its queue.
pub struct Shipper {
    queue: ShipQueue,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Shipper {
    /// Starts shipping the archive in `dir` with `command`, from after the file named in its
    /// marker (everything completed, without a marker).
    pub fn start(dir: &Path, command: &str, seg_size: u64) -> Result<Shipper, ArchiveError> {
        Shipper::start_bounded(dir, command, seg_size, QUEUE_BOUND)
    }

    fn start_bounded(
        dir: &Path,
        command: &str,
        seg_size: u64,
        bound: usize,
    ) -> Result<Shipper, ArchiveError> {
        let last = read_marker(dir, seg_size)?;
        let (tx, rx) = crossbeam_channel::bounded(bound);
        let queue = ShipQueue { tx, overflow: Arc::default(), depth: Arc::default() };
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            stop: Arc::clone(&stop),
            dir: dir.to_path_buf(),
            command: command.to_owned(),
            seg_size,
            rx,
            overflow: Arc::clone(&queue.overflow),
            depth: Arc::clone(&queue.depth),
            last,
            pending: BTreeMap::new(),
        };
        let thread = std::thread::Builder::new().name("shipper".into()).spawn(move || worker.run()).map_err(
            |err| ArchiveError::Io { path: dir.to_path_buf(), action: "start the shipper thread for", err },
        )?;
        Ok(Shipper { queue, stop, thread: Some(thread) })
    }

    pub fn queue(&self) -> ShipQueue {
        self.queue.clone()
    }

    /// Files known complete and not shipped yet (queued or found by a scan): a gauge for
    /// metrics.
    pub fn queue_depth(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.queue.depth)
    }

    /// Ends shipping: the command in flight is waited for, the rest is left to the next run.
    /// Returns within [`STOP_POLL`] otherwise, also while a writer still holds the queue.
    pub fn finish(mut self) {
        self.join();
    }

    fn join(&mut self) {
        // A flag, not the end of the channel: a writer's clone of the queue may outlive us.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the shipper thread panicked");
            }
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.join();
    }
}

/// `CMD` with `%p`, `%f` and `%%` replaced as PostgreSQL's `archive_command` does; any other
/// `%` is kept as it is.
pub fn expand(command: &str, path: &str, file: &str) -> String {
    let mut out = String::with_capacity(command.len() + path.len());
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('p') => out.push_str(path),
            Some('f') => out.push_str(file),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// Extensions of segments written compressed (`-Z`): a complete one is shipped as it is.
const COMPRESSED_EXTENSIONS: [&str; 3] = [".gz", ".lz4", ".zst"];

/// The archive-order key of a completed file, or None for anything that is not a complete
/// segment (compressed or not) or a history file. A history file is read for its switch
/// point.
pub fn key_of(dir: &Path, name: &str, seg_size: u64) -> Option<Key> {
    let compressed = COMPRESSED_EXTENSIONS.iter().find_map(|ext| name.strip_suffix(ext));
    let wal = WalName::parse(compressed.unwrap_or(name))?;
    if compressed.is_some() && !matches!(wal, WalName::Segment { .. }) {
        return None;
    }
    match wal {
        WalName::Partial { .. } => None,
        w @ WalName::Segment { .. } => {
            let id = w.segment(seg_size)?;
            Some((id.segno * seg_size, id.tli, 1))
        }
        WalName::History { tli } => {
            let switch = fs::read(dir.join(name))
                .ok()
                .and_then(|content| parse_history(&content, tli).ok())
                .and_then(|entries| entries.last().map(|e| e.switchpoint))
                .unwrap_or(Lsn(0));
            Some((switch.segment_start(seg_size).0, tli, 0))
        }
    }
}

/// The key of the file the marker names; None without a marker.
fn read_marker(dir: &Path, seg_size: u64) -> Result<Option<Key>, ArchiveError> {
    let path = dir.join(MARKER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ArchiveError::Io { path, action: "read", err }),
    };
    let name = text.trim_end_matches('\n');
    match key_of(dir, name, seg_size) {
        Some(key) => Ok(Some(key)),
        None => Err(ArchiveError::BadMetadata {
            reason: format!(
                "it names {:?}, not a completed WAL file (without it, every completed file of the archive is shipped again)",
                name
            ),
            path,
        }),
    }
}

struct Worker {
    stop: Arc<AtomicBool>,
    dir: PathBuf,
    command: String,
    seg_size: u64,
    rx: Receiver<String>,
    overflow: Arc<AtomicBool>,
    depth: Arc<AtomicUsize>,
    /// The last file shipped.
    last: Option<Key>,
    /// Completed files after `last`, in archive order.
    pending: BTreeMap<Key, String>,
}

impl Worker {
    /// Files known complete and not yet shipped: for the tests and the metric.
    fn publish_depth(&self) {
        self.depth.store(self.pending.len(), Ordering::Relaxed);
        metrics::get().ship_queue.set(self.pending.len() as u64);
    }

    fn run(mut self) {
        let mut rescan = true;
        let mut delay = FIRST_DELAY;
        loop {
            if rescan || self.overflow.swap(false, Ordering::Relaxed) {
                self.scan();
                rescan = false;
            }
            let mut stopping = false;
            loop {
                match self.rx.try_recv() {
                    Ok(name) => self.add(name),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            self.publish_depth();
            if stopping || self.stopping() {
                return;
            }
            let Some((&key, name)) = self.pending.first_key_value() else {
                match self.rx.recv_timeout(STOP_POLL) {
                    Ok(name) => self.add(name),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                continue;
            };
            let name = name.clone();
            match self.ship(&name) {
                Ok(()) => {
                    self.pending.remove(&key);
                    self.last = Some(key);
                    delay = FIRST_DELAY;
                    self.publish_depth();
                }
                Err(why) => {
                    log::warn!(
                        "segment command failed for \"{name}\": {why}; trying again in {} s",
                        delay.as_secs()
                    );
                    if !self.wait(delay) {
                        return;
                    }
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Takes a queued name unless it was shipped already (a scan found it first).
    fn add(&mut self, name: String) {
        if let Some(key) = key_of(&self.dir, &name, self.seg_size) {
            if self.last.is_none_or(|l| key > l) {
                self.pending.insert(key, name);
            }
        }
    }

    /// Every completed file of the archive after the last one shipped.
    fn scan(&mut self) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("could not read directory \"{}\" to ship its files: {e}", self.dir.display());
                return;
            }
        };
        for entry in entries.flatten() {
            if let Ok(name) = entry.file_name().into_string() {
                self.add(name);
            }
        }
    }

    /// Waits `delay`, taking queued names meanwhile; false when the run is ending.
    fn wait(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            match self.rx.recv_timeout((deadline - now).min(STOP_POLL)) {
                Ok(name) => self.add(name),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Runs the command for one file; on success records it as shipped.
    fn ship(&mut self, name: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        if !path.exists() {
            // Removed by hand (or by a cleanup tool) before it was shipped: nothing to send.
            log::warn!("not shipping \"{name}\": it is no longer in the archive");
            return Ok(());
        }
        let cmd = expand(&self.command, &path.to_string_lossy(), name);
        log::debug!("shipping \"{name}\"");
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("could not run /bin/sh: {e}"))?;
        if !status.success() {
            return Err(match status.code() {
                Some(code) => format!("exit status {code}"),
                None => format!("{status}"),
            });
        }
        let marker = self.dir.join(MARKER_FILE);
        if let Err(e) = write_durably(&marker, format!("{name}\n").as_bytes(), 0o600) {
            // As any failed fsync: the process stops rather than trust what the disk holds;
            // a restart resumes from the marker on disk and ships this file again.
            log::error!(
                "could not write file \"{}\": {e}; pgreceivewal stops (a restart ships \"{name}\" again)",
                marker.display()
            );
            std::process::exit(1);
        }
        log::debug!("shipped \"{name}\"");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;

    struct Dir(PathBuf);
    impl Dir {
        fn new(label: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("pgrw-ship-{label}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn expand_like_archive_command() {
        assert_eq!(expand("cp %p /x/%f", "/a/F", "F"), "cp /a/F /x/F");
        assert_eq!(expand("echo 100%% %f", "/a/F", "F"), "echo 100% F");
        assert_eq!(expand("%x %", "/a/F", "F"), "%x %");
        assert_eq!(expand("%%p", "/a/F", "F"), "%p");
    }

    /// Segments by position then timeline; a history file right before its timeline's first
    /// segment; partial files and other names are not shipped.
    #[test]
    fn archive_order() {
        let d = Dir::new("order");
        // Timeline 2 branched off inside segment 3 (0/380000 with 1 MiB segments).
        fs::write(d.0.join("00000002.history"), "1\t0/380000\tno recovery target specified\n").unwrap();
        let names = [
            "000000020000000000000004",
            "000000010000000000000002",
            "00000002.history",
            "000000020000000000000003",
            "000000010000000000000003.partial",
            "000000010000000000000001",
            "README",
            ".pgreceivewal.meta",
            "000000020000000000000005.gz",
            "000000020000000000000006.lz4.partial",
            "00000002.history.gz",
        ];
        let mut keyed: Vec<(Key, &str)> =
            names.iter().filter_map(|n| key_of(&d.0, n, SEG).map(|k| (k, *n))).collect();
        keyed.sort();
        let order: Vec<&str> = keyed.into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            order,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "00000002.history",
                "000000020000000000000003",
                "000000020000000000000004",
                "000000020000000000000005.gz"
            ]
        );
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The writer's push returns at once even when the shipper is stuck in a slow command
    /// and the queue is full; what did not fit is found by a rescan, and all is shipped once,
    /// in order.
    #[test]
    fn a_full_queue_never_blocks_and_a_rescan_catches_up() {
        let d = Dir::new("overflow");
        let (started, go, log) = (d.0.join("started"), d.0.join("go"), d.0.join("shipped.log"));
        let cmd = format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.01; done; echo %f >> {}",
            started.display(),
            go.display(),
            log.display()
        );
        let shipper = Shipper::start_bounded(&d.0, &cmd, SEG, 1).unwrap();
        let q = shipper.queue();
        let names: Vec<String> = (1..=6).map(|n| format!("00000001{:016X}", n)).collect();
        fs::write(d.0.join(&names[0]), "x").unwrap();
        q.push(&names[0]);
        wait_for("the first command to start", || started.exists());
        for n in &names[1..] {
            fs::write(d.0.join(n), "x").unwrap();
            q.push(n);
        }
        assert!(q.overflow.load(Ordering::Relaxed), "a queue of one must have overflowed");
        fs::write(&go, "").unwrap();
        wait_for("every file shipped", || fs::read_to_string(&log).unwrap_or_default().lines().count() >= 6);
        wait_for("the marker of the last", || {
            fs::read_to_string(d.0.join(MARKER_FILE)).unwrap_or_default() == format!("{}\n", names[5])
        });
        assert_eq!(fs::read_to_string(&log).unwrap().lines().collect::<Vec<_>>(), names);
        wait_for("an empty queue", || shipper.queue_depth().load(Ordering::Relaxed) == 0);
        // Stops although the writer's end of the queue is still alive.
        shipper.finish();
        drop(q);
    }

    #[test]
    fn marker() {
        let d = Dir::new("marker");
        assert_eq!(read_marker(&d.0, SEG).unwrap(), None);
        fs::write(d.0.join(MARKER_FILE), "000000010000000000000002\n").unwrap();
        assert_eq!(read_marker(&d.0, SEG).unwrap(), Some((2 * SEG, 1, 1)));
        fs::write(d.0.join(MARKER_FILE), "000000010000000000000002.partial\n").unwrap();
        let e = read_marker(&d.0, SEG).unwrap_err().to_string();
        assert!(e.contains("not a completed WAL file") && e.contains(MARKER_FILE), "{e}");
    }
}
