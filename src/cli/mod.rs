//! What the tools' command lines share: the flag table machinery ([`flags`]), its `--help` and
//! man renderings ([`render`]), the flags both daemons take the same way (connection and
//! logging, [`CommonArgs`]) and the checks of values more than one tool takes.
//!
//! Each tool's own table and parse `match` live in its folder (`physical::cli`,
//! `physical::restore_cli`, `logical::cli`). Nothing here prints or exits, and the core never
//! imports any of it: the tools build the configuration types of `config` and
//! `logical::config`, which is all the core reads.

pub mod flags;
pub mod render;

use std::path::PathBuf;

use crate::config::{ConnOptions, LogFormat, LogOptions, PasswordMode};
use crate::diskspace::DEFAULT_MIN_FREE;
use crate::lsn::Lsn;
use crate::tool::UsageError;
use flags::{Flag, FlagDef, Section};

pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// An operand where none (or no more) is taken, in pg_receivewal's words.
pub fn too_many_arguments(first: &std::ffi::OsStr) -> UsageError {
    usage(format!("too many command-line arguments (first is \"{}\")", first.to_string_lossy()))
}

/// pg_receivewal's default `--status-interval`, in seconds.
pub const DEFAULT_STATUS_INTERVAL_SECS: u64 = 10;

/// pg_receivewal keeps the interval in milliseconds in an `int`: `INT_MAX / 1000` seconds.
const MAX_STATUS_INTERVAL_SECS: u64 = 2_147_483;

/// PostgreSQL's `NAMEDATALEN - 1`.
const MAX_SLOT_NAME_LEN: usize = 63;

/// The section a tool lists its general flags under, in `--help` as "Options:" and in the man
/// page right under OPTIONS.
pub const OPTIONS: Section = Section { title: "Options", man_heading: false, man_intro: "" };

pub const CONNECTION: Section = Section {
    title: "Connection options",
    man_heading: true,
    man_intro: r"Settings not given here come from libpq's
.B PG*
environment variables, the password file and the connection service file, as
for every PostgreSQL client; see
.BR ENVIRONMENT .
Options given here win over the same setting in a connection string.",
};

pub const LOGGING: Section = Section {
    title: "Logging",
    man_heading: true,
    man_intro: r"Messages go to standard error, one line each, and name their level with
PostgreSQL's words
.RB ( error ,
.BR warning ,
.BR info ,
.BR debug ,
.BR trace ).
As in PostgreSQL's own log, what a message means and what to do about it
follow on lines of their own with the same prefix,
.B detail:
and
.BR hint: ;
with
.B \-\-log\-format=json
they are the fields
.B detail
and
.B hint
of the message's one object.
The environment variable
.B RUST_LOG
is ignored.",
};

/// Where both daemons list `--metrics-address` (`--help`'s "Monitoring:").
pub const MONITORING: Section = Section { title: "Monitoring", man_heading: true, man_intro: "" };

// The flags both daemons declare alike. A tool that words one differently (or lists it in
// another section) overrides just that: `FlagDef { section: "Output", ..cli::VERBOSE }`.

pub const VERBOSE: FlagDef = FlagDef {
    long: "verbose",
    short: "v",
    value: None,
    help: "output verbose messages (-v debug, -vv trace)",
    man: "More messages: once for debug, twice for trace.",
    section: OPTIONS.title,
};

pub const VERSION: FlagDef = FlagDef {
    long: "version",
    short: "V",
    value: None,
    help: "output version information, then exit",
    man: "Print the version and exit.",
    section: OPTIONS.title,
};

pub const HELP: FlagDef = FlagDef {
    long: "help",
    short: "?",
    value: None,
    help: "show this help, then exit",
    man: "Print a summary of the options and exit.",
    section: OPTIONS.title,
};

pub const STATUS_INTERVAL: FlagDef = FlagDef {
    long: "status-interval",
    short: "s",
    value: Some("SECS"),
    help: "time between status packets sent to server (default: 10)",
    man: r"Send a status update to the server at least this often (default 10).
.B 0
turns periodic updates off; the server's keep-alive requests are still
answered.",
    section: OPTIONS.title,
};

/// `-d`: each tool supplies `help` and `man` (a connection string, or a database name too).
pub const DBNAME: FlagDef = FlagDef {
    long: "dbname",
    short: "d",
    value: Some("CONNSTR"),
    help: "",
    man: "",
    section: CONNECTION.title,
};

