//! pgrestorewal: PostgreSQL's `restore_command` for an archive written by pgreceivewal.
//!
//! `restore_command = 'pgrestorewal -D /archive %f %p'`, and `pgrestorewal --verify -D
//! /archive` to check a whole archive. The command line lives in
//! `pgreceivewal::physical::restore_cli`, the logic in `pgreceivewal::physical::restore` and
//! `pgreceivewal::physical::verify`; this prints and picks the exit status.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use pgreceivewal::logging::{plain_lines, Message};
use pgreceivewal::physical::restore::{self, Served, EXIT_FATAL};
use pgreceivewal::physical::restore_cli::{self as cli, Command, Format, Restore, Run, Verify, PROGRAM};
use pgreceivewal::physical::verify;
use pgreceivewal::tool;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    // Messages speak as the name we were started as (argv[0]), as PostgreSQL's tools do.
    let prog = tool::set_progname(args.next().as_deref(), PROGRAM);
    let Restore { archive, name, dest, verbose } = match cli::parse(args) {
        Ok(Command::Run(Run::Restore(r))) => r,
        Ok(Command::Run(Run::Verify(v))) => return run_verify(prog, &v),
        Ok(Command::Help) => {
            print!("{}", cli::help_text(prog));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{}", cli::version_text(prog));
            return ExitCode::SUCCESS;
        }
        // Not the daemons' status 2: a broken restore_command must stop recovery (see
        // restore_cli), and PostgreSQL does so only for exit codes above 125.
        Err(e) => {
            let m = Message::new(e.to_string()).hint(format!("Try \"{prog} --help\" for more information."));
            eprint!("{}", plain_lines(prog, "error", &m));
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
                eprint!("{}", plain_lines(prog, "warning", &m));
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
            eprint!("{}", plain_lines(prog, "error", &e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The report goes to stdout (it is the output asked for), the verdict in the exit status (0
/// or 1); a check that could not run says why on stderr and exits EXIT_FATAL.
fn run_verify(prog: &str, v: &Verify) -> ExitCode {
    match verify::verify(&v.archive) {
        Ok(report) => {
            print!(
                "{}",
                match v.format {
                    Format::Text => report.to_text(),
                    Format::Json => report.to_json(),
                }
            );
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprint!("{}", plain_lines(prog, "error", &e));
            ExitCode::from(EXIT_FATAL)
        }
    }
}
