//! End-to-end tests of what `pgapplylogical --ddl=apply` runs on the target, against
//! PostgreSQL 15 and 18: DDL that any source role may run (on temporary objects, privileges)
//! never reaches it, and a DDL record whose query string holds more than the DDL stops the
//! applier with a message saying how to apply it by hand, so no change is applied twice.

use std::thread;

use crate::apply::apply_once;
use crate::logical::wait_caught_up;
use crate::logical::{
    logical_cluster, output_lines, parse_json, slot_confirmed, spawn, stop, tool, J, TIMEOUT,
};
use crate::util::{pg_tool, wait_until, Cluster, PgVersion, TestDir};

/// The DDL records in the directory.
fn ddl_records(dir: &std::path::Path) -> Vec<J> {
    output_lines(dir).iter().map(|l| parse_json(l)).filter(|v| v.str("op") == "ddl").collect()
}

/// `sql` sent by `user` as one query string (psql -c: the simple query protocol, several
/// statements in one string), with the session settings `options` (PGOPTIONS).
fn one_string(c: &Cluster, user: &str, sql: &str, options: &str) {
    let out = pg_tool(c.version(), "psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", user, "-d", "postgres"])
        .args(["-p", &c.port().to_string(), "-c", sql])
        .env("PGOPTIONS", options)
        .output()
        .unwrap();
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A role with no rights but the defaults (TEMP on the database) runs DDL on temporary
/// objects named like the real tables, rules, grants and default privileges: none of it gets
/// a record, and the target keeps its tables, rules and privileges. Its temporary tables are
/// made before the trigger exists, so that even a trigger that recorded them would leave the
/// applier's session without tables of those names: replayed, `DROP TABLE victim` and
/// `CREATE RULE r ... TO w` find the target's real tables.
fn temporary_ddl_stays_on_the_source(version: PgVersion) {
    let c = logical_cluster(version);
    let target = Cluster::new(version);
    let t = TestDir::new("ddltemp");
    let dir = t.join("out");
    let log = t.join("tool.log");
    let tables = "CREATE TABLE victim (id int PRIMARY KEY); CREATE TABLE w (id int PRIMARY KEY); \
                  CREATE TABLE go (id int PRIMARY KEY); CREATE ROLE nobody LOGIN";
    c.psql(&format!("{tables}; GRANT SELECT ON go TO nobody; CREATE PUBLICATION pub FOR ALL TABLES"));
    target.psql(tables);
    let session = "SET ROLE nobody; \
        CREATE TEMP TABLE victim (id int); CREATE TEMP TABLE w (id int); \
        DO $$BEGIN WHILE NOT EXISTS (SELECT FROM go) LOOP PERFORM pg_sleep(0.05); END LOOP; END$$; \
        CREATE TEMP TABLE loot AS SELECT 1 AS id; \
        SELECT 2 AS id INTO TEMP loot2; \
        CREATE INDEX ON w (id); \
        COMMENT ON TABLE w IS 'mine'; \
        CREATE RULE r AS ON INSERT TO w DO INSTEAD NOTHING; \
        GRANT SELECT ON w TO PUBLIC; \
        ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC; \
        CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
        DROP RULE r ON w; \
        DROP TABLE victim";
    let args = ["-S", "cdc", "-P", "pub", "--create-slot-if-missing", "-D", dir.to_str().unwrap(), "--ddl"];
    thread::scope(|s| {
        let role = s.spawn(|| c.psql(session));
        let mut child = spawn(&mut tool(&c, &args), &log);
        wait_until(TIMEOUT, "the DDL trigger and the slot", || {
            c.psql("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgrecvlogical%'") == "3"
                && slot_confirmed(&c, "cdc").is_some()
        });
        c.psql("INSERT INTO go VALUES (1)");
        role.join().unwrap();
        // Real DDL and a row after it: both reach the target.
        c.psql("ALTER TABLE w ADD COLUMN note text; INSERT INTO w VALUES (1, 'real')");
        wait_caught_up(&c, "cdc", &mut child, &log);
        stop(&mut child, &log);
    });

    let (ok, err) = apply_once(&target, &dir, &["--ddl=apply"]);
    assert!(ok, "{err}");
    for (what, sql, expected) in [
        ("the real table victim", "SELECT to_regclass('public.victim') IS NOT NULL", "t"),
        ("rules", "SELECT count(*) FROM pg_rewrite WHERE rulename = 'r'", "0"),
        ("indexes of w", "SELECT count(*) FROM pg_index WHERE indrelid = 'public.w'::regclass", "1"),
        ("w's comment", "SELECT coalesce(obj_description('public.w'::regclass, 'pg_class'), '')", ""),
        ("PUBLIC's rights on w", "SELECT has_table_privilege('nobody', 'public.w', 'SELECT')", "f"),
        ("default privileges", "SELECT count(*) FROM pg_default_acl", "0"),
        ("the real DDL and row", "SELECT note FROM w WHERE id = 1", "real"),
    ] {
        assert_eq!(target.psql(sql), expected, "{what} on the target");
    }
    // Nothing of the role's got a record: the one DDL record is the real ALTER TABLE.
    let ddl = ddl_records(&dir);
    let queries: Vec<&str> =
        ddl.iter().filter_map(|v| v.get("ddl")).map(|d| d.str("query").trim_end_matches(';')).collect();
    assert_eq!(queries, ["ALTER TABLE w ADD COLUMN note text"], "{ddl:#?}");
}

