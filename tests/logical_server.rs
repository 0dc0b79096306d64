//! pgrecvlogical against what the server and the directory may be: an output directory tied to
//! one cluster, database and slot; a snapshot killed half-way and taken again; partitioned
//! tables published through their root; a LATIN1 database; database settings that would change
//! how values are written. On PostgreSQL 15 and 18.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::logical::{
    assert_tables_equal, canon_row, logical_cluster, output_files, output_lines, parse_json, slot_confirmed,
    spawn, stop, tool, wait_caught_up, Replay, Row, TIMEOUT,
};
use crate::util::{pg_tool, wait_for_exit, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

fn log_text(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the tool's log says `what`; fails at once if the tool exits.
fn wait_log(child: &mut KillOnDrop, log: &Path, what: &str) {
    wait_until(TIMEOUT, what, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("pgrecvlogical exited ({status}) before logging \"{what}\":\n{}", log_text(log));
        }
        log_text(log).contains(what)
    });
}

/// Runs the tool to its end; returns (exit code, stderr). Killed (and reported) if it does not
/// end by itself.
fn run_to_end(cmd: &mut Command, log: &Path) -> (Option<i32>, String) {
    let _ = fs::remove_file(log);
    let mut child = spawn(cmd, log);
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    (status.and_then(|s| s.code()), log_text(log))
}

fn psql_db(c: &Cluster, db: &str, sql: &str) -> String {
    let out = pg_tool(c.version(), "psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", db])
        .args(["-p", &c.port().to_string(), "-c", sql])
        .env("PGCLIENTENCODING", "UTF8")
        .output()
        .unwrap();
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// ---------------------------------------------------------------------------
// Defect 6: the directory is tied to one cluster, database and slot
// ---------------------------------------------------------------------------

fn directory_tied_to_its_slot(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lmeta");
    c.psql("CREATE TABLE a (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE a; CREATE DATABASE other");
    let dir = t.join("out");
    let d = dir.to_str().unwrap();
    let log = t.join("tool.log");
    let mut child =
        spawn(&mut tool(&c, &["-S", "one", "-P", "pub", "-D", d, "--create-slot-if-missing"]), &log);
    wait_until(TIMEOUT, "the slot", || slot_confirmed(&c, "one").is_some());
    c.psql("INSERT INTO a SELECT generate_series(1, 10)");
    wait_caught_up(&c, "one", &mut child, &log);
    stop(&mut child, &log);
    let meta_path = dir.join(".pgrecvlogical.meta");
    let meta = fs::read_to_string(&meta_path).unwrap();
    let sysid = c.psql("SELECT system_identifier FROM pg_control_system()");
    let dboid = c.psql("SELECT oid FROM pg_database WHERE datname = 'postgres'");
    assert!(
        meta.contains(&format!("system_identifier={sysid}\n"))
            && meta.contains(&format!("database_oid={dboid}\n"))
            && meta.contains("database=postgres\n")
            && meta.contains("slot=one\n"),
        "{meta}"
    );
    let lines_before = output_lines(&dir);

    // Another slot, another database, another cluster: refused, and nothing is created.
    let (code, err) = run_to_end(&mut tool(&c, &["-S", "two", "-P", "pub", "-D", d]), &log);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds changes of replication slot \"one\", not \"two\"\n"), "{err}");
    assert!(err.contains("] pgrecvlogical: hint: Use -S one, or write into another directory."), "{err}");
    assert_eq!(slot_confirmed(&c, "two"), None);
    let (code, err) =
        run_to_end(&mut tool(&c, &["-S", "one", "-P", "pub", "-D", d, "-d", "dbname=other"]), &log);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds changes of database \"postgres\"") && err.contains("\"other\""), "{err}");
    let c2 = logical_cluster(version);
    c2.psql("CREATE TABLE a (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE a");
    let (code, err) = run_to_end(&mut tool(&c2, &["-S", "one", "-P", "pub", "-D", d]), &log);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("holds changes of database system {sysid}, but the server is")), "{err}");
    assert_eq!(slot_confirmed(&c2, "one"), None, "no slot was created on the other cluster");

    // A directory of an older version (no metadata file) on another cluster, where its slot
    // does not exist: refused. On its own cluster, where the slot is: adopted. (The other
    // cluster gets ahead first, or the output would be refused as beyond its WAL.)
    fs::remove_file(&meta_path).unwrap();
    c2.generate_wal(16);
    let (code, err) = run_to_end(&mut tool(&c2, &["-S", "one", "-P", "pub", "-D", d]), &log);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has no .pgrecvlogical.meta and replication slot \"one\" does not exist"), "{err}");
    assert!(!meta_path.exists());
    c.psql("INSERT INTO a VALUES (11)");
    let endpos = c.current_lsn();
    let (code, err) = run_to_end(&mut tool(&c, &["-S", "one", "-P", "pub", "-D", d, "-E", &endpos]), &log);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read_to_string(&meta_path).unwrap(), meta, "adopted: the same metadata written");
    let lines = output_lines(&dir);
    assert_eq!(&lines[..lines_before.len()], &lines_before[..]);
    assert!(lines[lines_before.len()..].iter().any(|l| l.contains("\"id\":11")), "{lines:?}");
}

