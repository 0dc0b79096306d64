//! What the fault and bad-input suites (tests/faults.rs, tests/badinput.rs) share: the archive
//! check every fault ends with, a background WAL load, a TCP proxy that cuts or mangles
//! connections, a size-limited tmpfs, the fsync-failure shim, and log parsing.
//!
//! The archive check is the suite's definition of "nothing lost": contiguous segments, every
//! completed one byte-identical to the server's own copy in pg_wal, the one `.partial` a prefix
//! of the server's segment followed only by zeros, and the version's own `pg_waldump` reading
//! the archived WAL from its first segment up to the position that must have been reached.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{pg_tool, pgreceivewal, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

/// The segment size of every fault cluster: small segments make many segment boundaries.
pub const SEG: u64 = 1 << 20;

/// Settings that keep the server's own copy of every segment in pg_wal for the comparison:
/// no removal (wal_keep_size) and no checkpoint recycling during a test.
pub const KEEP_WAL: &str = "wal_keep_size = '1GB'\n\
                            max_wal_size = '2GB'\n\
                            checkpoint_timeout = '1h'\n\
                            autovacuum = off";

/// A cluster of `version` with 1 MiB segments that keeps its WAL, plus `extra` settings.
pub fn fault_cluster(version: PgVersion, extra: &str) -> Cluster {
    Cluster::builder(version).wal_segsize_mb(1).conf(KEEP_WAL).conf(extra).start()
}

// ---------------------------------------------------------------------------
// LSNs
// ---------------------------------------------------------------------------

/// Parses `X/Y` as PostgreSQL prints an LSN.
pub fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("not an LSN: {s:?}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("not an LSN: {s:?}"));
    (hi << 32) | lo
}

pub fn fmt_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

/// The segment file name of `segno` on `tli` (1 MiB segments and up).
pub fn seg_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = 0x1_0000_0000 / seg_size;
    format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per)
}

// ---------------------------------------------------------------------------
// Randomness, reproducible
// ---------------------------------------------------------------------------

/// xorshift64*: enough randomness for fault timing, with the seed printed so a failing run
/// can be repeated with `PGRW_FAULT_SEED=<seed>`.
pub struct Rng(u64);

