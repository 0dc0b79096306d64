//! What a pgreceivewal run is configured to do, as the core sees it: the command line
//! (`cli`) builds these, the archiver, receiver, writer, server connection and logging read
//! them. Shared by pgrecvlogical for the connection, durability and logging settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::compression::Compression;
use crate::lsn::Lsn;

/// What a run does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stream WAL into the directory (the default).
    Stream,
    /// `--create-slot`: create the slot, then exit.
    CreateSlot,
    /// `--drop-slot`: drop the slot, then exit.
    DropSlot,
}

/// When received WAL is fsync'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync when a segment is completed (and before reporting a flush position).
    Default,
    /// `--synchronous`: fsync right after every write, so the flush position is current.
    Synchronous,
    /// `--no-sync`: never fsync (for tests; a crash can lose or corrupt received WAL).
    NoSync,
}

/// libpq's password prompting, pg_receivewal's `dbgetpassword`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordMode {
    /// Prompt only when the server asks for a password and none is known.
    Auto,
    /// `-w`: never prompt.
    Never,
    /// `-W`: prompt before connecting.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Connection settings given on the command line; libpq fills in the rest from `PG*`
/// environment variables, `~/.pgpass` and the service file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnOptions {
    pub dbname: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
    pub password: PasswordMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub level: log::LevelFilter,
    pub format: LogFormat,
    pub add_source: bool,
}

/// A validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The target directory; empty when `--create-slot`/`--drop-slot` ran without `-D`
    /// (those actions never touch it).
    pub directory: PathBuf,
    pub slot: Option<String>,
    pub action: Action,
    /// With `--create-slot`: an existing slot is not an error.
    pub if_not_exists: bool,
    /// `--create-slot-if-missing`: streaming creates the `-S` slot when the server lacks it
    /// (a new archive, or a new primary after a failover) instead of refusing to start.
    pub create_slot_if_missing: bool,
    /// Stop after receiving this position. `-E 0/0` is no end position, as in pg_receivewal
    /// (it compares against `InvalidXLogRecPtr`).
    pub endpos: Option<Lsn>,
    pub no_loop: bool,
    /// `--segment-command`: run for each completed segment and history file (`%p`, `%f`).
    pub segment_command: Option<String>,
    pub durability: Durability,
    /// `-Z/--compress`: how completed and partial segments are stored.
    pub compression: Compression,
    /// Time between standby status updates; `None` when `-s 0` disables them.
    pub status_interval: Option<Duration>,
    /// `--min-free`: bytes to leave free on the archive's disk; 0 turns the floor off.
    pub min_free: u64,
    /// `--metrics-address`: HOST:PORT to serve metrics on while streaming.
    pub metrics_address: Option<String>,
    pub conn: ConnOptions,
    pub log: LogOptions,
}
