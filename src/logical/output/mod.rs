//! Decoded changes as lines: one JSON object (or one test_decoding-like text line) per change,
//! plus begin/commit (and two-phase) records. Pure: an [`Encoder`] keeps the relation schema the
//! stream described and the transaction being written, and appends lines to a buffer.
//!
//! Values are typed by the column's type OID: integers, floats and numerics as JSON numbers
//! (when finite), bool as true/false, NULL as null, an unchanged TOAST value as the explicit
//! marker `{"unchanged_toast":true}` (never null: the column keeps its old value), anything else
//! as the type's text form. With `binary = true` the common scalar types are decoded from their
//! send format; other binary values come out as `{"binary":"<hex>"}`.
//!
//! Lines that end a unit of output (commit, prepare, commit/rollback prepared, a
//! non-transactional message) carry `end_lsn` as their second field, where [`unit_end`] finds
//! it again: that is how the output directory knows where to resume after a crash.
//!
//! Everything that comes from the database (names, values, message prefixes and contents,
//! GIDs, origin names, DDL descriptions) is untrusted and escaped wherever it lands, so no
//! database role can end a line early or forge a field or a record: in JSON every control
//! character, DEL, the C1 controls and U+2028/U+2029 are `\uXXXX` escapes; in the text format
//! names are written bare only when they are plain lowercase identifiers and double-quoted
//! otherwise, other text is single-quoted, and inside quotes the quote is doubled and `\`, tab,
//! CR, LF and the same characters are backslash escapes ([`push_text_escaped`]). DDL content is
//! embedded as an object only when it is exactly one JSON object, and then re-written compactly
//! by us ([`json_object`]); anything else is an escaped string.
//!
//! Each part in a file of its own: `types` (values by type OID), `escape` (untrusted text),
//! `schema` (what the stream described) and `encode` (the lines and how recovery reads them).

mod encode;
mod escape;
mod schema;
mod types;

use std::fmt;

use crate::lsn::Lsn;

pub use encode::{line_is_ours, unit_end, Encoder, DEFERRED};
pub use escape::{
    json_object, json_object_keys, push_json_text, push_text_escaped, push_text_ident, push_text_literal,
};
pub use schema::{ColInfo, RelInfo, Schema};
pub use types::{builtin_type_name, format_pg_time, is_json_number, oid, push_json_value};

/// Prefix of the logical messages the `--ddl` event trigger emits.
pub const DDL_PREFIX: &str = "pgrecvlogical.ddl";

/// Output format of the change lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputError {
    /// A row change outside a transaction.
    NoTransaction { kind: u8 },
    /// A row change for a relation no Relation message described.
    UnknownRelation(u32),
    /// A tuple with a different number of columns than its relation.
    ColumnCount { relation: u32, expected: usize, got: usize },
    /// A Begin while a transaction is open.
    NestedTransaction { xid: u32 },
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputError::NoTransaction { kind } => {
                write!(f, "pgoutput sent a '{}' message outside of a transaction", char::from(*kind))
            }
            OutputError::UnknownRelation(oid) => {
                write!(f, "pgoutput sent a change for relation {oid} before describing it")
            }
            OutputError::ColumnCount { relation, expected, got } => write!(
                f,
                "pgoutput sent a row of {got} columns for relation {relation}, which has {expected}"
            ),
            OutputError::NestedTransaction { xid } => {
                write!(f, "pgoutput began transaction {xid} while another one was open")
            }
        }
    }
}

impl std::error::Error for OutputError {}

