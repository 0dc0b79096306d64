//! The session core both tools share (src/session.rs), against real servers: what the
//! receiver reports (written, never only received), how a session ends (a failed fsync while
//! stopping, a writer that dies on a quiet server, an error the server ends the stream with),
//! and what each signal does. Every defect here was found in one tool only; the tests drive
//! both where the behaviour is the core's.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::faults::support::{
    build_failfsync, build_shim, fault_cluster, lines_at, lsn, ours, read_log, reported, seg_name,
    wait_received, SEG,
};
use crate::logical::{output_files, spawn, tool, wait_caught_up};
use crate::util::{send_signal, wait_for_exit, wait_until, Cluster, KillOnDrop, Mode, PgVersion, TestDir};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster for logical decoding with one published table and a pgoutput slot `cdc`, made
/// with SQL so the tests do not depend on how the tool creates slots.
fn logical_source(version: PgVersion, extra: &str) -> Cluster {
    let c = Cluster::builder(version).conf("wal_level = logical\nautovacuum = off").conf(extra).start();
    c.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    c.psql("CREATE PUBLICATION p FOR TABLE t");
    c.psql("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput')");
    c
}

fn slot_active(c: &Cluster, slot: &str) -> bool {
    c.psql(&format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")) == "t"
}

fn exit_within(child: &mut KillOnDrop, log: &Path, what: &str) -> Option<i32> {
    let status = wait_for_exit(child, TIMEOUT);
    status.unwrap_or_else(|| panic!("{what}: still running after {TIMEOUT:?}:\n{}", read_log(log))).code()
}

// ---------------------------------------------------------------------------
// How a session ends
// ---------------------------------------------------------------------------

/// SIGTERM while a large transaction is half written: the writer cuts the incomplete
/// transaction off and fsyncs, and that fsync fails. The run must exit 1 with the error, never
/// 0: what it wrote is not known to be on disk. (pgrecvlogical turned any error after a stop
/// signal into success.)
fn logical_fsync_failure_while_stopping(version: PgVersion) {
    let c = logical_source(version, "");
    let t = TestDir::new("lfsyncstop");
    let (out, log) = (t.join("out"), t.join("tool.log"));
    let (fail_trigger, slow_trigger, fsync_log) = (t.join("fail"), t.join("slow"), t.join("fsync.log"));
    let shims =
        format!("{} {}", build_failfsync(t.path()).display(), build_shim(t.path(), "slowwrite").display());
    let out_s = out.to_str().unwrap();
    let mut cmd = tool(&c, &["-S", "cdc", "-P", "p", "-D", out_s, "--streaming", "off"]);
    cmd.env("LD_PRELOAD", &shims)
        .env("FAILFSYNC_MATCH", out_s)
        .env("FAILFSYNC_TRIGGER", &fail_trigger)
        .env("FAILFSYNC_LOG", &fsync_log)
        .env("SLOWWRITE_MATCH", out_s)
        .env("SLOWWRITE_TRIGGER", &slow_trigger)
        .env("SLOWWRITE_USEC", "200000");
    let mut child = spawn(&mut cmd, &log);
    wait_until(TIMEOUT, "the slot in use", || slot_active(&c, "cdc"));
    // Each 1 MiB write of the output now takes 0.2 s: the transaction below (about 20 MiB of
    // lines) is still being written when the stop arrives.
    fs::write(&slow_trigger, b"").unwrap();
    c.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 300000) g");
    wait_until(TIMEOUT, "the transaction's lines being written", || {
        output_files(&out).iter().any(|f| fs::metadata(f).map(|m| m.len() > (2 << 20)).unwrap_or(false))
    });
    fs::write(&fail_trigger, b"").unwrap();
    send_signal(child.id(), "TERM");
    let code = exit_within(&mut child, &log, "after SIGTERM");
    let text = read_log(&log);
    assert!(
        !read_log(&fsync_log).is_empty(),
        "an fsync on the way out failed (the fault under test):\n{text}"
    );
    assert_eq!(code, Some(1), "an fsync failed while stopping: must exit 1:\n{text}");
    let errors = lines_at(&text, "error");
    assert!(
        errors.len() == 1 && errors[0].contains("could not fsync"),
        "one error naming the failed fsync:\n{text}"
    );
}

