//! The apply loop: read the directory's identity, connect to the target, then hand each
//! complete unit past the applied position to the target, one transaction each, until told
//! to stop. A lost connection is retried (the position on the target says where to go on);
//! anything the target refuses stops the run with the unit named, nothing of it applied.

use std::fmt;
use std::fs;
use std::time::{Duration, Instant};

use pgrw_ffi::sys::{poll, Interest, StopSignals};
use pgrw_ffi::Conn;

use crate::config::PasswordMode;
use crate::durable::fsync_dir;
use crate::lag::{DEBUG_EVERY, INFO_EVERY};
use crate::logical::files::PARTIAL_SUFFIX;
use crate::logical::meta::{Meta, META_FILE};
use crate::logical::retention::register;
use crate::lsn::Lsn;
use crate::server::{conn_params_for, ConnKind, Replication};

use super::config::Config;
use super::follow::{Follower, Next};
use super::records::Unit;
use super::target::{source_id, ApplyError, Target};

const KIND: ConnKind = ConnKind { replication: Replication::Database, application_name: "pgapplylogical" };
/// How often a caught-up applier looks at the directory again.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The wait before connecting again after a lost connection.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// The registered position is moved at most this often (each move is a durable write).
const REGISTER_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// The hints are still part of the messages here (`...; run it on the target and ...`); they
/// are not yet split out as the other tools' are.
impl crate::logging::Hinted for RunError {}

/// What a run applied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub applied: Lsn,
    pub transactions: u64,
    pub rows: u64,
}

fn read_meta(cfg: &Config) -> Result<Meta, RunError> {
    let path = cfg.directory.join(META_FILE);
    let content = fs::read(&path).map_err(|e| {
        RunError(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "\"{}\" is not an output directory of pgrecvlogical (it has no {META_FILE}); start pgrecvlogical with -D first",
                cfg.directory.display()
            )
        } else {
            format!("could not read \"{}\": {e}", path.display())
        })
    })?;
    Meta::parse(&content).map_err(|e| RunError(format!("invalid \"{}\": {e}", path.display())))
}

fn connect(cfg: &Config, stop: &StopSignals, password: Option<&str>) -> Result<(Conn, String), String> {
    let mut params = conn_params_for(&cfg.conn, password, KIND);
    // An ordinary connection, with the settings pgrecvlogical pins (the values' text forms
    // are read back exactly as they were written).
    params.retain(|(k, _)| k != "replication");
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let conn = Conn::connect(&refs, Some(stop.fd()))
        .map_err(|e| format!("could not connect to the target: {}", e.message))?;
    let name = format!("{}:{}", conn.host(), conn.port());
    Ok((conn, name))
}

/// Registers the applied position in the directory, so pgrecvlogical's retention rule keeps
/// every file after it. A failure is not ours to stop for (the position on the target is what
/// counts): it is logged once, and retention may then remove files not yet applied, which
/// the next start reports as an error rather than skip.
struct Registration {
    last: Option<Lsn>,
    at: Instant,
    warned: bool,
}

impl Registration {
    /// Registers `pos`, which `target` has committed, once it is durable there. Without a
    /// working connection nothing is registered (the next run does it).
    fn update(&mut self, cfg: &Config, target: &mut Target, pos: Lsn, force: bool) {
        if self.last == Some(pos) || (!force && self.at.elapsed() < REGISTER_EVERY) {
            return;
        }
        if let Err(e) = target.make_durable() {
            log::debug!("not registering position {pos}: {e}");
            return;
        }
        match register(&cfg.directory, &cfg.consumer_name, pos) {
            Ok(()) => {
                self.last = Some(pos);
                self.at = Instant::now();
            }
            Err(e) if !self.warned => {
                log::warn!(
                    "could not register the applied position in \"{}\" as consumer \"{}\": {e}; pgrecvlogical's retention does not know how far this applier is",
                    cfg.directory.display(),
                    cfg.consumer_name
                );
                self.warned = true;
            }
            Err(_) => {}
        }
    }
}

/// Waits up to `d` or until a stop signal; true when stopped.
fn wait(stop: &StopSignals, d: Duration) -> bool {
    let _ = poll(&[(stop.fd(), Interest::Read)], Some(d));
    stop.received().is_some()
}

fn remove_applied(files: Vec<std::path::PathBuf>, dir: &std::path::Path) -> Result<(), RunError> {
    let mut removed = false;
    for f in files {
        if f.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
            continue;
        }
        match fs::remove_file(&f) {
            Ok(()) => {
                log::info!("removed applied file \"{}\"", f.display());
                removed = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RunError(format!("could not remove applied file \"{}\": {e}", f.display())))
            }
        }
    }
    if removed {
        fsync_dir(dir)
            .map_err(|e| RunError(format!("could not fsync directory \"{}\": {e}", dir.display())))?;
    }
    Ok(())
}

