//! End-to-end tests of pgreceivewal against real PostgreSQL 15 and 18 servers, side by side
//! with each version's own pg_receivewal on the same slot-held WAL range.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::util::{
    pg_tool, pgreceivewal, wait_for_exit, wait_until, Cluster, KillOnDrop, PgVersion, TestDir,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Our archiver on `dir`, with the cluster's connection flags.
fn ours(c: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd
}

/// PostgreSQL's own pg_receivewal of the cluster's version on `dir` (which it needs to exist).
fn theirs(c: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    fs::create_dir_all(dir).unwrap();
    let mut cmd = pg_tool(c.version(), "pg_receivewal");
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd
}

/// Runs a command to completion, stderr into `log`; panics on time-out.
fn run(cmd: &mut Command, log: &Path) -> (ExitStatus, String) {
    let f = fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(f);
    let mut child = KillOnDrop::spawn(cmd);
    let status = wait_for_exit(&mut child, RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish in {RUN_TIMEOUT:?}"));
    (status, fs::read_to_string(log).unwrap_or_default())
}

fn run_ok(cmd: &mut Command, log: &Path) -> String {
    let (status, out) = run(cmd, log);
    assert!(status.success(), "{cmd:?} failed ({status}):\n{out}");
    out
}

/// The WAL file names in an archive (our lock and metadata files are not WAL).
fn wal_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Same names, and every file byte for byte the same (`cmp`).
fn assert_same_archive(theirs: &Path, ours: &Path) {
    let (a, b) = (wal_files(theirs), wal_files(ours));
    assert_eq!(a, b, "archives hold different files: pg_receivewal {a:?}, pgreceivewal {b:?}");
    assert!(!a.is_empty(), "empty archives prove nothing");
    for name in &a {
        let (x, y) = (fs::read(theirs.join(name)).unwrap(), fs::read(ours.join(name)).unwrap());
        assert!(x == y, "{name} differs between pg_receivewal and pgreceivewal");
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// An end position just inside the WAL written so far: `--endpos` stops once the received
/// position passes it, so it must not be the very end of an idle server's WAL.
fn endpos_before_end(c: &Cluster) -> String {
    c.psql("SELECT pg_current_wal_lsn() - 1")
}

/// Writes WAL across several segments, then runs pg_receivewal and pgreceivewal on the same
/// range (each on its own slot that held the WAL) and compares the archives file by file.
/// The comparison is fair only if the server wrote no WAL between the two runs (the
/// background writer logs a running-transactions record every 15 s after activity); if it
/// did, the attempt is repeated on a fresh pair of slots.
fn compare_with_pg_receivewal(version: PgVersion, segsize_mb: u32, wal_mb: u32) {
    let c = Cluster::builder(version).wal_segsize_mb(segsize_mb).conf("autovacuum = off").start();
    let t = TestDir::new("cmp");
    for attempt in 1..=5 {
        let (s1, s2) = (format!("theirs{attempt}"), format!("ours{attempt}"));
        c.create_physical_slot(&s1);
        c.create_physical_slot(&s2);
        c.generate_wal(wal_mb);
        c.switch_wal();
        c.generate_wal(wal_mb.min(2));
        let before = c.current_lsn();
        let endpos = endpos_before_end(&c);
        let (d1, d2) = (t.join(format!("theirs{attempt}")), t.join(format!("ours{attempt}")));
        run_ok(&mut theirs(&c, &d1, &["-S", &s1, "-n", "-E", &endpos]), &t.join("theirs.log"));
        let log = run_ok(&mut ours(&c, &d2, &["-S", &s2, "-n", "-E", &endpos]), &t.join("ours.log"));
        if c.current_lsn() != before {
            eprintln!("attempt {attempt}: the server wrote WAL during the runs; trying again");
            continue;
        }
        assert_same_archive(&d1, &d2);
        let files = wal_files(&d2);
        assert_eq!(
            files.iter().filter(|n| n.ends_with(".partial")).count(),
            1,
            "exactly one .partial: {files:?}"
        );
        assert!(files.len() >= 3, "several segments: {files:?}");
        assert_eq!(mode(&d2), 0o700);
        for f in &files {
            assert_eq!(mode(&d2.join(f)), 0o600, "{f}");
        }
        assert!(log.contains("passed end position"), "{log}");
        return;
    }
    panic!("the server never stayed idle long enough to compare the archives");
}

#[test]
fn same_files_as_pg_receivewal_15_1mb() {
    compare_with_pg_receivewal(PgVersion::V15, 1, 4);
}

#[test]
fn same_files_as_pg_receivewal_18_1mb() {
    compare_with_pg_receivewal(PgVersion::V18, 1, 4);
}

#[test]
fn same_files_as_pg_receivewal_15_16mb() {
    compare_with_pg_receivewal(PgVersion::V15, 16, 34);
}

#[test]
fn same_files_as_pg_receivewal_18_16mb() {
    compare_with_pg_receivewal(PgVersion::V18, 16, 34);
}

/// SIGTERM mid-stream exits 0 with what was received on disk; a restart resumes from the
/// archive with no gap: the result equals one uninterrupted pg_receivewal run.
fn resume_after_stop(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    let t = TestDir::new("resume");
    c.create_physical_slot("theirs");
    c.create_physical_slot("ours");
    let d = t.join("ours");
    let mut first = KillOnDrop::spawn(
        ours(&c, &d, &["-S", "ours", "--synchronous"]).stderr(fs::File::create(t.join("first.log")).unwrap()),
    );
    c.generate_wal(3);
    let target = c.current_lsn();
    wait_until(Duration::from_secs(60), "pgreceivewal to flush the generated WAL", || {
        c.psql(&format!(
            "SELECT flush_lsn >= '{target}' FROM pg_stat_replication WHERE application_name = 'pgreceivewal'"
        )) == "t"
    });
    // How soon a stop takes effect is for the SIGTERM tests in faults.rs; here it is what the
    // stop leaves on disk.
    let status = first.signal_and_wait("TERM", Duration::from_secs(10));
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}: {}",
        fs::read_to_string(t.join("first.log")).unwrap()
    );
    let partials: Vec<String> = wal_files(&d).into_iter().filter(|n| n.ends_with(".partial")).collect();
    assert_eq!(partials.len(), 1, "{:?}", wal_files(&d));

    for attempt in 1..=5 {
        c.generate_wal(3);
        let before = c.current_lsn();
        let endpos = endpos_before_end(&c);
        let dt = t.join(format!("theirs{attempt}"));
        run_ok(&mut ours(&c, &d, &["-S", "ours", "-n", "-E", &endpos]), &t.join("second.log"));
        run_ok(&mut theirs(&c, &dt, &["-S", "theirs", "-n", "-E", &endpos]), &t.join("theirs.log"));
        if c.current_lsn() != before {
            eprintln!("attempt {attempt}: the server wrote WAL during the runs; trying again");
            continue;
        }
        // pg_receivewal started where the slot held WAL; we started earlier, at the first
        // run's start: compare the range both have.
        let theirs_files = wal_files(&dt);
        let ours_files = wal_files(&d);
        for name in &theirs_files {
            assert!(ours_files.contains(name), "{name} missing from the resumed archive: {ours_files:?}");
            assert!(fs::read(dt.join(name)).unwrap() == fs::read(d.join(name)).unwrap(), "{name} differs");
        }
        // No gap: every segment from the first to the last is there, complete but the last.
        let segs: Vec<&String> = ours_files.iter().filter(|n| n.len() >= 24).collect();
        for pair in segs.windows(2) {
            let a = u64::from_str_radix(&pair[0][16..24], 16).unwrap();
            let b = u64::from_str_radix(&pair[1][16..24], 16).unwrap();
            assert_eq!(b, a + 1, "gap between {} and {}", pair[0], pair[1]);
        }
        assert!(segs.last().unwrap().ends_with(".partial"));
        assert_eq!(segs.iter().filter(|n| n.ends_with(".partial")).count(), 1);
        return;
    }
    panic!("the server never stayed idle long enough to compare the archives");
}

#[test]
fn resume_after_stop_15() {
    resume_after_stop(PgVersion::V15);
}

#[test]
fn resume_after_stop_18() {
    resume_after_stop(PgVersion::V18);
}

/// With `--synchronous` and synchronous_standby_names naming us, a commit returns only once
/// its WAL is on our disk: it blocks while the archiver is down and completes once it runs.
fn synchronous_commit(version: PgVersion) {
    let c = Cluster::builder(version)
        .wal_segsize_mb(1)
        .conf("synchronous_standby_names = 'pgreceivewal'\nsynchronous_commit = on")
        .start();
    let t = TestDir::new("sync");
    let d = t.join("archive");
    let start = |name: &str| {
        KillOnDrop::spawn(
            ours(&c, &d, &["-S", "sync", "--create-slot-if-missing", "--synchronous"])
                .stderr(fs::File::create(t.join(name)).unwrap()),
        )
    };
    let mut a = start("a.log");
    wait_until(Duration::from_secs(30), "pgreceivewal to be a synchronous standby", || {
        c.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgreceivewal'") == "sync"
    });
    c.psql("CREATE TABLE t (v int)");
    let lsn = c.psql("INSERT INTO t VALUES (1); SELECT pg_current_wal_lsn()");
    let flushed = c.psql("SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'pgreceivewal'");
    assert_eq!(
        c.psql(&format!("SELECT '{flushed}'::pg_lsn >= '{lsn}'")),
        "t",
        "commit at {lsn} returned before flush {flushed}"
    );
    assert!(a.signal_and_wait("TERM", Duration::from_secs(10)).success());

    let mut pending = c.psql_async("INSERT INTO t VALUES (2)");
    // The server's own word that the commit is held for a synchronous standby, rather than a
    // pause long enough for it to have returned.
    wait_until(Duration::from_secs(30), "the commit to wait for a synchronous standby", || {
        assert!(
            pending.try_wait().unwrap().is_none(),
            "a commit returned with no synchronous archiver running"
        );
        c.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1"
    });
    let mut b = start("b.log");
    let status = wait_for_exit(&mut pending, Duration::from_secs(30))
        .expect("the commit completes once the archiver runs");
    assert!(status.success());
    assert_eq!(c.psql("SELECT count(*) FROM t"), "2");
    // The commit's WAL is in the archive: stop cleanly and check the durable flush covered it.
    let lsn2 = c.current_lsn();
    wait_until(Duration::from_secs(30), "flush to reach the commit", || {
        c.psql(&format!(
            "SELECT flush_lsn >= '{lsn2}' FROM pg_stat_replication WHERE application_name = 'pgreceivewal'"
        )) == "t"
    });
    assert!(b.signal_and_wait("TERM", Duration::from_secs(10)).success());
    let log = fs::read_to_string(t.join("b.log")).unwrap();
    assert!(!log.contains("warning"), "no warning expected with a slot and --synchronous: {log}");
}

#[test]
fn synchronous_commit_15() {
    synchronous_commit(PgVersion::V15);
}

#[test]
fn synchronous_commit_18() {
    synchronous_commit(PgVersion::V18);
}

/// Archiving from a standby that is promoted: the history file, the old timeline's last
/// segment kept as .partial, and the new timeline from the start of the switch segment,
/// all as pg_receivewal writes them.
fn timeline_switch(version: PgVersion) {
    let p = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    p.generate_wal(2);
    let s = Cluster::builder(version).standby_of(&p).conf("autovacuum = off").start();
    let t = TestDir::new("tli");
    s.psql("SELECT 1");
    let (d1, d2) = (t.join("theirs"), t.join("ours"));
    // Slots cannot be created on a standby before it has received WAL; streaming without a
    // slot from the current position is what both tools do then.
    let mut a =
        KillOnDrop::spawn(theirs(&s, &d1, &["-n"]).stderr(fs::File::create(t.join("theirs.log")).unwrap()));
    let mut b =
        KillOnDrop::spawn(ours(&s, &d2, &["-n", "-v"]).stderr(fs::File::create(t.join("ours.log")).unwrap()));
    p.generate_wal(2);
    let target = p.current_lsn();
    wait_until(Duration::from_secs(30), "standby to replay", || {
        s.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{target}'")) == "t"
    });
    wait_until(Duration::from_secs(30), "both archivers to receive", || {
        s.psql(&format!("SELECT count(*) FROM pg_stat_replication WHERE write_lsn >= '{target}'")) == "2"
    });
    s.promote();
    s.generate_wal(2);
    s.switch_wal();
    let end = s.current_lsn();
    wait_until(Duration::from_secs(60), "both archivers to follow the new timeline", || {
        s.psql(&format!("SELECT count(*) FROM pg_stat_replication WHERE write_lsn >= '{end}'")) == "2"
    });
    // Both must hold exactly the server's WAL when stopped, or their last .partial files could
    // differ by a record the server wrote in between (its background writer logs one every
    // 15 s after activity).
    wait_until(Duration::from_secs(60), "both archivers to hold all of the server's WAL", || {
        s.psql("SELECT count(*) FROM pg_stat_replication WHERE write_lsn = pg_current_wal_lsn()") == "2"
    });
    assert!(a.signal_and_wait("INT", Duration::from_secs(10)).code().is_some());
    assert!(
        b.signal_and_wait("TERM", Duration::from_secs(10)).success(),
        "{}",
        fs::read_to_string(t.join("ours.log")).unwrap()
    );
    let ours_log = fs::read_to_string(t.join("ours.log")).unwrap();
    assert!(ours_log.contains("switched to timeline 2"), "{ours_log}");
    let files = wal_files(&d2);
    assert!(files.contains(&"00000002.history".to_string()), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("00000001") && f.ends_with(".partial")), "{files:?}");
    // Everything both archived is identical; both end on timeline 2 at the same place.
    assert_same_archive(&d1, &d2);
}