#[test]
fn temporary_ddl_stays_on_the_source_15() {
    temporary_ddl_stays_on_the_source(PgVersion::V15);
}

#[test]
fn temporary_ddl_stays_on_the_source_18() {
    temporary_ddl_stays_on_the_source(PgVersion::V18);
}

/// DDL whose record's query holds more than the DDL: a DO block that also inserts, a string of
/// two statements, `CREATE TABLE ... AS` with an INSERT in a WITH clause, a string read with
/// `standard_conforming_strings` off. Each stops `--ddl=apply` with a message naming the
/// position and saying how to apply it by hand; done as it says, every insert is on the
/// target exactly once. Ordinary DDL goes on applying, and DDL run with another search_path
/// (`SET search_path = app; ... DROP TABLE t`) resolves its names on the target as on the
/// source, not to the target's `public.t`.
fn ddl_with_more_than_itself_is_applied_by_hand(version: PgVersion) {
    let c = logical_cluster(version);
    let target = Cluster::new(version);
    let t = TestDir::new("ddlmulti");
    let dir = t.join("out");
    let log = t.join("tool.log");
    // No key: an insert applied twice is a second row. `t`: a table the role's DDL must not
    // reach.
    let tables = "CREATE TABLE counter (n int); CREATE TABLE t (id int PRIMARY KEY, w int); \
                  INSERT INTO t VALUES (7, 7)";
    c.psql(&format!(
        "{tables}; CREATE ROLE owner LOGIN; GRANT CREATE ON SCHEMA public TO owner; \
         GRANT CREATE ON DATABASE postgres TO owner; \
         GRANT SELECT, INSERT ON counter TO owner; CREATE PUBLICATION pub FOR ALL TABLES"
    ));
    target.psql(tables);
    let args = ["-S", "cdc", "-P", "pub", "--create-slot-if-missing", "-D", dir.to_str().unwrap(), "--ddl"];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the DDL trigger and the slot", || {
        c.psql("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgrecvlogical%'") == "3"
            && slot_confirmed(&c, "cdc").is_some()
    });
    // (what the source role ran, its session settings, the reason the applier gives, what
    // the user runs by hand)
    let steps = [
        (
            "DO $$BEGIN CREATE TABLE m1 (id int PRIMARY KEY); INSERT INTO counter VALUES (1); END$$",
            "",
            "inside a function, procedure or DO block",
            "CREATE TABLE m1 (id int PRIMARY KEY)",
        ),
        (
            "CREATE TABLE m2 (id int PRIMARY KEY); INSERT INTO counter VALUES (2)",
            "",
            "query string is not one statement",
            "CREATE TABLE m2 (id int PRIMARY KEY)",
        ),
        (
            "CREATE TABLE m3 AS WITH i AS (INSERT INTO counter VALUES (3) RETURNING n) SELECT n FROM i",
            "",
            "CREATE TABLE AS and SELECT INTO would run their query again",
            "CREATE TABLE m3 (n int)",
        ),
        (
            "CREATE TABLE m4 (c text DEFAULT 'it\\'s')",
            "-c standard_conforming_strings=off -c escape_string_warning=off",
            "standard_conforming_strings off",
            "CREATE TABLE m4 (c text DEFAULT 'it''s')",
        ),
    ];
    for (sql, options, _, _) in steps {
        one_string(&c, "owner", sql, options);
    }
    // A session whose search_path names another schema: on the target its names resolve
    // there too, not to public.t.
    c.psql(
        "SET ROLE owner; CREATE SCHEMA app; SET search_path = app; \
         CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t ADD COLUMN v text; \
         INSERT INTO t VALUES (1, 'app'); DROP TABLE t",
    );
    // Ordinary DDL by the same role, a statement per string.
    c.psql("SET ROLE owner; ALTER TABLE m1 ADD COLUMN c text; ALTER TABLE m2 RENAME TO m2b; INSERT INTO counter VALUES (4)");
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    let mut applied_so_far = Vec::new();
    for (n, (sql, _, why, by_hand)) in steps.into_iter().enumerate() {
        let before = target
            .try_psql("SELECT end_lsn FROM pgapplylogical.applied_position")
            .unwrap_or_else(|_| "0/0".into());
        let (ok, err) = apply_once(&target, &dir, &["--ddl=apply"]);
        let counter = target.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM counter");
        assert_eq!(counter, applied_so_far.join(","), "counter on the target after a stop at {sql}:\n{err}");
        assert!(!ok, "{sql}: applied\n{err}");
        for part in [
            "DDL at 0/",
            "cannot be applied as it is: CREATE TABLE",
            sql,
            why,
            &format!("Nothing after {before} is applied."),
            "hint: Apply it by hand: run on the target only the DDL (CREATE TABLE",
            "--ddl=ignore --until 0/",
        ] {
            assert!(err.contains(part), "{part:?} not in {err}");
        }
        let until = err.split("--ddl=ignore --until ").nth(1).unwrap().split(' ').next().unwrap();
        target.psql(by_hand);
        let (ok, err) = apply_once(&target, &dir, &["--ddl=ignore", "--until", until]);
        assert!(ok, "{err}");
        if n < 3 {
            // The first three steps insert n + 1.
            applied_so_far.push((n + 1).to_string());
        }
        assert_eq!(
            target.psql("SELECT end_lsn FROM pgapplylogical.applied_position"),
            until,
            "applied up to the transaction"
        );
    }
    let (ok, err) = apply_once(&target, &dir, &["--ddl=apply"]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM counter"), "1,2,3,4");
    assert_eq!(target.psql("SELECT n FROM m3"), "3");
    assert_eq!(target.psql("INSERT INTO m4 DEFAULT VALUES RETURNING c"), "it's");
    assert_eq!(
        target.psql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'm1' AND column_name = 'c'"
        ),
        "1"
    );
    assert_eq!(target.psql("SELECT to_regclass('public.m2b') IS NOT NULL"), "t");
    assert_eq!(
        target.psql("SELECT to_regnamespace('app') IS NOT NULL AND to_regclass('app.t') IS NULL"),
        "t"
    );
    assert_eq!(target.psql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
                            FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 't'"), "id,w");
    assert_eq!(target.psql("SELECT id FROM public.t"), "7");
}

#[test]
fn ddl_with_more_than_itself_is_applied_by_hand_15() {
    ddl_with_more_than_itself_is_applied_by_hand(PgVersion::V15);
}

#[test]
fn ddl_with_more_than_itself_is_applied_by_hand_18() {
    ddl_with_more_than_itself_is_applied_by_hand(PgVersion::V18);
}