pub fn run(cfg: &Config, stop: &StopSignals) -> Result<Outcome, RunError> {
    let meta = read_meta(cfg)?;
    let source = source_id(meta.id.system_id, meta.id.database_oid, &meta.id.slot);
    let mut out = Outcome::default();
    let started = Instant::now();
    let mut reg = Registration { last: None, at: Instant::now(), warned: false };
    // -W: asked once, before the first connection (a password the server asks for without
    // -W comes from ~/.pgpass, PGPASSWORD or the connection string).
    let password = match cfg.conn.password {
        PasswordMode::Always => Some(
            pgrw_ffi::sys::read_password("Password: ", Some(stop.fd()))
                .map_err(|e| RunError(format!("could not read password: {e}")))?,
        ),
        _ => None,
    };
    loop {
        if stop.received().is_some() {
            return Ok(out);
        }
        let (conn, server) = match connect(cfg, stop, password.as_deref()) {
            Ok(c) => c,
            Err(e) if stop.received().is_some() => {
                log::info!("{e}");
                return Ok(out);
            }
            Err(e) if cfg.no_loop => return Err(RunError(e)),
            Err(e) => {
                log::error!("{e}; trying again in {} s", RETRY_EVERY.as_secs());
                if wait(stop, RETRY_EVERY) {
                    return Ok(out);
                }
                continue;
            }
        };
        let (mut target, applied) = match Target::new(conn, source.clone(), server.clone()) {
            Ok(t) => t,
            Err(ApplyError::Connection(e)) if !cfg.no_loop => {
                log::error!("{e}; trying again in {} s", RETRY_EVERY.as_secs());
                if wait(stop, RETRY_EVERY) {
                    return Ok(out);
                }
                continue;
            }
            Err(e) => return Err(RunError(e.to_string())),
        };
        out.applied = applied;
        reg.update(cfg, &mut target, applied, true);
        log::info!(
            "applying \"{}\" (source {source}) to server {server} after position {applied}",
            cfg.directory.display()
        );
        let result = follow(cfg, stop, &mut target, &mut out, started, &mut reg);
        reg.update(cfg, &mut target, out.applied, true);
        match result? {
            Some(()) => return Ok(out),
            None if cfg.no_loop => return Err(RunError("connection to the target lost".into())),
            None => {
                if wait(stop, RETRY_EVERY) {
                    return Ok(out);
                }
            }
        }
    }
}

/// Applies units until done (`Some`) or the connection is lost (`None`).
fn follow(
    cfg: &Config,
    stop: &StopSignals,
    target: &mut Target,
    out: &mut Outcome,
    started: Instant,
    reg: &mut Registration,
) -> Result<Option<()>, RunError> {
    let mut follower = Follower::new(&cfg.directory, out.applied);
    let every = if cfg.log.level >= log::LevelFilter::Debug { DEBUG_EVERY } else { INFO_EVERY };
    let mut next_line = Instant::now() + every;
    let done = |out: &Outcome, why: &str| {
        log::info!(
            "{why}: applied up to {} ({} transactions, {} rows in this run)",
            out.applied,
            out.transactions,
            out.rows
        );
    };
    loop {
        if let Some(sig) = stop.received() {
            done(out, &format!("stopping on signal {sig}"));
            return Ok(Some(()));
        }
        if cfg.until.is_some_and(|u| out.applied >= u) {
            done(out, "end position reached");
            return Ok(Some(()));
        }
        if Instant::now() >= next_line {
            log_progress(out, started);
            next_line = Instant::now() + every;
        }
        let next = follower.next_unit().map_err(|e| RunError(e.to_string()))?;
        // Files are finished only once every unit in them was applied (or was already).
        if cfg.remove_applied {
            let finished = follower.take_finished();
            if !finished.is_empty() {
                // Only what is durable on the target may go (see Target::make_durable).
                match target.make_durable() {
                    Ok(()) => remove_applied(finished, &cfg.directory)?,
                    Err(ApplyError::Connection(e)) => {
                        log::error!("{e}; connecting again in {} s", RETRY_EVERY.as_secs());
                        return Ok(None);
                    }
                    Err(e) => return Err(RunError(e.to_string())),
                }
            }
        }
        let unit = match next {
            Next::Unit(u) => u,
            Next::CaughtUp => {
                reg.update(cfg, target, out.applied, false);
                if cfg.until_caught_up {
                    done(out, "caught up");
                    return Ok(Some(()));
                }
                wait(stop, POLL_EVERY);
                continue;
            }
        };
        if unit.end_lsn <= out.applied {
            continue;
        }
        if cfg.until.is_some_and(|u| unit.end_lsn > u) {
            done(out, "end position reached");
            return Ok(Some(()));
        }
        if unit.txn.is_none() {
            // A standalone record: nothing to apply, nothing to record.
            continue;
        }
        if !apply_unit(cfg, target, out, reg, &unit)? {
            return Ok(None);
        }
    }
}

fn log_progress(out: &Outcome, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    log::info!(
        "applying: applied up to {}; {} transactions, {} rows in this run ({:.0} rows/s)",
        out.applied,
        out.transactions,
        out.rows,
        out.rows as f64 / secs
    );
}

/// Applies one transaction and counts it. False when the connection to the target was lost
/// (the caller connects again); a refusal of the target ends the run.
fn apply_unit(
    cfg: &Config,
    target: &mut Target,
    out: &mut Outcome,
    reg: &mut Registration,
    unit: &Unit,
) -> Result<bool, RunError> {
    match target.apply(unit, cfg.ddl, &cfg.skip_tables) {
        Ok(a) => {
            out.applied = unit.end_lsn;
            if !a.already {
                out.transactions += 1;
                out.rows += a.rows;
            }
            log::trace!("applied the unit ending at {} ({} rows)", unit.end_lsn, a.rows);
            reg.update(cfg, target, out.applied, false);
            Ok(true)
        }
        Err(ApplyError::Connection(e)) => {
            log::error!("{e}; connecting again in {} s", RETRY_EVERY.as_secs());
            Ok(false)
        }
        Err(ApplyError::Refused(e)) => {
            Err(RunError(format!("{e}; nothing after {} is applied", out.applied)))
        }
    }
}
