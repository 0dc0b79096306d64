//! What every tool's `main` does the same way: take the program name from argv[0], print
//! help, version or a usage error (exit 2), set up logging, refuse a libpq without thread
//! safety, turn SIGINT/SIGTERM into a stop descriptor, and run the job on the receiver thread,
//! where the libpq connections live.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;

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
    /// The software's own name, used when argv[0] gives none.
    pub program: &'static str,
    /// `--help` and `--version` for the name the program was started as.
    pub help: fn(&str) -> String,
    pub version: fn(&str) -> String,
    pub log: fn(&C) -> &LogOptions,
}

static PROGNAME: OnceLock<String> = OnceLock::new();

/// The name a program was started as, like PostgreSQL's `get_progname`: the last component
/// of argv[0], so a `pg_receivewal` symlink to pgreceivewal says `pg_receivewal: error: ...`
/// as the program it stands in for would. `default` when argv[0] is missing, empty, or holds
/// a control character (the name starts every log line, which must stay one line).
pub fn progname_of(argv0: Option<&OsStr>, default: &'static str) -> String {
    let name = argv0.and_then(|a| Path::new(a).file_name()).map(|n| n.to_string_lossy().into_owned());
    match name {
        Some(n) if !n.is_empty() && !n.chars().any(char::is_control) => n,
        _ => default.to_owned(),
    }
}

/// Records the program name from argv[0] (see [`progname_of`]) for [`progname`]; the first
/// call wins. Returns the name in effect.
pub fn set_progname(argv0: Option<&OsStr>, default: &'static str) -> &'static str {
    PROGNAME.get_or_init(|| progname_of(argv0, default))
}

/// The name the program was started as, once [`set_progname`] ran; `default` before (in unit
/// tests, or a library caller).
pub fn progname(default: &'static str) -> &'static str {
    PROGNAME.get().map_or(default, String::as_str)
}

/// What a successful `run` did.
#[derive(Debug)]
pub enum Finished<O> {
    /// The job ran to the end with this outcome.
    Ran(O),
    /// `--help` or `--version` was printed; nothing ran, and the exit status is 0.
    Informed,
}

/// A daemon's whole `main`: names the program from argv[0], parses the rest of the command
/// line with `parse`, and [`run`]s `job`.
pub fn main<C, O, E>(
    tool: &Tool<C>,
    parse: fn(std::env::ArgsOs) -> Result<Command<C>, UsageError>,
    job: fn(&C, &StopSignals) -> Result<O, E>,
) -> Result<Finished<O>, ExitCode>
where
    C: Send + 'static,
    O: Send + 'static,
    E: Hinted + Send + 'static,
{
    let mut args = std::env::args_os();
    set_progname(args.next().as_deref(), tool.program);
    run(tool, parse(args), job)
}

/// Runs `job` for a parsed command line, speaking as [`progname`] (call [`set_progname`]
/// first); `Err` carries the exit status to return after the
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
    let program = progname(tool.program);
    let cfg = match parsed {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", (tool.help)(program));
            return Ok(Finished::Informed);
        }
        Ok(Command::Version) => {
            println!("{}", (tool.version)(program));
            return Ok(Finished::Informed);
        }
        Err(e) => {
            let m = Message::new(e.0).hint(format!("Try \"{program} --help\" for more information."));
            eprint!("{}", logging::plain_lines(program, "error", &m));
            return Err(ExitCode::from(2));
        }
    };
    logging::init((tool.log)(&cfg), program);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progname_is_the_last_component_of_argv0() {
        let of = |a: &str| progname_of(Some(OsStr::new(a)), "pgreceivewal");
        assert_eq!(of("pg_receivewal"), "pg_receivewal");
        assert_eq!(of("/usr/lib/postgresql/15/bin/pg_receivewal"), "pg_receivewal");
        assert_eq!(of("./target/release/pgreceivewal"), "pgreceivewal");
        assert_eq!(of(""), "pgreceivewal");
        assert_eq!(of("/"), "pgreceivewal");
        assert_eq!(of("bin/pg_receivewal\n2026-01-01 forged"), "pgreceivewal");
        assert_eq!(progname_of(None, "pgrecvlogical"), "pgrecvlogical");
    }
}
