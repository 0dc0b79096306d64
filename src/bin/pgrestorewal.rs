//! pgrestorewal: PostgreSQL's `restore_command` for an archive written by pgreceivewal.
//!
//! `restore_command = 'pgrestorewal -D /archive %f %p'`. The command line lives in
//! `pgreceivewal::physical::restore_cli`, the logic in `pgreceivewal::physical::restore`; this
//! prints and picks the exit status.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use pgreceivewal::logging::{plain_lines, Message};
use pgreceivewal::physical::restore::{self, Served, EXIT_FATAL};
use pgreceivewal::physical::restore_cli::{self as cli, Command, Restore, PROGRAM};

fn main() -> ExitCode {
    let Restore { archive, name, dest, verbose } = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(r)) => r,
        Ok(Command::Help) => {
            print!("{}", cli::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{}", cli::version_text());
            return ExitCode::SUCCESS;
        }
        // Not the daemons' status 2: a broken restore_command must stop recovery (see
        // restore_cli), and PostgreSQL does so only for exit codes above 125.
        Err(e) => {
            let m =
                Message::new(e.to_string()).hint(format!("Try \"{PROGRAM} --help\" for more information."));
            eprint!("{}", plain_lines(PROGRAM, "error", &m));
            return ExitCode::from(EXIT_FATAL);
        }
    };
    match restore::restore(&archive, &name, &dest) {
        Ok(r) => {
            if let Some(p) = &r.leftover_partial {
                let m = Message::new(format!(
                    "served complete segment \"{name}\" and ignored \"{}\", which should not exist next to it",
                    p.display()
                ))
                .hint("Remove it once recovery is done.");
                eprint!("{}", plain_lines(PROGRAM, "warning", &m));
            }
            if verbose {
                let what = match r.served {
                    Served::File => "",
                    Served::Partial => " (the newest WAL of its timeline, from a .partial file)",
                };
                eprintln!("{PROGRAM}: restored \"{name}\" from \"{}\"{what}", r.source.display());
            }
            ExitCode::SUCCESS
        }
        // PostgreSQL asks for files that do not exist as a matter of course (the next
        // timeline's history, the segment after the last): say nothing.
        Err(e) if e.is_not_found() => ExitCode::from(e.exit_code()),
        Err(e) => {
            eprint!("{}", plain_lines(PROGRAM, "error", &e));
            ExitCode::from(e.exit_code())
        }
    }
}
