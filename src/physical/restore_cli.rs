//! The pgrestorewal command line: its flag table, the arguments PostgreSQL's
//! `restore_command` passes (`%f %p`) or `--verify` of the whole archive, the `--help` text and
//! usage errors.
//!
//! Nothing here prints or exits. Unlike the daemons, a usage error exits with
//! [`super::restore::EXIT_FATAL`]: a misconfigured restore_command must stop recovery, not look
//! like the end of the archive (which exit status 1, 2 or any other below 126 would).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::flags::{self, Flag, FlagDef, Section, ToolArgs};
use crate::cli::{self, render, usage};
use crate::tool::UsageError;

pub const PROGRAM: &str = "pgrestorewal";

/// What PostgreSQL asks for: copy `name` from `archive` to `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub archive: PathBuf,
    pub name: String,
    pub dest: PathBuf,
    pub verbose: bool,
}

/// `--verify`: check the whole archive, report in `format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub archive: PathBuf,
    pub format: Format,
}

/// The report of `--verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Serve one file, or check the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Restore(Restore),
    Verify(Verify),
}

/// What the command line asks for.
pub type Command = crate::tool::Command<Run>;

pub static SECTIONS: &[Section] = &[cli::OPTIONS];

/// Every flag. To add one: an entry here, an arm in `Args::take`.
pub static FLAGS: &[FlagDef] = &[
    FlagDef {
        long: "directory",
        short: "D",
        value: Some("DIR"),
        help: "the archive directory",
        man: "The archive directory.",
        section: cli::OPTIONS.title,
    },
    FlagDef {
        help: "log each restored file on stderr",
        man: "Log each restored file on standard error.",
        ..cli::VERBOSE
    },
    FlagDef {
        long: "verify",
        short: "",
        value: None,
        help: "check the whole archive instead of restoring a file",
        man: r"Check the whole archive instead of restoring a file (see
.BR DESCRIPTION );
takes no
.I filename
or
.IR destination .",
        section: cli::OPTIONS.title,
    },
    FlagDef {
        long: "format",
        short: "",
        value: Some("FORMAT"),
        help: "report of --verify: text (default) or json",
        man: r"The report of
.BR \-\-verify :
.B text
(the default: one line per finding, one summary line per timeline, then the
verdict) or
.B json
(one JSON document, for scripts and monitoring: \fBrestorable\fP,
\fBtimelines\fP with \fBstart\fP, \fBend\fP, \fBrestorable_to\fP,
\fBgaps\fP and \fBpartial\fP, and \fBfindings\fP with \fBseverity\fP,
\fBkind\fP, \fBfile\fP and \fBlsn\fP).",
        section: cli::OPTIONS.title,
    },
    cli::VERSION,
    // -h too: pgrestorewal has no host to connect to.
    FlagDef { short: "?h", ..cli::HELP },
];

#[derive(Debug, Default)]
struct Args {
    directory: Option<PathBuf>,
    verbose: bool,
    verify: bool,
    format: Option<String>,
    operands: Vec<OsString>,
}

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    flags::parse::<Args>(args, FLAGS)
}

impl ToolArgs for Args {
    type Config = Run;

    fn take(&mut self, flag: &Flag) -> Result<(), UsageError> {
        match flag.name() {
            "directory" => self.directory = Some(flag.os_value().into()),
            "verbose" => self.verbose = true,
            "verify" => self.verify = true,
            "format" => self.format = Some(flag.string()?),
            name => unreachable!("--{name} is in FLAGS but not handled"),
        }
        Ok(())
    }

    fn operand(&mut self, value: OsString) {
        self.operands.push(value);
    }

    fn validate(self) -> Result<Run, UsageError> {
        let archive = self.directory.ok_or_else(|| usage("no archive directory specified (-D)"))?;
        if self.verify {
            let format = match self.format.as_deref() {
                None | Some("text") => Format::Text,
                Some("json") => Format::Json,
                Some(other) => {
                    return Err(usage(format!("invalid --format \"{other}\": expected text or json")))
                }
            };
            if let Some(extra) = self.operands.first() {
                return Err(usage(format!(
                    "--verify takes no file name or destination (first is \"{}\")",
                    extra.to_string_lossy()
                )));
            }
            return Ok(Run::Verify(Verify { archive, format }));
        }
        if self.format.is_some() {
            return Err(usage("--format is only for --verify"));
        }
        let mut operands = self.operands.into_iter();
        let (Some(name), Some(dest)) = (operands.next(), operands.next()) else {
            return Err(usage("expected a file name (%f) and a destination (%p)"));
        };
        if let Some(extra) = operands.next() {
            return Err(cli::too_many_arguments(&extra));
        }
        let name = name
            .into_string()
            .map_err(|n| usage(format!("invalid file name \"{}\"", n.to_string_lossy())))?;
        Ok(Run::Restore(Restore { archive, name, dest: dest.into(), verbose: self.verbose }))
    }
}

/// `--version` for the name the program was started as.
pub fn version_text(program: &str) -> String {
    cli::version_text(program)
}