#[test]
fn timeline_switch_15() {
    timeline_switch(PgVersion::V15);
}

#[test]
fn timeline_switch_18() {
    timeline_switch(PgVersion::V18);
}

/// --create-slot / --drop-slot / --if-not-exists, and --create-slot-if-missing on streaming.
fn slot_actions(version: PgVersion) {
    let c = Cluster::new(version);
    let t = TestDir::new("slots");
    let log = t.join("log");
    let slot_cmd = |args: &[&str]| {
        let mut cmd = pgreceivewal();
        cmd.args(c.conn_args()).args(args);
        cmd
    };
    run_ok(&mut slot_cmd(&["-S", "s1", "--create-slot"]), &log);
    assert_eq!(
        c.psql("SELECT slot_type, restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 's1'"),
        "physical|t"
    );
    let (status, out) = run(&mut slot_cmd(&["-S", "s1", "--create-slot"]), &log);
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains("replication slot \"s1\" already exists") && out.contains("--if-not-exists"),
        "{out}"
    );
    run_ok(&mut slot_cmd(&["-S", "s1", "--create-slot", "--if-not-exists"]), &log);
    // pg_receivewal accepts --if-not-exists with any action and ignores it but for creating.
    run_ok(&mut slot_cmd(&["-S", "s1", "--drop-slot", "--if-not-exists"]), &log);
    assert_eq!(c.psql("SELECT count(*) FROM pg_replication_slots"), "0");
    let (status, out) = run(&mut slot_cmd(&["-S", "s1", "--drop-slot"]), &log);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("replication slot \"s1\" does not exist"), "{out}");

    // Streaming with a slot that does not exist is refused, as by pg_receivewal; with
    // --create-slot-if-missing it creates the slot, reserving WAL.
    c.generate_wal(1);
    let endpos = endpos_before_end(&c);
    let d = t.join("auto");
    // --if-not-exists is accepted when streaming, as by pg_receivewal, and creates nothing.
    for extra in [&[][..], &["--if-not-exists"]] {
        let mut cmd = ours(&c, &d, &["-S", "auto", "-n", "-E", &endpos]);
        let (status, out) = run(cmd.args(extra), &log);
        assert_eq!(status.code(), Some(1), "{extra:?}: {out}");
        assert!(out.contains("replication slot \"auto\" does not exist"), "{extra:?}: {out}");
        assert_eq!(c.psql("SELECT count(*) FROM pg_replication_slots"), "0");
    }
    // Started at the server's current position there is nothing before endpos to wait for:
    // give it WAL to pass once it runs.
    let mut child = KillOnDrop::spawn(
        ours(&c, &d, &["-S", "auto", "--create-slot-if-missing", "-n", "-E", &endpos])
            .stderr(fs::File::create(&log).unwrap()),
    );
    wait_until(Duration::from_secs(30), "the slot to be created", || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'auto'") == "1"
    });
    c.generate_wal(1);
    let status = wait_for_exit(&mut child, RUN_TIMEOUT).unwrap();
    assert!(status.success(), "{}", fs::read_to_string(&log).unwrap());
    assert_eq!(c.psql("SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'auto'"), "physical");
    // The slot was created while we streamed, so it follows our flush position.
    assert_eq!(
        c.psql("SELECT restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'auto'"),
        "t"
    );
}

