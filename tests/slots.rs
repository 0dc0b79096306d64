//! Replication slots the tools did not create themselves: a missing `-S` slot is refused (as
//! pg_receivewal refuses it) unless `--create-slot-if-missing` asks for it, and then only the
//! slot the archive was streamed with; an invalidated slot ends the run with one error that
//! names the slot, the WAL now missing from the archive, and the fix.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::faults::support::{lines_at, messages_at, run_capture};
use crate::util::{pg_tool, pgreceivewal, wait_until, Cluster, PgVersion, TestDir};

const QUICK: Duration = Duration::from_secs(60);

fn ours(c: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd
}

fn slot_count(c: &Cluster, slot: &str) -> String {
    c.psql(&format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"))
}

/// Runs `cmd` to its end; asserts exit 1 and exactly one error line holding all of `expect`.
fn fails_with(cmd: &mut Command, expect: &[&str]) -> String {
    let (code, out) = run_capture(cmd, QUICK);
    assert!(!out.contains("panicked") && !out.contains("(os error"), "{out}");
    assert_eq!(code, Some(1), "{cmd:?} must exit 1:\n{out}");
    let errors = messages_at(&out, "error");
    assert_eq!(errors.len(), 1, "exactly one error line expected:\n{out}");
    for e in expect {
        assert!(errors[0].contains(e), "the error must say {e:?}:\n{out}");
    }
    eprintln!("refused: {}", errors[0]);
    errors[0].clone()
}

/// Runs `cmd` to its end, asserts exit 0, returns stderr.
fn succeeds(cmd: &mut Command) -> String {
    let (code, out) = run_capture(cmd, QUICK);
    assert_eq!(code, Some(0), "{cmd:?} must succeed:\n{out}");
    out
}

fn meta(dir: &Path) -> String {
    fs::read_to_string(dir.join(".pgreceivewal.meta")).unwrap()
}

/// pg_receivewal refuses a slot that does not exist; so do we, with or without -n, and
/// create nothing. With --create-slot-if-missing a new archive gets its slot (a warning names
/// the server), the archive records it, and only that slot is ever created for it again
/// (after a "failover" that lost the slot), never a mistyped one.
fn missing_slot(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).start();
    let t = TestDir::new("missingslot");

    let theirs_dir = t.mkdir("theirs");
    let mut theirs = pg_tool(version, "pg_receivewal");
    theirs.args(c.conn_args()).arg("-D").arg(&theirs_dir).args(["-S", "nosuch", "-n"]);
    let (code, out) = run_capture(&mut theirs, QUICK);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("replication slot \"nosuch\" does not exist"), "{out}");

    let d = t.join("archive");
    for extra in [&["-n"][..], &[][..]] {
        let mut args = vec!["-S", "nosuch"];
        args.extend_from_slice(extra);
        fails_with(
            &mut ours(&c, &d, &args),
            &["replication slot \"nosuch\" does not exist", "--create-slot", "--create-slot-if-missing"],
        );
    }
    assert_eq!(slot_count(&c, "nosuch"), "0", "a refused run created the slot");

    // Opt-in: a new archive gets its slot, with a warning naming the server.
    c.generate_wal(1);
    let endpos = c.psql("SELECT pg_current_wal_lsn() - 1");
    let out = succeeds(&mut ours(&c, &d, &["-S", "arch", "--create-slot-if-missing", "-n", "-E", &endpos]));
    let warned = lines_at(&out, "warning");
    assert!(
        warned
            .iter()
            .any(|l| l.contains("created replication slot \"arch\"") && l.contains(&c.port().to_string())),
        "slot creation must be a warning naming the server:\n{out}"
    );
    assert_eq!(slot_count(&c, "arch"), "1");
    assert!(meta(&d).lines().any(|l| l == "slot=arch"), "{}", meta(&d));

    // A mistyped slot for an archive streamed with "arch" is refused even with the flag.
    fails_with(
        &mut ours(&c, &d, &["-S", "acrh", "--create-slot-if-missing", "-n"]),
        &["replication slot \"acrh\" does not exist", "streamed with slot \"arch\""],
    );
    assert_eq!(slot_count(&c, "acrh"), "0");

    // A new primary without the slot: refused without the flag, recreated with it.
    c.psql("SELECT pg_drop_replication_slot('arch')");
    fails_with(&mut ours(&c, &d, &["-S", "arch", "-n"]), &["replication slot \"arch\" does not exist"]);
    assert_eq!(slot_count(&c, "arch"), "0");
    c.generate_wal(1);
    let endpos = c.psql("SELECT pg_current_wal_lsn() - 1");
    let out = succeeds(&mut ours(&c, &d, &["-S", "arch", "--create-slot-if-missing", "-n", "-E", &endpos]));
    assert!(
        lines_at(&out, "warning").iter().any(|l| l.contains("created replication slot \"arch\"")),
        "{out}"
    );
    assert_eq!(slot_count(&c, "arch"), "1");

    // An archive that holds WAL but recorded no slot (streamed without one, or by an older
    // version) gets no slot created for it either.
    let plain = t.join("plain");
    let endpos = c.psql("SELECT pg_current_wal_lsn() - 1");
    succeeds(&mut ours(&c, &plain, &["-n", "-E", &endpos]));
    assert!(!meta(&plain).contains("slot="), "{}", meta(&plain));
    fails_with(
        &mut ours(&c, &plain, &["-S", "later", "--create-slot-if-missing", "-n"]),
        &["replication slot \"later\" does not exist", "without a recorded slot"],
    );
    assert_eq!(slot_count(&c, "later"), "0");
}

