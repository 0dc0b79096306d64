//! A physical replication connection and the replication commands we send over it
//! (IDENTIFY_SYSTEM, SHOW, READ_REPLICATION_SLOT, CREATE/DROP_REPLICATION_SLOT,
//! TIMELINE_HISTORY, START_REPLICATION), each turned into a typed answer. Every error names
//! the server it came from.

use std::fmt;
use std::os::fd::RawFd;

use pgrw_ffi::{Conn, ConnectError};

use crate::config::{ConnOptions, PasswordMode};
use crate::logging::Hinted;
use crate::lsn::Tli;
use crate::lsn::{valid_segment_size, Lsn};
use crate::text::{os_error, parse_size};

/// SQLSTATEs we act on (PostgreSQL's errcodes.txt).
pub mod sqlstate {
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// What walsender reports for "requested WAL segment ... has already been removed".
    pub const UNDEFINED_FILE: &str = "58P01";
    /// What START_REPLICATION reports for an invalidated slot on PostgreSQL 18 ("can no
    /// longer access replication slot"): object_not_in_prerequisite_state.
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// "replication slot ... is active for PID ...".
    pub const OBJECT_IN_USE: &str = "55006";
}

/// An error from the server or from talking to it, with which server it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub server: String,
    pub message: String,
    pub sqlstate: Option<String>,
    /// Nothing a retry can fix (wrong server, misconfiguration): stop instead of reconnecting.
    pub fatal: bool,
    /// PostgreSQL's `errdetail` and `errhint` for this error, as full sentences (boxed: the
    /// error travels in every `Result` of a session and stays small).
    pub detail: Option<Box<str>>,
    pub hint: Option<Box<str>>,
}

impl ServerError {
    pub fn new(server: &str, message: impl Into<String>) -> ServerError {
        ServerError {
            server: server.to_string(),
            message: message.into(),
            sqlstate: None,
            fatal: false,
            detail: None,
            hint: None,
        }
    }

    fn fatal(server: &str, message: impl Into<String>) -> ServerError {
        ServerError { fatal: true, ..ServerError::new(server, message) }
    }

    fn from_pq(server: &str, e: pgrw_ffi::Error) -> ServerError {
        ServerError {
            sqlstate: e.sqlstate,
            detail: e.detail.map(Into::into),
            hint: e.hint.map(Into::into),
            ..ServerError::new(server, e.message)
        }
    }

    pub fn has_sqlstate(&self, code: &str) -> bool {
        self.sqlstate.as_deref() == Some(code)
    }

    /// The `kind` label of the errors metric: what the server said carries a SQLSTATE; a
    /// failed connect or a broken connection does not.
    pub fn kind(&self) -> crate::metrics::ErrorKind {
        match self.sqlstate {
            Some(_) => crate::metrics::ErrorKind::Server,
            None => crate::metrics::ErrorKind::Connection,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.server.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} (server {})", self.message, self.server)
        }
    }
}

impl Hinted for ServerError {
    fn detail(&self) -> Option<String> {
        self.detail.as_deref().map(str::to_owned)
    }
    fn hint(&self) -> Option<String> {
        self.hint.as_deref().map(str::to_owned)
    }
}

impl std::error::Error for ServerError {}

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemInfo {
    pub system_id: u64,
    pub tli: Tli,
    pub xlogpos: Lsn,
}

/// What READ_REPLICATION_SLOT says about a slot (PostgreSQL 15 and later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotInfo {
    Missing,
    Physical { restart_lsn: Option<Lsn>, restart_tli: Option<Tli> },
    Logical,
}

/// Which kind of replication connection: physical (`replication=true`, for WAL) or logical
/// (`replication=database`, bound to one database, for decoded changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Physical,
    Database,
}

/// How a tool connects: the kind of replication connection and the application_name it is
/// known by unless the user's connection string or PGAPPNAME says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnKind {
    pub replication: Replication,
    pub application_name: &'static str,
}

impl ConnKind {
    /// pgreceivewal's: known by the name it was started as, as pg_receivewal is (its
    /// `fallback_application_name` is its `progname`), so a `pg_receivewal` symlink matches
    /// a synchronous_standby_names written for pg_receivewal.
    pub fn physical() -> ConnKind {
        ConnKind {
            replication: Replication::Physical,
            application_name: crate::tool::progname("pgreceivewal"),
        }
    }
}

