//! `pgrestorewal --verify` on real archives: a pgbench run archived by pgreceivewal (proved
//! whole by the fault suite's archive check) verifies as restorable with the right range,
//! read-only; then copies damaged on purpose, one kind of damage each, are each reported with
//! the file and the LSN, in text and in JSON, with exit status 1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::faults::support::{
    check_timeline, fault_cluster, fmt_lsn, lsn, ours, read_log, seg_name, segments, snapshot, stopped_at,
    wait_received, ReadOnly, SEG,
};
use crate::logical::{parse_json, J};
use crate::util::{pg_tool, pgrestorewal, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

const CATCH_UP: Duration = Duration::from_secs(120);

fn verify(dir: &Path, json: bool) -> Output {
    let mut cmd = pgrestorewal();
    cmd.args(["--verify", "-D"]).arg(dir);
    if json {
        cmd.arg("--format=json");
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs the check in both formats; returns the text report and the parsed JSON, after
/// checking both agree on the exit status `code`.
fn both(dir: &Path, code: i32) -> (String, J) {
    let t = verify(dir, false);
    assert_eq!(t.status.code(), Some(code), "{}", text(&t));
    let j = verify(dir, true);
    assert_eq!(j.status.code(), Some(code), "{}", text(&j));
    let doc = String::from_utf8(j.stdout).unwrap();
    (String::from_utf8(t.stdout).unwrap(), parse_json(doc.trim_end()))
}

fn arr<'a>(j: &'a J, k: &str) -> &'a [J] {
    match j.get(k) {
        Some(J::Arr(v)) => v,
        other => panic!("{k} is not an array in {j:?}: {other:?}"),
    }
}

fn num(j: &J, k: &str) -> u64 {
    match j.get(k) {
        Some(J::Num(n)) => n.parse().unwrap(),
        other => panic!("{k} is not a number: {other:?}"),
    }
}

/// The archived pgbench run and what the server says about it.
struct Archived {
    c: Cluster,
    _t: TestDir,
    dir: PathBuf,
    first: u64,
    reached: u64,
}

/// pgbench writes WAL while pgreceivewal archives it (a WAL switch in the middle, a
/// `.partial` at the end); the archive is proved byte-identical to the server's WAL.
fn archive_pgbench(version: PgVersion) -> Archived {
    let c = fault_cluster(version, "");
    let t = TestDir::new("verify");
    let (dir, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let first = lsn(&c.psql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'arch'")) / SEG;
    let mut child = KillOnDrop::spawn(&mut ours(&c, &dir, &["-S", "arch", "-s", "1"], &log));
    let bench = |args: &[&str]| {
        let out = pg_tool(version, "pgbench")
            .args(["-h", c.host(), "-p", &c.port().to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .unwrap();
        assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    bench(&["-i", "-s", "2", "-q"]);
    // While pgreceivewal writes, renames and starts segments, --verify of the live archive
    // must find it restorable every time (a .partial read while it grows, or renamed
    // complete between the listing and the reading, is no damage).
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let (stop, dir) = (stop.clone(), dir.clone());
        thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) || runs == 0 {
                let o = verify(&dir, false);
                assert_eq!(o.status.code(), Some(0), "verify of the live archive, run {runs}: {}", text(&o));
                runs += 1;
            }
            runs
        })
    };
    bench(&["-c", "2", "-t", "300"]);
    c.switch_wal();
    bench(&["-c", "2", "-t", "200"]);
    stop.store(true, Ordering::Relaxed);
    let runs = live.join().expect("every verify of the live archive exits 0");
    eprintln!("{version}: {runs} runs of --verify on the live archive");
    let target = lsn(&c.current_lsn());
    wait_received(&c, target, CATCH_UP);
    let status = child.signal_and_wait("TERM", Duration::from_secs(10));
    assert!(status.success(), "{}", read_log(&log));
    let reached = stopped_at(&read_log(&log));
    check_timeline(version, &dir, &c.data_dir().join("pg_wal"), 1, SEG, reached, Some(first));
    Archived { c, _t: t, dir, first, reached }
}

/// A copy of the archive to damage.
fn copy_of(a: &Archived, label: &str) -> PathBuf {
    let to = a.dir.with_file_name(format!("archive-{label}"));
    fs::create_dir_all(&to).unwrap();
    for e in fs::read_dir(&a.dir).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// A record of at least `min_len` bytes whose first 40 bytes sit on one page, in segment
/// `segno` from `offset` on: (its LSN, its length), as pg_waldump reads it in the server's
/// pg_wal (which has the `.partial`'s segment under its own name).
fn a_record(version: PgVersion, a: &Archived, segno: u64, offset: u64, min_len: u64) -> (u64, u64) {
    let out = pg_tool(version, "pg_waldump")
        .arg("-p")
        .arg(a.c.data_dir().join("pg_wal"))
        .args(["-t", "1", "-s", &fmt_lsn(segno * SEG + offset), "-n", "300"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in dump.lines() {
        let tot = line
            .split("len (rec/tot):")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|r| r.split('/').nth(1).and_then(|n| n.trim().parse::<u64>().ok()));
        let at = line.split("lsn: ").nth(1).map(|r| lsn(r.split(',').next().unwrap()));
        if let (Some(tot), Some(at)) = (tot, at) {
            if tot >= min_len && at % 8192 + 40 < 8192 && at / SEG == segno {
                return (at, tot);
            }
        }
    }
    panic!("no record of {min_len} bytes in segment {segno:X}:\n{dump}");
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut data = fs::read(path).unwrap();
    data[at as usize] ^= mask;
    fs::write(path, data).unwrap();
}

/// The one error finding of the report (all the damage was in one place).
fn the_error(j: &J) -> &J {
    let errors: Vec<&J> = arr(j, "findings").iter().filter(|f| f.str("severity") == "error").collect();
    assert_eq!(errors.len(), 1, "one error expected: {}", j.canon());
    errors[0]
}

fn verify_archive(version: PgVersion) {
    let a = archive_pgbench(version);
    let segs = segments(&a.dir, 1, SEG);
    let last = segs.last().unwrap();
    assert!(last.partial, "{segs:?}");
    assert!(segs.len() >= 12, "pgbench must span many segments: {segs:?}");
    let name = |segno: u64| seg_name(1, segno, SEG);

    // The whole archive: restorable, from the first segment to where the archiver stopped,
    // read without writing (a read-only bind mount; nothing changes, not even an mtime).
    let before = snapshot(&a.dir);
    let mtimes = |d: &Path| -> Vec<SystemTime> {
        let mut v: Vec<_> =
            fs::read_dir(d).unwrap().map(|e| e.unwrap().metadata().unwrap().modified().unwrap()).collect();
        v.sort();
        v
    };
    let mtimes_before = mtimes(&a.dir);
    let (report, j) = {
        let _ro = ReadOnly::mount(&a.dir);
        let started = Instant::now();
        let r = both(&a.dir, 0);
        let mb = segs.len() as f64 * (SEG >> 20) as f64;
        eprintln!("{version}: verified {mb} MB twice in {:?}", started.elapsed());
        r
    };
    assert_eq!(snapshot(&a.dir), before);
    assert_eq!(mtimes(&a.dir), mtimes_before);
    assert!(report.contains("restorable end to end: 0 errors"), "{report}");
    assert_eq!(j.get("restorable"), Some(&J::Bool(true)), "{}", j.canon());
    let tls = arr(&j, "timelines");
    assert_eq!(tls.len(), 1, "{}", j.canon());
    let tl = &tls[0];
    assert_eq!(tl.str("start"), fmt_lsn(a.first * SEG));
    let end = lsn(tl.str("end"));
    assert!(
        end >= a.reached && end < (last.segno + 1) * SEG,
        "end {} reached {}",
        fmt_lsn(end),
        fmt_lsn(a.reached)
    );
    assert_eq!(tl.str("restorable_to"), tl.str("end"));
    assert_eq!(tl.str("first_file"), name(a.first));
    assert_eq!(tl.str("partial"), last.name);
    assert_eq!(num(tl, "files"), segs.len() as u64);
    assert!(num(tl, "records") > 1000, "{}", j.canon());
    assert!(arr(tl, "gaps").is_empty());
    assert_eq!(j.str("system_identifier"), a.c.psql("SELECT system_identifier FROM pg_control_system()"));
    // PostgreSQL's own reader finds as many records in the same range.
    let t = TestDir::new("waldump");
    for s in &segs {
        fs::hard_link(a.dir.join(&s.name), t.join(s.name.trim_end_matches(".partial"))).unwrap();
    }
    let out = pg_tool(version, "pg_waldump")
        .args(["--stats", "-t", "1", "-p"])
        .arg(t.path())
        .args(["-s", &fmt_lsn(a.first * SEG), "-e", &fmt_lsn(end)])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    let total: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Total"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("no total in pg_waldump --stats: {stats}{}", String::from_utf8_lossy(&out.stderr))
        });
    assert_eq!(num(tl, "records"), total, "{stats}");

    let mid = a.first + 4;

    // A flipped bit in the middle of a record: its CRC, with its LSN.
    let d = copy_of(&a, "crc");
    let (rec, _) = a_record(version, &a, mid, SEG / 2, 64);
    flip(&d.join(name(mid)), rec % SEG + 32, 0x04);
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!(
        (e.str("kind"), e.str("lsn"), e.str("file")),
        ("crc", fmt_lsn(rec).as_str(), name(mid).as_str())
    );
    assert!(
        report.contains(&format!(
            "error: \"{}\": record at {}: incorrect resource manager data checksum",
            name(mid),
            fmt_lsn(rec)
        )),
        "{report}"
    );
    assert!(report.contains("NOT restorable end to end: 1 errors"), "{report}");
    assert_eq!(arr(&j, "timelines")[0].str("restorable_to"), fmt_lsn(rec));

    // A removed segment: a gap.
    let d = copy_of(&a, "gap");
    fs::remove_file(d.join(name(mid))).unwrap();
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!((e.str("kind"), e.str("lsn")), ("gap", fmt_lsn(mid * SEG).as_str()));
    let gap = &arr(&arr(&j, "timelines")[0], "gaps")[0];
    assert_eq!((gap.str("first_missing"), gap.str("last_missing")), (name(mid).as_str(), name(mid).as_str()));
    assert!(
        report.contains(&format!(
            "error: timeline 1: WAL from {} to {} is missing",
            fmt_lsn(mid * SEG),
            fmt_lsn((mid + 1) * SEG)
        )),
        "{report}"
    );

    // A truncated segment: the wrong size.
    let d = copy_of(&a, "short");
    let f = fs::OpenOptions::new().write(true).open(d.join(name(mid))).unwrap();
    f.set_len(SEG - 8192).unwrap();
    drop(f);
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!((e.str("kind"), e.str("file")), ("wrong_size", name(mid).as_str()));
    assert!(report.contains(&format!("\"{}\" has {} bytes", name(mid), SEG - 8192)), "{report}");

    // A segment of another cluster: its long header names another system identifier.
    let d = copy_of(&a, "sysid");
    flip(&d.join(name(mid)), 24, 0x01);
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!((e.str("kind"), e.str("lsn")), ("system_identifier", fmt_lsn(mid * SEG).as_str()));
    assert!(report.contains("but the archive holds WAL of database system"), "{report}");

    // A flipped bit in a page header (the page's own address).
    let d = copy_of(&a, "page");
    let page = mid * SEG + 16 * 8192;
    flip(&d.join(name(mid)), page % SEG + 9, 0x02);
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!((e.str("kind"), e.str("lsn")), ("page_header", fmt_lsn(page).as_str()));
    assert!(report.contains(&format!("WAL page at {}: unexpected pageaddr", fmt_lsn(page))), "{report}");

    // A history file whose switch point is inside a record of timeline 1.
    let d = copy_of(&a, "history");
    let (rec, _) = a_record(version, &a, mid, SEG / 2, 64);
    let bogus = rec + 16;
    fs::write(d.join("00000002.history"), format!("1\t{}\tno recovery target specified\n", fmt_lsn(bogus)))
        .unwrap();
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!(
        (e.str("kind"), e.str("lsn"), e.str("file")),
        ("history", fmt_lsn(bogus).as_str(), "00000002.history")
    );
    assert!(report.contains("but no record of timeline 1 in the archive ends there"), "{report}");
    // ... and one that says timeline 2 begins after WAL of it that is in the archive.
    let d = copy_of(&a, "history2");
    let at = (mid + 2) * SEG + 0x100;
    fs::write(d.join("00000002.history"), format!("1\t{}\tno recovery target specified\n", fmt_lsn(at)))
        .unwrap();
    fs::copy(d.join(name(mid)), d.join(seg_name(2, mid, SEG))).unwrap();
    let (report, j) = both(&d, 1);
    let kinds: Vec<&str> = arr(&j, "findings").iter().map(|f| f.str("kind")).collect();
    assert!(kinds.contains(&"history"), "{}", j.canon());
    assert!(
        report.contains(&format!("timeline 2 has WAL from {}, before {}", fmt_lsn(mid * SEG), fmt_lsn(at))),
        "{report}"
    );

    // Damage in the .partial before WAL that was written after it is no end of the WAL.
    let d = copy_of(&a, "partial");
    let (rec, _) = a_record(version, &a, last.segno, 0, 64);
    if rec + 3 * 8192 < a.reached {
        flip(&d.join(&last.name), rec % SEG + 32, 0x04);
        let (_, j) = both(&d, 1);
        let e = the_error(&j);
        assert_eq!((e.str("kind"), e.str("lsn")), ("crc", fmt_lsn(rec).as_str()));
    }
}

#[test]
fn verify_archive_15() {
    verify_archive(PgVersion::V15);
}

#[test]
fn verify_archive_18() {
    verify_archive(PgVersion::V18);
}

/// A standby archived by pgreceivewal is promoted: timeline 1 ends in a `.partial` at the
/// switch point, timeline 2 starts at that segment with a copy of timeline 1's WAL up to it.
/// Both verify as restorable, and a history file that moves the switch point contradicts
/// the segments.
fn verify_timeline_switch(version: PgVersion) {
    let p = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    p.generate_wal(2);
    let s = Cluster::builder(version).standby_of(&p).conf("autovacuum = off").start();
    let t = TestDir::new("verify-tli");
    let (dir, log) = (t.join("archive"), t.join("ours.log"));
    s.psql("SELECT 1");
    let mut child = KillOnDrop::spawn(&mut ours(&s, &dir, &["-n"], &log));
    p.generate_wal(2);
    let target = p.current_lsn();
    wait_until(CATCH_UP, "the standby to replay", || {
        s.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{target}'")) == "t"
    });
    wait_until(CATCH_UP, "the archiver to receive", || {
        s.psql(&format!("SELECT count(*) FROM pg_stat_replication WHERE write_lsn >= '{target}'")) == "1"
    });
    s.promote();
    s.generate_wal(2);
    wait_until(CATCH_UP, "the archiver to hold all of the server's WAL on timeline 2", || {
        s.psql("SELECT count(*) FROM pg_stat_replication WHERE write_lsn = pg_current_wal_lsn()") == "1"
    });
    assert!(child.signal_and_wait("TERM", Duration::from_secs(10)).success(), "{}", read_log(&log));
    let history = fs::read_to_string(dir.join("00000002.history")).unwrap();
    let switch = lsn(history.split('\t').nth(1).unwrap());

    let (report, j) = both(&dir, 0);
    let tls = arr(&j, "timelines");
    assert_eq!(tls.len(), 2, "{report}");
    let (t1, t2) = (&tls[0], &tls[1]);
    assert_eq!(t1.str("end"), fmt_lsn(switch), "timeline 1 ends at the switch point: {report}");
    assert!(t1.str("partial").starts_with("00000001"), "{report}");
    assert_eq!(t2.str("start"), fmt_lsn(switch / SEG * SEG), "{report}");
    assert!(lsn(t2.str("end")) > switch + (1 << 20), "{report}");
    assert!(report.contains("restorable end to end"), "{report}");

    // The switch point moved into the last record of timeline 1.
    let d = t.join("moved-back");
    fs::create_dir_all(&d).unwrap();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let moved = switch - 8;
    fs::write(d.join("00000002.history"), history.replace(&fmt_lsn(switch), &fmt_lsn(moved))).unwrap();
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!((e.str("kind"), e.str("lsn")), ("history", fmt_lsn(moved).as_str()), "{report}");
    assert!(report.contains("but no record of timeline 1 in the archive ends there"), "{report}");
    // ... and past it: timeline 2's copy of timeline 1 is then longer than timeline 1.
    let moved = switch + 8;
    fs::write(d.join("00000002.history"), history.replace(&fmt_lsn(switch), &fmt_lsn(moved))).unwrap();
    let (report, j) = both(&d, 1);
    let e = the_error(&j);
    assert_eq!((e.str("kind"), e.str("lsn")), ("history", fmt_lsn(switch).as_str()), "{report}");
    assert!(report.contains("does not begin with a copy of"), "{report}");
}

#[test]
fn verify_timeline_switch_15() {
    verify_timeline_switch(PgVersion::V15);
}

#[test]
fn verify_timeline_switch_18() {
    verify_timeline_switch(PgVersion::V18);
}