#[test]
fn missing_slot_15() {
    missing_slot(PgVersion::V15);
}

#[test]
fn missing_slot_18() {
    missing_slot(PgVersion::V18);
}

/// A slot invalidated by max_slot_wal_keep_size while the archiver was stopped: the next run
/// (looping, not -n) ends at once with exit 1 and one error that names the slot, says it was
/// invalidated, gives the WAL range missing from the archive and the fix.
fn invalidated_slot(version: PgVersion) {
    let c = Cluster::builder(version)
        .wal_segsize_mb(1)
        .conf(
            "max_slot_wal_keep_size = '1MB'\nwal_keep_size = 0\nmax_wal_size = '4MB'\nmin_wal_size = '2MB'\nautovacuum = off",
        )
        .start();
    let t = TestDir::new("lostslot");
    let d = t.join("archive");
    c.create_physical_slot("arch");
    c.generate_wal(1);
    let endpos = c.psql("SELECT pg_current_wal_lsn() - 1");
    succeeds(&mut ours(&c, &d, &["-S", "arch", "-n", "-E", &endpos]));

    wait_until(QUICK, "the slot to be invalidated", || {
        c.generate_wal(2);
        c.psql("CHECKPOINT");
        c.psql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'arch'") == "lost"
    });
    let line = fails_with(
        &mut ours(&c, &d, &["-S", "arch"]),
        &[
            "replication slot \"arch\"",
            "invalidated",
            "is missing from archive",
            "Take a new base backup",
            "recreate the slot",
        ],
    );
    // The range starts where the archive resumes: the start of its newest (partial) segment.
    let newest = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit()))
        .max()
        .unwrap();
    let segno = u64::from_str_radix(&newest[8..16], 16).unwrap() << 32
        | u64::from_str_radix(&newest[16..24], 16).unwrap();
    let segno = if newest.ends_with(".partial") { segno } else { segno + 1 };
    let resume = segno << 20;
    let resume = format!("{:X}/{:X}", resume >> 32, resume & 0xFFFF_FFFF);
    assert!(line.contains(&format!("WAL from {resume} up to")), "the range must start at {resume}: {line}");
}

#[test]
fn invalidated_slot_15() {
    invalidated_slot(PgVersion::V15);
}

#[test]
fn invalidated_slot_18() {
    invalidated_slot(PgVersion::V18);
}

fn pgrecvlogical(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgrecvlogical"));
    cmd.stdin(Stdio::null());
    for var in ["PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGPASSWORD"] {
        cmd.env_remove(var);
    }
    cmd.args(c.conn_args()).args(["-s", "1"]).args(args);
    cmd
}

