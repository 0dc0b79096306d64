//! `--metrics-address` (src/metrics.rs): the tools serve Prometheus' text format on
//! `/metrics` and a health check on `/health`, read here by curl, as a monitoring system would,
//! from a tool running under a pgbench load; the server stopped, health turns to 503 while the
//! tool reconnects; an address that cannot be served stops the tool at start with one line.
//! pgapplylogical likewise, applying pgrecvlogical's directory to a target: its applied
//! position, counters and lag, held back by a lock on the target and then caught up.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::apply::{applied, applier, copy_schema, last_commit_end};
use crate::faults::support::{lsn, read_log, run_capture};
use crate::logical::{logical_cluster, pgrecvlogical, spawn, stop, tool, wait_caught_up};
use crate::util::{
    free_port, pg_tool, pgreceivewal, wait_until, Cluster, KillOnDrop, Mode, PgVersion, TestDir,
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// One scrape: every sample, by its series (`name` or `name{labels}`).
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    fn must(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("no {series} in the scrape: {:?}", self.0.keys()))
    }
}

/// `curl -sf http://ADDR/metrics`, every line checked against the text format: a comment, or
/// a series and a number.
fn scrape(addr: &str) -> Option<Scrape> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", &format!("http://{addr}/metrics")])
        .stderr(Stdio::null())
        .output()
        .expect("curl runs (scripts/install-deps.sh installs it)");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).expect("metrics are UTF-8");
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed line: {line:?}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(samples.insert(series.to_owned(), v).is_none(), "series twice: {line:?}");
    }
    Some(Scrape(samples))
}

