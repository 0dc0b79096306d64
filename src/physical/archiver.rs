//! The archiver's main job, run on the receiver thread: slot actions, then sessions of
//! streaming into the archive, reconnecting with back-off after anything transient, until the
//! end position, a stop signal, or an error no retry can fix.

use std::fmt;

use pgrw_ffi::sys::StopSignals;

use crate::config::{Action, Config, Durability};
use crate::diskspace::Retention;
use crate::logging::{Hinted, Message};
use crate::lsn::Lsn;
use crate::metrics::{self, ErrorKind};
use crate::physical::archive::{Archive, ArchiveError, ClusterId, Scan};
use crate::physical::receiver::{Receiver, StreamEnd, StreamError, StreamOptions};
use crate::physical::ship::Shipper;
use crate::physical::walfile::Tli;
use crate::physical::writer::WriterConfig;
use crate::server::{sqlstate, Server, ServerError, SlotInfo};
use crate::session::{self, SessionFailure};

#[derive(Debug)]
pub enum RunError {
    Archive(ArchiveError),
    Server(ServerError),
    Stream(StreamError),
    Slot(Message),
    /// `--metrics-address` cannot be served.
    Metrics(metrics::ServeError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Archive(e) => e.fmt(f),
            RunError::Server(e) => e.fmt(f),
            RunError::Stream(e) => e.fmt(f),
            RunError::Slot(m) => m.fmt(f),
            RunError::Metrics(e) => e.fmt(f),
        }
    }
}

impl Hinted for RunError {
    fn detail(&self) -> Option<String> {
        match self {
            RunError::Archive(e) => e.detail(),
            RunError::Server(e) => e.detail(),
            RunError::Stream(e) => e.detail(),
            RunError::Slot(m) => m.detail(),
            RunError::Metrics(e) => e.detail(),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            RunError::Archive(e) => e.hint(),
            RunError::Server(e) => e.hint(),
            RunError::Stream(e) => e.hint(),
            RunError::Slot(m) => m.hint(),
            RunError::Metrics(e) => e.hint(),
        }
    }
}

impl std::error::Error for RunError {}

impl SessionFailure for RunError {
    fn is_fatal(&self, first: bool) -> bool {
        match self {
            RunError::Stream(s) => s.is_fatal(),
            RunError::Server(s) => s.fatal || first,
            RunError::Archive(_) | RunError::Slot(_) | RunError::Metrics(_) => true,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            RunError::Stream(s) => s.kind(),
            RunError::Server(s) => s.kind(),
            RunError::Archive(_) | RunError::Slot(_) | RunError::Metrics(_) => ErrorKind::Setup,
        }
    }
}

impl From<ArchiveError> for RunError {
    fn from(e: ArchiveError) -> RunError {
        RunError::Archive(e)
    }
}

impl From<ServerError> for RunError {
    fn from(e: ServerError) -> RunError {
        RunError::Server(e)
    }
}

/// What a finished run did, for the exit message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    SlotCreated,
    SlotExisted,
    SlotDropped,
    Stream(StreamEnd),
}

/// The name to tell the user to run: the one we were started as (a `pg_receivewal` symlink
/// says `pg_receivewal --create-slot`).
fn prog() -> &'static str {
    crate::tool::progname("pgreceivewal")
}

pub fn run(cfg: &Config, stop: &StopSignals) -> Result<Outcome, RunError> {
    match cfg.action {
        Action::CreateSlot | Action::DropSlot => slot_action(cfg, stop),
        Action::Stream => Archiver::new(cfg, stop)?.run(),
    }
}

fn slot_action(cfg: &Config, stop: &StopSignals) -> Result<Outcome, RunError> {
    let slot = cfg.slot.as_deref().expect("cli requires --slot with slot actions");
    let mut password = None;
    let mut server = Server::connect(&cfg.conn, &mut password, Some(stop.fd()))?;
    if cfg.action == Action::DropSlot {
        log::info!("dropping replication slot \"{slot}\"");
        return match server.drop_slot(slot)? {
            true => Ok(Outcome::SlotDropped),
            false => Err(RunError::Slot(Message::new(format!(
                "replication slot \"{slot}\" does not exist (server {})",
                server.name
            )))),
        };
    }
    log::info!("creating replication slot \"{slot}\"");
    match server.create_physical_slot(slot)? {
        true => Ok(Outcome::SlotCreated),
        false if cfg.if_not_exists => {
            log::info!("replication slot \"{slot}\" already exists");
            Ok(Outcome::SlotExisted)
        }
        false => Err(RunError::Slot(
            Message::new(format!("replication slot \"{slot}\" already exists (server {})", server.name))
                .hint("Use --if-not-exists to accept an existing slot."),
        )),
    }
}

