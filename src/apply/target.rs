//! The target database: the position table, and one source unit applied as one target
//! transaction with the position it reaches, so the two commit together or not at all.
//!
//! Every statement is built from names only, each quoted by `sql::ident`; every value is a
//! parameter (text, its type inferred from the column it meets), never part of the SQL text.
//! Statements are prepared once per shape (table, columns, which keys are NULL) and reused;
//! after DDL they are prepared again, since the types they were prepared with may be gone.

use std::collections::HashMap;
use std::fmt;

use pgrw_ffi::{Conn, Piped};

use crate::logging::{Hinted, Message};
use crate::lsn::Lsn;
use crate::sql::{ident, literal};

use super::config::DdlMode;
use super::records::{Change, DdlObject, RowChange, RowOp, TableName, Unit, Value};

pub const SCHEMA: &str = "pgapplylogical";
pub const TABLE: &str = "applied_position";

/// Why a unit was not applied: the primary message, with the server's detail and hint or
/// ours.
#[derive(Debug)]
pub enum ApplyError {
    /// The connection failed: nothing of the unit committed (or, if the commit itself was
    /// cut off, the position table says whether it did). Retried after a reconnect.
    Connection(Message),
    /// The target refused a change, or a change does not fit it: stop.
    Refused(Message),
}

impl ApplyError {
    pub fn message(&self) -> &Message {
        match self {
            ApplyError::Connection(m) | ApplyError::Refused(m) => m,
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message().fmt(f)
    }
}

impl Hinted for ApplyError {
    fn detail(&self) -> Option<String> {
        self.message().detail.clone()
    }
    fn hint(&self) -> Option<String> {
        self.message().hint.clone()
    }
}

/// A refusal of ours (not the server's), with nothing more to say.
fn refusal(text: String) -> ApplyError {
    ApplyError::Refused(Message::new(text))
}

/// What applying a unit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub rows: u64,
    /// The target's position was already at or past the unit (another run applied it).
    pub already: bool,
}

pub struct Target {
    conn: Conn,
    source: String,
    statements: HashMap<String, String>,
    /// BEGIN was sent for the unit being applied: a failure must roll it back.
    began: bool,
    /// "host:port", for messages.
    pub server: String,
}

/// Names the position table's row: the cluster, database and slot the output is of.
pub fn source_id(system_id: u64, database_oid: u32, slot: &str) -> String {
    format!("{system_id}/{database_oid}/{slot}")
}

impl Target {
    /// Sets up a connected target: the session as PostgreSQL's own subscriber runs it
    /// (`session_replication_role = replica`: the target's triggers and foreign keys, which
    /// already acted on the source, do not act again), the position table, our row in it.
    /// Returns the applied position.
    pub fn new(mut conn: Conn, source: String, server: String) -> Result<(Target, Lsn), ApplyError> {
        let setup = format!(
            "SET client_min_messages = warning; SET session_replication_role = replica; \
             SET synchronous_commit = off; \
             CREATE SCHEMA IF NOT EXISTS {SCHEMA}; \
             CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (source text PRIMARY KEY, end_lsn pg_lsn NOT NULL, \
             commit_lsn pg_lsn, xid bigint, applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO {SCHEMA}.{TABLE} (source, end_lsn) VALUES ({}, '0/0') ON CONFLICT (source) DO NOTHING",
            literal(&source)
        );
        if let Err(e) = conn.exec(&setup) {
            let denied = e.sqlstate.as_deref() == Some("42501");
            let mut err = server_message(format!("could not prepare the target (server {server})"), e);
            if denied {
                err.hint = Some(
                    "The target role needs to set session_replication_role (a superuser, or GRANT SET ON PARAMETER session_replication_role on PostgreSQL 15 and later) and to create the schema pgapplylogical."
                        .into(),
                );
            }
            return Err(if conn.is_ok() { ApplyError::Refused(err) } else { ApplyError::Connection(err) });
        }
        let mut t = Target { conn, source, statements: HashMap::new(), began: false, server };
        let pos = t.position(false)?;
        Ok((t, pos))
    }

    /// Makes every transaction this session committed durable on the target (and on its
    /// synchronous standbys, as the server's synchronous_commit says): one small transaction
    /// committed with `synchronous_commit = on`, whose WAL flush covers all WAL before it.
    ///
    /// The session commits with `synchronous_commit = off`, as PostgreSQL's own subscriber
    /// does by default: a crash of the target can lose the last transactions, but each with
    /// the position row that covers it, so the next run applies them again from the directory.
    /// What leaves the target, a position registered in the directory (which lets
    /// pgrecvlogical remove files) or a file removed by `--remove-applied`, must only ever be
    /// made durable first, or a crash could lose transactions whose files are gone.
    pub fn make_durable(&mut self) -> Result<(), ApplyError> {
        let sql = format!(
            "BEGIN; SET LOCAL synchronous_commit = on; \
             UPDATE {SCHEMA}.{TABLE} SET end_lsn = end_lsn WHERE source = {}; COMMIT",
            literal(&self.source)
        );
        self.conn.exec(&sql).map(|_| ()).map_err(|e| {
            if self.conn.is_ok() {
                let _ = self.conn.exec("ROLLBACK");
            }
            self.fail("could not make the applied position durable", e)
        })
    }