/// The HTTP status of `GET /health` (0 when nothing answers).
fn health(addr: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{addr}/health"),
        ])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn pgbench(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = pg_tool(c.version(), "pgbench");
    cmd.args(["-h", "127.0.0.1", "-p", &c.port().to_string(), "-U", "postgres", "-n"])
        .args(args)
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn pgbench_init(c: &Cluster) {
    let out = pgbench(c, &["-i", "-q", "-s", "2"]).output().unwrap();
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
}

fn wait_pgbench(run: Child) {
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "pgbench: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits for a scrape that satisfies `f`; fails with the tool's log if none does in time.
fn wait_scrape(addr: &str, what: &str, log: &Path, f: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(s) = scrape(addr) {
            if f(&s) {
                return s;
            }
            last = Some(s.0);
        }
        if std::time::Instant::now() > deadline {
            panic!("no scrape with {what}; last: {last:?}\nlog:\n{}", read_log(log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What both tools serve while streaming under load, then with the server gone.
fn under_load_then_server_stopped(
    c: &mut Cluster,
    tool: &str,
    addr: &str,
    log: &Path,
    child: &mut KillOnDrop,
    durable: &str,
) -> (Scrape, Scrape) {
    wait_until(TIMEOUT, "/health to say streaming", || health(addr) == 200);
    let p = |n: &str| format!("{tool}_{n}");
    let first =
        wait_scrape(addr, "a known server position", log, |s| s.get(&p("server_lsn_bytes")).is_some());
    assert_eq!(first.must(&p("streaming")), 1.0);
    for name in ["received_lsn_bytes", "written_lsn_bytes", "flushed_lsn_bytes", "lag_bytes", "lag_seconds"] {
        assert!(first.must(&p(name)) >= 0.0, "{name}");
    }
    for kind in ["connection", "server", "protocol", "writer", "setup"] {
        assert_eq!(first.must(&format!("{tool}_errors_total{{kind=\"{kind}\"}}")), 0.0, "{kind}");
    }
    assert_eq!(first.must(&p("reconnects_total")), 0.0);

    // Load, scraped while it runs: the durable position follows the server's.
    let run = pgbench(c, &["-c", "4", "-t", "300"]).spawn().unwrap();
    let mid = wait_scrape(addr, "the durable position moving", log, |s| {
        s.must(&p(durable)) > first.must(&p(durable))
    });
    wait_pgbench(run);
    if tool == "pgreceivewal" {
        // The archiver makes a segment durable when it is complete.
        c.psql("SELECT pg_switch_wal()");
    }
    let target = lsn(&c.current_lsn()) as f64;
    let done =
        wait_scrape(addr, "the durable position at the server's", log, |s| s.must(&p(durable)) >= target);
    assert!(done.must(&p("server_lsn_bytes")) >= target);
    assert!(done.must(&p("received_lsn_bytes")) >= mid.must(&p("received_lsn_bytes")));
    assert!(done.must(&p("written_bytes_total")) > first.must(&p("written_bytes_total")));
    assert!(done.must(&p("fsync_duration_seconds_count")) > 0.0);
    assert_eq!(
        done.must(&p("fsync_duration_seconds_count")),
        done.must(&format!("{tool}_fsync_duration_seconds_bucket{{le=\"+Inf\"}}"))
    );
    assert!(done.must(&p("fsync_duration_seconds_sum")) > 0.0);

    // The server goes away: not streaming any more, and the tool keeps trying.
    c.stop(Mode::Fast);
    wait_until(TIMEOUT, "/health to say not streaming", || health(addr) == 503);
    let gone = wait_scrape(addr, "a reconnect", log, |s| s.must(&p("reconnects_total")) >= 1.0);
    assert_eq!(gone.must(&p("streaming")), 0.0);
    let errors: f64 = ["connection", "server"]
        .iter()
        .map(|k| gone.must(&format!("{tool}_errors_total{{kind=\"{k}\"}}")))
        .sum();
    assert!(errors >= 1.0, "the lost connection is counted");
    assert!(child.try_wait().unwrap().is_none(), "the tool reconnects:\n{}", read_log(log));
    let status = child.signal_and_wait("TERM", TIMEOUT);
    assert!(status.success(), "{status}:\n{}", read_log(log));
    (first, done)
}

fn pgreceivewal_metrics(version: PgVersion, synchronous: bool) {
    let mut c = Cluster::builder(version).wal_segsize_mb(1).start();
    pgbench_init(&c);
    let t = TestDir::for_test();
    let (dir, log) = (t.join("wal"), t.join("tool.log"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).args(["-D", dir.to_str().unwrap(), "--metrics-address", &addr]);
    if synchronous {
        // A synchronous archiver the server waits for: the metric says so.
        c.create_physical_slot("arch");
        c.set_conf("synchronous_standby_names = 'pgreceivewal'");
        cmd.args(["-S", "arch", "--synchronous"]);
    }
    let mut child = spawn(&mut cmd, &log);
    let (first, done) =
        under_load_then_server_stopped(&mut c, "pgreceivewal", &addr, &log, &mut child, "flushed_lsn_bytes");
    assert_eq!(first.must("pgreceivewal_synchronous_standby"), if synchronous { 1.0 } else { 0.0 });
    assert!(first.must("pgreceivewal_archive_free_bytes") > 0.0);
    assert!(done.must("pgreceivewal_segments_completed_total") >= 1.0);
    assert!(done.must("pgreceivewal_last_segment_timestamp_seconds") > 1.7e9);
    assert!(done.must("pgreceivewal_last_segment_timeline") == 1.0);
    let last = done.must("pgreceivewal_last_segment_start_lsn_bytes");
    let name = format!("{:08X}{:08X}{:08X}", 1, (last as u64) >> 32, ((last as u64) & 0xffff_ffff) >> 20);
    assert!(dir.join(&name).exists(), "the last completed segment {name} is in the archive");
    assert!(
        done.get("pgrecvlogical_changes_total").is_none() && done.get("pgreceivewal_changes_total").is_none()
    );
}

#[test]
fn pgreceivewal_metrics_under_pgbench_15() {
    pgreceivewal_metrics(PgVersion::V15, false);
}

#[test]
fn pgreceivewal_metrics_under_pgbench_synchronous_18() {
    pgreceivewal_metrics(PgVersion::V18, true);
}

fn pgrecvlogical_metrics(version: PgVersion) {
    let mut c = logical_cluster(version);
    pgbench_init(&c);
    c.psql("CREATE TABLE big (id int PRIMARY KEY, v text)");
    c.psql("CREATE PUBLICATION p FOR ALL TABLES");
    c.psql("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput')");
    let t = TestDir::for_test();
    let (out, log) = (t.join("out"), t.join("tool.log"));
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = pgrecvlogical();
    cmd.args(c.conn_args()).args(["-s", "1", "-S", "cdc", "-P", "p", "-D", out.to_str().unwrap()]);
    cmd.args(["--memory-limit", "64kB", "--metrics-address", &addr]);
    let mut child = spawn(&mut cmd, &log);
    wait_until(TIMEOUT, "/health to say streaming", || health(&addr) == 200);
    // One transaction far over logical_decoding_work_mem and --memory-limit: streamed by the
    // server before its commit, spilled to disk here.
    c.psql("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g");
    let (first, done) = under_load_then_server_stopped(
        &mut c,
        "pgrecvlogical",
        &addr,
        &log,
        &mut child,
        "confirmed_lsn_bytes",
    );
    assert_eq!(first.must("pgrecvlogical_synchronous_standby"), 0.0);
    assert!(first.must("pgrecvlogical_output_free_bytes") > 0.0);
    // pgbench's 1200 transactions of 4 changes each, and the big one.
    assert!(done.must("pgrecvlogical_transactions_total") >= 1201.0);
    assert!(done.must("pgrecvlogical_changes_total") >= 1200.0 * 4.0 + 5000.0);
    assert!(done.must("pgrecvlogical_spill_bytes_total") > 64.0 * 1024.0);
    assert!(done.must("pgrecvlogical_flushed_lsn_bytes") > first.must("pgrecvlogical_flushed_lsn_bytes"));
    assert!(done.get("pgrecvlogical_segments_completed_total").is_none());
}

#[test]
fn pgrecvlogical_metrics_under_pgbench_15() {
    pgrecvlogical_metrics(PgVersion::V15);
}

#[test]
fn pgrecvlogical_metrics_under_pgbench_18() {
    pgrecvlogical_metrics(PgVersion::V18);
}

/// A port another process listens on, an address not of this host: one message saying so (its
/// detail and hint on lines of their own), exit 1, before any connection (the server here does
/// not exist). A malformed one is a usage error.
#[test]
fn an_address_that_cannot_be_served_stops_the_tool_at_start() {
    let t = TestDir::for_test();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let nowhere = free_port().to_string();
    type Make = fn(&Path) -> Command;
    let tools: [(&str, Make); 3] = [
        ("pgreceivewal", |dir| {
            let mut cmd = pgreceivewal();
            cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-D"]).arg(dir);
            cmd
        }),
        ("pgrecvlogical", |dir| {
            let mut cmd = pgrecvlogical();
            cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-S", "s", "-P", "p", "-D"]).arg(dir);
            cmd
        }),
        ("pgapplylogical", |dir| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgapplylogical"));
            cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-D"]).arg(dir);
            cmd
        }),
    ];
    for (tool, make) in tools {
        for (address, primary, more) in [
            (
                taken.as_str(),
                "Address already in use",
                vec!["hint: Another process listens on that port: choose another port."],
            ),
            (
                "192.0.2.1:9187",
                "Cannot assign requested address",
                vec![
                    "detail: It is not an address of this host.",
                    "hint: Give an address of this host, such as 127.0.0.1 for this host only.",
                ],
            ),
        ] {
            let mut cmd = make(&t.join(format!("{tool}-out")));
            cmd.args(["-p", &nowhere, "--metrics-address", address]);
            let (code, err) = run_capture(&mut cmd, TIMEOUT);
            assert_eq!(code, Some(1), "{tool} {address}: {err}");
            // One message: the primary line in the system's words (no " (os error N)"), then
            // its detail and hint on lines of their own.
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1 + more.len(), "{tool} {address}: one message: {err}");
            assert!(
                lines[0].ends_with(&format!(
                    "error: could not listen on --metrics-address \"{address}\": {primary}"
                )),
                "{tool}: {err}"
            );
            for (line, want) in lines[1..].iter().zip(&more) {
                assert!(line.ends_with(want), "{tool} {address}: {line:?} should end in {want:?}: {err}");
            }
            assert!(!err.contains("(os error"), "{tool}: {err}");
            assert!(!err.contains("could not connect"), "refused before connecting: {err}");
        }
        let mut cmd = make(&t.join(format!("{tool}-out")));
        cmd.args(["--metrics-address", "9187"]);
        let (code, err) = run_capture(&mut cmd, TIMEOUT);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.starts_with(&format!("{tool}: error: invalid --metrics-address \"9187\": use HOST:PORT")),
            "{err}"
        );
    }
}

/// pgapplylogical under load, scraped: held back by a lock on the target, its lag is the
/// directory's end minus the applied position; released, the applied position and the
/// counters move and the lag returns to 0; its log line says the same; the target stopped,
/// health turns to 503 and the lost connection is counted.
fn pgapplylogical_metrics(version: PgVersion) {
    let source = logical_cluster(version);
    let mut target = Cluster::new(version);
    let t = TestDir::for_test();
    let dir = t.join("out");
    let (rlog, alog) = (t.join("recv.log"), t.join("apply.log"));
    let out = pgbench(&source, &["-i", "-q", "-s", "1"]).output().unwrap();
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
    source.psql("DELETE FROM pgbench_accounts WHERE aid > 20000; CREATE PUBLICATION pub FOR ALL TABLES");
    copy_schema(&source, &target);
    let recv_args =
        ["-S", "cdc", "-P", "pub", "--snapshot", "--create-slot-if-missing", "-D", dir.to_str().unwrap()];
    let mut recv = spawn(&mut tool(&source, &recv_args), &rlog);
    wait_until(TIMEOUT, "the initial snapshot", || read_log(&rlog).contains("initial snapshot written"));
    wait_pgbench(pgbench(&source, &["-c", "2", "-t", "100"]).spawn().unwrap());
    wait_caught_up(&source, "cdc", &mut recv, &rlog);

    // A session on the target holds a lock the applier's first transaction (the snapshot)
    // waits for.
    let mut locker = KillOnDrop::new(target.psql_async(
        "SET application_name = 'locker'; BEGIN; LOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)",
    ));
    wait_until(TIMEOUT, "the lock on the target", || {
        target.psql(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'pgbench_accounts' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) == "1"
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let mut apply = spawn(&mut applier(&target, &dir, &["-v", "--metrics-address", &addr]), &alog);
    wait_until(TIMEOUT, "/health to say connected", || health(&addr) == 200);
    let p = |n: &str| format!("pgapplylogical_{n}");
    let held = wait_scrape(&addr, "a lag while the lock is held", &alog, |s| {
        s.get(&p("lag_bytes")).is_some_and(|l| l > 0.0)
    });
    assert_eq!(held.must(&p("connected")), 1.0);
    assert_eq!(held.must(&p("applied_lsn_bytes")), 0.0, "nothing applied through the lock");
    assert_eq!(held.must(&p("transactions_total")), 0.0);
    assert!(held.must(&p("directory_end_lsn_bytes")) >= lsn(&last_commit_end(&dir)) as f64);
    for kind in ["connection", "server", "protocol", "writer", "setup"] {
        assert_eq!(held.must(&format!("pgapplylogical_errors_total{{kind=\"{kind}\"}}")), 0.0, "{kind}");
    }
    assert_eq!(held.must(&p("reconnects_total")), 0.0);
    assert_eq!(
        held.must(&format!("pgapplylogical_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))),
        1.0
    );
    assert!(
        held.get("pgapplylogical_streaming").is_none()
            && held.get("pgapplylogical_server_lsn_bytes").is_none()
    );
    assert!(held.get(&p("last_applied_timestamp_seconds")).is_none(), "nothing applied yet");
    assert!(held.get(&p("last_commit_timestamp_seconds")).is_none());
    assert_eq!(health(&addr), 200, "waiting for a lock for less than 5 minutes is not stuck");

    // Released: everything in the directory is applied, and the lag is 0.
    target.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'");
    let _ = locker.wait();
    let caught_up = |s: &Scrape, at: &str| {
        s.must(&p("lag_bytes")) == 0.0 && s.must(&p("applied_lsn_bytes")) == lsn(at) as f64
    };
    let end = last_commit_end(&dir);
    let first = wait_scrape(&addr, "the directory applied", &alog, |s| caught_up(s, &end));
    assert_eq!(first.must(&p("directory_end_lsn_bytes")), lsn(&end) as f64);
    assert_eq!(applied(&target), end);
    // The snapshot and pgbench's 200 transactions, each updating a teller and a branch and
    // inserting into the history (its account is gone 4 times in 5: only 20 000 are left).
    let (txns, rows) = (first.must(&p("transactions_total")), first.must(&p("rows_total")));
    assert!(txns >= 201.0 && rows >= 20_000.0 + 200.0 * 3.0, "{txns} transactions, {rows} rows");

    // Following under load: the position and the counters move, the lag returns to 0.
    wait_pgbench(pgbench(&source, &["-c", "2", "-t", "100"]).spawn().unwrap());
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let end = last_commit_end(&dir);
    let done = wait_scrape(&addr, "the new transactions applied", &alog, |s| caught_up(s, &end));
    assert!(done.must(&p("applied_lsn_bytes")) > first.must(&p("applied_lsn_bytes")));
    assert!(done.must(&p("transactions_total")) >= first.must(&p("transactions_total")) + 200.0);
    assert!(done.must(&p("rows_total")) >= first.must(&p("rows_total")) + 600.0);
    assert!(done.must(&p("last_applied_timestamp_seconds")) > 1.7e9);
    // The source's commit time of the last one: before it was applied (one clock here).
    let committed = done.must(&p("last_commit_timestamp_seconds"));
    assert!(committed > 1.7e9 && committed <= done.must(&p("last_applied_timestamp_seconds")) + 1.0);
    assert_eq!(applied(&target), end);
    assert_eq!(health(&addr), 200);
    // The positions line, in the streaming tools' words (every 5 s with -v).
    wait_until(TIMEOUT, "the positions line", || {
        read_log(&alog).lines().any(|l| l.contains("applying: applied ") && l.contains(" directory at "))
    });
    let line = read_log(&alog).lines().rev().find(|l| l.contains("applying: applied ")).unwrap().to_owned();
    assert!(line.contains("(0 bytes behind)") || line.contains(" behind); "), "{line}");

    // The target goes away: not connected, counted, and the applier keeps trying.
    target.stop(Mode::Fast);
    wait_until(TIMEOUT, "/health to say not connected", || health(&addr) == 503);
    let gone = wait_scrape(&addr, "a reconnect", &alog, |s| s.must(&p("reconnects_total")) >= 1.0);
    assert_eq!(gone.must(&p("connected")), 0.0);
    assert!(
        gone.must("pgapplylogical_errors_total{kind=\"connection\"}") >= 1.0,
        "the lost connection is counted"
    );
    assert!(apply.try_wait().unwrap().is_none(), "the applier reconnects:\n{}", read_log(&alog));
    let status = apply.signal_and_wait("TERM", TIMEOUT);
    assert!(status.success(), "{status}:\n{}", read_log(&alog));
    stop(&mut recv, &rlog);
}

#[test]
fn pgapplylogical_metrics_under_pgbench_15() {
    pgapplylogical_metrics(PgVersion::V15);
}

#[test]
fn pgapplylogical_metrics_under_pgbench_18() {
    pgapplylogical_metrics(PgVersion::V18);
}
