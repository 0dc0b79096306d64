//! pgrecvlogical's main job, on the receiver thread: the slot actions, then sessions of
//! streaming into the output, reconnecting with back-off after anything transient, until the
//! end position, a stop signal, or an error no retry can fix.
//!
//! Each session connects twice: a `replication=database` connection for the replication
//! commands (CREATE_REPLICATION_SLOT, START_REPLICATION), and an ordinary one for catalog
//! queries, publications, the DDL trigger and the initial snapshot.

use std::fmt;
use std::time::{Duration, Instant};

use pgrw_ffi::sys::StopSignals;
use pgrw_ffi::Conn;

use crate::logging::{Hinted, Message};
use crate::lsn::Lsn;
use crate::metrics::{self, ErrorKind};
use crate::server::{conn_params_for, sqlstate, ConnKind, Replication, Server, ServerError};
use crate::session::{self, SessionFailure};
use crate::sql::{ident, literal};

use super::config::{Action, Config, Output, Streaming};
use super::ddl;
use super::files::{FilesError, OutputDir};
use super::meta::{self, Identity, Meta, SnapshotState};
use super::pgoutput::Context;
use super::snapshot::{self, SnapshotSource};
use super::spool::Spools;
use super::stream::{Session, StreamEnd, StreamError, StreamOptions};
use super::writer::{SinkConfig, WriterConfig};

pub const KIND: ConnKind = ConnKind { replication: Replication::Database, application_name: "pgrecvlogical" };

/// How long a slot left by a killed run may stay active before we give up dropping it.
const DROP_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub enum RunError {
    Files(FilesError),
    Server(ServerError),
    Stream(StreamError),
    /// Something about the slot, publication or server that a retry cannot fix.
    Setup(Message),
    /// `--metrics-address` cannot be served.
    Metrics(metrics::ServeError),
}

impl SessionFailure for RunError {
    fn is_fatal(&self, first: bool) -> bool {
        match self {
            RunError::Stream(s) => s.is_fatal(),
            RunError::Server(s) => s.fatal || first,
            RunError::Files(_) | RunError::Setup(_) | RunError::Metrics(_) => true,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            RunError::Stream(s) => s.kind(),
            RunError::Server(s) => s.kind(),
            RunError::Files(_) | RunError::Setup(_) | RunError::Metrics(_) => ErrorKind::Setup,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Files(e) => e.fmt(f),
            RunError::Server(e) => e.fmt(f),
            RunError::Stream(e) => e.fmt(f),
            RunError::Setup(m) => m.fmt(f),
            RunError::Metrics(e) => e.fmt(f),
        }
    }
}

impl Hinted for RunError {
    fn detail(&self) -> Option<String> {
        match self {
            RunError::Files(e) => e.detail(),
            RunError::Server(e) => e.detail(),
            RunError::Stream(e) => e.detail(),
            RunError::Setup(m) => m.detail(),
            RunError::Metrics(e) => e.detail(),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            RunError::Files(e) => e.hint(),
            RunError::Server(e) => e.hint(),
            RunError::Stream(e) => e.hint(),
            RunError::Setup(m) => m.hint(),
            RunError::Metrics(e) => e.hint(),
        }
    }
}

impl std::error::Error for RunError {}

impl From<FilesError> for RunError {
    fn from(e: FilesError) -> RunError {
        RunError::Files(e)
    }
}
impl From<ServerError> for RunError {
    fn from(e: ServerError) -> RunError {
        RunError::Server(e)
    }
}
impl From<StreamError> for RunError {
    fn from(e: StreamError) -> RunError {
        RunError::Stream(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    SlotCreated,
    SlotExisted,
    Dropped,
    Listed,
    Stream(StreamEnd),
}

/// The highest pgoutput protocol version a server speaks.
pub fn max_proto_version(server_version: u32) -> u32 {
    match server_version {
        v if v >= 160000 => 4,
        v if v >= 150000 => 3,
        v if v >= 140000 => 2,
        _ => 1,
    }
}

/// Whether output that ends at `end` cannot have come from a server whose WAL ends at
/// `server_end`. A non-transactional message's unit ends one byte past its LSN, which is the
/// end of its WAL record (decode.c queues it at the record's end), so output from this
/// server's WAL ends at most one byte past it: a message that is the last record (PostgreSQL
/// 15 writes nothing after it on an idle server).
fn beyond_server_wal(end: Lsn, server_end: Lsn) -> bool {
    end.0 > server_end.0.saturating_add(1)
}

/// What the slot looks like in `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRow {
    plugin: Option<String>,
    database: Option<String>,
    confirmed_flush: Option<Lsn>,
}

/// The answer to CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Created {
    consistent_point: Lsn,
    snapshot: Option<String>,
}