    /// The connection's socket, to wait on while there is nothing to apply.
    pub fn socket(&self) -> std::os::fd::RawFd {
        self.conn.socket()
    }

    /// libpq found the connection lost in an earlier call; it has closed the socket then.
    pub fn lost(&self) -> bool {
        !self.conn.is_ok()
    }

    /// Reads what the server sent while there was nothing to apply: a server that shut down or
    /// a connection that was cut is then noticed at once (`/health`, the reconnect), not at the
    /// next transaction.
    pub fn check_idle(&mut self) -> Result<(), ApplyError> {
        // A connection libpq already found lost has no socket left to read.
        let read = if self.lost() { Ok(()) } else { self.conn.consume_input() };
        match read {
            Ok(()) if self.conn.is_ok() => Ok(()),
            Ok(()) => Err(ApplyError::Connection(Message::new(format!(
                "connection to the target lost (server {})",
                self.server
            )))),
            Err(e) => Err(ApplyError::Connection(server_message(
                format!("connection to the target lost: {} (server {})", e.message, self.server),
                e,
            ))),
        }
    }

    fn fail(&self, context: &str, e: pgrw_ffi::Error) -> ApplyError {
        let msg = server_message(format!("{context}: {} (server {})", e.message, self.server), e);
        if self.conn.is_ok() {
            ApplyError::Refused(msg)
        } else {
            ApplyError::Connection(msg)
        }
    }

