//! What a pgapplylogical run is configured to do: the command line (`cli`) builds a
//! [`Config`], the runner reads it.

use std::path::PathBuf;

use crate::config::{ConnOptions, LogOptions};
use crate::lsn::Lsn;

/// What to do with a `--ddl` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlMode {
    /// Stop with an error naming the DDL (the default: running SQL that came from the source
    /// is a choice the user makes).
    Stop,
    /// Run the record's query on the target, in the transaction it came in.
    Apply,
    /// Log it and go on (the user keeps the target's schema in step by hand).
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// pgrecvlogical's output directory.
    pub directory: PathBuf,
    /// The target database.
    pub conn: ConnOptions,
    pub log: LogOptions,
    /// Stop once everything up to this position is applied.
    pub until: Option<Lsn>,
    /// Stop once every complete unit in the directory is applied.
    pub until_caught_up: bool,
    pub ddl: DdlMode,
    /// Tables whose changes are not applied (`schema.table`, as named in the output).
    pub skip_tables: Vec<(String, String)>,
    /// Remove output files once everything in them is applied.
    pub remove_applied: bool,
    /// The name the applied position is registered under in the directory
    /// (`.consumer.<name>`), which pgrecvlogical's retention rule honours.
    pub consumer_name: String,
    /// Exit on the first connection error instead of reconnecting.
    pub no_loop: bool,
    /// `--metrics-address`: HOST:PORT to serve metrics and health on.
    pub metrics_address: Option<String>,
}
