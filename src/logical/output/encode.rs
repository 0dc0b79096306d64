//! Messages to lines: the transaction being written and the shape of each record, and the
//! reading side of that shape (what a line of ours looks like, where a unit of output ends).

use std::fmt::Write as _;

use super::escape::{json_object, push_json_text, push_text_ident, push_text_literal, text_ident};
use super::schema::{ColInfo, RelInfo, Schema};
use super::types::{format_pg_time, oid, push_hex, push_json_value, push_text_value};
use super::{Effect, Format, OutputError, DDL_PREFIX};
use crate::logical::pgoutput::{
    Begin, BeginPrepare, Column, Commit, CommitPrepared, LogicalMessage, Message, OldKind, Prepare,
    RollbackPrepared, Truncate,
};
use crate::lsn::Lsn;

/// The transaction whose changes are being written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Txn {
    xid: u32,
    /// The JSON fields of each change line that only the commit (or prepare) knows: the commit
    /// LSN (Begin's final LSN) or the prepare LSN and GID, and the time. Written once here, not
    /// once per change; empty in the text format, which has none.
    fields: String,
    /// Changes written so far; each change line carries its number, from 1.
    seq: u64,
    /// A streamed transaction encoded as it arrives, before its commit: the fields only the
    /// commit knows are left out of each change line, at a NUL byte ([`DEFERRED`]), and
    /// spliced in at the commit.
    deferred: bool,
}

impl Txn {
    /// Transaction `xid` committing at `lsn` (or prepared there as `gid`) at `time`.
    fn new(format: Format, xid: u32, lsn: Lsn, time: i64, gid: Option<&str>) -> Txn {
        let mut fields = String::new();
        if format == Format::Json {
            push_deferred_fields(&mut fields, lsn, time, gid);
        }
        Txn { xid, fields, seq: 0, deferred: false }
    }
}

/// Marks where a streamed change line's commit fields go. Never in a line otherwise: every
/// control character of untrusted text is written as a `\u` escape.
pub const DEFERRED: u8 = 0;

/// Turns messages into lines.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub format: Format,
    pub schema: Schema,
    txn: Option<Txn>,
    /// Reused for every record, so encoding allocates nothing per change.
    scratch: String,
    /// The prefix our `--ddl` event trigger signs its messages with (see `logical::ddl`);
    /// `None`: no message is a DDL record.
    ddl_prefix: Option<String>,
}

impl Encoder {
    pub fn new(format: Format) -> Encoder {
        Encoder { format, schema: Schema::default(), txn: None, scratch: String::new(), ddl_prefix: None }
    }

    /// Only a transactional message whose prefix is exactly `prefix` becomes a DDL record:
    /// any role may emit messages, with any prefix; only our trigger knows this one.
    pub fn with_ddl_prefix(mut self, prefix: Option<String>) -> Encoder {
        self.ddl_prefix = prefix;
        self
    }