    /// The stored position; `lock` takes the row for the rest of the transaction, so two
    /// appliers on one target never apply one unit twice.
    fn position(&mut self, lock: bool) -> Result<Lsn, ApplyError> {
        let sql = format!(
            "SELECT end_lsn FROM {SCHEMA}.{TABLE} WHERE source = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let source = self.source.clone();
        let r = self
            .run(&sql, &[Some(&source)])
            .map_err(|e| self.fail("could not read the applied position", e))?;
        let Some(v) = r.get(0, 0) else {
            return Err(ApplyError::Refused(
                Message::new(format!("the row of source \"{}\" in {SCHEMA}.{TABLE} is gone", self.source))
                    .detail("Something removed it while pgapplylogical ran."),
            ));
        };
        v.parse().map_err(|_| refusal(format!("invalid position \"{v}\" in {SCHEMA}.{TABLE}")))
    }

    /// Runs a statement, prepared on first use.
    fn run(&mut self, sql: &str, params: &[Option<&str>]) -> Result<pgrw_ffi::PgResult, pgrw_ffi::Error> {
        let name = match self.statements.get(sql) {
            Some(n) => n.clone(),
            None => {
                let n = format!("pgapply_{}", self.statements.len() + 1);
                self.conn.prepare(&n, sql)?;
                self.statements.insert(sql.to_owned(), n.clone());
                n
            }
        };
        let r = self.conn.exec_prepared(&name, params);
        // A long transaction is progress, statement by statement (`/health`).
        crate::metrics::progress();
        r
    }

    fn forget_statements(&mut self) -> Result<(), pgrw_ffi::Error> {
        self.statements.clear();
        self.conn.exec("DEALLOCATE ALL").map(|_| ())
    }

    /// The prepared statement for `sql`, prepared on first use.
    fn statement(&mut self, sql: &str) -> Result<String, pgrw_ffi::Error> {
        if let Some(n) = self.statements.get(sql) {
            return Ok(n.clone());
        }
        let n = format!("pgapply_{}", self.statements.len() + 1);
        self.conn.prepare(&n, sql)?;
        self.statements.insert(sql.to_owned(), n.clone());
        Ok(n)
    }

    /// Applies one unit as one transaction, with the position it reaches.
    pub fn apply(
        &mut self,
        unit: &Unit,
        ddl: DdlMode,
        skip: &[(String, String)],
    ) -> Result<Applied, ApplyError> {
        match self.apply_as(unit, ddl, skip, true) {
            // Runs of inserts go in multi-row statements; when the target refuses one, the
            // unit (rolled back) is applied again row by row, so the message names the row.
            Err(ApplyError::Refused(_)) => self.apply_as(unit, ddl, skip, false),
            other => other,
        }
    }

    fn apply_as(
        &mut self,
        unit: &Unit,
        ddl: DdlMode,
        skip: &[(String, String)],
        batch: bool,
    ) -> Result<Applied, ApplyError> {
        let (xid, commit_lsn) = unit.txn.expect("only transactions are applied");
        self.began = false;
        let result = self.apply_in_transaction(unit, xid, commit_lsn, ddl, skip, batch);
        match result {
            Ok(a) if a.already => {
                self.conn.exec("ROLLBACK").map_err(|e| self.fail("could not roll back", e))?;
                Ok(a)
            }
            Ok(a) => {
                if let Err(e) = self.conn.exec("COMMIT") {
                    return Err(self.fail(
                        &format!(
                            "could not commit source transaction {xid} (commit {commit_lsn}, {})",
                            unit.at
                        ),
                        e,
                    ));
                }
                Ok(a)
            }
            Err(e) => {
                // Nothing of the unit stays; a connection error leaves nothing to roll back,
                // nor does a change refused before anything was sent.
                if self.began && self.conn.is_ok() {
                    let _ = self.conn.exec("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Sends the unit's statements in pipelines (see [`Piped`]): BEGIN, the position read
    /// `FOR UPDATE`, the row changes and the position update, checked in order once each
    /// pipeline's answers are in. A truncate or DDL record ends a pipeline and runs on its own
    /// (a statement after DDL can only be prepared once the DDL ran). Statements after one that
    /// fails or changes the wrong number of rows may have run, but the transaction is rolled
    /// back: nothing of the unit stays. The same holds when the position read says the unit is
    /// already applied: what ran after it is rolled back.
    fn apply_in_transaction(
        &mut self,
        unit: &Unit,
        xid: u64,
        commit_lsn: Lsn,
        ddl: DdlMode,
        skip: &[(String, String)],
        batch: bool,
    ) -> Result<Applied, ApplyError> {
        let mut applied = Applied::default();
        let skipped = |t: &TableName| skip.iter().any(|(s, n)| *s == t.schema && *n == t.table);
        let txn = format!("source transaction {xid} (commit {commit_lsn}, {})", unit.at);
        // Before any change: the row changes of a DDL record that must be applied by hand may
        // come before it (CREATE TABLE AS writes its rows first) and fail on the table the
        // record would create, which would hide the reason.
        if ddl != DdlMode::Ignore {
            for change in &unit.changes {
                refuse_by_hand(change, unit.end_lsn, ddl, &txn)?;
            }
        }
        let source = self.source.clone();
        let (end, commit, xid_s) = (unit.end_lsn.to_string(), commit_lsn.to_string(), xid.to_string());
        let mut pipe = Pipe { items: Vec::new(), txn: &txn, end_lsn: unit.end_lsn };
        let begin = self.statement("BEGIN").map_err(|e| self.fail("could not begin a transaction", e))?;
        pipe.items.push(Item { name: begin, params: Vec::new(), check: Check::Begin });
        let lock = format!("SELECT end_lsn FROM {SCHEMA}.{TABLE} WHERE source = $1 FOR UPDATE");
        let lock = self.statement(&lock).map_err(|e| self.fail("could not read the applied position", e))?;
        pipe.items.push(Item { name: lock, params: vec![Some(source.as_str())], check: Check::Position });
        let mut i = 0;
        while i < unit.changes.len() {
            let change = &unit.changes[i];
            i += 1;
            match change {
                Change::Row(r) if skipped(&r.table) => {}
                Change::Row(r) if batch && insert_columns(r).is_some() => {
                    // The run of inserts into this table with these columns, from here.
                    let start = i - 1;
                    while let Some(Change::Row(next)) = unit.changes.get(i) {
                        if next.table != r.table || insert_columns(next) != insert_columns(r) {
                            break;
                        }
                        i += 1;
                    }
                    applied.rows += self.insert_run(&unit.changes[start..i], &mut pipe, &mut applied)?;
                }
                Change::Row(r) => {
                    self.push_row(r, &mut pipe, &mut applied)?;
                    applied.rows += 1;
                }
                Change::Truncate { lsn, tables, cascade, restart_identity } => {
                    let tables: Vec<&TableName> = tables.iter().filter(|t| !skipped(t)).collect();
                    if !tables.is_empty() {
                        if self.send(&mut pipe, &mut applied)? {
                            return Ok(applied);
                        }
                        self.truncate(*lsn, &tables, *cascade, *restart_identity, &txn)?;
                    }
                }
                Change::Ddl { query, objects, .. } => {
                    if !is_our_event_trigger(query, objects) {
                        if self.send(&mut pipe, &mut applied)? {
                            return Ok(applied);
                        }
                        self.ddl(change, ddl, &txn)?;
                    }
                }
                Change::Nothing { .. } => {}
            }
        }
        let sql = format!(
            "UPDATE {SCHEMA}.{TABLE} SET end_lsn = $2, commit_lsn = $3, xid = $4, applied_at = now() WHERE source = $1"
        );
        let store = self
            .statement(&sql)
            .map_err(|e| self.fail(&format!("could not store the applied position {end}"), e))?;
        let params =
            vec![Some(source.as_str()), Some(end.as_str()), Some(commit.as_str()), Some(xid_s.as_str())];
        pipe.items.push(Item { name: store, params, check: Check::Store });
        self.send(&mut pipe, &mut applied)?;
        Ok(applied)
    }

    /// Runs what the pipe holds and checks every answer in order. True when the unit turned
    /// out to be applied already (`applied.already` is set): the caller rolls back.
    fn send<'u>(&mut self, pipe: &mut Pipe<'u, '_>, applied: &mut Applied) -> Result<bool, ApplyError> {
        if pipe.items.is_empty() || applied.already {
            return Ok(applied.already);
        }
        let items = std::mem::take(&mut pipe.items);
        self.began = true;
        let stmts: Vec<(&str, &[Option<&str>])> =
            items.iter().map(|it| (it.name.as_str(), it.params.as_slice())).collect();
        let outcomes = self
            .conn
            .exec_prepared_pipeline(&stmts)
            .map_err(|e| self.fail(&format!("could not apply {}", pipe.txn), e))?;
        // A long transaction is progress, pipeline by pipeline (`/health`).
        crate::metrics::progress();
        for (item, outcome) in items.iter().zip(outcomes) {
            let res = match outcome {
                Piped::Done(res) => res,
                Piped::Failed(e) => return Err(self.fail(&item.check.context(pipe), e)),
                Piped::Skipped => {
                    // Only after a failure, which returned above.
                    return Err(refusal(format!(
                        "{}: the server skipped it in a pipeline without reporting an error",
                        item.check.context(pipe)
                    )));
                }
            };
            match &item.check {
                Check::Begin | Check::Store => {}
                Check::Position => {
                    let Some(v) = res.get(0, 0) else {
                        return Err(ApplyError::Refused(
                            Message::new(format!(
                                "the row of source \"{}\" in {SCHEMA}.{TABLE} is gone",
                                self.source
                            ))
                            .detail("Something removed it while pgapplylogical ran."),
                        ));
                    };
                    let pos: Lsn = v
                        .parse()
                        .map_err(|_| refusal(format!("invalid position \"{v}\" in {SCHEMA}.{TABLE}")))?;
                    if pos >= pipe.end_lsn {
                        applied.already = true;
                        return Ok(true);
                    }
                }
                Check::Row(r) => check_row(r, res.cmd_tuples(), &item.check.context(pipe))?,
                Check::Inserts(rows) => match res.cmd_tuples() {
                    Some(n) if n == rows.len() as u64 => {}
                    n => {
                        return Err(refusal(format!(
                            "{}: the server reported {n:?} rows inserted",
                            item.check.context(pipe)
                        )))
                    }
                },
            }
        }
        Ok(false)
    }

    /// Queues a statement; a full pipe is sent first.
    fn push<'u>(
        &mut self,
        pipe: &mut Pipe<'u, '_>,
        item: Item<'u>,
        applied: &mut Applied,
    ) -> Result<(), ApplyError> {
        // libpq cannot send a NUL byte (nor can PostgreSQL's text hold one): refused here, by
        // the change it belongs to, rather than as a failure of the whole pipeline.
        if item.params.iter().flatten().any(|v| v.contains('\0')) {
            return Err(refusal(format!(
                "{}: a value holds a NUL byte, which PostgreSQL's text types cannot hold",
                item.check.context(pipe)
            )));
        }
        if pipe.items.len() >= PIPELINE_STATEMENTS {
            self.send(pipe, applied)?;
        }
        pipe.items.push(item);
        Ok(())
    }

    /// A prepared statement for a change: when preparing fails (the table or a column is not
    /// on the target), what is queued runs first, so an earlier change that fails is the one
    /// reported.
    fn prepare_for<'u>(
        &mut self,
        sql: &str,
        check: &Check<'u>,
        pipe: &mut Pipe<'u, '_>,
        applied: &mut Applied,
    ) -> Result<Option<String>, ApplyError> {
        match self.statement(sql) {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                if self.conn.is_ok() && self.send(pipe, applied)? {
                    return Ok(None);
                }
                Err(self.fail(&check.context(pipe), e))
            }
        }
    }

    /// A run of inserts into one table with the same columns, in statements of as many rows
    /// as the parameter limit allows (then of ten, then one by one). Returns the rows queued.
    fn insert_run<'u>(
        &mut self,
        run: &'u [Change],
        pipe: &mut Pipe<'u, '_>,
        applied: &mut Applied,
    ) -> Result<u64, ApplyError> {
        let run: Vec<&'u RowChange> =
            run.iter().filter_map(|c| if let Change::Row(r) = c { Some(r) } else { None }).collect();
        let cols = insert_columns(run[0]).map_or(1, |c| c.len().max(1));
        let most = (MAX_PARAMS / cols).clamp(1, BATCH_ROWS);
        let mut rows = 0;
        let mut rest = &run[..];
        while !rest.is_empty() {
            let n = if rest.len() >= most {
                most
            } else if rest.len() >= 10.min(most) {
                10.min(most)
            } else {
                1
            };
            let (now, later) = rest.split_at(n);
            if n == 1 {
                self.push_row(now[0], pipe, applied)?;
            } else {
                self.push_inserts(now.to_vec(), pipe, applied)?;
            }
            if applied.already {
                return Ok(rows);
            }
            rows += n as u64;
            rest = later;
        }
        Ok(rows)
    }

    fn truncate(
        &mut self,
        lsn: Lsn,
        tables: &[&TableName],
        cascade: bool,
        restart_identity: bool,
        txn: &str,
    ) -> Result<(), ApplyError> {
        let names: Vec<String> =
            tables.iter().map(|t| format!("{}.{}", ident(&t.schema), ident(&t.table))).collect();
        let sql = format!(
            "TRUNCATE {}{}{}",
            names.join(", "),
            if restart_identity { " RESTART IDENTITY" } else { "" },
            if cascade { " CASCADE" } else { "" }
        );
        let list: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        self.conn.exec(&sql).map_err(|e| {
            self.fail(&format!("could not apply the truncate at {lsn} of {txn} to {}", list.join(", ")), e)
        })?;
        Ok(())
    }

    /// Sets `search_path` to the source session's schemas (temporary ones left out: the
    /// target's are not the source's) until the end of the transaction; returns the one before.
    fn set_search_path(&mut self, path: &[String]) -> Result<String, ApplyError> {
        let r = self
            .conn
            .exec("SELECT pg_catalog.current_setting('search_path')")
            .map_err(|e| self.fail("could not read search_path", e))?;
        let before = r.get(0, 0).unwrap_or_default().to_owned();
        let names: Vec<String> = path.iter().filter(|s| !temp_schema(s)).map(|s| ident(s)).collect();
        self.conn
            .exec_params("SELECT pg_catalog.set_config('search_path', $1, true)", &[Some(&names.join(", "))])
            .map_err(|e| self.fail("could not set search_path to the source session's", e))?;
        Ok(before)
    }

    /// A DDL record of the source, as `--ddl` says.
    fn ddl(&mut self, change: &Change, ddl: DdlMode, txn: &str) -> Result<(), ApplyError> {
        let Change::Ddl { lsn, tag, query, search_path, .. } = change else {
            unreachable!("called for DDL records only")
        };
        let mut shown = String::new();
        crate::text::push_one_line(&mut shown, query);
        if temporary_only(change) {
            log::info!("not applying DDL at {lsn} of {txn} on temporary objects only: {tag}: {shown}");
            return Ok(());
        }
        match ddl {
            DdlMode::Ignore => {
                log::warn!("not applying DDL at {lsn} of {txn} (--ddl=ignore): {tag}: {shown}");
            }
            DdlMode::Stop => {
                return Err(ApplyError::Refused(
                    Message::new(format!("DDL at {lsn} of {txn} not applied (--ddl=stop, the default): {tag}: {shown}"))
                        .hint("Run it on the target and restart with --ddl=ignore until past it, or restart with --ddl=apply."),
                ));
            }
            DdlMode::Apply => {
                // Unqualified names resolve as they did on the source: the session's schemas,
                // for this statement only (the applier's own statements name their schemas,
                // but its path is put back all the same).
                let before = match search_path {
                    Some(path) => Some(self.set_search_path(path)?),
                    None => None,
                };
                // One statement through the extended protocol: should `by_hand` have missed a
                // string of several statements, the server's Parse refuses it before running
                // any of it.
                self.conn.exec_params(query, &[]).map_err(|e| {
                    self.fail(&format!("could not apply the DDL at {lsn} of {txn} ({tag}: {shown})"), e)
                })?;
                if let Some(before) = before {
                    self.conn
                        .exec_params(
                            "SELECT pg_catalog.set_config('search_path', $1, true)",
                            &[Some(&before)],
                        )
                        .map_err(|e| self.fail("could not set search_path back", e))?;
                }
                self.forget_statements().map_err(|e| self.fail("could not deallocate statements", e))?;
            }
        }
        Ok(())
    }

    /// Inserts of one table with the same columns, in one statement.
    fn push_inserts<'u>(
        &mut self,
        rows: Vec<&'u RowChange>,
        pipe: &mut Pipe<'u, '_>,
        applied: &mut Applied,
    ) -> Result<(), ApplyError> {
        let first = rows[0];
        let cols = insert_columns(first).expect("checked by the caller");
        let table = format!("{}.{}", ident(&first.table.schema), ident(&first.table.table));
        let mut params: Vec<Option<&'u str>> = Vec::with_capacity(rows.len() * cols.len());
        let mut tuples = Vec::with_capacity(rows.len());
        for r in &rows {
            let start = params.len();
            params.extend(r.new.as_deref().unwrap_or_default().iter().map(|(_, v)| v.as_param()));
            let ps: Vec<String> = (start + 1..=params.len()).map(|i| format!("${i}")).collect();
            tuples.push(format!("({})", ps.join(", ")));
        }
        let names: Vec<String> = cols.iter().map(|c| ident(c)).collect();
        let sql = format!("INSERT INTO {table} ({}) VALUES {}", names.join(", "), tuples.join(", "));
        let check = Check::Inserts(rows);
        let Some(name) = self.prepare_for(&sql, &check, pipe, applied)? else { return Ok(()) };
        self.push(pipe, Item { name, params, check }, applied)
    }