/// pgrecvlogical refuses a missing logical slot (a forgotten one holds back WAL and the
/// catalog) unless --create-slot-if-missing asks for it, and then warns.
fn missing_logical_slot(version: PgVersion) {
    let c = Cluster::builder(version).conf("wal_level = logical\nautovacuum = off").start();
    let t = TestDir::new("missinglogical");
    c.psql("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t");
    let d = t.join("out");
    let dir = d.to_str().unwrap();
    fails_with(
        &mut pgrecvlogical(&c, &["-S", "cdc", "-P", "pub", "-D", dir]),
        &["replication slot \"cdc\" does not exist", "--create-slot", "--create-slot-if-missing"],
    );
    assert_eq!(slot_count(&c, "cdc"), "0", "a refused run created the slot");

    c.psql("INSERT INTO t VALUES (1)");
    let endpos = c.current_lsn();
    let mut child = crate::util::KillOnDrop::spawn(
        pgrecvlogical(&c, &["-S", "cdc", "-P", "pub", "-D", dir, "--create-slot-if-missing", "-E", &endpos])
            .stdout(Stdio::null())
            .stderr(fs::File::create(t.join("log")).unwrap()),
    );
    // The slot starts after the insert above: give it a change to pass the end position with.
    wait_until(QUICK, "the slot to be created", || slot_count(&c, "cdc") == "1");
    c.psql("INSERT INTO t VALUES (2)");
    let status = crate::util::wait_for_exit(&mut child, QUICK).expect("-E ends the run");
    let out = fs::read_to_string(t.join("log")).unwrap();
    assert!(status.success(), "{out}");
    assert!(
        lines_at(&out, "warning").iter().any(|l| l.contains("created replication slot \"cdc\"")),
        "{out}"
    );

    // --create-slot --start --snapshot asks for the slot by name: created (no warning), the
    // snapshot written, then streamed.
    let d2 = t.join("snap");
    let endpos = c.current_lsn();
    let mut child = crate::util::KillOnDrop::spawn(
        pgrecvlogical(
            &c,
            &[
                "-S",
                "snap",
                "-P",
                "pub",
                "-D",
                d2.to_str().unwrap(),
                "--create-slot",
                "--start",
                "--snapshot",
                "-E",
                &endpos,
            ],
        )
        .stdout(Stdio::null())
        .stderr(fs::File::create(t.join("snap.log")).unwrap()),
    );
    wait_until(QUICK, "the snapshot slot to be created", || slot_count(&c, "snap") == "1");
    c.psql("INSERT INTO t VALUES (3)");
    let status = crate::util::wait_for_exit(&mut child, QUICK).expect("-E ends the run");
    let out = fs::read_to_string(t.join("snap.log")).unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("initial snapshot written: 2 rows of 1 tables"), "{out}");
    assert!(lines_at(&out, "warning").is_empty(), "{out}");
}

#[test]
fn missing_logical_slot_15() {
    missing_logical_slot(PgVersion::V15);
}

#[test]
fn missing_logical_slot_18() {
    missing_logical_slot(PgVersion::V18);
}

/// A failover to a new primary that lacks the slot (a standby's base backup carries no
/// slots): the archiver with --create-slot-if-missing creates it there, with a warning naming
/// the new server, and streams on; the one without keeps trying (the missing slot is an error
/// only for the first connection) and creates nothing.
fn failover(version: PgVersion) {
    let mut p = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    let s = Cluster::builder(version).standby_of(&p).start();
    let t = TestDir::new("failoverslot");
    p.create_physical_slot("asked");
    p.create_physical_slot("unasked");
    let both = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres target_session_attrs=read-write",
        p.port(),
        s.port()
    );
    let spawn = |slot: &str, extra: &[&str]| {
        let mut cmd = pgreceivewal();
        cmd.args(["-d", &both, "-D"]).arg(t.join(slot)).args(["-S", slot, "-s", "1"]).args(extra);
        crate::util::KillOnDrop::spawn(
            cmd.stdout(Stdio::null()).stderr(fs::File::create(t.join(format!("{slot}.log"))).unwrap()),
        )
    };
    let mut asked = spawn("asked", &["--create-slot-if-missing"]);
    let mut unasked = spawn("unasked", &[]);
    wait_until(QUICK, "both archivers to stream", || {
        p.psql("SELECT count(*) FROM pg_replication_slots WHERE active") == "2"
    });
    p.generate_wal(1);
    let target = p.current_lsn();
    wait_until(QUICK, "the standby to replay", || {
        s.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{target}'")) == "t"
    });

    p.stop(crate::util::Mode::Fast);
    s.promote();
    let log = |slot: &str| fs::read_to_string(t.join(format!("{slot}.log"))).unwrap();
    wait_until(QUICK, "the asked-for slot on the new primary", || {
        s.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'asked' AND active") == "1"
    });
    // The log line may reach the file a moment after the server sees the slot in use.
    let port = format!(":{}", s.port());
    wait_until(QUICK, "a warning naming the new primary", || {
        lines_at(&log("asked"), "warning")
            .iter()
            .any(|l| l.contains("created replication slot \"asked\"") && l.contains(&port))
    });
    wait_until(QUICK, "the other archiver to report the missing slot", || {
        lines_at(&log("unasked"), "warning")
            .iter()
            .any(|l| l.contains("replication slot \"unasked\" does not exist"))
    });
    assert_eq!(slot_count(&s, "unasked"), "0");
    for (name, child) in [("asked", &mut asked), ("unasked", &mut unasked)] {
        let status = child.signal_and_wait("TERM", QUICK);
        assert!(status.success(), "{name}: {status}\n{}", log(name));
        assert!(lines_at(&log(name), "error").is_empty(), "{}", log(name));
    }
}

#[test]
fn failover_15() {
    failover(PgVersion::V15);
}

#[test]
fn failover_18() {
    failover(PgVersion::V18);
}