/// The keyword/value pairs for libpq: the user's connection string (if any) first, then
/// explicit flags, which win as in pg_receivewal. libpq adds PG* variables and ~/.pgpass.
/// What a logical connection pins, as PostgreSQL's own subscriber does (`libpqwalreceiver.c`,
/// matching pg_dump), plus `bytea_output`: otherwise `extra_float_digits = 0` drops digits of
/// floats and `DateStyle`, `IntervalStyle` and `bytea_output` change how values are written.
/// Later `-c` settings win, so these come after the user's own options.
pub const LOGICAL_SETTINGS: &str =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c bytea_output=hex";

/// The `options` the user gave: in the connection string, or else in PGOPTIONS (libpq ignores
/// PGOPTIONS once `options` is given, and we always give it on a logical connection).
fn user_options(opts: &ConnOptions) -> Option<String> {
    // libpq's recognized_connection_string: anything else is a plain database name.
    let conninfo = opts
        .dbname
        .as_deref()
        .filter(|d| d.starts_with("postgresql://") || d.starts_with("postgres://") || d.contains('='));
    match conninfo.and_then(|d| pgrw_ffi::conninfo_parse(d).ok()) {
        Some(kv) => kv.into_iter().find(|(k, _)| k == "options").map(|(_, v)| v),
        None => None,
    }
    .or_else(|| std::env::var("PGOPTIONS").ok())
}

pub fn conn_params_for(opts: &ConnOptions, password: Option<&str>, kind: ConnKind) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = Vec::new();
    if let Some(d) = &opts.dbname {
        p.push(("dbname".into(), d.clone()));
    }
    let replication = match kind.replication {
        Replication::Physical => "true",
        Replication::Database => "database",
    };
    p.push(("replication".into(), replication.into()));
    if kind.replication == Replication::Database {
        // After dbname, so they win over a connection string's own: decoded text is written as
        // UTF-8 (the walsender converts pgoutput's text to client_encoding), and values are
        // written the same whatever the server, database or role settings.
        p.push(("client_encoding".into(), "UTF8".into()));
        let options = match user_options(opts) {
            Some(user) if !user.trim().is_empty() => format!("{user} {LOGICAL_SETTINGS}"),
            _ => LOGICAL_SETTINGS.to_owned(),
        };
        p.push(("options".into(), options));
    }
    // A fallback, so an application_name in the user's connection string or PGAPPNAME wins;
    // this is the name synchronous_standby_names must list.
    p.push(("fallback_application_name".into(), kind.application_name.into()));
    for (k, v) in [("host", &opts.host), ("port", &opts.port), ("user", &opts.user)] {
        if let Some(v) = v {
            p.push((k.into(), v.clone()));
        }
    }
    if let Some(pw) = password {
        p.push(("password".into(), pw.to_string()));
    }
    p
}

