//! `--snapshot`: the rows every published table had when the slot was created, read under the
//! snapshot CREATE_REPLICATION_SLOT exported, written before the first change. They come out
//! as one transaction, xid 0, whose commit LSN and end are the slot's consistent point: the
//! stream continues with exactly the transactions that committed after it, so snapshot plus
//! stream is the database.
//!
//! Rows are read through a cursor, a batch at a time, on an ordinary (non-replication)
//! connection; the exported snapshot stays valid while the replication connection runs no
//! other command, which is why this runs before START_REPLICATION. Publication row filters
//! and column lists are not applied to the snapshot (every row and column is written). The
//! tables are the ones the publication publishes under the names it publishes them by: a
//! partitioned root when `publish_via_partition_root` is set, its partitions otherwise.

use pgrw_ffi::Conn;

use crate::lsn::Lsn;
use crate::protocol::pg_now;
use crate::sql::{ident, literal};

use super::output::{Effect, Encoder, Format};
use super::pgoutput::{Begin, Column, Commit, Insert, Message, RelColumn, Relation};
use super::stream::{Session, StreamError, MAX_BATCH};

const FETCH_ROWS: usize = 10_000;

#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotStats {
    pub tables: usize,
    pub rows: u64,
}

struct Table {
    oid: u32,
    namespace: String,
    name: String,
    /// A partitioned table: pg_publication_tables names it (instead of its partitions) when
    /// the publication has `publish_via_partition_root`, and it holds no rows of its own.
    partitioned: bool,
    columns: Vec<(String, u32, bool)>,
}

fn exec(conn: &mut Conn, sql: &str) -> Result<pgrw_ffi::PgResult, String> {
    conn.exec(sql).map_err(|e| {
        // These errors travel as text: the server's DETAIL and HINT stay in it, as libpq words them.
        let more: String = [("DETAIL", &e.detail), ("HINT", &e.hint)]
            .iter()
            .filter_map(|(word, text)| text.as_ref().map(|t| format!("; {word}: {t}")))
            .collect();
        format!("{e}{more} (in {})", sql.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
    })
}

fn published_tables(
    conn: &mut Conn,
    publications: &[String],
    server_version: u32,
) -> Result<Vec<Table>, String> {
    let pubs: Vec<String> = publications.iter().map(|p| literal(p)).collect();
    let r = exec(
        conn,
        &format!(
            "SELECT DISTINCT c.oid::int8, n.nspname, c.relname, c.relkind = 'p' FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname IN ({}) ORDER BY 2, 3",
            pubs.join(", ")
        ),
    )?;
    let mut tables = Vec::new();
    for row in 0..r.ntuples() {
        let oid: u32 = r.get(row, 0).and_then(|s| s.parse().ok()).ok_or("bad table oid")?;
        tables.push(Table {
            oid,
            namespace: r.get(row, 1).unwrap_or_default().to_owned(),
            name: r.get(row, 2).unwrap_or_default().to_owned(),
            partitioned: r.get(row, 3) == Some("t"),
            columns: Vec::new(),
        });
    }
    let generated = if server_version >= 120000 { " AND a.attgenerated = ''" } else { "" };
    for t in &mut tables {
        // The replica identity's columns are the key, as in the Relation messages.
        let r = exec(
            conn,
            &format!(
                "SELECT a.attname, a.atttypid::int8, CASE c.relreplident WHEN 'f' THEN true WHEN 'n' THEN false \
                 ELSE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY(i.indkey) \
                 AND CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END) END \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 WHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped{generated} ORDER BY a.attnum",
                t.oid
            ),
        )?;
        for row in 0..r.ntuples() {
            t.columns.push((
                r.get(row, 0).unwrap_or_default().to_owned(),
                r.get(row, 1).and_then(|s| s.parse().ok()).unwrap_or(0),
                r.get(row, 2) == Some("t"),
            ));
        }
    }
    Ok(tables)
}

/// Which snapshot to copy, of what, and how to write it.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSource<'a> {
    /// The name CREATE_REPLICATION_SLOT exported.
    pub snapshot: &'a str,
    pub publications: &'a [String],
    /// The slot's consistent point: the snapshot's unit ends there.
    pub at: Lsn,
    pub format: Format,
    pub server_version: u32,
    /// "host:port", for messages.
    pub server: &'a str,
}

