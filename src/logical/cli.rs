//! The pgrecvlogical command line: flags → [`Config`], the `--help` text and usage errors.
//!
//! Connection, slot and logging flags are spelled as in pgreceivewal and pg_recvlogical and
//! checked by the same helpers (`crate::cli`). As there, one loop fills `Args` with what the
//! user typed, then `Args::validate` checks combinations and builds the [`Config`]. Nothing
//! here prints or exits.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::Arg;

use crate::cli::{
    check_slot_name, lexopt_error, parse_status_interval, resolve_long_in, string_value, usage, CommonArgs,
    Opt, DEFAULT_STATUS_INTERVAL_SECS,
};
use crate::lsn::Lsn;
use crate::text::parse_size;
use crate::tool::UsageError;

use super::config::{Action, Config, Output, Streaming};
use super::output::Format;

pub const PROGRAM: &str = "pgrecvlogical";

/// What the command line asks for.
pub type Command = crate::tool::Command<Config>;

pub const DEFAULT_ROTATE_SIZE: u64 = 64 << 20;
pub const DEFAULT_ROTATE_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_MEMORY_LIMIT: u64 = 16 << 20;
/// Below this a spill file would be written for every few changes.
const MIN_MEMORY_LIMIT: u64 = 64 << 10;

const LONG_OPTIONS: &[&str] = &[
    "directory",
    "file",
    "format",
    "rotate-size",
    "rotate-interval",
    "memory-limit",
    "spill-dir",
    "slot",
    "publication",
    "create-publication",
    "table",
    "create-slot",
    "create-slot-if-missing",
    "if-not-exists",
    "start",
    "drop-slot",
    "list-slots",
    "teardown",
    "proto-version",
    "streaming",
    "two-phase",
    "messages",
    "binary",
    "ddl",
    "snapshot",
    "endpos",
    "no-loop",
    "no-sync",
    "status-interval",
    "verbose",
    "version",
    "help",
    "dbname",
    "host",
    "port",
    "username",
    "no-password",
    "password",
    "log-level",
    "log-format",
    "log-add-source",
];

#[derive(Debug, Default)]
struct Args {
    directory: Option<PathBuf>,
    file: Option<String>,
    format: Option<Format>,
    rotate_size: Option<u64>,
    rotate_interval: Option<u64>,
    memory_limit: Option<u64>,
    spill_dir: Option<PathBuf>,
    slot: Option<String>,
    publications: Vec<String>,
    create_publication: bool,
    tables: Vec<String>,
    create_slot: bool,
    create_slot_if_missing: bool,
    if_not_exists: bool,
    start: bool,
    drop_slot: bool,
    list_slots: bool,
    teardown: bool,
    proto_version: Option<u32>,
    streaming: Option<Streaming>,
    two_phase: bool,
    messages: bool,
    binary: bool,
    ddl: bool,
    snapshot: bool,
    endpos: Option<Lsn>,
    no_loop: bool,
    no_sync: bool,
    status_interval_secs: Option<u64>,
    common: CommonArgs,
    first_stray: Option<OsString>,
}

/// A size as PostgreSQL writes them: `8192`, `64kB`, `16MB`, `1GB`.
fn size_value(p: &mut lexopt::Parser, option: &str) -> Result<u64, UsageError> {
    let s = string_value(p, option)?;
    parse_size(&s).filter(|&n| n > 0).ok_or_else(|| {
        usage(format!("invalid size \"{s}\" for option {option}: use a number with kB, MB or GB, like 16MB"))
    })
}

