//! Disk back-pressure (issue 12, item 3), end to end against PostgreSQL 15 and 18: the archive
//! lives on a small tmpfs that is filled while WAL keeps coming. Below the `--min-free` floor,
//! and on a hard ENOSPC with the floor off, the tools must warn once, stay up on the same
//! connection (no reconnect, no crash loop, past the server's wal_sender_timeout), report only
//! what is on disk, resume on their own once space is freed, and end with an archive that is
//! byte-identical to PostgreSQL's own pg_receivewal's, with no gap; pgrecvlogical with no torn
//! line and no lost change. A stop while paused exits cleanly and reports nothing unwritten.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::faults::support::{
    append, check_timeline, fault_cluster, fmt_lsn, lines_at, lsn, messages_at, ours, read_log, segments,
    slot_restart_lsn, stopped_at, wait_received, Load, Tmpfs, SEG,
};
use crate::logical::{
    assert_tables_equal, logical_cluster, output_lines, parse_json, spawn, stop, tool, wait_caught_up, Replay,
};
use crate::util::{pg_tool, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

const CATCH_UP: Duration = Duration::from_secs(90);
const STOP: Duration = Duration::from_secs(10);
/// Short, so that a paused session that stopped answering would be cut during the test.
const SENDER_TIMEOUT: &str = "wal_sender_timeout = '4s'";

/// Bytes free on the filesystem holding `dir`, as statvfs reports them to an unprivileged
/// writer (what the tools measure).
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(dir).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// Writes a filler file so that about `leave` bytes stay free.
fn fill_leaving(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let take = free_bytes(dir).saturating_sub(leave);
    fs::write(&path, vec![0x55u8; take as usize]).unwrap();
    path
}

/// Fills the filesystem of `dir` to the last byte: appends until ENOSPC, in ever smaller
/// pieces.
fn fill_completely(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0x55u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    assert_eq!(free_bytes(dir), 0, "the filler leaves nothing free");
    path
}

/// The walsender of the connection named `app`: its pid, or None when not connected.
fn walsender(c: &Cluster, app: &str) -> Option<u32> {
    let s = c.psql(&format!("SELECT pid FROM pg_stat_replication WHERE application_name = '{app}'"));
    s.lines().next().and_then(|l| l.trim().parse().ok())
}

fn count(log: &str, level: &str, what: &str) -> usize {
    lines_at(log, level).iter().filter(|l| l.contains(what)).count()
}

/// PostgreSQL's own pg_receivewal into an unconstrained directory: the reference.
fn reference(c: &Cluster, dir: &Path, log: &Path) -> KillOnDrop {
    c.create_physical_slot("ref");
    // pg_receivewal wants the directory to exist.
    fs::create_dir_all(dir).unwrap();
    let mut cmd = pg_tool(c.version(), "pg_receivewal");
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(["-S", "ref", "-s", "1"]);
    KillOnDrop::spawn(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(append(log)))
}

/// Every complete segment pgreceivewal archived from `first` on is also complete in the
/// reference and byte-identical to it, with no gap in between.
fn same_as_reference(ours_dir: &Path, ref_dir: &Path, first: u64) {
    let ours: Vec<_> = segments(ours_dir, 1, SEG).into_iter().filter(|s| !s.partial).collect();
    assert_eq!(ours.first().map(|s| s.segno), Some(first), "the archive starts at the slot's segment");
    let theirs: Vec<_> = segments(ref_dir, 1, SEG).into_iter().filter(|s| !s.partial).collect();
    for (i, s) in ours.iter().enumerate() {
        assert_eq!(s.segno, first + i as u64, "gap before {}", s.name);
        let r = theirs
            .iter()
            .find(|r| r.segno == s.segno)
            .unwrap_or_else(|| panic!("pg_receivewal has no complete {}", s.name));
        let (a, b) = (fs::read(ours_dir.join(&s.name)).unwrap(), fs::read(ref_dir.join(&r.name)).unwrap());
        assert!(a == b, "{} differs from pg_receivewal's", s.name);
    }
}

/// While writing is paused: the same process, the same walsender past several
/// wal_sender_timeouts, one warning, no reconnect, and nothing reported past what is on disk.
fn check_paused(c: &Cluster, child: &mut KillOnDrop, d: &Path, log: &Path, sender: u32, warning: &str) {
    // Longer than twice the server's wal_sender_timeout: a session that stopped answering
    // while blocked on its writer would be cut meanwhile.
    thread::sleep(Duration::from_secs(10));
    let out = read_log(log);
    assert!(child.try_wait().unwrap().is_none(), "a full disk is not fatal:\n{out}");
    assert_eq!(walsender(c, "pgreceivewal"), Some(sender), "the same connection stays:\n{out}");
    assert_eq!(count(&out, "warning", warning), 1, "one warning per episode:\n{out}");
    assert_eq!(count(&out, "warning", "trying again"), 0, "no reconnect:\n{out}");
    // What is on the disk: whole segments only, and the slot not past them.
    for n in crate::faults::support::names(d) {
        assert!(!n.ends_with(".pgreceivewal-tmp"), "temporary file left on the full disk: {n}");
        assert_eq!(fs::metadata(d.join(&n)).unwrap().len(), SEG, "{n} is not a whole segment");
    }
    let on_disk = segments(d, 1, SEG).last().map_or(0, |s| (s.segno + 1) * SEG);
    let restart = slot_restart_lsn(c, "arch").unwrap();
    assert!(restart <= on_disk, "slot at {} but the archive ends at {}", fmt_lsn(restart), fmt_lsn(on_disk));
    // Behind the server: the pause held WAL back, and the server kept it for the slot.
    assert!(lsn(&c.current_lsn()) > on_disk, "the server moved on during the pause");
}

/// Ends a physical test: catch up, stop both, check the archive against the server and the
/// reference.
fn finish(
    c: &Cluster,
    child: &mut KillOnDrop,
    refp: &mut KillOnDrop,
    d: &Path,
    ref_dir: &Path,
    (log, ref_log): (&Path, &Path),
    first: u64,
) {
    let target = lsn(&c.current_lsn());
    wait_received(c, target, CATCH_UP);
    wait_until(CATCH_UP, &format!("pg_receivewal to receive as much:\n{}", read_log(ref_log)), || {
        let s = c.psql("SELECT write_lsn FROM pg_stat_replication WHERE application_name = 'pg_receivewal'");
        !s.is_empty() && lsn(&s) >= target
    });
    let status = child.signal_and_wait("TERM", STOP);
    let out = read_log(log);
    assert!(status.success(), "SIGTERM must exit 0, got {status}:\n{out}");
    let at = stopped_at(&out);
    let _ = refp.signal_and_wait("INT", STOP);
    check_timeline(c.version(), d, &c.data_dir().join("pg_wal"), 1, SEG, at, Some(first));
    same_as_reference(d, ref_dir, first);
    assert!(lines_at(&out, "error").is_empty(), "{out}");
    for l in lines_at(&out, "warning")
        .into_iter()
        .chain(lines_at(&out, "info").into_iter().filter(|l| l.contains("resuming")))
    {
        eprintln!("{l}");
    }
}

/// Below the floor: a new segment is not started, writing resumes once the filler is gone.
fn floor_pauses_and_resumes(version: PgVersion) {
    let c = fault_cluster(version, SENDER_TIMEOUT);
    let t = TestDir::new("minfree");
    let (log, ref_dir, ref_log) = (t.join("ours.log"), t.join("ref"), t.join("ref.log"));
    let small = Tmpfs::mount(t.join("small"), 32);
    let d = small.path().join("archive");
    c.create_physical_slot("arch");
    let first = slot_restart_lsn(&c, "arch").unwrap() / SEG;
    let mut refp = reference(&c, &ref_dir, &ref_log);
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1", "--min-free=8MB"], &log));
    c.generate_wal(3);
    wait_until(CATCH_UP, "two complete segments", || {
        d.exists() && segments(&d, 1, SEG).iter().filter(|s| !s.partial).count() >= 2
    });
    let sender = walsender(&c, "pgreceivewal").expect("streaming");

    // Half a segment above the floor: the next segment would take the disk below it.
    let filler = fill_leaving(small.path(), (8 << 20) + (512 << 10));
    let load = Load::start(&c, 50, Duration::from_millis(100));
    wait_until(CATCH_UP, "the floor warning", || count(&read_log(&log), "warning", "below the floor") > 0);
    let line =
        messages_at(&read_log(&log), "warning").into_iter().find(|l| l.contains("below the floor")).unwrap();
    assert!(line.contains("--min-free is 8.0 MB"), "{line}");
    assert!(line.contains("replication slot \"arch\""), "{line}");
    assert!(line.contains("so nothing is lost"), "{line}");
    check_paused(&c, &mut child, &d, &log, sender, "below the floor");

    fs::remove_file(&filler).unwrap();
    wait_until(CATCH_UP, "writing to resume", || count(&read_log(&log), "info", "resuming writes") > 0);
    load.stop();
    c.generate_wal(2);
    assert_eq!(walsender(&c, "pgreceivewal"), Some(sender), "resumed on the same connection");
    finish(&c, &mut child, &mut refp, &d, &ref_dir, (&log, &ref_log), first);
}

/// The floor off and the disk full to the last byte: the padding of the next segment fails
/// with ENOSPC; its temporary file is removed and the same segment is tried again later.
fn enospc_pauses_and_resumes(version: PgVersion) {
    let c = fault_cluster(version, SENDER_TIMEOUT);
    let t = TestDir::new("enospc");
    let (log, ref_dir, ref_log) = (t.join("ours.log"), t.join("ref"), t.join("ref.log"));
    let small = Tmpfs::mount(t.join("small"), 16);
    let d = small.path().join("archive");
    c.create_physical_slot("arch");
    let first = slot_restart_lsn(&c, "arch").unwrap() / SEG;
    let mut refp = reference(&c, &ref_dir, &ref_log);
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1", "--min-free=0"], &log));
    c.generate_wal(3);
    wait_until(CATCH_UP, "two complete segments", || {
        d.exists() && segments(&d, 1, SEG).iter().filter(|s| !s.partial).count() >= 2
    });
    let sender = walsender(&c, "pgreceivewal").expect("streaming");

    let filler = fill_completely(small.path());
    let load = Load::start(&c, 50, Duration::from_millis(100));
    let full = "No space left on device";
    wait_until(CATCH_UP, "the disk-full warning", || count(&read_log(&log), "warning", full) > 0);
    let line = messages_at(&read_log(&log), "warning").into_iter().find(|l| l.contains(full)).unwrap();
    assert!(line.contains(&format!("Free at least {SEG} bytes in \"{}\"", d.display())), "{line}");
    assert!(line.contains("; writing is paused"), "{line}");
    assert!(line.contains("Writing resumes on its own once space is free"), "{line}");
    check_paused(&c, &mut child, &d, &log, sender, full);

    fs::remove_file(&filler).unwrap();
    wait_until(CATCH_UP, "writing to resume", || count(&read_log(&log), "info", "resuming writes") > 0);
    load.stop();
    c.generate_wal(2);
    assert_eq!(walsender(&c, "pgreceivewal"), Some(sender), "resumed on the same connection");
    finish(&c, &mut child, &mut refp, &d, &ref_dir, (&log, &ref_log), first);
}

/// SIGTERM while paused: a clean exit (status 0, promptly), no temporary file, and the slot
/// not moved past what is on disk (nothing was: the disk is below the default floor at once).
fn stop_while_paused(version: PgVersion) {
    let c = fault_cluster(version, "");
    let t = TestDir::new("minfreestop");
    let log = t.join("ours.log");
    let small = Tmpfs::mount(t.join("small"), 8);
    let d = small.path().join("archive");
    c.create_physical_slot("arch");
    let before = slot_restart_lsn(&c, "arch").unwrap();
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    let load = Load::start(&c, 50, Duration::from_millis(100));
    wait_until(CATCH_UP, "the floor warning", || count(&read_log(&log), "warning", "below the floor") > 0);
    // Until the channel is full and the receiver waits on it, too.
    wait_until(CATCH_UP, "the server to be 2 MB ahead", || lsn(&c.current_lsn()) > before + 2 * SEG);
    let status = child.signal_and_wait("TERM", STOP);
    load.stop();
    let out = read_log(&log);
    assert!(status.success(), "SIGTERM while paused must exit 0, got {status}:\n{out}");
    assert!(out.contains("stopped waiting for disk space"), "{out}");
    assert!(crate::faults::support::names(&d).is_empty(), "nothing written below the floor");
    let after = slot_restart_lsn(&c, "arch").unwrap();
    assert!(
        after <= before.max(before / SEG * SEG + SEG),
        "slot moved to {} with nothing on disk",
        fmt_lsn(after)
    );
    assert!(lines_at(&out, "error").is_empty(), "{out}");
}

#[test]
fn floor_pauses_and_resumes_15() {
    floor_pauses_and_resumes(PgVersion::V15);
}

#[test]
fn floor_pauses_and_resumes_18() {
    floor_pauses_and_resumes(PgVersion::V18);
}

#[test]
fn enospc_pauses_and_resumes_15() {
    enospc_pauses_and_resumes(PgVersion::V15);
}

#[test]
fn enospc_pauses_and_resumes_18() {
    enospc_pauses_and_resumes(PgVersion::V18);
}

#[test]
fn stop_while_paused_15() {
    stop_while_paused(PgVersion::V15);
}

#[test]
fn stop_while_paused_18() {
    stop_while_paused(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// pgrecvlogical
// ---------------------------------------------------------------------------

/// The output directory full to the last byte (floor off): an append fails with ENOSPC, maybe
/// after a short write; the writer cuts it back, pauses, and appends again once space is free.
/// No line is torn at any time, no change is lost, none is written twice.
fn logical_enospc(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lenospc");
    let log = t.join("tool.log");
    let small = Tmpfs::mount(t.join("small"), 8);
    let dir = small.path().join("out");
    c.psql("CREATE TABLE w (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE w");
    let out = tool(&c, &["-S", "cdc", "--create-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = ["-S", "cdc", "-P", "pub", "-D", dir.to_str().unwrap(), "--min-free=0"];
    let mut child = spawn(&mut tool(&c, &args), &log);
    let insert = |ids: std::ops::Range<u32>| {
        c.psql(&format!(
            "INSERT INTO w SELECT g, repeat('v', 3000) || g FROM generate_series({}, {}) g",
            ids.start,
            ids.end - 1
        ));
    };
    insert(1..21);
    wait_caught_up(&c, "cdc", &mut child, &log);
    let sender = walsender(&c, "pgrecvlogical").expect("streaming");

    let filler = fill_completely(small.path());
    for i in 0..5 {
        insert(21 + i * 20..41 + i * 20);
    }
    let full = "No space left on device";
    wait_until(CATCH_UP, "the disk-full warning", || count(&read(&log), "warning", full) > 0);
    thread::sleep(Duration::from_secs(3));
    let text = read(&log);
    assert!(child.try_wait().unwrap().is_none(), "a full disk is not fatal:\n{text}");
    assert_eq!(count(&text, "warning", full), 1, "one warning:\n{text}");
    assert!(text.contains("The server keeps the WAL for replication slot \"cdc\""), "{text}");
    assert_eq!(walsender(&c, "pgrecvlogical"), Some(sender), "the same connection stays");
    let confirmed = c.psql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'cdc'");
    assert!(lsn(&confirmed) < lsn(&c.current_lsn()), "not everything is confirmed while paused");
    check_lines(&dir);

    fs::remove_file(&filler).unwrap();
    wait_until(CATCH_UP, "writing to resume", || count(&read(&log), "info", "resuming writes") > 0);
    insert(121..141);
    wait_caught_up(&c, "cdc", &mut child, &log);
    assert_eq!(walsender(&c, "pgrecvlogical"), Some(sender), "resumed on the same connection");
    stop(&mut child, &log);
    check_lines(&dir);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.w"]);
    replay.assert_no_duplicates();
    let text = read(&log);
    assert_eq!(count(&text, "warning", "trying again"), 0, "no reconnect:\n{text}");
    assert!(lines_at(&text, "error").is_empty(), "{text}");
    eprintln!("{text}");
}

/// The initial snapshot (written before streaming starts) on a disk below the floor: the
/// writer pauses with the channel full; no status update may be sent then (there is no COPY
/// yet), and SIGTERM must end the run at once with status 0 and the snapshot not recorded as
/// done. With space, the next run writes the snapshot, once.
fn logical_snapshot_below_the_floor(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lsnapfull");
    let log = t.join("tool.log");
    let small = Tmpfs::mount(t.join("small"), 48);
    let dir = small.path().join("out");
    c.psql(
        "CREATE TABLE s (id int PRIMARY KEY, v text); \
         INSERT INTO s SELECT g, repeat('s', 500) FROM generate_series(1, 40000) g; \
         CREATE PUBLICATION pub FOR ALL TABLES",
    );
    let d = dir.to_str().unwrap();
    let args = |floor| ["-S", "snap", "-P", "pub", "--snapshot", "--create-slot-if-missing", "-D", d, floor];
    // 48 MiB is below the default floor of 64 MB from the start.
    let mut child = spawn(&mut tool(&c, &args("--min-free=64MB")), &log);
    wait_until(CATCH_UP, "the floor warning", || count(&read(&log), "warning", "below the floor") > 0);
    // Long enough for the snapshot's 20 MB to fill the channel (16 batches of 1 MB).
    thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "{}", read(&log));
    let status = child.signal_and_wait("TERM", STOP);
    let text = read(&log);
    assert!(status.success(), "SIGTERM while paused must exit 0, got {status}:\n{text}");
    assert!(!text.contains("initial snapshot written"), "{text}");
    assert!(lines_at(&text, "error").is_empty(), "{text}");

    let mut child = spawn(&mut tool(&c, &args("--min-free=1MB")), &log);
    c.psql("INSERT INTO s VALUES (50000, 'after')");
    wait_caught_up(&c, "snap", &mut child, &log);
    stop(&mut child, &log);
    let text = read(&log);
    assert_eq!(text.matches("initial snapshot written: ").count(), 1, "{text}");
    check_lines(&dir);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.s"]);
    replay.assert_no_duplicates();
}

#[test]
fn logical_snapshot_below_the_floor_15() {
    logical_snapshot_below_the_floor(PgVersion::V15);
}

#[test]
fn logical_snapshot_below_the_floor_18() {
    logical_snapshot_below_the_floor(PgVersion::V18);
}

fn read(log: &Path) -> String {
    read_log(log)
}

/// Every output file ends with a whole line, and every line is one JSON object.
fn check_lines(dir: &Path) {
    for p in crate::logical::output_files(dir) {
        let bytes = fs::read(&p).unwrap();
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{} ends in a torn line", p.display());
    }
    for l in output_lines(dir) {
        let _ = parse_json(&l);
    }
}

#[test]
fn logical_enospc_15() {
    logical_enospc(PgVersion::V15);
}

#[test]
fn logical_enospc_18() {
    logical_enospc(PgVersion::V18);
}