/// The encoding every connection asked for (client_encoding=UTF8): the server converts names
/// and text to it, except from SQL_ASCII, which it cannot convert.
fn check_encoding(server: &Server) -> Result<(), RunError> {
    match server.parameter("client_encoding").as_deref() {
        Some("UTF8") | None => {}
        Some(enc) => {
            return Err(RunError::Setup(Message::new(format!(
                "the server uses client_encoding {enc} although UTF8 was asked for (server {})",
                server.name
            ))))
        }
    }
    if server.parameter("server_encoding").as_deref() == Some("SQL_ASCII") {
        log::warn!(
            "the database encoding is SQL_ASCII, which the server cannot convert: names must be UTF-8 and other text that is not is written with replacement characters"
        );
    }
    Ok(())
}

fn sql_error(server: &str, e: pgrw_ffi::Error) -> ServerError {
    ServerError {
        sqlstate: e.sqlstate,
        detail: e.detail.map(Into::into),
        hint: e.hint.map(Into::into),
        ..ServerError::new(server, e.message)
    }
}

/// The ordinary connection, with the same settings and password as the replication one.
fn sql_connection(
    cfg: &Config,
    password: Option<&str>,
    stop: &StopSignals,
    server: &str,
) -> Result<Conn, ServerError> {
    let mut params = conn_params_for(&cfg.conn, password, KIND);
    params.retain(|(k, _)| k != "replication");
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Conn::connect(&refs, Some(stop.fd()))
        .map_err(|e| ServerError::new(server, format!("could not connect: {}", e.message)))
}

fn slot_row(sql: &mut Conn, slot: &str, server: &str) -> Result<Option<SlotRow>, ServerError> {
    let r = sql
        .exec(&format!(
            "SELECT plugin, database, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
            literal(slot)
        ))
        .map_err(|e| sql_error(server, e))?;
    if r.ntuples() == 0 {
        return Ok(None);
    }
    Ok(Some(SlotRow {
        plugin: r.get(0, 0).map(str::to_owned),
        database: r.get(0, 1).map(str::to_owned),
        confirmed_flush: r.get(0, 2).and_then(|s| s.parse().ok()),
    }))
}

/// CREATE_REPLICATION_SLOT ... LOGICAL pgoutput; `None` when it already exists. Logged at
/// `level`: a warning when nobody asked for this slot by name on this run.
fn create_slot(
    server: &mut Server,
    slot: &str,
    export: bool,
    two_phase: bool,
    level: log::Level,
) -> Result<Option<Created>, RunError> {
    let sql = if server.version >= 150000 {
        let mut o = vec![format!("SNAPSHOT '{}'", if export { "export" } else { "nothing" })];
        if two_phase {
            o.push("TWO_PHASE true".into());
        }
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput ({})", o.join(", "))
    } else {
        let snap = if export { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" };
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput {snap}")
    };
    match server.conn().exec(&sql) {
        Ok(r) => {
            let consistent_point = r.get(0, 1).and_then(|s| s.parse().ok()).ok_or_else(|| {
                RunError::Setup(Message::new(format!(
                    "unexpected answer to CREATE_REPLICATION_SLOT (server {})",
                    server.name
                )))
            })?;
            log::log!(
                level,
                "created replication slot \"{slot}\" at {consistent_point} (server {})",
                server.name
            );
            Ok(Some(Created { consistent_point, snapshot: r.get(0, 2).map(str::to_owned) }))
        }
        Err(e) if e.sqlstate.as_deref() == Some(crate::server::sqlstate::DUPLICATE_OBJECT) => Ok(None),
        Err(e) => Err(server.wrap(e).into()),
    }
}

pub fn run(cfg: &Config, stop: &StopSignals) -> Result<Outcome, RunError> {
    let mut runner = Runner { cfg, stop, password: None, out: None, snapshot_done: false };
    match cfg.action {
        Action::ListSlots => runner.list_slots(),
        Action::Drop { slot, teardown } => runner.drop(slot, teardown),
        Action::CreateSlot { then_stream: false } => runner.create_only(),
        Action::CreateSlot { then_stream: true } => {
            // With --snapshot the session creates the slot, exporting its snapshot.
            if !cfg.snapshot {
                runner.create_only()?;
            }
            runner.stream_loop()
        }
        Action::Stream => runner.stream_loop(),
    }
}

struct Runner<'a> {
    cfg: &'a Config,
    stop: &'a StopSignals,
    password: Option<String>,
    out: Option<OutputDir>,
    snapshot_done: bool,
}