struct Archiver<'a> {
    cfg: &'a Config,
    stop: &'a StopSignals,
    archive: Archive,
    password: Option<String>,
    /// The identity of the server of the first session: a later session that reaches a
    /// different cluster (a failover to the wrong host, a rebuilt server) is refused.
    cluster: Option<ClusterId>,
    /// `--segment-command`: started by the first session (it needs the segment size), kept
    /// across reconnects.
    shipper: Option<Shipper>,
}

impl<'a> Archiver<'a> {
    fn new(cfg: &'a Config, stop: &'a StopSignals) -> Result<Archiver<'a>, RunError> {
        // Lock the directory before connecting, so a second archiver is refused at once.
        let archive = Archive::open(&cfg.directory)?;
        let c = cfg.compression;
        if c.method == crate::compression::Method::Lz4 && c.level >= 3 {
            // LZ4's levels 3 to 12 are LZ4 HC, which lz4_flex does not have; the files are the
            // same format, only larger than pg_receivewal's at that level.
            log::warn!(
                "lz4 level {} is written at LZ4's fast level: LZ4 HC (levels 3 to 12) is not available",
                c.level
            );
        }
        if let Some(address) = &cfg.metrics_address {
            let ep = metrics::Endpoint {
                tool: "pgreceivewal",
                scope: metrics::Scope::Physical,
                free_space: Some((
                    archive.dir.clone(),
                    "archive_free_bytes",
                    "bytes available to pgreceivewal on the archive directory's filesystem",
                )),
            };
            metrics::serve(address, ep).map_err(RunError::Metrics)?;
        }
        Ok(Archiver { cfg, stop, archive, password: None, cluster: None, shipper: None })
    }

    fn run(&mut self) -> Result<Outcome, RunError> {
        let (stop, no_loop) = (self.stop, self.cfg.no_loop);
        let end = session::reconnect(stop, no_loop, || self.session()).map(Outcome::Stream);
        // While the archive is still locked: the command in flight finishes.
        if let Some(shipper) = self.shipper.take() {
            shipper.finish();
        }
        end
    }

    /// One connection: identify the server, check it against the archive, find where to
    /// start, and stream.
    fn session(&mut self) -> Result<StreamEnd, RunError> {
        let cfg = self.cfg;
        let mut server = Server::connect(&cfg.conn, &mut self.password, Some(self.stop.fd()))?;
        let sys = server.identify_system()?;
        let seg_size = server.wal_segment_size()?;
        let block_size = server.wal_block_size()?;
        let group_access = server.group_access()?;
        let cluster = ClusterId { system_id: sys.system_id, seg_size };
        if let Some(known) = self.cluster {
            if known != cluster {
                return Err(RunError::Server(ServerError {
                    hint: Some("Archive each cluster into its own directory.".into()),
                    ..server.fatal(format!("server is now {cluster}, but this run archived {known}"))
                }));
            }
        }
        log::debug!(
            "connected to server {} (PostgreSQL {}): system {}, timeline {}, WAL at {}, segment size {seg_size}",
            server.name,
            server.version_text(),
            sys.system_id,
            sys.tli,
            sys.xlogpos
        );

        let scan = self.check_archive(cluster, sys.tli, group_access)?;
        let resume = scan.resume_point(seg_size);
        let (slot_start, slot_state) = match &cfg.slot {
            Some(slot) => self.ensure_slot(&mut server, slot, scan.newest.is_some())?,
            None => (None, SlotState::Unknown),
        };
        self.warn_about_sync_traps(&mut server);

        // Resume from the archive; else where the slot holds WAL for us; else the server's
        // current position; always from the start of that segment.
        let (start, tli) = resume.or(slot_start).unwrap_or((sys.xlogpos, sys.tli));
        let start = start.segment_start(seg_size);
        let lost = LostWal {
            slot: cfg.slot.as_deref(),
            slot_state,
            dir: &self.archive.dir,
            resume: resume.map(|(lsn, _)| lsn),
            server_at: sys.xlogpos,
        };

        let opts = StreamOptions {
            slot: cfg.slot.clone(),
            endpos: cfg.endpos,
            durability: cfg.durability,
            status_interval: cfg.status_interval,
            seg_size,
        };
        let writer_cfg = self.writer_config(seg_size, sys.system_id, block_size, group_access);
        let receiver = Receiver::new(&mut server, &opts, self.stop, writer_cfg, start)
            .map_err(|e| lost.explain(RunError::Stream(e)))?;
        receiver.run(start, tli).map_err(|e| lost.explain(RunError::Stream(e)))
    }

    /// The archive against the server it is about to stream from: the same cluster, no
    /// timeline from its future, no leftovers; starts the `--segment-command` shipper.
    fn check_archive(
        &mut self,
        cluster: ClusterId,
        server_tli: Tli,
        group_access: bool,
    ) -> Result<Scan, RunError> {
        let cfg = self.cfg;
        let seg_size = cluster.seg_size;
        let scan = self.archive.scan(seg_size)?;
        self.archive.check_cluster(cluster, &scan)?;
        self.cluster = Some(cluster);
        for name in &scan.foreign {
            log::warn!(
                "ignoring file \"{name}\" in archive \"{}\": it is not WAL",
                self.archive.dir.display()
            );
        }
        self.archive.remove_leftovers(&scan)?;
        if let Some(t) = scan.max_tli.filter(|&t| t > server_tli) {
            return Err(ArchiveError::FutureTimeline {
                dir: self.archive.dir.clone(),
                archive_tli: t,
                server_tli,
            }
            .into());
        }
        if scan.newest.is_none() {
            self.archive.set_group_access(group_access)?;
        }
        if let (Some(cmd), None) = (&cfg.segment_command, &self.shipper) {
            self.shipper = Some(Shipper::start(&self.archive.dir, cmd, seg_size)?);
        }
        Ok(scan)
    }

    /// Where and how the writer stores this session's WAL.
    fn writer_config(
        &self,
        seg_size: u64,
        system_id: u64,
        block_size: u32,
        group_access: bool,
    ) -> WriterConfig {
        let cfg = self.cfg;
        WriterConfig {
            dir: self.archive.dir.clone(),
            seg_size,
            durability: cfg.durability,
            file_mode: Archive::file_mode(group_access),
            system_id,
            block_size,
            ship: self.shipper.as_ref().map(Shipper::queue),
            min_free: cfg.min_free,
            retention: match &cfg.slot {
                Some(s) => Retention::PhysicalSlot(s.clone()),
                None => Retention::None,
            },
            compression: cfg.compression,
        }
    }

    /// Makes sure the slot exists and is physical, creating a missing one only when asked to
    /// (`--create-slot-if-missing`) and only the slot the archive was streamed with; records
    /// the slot in the archive's metadata. Returns where the slot holds WAL from, and what
    /// READ_REPLICATION_SLOT said of it.
    fn ensure_slot(
        &mut self,
        server: &mut Server,
        slot: &str,
        archive_has_wal: bool,
    ) -> Result<(Option<(Lsn, Tli)>, SlotState), RunError> {
        let recorded = self.archive.recorded_slot()?;
        let info = server.read_replication_slot(slot)?;
        let (start, state) = match info {
            Some(SlotInfo::Logical) => {
                return Err(RunError::Slot(
                    Message::new(format!(
                        "replication slot \"{slot}\" is a logical slot (server {})",
                        server.name
                    ))
                    .detail("pgreceivewal needs a physical slot.")
                    .hint("Use another name or drop it."),
                ))
            }
            Some(SlotInfo::Physical { restart_lsn: Some(lsn), restart_tli }) => {
                let tli = restart_tli.unwrap_or(server.identify_system()?.tli);
                (Some((lsn, tli)), SlotState::Holds(lsn))
            }
            Some(SlotInfo::Physical { restart_lsn: None, .. }) => (None, SlotState::HoldsNothing),
            Some(SlotInfo::Missing) | None => {
                if !self.create_missing_slot(
                    server,
                    slot,
                    recorded.as_deref(),
                    archive_has_wal,
                    info.is_some(),
                )? {
                    return Ok((None, SlotState::Unknown));
                }
                (None, SlotState::Unknown)
            }
        };
        if recorded.as_deref() != Some(slot) {
            if let Some(r) = &recorded {
                log::warn!(
                    hint = format!("Drop \"{r}\" if nothing else uses it, or it holds WAL for ever.");
                    "archive \"{}\" was streamed with replication slot \"{r}\" and now is with \"{slot}\"",
                    self.archive.dir.display()
                );
            }
            self.archive.record_slot(slot)?;
        }
        Ok((start, state))
    }

    /// The slot does not exist (`missing`), or the server cannot tell (before PostgreSQL 15):
    /// creates it if `--create-slot-if-missing` allows. False when nothing is known of it yet
    /// (START_REPLICATION will tell), and the archive's metadata is not to record it.
    fn create_missing_slot(
        &self,
        server: &mut Server,
        slot: &str,
        recorded: Option<&str>,
        archive_has_wal: bool,
        missing: bool,
    ) -> Result<bool, RunError> {
        // As pg_receivewal: a mistyped name must not leave a slot that holds WAL on
        // the server for ever.
        if !self.cfg.create_slot_if_missing {
            if missing {
                return Err(RunError::Server(ServerError {
                    hint: Some(create_slot_hint(slot).into()),
                    ..server.transient(format!("replication slot \"{slot}\" does not exist"))
                }));
            }
            // Before PostgreSQL 15 nothing tells us; START_REPLICATION will.
            return Ok(false);
        }
        let may_create = match recorded {
            Some(r) => r == slot,
            None => !archive_has_wal,
        };
        if !may_create {
            let streamed_with = match recorded {
                Some(r) => format!("was streamed with slot \"{r}\""),
                None => "already holds WAL streamed without a recorded slot".to_string(),
            };
            if !missing {
                // Creating is the only way to know on this server; do not try.
                return Ok(false);
            }
            return Err(RunError::Slot(
                Message::new(format!(
                    "replication slot \"{slot}\" does not exist (server {}), and --create-slot-if-missing creates only the slot an archive was streamed with: archive \"{}\" {streamed_with}",
                    server.name,
                    self.archive.dir.display()
                ))
                .hint(format!(
                    "Check the slot name, or create the slot with {} --create-slot -S {slot}.",
                    prog()
                )),
            ));
        }
        // Older servers cannot tell us; creating is then also the existence check.
        if server.create_physical_slot(slot)? {
            // A warning: if the slot existed before (and was dropped, or lost with a
            // failover), the server may have removed WAL no slot held any more.
            log::warn!(
                detail = "It holds WAL on that server until it is dropped, and if this archive streamed \
                          through a slot of that name before, WAL between then and now may be missing from \
                          the archive.";
                "created replication slot \"{slot}\" on server {}: it did not exist",
                server.name
            );
        }
        Ok(true)
    }

    /// The two ways a synchronous archiver goes wrong quietly.
    fn warn_about_sync_traps(&self, server: &mut Server) {
        let sync = self.cfg.durability == Durability::Synchronous;
        if sync && self.cfg.slot.is_none() {
            log::warn!(
                detail = "While pgreceivewal is disconnected the server may remove WAL it has not archived.",
                hint = "Use -S.";
                "--synchronous without a replication slot"
            );
        }
        // Asked at every connect: the metric says whether this server may wait for us.
        let named = server.named_synchronous_standby(prog());
        if !sync && self.cfg.slot.is_some() && named == Some(true) {
            let app = server.application_name().unwrap_or_else(|| prog().into());
            log::warn!(
                hint = "Add --synchronous.";
                "the server lists \"{app}\" in synchronous_standby_names but --synchronous is not set: commits will wait until a whole segment is archived"
            );
        }
    }
}

