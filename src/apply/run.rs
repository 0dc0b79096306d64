//! The apply loop: read the directory's identity, connect to the target, then hand each
//! complete unit past the applied position to the target, one transaction each, until told
//! to stop. A lost connection is retried (the position on the target says where to go on);
//! anything the target refuses stops the run with the unit named, nothing of it applied.
//! With `--metrics-address` the same server as the other tools' serves its metrics; the loop
//! publishes them as it goes (`progress`).

use std::fmt;
use std::fs;
use std::time::{Duration, Instant};

use pgrw_ffi::sys::{poll, Interest, StopSignals};
use pgrw_ffi::Conn;

use crate::config::PasswordMode;
use crate::durable::fsync_dir;
use crate::logging::{Hinted, Message};
use crate::logical::files::PARTIAL_SUFFIX;
use crate::logical::meta::{Meta, META_FILE};
use crate::logical::retention::register;
use crate::lsn::Lsn;
use crate::metrics::{self, ErrorKind};
use crate::server::{conn_params_for, ConnKind, Replication};

use super::config::Config;
use super::follow::{FollowError, Follower, Next};
use super::progress::Watch;
use super::records::Unit;
use super::target::{source_id, ApplyError, Target};

const KIND: ConnKind = ConnKind { replication: Replication::Database, application_name: "pgapplylogical" };
/// How often a caught-up applier looks at the directory again.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The wait before connecting again after a lost connection.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// The registered position is moved at most this often (each move is a durable write).
const REGISTER_EVERY: Duration = Duration::from_secs(5);

/// What stopped a run: PostgreSQL's primary message, detail and hint, and the kind it is
/// counted under in `pgapplylogical_errors_total`.
#[derive(Debug)]
pub struct RunError {
    pub message: Message,
    pub kind: ErrorKind,
}

impl RunError {
    fn new(kind: ErrorKind, message: Message) -> RunError {
        RunError { message, kind }
    }

    fn setup(text: String) -> RunError {
        RunError::new(ErrorKind::Setup, Message::new(text))
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message.fmt(f)
    }
}

impl std::error::Error for RunError {}

impl Hinted for RunError {
    fn detail(&self) -> Option<String> {
        self.message.detail.clone()
    }
    fn hint(&self) -> Option<String> {
        self.message.hint.clone()
    }
}

impl From<FollowError> for RunError {
    fn from(e: FollowError) -> RunError {
        // A record we refuse is what the other tools call a protocol error.
        let kind = if matches!(e, FollowError::Bad { .. }) { ErrorKind::Protocol } else { ErrorKind::Setup };
        RunError::new(kind, Message { text: e.to_string(), detail: e.detail(), hint: e.hint() })
    }
}

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
        if e.kind() == std::io::ErrorKind::NotFound {
            RunError::new(
                ErrorKind::Setup,
                Message::new(format!(
                    "\"{}\" is not an output directory of pgrecvlogical (it has no {META_FILE})",
                    cfg.directory.display()
                ))
                .hint("Start pgrecvlogical with -D on this directory first."),
            )
        } else {
            RunError::setup(format!("could not read \"{}\": {e}", path.display()))
        }
    })?;
    Meta::parse(&content).map_err(|e| RunError::setup(format!("invalid \"{}\": {e}", path.display())))
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
                    detail = "pgrecvlogical's retention does not know how far this applier is.";
                    "could not register the applied position in \"{}\" as consumer \"{}\": {e}",
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

/// Waits up to [`POLL_EVERY`] for more to apply, a stop signal, or word from the target; an
/// error when that word is that the connection is gone.
fn wait_idle(stop: &StopSignals, target: &mut Target) -> Result<(), ApplyError> {
    // A call made while idle (registering the position runs make_durable) may have found the
    // connection lost: libpq has closed its socket then, and a wait on it would never wake, so
    // the loss would go unnoticed (`/health`, the reconnect) until the next transaction.
    if target.lost() {
        return target.check_idle();
    }
    let ready = poll(&[(stop.fd(), Interest::Read), (target.socket(), Interest::Read)], Some(POLL_EVERY));
    match ready {
        Ok(r) if r[1] => target.check_idle(),
        _ => Ok(()),
    }
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
                return Err(RunError::new(
                    ErrorKind::Writer,
                    Message::new(format!("could not remove applied file \"{}\": {e}", f.display())),
                ))
            }
        }
    }
    if removed {
        fsync_dir(dir).map_err(|e| {
            RunError::new(
                ErrorKind::Writer,
                Message::new(format!("could not fsync directory \"{}\": {e}", dir.display())),
            )
        })?;
    }
    Ok(())
}