    /// One row change, found by its key (an insert: one row).
    fn push_row<'u>(
        &mut self,
        r: &'u RowChange,
        pipe: &mut Pipe<'u, '_>,
        applied: &mut Applied,
    ) -> Result<(), ApplyError> {
        let check = Check::Row(r);
        let refused = |why: &str| refusal(format!("{}: {why}", check.context(pipe)));
        let table = format!("{}.{}", ident(&r.table.schema), ident(&r.table.table));
        let mut params: Vec<Option<&'u str>> = Vec::new();
        let sql = match r.op {
            RowOp::Insert => {
                let new = r.new.as_deref().unwrap_or_default();
                if new.iter().any(|(_, v)| *v == Value::UnchangedToast) {
                    return Err(refused("an inserted row has an unchanged-TOAST marker"));
                }
                if new.is_empty() {
                    format!("INSERT INTO {table} DEFAULT VALUES")
                } else {
                    let cols: Vec<String> = new.iter().map(|(c, _)| ident(c)).collect();
                    let vals: Vec<String> = (1..=new.len()).map(|i| format!("${i}")).collect();
                    params.extend(new.iter().map(|(_, v)| v.as_param()));
                    format!("INSERT INTO {table} ({}) VALUES ({})", cols.join(", "), vals.join(", "))
                }
            }
            RowOp::Update => {
                let new = r.new.as_deref().unwrap_or_default();
                // An unchanged TOAST value is left out: the column keeps what it has.
                let set: Vec<&(String, Value)> =
                    new.iter().filter(|(_, v)| *v != Value::UnchangedToast).collect();
                let mut parts = Vec::new();
                for (c, v) in set {
                    params.push(v.as_param());
                    parts.push(format!("{} = ${}", ident(c), params.len()));
                }
                if parts.is_empty() {
                    // Nothing to set, but the row must still be there.
                    let (c, _) = r.key.first().ok_or_else(|| refused("the change has no key"))?;
                    parts.push(format!("{0} = {0}", ident(c)));
                }
                let cond = where_clause(&r.key, &mut params).map_err(&refused)?;
                format!("UPDATE {table} SET {} WHERE {cond}", parts.join(", "))
            }
            RowOp::Delete => {
                let cond = where_clause(&r.key, &mut params).map_err(&refused)?;
                format!("DELETE FROM {table} WHERE {cond}")
            }
        };
        let Some(name) = self.prepare_for(&sql, &check, pipe, applied)? else { return Ok(()) };
        self.push(pipe, Item { name, params, check }, applied)
    }
}

