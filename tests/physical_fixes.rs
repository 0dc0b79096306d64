//! End-to-end proofs for the physical tools' fixes of issue 10 (defects 14, 16, 17, 18, 21,
//! 22): each test here failed on the code before its fix. docs/reliability.md names them.

use std::fs;
use std::time::Duration;

use crate::faults::support::{
    build_failfsync, fault_cluster, lsn, ours, read_log, seg_name, wait_received, SEG,
};
use crate::util::{wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

const CATCH_UP: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(10);

fn server_end(c: &Cluster) -> u64 {
    lsn(&c.current_lsn())
}

// ---------------------------------------------------------------------------
// Defect 14: a reused .partial gets its directory entry fsync'ed too
// ---------------------------------------------------------------------------

/// A first run leaves a `.partial`; a second run, under the fsync-recording shim, reopens it
/// and must fsync the archive directory after the file, as walmethods.c does on every open.
/// Before the fix only the file was fsync'ed, so a name an earlier run renamed but never made
/// durable stayed at the mercy of a power loss while flushes inside it were reported.
fn reused_partial_fsyncs_its_directory(version: PgVersion) {
    let c = fault_cluster(version, "");
    c.psql("CREATE TABLE pgrw_small (v text)");
    c.create_physical_slot("arch");
    c.switch_wal();
    let t = TestDir::new("reusedir");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.psql("INSERT INTO pgrw_small VALUES ('before the first run')");
    let target = server_end(&c);
    let seg = target / SEG;
    let mut first = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    wait_received(&c, target, CATCH_UP);
    let status = first.signal_and_wait("TERM", STOP);
    assert!(status.success(), "{status}: {}", read_log(&log));
    let partial = d.join(format!("{}.partial", seg_name(1, seg, SEG)));
    assert_eq!(fs::metadata(&partial).map(|m| m.len()).ok(), Some(SEG), "the first run left {partial:?}");

    let shim = build_failfsync(t.path());
    let record = t.join("fsyncs.log");
    let mut cmd = ours(&c, &d, &["-S", "arch", "-s", "1"], &log);
    // A trigger file that never exists: nothing fails, every fsync is only recorded.
    cmd.env("LD_PRELOAD", &shim).env("FAILFSYNC_TRIGGER", t.join("never")).env("FAILFSYNC_RECORD", &record);
    let mut second = KillOnDrop::spawn(&mut cmd);
    let partial_real = fs::canonicalize(&partial).unwrap();
    wait_until(CATCH_UP, "the second run to reopen the .partial", || {
        read_log(&record).contains(&*partial_real.to_string_lossy())
    });
    let status = second.signal_and_wait("TERM", STOP);
    assert!(status.success(), "{status}: {}", read_log(&log));

    let calls = read_log(&record);
    let lines: Vec<&str> = calls.lines().collect();
    let file_line = lines
        .iter()
        .position(|l| l.ends_with(&*partial_real.to_string_lossy()))
        .unwrap_or_else(|| panic!("no fsync of {partial_real:?}:\n{calls}"));
    let dir_real = fs::canonicalize(&d).unwrap();
    let dir_line = format!("fsync {}", dir_real.display());
    assert!(
        lines[file_line + 1..].iter().any(|l| *l == dir_line),
        "the archive directory was not fsync'ed after reopening {partial_real:?}:\n{calls}"
    );
}

#[test]
fn reused_partial_fsyncs_its_directory_15() {
    reused_partial_fsyncs_its_directory(PgVersion::V15);
}

#[test]
fn reused_partial_fsyncs_its_directory_18() {
    reused_partial_fsyncs_its_directory(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 21: pgrestorewal checks a segment's first page before serving it
// ---------------------------------------------------------------------------

/// An archive with metadata (system 7, 1 MiB segments) and segments 1 to 5 of timeline 1: 1
/// and 5 good, 2 zero-filled, 3 of another system, 4 with a later timeline in its header.
/// Before the fix every one of them was served (exit 0), and recovery reading zeros or another
/// cluster's WAL ends early and promotes.
#[test]
fn pgrestorewal_refuses_segments_that_are_not_this_archives_wal() {
    let t = TestDir::new("restorecheck");
    let archive = t.mkdir("archive");
    let pg_wal = t.mkdir("data/pg_wal");
    fs::write(archive.join(".pgreceivewal.meta"), format!("system_identifier=7\nwal_segment_size={SEG}\n"))
        .unwrap();
    let put = |n: u32, header: Option<[u8; 40]>| {
        let name = seg_name(1, u64::from(n), SEG);
        let mut data = vec![0u8; SEG as usize];
        if let Some(h) = header {
            data[..40].copy_from_slice(&h);
        }
        fs::write(archive.join(&name), data).unwrap();
        name
    };
    let good = |n: u32| crate::restore::long_header(&seg_name(1, u64::from(n), SEG), SEG, 7);
    let first = put(1, Some(good(1)));
    let zeros = put(2, None);
    let foreign = put(3, Some(crate::restore::long_header(&seg_name(1, 3, SEG), SEG, 8)));
    let mut later_tli = good(4);
    later_tli[4..8].copy_from_slice(&2u32.to_le_bytes());
    let wrong_tli = put(4, Some(later_tli));
    let last = put(5, Some(good(5)));
    let restore = |name: &str| {
        let o = crate::util::pgrestorewal()
            .current_dir(t.join("data"))
            .args(["-D"])
            .arg(&archive)
            .args([name, "pg_wal/RECOVERYXLOG"])
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    for name in [&first, &last] {
        assert_eq!(restore(name), (Some(0), String::new()), "{name}");
    }
    fs::remove_file(pg_wal.join("RECOVERYXLOG")).unwrap();
    for (name, why) in [
        (&zeros, "its first page has magic number 0000, which is no WAL page header".to_string()),
        (&foreign, "it is WAL of database system 8, but the archive holds WAL of database system 7 (from .pgreceivewal.meta)".into()),
        (&wrong_tli, "its first page says timeline 2, but the file name says timeline 1".into()),
    ] {
        let (code, err) = restore(name);
        assert_eq!(code, Some(255), "{name}: {err}");
        assert_eq!(
            err,
            format!(
                "pgrestorewal: error: refusing to serve \"{name}\": {why}; the file is damaged or not WAL of \
                 this archive, restore it from a copy of the archive\n"
            )
        );
        assert!(!pg_wal.join("RECOVERYXLOG").exists(), "nothing served for {name}");
    }
}

/// Several pgrestorewal processes restoring into one destination at once (a restarted
/// recovery while the old command still runs) must all succeed. Before the fix they shared one
/// temporary name and removed each other's file: "could not rename file" or "could not create
/// file", exit 255.
#[test]
fn concurrent_pgrestorewal_runs_to_one_destination_all_succeed() {
    const BIG: u64 = 16 << 20;
    let t = TestDir::new("restoreconc");
    let archive = t.mkdir("archive");
    t.mkdir("data/pg_wal");
    let name = seg_name(1, 3, BIG);
    let mut data = vec![0x5Au8; BIG as usize];
    data[..40].copy_from_slice(&crate::restore::long_header(&name, BIG, 7));
    fs::write(archive.join(&name), &data).unwrap();
    for round in 0..10 {
        let runs: Vec<KillOnDrop> = (0..4)
            .map(|_| {
                KillOnDrop::spawn(
                    crate::util::pgrestorewal()
                        .current_dir(t.join("data"))
                        .arg("-D")
                        .arg(&archive)
                        .args([name.as_str(), "pg_wal/RECOVERYXLOG"])
                        .stderr(std::process::Stdio::piped()),
                )
            })
            .collect();
        for run in runs {
            let o = run.into_inner().wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    assert_eq!(fs::read(t.join("data/pg_wal/RECOVERYXLOG")).unwrap(), data);
    let left: Vec<_> = fs::read_dir(t.join("data/pg_wal")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["RECOVERYXLOG"], "no temporary file left behind");
}