/// Parse the arguments after the program name.
// Long on purpose: one arm per flag, so each flag's spelling and value are read in one place
// (a flag table generating this parser would make it short).
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Args::default();
    while let Some(arg) = p.next().map_err(lexopt_error)? {
        let opt = match arg {
            Arg::Short(c) => Opt::Short(c),
            Arg::Long(name) => Opt::Long(resolve_long_in(name, LONG_OPTIONS)?),
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
                    return Err(usage("output directory name must not be empty"));
                }
                a.directory = Some(PathBuf::from(dir));
            }
            Short('f') | Long("file") => a.file = Some(string_value(&mut p, "-f/--file")?),
            Long("format") => {
                let s = string_value(&mut p, "--format")?;
                a.format = Some(match s.as_str() {
                    "json" => Format::Json,
                    "text" => Format::Text,
                    _ => return Err(usage(format!("invalid output format \"{s}\": use json or text"))),
                });
            }
            Long("rotate-size") => a.rotate_size = Some(size_value(&mut p, "--rotate-size")?),
            Long("rotate-interval") => {
                let s = string_value(&mut p, "--rotate-interval")?;
                a.rotate_interval = Some(s.trim().parse().map_err(|_| {
                    usage(format!(
                        "invalid rotation interval \"{s}\": must be a whole number of seconds, 0 or more"
                    ))
                })?);
            }
            Long("memory-limit") => {
                let n = size_value(&mut p, "--memory-limit")?;
                if n < MIN_MEMORY_LIMIT {
                    return Err(usage(format!(
                        "--memory-limit must be at least {}kB",
                        MIN_MEMORY_LIMIT >> 10
                    )));
                }
                a.memory_limit = Some(n);
            }
            Long("spill-dir") => {
                let dir = p.value().map_err(lexopt_error)?;
                if dir.is_empty() {
                    return Err(usage("spill directory name must not be empty"));
                }
                a.spill_dir = Some(PathBuf::from(dir));
            }
            Short('S') | Long("slot") => {
                let slot = string_value(&mut p, "-S/--slot")?;
                check_slot_name(&slot)?;
                a.slot = Some(slot);
            }
            Short('P') | Long("publication") => {
                let name = string_value(&mut p, "-P/--publication")?;
                if name.is_empty() || name.len() > 63 || name.contains('\0') {
                    return Err(usage(format!("invalid publication name \"{name}\": 1 to 63 characters")));
                }
                a.publications.push(name);
            }
            Long("create-publication") => a.create_publication = true,
            Short('t') | Long("table") => {
                let t = string_value(&mut p, "-t/--table")?;
                if t.is_empty() {
                    return Err(usage("table name must not be empty"));
                }
                a.tables.push(t);
            }
            Long("create-slot") => a.create_slot = true,
            Long("create-slot-if-missing") => a.create_slot_if_missing = true,
            Long("if-not-exists") => a.if_not_exists = true,
            Long("start") => a.start = true,
            Long("drop-slot") => a.drop_slot = true,
            Long("list-slots") => a.list_slots = true,
            Long("teardown") => a.teardown = true,
            Long("proto-version") => {
                let s = string_value(&mut p, "--proto-version")?;
                match s.trim().parse::<u32>() {
                    Ok(v @ 1..=4) => a.proto_version = Some(v),
                    _ => return Err(usage(format!("invalid protocol version \"{s}\": use 1, 2, 3 or 4"))),
                }
            }
            Long("streaming") => {
                let s = string_value(&mut p, "--streaming")?;
                a.streaming = Some(match s.as_str() {
                    "on" | "true" => Streaming::On,
                    "off" | "false" => Streaming::Off,
                    "parallel" => Streaming::Parallel,
                    _ => {
                        return Err(usage(format!("invalid streaming mode \"{s}\": use on, parallel or off")))
                    }
                });
            }
            Long("two-phase") => a.two_phase = true,
            Long("messages") => a.messages = true,
            Long("binary") => a.binary = true,
            Long("ddl") => a.ddl = true,
            Long("snapshot") => a.snapshot = true,
            Short('E') | Long("endpos") => {
                let s = string_value(&mut p, "-E/--endpos")?;
                let lsn: Lsn = s.parse().map_err(|_| {
                    usage(format!(
                        "could not parse end position \"{s}\": expected two hexadecimal numbers like 0/16B3748"
                    ))
                })?;
                a.endpos = lsn.is_valid().then_some(lsn);
            }
            Short('n') | Long("no-loop") => a.no_loop = true,
            Long("no-sync") => a.no_sync = true,
            Short('s') | Long("status-interval") => {
                let s = string_value(&mut p, "-s/--status-interval")?;
                a.status_interval_secs = Some(parse_status_interval(&s)?);
            }

            opt if a.common.parse(opt, &mut p)? => {}
            Short(c) => return Err(usage(format!("unrecognized option \"-{c}\""))),
            Long(name) => unreachable!("--{name} is in LONG_OPTIONS but not handled"),
        }
    }
    a.validate().map(Command::Run)
}

