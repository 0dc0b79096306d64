//! The pgrestorewal command line: its flag table, the arguments PostgreSQL's
//! `restore_command` passes (`%f %p`), the `--help` text and usage errors.
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

/// What the command line asks for.
pub type Command = crate::tool::Command<Restore>;

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
    cli::VERSION,
    // -h too: pgrestorewal has no host to connect to.
    FlagDef { short: "?h", ..cli::HELP },
];

#[derive(Debug, Default)]
struct Args {
    directory: Option<PathBuf>,
    verbose: bool,
    operands: Vec<OsString>,
}

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    flags::parse::<Args>(args, FLAGS)
}

impl ToolArgs for Args {
    type Config = Restore;

    fn take(&mut self, flag: &Flag) -> Result<(), UsageError> {
        match flag.name() {
            "directory" => self.directory = Some(flag.os_value().into()),
            "verbose" => self.verbose = true,
            name => unreachable!("--{name} is in FLAGS but not handled"),
        }
        Ok(())
    }

    fn operand(&mut self, value: OsString) {
        self.operands.push(value);
    }

    fn validate(self) -> Result<Restore, UsageError> {
        let archive = self.directory.ok_or_else(|| usage("no archive directory specified (-D)"))?;
        let mut operands = self.operands.into_iter();
        let (Some(name), Some(dest)) = (operands.next(), operands.next()) else {
            return Err(usage("expected a file name (%f) and a destination (%p)"));
        };
        if let Some(extra) = operands.next() {
            return Err(usage(format!(
                "too many command-line arguments (first is \"{}\")",
                extra.to_string_lossy()
            )));
        }
        let name = name
            .into_string()
            .map_err(|n| usage(format!("invalid file name \"{}\"", n.to_string_lossy())))?;
        Ok(Restore { archive, name, dest: dest.into(), verbose: self.verbose })
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

In postgresql.conf:
  restore_command = '{program} -D /path/to/archive %f %p'

FILENAME is the file PostgreSQL asks for (%f), DESTINATION where to put it (%p).
A segment whose complete file is not in the archive is served from its .partial
file, if that is the newest WAL of its timeline in the archive.

{}
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
                Ok(Command::Run(Restore { archive, name, dest, verbose })) => {
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
            Ok(Command::Run(Restore { verbose: true, .. }))
        ));
        assert!(matches!(
            try_parse(&["--verbose", "-D", "/a", "f", "p"]),
            Ok(Command::Run(Restore { verbose: true, .. }))
        ));
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
