//! The fault suite: what production throws at an archiver (kill -9, server shutdowns and
//! crashes, cut connections, a full disk, failing fsync, a promotion, SIGTERM under load), each
//! against real PostgreSQL 15 and 18 servers where the server matters. Every case ends with the
//! same proof (support::check_timeline): the archive is contiguous, every completed segment is
//! byte-identical to the server's own, the one `.partial` is a valid prefix, and pg_waldump
//! reads it all up to the position that must have been reached. docs/reliability.md has the
//! table of what each test proves.

#[path = "support/mod.rs"]
pub(crate) mod support;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::{
    build_failfsync, check_backoff, check_timeline, fault_cluster, fmt_lsn, line_time, lines_at, lsn,
    messages_at, ours, read_log, reported, retry_delay, seg_name, segments, slot_restart_lsn, stopped_at,
    wait_received, Load, Proxy, Rng, Tmpfs, SEG,
};

use crate::util::{send_signal, wait_for_exit, wait_until, Cluster, KillOnDrop, Mode, PgVersion, TestDir};

const CATCH_UP: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(10);

fn pg_wal(c: &Cluster) -> std::path::PathBuf {
    c.data_dir().join("pg_wal")
}

/// Now, on the clock of the tools' log lines (`support::line_time`).
fn seconds_since_midnight_utc() -> f64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    (now.as_secs() % 86_400) as f64 + f64::from(now.subsec_millis()) / 1000.0
}

/// The server's WAL position now, once everything committed is flushed.
fn server_end(c: &Cluster) -> u64 {
    lsn(&c.current_lsn())
}

/// Stops the archiver with SIGTERM, which must exit 0 promptly; returns where it stopped.
fn stop_archiver(child: &mut KillOnDrop, log: &Path) -> u64 {
    let status = child.signal_and_wait("TERM", STOP);
    let out = read_log(log);
    assert!(status.success(), "SIGTERM must exit 0, got {status}:\n{out}");
    stopped_at(&out)
}

/// Catch up with the server, stop cleanly and check the whole archive of timeline 1.
fn finish_and_check(c: &Cluster, child: &mut KillOnDrop, dir: &Path, log: &Path, first: u64) -> u64 {
    let target = server_end(c);
    wait_received(c, target, CATCH_UP);
    let at = stop_archiver(child, log);
    assert!(at >= target, "stopped at {} before {}", fmt_lsn(at), fmt_lsn(target));
    check_timeline(c.version(), dir, &pg_wal(c), 1, SEG, at, Some(first));
    at
}

/// The segment the slot holds WAL from: where a new archive on that slot starts.
fn slot_segment(c: &Cluster, slot: &str) -> u64 {
    slot_restart_lsn(c, slot).expect("slot exists and reserves WAL") / SEG
}

// ---------------------------------------------------------------------------
// kill -9 at random moments under load
// ---------------------------------------------------------------------------

/// `kills` times: start the archiver, let it run a random 50-700 ms while WAL pours in, kill -9.
/// Then one last run catches up and stops cleanly. The archive must be exactly the server's
/// WAL: whatever state a kill left (a half-padded temporary file, a half-written .partial, a
/// slot still held by the dead connection's walsender) the next run must repair or wait out.
fn kill9_under_load(version: PgVersion, kills: usize) {
    let c = fault_cluster(version, "");
    let t = TestDir::new("kill9");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let mut rng = Rng::new(&format!("kill9_under_load_{}", version.major()));
    let load = Load::start(&c, 300, Duration::from_millis(10));
    for i in 0..kills {
        let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
        thread::sleep(rng.millis(50, 700));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run {i} exited on its own ({status}) before it was killed:\n{}", read_log(&log));
        }
        send_signal(child.id(), "KILL");
        child.wait().unwrap();
    }
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    thread::sleep(rng.millis(300, 800));
    let batches = load.stop();
    let at = finish_and_check(&c, &mut child, &d, &log, first);

    let out = read_log(&log);
    let streamed = out.matches("starting log streaming").count();
    assert!(
        streamed > kills / 2,
        "most runs must be killed while streaming, {streamed} of {} streamed:\n{out}",
        kills + 1
    );
    assert!(lines_at(&out, "error").is_empty(), "no run may fail:\n{out}");
    let segs = segments(&d, 1, SEG).len();
    eprintln!("{version}: {kills} kills, {streamed} runs streamed, {batches} load batches, {segs} segments, up to {}", fmt_lsn(at));
    assert!(segs >= 10, "the load must span many segments, got {segs}");
}

