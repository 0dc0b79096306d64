//! The pgreceivewal command line: its flag table, flags → [`Config`], the `--help` text and
//! usage errors.
//!
//! The flags are pg_receivewal's (PostgreSQL 15 to 18), spelled the same and in the same
//! order (which decides how an ambiguous abbreviation is reported), so existing scripts and
//! service units keep working. Parsing is two steps, as in lexopt's examples: one loop fills
//! `Args` with what the user typed (checking each value on its own, as pg_receivewal's
//! `getopt_long` loop does), then `Args::validate` checks combinations in pg_receivewal's
//! order and with its messages, and builds the [`Config`].
//!
//! Nothing here prints or exits: the caller prints a [`UsageError`] followed by
//! `Try "pgreceivewal --help" for more information.` and exits with status 2.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::flags::{self, Flag, FlagDef, Section, ToolArgs};
use crate::cli::{self, render, usage, CommonArgs, DEFAULT_STATUS_INTERVAL_SECS};
use crate::compression::Compression;
use crate::config::{Action, Config, Durability};
use crate::lsn::Lsn;
use crate::tool::UsageError;

pub const PROGRAM: &str = "pgreceivewal";

/// What the command line asks for.
pub type Command = crate::tool::Command<Config>;

const ACTIONS: Section = Section { title: "Optional actions", man_heading: true, man_intro: "" };
const SHIPPING: Section = Section { title: "Shipping", man_heading: true, man_intro: "" };
const OPTIONS: &str = cli::OPTIONS.title;

pub static SECTIONS: &[Section] =
    &[cli::OPTIONS, cli::CONNECTION, ACTIONS, SHIPPING, cli::LOGGING, cli::MONITORING];

