//! The pgrecvlogical command line: its flag table, flags → [`Config`], the `--help` text and
//! usage errors.
//!
//! Connection, slot and logging flags are spelled as in pgreceivewal and pg_recvlogical and
//! checked by the same helpers (`crate::cli`). As there, one loop fills `Args` with what the
//! user typed, then `Args::validate` checks combinations and builds the [`Config`]. Nothing
//! here prints or exits.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::flags::{self, Flag, FlagDef, Section, ToolArgs};
use crate::cli::{self, render, usage, CommonArgs, DEFAULT_STATUS_INTERVAL_SECS};
use crate::lsn::Lsn;
use crate::text::parse_size;
use crate::tool::UsageError;

use super::config::{Action, Config, Output, Streaming};
use super::output::Format;
use super::retention::Rule;

pub const PROGRAM: &str = "pgrecvlogical";

/// What the command line asks for.
pub type Command = crate::tool::Command<Config>;

pub const DEFAULT_ROTATE_SIZE: u64 = 64 << 20;
pub const DEFAULT_ROTATE_INTERVAL_SECS: u64 = 3600;
pub const DEFAULT_MEMORY_LIMIT: u64 = 16 << 20;
/// Below this a spill file would be written for every few changes.
const MIN_MEMORY_LIMIT: u64 = 64 << 10;

const OUTPUT: &str = "Output";
const REPLICATION: &str = "Replication";
const ACTIONS: &str = "Optional actions";

pub static SECTIONS: &[Section] = &[
    Section { title: OUTPUT, man_heading: true, man_intro: "" },
    Section { title: REPLICATION, man_heading: true, man_intro: "" },
    Section { title: ACTIONS, man_heading: true, man_intro: "" },
    cli::CONNECTION,
    cli::LOGGING,
    cli::MONITORING,
];

