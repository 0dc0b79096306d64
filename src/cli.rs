//! The pgreceivewal command line: flags → [`Config`], the `--help` text and usage errors.
//!
//! The flags are pg_receivewal's (PostgreSQL 15 to 18), spelled the same, so existing scripts
//! and service units keep working. Parsing is two steps, as in lexopt's examples: one loop
//! fills `Args` with what the user typed (checking each value on its own, as
//! pg_receivewal's `getopt_long` loop does), then `Args::validate` checks combinations in
//! pg_receivewal's order and with its messages, and builds the [`Config`].
//!
//! Nothing here prints or exits: the caller prints a [`UsageError`] followed by
//! `Try "pgreceivewal --help" for more information.` and exits with status 2.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::Arg;

use crate::config::{Action, Config, ConnOptions, Durability, LogFormat, LogOptions, PasswordMode};
use crate::lsn::Lsn;
use crate::tool::UsageError;

/// What the command line asks for.
pub type Command = crate::tool::Command<Config>;

pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// pg_receivewal's default `--status-interval`, in seconds.
pub const DEFAULT_STATUS_INTERVAL_SECS: u64 = 10;

/// pg_receivewal keeps the interval in milliseconds in an `int`: `INT_MAX / 1000` seconds.
const MAX_STATUS_INTERVAL_SECS: u64 = 2_147_483;

/// PostgreSQL's `NAMEDATALEN - 1`.
const MAX_SLOT_NAME_LEN: usize = 63;

/// Every long option, for glibc-style unambiguous abbreviations (`--dir=...`): pg_receivewal
/// uses the system's `getopt_long`, which accepts them, so scripts may rely on them.
const LONG_OPTIONS: &[&str] = &[
    "directory",
    "endpos",
    "if-not-exists",
    "no-loop",
    "no-sync",
    "status-interval",
    "slot",
    "synchronous",
    "verbose",
    "version",
    "compress",
    "help",
    "dbname",
    "host",
    "port",
    "username",
    "no-password",
    "password",
    "create-slot",
    "create-slot-if-missing",
    "drop-slot",
    "log-level",
    "log-format",
    "log-add-source",
    "segment-command",
];

/// What the user typed, each value checked on its own but no combination checked yet.
#[derive(Debug, Default)]
struct Args {
    directory: Option<PathBuf>,
    slot: Option<String>,
    create_slot: bool,
    drop_slot: bool,
    if_not_exists: bool,
    create_slot_if_missing: bool,
    endpos: Option<Lsn>,
    no_loop: bool,
    no_sync: bool,
    synchronous: bool,
    status_interval_secs: Option<u64>,
    segment_command: Option<String>,
    common: CommonArgs,
    /// The first non-option argument: reported after all options, as getopt does.
    first_stray: Option<OsString>,
}

/// An option as matched: its short letter or its full long name.
#[derive(Clone, Copy)]
pub enum Opt {
    Short(char),
    Long(&'static str),
}

/// The connection and logging flags every tool of the package takes, parsed and checked the
/// same way everywhere.
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
}