/// The statements of a unit waiting to be sent in one pipeline.
struct Pipe<'u, 't> {
    items: Vec<Item<'u>>,
    /// "source transaction ... (commit ..., file ... line ...)", for messages.
    txn: &'t str,
    end_lsn: Lsn,
}

struct Item<'u> {
    name: String,
    params: Vec<Option<&'u str>>,
    check: Check<'u>,
}

/// What a statement's answer must say.
enum Check<'u> {
    Begin,
    /// The position read `FOR UPDATE`: at or past the unit's end means applied already.
    Position,
    /// One row changed (inserted, or found by its key).
    Row(&'u RowChange),
    /// As many rows inserted as given.
    Inserts(Vec<&'u RowChange>),
    /// The position update.
    Store,
}

impl Check<'_> {
    /// The start of the message when the statement fails.
    fn context(&self, pipe: &Pipe<'_, '_>) -> String {
        let txn = pipe.txn;
        match self {
            Check::Begin => "could not begin a transaction".to_owned(),
            Check::Position => "could not read the applied position".to_owned(),
            Check::Store => format!("could not store the applied position {}", pipe.end_lsn),
            Check::Row(r) => {
                let mut key = String::new();
                let mut k = String::from("{");
                for (i, (c, v)) in r.key.iter().enumerate() {
                    if i > 0 {
                        k.push(',');
                    }
                    crate::text::push_json_string(&mut k, c);
                    k.push(':');
                    match v {
                        Value::Null => k.push_str("null"),
                        Value::Text(t) => crate::text::push_json_string(&mut k, t),
                        Value::UnchangedToast => k.push_str("{\"unchanged_toast\":true}"),
                    }
                }
                k.push('}');
                crate::text::push_one_line(&mut key, &k);
                format!(
                    "could not apply the {} at {} of {txn} to table {} with key {key}",
                    r.op.word(),
                    r.lsn,
                    r.table
                )
            }
            Check::Inserts(rows) => format!(
                "could not apply {} inserts from {} of {txn} to table {}",
                rows.len(),
                rows[0].lsn,
                rows[0].table
            ),
        }
    }
}