/// Every flag, in pg_receivewal's order. To add one: an entry here, an arm in `Args::take`.
pub static FLAGS: &[FlagDef] = &[
    FlagDef {
        long: "directory",
        short: "D",
        value: Some("DIR"),
        help: "receive write-ahead log files into this directory",
        man: r"Write the WAL into this directory, creating it if it does not exist.
Files are created with mode 0600 and a new archive directory gets mode 0700, or
0640 and 0750 when the server's data directory allows group access, as
.B pg_receivewal
does.
Required unless
.B \-\-create\-slot
or
.B \-\-drop\-slot
is given.",
        section: OPTIONS,
    },
    FlagDef {
        long: "endpos",
        short: "E",
        value: Some("LSN"),
        help: "exit after receiving the specified LSN",
        man: r"Stop once WAL up to
.I lsn
(two hexadecimal numbers, like
.BR 0/16B3748 )
has been received and made durable, and exit with status 0.
The segment holding
.I lsn
stays a
.B .partial
file unless
.I lsn
ends it.
.B 0/0
means no end position.",
        section: OPTIONS,
    },
    FlagDef {
        long: "if-not-exists",
        short: "",
        value: None,
        help: "do not error if slot already exists when creating a slot",
        man: r"With
.BR \-\-create\-slot :
an existing slot of that name is not an error.
Accepted and ignored otherwise, as by pg_receivewal; it never creates a missing slot when
streaming (that is
.BR \-\-create\-slot\-if\-missing ).",
        section: OPTIONS,
    },
    FlagDef {
        man: r#"Pause writing while starting the next segment would leave less than
.I size
free on the disk of the directory (default 64MB;
.B 0
turns the floor off, and only a full disk pauses).
Sizes are written as PostgreSQL writes them:
.BR 8192 ", " 64kB ", " 16MB ", " 1GB .
See
.BR "FULL DISK" ."#,
        ..cli::MIN_FREE
    },
    FlagDef {
        long: "no-loop",
        short: "n",
        value: None,
        help: "do not loop on connection lost",
        man: r"Exit with status 1 when the connection is lost or cannot be made, instead of
trying again.",
        section: OPTIONS,
    },
    FlagDef {
        long: "no-sync",
        short: "",
        value: None,
        help: "do not wait for changes to be written safely to disk",
        man: r"Never fsync.
Faster, but a crash of the operating system can lose or corrupt received WAL
while the server has been told it was flushed: for tests only.
Not allowed with
.BR \-\-synchronous .",
        section: OPTIONS,
    },
    cli::STATUS_INTERVAL,
    FlagDef {
        long: "slot",
        short: "S",
        value: Some("SLOTNAME"),
        help: "replication slot to use (it must exist)",
        man: r"Use this physical replication slot: the server keeps WAL the archive has not
flushed yet, so a slow or stopped archiver leaves no gap.
The slot must exist, as for
.BR pg_receivewal :
a missing slot is an error (exit status 1 at start; after a lost connection
it is retried with back-off), so that a mistyped name never leaves a slot
holding WAL on the server.
Create it with
.BR \-\-create\-slot ,
or see
.BR \-\-create\-slot\-if\-missing .
A slot invalidated by the server
.RB ( max_slot_wal_keep_size ;
.B wal_status
.B lost
in
.BR pg_replication_slots )
ends the run with exit status 1 and an error that names the slot, the WAL now
missing from the archive, and the fix: a new base backup and a new archive
directory, and the slot dropped and created again.
Names are 1 to 63 lower case letters, digits and underscores.
Without a slot, the server may recycle WAL before it is archived.",
        section: OPTIONS,
    },
    FlagDef {
        long: "synchronous",
        short: "",
        value: None,
        help: "flush write-ahead log immediately after writing",
        man: r"Fsync after every write and report the flushed position to the server at once,
so that the archiver can serve as a synchronous standby (list its
.B application_name
in the server's
.BR synchronous_standby_names ;
the default name is the name the program was started as:
.BR pgreceivewal ,
or
.B pg_receivewal
when installed as a symlink of that name, as pg_receivewal's own).
See
.BR DURABILITY .",
        section: OPTIONS,
    },
    cli::VERBOSE,
    cli::VERSION,
    FlagDef {
        long: "compress",
        short: "Z",
        value: Some("METHOD[:DETAIL]"),
        help: "compress as specified (gzip, lz4, zstd, none)",
        man: r"Compress each segment with
.BR gzip ,
.BR lz4
or
.BR zstd ,
or not
.RB ( none ,
the default), spelled as pg_receivewal 15 to 18 spells it: a bare level
.RB ( \-Z\ 1
to
.BR 9 )
means gzip and
.B 0
none; DETAIL is a level
.RB ( gzip:5 )
or
.BR level= N
(and
.B long
for zstd). Segments are written as
.IR segment .gz,
.IR segment .lz4
or
.IR segment .zst
and their
.B .partial
forms, the files pg_receivewal writes (it refuses zstd); decompressed, each is
byte-identical to the server's WAL. A
.B .partial
gets a flush point before every fsync, so what was reported flushed
decompresses after a crash.",
        section: OPTIONS,
    },
    cli::HELP,
    FlagDef {
        help: "connection string",
        man: r#"A libpq connection string, either
.I keyword=value
pairs or a
.B postgresql://
URI, for settings without an option of their own
.RB ( sslmode ,
.BR sslrootcert ,
.BR application_name ,
several hosts...).
A database name in it is ignored: physical replication connects to none.
As with pg_receivewal, the value must parse as a connection string: a bare word or
.B "host 127.0.0.1 port 5433"
(without
.BR = )
is refused before connecting."#,
        ..cli::DBNAME
    },
    cli::HOST,
    cli::PORT,
    cli::USERNAME,
    cli::NO_PASSWORD,
    cli::PASSWORD,
    FlagDef {
        long: "create-slot",
        short: "",
        value: None,
        help: "create a new replication slot (for the slot's name see --slot)",
        man: r"Create the physical replication slot named with
.B \-\-slot
and exit.
Unlike
.BR pg_receivewal 's,
the slot reserves WAL from the moment it is created.",
        section: ACTIONS.title,
    },
    FlagDef {
        long: "create-slot-if-missing",
        short: "",
        value: None,
        help: "when streaming, create the --slot slot if the server\n\
               lacks it (a new archive, a new primary after failover)",
        man: r"When streaming, create the slot named with
.B \-\-slot
if the server does not have it (reserving WAL at once), with a warning that
names the server: for a new archive, and for a new primary after a failover,
which lacks the slot.
For an archive that already holds WAL, only the slot recorded in its
.B .pgreceivewal.meta
(the slot it was streamed with) is created; another name is refused, so that
a mistyped name never leaves a slot behind.
Use it where failover matters, as the example settings of the Debian package
do.",
        section: ACTIONS.title,
    },
    FlagDef {
        long: "drop-slot",
        short: "",
        value: None,
        help: "drop the replication slot (for the slot's name see --slot)",
        man: r"Drop the replication slot named with
.B \-\-slot
and exit.",
        section: ACTIONS.title,
    },
    FlagDef {
        long: "segment-command",
        short: "",
        value: Some("CMD"),
        help: "run CMD for each completed segment and history file, in\n\
               order, like archive_command (%p path, %f file name, %%);\n\
               retried with back-off until it exits 0",
        man: r"Run
.I cmd
with
.B /bin/sh \-c
for each completed segment and timeline history file, once the file has its
final name and its directory entry is durable, one at a time and in archive
order, as PostgreSQL's
.B archive_command
is run:
.B %p
is replaced by the file's path,
.B %f
by its name,
.B %%
by a
.BR % .
For example
.B aws s3 cp %p s3://bucket/wal/%f
or
.BR wal\-g\ wal\-push\ %p .
A non-zero exit is retried after 1 second, doubling up to 60 seconds, until
the command succeeds; receiving never waits for it.
After each success the file's name is written durably to
.IB directory /.pgreceivewal.shipped\fR;
a restart ships the completed files after it, so a file is shipped again only
if the process died between the command's success and that write.
Without that file, every completed file of the directory is shipped.
At exit the command in flight is waited for; the rest is shipped by the next
run.
A
.B .partial
segment is never shipped.",
        section: SHIPPING.title,
    },
    cli::LOG_LEVEL,
    cli::LOG_FORMAT,
    cli::LOG_ADD_SOURCE,
    cli::METRICS_ADDRESS,
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
    compression: Compression,
    segment_command: Option<String>,
    common: CommonArgs,
    /// The first non-option argument: reported after all options, as getopt does.
    first_stray: Option<OsString>,
}

/// Parse the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    flags::parse::<Args>(args, FLAGS)
}