impl Rng {
    pub fn new(test: &str) -> Rng {
        let seed = std::env::var("PGRW_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
                ^ u64::from(std::process::id())
        });
        eprintln!("{test}: PGRW_FAULT_SEED={seed}");
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

// ---------------------------------------------------------------------------
// Background WAL load
// ---------------------------------------------------------------------------

/// Writes WAL in the background: psql runs of `INSERT ... generate_series(1, rows)` (about
/// 1 kB of WAL a row) with `pause` between them, until stopped. A failed run (the server is
/// down) is not an error: the load waits and tries again.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    pub fn start(c: &Cluster, rows: u32, pause: Duration) -> Load {
        c.psql("CREATE TABLE IF NOT EXISTS pgrw_load (id int, payload text)");
        let (version, port) = (c.version(), c.port());
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let sql = format!(
            "INSERT INTO pgrw_load SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, {rows}) g"
        );
        let handle = thread::Builder::new()
            .name("wal-load".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let ok = pg_tool(version, "psql")
                        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                        .args(["-p", &port.to_string(), "-c", &sql])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|st| st.success())
                        .unwrap_or(false);
                    if ok {
                        d.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(pause);
                    } else {
                        thread::sleep(Duration::from_millis(200));
                    }
                }
            })
            .expect("spawn the load thread");
        Load { stop, done, handle: Some(handle) }
    }

    /// Number of INSERTs committed so far.
    pub fn batches(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the load and waits for the INSERT under way; returns the number committed.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.batches()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------------------
// Running pgreceivewal
// ---------------------------------------------------------------------------

/// pgreceivewal against `c` into `dir`, stderr appended to `log` (so the runs of one test
/// share one log), stdout discarded.
pub fn ours(c: &Cluster, dir: &Path, extra: &[&str], log: &Path) -> Command {
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd.stdout(Stdio::null()).stderr(append(log));
    cmd
}

pub fn append(log: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}

pub fn read_log(log: &Path) -> String {
    fs::read(log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Runs to completion (at most `timeout`); returns the exit code and everything it printed on
/// stderr.
pub fn run_capture(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String) {
    let out_path = std::env::temp_dir().join(format!(
        "pgrw-capture-{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
    ));
    cmd.stdout(Stdio::null()).stderr(fs::File::create(&out_path).unwrap());
    let mut child = KillOnDrop::spawn(cmd);
    let status = crate::util::wait_for_exit(&mut child, timeout);
    let err = read_log(&out_path);
    let _ = fs::remove_file(&out_path);
    let status = status.unwrap_or_else(|| panic!("{cmd:?} did not exit within {timeout:?}:\n{err}"));
    (status.code(), err)
}

/// The `write_lsn` pgreceivewal last reported to `c` (None when not connected).
pub fn reported(c: &Cluster, column: &str) -> Option<u64> {
    let s =
        c.psql(&format!("SELECT {column} FROM pg_stat_replication WHERE application_name = 'pgreceivewal'"));
    (!s.is_empty()).then(|| lsn(&s))
}

/// Waits until pgreceivewal reports having received (`write_lsn`) at least `target`.
pub fn wait_received(c: &Cluster, target: u64, timeout: Duration) {
    wait_until(timeout, &format!("pgreceivewal to receive up to {}", fmt_lsn(target)), || {
        reported(c, "write_lsn").is_some_and(|w| w >= target)
    });
}

/// The restart_lsn of a slot.
pub fn slot_restart_lsn(c: &Cluster, slot: &str) -> Option<u64> {
    let s = c.psql(&format!("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"));
    (!s.is_empty()).then(|| lsn(&s))
}

/// Where pgreceivewal said it stopped on SIGTERM ("received stop signal; stopping at X").
pub fn stopped_at(log: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("received stop signal; stopping at "))
        .unwrap_or_else(|| panic!("no \"received stop signal\" line in:\n{log}"));
    let rest = line.split("stopping at ").nth(1).unwrap();
    lsn(rest.split_whitespace().next().unwrap())
}

/// Lines of a log at one level ("error", "warning", "info"...).
pub fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    log.lines().filter(|l| level_of(l) == Some(level)).collect()
}

/// The level word of a text log line, `2026-11-21 23:35:16.123 UTC [1] pgreceivewal: info: ...`
/// (the program name is the one the binary was started as).
pub fn level_of(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("] ")?;
    let (_program, rest) = rest.split_once(": ")?;
    Some(rest.split_once(": ")?.0)
}

/// Messages of a log at one level, each its line with the detail and hint lines that follow it
/// (`... detail: ...`, `... hint: ...`), joined by newlines: where the words of a message
/// are, whichever part they moved to.
pub fn messages_at(log: &str, level: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for l in log.lines() {
        if level_of(l) == Some(level) {
            out.push(l.to_owned());
            open = true;
        } else if open && matches!(level_of(l), Some("detail" | "hint")) {
            let m = out.last_mut().expect("open after a push");
            m.push('\n');
            m.push_str(l);
        } else {
            open = false;
        }
    }
    out
}

/// Seconds (with milliseconds) since midnight UTC of a text log line's timestamp,
/// `2026-11-21 23:35:16.123 UTC [1] pgreceivewal: ...`.
pub fn line_time(line: &str) -> f64 {
    let t = line.split_whitespace().nth(1).unwrap_or_else(|| panic!("no time in {line:?}"));
    let mut parts = t.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// The "trying again in N s" delay of a reconnect warning.
pub fn retry_delay(line: &str) -> Option<u64> {
    let rest = line.rsplit("trying again in ").next()?;
    if rest.len() == line.len() {
        return None;
    }
    rest.split_whitespace().next()?.parse().ok()
}

/// Checks the reconnect warnings of a log: one line per attempt (consecutive warnings are at
/// least the announced delay apart, so no attempt is logged twice), delays doubling from 1 s
/// to at most 30 s. Returns the delays announced.
pub fn check_backoff(log: &str) -> Vec<u64> {
    let warnings: Vec<&str> =
        lines_at(log, "warning").into_iter().filter(|l| l.contains("trying again in")).collect();
    let delays: Vec<u64> =
        warnings.iter().map(|l| retry_delay(l).unwrap_or_else(|| panic!("no delay in {l:?}"))).collect();
    for pair in warnings.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (da, db) = (retry_delay(a).unwrap(), retry_delay(b).unwrap());
        assert!(
            db == (da * 2).min(30) || db == 1,
            "back-off must double up to 30 s (or restart at 1 s): {da} then {db}\n{log}"
        );
        let gap = line_time(b) - line_time(a);
        assert!(
            gap >= da as f64 - 0.05,
            "attempt logged {gap:.2} s after a warning announcing {da} s: one line per attempt\n{a}\n{b}"
        );
    }
    delays
}

// ---------------------------------------------------------------------------
// The archive check
// ---------------------------------------------------------------------------

/// One WAL segment file in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegFile {
    pub name: String,
    pub tli: u32,
    pub segno: u64,
    pub partial: bool,
}

