//! pgreceivewal: stream a PostgreSQL server's WAL into a directory (see `--help`).
//!
//! Exit status: 0 when done (end position reached, stopped by SIGINT/SIGTERM, slot created or
//! dropped), 1 on an error, 2 on a usage error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use pgreceivewal::config::Config;
use pgreceivewal::physical::archiver::{self, Outcome};
use pgreceivewal::physical::cli::{self, PROGRAM};
use pgreceivewal::tool::{self, Finished, Tool};

const TOOL: Tool<Config> =
    Tool { program: PROGRAM, help: cli::help_text, version: cli::version_text, log: |cfg| &cfg.log };

fn main() -> ExitCode {
    match tool::main(&TOOL, cli::parse, archiver::run) {
        Ok(Finished::Ran(Outcome::SlotCreated)) => log::info!("replication slot created"),
        Ok(_) => {}
        Err(code) => return code,
    }
    ExitCode::SUCCESS
}
