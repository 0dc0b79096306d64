//! What every tool's `main` does the same way: print help, version or a usage error (exit 2),
//! set up logging, refuse a libpq without thread safety, turn SIGINT/SIGTERM into a stop
//! descriptor, and run the job on the receiver thread, where the libpq connections live.

use std::fmt::Display;
use std::process::ExitCode;

use pgrw_ffi::sys::StopSignals;

use crate::cli::{Command, LogOptions, UsageError};
use crate::logging;

/// How a tool presents itself.
pub struct Tool<C> {
    pub program: &'static str,
    pub help: fn() -> String,
    pub version: fn() -> String,
    pub log: fn(&C) -> &LogOptions,
}

/// Runs `job` for a parsed command line; `Ok` carries the job's outcome, `Err` the exit
/// status to return (after the cause was printed or logged once).
pub fn run<C, O, E>(
    tool: &Tool<C>,
    parsed: Result<Command<C>, UsageError>,
    job: fn(&C, &StopSignals) -> Result<O, E>,
) -> Result<O, ExitCode>
where
    C: Send + 'static,
    O: Send + 'static,
    E: Display + Send + 'static,
{
    let cfg = match parsed {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", (tool.help)());
            return Err(ExitCode::SUCCESS);
        }
        Ok(Command::Version) => {
            println!("{}", (tool.version)());
            return Err(ExitCode::SUCCESS);
        }
        Err(e) => {
            eprintln!("{}: error: {e}", tool.program);
            eprintln!("Try \"{} --help\" for more information.", tool.program);
            return Err(ExitCode::from(2));
        }
    };
    logging::init((tool.log)(&cfg), tool.program);
    if !pgrw_ffi::is_thread_safe() {
        log::error!("libpq was built without thread safety; rebuild it with thread safety enabled");
        return Err(ExitCode::FAILURE);
    }
    let stop = StopSignals::install().map_err(|e| {
        log::error!("could not install signal handlers: {e}");
        ExitCode::FAILURE
    })?;
    // A libpq connection is used by the thread that made it: the receiver. Writers are
    // started per session by the job.
    let receiver = std::thread::Builder::new().name("receiver".into()).spawn(move || job(&cfg, &stop));
    match receiver.map(|h| h.join()) {
        Ok(Ok(Ok(outcome))) => Ok(outcome),
        Ok(Ok(Err(e))) => {
            log::error!("{e}");
            Err(ExitCode::FAILURE)
        }
        Ok(Err(_)) => {
            log::error!("the receiver thread panicked");
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            log::error!("could not start the receiver thread: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