/// Every flag. `--help` and the man page list them by section, in this order; an ambiguous
/// abbreviation lists its possibilities in it too. To add a flag: an entry here, an arm in
/// `Args::take`.
pub static FLAGS: &[FlagDef] = &[
    FlagDef {
        long: "directory",
        short: "D",
        value: Some("DIR"),
        help: "write rotating, fsync'ed files into DIR",
        man: r"Write rotating, fsync'ed files into
.IR dir .",
        section: OUTPUT,
    },
    FlagDef {
        long: "file",
        short: "f",
        value: Some("-"),
        help: "write to standard output instead",
        man: "Write to standard output instead.",
        section: OUTPUT,
    },
    FlagDef {
        long: "format",
        short: "",
        value: Some("FORMAT"),
        help: "json (one object per line, default) or text",
        man: r".B json
(one object per line, the default) or
.BR text .",
        section: OUTPUT,
    },
    FlagDef {
        long: "rotate-size",
        short: "",
        value: Some("SIZE"),
        help: "start a new file after SIZE (default: 64MB)",
        man: r"Start a new file after
.I size
(default 64MB).",
        section: OUTPUT,
    },
    FlagDef {
        long: "rotate-interval",
        short: "",
        value: Some("SECS"),
        help: "start a new file after SECS seconds\n(default: 3600; 0: never)",
        man: r"Start a new file after
.I secs
seconds (default 3600; 0: never).",
        section: OUTPUT,
    },
    FlagDef {
        long: "retain-size",
        short: "",
        value: Some("SIZE"),
        help: "remove the oldest complete files while the output is\nlarger than SIZE (never past a registered consumer)",
        man: r"Remove the oldest complete files while the output is larger than
.IR size .
Never the partial file, the newest file, or anything past a position a consumer
registered (a file
.BI .consumer. name
holding
.BI position= lsn\fR,
as
.BR pgapplylogical (1)
writes).",
        section: OUTPUT,
    },
    FlagDef {
        long: "retain-age",
        short: "",
        value: Some("SECS"),
        help: "remove complete files older than SECS seconds\n(never past a registered consumer)",
        man: r"Remove complete files last written more than
.I secs
seconds ago, with the same limits as
.BR \-\-retain\-size .",
        section: OUTPUT,
    },
    FlagDef {
        long: "memory-limit",
        short: "",
        value: Some("SIZE"),
        help: "memory for transactions streamed before they commit;\nbeyond it they spill to disk (default: 16MB)",
        man: r"Memory for transactions streamed before they commit; beyond it they spill to disk
(default 16MB).",
        section: OUTPUT,
    },
    FlagDef {
        long: "spill-dir",
        short: "",
        value: Some("DIR"),
        help: "where spill files go\n(default: DIR/.spill, or the temp directory)",
        man: r"Where spill files go (default: a
.B .spill
directory in the output directory, or the temporary directory).",
        section: OUTPUT,
    },
    FlagDef {
        man: r"Pause writing while less than
.I size
would stay free on the disk of the output directory (default 64MB;
.B 0
turns the floor off, and only a full disk pauses).
A write that fails with ENOSPC or EDQUOT pauses too: a short write is cut off
again first, so no torn line stays.
While paused, what is written is made durable and confirmed, the connection
stays open with status updates that confirm nothing new (the slot keeps the
WAL), and writing resumes on its own once space is free, with one warning and
one line in the log for each pause.",
        section: OUTPUT,
        ..cli::MIN_FREE
    },
    FlagDef {
        long: "slot",
        short: "S",
        value: Some("SLOTNAME"),
        help: "logical replication slot (pgoutput; it must exist)",
        man: r"The logical replication slot (pgoutput).
It must exist: a forgotten slot holds back WAL and the catalog on the server, so a
missing slot is an error unless
.B \-\-create\-slot
(with
.BR \-\-start )
or
.B \-\-create\-slot\-if\-missing
asks for it.",
        section: REPLICATION,
    },
    FlagDef {
        long: "publication",
        short: "P",
        value: Some("NAME"),
        help: "publication to stream (repeatable)",
        man: "A publication to stream (repeatable).",
        section: REPLICATION,
    },
    FlagDef {
        long: "create-publication",
        short: "",
        value: None,
        help: "create the publication if missing (for all tables, or\nfor the tables given with -t)",
        man: r"Create the publication if missing (for all tables, or for the tables given with
.BR \-t ).",
        section: REPLICATION,
    },
    FlagDef {
        long: "table",
        short: "t",
        value: Some("TABLE"),
        help: "a table for --create-publication (repeatable)",
        man: r"A table for
.B \-\-create\-publication
(repeatable).",
        section: REPLICATION,
    },
    FlagDef {
        long: "create-slot",
        short: "",
        value: None,
        help: "create the slot (with --start, then stream)",
        man: r"Create the slot (with
.BR \-\-start ,
then stream).",
        section: ACTIONS,
    },
    FlagDef {
        long: "if-not-exists",
        short: "",
        value: None,
        help: "do not error if the slot already exists",
        man: "Do not fail if the slot already exists.",
        section: ACTIONS,
    },
    FlagDef {
        long: "start",
        short: "",
        value: None,
        help: "stream after --create-slot",
        man: r"Stream after
.BR \-\-create\-slot .",
        section: ACTIONS,
    },
    FlagDef {
        long: "create-slot-if-missing",
        short: "",
        value: None,
        help: "when streaming, create the slot if the server lacks\nit (a new primary after a failover), with a warning",
        man: r"When streaming, create the slot if the server does not have it (a new primary after
a failover), with a warning that names the server.",
        section: ACTIONS,
    },
    FlagDef { long: "drop-slot", short: "", value: None, help: "drop the slot", man: "Drop the slot.", section: ACTIONS },
    FlagDef {
        long: "teardown",
        short: "",
        value: None,
        help: "remove what --ddl installed",
        man: r"Remove what
.B \-\-ddl
installed.",
        section: ACTIONS,
    },
    FlagDef {
        long: "list-slots",
        short: "",
        value: None,
        help: "list the database's logical slots",
        man: "List the database's logical slots.",
        section: ACTIONS,
    },
    FlagDef {
        long: "proto-version",
        short: "",
        value: Some("N"),
        help: "pgoutput protocol version (default: the highest the\nserver has: 1 on 10-13, 2 on 14, 3 on 15, 4 on 16+)",
        man: r"The pgoutput protocol version (default: the highest the server has: 1 on 10 to 13,
2 on 14, 3 on 15, 4 on 16 and later).",
        section: REPLICATION,
    },
    FlagDef {
        long: "streaming",
        short: "",
        value: Some("MODE"),
        help: "on, parallel or off: stream large transactions before\nthey commit (default: on where supported)",
        man: r".BR on ,
.B parallel
or
.BR off :
stream large transactions before they commit (default: on where supported).",
        section: REPLICATION,
    },
    FlagDef {
        long: "two-phase",
        short: "",
        value: None,
        help: "decode prepared transactions at PREPARE",
        man: "Decode prepared transactions at PREPARE.",
        section: REPLICATION,
    },
    FlagDef {
        long: "messages",
        short: "",
        value: None,
        help: "include logical messages (pg_logical_emit_message)",
        man: r"Include logical messages
.RB ( pg_logical_emit_message ).",
        section: REPLICATION,
    },
    FlagDef {
        long: "binary",
        short: "",
        value: None,
        help: "ask for values in binary format",
        man: "Ask for values in binary format.",
        section: REPLICATION,
    },
    FlagDef {
        long: "ddl",
        short: "",
        value: None,
        help: "install an event trigger that reports DDL in the stream",
        man: "Install an event trigger that reports DDL in the stream.",
        section: REPLICATION,
    },
    FlagDef {
        long: "snapshot",
        short: "",
        value: None,
        help: "create the slot with a snapshot and write every\npublished table's rows before the first change",
        man: r"Create the slot with a snapshot and write every published table's rows before the
first change (the slot is created by
.B \-\-create\-slot \-\-start
or
.BR \-\-create\-slot\-if\-missing ).",
        section: REPLICATION,
    },
    FlagDef {
        long: "endpos",
        short: "E",
        value: Some("LSN"),
        help: "exit once changes up to LSN are written",
        man: r"Exit once changes up to
.I lsn
are written.",
        section: OUTPUT,
    },
    FlagDef {
        long: "no-loop",
        short: "n",
        value: None,
        help: "do not reconnect when the connection is lost",
        man: "Do not reconnect when the connection is lost.",
        section: OUTPUT,
    },
    FlagDef {
        long: "no-sync",
        short: "",
        value: None,
        help: "do not fsync (for tests: a crash can lose output)",
        man: "Do not fsync (for tests: a crash can lose output).",
        section: OUTPUT,
    },
    FlagDef { section: OUTPUT, ..cli::STATUS_INTERVAL },
    FlagDef { section: OUTPUT, ..cli::VERBOSE },
    FlagDef { section: OUTPUT, ..cli::VERSION },
    FlagDef { section: OUTPUT, ..cli::HELP },
    FlagDef {
        help: "connection string (names the database)",
        man: r"The database to connect to: its name, or a libpq connection string
.RI ( keyword=value
pairs or a
.B postgresql://
URI) that names it.
A connection string must parse: one that does not is refused before connecting.",
        ..cli::DBNAME
    },
    cli::HOST,
    cli::PORT,
    cli::USERNAME,
    cli::NO_PASSWORD,
    cli::PASSWORD,
    cli::LOG_LEVEL,
    cli::LOG_FORMAT,
    cli::LOG_ADD_SOURCE,
    cli::METRICS_ADDRESS,
];