/// The row count a row change's statement reported, against the one row it must change.
fn check_row(r: &RowChange, n: Option<u64>, context: &str) -> Result<(), ApplyError> {
    let refused = |why: &str| refusal(format!("{context}: {why}"));
    match (r.op, n) {
        (_, Some(1)) => Ok(()),
        (RowOp::Insert, _) => Err(refused(&format!("the server reported {n:?} rows inserted"))),
        (_, Some(0)) => Err(refused("no row with this key on the target")),
        (_, n) => Err(ApplyError::Refused(
            Message::new(format!(
                "{context}: {} rows with this key on the target (a table without a unique replica identity)",
                n.map_or("an unknown number of".to_owned(), |n| n.to_string())
            ))
            .detail("None of them was changed."),
        )),
    }
}

/// At most this many statements in one pipeline: their answers (a few dozen bytes each) must
/// fit in the socket buffers while libpq is still sending (the connection blocks), and a
/// larger pipeline saves next to nothing more.
const PIPELINE_STATEMENTS: usize = 1000;
/// `text` with the server's own detail and hint, kept apart as PostgreSQL sends them.
fn server_message(text: String, e: pgrw_ffi::Error) -> Message {
    Message { text, detail: e.detail, hint: e.hint }
}

/// At most this many rows in one INSERT (the statement is prepared once per shape).
const BATCH_ROWS: usize = 100;
/// The protocol's limit on parameters in one statement.
const MAX_PARAMS: usize = 65_535;