    /// Whether a transaction is open (between Begin or Begin Prepare and its end).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    fn begin_txn(&mut self, t: Txn) -> Result<(), OutputError> {
        if let Some(open) = &self.txn {
            return Err(OutputError::NestedTransaction { xid: open.xid });
        }
        self.txn = Some(t);
        Ok(())
    }

    fn relation(&self, oid: u32) -> Result<&RelInfo, OutputError> {
        self.schema.relations.get(&oid).ok_or(OutputError::UnknownRelation(oid))
    }

    /// Writes the lines for `msg`, received at `lsn` (its XLogData start). Stream control
    /// messages (Stream Start/Stop/Commit/Abort/Prepare) are the caller's: it spools streamed
    /// transactions and replays them here as Begin ... Commit.
    pub fn encode(&mut self, out: &mut Vec<u8>, lsn: Lsn, msg: &Message<'_>) -> Result<Effect, OutputError> {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        let effect = self.encode_str(&mut s, lsn, msg);
        out.extend_from_slice(s.as_bytes());
        self.scratch = s;
        effect
    }

    /// Opens streamed transaction `xid`, whose changes are encoded as they arrive (with the
    /// fields only its commit knows deferred, see [`DEFERRED`]).
    pub fn begin_streamed(&mut self, xid: u32) -> Result<(), OutputError> {
        self.begin_txn(Txn { xid, fields: String::new(), seq: 0, deferred: true })
    }

    /// Changes of the open transaction so far.
    pub fn seq(&self) -> u64 {
        self.txn.as_ref().map_or(0, |t| t.seq)
    }

    /// Back to `seq` changes: a subtransaction aborted, its changes are dropped.
    pub fn rewind_seq(&mut self, seq: u64) {
        if let Some(t) = &mut self.txn {
            t.seq = seq;
        }
    }

    /// Ends the open streamed transaction at its commit (`head` a Begin, `tail` a Commit) or
    /// prepare (Begin Prepare, Prepare): its begin line into `head_out`, what each change line
    /// lacks into `fields`, its end line into `tail_out`.
    pub fn end_streamed(
        &mut self,
        head: &Message<'_>,
        tail: &Message<'_>,
        at: Lsn,
        head_out: &mut Vec<u8>,
        fields: &mut Vec<u8>,
        tail_out: &mut Vec<u8>,
    ) -> Result<Effect, OutputError> {
        let seq = self.seq();
        self.txn = None;
        self.encode(head_out, at, head)?;
        let t = self.txn.as_mut().ok_or(OutputError::NoTransaction { kind: head.kind() })?;
        t.seq = seq;
        fields.extend_from_slice(t.fields.as_bytes());
        self.encode(tail_out, at, tail)
    }

    // One method per record kind, so each says what it checks of the transaction state and
    // which unit of output it ends; the format only changes how the same fields are spelled.
    fn encode_str(&mut self, s: &mut String, lsn: Lsn, msg: &Message<'_>) -> Result<Effect, OutputError> {
        match msg {
            Message::Relation(_) | Message::Type(_) => {
                self.schema.learn(msg);
                Ok(Effect::None)
            }
            Message::Begin(b) => self.begin(s, b),
            Message::BeginPrepare(b) => self.begin_prepare(s, b),
            Message::Commit(c) => self.commit(s, c),
            Message::Prepare(p) | Message::StreamPrepare(p) => self.prepare(s, p, msg.kind()),
            Message::CommitPrepared(c) => Ok(self.commit_prepared(s, c)),
            Message::RollbackPrepared(r) => Ok(self.rollback_prepared(s, r)),
            Message::Origin { lsn: origin_lsn, name } => self.origin(s, *origin_lsn, name),
            Message::Insert(_) | Message::Update(_) | Message::Delete(_) | Message::Truncate(_) => {
                self.change(s, lsn, msg)?;
                Ok(Effect::None)
            }
            Message::Message(m) => self.message(s, m),
            Message::StreamStart(_)
            | Message::StreamStop
            | Message::StreamCommit(_)
            | Message::StreamAbort(_) => Ok(Effect::None),
        }
    }

    fn begin(&mut self, s: &mut String, b: &Begin) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        self.begin_txn(Txn::new(self.format, b.xid, b.final_lsn, b.commit_time, None))?;
        if json {
            let _ = writeln!(
                s,
                "{{\"op\":\"begin\",\"xid\":{},\"commit_lsn\":\"{}\",\"ts\":\"{}\"}}",
                b.xid,
                b.final_lsn,
                format_pg_time(b.commit_time)
            );
        } else {
            let _ = writeln!(
                s,
                "BEGIN xid={} commit_lsn={} ts={}",
                b.xid,
                b.final_lsn,
                format_pg_time(b.commit_time)
            );
        }
        Ok(Effect::None)
    }

    fn begin_prepare(&mut self, s: &mut String, b: &BeginPrepare<'_>) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        self.begin_txn(Txn::new(self.format, b.xid, b.prepare_lsn, b.prepare_time, Some(b.gid)))?;
        if json {
            let _ = write!(
                s,
                "{{\"op\":\"begin_prepare\",\"xid\":{},\"prepare_lsn\":\"{}\",\"ts\":\"{}\",\"gid\":",
                b.xid,
                b.prepare_lsn,
                format_pg_time(b.prepare_time)
            );
            push_json_text(s, b.gid);
            s.push_str("}\n");
        } else {
            let _ = write!(
                s,
                "BEGIN PREPARE xid={} prepare_lsn={} ts={} gid=",
                b.xid,
                b.prepare_lsn,
                format_pg_time(b.prepare_time),
            );
            push_text_literal(s, b.gid);
            s.push('\n');
        }
        Ok(Effect::None)
    }

    fn commit(&mut self, s: &mut String, c: &Commit) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        let txn = self.txn.take().ok_or(OutputError::NoTransaction { kind: b'C' })?;
        if json {
            let _ = writeln!(
                s,
                "{{\"op\":\"commit\",\"end_lsn\":\"{}\",\"xid\":{},\"commit_lsn\":\"{}\",\"ts\":\"{}\",\"changes\":{}}}",
                c.end_lsn,
                txn.xid,
                c.commit_lsn,
                format_pg_time(c.commit_time),
                txn.seq
            );
        } else {
            let _ = writeln!(
                s,
                "COMMIT end_lsn={} xid={} commit_lsn={} ts={} changes={}",
                c.end_lsn,
                txn.xid,
                c.commit_lsn,
                format_pg_time(c.commit_time),
                txn.seq
            );
        }
        Ok(Effect::UnitEnd(c.end_lsn))
    }

    fn prepare(&mut self, s: &mut String, p: &Prepare<'_>, kind: u8) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        let txn = self.txn.take().ok_or(OutputError::NoTransaction { kind })?;
        if json {
            let _ = write!(
                s,
                "{{\"op\":\"prepare\",\"end_lsn\":\"{}\",\"xid\":{},\"prepare_lsn\":\"{}\",\"ts\":\"{}\",\"changes\":{},\"gid\":",
                p.end_lsn,
                txn.xid,
                p.prepare_lsn,
                format_pg_time(p.prepare_time),
                txn.seq
            );
            push_json_text(s, p.gid);
            s.push_str("}\n");
        } else {
            let _ = write!(
                s,
                "PREPARE end_lsn={} xid={} prepare_lsn={} ts={} changes={} gid=",
                p.end_lsn,
                txn.xid,
                p.prepare_lsn,
                format_pg_time(p.prepare_time),
                txn.seq,
            );
            push_text_literal(s, p.gid);
            s.push('\n');
        }
        Ok(Effect::UnitEnd(p.end_lsn))
    }

    fn commit_prepared(&self, s: &mut String, c: &CommitPrepared<'_>) -> Effect {
        let json = self.format == Format::Json;
        if json {
            let _ = write!(
                s,
                "{{\"op\":\"commit_prepared\",\"end_lsn\":\"{}\",\"xid\":{},\"commit_lsn\":\"{}\",\"ts\":\"{}\",\"gid\":",
                c.end_lsn,
                c.xid,
                c.commit_lsn,
                format_pg_time(c.commit_time)
            );
            push_json_text(s, c.gid);
            s.push_str("}\n");
        } else {
            let _ = write!(
                s,
                "COMMIT PREPARED end_lsn={} xid={} commit_lsn={} ts={} gid=",
                c.end_lsn,
                c.xid,
                c.commit_lsn,
                format_pg_time(c.commit_time),
            );
            push_text_literal(s, c.gid);
            s.push('\n');
        }
        Effect::UnitEnd(c.end_lsn)
    }

    fn rollback_prepared(&self, s: &mut String, r: &RollbackPrepared<'_>) -> Effect {
        let json = self.format == Format::Json;
        if json {
            let _ = write!(
                s,
                "{{\"op\":\"rollback_prepared\",\"end_lsn\":\"{}\",\"xid\":{},\"prepare_end_lsn\":\"{}\",\"ts\":\"{}\",\"gid\":",
                r.rollback_end_lsn,
                r.xid,
                r.prepare_end_lsn,
                format_pg_time(r.rollback_time)
            );
            push_json_text(s, r.gid);
            s.push_str("}\n");
        } else {
            let _ = write!(
                s,
                "ROLLBACK PREPARED end_lsn={} xid={} prepare_end_lsn={} ts={} gid=",
                r.rollback_end_lsn,
                r.xid,
                r.prepare_end_lsn,
                format_pg_time(r.rollback_time),
            );
            push_text_literal(s, r.gid);
            s.push('\n');
        }
        Effect::UnitEnd(r.rollback_end_lsn)
    }

    fn origin(&self, s: &mut String, origin_lsn: Lsn, name: &str) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        let txn = self.txn.as_ref().ok_or(OutputError::NoTransaction { kind: b'O' })?;
        if json {
            let _ = write!(
                s,
                "{{\"op\":\"origin\",\"xid\":{},\"origin_lsn\":\"{origin_lsn}\",\"origin\":",
                txn.xid
            );
            push_json_text(s, name);
            s.push_str("}\n");
        } else {
            let _ = write!(s, "ORIGIN xid={} origin_lsn={origin_lsn} origin=", txn.xid);
            push_text_literal(s, name);
            s.push('\n');
        }
        Ok(Effect::None)
    }

    fn message(&mut self, s: &mut String, m: &LogicalMessage<'_>) -> Result<Effect, OutputError> {
        let json = self.format == Format::Json;
        // A non-transactional message stands alone: it is a unit of its own, ending just
        // past its LSN (decoding resumes after it; no other record starts there).
        let end = (!m.transactional).then(|| Lsn(m.lsn.0 + 1));
        let txn = if m.transactional {
            let t = self.txn.as_mut().ok_or(OutputError::NoTransaction { kind: b'M' })?;
            t.seq += 1;
            Some(&*t)
        } else {
            None
        };
        let ddl = m.transactional && self.ddl_prefix.as_deref() == Some(m.prefix);
        if json {
            push_json_message(s, m, end, txn, ddl);
        } else {
            push_text_message(s, m, end, txn, ddl);
        }
        Ok(end.map_or(Effect::None, Effect::UnitEnd))
    }

    fn change(&mut self, s: &mut String, lsn: Lsn, msg: &Message<'_>) -> Result<(), OutputError> {
        let Some(txn) = self.txn.as_mut() else {
            return Err(OutputError::NoTransaction { kind: msg.kind() });
        };
        txn.seq += 1;
        let txn = self.txn.take().expect("checked above");
        let r = match msg {
            Message::Truncate(t) => self.truncate(s, lsn, &txn, t),
            _ => self.row_change(s, lsn, &txn, msg),
        };
        self.txn = Some(txn);
        r
    }

    fn truncate(&self, s: &mut String, lsn: Lsn, txn: &Txn, t: &Truncate) -> Result<(), OutputError> {
        let json = self.format == Format::Json;
        let rels = t.relations.iter().map(|&o| self.relation(o)).collect::<Result<Vec<_>, _>>()?;
        if json {
            s.push_str("{\"op\":\"truncate\"");
            push_txn_fields(s, txn);
            let _ = write!(s, ",\"lsn\":\"{lsn}\",\"tables\":[");
            for (i, r) in rels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str("{\"schema\":");
                push_json_text(s, &r.namespace);
                s.push_str(",\"table\":");
                push_json_text(s, &r.name);
                s.push('}');
            }
            let _ =
                writeln!(s, "],\"cascade\":{},\"restart_identity\":{}}}", t.cascade(), t.restart_identity());
        } else {
            let names: Vec<String> = rels
                .iter()
                .map(|r| format!("{}.{}", text_ident(&r.namespace), text_ident(&r.name)))
                .collect();
            let _ =
                write!(s, "table {}: TRUNCATE: xid={} seq={} lsn={lsn}", names.join(", "), txn.xid, txn.seq);
            if t.cascade() {
                s.push_str(" cascade");
            }
            if t.restart_identity() {
                s.push_str(" restart_seqs");
            }
            s.push('\n');
        }
        Ok(())
    }

    fn row_change(&self, s: &mut String, lsn: Lsn, txn: &Txn, msg: &Message<'_>) -> Result<(), OutputError> {
        let json = self.format == Format::Json;
        type Old<'t, 'a> = Option<(OldKind, &'t [Column<'a>])>;
        let (op, relid, old, new): (&str, u32, Old<'_, '_>, Option<&[Column<'_>]>) = match msg {
            Message::Insert(i) => ("insert", i.relation, None, Some(&i.new)),
            Message::Update(u) => {
                ("update", u.relation, u.old.as_ref().map(|(k, t)| (*k, t.as_slice())), Some(&u.new))
            }
            Message::Delete(d) => ("delete", d.relation, Some((d.old_kind, d.old.as_slice())), None),
            _ => unreachable!("change() is called for row changes only"),
        };
        let rel = self.relation(relid)?;
        for t in old.map(|(_, t)| t).into_iter().chain(new) {
            if t.len() != rel.columns.len() {
                return Err(OutputError::ColumnCount {
                    relation: relid,
                    expected: rel.columns.len(),
                    got: t.len(),
                });
            }
        }
        // The key's values: from the old key or row when sent (the key changed, or a delete),
        // else from the new row.
        let key_source = old.map(|(_, t)| t).or(new).unwrap_or(&[]);
        if json {
            s.push_str("{\"op\":\"");
            s.push_str(op);
            s.push('"');
            push_txn_fields(s, txn);
            s.push_str(",\"lsn\":\"");
            push_lsn(s, lsn);
            s.push_str("\",\"schema\":");
            push_json_text(s, &rel.namespace);
            s.push_str(",\"table\":");
            push_json_text(s, &rel.name);
            s.push_str(",\"key\":");
            push_json_row(s, rel, key_source, |c| c.key);
            if let Some(t) = new {
                s.push_str(",\"new\":");
                push_json_row(s, rel, t, |_| true);
            }
            if let Some((kind, t)) = old {
                s.push_str(",\"old\":");
                // A key-only old tuple has nulls in the other columns: leave them out.
                push_json_row(s, rel, t, |c| kind == OldKind::Full || c.key);
            }
            s.push_str("}\n");
        } else {
            let _ = write!(
                s,
                "table {}.{}: {}: xid={} seq={} lsn={lsn}",
                text_ident(&rel.namespace),
                text_ident(&rel.name),
                op.to_ascii_uppercase(),
                txn.xid,
                txn.seq
            );
            if let Some((kind, t)) = old {
                s.push_str(if kind == OldKind::Full { " old-tuple:" } else { " old-key:" });
                self.push_text_row(s, rel, t, |c| kind == OldKind::Full || c.key);
                if new.is_some() {
                    s.push_str(" new-tuple:");
                }
            }
            if let Some(t) = new {
                self.push_text_row(s, rel, t, |_| true);
            }
            s.push('\n');
        }
        Ok(())
    }

    fn push_text_row(
        &self,
        s: &mut String,
        rel: &RelInfo,
        t: &[Column<'_>],
        keep: impl Fn(&ColInfo) -> bool,
    ) {
        for (c, v) in rel.columns.iter().zip(t) {
            if keep(c) {
                s.push(' ');
                push_text_ident(s, &c.name);
                let _ = write!(s, "[{}]:", self.schema.type_name(c.type_oid));
                push_text_value(s, c.type_oid, v);
            }
        }
    }
}