impl CommonArgs {
    /// Takes `opt` (and its value) if it is one of the shared flags; false for any other.
    pub fn parse(&mut self, opt: Opt, p: &mut lexopt::Parser) -> Result<bool, UsageError> {
        use Opt::{Long, Short};
        match opt {
            Short('v') | Long("verbose") => self.verbose = self.verbose.saturating_add(1),
            Short('d') | Long("dbname") => self.dbname = Some(string_value(p, "-d/--dbname")?),
            Short('h') | Long("host") => self.host = Some(string_value(p, "-h/--host")?),
            Short('p') | Long("port") => {
                let port = string_value(p, "-p/--port")?;
                check_port(&port)?;
                self.port = Some(port);
            }
            Short('U') | Long("username") => self.user = Some(string_value(p, "-U/--username")?),
            Short('w') | Long("no-password") => self.no_password = true,
            Short('W') | Long("password") => self.password = true,
            Long("log-level") => {
                let s = string_value(p, "--log-level")?;
                self.log_level = Some(parse_log_level(&s)?);
            }
            Long("log-format") => {
                let s = string_value(p, "--log-format")?;
                self.log_format = Some(match s.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(usage(format!("invalid log format \"{s}\": use text or json"))),
                });
            }
            Long("log-add-source") => self.log_add_source = true,
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

/// Parse the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Args::default();
    while let Some(arg) = p.next().map_err(lexopt_error)? {
        let opt = match arg {
            Arg::Short(c) => Opt::Short(c),
            Arg::Long(name) => Opt::Long(resolve_long(name)?),
            Arg::Value(v) => {
                a.first_stray.get_or_insert(v);
                continue;
            }
        };
        use Opt::{Long, Short};
        match opt {
            Short('?') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),

            Short('D') | Long("directory") => {
                let dir = p.value().map_err(lexopt_error)?;
                if dir.is_empty() {
                    return Err(usage("target directory name must not be empty"));
                }
                a.directory = Some(PathBuf::from(dir));
            }
            Short('S') | Long("slot") => {
                let slot = string_value(&mut p, "-S/--slot")?;
                check_slot_name(&slot)?;
                a.slot = Some(slot);
            }
            Long("create-slot") => a.create_slot = true,
            Long("create-slot-if-missing") => a.create_slot_if_missing = true,
            Long("drop-slot") => a.drop_slot = true,
            Long("if-not-exists") => a.if_not_exists = true,
            Short('E') | Long("endpos") => {
                let s = string_value(&mut p, "-E/--endpos")?;
                let lsn: Lsn = s.parse().map_err(|_| {
                    usage(format!(
                        "could not parse end position \"{s}\": \
                         expected two hexadecimal numbers like 0/16B3748"
                    ))
                })?;
                // pg_receivewal treats 0/0 as InvalidXLogRecPtr: no end position.
                a.endpos = lsn.is_valid().then_some(lsn);
            }
            Short('n') | Long("no-loop") => a.no_loop = true,
            Long("no-sync") => a.no_sync = true,
            Long("synchronous") => a.synchronous = true,
            Short('s') | Long("status-interval") => {
                let s = string_value(&mut p, "-s/--status-interval")?;
                a.status_interval_secs = Some(parse_status_interval(&s)?);
            }
            Long("segment-command") => {
                let cmd = string_value(&mut p, "--segment-command")?;
                if cmd.trim().is_empty() {
                    return Err(usage("--segment-command must not be empty"));
                }
                a.segment_command = Some(cmd);
            }
            Short('Z') | Long("compress") => {
                let s = string_value(&mut p, "-Z/--compress")?;
                check_compression(&s)?;
            }

            opt if a.common.parse(opt, &mut p)? => {}
            Short(c) => return Err(usage(format!("unrecognized option \"-{c}\""))),
            Long(name) => unreachable!("--{name} is in LONG_OPTIONS but not handled"),
        }
    }
    a.validate().map(Command::Run)
}

impl Args {
    /// Check combinations, in pg_receivewal's order and words, then build the config.
    fn validate(self) -> Result<Config, UsageError> {
        if let Some(stray) = &self.first_stray {
            return Err(usage(format!(
                "too many command-line arguments (first is \"{}\")",
                stray.to_string_lossy()
            )));
        }
        if self.create_slot && self.drop_slot {
            return Err(usage("cannot use --create-slot together with --drop-slot"));
        }
        if self.slot.is_none() && (self.create_slot || self.drop_slot) {
            let opt = if self.drop_slot { "--drop-slot" } else { "--create-slot" };
            return Err(usage(format!("{opt} needs a slot to be specified using --slot")));
        }
        if self.synchronous && self.no_sync {
            return Err(usage("cannot use --synchronous together with --no-sync"));
        }
        let action = if self.create_slot {
            Action::CreateSlot
        } else if self.drop_slot {
            Action::DropSlot
        } else {
            Action::Stream
        };
        if self.directory.is_none() && action == Action::Stream {
            return Err(usage("no target directory specified"));
        }
        self.common.check()?;
        self.common.check_conninfo()?;
        // --if-not-exists without --create-slot is accepted and has no effect, as in
        // pg_receivewal: scripts pass it on every call. It never creates a missing slot when
        // streaming (that is --create-slot-if-missing); the missing-slot error says so.
        if self.segment_command.is_some() && action != Action::Stream {
            return Err(usage("--segment-command can only be used when streaming"));
        }
        if self.create_slot_if_missing {
            if action != Action::Stream {
                return Err(usage(
                    "--create-slot-if-missing can only be used when streaming, not with --create-slot or --drop-slot",
                ));
            }
            if self.slot.is_none() {
                return Err(usage("--create-slot-if-missing needs a slot to be specified using --slot"));
            }
        }

        let durability = if self.synchronous {
            Durability::Synchronous
        } else if self.no_sync {
            Durability::NoSync
        } else {
            Durability::Default
        };
        let secs = self.status_interval_secs.unwrap_or(DEFAULT_STATUS_INTERVAL_SECS);
        Ok(Config {
            directory: self.directory.unwrap_or_default(),
            slot: self.slot,
            action,
            if_not_exists: self.if_not_exists,
            create_slot_if_missing: self.create_slot_if_missing,
            endpos: self.endpos,
            no_loop: self.no_loop,
            segment_command: self.segment_command,
            durability,
            status_interval: (secs > 0).then(|| Duration::from_secs(secs)),
            log: self.common.log_options(),
            conn: self.common.conn_options(),
        })
    }
}

/// Match a long option exactly, or by a unique prefix as glibc's `getopt_long` does.
fn resolve_long(name: &str) -> Result<&'static str, UsageError> {
    resolve_long_in(name, LONG_OPTIONS)
}