/// All names in `dir` but our own dot-files (lock, metadata), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// The segments of timeline `tli` in `dir`, by segment number.
pub fn segments(dir: &Path, tli: u32, seg_size: u64) -> Vec<SegFile> {
    let per = 0x1_0000_0000 / seg_size;
    let mut v: Vec<SegFile> = names(dir)
        .into_iter()
        .filter_map(|name| {
            let (stem, partial) = match name.strip_suffix(".partial") {
                Some(s) => (s.to_string(), true),
                None => (name.clone(), false),
            };
            if stem.len() != 24 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let t = u32::from_str_radix(&stem[0..8], 16).ok()?;
            let log = u64::from_str_radix(&stem[8..16], 16).ok()?;
            let seg = u64::from_str_radix(&stem[16..24], 16).ok()?;
            (t == tli).then_some(SegFile { name, tli: t, segno: log * per + seg, partial })
        })
        .collect();
    v.sort_by_key(|s| (s.segno, !s.partial));
    v
}

/// A snapshot of every file in an archive (names and contents), to prove a refused run changed
/// nothing.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .filter(|(n, _)| n != ".pgreceivewal.lock")
        .collect();
    v.sort();
    v
}

/// What `check_timeline` found.
#[derive(Debug)]
pub struct Checked {
    pub first: u64,
    pub last: u64,
    /// Where the `.partial`'s agreement with the server's segment ends.
    pub valid_end: u64,
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

/// Checks timeline `tli` of the archive in `dir` against the server's WAL in `pg_wal`:
/// - every segment number from the first to the last is there, once;
/// - all are complete but the last, which is the one `.partial` (none only when the stream
///   ended exactly at a segment boundary, at `reached`), and all are `seg_size` long;
/// - every complete segment is byte-identical to the server's;
/// - the `.partial` equals the server's segment up to some point and holds only zeros after
///   it, and that point is at least `reached`;
/// - `pg_waldump` of `version` reads every record from the first segment up to `reached`;
/// - no temporary file is left.
///
/// `expect_first`, when given, is the first segment number the archive must start at.
pub fn check_timeline(
    version: PgVersion,
    dir: &Path,
    pg_wal: &Path,
    tli: u32,
    seg_size: u64,
    reached: u64,
    expect_first: Option<u64>,
) -> Checked {
    let all = names(dir);
    assert!(
        !all.iter().any(|n| n.ends_with(".pgreceivewal-tmp")),
        "temporary files left in the archive: {all:?}"
    );
    let segs = segments(dir, tli, seg_size);
    assert!(!segs.is_empty(), "no segment of timeline {tli} in {}: {all:?}", dir.display());
    for pair in segs.windows(2) {
        assert_eq!(
            pair[1].segno,
            pair[0].segno + 1,
            "archive not contiguous between {} and {}: {all:?}",
            pair[0].name,
            pair[1].name
        );
    }
    let partials: Vec<&SegFile> = segs.iter().filter(|s| s.partial).collect();
    let last = segs.last().unwrap();
    // A stream that stopped exactly at a segment boundary has nothing for a .partial (as with
    // pg_receivewal, the next segment is opened only when WAL for it arrives).
    let ends_on_boundary = partials.is_empty() && (last.segno + 1) * seg_size == reached;
    if !ends_on_boundary {
        assert_eq!(partials.len(), 1, "exactly one .partial on timeline {tli}: {all:?}");
        assert!(last.partial, "the .partial must be the newest segment: {all:?}");
    }
    if let Some(first) = expect_first {
        assert_eq!(segs[0].segno, first, "archive must start at segment {first:X}: {all:?}");
    }
    for s in &segs {
        let len = fs::metadata(dir.join(&s.name)).unwrap().len();
        assert_eq!(len, seg_size, "{} has {len} bytes, not {seg_size}", s.name);
    }
    let complete = if ends_on_boundary { &segs[..] } else { &segs[..segs.len() - 1] };
    for s in complete {
        let ours = fs::read(dir.join(&s.name)).unwrap();
        let server = fs::read(pg_wal.join(&s.name))
            .unwrap_or_else(|e| panic!("server copy of {} in {}: {e}", s.name, pg_wal.display()));
        if ours != server {
            panic!(
                "{} differs from the server's copy from offset {:#x}",
                s.name,
                first_difference(&ours, &server)
            );
        }
    }
    if ends_on_boundary {
        waldump(version, dir, &segs, tli, seg_size, segs[0].segno * seg_size, reached);
        return Checked { first: segs[0].segno, last: last.segno, valid_end: reached };
    }
    // The .partial: the server's copy has the same name, or ".partial" too where a promoted
    // server renamed the old timeline's last segment.
    let stem = last.name.trim_end_matches(".partial");
    let ours = fs::read(dir.join(&last.name)).unwrap();
    let server = fs::read(pg_wal.join(stem))
        .or_else(|_| fs::read(pg_wal.join(&last.name)))
        .unwrap_or_else(|e| panic!("server copy of {stem} in {}: {e}", pg_wal.display()));
    let same = first_difference(&ours, &server);
    if let Some(off) = ours[same..].iter().position(|&b| b != 0) {
        panic!(
            "{}: differs from the server's segment at offset {same:#x} and holds non-zero bytes after it (at {:#x}): not a prefix",
            last.name,
            same + off
        );
    }
    let valid_end = last.segno * seg_size + same as u64;
    assert!(
        valid_end >= reached,
        "{}: agrees with the server only up to {}, but {} was reached",
        last.name,
        fmt_lsn(valid_end),
        fmt_lsn(reached)
    );
    waldump(version, dir, &segs, tli, seg_size, segs[0].segno * seg_size, reached);
    Checked { first: segs[0].segno, last: last.segno, valid_end }
}

/// `pg_waldump --stats -t tli -s from -e to` over the archive's segments (the `.partial` under
/// its final name, as pg_waldump wants): every record up to `to` must parse.
pub fn waldump(
    version: PgVersion,
    dir: &Path,
    segs: &[SegFile],
    tli: u32,
    seg_size: u64,
    from: u64,
    to: u64,
) {
    if to <= from {
        return;
    }
    let t = TestDir::new("waldump");
    for s in segs {
        if s.segno * seg_size >= to + seg_size {
            continue;
        }
        let dst = t.join(s.name.trim_end_matches(".partial"));
        if fs::hard_link(dir.join(&s.name), &dst).is_err() {
            fs::copy(dir.join(&s.name), &dst).unwrap();
        }
    }
    let out = pg_tool(version, "pg_waldump")
        .arg("--stats")
        .arg("-p")
        .arg(t.path())
        .args(["-t", &tli.to_string(), "-s", &fmt_lsn(from), "-e", &fmt_lsn(to)])
        .output()
        .expect("run pg_waldump");
    assert!(
        out.status.success(),
        "pg_waldump of {} could not read timeline {tli} from {} to {}: {}",
        dir.display(),
        fmt_lsn(from),
        fmt_lsn(to),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// A TCP proxy
// ---------------------------------------------------------------------------

/// Rewrites one CopyData payload coming from the server: `Some(new)` replaces it.
pub type Garble = Box<dyn FnMut(&[u8]) -> Option<Vec<u8>> + Send>;

/// A TCP proxy on 127.0.0.1 in front of a server port. `cut()` drops every connection it
/// carries (both sides see the connection closed), as a failing network or firewall does. With
/// a `Garble`, the server-to-client direction is read message by message and, once in COPY
/// BOTH mode, CopyData payloads go through it (until it has replaced one).
pub struct Proxy {
    port: u16,
    live: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16, garble: Option<Garble>) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let garble = Arc::new(Mutex::new(garble));
        let (l2, a2, s2) = (live.clone(), accepted.clone(), stop.clone());
        let accept = thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if s2.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    a2.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    {
                        let mut l = l2.lock().unwrap();
                        l.push(client.try_clone().unwrap());
                        l.push(server.try_clone().unwrap());
                    }
                    let (c_read, s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    thread::spawn(move || {
                        let _ = io::copy(&mut &c_read, &mut &s_write);
                        let _ = c_read.shutdown(Shutdown::Both);
                        let _ = s_write.shutdown(Shutdown::Both);
                    });
                    let g = garble.clone();
                    thread::spawn(move || {
                        let _ = forward_messages(&server, &client, &g);
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                    });
                }
            })
            .expect("spawn the proxy");
        Proxy { port, live, accepted, stop, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Drops every connection under way; returns how many there were.
    pub fn cut(&self) -> usize {
        let mut l = self.live.lock().unwrap();
        let n = l.len() / 2;
        for s in l.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.cut();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Server to client, one protocol message at a time (type byte, length, body). The client
/// must not ask for SSL or GSS encryption (their one-byte answers are not messages).
fn forward_messages(from: &TcpStream, to: &TcpStream, garble: &Mutex<Option<Garble>>) -> io::Result<()> {
    let has_garble = garble.lock().unwrap().is_some();
    if !has_garble {
        io::copy(&mut &*from, &mut &*to)?;
        return Ok(());
    }
    let mut r = io::BufReader::with_capacity(1 << 16, from);
    let mut w = to;
    let mut copying = false;
    loop {
        let mut head = [0u8; 5];
        r.read_exact(&mut head)?;
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        r.read_exact(&mut body)?;
        if head[0] == b'W' {
            copying = true;
        }
        if copying && head[0] == b'd' {
            let mut g = garble.lock().unwrap();
            if let Some(f) = g.as_mut() {
                if let Some(new) = f(&body) {
                    *g = None;
                    let mut msg = vec![b'd'];
                    msg.extend_from_slice(&((new.len() + 4) as u32).to_be_bytes());
                    msg.extend_from_slice(&new);
                    w.write_all(&msg)?;
                    continue;
                }
            }
        }
        w.write_all(&head)?;
        w.write_all(&body)?;
    }
}

// ---------------------------------------------------------------------------
// A small filesystem
// ---------------------------------------------------------------------------

/// A tmpfs of `mb` MiB mounted at a new directory, unmounted on drop (needs root).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: PathBuf, mb: u32) -> Tmpfs {
        fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m,mode=0700"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "could not mount a {mb} MiB tmpfs at {} (the disk-full test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A read-only bind mount of `path` onto itself, undone on drop (needs root): even root
/// cannot write there.
pub struct ReadOnly {
    path: PathBuf,
}

impl ReadOnly {
    pub fn mount(path: &Path) -> ReadOnly {
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).arg(path).arg(path).output().expect("run mount");
            assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["--bind"]);
        let guard = ReadOnly { path: path.to_path_buf() };
        let out = Command::new("mount").args(["-o", "remount,ro,bind"]).arg(path).output().unwrap();
        assert!(out.status.success(), "remount read-only: {}", String::from_utf8_lossy(&out.stderr));
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().map(|s| s.success()).unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

// ---------------------------------------------------------------------------
// The fsync-failure shim
// ---------------------------------------------------------------------------

/// Compiles tests/support/failfsync.c into `dir` and returns the library's path.
pub fn build_failfsync(dir: &Path) -> PathBuf {
    build_shim(dir, "failfsync")
}

/// Compiles the LD_PRELOAD shim tests/support/`name`.c into `dir` and returns its path.
pub fn build_shim(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/support/{name}.c"));
    let lib = dir.join(format!("{name}.so"));
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("run gcc (the fault-injection tests need a C compiler)");
    assert!(
        out.status.success(),
        "gcc failed on {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}