#[test]
fn directory_tied_to_its_slot_15() {
    directory_tied_to_its_slot(PgVersion::V15);
}

#[test]
fn directory_tied_to_its_slot_18() {
    directory_tied_to_its_slot(PgVersion::V18);
}

/// Output that ends beyond the server's WAL comes from another history of the cluster: here a
/// standby promoted before the primary wrote it (the same system identifier, database and slot
/// name). The server would skip everything below that position; it is refused.
fn output_beyond_server_wal_refused(version: PgVersion) {
    let p = logical_cluster(version);
    let t = TestDir::new("lahead");
    p.psql("CREATE TABLE a (id int PRIMARY KEY, pad text); CREATE PUBLICATION pub FOR TABLE a");
    let s = Cluster::builder(version)
        .conf("wal_level = logical\nmax_prepared_transactions = 10\nautovacuum = off")
        .standby_of(&p)
        .start();
    s.promote();
    let dir = t.join("out");
    let d = dir.to_str().unwrap();
    let log = t.join("tool.log");
    let mut child =
        spawn(&mut tool(&p, &["-S", "one", "-P", "pub", "-D", d, "--create-slot-if-missing"]), &log);
    wait_until(TIMEOUT, "the slot", || slot_confirmed(&p, "one").is_some());
    for i in 0..20 {
        p.psql(&format!(
            "INSERT INTO a SELECT g, repeat('x', 500) FROM generate_series({}, {}) g",
            i * 1000,
            i * 1000 + 999
        ));
    }
    wait_caught_up(&p, "one", &mut child, &log);
    stop(&mut child, &log);
    // The same database system, database and slot name on the promoted standby.
    s.psql("SELECT pg_create_logical_replication_slot('one', 'pgoutput')");
    let behind = s.current_lsn();
    let (code, err) = run_to_end(&mut tool(&s, &["-S", "one", "-P", "pub", "-D", d]), &log);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("beyond the server's current WAL position {behind}")), "{err}");
    assert_eq!(
        s.psql("SELECT confirmed_flush_lsn <= pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = 'one'"),
        "t",
        "the slot on the promoted standby was not moved"
    );
}

#[test]
fn output_beyond_server_wal_refused_15() {
    output_beyond_server_wal_refused(PgVersion::V15);
}