#[derive(Debug, Default)]
struct Args {
    directory: Option<PathBuf>,
    file: Option<String>,
    format: Option<Format>,
    rotate_size: Option<u64>,
    rotate_interval: Option<u64>,
    retain_size: Option<u64>,
    retain_age: Option<u64>,
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
fn size_value(flag: &Flag) -> Result<u64, UsageError> {
    let s = flag.string()?;
    parse_size(&s).filter(|&n| n > 0).ok_or_else(|| {
        usage(format!(
            "invalid size \"{s}\" for option {}: use a number with kB, MB or GB, like 16MB",
            flag.def.label()
        ))
    })
}

/// Parse the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    flags::parse::<Args>(args, FLAGS)
}

impl ToolArgs for Args {
    type Config = Config;

    /// One arm per entry of [`FLAGS`]; a flag with more to check than a line calls a function
    /// of its own.
    fn take(&mut self, flag: &Flag) -> Result<(), UsageError> {
        match flag.name() {
            "directory" => self.directory = Some(cli::dir_value(flag, "output directory")?),
            "file" => self.file = Some(flag.string()?),
            "format" => self.format = Some(parse_format(&flag.string()?)?),
            "rotate-size" => self.rotate_size = Some(size_value(flag)?),
            "rotate-interval" => self.rotate_interval = Some(parse_rotate_interval(&flag.string()?)?),
            "retain-size" => self.retain_size = Some(size_value(flag)?),
            "retain-age" => self.retain_age = Some(parse_retain_age(&flag.string()?)?),
            "memory-limit" => self.memory_limit = Some(memory_limit(flag)?),
            "spill-dir" => self.spill_dir = Some(cli::dir_value(flag, "spill directory")?),
            "slot" => self.slot = Some(cli::slot_value(flag)?),
            "publication" => self.publications.push(publication(&flag.string()?)?),
            "create-publication" => self.create_publication = true,
            "table" => {
                let t = flag.string()?;
                if t.is_empty() {
                    return Err(usage("table name must not be empty"));
                }
                self.tables.push(t);
            }
            "create-slot" => self.create_slot = true,
            "create-slot-if-missing" => self.create_slot_if_missing = true,
            "if-not-exists" => self.if_not_exists = true,
            "start" => self.start = true,
            "drop-slot" => self.drop_slot = true,
            "list-slots" => self.list_slots = true,
            "teardown" => self.teardown = true,
            "proto-version" => self.proto_version = Some(parse_proto_version(&flag.string()?)?),
            "streaming" => self.streaming = Some(parse_streaming(&flag.string()?)?),
            "two-phase" => self.two_phase = true,
            "messages" => self.messages = true,
            "binary" => self.binary = true,
            "ddl" => self.ddl = true,
            "snapshot" => self.snapshot = true,
            "endpos" => self.endpos = cli::endpos_value(flag)?,
            "no-loop" => self.no_loop = true,
            "no-sync" => self.no_sync = true,
            "status-interval" => self.status_interval_secs = Some(cli::status_interval_value(flag)?),
            _ if self.common.take(flag)? => {}
            name => unreachable!("--{name} is in FLAGS but not handled"),
        }
        Ok(())
    }