/// What to do about a slot that does not exist on the server.
fn create_slot_hint(slot: &str) -> String {
    format!(
        "Create it with {} --create-slot -S {slot}, or pass --create-slot-if-missing where a server may lack it (a new primary after a failover).",
        prog()
    )
}

/// What READ_REPLICATION_SLOT said of the slot before streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// The slot holds WAL from this position.
    Holds(Lsn),
    /// The slot exists but holds no WAL: invalidated (`max_slot_wal_keep_size`), or created
    /// without reserving WAL and never used.
    HoldsNothing,
    /// No slot, a server too old to say (before 15), or a slot just created.
    Unknown,
}

/// What an archiver session knows when the server says WAL it needs is gone, so that the
/// error says which slot, what is missing from the archive, and what to do.
struct LostWal<'a> {
    slot: Option<&'a str>,
    slot_state: SlotState,
    dir: &'a std::path::Path,
    /// Where the archive resumes (`None`: it holds no WAL yet).
    resume: Option<Lsn>,
    /// The server's WAL position when the session started.
    server_at: Lsn,
}

impl LostWal<'_> {
    /// Rewrites a "WAL removed" or "slot invalidated" error from START_REPLICATION or the
    /// stream into one final error; anything else passes through.
    fn explain(&self, e: RunError) -> RunError {
        let server_err = match &e {
            RunError::Stream(StreamError::Server(s)) | RunError::Server(s) => s,
            _ => return e,
        };
        let removed = server_err.has_sqlstate(sqlstate::UNDEFINED_FILE);
        // On PostgreSQL 18 an invalidated slot cannot even be acquired; READ_REPLICATION_SLOT
        // showed it holding no WAL (55000 is not only used for this).
        let invalidated = self.slot.is_some()
            && !matches!(self.slot_state, SlotState::Holds(_))
            && server_err.has_sqlstate(sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE);
        // START_REPLICATION on a server that cannot tell us beforehand (before 15), or a
        // slot dropped since we looked.
        let missing = self.slot.is_some() && server_err.has_sqlstate(sqlstate::UNDEFINED_OBJECT);
        if !removed && !invalidated && !missing {
            return e;
        }
        let what = &server_err.message;
        let dir = self.dir.display();
        let (msg, detail, hint) = match (self.slot, missing) {
            (Some(slot), true) => (what.clone(), None, create_slot_hint(slot)),
            (None, _) => (
                what.clone(),
                Some(self.gap()),
                "Use a replication slot (-S) so the server keeps WAL until it is archived, and start a new archive directory after a new base backup.".to_owned(),
            ),
            (Some(slot), false) => {
                let why = match self.slot_state {
                    _ if invalidated => format!(
                        "replication slot \"{slot}\" has been invalidated (pg_replication_slots shows it with wal_status 'lost')"
                    ),
                    SlotState::HoldsNothing => format!(
                        "replication slot \"{slot}\" holds no WAL any more: it has been invalidated (max_slot_wal_keep_size; pg_replication_slots shows it with wal_status 'lost')"
                    ),
                    SlotState::Holds(r) if self.resume.is_some_and(|a| a < r) => format!(
                        "replication slot \"{slot}\" holds WAL only from {r}, after the end of archive \"{dir}\" (was the slot dropped and recreated?)"
                    ),
                    _ => format!(
                        "the server no longer has WAL that archive \"{dir}\" needs, although replication slot \"{slot}\" is used (was the slot created after that WAL was removed, as on a new primary?)"
                    ),
                };
                (
                    format!("{why}: {what}"),
                    Some(self.gap()),
                    format!(
                        "Take a new base backup and start a new archive directory, and recreate the slot ({} --drop-slot -S {slot}, then --create-slot -S {slot}).",
                        prog()
                    ),
                )
            }
        };
        // A slot dropped since we looked is retried after a reconnect, as a missing slot is.
        RunError::Server(ServerError {
            message: msg,
            fatal: !missing,
            detail: detail.map(Into::into),
            hint: Some(hint.into()),
            ..server_err.clone()
        })
    }

    /// The WAL missing from the archive, as far as we know it.
    fn gap(&self) -> String {
        match self.resume {
            Some(at) => format!(
                "The archive cannot be continued without a gap: WAL from {at} up to the oldest WAL the server still has (at most up to {}, its position) is missing from archive \"{}\".",
                self.server_at,
                self.dir.display()
            ),
            None => format!("Archive \"{}\" holds no WAL yet, so none is missing from it.", self.dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(sqlstate: &str, message: &str) -> RunError {
        RunError::Stream(StreamError::Server(ServerError {
            server: "db1:5432".into(),
            message: message.into(),
            sqlstate: Some(sqlstate.into()),
            ..ServerError::new("", "")
        }))
    }

    /// The message with its detail and hint, for checking words wherever they went.
    fn all(e: &ServerError) -> String {
        format!("{e}\n{}\n{}", e.detail().unwrap_or_default(), e.hint().unwrap_or_default())
    }

    fn explained(lost: &LostWal, e: RunError) -> ServerError {
        match lost.explain(e) {
            RunError::Server(s) => s,
            other => panic!("not explained: {other}"),
        }
    }

    #[test]
    fn lost_wal_is_explained() {
        let dir = std::path::Path::new("/wal");
        let lost = LostWal {
            slot: Some("arch"),
            slot_state: SlotState::HoldsNothing,
            dir,
            resume: Some(Lsn(0x700000)),
            server_at: Lsn(0x925488),
        };
        // 15: the slot holds nothing and the WAL is gone.
        let e = explained(
            &lost,
            server_error("58P01", "requested WAL segment 000000010000000000000007 has already been removed"),
        );
        assert!(e.fatal);
        for want in [
            "replication slot \"arch\" holds no WAL any more: it has been invalidated",
            "wal_status 'lost'",
            "requested WAL segment 000000010000000000000007 has already been removed",
            "WAL from 0/700000 up to the oldest WAL the server still has (at most up to 0/925488",
            "Take a new base backup",
            "pgreceivewal --drop-slot -S arch, then --create-slot -S arch",
        ] {
            assert!(all(&e).contains(want), "{want:?} missing: {}", all(&e));
        }
        // 18: the server refuses the invalidated slot itself.
        let e = explained(
            &LostWal { slot_state: SlotState::Unknown, ..lost },
            server_error("55000", "can no longer access replication slot \"arch\""),
        );
        assert!(e.fatal && e.message.starts_with("replication slot \"arch\" has been invalidated"), "{e}");
        // 55000 for a slot that holds WAL is something else: passed through.
        let holding = LostWal { slot_state: SlotState::Holds(Lsn(0x700000)), ..lost };
        assert!(matches!(holding.explain(server_error("55000", "x")), RunError::Stream(_)));
        // A slot that holds WAL only after the archive's end.
        let e = explained(
            &LostWal { slot_state: SlotState::Holds(Lsn(0x900000)), ..lost },
            server_error("58P01", "requested WAL segment has already been removed"),
        );
        assert!(e.message.contains("holds WAL only from 0/900000"), "{e}");
        // An empty archive misses nothing.
        let e = explained(&LostWal { resume: None, ..lost }, server_error("55000", "can no longer access"));
        assert!(all(&e).contains("holds no WAL yet, so none is missing from it"), "{}", all(&e));
        // Without a slot: the advice to use one. 55000 without a slot is not ours to explain.
        let no_slot = LostWal { slot: None, slot_state: SlotState::Unknown, ..lost };
        let e = explained(&no_slot, server_error("58P01", "requested WAL segment has already been removed"));
        assert!(e.fatal && all(&e).contains("Use a replication slot (-S)"), "{}", all(&e));
        assert!(matches!(no_slot.explain(server_error("55000", "x")), RunError::Stream(_)));
        // A slot dropped between READ_REPLICATION_SLOT and START_REPLICATION: retried later.
        let e = explained(&lost, server_error("42704", "replication slot \"arch\" does not exist"));
        assert!(!e.fatal && all(&e).contains("--create-slot-if-missing"), "{}", all(&e));
        // Anything else passes through untouched.
        assert!(matches!(lost.explain(server_error("XX000", "other")), RunError::Stream(_)));
    }
}
