//! End-to-end tests of pgapplylogical against real PostgreSQL 15 and 18 servers: a source
//! streamed by pgrecvlogical (snapshot, DDL) into a directory, the directory applied to a
//! target, both tools killed with SIGKILL several times under pgbench and a DDL script, and
//! at the end the target's data (`pg_dump --data-only`, sorted) and schema equal the source's.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::logical::{logical_cluster, spawn, stop, tool, wait_caught_up, TIMEOUT};
use crate::util::{pg_tool, wait_until, Cluster, Mode, PgVersion, TestDir};

/// `pgapplylogical` as built for this test run, stdin closed, libpq's PG* variables removed.
fn pgapplylogical() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgapplylogical"));
    cmd.stdin(Stdio::null());
    for var in
        ["PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"]
    {
        cmd.env_remove(var);
    }
    cmd
}

pub(crate) fn applier(target: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgapplylogical();
    cmd.args(["-D", dir.to_str().unwrap(), "-d", &target.conninfo()]).args(extra);
    cmd
}

pub(crate) fn applied(target: &Cluster) -> String {
    target.try_psql("SELECT end_lsn FROM pgapplylogical.applied_position").unwrap_or_default()
}

/// A dump of `args` from `c`, without what legitimately differs between two clusters (the
/// dump's own comments and `\restrict` keys, sequence positions), lines sorted.
fn dump(c: &Cluster, args: &[&str]) -> Vec<String> {
    let port = c.port().to_string();
    let out = pg_tool(c.version(), "pg_dump")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "postgres", "-n", "public"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("--")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.starts_with("SELECT pg_catalog.setval")
        })
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn assert_same(source: &Cluster, target: &Cluster, args: &[&str], what: &str) {
    let (s, t) = (dump(source, args), dump(target, args));
    if s != t {
        let only_s: Vec<&String> = s.iter().filter(|l| !t.contains(l)).take(10).collect();
        let only_t: Vec<&String> = t.iter().filter(|l| !s.contains(l)).take(10).collect();
        panic!("{what} differ: {} source lines, {} target lines; only on the source: {only_s:#?}; only on the target: {only_t:#?}", s.len(), t.len());
    }
}

/// The `end_lsn` of the last transaction in the directory.
pub(crate) fn last_commit_end(dir: &Path) -> String {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    let mut last = String::new();
    for f in files {
        for l in fs::read_to_string(&f).unwrap().lines() {
            if let Some(rest) = l.strip_prefix("{\"op\":\"commit\",\"end_lsn\":\"") {
                last = rest.split('"').next().unwrap().to_owned();
            }
        }
    }
    last
}

fn pgbench(c: &Cluster, args: &[&str]) {
    let port = c.port().to_string();
    let out = pg_tool(c.version(), "pgbench")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The DDL script, one step between pgbench runs: columns added, dropped, renamed, a type
/// changed, tables created and dropped, a TOASTed value left unchanged by updates, DDL and DML
/// in one transaction, a truncate.
const DDL_STEPS: &[&str] = &[
    "ALTER TABLE pgbench_accounts ADD COLUMN note text; \
     UPDATE pgbench_accounts SET note = 'n' || aid WHERE aid % 997 = 0",
    "CREATE TABLE extra (id int PRIMARY KEY, v text); \
     INSERT INTO extra SELECT g, 'v' || g FROM generate_series(1, 500) g",
    "ALTER TABLE extra RENAME COLUMN v TO val; UPDATE extra SET val = val || '!' WHERE id % 7 = 0",
    "ALTER TABLE extra ALTER COLUMN id TYPE bigint; DELETE FROM extra WHERE id % 11 = 0",
    "CREATE TABLE docs (id int PRIMARY KEY, body text, n int); \
     INSERT INTO docs SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 4000) i), 0 \
     FROM generate_series(1, 3) g",
    "UPDATE docs SET n = n + 1; ALTER TABLE pgbench_accounts DROP COLUMN note",
    "BEGIN; ALTER TABLE extra ADD COLUMN w int DEFAULT 5; UPDATE extra SET w = id WHERE id < 100; COMMIT",
    "CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1), (2); DROP TABLE gone",
    "ALTER TABLE pgbench_branches ALTER COLUMN filler TYPE varchar(200); UPDATE docs SET n = n + 1 WHERE id = 2",
    "TRUNCATE pgbench_history; ALTER TABLE extra DROP COLUMN w",
];

/// The target starts with the source's schema, as a subscriber does.
pub(crate) fn copy_schema(source: &Cluster, target: &Cluster) {
    let port = source.port().to_string();
    let schema = pg_tool(source.version(), "pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "--schema-only",
            "--no-publications",
        ])
        .output()
        .unwrap();
    assert!(schema.status.success());
    target.psql(&String::from_utf8(schema.stdout).unwrap());
}