pub const HOST: FlagDef = FlagDef {
    long: "host",
    short: "h",
    value: Some("HOSTNAME"),
    help: "database server host or socket directory",
    man: r"The server's host name or address, or a directory holding its Unix socket.
The default socket directory of the Debian package and the static binary is
.BR /tmp ;
on Debian give
.B \-h /var/run/postgresql
for a local server.",
    section: CONNECTION.title,
};

pub const PORT: FlagDef = FlagDef {
    long: "port",
    short: "p",
    value: Some("PORT"),
    help: "database server port number",
    man: "The server's port (default 5432).",
    section: CONNECTION.title,
};

pub const USERNAME: FlagDef = FlagDef {
    long: "username",
    short: "U",
    value: Some("NAME"),
    help: "connect as specified database user",
    man: r"Connect as this role; it needs the
.B REPLICATION
attribute.",
    section: CONNECTION.title,
};

pub const NO_PASSWORD: FlagDef = FlagDef {
    long: "no-password",
    short: "w",
    value: None,
    help: "never prompt for password",
    man: r"Never ask for a password: fail if the server wants one and none is known from
the password file or
.BR PGPASSWORD .
Right for services and scripts.",
    section: CONNECTION.title,
};

pub const PASSWORD: FlagDef = FlagDef {
    long: "password",
    short: "W",
    value: None,
    help: "force password prompt (should happen automatically)",
    man: r"Ask for a password on the terminal before connecting.
Normally not needed: the password is asked for when the server wants one.",
    section: CONNECTION.title,
};

/// `--min-free`, the disk floor of both daemons: each tool supplies `man` (what it pauses, and
/// where its man page says more).
pub const MIN_FREE: FlagDef = FlagDef {
    long: "min-free",
    short: "",
    value: Some("SIZE"),
    help: "pause writing while less than SIZE would stay free on\nthe disk of -D, 0 for no floor (default: 64MB)",
    man: "",
    section: OPTIONS.title,
};

pub const LOG_LEVEL: FlagDef = FlagDef {
    long: "log-level",
    short: "",
    value: Some("LEVEL"),
    help: "trace, debug, info, warn or error (default: info)",
    man: r#"One of
.BR trace ,
.BR debug ,
.BR info " (the default),"
.BR warn " or"
.BR error .
Overrides
.BR \-v ."#,
    section: LOGGING.title,
};

pub const LOG_FORMAT: FlagDef = FlagDef {
    long: "log-format",
    short: "",
    value: Some("FORMAT"),
    help: "text or json, one message per line (default: text)",
    man: r".B text
(the default; a timestamp and the process ID, as PostgreSQL's server log
prefixes them, then the program, the level and the message, as PostgreSQL's
tools print them) or
.B json
(one object per line, for log collectors).",
    section: LOGGING.title,
};

pub const LOG_ADD_SOURCE: FlagDef = FlagDef {
    long: "log-add-source",
    short: "",
    value: None,
    help: "add the source file and line to each message",
    man: "Add the source file and line that logged each message.",
    section: LOGGING.title,
};

