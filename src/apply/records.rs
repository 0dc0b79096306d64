//! pgrecvlogical's JSON records as the applier reads them, and their grouping into units: one
//! source transaction (`begin` ... `commit`, checked whole) or a record that stands alone (a
//! non-transactional message). Pure: lines in, units out.
//!
//! A unit is only ever handed on complete and consistent: every change carries its
//! transaction's `xid` and `commit_lsn`, numbered by `seq` from 1 without a gap, and the commit
//! says how many there were. A reader that joined two versions of a file's tail (the writer
//! cut it after a crash and wrote it again) cannot pass this as one transaction.

use std::fmt;

use crate::lsn::Lsn;

use super::json::{self, Json};

/// Where a line is: for messages that must name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRef {
    pub file: String,
    pub line: u64,
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file \"{}\" line {}", self.file, self.line)
    }
}

/// A column value: JSON's text form of it, or the unchanged-TOAST marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// The text PostgreSQL reads the value from (a JSON number's text, `true`, a string).
    Text(String),
    /// `{"unchanged_toast":true}`: the column keeps the value it has.
    UnchangedToast,
}

impl Value {
    pub fn as_param(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

pub type Row = Vec<(String, Value)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl fmt::Display for TableName {
    /// `public.accounts`, each part quoted when it is not a plain lowercase name, so a name
    /// from the source cannot make a message ambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            let plain = !s.is_empty()
                && s.bytes()
                    .enumerate()
                    .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
            if plain {
                s.to_owned()
            } else {
                let mut q = String::new();
                crate::text::push_json_string(&mut q, s);
                q
            }
        };
        write!(f, "{}.{}", part(&self.schema), part(&self.table))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
}

impl RowOp {
    pub fn word(self) -> &'static str {
        match self {
            RowOp::Insert => "insert",
            RowOp::Update => "update",
            RowOp::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    pub op: RowOp,
    pub lsn: Lsn,
    pub table: TableName,
    pub key: Row,
    pub new: Option<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Row(RowChange),
    Truncate {
        lsn: Lsn,
        tables: Vec<TableName>,
        cascade: bool,
        restart_identity: bool,
    },
    /// A `--ddl` record: `query` is the client's whole query string (see docs/pgrecvlogical.md).
    Ddl {
        lsn: Lsn,
        tag: String,
        query: String,
        objects: Vec<DdlObject>,
        /// Why the trigger marked it for applying by hand (`"manual"`): its `query` is not the
        /// DDL itself (see `logical::ddl`).
        manual: Option<String>,
        /// The schemas the source session's `search_path` held when it ran the statement, as
        /// our trigger recorded them (absent in records of older triggers).
        search_path: Option<Vec<String>>,
    },
    /// A record the target has nothing to do for (a transactional message that is not ours,
    /// a forged DDL message that is not an object): counted, not applied.
    Nothing {
        lsn: Lsn,
        why: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlObject {
    pub schema: Option<String>,
    pub identity: Option<String>,
}

impl Change {
    pub fn lsn(&self) -> Lsn {
        match self {
            Change::Row(r) => r.lsn,
            Change::Truncate { lsn, .. } | Change::Ddl { lsn, .. } | Change::Nothing { lsn, .. } => *lsn,
        }
    }
}

/// One line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Begin {
        xid: u64,
        commit_lsn: Lsn,
    },
    Change {
        xid: u64,
        commit_lsn: Lsn,
        seq: u64,
        change: Change,
    },
    Commit {
        end_lsn: Lsn,
        xid: u64,
        commit_lsn: Lsn,
        changes: u64,
        /// The source's commit time, in microseconds since the Unix epoch (for the metrics
        /// only: a time we cannot read is no error).
        time: Option<i64>,
    },
    /// A non-transactional message: a unit of its own with nothing to apply.
    Standalone {
        end_lsn: Lsn,
    },
    /// `origin`: where a replayed transaction came from; nothing to apply.
    Origin,
}

/// Why a line is refused, and what to do about it when we know (PostgreSQL's `errhint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub String, pub Option<String>);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RecordError {
    fn hint(self, hint: &str) -> RecordError {
        RecordError(self.0, Some(hint.to_owned()))
    }
}

fn bad(msg: impl Into<String>) -> RecordError {
    RecordError(msg.into(), None)
}

fn field<'a>(v: &'a Json, k: &str) -> Result<&'a Json, RecordError> {
    v.get(k).ok_or_else(|| bad(format!("the record has no \"{k}\"")))
}