/// What a message did to the output, beyond appending lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond the lines (if any).
    None,
    /// A unit of output is complete: once it is durable, decoding may resume at this position.
    UnitEnd(Lsn),
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::escape::*;
    use super::types::*;
    use super::*;
    use crate::logical::pgoutput::*;

    /// The prefix our trigger signs with, for a token of 42.
    const SIGNED: &str = "pgrecvlogical.ddl:42";

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec()).unwrap().lines().map(str::to_owned).collect()
    }

    fn relation() -> Message<'static> {
        Message::Relation(Relation {
            xid: None,
            oid: 16384,
            namespace: "public",
            name: "t",
            replica_identity: b'd',
            columns: vec![
                RelColumn { flags: 1, name: "id", type_oid: oid::INT4, type_modifier: -1 },
                RelColumn { flags: 0, name: "amount", type_oid: oid::NUMERIC, type_modifier: -1 },
                RelColumn { flags: 0, name: "ok", type_oid: oid::BOOL, type_modifier: -1 },
                RelColumn { flags: 0, name: "note", type_oid: oid::TEXT, type_modifier: -1 },
                RelColumn { flags: 0, name: "at", type_oid: oid::TIMESTAMPTZ, type_modifier: -1 },
            ],
        })
    }

    fn begin() -> Message<'static> {
        Message::Begin(Begin { final_lsn: Lsn(0x100), commit_time: 0, xid: 7 })
    }

    /// A streamed transaction, encoded as it arrives with the commit's fields left out and
    /// spliced in at its commit (what the receiver and the writer do), is byte for byte the
    /// same transaction encoded at once, in both formats, committed or prepared, with a
    /// subtransaction's changes dropped and the numbering continued as if it never was.
    #[test]
    fn streamed_equals_ordinary() {
        let ins = |id: &'static [u8], note: &'static [u8]| {
            Message::Insert(Insert {
                xid: Some(8),
                relation: 16384,
                new: vec![
                    Column::Text(id),
                    Column::Null,
                    Column::Text(b"t"),
                    Column::Text(note),
                    Column::Null,
                ],
            })
        };
        let msg = Message::Message(LogicalMessage {
            xid: Some(7),
            transactional: true,
            lsn: Lsn(0x38),
            prefix: "app",
            content: b"x\x00\n",
        });
        let tr = Message::Truncate(Truncate { xid: Some(7), options: 1, relations: vec![16384] });
        let changes = [ins(b"1", b"a\x00b\n"), msg, tr, ins(b"2", b"\"quoted\"")];
        let gid = "g'\"\x00";
        let ends: [(Message<'_>, Message<'_>); 2] = [
            (
                Message::Begin(Begin { final_lsn: Lsn(0x100), commit_time: 123_456_789, xid: 7 }),
                Message::Commit(Commit {
                    flags: 0,
                    commit_lsn: Lsn(0x100),
                    end_lsn: Lsn(0x128),
                    commit_time: 123_456_789,
                }),
            ),
            (
                Message::BeginPrepare(BeginPrepare {
                    prepare_lsn: Lsn(0x100),
                    end_lsn: Lsn(0x128),
                    prepare_time: 5,
                    xid: 7,
                    gid,
                }),
                Message::Prepare(Prepare {
                    flags: 0,
                    prepare_lsn: Lsn(0x100),
                    end_lsn: Lsn(0x128),
                    prepare_time: 5,
                    xid: 7,
                    gid,
                }),
            ),
        ];
        for format in [Format::Json, Format::Text] {
            for (head, tail) in &ends {
                let mut e = Encoder::new(format);
                let mut ordinary = Vec::new();
                e.encode(&mut ordinary, Lsn(1), &relation()).unwrap();
                e.encode(&mut ordinary, Lsn(0x10), head).unwrap();
                for (i, c) in changes.iter().enumerate() {
                    e.encode(&mut ordinary, Lsn(0x20 + i as u64), c).unwrap();
                }
                assert_eq!(e.encode(&mut ordinary, Lsn(0x100), tail).unwrap(), Effect::UnitEnd(Lsn(0x128)));

                let mut s = Encoder::new(format);
                s.begin_streamed(7).unwrap();
                let mut records = Vec::new();
                let mut rec = Vec::new();
                s.encode(&mut rec, Lsn(1), &relation()).unwrap();
                assert!(rec.is_empty());
                for (i, c) in changes.iter().enumerate() {
                    if i == 2 {
                        // A subtransaction's change, then its abort.
                        let before = s.seq();
                        s.encode(&mut Vec::new(), Lsn(0x21), &ins(b"9", b"aborted")).unwrap();
                        s.rewind_seq(before);
                    }
                    rec.clear();
                    s.encode(&mut rec, Lsn(0x20 + i as u64), c).unwrap();
                    let split = rec.iter().position(|&b| b == DEFERRED);
                    assert_eq!(split.is_some(), format == Format::Json, "{}", String::from_utf8_lossy(&rec));
                    if let Some(at) = split {
                        rec.remove(at);
                    }
                    assert!(!rec.contains(&DEFERRED), "one mark, and no NUL from the data");
                    records.push((split, rec.clone()));
                }
                let (mut h, mut fields, mut t) = (Vec::new(), Vec::new(), Vec::new());
                let effect = s.end_streamed(head, tail, Lsn(0x100), &mut h, &mut fields, &mut t).unwrap();
                assert_eq!(effect, Effect::UnitEnd(Lsn(0x128)));
                let mut streamed = h;
                for (split, r) in records {
                    let at = split.unwrap_or(r.len());
                    streamed.extend_from_slice(&r[..at]);
                    if split.is_some() {
                        streamed.extend_from_slice(&fields);
                    }
                    streamed.extend_from_slice(&r[at..]);
                }
                streamed.extend_from_slice(&t);
                assert_eq!(String::from_utf8(streamed).unwrap(), String::from_utf8(ordinary).unwrap());
                assert!(!s.in_transaction());
            }
        }
    }

    #[test]
    fn a_transaction_in_json() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        assert_eq!(e.encode(&mut out, Lsn(1), &relation()).unwrap(), Effect::None);
        assert!(out.is_empty());
        e.encode(&mut out, Lsn(0x10), &begin()).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![
                Column::Text(b"1"),
                Column::Text(b"2.50"),
                Column::Text(b"t"),
                Column::Text(b"x"),
                Column::Null,
            ],
        });
        e.encode(&mut out, Lsn(0x20), &ins).unwrap();
        let upd = Message::Update(Update {
            xid: None,
            relation: 16384,
            old: Some((
                OldKind::Key,
                vec![Column::Text(b"1"), Column::Null, Column::Null, Column::Null, Column::Null],
            )),
            new: vec![
                Column::Text(b"2"),
                Column::Text(b"NaN"),
                Column::Text(b"f"),
                Column::Unchanged,
                Column::Null,
            ],
        });
        e.encode(&mut out, Lsn(0x30), &upd).unwrap();
        let del = Message::Delete(Delete {
            xid: None,
            relation: 16384,
            old_kind: OldKind::Key,
            old: vec![Column::Text(b"2"), Column::Null, Column::Null, Column::Null, Column::Null],
        });
        e.encode(&mut out, Lsn(0x40), &del).unwrap();
        let tr = Message::Truncate(Truncate { xid: None, options: 1, relations: vec![16384] });
        e.encode(&mut out, Lsn(0x50), &tr).unwrap();
        let commit =
            Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x100), end_lsn: Lsn(0x128), commit_time: 0 });
        assert_eq!(e.encode(&mut out, Lsn(0x100), &commit).unwrap(), Effect::UnitEnd(Lsn(0x128)));
        assert!(!e.in_transaction());
        let l = lines(&out);
        let ts = "2000-01-01T00:00:00.000000Z";
        let txn = format!("\"xid\":7,\"commit_lsn\":\"0/100\",\"ts\":\"{ts}\"");
        assert_eq!(l[0], format!("{{\"op\":\"begin\",{txn}}}"));
        assert_eq!(
            l[1],
            format!(
                "{{\"op\":\"insert\",{txn},\"seq\":1,\"lsn\":\"0/20\",\"schema\":\"public\",\"table\":\"t\",\
                 \"key\":{{\"id\":1}},\"new\":{{\"id\":1,\"amount\":2.50,\"ok\":true,\"note\":\"x\",\"at\":null}}}}"
            )
        );
        assert_eq!(
            l[2],
            format!(
                "{{\"op\":\"update\",{txn},\"seq\":2,\"lsn\":\"0/30\",\"schema\":\"public\",\"table\":\"t\",\
                 \"key\":{{\"id\":1}},\"new\":{{\"id\":2,\"amount\":\"NaN\",\"ok\":false,\
                 \"note\":{{\"unchanged_toast\":true}},\"at\":null}},\"old\":{{\"id\":1}}}}"
            )
        );
        assert_eq!(
            l[3],
            format!(
                "{{\"op\":\"delete\",{txn},\"seq\":3,\"lsn\":\"0/40\",\"schema\":\"public\",\"table\":\"t\",\
                 \"key\":{{\"id\":2}},\"old\":{{\"id\":2}}}}"
            )
        );
        assert_eq!(
            l[4],
            format!(
                "{{\"op\":\"truncate\",{txn},\"seq\":4,\"lsn\":\"0/50\",\
                 \"tables\":[{{\"schema\":\"public\",\"table\":\"t\"}}],\"cascade\":true,\"restart_identity\":false}}"
            )
        );
        assert_eq!(
            l[5],
            format!("{{\"op\":\"commit\",\"end_lsn\":\"0/128\",\"xid\":7,\"commit_lsn\":\"0/100\",\"ts\":\"{ts}\",\"changes\":4}}")
        );
        assert_eq!(unit_end(l[5].as_bytes(), Format::Json), Some(Lsn(0x128)));
        for line in &l[..5] {
            assert_eq!(unit_end(line.as_bytes(), Format::Json), None, "{line}");
        }
    }

    #[test]
    fn a_transaction_in_text() {
        let mut e = Encoder::new(Format::Text);
        let mut out = Vec::new();
        e.encode(&mut out, Lsn(1), &relation()).unwrap();
        e.encode(&mut out, Lsn(0x10), &begin()).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![
                Column::Text(b"1"),
                Column::Null,
                Column::Text(b"t"),
                Column::Text(b"it's"),
                Column::Unchanged,
            ],
        });
        e.encode(&mut out, Lsn(0x20), &ins).unwrap();
        let commit =
            Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x100), end_lsn: Lsn(0x128), commit_time: 0 });
        e.encode(&mut out, Lsn(0x100), &commit).unwrap();
        let l = lines(&out);
        assert_eq!(l[0], "BEGIN xid=7 commit_lsn=0/100 ts=2000-01-01T00:00:00.000000Z");
        assert_eq!(
            l[1],
            "table public.t: INSERT: xid=7 seq=1 lsn=0/20 id[integer]:1 amount[numeric]:null ok[boolean]:true \
             note[text]:'it''s' at[timestamp with time zone]:unchanged-toast-datum"
        );
        assert_eq!(
            l[2],
            "COMMIT end_lsn=0/128 xid=7 commit_lsn=0/100 ts=2000-01-01T00:00:00.000000Z changes=1"
        );
        assert_eq!(unit_end(l[2].as_bytes(), Format::Text), Some(Lsn(0x128)));
        assert_eq!(unit_end(l[1].as_bytes(), Format::Text), None);
    }

    #[test]
    fn two_phase_records() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        e.encode(&mut out, Lsn(1), &relation()).unwrap();
        let bp = Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: "g\"1",
        });
        e.encode(&mut out, Lsn(0x10), &bp).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 16384,
            new: vec![Column::Text(b"5"), Column::Null, Column::Null, Column::Null, Column::Null],
        });
        e.encode(&mut out, Lsn(0x20), &ins).unwrap();
        let p = Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: "g\"1",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x200), &p).unwrap(), Effect::UnitEnd(Lsn(0x228)));
        let cp = Message::CommitPrepared(CommitPrepared {
            flags: 0,
            commit_lsn: Lsn(0x300),
            end_lsn: Lsn(0x328),
            commit_time: 0,
            xid: 9,
            gid: "g\"1",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x300), &cp).unwrap(), Effect::UnitEnd(Lsn(0x328)));
        let rp = Message::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(0x228),
            rollback_end_lsn: Lsn(0x428),
            prepare_time: 0,
            rollback_time: 0,
            xid: 9,
            gid: "g",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x400), &rp).unwrap(), Effect::UnitEnd(Lsn(0x428)));
        let l = lines(&out);
        assert!(
            l[0].starts_with("{\"op\":\"begin_prepare\",\"xid\":9,\"prepare_lsn\":\"0/200\""),
            "{}",
            l[0]
        );
        assert!(l[1].contains("\"prepare_lsn\":\"0/200\",\"gid\":\"g\\\"1\""), "{}", l[1]);
        assert!(l[2].starts_with("{\"op\":\"prepare\",\"end_lsn\":\"0/228\""), "{}", l[2]);
        assert!(l[3].starts_with("{\"op\":\"commit_prepared\",\"end_lsn\":\"0/328\""), "{}", l[3]);
        assert!(l[4].starts_with("{\"op\":\"rollback_prepared\",\"end_lsn\":\"0/428\""), "{}", l[4]);
        let ends: Vec<_> = l.iter().filter_map(|x| unit_end(x.as_bytes(), Format::Json)).collect();
        assert_eq!(ends, vec![Lsn(0x228), Lsn(0x328), Lsn(0x428)]);
    }

    #[test]
    fn messages_and_ddl() {
        let mut e = Encoder::new(Format::Json).with_ddl_prefix(Some(SIGNED.into()));
        let mut out = Vec::new();
        let m = Message::Message(LogicalMessage {
            xid: None,
            transactional: false,
            lsn: Lsn(0x50),
            prefix: "app",
            content: b"\xff\x00",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x50), &m).unwrap(), Effect::UnitEnd(Lsn(0x51)));
        e.encode(&mut out, Lsn(0x60), &begin()).unwrap();
        let ddl = Message::Message(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x70),
            prefix: SIGNED,
            content: b"{\"tag\":\"CREATE TABLE\"}",
        });
        assert_eq!(e.encode(&mut out, Lsn(0x70), &ddl).unwrap(), Effect::None);
        let l = lines(&out);
        assert_eq!(
            l[0],
            "{\"op\":\"message\",\"end_lsn\":\"0/51\",\"lsn\":\"0/50\",\"transactional\":false,\"prefix\":\"app\",\"content_hex\":\"ff00\"}"
        );
        assert_eq!(unit_end(l[0].as_bytes(), Format::Json), Some(Lsn(0x51)));
        assert!(l[2].starts_with("{\"op\":\"ddl\",\"xid\":7,"), "{}", l[2]);
        assert!(l[2].ends_with("\"ddl\":{\"tag\":\"CREATE TABLE\"}}"), "{}", l[2]);
        assert_eq!(unit_end(l[2].as_bytes(), Format::Json), None);
        // A transactional message outside a transaction is a protocol error.
        let mut e = Encoder::new(Format::Text);
        assert_eq!(e.encode(&mut out, Lsn(0x70), &ddl), Err(OutputError::NoTransaction { kind: b'M' }));
    }

    /// Only a transactional message with exactly the signed prefix is a DDL record: the bare
    /// prefix, a wrong or longer token, a non-transactional message, or any message when no
    /// token is known are plain messages, and no token (or guess) is written.
    #[test]
    fn ddl_records_need_the_signed_prefix() {
        let content = br#"{"tag":"DROP TABLE","query":"DROP TABLE t"}"#;
        let encode = |format, known: Option<&str>, transactional, prefix: &'static str| {
            let mut e = Encoder::new(format).with_ddl_prefix(known.map(str::to_owned));
            let mut out = Vec::new();
            e.encode(&mut out, Lsn(0x60), &begin()).unwrap();
            let m = LogicalMessage { xid: None, transactional, lsn: Lsn(0x70), prefix, content };
            e.encode(&mut out, Lsn(0x70), &Message::Message(m)).unwrap();
            lines(&out).pop().unwrap()
        };
        let ddl = encode(Format::Json, Some(SIGNED), true, SIGNED);
        assert!(ddl.starts_with("{\"op\":\"ddl\","), "{ddl}");
        assert!(ddl.contains(r#""prefix":"pgrecvlogical.ddl","ddl":{"tag":"DROP TABLE""#), "{ddl}");
        assert!(encode(Format::Text, Some(SIGNED), true, SIGNED).starts_with("DDL xid=7"));
        for (known, transactional, prefix) in [
            (Some(SIGNED), true, DDL_PREFIX),
            (Some(SIGNED), true, "pgrecvlogical.ddl:4"),
            (Some(SIGNED), true, "pgrecvlogical.ddl:420"),
            (Some(SIGNED), true, "pgrecvlogical.ddl:42 "),
            (Some(SIGNED), true, "pgrecvlogical.ddl:"),
            (Some(SIGNED), false, SIGNED),
            (None, true, SIGNED),
            (None, true, DDL_PREFIX),
        ] {
            for format in [Format::Json, Format::Text] {
                let l = encode(format, known, transactional, prefix);
                let op = if format == Format::Json { "{\"op\":\"message\"," } else { "MESSAGE " };
                assert!(l.starts_with(op), "{known:?} {transactional} {prefix:?}: {l}");
                assert!(!l.contains("42"), "a token was written: {l}");
                assert!(!l.contains("pgrecvlogical.ddl:"), "a token was written: {l}");
            }
        }
        // Prefixes outside our namespace are other applications': written as they are.
        for prefix in ["pgrecvlogical.ddlx", "xpgrecvlogical.ddl:42"] {
            let l = encode(Format::Json, Some(SIGNED), true, prefix);
            assert!(
                l.starts_with("{\"op\":\"message\",") && l.contains(&format!("\"prefix\":\"{prefix}\"")),
                "{l}"
            );
        }
    }

    #[test]
    fn protocol_errors() {
        let mut e = Encoder::new(Format::Json);
        let mut out = Vec::new();
        let ins = Message::Insert(Insert { xid: None, relation: 1, new: vec![] });
        assert_eq!(e.encode(&mut out, Lsn(1), &ins), Err(OutputError::NoTransaction { kind: b'I' }));
        e.encode(&mut out, Lsn(1), &begin()).unwrap();
        assert_eq!(e.encode(&mut out, Lsn(1), &begin()), Err(OutputError::NestedTransaction { xid: 7 }));
        assert_eq!(e.encode(&mut out, Lsn(1), &ins), Err(OutputError::UnknownRelation(1)));
        e.encode(&mut out, Lsn(1), &relation()).unwrap();
        let short = Message::Insert(Insert { xid: None, relation: 16384, new: vec![Column::Null] });
        assert_eq!(
            e.encode(&mut out, Lsn(1), &short),
            Err(OutputError::ColumnCount { relation: 16384, expected: 5, got: 1 })
        );
        let c = Message::Commit(Commit { flags: 0, commit_lsn: Lsn(1), end_lsn: Lsn(2), commit_time: 0 });
        let mut fresh = Encoder::new(Format::Json);
        assert_eq!(fresh.encode(&mut out, Lsn(1), &c), Err(OutputError::NoTransaction { kind: b'C' }));
        for err in [OutputError::UnknownRelation(5), OutputError::NestedTransaction { xid: 1 }] {
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn user_types_are_named_in_text() {
        let mut e = Encoder::new(Format::Text);
        let mut out = Vec::new();
        let ty = Message::Type(TypeInfo { xid: None, oid: 90_000, namespace: "public", name: "mood" });
        e.encode(&mut out, Lsn(1), &ty).unwrap();
        let rel = Message::Relation(Relation {
            xid: None,
            oid: 5,
            namespace: "s",
            name: "r",
            replica_identity: b'f',
            columns: vec![
                RelColumn { flags: 1, name: "m", type_oid: 90_000, type_modifier: -1 },
                RelColumn { flags: 1, name: "x", type_oid: 91_000, type_modifier: -1 },
            ],
        });
        e.encode(&mut out, Lsn(1), &rel).unwrap();
        e.encode(&mut out, Lsn(1), &begin()).unwrap();
        let del = Message::Delete(Delete {
            xid: None,
            relation: 5,
            old_kind: OldKind::Full,
            old: vec![Column::Text(b"happy"), Column::Binary(b"\x01")],
        });
        e.encode(&mut out, Lsn(2), &del).unwrap();
        let l = lines(&out);
        assert_eq!(
            l[1],
            "table s.r: DELETE: xid=7 seq=1 lsn=0/2 old-tuple: m[public.mood]:'happy' x[91000]:\\x01"
        );
    }

    #[test]
    fn text_names_prefixes_and_gids_are_escaped() {
        let forged = "x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1";
        let mut e = Encoder::new(Format::Text);
        let mut out = Vec::new();
        let ty = Message::Type(TypeInfo { xid: None, oid: 90_000, namespace: "a b", name: forged });
        e.encode(&mut out, Lsn(1), &ty).unwrap();
        let rel = Message::Relation(Relation {
            xid: None,
            oid: 5,
            namespace: "Sch\"ema",
            name: forged,
            replica_identity: b'd',
            columns: vec![
                RelColumn { flags: 1, name: "id[integer]:1 x", type_oid: 90_000, type_modifier: -1 },
                RelColumn { flags: 0, name: "v", type_oid: oid::TEXT, type_modifier: -1 },
            ],
        });
        e.encode(&mut out, Lsn(1), &rel).unwrap();
        let m = Message::Message(LogicalMessage {
            xid: None,
            transactional: false,
            lsn: Lsn(0x50),
            prefix: forged,
            content: "c\\n\u{2028}'".as_bytes(),
        });
        assert_eq!(e.encode(&mut out, Lsn(0x50), &m).unwrap(), Effect::UnitEnd(Lsn(0x51)));
        let bp = Message::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: forged,
        });
        e.encode(&mut out, Lsn(0x60), &bp).unwrap();
        e.encode(&mut out, Lsn(0x60), &Message::Origin { lsn: Lsn(1), name: forged }).unwrap();
        let ins = Message::Insert(Insert {
            xid: None,
            relation: 5,
            new: vec![Column::Text(b"1"), Column::Text(b"a\\b\tc\x1e\x7f")],
        });
        e.encode(&mut out, Lsn(0x70), &ins).unwrap();
        let p = Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(0x200),
            end_lsn: Lsn(0x228),
            prepare_time: 0,
            xid: 9,
            gid: forged,
        });
        assert_eq!(e.encode(&mut out, Lsn(0x200), &p).unwrap(), Effect::UnitEnd(Lsn(0x228)));
        let l = lines(&out);
        assert_eq!(l.len(), 5, "{l:#?}");
        let q = r"'x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1'";
        assert_eq!(
            l[0],
            format!(r"MESSAGE end_lsn=0/51 lsn=0/50 transactional=false prefix={q} content='c\\n\u2028'''")
        );
        assert!(l[1].ends_with(&format!(" gid={q}")), "{}", l[1]);
        assert!(l[2].ends_with(&format!(" origin={q}")), "{}", l[2]);
        assert_eq!(
            l[3],
            r#"table "Sch""ema"."x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1": INSERT: xid=9 seq=1 lsn=0/70 "id[integer]:1 x"["a b"."x\nCOMMIT end_lsn=FFFFFFFF/0 xid=1"]:'1' v[text]:'a\\b\tc\u001e\u007f'"#
        );
        assert!(
            l[4].starts_with("PREPARE end_lsn=0/228 ") && l[4].ends_with(&format!(" gid={q}")),
            "{}",
            l[4]
        );
        let ends: Vec<_> = l.iter().filter_map(|x| unit_end(x.as_bytes(), Format::Text)).collect();
        assert_eq!(ends, vec![Lsn(0x51), Lsn(0x228)]);
    }

    #[test]
    fn ddl_content_is_embedded_only_as_one_object() {
        // What jsonb's text output gives: embedded, written compactly.
        assert_eq!(
            json_object(
                r#"{"tag": "CREATE TABLE", "objects": [{"a": 1.5e3, "b": null}, true], "q": "x\"\u00e9\n"}"#
            )
            .as_deref(),
            Some(r#"{"tag":"CREATE TABLE","objects":[{"a":1.5e3,"b":null},true],"q":"x\"\u00e9\n"}"#)
        );
        assert_eq!(json_object(" {} ").as_deref(), Some("{}"));
        assert_eq!(json_object("{\"a\":\"\u{2028}\"}").as_deref(), Some(r#"{"a":"\u2028"}"#));
        assert_eq!(json_object(r#"{"a":"\ud83d\ude00"}"#).as_deref(), Some(r#"{"a":"\ud83d\ude00"}"#));
        for bad in [
            r#"{}, "op":"insert", "x":{}"#,
            r#"{"a":1}{"b":2}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "{\"a\":\"\n\"}",
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":01}"#,
            r#"{"a":tru}"#,
            r#"[1]"#,
            r#""{}""#,
            "{",
            "",
        ] {
            assert_eq!(json_object(bad), None, "{bad}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(json_object(&deep), None);
        assert_eq!(json_object_keys(r#"{"op":1,"b":{"op":2}}"#), Some(vec!["op".to_owned(), "b".to_owned()]));

        // A forged "object" comes out as a string: the record keeps one "op".
        let mut e = Encoder::new(Format::Json).with_ddl_prefix(Some(SIGNED.into()));
        let mut out = Vec::new();
        e.encode(&mut out, Lsn(0x60), &begin()).unwrap();
        let ddl = Message::Message(LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x70),
            prefix: SIGNED,
            content: br#"{}, "op":"insert", "x":{}"#,
        });
        e.encode(&mut out, Lsn(0x70), &ddl).unwrap();
        let l = lines(&out);
        let keys = json_object_keys(&l[1]).unwrap();
        assert_eq!(keys.iter().filter(|k| *k == "op").count(), 1, "{}", l[1]);
        assert!(l[1].ends_with(r#","content":"{}, \"op\":\"insert\", \"x\":{}"}"#), "{}", l[1]);
    }

    #[test]
    fn recovery_knows_our_lines() {
        for l in ["{\"op\":\"begin\",\"xid\":1}", "{\"op\":\"x\"}"] {
            assert!(line_is_ours(l.as_bytes(), Format::Json), "{l}");
        }
        for l in ["", "{\"op\":\"begin\"", "\0\0{\"op\":\"commit\"}", "{\"op\":\"x\0\"}", "{\"o\":1}"] {
            assert!(!line_is_ours(l.as_bytes(), Format::Json), "{l:?}");
        }
        assert!(!line_is_ours(b"{\"op\":\"\xff\"}", Format::Json));
        for l in ["BEGIN xid=1", "table a.b: INSERT: x", "COMMIT PREPARED end_lsn=0/1", "DDL x"] {
            assert!(line_is_ours(l.as_bytes(), Format::Text), "{l}");
        }
        for l in ["", "BEGINxid", "\0COMMIT end_lsn=0/1", "COMMIT end_lsn=0/1 \0", "tablea"] {
            assert!(!line_is_ours(l.as_bytes(), Format::Text), "{l:?}");
        }
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Untrusted text, heavy on what could break a line or forge a field or record.
        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "\n",
                "\r",
                "\r\n",
                "\t",
                "\0",
                "\u{b}",
                "\u{c}",
                "\u{1c}",
                "\u{1e}",
                "\u{7f}",
                "\u{85}",
                "\u{2028}",
                "\u{2029}",
                "\"",
                "'",
                "\\",
                "\\n",
                "\\u2028",
                "{",
                "}",
                "[",
                "]",
                ":",
                ",",
                ".",
                " ",
                "=",
                "é",
                "😀",
                "a",
                "Z",
                "7",
                "''",
                "COMMIT end_lsn=FFFFFFFF/0 ",
                "\nCOMMIT end_lsn=FFFFFFFF/0\n",
                "{\"op\":\"commit\",\"end_lsn\":\"FFFFFFFF/0\"}",
                "\n{\"op\":\"commit\",\"end_lsn\":\"FFFFFFFF/0\",\"xid\":1}\n",
                "\"op\":\"insert\"",
                "{}, \"op\":\"insert\", \"x\":{}",
                "MESSAGE end_lsn=1/0 ",
            ];
            let n = self.below(8);
            let mut s = String::new();
            for _ in 0..n {
                if self.below(4) == 0 {
                    if let Some(c) = char::from_u32(self.below(0x11_0000) as u32) {
                        s.push(c);
                    }
                } else {
                    s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
                }
            }
            s
        }
        fn bytes(&mut self) -> Vec<u8> {
            if self.below(4) == 0 {
                (0..self.below(10)).map(|_| self.below(256) as u8).collect()
            } else {
                self.text().into_bytes()
            }
        }
    }

    /// Property: whatever the database puts into names, prefixes, GIDs, origins, values and
    /// message contents, every record is one line, recovery finds exactly the real unit ends,
    /// every line passes recovery's check, no line holds a character that breaks lines, and
    /// every JSON line is one object with one "op".
    #[test]
    fn untrusted_text_never_changes_what_recovery_reads() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut recovery_dir = None;
        for format in [Format::Json, Format::Text] {
            if let Some((dir, _)) = recovery_dir.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
            for round in 0..1500u64 {
                let names: Vec<String> = (0..8).map(|_| rng.text()).collect();
                let values: Vec<Vec<u8>> = (0..4).map(|_| rng.bytes()).collect();
                let (prefix, content, ddl_content, gid) = (rng.text(), rng.bytes(), rng.text(), rng.text());
                let ddl_content = match rng.below(3) {
                    0 => {
                        let mut o = "{\"tag\":\"x\",\"command\":".to_owned();
                        push_json_text(&mut o, &ddl_content);
                        o + "}"
                    }
                    1 => format!("{{{ddl_content}}}"),
                    _ => ddl_content,
                };
                let cols = [(oid::INT4, 1u8), (oid::TEXT, 0), (90_000, 0), (oid::BOOL, 0)];
                let base = (round + 1) << 16;
                let row: Vec<Column<'_>> = values.iter().map(|v| Column::Text(v)).collect();
                let msg = |transactional, prefix, content| {
                    Message::Message(LogicalMessage {
                        xid: None,
                        transactional,
                        lsn: Lsn(base + 1),
                        prefix,
                        content,
                    })
                };
                let msgs: Vec<Message<'_>> = vec![
                    Message::Type(TypeInfo { xid: None, oid: 90_000, namespace: &names[0], name: &names[1] }),
                    Message::Relation(Relation {
                        xid: None,
                        oid: 5,
                        namespace: &names[2],
                        name: &names[3],
                        replica_identity: b'd',
                        columns: cols
                            .iter()
                            .enumerate()
                            .map(|(i, &(t, flags))| RelColumn {
                                flags,
                                name: &names[4 + i],
                                type_oid: t,
                                type_modifier: -1,
                            })
                            .collect(),
                    }),
                    msg(false, &prefix, &content),
                    Message::Begin(Begin { final_lsn: Lsn(base + 0x100), commit_time: 0, xid: 7 }),
                    Message::Origin { lsn: Lsn(1), name: &names[0] },
                    Message::Insert(Insert { xid: None, relation: 5, new: row.clone() }),
                    msg(true, &prefix, &content),
                    msg(true, SIGNED, ddl_content.as_bytes()),
                    Message::Update(Update {
                        xid: None,
                        relation: 5,
                        old: Some((OldKind::Full, row.clone())),
                        new: row.clone(),
                    }),
                    Message::Delete(Delete {
                        xid: None,
                        relation: 5,
                        old_kind: OldKind::Key,
                        old: row.clone(),
                    }),
                    Message::Truncate(Truncate { xid: None, options: 0, relations: vec![5] }),
                    Message::Commit(Commit {
                        flags: 0,
                        commit_lsn: Lsn(base + 0x100),
                        end_lsn: Lsn(base + 0x128),
                        commit_time: 0,
                    }),
                    Message::BeginPrepare(BeginPrepare {
                        prepare_lsn: Lsn(base + 0x200),
                        end_lsn: Lsn(base + 0x228),
                        prepare_time: 0,
                        xid: 8,
                        gid: &gid,
                    }),
                    Message::Insert(Insert { xid: None, relation: 5, new: row.clone() }),
                    Message::Prepare(Prepare {
                        flags: 0,
                        prepare_lsn: Lsn(base + 0x200),
                        end_lsn: Lsn(base + 0x228),
                        prepare_time: 0,
                        xid: 8,
                        gid: &gid,
                    }),
                    Message::CommitPrepared(CommitPrepared {
                        flags: 0,
                        commit_lsn: Lsn(base + 0x300),
                        end_lsn: Lsn(base + 0x328),
                        commit_time: 0,
                        xid: 8,
                        gid: &gid,
                    }),
                    Message::RollbackPrepared(RollbackPrepared {
                        flags: 0,
                        prepare_end_lsn: Lsn(base + 0x228),
                        rollback_end_lsn: Lsn(base + 0x428),
                        prepare_time: 0,
                        rollback_time: 0,
                        xid: 9,
                        gid: &gid,
                    }),
                ];
                let mut e = Encoder::new(format).with_ddl_prefix(Some(SIGNED.into()));
                let mut out = Vec::new();
                let mut ends = Vec::new();
                let mut records = 0;
                for m in &msgs {
                    if !matches!(m, Message::Relation(_) | Message::Type(_)) {
                        records += 1;
                    }
                    if let Effect::UnitEnd(end) = e.encode(&mut out, Lsn(base + 0x10), m).unwrap() {
                        ends.push(end);
                    }
                }
                assert_eq!(out.last(), Some(&b'\n'));
                let text = String::from_utf8(out).unwrap();
                let lines: Vec<&str> = text.split_terminator('\n').collect();
                let ctx = || format!("{format:?} round {round}:\n{text}");
                assert_eq!(lines.len(), records, "{}", ctx());
                let found: Vec<Lsn> = lines.iter().filter_map(|l| unit_end(l.as_bytes(), format)).collect();
                assert_eq!(found, ends, "{}", ctx());
                if round % 50 == 0 {
                    // And recovery itself, on a partial file of these lines.
                    let (dir, out) = recovery_dir.get_or_insert_with(|| {
                        let d = std::env::temp_dir().join(format!("pgrl-output-prop-{}", std::process::id()));
                        let _ = std::fs::remove_dir_all(&d);
                        let out = crate::logical::files::OutputDir::open(&d).unwrap();
                        (d, out)
                    });
                    for f in std::fs::read_dir(&*dir).unwrap() {
                        let f = f.unwrap();
                        if !f.file_name().to_string_lossy().starts_with('.') {
                            std::fs::remove_file(f.path()).unwrap();
                        }
                    }
                    let name = crate::logical::files::file_name(Lsn(base), format) + ".partial";
                    std::fs::write(dir.join(name), &text).unwrap();
                    let r = out.recover(format, false, None).unwrap();
                    assert_eq!((r.resume, r.cut), (ends.last().copied(), 0), "{}", ctx());
                }
                for l in &lines {
                    assert!(line_is_ours(l.as_bytes(), format), "{l:?}\n{}", ctx());
                    assert!(!l.chars().any(must_escape), "{l:?}");
                    if format == Format::Json {
                        let keys = json_object_keys(l).unwrap_or_else(|| panic!("not one object: {l:?}"));
                        assert_eq!(keys.first().map(String::as_str), Some("op"), "{l:?}");
                        let mut sorted = keys.clone();
                        sorted.sort();
                        sorted.dedup();
                        assert_eq!(sorted.len(), keys.len(), "duplicate keys in {l:?}");
                    }
                }
            }
        }
        if let Some((dir, out)) = recovery_dir {
            drop(out);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Property: the DDL-content check never panics on any text, and what it gives back is one
    /// line, checks again to itself, and holds no character that breaks lines.
    #[test]
    fn json_object_check_is_total_and_idempotent() {
        const PIECES: &[&str] = &[
            "{", "}", "[", "]", "\"", "\\", "\\u", "d800", "dc00", "00e9", ":", ",", "0", "-", "1.5", "e",
            "E+", "true", "fals", "null", " ", "\n", "\t", "\u{2028}", "\u{85}", "\u{1}", "é", "a", "\"op\"",
        ];
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut objects = 0;
        for _ in 0..50_000 {
            let mut s = String::from("{");
            for _ in 0..rng.below(16) {
                if rng.below(8) == 0 {
                    s.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x'));
                } else {
                    s.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
                }
            }
            if rng.below(2) == 0 {
                s.push('}');
            }
            if let Some(o) = json_object(&s) {
                objects += 1;
                assert_eq!(json_object(&o).as_deref(), Some(o.as_str()), "{s:?}");
                assert!(!o.chars().any(must_escape), "{o:?} from {s:?}");
                assert!(json_object_keys(&o).is_some());
            }
        }
        assert!(objects > 100, "the generator makes objects too: {objects}");
    }
}