#[test]
fn logical_fsync_failure_while_stopping_15() {
    logical_fsync_failure_while_stopping(PgVersion::V15);
}

#[test]
fn logical_fsync_failure_while_stopping_18() {
    logical_fsync_failure_while_stopping(PgVersion::V18);
}

/// One small commit's fsync fails, then the database stays quiet (and the server asks for no
/// replies: wal_sender_timeout = 0). The receiver must learn of the dead writer from the
/// writer's own wake-up, not from the next change, which never comes.
#[test]
fn logical_writer_failure_is_noticed_on_an_idle_server_18() {
    let c = logical_source(PgVersion::V18, "wal_sender_timeout = 0");
    let t = TestDir::new("lidlefail");
    let (out, log, trigger) = (t.join("out"), t.join("tool.log"), t.join("fail"));
    let out_s = out.to_str().unwrap();
    let mut cmd = tool(&c, &["-S", "cdc", "-P", "p", "-D", out_s]);
    cmd.env("LD_PRELOAD", build_failfsync(t.path()))
        .env("FAILFSYNC_MATCH", out_s)
        .env("FAILFSYNC_TRIGGER", &trigger);
    let mut child = spawn(&mut cmd, &log);
    wait_until(TIMEOUT, "the slot in use", || slot_active(&c, "cdc"));
    fs::write(&trigger, b"").unwrap();
    c.psql("INSERT INTO t VALUES (1, 'one small commit')");
    let code = exit_within(&mut child, &log, "after its fsync failed on a quiet server");
    let text = read_log(&log);
    assert_eq!(code, Some(1), "{text}");
    assert!(lines_at(&text, "error").iter().any(|l| l.contains("could not fsync")), "{text}");
}

/// The server ends logical decoding with an error: the log must carry the server's message,
/// not only "terminated by the server". On 15 the publication is dropped (pgoutput fails);
/// 18 skips a missing publication with a warning, so there an administrator terminates the
/// walsender.
fn logical_server_error_is_reported(version: PgVersion, fault: &str, message: &str) {
    let c = logical_source(version, "");
    let t = TestDir::new("lsrverr");
    let (out, log) = (t.join("out"), t.join("tool.log"));
    let mut child = spawn(&mut tool(&c, &["-S", "cdc", "-P", "p", "-D", out.to_str().unwrap(), "-n"]), &log);
    wait_until(TIMEOUT, "the slot in use", || slot_active(&c, "cdc"));
    c.psql(fault);
    c.psql("INSERT INTO t VALUES (1, 'after the fault')");
    let code = exit_within(&mut child, &log, "after the server's error");
    let text = read_log(&log);
    assert_eq!(code, Some(1), "-n: the error ends the run:\n{text}");
    let errors = lines_at(&text, "error");
    assert!(errors.len() == 1 && errors[0].contains(message), "the server's own message:\n{text}");
}

#[test]
fn logical_server_error_is_reported_15() {
    logical_server_error_is_reported(
        PgVersion::V15,
        "DROP PUBLICATION p",
        "publication \"p\" does not exist",
    );
}

#[test]
fn logical_server_error_is_reported_18() {
    logical_server_error_is_reported(
        PgVersion::V18,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'cdc'",
        "terminating connection due to administrator command",
    );
}

// ---------------------------------------------------------------------------
// What the receiver reports
// ---------------------------------------------------------------------------

