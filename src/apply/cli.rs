//! The pgapplylogical command line: flags → [`Config`], the `--help` text and usage errors.
//! Connection and logging flags are the package's own (`crate::cli::CommonArgs`); as in the
//! other tools one loop fills `Args`, then `Args::validate` checks combinations. Nothing here
//! prints or exits.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::Arg;

use crate::cli::{lexopt_error, resolve_long_in, string_value, usage, CommonArgs, Opt};
use crate::logical::retention::valid_consumer_name;
use crate::lsn::Lsn;
use crate::tool::UsageError;

use super::config::{Config, DdlMode};

pub const PROGRAM: &str = "pgapplylogical";

pub type Command = crate::tool::Command<Config>;

const LONG_OPTIONS: &[&str] = &[
    "directory",
    "until",
    "until-caught-up",
    "ddl",
    "skip-table",
    "remove-applied",
    "consumer-name",
    "no-loop",
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
    until: Option<Lsn>,
    until_caught_up: bool,
    ddl: Option<DdlMode>,
    skip_tables: Vec<(String, String)>,
    remove_applied: bool,
    consumer_name: Option<String>,
    no_loop: bool,
    common: CommonArgs,
    first_stray: Option<OsString>,
}

/// `schema.table` as the output names it; a name with a dot in it is not supported here.
fn parse_table(s: &str) -> Result<(String, String), UsageError> {
    match s.split_once('.') {
        Some((schema, table)) if !schema.is_empty() && !table.is_empty() && !table.contains('.') => {
            Ok((schema.to_owned(), table.to_owned()))
        }
        _ => {
            Err(usage(format!("invalid table \"{s}\" for --skip-table: use schema.table, like public.audit")))
        }
    }
}

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
            Short('E') | Long("until") => {
                let s = string_value(&mut p, "-E/--until")?;
                let lsn: Lsn = s.parse().map_err(|_| {
                    usage(format!(
                        "could not parse position \"{s}\" for --until: expected two hexadecimal numbers like 0/16B3748"
                    ))
                })?;
                a.until = Some(lsn);
            }
            Long("until-caught-up") => a.until_caught_up = true,
            Long("ddl") => {
                let s = string_value(&mut p, "--ddl")?;
                a.ddl = Some(match s.as_str() {
                    "stop" => DdlMode::Stop,
                    "apply" => DdlMode::Apply,
                    "ignore" => DdlMode::Ignore,
                    _ => {
                        return Err(usage(format!(
                            "invalid value \"{s}\" for --ddl: use stop, apply or ignore"
                        )))
                    }
                });
            }
            Long("skip-table") => {
                let s = string_value(&mut p, "--skip-table")?;
                a.skip_tables.push(parse_table(&s)?);
            }
            Long("remove-applied") => a.remove_applied = true,
            Long("consumer-name") => {
                let s = string_value(&mut p, "--consumer-name")?;
                if !valid_consumer_name(&s) {
                    return Err(usage(format!(
                        "invalid consumer name \"{s}\": 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
                    )));
                }
                a.consumer_name = Some(s);
            }
            Short('n') | Long("no-loop") => a.no_loop = true,
            opt if a.common.parse(opt, &mut p)? => {}
            Short(c) => return Err(usage(format!("unrecognized option \"-{c}\""))),
            Long(name) => unreachable!("--{name} is in LONG_OPTIONS but not handled"),
        }
    }
    a.validate().map(Command::Run)
}

impl Args {
    fn validate(self) -> Result<Config, UsageError> {
        if let Some(stray) = &self.first_stray {
            return Err(usage(format!(
                "too many command-line arguments (first is \"{}\")",
                stray.to_string_lossy()
            )));
        }
        let Some(directory) = self.directory else {
            return Err(usage("no output directory specified: give pgrecvlogical's directory with -D"));
        };
        if self.common.conn_options().dbname.is_none() {
            return Err(usage(
                "no target database specified: give it with -d, as a name or a connection string",
            ));
        }
        self.common.check()?;
        self.common.check_dbname()?;
        Ok(Config {
            directory,
            conn: self.common.conn_options(),
            log: self.common.log_options(),
            until: self.until,
            until_caught_up: self.until_caught_up,
            ddl: self.ddl.unwrap_or(DdlMode::Stop),
            skip_tables: self.skip_tables,
            remove_applied: self.remove_applied,
            consumer_name: self.consumer_name.unwrap_or_else(|| PROGRAM.to_owned()),
            no_loop: self.no_loop,
        })
    }
}

