//! The archiver's main job, run on the receiver thread: slot actions, then sessions of
//! streaming into the archive, reconnecting with back-off after anything transient, until the
//! end position, a stop signal, or an error no retry can fix.

use std::fmt;

use pgrw_ffi::sys::StopSignals;

use crate::archive::{Archive, ArchiveError, ClusterId};
use crate::cli::{Action, Config, Durability};
use crate::lsn::Lsn;
use crate::receiver::{Receiver, StreamEnd, StreamError, StreamOptions};
use crate::server::{Server, ServerError, SlotInfo};
use crate::session::{self, SessionFailure};
use crate::walfile::Tli;
use crate::writer::WriterConfig;

#[derive(Debug)]
pub enum RunError {
    Archive(ArchiveError),
    Server(ServerError),
    Stream(StreamError),
    Slot(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Archive(e) => e.fmt(f),
            RunError::Server(e) => e.fmt(f),
            RunError::Stream(e) => e.fmt(f),
            RunError::Slot(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RunError {}

impl SessionFailure for RunError {
    fn is_fatal(&self, first: bool) -> bool {
        match self {
            RunError::Stream(s) => s.is_fatal(),
            RunError::Server(s) => s.fatal || first,
            RunError::Archive(_) | RunError::Slot(_) => true,
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
            false => Err(RunError::Slot(format!(
                "replication slot \"{slot}\" does not exist (server {})",
                server.name
            ))),
        };
    }
    log::info!("creating replication slot \"{slot}\"");
    match server.create_physical_slot(slot)? {
        true => Ok(Outcome::SlotCreated),
        false if cfg.if_not_exists => {
            log::info!("replication slot \"{slot}\" already exists");
            Ok(Outcome::SlotExisted)
        }
        false => Err(RunError::Slot(format!(
            "replication slot \"{slot}\" already exists (server {}); use --if-not-exists to accept an existing slot",
            server.name
        ))),
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
}

impl<'a> Archiver<'a> {
    fn new(cfg: &'a Config, stop: &'a StopSignals) -> Result<Archiver<'a>, RunError> {
        // Lock the directory before connecting, so a second archiver is refused at once.
        let archive = Archive::open(&cfg.directory)?;
        Ok(Archiver { cfg, stop, archive, password: None, cluster: None })
    }

    fn run(&mut self) -> Result<Outcome, RunError> {
        let (stop, no_loop) = (self.stop, self.cfg.no_loop);
        session::reconnect(stop, no_loop, || self.session()).map(Outcome::Stream)
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
                return Err(RunError::Server(server.fatal(format!(
                    "server is now {cluster}, but this run archived {known}; archive each cluster into its own directory"
                ))));
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
        if let Some(t) = scan.max_tli.filter(|&t| t > sys.tli) {
            return Err(ArchiveError::FutureTimeline {
                dir: self.archive.dir.clone(),
                archive_tli: t,
                server_tli: sys.tli,
            }
            .into());
        }
        if scan.newest.is_none() {
            self.archive.set_group_access(group_access)?;
        }

        let slot_start = match &cfg.slot {
            Some(slot) => self.ensure_slot(&mut server, slot)?,
            None => None,
        };
        self.warn_about_sync_traps(&mut server);

        // Resume from the archive; else where the slot holds WAL for us; else the server's
        // current position; always from the start of that segment.
        let (start, tli) = scan.resume_point(seg_size).or(slot_start).unwrap_or((sys.xlogpos, sys.tli));
        let start = start.segment_start(seg_size);

        let opts = StreamOptions {
            slot: cfg.slot.clone(),
            endpos: cfg.endpos,
            durability: cfg.durability,
            status_interval: cfg.status_interval,
            seg_size,
        };
        let writer_cfg = WriterConfig {
            dir: self.archive.dir.clone(),
            seg_size,
            durability: cfg.durability,
            file_mode: Archive::file_mode(group_access),
            system_id: sys.system_id,
            block_size,
        };
        let receiver =
            Receiver::new(&mut server, &opts, self.stop, writer_cfg, start).map_err(RunError::Stream)?;
        receiver.run(start, tli).map_err(RunError::Stream)
    }

    /// Makes sure the slot exists and is physical; returns where it holds WAL from.
    fn ensure_slot(&mut self, server: &mut Server, slot: &str) -> Result<Option<(Lsn, Tli)>, RunError> {
        match server.read_replication_slot(slot)? {
            Some(SlotInfo::Logical) => Err(RunError::Slot(format!(
                "replication slot \"{slot}\" is a logical slot (server {}); pgreceivewal needs a physical slot: use another name or drop it",
                server.name
            ))),
            Some(SlotInfo::Physical { restart_lsn: Some(lsn), restart_tli }) => {
                Ok(Some((lsn, restart_tli.unwrap_or(server.identify_system()?.tli))))
            }
            Some(SlotInfo::Physical { .. }) => Ok(None),
            Some(SlotInfo::Missing) | None => {
                // Older servers cannot tell us; creating is then also the existence check.
                if server.create_physical_slot(slot)? {
                    // A warning: if the slot existed before (and was dropped, or lost with a
                    // failover), the server may have removed WAL no slot held any more.
                    log::warn!(
                        "created replication slot \"{slot}\" on server {}: it did not exist; if this archive streamed through a slot of that name before, WAL between then and now may be missing from the archive",
                        server.name
                    );
                }
                Ok(None)
            }
        }
    }

    /// The two ways a synchronous archiver goes wrong quietly.
    fn warn_about_sync_traps(&self, server: &mut Server) {
        let sync = self.cfg.durability == Durability::Synchronous;
        if sync && self.cfg.slot.is_none() {
            log::warn!(
                "--synchronous without a replication slot: while pgreceivewal is disconnected the server may remove WAL it has not archived; use -S"
            );
        }
        if !sync && self.cfg.slot.is_some() {
            let app = server.application_name().unwrap_or_else(|| "pgreceivewal".into());
            if let Ok(names) = server.show("synchronous_standby_names") {
                if standby_names_include(&names, &app) {
                    log::warn!(
                        "the server lists \"{app}\" in synchronous_standby_names but --synchronous is not set: commits will wait until a whole segment is archived; add --synchronous"
                    );
                }
            }
        }
    }
}

/// Whether `synchronous_standby_names` (e.g. `FIRST 1 (a, "b")`, `ANY 2 (*)`, `a,b`) names
/// `app`. Names are case-insensitive unless quoted; `*` matches any standby.
pub fn standby_names_include(list: &str, app: &str) -> bool {
    let mut s = list.trim();
    for kw in ["FIRST", "ANY"] {
        // `get`, not slicing: the list may start with a multi-byte character.
        if s.len() > kw.len() && s.get(..kw.len()).is_some_and(|p| p.eq_ignore_ascii_case(kw)) {
            s = s[kw.len()..].trim_start();
            s = s.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
        }
    }
    if let Some(rest) = s.strip_prefix(|c: char| c.is_ascii_digit()) {
        s = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
    }
    let s = s.trim_start_matches('(').trim_end_matches(')');
    s.split(',').map(str::trim).filter(|n| !n.is_empty()).any(|n| {
        if n == "*" {
            return true;
        }
        match n.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted == app,
            None => n.eq_ignore_ascii_case(app),
        }
    })
}

impl Server {
    /// The application_name the server knows us by (reported at connection start).
    fn application_name(&self) -> Option<String> {
        self.parameter("application_name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_names() {
        assert!(standby_names_include("pgreceivewal", "pgreceivewal"));
        assert!(standby_names_include("a, PGReceiveWAL", "pgreceivewal"));
        assert!(standby_names_include("FIRST 1 (a, pgreceivewal)", "pgreceivewal"));
        assert!(standby_names_include("ANY 2 (x,y,\"pgreceivewal\")", "pgreceivewal"));
        assert!(standby_names_include("2 (x, pgreceivewal)", "pgreceivewal"));
        assert!(standby_names_include("*", "pgreceivewal"));
        assert!(!standby_names_include("\"PGRECEIVEWAL\"", "pgreceivewal"));
        assert!(!standby_names_include("", "pgreceivewal"));
        assert!(!standby_names_include("pg_receivewal", "pgreceivewal"));
        assert!(!standby_names_include("\"ééé\", x", "pgreceivewal"));
        assert!(standby_names_include("ééé, pgreceivewal", "pgreceivewal"));
    }
}