impl ToolArgs for Args {
    type Config = Config;

    fn take(&mut self, flag: &Flag) -> Result<(), UsageError> {
        match flag.name() {
            "directory" => self.directory = Some(cli::dir_value(flag, "target directory")?),
            "slot" => self.slot = Some(cli::slot_value(flag)?),
            "create-slot" => self.create_slot = true,
            "create-slot-if-missing" => self.create_slot_if_missing = true,
            "drop-slot" => self.drop_slot = true,
            "if-not-exists" => self.if_not_exists = true,
            "endpos" => self.endpos = cli::endpos_value(flag)?,
            "no-loop" => self.no_loop = true,
            "no-sync" => self.no_sync = true,
            "synchronous" => self.synchronous = true,
            "status-interval" => self.status_interval_secs = Some(cli::status_interval_value(flag)?),
            "compress" => self.compression = crate::compression::parse(&flag.string()?).map_err(usage)?,
            "segment-command" => {
                let cmd = flag.string()?;
                if cmd.trim().is_empty() {
                    return Err(usage("--segment-command must not be empty"));
                }
                self.segment_command = Some(cmd);
            }
            _ if self.common.take(flag)? => {}
            name => unreachable!("--{name} is in FLAGS but not handled"),
        }
        Ok(())
    }

    fn operand(&mut self, value: OsString) {
        // Reported after all options are read, as getopt's caller does.
        self.first_stray.get_or_insert(value);
    }

    /// Check combinations, in pg_receivewal's order and words, then build the config.
    fn validate(self) -> Result<Config, UsageError> {
        if let Some(stray) = &self.first_stray {
            return Err(cli::too_many_arguments(stray));
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
            compression: self.compression,
            status_interval: (secs > 0).then(|| Duration::from_secs(secs)),
            min_free: self.common.min_free(),
            metrics_address: self.common.metrics_address(),
            log: self.common.log_options(),
            conn: self.common.conn_options(),
        })
    }
}

/// `--version` for the name the program was started as, like pg_receivewal's
/// `pg_receivewal (PostgreSQL) 17.2`: the parenthesis names the software, so a
/// `pg_receivewal` symlink says `pg_receivewal (pgreceivewal) 0.1.0`.
pub fn version_text(program: &str) -> String {
    cli::version_text(program)
}

/// The full `--help` text, laid out like pg_receivewal's, for the name the program was
/// started as.
pub fn help_text(program: &str) -> String {
    format!(
        "\
{program} receives PostgreSQL streaming write-ahead logs.

Usage:
  {program} [OPTION]...

{}
A slot given with --slot must exist, as for pg_receivewal: a mistyped name
would otherwise leave a slot holding WAL on the server for ever. Create it with
--create-slot, or pass --create-slot-if-missing where a server may lack it (a
new primary after a failover); then a missing slot is created, reserving WAL
at once, with a warning, but only the slot the archive was streamed with.
--create-slot and --drop-slot do not need -D and exit once done. -s 0 turns
status packets off. --log-level overrides -v. -Z writes each segment as
<segment>.gz, .lz4 or .zst (and .partial while it is written), the files
pg_receivewal writes (zstd excepted); decompressed, a segment is byte-identical
to the server's WAL. -Z 1 to -Z 9 are gzip levels, -Z 0 is none.

Connection settings not given here are taken by libpq from the PG* environment
variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSERVICE, PGSSLMODE, ...), the
password file ~/.pgpass and the connection service file, as for any PostgreSQL
client.
",
        render::help_options(SECTIONS, FLAGS)
    )
}