#[test]
fn output_beyond_server_wal_refused_18() {
    output_beyond_server_wal_refused(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 13: kill -9 during --snapshot
// ---------------------------------------------------------------------------

fn output_bytes(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    output_files(dir).iter().map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

/// kill -9 half-way through the initial snapshot; the next start drops the slot the killed run
/// created, takes the snapshot again, and streams on: the output replays to the table, each row
/// once.
fn kill9_during_snapshot(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lsnapkill");
    c.psql(
        "CREATE TABLE big (id int PRIMARY KEY, pad text); \
         INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 600000) g; \
         CREATE PUBLICATION pub FOR TABLE big",
    );
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args =
        ["-S", "snap", "-P", "pub", "--create-slot", "--start", "--snapshot", "-D", dir.to_str().unwrap()];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the snapshot's output to grow", || output_bytes(&dir) > 4 << 20);
    let _ = child.kill();
    let _ = child.wait();
    let killed_at = output_bytes(&dir);
    assert!(
        !log_text(&log).contains("initial snapshot written"),
        "the snapshot completed before the kill; make the table bigger:\n{}",
        log_text(&log)
    );
    assert!(slot_confirmed(&c, "snap").is_some(), "the killed run left its slot");

    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_log(&mut child, &log, "initial snapshot written: 600000 rows of 1 tables");
    c.psql("UPDATE big SET pad = 'changed' WHERE id % 1000 = 0; DELETE FROM big WHERE id > 599990");
    c.psql("INSERT INTO big VALUES (700000, 'after')");
    wait_caught_up(&c, "snap", &mut child, &log);
    stop(&mut child, &log);
    let text = log_text(&log);
    assert!(text.contains("the initial snapshot of replication slot \"snap\" was interrupted"), "{text}");
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.big"]);
    replay.assert_no_duplicates();
    assert_eq!(replay.incomplete, 0);
    let meta = fs::read_to_string(dir.join(".pgrecvlogical.meta")).unwrap();
    assert!(meta.contains("snapshot=done\n"), "{meta}");
    eprintln!("{version}: killed with {killed_at} bytes of snapshot written; {} lines after", replay.lines);

    // And a restart streams on without a new snapshot.
    let mut child = spawn(&mut tool(&c, &args), &log);
    c.psql("INSERT INTO big VALUES (700001, 'later')");
    wait_caught_up(&c, "snap", &mut child, &log);
    stop(&mut child, &log);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.big"]);
    replay.assert_no_duplicates();
    assert_eq!(log_text(&log).matches("initial snapshot written").count(), 1);
}

#[test]
fn kill9_during_snapshot_15() {
    kill9_during_snapshot(PgVersion::V15);
}

#[test]
fn kill9_during_snapshot_18() {
    kill9_during_snapshot(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 8: --snapshot of partitioned tables
// ---------------------------------------------------------------------------

/// The server's rows of a table and everything under it, canonical as in the replay.
fn db_rows_all(c: &Cluster, table: &str) -> Vec<String> {
    let out = c.psql(&format!("SELECT row_to_json(t)::text FROM {table} t"));
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let row: Row = parse_json(l).fields().iter().cloned().collect();
            canon_row(&row)
        })
        .collect();
    v.sort();
    v
}

fn snapshot_of_partitions(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lpart");
    c.psql(
        "CREATE TABLE pt (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
         CREATE TABLE pt_eu PARTITION OF pt FOR VALUES IN ('eu'); \
         CREATE TABLE pt_us PARTITION OF pt FOR VALUES IN ('us') PARTITION BY RANGE (id); \
         CREATE TABLE pt_us_lo PARTITION OF pt_us FOR VALUES FROM (MINVALUE) TO (1000); \
         CREATE TABLE pt_us_hi PARTITION OF pt_us FOR VALUES FROM (1000) TO (MAXVALUE); \
         INSERT INTO pt SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 2000) g; \
         CREATE TABLE parent (id int PRIMARY KEY, x text); \
         CREATE TABLE child (y int) INHERITS (parent); ALTER TABLE child ADD PRIMARY KEY (id); \
         INSERT INTO parent VALUES (1, 'p'); INSERT INTO child VALUES (2, 'c', 1); \
         CREATE PUBLICATION viaroot FOR TABLE pt, parent, child WITH (publish_via_partition_root = true); \
         CREATE PUBLICATION leaves FOR TABLE pt, parent, child",
    );
    let log = t.join("tool.log");

    // Through the root: every row once, under the root's name, as the stream names them.
    let dir = t.join("viaroot");
    let args = [
        "-S",
        "viaroot",
        "-P",
        "viaroot",
        "--create-slot",
        "--start",
        "--snapshot",
        "-D",
        dir.to_str().unwrap(),
    ];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_log(&mut child, &log, "initial snapshot written");
    c.psql("INSERT INTO pt VALUES (5000, 'us'), (5001, 'eu')");
    wait_caught_up(&c, "viaroot", &mut child, &log);
    stop(&mut child, &log);
    let replay = Replay::read_dir(&dir);
    replay.assert_no_duplicates();
    assert_eq!(replay.rows("public.pt").len(), 2002);
    assert_eq!(replay.rows("public.pt"), db_rows_all(&c, "pt"));
    for leaf in ["public.pt_eu", "public.pt_us", "public.pt_us_lo", "public.pt_us_hi"] {
        assert!(replay.rows(leaf).is_empty(), "{leaf} has rows of its own in the output");
    }
    // Inheritance is not partitioning: the parent's own row, and the child's, once each.
    assert_tables_equal(&c, &replay, &["public.parent", "public.child"]);
    assert_eq!((replay.rows("public.parent").len(), replay.rows("public.child").len()), (1, 1));

    // Partitions published one by one: each row once, under its partition.
    let dir = t.join("leaves");
    let endpos = c.current_lsn();
    let args = [
        "-S",
        "leaves",
        "-P",
        "leaves",
        "--create-slot",
        "--start",
        "--snapshot",
        "-D",
        dir.to_str().unwrap(),
        "-E",
        &endpos,
    ];
    let (code, err) = run_to_end(&mut tool(&c, &args), &log);
    assert_eq!(code, Some(0), "{err}");
    let replay = Replay::read_dir(&dir);
    assert!(replay.rows("public.pt").is_empty());
    let leaves = ["public.pt_eu", "public.pt_us_lo", "public.pt_us_hi", "public.parent", "public.child"];
    assert_tables_equal(&c, &replay, &leaves);
    let n: usize = leaves.iter().map(|l| replay.rows(l).len()).sum();
    assert_eq!(n, 2002 + 2);
}

#[test]
fn snapshot_of_partitions_15() {
    snapshot_of_partitions(PgVersion::V15);
}

#[test]
fn snapshot_of_partitions_18() {
    snapshot_of_partitions(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 9: a LATIN1 database
// ---------------------------------------------------------------------------

fn latin1_database(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("llatin");
    let out = pg_tool(version, "createdb")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &c.port().to_string()])
        .args(["-E", "LATIN1", "-T", "template0", "--locale=C", "latin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    psql_db(
        &c,
        "latin",
        "CREATE TABLE \"café\" (id int PRIMARY KEY, \"naïve\" text); \
         INSERT INTO \"café\" VALUES (1, 'café'), (2, 'Ünïcödé ÿ ½'); \
         CREATE PUBLICATION pub FOR TABLE \"café\"",
    );
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = [
        "-d",
        "dbname=latin",
        "-S",
        "latin",
        "-P",
        "pub",
        "--create-slot",
        "--start",
        "--snapshot",
        "-D",
        dir.to_str().unwrap(),
    ];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_log(&mut child, &log, "initial snapshot written");
    psql_db(&c, "latin", "INSERT INTO \"café\" VALUES (3, 'crème brûlée')");
    wait_caught_up(&c, "latin", &mut child, &log);
    stop(&mut child, &log);
    let lines = output_lines(&dir);
    let all = lines.join("\n");
    assert!(!all.contains('\u{fffd}'), "replacement characters in the output:\n{all}");
    for want in [
        "\"table\":\"café\"",
        "\"naïve\":\"café\"",
        "\"naïve\":\"Ünïcödé ÿ ½\"",
        "\"naïve\":\"crème brûlée\"",
    ] {
        assert!(all.contains(want), "{want} missing:\n{all}");
    }
    let text = log_text(&log);
    assert!(!text.contains("replacement characters"), "{text}");
}

#[test]
fn latin1_database_15() {
    latin1_database(PgVersion::V15);
}

#[test]
fn latin1_database_18() {
    latin1_database(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 10: values are written the same whatever the database settings
// ---------------------------------------------------------------------------

const VALUES: &str = "0.1::float8 + 0.2, 1.1::real, '2024-01-02 03:04:05.678', '2024-01-02', \
    '1 day 2 hours 3 minutes -4 seconds', '\\x00ff10'::bytea, '{0.1,0.30000000000000004}'::float8[], \
    '1 year 2 mons'::interval";

/// The `new` values of every insert, snapshot and stream.
fn inserted_values(c: &Cluster, t: &TestDir, slot: &str) -> Vec<String> {
    let dir = t.join(slot);
    let log = t.join(format!("{slot}.log"));
    let args =
        ["-S", slot, "-P", "pub", "--create-slot", "--start", "--snapshot", "-D", dir.to_str().unwrap()];
    let mut child = spawn(&mut tool(c, &args), &log);
    wait_log(&mut child, &log, "initial snapshot written");
    c.psql(&format!("INSERT INTO v SELECT 3, {VALUES}"));
    wait_caught_up(c, slot, &mut child, &log);
    stop(&mut child, &log);
    c.psql("DELETE FROM v WHERE id = 3");
    let v: Vec<String> = output_lines(&dir)
        .iter()
        .map(|l| parse_json(l))
        .filter(|j| j.str("op") == "insert")
        .map(|j| j.get("new").unwrap().canon())
        .collect();
    assert_eq!(v.len(), 3, "{v:?}");
    v
}

fn settings_do_not_change_values(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lsettings");
    c.psql(&format!(
        "CREATE TABLE v (id int PRIMARY KEY, f8 float8, f4 real, ts timestamp, d date, iv interval, b bytea, \
         arr float8[], iv2 interval); \
         INSERT INTO v SELECT 1, {VALUES}; INSERT INTO v SELECT 2, {VALUES}; \
         CREATE PUBLICATION pub FOR TABLE v"
    ));
    let plain = inserted_values(&c, &t, "plain");
    let all = plain.join("\n");
    for want in [
        "f8:0.30000000000000004",
        "f4:1.1",
        "ts:\"2024-01-02 03:04:05.678\"",
        "d:\"2024-01-02\"",
        "iv:\"1 day 02:02:56\"",
        "b:\"\\\\x00ff10\"",
        "iv2:\"1 year 2 mons\"",
    ] {
        assert!(all.contains(want), "{want} missing:\n{all}");
    }
    for setting in [
        "extra_float_digits = 0",
        "DateStyle = 'SQL, DMY'",
        "IntervalStyle = 'sql_standard'",
        "bytea_output = 'escape'",
    ] {
        c.psql(&format!("ALTER DATABASE postgres SET {setting}"));
    }
    // The settings are in force for new sessions.
    assert_eq!(c.psql("SELECT 0.1::float8 + 0.2"), "0.3");
    let odd = inserted_values(&c, &t, "odd");
    assert_eq!(plain, odd, "database settings changed the output");
}

#[test]
fn settings_do_not_change_values_15() {
    settings_do_not_change_values(PgVersion::V15);
}

#[test]
fn settings_do_not_change_values_18() {
    settings_do_not_change_values(PgVersion::V18);
}