pub const METRICS_ADDRESS: FlagDef = FlagDef {
    long: "metrics-address",
    short: "",
    value: Some("HOST:PORT"),
    help: "while streaming, serve Prometheus metrics on /metrics\nand health on /health (200 while streaming, else 503)",
    man: r"While streaming, serve metrics in Prometheus' text format on
.B GET /metrics
and a health check on
.B GET /health
(status 200 while a stream is open, 503 while connecting or waiting to
reconnect), over plain HTTP from a thread of its own that never holds up the
stream.
An IPv6 address goes in brackets
.RB ( [::1]:9187 ).
An address that cannot be listened on (a port in use, an address not of this
host) stops the tool at start with status 1.
There is no authentication: listen on a loopback or private address.
The metrics (positions, lag, reconnects, errors, fsync latency, free space and
the tool's own counters) are listed in
.IR docs/monitoring.md .",
    section: MONITORING.title,
};

/// The connection, logging and monitoring flags both daemons take, parsed and checked the
/// same way.
#[derive(Debug, Default)]
pub struct CommonArgs {
    verbose: u32,
    dbname: Option<String>,
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    no_password: bool,
    password: bool,
    log_level: Option<log::LevelFilter>,
    log_format: Option<LogFormat>,
    log_add_source: bool,
    min_free: Option<u64>,
    metrics_address: Option<String>,
}

impl CommonArgs {
    /// Takes `flag` if it is one of the shared flags; false for any other.
    pub fn take(&mut self, flag: &Flag) -> Result<bool, UsageError> {
        match flag.name() {
            "verbose" => self.verbose = self.verbose.saturating_add(1),
            "dbname" => self.dbname = Some(flag.string()?),
            "host" => self.host = Some(flag.string()?),
            "port" => {
                let port = flag.string()?;
                check_port(&port)?;
                self.port = Some(port);
            }
            "username" => self.user = Some(flag.string()?),
            "no-password" => self.no_password = true,
            "password" => self.password = true,
            "log-level" => self.log_level = Some(parse_log_level(&flag.string()?)?),
            "log-format" => {
                let s = flag.string()?;
                self.log_format = Some(match s.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(usage(format!("invalid log format \"{s}\": use text or json"))),
                });
            }
            "log-add-source" => self.log_add_source = true,
            "min-free" => self.min_free = Some(parse_min_free(&flag.string()?)?),
            "metrics-address" => {
                let address = flag.string()?;
                check_metrics_address(&address)?;
                self.metrics_address = Some(address);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Combinations the shared flags do not allow.
    pub fn check(&self) -> Result<(), UsageError> {
        // Not checked by PostgreSQL's tools, where the last of -w/-W wins silently.
        if self.no_password && self.password {
            return Err(usage("cannot use --no-password together with --password"));
        }
        Ok(())
    }

    /// `-d` as pg_receivewal takes it: a connection string or URI, never a bare database name
    /// (a physical replication connection has no database). pg_receivewal hands it to
    /// `PQconninfoParse` and stops on its error; so do we, before connecting: a value such as
    /// `host 127.0.0.1 port 5605` (no `=`) would otherwise reach libpq as a database name and
    /// the archiver would connect through PGHOST/PGPORT to whatever cluster they name.
    pub fn check_conninfo(&self) -> Result<(), UsageError> {
        match &self.dbname {
            Some(d) => check_conninfo(d),
            None => Ok(()),
        }
    }

    /// `-d` as pg_recvlogical takes it: a database name, or a connection string or URI
    /// (libpq's `expand_dbname`, which expands a value that contains `=` or starts with a URI
    /// prefix). Such a string must parse, checked before connecting.
    pub fn check_dbname(&self) -> Result<(), UsageError> {
        match &self.dbname {
            Some(d) if is_conninfo(d) => check_conninfo(d),
            _ => Ok(()),
        }
    }

    pub fn conn_options(&self) -> ConnOptions {
        let password = if self.no_password {
            PasswordMode::Never
        } else if self.password {
            PasswordMode::Always
        } else {
            PasswordMode::Auto
        };
        ConnOptions {
            dbname: self.dbname.clone(),
            host: self.host.clone(),
            port: self.port.clone(),
            user: self.user.clone(),
            password,
        }
    }

    /// `--min-free`, or the default floor.
    pub fn min_free(&self) -> u64 {
        self.min_free.unwrap_or(DEFAULT_MIN_FREE)
    }

    /// `--metrics-address`, checked to be HOST:PORT.
    pub fn metrics_address(&self) -> Option<String> {
        self.metrics_address.clone()
    }

    /// `--log-level` wins over `-v` (debug) and `-vv` (trace); the default is info.
    pub fn log_options(&self) -> LogOptions {
        let level = self.log_level.unwrap_or(match self.verbose {
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
        LogOptions {
            level,
            format: self.log_format.unwrap_or(LogFormat::Text),
            add_source: self.log_add_source,
        }
    }
}

/// Whether libpq's `expand_dbname` reads `dbname` as a connection string or URI rather than
/// a database name (`recognized_connection_string` in fe-connect.c).
pub fn is_conninfo(dbname: &str) -> bool {
    dbname.contains('=') || dbname.starts_with("postgresql://") || dbname.starts_with("postgres://")
}

/// libpq's verdict on a `-d` connection string. The string itself is not repeated: it may
/// hold a password.
fn check_conninfo(conninfo: &str) -> Result<(), UsageError> {
    pgrw_ffi::check_conninfo(conninfo)
        .map_err(|e| usage(format!("invalid connection string given with -d/--dbname: {e}")))
}

/// A directory flag's value: any bytes but none at all (`what` names it in the message:
/// "target directory name must not be empty").
pub fn dir_value(flag: &Flag, what: &str) -> Result<PathBuf, UsageError> {
    let dir = flag.os_value();
    if dir.is_empty() {
        return Err(usage(format!("{what} name must not be empty")));
    }
    Ok(PathBuf::from(dir))
}

/// `-S/--slot`: a valid slot name.
pub fn slot_value(flag: &Flag) -> Result<String, UsageError> {
    let slot = flag.string()?;
    check_slot_name(&slot)?;
    Ok(slot)
}

/// `-s/--status-interval`: see [`parse_status_interval`].
pub fn status_interval_value(flag: &Flag) -> Result<u64, UsageError> {
    parse_status_interval(&flag.string()?)
}

/// `--version` output, like pg_receivewal's `pg_receivewal (PostgreSQL) 17.2`: the tool, then
/// the package it comes with.
pub fn version_text(program: &str) -> String {
    format!("{program} (pgreceivewal) {}", env!("CARGO_PKG_VERSION"))
}

/// `-E/--endpos`: an LSN; `0/0` is PostgreSQL's InvalidXLogRecPtr, no end position.
pub fn endpos_value(flag: &Flag) -> Result<Option<Lsn>, UsageError> {
    let s = flag.string()?;
    let lsn: Lsn = s.parse().map_err(|_| {
        usage(format!(
            "could not parse end position \"{s}\": expected two hexadecimal numbers like 0/16B3748"
        ))
    })?;
    Ok(lsn.is_valid().then_some(lsn))
}

/// PostgreSQL's `ReplicationSlotValidateName`: 1 to 63 of `[a-z0-9_]`. Checked here so a typo
/// fails before connecting rather than as a server error after.
pub fn check_slot_name(name: &str) -> Result<(), UsageError> {
    if name.is_empty() {
        return Err(usage("replication slot name \"\" is too short"));
    }
    if name.len() > MAX_SLOT_NAME_LEN {
        return Err(usage(format!(
            "replication slot name \"{name}\" is too long: at most {MAX_SLOT_NAME_LEN} characters"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(usage(format!(
            "replication slot name \"{name}\" is invalid: \
             use only lower case letters, numbers and the underscore character"
        )));
    }
    Ok(())
}

/// `--min-free=SIZE`: a size as `parse_size` reads it; 0 turns the floor off.
pub fn parse_min_free(s: &str) -> Result<u64, UsageError> {
    crate::text::parse_size(s).ok_or_else(|| {
        usage(format!(
            "invalid size \"{s}\" for option --min-free: use a number with kB, MB or GB, like 64MB, or 0"
        ))
    })
}

/// Whole seconds, 0 or more, up to pg_receivewal's limit. Surrounding blanks and a leading
/// `+` are accepted as by pg_receivewal's `strtol`-based `option_parse_int`.
pub fn parse_status_interval(s: &str) -> Result<u64, UsageError> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage(format!(
            "invalid status interval \"{s}\": must be a whole number of seconds, 0 or more"
        )));
    }
    match digits.parse::<u64>() {
        Ok(n) if n <= MAX_STATUS_INTERVAL_SECS => Ok(n),
        _ => Err(usage(format!("-s/--status-interval must be in range 0..{MAX_STATUS_INTERVAL_SECS}"))),
    }
}

/// `--metrics-address`: HOST:PORT, an IPv6 address in brackets (`[::1]:9187`). Whether the
/// host resolves and the port is free is found out when it is bound, at start.
pub fn check_metrics_address(s: &str) -> Result<(), UsageError> {
    let bad = || {
        usage(format!(
            "invalid --metrics-address \"{s}\": use HOST:PORT, such as 127.0.0.1:9187 or [::1]:9187"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || port.parse::<u16>().is_err() || (host.contains(':') && !bracketed) {
        return Err(bad());
    }
    Ok(())
}

/// A port number 1..65535; a comma-separated list goes to libpq unchecked (one per host).
pub fn check_port(s: &str) -> Result<(), UsageError> {
    if s.contains(',') {
        return Ok(());
    }
    match s.parse::<u16>() {
        Ok(n) if n > 0 && !s.starts_with('+') => Ok(()),
        _ => Err(usage(format!("invalid port number \"{s}\": must be a number from 1 to 65535"))),
    }
}

pub fn parse_log_level(s: &str) -> Result<log::LevelFilter, UsageError> {
    use log::LevelFilter as L;
    Ok(match s {
        "trace" => L::Trace,
        "debug" => L::Debug,
        "info" => L::Info,
        // "warning" is how PostgreSQL and our own log lines spell it.
        "warn" | "warning" => L::Warn,
        "error" => L::Error,
        _ => return Err(usage(format!("invalid log level \"{s}\": use trace, debug, info, warn or error"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared `-s` help states the default the tools apply.
    #[test]
    fn status_interval_help_names_the_default() {
        assert!(STATUS_INTERVAL.help.ends_with(&format!("(default: {DEFAULT_STATUS_INTERVAL_SECS})")));
    }
}