/// The man page's OPTIONS section (`make man` puts it into packaging/man/pgreceivewal.1).
pub fn man_options() -> String {
    render::man_options(SECTIONS, FLAGS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Method;
    use crate::config::{ConnOptions, LogFormat, LogOptions, PasswordMode};
    use crate::diskspace::DEFAULT_MIN_FREE;

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
                compression: Compression::NONE,
                status_interval: Some(Duration::from_secs(10)),
                min_free: DEFAULT_MIN_FREE,
                metrics_address: None,
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
    fn min_free() {
        assert_eq!(with_dir(&[]).min_free, 64 << 20);
        assert_eq!(with_dir(&["--min-free=1GB"]).min_free, 1 << 30);
        assert_eq!(with_dir(&["--min-free", "0"]).min_free, 0);
        assert_eq!(
            err_with_dir(&["--min-free=lots"]),
            "invalid size \"lots\" for option --min-free: use a number with kB, MB or GB, like 64MB, or 0"
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
    fn metrics_address() {
        for ok in ["127.0.0.1:9187", "localhost:9187", "[::1]:9187", "0.0.0.0:0", "--metrics-address=x:1"] {
            let args: Vec<&str> = if ok.starts_with("--") { vec![ok] } else { vec!["--metrics-address", ok] };
            let want = ok.strip_prefix("--metrics-address=").unwrap_or(ok);
            assert_eq!(with_dir(&args).metrics_address.as_deref(), Some(want), "{ok}");
        }
        assert_eq!(with_dir(&["--metrics-addr=h:2"]).metrics_address.as_deref(), Some("h:2"));
        for bad in ["9187", ":9187", "host:", "host:port", "host:65536", "::1:9187", "[::1]", ""] {
            assert_eq!(
                err_with_dir(&["--metrics-address", bad]),
                format!("invalid --metrics-address \"{bad}\": use HOST:PORT, such as 127.0.0.1:9187 or [::1]:9187"),
                "{bad}"
            );
        }
        assert_eq!(err_with_dir(&["--metrics-address"]), "option \"--metrics-address\" requires a value");
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
        assert!(with_dir(&["-Z", "0"]).compression.is_none());
        assert!(with_dir(&["-Z0"]).compression.is_none());
        assert!(with_dir(&["--compress", "none"]).compression.is_none());
        assert_eq!(with_dir(&["--compress=gzip"]).compression.method, Method::Gzip);
        assert_eq!(with_dir(&["-Z5"]).compression.level, 5);
        assert_eq!(with_dir(&["-Z", "lz4:1"]).compression.method, Method::Lz4);
        assert_eq!(with_dir(&["--comp=zstd:level=9"]).compression.level, 9);
        assert_eq!(
            err_with_dir(&["-Z", "none:1"]),
            "invalid compression specification: compression algorithm \"none\" does not accept a compression level"
        );
        assert_eq!(err_with_dir(&["-Z", "brotli"]), "unrecognized compression algorithm: \"brotli\"");
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

    /// Every flag of the table reaches an arm of `Args::take` (the parser never hits its
    /// unreachable!), long and short, and takes a value exactly when the table says so.
    #[test]
    fn every_flag_is_handled() {
        crate::cli::flags::check_table(FLAGS, SECTIONS, &["-D", "/w"], parse);
    }

    /// packaging/man/pgreceivewal.1 holds the OPTIONS section the table makes (`make man`).
    #[test]
    fn man_page_is_current() {
        crate::cli::render::check_man_page(PROGRAM, &man_options());
    }

    #[test]
    fn help_lists_every_option() {
        let help = help_text("pgreceivewal");
        assert!(help_text("pg_receivewal").starts_with("pg_receivewal receives"));
        assert!(help_text("pg_receivewal").contains("Usage:\n  pg_receivewal [OPTION]..."));
        for f in FLAGS {
            assert!(help.contains(&format!("--{}", f.long)), "--{} missing from help", f.long);
        }
        assert!(help.contains(&format!("(default: {DEFAULT_STATUS_INTERVAL_SECS})")));
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
