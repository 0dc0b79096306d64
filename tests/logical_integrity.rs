//! End-to-end tests of what pgrecvlogical's output files mean, against PostgreSQL 15 and 18:
//! crash recovery never resumes past bytes it has not checked (a hole of zeros in the tail),
//! nothing a database role writes can forge a line that recovery reads, a reopened partial file
//! is fsync'ed, a closed standard output ends the program, and `--ddl` records say what their
//! `query` holds.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::faults::support::build_failfsync;
use crate::logical::{
    assert_tables_equal, logical_cluster, output_files, output_lines, parse_json, spawn, stop, tool,
    wait_caught_up, Replay, J, TIMEOUT,
};
use crate::util::{pg_tool, wait_for_exit, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

/// A table `w` in a publication, and the slot `cdc`, created before anything is written.
fn setup(c: &Cluster) {
    c.psql("CREATE TABLE w (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE w");
    let out = tool(c, &["-S", "cdc", "--create-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn insert(c: &Cluster, ids: std::ops::Range<u32>) {
    for i in ids {
        c.psql(&format!("INSERT INTO w VALUES ({i}, 'row {i}')"));
    }
}

fn partial_file(dir: &Path) -> PathBuf {
    let files = output_files(dir);
    let partials: Vec<&PathBuf> =
        files.iter().filter(|p| p.to_string_lossy().ends_with(".partial")).collect();
    assert_eq!(partials.len(), 1, "exactly one partial file: {files:?}");
    partials[0].clone()
}

fn read(log: &Path) -> String {
    fs::read(log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Defect 3: a hole of zeros in the tail
// ---------------------------------------------------------------------------

/// What a power loss can leave: the pages of the last transactions lost (zeros), and a later
/// page that did reach the disk starting in the middle of a line, with a commit line in it.
/// Those transactions were never confirmed, so the server still has them; recovery must cut
/// the output back before the hole and let the server send them again, not resume after the
/// commit line (which would make the slot skip them for ever).
fn holey_tail_loses_nothing(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lhole");
    setup(&c);
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = ["-S", "cdc", "-P", "pub", "-D", dir.to_str().unwrap(), "-v"];
    let mut child = spawn(&mut tool(&c, &args), &log);
    insert(&c, 1..21);
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    // Written while the tool was down: the slot has not confirmed these.
    insert(&c, 21..41);
    let after = c.current_lsn();
    let partial = partial_file(&dir);
    let mut bytes = fs::read(&partial).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 3 * 4096));
    bytes.extend(b"row 39\"}}\n");
    bytes.extend(
        format!(
            "{{\"op\":\"commit\",\"end_lsn\":\"{after}\",\"xid\":999,\"commit_lsn\":\"{after}\",\"ts\":\"2026-01-01T00:00:00.000000Z\",\"changes\":1}}\n"
        )
        .bytes(),
    );
    fs::write(&partial, &bytes).unwrap();

    let mut child = spawn(&mut tool(&c, &args), &log);
    insert(&c, 41..51);
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    let lines = output_lines(&dir);
    let missing: Vec<u32> =
        (1..51).filter(|i| !lines.iter().any(|l| l.contains(&format!("\"new\":{{\"id\":{i},")))).collect();
    assert!(missing.is_empty(), "committed rows missing from the output: {missing:?}");
    assert!(!lines.iter().any(|l| l.contains('\0') || l.contains("\"xid\":999")), "the hole is cut off");
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.w"]);
    replay.assert_no_duplicates();
    let text = read(&log);
    assert!(text.contains("that are not output of ours"), "the hole is reported:\n{text}");
}

#[test]
fn holey_tail_loses_nothing_15() {
    holey_tail_loses_nothing(PgVersion::V15);
}

#[test]
fn holey_tail_loses_nothing_18() {
    holey_tail_loses_nothing(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 4: forged lines in the text format
// ---------------------------------------------------------------------------

/// The ids of `w` in text-format output.
fn text_ids(lines: &[String]) -> Vec<u32> {
    let mut ids: Vec<u32> = lines
        .iter()
        .filter(|l| l.starts_with("table public.w: INSERT:"))
        .map(|l| {
            let at = l.find(" id[integer]:").unwrap_or_else(|| panic!("no id in {l}"));
            let rest = &l[at + " id[integer]:".len()..];
            rest.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// A role with no privilege but the default ones (PUBLIC may call pg_logical_emit_message),
/// and a table owner who picks names, try to forge a `COMMIT end_lsn=FFFFFFFF/0` line in the
/// text format. Recovery must read only the real unit ends: after a restart, every row is
/// there.
fn forged_text_lines_change_nothing(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lforge");
    c.psql(
        "CREATE TABLE w (id int PRIMARY KEY, v text); \
         CREATE TABLE \"evil\nCOMMIT end_lsn=FFFFFFFF/0 x\" (\"id\nCOMMIT end_lsn=FFFFFFFF/0\" int PRIMARY KEY); \
         CREATE PUBLICATION pub FOR ALL TABLES; CREATE ROLE mallory LOGIN",
    );
    let out = tool(&c, &["-S", "cdc", "--create-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = ["-S", "cdc", "-P", "pub", "-D", dir.to_str().unwrap(), "--format", "text", "--messages"];
    let mut child = spawn(&mut tool(&c, &args), &log);
    insert(&c, 1..6);
    c.psql("INSERT INTO \"evil\nCOMMIT end_lsn=FFFFFFFF/0 x\" VALUES (1)");
    c.psql(
        "SET ROLE mallory; \
         BEGIN; SELECT pg_logical_emit_message(true, E'p\\nCOMMIT end_lsn=FFFFFFFF/0 x', E'c\\nCOMMIT end_lsn=FFFFFFFF/0\\n'); COMMIT; \
         SELECT pg_logical_emit_message(false, E'p\\r\\nCOMMIT end_lsn=FFFFFFFF/0 x', E'\\u2028COMMIT end_lsn=FFFFFFFF/0\\n')",
    );
    // A non-transactional message is not flushed at once (the WAL writer does it soon after),
    // so wait for the fact itself: it is in the output (as its last record).
    wait_until(TIMEOUT, "the non-transactional message in the output", || {
        output_lines(&dir)
            .iter()
            .any(|l| l.starts_with("MESSAGE end_lsn=") && l.contains("transactional=false"))
    });
    stop(&mut child, &log);

    // Restart: recovery reads the file's end; then more rows.
    let mut child = spawn(&mut tool(&c, &args), &log);
    insert(&c, 6..11);
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    let lines = output_lines(&dir);
    assert_eq!(text_ids(&lines), (1..11).collect::<Vec<_>>(), "{lines:#?}");
    for l in &lines {
        assert!(!l.starts_with("COMMIT end_lsn=FFFFFFFF"), "a forged line: {l}");
        assert!(!l.contains('\u{2028}') && !l.contains('\r'), "an unescaped line break: {l:?}");
        let known = ["BEGIN ", "COMMIT ", "MESSAGE ", "table "];
        assert!(known.iter().any(|k| l.starts_with(k)), "a line that is not ours: {l:?}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("table public.\"evil\\nCOMMIT end_lsn=FFFFFFFF/0 x\": INSERT:")
            && l.ends_with(" \"id\\nCOMMIT end_lsn=FFFFFFFF/0\"[integer]:1")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("MESSAGE xid=")
            && l.ends_with(
                "prefix='p\\nCOMMIT end_lsn=FFFFFFFF/0 x' content='c\\nCOMMIT end_lsn=FFFFFFFF/0\\n'"
            )),
        "{lines:#?}"
    );
    let commits = lines.iter().filter(|l| l.starts_with("COMMIT end_lsn=")).count();
    assert_eq!(commits, 12, "10 rows, the evil table's row and the transactional message: {lines:#?}");
}

#[test]
fn forged_text_lines_change_nothing_15() {
    forged_text_lines_change_nothing(PgVersion::V15);
}

#[test]
fn forged_text_lines_change_nothing_18() {
    forged_text_lines_change_nothing(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 12 (and the JSON half of 4): --ddl records
// ---------------------------------------------------------------------------

/// A query string of a DDL statement and an INSERT: the record's `query` is that whole string
/// (an event trigger cannot see which statement fired it), named so, and `objects` names what
/// the DDL created. A message that only looks like an object cannot add an "op" to a record.
fn ddl_records_say_what_they_hold(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lddl");
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = ["-S", "cdc", "-P", "pub", "--create-publication", "-D", dir.to_str().unwrap(), "--ddl"];
    let out = tool(&c, &["-S", "cdc", "--create-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the DDL trigger", || {
        c.psql("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgrecvlogical%'") == "3"
    });
    let query = "CREATE TABLE m1 (a int PRIMARY KEY); INSERT INTO m1 VALUES (1)";
    let out = pg_tool(version, "psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
        .args(["-p", &c.port().to_string(), "-c", query])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.psql(
        "BEGIN; INSERT INTO m1 VALUES (2); \
         SELECT pg_logical_emit_message(true, 'pgrecvlogical.ddl', '{}, \"op\":\"insert\", \"x\":{}'); COMMIT",
    );
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    let lines = output_lines(&dir);
    let ddl: Vec<J> = lines.iter().map(|l| parse_json(l)).filter(|v| v.str("op") == "ddl").collect();
    let create = ddl
        .iter()
        .find(|v| v.get("ddl").is_some_and(|d| d.str("tag") == "CREATE TABLE"))
        .unwrap_or_else(|| panic!("no CREATE TABLE record: {lines:#?}"));
    let d = create.get("ddl").unwrap();
    assert_eq!(d.str("query"), query, "{d:?}");
    assert!(d.get("command").is_none(), "{d:?}");
    let J::Arr(objects) = d.get("objects").unwrap() else { panic!("{d:?}") };
    assert!(objects.iter().any(|o| o.str("identity") == "public.m1"), "{objects:?}");
    // The forged one (not signed by our trigger): a plain message, a string, and one "op".
    assert!(ddl.iter().all(|v| v.get("content").is_none()), "{lines:#?}");
    let forged = lines
        .iter()
        .map(|l| parse_json(l))
        .find(|v| v.str("op") == "message")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(forged.str("content"), "{}, \"op\":\"insert\", \"x\":{}");
    let J::Obj(fields) = &forged else { unreachable!() };
    assert_eq!(fields.iter().filter(|(k, _)| k == "op").count(), 1, "{forged:?}");
    let inserts = lines.iter().filter(|l| l.starts_with("{\"op\":\"insert\"")).count();
    assert_eq!(inserts, 2, "{lines:#?}");
}

#[test]
fn ddl_records_say_what_they_hold_15() {
    ddl_records_say_what_they_hold(PgVersion::V15);
}

#[test]
fn ddl_records_say_what_they_hold_18() {
    ddl_records_say_what_they_hold(PgVersion::V18);
}

/// Only our event trigger writes DDL records. Any role may call `pg_logical_emit_message`:
/// a role with no privileges emits messages with the bare DDL prefix and with guessed token
/// prefixes, and they come out as plain `message` records, never `ddl` ones, so
/// `pgapplylogical --ddl=apply` does not run their query on the target; real DDL by an
/// ordinary (not superuser) table owner still comes out as a DDL record and is applied. The
/// secret never reaches the output, and the role can neither read it nor call our trigger.
fn forged_ddl_messages_are_plain_messages(version: PgVersion) {
    let c = logical_cluster(version);
    let target = Cluster::new(version);
    let t = TestDir::new("lforge");
    let dir = t.join("out");
    let log = t.join("tool.log");
    let tables = "CREATE TABLE victim (id int PRIMARY KEY); CREATE TABLE w (id int PRIMARY KEY)";
    c.psql(&format!(
        "{tables}; CREATE ROLE nobody LOGIN; CREATE ROLE owner LOGIN; \
         GRANT CREATE ON SCHEMA public TO owner; CREATE PUBLICATION pub FOR ALL TABLES"
    ));
    target.psql(tables);
    let args = ["-S", "cdc", "-P", "pub", "--create-slot-if-missing", "-D", dir.to_str().unwrap(), "--ddl"];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the DDL trigger and the slot", || {
        c.psql("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgrecvlogical%'") == "3"
            && c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'") == "1"
    });
    let forged = r#"{"tag":"DROP TABLE","query":"DROP TABLE victim","objects":[]}"#;
    let prefixes = ["pgrecvlogical.ddl", "pgrecvlogical.ddl:0", "pgrecvlogical.ddl:1234567890"];
    for prefix in prefixes {
        c.psql(&format!("SET ROLE nobody; SELECT pg_logical_emit_message(true, '{prefix}', '{forged}')"));
    }
    // Neither the secret nor our trigger function is within the role's reach.
    let secret = c.try_psql(
        "SET ROLE nobody; SELECT pg_sequence_last_value(c.oid) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgrecvlogical'",
    );
    assert!(secret.as_deref().map_or(true, str::is_empty), "{secret:?}");
    let call = c.try_psql("SET ROLE nobody; SELECT pgrecvlogical.emit_ddl()");
    assert!(call.is_err(), "{call:?}");
    let real = "CREATE TABLE owned (a int PRIMARY KEY)";
    c.psql(&format!("SET ROLE owner; {real}"));
    c.psql("INSERT INTO w VALUES (1)");
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    let lines = output_lines(&dir);
    let records: Vec<J> = lines.iter().map(|l| parse_json(l)).collect();
    let text = lines.join("\n");
    for v in records.iter().filter(|v| v.str("op") == "ddl") {
        assert!(!format!("{v:?}").contains("victim"), "a forged DDL record: {v:?}");
    }
    let plain = records.iter().filter(|v| v.str("op") == "message" && v.str("content") == forged).count();
    assert_eq!(plain, prefixes.len(), "{lines:#?}");
    assert!(
        records.iter().any(|v| v.str("op") == "ddl"
            && v.get("ddl").is_some_and(|d| d.str("tag") == "CREATE TABLE" && d.str("query") == real)),
        "no DDL record of the owner's CREATE TABLE: {lines:#?}"
    );
    let token = c.psql("SELECT last_value FROM pgrecvlogical.ddl_token");
    assert!(token.len() > 6 && !text.contains(&token), "the secret {token} is in the output:\n{text}");

    // A re-install (each start) keeps the token; an install from before the token (no
    // sequence) gets one. Either way the next DDL is still a DDL record.
    for (step, real) in
        [("again", "CREATE TABLE again (a int)"), ("upgraded", "CREATE TABLE upgraded (a int)")]
    {
        if step == "upgraded" {
            // As an install from before: functions that do not read a token, no sequence.
            c.psql(
                "DROP EVENT TRIGGER pgrecvlogical_ddl_drop; \
                 CREATE OR REPLACE FUNCTION pgrecvlogical.emit_ddl() RETURNS event_trigger \
                 LANGUAGE plpgsql AS $$BEGIN END$$; DROP SEQUENCE pgrecvlogical.ddl_token",
            );
        }
        let mut child = spawn(&mut tool(&c, &args), &log);
        wait_until(TIMEOUT, "the token", || {
            assert!(!read(&log).contains("error"), "{step}: {}", read(&log));
            c.try_psql("SELECT last_value FROM pgrecvlogical.ddl_token").is_ok_and(|t| !t.is_empty())
        });
        let now = c.psql("SELECT last_value FROM pgrecvlogical.ddl_token");
        assert_eq!(now == token, step == "again", "{step}: token {token} then {now}");
        c.psql(&format!("SET ROLE owner; {real}"));
        wait_caught_up(&c, "cdc", &mut child, &log);
        stop(&mut child, &log);
        let lines = output_lines(&dir);
        assert!(
            lines
                .iter()
                .map(|l| parse_json(l))
                .any(|v| v.str("op") == "ddl" && v.get("ddl").is_some_and(|d| d.str("query") == real)),
            "{step}: no DDL record of {real}: {lines:#?}"
        );
        assert!(!lines.join("\n").contains(&now), "{step}: the secret {now} is in the output");
    }

    let (ok, err) = crate::apply::apply_once(&target, &dir, &["--ddl=apply"]);
    assert!(ok, "{err}");
    assert_eq!(target.psql("SELECT to_regclass('public.upgraded') IS NOT NULL"), "t");
    assert_eq!(target.psql("SELECT to_regclass('public.victim') IS NOT NULL"), "t", "a forged query ran");
    assert_eq!(target.psql("SELECT to_regclass('public.owned') IS NOT NULL"), "t", "the real DDL did not");
    assert_eq!(target.psql("SELECT count(*) FROM w"), "1");
}

#[test]
fn forged_ddl_messages_are_plain_messages_15() {
    forged_ddl_messages_are_plain_messages(PgVersion::V15);
}

#[test]
fn forged_ddl_messages_are_plain_messages_18() {
    forged_ddl_messages_are_plain_messages(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 7: standard output closed by its reader
// ---------------------------------------------------------------------------

/// `pgrecvlogical -f - | head -n 1`: once the reader is gone, the next write fails with
/// EPIPE, and the program ends at once with one line and status 1, never reconnecting.
fn broken_stdout_ends_the_program(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lpipe");
    setup(&c);
    let log = t.join("tool.log");
    let f = fs::File::create(&log).unwrap();
    let mut child =
        KillOnDrop::spawn(tool(&c, &["-S", "cdc", "-P", "pub", "-f", "-"]).stdout(Stdio::piped()).stderr(f));
    insert(&c, 1..2);
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"op\":\"begin\""), "{first}");
    drop(reader);
    // Writes after the reader left; each one is a chance for the tool to notice.
    let mut n = 2;
    let status = loop {
        insert(&c, n..n + 1);
        n += 1;
        if let Some(s) = wait_for_exit(&mut child, Duration::from_millis(500)) {
            break s;
        }
        assert!(n < 240, "still running with its standard output closed:\n{}", read(&log));
    };
    let text = read(&log);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("could not write to standard output") && text.contains("Broken pipe"), "{text}");
    assert!(!text.contains("trying again"), "a closed pipe is never retried:\n{text}");
}

#[test]
fn broken_stdout_ends_the_program_15() {
    broken_stdout_ends_the_program(PgVersion::V15);
}

#[test]
fn broken_stdout_ends_the_program_18() {
    broken_stdout_ends_the_program(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Defect 5: a reopened partial file is fsync'ed, file and directory
// ---------------------------------------------------------------------------

fn with_failing_fsync(cmd: &mut Command, shim: &Path, matching: &Path, skip: u32, shim_log: &Path) {
    cmd.env("LD_PRELOAD", shim)
        .env("FAILFSYNC_MATCH", matching)
        .env("FAILFSYNC_SKIP", skip.to_string())
        .env("FAILFSYNC_LOG", shim_log);
}

/// After a restart the partial file is reopened; what an earlier run wrote may be only in the
/// page cache, so the file and its directory are fsync'ed before anything is confirmed. On an
/// idle database nothing else is written: an fsync that fails there shows the reopen fsyncs.
/// Not server-facing: PostgreSQL 18 only.
#[test]
fn reopened_partial_is_fsynced() {
    let c = logical_cluster(PgVersion::V18);
    let t = TestDir::new("lreopen");
    setup(&c);
    let shim = build_failfsync(t.path());
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = ["-S", "cdc", "-P", "pub", "-D", dir.to_str().unwrap()];
    let mut child = spawn(&mut tool(&c, &args), &log);
    insert(&c, 1..4);
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);
    let partial = partial_file(&dir);

    // The file's fsync fails, then (the file's let through) the directory's.
    for (matching, skip, what) in [(&partial, 0, &partial), (&dir, 1, &dir)] {
        let shim_log = t.join(format!("fsync-{skip}.log"));
        let mut cmd = tool(&c, &args);
        with_failing_fsync(&mut cmd, &shim, matching, skip, &shim_log);
        let mut child = spawn(&mut cmd, &log);
        let status = wait_for_exit(&mut child, TIMEOUT)
            .unwrap_or_else(|| panic!("kept running without fsyncing {}:\n{}", what.display(), read(&log)));
        assert_eq!(status.code(), Some(1), "{}", read(&log));
        let failed = read(&shim_log);
        assert!(
            failed.lines().next().is_some_and(|l| l.ends_with(&*what.to_string_lossy())),
            "the first failed fsync was on {}: {failed}",
            what.display()
        );
        let text = read(&log);
        assert!(text.contains(&format!("could not fsync file \"{}\"", what.display())), "{text}");
        assert_eq!(partial_file(&dir), partial, "no second partial file");
    }

    // Without the fault it continues the same file.
    let mut child = spawn(&mut tool(&c, &args), &log);
    insert(&c, 4..8);
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);
    assert_eq!(partial_file(&dir), partial);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.w"]);
    replay.assert_no_duplicates();
}
