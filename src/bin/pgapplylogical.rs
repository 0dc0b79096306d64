//! pgapplylogical: apply pgrecvlogical's output directory to a target database, exactly once
//! (see `--help` and docs/pgapplylogical.md).
//!
//! Exit status: 0 when done (end position reached, caught up with `--until-caught-up`, stopped
//! by SIGINT/SIGTERM), 1 on an error, 2 on a usage error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use pgreceivewal::apply::cli::{self, PROGRAM};
use pgreceivewal::apply::config::Config;
use pgreceivewal::apply::run;
use pgreceivewal::tool::{self, Tool};

const TOOL: Tool<Config> =
    Tool { program: PROGRAM, help: cli::help_text, version: cli::version_text, log: |cfg| &cfg.log };

fn main() -> ExitCode {
    match tool::main(&TOOL, cli::parse, run::run) {
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