pub fn version_text() -> String {
    format!("{PROGRAM} (pgreceivewal) {}", env!("CARGO_PKG_VERSION"))
}

pub fn help_text() -> String {
    "\
pgapplylogical applies pgrecvlogical's output directory to a target PostgreSQL
database, each source transaction as one target transaction, exactly once.

Usage:
  pgapplylogical -D DIR -d TARGET [OPTION]...

Options:
  -D, --directory=DIR    pgrecvlogical's output directory (JSON format)
  -E, --until=LSN        stop once everything up to this position is applied
      --until-caught-up  stop once every complete transaction in DIR is applied
      --ddl=MODE         --ddl records: stop (default), apply (run the source's query
                         on the target), ignore
      --skip-table=SCHEMA.TABLE
                         do not apply this table's changes (repeatable)
      --remove-applied   remove output files once everything in them is applied
      --consumer-name=NAME
                         register the applied position in DIR as
                         .consumer.NAME, which pgrecvlogical's --retain-size
                         and --retain-age never remove files past
                         (default: pgapplylogical)
  -n, --no-loop          exit on a connection error instead of reconnecting
  -v, --verbose          more messages (-vv: even more)
      --log-level=LEVEL  error, warn, info (default), debug or trace
      --log-format=FMT   text (default) or json
      --log-add-source   add the source file and line to each log line
  -V, --version          output version information, then exit
  -?, --help             show this help, then exit

Connection options (the target):
  -d, --dbname=CONNSTR   database name or connection string
  -h, --host=HOSTNAME    database server host or socket directory
  -p, --port=PORT        database server port number
  -U, --username=NAME    connect as specified database user
  -w, --no-password      never prompt for password
  -W, --password         force password prompt

The applied position is kept on the target, in pgapplylogical.applied_position,
updated in the same transaction as the changes. Exit status: 0 when done, 1 on
an error (nothing after the last applied transaction is applied), 2 on a usage
error. See docs/pgapplylogical.md.
"
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn cfg(args: &[&str]) -> Config {
        match run(args).unwrap() {
            Command::Run(c) => c,
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let c = cfg(&["-D", "out", "-d", "dbname=t"]);
        assert_eq!(
            (c.ddl, c.until, c.until_caught_up, c.remove_applied),
            (DdlMode::Stop, None, false, false)
        );
        let c = cfg(&[
            "-D",
            "out",
            "-d",
            "t",
            "--until=0/16B3748",
            "--until-caught-up",
            "--ddl",
            "apply",
            "--skip-table",
            "public.audit",
            "--remove-applied",
            "-n",
        ]);
        assert_eq!(c.until, Some("0/16B3748".parse().unwrap()));
        assert!(c.until_caught_up && c.remove_applied && c.no_loop);
        assert_eq!(c.ddl, DdlMode::Apply);
        assert_eq!(c.skip_tables, vec![("public".to_owned(), "audit".to_owned())]);
        assert_eq!(cfg(&["-D", "o", "-d", "t", "--ddl=ignore"]).ddl, DdlMode::Ignore);
        // Unique prefixes, as getopt_long takes them.
        assert!(cfg(&["-D", "o", "-d", "t", "--until-c"]).until_caught_up);
        assert!(matches!(run(&["--help"]), Ok(Command::Help)));
    }

    #[test]
    fn usage_errors() {
        assert!(run(&["-d", "t"]).unwrap_err().0.contains("no output directory"));
        assert!(run(&["-D", "o"]).unwrap_err().0.contains("no target database"));
        assert!(run(&["-D", "o", "-d", "t", "--ddl=maybe"]).unwrap_err().0.contains("stop, apply or ignore"));
        assert!(run(&["-D", "o", "-d", "t", "--skip-table=audit"]).unwrap_err().0.contains("schema.table"));
        assert!(run(&["-D", "o", "-d", "t", "--until=x"]).unwrap_err().0.contains("--until"));
        assert!(run(&["-D", "o", "-d", "host=h port"]).unwrap_err().0.contains("invalid connection string"));
        assert!(run(&["-D", "o", "-d", "t", "extra"]).unwrap_err().0.contains("too many"));
        assert!(run(&["-D", "o", "-d", "t", "-w", "-W"]).is_err());
        assert!(run(&["-D", "o", "-d", "t", "--consumer-name=../x"])
            .unwrap_err()
            .0
            .contains("invalid consumer name"));
        assert_eq!(cfg(&["-D", "o", "-d", "t"]).consumer_name, "pgapplylogical");
        assert_eq!(cfg(&["-D", "o", "-d", "t", "--consumer-name", "b2"]).consumer_name, "b2");
    }
}