/// [`resolve_long`] against another tool's list of long options.
pub fn resolve_long_in(name: &str, long_options: &[&'static str]) -> Result<&'static str, UsageError> {
    if let Some(exact) = long_options.iter().find(|l| **l == name) {
        return Ok(exact);
    }
    let matches: Vec<&'static str> = if name.is_empty() {
        Vec::new()
    } else {
        long_options.iter().copied().filter(|l| l.starts_with(name)).collect()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(usage(format!("unrecognized option \"--{name}\""))),
        many => {
            let list: Vec<String> = many.iter().map(|l| format!("\"--{l}\"")).collect();
            Err(usage(format!("option \"--{name}\" is ambiguous; possibilities: {}", list.join(" "))))
        }
    }
}

/// The option's value as UTF-8 (everything but `-D` is text: names, numbers, libpq settings).
pub fn string_value(p: &mut lexopt::Parser, option: &str) -> Result<String, UsageError> {
    p.value().map_err(lexopt_error)?.into_string().map_err(|v| {
        usage(format!("invalid value \"{}\" for option {option}: not valid UTF-8", v.to_string_lossy()))
    })
}

/// lexopt's errors in our words.
pub fn lexopt_error(e: lexopt::Error) -> UsageError {
    use lexopt::Error as E;
    usage(match e {
        E::MissingValue { option: Some(o) } => format!("option \"{o}\" requires a value"),
        E::MissingValue { option: None } => "missing option value".to_string(),
        E::UnexpectedOption(o) => format!("unrecognized option \"{o}\""),
        E::UnexpectedArgument(v) => {
            format!("too many command-line arguments (first is \"{}\")", v.to_string_lossy())
        }
        E::UnexpectedValue { option, .. } => format!("option \"{option}\" does not take a value"),
        E::NonUnicodeValue(v) => {
            format!("invalid value \"{}\": not valid UTF-8", v.to_string_lossy())
        }
        E::ParsingFailed { value, error } => format!("invalid value \"{value}\": {error}"),
        E::Custom(err) => err.to_string(),
    })
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

/// Only "no compression" is accepted: the archive holds segments byte-identical to the
/// server's WAL, so they can be checked and restored as they are.
fn check_compression(s: &str) -> Result<(), UsageError> {
    match s {
        "0" | "none" => Ok(()),
        _ => Err(usage(format!(
            "compression \"{s}\" is not supported: archived segments are kept \
             byte-identical to the server's WAL (use -Z none or leave -Z out)"
        ))),
    }
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

/// `--version` output for the name the program was started as, like pg_receivewal's
/// `pg_receivewal (PostgreSQL) 17.2`: the parenthesis names the software, so a
/// `pg_receivewal` symlink says `pg_receivewal (pgreceivewal) 0.1.0`.
pub fn version_text(program: &str) -> String {
    format!("{program} (pgreceivewal) {}", env!("CARGO_PKG_VERSION"))
}

/// The full `--help` text, laid out like pg_receivewal's, for the name the program was
/// started as.
pub fn help_text(program: &str) -> String {
    format!(
        "\
{program} receives PostgreSQL streaming write-ahead logs.

Usage:
  {program} [OPTION]...

Options:
  -D, --directory=DIR    receive write-ahead log files into this directory
  -E, --endpos=LSN       exit after receiving the specified LSN
      --if-not-exists    do not error if slot already exists when creating a slot
  -n, --no-loop          do not loop on connection lost
      --no-sync          do not wait for changes to be written safely to disk
  -s, --status-interval=SECS
                         time between status packets sent to server (default: {status})
  -S, --slot=SLOTNAME    replication slot to use (it must exist)
      --synchronous      flush write-ahead log immediately after writing
  -v, --verbose          output verbose messages (-v debug, -vv trace)
  -V, --version          output version information, then exit
  -Z, --compress=none    only none or 0: WAL is never compressed
  -?, --help             show this help, then exit

Connection options:
  -d, --dbname=CONNSTR   connection string
  -h, --host=HOSTNAME    database server host or socket directory
  -p, --port=PORT        database server port number
  -U, --username=NAME    connect as specified database user
  -w, --no-password      never prompt for password
  -W, --password         force password prompt (should happen automatically)

Optional actions:
      --create-slot      create a new replication slot (for the slot's name see --slot)
      --create-slot-if-missing
                         when streaming, create the --slot slot if the server
                         lacks it (a new archive, a new primary after failover)
      --drop-slot        drop the replication slot (for the slot's name see --slot)

Shipping:
      --segment-command=CMD
                         run CMD for each completed segment and history file, in
                         order, like archive_command (%p path, %f file name, %%);
                         retried with back-off until it exits 0

Logging:
      --log-level=LEVEL  trace, debug, info, warn or error (default: info)
      --log-format=FORMAT
                         text or json, one message per line (default: text)
      --log-add-source   add the source file and line to each message

A slot given with --slot must exist, as for pg_receivewal: a mistyped name
would otherwise leave a slot holding WAL on the server for ever. Create it with
--create-slot, or pass --create-slot-if-missing where a server may lack it (a
new primary after a failover); then a missing slot is created, reserving WAL
at once, with a warning, but only the slot the archive was streamed with.
--create-slot and --drop-slot do not need -D and exit once done. -s 0 turns
status packets off. --log-level overrides -v. Archived segments are kept
byte-identical to the server's WAL, so compression is not offered.

Connection settings not given here are taken by libpq from the PG* environment
variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSERVICE, PGSSLMODE, ...), the
password file ~/.pgpass and the connection service file, as for any PostgreSQL
client.
",
        status = DEFAULT_STATUS_INTERVAL_SECS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn config(args: &[&str]) -> Config {
        match try_parse(args) {
            Ok(Command::Run(c)) => c,
            other => panic!("{args:?}: expected a config, got {other:?}"),
        }
    }

    /// `-D dir` plus `args`.
    fn with_dir(args: &[&str]) -> Config {
        let mut all = vec!["-D", "/wal"];
        all.extend_from_slice(args);
        config(&all)
    }

    fn err(args: &[&str]) -> String {
        match try_parse(args) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{args:?}: expected an error, got {c:?}"),
        }
    }

    fn err_with_dir(args: &[&str]) -> String {
        let mut all = vec!["-D", "/wal"];
        all.extend_from_slice(args);
        err(&all)
    }

    #[test]
    fn defaults() {
        let c = config(&["-D", "/wal"]);
        assert_eq!(
            c,
            Config {
                directory: PathBuf::from("/wal"),
                slot: None,
                action: Action::Stream,
                if_not_exists: false,
                create_slot_if_missing: false,
                endpos: None,
                no_loop: false,
                segment_command: None,
                durability: Durability::Default,
                status_interval: Some(Duration::from_secs(10)),
                conn: ConnOptions {
                    dbname: None,
                    host: None,
                    port: None,
                    user: None,
                    password: PasswordMode::Auto,
                },
                log: LogOptions { level: log::LevelFilter::Info, format: LogFormat::Text, add_source: false },
            }
        );
    }

    #[test]
    fn directory() {
        assert_eq!(config(&["--directory", "/a"]).directory, PathBuf::from("/a"));
        assert_eq!(config(&["--directory=/b"]).directory, PathBuf::from("/b"));
        assert_eq!(config(&["-D/c"]).directory, PathBuf::from("/c"));
        assert_eq!(config(&["-D", "/c", "-D", "/d"]).directory, PathBuf::from("/d"));
        assert_eq!(err(&["-D", ""]), "target directory name must not be empty");
        assert_eq!(err(&["--directory="]), "target directory name must not be empty");
    }

    #[cfg(unix)]
    #[test]
    fn directory_need_not_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let dir = OsString::from_vec(b"/wal\xff".to_vec());
        let c = match parse(vec![OsString::from("-D"), dir.clone()]) {
            Ok(Command::Run(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.directory.as_os_str(), dir.as_os_str());
    }

    #[test]
    fn missing_directory() {
        assert_eq!(err(&[]), "no target directory specified");
        assert_eq!(err(&["-S", "slot", "-v"]), "no target directory specified");
    }

    #[test]
    fn slot() {
        assert_eq!(with_dir(&["-S", "my_slot_1"]).slot.as_deref(), Some("my_slot_1"));
        assert_eq!(with_dir(&["--slot", "a"]).slot.as_deref(), Some("a"));
        assert_eq!(with_dir(&["--slot=b"]).slot.as_deref(), Some("b"));
        assert_eq!(with_dir(&["-Sc"]).slot.as_deref(), Some("c"));
        assert_eq!(with_dir(&["-S", &"x".repeat(63)]).slot.unwrap().len(), 63);
    }

    #[test]
    fn invalid_slot_names() {
        for bad in ["My", "a-b", "a b", "ä", "a.b"] {
            assert_eq!(
                err_with_dir(&["-S", bad]),
                format!(
                    "replication slot name \"{bad}\" is invalid: \
                     use only lower case letters, numbers and the underscore character"
                )
            );
        }
        assert_eq!(err_with_dir(&["--slot="]), "replication slot name \"\" is too short");
        let long = "x".repeat(64);
        assert_eq!(
            err_with_dir(&["-S", &long]),
            format!("replication slot name \"{long}\" is too long: at most 63 characters")
        );
    }

    #[test]
    fn create_slot() {
        let c = config(&["--create-slot", "-S", "s"]);
        assert_eq!(c.action, Action::CreateSlot);
        assert_eq!(c.directory, PathBuf::new());
        assert!(!c.if_not_exists);
        // -D is allowed (and unused), as in pg_receivewal.
        assert_eq!(config(&["--create-slot", "-S", "s", "-D", "/w"]).action, Action::CreateSlot);
    }

    #[test]
    fn create_slot_if_missing() {
        assert!(!with_dir(&["-S", "s"]).create_slot_if_missing);
        assert!(with_dir(&["-S", "s", "--create-slot-if-missing"]).create_slot_if_missing);
        assert!(with_dir(&["-S", "s", "--create-slot-if"]).create_slot_if_missing);
        assert_eq!(
            err_with_dir(&["--create-slot-if-missing"]),
            "--create-slot-if-missing needs a slot to be specified using --slot"
        );
        for action in ["--create-slot", "--drop-slot"] {
            assert_eq!(
                err(&[action, "-S", "s", "--create-slot-if-missing"]),
                "--create-slot-if-missing can only be used when streaming, not with --create-slot or --drop-slot"
            );
        }
        // --if-not-exists is not "create when missing": streaming with it asks nothing more.
        assert!(!with_dir(&["-S", "s", "--if-not-exists"]).create_slot_if_missing);
    }

    #[test]
    fn drop_slot() {
        let c = config(&["--drop-slot", "--slot=s"]);
        assert_eq!(c.action, Action::DropSlot);
        assert_eq!(c.directory, PathBuf::new());
        assert_eq!(config(&["--drop-slot", "-S", "s", "-D", "/w"]).action, Action::DropSlot);
    }

    #[test]
    fn create_and_drop_conflict() {
        assert_eq!(
            err(&["--create-slot", "--drop-slot", "-S", "s"]),
            "cannot use --create-slot together with --drop-slot"
        );
    }

    #[test]
    fn slot_actions_need_a_slot() {
        assert_eq!(err(&["--create-slot"]), "--create-slot needs a slot to be specified using --slot");
        assert_eq!(
            err(&["--drop-slot", "-D", "/w"]),
            "--drop-slot needs a slot to be specified using --slot"
        );
    }

    #[test]
    fn if_not_exists() {
        assert!(config(&["--create-slot", "--if-not-exists", "-S", "s"]).if_not_exists);
        // Accepted, without effect, wherever pg_receivewal accepts it: streaming (with or
        // without a slot) and dropping.
        let c = with_dir(&["-S", "s", "--if-not-exists"]);
        assert_eq!((c.action, c.create_slot_if_missing), (Action::Stream, false));
        assert_eq!(with_dir(&["--if-not-exists"]).action, Action::Stream);
        assert_eq!(with_dir(&["--if-not"]).action, Action::Stream);
        assert_eq!(config(&["--drop-slot", "-S", "s", "--if-not-exists"]).action, Action::DropSlot);
        // Still no substitute for -D when streaming.
        assert_eq!(err(&["--if-not-exists"]), "no target directory specified");
    }

    #[test]
    fn endpos() {
        assert_eq!(with_dir(&["-E", "0/16B3748"]).endpos, Some(Lsn(0x16B3748)));
        assert_eq!(with_dir(&["--endpos=1/0"]).endpos, Some(Lsn(1 << 32)));
        assert_eq!(with_dir(&["--endpos", "A/b"]).endpos, Some(Lsn(0xA_0000_000B)));
        assert_eq!(with_dir(&["-E0/1"]).endpos, Some(Lsn(1)));
        assert_eq!(with_dir(&["-E", "0/0"]).endpos, None);
    }

    #[test]
    fn bad_endpos() {
        for bad in ["", "0", "xyz/1", "0/1/2", "-1/0"] {
            assert_eq!(
                err_with_dir(&["--endpos", bad]),
                format!(
                    "could not parse end position \"{bad}\": \
                     expected two hexadecimal numbers like 0/16B3748"
                )
            );
        }
    }

    #[test]
    fn no_loop() {
        assert!(with_dir(&["-n"]).no_loop);
        assert!(with_dir(&["--no-loop"]).no_loop);
        assert_eq!(err_with_dir(&["--no-loop=yes"]), "option \"--no-loop\" does not take a value");
    }

    #[test]
    fn durability() {
        assert_eq!(with_dir(&["--no-sync"]).durability, Durability::NoSync);
        assert_eq!(with_dir(&["--synchronous"]).durability, Durability::Synchronous);
        assert_eq!(
            err_with_dir(&["--synchronous", "--no-sync"]),
            "cannot use --synchronous together with --no-sync"
        );
    }

    #[test]
    fn status_interval() {
        let secs = |args: &[&str]| with_dir(args).status_interval;
        assert_eq!(secs(&["-s", "5"]), Some(Duration::from_secs(5)));
        assert_eq!(secs(&["-s5"]), Some(Duration::from_secs(5)));
        assert_eq!(secs(&["--status-interval", "1"]), Some(Duration::from_secs(1)));
        assert_eq!(secs(&["--status-interval=60"]), Some(Duration::from_secs(60)));
        assert_eq!(secs(&["-s", " 7 "]), Some(Duration::from_secs(7)));
        assert_eq!(secs(&["-s", "+7"]), Some(Duration::from_secs(7)));
        assert_eq!(secs(&["-s", "0"]), None);
        assert_eq!(secs(&["-s", "2147483"]), Some(Duration::from_secs(2_147_483)));
    }

    #[test]
    fn bad_status_interval() {
        for bad in ["-1", "1.5", "abc", "", "10s", "+", "1 2"] {
            assert_eq!(
                err_with_dir(&["-s", bad]),
                format!(
                    "invalid status interval \"{bad}\": \
                     must be a whole number of seconds, 0 or more"
                )
            );
        }
        for big in ["2147484", "99999999999999999999999"] {
            assert_eq!(
                err_with_dir(&["--status-interval", big]),
                "-s/--status-interval must be in range 0..2147483"
            );
        }
    }

    #[test]
    fn verbose() {
        use log::LevelFilter as L;
        assert_eq!(with_dir(&["-v"]).log.level, L::Debug);
        assert_eq!(with_dir(&["--verbose"]).log.level, L::Debug);
        assert_eq!(with_dir(&["-vv"]).log.level, L::Trace);
        assert_eq!(with_dir(&["-v", "--verbose", "-v"]).log.level, L::Trace);
        // An explicit level wins whatever the order.
        assert_eq!(with_dir(&["-v", "--log-level", "warn"]).log.level, L::Warn);
        assert_eq!(with_dir(&["--log-level=error", "-vv"]).log.level, L::Error);
    }

    #[test]
    fn compress() {
        with_dir(&["-Z", "0"]);
        with_dir(&["-Z0"]);
        with_dir(&["--compress", "none"]);
        with_dir(&["--compress=none"]);
        for bad in ["gzip", "1", "lz4", "zstd", "gzip:5", "none:1", ""] {
            assert_eq!(
                err_with_dir(&["-Z", bad]),
                format!(
                    "compression \"{bad}\" is not supported: archived segments are kept \
                     byte-identical to the server's WAL (use -Z none or leave -Z out)"
                )
            );
        }
    }

    #[test]
    fn dbname() {
        let c = with_dir(&["-d", "host=db port=5433 sslmode=require"]);
        assert_eq!(c.conn.dbname.as_deref(), Some("host=db port=5433 sslmode=require"));
        assert_eq!(
            with_dir(&["--dbname=postgresql://u@h/x"]).conn.dbname.as_deref(),
            Some("postgresql://u@h/x")
        );
        assert_eq!(with_dir(&["-d", ""]).conn.dbname.as_deref(), Some(""));
    }

    /// pg_receivewal's `-d` is a connection string: libpq's `PQconninfoParse` must accept
    /// it, or the run stops before connecting (pg_receivewal: the same message, exit 1; our
    /// usage errors exit 2).
    #[test]
    fn dbname_must_be_a_connection_string() {
        assert_eq!(
            err_with_dir(&["-d", "host 127.0.0.1 port 5605"]),
            "invalid connection string given with -d/--dbname: missing \"=\" after \"host\" in connection info string"
        );
        // A bare word is no connection string either (pg_receivewal refuses it the same way).
        assert_eq!(
            err_with_dir(&["-d", "mydb"]),
            "invalid connection string given with -d/--dbname: missing \"=\" after \"mydb\" in connection info string"
        );
        assert!(err_with_dir(&["--dbname", "x=1"]).ends_with("invalid connection option \"x\""));
        assert!(err_with_dir(&["--dbname=host='db"]).contains("unterminated quoted string"));
        assert!(err_with_dir(&["-d", "postgresql://u@h/x?nosuch=1"]).contains("invalid URI query parameter"));
        assert_eq!(
            with_dir(&["-d", "postgresql://u@h/x"]).conn.dbname.as_deref(),
            Some("postgresql://u@h/x")
        );
        // The password is never repeated in the message.
        let e = err_with_dir(&["-d", "password=hunter2 host 1"]);
        assert!(!e.contains("hunter2"), "{e}");
        // Checked for the slot actions too, which connect as well.
        assert!(err(&["--create-slot", "-S", "s", "-d", "host h"]).contains("missing \"=\" after \"host\""));
    }

    #[test]
    fn host() {
        assert_eq!(with_dir(&["-h", "db1"]).conn.host.as_deref(), Some("db1"));
        assert_eq!(with_dir(&["--host=/tmp"]).conn.host.as_deref(), Some("/tmp"));
        assert_eq!(with_dir(&["--host", "a,b"]).conn.host.as_deref(), Some("a,b"));
    }

    #[test]
    fn port() {
        assert_eq!(with_dir(&["-p", "5433"]).conn.port.as_deref(), Some("5433"));
        assert_eq!(with_dir(&["--port=1"]).conn.port.as_deref(), Some("1"));
        assert_eq!(with_dir(&["--port", "65535"]).conn.port.as_deref(), Some("65535"));
        assert_eq!(with_dir(&["-p", "5432,5433"]).conn.port.as_deref(), Some("5432,5433"));
        for bad in ["0", "65536", "-1", "abc", "", "+5432", " 5432"] {
            assert_eq!(
                err_with_dir(&["-p", bad]),
                format!("invalid port number \"{bad}\": must be a number from 1 to 65535")
            );
        }
    }

    #[test]
    fn username() {
        assert_eq!(with_dir(&["-U", "rep"]).conn.user.as_deref(), Some("rep"));
        assert_eq!(with_dir(&["--username=rep"]).conn.user.as_deref(), Some("rep"));
    }

    #[test]
    fn password_modes() {
        assert_eq!(with_dir(&["-w"]).conn.password, PasswordMode::Never);
        assert_eq!(with_dir(&["--no-password"]).conn.password, PasswordMode::Never);
        assert_eq!(with_dir(&["-W"]).conn.password, PasswordMode::Always);
        assert_eq!(with_dir(&["--password"]).conn.password, PasswordMode::Always);
        assert_eq!(err_with_dir(&["-w", "-W"]), "cannot use --no-password together with --password");
    }

    #[test]
    fn log_level() {
        use log::LevelFilter as L;
        for (s, l) in [
            ("trace", L::Trace),
            ("debug", L::Debug),
            ("info", L::Info),
            ("warn", L::Warn),
            ("warning", L::Warn),
            ("error", L::Error),
        ] {
            assert_eq!(with_dir(&["--log-level", s]).log.level, l);
            assert_eq!(with_dir(&[&format!("--log-level={s}")]).log.level, l);
        }
        assert_eq!(
            err_with_dir(&["--log-level", "loud"]),
            "invalid log level \"loud\": use trace, debug, info, warn or error"
        );
    }

    #[test]
    fn log_format() {
        assert_eq!(with_dir(&["--log-format", "json"]).log.format, LogFormat::Json);
        assert_eq!(with_dir(&["--log-format=text"]).log.format, LogFormat::Text);
        assert_eq!(err_with_dir(&["--log-format", "xml"]), "invalid log format \"xml\": use text or json");
    }

    #[test]
    fn log_add_source() {
        assert!(with_dir(&["--log-add-source"]).log.add_source);
    }

    #[test]
    fn help() {
        assert_eq!(try_parse(&["-?"]), Ok(Command::Help));
        assert_eq!(try_parse(&["--help"]), Ok(Command::Help));
        // Anywhere, and before checking combinations.
        assert_eq!(try_parse(&["-D", "/w", "--help"]), Ok(Command::Help));
        assert_eq!(try_parse(&["--synchronous", "--no-sync", "-?"]), Ok(Command::Help));
    }

    #[test]
    fn version() {
        assert_eq!(try_parse(&["-V"]), Ok(Command::Version));
        assert_eq!(try_parse(&["--version"]), Ok(Command::Version));
        assert_eq!(try_parse(&["-n", "-V"]), Ok(Command::Version));
        assert_eq!(
            version_text("pgreceivewal"),
            format!("pgreceivewal (pgreceivewal) {}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            version_text("pg_receivewal"),
            format!("pg_receivewal (pgreceivewal) {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn unknown_options() {
        assert_eq!(err_with_dir(&["--foo"]), "unrecognized option \"--foo\"");
        assert_eq!(err_with_dir(&["--foo=1"]), "unrecognized option \"--foo\"");
        assert_eq!(err_with_dir(&["-x"]), "unrecognized option \"-x\"");
        assert_eq!(err_with_dir(&["-nx"]), "unrecognized option \"-x\"");
        assert_eq!(err_with_dir(&["--directoryy=/x"]), "unrecognized option \"--directoryy\"");
    }

    #[test]
    fn segment_command() {
        assert_eq!(with_dir(&[]).segment_command, None);
        let cmd = "aws s3 cp %p s3://b/%f";
        assert_eq!(with_dir(&["--segment-command", cmd]).segment_command.as_deref(), Some(cmd));
        assert_eq!(
            with_dir(&["--segment-command=cp %p /x/%f"]).segment_command.as_deref(),
            Some("cp %p /x/%f")
        );
        assert_eq!(err_with_dir(&["--segment-command", " "]), "--segment-command must not be empty");
        for action in ["--create-slot", "--drop-slot"] {
            assert_eq!(
                err(&[action, "-S", "s", "--segment-command", "true"]),
                "--segment-command can only be used when streaming"
            );
        }
    }

    #[test]
    fn abbreviated_long_options() {
        assert_eq!(config(&["--dir=/x"]).directory, PathBuf::from("/x"));
        assert_eq!(with_dir(&["--stat", "3"]).status_interval, Some(Duration::from_secs(3)));
        assert_eq!(with_dir(&["--sync"]).durability, Durability::Synchronous);
        assert_eq!(with_dir(&["--no-s"]).durability, Durability::NoSync);
        assert_eq!(
            err_with_dir(&["--s", "x"]),
            "option \"--s\" is ambiguous; possibilities: \
             \"--status-interval\" \"--slot\" \"--synchronous\" \"--segment-command\""
        );
        assert_eq!(
            err_with_dir(&["--no"]),
            "option \"--no\" is ambiguous; possibilities: \
             \"--no-loop\" \"--no-sync\" \"--no-password\""
        );
    }

    #[test]
    fn missing_values() {
        assert_eq!(err(&["-D"]), "option \"-D\" requires a value");
        assert_eq!(err(&["--directory"]), "option \"--directory\" requires a value");
        assert_eq!(err_with_dir(&["-S"]), "option \"-S\" requires a value");
        assert_eq!(err_with_dir(&["--endpos"]), "option \"--endpos\" requires a value");
        assert_eq!(err_with_dir(&["-s"]), "option \"-s\" requires a value");
        assert_eq!(err_with_dir(&["-Z"]), "option \"-Z\" requires a value");
        assert_eq!(err_with_dir(&["-d"]), "option \"-d\" requires a value");
        assert_eq!(err_with_dir(&["-h"]), "option \"-h\" requires a value");
        assert_eq!(err_with_dir(&["-p"]), "option \"-p\" requires a value");
        assert_eq!(err_with_dir(&["-U"]), "option \"-U\" requires a value");
        assert_eq!(err_with_dir(&["--log-level"]), "option \"--log-level\" requires a value");
        assert_eq!(err_with_dir(&["--log-format"]), "option \"--log-format\" requires a value");
    }

    #[test]
    fn value_may_look_like_an_option() {
        // As with getopt, a required value is taken even when it starts with '-'.
        assert_eq!(config(&["-D", "-n"]).directory, PathBuf::from("-n"));
    }

    #[test]
    fn stray_arguments() {
        assert_eq!(err_with_dir(&["extra"]), "too many command-line arguments (first is \"extra\")");
        // Reported after the options are read, and the first one is named.
        assert_eq!(err(&["one", "-D", "/w", "two"]), "too many command-line arguments (first is \"one\")");
        assert_eq!(err_with_dir(&["--", "-n"]), "too many command-line arguments (first is \"-n\")");
    }

    #[test]
    fn short_options_cluster() {
        let c = config(&["-nvD/w"]);
        assert!(c.no_loop);
        assert_eq!(c.log.level, log::LevelFilter::Debug);
        assert_eq!(c.directory, PathBuf::from("/w"));
    }

    #[test]
    fn everything_at_once() {
        let c = config(&[
            "--directory=/archive",
            "--slot=arch",
            "--endpos=0/3000000",
            "--no-loop",
            "--synchronous",
            "--status-interval=1",
            "--dbname=application_name=x",
            "--host=db",
            "--port=5433",
            "--username=rep",
            "--no-password",
            "--log-format=json",
            "--log-level=trace",
            "--log-add-source",
            "--compress=none",
        ]);
        assert_eq!(c.slot.as_deref(), Some("arch"));
        assert_eq!(c.endpos, Some(Lsn(0x300_0000)));
        assert!(c.no_loop);
        assert_eq!(c.durability, Durability::Synchronous);
        assert_eq!(c.status_interval, Some(Duration::from_secs(1)));
        assert_eq!(c.conn.host.as_deref(), Some("db"));
        assert_eq!(c.conn.password, PasswordMode::Never);
        assert_eq!(
            c.log,
            LogOptions { level: log::LevelFilter::Trace, format: LogFormat::Json, add_source: true }
        );
    }

    #[test]
    fn usage_error_is_an_error() {
        let e: Box<dyn std::error::Error> = Box::new(UsageError("x y".into()));
        assert_eq!(e.to_string(), "x y");
    }

    #[test]
    fn every_long_option_is_handled() {
        // resolve_long must never hand parse() a name it does not match (the unreachable!).
        for long in LONG_OPTIONS {
            let arg = format!("--{long}");
            let _ = try_parse(&["-D", "/w", &arg, "v"]);
        }
    }

    #[test]
    fn help_lists_every_option() {
        let help = help_text("pgreceivewal");
        for long in LONG_OPTIONS {
            assert!(help.contains(&format!("--{long}")), "--{long} missing from help");
        }
        for short in "DEnsSvVZ?dhpUwW".chars() {
            assert!(help.contains(&format!("-{short}, --")), "-{short} missing from help");
        }
        assert!(help.contains("PG*"));
        assert!(help.contains("~/.pgpass"));
        assert!(help.contains("created"));
        for line in help.lines() {
            assert!(line.len() <= 90, "help line too long: {line:?}");
        }
    }
}