#[test]
fn kill9_under_load_15() {
    kill9_under_load(PgVersion::V15, 20);
}

#[test]
fn kill9_under_load_18() {
    kill9_under_load(PgVersion::V18, 20);
}

// ---------------------------------------------------------------------------
// Server fast shutdown, crash and restart
// ---------------------------------------------------------------------------

/// While streaming under load, the server is shut down fast (down ~3.5 s), then crashed with an
/// immediate shutdown (down ~1 s) and each time started again. One archiver process, started
/// without -n, must reconnect on its own each time, with back-off, one warning per attempt,
/// never an error, and the archive must hold all of the server's WAL.
fn server_restarts(version: PgVersion) {
    let mut c = fault_cluster(version, "");
    let t = TestDir::new("restart");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    let load = Load::start(&c, 300, Duration::from_millis(30));
    wait_received(&c, server_end(&c), CATCH_UP);
    thread::sleep(Duration::from_millis(800));

    c.stop(Mode::Fast);
    thread::sleep(Duration::from_millis(3500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the archiver gave up while the server was down:\n{}",
        read_log(&log)
    );
    c.start_again();
    wait_until(CATCH_UP, "the archiver to reconnect after the fast shutdown", || {
        reported(&c, "write_lsn").is_some()
    });
    thread::sleep(Duration::from_millis(800));

    c.stop(Mode::Immediate);
    thread::sleep(Duration::from_millis(1000));
    c.start_again();
    wait_until(CATCH_UP, "the archiver to reconnect after the crash", || reported(&c, "write_lsn").is_some());
    thread::sleep(Duration::from_millis(800));
    load.stop();
    finish_and_check(&c, &mut child, &d, &log, first);

    let out = read_log(&log);
    assert!(lines_at(&out, "error").is_empty(), "nothing here is fatal:\n{out}");
    let delays = check_backoff(&out);
    // Down 3.5 s after the fast shutdown: the attempts at +0, +1 and +3 s fail (1, 2, 4), the
    // one at +7 s succeeds; the crash fails at least once more (announcing 8 s).
    assert!(delays.len() >= 4, "one warning per failed attempt expected, got {delays:?}:\n{out}");
    assert_eq!(&delays[..3], &[1, 2, 4], "back-off from 1 s, doubling:\n{out}");
    assert!(
        out.matches("starting log streaming").count() >= 3,
        "streamed, then again after each restart:\n{out}"
    );
}

#[test]
fn server_restarts_15() {
    server_restarts(PgVersion::V15);
}

#[test]
fn server_restarts_18() {
    server_restarts(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// The network connection cut mid-stream
// ---------------------------------------------------------------------------

/// The archiver reaches the server through a TCP proxy that drops the connection three times at
/// random moments under load. Each time it must reconnect (with back-off) and resume; in the
/// end nothing is missing.
fn network_cuts(version: PgVersion) {
    let c = fault_cluster(version, "");
    let t = TestDir::new("netcut");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let proxy = Proxy::start(c.port(), None);
    let mut rng = Rng::new(&format!("network_cuts_{}", version.major()));
    let mut cmd = crate::util::pgreceivewal();
    cmd.args(["-h", "127.0.0.1", "-p", &proxy.port().to_string(), "-U", "postgres"])
        .arg("-D")
        .arg(&d)
        .args(["-S", "arch", "-s", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(support::append(&log));
    let mut child = KillOnDrop::spawn(&mut cmd);
    let load = Load::start(&c, 300, Duration::from_millis(20));
    for cut in 1..=3 {
        wait_until(CATCH_UP, "the archiver to stream through the proxy", || {
            proxy.accepted() >= cut && reported(&c, "write_lsn").is_some()
        });
        thread::sleep(rng.millis(200, 1200));
        assert!(proxy.cut() >= 1, "a connection to cut");
    }
    wait_until(CATCH_UP, "the archiver to reconnect after the last cut", || {
        proxy.accepted() >= 4 && reported(&c, "write_lsn").is_some()
    });
    thread::sleep(Duration::from_millis(500));
    load.stop();
    finish_and_check(&c, &mut child, &d, &log, first);

    let out = read_log(&log);
    assert!(lines_at(&out, "error").is_empty(), "a cut connection is not fatal:\n{out}");
    let delays = check_backoff(&out);
    assert!(delays.len() >= 3, "one warning per cut at least: {delays:?}\n{out}");
    assert_eq!(&delays[..3], &[1, 2, 4], "{out}");
}

#[test]
fn network_cuts_15() {
    network_cuts(PgVersion::V15);
}

#[test]
fn network_cuts_18() {
    network_cuts(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------

/// The archive lives on a 16 MiB tmpfs of which a filler file takes 12 MiB, and the floor is
/// off (`--min-free=0`). WAL keeps coming: the archiver must say the disk is full, once,
/// naming the directory and the space it needs, leave no truncated, zero-length or temporary
/// file, never report WAL it could not store as flushed, and wait on the same connection
/// (issue 12: no reconnect loop); once the filler is deleted it must catch up on its own.
#[test]
fn disk_full_18() {
    let c = fault_cluster(PgVersion::V18, "");
    let t = TestDir::new("diskfull");
    let log = t.join("ours.log");
    let small = Tmpfs::mount(t.join("small"), 16);
    let d = small.path().join("archive");
    let filler = small.path().join("filler");
    fs::write(&filler, vec![0x55u8; 12 << 20]).unwrap();
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1", "--min-free=0"], &log));
    c.generate_wal(5);
    // A trickle of WAL while the disk is full, as on a live server.
    let load = Load::start(&c, 50, Duration::from_millis(200));

    wait_until(CATCH_UP, "the archiver to report the full disk", || {
        lines_at(&read_log(&log), "warning").iter().any(|l| l.contains("No space left on device"))
    });
    // Long enough for the old behaviour (a failed session, a reconnect after 1 s, 2 s...) to
    // have warned again.
    thread::sleep(Duration::from_secs(5));
    assert!(child.try_wait().unwrap().is_none(), "a full disk is not fatal:\n{}", read_log(&log));
    let out = read_log(&log);
    let full: Vec<String> =
        messages_at(&out, "warning").into_iter().filter(|l| l.contains("No space left on device")).collect();
    for l in &full {
        assert!(l.contains(&format!("\"{}\"", d.display())), "the message must name the directory: {l}");
        assert!(
            l.contains("Free at least 1048576 bytes"),
            "the message must say how much space is needed: {l}"
        );
        assert!(l.contains("bytes available"), "{l}");
    }
    // What is on the small disk while it is full: whole segments only, nothing half-made.
    let names = support::names(&d);
    assert!(
        !names.iter().any(|n| n.ends_with(".pgreceivewal-tmp")),
        "temporary file left on the full disk: {names:?}"
    );
    for n in &names {
        let len = fs::metadata(d.join(n)).unwrap().len();
        assert_eq!(len, SEG, "{n} has {len} bytes on the full disk: truncated or empty");
    }
    assert_eq!(full.len(), 1, "one warning while the disk stays full, no reconnect loop:\n{out}");
    let complete: Vec<u64> = segments(&d, 1, SEG).iter().filter(|s| !s.partial).map(|s| s.segno).collect();
    assert!(!complete.is_empty(), "some segments fit before the disk filled: {names:?}");
    let durable_end = (complete.last().unwrap() + 1) * SEG;
    let flushed = slot_restart_lsn(&c, "arch").unwrap();
    assert!(
        flushed <= durable_end,
        "the slot was advanced to {} but the archive ends at {}: WAL reported flushed was never stored",
        fmt_lsn(flushed),
        fmt_lsn(durable_end)
    );

    load.stop();
    fs::remove_file(&filler).unwrap();
    finish_and_check(&c, &mut child, &d, &log, first);
    let out = read_log(&log);
    assert!(lines_at(&out, "error").is_empty(), "{out}");
    assert!(check_backoff(&out).is_empty(), "writing paused instead of reconnecting:\n{out}");
    assert!(out.contains("resuming writes"), "{out}");
}

// ---------------------------------------------------------------------------
// fsync failure
// ---------------------------------------------------------------------------

/// An LD_PRELOAD shim makes every fsync of one segment fail with EIO once it holds WAL (its
/// padding fsync is let through). The archiver must stop at once with a non-zero exit and an
/// error naming the file, never retry it, and never report any WAL of that segment as flushed
/// (the slot must stay at or before the segment's start). A restart without the fault then
/// completes the archive.
fn fsync_failure(version: PgVersion, extra: &[&str]) {
    let c = fault_cluster(version, "");
    let t = TestDir::new("fsync");
    let (d, log, fsync_log) = (t.join("archive"), t.join("ours.log"), t.join("fsync.log"));
    let shim = build_failfsync(t.path());
    c.create_physical_slot("arch");
    let start = slot_restart_lsn(&c, "arch").unwrap();
    let first = start / SEG;
    let bad = first + 3;
    let bad_name = seg_name(1, bad, SEG);
    let mut args = vec!["-S", "arch", "-s", "1"];
    args.extend_from_slice(extra);
    let mut cmd = ours(&c, &d, &args, &log);
    cmd.env("LD_PRELOAD", &shim)
        .env("FAILFSYNC_MATCH", &bad_name)
        .env("FAILFSYNC_SKIP", "1")
        .env("FAILFSYNC_LOG", &fsync_log);
    let mut child = KillOnDrop::spawn(&mut cmd);
    let load = Load::start(&c, 300, Duration::from_millis(20));
    let status = wait_for_exit(&mut child, CATCH_UP).unwrap_or_else(|| {
        panic!("the archiver kept running after fsync failed on {bad_name}:\n{}", read_log(&log))
    });
    load.stop();
    let out = read_log(&log);
    assert_eq!(status.code(), Some(1), "an fsync failure must exit 1:\n{out}");
    let errors = lines_at(&out, "error");
    assert_eq!(errors.len(), 1, "one error line:\n{out}");
    assert!(
        errors[0]
            .contains(&format!("could not fsync file \"{}", d.join(format!("{bad_name}.partial")).display()))
            && errors[0].contains("Input/output error"),
        "the error must name the file and the cause: {}",
        errors[0]
    );
    assert!(!out.contains("trying again"), "an fsync failure is never retried:\n{out}");
    let shim_log = read_log(&fsync_log);
    assert!(
        shim_log.lines().count() >= 1
            && shim_log.lines().all(|l| l.ends_with(&format!("{bad_name}.partial"))),
        "the failed fsync was on WAL written into {bad_name}.partial, not its padding: {shim_log}"
    );
    let flushed = slot_restart_lsn(&c, "arch").unwrap();
    assert!(
        flushed <= bad * SEG,
        "flush position {} reported inside {bad_name}, whose fsync failed",
        fmt_lsn(flushed)
    );
    assert!(flushed > start, "the archiver reported progress before the failure (else this proves nothing)");
    for s in segments(&d, 1, SEG).iter().filter(|s| s.segno < bad) {
        assert!(!s.partial, "{} left incomplete before the failing segment", s.name);
        assert!(
            fs::read(d.join(&s.name)).unwrap() == fs::read(pg_wal(&c).join(&s.name)).unwrap(),
            "{} differs",
            s.name
        );
    }
    eprintln!("{version}: fsync of {bad_name} failed, slot at {}", fmt_lsn(flushed));

    // Without the fault the next run starts over at the failed segment and completes it.
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &args, &log));
    c.generate_wal(1);
    finish_and_check(&c, &mut child, &d, &log, first);
}

#[test]
fn fsync_failure_synchronous_15() {
    fsync_failure(PgVersion::V15, &["--synchronous"]);
}

#[test]
fn fsync_failure_default_18() {
    fsync_failure(PgVersion::V18, &[]);
}

// ---------------------------------------------------------------------------
// Promotion of the standby we archive from
// ---------------------------------------------------------------------------

/// Archiving from a standby (with a slot on it, no -n) under load on the primary, then the
/// standby is promoted and takes the load. The archiver must follow to timeline 2 without a
/// reconnect: timeline 1 contiguous and identical to the primary's WAL up to the switch point
/// (the switch segment kept as .partial), the history file as the server has it, and timeline
/// 2 from the switch segment on identical to the promoted server's WAL.
fn promotion(version: PgVersion) {
    let p = fault_cluster(version, "");
    p.generate_wal(1);
    let s = Cluster::builder(version).standby_of(&p).conf(support::KEEP_WAL).start();
    let t = TestDir::new("promote");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    s.psql("SELECT pg_create_physical_replication_slot('arch', true)");
    let first = slot_segment(&s, "arch");
    let mut child = KillOnDrop::spawn(&mut ours(&s, &d, &["-S", "arch", "-s", "1"], &log));
    let load = Load::start(&p, 300, Duration::from_millis(20));
    thread::sleep(Duration::from_millis(2000));
    load.stop();
    let end1 = server_end(&p);
    wait_until(CATCH_UP, "the standby to replay", || {
        s.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{}'", fmt_lsn(end1))) == "t"
    });
    wait_received(&s, end1, CATCH_UP);

    s.promote();
    let load = Load::start(&s, 300, Duration::from_millis(20));
    thread::sleep(Duration::from_millis(2000));
    load.stop();
    let end2 = server_end(&s);
    wait_received(&s, end2, CATCH_UP);
    let at = stop_archiver(&mut child, &log);

    let out = read_log(&log);
    assert!(out.contains("switched to timeline 2"), "{out}");
    assert!(!out.contains("trying again"), "the switch needs no reconnect:\n{out}");
    assert!(lines_at(&out, "error").is_empty(), "{out}");
    let history = fs::read_to_string(d.join("00000002.history")).expect("00000002.history archived");
    assert_eq!(history, fs::read_to_string(pg_wal(&s).join("00000002.history")).unwrap());
    let switch = lsn(history.lines().next().unwrap().split('\t').nth(1).unwrap());
    let tl1 = check_timeline(version, &d, &pg_wal(&p), 1, SEG, switch, Some(first));
    assert_eq!(tl1.last, switch / SEG, "timeline 1 ends with the switch segment as .partial");
    check_timeline(version, &d, &pg_wal(&s), 2, SEG, at, Some(switch / SEG));
}

#[test]
fn promotion_15() {
    promotion(PgVersion::V15);
}

#[test]
fn promotion_18() {
    promotion(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// SIGTERM under load
// ---------------------------------------------------------------------------

/// Under heavy load (default durability, default status interval), SIGTERM must exit 0 while
/// the load still runs, with everything received on disk: the archive valid up to the
/// position it stopped at, and that position reported to the server as flushed.
fn sigterm_under_load(version: PgVersion) {
    let c = fault_cluster(version, "");
    let t = TestDir::new("sigterm");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch"], &log));
    let load = Load::start(&c, 2000, Duration::ZERO);
    wait_received(&c, (first + 4) * SEG, CATCH_UP);
    // The load never pauses, so a stop that waited for the stream to go quiet (or drained
    // what the server keeps sending) would never come: stop_archiver's STOP (10 s, generous on
    // a loaded 2-core machine; the stop itself is one fsync and a status update) is the bound.
    let t0 = Instant::now();
    let at = stop_archiver(&mut child, &log);
    let took = t0.elapsed();
    let batches = load.stop();
    eprintln!(
        "{version}: stopped at {} {took:?} after SIGTERM, under a load of {batches} inserts",
        fmt_lsn(at)
    );
    assert!(at > (first + 3) * SEG, "the load must have streamed a few segments, stopped at {}", fmt_lsn(at));
    check_timeline(version, &d, &pg_wal(&c), 1, SEG, at, Some(first));
    // The last status update is sent just before the exit; the walsender reads it when it
    // gets to it.
    wait_until(CATCH_UP, "the slot to take the last status update", || {
        slot_restart_lsn(&c, "arch").unwrap() >= at
    });
    let flushed = slot_restart_lsn(&c, "arch").unwrap();
    assert_eq!(fmt_lsn(flushed), fmt_lsn(at), "everything received must be reported flushed on exit");
}

#[test]
fn sigterm_under_load_15() {
    sigterm_under_load(PgVersion::V15);
}

#[test]
fn sigterm_under_load_18() {
    sigterm_under_load(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Writer failures the receiver must not miss
// ---------------------------------------------------------------------------

/// A fresh segment on an idle server: switch to a new segment and create the slot there, so
/// the WAL a test writes next stays inside that one segment.
fn idle_cluster_at_fresh_segment(version: PgVersion) -> (Cluster, u64) {
    let c = fault_cluster(version, "");
    c.psql("CREATE TABLE pgrw_small (v text)");
    c.create_physical_slot("arch");
    c.switch_wal();
    // The slot holds WAL from the last checkpoint on; the new segment is the one after the
    // switch, where the archive's .partial will be.
    let seg = server_end(&c) / SEG;
    (c, seg)
}

/// The fsync at shutdown fails: without --synchronous the open `.partial` is fsync'ed when
/// the stream is closed on SIGTERM, and that fsync fails. The run must not end as if all
/// were well: exit 1 with the error, since what it received is not known to be on disk.
#[test]
fn fsync_failure_at_shutdown_exits_nonzero_18() {
    let (c, seg) = idle_cluster_at_fresh_segment(PgVersion::V18);
    let t = TestDir::new("fsyncstop");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    let shim = build_failfsync(t.path());
    let name = seg_name(1, seg, SEG);
    let fsync_log = t.join("fsync.log");
    let mut cmd = ours(&c, &d, &["-S", "arch", "-s", "1"], &log);
    cmd.env("LD_PRELOAD", &shim)
        .env("FAILFSYNC_MATCH", &name)
        .env("FAILFSYNC_SKIP", "1")
        .env("FAILFSYNC_LOG", &fsync_log);
    let mut child = KillOnDrop::spawn(&mut cmd);
    wait_until(CATCH_UP, "streaming", || reported(&c, "write_lsn").is_some());
    c.psql("INSERT INTO pgrw_small SELECT repeat('x', 100) FROM generate_series(1, 100)");
    wait_received(&c, server_end(&c), CATCH_UP);
    assert!(read_log(&fsync_log).is_empty(), "nothing failed before the stop");
    let status = child.signal_and_wait("TERM", STOP);
    let out = read_log(&log);
    assert!(
        read_log(&fsync_log).contains(&format!("{name}.partial")),
        "the fsync of {name}.partial on the way out failed (the fault under test):\n{out}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "the fsync of {name}.partial failed on the way out: must exit 1:\n{out}"
    );
    let errors = lines_at(&out, "error");
    assert!(
        errors.len() == 1 && errors[0].contains("could not fsync file") && errors[0].contains(&name),
        "one error naming the file:\n{out}"
    );
}

/// With --synchronous the WAL of one small commit is fsync'ed at once, and that fsync fails;
/// then no WAL ever arrives again. The receiver must notice the dead writer by itself (the
/// writer wakes it), not when the next WAL happens to arrive. "Never again" is made a fact,
/// not a hope (an idle primary still writes a running-transactions record every 15 s): the
/// archiver reads from a standby whose primary was stopped, immediately (which writes no WAL),
/// once the standby had the commit. The failing fsync is of the last WAL the standby has, so
/// a receiver that waited for more WAL would run until the time-out.
#[test]
fn writer_failure_is_noticed_on_an_idle_server_15() {
    let version = PgVersion::V15;
    let mut p = fault_cluster(version, "");
    p.psql("CREATE TABLE pgrw_small (v text)");
    let s = Cluster::builder(version).standby_of(&p).conf(support::KEEP_WAL).start();
    s.psql("SELECT pg_create_physical_replication_slot('arch', true)");
    p.switch_wal();
    // The commit is the first WAL of a fresh segment, where the archive's .partial will be.
    let seg = server_end(&p) / SEG;
    let commit = p.psql("INSERT INTO pgrw_small VALUES ('one small commit'); SELECT pg_current_wal_lsn()");
    wait_until(CATCH_UP, "the standby to receive the commit", || {
        s.psql(&format!("SELECT coalesce(pg_last_wal_receive_lsn() >= '{commit}', false)")) == "t"
    });
    p.stop(Mode::Immediate);

    let t = TestDir::new("idlefail");
    let (d, log, fsync_log) = (t.join("archive"), t.join("ours.log"), t.join("fsync.log"));
    let shim = build_failfsync(t.path());
    let name = seg_name(1, seg, SEG);
    let mut cmd = ours(&s, &d, &["-S", "arch", "-s", "1", "--synchronous"], &log);
    cmd.env("LD_PRELOAD", &shim)
        .env("FAILFSYNC_MATCH", &name)
        .env("FAILFSYNC_SKIP", "1")
        .env("FAILFSYNC_LOG", &fsync_log);
    let mut child = KillOnDrop::spawn(&mut cmd);
    let status = wait_for_exit(&mut child, CATCH_UP);
    let out = read_log(&log);
    let status = status.unwrap_or_else(|| {
        panic!("still running {CATCH_UP:?} after its fsync failed, with no WAL left to arrive:\n{out}")
    });
    assert!(
        read_log(&fsync_log).contains(&format!("{name}.partial")),
        "the fault under test happened:\n{out}"
    );
    assert_eq!(status.code(), Some(1), "{out}");
    let errors = lines_at(&out, "error");
    assert!(
        errors.len() == 1 && errors[0].contains("could not fsync file") && errors[0].contains(&name),
        "one error naming the file:\n{out}"
    );
}

/// A fast shutdown ends the stream with CommandComplete (no CopyDone): the warning must say
/// that the server ended the stream, not show libpq's "no COPY in progress" from answering
/// with a CopyDone of our own to a COPY that is already over.
#[test]
fn fast_shutdown_is_reported_as_such_18() {
    let mut c = fault_cluster(PgVersion::V18, "");
    let t = TestDir::new("shutmsg");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let _child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    wait_until(CATCH_UP, "streaming", || reported(&c, "write_lsn").is_some());
    c.stop(Mode::Fast);
    wait_until(CATCH_UP, "the warning about the lost stream", || {
        !lines_at(&read_log(&log), "warning").is_empty()
    });
    let out = read_log(&log);
    let first = lines_at(&out, "warning")[0].to_string();
    assert!(!first.contains("no COPY in progress"), "misleading message: {first}");
    assert!(
        first.contains("terminated by the server"),
        "the message must say the server ended the stream: {first}"
    );
}

// ---------------------------------------------------------------------------
// The check itself
// ---------------------------------------------------------------------------

/// The archive check must catch what it is there to catch: a flipped byte in a complete
/// segment, a missing segment, garbage after the .partial's valid prefix, a truncated file, a
/// second .partial, and a position the archive does not reach.
#[test]
fn archive_check_catches_damage() {
    let c = fault_cluster(PgVersion::V18, "");
    let t = TestDir::new("selfcheck");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    c.generate_wal(4);
    c.psql("SELECT 1");
    let at = finish_and_check(&c, &mut child, &d, &log, first);
    let segs = segments(&d, 1, SEG);
    assert!(segs.len() >= 4);
    let wal = pg_wal(&c);
    let damaged = |what: &str, damage: &dyn Fn(&Path), reached: u64| {
        let copy = t.join(format!("copy-{}", what.replace(' ', "-")));
        fs::create_dir(&copy).unwrap();
        for s in &segs {
            fs::copy(d.join(&s.name), copy.join(&s.name)).unwrap();
        }
        damage(&copy);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_timeline(PgVersion::V18, &copy, &wal, 1, SEG, reached, Some(first));
        }));
        assert!(caught.is_err(), "the archive check missed: {what}");
    };
    let (mid, partial) = (&segs[1].name, &segs.last().unwrap().name);
    let flip = |p: &Path, name: &str, off: usize| {
        let mut b = fs::read(p.join(name)).unwrap();
        b[off] ^= 0x40;
        fs::write(p.join(name), b).unwrap();
    };
    damaged("flipped byte", &|p| flip(p, mid, 12345), at);
    damaged("missing segment", &|p| fs::remove_file(p.join(mid)).unwrap(), at);
    damaged("garbage after prefix", &|p| flip(p, partial, SEG as usize - 1), at);
    damaged(
        "truncated",
        &|p| fs::OpenOptions::new().write(true).open(p.join(mid)).unwrap().set_len(SEG / 2).unwrap(),
        at,
    );
    damaged("second partial", &|p| fs::rename(p.join(mid), p.join(format!("{mid}.partial"))).unwrap(), at);
    damaged("not reached", &|_| {}, at + SEG);
    // And the untouched copy passes, so the failures above are the damage's.
    let copy = t.join("copy-intact");
    fs::create_dir(&copy).unwrap();
    for s in &segs {
        fs::copy(d.join(&s.name), copy.join(&s.name)).unwrap();
    }
    check_timeline(PgVersion::V18, &copy, &wal, 1, SEG, at, Some(first));
}

// ---------------------------------------------------------------------------
// SIGTERM while not streaming
// ---------------------------------------------------------------------------

/// SIGTERM while waiting to reconnect (the server is down): exit 0 at once, not after the
/// back-off delay; what was received before is on disk.
///
/// "At once" is an ordering against the tool's own announcement: the exit comes before the
/// retry that the warning (by its timestamp) said was due. The signal goes in an 8 s back-off,
/// so a loaded machine has seconds of slack, while a wait that ignored the signal would run
/// the full 8 s.
#[test]
fn sigterm_while_server_is_down_18() {
    let mut c = fault_cluster(PgVersion::V18, "");
    let t = TestDir::new("termdown");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = slot_segment(&c, "arch");
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    c.generate_wal(2);
    let target = server_end(&c);
    wait_received(&c, target, CATCH_UP);
    c.stop(Mode::Fast);
    // 1, 2, 4, then 8 s: some 7 s of waiting.
    wait_until(CATCH_UP, "a reconnect warning", || read_log(&log).contains("trying again in 8 s"));
    let status = child.signal_and_wait("TERM", STOP);
    let exited = seconds_since_midnight_utc();
    let out = read_log(&log);
    assert!(status.success(), "{out}");
    let warning = *lines_at(&out, "warning").last().unwrap();
    assert_eq!(retry_delay(warning), Some(8), "the last warning is the one the stop interrupted:\n{out}");
    let due = line_time(warning) + 8.0;
    // Midnight between the warning and the exit would put `exited` near 0.
    let exited = if exited + 43_200.0 < due { exited + 86_400.0 } else { exited };
    assert!(
        exited < due,
        "SIGTERM waited out the back-off: exit {:.2} s after the warning announcing 8 s:\n{out}",
        exited - line_time(warning)
    );
    eprintln!("exit {:.2} s after the warning announcing an 8 s back-off", exited - line_time(warning));
    c.start_again();
    check_timeline(PgVersion::V18, &d, &pg_wal(&c), 1, SEG, target, Some(first));
}

/// SIGTERM while the first connection hangs (a host that accepts TCP but never answers, as a
/// firewall or a hung server does): exit 0 at once, not after a TCP time-out.
///
/// libpq without connect_timeout waits for the answer for ever, so a stop that did not wake
/// the connect would never come: STOP (10 s, generous on a loaded machine) is the bound.
#[test]
fn sigterm_while_connecting() {
    use std::io::Read;
    let t = TestDir::new("termconn");
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Holds the one connection, once libpq has sent its first packet (SSLRequest, GSSENCRequest
    // or StartupMessage, 8 bytes at least) and so waits for our answer.
    let held = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(CATCH_UP)).unwrap();
        let mut first = [0u8; 8];
        conn.read_exact(&mut first).expect("libpq's first packet");
        conn
    });
    let mut cmd = crate::util::pgreceivewal();
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-D"])
        .arg(t.join("archive"))
        .stdout(std::process::Stdio::null())
        .stderr(support::append(&t.join("ours.log")));
    let mut child = KillOnDrop::spawn(&mut cmd);
    let _conn = held.join().unwrap();
    assert!(child.try_wait().unwrap().is_none(), "still connecting: {}", read_log(&t.join("ours.log")));
    let status = child.signal_and_wait("TERM", STOP);
    assert!(status.success(), "{status}: {}", read_log(&t.join("ours.log")));
}
