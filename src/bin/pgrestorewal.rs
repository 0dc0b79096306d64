//! pgrestorewal: PostgreSQL's `restore_command` for an archive written by pgreceivewal.
//!
//! `restore_command = 'pgrestorewal -D /archive %f %p'`. The logic lives in
//! `pgreceivewal::physical::restore`; this is the command line and the exit status.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use pgreceivewal::physical::restore::{self, Served, EXIT_FATAL};
use pgreceivewal::tool;

/// The software's name; messages use the name it was started as (argv[0]).
const PROGRAM: &str = "pgrestorewal";

fn help(prog: &str) -> String {
    format!(
        "{prog} copies a file from a WAL archive written by pgreceivewal, for PostgreSQL's restore_command.

Usage:
  {prog} [OPTION]... -D DIRECTORY FILENAME DESTINATION

In postgresql.conf:
  restore_command = '{prog} -D /path/to/archive %f %p'

FILENAME is the file PostgreSQL asks for (%f), DESTINATION where to put it (%p).
A segment whose complete file is not in the archive is served from its .partial
file, if that is the newest WAL of its timeline in the archive.

Options:
  -D, --directory=DIR    the archive directory
  -v, --verbose          log each restored file on stderr
  -V, --version          output version information, then exit
  -?, --help             show this help, then exit

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
"
    )
}

struct Args {
    directory: Option<PathBuf>,
    verbose: bool,
    positional: Vec<std::ffi::OsString>,
}

enum Action {
    Help,
    Version,
    Restore { archive: PathBuf, name: String, dest: PathBuf, verbose: bool },
}

/// A mistake on the command line. It exits with EXIT_FATAL like any other failure: a
/// misconfigured restore_command must stop recovery, not look like the end of the archive.
struct UsageError(String);

fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Action, UsageError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut a = Args { directory: None, verbose: false, positional: Vec::new() };
    let usage = |e: lexopt::Error| UsageError(e.to_string());
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('D') | Long("directory") => a.directory = Some(parser.value().map_err(usage)?.into()),
            Short('v') | Long("verbose") => a.verbose = true,
            Short('V') | Long("version") => return Ok(Action::Version),
            Short('?') | Short('h') | Long("help") => return Ok(Action::Help),
            Value(v) => a.positional.push(v),
            other => return Err(usage(other.unexpected())),
        }
    }
    let archive = a.directory.ok_or_else(|| UsageError("no archive directory specified (-D)".to_owned()))?;
    let mut positional = a.positional.into_iter();
    let (Some(name), Some(dest)) = (positional.next(), positional.next()) else {
        return Err(UsageError("expected a file name (%f) and a destination (%p)".to_owned()));
    };
    if let Some(extra) = positional.next() {
        return Err(UsageError(format!(
            "too many command-line arguments (first is \"{}\")",
            extra.to_string_lossy()
        )));
    }
    let name = name
        .into_string()
        .map_err(|n| UsageError(format!("invalid file name \"{}\"", n.to_string_lossy())))?;
    Ok(Action::Restore { archive, name, dest: dest.into(), verbose: a.verbose })
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let prog = tool::set_progname(args.next().as_deref(), PROGRAM);
    let (archive, name, dest, verbose) = match parse_args(args) {
        Ok(Action::Help) => {
            print!("{}", help(prog));
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("{prog} (pgreceivewal) {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Action::Restore { archive, name, dest, verbose }) => (archive, name, dest, verbose),
        Err(UsageError(msg)) => {
            eprintln!("{prog}: error: {msg}");
            eprintln!("Try \"{prog} --help\" for more information.");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    match restore::restore(&archive, &name, &dest) {
        Ok(r) => {
            if let Some(p) = &r.leftover_partial {
                eprintln!(
                    "{prog}: warning: served complete segment \"{name}\" and ignored \"{}\", which should not exist \
                     next to it; remove it once recovery is done",
                    p.display()
                );
            }
            if verbose {
                let what = match r.served {
                    Served::File => "",
                    Served::Partial => " (the newest WAL of its timeline, from a .partial file)",
                };
                eprintln!("{prog}: restored \"{name}\" from \"{}\"{what}", r.source.display());
            }
            ExitCode::SUCCESS
        }
        // PostgreSQL asks for files that do not exist as a matter of course (the next
        // timeline's history, the segment after the last): say nothing.
        Err(e) if e.is_not_found() => ExitCode::from(e.exit_code()),
        Err(e) => {
            eprintln!("{prog}: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, UsageError> {
        parse_args(args.iter().map(Into::into))
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(args) {
            Err(UsageError(m)) => m,
            Ok(_) => panic!("{args:?} parsed"),
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
            match parse(args) {
                Ok(Action::Restore { archive, name, dest, verbose }) => {
                    assert_eq!(archive, PathBuf::from("/a"), "{args:?}");
                    assert_eq!(name, "f");
                    assert_eq!(dest, PathBuf::from("p"));
                    assert!(!verbose);
                }
                _ => panic!("{args:?}"),
            }
        }
        assert!(matches!(parse(&["-v", "-D", "/a", "f", "p"]), Ok(Action::Restore { verbose: true, .. })));
        assert!(matches!(
            parse(&["--verbose", "-D", "/a", "f", "p"]),
            Ok(Action::Restore { verbose: true, .. })
        ));
    }

    #[test]
    fn help_and_version() {
        for a in ["-?", "-h", "--help"] {
            assert!(matches!(parse(&[a]), Ok(Action::Help)), "{a}");
        }
        for a in ["-V", "--version"] {
            assert!(matches!(parse(&[a]), Ok(Action::Version)), "{a}");
        }
        let h = help(PROGRAM);
        assert!(h.starts_with("pgrestorewal copies") && h.contains("\n  pgrestorewal [OPTION]..."), "{h}");
        assert!(help("pg_restorewal").contains("restore_command = 'pg_restorewal -D"));
        assert!(h.contains("  255  "), "{h}");
        assert!(h.contains("%f %p"));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(usage_error(&["f", "p"]), "no archive directory specified (-D)");
        assert_eq!(usage_error(&["-D", "/a", "f"]), "expected a file name (%f) and a destination (%p)");
        assert_eq!(
            usage_error(&["-D", "/a", "f", "p", "q"]),
            "too many command-line arguments (first is \"q\")"
        );
        assert!(usage_error(&["-D"]).contains("missing argument"));
        assert!(usage_error(&["-x", "-D", "/a", "f", "p"]).contains("-x"));
        assert!(usage_error(&["--nope", "-D", "/a", "f", "p"]).contains("--nope"));
    }
}