fn str_field<'a>(v: &'a Json, k: &str) -> Result<&'a str, RecordError> {
    field(v, k)?.as_str().ok_or_else(|| bad(format!("\"{k}\" is not a string")))
}

fn lsn_field(v: &Json, k: &str) -> Result<Lsn, RecordError> {
    let s = str_field(v, k)?;
    s.parse().map_err(|_| bad(format!("\"{k}\" is not a WAL position")))
}

fn uint_field(v: &Json, k: &str) -> Result<u64, RecordError> {
    match field(v, k)? {
        Json::Number(n) => n.parse().map_err(|_| bad(format!("\"{k}\" is not an unsigned integer"))),
        _ => Err(bad(format!("\"{k}\" is not a number"))),
    }
}

fn bool_field(v: &Json, k: &str) -> Result<bool, RecordError> {
    match field(v, k)? {
        Json::Bool(b) => Ok(*b),
        _ => Err(bad(format!("\"{k}\" is not true or false"))),
    }
}

fn value(v: &Json, column: &str) -> Result<Value, RecordError> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Text(if *b { "true" } else { "false" }.into()),
        Json::Number(n) => Value::Text(n.clone()),
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(f) if f.len() == 1 && f[0].0 == "unchanged_toast" && f[0].1 == Json::Bool(true) => {
            Value::UnchangedToast
        }
        Json::Object(f) if f.len() == 1 && f[0].0 == "binary" => {
            return Err(bad(format!(
                "column \"{column}\" holds a binary value pgrecvlogical could not decode"
            ))
            .hint("Run pgrecvlogical without --binary."))
        }
        _ => return Err(bad(format!("column \"{column}\" holds an unexpected JSON value"))),
    })
}

fn row(v: &Json, k: &str) -> Result<Row, RecordError> {
    let fields = field(v, k)?.as_object().ok_or_else(|| bad(format!("\"{k}\" is not an object")))?;
    fields.iter().map(|(c, v)| Ok((c.clone(), value(v, c)?))).collect()
}

fn table(v: &Json) -> Result<TableName, RecordError> {
    Ok(TableName { schema: str_field(v, "schema")?.to_owned(), table: str_field(v, "table")?.to_owned() })
}

/// `2026-11-22T00:06:36.049829Z`, as pgrecvlogical writes a commit's `ts`, in microseconds
/// since the Unix epoch; `None` for anything else.
pub fn commit_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shape = b.len() == 27
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, us) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000 + us)
}