/// The prefix as written: what follows `pgrecvlogical.ddl:` is our trigger's secret token (or
/// a guess at it) and is never written, whether or not this run knows the token.
fn shown_prefix(prefix: &str) -> &str {
    match prefix.strip_prefix(DDL_PREFIX) {
        Some(rest) if rest.starts_with(':') => DDL_PREFIX,
        _ => prefix,
    }
}

fn push_json_message(s: &mut String, m: &LogicalMessage<'_>, end: Option<Lsn>, txn: Option<&Txn>, ddl: bool) {
    let content = std::str::from_utf8(m.content).ok();
    s.push_str(if ddl { "{\"op\":\"ddl\"" } else { "{\"op\":\"message\"" });
    if let Some(end) = end {
        let _ = write!(s, ",\"end_lsn\":\"{end}\"");
    }
    if let Some(t) = txn {
        push_txn_fields(s, t);
    }
    let _ = write!(s, ",\"lsn\":\"{}\",\"transactional\":{},\"prefix\":", m.lsn, m.transactional);
    push_json_text(s, shown_prefix(m.prefix));
    // Our event trigger builds the content with jsonb_build_object, but any role
    // may emit a message with our prefix: embed it only when it is exactly one
    // object, written again by us.
    let object = content.filter(|_| ddl).and_then(json_object);
    match (object, content) {
        (Some(obj), _) => {
            s.push_str(",\"ddl\":");
            s.push_str(&obj);
        }
        (None, Some(c)) => {
            s.push_str(",\"content\":");
            push_json_text(s, c);
        }
        (None, None) => {
            s.push_str(",\"content_hex\":\"");
            push_hex(s, m.content);
            s.push('"');
        }
    }
    s.push_str("}\n");
}