impl Args {
    // Long on purpose: one check per flag combination, each with its own message, in the order
    // the combinations are documented; splitting it would scatter the rules of one command line.
    fn validate(self) -> Result<Config, UsageError> {
        if let Some(stray) = &self.first_stray {
            return Err(usage(format!(
                "too many command-line arguments (first is \"{}\")",
                stray.to_string_lossy()
            )));
        }
        let actions = [
            (self.create_slot, "--create-slot"),
            (self.drop_slot, "--drop-slot"),
            (self.list_slots, "--list-slots"),
        ];
        let given: Vec<&str> = actions.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if given.len() > 1 {
            return Err(usage(format!("cannot use {} together with {}", given[0], given[1])));
        }
        if self.teardown && (self.create_slot || self.list_slots) {
            return Err(usage("--teardown can only be used alone or with --drop-slot"));
        }
        if self.start && !self.create_slot {
            return Err(usage("--start can only be used with --create-slot"));
        }
        let action = if self.create_slot {
            Action::CreateSlot { then_stream: self.start }
        } else if self.drop_slot || self.teardown {
            Action::Drop { slot: self.drop_slot, teardown: self.teardown }
        } else if self.list_slots {
            Action::ListSlots
        } else {
            Action::Stream
        };
        let needs_slot = !matches!(action, Action::ListSlots | Action::Drop { slot: false, .. });
        if needs_slot && self.slot.is_none() {
            return Err(usage("no slot specified: use -S/--slot"));
        }
        if self.if_not_exists && !self.create_slot {
            return Err(usage("--if-not-exists can only be used with --create-slot"));
        }
        if self.create_slot_if_missing && action != Action::Stream {
            return Err(usage(
                "--create-slot-if-missing can only be used when streaming (--create-slot --start creates the slot itself)",
            ));
        }
        self.common.check()?;
        self.common.check_dbname()?;

        let output = match (&self.directory, &self.file) {
            (Some(_), Some(_)) => return Err(usage("cannot use -D/--directory together with -f/--file")),
            (Some(d), None) => Some(Output::Directory(d.clone())),
            (None, Some(f)) if f == "-" => Some(Output::Stdout),
            (None, Some(f)) => {
                return Err(usage(format!(
                    "cannot write to \"{f}\": -f only accepts - (standard output); use -D for durable files"
                )))
            }
            (None, None) => None,
        };
        if action.streams() {
            if output.is_none() {
                return Err(usage("no output specified: use -D DIR or -f -"));
            }
            if self.publications.is_empty() {
                return Err(usage("no publication specified: use -P/--publication"));
            }
        }
        if self.create_publication && self.publications.len() != 1 {
            return Err(usage("--create-publication needs exactly one -P/--publication"));
        }
        if !self.tables.is_empty() && !self.create_publication {
            return Err(usage("-t/--table can only be used with --create-publication"));
        }
        if (self.rotate_size.is_some() || self.rotate_interval.is_some())
            && !matches!(output, Some(Output::Directory(_)))
        {
            return Err(usage("--rotate-size and --rotate-interval need -D/--directory"));
        }
        if let Some(v) = self.proto_version {
            if v < 2 && matches!(self.streaming, Some(Streaming::On | Streaming::Parallel)) {
                return Err(usage("--streaming needs protocol version 2 or later"));
            }
            if v < 4 && self.streaming == Some(Streaming::Parallel) {
                return Err(usage("--streaming=parallel needs protocol version 4"));
            }
            if v < 3 && self.two_phase {
                return Err(usage("--two-phase needs protocol version 3 or later"));
            }
        }
        if self.snapshot && !action.streams() {
            return Err(usage("--snapshot only applies when streaming"));
        }

        let secs = self.status_interval_secs.unwrap_or(DEFAULT_STATUS_INTERVAL_SECS);
        let rotate = self.rotate_interval.unwrap_or(DEFAULT_ROTATE_INTERVAL_SECS);
        Ok(Config {
            action,
            slot: self.slot.unwrap_or_default(),
            if_not_exists: self.if_not_exists,
            create_slot_if_missing: self.create_slot_if_missing,
            publications: self.publications,
            create_publication: self.create_publication,
            tables: self.tables,
            output,
            format: self.format.unwrap_or(Format::Json),
            rotate_size: self.rotate_size.unwrap_or(DEFAULT_ROTATE_SIZE),
            rotate_interval: (rotate > 0).then(|| Duration::from_secs(rotate)),
            memory_limit: self.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT),
            spill_dir: self.spill_dir,
            proto_version: self.proto_version,
            streaming: self.streaming,
            two_phase: self.two_phase,
            messages: self.messages || self.ddl,
            binary: self.binary,
            ddl: self.ddl,
            snapshot: self.snapshot,
            endpos: self.endpos,
            no_loop: self.no_loop,
            no_sync: self.no_sync,
            status_interval: (secs > 0).then(|| Duration::from_secs(secs)),
            log: self.common.log_options(),
            conn: self.common.conn_options(),
        })
    }
}