/// Reads one line (without its newline).
pub fn parse_line(line: &str) -> Result<Record, RecordError> {
    let v = json::parse(line).map_err(|e| bad(format!("not a JSON record: {e}")))?;
    let op = str_field(&v, "op")?;
    let txn = |v: &Json| -> Result<(u64, Lsn, u64, Lsn), RecordError> {
        Ok((uint_field(v, "xid")?, lsn_field(v, "commit_lsn")?, uint_field(v, "seq")?, lsn_field(v, "lsn")?))
    };
    Ok(match op {
        "begin" => Record::Begin { xid: uint_field(&v, "xid")?, commit_lsn: lsn_field(&v, "commit_lsn")? },
        "commit" => Record::Commit {
            end_lsn: lsn_field(&v, "end_lsn")?,
            xid: uint_field(&v, "xid")?,
            commit_lsn: lsn_field(&v, "commit_lsn")?,
            changes: uint_field(&v, "changes")?,
            time: v.get("ts").and_then(|t| match t {
                Json::String(s) => commit_time(s),
                _ => None,
            }),
        },
        "insert" | "update" | "delete" => {
            let (xid, commit_lsn, seq, lsn) = txn(&v)?;
            let op = match op {
                "insert" => RowOp::Insert,
                "update" => RowOp::Update,
                _ => RowOp::Delete,
            };
            let new = if op == RowOp::Delete { None } else { Some(row(&v, "new")?) };
            let change = RowChange { op, lsn, table: table(&v)?, key: row(&v, "key")?, new };
            Record::Change { xid, commit_lsn, seq, change: Change::Row(change) }
        }
        "truncate" => {
            let (xid, commit_lsn, seq, lsn) = txn(&v)?;
            let tables = match field(&v, "tables")? {
                Json::Array(items) => items.iter().map(table).collect::<Result<Vec<_>, _>>()?,
                _ => return Err(bad("\"tables\" is not an array")),
            };
            let change = Change::Truncate {
                lsn,
                tables,
                cascade: bool_field(&v, "cascade")?,
                restart_identity: bool_field(&v, "restart_identity")?,
            };
            Record::Change { xid, commit_lsn, seq, change }
        }
        "ddl" | "message" => {
            if !bool_field(&v, "transactional")? {
                return Ok(Record::Standalone { end_lsn: lsn_field(&v, "end_lsn")? });
            }
            let (xid, commit_lsn, seq, lsn) = txn(&v)?;
            let change = match (op, v.get("ddl")) {
                ("ddl", Some(d)) => ddl(lsn, d)?,
                ("ddl", None) => {
                    Change::Nothing { lsn, why: "a message with the DDL prefix that is not a DDL record" }
                }
                _ => Change::Nothing { lsn, why: "a logical message" },
            };
            Record::Change { xid, commit_lsn, seq, change }
        }
        "origin" => Record::Origin,
        "begin_prepare" | "prepare" | "commit_prepared" | "rollback_prepared" => return Err(bad(
            "two-phase records are not supported",
        )
        .hint(
            "Run pgrecvlogical without --two-phase: prepared transactions then come out at COMMIT PREPARED.",
        )),
        "rollback_incomplete" => {
            return Err(bad(
                "\"rollback_incomplete\" is only written to standard output, never into a directory",
            ))
        }
        _ => return Err(bad("unknown \"op\"")),
    })
}

fn ddl(lsn: Lsn, d: &Json) -> Result<Change, RecordError> {
    let objects = match d.get("objects") {
        Some(Json::Array(items)) => items
            .iter()
            .map(|o| DdlObject {
                schema: o.get("schema").and_then(Json::as_str).map(str::to_owned),
                identity: o.get("identity").and_then(Json::as_str).map(str::to_owned),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Change::Ddl {
        lsn,
        tag: str_field(d, "tag")?.to_owned(),
        query: str_field(d, "query")?.to_owned(),
        objects,
        manual: match d.get("manual") {
            None | Some(Json::Null) => None,
            Some(m) => Some(m.as_str().ok_or_else(|| bad("\"manual\" is not a string"))?.to_owned()),
        },
        search_path: match d.get("search_path") {
            None | Some(Json::Null) => None,
            Some(Json::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("\"search_path\" is not an array of names"))?,
            ),
            Some(_) => return Err(bad("\"search_path\" is not an array of names")),
        },
    })
}

/// A unit of the stream, complete and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub end_lsn: Lsn,
    /// The source transaction (xid 0 and the consistent point for the initial snapshot);
    /// `None` for a standalone record.
    pub txn: Option<(u64, Lsn)>,
    pub changes: Vec<Change>,
    /// Where the unit begins, for messages.
    pub at: LineRef,
    /// The source's commit time (µs since the Unix epoch), when the commit line says it.
    pub commit_time: Option<i64>,
}