/// Writes the snapshot of the publications' tables through `session`, as one unit ending at
/// the consistent point.
pub fn copy(
    conn: &mut Conn,
    src: &SnapshotSource<'_>,
    session: &mut Session<'_>,
) -> Result<SnapshotStats, StreamError> {
    let SnapshotSource { snapshot, publications, at, format, server_version, server } = *src;
    let fail = |message: String| StreamError::Unexpected {
        server: server.to_owned(),
        message: format!("could not copy the initial snapshot: {message}"),
    };
    exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(fail)?;
    exec(conn, &format!("SET TRANSACTION SNAPSHOT {}", literal(snapshot))).map_err(fail)?;
    let tables = published_tables(conn, publications, server_version).map_err(fail)?;
    let mut enc = Encoder::new(format);
    let mut out = Vec::new();
    let mut stats = SnapshotStats::default();
    let begin = Message::Begin(Begin { final_lsn: at, commit_time: pg_now(), xid: 0 });
    enc.encode(&mut out, at, &begin).map_err(|e| fail(e.to_string()))?;
    for t in &tables {
        let rel = Message::Relation(Relation {
            xid: None,
            oid: t.oid,
            namespace: &t.namespace,
            name: &t.name,
            replica_identity: b'd',
            columns: t
                .columns
                .iter()
                .map(|(n, ty, key)| RelColumn {
                    flags: u8::from(*key),
                    name: n,
                    type_oid: *ty,
                    type_modifier: -1,
                })
                .collect(),
        });
        enc.encode(&mut out, at, &rel).map_err(|e| fail(e.to_string()))?;
        let cols: Vec<String> = t.columns.iter().map(|(n, _, _)| ident(n)).collect();
        let select = if cols.is_empty() { "NULL".to_owned() } else { cols.join(", ") };
        exec(
            conn,
            &format!(
                "DECLARE pgrl_snapshot NO SCROLL CURSOR FOR SELECT {select} FROM {}{}.{}",
                from_clause(t.partitioned),
                ident(&t.namespace),
                ident(&t.name)
            ),
        )
        .map_err(fail)?;
        loop {
            let r = exec(conn, &format!("FETCH {FETCH_ROWS} FROM pgrl_snapshot")).map_err(fail)?;
            if r.ntuples() == 0 {
                break;
            }
            for row in 0..r.ntuples() {
                let new: Vec<Column<'_>> = (0..t.columns.len())
                    .map(|c| r.get_bytes(row, c).map_or(Column::Null, Column::Text))
                    .collect();
                let ins = Message::Insert(Insert { xid: None, relation: t.oid, new });
                enc.encode(&mut out, at, &ins).map_err(|e| fail(e.to_string()))?;
                stats.rows += 1;
            }
            if out.len() >= MAX_BATCH {
                session.write_lines(std::mem::take(&mut out), None)?;
            }
        }
        exec(conn, "CLOSE pgrl_snapshot").map_err(fail)?;
        stats.tables += 1;
        log::info!("snapshot of {}.{} written", t.namespace, t.name);
    }
    exec(conn, "COMMIT").map_err(fail)?;
    let commit = Message::Commit(Commit { flags: 0, commit_lsn: at, end_lsn: at, commit_time: pg_now() });
    match enc.encode(&mut out, at, &commit).map_err(|e| fail(e.to_string()))? {
        Effect::UnitEnd(end) => session.write_lines(out, Some(end))?,
        Effect::None => unreachable!("a commit ends a unit"),
    }
    session.wait_durable()?;
    Ok(stats)
}

/// A partitioned root's rows are its partitions' (the stream, too, sends their changes as the
/// root's); an ordinary table is read alone, since pg_publication_tables lists each of its
/// inheritance children on its own line.
fn from_clause(partitioned: bool) -> &'static str {
    if partitioned {
        ""
    } else {
        "ONLY "
    }
}