    fn operand(&mut self, value: OsString) {
        self.first_stray.get_or_insert(value);
    }

    /// Check combinations, in the order they are documented, then build the config.
    fn validate(self) -> Result<Config, UsageError> {
        let (action, output) = self.check_combinations()?;
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
            retain: Rule { max_size: self.retain_size, max_age: self.retain_age.map(Duration::from_secs) },
            memory_limit: self.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT),
            spill_dir: self.spill_dir,
            min_free: self.common.min_free(),
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
            metrics_address: self.common.metrics_address(),
            log: self.common.log_options(),
            conn: self.common.conn_options(),
        })
    }
}

fn parse_format(s: &str) -> Result<Format, UsageError> {
    match s {
        "json" => Ok(Format::Json),
        "text" => Ok(Format::Text),
        _ => Err(usage(format!("invalid output format \"{s}\": use json or text"))),
    }
}

fn parse_rotate_interval(s: &str) -> Result<u64, UsageError> {
    s.trim().parse().map_err(|_| {
        usage(format!("invalid rotation interval \"{s}\": must be a whole number of seconds, 0 or more"))
    })
}

fn parse_retain_age(s: &str) -> Result<u64, UsageError> {
    s.trim().parse().ok().filter(|&n: &u64| n > 0).ok_or_else(|| {
        usage(format!("invalid retention age \"{s}\": must be a whole number of seconds, 1 or more"))
    })
}

fn memory_limit(flag: &Flag) -> Result<u64, UsageError> {
    let n = size_value(flag)?;
    if n < MIN_MEMORY_LIMIT {
        return Err(usage(format!("--memory-limit must be at least {}kB", MIN_MEMORY_LIMIT >> 10)));
    }
    Ok(n)
}

fn publication(name: &str) -> Result<String, UsageError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(usage(format!("invalid publication name \"{name}\": 1 to 63 characters")));
    }
    Ok(name.to_string())
}

fn parse_proto_version(s: &str) -> Result<u32, UsageError> {
    match s.trim().parse::<u32>() {
        Ok(v @ 1..=4) => Ok(v),
        _ => Err(usage(format!("invalid protocol version \"{s}\": use 1, 2, 3 or 4"))),
    }
}

fn parse_streaming(s: &str) -> Result<Streaming, UsageError> {
    match s {
        "on" | "true" => Ok(Streaming::On),
        "off" | "false" => Ok(Streaming::Off),
        "parallel" => Ok(Streaming::Parallel),
        _ => Err(usage(format!("invalid streaming mode \"{s}\": use on, parallel or off"))),
    }
}

impl Args {
    /// The options against each other: the action, and where it writes.
    fn check_combinations(&self) -> Result<(Action, Option<Output>), UsageError> {
        if let Some(stray) = &self.first_stray {
            return Err(cli::too_many_arguments(stray));
        }
        let action = self.action()?;
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

        let output = self.output()?;
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
        if (self.retain_size.is_some() || self.retain_age.is_some())
            && !matches!(output, Some(Output::Directory(_)))
        {
            return Err(usage("--retain-size and --retain-age need -D/--directory"));
        }
        self.check_protocol()?;
        if self.snapshot && !action.streams() {
            return Err(usage("--snapshot only applies when streaming"));
        }
        Ok((action, output))
    }