/// Groups records into units.
#[derive(Debug, Default)]
pub struct Assembler {
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    xid: u64,
    commit_lsn: Lsn,
    seq: u64,
    changes: Vec<Change>,
    at: LineRef,
}

impl Assembler {
    /// Drops a transaction in progress (the reader goes back to where it began).
    pub fn reset(&mut self) {
        self.open = None;
    }

    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one record; returns the unit it completes, if any.
    pub fn push(&mut self, rec: Record, at: LineRef) -> Result<Option<Unit>, RecordError> {
        match (rec, &mut self.open) {
            (Record::Begin { xid, commit_lsn }, None) => {
                self.open = Some(Open { xid, commit_lsn, seq: 0, changes: Vec::new(), at });
                Ok(None)
            }
            (Record::Begin { .. }, Some(_)) => Err(bad("a transaction begins inside another one")),
            (Record::Change { xid, commit_lsn, seq, change }, Some(o)) => {
                if (xid, commit_lsn) != (o.xid, o.commit_lsn) {
                    return Err(bad(format!(
                        "a change of transaction {xid} (commit {commit_lsn}) inside transaction {} (commit {})",
                        o.xid, o.commit_lsn
                    )));
                }
                if seq != o.seq + 1 {
                    return Err(bad(format!(
                        "change number {seq} follows number {} in its transaction",
                        o.seq
                    )));
                }
                o.seq = seq;
                o.changes.push(change);
                Ok(None)
            }
            (Record::Origin, Some(_)) => Ok(None),
            (Record::Commit { end_lsn, xid, commit_lsn, changes, time }, Some(o)) => {
                if (xid, commit_lsn) != (o.xid, o.commit_lsn) || changes != o.seq {
                    return Err(bad(format!(
                        "the commit of transaction {xid} (commit {commit_lsn}, {changes} changes) ends transaction {} (commit {}, {} changes)",
                        o.xid, o.commit_lsn, o.seq
                    )));
                }
                let o = self.open.take().expect("matched Some");
                Ok(Some(Unit {
                    end_lsn,
                    txn: Some((o.xid, o.commit_lsn)),
                    changes: o.changes,
                    at: o.at,
                    commit_time: time,
                }))
            }
            (Record::Standalone { end_lsn }, None) => {
                Ok(Some(Unit { end_lsn, txn: None, changes: Vec::new(), at, commit_time: None }))
            }
            (Record::Standalone { .. }, Some(_)) => {
                Err(bad("a non-transactional record inside a transaction"))
            }
            (Record::Change { .. } | Record::Commit { .. } | Record::Origin, None) => {
                Err(bad("a transaction's record outside any transaction"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u64) -> LineRef {
        LineRef { file: "f".into(), line }
    }

    const TXN: &[&str] = &[
        r#"{"op":"begin","xid":740,"commit_lsn":"0/15F8510","ts":"2026-11-22T00:06:36.049829Z"}"#,
        r#"{"op":"insert","xid":740,"commit_lsn":"0/15F8510","ts":"x","seq":1,"lsn":"0/15F8380","schema":"public","table":"accounts","key":{"id":1},"new":{"id":1,"name":"a","balance":1.50,"active":false}}"#,
        r#"{"op":"update","xid":740,"commit_lsn":"0/15F8510","ts":"x","seq":2,"lsn":"0/15F8390","schema":"public","table":"docs","key":{"id":1},"new":{"id":1,"body":{"unchanged_toast":true},"n":null}}"#,
        r#"{"op":"delete","xid":740,"commit_lsn":"0/15F8510","ts":"x","seq":3,"lsn":"0/15F83A0","schema":"public","table":"kv","key":{"id":7},"old":{"id":7}}"#,
        r#"{"op":"truncate","xid":740,"commit_lsn":"0/15F8510","ts":"x","seq":4,"lsn":"0/15F83B0","tables":[{"schema":"public","table":"kv"}],"cascade":false,"restart_identity":true}"#,
        r#"{"op":"ddl","xid":740,"commit_lsn":"0/15F8510","ts":"x","seq":5,"lsn":"0/15F83C0","transactional":true,"prefix":"pgrecvlogical.ddl","ddl":{"tag":"ALTER TABLE","query":"alter table kv add c int","objects":[{"type":"table","identity":"public.kv","schema":"public","command_tag":"ALTER TABLE"}]}}"#,
        r#"{"op":"message","xid":740,"commit_lsn":"0/15F8510","ts":"x","seq":6,"lsn":"0/15F83D0","transactional":true,"prefix":"app","content":"hi"}"#,
        r#"{"op":"commit","end_lsn":"0/15F8540","xid":740,"commit_lsn":"0/15F8510","ts":"x","changes":6}"#,
    ];

    fn assemble(lines: &[&str]) -> Result<Vec<Unit>, RecordError> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if let Some(u) = a.push(parse_line(l)?, at(i as u64 + 1))? {
                out.push(u);
            }
        }
        Ok(out)
    }

    #[test]
    fn a_transaction_is_one_unit() {
        let units = assemble(TXN).unwrap();
        assert_eq!(units.len(), 1);
        let u = &units[0];
        assert_eq!(u.end_lsn, "0/15F8540".parse().unwrap());
        assert_eq!(u.txn, Some((740, "0/15F8510".parse().unwrap())));
        assert_eq!(u.changes.len(), 6);
        let Change::Row(ins) = &u.changes[0] else { panic!() };
        assert_eq!(ins.new.as_ref().unwrap()[2], ("balance".into(), Value::Text("1.50".into())));
        assert_eq!(ins.new.as_ref().unwrap()[3], ("active".into(), Value::Text("false".into())));
        let Change::Row(upd) = &u.changes[1] else { panic!() };
        assert_eq!(upd.new.as_ref().unwrap()[1].1, Value::UnchangedToast);
        assert_eq!(upd.new.as_ref().unwrap()[2].1, Value::Null);
        assert!(matches!(&u.changes[3], Change::Truncate { restart_identity: true, cascade: false, .. }));
        let Change::Ddl { tag, query, objects, manual, .. } = &u.changes[4] else { panic!() };
        assert_eq!((tag.as_str(), query.as_str()), ("ALTER TABLE", "alter table kv add c int"));
        assert_eq!(objects[0].schema.as_deref(), Some("public"));
        assert_eq!(*manual, None);
        assert!(matches!(u.changes[5], Change::Nothing { .. }));
        assert_eq!(u.at, at(1));
    }

    #[test]
    fn inconsistent_transactions_are_refused() {
        // A gap in seq (two versions of a file's tail joined), another transaction's change,
        // a wrong count, a commit without begin, a begin inside a transaction.
        let mut gap = TXN.to_vec();
        gap.remove(2);
        assert!(assemble(&gap).unwrap_err().0.contains("change number 3 follows number 1"));
        let mut other = TXN.to_vec();
        let swapped = TXN[1].replace("\"xid\":740", "\"xid\":741");
        other[1] = &swapped;
        assert!(assemble(&other).unwrap_err().0.contains("a change of transaction 741"));
        let mut count = TXN.to_vec();
        count.remove(6);
        assert!(assemble(&count).is_err());
        assert!(assemble(&TXN[7..]).is_err());
        assert!(assemble(&[TXN[0], TXN[0]]).is_err());
    }

    #[test]
    fn commit_times() {
        assert_eq!(commit_time("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(commit_time("2000-01-01T00:00:00.000000Z"), Some(946_684_800_000_000));
        assert_eq!(commit_time("2024-02-29T23:59:59.500000Z"), Some(1_709_251_199_500_000));
        // What pgrecvlogical writes reads back (its writer's own formatting).
        for t in [0i64, 1, 86_399_999_999, 817_344_000_123_456, -1] {
            let s = crate::logical::output::format_pg_time(t);
            assert_eq!(commit_time(&s), Some(946_684_800_000_000 + t), "{s}");
        }
        for bad in
            ["", "x", "2026-11-22 00:06:36.049829Z", "2026-13-22T00:06:36.049829Z", "2026-11-22T00:06:36Z"]
        {
            assert_eq!(commit_time(bad), None, "{bad}");
        }
        let u = assemble(TXN).unwrap();
        assert_eq!(u[0].commit_time, None, "\"x\" is no time");
        let commit = TXN[TXN.len() - 1].replace("\"ts\":\"x\"", "\"ts\":\"2000-01-01T00:00:01.000000Z\"");
        let mut lines = TXN[..TXN.len() - 1].to_vec();
        lines.push(&commit);
        assert_eq!(assemble(&lines).unwrap()[0].commit_time, Some(946_684_801_000_000));
    }

    #[test]
    fn standalone_and_refused_records() {
        let m = r#"{"op":"message","end_lsn":"0/20","lsn":"0/1F","transactional":false,"prefix":"p","content":"c"}"#;
        let u = assemble(&[m]).unwrap();
        assert_eq!((u[0].end_lsn, u[0].txn.is_none()), ("0/20".parse().unwrap(), true));
        let e = parse_line(r#"{"op":"begin_prepare","xid":1}"#).unwrap_err();
        assert_eq!(e.0, "two-phase records are not supported");
        assert!(e.1.unwrap().starts_with("Run pgrecvlogical without --two-phase: "));
        assert!(parse_line(r#"{"op":"rollback_incomplete"}"#).is_err());
        assert!(parse_line(r#"{"op":"bogus"}"#).is_err());
        let bin = TXN[1].replace("\"a\"", "{\"binary\":\"00\"}");
        let e = parse_line(&bin).unwrap_err();
        assert!(e.0.ends_with("holds a binary value pgrecvlogical could not decode"), "{e}");
        assert_eq!(e.1.as_deref(), Some("Run pgrecvlogical without --binary."));
        assert!(parse_line(&TXN[1].replace("\"lsn\":\"0/15F8380\"", "\"lsn\":\"zz\"")).is_err());
        assert!(parse_line(&TXN[1][..40]).is_err());
    }

    #[test]
    fn ddl_records_marked_manual() {
        let marked = TXN[5].replace(r#""objects":["#, r#""manual":"it ran in a function","objects":["#);
        let Record::Change { change: Change::Ddl { manual, .. }, .. } = parse_line(&marked).unwrap() else {
            panic!()
        };
        assert_eq!(manual.as_deref(), Some("it ran in a function"));
        let bad = TXN[5].replace(r#""objects":["#, r#""manual":true,"objects":["#);
        assert!(parse_line(&bad).unwrap_err().0.contains("\"manual\" is not a string"));
        let path = TXN[5].replace(r#""objects":["#, r#""search_path":["app","pub\"lic"],"objects":["#);
        let Record::Change { change: Change::Ddl { search_path, .. }, .. } = parse_line(&path).unwrap()
        else {
            panic!()
        };
        assert_eq!(search_path, Some(vec!["app".to_owned(), "pub\"lic".to_owned()]));
        for bad in [r#""search_path":"app","#, r#""search_path":[1],"#] {
            let line = TXN[5].replace(r#""objects":["#, &format!("{bad}\"objects\":["));
            assert!(parse_line(&line).unwrap_err().0.contains("\"search_path\" is not an array"), "{bad}");
        }
    }

    #[test]
    fn table_names_in_messages_are_unambiguous() {
        let t = TableName { schema: "public".into(), table: "t1".into() };
        assert_eq!(t.to_string(), "public.t1");
        let t = TableName { schema: "a.b".into(), table: "My \"T\"\n".into() };
        assert_eq!(t.to_string(), "\"a.b\".\"My \\\"T\\\"\\n\"");
    }
}
