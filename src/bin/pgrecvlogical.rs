//! pgrecvlogical: stream decoded row changes from a logical replication slot into durable JSON
//! lines (see `--help` and docs/pgrecvlogical.md).
//!
//! Exit status: 0 when done (end position reached, stopped by SIGINT/SIGTERM, slot action
//! done), 1 on an error, 2 on a usage error.

use std::process::ExitCode;

use pgreceivewal::logging;
use pgreceivewal::logical::cli::{self, Command, PROGRAM};
use pgreceivewal::logical::run::{self, Outcome};

fn main() -> ExitCode {
    let cfg = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", cli::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{}", cli::version_text());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{PROGRAM}: error: {e}");
            eprintln!("Try \"{PROGRAM} --help\" for more information.");
            return ExitCode::from(2);
        }
    };
    logging::init(&cfg.log, PROGRAM);
    if !pgrw_ffi::is_thread_safe() {
        log::error!("libpq was built without thread safety; rebuild it with thread safety enabled");
        return ExitCode::FAILURE;
    }
    let stop = match pgrw_ffi::sys::StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            log::error!("could not install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The libpq connections live on this thread, the receiver; each session starts its writer.
    let receiver =
        std::thread::Builder::new().name("pgrl-receiver".into()).spawn(move || run::run(&cfg, &stop));
    let result = match receiver.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            log::error!("the receiver thread panicked");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            log::error!("could not start the receiver thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(Outcome::SlotCreated) => log::info!("replication slot created"),
        Ok(_) => {}
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