/// `--version` for the name the program was started as; the parenthesis names the software.
pub fn version_text(program: &str) -> String {
    format!("{program} (pgreceivewal) {}", env!("CARGO_PKG_VERSION"))
}

// Long only because it is the --help text itself, one string.
pub fn help_text(program: &str) -> String {
    format!(
        "\
{program} streams decoded row changes from a PostgreSQL logical replication
slot (pgoutput) into durable JSON or text lines, at least once.

Usage:
  {program} -S SLOT -P PUBLICATION (-D DIR | -f -) [OPTION]...

Output:
  -D, --directory=DIR    write rotating, fsync'ed files into DIR
  -f, --file=-           write to standard output instead
      --format=FORMAT    json (one object per line, default) or text
      --rotate-size=SIZE start a new file after SIZE (default: 64MB)
      --rotate-interval=SECS
                         start a new file after SECS seconds
                         (default: {rotate}; 0: never)
      --memory-limit=SIZE
                         memory for transactions streamed before they commit;
                         beyond it they spill to disk (default: 16MB)
      --spill-dir=DIR    where spill files go
                         (default: DIR/.spill, or the temp directory)
  -E, --endpos=LSN       exit once changes up to LSN are written
  -n, --no-loop          do not reconnect when the connection is lost
      --no-sync          do not fsync (for tests: a crash can lose output)
  -s, --status-interval=SECS
                         time between status packets sent to server (default: {status})
  -v, --verbose          output verbose messages (-v debug, -vv trace)
  -V, --version          output version information, then exit
  -?, --help             show this help, then exit

Replication:
  -S, --slot=SLOTNAME    logical replication slot (pgoutput; it must exist)
  -P, --publication=NAME publication to stream (repeatable)
      --create-publication
                         create the publication if missing (for all tables, or
                         for the tables given with -t)
  -t, --table=TABLE      a table for --create-publication (repeatable)
      --proto-version=N  pgoutput protocol version (default: the highest the
                         server has: 1 on 10-13, 2 on 14, 3 on 15, 4 on 16+)
      --streaming=MODE   on, parallel or off: stream large transactions before
                         they commit (default: on where supported)
      --two-phase        decode prepared transactions at PREPARE
      --messages         include logical messages (pg_logical_emit_message)
      --binary           ask for values in binary format
      --ddl              install an event trigger that reports DDL in the stream
      --snapshot         create the slot with a snapshot and write every
                         published table's rows before the first change

Optional actions:
      --create-slot      create the slot (with --start, then stream)
      --if-not-exists    do not error if the slot already exists
      --start            stream after --create-slot
      --create-slot-if-missing
                         when streaming, create the slot if the server lacks
                         it (a new primary after a failover), with a warning
      --drop-slot        drop the slot
      --teardown         remove what --ddl installed
      --list-slots       list the database's logical slots

Connection options:
  -d, --dbname=CONNSTR   connection string (names the database)
  -h, --host=HOSTNAME    database server host or socket directory
  -p, --port=PORT        database server port number
  -U, --username=NAME    connect as specified database user
  -w, --no-password      never prompt for password
  -W, --password         force password prompt (should happen automatically)

Logging:
      --log-level=LEVEL  trace, debug, info, warn or error (default: info)
      --log-format=FORMAT
                         text or json, one message per line (default: text)
      --log-add-source   add the source file and line to each message

The position confirmed to the server is the end of the last transaction whose
output is on disk (fsync'ed) or written to standard output; while nothing is
pending, keepalive positions are confirmed so an idle slot never holds WAL.
After a restart streaming resumes where the output ends, without gaps.

The slot must exist: a forgotten slot holds back WAL and the catalog on the
server, so a missing one is created only by --create-slot (--start to stream
at once) or, when streaming, with --create-slot-if-missing.

Connection settings not given here are taken by libpq from the PG* environment
variables, the password file ~/.pgpass and the connection service file.
",
        status = DEFAULT_STATUS_INTERVAL_SECS,
        rotate = DEFAULT_ROTATE_INTERVAL_SECS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, PasswordMode};

    fn try_parse(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn config(args: &[&str]) -> Config {
        match try_parse(args) {
            Ok(Command::Run(c)) => c,
            other => panic!("{args:?}: expected a config, got {other:?}"),
        }
    }

    /// A streaming command line plus `args`.
    fn stream(args: &[&str]) -> Config {
        let mut all = vec!["-S", "s", "-P", "p", "-D", "/out"];
        all.extend_from_slice(args);
        config(&all)
    }

    fn err(args: &[&str]) -> String {
        match try_parse(args) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{args:?}: expected an error, got {c:?}"),
        }
    }

    fn stream_err(args: &[&str]) -> String {
        let mut all = vec!["-S", "s", "-P", "p", "-D", "/out"];
        all.extend_from_slice(args);
        err(&all)
    }

    /// pg_recvlogical's `-d` names the database, or is a connection string or URI (libpq's
    /// `expand_dbname`); a connection string must parse, checked before connecting.
    #[test]
    fn dbname_is_a_database_or_a_valid_connection_string() {
        assert_eq!(stream(&["-d", "mydb"]).conn.dbname.as_deref(), Some("mydb"));
        assert_eq!(stream(&["-d", "my db"]).conn.dbname.as_deref(), Some("my db"));
        assert_eq!(stream(&["-d", "dbname=app host=h"]).conn.dbname.as_deref(), Some("dbname=app host=h"));
        assert_eq!(
            stream(&["-d", "postgresql://u@h/app"]).conn.dbname.as_deref(),
            Some("postgresql://u@h/app")
        );
        assert_eq!(
            stream_err(&["-d", "dbname=app host 127.0.0.1"]),
            "invalid connection string given with -d/--dbname: missing \"=\" after \"host\" in connection info string"
        );
        assert!(stream_err(&["-d", "x=1"]).ends_with("invalid connection option \"x\""));
        assert!(err(&["--list-slots", "-d", "dbname='app"]).contains("unterminated quoted string"));
    }

    #[test]
    fn defaults() {
        let c = stream(&[]);
        assert_eq!(c.action, Action::Stream);
        assert_eq!(c.slot, "s");
        assert_eq!(c.publications, vec!["p"]);
        assert_eq!(c.output, Some(Output::Directory(PathBuf::from("/out"))));
        assert_eq!(c.format, Format::Json);
        assert_eq!(c.rotate_size, 64 << 20);
        assert_eq!(c.rotate_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.memory_limit, 16 << 20);
        assert_eq!(c.proto_version, None);
        assert_eq!(c.streaming, None);
        assert!(!c.two_phase && !c.messages && !c.binary && !c.ddl && !c.snapshot);
        assert_eq!(c.status_interval, Some(Duration::from_secs(10)));
        assert_eq!(c.log.level, log::LevelFilter::Info);
    }

    #[test]
    fn outputs() {
        let c = config(&["-S", "s", "-P", "p", "-f", "-"]);
        assert_eq!(c.output, Some(Output::Stdout));
        assert_eq!(
            err(&["-S", "s", "-P", "p", "-f", "out.json"]),
            "cannot write to \"out.json\": -f only accepts - (standard output); use -D for durable files"
        );
        assert_eq!(stream_err(&["-f", "-"]), "cannot use -D/--directory together with -f/--file");
        assert_eq!(err(&["-S", "s", "-P", "p"]), "no output specified: use -D DIR or -f -");
        assert_eq!(err(&["-D", ""]), "output directory name must not be empty");
        assert_eq!(stream(&["--format", "text"]).format, Format::Text);
        assert_eq!(stream_err(&["--format=xml"]), "invalid output format \"xml\": use json or text");
    }

    #[test]
    fn publications() {
        let c = stream(&["--publication", "q", "-Pr"]);
        assert_eq!(c.publications, vec!["p", "q", "r"]);
        assert_eq!(err(&["-S", "s", "-D", "/o"]), "no publication specified: use -P/--publication");
        let c = stream(&["--create-publication", "-t", "a", "--table=b.c"]);
        assert!(c.create_publication);
        assert_eq!(c.tables, vec!["a", "b.c"]);
        assert_eq!(
            stream_err(&["-P", "q", "--create-publication"]),
            "--create-publication needs exactly one -P/--publication"
        );
        assert_eq!(stream_err(&["-t", "a"]), "-t/--table can only be used with --create-publication");
        assert!(stream_err(&["-P", ""]).starts_with("invalid publication name"));
    }

    #[test]
    fn rotation_and_memory() {
        let c = stream(&["--rotate-size=1MB", "--rotate-interval", "60", "--memory-limit", "64kB"]);
        assert_eq!(
            (c.rotate_size, c.rotate_interval, c.memory_limit),
            (1 << 20, Some(Duration::from_secs(60)), 64 << 10)
        );
        assert_eq!(stream(&["--rotate-interval=0"]).rotate_interval, None);
        assert_eq!(
            stream_err(&["--rotate-size", "big"]),
            "invalid size \"big\" for option --rotate-size: use a number with kB, MB or GB, like 16MB"
        );
        assert_eq!(stream_err(&["--memory-limit", "1kB"]), "--memory-limit must be at least 64kB");
        assert_eq!(
            err(&["-S", "s", "-P", "p", "-f", "-", "--rotate-size", "1MB"]),
            "--rotate-size and --rotate-interval need -D/--directory"
        );
        assert_eq!(stream(&["--spill-dir", "/tmp/x"]).spill_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn protocol_options() {
        let c = stream(&[
            "--proto-version",
            "4",
            "--streaming",
            "parallel",
            "--two-phase",
            "--binary",
            "--messages",
        ]);
        assert_eq!(c.proto_version, Some(4));
        assert_eq!(c.streaming, Some(Streaming::Parallel));
        assert!(c.two_phase && c.binary && c.messages);
        assert_eq!(stream(&["--streaming=off"]).streaming, Some(Streaming::Off));
        assert_eq!(stream_err(&["--proto-version", "5"]), "invalid protocol version \"5\": use 1, 2, 3 or 4");
        assert_eq!(
            stream_err(&["--proto-version", "1", "--streaming", "on"]),
            "--streaming needs protocol version 2 or later"
        );
        assert_eq!(
            stream_err(&["--proto-version", "3", "--streaming", "parallel"]),
            "--streaming=parallel needs protocol version 4"
        );
        assert_eq!(
            stream_err(&["--proto-version", "2", "--two-phase"]),
            "--two-phase needs protocol version 3 or later"
        );
        assert_eq!(
            stream_err(&["--streaming", "maybe"]),
            "invalid streaming mode \"maybe\": use on, parallel or off"
        );
        // --ddl needs the messages the trigger emits.
        assert!(stream(&["--ddl"]).messages);
    }

    #[test]
    fn create_slot_if_missing() {
        assert!(!stream(&[]).create_slot_if_missing);
        assert!(stream(&["--create-slot-if-missing"]).create_slot_if_missing);
        for action in [&["--create-slot", "--start"][..], &["--drop-slot"][..], &["--list-slots"][..]] {
            let mut args = action.to_vec();
            args.push("--create-slot-if-missing");
            assert!(stream_err(&args).starts_with("--create-slot-if-missing can only be used when streaming"));
        }
    }

    #[test]
    fn actions() {
        assert_eq!(config(&["--create-slot", "-S", "s"]).action, Action::CreateSlot { then_stream: false });
        let c = config(&["--create-slot", "--start", "--if-not-exists", "-S", "s", "-P", "p", "-f", "-"]);
        assert_eq!(c.action, Action::CreateSlot { then_stream: true });
        assert!(c.if_not_exists);
        assert_eq!(err(&["--create-slot", "--start", "-S", "s"]), "no output specified: use -D DIR or -f -");
        assert_eq!(config(&["--drop-slot", "-S", "s"]).action, Action::Drop { slot: true, teardown: false });
        assert_eq!(config(&["--teardown"]).action, Action::Drop { slot: false, teardown: true });
        assert_eq!(
            config(&["--drop-slot", "--teardown", "-S", "s"]).action,
            Action::Drop { slot: true, teardown: true }
        );
        assert_eq!(config(&["--list-slots"]).action, Action::ListSlots);
        assert_eq!(
            err(&["--create-slot", "--drop-slot", "-S", "s"]),
            "cannot use --create-slot together with --drop-slot"
        );
        assert_eq!(err(&["--drop-slot"]), "no slot specified: use -S/--slot");
        assert_eq!(err(&["--start", "-S", "s"]), "--start can only be used with --create-slot");
        assert_eq!(
            err(&["--drop-slot", "--if-not-exists", "-S", "s"]),
            "--if-not-exists can only be used with --create-slot"
        );
        assert_eq!(
            err(&["--list-slots", "--teardown"]),
            "--teardown can only be used alone or with --drop-slot"
        );
        assert_eq!(err(&["--snapshot", "--drop-slot", "-S", "s"]), "--snapshot only applies when streaming");
        assert!(stream(&["--snapshot"]).snapshot);
    }

    #[test]
    fn shared_flags() {
        let c = stream(&[
            "-d",
            "dbname=app",
            "-h",
            "db",
            "-p",
            "5433",
            "-U",
            "rep",
            "-w",
            "-E",
            "0/10",
            "-n",
            "--no-sync",
            "-s",
            "1",
            "-vv",
            "--log-format=json",
        ]);
        assert_eq!(c.conn.dbname.as_deref(), Some("dbname=app"));
        assert_eq!(c.conn.port.as_deref(), Some("5433"));
        assert_eq!(c.conn.password, PasswordMode::Never);
        assert_eq!(c.endpos, Some(Lsn(0x10)));
        assert!(c.no_loop && c.no_sync);
        assert_eq!(c.status_interval, Some(Duration::from_secs(1)));
        assert_eq!(c.log.level, log::LevelFilter::Trace);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(stream(&["-s", "0"]).status_interval, None);
        assert_eq!(stream(&["-E", "0/0"]).endpos, None);
        assert_eq!(
            stream_err(&["-S", "Bad"]).split(':').next(),
            Some("replication slot name \"Bad\" is invalid")
        );
        assert_eq!(stream_err(&["-p", "0"]), "invalid port number \"0\": must be a number from 1 to 65535");
        assert_eq!(stream_err(&["-w", "-W"]), "cannot use --no-password together with --password");
        assert_eq!(stream_err(&["--pub"]), "option \"--pub\" requires a value");
        assert_eq!(stream(&["--pub", "x"]).publications, vec!["p", "x"]);
        assert_eq!(stream_err(&["--s"]), "option \"--s\" is ambiguous; possibilities: \"--spill-dir\" \"--slot\" \"--start\" \"--streaming\" \"--snapshot\" \"--status-interval\"");
        assert_eq!(stream_err(&["extra"]), "too many command-line arguments (first is \"extra\")");
        assert_eq!(stream_err(&["-x"]), "unrecognized option \"-x\"");
    }

    #[test]
    fn help_and_version() {
        assert_eq!(try_parse(&["--help"]), Ok(Command::Help));
        assert_eq!(try_parse(&["-S", "s", "-?"]), Ok(Command::Help));
        assert_eq!(try_parse(&["-V"]), Ok(Command::Version));
        assert!(version_text(PROGRAM).starts_with("pgrecvlogical (pgreceivewal) "));
        let help = help_text(PROGRAM);
        for long in LONG_OPTIONS {
            assert!(help.contains(&format!("--{long}")), "--{long} missing from help");
        }
        for line in help.lines() {
            assert!(line.len() <= 90, "help line too long: {line:?}");
        }
    }

    #[test]
    fn every_long_option_is_handled() {
        for long in LONG_OPTIONS {
            let arg = format!("--{long}");
            let _ = try_parse(&["-S", "s", "-P", "p", "-D", "/o", &arg, "v"]);
        }
    }
}