#[test]
fn slot_actions_15() {
    slot_actions(PgVersion::V15);
}

#[test]
fn slot_actions_18() {
    slot_actions(PgVersion::V18);
}

/// The archive refuses a second archiver and a different cluster, with messages that name
/// the cause, and leaves its files alone.
#[test]
fn archive_refuses_second_archiver_and_other_cluster() {
    let c1 = Cluster::builder(PgVersion::V18).wal_segsize_mb(1).start();
    let c2 = Cluster::builder(PgVersion::V18).wal_segsize_mb(1).start();
    let t = TestDir::new("refuse");
    let d = t.join("archive");
    let mut running = KillOnDrop::spawn(
        ours(&c1, &d, &["-S", "one", "--create-slot-if-missing"])
            .stderr(fs::File::create(t.join("one.log")).unwrap()),
    );
    // Streaming, and its first segment is on disk (the walsender shows up before any WAL
    // reached the writer).
    wait_until(Duration::from_secs(30), "the first archiver to stream", || {
        c1.psql("SELECT count(*) FROM pg_stat_replication") == "1" && !wal_files(&d).is_empty()
    });
    let (status, out) = run(&mut ours(&c1, &d, &["-S", "two", "-n"]), &t.join("two.log"));
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("another pgreceivewal is already archiving into"), "{out}");
    assert!(running.signal_and_wait("TERM", Duration::from_secs(10)).success());
    let before: Vec<(String, Vec<u8>)> =
        wal_files(&d).into_iter().map(|n| (n.clone(), fs::read(d.join(&n)).unwrap())).collect();
    assert!(!before.is_empty());

    let (status, out) = run(&mut ours(&c2, &d, &["-n"]), &t.join("other.log"));
    assert_eq!(status.code(), Some(1));
    // The hint, or the parenthesis of "Move it out of the archive (archive each cluster ...)."
    assert!(out.to_lowercase().contains("archive each cluster into its own directory"), "{out}");
    let after: Vec<(String, Vec<u8>)> =
        wal_files(&d).into_iter().map(|n| (n.clone(), fs::read(d.join(&n)).unwrap())).collect();
    assert!(before == after, "the archive was changed by a refused run");
}

