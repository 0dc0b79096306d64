//! What an operator sees without looking at the archive: systemd's notifications
//! (`Type=notify`: READY=1, STATUS=, WATCHDOG=1, STOPPING=1, src/notify.rs) and the positions
//! and lag line in the log (src/lag.rs), from both tools, which get them from the session core.
//! A test here plays systemd: it binds the datagram socket `$NOTIFY_SOCKET` names.

use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::faults::support::{build_shim, lines_at, lsn, read_log};
use crate::logical::{pgrecvlogical, spawn};
use crate::util::{pgreceivewal, wait_until, Cluster, KillOnDrop, Mode, PgVersion, TestDir};

const TIMEOUT: Duration = Duration::from_secs(90);
/// systemd's WATCHDOG_USEC for the tests: a ping is due every 0.8 s, less than the 2 s the
/// receiver would otherwise wait on an idle server with status updates off (`-s 0`).
const WATCHDOG: Duration = Duration::from_millis(1600);

/// The notification socket, and what arrived on it, with when.
struct Systemd {
    env: String,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Systemd {
    /// Listens on a socket in `dir`, or on an abstract one (`@name`).
    fn listen(dir: &Path, abstract_socket: bool) -> Systemd {
        let (sock, env) = if abstract_socket {
            let name = format!("pgrw-test-notify-{}-{}", std::process::id(), dir.display());
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
        } else {
            let path = dir.join("notify");
            (UnixDatagram::bind(&path).unwrap(), path.to_str().unwrap().to_owned())
        };
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (g, d) = (got.clone(), done.clone());
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !d.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().unwrap().push((Instant::now(), msg));
                }
            }
        });
        Systemd { env, got, done, thread: Some(thread) }
    }

    /// Sets the service's environment on `cmd`, as systemd does for `Type=notify` with
    /// `WatchdogSec=`.
    fn service(&self, cmd: &mut Command) {
        cmd.env("NOTIFY_SOCKET", &self.env).env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// Every `NAME=value` assignment so far, in order.
    fn assignments(&self) -> Vec<String> {
        self.messages().iter().flat_map(|(_, m)| m.lines().map(str::to_owned).collect::<Vec<_>>()).collect()
    }

    fn wait_for(&self, what: &str, log: &Path, f: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.assignments().iter().any(|a| f(a)) {
            if Instant::now() > deadline {
                panic!("no {what} from the tool; got {:?}\nlog:\n{}", self.assignments(), read_log(log));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The positions of the `STATUS=streaming at X/Y...` messages so far.
    fn status_positions(&self) -> Vec<u64> {
        self.assignments()
            .iter()
            .filter_map(|a| a.strip_prefix("STATUS=streaming at "))
            .map(|s| lsn(s.split(',').next().unwrap()))
            .collect()
    }

    /// The gaps between watchdog pings arriving after `since`: at least `n` of them.
    fn watchdog_gaps(&self, since: Instant, n: usize, log: &Path) -> Vec<Duration> {
        let pings = || -> Vec<Instant> {
            self.messages()
                .iter()
                .filter(|(t, m)| *t >= since && m == "WATCHDOG=1")
                .map(|(t, _)| *t)
                .collect()
        };
        let deadline = Instant::now() + TIMEOUT;
        while pings().len() <= n {
            if Instant::now() > deadline {
                panic!("only {} watchdog pings arrived:\n{}", pings().len(), read_log(log));
            }
            thread::sleep(Duration::from_millis(50));
        }
        pings().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What both tools must do under `Type=notify` once they stream: READY=1 (only now: the
/// server already shows the stream), STATUS= with the position, which follows the WAL, watchdog
/// pings on an idle server never further apart than systemd's time-out, STOPPING=1 on SIGTERM.
fn notifications(
    sd: &Systemd,
    child: &mut KillOnDrop,
    log: &Path,
    streaming: impl Fn() -> bool,
    make_wal: impl Fn() -> u64,
) {
    sd.wait_for("READY=1", log, |a| a == "READY=1");
    assert!(streaming(), "READY=1 came before the server showed the stream");
    let ready = sd.assignments().iter().position(|a| a == "READY=1").unwrap();
    assert!(
        !sd.assignments()[..ready].iter().any(|a| a.starts_with("STATUS=streaming")),
        "no streaming status before READY=1: {:?}",
        sd.assignments()
    );
    assert_eq!(sd.assignments().iter().filter(|a| *a == "READY=1").count(), 1);

    let target = make_wal();
    wait_until(TIMEOUT, "a STATUS= with the position after the new WAL", || {
        sd.status_positions().iter().any(|&p| p >= target)
    });
    let positions = sd.status_positions();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "positions never go back: {positions:?}");
    assert!(
        sd.assignments()
            .iter()
            .any(|a| a.starts_with("STATUS=streaming at ") && a.ends_with("behind the server")),
        "STATUS= says how far behind the server: {:?}",
        sd.assignments()
    );

    // Idle: status updates are off (-s 0), nothing arrives; the pings must still come in time
    // (systemd restarts a service whose pings are further apart than WATCHDOG_USEC).
    let gaps = sd.watchdog_gaps(Instant::now(), 8, log);
    assert!(gaps.iter().all(|g| *g < WATCHDOG), "watchdog pings {gaps:?} apart, time-out {WATCHDOG:?}");

    let status = child.signal_and_wait("TERM", TIMEOUT);
    let text = read_log(log);
    assert!(status.success(), "SIGTERM: exit 0 ({status}):\n{text}");
    let a = sd.assignments();
    let stopping = a.iter().position(|a| a == "STOPPING=1");
    assert!(stopping.is_some_and(|i| i > ready), "STOPPING=1 after SIGTERM: {a:?}");
    assert_eq!(a.iter().filter(|a| *a == "STOPPING=1").count(), 1, "{a:?}");
}

#[test]
fn pgreceivewal_notifies_systemd_15() {
    let c = Cluster::builder(PgVersion::V15).wal_segsize_mb(1).start();
    let t = TestDir::for_test();
    let (dir, log) = (t.join("wal"), t.join("tool.log"));
    let sd = Systemd::listen(t.path(), false);
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).args(["-s", "0", "-D", dir.to_str().unwrap()]);
    sd.service(&mut cmd);
    let mut child = spawn(&mut cmd, &log);
    let streaming =
        || c.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgreceivewal'") == "1";
    let make_wal = || {
        // The archiver makes a segment durable when it is complete: switch to the next one.
        c.psql("CREATE TABLE IF NOT EXISTS f (i int); INSERT INTO f SELECT generate_series(1, 1000)");
        let at = lsn(&c.current_lsn());
        c.psql("SELECT pg_switch_wal()");
        at
    };
    notifications(&sd, &mut child, &log, streaming, make_wal);
}

/// A server that cannot be reached: the run ends before any stream, so never READY=1, and
/// systemd hears STOPPING=1 with the cause.
#[test]
fn pgreceivewal_is_not_ready_without_a_stream_15() {
    let c = Cluster::builder(PgVersion::V15).start();
    let port = c.port();
    drop(c);
    let t = TestDir::for_test();
    let log = t.join("tool.log");
    let sd = Systemd::listen(t.path(), true);
    let mut cmd = pgreceivewal();
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-D"]).arg(t.join("wal"));
    sd.service(&mut cmd);
    let mut child = spawn(&mut cmd, &log);
    let status = crate::util::wait_for_exit(&mut child, TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(1), "{}", read_log(&log));
    sd.wait_for("STOPPING=1", &log, |a| a == "STOPPING=1");
    let a = sd.assignments();
    assert!(!a.iter().any(|a| a == "READY=1"), "READY=1 without a stream: {a:?}");
    assert!(
        a.iter()
            .any(|a| a.starts_with("STATUS=stopping after an error: ") && a.contains("could not connect")),
        "{a:?}"
    );
}

#[test]
fn pgrecvlogical_notifies_systemd_18() {
    let c = Cluster::builder(PgVersion::V18).conf("wal_level = logical\nautovacuum = off").start();
    c.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    c.psql("CREATE PUBLICATION p FOR TABLE t");
    c.psql("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput')");
    let t = TestDir::for_test();
    let (out, log) = (t.join("out"), t.join("tool.log"));
    // The abstract form, as systemd hands it out since version 254.
    let sd = Systemd::listen(t.path(), true);
    let mut cmd = pgrecvlogical();
    cmd.args(c.conn_args()).args(["-s", "0", "-S", "cdc", "-P", "p", "-D", out.to_str().unwrap()]);
    sd.service(&mut cmd);
    let mut child = spawn(&mut cmd, &log);
    let streaming = || c.psql("SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc'") == "t";
    let make_wal = || {
        c.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g");
        lsn(&c.current_lsn())
    };
    notifications(&sd, &mut child, &log, streaming, make_wal);
}

// ---------------------------------------------------------------------------
// The positions and lag line
// ---------------------------------------------------------------------------

/// The positions of `streaming: received A, written B, flushed C; server at D (...)`.
fn positions_line(line: &str) -> Option<[u64; 4]> {
    let rest = &line[line.find("streaming: received ")? + "streaming: received ".len()..];
    let (r, rest) = rest.split_once(", written ")?;
    let (w, rest) = rest.split_once(", flushed ")?;
    let (f, rest) = rest.split_once("; server at ")?;
    let (s, rest) = rest.split_once(" (")?;
    rest.contains(" behind)").then(|| [lsn(r), lsn(w), lsn(f), lsn(s)])
}

/// With -v, the line comes every few seconds, at debug level, in the same words from both
/// tools, and its positions are in order and reach the WAL the server made.
fn lag_line_with_verbose(cmd: &mut Command, log: &Path, target: impl Fn() -> u64) {
    let _child = spawn(cmd.arg("-v"), log);
    let target = target();
    wait_until(TIMEOUT, "a positions line reaching the new WAL", || {
        lines_at(&read_log(log), "debug").iter().filter_map(|l| positions_line(l)).any(|p| p[2] >= target)
    });
    let text = read_log(log);
    for l in lines_at(&text, "debug").iter().filter(|l| l.contains("streaming: received")) {
        let [r, w, f, s] = positions_line(l).unwrap_or_else(|| panic!("malformed: {l}"));
        // pgrecvlogical's written position is the end of a transaction whose commit message
        // starts before it: only the physical tool's written is never past received.
        assert!(f <= w && f <= s && r <= s, "positions out of order: {l}");
    }
}

#[test]
fn lag_line_pgreceivewal_15() {
    let c = Cluster::builder(PgVersion::V15).wal_segsize_mb(1).start();
    let t = TestDir::for_test();
    let log = t.join("tool.log");
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).args(["-D", t.join("wal").to_str().unwrap()]);
    lag_line_with_verbose(&mut cmd, &log, || {
        wait_until(TIMEOUT, "the stream", || {
            c.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"
        });
        c.psql("CREATE TABLE f (i int); INSERT INTO f SELECT generate_series(1, 20000)");
        let at = lsn(&c.current_lsn());
        c.psql("SELECT pg_switch_wal()");
        at
    });
}

#[test]
fn lag_line_pgrecvlogical_18() {
    let c = Cluster::builder(PgVersion::V18).conf("wal_level = logical\nautovacuum = off").start();
    c.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    c.psql("CREATE PUBLICATION p FOR TABLE t");
    c.psql("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput')");
    let t = TestDir::for_test();
    let log = t.join("tool.log");
    let mut cmd = pgrecvlogical();
    cmd.args(c.conn_args()).args(["-S", "cdc", "-P", "p", "-D", t.join("out").to_str().unwrap()]);
    lag_line_with_verbose(&mut cmd, &log, || {
        wait_until(TIMEOUT, "the slot in use", || {
            c.psql("SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc'") == "t"
        });
        c.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20000) g");
        lsn(&c.current_lsn())
    });
}

/// Without -v: a writer slowed down (each write 0.2 s) falls more than the threshold behind
/// the server, which is logged at info level at once, and so is the catching up.
#[test]
fn lag_over_the_threshold_is_logged_15() {
    let c = Cluster::builder(PgVersion::V15).wal_segsize_mb(1).conf("max_wal_size = '1GB'").start();
    let t = TestDir::for_test();
    let (dir, log, trigger) = (t.join("wal"), t.join("tool.log"), t.join("slow"));
    let dir_s = dir.to_str().unwrap();
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).args(["-D", dir_s]);
    cmd.env("LD_PRELOAD", build_shim(t.path(), "slowwrite"))
        .env("SLOWWRITE_MATCH", dir_s)
        .env("SLOWWRITE_TRIGGER", &trigger)
        .env("SLOWWRITE_USEC", "200000");
    let _child = spawn(&mut cmd, &log);
    wait_until(TIMEOUT, "the stream", || {
        c.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"
    });
    fs::write(&trigger, b"").unwrap();
    // About 100 MB of WAL.
    c.psql("CREATE TABLE f (i int, v text); INSERT INTO f SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g");
    wait_until(TIMEOUT, "the lag going over the threshold", || {
        lines_at(&read_log(&log), "info").iter().any(|l| l.contains("; lag is over 64.0 MB"))
    });
    fs::remove_file(&trigger).unwrap();
    c.psql("SELECT pg_switch_wal()");
    wait_until(TIMEOUT * 2, "the lag back under half the threshold", || {
        lines_at(&read_log(&log), "info").iter().any(|l| l.contains("; lag is back under 32.0 MB"))
    });
    let text = read_log(&log);
    let over = lines_at(&text, "info").into_iter().find(|l| l.contains("lag is over")).unwrap();
    let [_, _, f, s] = positions_line(over).unwrap_or_else(|| panic!("malformed: {over}"));
    assert!(s - f > 64 << 20, "the line's own positions show the lag: {over}");
    assert!(over.contains(" s behind)"), "seconds too: {over}");
}

/// While it waits to reconnect, systemd hears why and for how long, and the watchdog pings go
/// on in time through back-off waits longer than the time-out (1, 2, 4 s against 1.6 s).
#[test]
fn pgreceivewal_notifies_while_reconnecting_18() {
    let mut c = Cluster::builder(PgVersion::V18).wal_segsize_mb(1).start();
    let t = TestDir::for_test();
    let (dir, log) = (t.join("wal"), t.join("tool.log"));
    let sd = Systemd::listen(t.path(), false);
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).args(["-D", dir.to_str().unwrap()]);
    sd.service(&mut cmd);
    let mut child = spawn(&mut cmd, &log);
    sd.wait_for("READY=1", &log, |a| a == "READY=1");
    c.stop(Mode::Fast);
    let since = Instant::now();
    sd.wait_for("the reconnect status", &log, |a| a.starts_with("STATUS=reconnecting in 1 s: "));
    sd.wait_for("the second back-off", &log, |a| a.starts_with("STATUS=reconnecting in 4 s: "));
    let gaps = sd.watchdog_gaps(since, 6, &log);
    assert!(gaps.iter().all(|g| *g < WATCHDOG), "watchdog pings {gaps:?} apart, time-out {WATCHDOG:?}");
    c.start_again();
    let back = sd.assignments().len();
    wait_until(TIMEOUT, "streaming again", || {
        sd.assignments()[back..].iter().any(|a| a.starts_with("STATUS=streaming at "))
    });
    let a = sd.assignments();
    assert_eq!(a.iter().filter(|a| *a == "READY=1").count(), 1, "READY=1 once per process: {a:?}");
    let status = child.signal_and_wait("TERM", TIMEOUT);
    assert!(status.success(), "{}", read_log(&log));
    assert!(sd.assignments().iter().any(|a| a == "STOPPING=1"));
}