/// pgrecvlogical's own event trigger, installed again at each start: ours, not the source's
/// schema.
fn is_our_event_trigger(query: &str, objects: &[DdlObject]) -> bool {
    query == crate::logical::ddl::install_sql()
        || query == crate::logical::ddl::teardown_sql()
        || (!objects.is_empty()
            && objects.iter().all(|o| o.schema.as_deref() == Some(crate::logical::ddl::SCHEMA)))
}

/// Refuses a DDL record that cannot be run as it is (marked `"manual"` by our trigger, or
/// see [`by_hand`]), with what to do instead; `end` is where its source transaction ends.
fn refuse_by_hand(change: &Change, end: Lsn, ddl: DdlMode, txn: &str) -> Result<(), ApplyError> {
    let Change::Ddl { lsn, tag, query, objects, manual, .. } = change else {
        return Ok(());
    };
    if is_our_event_trigger(query, objects) || temporary_only(change) {
        return Ok(());
    }
    let Some(why) = manual.as_deref().or_else(|| by_hand(query, objects)) else {
        return Ok(());
    };
    let (mut shown, mut why_shown, mut did) = (String::new(), String::new(), String::new());
    crate::text::push_one_line(&mut shown, query);
    crate::text::push_one_line(&mut why_shown, why);
    let names: Vec<&str> = objects.iter().filter_map(|o| o.identity.as_deref()).collect();
    crate::text::push_one_line(&mut did, &names.join(", "));
    let again = if ddl == DdlMode::Apply { "--ddl=apply" } else { "--ddl=stop" };
    let mut chars = why_shown.chars();
    let detail = chars.next().map(|c| format!("{}{}.", c.to_uppercase(), chars.as_str())).unwrap_or_default();
    Err(ApplyError::Refused(
        Message::new(format!("DDL at {lsn} of {txn} cannot be applied as it is: {tag}: {shown}"))
            .detail(detail)
            .hint(format!(
                "Apply it by hand: run on the target only the DDL ({tag} of {did}), not the rest of the query \
                 string, whose row changes follow in the stream; then restart once with --ddl=ignore --until {end} \
                 to apply the rest of this source transaction, then again with {again}."
            )),
    ))
}

/// A record of DDL on temporary objects only: only a trigger from before this version wrote
/// those (the target has nothing to do for them).
fn temporary_only(change: &Change) -> bool {
    matches!(change, Change::Ddl { objects, .. }
        if !objects.is_empty() && objects.iter().all(|o| o.schema.as_deref().is_some_and(temp_schema)))
}

/// Why a DDL record that the trigger did not mark `"manual"` still cannot be run as it is (a
/// record of an older trigger, or what the trigger cannot see), or `None`.
fn by_hand(query: &str, objects: &[DdlObject]) -> Option<&'static str> {
    if !super::statement::single_statement(query) {
        return Some("its query string is not one statement");
    }
    if objects.iter().any(|o| o.schema.as_deref().is_some_and(temp_schema)) {
        return Some("the statement also changed temporary objects, whose names the target would resolve to other objects");
    }
    None
}