/// `--help` for the name the program was started as.
pub fn help_text(program: &str) -> String {
    format!(
        "{program} copies a file from a WAL archive written by pgreceivewal, for PostgreSQL's restore_command.

Usage:
  {program} [OPTION]... -D DIRECTORY FILENAME DESTINATION
  {program} --verify [--format=text|json] -D DIRECTORY

In postgresql.conf:
  restore_command = '{program} -D /path/to/archive %f %p'

FILENAME is the file PostgreSQL asks for (%f), DESTINATION where to put it (%p).
A segment whose complete file is not in the archive is served from its .partial
file, if that is the newest WAL of its timeline in the archive.

--verify reads the whole archive, changing nothing, and reports per timeline
the range from the first segment to the newest, every gap, every damaged file,
page header or record (each record's CRC-32C and back-link), history files that
contradict the segments, and the newest .partial.

{}
Exit status of --verify:
  0    every timeline is restorable from its first segment to its end
  1    the archive is not restorable end to end (the report says where)
  255  the check could not run: a usage error, an unreadable directory or
       metadata file

Exit status:
  0    the file was restored
  1    the file is not in the archive (PostgreSQL goes on without it: at the end
       of the archive, recovery ends)
  255  anything else: an I/O error, a usage error, a damaged or ambiguous
       archive (a .partial followed by later WAL, a missing segment between
       present ones, a segment of the wrong size, a segment whose first page
       is not WAL of this segment of this archive). PostgreSQL stops recovery
       with FATAL on exit codes above 125, so a problem never passes for the
       end of the archive
",
        render::help_options(SECTIONS, FLAGS)
    )
}

/// The man page's OPTIONS section (`make man` puts it into packaging/man/pgrestorewal.1).
pub fn man_options() -> String {
    render::man_options(SECTIONS, FLAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn usage_error(args: &[&str]) -> String {
        match try_parse(args) {
            Err(UsageError(m)) => m,
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
        }
    }

    #[test]
    fn restore_command_forms() {
        for args in [
            &["-D", "/a", "f", "p"][..],
            &["-D/a", "f", "p"],
            &["--directory", "/a", "f", "p"],
            &["--directory=/a", "f", "p"],
            &["f", "-D", "/a", "p"],
            &["-D", "/a", "--", "f", "p"],
        ] {
            match try_parse(args) {
                Ok(Command::Run(Run::Restore(Restore { archive, name, dest, verbose }))) => {
                    assert_eq!(archive, PathBuf::from("/a"), "{args:?}");
                    assert_eq!(name, "f");
                    assert_eq!(dest, PathBuf::from("p"));
                    assert!(!verbose);
                }
                _ => panic!("{args:?}"),
            }
        }
        assert!(matches!(
            try_parse(&["-v", "-D", "/a", "f", "p"]),
            Ok(Command::Run(Run::Restore(Restore { verbose: true, .. })))
        ));
        assert!(matches!(
            try_parse(&["--verbose", "-D", "/a", "f", "p"]),
            Ok(Command::Run(Run::Restore(Restore { verbose: true, .. })))
        ));
    }

    #[test]
    fn verify_forms() {
        for (args, want) in [
            (&["--verify", "-D", "/a"][..], Format::Text),
            (&["-D/a", "--verify", "--format=json"], Format::Json),
            (&["--verify", "--format", "text", "--directory=/a"], Format::Text),
        ] {
            assert_eq!(
                try_parse(args),
                Ok(Command::Run(Run::Verify(Verify { archive: PathBuf::from("/a"), format: want }))),
                "{args:?}"
            );
        }
        assert_eq!(
            usage_error(&["--verify", "-D", "/a", "--format=xml"]),
            "invalid --format \"xml\": expected text or json"
        );
        assert_eq!(
            usage_error(&["--verify", "-D", "/a", "f"]),
            "--verify takes no file name or destination (first is \"f\")"
        );
        assert_eq!(usage_error(&["--format=json", "-D", "/a", "f", "p"]), "--format is only for --verify");
        assert_eq!(usage_error(&["--verify"]), "no archive directory specified (-D)");
        assert!(help_text(PROGRAM).contains("Exit status of --verify:"));
    }

    #[test]
    fn help_and_version() {
        for a in ["-?", "-h", "--help"] {
            assert_eq!(try_parse(&[a]), Ok(Command::Help), "{a}");
        }
        for a in ["-V", "--version"] {
            assert_eq!(try_parse(&[a]), Ok(Command::Version), "{a}");
        }
        let h = help_text(PROGRAM);
        assert!(h.starts_with("pgrestorewal copies") && h.contains("\n  pgrestorewal [OPTION]..."), "{h}");
        assert!(help_text("pg_restorewal").contains("restore_command = 'pg_restorewal -D"));
        assert!(h.contains("  255  "), "{h}");
        assert!(h.contains("%f %p"));
        for f in FLAGS {
            assert!(h.contains(&format!("--{}", f.long)), "--{} missing from help", f.long);
        }
    }

    /// Usage errors are worded as the other tools word them (no longer lexopt's own text).
    #[test]
    fn usage_errors() {
        assert_eq!(usage_error(&["f", "p"]), "no archive directory specified (-D)");
        assert_eq!(usage_error(&["-D", "/a", "f"]), "expected a file name (%f) and a destination (%p)");
        assert_eq!(
            usage_error(&["-D", "/a", "f", "p", "q"]),
            "too many command-line arguments (first is \"q\")"
        );
        assert_eq!(usage_error(&["-D"]), "option \"-D\" requires a value");
        assert_eq!(usage_error(&["-x", "-D", "/a", "f", "p"]), "unrecognized option \"-x\"");
        assert_eq!(usage_error(&["--nope", "-D", "/a", "f", "p"]), "unrecognized option \"--nope\"");
        assert_eq!(usage_error(&["--verbose=1"]), "option \"--verbose\" does not take a value");
    }

    #[test]
    fn every_flag_is_handled() {
        cli::flags::check_table(FLAGS, SECTIONS, &["-D", "/a", "f", "p"], parse);
    }

    #[test]
    fn man_page_is_current() {
        render::check_man_page(PROGRAM, &man_options());
    }
}
