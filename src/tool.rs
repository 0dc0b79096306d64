//! What every tool's `main` does the same way: print help, version or a usage error (exit 2),
//! set up logging, refuse a libpq without thread safety, turn SIGINT/SIGTERM into a stop
//! descriptor, and run the job on the receiver thread, where the libpq connections live.

use std::fmt;
use std::process::ExitCode;

use pgrw_ffi::sys::StopSignals;

use crate::config::LogOptions;
use crate::logging::{self, Hinted, Message};

/// What a command line asks for; each tool's parser fills in its own configuration `C`.
// Built once per run and matched at once; boxing the config would only complicate callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<C> {
    Run(C),
    Help,
    Version,
}

/// A command-line mistake, worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How a tool presents itself.
pub struct Tool<C> {
    pub program: &'static str,
    pub help: fn() -> String,
    pub version: fn() -> String,
    pub log: fn(&C) -> &LogOptions,
}

/// What a successful `run` did.
#[derive(Debug)]
pub enum Finished<O> {
    /// The job ran to the end with this outcome.
    Ran(O),
    /// `--help` or `--version` was printed; nothing ran, and the exit status is 0.
    Informed,
}

/// Runs `job` for a parsed command line; `Err` carries the exit status to return after the
/// cause was printed or logged once.
pub fn run<C, O, E>(
    tool: &Tool<C>,
    parsed: Result<Command<C>, UsageError>,
    job: fn(&C, &StopSignals) -> Result<O, E>,
) -> Result<Finished<O>, ExitCode>
where
    C: Send + 'static,
    O: Send + 'static,
    E: Hinted + Send + 'static,
{
    let cfg = match parsed {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", (tool.help)());
            return Ok(Finished::Informed);
        }
        Ok(Command::Version) => {
            println!("{}", (tool.version)());
            return Ok(Finished::Informed);
        }
        Err(e) => {
            let m = Message::new(e.0).hint(format!("Try \"{} --help\" for more information.", tool.program));
            eprint!("{}", logging::plain_lines(tool.program, "error", &m));
            return Err(ExitCode::from(2));
        }
    };
    logging::init((tool.log)(&cfg), tool.program);
    if !pgrw_ffi::is_thread_safe() {
        log::error!(hint = "Rebuild libpq with thread safety enabled."; "libpq was built without thread safety");
        return Err(ExitCode::FAILURE);
    }
    let stop = StopSignals::install().map_err(|e| {
        log::error!("could not install signal handlers: {}", crate::text::os_error(&e));
        ExitCode::FAILURE
    })?;
    // A libpq connection is used by the thread that made it: the receiver. Writers are
    // started per session by the job.
    let receiver = std::thread::Builder::new().name("receiver".into()).spawn(move || job(&cfg, &stop));
    match receiver.map(|h| h.join()) {
        Ok(Ok(Ok(outcome))) => Ok(Finished::Ran(outcome)),
        Ok(Ok(Err(e))) => {
            crate::report!(log::Level::Error, e);
            Err(ExitCode::FAILURE)
        }
        Ok(Err(_)) => {
            log::error!("the receiver thread panicked");
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            log::error!("could not start the receiver thread: {}", crate::text::os_error(&e));
            Err(ExitCode::FAILURE)
        }
    }
}