/// `pg_temp`, `pg_temp_3`, `pg_toast_temp_3`: a temporary schema (no other schema may be
/// named so: the `pg_` prefix is reserved).
fn temp_schema(s: &str) -> bool {
    let rest = s.strip_prefix("pg_toast_temp").or_else(|| s.strip_prefix("pg_temp"));
    match rest {
        Some("") => true,
        Some(n) => {
            n.strip_prefix('_').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
}

/// The column names of an insert that can go in a multi-row statement: at least one column,
/// no unchanged-TOAST marker (refused, and reported row by row).
fn insert_columns(r: &RowChange) -> Option<Vec<&str>> {
    if r.op != RowOp::Insert {
        return None;
    }
    let new = r.new.as_deref()?;
    if new.is_empty() || new.iter().any(|(_, v)| *v == Value::UnchangedToast) {
        return None;
    }
    Some(new.iter().map(|(c, _)| c.as_str()).collect())
}

/// `"id" = $3 AND "k" IS NULL`: the key's columns, a NULL by `IS NULL` (it equals nothing).
fn where_clause<'a>(
    key: &'a [(String, Value)],
    params: &mut Vec<Option<&'a str>>,
) -> Result<String, &'static str> {
    if key.is_empty() {
        return Err("the change has no key: the table has no replica identity, so the row cannot be found");
    }
    let mut parts = Vec::new();
    for (c, v) in key {
        match v {
            Value::Null => parts.push(format!("{} IS NULL", ident(c))),
            Value::Text(t) => {
                params.push(Some(t));
                parts.push(format!("{} = ${}", ident(c), params.len()));
            }
            Value::UnchangedToast => return Err("a key column has an unchanged-TOAST marker"),
        }
    }
    Ok(parts.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_that_is_not_run_as_it_is() {
        let obj =
            |schema: &str| DdlObject { schema: Some(schema.into()), identity: Some(format!("{schema}.t")) };
        assert_eq!(by_hand("ALTER TABLE t ADD c int", &[obj("public")]), None);
        assert!(by_hand("CREATE TABLE m (a int); INSERT INTO m VALUES (1)", &[obj("public")])
            .is_some_and(|w| w.contains("not one statement")));
        assert!(by_hand("DROP TABLE x, y", &[obj("public"), obj("pg_temp")])
            .is_some_and(|w| w.contains("temporary")));
        let marked = Change::Ddl {
            lsn: "0/10".parse().unwrap(),
            tag: "CREATE TABLE".into(),
            query: "DO $$BEGIN CREATE TABLE m (a int); INSERT INTO c VALUES (1); END$$".into(),
            objects: vec![obj("public")],
            manual: Some("it ran in a DO block\n".into()),
            search_path: None,
        };
        let end = "0/20".parse().unwrap();
        let Err(ApplyError::Refused(m)) = refuse_by_hand(&marked, end, DdlMode::Apply, "txn") else {
            panic!()
        };
        assert_eq!(m.text, "DDL at 0/10 of txn cannot be applied as it is: CREATE TABLE: DO $$BEGIN CREATE TABLE m (a int); INSERT INTO c VALUES (1); END$$");
        assert_eq!(m.detail.as_deref(), Some("It ran in a DO block\\n."));
        let hint = m.hint.unwrap();
        for part in [
            "Apply it by hand",
            "(CREATE TABLE of public.t)",
            "--ddl=ignore --until 0/20",
            "then again with --ddl=apply.",
        ] {
            assert!(hint.contains(part), "{part:?} not in {hint}");
        }
        assert!(refuse_by_hand(&marked, end, DdlMode::Stop, "txn").is_err());
        let ddl = |query: &str, schema: &str, manual: Option<&str>| Change::Ddl {
            lsn: "0/10".parse().unwrap(),
            tag: "CREATE TABLE".into(),
            query: query.into(),
            objects: vec![obj(schema)],
            manual: manual.map(str::to_owned),
            search_path: None,
        };
        assert!(refuse_by_hand(&ddl("CREATE TABLE m (a int)", "public", None), end, DdlMode::Apply, "txn")
            .is_ok());
        let two = ddl("CREATE TABLE m (a int); INSERT INTO m VALUES (1)", "public", None);
        assert!(refuse_by_hand(&two, end, DdlMode::Apply, "txn").is_err());
        let temp = ddl("CREATE TEMP TABLE x AS SELECT 1", "pg_temp", Some("x"));
        assert!(temporary_only(&temp) && refuse_by_hand(&temp, end, DdlMode::Apply, "txn").is_ok());
        for t in ["pg_temp", "pg_temp_3", "pg_toast_temp_12"] {
            assert!(temp_schema(t), "{t}");
        }
        for t in ["public", "pg_temp_", "pg_temp_x", "pg_temporary", "pg_toast", "pg_temp_3a", "app"] {
            assert!(!temp_schema(t), "{t}");
        }
    }

    #[test]
    fn where_clauses_quote_names_and_bind_values() {
        let key = vec![
            ("id".to_owned(), Value::Text("1".into())),
            ("we\"ird".to_owned(), Value::Null),
            ("x".to_owned(), Value::Text("'; DROP TABLE t; --".into())),
        ];
        let mut params = vec![Some("first")];
        let w = where_clause(&key, &mut params).unwrap();
        assert_eq!(w, "\"id\" = $2 AND \"we\"\"ird\" IS NULL AND \"x\" = $3");
        assert_eq!(params, vec![Some("first"), Some("1"), Some("'; DROP TABLE t; --")]);
        assert!(where_clause(&[], &mut params).is_err());
        assert!(where_clause(&[("k".into(), Value::UnchangedToast)], &mut params).is_err());
    }
}
