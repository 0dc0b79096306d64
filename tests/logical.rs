//! End-to-end tests of pgrecvlogical against real PostgreSQL 15 and 18 servers: a workload of
//! every kind of change is streamed, the output is replayed into tables, and the tables must
//! equal the server's; kill -9 during a workload loses nothing; an idle slot keeps advancing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{pg_tool, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(120);

/// `pgrecvlogical` as built for this test run, stdin closed, libpq's PG* variables removed.
pub(crate) fn pgrecvlogical() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgrecvlogical"));
    cmd.stdin(Stdio::null());
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGSERVICE",
        "PGAPPNAME",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub(crate) fn tool(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = pgrecvlogical();
    cmd.args(c.conn_args()).args(["-s", "1"]).args(args);
    cmd
}

/// A cluster that decodes logically, streams transactions over 64kB, and can prepare.
pub(crate) fn logical_cluster(version: PgVersion) -> Cluster {
    Cluster::builder(version)
        .conf(
            "wal_level = logical\n\
             logical_decoding_work_mem = '64kB'\n\
             max_prepared_transactions = 10\n\
             autovacuum = off",
        )
        .start()
}

/// Starts the tool with stderr into `log`.
pub(crate) fn spawn(cmd: &mut Command, log: &Path) -> KillOnDrop {
    let f = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    KillOnDrop::spawn(cmd.stdout(Stdio::null()).stderr(f))
}

pub(crate) fn slot_confirmed(c: &Cluster, slot: &str) -> Option<String> {
    let s =
        c.psql(&format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"));
    (!s.is_empty()).then_some(s)
}

/// Waits until the slot confirmed everything the server wrote so far (the tool wrote it all);
/// fails at once if the tool exits.
pub(crate) fn wait_caught_up(c: &Cluster, slot: &str, child: &mut KillOnDrop, log: &Path) {
    let target = c.current_lsn();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ok = c.psql(&format!(
            "SELECT coalesce(confirmed_flush_lsn >= '{target}', false) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ));
        if ok == "t" {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pgrecvlogical exited ({status}) before catching up:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "slot {slot} did not confirm {target} (at {:?}); tool log:\n{}",
                slot_confirmed(c, slot),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn stop(child: &mut KillOnDrop, log: &Path) {
    let status = child.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(
        status.success(),
        "pgrecvlogical exited with {status}:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// Output files in stream order (names sort by start LSN).
pub(crate) fn output_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

pub(crate) fn output_lines(dir: &Path) -> Vec<String> {
    output_files(dir)
        .iter()
        .flat_map(|p| fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

// ---------------------------------------------------------------------------
// A small JSON reader: the test crate has no dependencies.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum J {
    Null,
    Bool(bool),
    /// The number's text, as written.
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub(crate) fn get(&self, k: &str) -> Option<&J> {
        match self {
            J::Obj(v) => v.iter().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        }
    }
    pub(crate) fn str(&self, k: &str) -> &str {
        match self.get(k) {
            Some(J::Str(s)) => s,
            other => panic!("{k} is not a string in {self:?}: {other:?}"),
        }
    }
    pub(crate) fn fields(&self) -> &[(String, J)] {
        match self {
            J::Obj(v) => v,
            other => panic!("not an object: {other:?}"),
        }
    }
    /// A canonical text form: numbers as written, strings quoted.
    pub(crate) fn canon(&self) -> String {
        match self {
            J::Null => "null".into(),
            J::Bool(b) => b.to_string(),
            J::Num(n) => n.clone(),
            J::Str(s) => format!("{s:?}"),
            J::Arr(a) => format!("[{}]", a.iter().map(J::canon).collect::<Vec<_>>().join(",")),
            J::Obj(o) => format!(
                "{{{}}}",
                o.iter().map(|(k, v)| format!("{k}:{}", v.canon())).collect::<Vec<_>>().join(",")
            ),
        }
    }
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "expected {:?} at {} in {}",
            c as char,
            self.i,
            String::from_utf8_lossy(self.s)
        );
        self.i += 1;
    }
    fn value(&mut self) -> J {
        self.ws();
        match self.s[self.i] {
            b'n' => {
                self.i += 4;
                J::Null
            }
            b't' => {
                self.i += 4;
                J::Bool(true)
            }
            b'f' => {
                self.i += 5;
                J::Bool(false)
            }
            b'"' => J::Str(self.string()),
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return J::Arr(v);
                }
                loop {
                    v.push(self.value());
                    self.ws();
                    let c = self.s[self.i];
                    self.i += 1;
                    if c == b']' {
                        return J::Arr(v);
                    }
                    assert_eq!(c, b',');
                }
            }
            b'{' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return J::Obj(v);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    v.push((k, self.value()));
                    self.ws();
                    let c = self.s[self.i];
                    self.i += 1;
                    if c == b'}' {
                        return J::Obj(v);
                    }
                    assert_eq!(c, b',');
                }
            }
            _ => {
                let st = self.i;
                while self.i < self.s.len()
                    && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.i += 1;
                }
                assert!(self.i > st, "bad JSON at {st}: {}", String::from_utf8_lossy(self.s));
                J::Num(String::from_utf8(self.s[st..self.i].to_vec()).unwrap())
            }
        }
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            out.push(char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap());
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Copy a whole UTF-8 sequence.
                    let st = self.i - 1;
                    let mut end = self.i;
                    while end < self.s.len() && (self.s[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.s[st..end]).unwrap());
                    self.i = end;
                }
            }
        }
    }
}

