//! pgreceivewal as a drop-in for pg_receivewal: started through a symlink of another name
//! (argv[0]), each tool speaks as that name, as PostgreSQL's tools do (`get_progname`), so
//! a `pg_receivewal` symlink says `pg_receivewal: error: ...` where PostgreSQL's own TAP
//! suite (scripts/test-pg-tap.sh) and users' scripts look for it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::support::run_capture;
use crate::util::{command, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

const QUICK: Duration = Duration::from_secs(20);

/// `name` in `t`, a symlink to the tool built as `target`.
fn linked(t: &TestDir, name: &str, target: &str) -> PathBuf {
    let link = t.join(name);
    symlink(target, &link).unwrap();
    link
}

/// --help, --version and a usage error of each of our tools, started as another name.
#[test]
fn every_tool_speaks_as_its_argv0() {
    let t = TestDir::new("argv0");
    let version = env!("CARGO_PKG_VERSION");
    for (name, target, usage_exit) in [
        ("pg_receivewal", env!("CARGO_BIN_EXE_pgreceivewal"), 2),
        ("my_recvlogical", env!("CARGO_BIN_EXE_pgrecvlogical"), 2),
        ("my_restorewal", env!("CARGO_BIN_EXE_pgrestorewal"), 255),
    ] {
        let link = linked(&t, name, target);
        let help = command(&link).arg("--help").output().unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        assert!(help.starts_with(&format!("{name} ")), "{name} --help:\n{help}");
        assert!(help.contains(&format!("Usage:\n  {name} ")), "{name} --help:\n{help}");

        let v = command(&link).arg("--version").output().unwrap();
        assert_eq!(String::from_utf8(v.stdout).unwrap(), format!("{name} (pgreceivewal) {version}\n"));

        let (code, err) = run_capture(command(&link).arg("--no-such-option"), QUICK);
        assert_eq!(code, Some(usage_exit), "{name}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines[0].starts_with(&format!("{name}: error: ")), "{name}: {err}");
        assert_eq!(
            lines[1],
            format!("{name}: hint: Try \"{name} --help\" for more information."),
            "{name}: {err}"
        );
    }
}

/// A missing slot, through a `pg_receivewal` symlink: exit 1 and pg_receivewal's own words,
/// `pg_receivewal: error: replication slot "..." does not exist`, which PostgreSQL's TAP suite
/// checks; the fix it names is a command of that name. JSON lines carry the name too.
fn missing_slot_as_pg_receivewal(version: PgVersion) {
    let c = Cluster::new(version);
    let t = TestDir::new("argv0-slot");
    let link = linked(&t, "pg_receivewal", env!("CARGO_BIN_EXE_pgreceivewal"));
    let dir = t.join("archive");
    let run = |extra: &[&str]| {
        let mut cmd = command(&link);
        cmd.args(c.conn_args()).arg("-D").arg(&dir).args(["-S", "nonexistentslot", "-n", "--no-sync", "-v"]);
        run_capture(cmd.args(extra), QUICK)
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("pg_receivewal: error: replication slot \"nonexistentslot\" does not exist"),
        "{err}"
    );
    assert!(
        err.contains("] pg_receivewal: hint: Create it with pg_receivewal --create-slot -S nonexistentslot"),
        "{err}"
    );
    assert!(!err.contains("pgreceivewal"), "every line speaks as pg_receivewal:\n{err}");

    let (code, err) = run(&["--log-format=json"]);
    assert_eq!(code, Some(1), "{err}");
    let error = err.lines().find(|l| l.contains(r#""level":"error""#)).unwrap_or_else(|| panic!("{err}"));
    assert!(error.contains(r#""program":"pg_receivewal""#), "{error}");
    assert_eq!(c.psql("SELECT count(*) FROM pg_replication_slots"), "0");
}

#[test]
fn missing_slot_as_pg_receivewal_15() {
    missing_slot_as_pg_receivewal(PgVersion::V15);
}

#[test]
fn missing_slot_as_pg_receivewal_18() {
    missing_slot_as_pg_receivewal(PgVersion::V18);
}

/// Streaming through a `pg_receivewal` symlink: the server knows it as `pg_receivewal` (as
/// pg_receivewal's fallback_application_name is its program name, which
/// synchronous_standby_names may list), and every log line speaks as pg_receivewal.
fn streams_as_pg_receivewal(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).start();
    let t = TestDir::new("argv0-stream");
    let link = linked(&t, "pg_receivewal", env!("CARGO_BIN_EXE_pgreceivewal"));
    let dir = t.join("archive");
    let log = t.join("log");
    let mut cmd = command(&link);
    cmd.args(c.conn_args()).arg("-D").arg(&dir).arg("-v").stderr(fs::File::create(&log).unwrap());
    let mut child = KillOnDrop::spawn(&mut cmd);
    wait_until(Duration::from_secs(30), "pg_receivewal to stream", || {
        c.psql("SELECT application_name FROM pg_stat_replication") == "pg_receivewal"
    });
    c.generate_wal(2);
    wait_until(Duration::from_secs(30), "a complete segment", || {
        fs::read_dir(&dir).unwrap().flatten().any(|e| e.file_name().len() == 24)
    });
    assert!(child.signal_and_wait("TERM", Duration::from_secs(10)).success());
    let out = fs::read_to_string(&log).unwrap();
    assert!(!out.is_empty());
    for line in out.lines() {
        assert!(line.contains("] pg_receivewal: "), "{line}");
    }
}

#[test]
fn streams_as_pg_receivewal_15() {
    streams_as_pg_receivewal(PgVersion::V15);
}

#[test]
fn streams_as_pg_receivewal_18() {
    streams_as_pg_receivewal(PgVersion::V18);
}