impl Runner<'_> {
    fn connect(&mut self) -> Result<(Server, Conn), RunError> {
        let server = Server::connect_as(&self.cfg.conn, &mut self.password, Some(self.stop.fd()), KIND)?;
        let sql = sql_connection(self.cfg, self.password.as_deref(), self.stop, &server.name)?;
        Ok((server, sql))
    }

    fn list_slots(&mut self) -> Result<Outcome, RunError> {
        let (server, mut sql) = self.connect()?;
        let r = sql
            .exec(
                "SELECT slot_name, plugin, database, active, confirmed_flush_lsn FROM pg_replication_slots \
                 WHERE slot_type = 'logical' ORDER BY slot_name",
            )
            .map_err(|e| sql_error(&server.name, e))?;
        println!("slot_name\tplugin\tdatabase\tactive\tconfirmed_flush_lsn");
        for row in 0..r.ntuples() {
            let cols: Vec<&str> = (0..5).map(|c| r.get(row, c).unwrap_or("")).collect();
            println!("{}", cols.join("\t"));
        }
        Ok(Outcome::Listed)
    }

    fn drop(&mut self, slot: bool, teardown: bool) -> Result<Outcome, RunError> {
        let (mut server, mut sql) = self.connect()?;
        if teardown {
            sql.exec(&ddl::teardown_sql()).map_err(|e| sql_error(&server.name, e))?;
            log::info!("removed the DDL event trigger and schema \"{}\"", ddl::SCHEMA);
        }
        if slot {
            log::info!("dropping replication slot \"{}\"", self.cfg.slot);
            if !server.drop_slot(&self.cfg.slot)? {
                return Err(RunError::Setup(Message::new(format!(
                    "replication slot \"{}\" does not exist (server {})",
                    self.cfg.slot, server.name
                ))));
            }
        }
        Ok(Outcome::Dropped)
    }

    fn create_only(&mut self) -> Result<Outcome, RunError> {
        let (mut server, _sql) = self.connect()?;
        match create_slot(&mut server, &self.cfg.slot, false, self.cfg.two_phase, log::Level::Info)? {
            Some(_) => Ok(Outcome::SlotCreated),
            None if self.cfg.if_not_exists => {
                log::info!("replication slot \"{}\" already exists", self.cfg.slot);
                Ok(Outcome::SlotExisted)
            }
            None => Err(RunError::Setup(
                Message::new(format!(
                    "replication slot \"{}\" already exists (server {})",
                    self.cfg.slot, server.name
                ))
                .hint("Use --if-not-exists to accept an existing slot."),
            )),
        }
    }

    fn stream_loop(&mut self) -> Result<Outcome, RunError> {
        if let Some(Output::Directory(dir)) = &self.cfg.output {
            // Lock before connecting, so a second writer into the directory is refused at once.
            self.out = Some(OutputDir::open(dir)?);
        }
        if let Some(address) = &self.cfg.metrics_address {
            let free_space = match &self.cfg.output {
                Some(Output::Directory(dir)) => Some((
                    dir.clone(),
                    "output_free_bytes",
                    "bytes available to pgrecvlogical on the output directory's filesystem",
                )),
                _ => None,
            };
            let ep = metrics::Endpoint { tool: "pgrecvlogical", scope: metrics::Scope::Logical, free_space };
            metrics::serve(address, ep).map_err(RunError::Metrics)?;
        }
        let (stop, no_loop) = (self.stop, self.cfg.no_loop);
        session::reconnect(stop, no_loop, || self.session()).map(Outcome::Stream)
    }

    /// The options this server and the command line agree on.
    fn negotiate(&self, server: &Server) -> Result<StreamOptions, RunError> {
        let cfg = self.cfg;
        let v = server.version;
        let max = max_proto_version(v);
        let version = cfg.proto_version.unwrap_or(max);
        let refuse = |what: String| {
            Err(RunError::Setup(Message::new(format!(
                "{what}, but the server runs PostgreSQL {} (server {})",
                server.version_text(),
                server.name
            ))))
        };
        if version > max {
            return refuse(format!(
                "protocol version {version} was asked for; the highest this server has is {max}"
            ));
        }
        let streaming = cfg.streaming.unwrap_or(if version >= 2 { Streaming::On } else { Streaming::Off });
        if streaming != Streaming::Off && version < 2 {
            return refuse("--streaming needs protocol version 2 (PostgreSQL 14)".into());
        }
        if streaming == Streaming::Parallel && version < 4 {
            return refuse("--streaming=parallel needs protocol version 4 (PostgreSQL 16)".into());
        }
        if cfg.two_phase && version < 3 {
            return refuse("--two-phase needs protocol version 3 (PostgreSQL 15)".into());
        }
        if (cfg.messages || cfg.binary) && v < 140000 {
            return refuse("--messages, --ddl and --binary need PostgreSQL 14".into());
        }
        Ok(StreamOptions {
            slot: cfg.slot.clone(),
            version,
            streaming,
            two_phase: cfg.two_phase,
            messages: cfg.messages,
            binary: cfg.binary,
            publications: cfg.publications.clone(),
            endpos: cfg.endpos,
            status_interval: cfg.status_interval,
            format: cfg.format,
            server_version: v,
            ddl_prefix: None,
        })
    }

    fn ensure_publications(&self, sql: &mut Conn, server: &str) -> Result<(), RunError> {
        let cfg = self.cfg;
        let names: Vec<String> = cfg.publications.iter().map(|p| literal(p)).collect();
        let r = sql
            .exec(&format!("SELECT pubname FROM pg_publication WHERE pubname IN ({})", names.join(", ")))
            .map_err(|e| sql_error(server, e))?;
        let found: Vec<String> = (0..r.ntuples()).filter_map(|i| r.get(i, 0).map(str::to_owned)).collect();
        for p in &cfg.publications {
            if found.contains(p) {
                continue;
            }
            if !cfg.create_publication {
                return Err(RunError::Setup(
                    Message::new(format!("publication \"{p}\" does not exist (server {server})"))
                        .hint("Create it, or use --create-publication."),
                ));
            }
            let what = if cfg.tables.is_empty() {
                "FOR ALL TABLES".to_owned()
            } else {
                format!("FOR TABLE {}", cfg.tables.join(", "))
            };
            sql.exec(&format!("CREATE PUBLICATION {} {what}", ident(p))).map_err(|e| sql_error(server, e))?;
            log::info!("created publication \"{p}\" {}", what.to_lowercase());
        }
        Ok(())
    }

    fn write_meta(&self, m: &Meta) -> Result<(), RunError> {
        match &self.out {
            Some(out) => Ok(meta::write(&out.dir, m)?),
            None => Ok(()),
        }
    }

    /// Drops the slot an interrupted snapshot left, waiting for the server to notice that the
    /// killed run's connection is gone (the slot stays active until its walsender exits).
    /// False when a stop signal came first.
    fn drop_slot_for_snapshot(&self, server: &mut Server) -> Result<bool, RunError> {
        let deadline = Instant::now() + DROP_WAIT;
        loop {
            match server.drop_slot(&self.cfg.slot) {
                Ok(_) => return Ok(true),
                Err(e) if e.has_sqlstate(sqlstate::OBJECT_IN_USE) && Instant::now() < deadline => {
                    log::debug!("{e}; waiting");
                    if session::sleep(self.stop, Duration::from_millis(200)) {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    // The steps in the order they may change things: every check that can refuse to start
    // (the directory's tie to this slot and cluster, the output's end against the server's
    // WAL) comes before publications, the DDL trigger, the slot or the metadata file change.
    fn session(&mut self) -> Result<StreamEnd, RunError> {
        let cfg = self.cfg;
        let (mut server, mut sql) = self.connect()?;
        server.named_synchronous_standby(KIND.application_name);
        let mut opts = self.negotiate(&server)?;
        let name = server.name.clone();
        check_encoding(&server)?;
        let (id, xlogpos) = identify(&mut server, &mut sql, &cfg.slot, &name)?;
        let found = self.read_meta(&id, &name)?;
        let recovered = self.recover(&mut sql, &name, xlogpos)?;
        let resume = recovered.as_ref().and_then(|r| r.resume);

        self.ensure_publications(&mut sql, &name)?;
        if cfg.ddl {
            sql.exec(&ddl::install_sql()).map_err(|e| sql_error(&name, e))?;
            let r = sql.exec(ddl::TOKEN_SQL).map_err(|e| sql_error(&name, e))?;
            let token = r.get(0, 0).filter(|t| !t.is_empty()).ok_or_else(|| {
                RunError::Setup(Message::new(format!(
                    "could not read the DDL token \"{}.ddl_token\" (server {name})",
                    ddl::SCHEMA
                )))
            })?;
            opts.ddl_prefix = Some(ddl::signed_prefix(token));
            log::debug!("DDL event trigger installed");
        }
        let Some(mut plan) = self.slot(&mut server, &mut sql, &name, &id, found, resume)? else {
            return Ok(StreamEnd::Stopped);
        };

        let start = resume.unwrap_or(Lsn::INVALID);
        // The first file is named after the first position it can hold.
        let name_start = resume
            .or(plan.created.as_ref().map(|c| c.consistent_point))
            .or(plan.existing.as_ref().and_then(|r| r.confirmed_flush))
            .unwrap_or(Lsn::INVALID);
        let spill_dir = self.spill_dir();
        Spools::clear_dir(&spill_dir).map_err(|err| {
            RunError::Files(FilesError::Io { path: spill_dir.clone(), action: "clear spill directory", err })
        })?;
        let wcfg = self.writer_config(&opts, recovered.as_ref(), spill_dir.clone(), name_start);
        let version = server.version;
        let mut session = Session::new(&mut server, &opts, self.stop, wcfg, start)?;
        if let Some((snap, at)) = plan.snapshot.take() {
            let src = SnapshotSource {
                snapshot: &snap,
                publications: &cfg.publications,
                at,
                format: cfg.format,
                server_version: version,
                server: &name,
            };
            self.write_snapshot(&mut sql, &src, &mut session, &mut plan.meta)?;
        }
        drop(sql);
        let (end, stats) = session.run(start)?;
        log::debug!(
            "session done: {} messages ({} bytes), {} streamed transactions, {} bytes written in {} units with {} fsyncs",
            stats.messages,
            stats.bytes,
            stats.streamed_commits,
            stats.writer.bytes,
            stats.writer.units,
            stats.writer.fsyncs
        );
        if cfg.spill_dir.is_none() && self.out.is_none() {
            let _ = std::fs::remove_dir(&spill_dir);
        }
        Ok(end)
    }

    /// The metadata of the output directory, checked against this cluster, database and slot:
    /// the directory is tied to one slot before anything changes here or on the server.
    fn read_meta(&self, id: &Identity, name: &str) -> Result<Option<Meta>, RunError> {
        let Some(out) = &self.out else { return Ok(None) };
        match meta::read(&out.dir)? {
            Some(Ok(m)) => match m.mismatch(&out.dir, id, name) {
                Some(why) => Err(RunError::Setup(why)),
                None => Ok(Some(m)),
            },
            Some(Err(why)) => Err(RunError::Setup(
                Message::new(format!(
                    "invalid metadata file \"{}\": {why}",
                    out.dir.join(meta::META_FILE).display()
                ))
                .hint("Restore it, or write into a new directory."),
            )),
            None => Ok(None),
        }
    }

    /// Where the output ends: that is where this session resumes.
    fn recover(
        &self,
        sql: &mut Conn,
        name: &str,
        xlogpos: Lsn,
    ) -> Result<Option<super::files::Recovered>, RunError> {
        let cfg = self.cfg;
        // The slot's confirmed position was fsync'ed: recovery checks every byte after it.
        let durable = slot_row(sql, &cfg.slot, name)?.and_then(|r| r.confirmed_flush);
        let Some(out) = &self.out else { return Ok(None) };
        let recovered = out.recover(cfg.format, !cfg.no_sync, durable)?;
        if let Some(r) = recovered.resume.filter(|&r| beyond_server_wal(r, xlogpos)) {
            // Only WAL the server flushed is ever decoded: output beyond it comes from another
            // cluster's history, and the server would skip every transaction below it.
            return Err(RunError::Setup(Message::new(format!(
                "the output ends at {r}, beyond the server's current WAL position {xlogpos} (server {name})"
            )).detail(
                "The directory holds changes of another history of this cluster (restored from a backup, or a \
                 promoted standby).",
            )
            .hint("Write into a new directory.")));
        }
        Ok(Some(recovered))
    }

    /// The slot this session streams from, checked or created, and the snapshot to write
    /// first, if any. `None` when a stop signal came while waiting to drop a slot.
    fn slot(
        &mut self,
        server: &mut Server,
        sql: &mut Conn,
        name: &str,
        id: &Identity,
        found: Option<Meta>,
        resume: Option<Lsn>,
    ) -> Result<Option<SlotPlan>, RunError> {
        let cfg = self.cfg;
        let mut existing = slot_row(sql, &cfg.slot, name)?;
        // A directory without metadata: new, or written by a version without it, which is
        // adopted only when its slot is here to continue it.
        let mut unrecorded = self.out.is_some() && found.is_none();
        if unrecorded && resume.is_some() && existing.is_none() {
            return Err(RunError::Setup(Message::new(format!(
                "output directory \"{}\" has no {} and replication slot \"{}\" does not exist (server {name})",
                self.out.as_ref().map(|o| o.dir.display().to_string()).unwrap_or_default(),
                meta::META_FILE,
                cfg.slot
            )).detail("The output may come from another cluster.")
            .hint("Write into a new directory.")));
        }
        let mut meta = found.unwrap_or(Meta { id: id.clone(), snapshot: SnapshotState::None });
        let Some(recreating) =
            self.retry_interrupted_snapshot(server, &mut meta, existing.as_ref(), resume, id)?
        else {
            return Ok(None);
        };
        if recreating {
            existing = None;
        }
        let created = match &existing {
            Some(row) => {
                check_slot(row, &cfg.slot, &id.database, name)?;
                None
            }
            None => self.create_missing_slot(server, &mut meta, &mut unrecorded, recreating, resume, name)?,
        };
        let snapshot = self.snapshot_to_take(created.as_ref(), &mut meta, resume)?;
        if unrecorded {
            self.write_meta(&meta)?;
        }
        if let (Some(row), Some(r)) = (&existing, resume) {
            if let Some(c) = row.confirmed_flush.filter(|&c| c > r) {
                log::debug!(
                    "the slot confirmed {c}, the output ends at {r}: idle positions were confirmed since"
                );
            }
        }
        Ok(Some(SlotPlan { meta, existing, created, snapshot }))
    }

    /// A snapshot of this directory that was interrupted: its slot's exported snapshot cannot
    /// be read again, so the slot is dropped to be created again whatever the flags, since
    /// this run (not a typo) asked for it before. `Some(true)` when the slot was dropped,
    /// `None` when a stop signal came first.
    fn retry_interrupted_snapshot(
        &self,
        server: &mut Server,
        meta: &mut Meta,
        existing: Option<&SlotRow>,
        resume: Option<Lsn>,
        id: &Identity,
    ) -> Result<Option<bool>, RunError> {
        let cfg = self.cfg;
        if meta.snapshot != SnapshotState::Pending || !cfg.snapshot || self.snapshot_done {
            return Ok(Some(false));
        }
        if resume.is_some() {
            // The snapshot became durable just before a crash; nothing comes before it.
            meta.snapshot = SnapshotState::Done;
            self.write_meta(meta)?;
            return Ok(Some(false));
        }
        let ours = existing.filter(|r| {
            r.plugin.as_deref() == Some("pgoutput") && r.database.as_deref() == Some(id.database.as_str())
        });
        if ours.is_none() {
            return Ok(Some(false));
        }
        log::warn!(
            detail = "Its snapshot cannot be read again: dropping the slot, creating it again and taking a new snapshot.";
            "the initial snapshot of replication slot \"{}\" was interrupted",
            cfg.slot
        );
        if !self.drop_slot_for_snapshot(server)? {
            return Ok(None);
        }
        Ok(Some(true))
    }

    /// Creates the slot that does not exist, when that was asked for.
    fn create_missing_slot(
        &self,
        server: &mut Server,
        meta: &mut Meta,
        unrecorded: &mut bool,
        recreating: bool,
        resume: Option<Lsn>,
        name: &str,
    ) -> Result<Option<Created>, RunError> {
        let cfg = self.cfg;
        // A forgotten slot holds back WAL and the catalog: create one only when asked,
        // by --create-slot-if-missing, or by --create-slot --start --snapshot (whose
        // slot is created here, exporting its snapshot).
        let asked = matches!(cfg.action, Action::CreateSlot { then_stream: true }) && cfg.snapshot;
        if !cfg.create_slot_if_missing && !recreating && (!asked || self.snapshot_done) {
            return Err(RunError::Setup(Message::new(format!(
                "replication slot \"{}\" does not exist (server {name})",
                cfg.slot
            )).hint(
                "Create it with --create-slot (--start to stream at once), or pass --create-slot-if-missing.",
            )));
        }
        let level = if asked { log::Level::Info } else { log::Level::Warn };
        let export = cfg.snapshot && !self.snapshot_done && resume.is_none();
        if export && self.out.is_some() {
            // Recorded first: a crash after the slot exists must find it recorded.
            meta.snapshot = SnapshotState::Pending;
            self.write_meta(meta)?;
            *unrecorded = false;
        }
        create_slot(server, &cfg.slot, export, cfg.two_phase, level)
    }

    /// The exported snapshot and its consistent point, when --snapshot still has to be
    /// written; an error when it is needed but the slot was not created by this run.
    fn snapshot_to_take(
        &self,
        created: Option<&Created>,
        meta: &mut Meta,
        resume: Option<Lsn>,
    ) -> Result<Option<(String, Lsn)>, RunError> {
        let cfg = self.cfg;
        if !cfg.snapshot || self.snapshot_done || resume.is_some() {
            return Ok(None);
        }
        if let Some(Created { consistent_point, snapshot: Some(s) }) = created {
            return Ok(Some((s.clone(), *consistent_point)));
        }
        if meta.snapshot == SnapshotState::Pending {
            // Someone else's slot: never ours to drop at the next start.
            meta.snapshot = SnapshotState::None;
            self.write_meta(meta)?;
        }
        Err(RunError::Setup(Message::new(format!(
            "--snapshot needs a slot created by this run, but slot \"{}\" already exists and the output holds no snapshot",
            cfg.slot
        )).hint("Drop the slot (--drop-slot) or leave out --snapshot.")))
    }

    fn spill_dir(&self) -> std::path::PathBuf {
        match (&self.cfg.spill_dir, &self.out) {
            (Some(d), _) => d.clone(),
            (None, Some(out)) => out.spill_dir(),
            (None, None) => std::env::temp_dir().join(format!("pgrecvlogical-{}", std::process::id())),
        }
    }

    fn writer_config(
        &self,
        opts: &StreamOptions,
        recovered: Option<&super::files::Recovered>,
        spill_dir: std::path::PathBuf,
        name_start: Lsn,
    ) -> WriterConfig {
        let cfg = self.cfg;
        let sink = match (&cfg.output, recovered) {
            (Some(Output::Directory(dir)), Some(rec)) => SinkConfig::Directory {
                dir: dir.clone(),
                rotate_size: cfg.rotate_size,
                rotate_interval: cfg.rotate_interval,
                partial: rec.partial.clone(),
                retain: cfg.retain,
            },
            _ => SinkConfig::Stdout,
        };
        WriterConfig {
            sink,
            format: cfg.format,
            parse: Context {
                version: opts.version,
                in_stream: false,
                abort_info: opts.streaming == Streaming::Parallel && opts.version >= 4,
            },
            sync: !cfg.no_sync,
            memory_limit: cfg.memory_limit,
            spill_dir,
            start: name_start,
            min_free: cfg.min_free,
            slot: cfg.slot.clone(),
        }
    }

    /// Writes the initial snapshot through the session's writer, then records it done: it is
    /// never taken twice into one directory.
    fn write_snapshot(
        &mut self,
        sql: &mut Conn,
        src: &SnapshotSource<'_>,
        session: &mut Session<'_>,
        meta: &mut Meta,
    ) -> Result<(), RunError> {
        log::info!("writing the initial snapshot at {}", src.at);
        let stats = snapshot::copy(sql, src, session)?;
        log::info!("initial snapshot written: {} rows of {} tables", stats.rows, stats.tables);
        self.snapshot_done = true;
        meta.snapshot = SnapshotState::Done;
        self.write_meta(meta)
    }
}

/// What the slot step decided for a session.
struct SlotPlan {
    meta: Meta,
    existing: Option<SlotRow>,
    created: Option<Created>,
    snapshot: Option<(String, Lsn)>,
}

/// The server's system identifier and current WAL position, and the database this session
/// decodes: what the output directory is tied to.
fn identify(
    server: &mut Server,
    sql: &mut Conn,
    slot: &str,
    name: &str,
) -> Result<(Identity, Lsn), RunError> {
    let sys = server.identify_system()?;
    let db = sql
        .exec("SELECT oid::int8, datname FROM pg_database WHERE datname = current_database()")
        .map_err(|e| sql_error(name, e))?;
    let id = Identity {
        system_id: sys.system_id,
        database_oid: db.get(0, 0).and_then(|s| s.parse().ok()).unwrap_or(0),
        database: db.get(0, 1).unwrap_or_default().to_owned(),
        slot: slot.to_owned(),
    };
    Ok((id, sys.xlogpos))
}

/// An existing slot must be a pgoutput slot of the database this session connected to.
fn check_slot(row: &SlotRow, slot: &str, database: &str, name: &str) -> Result<(), RunError> {
    if row.plugin.as_deref() != Some("pgoutput") {
        return Err(RunError::Setup(
            Message::new(format!(
                "replication slot \"{slot}\" is not a pgoutput logical slot (plugin {}; server {name})",
                row.plugin.as_deref().unwrap_or("none: physical")
            ))
            .hint("Use another slot."),
        ));
    }
    if row.database.as_deref() != Some(database) {
        let theirs = row.database.as_deref().unwrap_or("");
        return Err(RunError::Setup(
            Message::new(format!(
                "replication slot \"{slot}\" belongs to database \"{theirs}\", but the connection is to \"{database}\" (server {name})"
            ))
            .hint(format!("Give -d dbname={theirs}.")),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::publication_list;

    #[test]
    fn output_one_byte_past_the_servers_wal_is_a_message_at_its_end() {
        assert!(!beyond_server_wal(Lsn(0x152EA90), Lsn(0x152EA90)));
        assert!(!beyond_server_wal(Lsn(0x152EA91), Lsn(0x152EA90)), "a message ending the WAL");
        assert!(beyond_server_wal(Lsn(0x152EA92), Lsn(0x152EA90)));
        assert!(beyond_server_wal(Lsn(0x2000000), Lsn(0x152EA90)));
    }

    #[test]
    fn protocol_versions_by_server() {
        assert_eq!(max_proto_version(130012), 1);
        assert_eq!(max_proto_version(140000), 2);
        assert_eq!(max_proto_version(150004), 3);
        assert_eq!(max_proto_version(160000), 4);
        assert_eq!(max_proto_version(180001), 4);
    }

    #[test]
    fn publication_names_quote() {
        assert_eq!(publication_list(&["a".into(), "B c".into()]), "\"a\",\"B c\"");
    }
}