fn apply_equals_source(version: PgVersion) {
    let source = logical_cluster(version);
    let target = Cluster::new(version);
    let t = TestDir::new("apply");
    let dir = t.join("out");
    let (rlog, alog) = (t.join("recv.log"), t.join("apply.log"));
    pgbench(&source, &["-i", "-s", "1", "-q"]);
    source.psql("DELETE FROM pgbench_accounts WHERE aid > 20000; CREATE PUBLICATION pub FOR ALL TABLES");
    copy_schema(&source, &target);

    let recv_args = [
        "-S",
        "cdc",
        "-P",
        "pub",
        "--snapshot",
        "--create-slot-if-missing",
        "--ddl",
        "--rotate-size",
        "256kB",
        "-D",
        dir.to_str().unwrap(),
    ];
    let mut recv = spawn(&mut tool(&source, &recv_args), &rlog);
    wait_until(TIMEOUT, "the initial snapshot", || {
        fs::read_to_string(&rlog).unwrap_or_default().contains("initial snapshot written")
    });
    let mut apply = spawn(&mut applier(&target, &dir, &["--ddl=apply"]), &alog);
    wait_until(TIMEOUT, "the snapshot applied", || {
        let p = applied(&target);
        !p.is_empty() && p != "0/0"
    });

    let done = AtomicBool::new(false);
    let (mut recv_kills, mut apply_kills) = (0u32, 0u32);
    thread::scope(|s| {
        s.spawn(|| {
            for step in DDL_STEPS {
                pgbench(&source, &["-n", "-c", "2", "-t", "150"]);
                source.psql(step);
            }
            pgbench(&source, &["-n", "-c", "2", "-t", "150"]);
            done.store(true, Ordering::SeqCst);
        });
        // SIGKILL one of the two at pseudo-random times, alternating irregularly, until the
        // workload is done and each was killed at least 3 times (a fast machine finishes the
        // workload before that: the last kills then come while it catches up).
        let mut n = 0u64;
        while !done.load(Ordering::SeqCst) || recv_kills < 3 || apply_kills < 3 {
            n += 1;
            thread::sleep(Duration::from_millis(300 + (n * 7919) % 1500));
            let (child, log, kills) = if (n * 2654435761) % 5 < 2 {
                (&mut recv, &rlog, &mut recv_kills)
            } else {
                (&mut apply, &alog, &mut apply_kills)
            };
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "a tool exited ({status}) during the workload:\n{}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            *kills += 1;
            if std::ptr::eq(log, &rlog) {
                *child = spawn(&mut tool(&source, &recv_args), &rlog);
            } else {
                *child = spawn(&mut applier(&target, &dir, &["--ddl=apply"]), &alog);
            }
        }
    });
    assert!(
        recv_kills >= 3 && apply_kills >= 3,
        "kills: pgrecvlogical {recv_kills}, pgapplylogical {apply_kills}"
    );
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    stop(&mut recv, &rlog);
    // Whatever the running applier has not done yet, a run to the end does.
    let status = apply.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(status.success(), "pgapplylogical: {status}\n{}", fs::read_to_string(&alog).unwrap_or_default());
    let out = applier(&target, &dir, &["--ddl=apply", "--until-caught-up"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_same(&source, &target, &["--data-only"], "data");
    assert_same(&source, &target, &["--schema-only"], "schemas");
    assert_eq!(applied(&target), last_commit_end(&dir), "applied position");
    let alog_text = fs::read_to_string(&alog).unwrap();
    eprintln!(
        "{version}: pgrecvlogical killed {recv_kills} times, pgapplylogical {apply_kills} times; \
         {} files in the directory, {} applier starts",
        fs::read_dir(&dir).unwrap().count(),
        alog_text.lines().filter(|l| l.contains("applying \"")).count()
    );
}

#[test]
fn apply_equals_source_15() {
    apply_equals_source(PgVersion::V15);
}

#[test]
fn apply_equals_source_18() {
    apply_equals_source(PgVersion::V18);
}

/// Runs the applier to the end of the directory; (success, stderr).
pub(crate) fn apply_once(target: &Cluster, dir: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["--until-caught-up"];
    args.extend_from_slice(extra);
    let out = applier(target, dir, &args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn complete_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    v.sort();
    v
}

/// A row that is not there to update, a constraint violation, DDL under the default
/// `--ddl=stop`: each stops the applier with status 1 and a message naming the source
/// position, the table and the key, and the position on the target does not move; once the
/// cause is fixed, the same directory applies. Also `--skip-table`, `--remove-applied` (the
/// writer goes on after its applied files are gone) and a stop by SIGTERM.
fn apply_fails_loudly(version: PgVersion) {
    let source = logical_cluster(version);
    let target = Cluster::new(version);
    let t = TestDir::new("applyfail");
    let dir = t.join("out");
    let (rlog, alog) = (t.join("recv.log"), t.join("apply.log"));
    let tables =
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE audit (id int PRIMARY KEY, v text)";
    source.psql(&format!("{tables}; CREATE PUBLICATION pub FOR ALL TABLES"));
    target.psql(tables);
    let recv_args = [
        "-S",
        "cdc",
        "-P",
        "pub",
        "--create-slot-if-missing",
        "--ddl",
        "--rotate-size",
        "4kB",
        "-D",
        dir.to_str().unwrap(),
    ];
    let mut recv = spawn(&mut tool(&source, &recv_args), &rlog);
    wait_until(TIMEOUT, "the slot", || {
        source.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'") == "1"
    });
    source.psql(
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g; INSERT INTO audit VALUES (1, 'a'); \
         INSERT INTO t SELECT g, repeat('p', 300) FROM generate_series(100, 140) g",
    );
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &["--skip-table", "public.audit"]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT count(*) FROM t"), "44");
    assert_eq!(target.psql("SELECT count(*) FROM audit"), "0", "--skip-table");

    // A row that is not there to update.
    target.psql("DELETE FROM t WHERE id = 2");
    let before = applied(&target);
    source.psql("UPDATE t SET v = 'x' WHERE id = 2");
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(!ok, "{err}");
    for part in [
        "could not apply the update at 0/",
        "to table public.t with key {\"id\":\"2\"}",
        "no row with this key on the target",
        &format!("detail: Nothing after {before} is applied."),
        "hint: Fix the cause on the target and start pgapplylogical again",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    assert_eq!(applied(&target), before, "the position moved");
    target.psql("INSERT INTO t VALUES (2, 'v2')");
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT v FROM t WHERE id = 2"), "x");

    // A constraint violation: the whole source transaction is refused, nothing of it stays.
    target.psql("INSERT INTO t VALUES (10, 'target only')");
    let before = applied(&target);
    // 22 inserts: applied in multi-row statements, then row by row to name the row.
    source.psql("INSERT INTO t SELECT g, 'source' FROM generate_series(9, 30) g");
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(!ok, "{err}");
    for part in [
        "could not apply the insert at 0/",
        "to table public.t with key {\"id\":\"10\"}",
        "duplicate key value violates unique constraint",
        // The target's own detail, then ours.
        &format!("detail: Key (id)=(10) already exists. Nothing after {before} is applied."),
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    assert_eq!(applied(&target), before, "the position moved");
    assert_eq!(
        target.psql("SELECT count(*) FROM t WHERE id BETWEEN 9 AND 30"),
        "1",
        "half a transaction applied"
    );
    target.psql("DELETE FROM t WHERE id = 10");
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT count(*) FROM t WHERE id BETWEEN 9 AND 30 AND v = 'source'"), "22");

    // DDL stops the default run; --ddl=apply runs it.
    source.psql("ALTER TABLE t ADD COLUMN c int; UPDATE t SET c = id WHERE id = 1");
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(!ok && err.contains("DDL at 0/") && err.contains("ALTER TABLE t ADD COLUMN c int"), "{err}");
    assert!(err.contains("not applied (--ddl=stop, the default)"), "{err}");
    assert!(err.contains("hint: Run it on the target and restart with --ddl=ignore until past it"), "{err}");
    let (ok, err) = apply_once(&target, &dir, &["--ddl=apply"]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT c FROM t WHERE id = 1"), "1");

    // --remove-applied: every complete file is applied and removed; pgrecvlogical goes on.
    assert!(!complete_files(&dir).is_empty(), "no rotation happened");
    let (ok, err) = apply_once(&target, &dir, &["--remove-applied"]);
    assert!(ok, "{err}");
    assert!(err.contains("removed applied file"), "{err}");
    let left = complete_files(&dir);
    assert!(left.len() <= 1, "{left:?} left");
    source.psql("INSERT INTO t SELECT g, repeat('q', 300) FROM generate_series(200, 240) g");
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    stop(&mut recv, &rlog);
    let mut recv = spawn(&mut tool(&source, &recv_args), &rlog);
    source.psql("INSERT INTO t VALUES (300, 'after a restart')");
    wait_caught_up(&source, "cdc", &mut recv, &rlog);

    // Following, then SIGTERM between transactions: status 0.
    let mut apply = spawn(&mut applier(&target, &dir, &["--remove-applied"]), &alog);
    wait_until(TIMEOUT, "the last row applied", || {
        target.psql("SELECT count(*) FROM t WHERE id = 300") == "1"
    });
    let status = apply.signal_and_wait("TERM", Duration::from_secs(20));
    let log = fs::read_to_string(&alog).unwrap();
    assert!(status.success() && log.contains("stopping on signal"), "{status}: {log}");
    stop(&mut recv, &rlog);
    // All of it but the skipped table.
    assert_same(&source, &target, &["--data-only", "-T", "public.audit"], "data");
}

#[test]
fn apply_fails_loudly_15() {
    apply_fails_loudly(PgVersion::V15);
}

#[test]
fn apply_fails_loudly_18() {
    apply_fails_loudly(PgVersion::V18);
}

/// Row changes go to the target in pipelines (many statements, then their answers, checked
/// in order): an update that finds no row in the middle of one, past the first pipeline of a
/// long transaction, and a delete whose key matches two rows, still stop the applier with the
/// message naming that record, and nothing of the transaction stays (the statements after it
/// in the pipeline ran, and were rolled back). Then a crash of the target right after the
/// applier exited: it commits with `synchronous_commit = off`, so the position it registered
/// in the directory must have been made durable first, and still be there after the crash.
fn apply_pipelined_failures(version: PgVersion) {
    let source = logical_cluster(version);
    let mut target = Cluster::new(version);
    let t = TestDir::new("applypipe");
    let dir = t.join("out");
    let rlog = t.join("recv.log");
    let tables = "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY); \
                  CREATE TABLE f (a int, b text); ALTER TABLE f REPLICA IDENTITY FULL";
    source.psql(&format!("{tables}; CREATE PUBLICATION pub FOR ALL TABLES"));
    target.psql(tables);
    let mut recv = spawn(
        &mut tool(
            &source,
            &["-S", "cdc", "-P", "pub", "--create-slot-if-missing", "-D", dir.to_str().unwrap()],
        ),
        &rlog,
    );
    wait_until(TIMEOUT, "the slot", || {
        source.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'") == "1"
    });
    source.psql(
        "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 2500) g; \
         INSERT INTO f SELECT g, 'f' || g FROM generate_series(1, 5) g",
    );
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");

    // 2500 updates in one transaction (more than one pipeline), then inserts; row 1800 is
    // missing on the target.
    target.psql("DELETE FROM t WHERE id = 1800");
    let before = applied(&target);
    source.psql("BEGIN; UPDATE t SET v = 'y'; INSERT INTO u SELECT g FROM generate_series(1, 3) g; COMMIT");
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(!ok, "{err}");
    for part in [
        "could not apply the update at 0/",
        "to table public.t with key {\"id\":\"1800\"}: no row with this key on the target",
        &format!("detail: Nothing after {before} is applied."),
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    assert_eq!(err.matches("could not apply").count(), 1, "{err}");
    assert_eq!(applied(&target), before, "the position moved");
    assert_eq!(target.psql("SELECT count(*) FROM t WHERE v = 'y'"), "0", "part of the transaction applied");
    assert_eq!(target.psql("SELECT count(*) FROM u"), "0", "part of the transaction applied");
    target.psql("INSERT INTO t VALUES (1800, 'x')");
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT count(*) FROM t WHERE v = 'y'"), "2500");

    // A key that matches two rows (REPLICA IDENTITY FULL, a duplicate only on the target), in
    // the middle of a pipeline.
    target.psql("INSERT INTO f VALUES (3, 'f3')");
    let before = applied(&target);
    source.psql(
        "BEGIN; UPDATE t SET v = 'z' WHERE id = 1; DELETE FROM f; UPDATE t SET v = 'z' WHERE id = 2; COMMIT",
    );
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(!ok, "{err}");
    for part in [
        "could not apply the delete at 0/",
        "to table public.f with key {\"a\":\"3\",\"b\":\"f3\"}: 2 rows with this key on the target",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    assert_eq!(applied(&target), before, "the position moved");
    assert_eq!(target.psql("SELECT count(*) FROM f"), "6", "part of the transaction applied");
    assert_eq!(target.psql("SELECT count(*) FROM t WHERE v = 'z'"), "0", "part of the transaction applied");
    target.psql("DELETE FROM f WHERE ctid = (SELECT max(ctid) FROM f WHERE a = 3)");
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT count(*) FROM f"), "0");

    // Many small transactions, the applier exits, the target crashes at once: what the
    // applier registered is still applied on the target.
    source.psql(
        "DO $$ BEGIN FOR i IN 1..200 LOOP UPDATE t SET v = 'w' || i WHERE id = i; COMMIT; END LOOP; END $$",
    );
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    stop(&mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    target.stop(Mode::Immediate);
    target.start_again();
    let registered = fs::read_to_string(dir.join(".consumer.pgapplylogical")).unwrap();
    let last = last_commit_end(&dir);
    assert_eq!(registered.trim(), format!("position={last}"));
    assert_eq!(applied(&target), last, "a registered position was lost in a crash of the target");
    assert_eq!(target.psql("SELECT v FROM t WHERE id = 200"), "w200");
    assert_same(&source, &target, &["--data-only"], "data");

    // A value libpq cannot send (a NUL byte, written by hand into the directory): refused by
    // the change it belongs to, before anything of the transaction is sent.
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    let before = applied(&target);
    let forged = [
        r#"{"op":"begin","xid":999999,"commit_lsn":"F/10","ts":"x"}"#,
        r#"{"op":"insert","xid":999999,"commit_lsn":"F/10","ts":"x","seq":1,"lsn":"F/8","schema":"public","table":"u","key":{"id":7},"new":{"id":7}}"#,
        r#"{"op":"update","xid":999999,"commit_lsn":"F/10","ts":"x","seq":2,"lsn":"F/9","schema":"public","table":"t","key":{"id":5},"new":{"id":5,"v":"a\u0000b"}}"#,
        r#"{"op":"commit","end_lsn":"F/20","xid":999999,"commit_lsn":"F/10","ts":"x","changes":2}"#,
    ];
    let mut f = fs::OpenOptions::new().append(true).open(files.last().unwrap()).unwrap();
    std::io::Write::write_all(&mut f, format!("{}\n", forged.join("\n")).as_bytes()).unwrap();
    drop(f);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("could not apply the update at F/9 of source transaction 999999 (commit F/10, file \"")
            && err.contains("to table public.t with key {\"id\":\"5\"}: a value holds a NUL byte"),
        "{err}"
    );
    // Nothing was sent, so there was nothing to roll back (no "no transaction in progress").
    assert!(!err.contains("WARNING"), "{err}");
    assert_eq!(applied(&target), before, "the position moved");
    assert_eq!(target.psql("SELECT count(*) FROM u WHERE id = 7"), "0", "part of the transaction applied");
}

#[test]
fn apply_pipelined_failures_15() {
    apply_pipelined_failures(PgVersion::V15);
}

#[test]
fn apply_pipelined_failures_18() {
    apply_pipelined_failures(PgVersion::V18);
}

/// The output's size now. pgrecvlogical may remove a file (retention) or rename the partial
/// (rotation) between the listing and the stat: such a file counts as gone.
fn output_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| match e.metadata() {
            Ok(m) => m.len(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => panic!("{}: {err}", e.path().display()),
        })
        .sum()
}

/// The start position of the oldest output file.
fn first_file_start(dir: &Path) -> u64 {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    u64::from_str_radix(&names[0][..16], 16).unwrap()
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// pgrecvlogical's `--retain-size` keeps the directory bounded, but never removes a file past
/// the position the applier registered (`.consumer.pgapplylogical`): an applier that is
/// behind finds everything it has not applied, and the target ends equal to the source.
fn retention_honours_consumers(version: PgVersion) {
    let source = logical_cluster(version);
    let target = Cluster::new(version);
    let t = TestDir::new("applyretain");
    let dir = t.join("out");
    let rlog = t.join("recv.log");
    let table = "CREATE TABLE t (id int PRIMARY KEY, v text)";
    source.psql(&format!("{table}; CREATE PUBLICATION pub FOR ALL TABLES"));
    target.psql(table);
    let limit: u64 = 12 * 1024;
    let recv_args = [
        "-S",
        "cdc",
        "-P",
        "pub",
        "--create-slot-if-missing",
        "--rotate-size",
        "4kB",
        "--retain-size",
        "12kB",
        "-D",
        dir.to_str().unwrap(),
    ];
    let mut recv = spawn(&mut tool(&source, &recv_args), &rlog);
    wait_until(TIMEOUT, "the slot", || {
        source.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'") == "1"
    });
    // The applier registers before anything is written (at 0/0: it holds every file).
    wait_until(TIMEOUT, "the directory's metadata", || dir.join(".pgrecvlogical.meta").exists());
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    let batch = |from: u32| {
        for i in from..from + 60 {
            source.psql(&format!("INSERT INTO t VALUES ({i}, repeat('r', 300))"));
        }
    };
    batch(0);
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    // The applier applies this much and registers where it is, then stays away.
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    let registered = fs::read_to_string(dir.join(".consumer.pgapplylogical")).unwrap();
    let pos = lsn(registered.trim().strip_prefix("position=").unwrap());
    assert_eq!(format!("position={}\n", applied(&target)), registered);
    // Far more than the limit: retention removes what the applier has, nothing after it.
    batch(1000);
    batch(2000);
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    wait_until(TIMEOUT, "retention to run", || fs::read_to_string(&rlog).unwrap().contains("(retention)"));
    assert!(first_file_start(&dir) <= pos, "a file after the registered position was removed");
    assert!(output_size(&dir) > limit, "held files were removed: {} bytes", output_size(&dir));
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    // Now the applier is at the end: the directory shrinks to the limit (the rule runs every
    // 10 s too, not only at a rotation).
    batch(3000);
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    let (ok, err) = apply_once(&target, &dir, &[]);
    assert!(ok, "{err}");
    wait_until(TIMEOUT, "the directory within its limit", || output_size(&dir) <= limit);
    // A new target cannot start from this directory any more: refused, not silently partial.
    target.psql("CREATE DATABASE fresh");
    let port = target.port().to_string();
    let made = pg_tool(version, "psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "fresh", "-c", table])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let fresh = format!("host=127.0.0.1 port={} user=postgres dbname=fresh", target.port());
    let out = pgapplylogical()
        .args(["-D", dir.to_str().unwrap(), "-d", &fresh, "--until-caught-up", "--consumer-name", "fresh"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no longer holds the changes after 0/0"), "{err}");
    // An abandoned consumer's registration is removed by hand, or it holds every file.
    fs::remove_file(dir.join(".consumer.fresh")).unwrap();
    stop(&mut recv, &rlog);
    assert_same(&source, &target, &["--data-only"], "data");
}

#[test]
fn retention_honours_consumers_15() {
    retention_honours_consumers(PgVersion::V15);
}

#[test]
fn retention_honours_consumers_18() {
    retention_honours_consumers(PgVersion::V18);
}

/// Apply throughput against PostgreSQL's own subscription, both draining the same backlog:
/// 200 000 inserts and 100 000 updates in transactions of 1 000 rows, written while the
/// subscription was disabled and pgrecvlogical ran; then each drains it, timed until the
/// target has the last change. Run with `--ignored --nocapture`.
fn bench(version: PgVersion) {
    let source = logical_cluster(version);
    let (ours, theirs) = (Cluster::new(version), Cluster::new(version));
    let t = TestDir::new("applybench");
    let dir = t.join("out");
    let rlog = t.join("recv.log");
    let table = "CREATE TABLE b (id int PRIMARY KEY, a int, s text, n numeric, ts timestamptz)";
    source.psql(&format!("{table}; CREATE PUBLICATION pub FOR TABLE b"));
    ours.psql(table);
    theirs.psql(table);
    theirs.psql(&format!(
        "CREATE SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port={} user=postgres dbname=postgres' \
         PUBLICATION pub WITH (copy_data = false, enabled = false)",
        source.port()
    ));
    let mut recv = spawn(
        &mut tool(
            &source,
            &["-S", "cdc", "-P", "pub", "--create-slot-if-missing", "-D", dir.to_str().unwrap()],
        ),
        &rlog,
    );
    wait_until(TIMEOUT, "the slot", || {
        source.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'") == "1"
    });
    for k in 0..200 {
        source.psql(&format!(
            "INSERT INTO b SELECT g, g, md5(g::text), g / 7.0, now() FROM generate_series({}, {}) g",
            k * 1000,
            k * 1000 + 999
        ));
    }
    for k in 0..100 {
        source.psql(&format!("UPDATE b SET a = a + 1 WHERE id BETWEEN {} AND {}", k * 1000, k * 1000 + 999));
    }
    source.psql("UPDATE b SET s = 'last' WHERE id = 199999");
    let rows = 300_001.0;
    wait_caught_up(&source, "cdc", &mut recv, &rlog);
    stop(&mut recv, &rlog);
    let started = std::time::Instant::now();
    let (ok, err) = apply_once(&ours, &dir, &[]);
    assert!(ok, "{err}");
    let ours_s = started.elapsed().as_secs_f64();
    assert_eq!(ours.psql("SELECT s FROM b WHERE id = 199999"), "last");
    let started = std::time::Instant::now();
    theirs.psql("ALTER SUBSCRIPTION sub ENABLE");
    wait_until(Duration::from_secs(600), "the subscription", || {
        theirs.psql("SELECT s FROM b WHERE id = 199999") == "last"
    });
    let theirs_s = started.elapsed().as_secs_f64();
    theirs.psql("ALTER SUBSCRIPTION sub DISABLE; ALTER SUBSCRIPTION sub SET (slot_name = NONE); DROP SUBSCRIPTION sub");
    eprintln!(
        "{version}: pgapplylogical {:.0} rows/s ({ours_s:.1} s), subscription {:.0} rows/s ({theirs_s:.1} s), {rows} rows",
        rows / ours_s,
        rows / theirs_s
    );
}

#[test]
#[ignore]
fn bench_15() {
    bench(PgVersion::V15);
}

#[test]
#[ignore]
fn bench_18() {
    bench(PgVersion::V18);
}
