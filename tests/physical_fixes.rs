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