fn push_text_message(s: &mut String, m: &LogicalMessage<'_>, end: Option<Lsn>, txn: Option<&Txn>, ddl: bool) {
    let content = std::str::from_utf8(m.content).ok();
    s.push_str(if ddl { "DDL" } else { "MESSAGE" });
    if let Some(end) = end {
        let _ = write!(s, " end_lsn={end}");
    }
    if let Some(t) = txn {
        let _ = write!(s, " xid={} seq={}", t.xid, t.seq);
    }
    let _ = write!(s, " lsn={} transactional={} prefix=", m.lsn, m.transactional);
    push_text_literal(s, shown_prefix(m.prefix));
    s.push_str(" content=");
    match content {
        Some(c) => push_text_value(s, oid::TEXT, &Column::Text(c.as_bytes())),
        None => {
            s.push_str("\\x");
            push_hex(s, m.content);
        }
    }
    s.push('\n');
}

fn push_txn_fields(s: &mut String, t: &Txn) {
    s.push_str(",\"xid\":");
    push_u64(s, u64::from(t.xid));
    if t.deferred {
        s.push(char::from(DEFERRED));
    } else {
        s.push_str(&t.fields);
    }
    s.push_str(",\"seq\":");
    push_u64(s, t.seq);
}

/// `v` in decimal, as `Display` writes it: without the formatting machinery, which shows in
/// the profile of a change line.
fn push_u64(s: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    s.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// `lsn` as its `Display` writes it (`%X/%X`), likewise.
fn push_lsn(s: &mut String, lsn: Lsn) {
    fn hex(s: &mut String, v: u64) {
        let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
        for k in (0..digits).rev() {
            s.push(char::from(b"0123456789ABCDEF"[(v >> (4 * k) & 0xF) as usize]));
        }
    }
    hex(s, lsn.0 >> 32);
    s.push('/');
    hex(s, lsn.0 & 0xFFFF_FFFF);
}

/// The transaction fields only its commit (or prepare) knows.
fn push_deferred_fields(s: &mut String, lsn: Lsn, time: i64, gid: Option<&str>) {
    match gid {
        None => {
            let _ = write!(s, ",\"commit_lsn\":\"{lsn}\"");
        }
        Some(gid) => {
            let _ = write!(s, ",\"prepare_lsn\":\"{lsn}\",\"gid\":");
            push_json_text(s, gid);
        }
    }
    let _ = write!(s, ",\"ts\":\"{}\"", format_pg_time(time));
}

fn push_json_row(s: &mut String, rel: &RelInfo, t: &[Column<'_>], keep: impl Fn(&ColInfo) -> bool) {
    s.push('{');
    let mut first = true;
    for (c, v) in rel.columns.iter().zip(t) {
        if !keep(c) {
            continue;
        }
        if !first {
            s.push(',');
        }
        first = false;
        push_json_text(s, &c.name);
        s.push(':');
        push_json_value(s, c.type_oid, v);
    }
    s.push('}');
}

/// How every text-format line begins: recovery takes anything else for damage.
const TEXT_LINE_HEADS: [&str; 10] = [
    "BEGIN ",
    "BEGIN PREPARE ",
    "COMMIT ",
    "PREPARE ",
    "COMMIT PREPARED ",
    "ROLLBACK PREPARED ",
    "ORIGIN ",
    "MESSAGE ",
    "DDL ",
    "table ",
];

/// Whether `line` (without its newline) can be a line we wrote: UTF-8, no NUL byte, and the
/// beginning and end every line of the format has. What a crash leaves in a file's unsynced
/// tail (blocks of zeros, a torn write, stale blocks) fails this, so recovery never resumes
/// past it. Lenient about other control characters, which files written before they were
/// escaped may hold.
pub fn line_is_ours(line: &[u8], format: Format) -> bool {
    let Ok(text) = std::str::from_utf8(line) else { return false };
    if text.contains('\0') {
        return false;
    }
    match format {
        Format::Json => text.starts_with("{\"op\":\"") && text.ends_with('}'),
        Format::Text => TEXT_LINE_HEADS.iter().any(|h| text.starts_with(h)),
    }
}

/// The `end_lsn` of a line that ends a unit of output, `None` for any other line.
pub fn unit_end(line: &[u8], format: Format) -> Option<Lsn> {
    let text = std::str::from_utf8(line).ok()?;
    match format {
        Format::Json => {
            let rest = ["commit", "prepare", "commit_prepared", "rollback_prepared", "message", "ddl"]
                .iter()
                .find_map(|op| text.strip_prefix(&format!("{{\"op\":\"{op}\",\"end_lsn\":\"")))?;
            rest.split('"').next()?.parse().ok()
        }
        Format::Text => {
            // "COMMIT " is also how "COMMIT PREPARED " begins: look for end_lsn after each.
            let rest = ["COMMIT ", "PREPARE ", "COMMIT PREPARED ", "ROLLBACK PREPARED ", "MESSAGE ", "DDL "]
                .iter()
                .find_map(|k| text.strip_prefix(k)?.strip_prefix("end_lsn="))?;
            rest.split(' ').next()?.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_lsns_as_display_writes_them() {
        for v in [0, 1, 9, 10, 99, 100, 4_294_967_295, 1 << 32, 12_345_678_901_234, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, v);
            assert_eq!(s, v.to_string());
            let mut s = String::new();
            push_lsn(&mut s, Lsn(v));
            assert_eq!(s, Lsn(v).to_string());
        }
        for shift in 0..64 {
            let mut s = String::new();
            push_lsn(&mut s, Lsn(0xA5A5_A5A5_A5A5_A5A5 >> shift));
            assert_eq!(s, Lsn(0xA5A5_A5A5_A5A5_A5A5 >> shift).to_string());
        }
    }
}