/// The two synchronous traps get a warning that explains them; a server whose data
/// directory allows group read gets files of mode 0640 in a directory of 0750.
#[test]
fn warnings_and_group_access_modes() {
    let c = Cluster::builder(PgVersion::V18).wal_segsize_mb(1).initdb_arg("--allow-group-access").start();
    let t = TestDir::new("warn");
    c.generate_wal(1);
    // Named only now: a commit (like generate_wal's CREATE TABLE) would wait for us.
    c.set_conf("synchronous_standby_names = 'pgreceivewal'");
    let endpos = endpos_before_end(&c);
    let d = t.join("slot-no-sync");
    c.create_physical_slot("s");
    let out = run_ok(&mut ours(&c, &d, &["-S", "s", "-n", "-E", &endpos]), &t.join("a.log"));
    assert!(out.contains("synchronous_standby_names but --synchronous is not set"), "{out}");
    assert_eq!(mode(&d), 0o750);
    for f in wal_files(&d) {
        assert_eq!(mode(&d.join(&f)), 0o640, "{f}");
    }

    // --synchronous without a slot: started at the server's current position, so give it
    // WAL to pass the end position once it runs.
    c.set_conf("synchronous_standby_names = ''");
    let endpos = c.current_lsn();
    let log = t.join("b.log");
    let mut child = KillOnDrop::spawn(
        ours(&c, &t.join("sync-no-slot"), &["--synchronous", "-n", "-E", &endpos])
            .stderr(fs::File::create(&log).unwrap()),
    );
    wait_until(Duration::from_secs(30), "the archiver to connect", || {
        c.psql("SELECT count(*) FROM pg_stat_replication") == "1"
    });
    c.generate_wal(1);
    assert!(wait_for_exit(&mut child, RUN_TIMEOUT).unwrap().success());
    let out = fs::read_to_string(&log).unwrap();
    assert!(out.contains("--synchronous without a replication slot"), "{out}");
}
