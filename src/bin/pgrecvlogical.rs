//! pgrecvlogical: stream decoded row changes from a logical replication slot into durable JSON
//! lines (see `--help` and docs/pgrecvlogical.md).
//!
//! Exit status: 0 when done (end position reached, stopped by SIGINT/SIGTERM, slot action
//! done), 1 on an error, 2 on a usage error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use pgreceivewal::logical::cli::{self, PROGRAM};
use pgreceivewal::logical::config::Config;
use pgreceivewal::logical::run::{self, Outcome};
use pgreceivewal::tool::{self, Finished, Tool};

const TOOL: Tool<Config> =
    Tool { program: PROGRAM, help: cli::help_text, version: cli::version_text, log: |cfg| &cfg.log };

fn main() -> ExitCode {
    match tool::main(&TOOL, cli::parse, run::run) {
        Ok(Finished::Ran(Outcome::SlotCreated)) => log::info!("replication slot created"),
        Ok(_) => {}
        Err(code) => return code,
    }
    ExitCode::SUCCESS
}