pub(crate) fn parse_json(line: &str) -> J {
    let mut p = P { s: line.as_bytes(), i: 0 };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, line.len(), "trailing bytes in {line}");
    v
}

#[test]
fn json_reader_reads_what_we_write() {
    let v = parse_json(r#"{"a":[1,-2.5e3,true,null,"x\"\u00e9\n"],"b":{},"c":[]}"#);
    assert_eq!(v.get("a").unwrap().canon(), r#"[1,-2.5e3,true,null,"x\"é\n"]"#);
    assert_eq!(v.get("b"), Some(&J::Obj(vec![])));
}

// ---------------------------------------------------------------------------
// Replaying the output into tables
// ---------------------------------------------------------------------------

pub(crate) type Row = BTreeMap<String, J>;

#[derive(Default, Debug)]
pub(crate) struct Replay {
    /// "schema.table" → key → row.
    tables: BTreeMap<String, BTreeMap<String, Row>>,
    open: Option<Vec<J>>,
    prepared: HashMap<String, Vec<J>>,
    /// commit_lsn of every transaction applied, in order.
    commits: Vec<String>,
    /// The DDL tags seen, with the number of changes applied before each.
    ddl: Vec<(String, usize)>,
    changes: usize,
    pub(crate) incomplete: usize,
    unchanged_toast: usize,
    pub(crate) lines: usize,
}

fn key_of(obj: &J) -> String {
    obj.canon()
}

impl Replay {
    fn table(change: &J) -> String {
        format!("{}.{}", change.str("schema"), change.str("table"))
    }

    fn line(&mut self, line: &str) {
        self.lines += 1;
        let v = parse_json(line);
        match v.str("op") {
            "begin" | "begin_prepare" => {
                if self.open.replace(Vec::new()).is_some() {
                    self.incomplete += 1;
                }
            }
            "insert" | "update" | "delete" | "truncate" | "ddl" | "message" => {
                self.open.as_mut().unwrap_or_else(|| panic!("change outside a transaction: {line}")).push(v);
            }
            "commit" => {
                let changes = self.open.take().unwrap_or_else(|| panic!("commit without begin: {line}"));
                self.apply(changes);
                self.commits.push(v.str("commit_lsn").to_owned());
            }
            "prepare" => {
                let changes = self.open.take().unwrap_or_else(|| panic!("prepare without begin: {line}"));
                self.prepared.insert(v.str("gid").to_owned(), changes);
            }
            "commit_prepared" => {
                let changes =
                    self.prepared.remove(v.str("gid")).unwrap_or_else(|| panic!("unknown gid: {line}"));
                self.apply(changes);
                self.commits.push(v.str("commit_lsn").to_owned());
            }
            "rollback_prepared" => {
                self.prepared.remove(v.str("gid"));
            }
            "rollback_incomplete" => self.open = None,
            other => panic!("unexpected op {other}: {line}"),
        }
    }

    fn apply(&mut self, changes: Vec<J>) {
        for ch in changes {
            self.changes += 1;
            match ch.str("op") {
                "insert" => {
                    let t = self.tables.entry(Self::table(&ch)).or_default();
                    let row: Row = ch.get("new").unwrap().fields().iter().cloned().collect();
                    let old = t.insert(key_of(ch.get("key").unwrap()), row);
                    assert!(old.is_none(), "insert of an existing key: {ch:?}");
                }
                "update" => {
                    let t = self.tables.entry(Self::table(&ch)).or_default();
                    let key = ch.get("key").unwrap();
                    let mut row =
                        t.remove(&key_of(key)).unwrap_or_else(|| panic!("update of a missing row: {ch:?}"));
                    for (col, val) in ch.get("new").unwrap().fields() {
                        if val.get("unchanged_toast") == Some(&J::Bool(true)) {
                            self.unchanged_toast += 1;
                            assert!(
                                row.contains_key(col),
                                "unchanged TOAST value of {col} that was never seen"
                            );
                        } else {
                            row.insert(col.clone(), val.clone());
                        }
                    }
                    let new_key =
                        J::Obj(key.fields().iter().map(|(k, _)| (k.clone(), row[k].clone())).collect());
                    t.insert(key_of(&new_key), row);
                }
                "delete" => {
                    let t = self.tables.entry(Self::table(&ch)).or_default();
                    t.remove(&key_of(ch.get("key").unwrap()))
                        .unwrap_or_else(|| panic!("delete of a missing row: {ch:?}"));
                }
                "truncate" => {
                    let J::Arr(tables) = ch.get("tables").unwrap() else { panic!() };
                    for t in tables {
                        self.tables.entry(Self::table(t)).or_default().clear();
                    }
                }
                "ddl" => {
                    let tag = ch.get("ddl").and_then(|d| d.get("tag")).map(|t| t.canon()).unwrap_or_default();
                    self.ddl.push((tag, self.changes));
                }
                _ => {}
            }
        }
    }

    pub(crate) fn read_dir(dir: &Path) -> Replay {
        let mut r = Replay::default();
        for line in output_lines(dir) {
            r.line(&line);
        }
        r
    }

    /// Rows of a table as sorted canonical strings, NULL columns left out.
    pub(crate) fn rows(&self, table: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.tables.get(table).map(|t| t.values().map(canon_row).collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// No transaction was written twice.
    pub(crate) fn assert_no_duplicates(&self) {
        let mut seen = std::collections::HashSet::new();
        for c in &self.commits {
            assert!(seen.insert(c), "transaction {c} written twice");
        }
    }
}

pub(crate) fn canon_row(row: &Row) -> String {
    row.iter()
        .filter(|(_, v)| **v != J::Null)
        .map(|(k, v)| format!("{k}={}", v.canon()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The server's rows of a table, in the same canonical form (row_to_json types values as we do).
fn db_rows(c: &Cluster, table: &str) -> Vec<String> {
    let out = c.psql(&format!("SELECT row_to_json(t)::text FROM ONLY {table} t"));
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

pub(crate) fn assert_tables_equal(c: &Cluster, replay: &Replay, tables: &[&str]) {
    for t in tables {
        let (ours, theirs) = (replay.rows(t), db_rows(c, t));
        if ours != theirs {
            let missing: Vec<_> = theirs.iter().filter(|r| !ours.contains(r)).take(5).collect();
            let extra: Vec<_> = ours.iter().filter(|r| !theirs.contains(r)).take(5).collect();
            panic!(
                "{t}: replayed output has {} rows, the server {}; missing {missing:?}; extra {extra:?}",
                ours.len(),
                theirs.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, name text, balance numeric(12,2), active bool, ratio float8);
CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
CREATE TABLE kv (k text PRIMARY KEY, v bigint);
ALTER TABLE kv REPLICA IDENTITY FULL;
CREATE TABLE big (id int PRIMARY KEY, payload text);
";

/// Every kind of change, in separate transactions, with DDL in between.
fn workload(c: &Cluster) {
    // Inserts, in several transactions.
    for i in 0..5 {
        c.psql(&format!(
            "INSERT INTO accounts SELECT g, 'name ' || g, g * 1.5, g % 2 = 0, g / 7.0 FROM generate_series({}, {}) g",
            i * 40 + 1,
            i * 40 + 40
        ));
    }
    // Updates, including key changes, and deletes.
    c.psql("UPDATE accounts SET balance = balance + 10, active = NOT active WHERE id % 3 = 0");
    c.psql("UPDATE accounts SET id = id + 1000 WHERE id % 10 = 1");
    c.psql("DELETE FROM accounts WHERE id % 7 = 0");
    c.psql("UPDATE accounts SET name = 'it''s \"quoted\"\nand multi-line', ratio = 'NaN' WHERE id = 2");
    // TOAST: large incompressible values, then updates that leave them unchanged.
    c.psql(
        "INSERT INTO docs SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 4000) i), 0 \
         FROM generate_series(1, 5) g",
    );
    c.psql("UPDATE docs SET n = n + 1");
    c.psql("UPDATE docs SET body = 'short now' WHERE id = 3");
    // Replica identity full, truncate, reinsert.
    c.psql("INSERT INTO kv SELECT 'k' || g, g FROM generate_series(1, 50) g");
    c.psql("UPDATE kv SET v = v * 2 WHERE v % 5 = 0");
    c.psql("DELETE FROM kv WHERE v > 40");
    c.psql("TRUNCATE kv");
    c.psql("INSERT INTO kv VALUES ('after', 1)");
    // DDL in the middle of the stream.
    c.psql("ALTER TABLE accounts ADD COLUMN note text");
    c.psql("UPDATE accounts SET note = 'noted' WHERE id < 20");
    c.psql("CREATE TABLE later (id int PRIMARY KEY, x text)");
    c.psql("INSERT INTO later VALUES (1, 'one'), (2, 'two')");
    // A transaction far larger than logical_decoding_work_mem and --memory-limit: streamed.
    c.psql("INSERT INTO big SELECT g, repeat('p', 200) || g FROM generate_series(1, 20000) g");
    // An aborted one, large (streamed, then aborted) and small.
    c.psql("BEGIN; INSERT INTO big SELECT g, 'aborted' FROM generate_series(30001, 45000) g; ROLLBACK;");
    c.psql("BEGIN; INSERT INTO accounts VALUES (9999, 'aborted'); ROLLBACK;");
    // A streamed transaction with a subtransaction rolled back in the middle.
    c.psql(
        "BEGIN; INSERT INTO big SELECT g, 'kept' FROM generate_series(50001, 55000) g; SAVEPOINT s; \
         INSERT INTO big SELECT g, 'rolled back' FROM generate_series(60001, 65000) g; ROLLBACK TO SAVEPOINT s; \
         INSERT INTO big SELECT g, 'kept too' FROM generate_series(70001, 70100) g; COMMIT;",
    );
    // Prepared transactions: one committed, one rolled back.
    c.psql("BEGIN; INSERT INTO accounts VALUES (5001, 'prepared'); PREPARE TRANSACTION 'p1'");
    c.psql("BEGIN; INSERT INTO accounts VALUES (5002, 'rolled back'); PREPARE TRANSACTION 'p2'");
    c.psql("COMMIT PREPARED 'p1'");
    c.psql("ROLLBACK PREPARED 'p2'");
    c.psql("DELETE FROM big WHERE id % 1000 = 0");
}

const TABLES: &[&str] = &["public.accounts", "public.docs", "public.kv", "public.big", "public.later"];

fn replay_equals_source(version: PgVersion, two_phase: bool, streaming: &str) {
    let c = logical_cluster(version);
    let t = TestDir::new("lrepl");
    c.psql(SCHEMA);
    let dir = t.join("out");
    let log = t.join("tool.log");
    let mut args =
        vec!["-S", "cdc", "-P", "pub", "--create-publication", "-D", dir.to_str().unwrap(), "--ddl"];
    args.extend(["--create-slot-if-missing", "--memory-limit", "64kB", "-v", "--streaming", streaming]);
    if two_phase {
        args.push("--two-phase");
    }
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the slot", || slot_confirmed(&c, "cdc").is_some());
    workload(&c);
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);

    let replay = Replay::read_dir(&dir);
    let log_text = fs::read_to_string(&log).unwrap();
    assert_tables_equal(&c, &replay, TABLES);
    replay.assert_no_duplicates();
    assert_eq!(replay.incomplete, 0);
    assert!(
        replay.open.is_none() && replay.prepared.is_empty(),
        "{:?} {:?}",
        replay.open,
        replay.prepared.keys()
    );
    assert!(
        replay.unchanged_toast >= 5,
        "unchanged TOAST values are marked, not null: {}",
        replay.unchanged_toast
    );
    assert!(log_text.contains("spilled"), "the large transaction spilled under --memory-limit:\n{log_text}");
    assert!(log_text.contains("wrote streamed transaction"), "{log_text}");
    // DDL comes out where it happened: ALTER before the first change that sets the column.
    let tags: Vec<&str> = replay.ddl.iter().map(|(t, _)| t.as_str()).collect();
    assert!(tags.contains(&"\"ALTER TABLE\"") && tags.contains(&"\"CREATE TABLE\""), "{tags:?}");
    let lines = output_lines(&dir);
    let alter =
        lines.iter().position(|l| l.contains("\"ADD COLUMN note") || l.contains("ADD COLUMN note")).unwrap();
    let first_note = lines.iter().position(|l| l.contains("\"note\":\"noted\"")).unwrap();
    assert!(alter < first_note, "the ALTER comes before the changes that need it");
    // The rolled-back work is nowhere.
    assert!(!lines.iter().any(|l| l.contains("\"payload\":\"rolled back\"")), "a rolled-back subtransaction");
    assert!(!lines.iter().any(|l| l.contains("\"aborted\"")));
    if two_phase {
        assert!(lines.iter().any(|l| l.starts_with("{\"op\":\"prepare\"")));
        assert!(lines.iter().any(|l| l.starts_with("{\"op\":\"rollback_prepared\"")));
    }
    // Every line ends with a newline and the files hold whole transactions.
    for f in output_files(&dir) {
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.ends_with('\n'), "{}", f.display());
        let last = text.lines().last().unwrap();
        assert!(last.contains("\"end_lsn\""), "{} ends with {last}", f.display());
    }
}

#[test]
fn replay_equals_source_15() {
    replay_equals_source(PgVersion::V15, true, "on");
}

#[test]
fn replay_equals_source_18_parallel() {
    // streaming = parallel: Stream Abort carries the abort LSN and time (protocol 4).
    replay_equals_source(PgVersion::V18, false, "parallel");
}

// ---------------------------------------------------------------------------
// kill -9, restarts
// ---------------------------------------------------------------------------

/// kill -9 the tool again and again during a workload: after a final catch-up the output,
/// replayed, equals the table, and no transaction was written twice.
fn kill9_loses_nothing(version: PgVersion, streaming: &str) {
    let c = logical_cluster(version);
    let t = TestDir::new("lkill");
    c.psql("CREATE TABLE w (id int PRIMARY KEY, v int, pad text); CREATE PUBLICATION pub FOR TABLE w");
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = [
        "-S",
        "cdc",
        "-P",
        "pub",
        "-D",
        dir.to_str().unwrap(),
        "--memory-limit",
        "64kB",
        "--rotate-size",
        "256kB",
        "--streaming",
        streaming,
    ];
    // The slot exists before the workload starts, so every transaction is decoded.
    let out = tool(&c, &["-S", "cdc", "--create-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut kills = 0;
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..400u32 {
                if i % 20 == 19 {
                    // Large enough to be streamed and spilled.
                    c.psql(&format!(
                        "INSERT INTO w SELECT g, 0, repeat('s', 100) FROM generate_series({}, {}) g",
                        100_000 + i * 10_000,
                        100_000 + i * 10_000 + 2999
                    ));
                } else {
                    c.psql(&format!(
                        "BEGIN; INSERT INTO w VALUES ({i}, 0, repeat('x', 100)); UPDATE w SET v = v + 1 WHERE id = {}; \
                         DELETE FROM w WHERE id = {}; COMMIT;",
                        i / 2,
                        i.saturating_sub(20)
                    ));
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut n = 0u64;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let mut child = spawn(&mut tool(&c, &args), &log);
            n += 1;
            // 0.2 to 0.8 s: long enough to write, short enough to die mid-transaction.
            thread::sleep(Duration::from_millis(200 + (n * 373) % 600));
            let _ = child.kill();
            let _ = child.wait();
            kills += 1;
        }
    });
    assert!(kills >= 3, "only {kills} kills during the workload");
    let mut child = spawn(&mut tool(&c, &args), &log);
    // A killed run may already have confirmed everything: without this wait the SIGTERM below
    // could come before the tool installed its handlers, and end it with the signal.
    let started = format!("[{}] pgrecvlogical: info: starting logical decoding", child.id());
    wait_until(TIMEOUT, "the last run to stream", || {
        fs::read_to_string(&log).unwrap_or_default().contains(&started)
    });
    wait_caught_up(&c, "cdc", &mut child, &log);
    stop(&mut child, &log);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.w"]);
    replay.assert_no_duplicates();
    assert!(replay.commits.len() >= 400, "{} transactions", replay.commits.len());
    assert!(output_files(&dir).len() > 1, "rotation happened");
    let cuts = fs::read_to_string(&log).unwrap().matches("of an incomplete transaction").count();
    eprintln!(
        "{version} streaming {streaming}: {kills} kills, {cuts} torn tails cut, {} transactions, {} lines",
        replay.commits.len(),
        replay.lines
    );
}

#[test]
fn kill9_loses_nothing_15() {
    kill9_loses_nothing(PgVersion::V15, "on");
}

#[test]
fn kill9_loses_nothing_18_streaming_off() {
    kill9_loses_nothing(PgVersion::V18, "off");
}

// ---------------------------------------------------------------------------
// Idle slots advance
// ---------------------------------------------------------------------------

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A publication nobody writes to, while another database is busy: the slot's
/// confirmed_flush_lsn keeps moving, so it never pins WAL.
fn idle_slot_advances(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lidle");
    c.psql("CREATE TABLE quiet (id int PRIMARY KEY); CREATE DATABASE busy");
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = [
        "-S",
        "idle",
        "-P",
        "quietpub",
        "--create-publication",
        "-t",
        "quiet",
        "--create-slot-if-missing",
        "-D",
        dir.to_str().unwrap(),
    ];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the slot", || slot_confirmed(&c, "idle").is_some());
    let before = lsn(&slot_confirmed(&c, "idle").unwrap());
    let busy = |sql: &str| {
        let out = pg_tool(version, "psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "busy",
            ])
            .args(["-p", &c.port().to_string(), "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    busy("CREATE TABLE churn (id int, pad text)");
    for i in 0..20 {
        busy(&format!("INSERT INTO churn SELECT g, repeat('c', 200) FROM generate_series(1, 500) g -- {i}"));
    }
    let target = lsn(&c.current_lsn());
    assert!(target > before + (1 << 20), "the busy database wrote WAL");
    wait_until(TIMEOUT, "the idle slot to confirm the busy database's WAL", || {
        slot_confirmed(&c, "idle").is_some_and(|s| lsn(&s) >= target)
    });
    // And the server may remove the WAL: restart_lsn follows once a running-transactions
    // record (written at a checkpoint) is decoded and confirmed.
    busy("CHECKPOINT");
    busy("INSERT INTO churn VALUES (0, 'after the checkpoint')");
    wait_until(TIMEOUT, "the idle slot's restart_lsn to move", || {
        lsn(&c.psql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'idle'")) > before
    });
    stop(&mut child, &log);
    assert!(output_lines(&dir).is_empty(), "nothing was published: {:?}", output_lines(&dir));
}

#[test]
fn idle_slot_advances_15() {
    idle_slot_advances(PgVersion::V15);
}

#[test]
fn idle_slot_advances_18() {
    idle_slot_advances(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Snapshot, standard output, end position, slot actions
// ---------------------------------------------------------------------------

/// --snapshot writes the rows that existed before the slot, then the stream continues: the
/// replay of both equals the table. Then a second run to standard output with --endpos stops
/// by itself, resuming from the slot.
fn snapshot_then_stream(version: PgVersion) {
    let c = logical_cluster(version);
    let t = TestDir::new("lsnap");
    c.psql(
        "CREATE TABLE s (id int PRIMARY KEY, name text, amount numeric); \
         INSERT INTO s SELECT g, 'before ' || g, g / 3.0 FROM generate_series(1, 25000) g; \
         CREATE PUBLICATION pub FOR ALL TABLES",
    );
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args =
        ["-S", "snap", "-P", "pub", "--snapshot", "--create-slot-if-missing", "-D", dir.to_str().unwrap()];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the slot", || slot_confirmed(&c, "snap").is_some());
    c.psql("UPDATE s SET name = 'changed' WHERE id % 100 = 0; DELETE FROM s WHERE id > 24990");
    c.psql("INSERT INTO s VALUES (30000, 'after', 1)");
    wait_caught_up(&c, "snap", &mut child, &log);
    stop(&mut child, &log);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.s"]);
    let lines = output_lines(&dir);
    assert!(lines[0].starts_with("{\"op\":\"begin\",\"xid\":0,"), "{}", lines[0]);
    assert!(fs::read_to_string(&log).unwrap().contains("initial snapshot written: 25000 rows of 1 tables"));

    // A restart with --snapshot does not snapshot again: the output has it.
    let mut child = spawn(&mut tool(&c, &args), &log);
    c.psql("INSERT INTO s VALUES (30001, 'later', 2)");
    wait_caught_up(&c, "snap", &mut child, &log);
    stop(&mut child, &log);
    let replay = Replay::read_dir(&dir);
    assert_tables_equal(&c, &replay, &["public.s"]);
    replay.assert_no_duplicates();

    // Standard output and --endpos, on a second slot created by --create-slot.
    let out = tool(&c, &["-S", "other", "--create-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.psql("INSERT INTO s VALUES (30002, 'to stdout', 3)");
    let endpos = c.current_lsn();
    let out = tool(&c, &["-S", "other", "-P", "pub", "-f", "-", "-E", &endpos, "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"to stdout\""), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    // Text format.
    c.psql("INSERT INTO s VALUES (30003, 'text', 4)");
    let endpos = c.current_lsn();
    let out = tool(&c, &["-S", "other", "-P", "pub", "-f", "-", "-E", &endpos, "--format", "text"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("table public.s: INSERT:") && text.contains("name[text]:'text'"), "{text}");

    // --binary: the same values as text (integers, numerics of every shape, text, NULL).
    for slot in ["bin", "txt"] {
        let out = tool(&c, &["-S", slot, "--create-slot"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    c.psql(
        "CREATE TABLE nums (id int PRIMARY KEY, n numeric, b bigint, f float8, t text, ok bool); \
         INSERT INTO nums SELECT g, (g - 50) * 123.456 / 7, g::bigint * 1000000007, g / 4.0, 'v' || g, g % 2 = 0 \
         FROM generate_series(1, 100) g; \
         INSERT INTO nums VALUES (101, 'NaN', NULL, 'Infinity', NULL, NULL), (102, 0.000, 0, -0.5, '', true), \
         (103, 123456789012345678901234567890.123456789, -1, 1e-300, 'x', false)",
    );
    let endpos = c.current_lsn();
    let run = |slot: &str, extra: &[&str]| {
        let mut args = vec!["-S", slot, "-P", "pub", "-f", "-", "-E", &endpos];
        args.extend_from_slice(extra);
        let out = tool(&c, &args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let (bin, txt) = (run("bin", &["--binary"]), run("txt", &[]));
    assert!(bin.contains("\"n\":\"NaN\"") && bin.lines().count() > 100, "{bin}");
    for (b, t) in bin.lines().zip(txt.lines()) {
        assert_eq!(b, t, "binary and text values differ");
    }
    assert_eq!(bin.lines().count(), txt.lines().count());

    // --list-slots, --drop-slot.
    let out = tool(&c, &["--list-slots"]).output().unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("snap\tpgoutput\tpostgres") && listing.contains("other\tpgoutput"), "{listing}");
    let out = tool(&c, &["-S", "other", "--drop-slot"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(slot_confirmed(&c, "other"), None);
    let out = tool(&c, &["-S", "other", "--drop-slot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replication slot \"other\" does not exist"));
}

#[test]
fn snapshot_then_stream_15() {
    snapshot_then_stream(PgVersion::V15);
}

#[test]
fn snapshot_then_stream_18() {
    snapshot_then_stream(PgVersion::V18);
}

/// Mistakes that must stop the tool at once with a clear message.
#[test]
fn refusals() {
    let out = pgrecvlogical().args(["-S", "s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no output specified") && err.contains("Try \"pgrecvlogical --help\""), "{err}");

    let c = logical_cluster(PgVersion::V18);
    let t = TestDir::new("lrefuse");
    let dir = t.join("out");
    let d = dir.to_str().unwrap();
    let out = tool(&c, &["-S", "s", "-P", "missing", "-D", d, "-n"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("publication \"missing\" does not exist"));
    c.psql("CREATE PUBLICATION pub FOR ALL TABLES; SELECT pg_create_logical_replication_slot('td', 'test_decoding')");
    let out = tool(&c, &["-S", "td", "-P", "pub", "-D", d, "-n"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a pgoutput logical slot"), "{out:?}");
    // A fresh slot with --snapshot, stopping at the end position by itself.
    let endpos = c.current_lsn();
    let out = tool(
        &c,
        &["-S", "x", "-P", "pub", "-D", d, "-n", "--snapshot", "--create-slot-if-missing", "-E", &endpos],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A second writer into the same directory is refused while the first runs.
    let log = t.join("tool.log");
    let mut first = spawn(&mut tool(&c, &["-S", "x", "-P", "pub", "-D", d]), &log);
    // The lock file is there since the run above, so its existence proves nothing; the server
    // showing slot x in use does: the tool locks the directory before it connects.
    wait_until(TIMEOUT, "the first run to stream from slot x", || {
        c.psql("SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'x'") == "t"
    });
    let out = tool(&c, &["-S", "x", "-P", "pub", "-D", d, "-n"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already writing into"), "{out:?}");
    stop(&mut first, &log);
}

/// A transaction of some 60 MB of output, streamed under a 64kB --memory-limit (and once with
/// streaming off): the tool's peak memory stays far below its size.
fn memory_stays_flat(version: PgVersion, streaming: &str) {
    let c = logical_cluster(version);
    let t = TestDir::new("lmem");
    c.psql("CREATE TABLE m (id int PRIMARY KEY, payload text); CREATE PUBLICATION pub FOR TABLE m");
    let dir = t.join("out");
    let log = t.join("tool.log");
    let args = [
        "-S",
        "mem",
        "--create-slot-if-missing",
        "-P",
        "pub",
        "-D",
        dir.to_str().unwrap(),
        "--memory-limit",
        "64kB",
        "--streaming",
        streaming,
        "-v",
    ];
    let mut child = spawn(&mut tool(&c, &args), &log);
    wait_until(TIMEOUT, "the slot", || slot_confirmed(&c, "mem").is_some());
    c.psql("INSERT INTO m SELECT g, repeat('m', 150) || g FROM generate_series(1, 300000) g");
    wait_caught_up(&c, "mem", &mut child, &log);
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    stop(&mut child, &log);
    let bytes: u64 = output_files(&dir).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(bytes > 50 << 20, "output of {bytes} bytes");
    eprintln!(
        "{version} streaming {streaming}: peak RSS {} MB for {} MB of output",
        hwm_kb >> 10,
        bytes >> 20
    );
    assert!(hwm_kb < 48 << 10, "peak RSS {hwm_kb} kB for a {bytes}-byte transaction");
    let replay = Replay::read_dir(&dir);
    assert_eq!(replay.changes, 300_000);
    // Streamed, the transaction went over --memory-limit: it was written from its spill file.
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(logged.contains("of streamed transaction"), streaming == "on", "{logged}");
}

#[test]
fn memory_stays_flat_18() {
    memory_stays_flat(PgVersion::V18, "on");
}

#[test]
fn memory_stays_flat_15_streaming_off() {
    memory_stays_flat(PgVersion::V15, "off");
}

// ---------------------------------------------------------------------------
// Benchmark (not part of the normal run)
// ---------------------------------------------------------------------------

/// Changes per second and MB/s decoded and durably written, against pg_recvlogical with
/// test_decoding writing to a file, on the same WAL: both slots are created before the
/// workload, then each tool drains its slot to the same end position.
///
/// `cargo test --release --test tests logical::bench -- --ignored --nocapture`
/// (PGRL_BENCH_ROWS sets the size, default 300000 inserts plus as many updates).
fn bench(version: PgVersion) {
    let rows: u64 = std::env::var("PGRL_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let c = Cluster::builder(version).conf("wal_level = logical\nautovacuum = off").start();
    let t = TestDir::new("lbench");
    c.psql(
        "CREATE TABLE b (id bigint PRIMARY KEY, name text, amount numeric, at timestamptz, flag bool); \
         CREATE PUBLICATION pub FOR TABLE b",
    );
    c.psql("SELECT pg_create_logical_replication_slot('ours', 'pgoutput')");
    c.psql("SELECT pg_create_logical_replication_slot('theirs', 'test_decoding')");
    let batch = 10_000;
    for start in (0..rows).step_by(batch as usize) {
        c.psql(&format!(
            "INSERT INTO b SELECT g, 'name ' || g, g * 1.25, now(), g % 2 = 0 FROM generate_series({}, {}) g",
            start + 1,
            (start + batch).min(rows)
        ));
    }
    c.psql(&format!("UPDATE b SET amount = amount + 1 WHERE id <= {rows}"));
    let changes = rows * 2;
    let endpos = c.current_lsn();

    let dir = t.join("ours");
    let started = Instant::now();
    let out = tool(&c, &["-S", "ours", "-P", "pub", "-D", dir.to_str().unwrap(), "-n", "-E", &endpos])
        .output()
        .unwrap();
    let ours_time = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours_bytes: u64 = output_files(&dir).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(Replay::read_dir(&dir).changes as u64, changes);

    let file = t.join("theirs.txt");
    let started = Instant::now();
    let out = pg_tool(version, "pg_recvlogical")
        .args(c.conn_args())
        .args(["-d", "postgres", "-S", "theirs", "--start", "-n", "-E", &endpos, "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let theirs_time = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs_bytes = fs::metadata(&file).unwrap().len();

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    eprintln!("{version}: {changes} changes ({rows} inserts, {rows} updates) of 5 columns");
    for (name, time, bytes) in [
        ("pgrecvlogical (pgoutput, JSON, fsync'ed)", ours_time, ours_bytes),
        ("pg_recvlogical (test_decoding, text)", theirs_time, theirs_bytes),
    ] {
        eprintln!(
            "  {name:<42} {:>7.2} s {:>10.0} changes/s {:>7.1} MB/s ({:.1} MB)",
            time.as_secs_f64(),
            rate(changes, time),
            rate(bytes, time) / 1e6,
            bytes as f64 / 1e6
        );
    }
}

/// CPU seconds (user + system) of the process `pid`'s waited-for children so far, from
/// `/proc/PID/stat` (cutime + cstime, in USER_HZ ticks: 100 per second on Linux). Taken
/// before and after one tool's run: for this process, the tool's CPU; for the postmaster,
/// the walsender's (the postmaster reaps it when the tool disconnects).
fn children_cpu(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may hold spaces, in parentheses: cutime and cstime
    // are fields 16 and 17 of stat(5), the 14th and 15th after ")".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    (f[13] + f[14]) as f64 / 100.0
}

/// The pids of the process's children (not yet reaped), sorted.
fn postmaster_children(pid: &str) -> Vec<u32> {
    let list = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let mut pids: Vec<u32> = list.split_whitespace().map(|p| p.parse().unwrap()).collect();
    pids.sort_unstable();
    pids
}

/// Waits until the postmaster has reaped every backend and walsender (the children whose
/// process title names a client's address, and exited ones not yet reaped, whose title is
/// gone), so that their CPU is counted, and is counted once.
fn wait_reaped(postmaster: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let clients: Vec<String> = postmaster_children(postmaster)
            .iter()
            .map(|p| fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
            .filter(|title| title.is_empty() || title.contains("127.0.0.1") || title.contains("[local]"))
            .collect();
        if clients.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "backends still running after {TIMEOUT:?}: {clients:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// One large transaction: `PGRL_BENCH_ROWS` (default 1 000 000) rows inserted by one INSERT,
/// drained by pgrecvlogical with `--streaming on` (the default: the server streams the
/// transaction before its commit and we hold it until then, spilling past `--memory-limit`),
/// with `--streaming off` (the server holds it and sends it at its commit) and by
/// pg_recvlogical with test_decoding, and with wal2json (`format-version=2`, one JSON object per
/// change, as ours) when the server has it, each from a slot of its own created before the
/// workload, to the same end position. `PGRL_BENCH_RUNS` (default 3) rounds, the order
/// rotating each round; medians, with min-max, of the wall time, and of the CPU seconds of the
/// client tool and of the walsender that decoded for it.
fn bench_large_txn(version: PgVersion) {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let rows = env("PGRL_BENCH_ROWS", 1_000_000);
    let runs = env("PGRL_BENCH_RUNS", 3) as usize;
    // Up to four slots per round, all created before the workload.
    let slots = format!("wal_level = logical\nautovacuum = off\nmax_replication_slots = {}", 4 * runs + 4);
    let c = Cluster::builder(version).conf(&slots).start();
    let t = TestDir::new("lbenchtx");
    c.psql(
        "CREATE TABLE b (id bigint PRIMARY KEY, name text, amount numeric, at timestamptz, flag bool); \
         CREATE PUBLICATION pub FOR TABLE b",
    );
    // wal2json is an extension package (postgresql-15-wal2json); without it, test_decoding only.
    let probe = c.try_psql(
        "SELECT pg_create_logical_replication_slot('probe', 'wal2json'); SELECT pg_drop_replication_slot('probe')",
    );
    if let Err(e) = &probe {
        eprintln!("{version}: no wal2json slot ({}); measuring against test_decoding only", e.trim());
    }
    let wal2json = probe.is_ok();
    let kinds: Vec<&str> =
        ["on", "off", "theirs", "w2j"].into_iter().filter(|k| *k != "w2j" || wal2json).collect();
    let plugin = |k: &str| match k {
        "theirs" => "test_decoding",
        "w2j" => "wal2json",
        _ => "pgoutput",
    };
    for r in 0..runs {
        for k in &kinds {
            c.psql(&format!("SELECT pg_create_logical_replication_slot('{k}_{r}', '{}')", plugin(k)));
        }
    }
    c.psql(&format!(
        "INSERT INTO b SELECT g, 'name ' || g, g * 1.25, now(), g % 2 = 0 FROM generate_series(1, {rows}) g"
    ));
    let endpos = c.current_lsn();
    let mut times: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut client_cpu: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut server_cpu: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut bytes: HashMap<&str, u64> = HashMap::new();
    let postmaster = c.pid().unwrap().to_string();
    for r in 0..runs {
        for i in 0..kinds.len() {
            let k = kinds[(i + r) % kinds.len()];
            let slot = format!("{k}_{r}");
            let dir = t.join(&slot);
            wait_reaped(&postmaster);
            let (client0, server0) = (children_cpu("self"), children_cpu(&postmaster));
            let started = Instant::now();
            let theirs = k == "theirs" || k == "w2j";
            let out = if theirs {
                // wal2json's version 2 format: one object per change, with the xid, commit
                // time and LSN that each of our lines carries.
                let options: &[&str] = if k == "w2j" {
                    &[
                        "-o",
                        "format-version=2",
                        "-o",
                        "include-xids=1",
                        "-o",
                        "include-timestamp=1",
                        "-o",
                        "include-lsn=1",
                    ]
                } else {
                    &[]
                };
                pg_tool(version, "pg_recvlogical")
                    .args(c.conn_args())
                    .args(["-d", "postgres", "-S", &slot, "--start", "-n", "-E", &endpos])
                    .args(options)
                    .arg("-f")
                    .arg(&dir)
                    .output()
                    .unwrap()
            } else {
                let d = dir.to_str().unwrap();
                tool(&c, &["-S", &slot, "-P", "pub", "-D", d, "-n", "-E", &endpos, "--streaming", k])
                    .output()
                    .unwrap()
            };
            let time = started.elapsed().as_secs_f64();
            let client = children_cpu("self") - client0;
            // The walsender exits when the tool disconnects; its CPU is counted once the
            // postmaster has reaped it.
            wait_reaped(&postmaster);
            let server = children_cpu(&postmaster) - server0;
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let size = if theirs {
                fs::metadata(&dir).unwrap().len()
            } else {
                assert_eq!(Replay::read_dir(&dir).changes as u64, rows);
                let size = output_files(&dir).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
                fs::remove_dir_all(&dir).unwrap();
                size
            };
            if theirs {
                fs::remove_file(&dir).unwrap();
            }
            eprintln!(
                "  round {} {k:<6} {time:>7.2} s, CPU {client:.2} s client, {server:.2} s walsender",
                r + 1
            );
            times.entry(k).or_default().push(time);
            client_cpu.entry(k).or_default().push(client);
            server_cpu.entry(k).or_default().push(server);
            bytes.insert(k, size);
        }
    }
    eprintln!("{version}: one transaction of {rows} inserts of 5 columns, {runs} rounds, medians (min-max)");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let rate_of =
        |times: &mut HashMap<&str, Vec<f64>>, k: &str| times.get_mut(k).map(|v| rows as f64 / median(v).0);
    let (td_rate, w2j_rate) = (rate_of(&mut times, "theirs").unwrap(), rate_of(&mut times, "w2j"));
    for (k, name) in [
        ("theirs", "pg_recvlogical (test_decoding, text)"),
        ("w2j", "pg_recvlogical (wal2json, version 2)"),
        ("on", "pgrecvlogical --streaming on (default)"),
        ("off", "pgrecvlogical --streaming off"),
    ] {
        let Some(v) = times.get_mut(k) else { continue };
        let (med, min, max) = median(v);
        let rate = rows as f64 / med;
        let against_w2j = w2j_rate.map_or(String::new(), |w| format!(", x{:.2} wal2json", rate / w));
        eprintln!(
            "  {name:<40} {med:>7.2} s ({min:.2}-{max:.2}) {rate:>9.0} changes/s {:>7.1} MB/s  x{:.2} test_decoding{against_w2j}",
            bytes[k] as f64 / med / 1e6,
            rate / td_rate
        );
        let (cmed, cmin, cmax) = median(client_cpu.get_mut(k).unwrap());
        let (smed, smin, smax) = median(server_cpu.get_mut(k).unwrap());
        eprintln!(
            "  {:<40} CPU s: client {cmed:.2} ({cmin:.2}-{cmax:.2}), walsender {smed:.2} ({smin:.2}-{smax:.2})",
            ""
        );
    }
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored"]
fn bench_large_txn_15() {
    bench_large_txn(PgVersion::V15);
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored"]
fn bench_large_txn_18() {
    bench_large_txn(PgVersion::V18);
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored"]
fn bench_15() {
    bench(PgVersion::V15);
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored"]
fn bench_18() {
    bench(PgVersion::V18);
}
