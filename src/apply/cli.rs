//! The pgapplylogical command line: flags → [`Config`], the `--help` text and usage errors.
//! Connection and logging flags are the package's own (`crate::cli::CommonArgs`); as in the
//! other tools one loop fills `Args`, then `Args::validate` checks combinations. Nothing here
//! prints or exits.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::flags::{self, Flag, FlagDef, Section, ToolArgs};
use crate::cli::{self, render, usage, CommonArgs};
use crate::logical::retention::valid_consumer_name;
use crate::lsn::Lsn;
use crate::tool::UsageError;

use super::config::{Config, DdlMode};

pub const PROGRAM: &str = "pgapplylogical";

pub type Command = crate::tool::Command<Config>;

const APPLY: &str = "Options";

pub static SECTIONS: &[Section] = &[
    Section { title: APPLY, man_heading: false, man_intro: "" },
    cli::CONNECTION,
    cli::LOGGING,
    cli::MONITORING,
];

/// Every flag, declared once: the matcher, `--help` and the man page's list come from here.
pub static FLAGS: &[FlagDef] = &[
    FlagDef {
        long: "directory",
        short: "D",
        value: Some("DIR"),
        help: "pgrecvlogical's output directory (JSON format)",
        man: "pgrecvlogical's output directory (JSON format).",
        section: APPLY,
    },
    FlagDef {
        long: "until",
        short: "E",
        value: Some("LSN"),
        help: "stop once everything up to this position is applied",
        man: "Exit once everything up to this position is applied.",
        section: APPLY,
    },
    FlagDef {
        long: "until-caught-up",
        short: "",
        value: None,
        help: "stop once every complete transaction in DIR is applied",
        man: "Exit once every complete transaction in the directory is applied.",
        section: APPLY,
    },
    FlagDef {
        long: "ddl",
        short: "",
        value: Some("MODE"),
        help: "--ddl records: stop (default), apply (run the source's\nquery on the target), ignore",
        man: r"What to do with a DDL record:
.B stop
(the default), apply (run its query on the target, one statement per record), or ignore.",
        section: APPLY,
    },
    FlagDef {
        long: "skip-table",
        short: "",
        value: Some("SCHEMA.TABLE"),
        help: "do not apply this table's changes (repeatable)",
        man: "Do not apply this table's changes (repeatable).",
        section: APPLY,
    },
    FlagDef {
        long: "remove-applied",
        short: "",
        value: None,
        help: "remove output files once everything in them is applied",
        man: "Remove each complete output file once every transaction in it is applied.",
        section: APPLY,
    },
    FlagDef {
        long: "consumer-name",
        short: "",
        value: Some("NAME"),
        help: "register the applied position in DIR as .consumer.NAME,\nwhich pgrecvlogical's --retain-size and --retain-age\nhonour (default: pgapplylogical)",
        man: r"Register the applied position in the directory under this name (default pgapplylogical):
the file
.BI .consumer. name
that pgrecvlogical's
.B \-\-retain\-size
and
.B \-\-retain\-age
never remove files past.",
        section: APPLY,
    },
    FlagDef {
        long: "no-loop",
        short: "n",
        value: None,
        help: "exit on a connection error instead of reconnecting",
        man: "Exit on a connection error instead of reconnecting every 5 seconds.",
        section: APPLY,
    },
    FlagDef { section: APPLY, ..cli::VERBOSE },
    FlagDef { section: APPLY, ..cli::VERSION },
    FlagDef { section: APPLY, ..cli::HELP },
    FlagDef {
        help: "the target database: a name or a connection string",
        man: "The target database: its name, or a libpq connection string.",
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
    FlagDef {
        help: "serve Prometheus metrics on /metrics and health on /health\n(200 while connected to the target and not stuck, else 503)",
        man: r"Serve metrics in Prometheus' text format on
.B GET /metrics
and a health check on
.B GET /health
(status 200 while connected to the target and not stuck, 503 while connecting,
waiting to reconnect, or behind with nothing applied for 5 minutes), over plain
HTTP from a thread of its own that never holds up the applier.
An IPv6 address goes in brackets
.RB ( [::1]:9187 ).
An address that cannot be listened on (a port in use, an address not of this
host) stops the tool at start with status 1.
There is no authentication: listen on a loopback or private address.
The metrics (applied position, the directory's end, lag, transactions and rows
applied, reconnects, errors) are listed in
.IR docs/monitoring.md .",
        ..cli::METRICS_ADDRESS
    },
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
    flags::parse::<Args>(args, FLAGS)
}

impl ToolArgs for Args {
    type Config = Config;

    fn take(&mut self, flag: &Flag) -> Result<(), UsageError> {
        match flag.name() {
            "directory" => self.directory = Some(cli::dir_value(flag, "output directory")?),
            "until" => {
                let s = flag.string()?;
                let lsn: Lsn = s.parse().map_err(|_| {
                    usage(format!(
                        "could not parse position \"{s}\" for --until: expected two hexadecimal numbers like 0/16B3748"
                    ))
                })?;
                self.until = Some(lsn);
            }
            "until-caught-up" => self.until_caught_up = true,
            "ddl" => {
                let s = flag.string()?;
                self.ddl = Some(match s.as_str() {
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
            "skip-table" => self.skip_tables.push(parse_table(&flag.string()?)?),
            "remove-applied" => self.remove_applied = true,
            "consumer-name" => {
                let s = flag.string()?;
                if !valid_consumer_name(&s) {
                    return Err(usage(format!(
                        "invalid consumer name \"{s}\": 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
                    )));
                }
                self.consumer_name = Some(s);
            }
            "no-loop" => self.no_loop = true,
            _ => {
                if !self.common.take(flag)? {
                    unreachable!("--{} is in FLAGS but not handled", flag.name());
                }
            }
        }
        Ok(())
    }

    fn operand(&mut self, value: OsString) {
        self.first_stray.get_or_insert(value);
    }

    fn validate(self) -> Result<Config, UsageError> {
        if let Some(stray) = &self.first_stray {
            return Err(cli::too_many_arguments(stray));
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
            metrics_address: self.common.metrics_address(),
        })
    }
}

/// `--version` for the name the program was started as; the parenthesis names the software.
pub fn version_text(program: &str) -> String {
    cli::version_text(program)
}

/// `--help` for the name the program was started as.
pub fn help_text(program: &str) -> String {
    format!(
        "\
{program} applies pgrecvlogical's output directory to a target PostgreSQL
database, each source transaction as one target transaction, exactly once.

Usage:
  {program} -D DIR -d TARGET [OPTION]...

{}
The applied position is kept on the target, in pgapplylogical.applied_position,
updated in the same transaction as the changes. Exit status: 0 when done, 1 on
an error (nothing after the last applied transaction is applied), 2 on a usage
error. See docs/pgapplylogical.md.
",
        render::help_options(SECTIONS, FLAGS)
    )
}

/// The man page's OPTIONS section (`make man` puts it into packaging/man/pgapplylogical.1).
pub fn man_options() -> String {
    render::man_options(SECTIONS, FLAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_is_current() {
        render::check_man_page(PROGRAM, &man_options());
    }

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

    #[test]
    fn metrics_address() {
        assert_eq!(cfg(&["-D", "o", "-d", "t"]).metrics_address, None);
        assert_eq!(
            cfg(&["-D", "o", "-d", "t", "--metrics-address=[::1]:9189"]).metrics_address.as_deref(),
            Some("[::1]:9189")
        );
        assert_eq!(
            cfg(&["-D", "o", "-d", "t", "--metrics-address", "127.0.0.1:0"]).metrics_address.as_deref(),
            Some("127.0.0.1:0")
        );
        assert_eq!(
            run(&["-D", "o", "-d", "t", "--metrics-address", "9189"]).unwrap_err().0,
            "invalid --metrics-address \"9189\": use HOST:PORT, such as 127.0.0.1:9187 or [::1]:9187"
        );
        assert!(
            help_text(PROGRAM).contains("Monitoring:\n      --metrics-address=HOST:PORT"),
            "{}",
            help_text(PROGRAM)
        );
    }
}