/// With `synchronous_commit = remote_write` the server releases a commit once the standby
/// reports it *written*. Each WAL write of the archiver takes 3 s here; a commit that returns
/// must then already be in the archive's file, so a kill -9 right after it loses nothing (the
/// page cache survives the process). The archiver used to report what it had received.
fn remote_write_means_written(version: PgVersion) {
    let c = fault_cluster(
        version,
        "synchronous_standby_names = 'pgreceivewal'\nsynchronous_commit = remote_write",
    );
    let t = TestDir::new("remotewrite");
    let (d, log, slow) = (t.join("archive"), t.join("ours.log"), t.join("slow"));
    // A standby that reports no flush position is never chosen as synchronous; with a slot
    // (and without --synchronous) pgreceivewal reports one, fsync'ed only at segment ends.
    c.create_physical_slot("arch");
    let mut cmd = ours(&c, &d, &["-S", "arch", "-s", "1"], &log);
    cmd.env("LD_PRELOAD", build_shim(t.path(), "slowwrite"))
        .env("SLOWWRITE_MATCH", d.to_str().unwrap())
        .env("SLOWWRITE_TRIGGER", &slow)
        .env("SLOWWRITE_USEC", "3000000");
    let mut child = KillOnDrop::spawn(&mut cmd);
    wait_until(TIMEOUT, "pgreceivewal as the synchronous standby", || {
        c.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgreceivewal'") == "sync"
    });
    // Every commit waits for the archiver from here on.
    c.psql("CREATE TABLE rw (v text)");
    fs::write(&slow, b"").unwrap();
    c.psql("INSERT INTO rw VALUES ('released on remote_write')");
    let end = lsn(&c.psql("SELECT pg_current_wal_insert_lsn()"));
    send_signal(child.id(), "KILL");
    let _ = wait_for_exit(&mut child, TIMEOUT);
    fs::remove_file(&slow).unwrap();

    let segno = (end - 1) / SEG;
    let upto = (end - segno * SEG) as usize;
    let name = seg_name(1, segno, SEG);
    let ours = fs::read(d.join(&name)).or_else(|_| fs::read(d.join(format!("{name}.partial"))));
    let ours =
        ours.unwrap_or_else(|e| panic!("segment {name} not in the archive ({e}):\n{}", read_log(&log)));
    let server = fs::read(c.data_dir().join("pg_wal").join(&name)).unwrap();
    assert!(
        ours[..upto] == server[..upto],
        "the commit returned, but the archive does not hold its WAL up to {end:X}:\n{}",
        read_log(&log)
    );
}

#[test]
fn remote_write_means_written_15() {
    remote_write_means_written(PgVersion::V15);
}

#[test]
fn remote_write_means_written_18() {
    remote_write_means_written(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// SIGHUP (systemd's reload, a closed terminal) is logged and ignored: streaming goes on.
/// A SIGTERM while waiting to reconnect ends the run with status 0 and says so.
fn hangup_then_stop_while_reconnecting(
    c: &mut Cluster,
    mut child: KillOnDrop,
    log: &Path,
    caught_up: impl Fn(&Cluster, &mut KillOnDrop),
) {
    send_signal(child.id(), "HUP");
    wait_until(TIMEOUT, "the SIGHUP line", || read_log(log).contains("received SIGHUP"));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP must not end the run:\n{}", read_log(log));
    caught_up(c, &mut child);
    c.stop(Mode::Fast);
    wait_until(TIMEOUT, "a reconnect warning", || read_log(log).contains("trying again in"));
    let status = child.signal_and_wait("TERM", TIMEOUT);
    let text = read_log(log);
    assert!(status.success(), "{status}:\n{text}");
    assert!(text.contains("received stop signal while waiting to reconnect"), "the stop is logged:\n{text}");
}

#[test]
fn hangup_and_stop_while_reconnecting_pgreceivewal_18() {
    let mut c = fault_cluster(PgVersion::V18, "");
    let t = TestDir::new("hupwal");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    c.create_physical_slot("arch");
    let child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    wait_until(TIMEOUT, "streaming", || reported(&c, "write_lsn").is_some());
    hangup_then_stop_while_reconnecting(&mut c, child, &log, |c, _| {
        c.generate_wal(1);
        wait_received(c, lsn(&c.current_lsn()), TIMEOUT);
    });
}

#[test]
fn hangup_and_stop_while_reconnecting_pgrecvlogical_15() {
    let mut c = logical_source(PgVersion::V15, "");
    let t = TestDir::new("huplog");
    let (out, log) = (t.join("out"), t.join("tool.log"));
    let child = spawn(&mut tool(&c, &["-S", "cdc", "-P", "p", "-D", out.to_str().unwrap()]), &log);
    wait_until(TIMEOUT, "the slot in use", || slot_active(&c, "cdc"));
    hangup_then_stop_while_reconnecting(&mut c, child, &log, |c, child| {
        c.psql("INSERT INTO t VALUES (1, 'after SIGHUP')");
        wait_caught_up(c, "cdc", child, &log);
    });
}