/// Asks for the password on the terminal; a stop signal ends the prompt at once, as it ends
/// a connection attempt ("interrupted while connecting").
fn prompt_password(stop: Option<RawFd>) -> Result<String, ServerError> {
    pgrw_ffi::sys::read_password("Password: ", stop).map_err(|e| match e.kind() {
        // A stop signal at the prompt: as one while connecting, part of stopping (exit 0).
        std::io::ErrorKind::Interrupted => ServerError::new("", "interrupted while reading the password"),
        _ => ServerError::fatal("", format!("could not read password: {}", os_error(&e))),
    })
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

/// A replication connection. Not `Send`: it lives on the receiver thread.
pub struct Server {
    conn: Conn,
    /// "host:port", for messages.
    pub name: String,
    pub version: u32,
}

impl Server {
    /// Connects, prompting for a password as pg_receivewal does (`-W` always, otherwise only
    /// when the server asks and a terminal can answer, never with `-w`).
    pub fn connect(
        opts: &ConnOptions,
        password: &mut Option<String>,
        stop: Option<RawFd>,
    ) -> Result<Server, ServerError> {
        Server::connect_as(opts, password, stop, ConnKind::physical())
    }

    /// [`Server::connect`] for a given kind of replication connection.
    pub fn connect_as(
        opts: &ConnOptions,
        password: &mut Option<String>,
        stop: Option<RawFd>,
        kind: ConnKind,
    ) -> Result<Server, ServerError> {
        let describe = |opts: &ConnOptions| {
            let host = opts.host.clone().unwrap_or_default();
            let port = opts.port.clone().unwrap_or_default();
            match (host.is_empty(), port.is_empty()) {
                (true, true) => String::new(),
                (false, true) => host,
                _ => format!("{host}:{port}"),
            }
        };
        if opts.password == PasswordMode::Always && password.is_none() {
            *password = Some(prompt_password(stop)?);
        }
        loop {
            let params = conn_params_for(opts, password.as_deref(), kind);
            let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match Conn::connect(&refs, stop) {
                Ok(conn) => {
                    let name = format!("{}:{}", conn.host(), conn.port());
                    let version = conn.server_version();
                    let server = Server { conn, name, version };
                    server.check_replication_connection()?;
                    return Ok(server);
                }
                Err(ConnectError { needs_password: true, .. })
                    if password.is_none()
                        && opts.password == PasswordMode::Auto
                        && std::io::IsTerminal::is_terminal(&std::io::stdin()) =>
                {
                    *password = Some(prompt_password(stop)?);
                }
                Err(e) => {
                    let mut err =
                        ServerError::new(&describe(opts), format!("could not connect: {}", e.message));
                    if e.interrupted {
                        err.message = "interrupted while connecting".into();
                    }
                    if e.needs_password {
                        err.hint = Some(
                            "Supply a password in ~/.pgpass, PGPASSWORD or the connection string, or use -W."
                                .into(),
                        );
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Refuses servers too old for the commands we send (`SHOW` over a replication
    /// connection and `wal_segment_size` as a setting need PostgreSQL 11 or later).
    fn check_replication_connection(&self) -> Result<(), ServerError> {
        if self.version < 110000 {
            return Err(ServerError::fatal(
                &self.name,
                format!(
                    "server version {} is not supported: pgreceivewal needs PostgreSQL 11 or later",
                    self.version_text()
                ),
            ));
        }
        Ok(())
    }

    pub fn version_text(&self) -> String {
        format!("{}.{}", self.version / 10000, self.version % 10000)
    }

    fn err(&self, e: pgrw_ffi::Error) -> ServerError {
        let mut err = ServerError::from_pq(&self.name, e);
        if err.has_sqlstate(sqlstate::UNDEFINED_FILE) {
            // "requested WAL segment ... has already been removed": no retry brings it back,
            // and the archive has a hole from here on. The caller, which knows whether a slot
            // was used and where the archive ends, says what that means and what to do.
            err.fatal = true;
        }
        err
    }

    pub fn identify_system(&mut self) -> Result<SystemInfo, ServerError> {
        let r = self.conn.exec("IDENTIFY_SYSTEM").map_err(|e| self.err(e))?;
        let bad = || {
            ServerError::fatal(&self.name, "could not identify system: unexpected answer to IDENTIFY_SYSTEM")
        };
        if r.ntuples() != 1 || r.nfields() < 3 {
            return Err(bad());
        }
        Ok(SystemInfo {
            system_id: r.get(0, 0).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
            tli: r.get(0, 1).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
            xlogpos: r.get(0, 2).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        })
    }

    /// `SHOW name` over the replication connection.
    pub fn show(&mut self, name: &str) -> Result<String, ServerError> {
        let r = self.conn.exec(&format!("SHOW {name}")).map_err(|e| self.err(e))?;
        r.get(0, 0)
            .map(str::to_owned)
            .ok_or_else(|| ServerError::fatal(&self.name, format!("SHOW {name} returned nothing")))
    }

    /// The server's WAL segment size: never assumed to be 16 MiB.
    pub fn wal_segment_size(&mut self) -> Result<u64, ServerError> {
        let s = self.show("wal_segment_size")?;
        parse_size(&s).filter(|&n| valid_segment_size(n)).ok_or_else(|| {
            ServerError::fatal(&self.name, format!("server reported an invalid wal_segment_size \"{s}\""))
        })
    }

    pub fn wal_block_size(&mut self) -> Result<u32, ServerError> {
        let s = self.show("wal_block_size")?;
        parse_size(&s).and_then(|n| u32::try_from(n).ok()).filter(|n| n.is_power_of_two()).ok_or_else(|| {
            ServerError::fatal(&self.name, format!("server reported an invalid wal_block_size \"{s}\""))
        })
    }

    /// Whether the server's data directory allows group read (`data_directory_mode` 0750),
    /// in which case archived files get mode 0640 as pg_receivewal gives them.
    pub fn group_access(&mut self) -> Result<bool, ServerError> {
        let s = self.show("data_directory_mode")?;
        let mode = u32::from_str_radix(s.trim(), 8)
            .map_err(|_| ServerError::fatal(&self.name, format!("invalid data_directory_mode \"{s}\"")))?;
        Ok(mode & 0o040 != 0)
    }

    /// READ_REPLICATION_SLOT exists from PostgreSQL 15 on; `None` for older servers.
    pub fn read_replication_slot(&mut self, slot: &str) -> Result<Option<SlotInfo>, ServerError> {
        if self.version < 150000 {
            return Ok(None);
        }
        let r = match self.conn.exec(&format!("READ_REPLICATION_SLOT {slot}")) {
            Ok(r) => r,
            // The server refuses to read a logical slot (feature_not_supported) rather than
            // returning its type.
            Err(e) if e.sqlstate.as_deref() == Some(sqlstate::FEATURE_NOT_SUPPORTED) => {
                return Ok(Some(SlotInfo::Logical))
            }
            Err(e) => return Err(self.err(e)),
        };
        if r.ntuples() != 1 || r.nfields() < 3 {
            return Err(ServerError::fatal(&self.name, "unexpected answer to READ_REPLICATION_SLOT"));
        }
        Ok(Some(match r.get(0, 0) {
            None => SlotInfo::Missing,
            Some("physical") => SlotInfo::Physical {
                restart_lsn: r.get(0, 1).and_then(|s| s.parse().ok()),
                restart_tli: r.get(0, 2).and_then(|s| s.parse().ok()),
            },
            Some(_) => SlotInfo::Logical,
        }))
    }

    /// A retryable error: a later connection (another server after a failover, a slot
    /// created meanwhile) may succeed.
    pub fn transient(&self, message: impl Into<String>) -> ServerError {
        ServerError::new(&self.name, message)
    }

    /// Creates a physical slot that reserves WAL at once, so WAL from now on is kept for us
    /// even before we start streaming (pg_receivewal's --create-slot does not reserve).
    /// Returns false when it already existed.
    pub fn create_physical_slot(&mut self, slot: &str) -> Result<bool, ServerError> {
        let sql = if self.version >= 150000 {
            format!("CREATE_REPLICATION_SLOT {slot} PHYSICAL (RESERVE_WAL)")
        } else {
            format!("CREATE_REPLICATION_SLOT {slot} PHYSICAL RESERVE_WAL")
        };
        match self.conn.exec(&sql) {
            Ok(_) => Ok(true),
            Err(e) if e.sqlstate.as_deref() == Some(sqlstate::DUPLICATE_OBJECT) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Drops a slot; returns false when it did not exist.
    pub fn drop_slot(&mut self, slot: &str) -> Result<bool, ServerError> {
        match self.conn.exec(&format!("DROP_REPLICATION_SLOT {slot}")) {
            Ok(_) => Ok(true),
            Err(e) if e.sqlstate.as_deref() == Some(sqlstate::UNDEFINED_OBJECT) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The history file of a timeline: its file name and content, as the server has them.
    pub fn timeline_history(&mut self, tli: Tli) -> Result<(String, Vec<u8>), ServerError> {
        let r = self.conn.exec(&format!("TIMELINE_HISTORY {tli}")).map_err(|e| self.err(e))?;
        match (r.get(0, 0), r.get_bytes(0, 1)) {
            (Some(name), Some(content)) if r.ntuples() == 1 => Ok((name.to_owned(), content.to_vec())),
            _ => Err(ServerError::new(&self.name, format!("unexpected answer to TIMELINE_HISTORY {tli}"))),
        }
    }

    /// Enters COPY BOTH mode streaming `tli` from `start`.
    pub fn start_replication(&mut self, slot: Option<&str>, start: Lsn, tli: Tli) -> Result<(), ServerError> {
        let slot = slot.map(|s| format!("SLOT {s} ")).unwrap_or_default();
        let sql = format!("START_REPLICATION {slot}PHYSICAL {start} TIMELINE {tli}");
        self.conn.start_copy_both(&sql).map_err(|e| self.err(e))
    }

    /// The connection, for the receive loop's COPY calls.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn socket(&self) -> RawFd {
        self.conn.socket()
    }

    /// A parameter the server reported when the connection started.
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.conn.parameter_status(name)
    }

    /// The application_name the server knows us by (reported at connection start).
    pub fn application_name(&self) -> Option<String> {
        self.parameter("application_name")
    }

    /// Whether the server's `synchronous_standby_names` names us (our application_name, or
    /// `fallback` if the server did not report one), so commits may wait for us; `None` when
    /// SHOW failed. Also published as the `synchronous_standby` metric.
    pub fn named_synchronous_standby(&mut self, fallback: &str) -> Option<bool> {
        let app = self.application_name().unwrap_or_else(|| fallback.into());
        let named = self.show("synchronous_standby_names").ok().map(|n| standby_names_include(&n, &app));
        if let Some(n) = named {
            crate::metrics::get().synchronous_standby.set_flag(n);
        }
        named
    }

    pub fn error(&self, context: &str) -> ServerError {
        ServerError::new(&self.name, format!("{context}: {}", self.conn.error_message()))
    }

    pub fn wrap(&self, e: pgrw_ffi::Error) -> ServerError {
        self.err(e)
    }

    /// libpq's error prefixed with what we were doing, or the connection's own message when
    /// libpq gave none.
    pub fn error_or(&self, e: pgrw_ffi::Error, what: &str) -> ServerError {
        if e.message.is_empty() {
            self.error(what)
        } else {
            self.wrap(pgrw_ffi::Error { message: format!("{what}: {}", e.message), ..e })
        }
    }

    pub fn fatal(&self, message: impl Into<String>) -> ServerError {
        ServerError::fatal(&self.name, message)
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

    #[test]
    fn flags_override_the_connection_string() {
        let opts = ConnOptions {
            dbname: Some("host=a port=1".into()),
            host: Some("b".into()),
            port: None,
            user: Some("u".into()),
            password: PasswordMode::Auto,
        };
        let p = conn_params_for(&opts, Some("pw"), ConnKind::physical());
        let pos = |k: &str| p.iter().rposition(|(key, _)| key == k).unwrap();
        assert!(pos("host") > pos("dbname"));
        assert_eq!(p[pos("host")].1, "b");
        assert_eq!(p[pos("replication")].1, "true");
        assert_eq!(p[pos("fallback_application_name")].1, "pgreceivewal");
        assert_eq!(p[pos("password")].1, "pw");
        assert!(!p.iter().any(|(k, _)| k == "port"));
        // The physical tool asks for no settings.
        assert!(!p.iter().any(|(k, _)| k == "options" || k == "client_encoding"));
    }

    #[test]
    fn logical_connections_pin_encoding_and_output_settings() {
        let kind = ConnKind { replication: Replication::Database, application_name: "x" };
        let mut opts = ConnOptions {
            dbname: Some(
                "dbname=app client_encoding=LATIN1 options='-c search_path=s -c datestyle=SQL'".into(),
            ),
            host: None,
            port: None,
            user: None,
            password: PasswordMode::Auto,
        };
        let p = conn_params_for(&opts, None, kind);
        let pos = |p: &[(String, String)], k: &str| p.iter().rposition(|(key, _)| key == k).unwrap();
        assert!(pos(&p, "options") > pos(&p, "dbname") && pos(&p, "client_encoding") > pos(&p, "dbname"));
        assert_eq!(p[pos(&p, "client_encoding")].1, "UTF8");
        // The user's options are kept; ours come last, so they win.
        assert_eq!(p[pos(&p, "options")].1, format!("-c search_path=s -c datestyle=SQL {LOGICAL_SETTINGS}"));
        opts.dbname = Some("postgresql://h/db?options=-c%20work_mem%3D1MB".into());
        let p = conn_params_for(&opts, None, kind);
        assert_eq!(p[pos(&p, "options")].1, format!("-c work_mem=1MB {LOGICAL_SETTINGS}"));
        opts.dbname = Some("plain_name".into());
        let p = conn_params_for(&opts, None, kind);
        if std::env::var_os("PGOPTIONS").is_none() {
            assert_eq!(p[pos(&p, "options")].1, LOGICAL_SETTINGS);
        }
    }
}
