//! What a pgrecvlogical run is configured to do, as the core sees it: the command line
//! (`cli`) builds a [`Config`], the runner and the stream read it.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConnOptions, LogOptions};
use crate::lsn::Lsn;

use super::output::Format;

/// What a run does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stream changes (the default; the slot must exist unless `--create-slot-if-missing`).
    Stream,
    /// `--create-slot`: create the slot, then exit (or stream, with `--start`).
    CreateSlot { then_stream: bool },
    /// `--drop-slot` (and/or `--teardown`): drop the slot, remove the DDL trigger, exit.
    Drop { slot: bool, teardown: bool },
    /// `--list-slots`: print the database's logical slots, then exit.
    ListSlots,
}

impl Action {
    pub fn streams(self) -> bool {
        matches!(self, Action::Stream | Action::CreateSlot { then_stream: true })
    }
}

/// pgoutput's `streaming` option: how the server sends transactions larger than its
/// `logical_decoding_work_mem` before they commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    Off,
    On,
    /// Protocol 4: also tells the server we could apply in parallel, which makes Stream Abort
    /// carry the abort LSN and time.
    Parallel,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Rotating durable files in this directory.
    Directory(PathBuf),
    /// `-f -`: standard output.
    Stdout,
}

/// A validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub action: Action,
    /// Empty only for `--list-slots` and `--teardown` alone.
    pub slot: String,
    pub if_not_exists: bool,
    /// `--create-slot-if-missing`: streaming creates the slot when the server lacks it.
    pub create_slot_if_missing: bool,
    pub publications: Vec<String>,
    pub create_publication: bool,
    /// Tables for `--create-publication`; empty means FOR ALL TABLES.
    pub tables: Vec<String>,
    /// `None` for actions that write nothing.
    pub output: Option<Output>,
    pub format: Format,
    pub rotate_size: u64,
    pub rotate_interval: Option<Duration>,
    pub memory_limit: u64,
    pub spill_dir: Option<PathBuf>,
    /// `--min-free`: bytes to leave free on the output directory's disk; 0: no floor.
    pub min_free: u64,
    pub proto_version: Option<u32>,
    pub streaming: Option<Streaming>,
    pub two_phase: bool,
    pub messages: bool,
    pub binary: bool,
    pub ddl: bool,
    pub snapshot: bool,
    pub endpos: Option<Lsn>,
    pub no_loop: bool,
    pub no_sync: bool,
    pub status_interval: Option<Duration>,
    /// `--metrics-address`: HOST:PORT to serve metrics on while streaming.
    pub metrics_address: Option<String>,
    pub conn: ConnOptions,
    pub log: LogOptions,
}