/// Runs until done or stopped; an error that ends the run is counted in the metrics.
pub fn run(cfg: &Config, stop: &StopSignals) -> Result<Outcome, RunError> {
    let r = serve_metrics(cfg).and_then(|()| apply_loop(cfg, stop));
    if let Err(e) = &r {
        metrics::get().errors.inc(e.kind);
    }
    r
}

/// `--metrics-address`: served before anything else, so an address that cannot be used stops
/// the tool at once, as in the other tools.
fn serve_metrics(cfg: &Config) -> Result<(), RunError> {
    let Some(address) = &cfg.metrics_address else { return Ok(()) };
    let ep = metrics::Endpoint { tool: "pgapplylogical", scope: metrics::Scope::Apply, free_space: None };
    metrics::serve(address, ep).map(|_| ()).map_err(|e| {
        RunError::new(ErrorKind::Setup, Message { text: e.to_string(), detail: e.detail(), hint: e.hint() })
    })
}

/// A lost connection, counted as the other tools count theirs: an error and a reconnect.
fn count_reconnect() {
    let m = metrics::get();
    m.errors.inc(ErrorKind::Connection);
    m.reconnects.inc();
}

fn apply_loop(cfg: &Config, stop: &StopSignals) -> Result<Outcome, RunError> {
    let meta = read_meta(cfg)?;
    let source = source_id(meta.id.system_id, meta.id.database_oid, &meta.id.slot);
    let mut out = Outcome::default();
    let mut watch = Watch::new(&cfg.directory);
    let mut reg = Registration { last: None, at: Instant::now(), warned: false };
    // -W: asked once, before the first connection (a password the server asks for without
    // -W comes from ~/.pgpass, PGPASSWORD or the connection string).
    let password = match cfg.conn.password {
        PasswordMode::Always => Some(
            pgrw_ffi::sys::read_password("Password: ", Some(stop.fd()))
                .map_err(|e| RunError::setup(format!("could not read password: {e}")))?,
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
            Err(e) if cfg.no_loop => return Err(RunError::new(ErrorKind::Connection, Message::new(e))),
            Err(e) => {
                count_reconnect();
                log::error!("{e}; trying again in {} s", RETRY_EVERY.as_secs());
                if wait(stop, RETRY_EVERY) {
                    return Ok(out);
                }
                continue;
            }
        };
        let (mut target, applied) = match Target::new(conn, source.clone(), server.clone()) {
            Ok(t) => t,
            Err(e @ ApplyError::Connection(_)) if !cfg.no_loop => {
                count_reconnect();
                crate::report!(log::Level::Error, e; "{e}; trying again in {} s", RETRY_EVERY.as_secs());
                if wait(stop, RETRY_EVERY) {
                    return Ok(out);
                }
                continue;
            }
            Err(e) => {
                let kind = if matches!(e, ApplyError::Connection(_)) {
                    ErrorKind::Connection
                } else {
                    ErrorKind::Server
                };
                return Err(RunError::new(kind, e.message().clone()));
            }
        };
        let connected = metrics::connected();
        out.applied = applied;
        reg.update(cfg, &mut target, applied, true);
        log::info!(
            "applying \"{}\" (source {source}) to server {server} after position {applied}",
            cfg.directory.display()
        );
        let result = follow(cfg, stop, &mut target, &mut out, &mut watch, &mut reg);
        drop(connected);
        reg.update(cfg, &mut target, out.applied, true);
        match result? {
            Some(()) => return Ok(out),
            None if cfg.no_loop => {
                return Err(RunError::new(
                    ErrorKind::Connection,
                    Message::new("connection to the target lost"),
                ))
            }
            None => {
                count_reconnect();
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
    watch: &mut Watch,
    reg: &mut Registration,
) -> Result<Option<()>, RunError> {
    let mut follower = Follower::new(&cfg.directory, out.applied);
    let debug = cfg.log.level >= log::LevelFilter::Debug;
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
        watch.tick(out.applied, out.transactions, out.rows, debug);
        let next = follower.next_unit()?;
        // Files are finished only once every unit in them was applied (or was already).
        if cfg.remove_applied {
            let finished = follower.take_finished();
            if !finished.is_empty() {
                // Only what is durable on the target may go (see Target::make_durable).
                match target.make_durable() {
                    Ok(()) => remove_applied(finished, &cfg.directory)?,
                    Err(e @ ApplyError::Connection(_)) => {
                        crate::report!(log::Level::Error, e; "{e}; connecting again in {} s", RETRY_EVERY.as_secs());
                        return Ok(None);
                    }
                    Err(ApplyError::Refused(m)) => return Err(RunError::new(ErrorKind::Server, m)),
                }
            }
        }
        let unit = match next {
            Next::Unit(u) => u,
            Next::CaughtUp => {
                metrics::progress();
                reg.update(cfg, target, out.applied, false);
                if cfg.until_caught_up {
                    done(out, "caught up");
                    return Ok(Some(()));
                }
                if let Err(e) = wait_idle(stop, target) {
                    crate::report!(log::Level::Error, e; "{e}; connecting again in {} s", RETRY_EVERY.as_secs());
                    return Ok(None);
                }
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
            // A standalone record: nothing to apply, nothing to record; but no lag either.
            watch.seen = watch.seen.max(unit.end_lsn);
            continue;
        }
        if !apply_unit(cfg, target, out, reg, &unit)? {
            return Ok(None);
        }
    }
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
            metrics::progress();
            if !a.already {
                out.transactions += 1;
                out.rows += a.rows;
                let m = metrics::get();
                m.applied_transactions.inc();
                m.applied_rows.add(a.rows);
                m.last_applied_time.set_now();
                if let Some(t) = unit.commit_time {
                    m.last_commit_time.set(t as f64 / 1e6);
                }
            }
            log::trace!("applied the unit ending at {} ({} rows)", unit.end_lsn, a.rows);
            reg.update(cfg, target, out.applied, false);
            Ok(true)
        }
        Err(e @ ApplyError::Connection(_)) => {
            crate::report!(log::Level::Error, e; "{e}; connecting again in {} s", RETRY_EVERY.as_secs());
            Ok(false)
        }
        Err(ApplyError::Refused(m)) => Err(RunError::new(ErrorKind::Server, refused(m, out.applied))),
    }
}

/// A refused unit's message: what was refused, then (as detail, after the server's own) that
/// nothing after `applied` is applied, and what to do.
fn refused(m: Message, applied: Lsn) -> Message {
    let nothing = format!("Nothing after {applied} is applied.");
    Message {
        detail: Some(match m.detail {
            Some(d) => format!("{d} {nothing}"),
            None => nothing,
        }),
        hint: m.hint.or_else(|| {
            Some(
                "Fix the cause on the target and start pgapplylogical again: it resumes at this transaction."
                    .into(),
            )
        }),
        text: m.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_is_applied_and_what_to_do() {
        let m = refused(
            Message::new("could not apply the insert at 0/10: duplicate key value violates unique constraint \"t_pkey\"")
                .detail("Key (id)=(10) already exists."),
            Lsn(0x15419F8),
        );
        assert_eq!(
            m.detail.as_deref(),
            Some("Key (id)=(10) already exists. Nothing after 0/15419F8 is applied.")
        );
        assert!(m.hint.unwrap().starts_with("Fix the cause on the target"));
        let m = refused(Message::new("DDL at 0/10 not applied").hint("Run it on the target."), Lsn(0x10));
        assert_eq!(
            (m.detail.as_deref(), m.hint.as_deref()),
            (Some("Nothing after 0/10 is applied."), Some("Run it on the target."))
        );
    }
}
