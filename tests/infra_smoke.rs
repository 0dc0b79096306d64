//! Checks of the test harness itself (tests/util): that clusters of every
//! version start, answer, stop, restart and disappear, so a failure in the
//! real end-to-end tests is never the harness's.

use std::path::Path;
use std::time::Duration;

use crate::util::{free_port, wait_until, Cluster, KillOnDrop, Mode, PgVersion, TestDir};

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn keeping_dirs() -> bool {
    std::env::var_os("PGRW_KEEP_TEST_DIRS").is_some()
}

#[test]
fn both_versions_start_answer_and_clean_up() {
    let clusters: Vec<Cluster> =
        PgVersion::ALL.iter().map(|&v| Cluster::builder(v).wal_segsize_mb(1).start()).collect();
    let mut leftovers = Vec::new();
    for c in &clusters {
        assert_eq!(c.psql("SELECT 1"), "1");
        let version_num: u32 = c.psql("SHOW server_version_num").parse().unwrap();
        assert_eq!(version_num / 10000, c.version().major(), "{} reports {version_num}", c.version());
        assert_eq!(c.psql("SHOW wal_segment_size"), "1MB");
        assert_eq!(c.psql("SHOW wal_level"), "replica");
        assert_eq!(c.psql("SELECT current_user"), "postgres");
        // The postmaster is our child, not a wrapper: its pid is postmaster.pid's first line.
        let pid = c.pid().unwrap();
        let pidfile = std::fs::read_to_string(c.data_dir().join("postmaster.pid")).unwrap();
        assert_eq!(pidfile.lines().next().unwrap(), pid.to_string());
        leftovers.push((pid, c.dir().to_owned()));
    }
    assert_ne!(clusters[0].port(), clusters[1].port());
    drop(clusters);
    for (pid, dir) in leftovers {
        assert!(!process_exists(pid), "postmaster {pid} survived its Cluster");
        assert!(keeping_dirs() || !dir.exists(), "{} survived its Cluster", dir.display());
    }
}

#[test]
fn lifecycle_on_every_version() {
    for version in PgVersion::ALL {
        let mut c = Cluster::builder(version)
            .wal_segsize_mb(1)
            .conf("wal_keep_size = '64MB'")
            .hba("# an extra line from the test")
            .start();
        assert_eq!(c.psql("SHOW wal_keep_size"), "64MB");
        assert!(std::fs::read_to_string(c.data_dir().join("pg_hba.conf")).unwrap().contains("an extra line"));
        assert_eq!(c.conninfo(), format!("host=127.0.0.1 port={} user=postgres dbname=postgres", c.port()));

        // switch_wal always completes the current segment (pg_walfile_name
        // names the segment that ends at a boundary LSN) and moves on.
        let before = c.walfile_name(&c.current_lsn());
        let completed = c.walfile_name(&c.switch_wal());
        assert_eq!(completed, before, "{version}");
        c.psql("SELECT pg_logical_emit_message(false, 'harness', 'x')");
        let after = c.walfile_name(&c.psql("SELECT pg_current_wal_insert_lsn()"));
        assert!(after > before, "{version}: {after} after {before}");

        // generate_wal writes at least what it is asked.
        let start = c.current_lsn();
        c.generate_wal(3);
        let written: u64 = c
            .psql(&format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint"))
            .parse()
            .unwrap();
        assert!(written >= 3 << 20, "{version}: only {written} bytes of WAL");

        c.create_physical_slot("harness_slot");
        assert_eq!(
            c.psql("SELECT slot_type, restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'harness_slot'"),
            "physical|t"
        );

        // A commit waiting for a synchronous standby that never comes blocks,
        // and is released when the setting is cleared.
        c.set_conf("synchronous_standby_names = 'nobody'");
        let mut waiter = KillOnDrop::new(c.psql_async("CREATE TABLE waits_for_sync ()"));
        wait_until(Duration::from_secs(30), "the commit to wait for the synchronous standby", || {
            c.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1"
        });
        assert!(waiter.try_wait().unwrap().is_none(), "{version}: psql exited while its commit waited");
        c.set_conf("synchronous_standby_names = ''");
        let out = waiter.into_inner().wait_with_output().unwrap();
        assert!(out.status.success(), "{version}: {}", String::from_utf8_lossy(&out.stderr));

        // Stop and start again, same port and data; then survive a crash.
        let port = c.port();
        c.stop(Mode::Fast);
        assert!(!c.is_running());
        assert!(c.try_psql("SELECT 1").is_err());
        c.start_again();
        assert_eq!(c.port(), port);
        assert_eq!(c.psql("SELECT count(*) FROM pg_class WHERE relname = 'waits_for_sync'"), "1");
        c.stop(Mode::Immediate);
        c.start_again();
        assert!(c.log_contents().contains("database system was interrupted"), "{version}: no crash recovery");
        assert_eq!(c.psql("SELECT 2"), "2");

        let err = c.try_psql("SELECT no_such_column").unwrap_err();
        assert!(err.contains("no_such_column"), "{err}");
    }
}

#[test]
fn standby_follows_and_promotes() {
    for version in PgVersion::ALL {
        let primary = Cluster::builder(version).wal_segsize_mb(1).start();
        primary.psql("CREATE TABLE from_primary AS SELECT 1 AS x");
        let standby = Cluster::builder(version).standby_of(&primary).start();
        assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");
        assert_eq!(standby.wal_segsize(), 1 << 20);
        primary.psql("INSERT INTO from_primary VALUES (2)");
        wait_until(Duration::from_secs(30), "the standby to replay the insert", || {
            standby.psql("SELECT count(*) FROM from_primary") == "2"
        });
        standby.promote();
        assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "f");
        assert!(standby.data_dir().join("pg_wal/00000002.history").exists(), "{version}: no history file");
        assert!(standby.walfile_name(&standby.current_lsn()).starts_with("00000002"));
    }
}

#[test]
fn ports_dirs_and_waiting() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "free_port handed out a port twice");

    let dir = TestDir::new("harness check/with odd chars");
    let path = dir.path().to_owned();
    assert!(path.to_str().unwrap().starts_with("/tmp/pgrw-harness_check_with_odd_"), "{}", path.display());
    assert!(TestDir::for_test().path().to_str().unwrap().starts_with("/tmp/pgrw-ports_dirs_and_waiting-"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o777);
    std::fs::write(dir.mkdir("a/b").join("f"), b"x").unwrap();
    drop(dir);
    assert!(keeping_dirs() || !path.exists());

    let mut n = 0;
    wait_until(Duration::from_secs(5), "a counter", || {
        n += 1;
        n == 3
    });
    let panic =
        std::panic::catch_unwind(|| wait_until(Duration::from_millis(50), "the impossible", || false))
            .unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("waiting for the impossible"), "{msg}");

    // A guarded child is ended when the guard goes.
    let guard = KillOnDrop::spawn(std::process::Command::new("sleep").arg("600"));
    let pid = guard.id();
    drop(guard);
    assert!(!process_exists(pid));
}