    /// At most one slot action, and what it implies.
    fn action(&self) -> Result<Action, UsageError> {
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
        Ok(if self.create_slot {
            Action::CreateSlot { then_stream: self.start }
        } else if self.drop_slot || self.teardown {
            Action::Drop { slot: self.drop_slot, teardown: self.teardown }
        } else if self.list_slots {
            Action::ListSlots
        } else {
            Action::Stream
        })
    }

    /// `-D DIR` or `-f -`, never both.
    fn output(&self) -> Result<Option<Output>, UsageError> {
        Ok(match (&self.directory, &self.file) {
            (Some(_), Some(_)) => return Err(usage("cannot use -D/--directory together with -f/--file")),
            (Some(d), None) => Some(Output::Directory(d.clone())),
            (None, Some(f)) if f == "-" => Some(Output::Stdout),
            (None, Some(f)) => {
                return Err(usage(format!(
                    "cannot write to \"{f}\": -f only accepts - (standard output); use -D for durable files"
                )))
            }
            (None, None) => None,
        })
    }

    /// What an explicit `--proto-version` cannot do.
    fn check_protocol(&self) -> Result<(), UsageError> {
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
        Ok(())
    }
}

/// `--version` for the name the program was started as; the parenthesis names the software.
pub fn version_text(program: &str) -> String {
    cli::version_text(program)
}

pub fn help_text(program: &str) -> String {
    format!(
        "\
{program} streams decoded row changes from a PostgreSQL logical replication
slot (pgoutput) into durable JSON or text lines, at least once.

Usage:
  {program} -S SLOT -P PUBLICATION (-D DIR | -f -) [OPTION]...

{}
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
        render::help_options(SECTIONS, FLAGS)
    )
}

/// The man page's OPTIONS section (`make man` puts it into packaging/man/pgrecvlogical.1).
pub fn man_options() -> String {
    render::man_options(SECTIONS, FLAGS)
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
        assert_eq!(c.min_free, 64 << 20);
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
    fn min_free() {
        assert_eq!(stream(&["--min-free=0"]).min_free, 0);
        assert_eq!(stream(&["--min-free", "2GB"]).min_free, 2 << 30);
        assert!(stream_err(&["--min-free=-1"]).starts_with("invalid size \"-1\" for option --min-free"));
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
    fn retention() {
        assert!(!stream(&[]).retain.is_set());
        let c = stream(&["--retain-size=1GB", "--retain-age", "86400"]);
        assert_eq!(c.retain, Rule { max_size: Some(1 << 30), max_age: Some(Duration::from_secs(86400)) });
        assert!(stream_err(&["--retain-age", "0"]).starts_with("invalid retention age"));
        assert!(stream_err(&["--retain-size", "lots"]).starts_with("invalid size"));
        assert_eq!(
            err(&["-S", "s", "-P", "p", "-f", "-", "--retain-size", "1MB"]),
            "--retain-size and --retain-age need -D/--directory"
        );
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
        assert_eq!(stream(&[]).metrics_address, None);
        assert_eq!(stream(&["--metrics-address=[::1]:9188"]).metrics_address.as_deref(), Some("[::1]:9188"));
        assert_eq!(
            stream_err(&["--metrics-address", "9188"]),
            "invalid --metrics-address \"9188\": use HOST:PORT, such as 127.0.0.1:9187 or [::1]:9187"
        );
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
        assert!(version_text(PROGRAM).starts_with("pgrecvlogical "));
        let help = help_text(PROGRAM);
        for f in FLAGS {
            assert!(help.contains(&format!("--{}", f.long)), "--{} missing from help", f.long);
        }
        for line in help.lines() {
            assert!(line.len() <= 90, "help line too long: {line:?}");
        }
        assert!(help.contains(&format!("(default: {DEFAULT_STATUS_INTERVAL_SECS})")));
        assert!(help.contains(&format!("(default: {DEFAULT_ROTATE_INTERVAL_SECS}; 0: never)")));
        assert!(help.contains(&format!("(default: {}MB)", DEFAULT_ROTATE_SIZE >> 20)));
        assert!(help.contains(&format!("(default: {}MB)", DEFAULT_MEMORY_LIMIT >> 20)));
    }

    /// Every flag of the table reaches an arm of `Args::take`, long and short, and takes a
    /// value exactly when the table says so.
    #[test]
    fn every_flag_is_handled() {
        cli::flags::check_table(FLAGS, SECTIONS, &["-S", "s", "-P", "p", "-D", "/o"], parse);
    }

    /// packaging/man/pgrecvlogical.1 holds the OPTIONS section the table makes (`make man`).
    #[test]
    fn man_page_is_current() {
        render::check_man_page(PROGRAM, &man_options());
    }
}
