//! pgrecvlogical: decoded row changes from a pgoutput logical replication slot, written as
//! durable JSON (or text) lines, at least once.
//!
//! The pieces: [`pgoutput`] parses the plugin's messages and [`output`] turns them into lines
//! (both pure); [`stream`] is the receive loop on the receiver thread and [`writer`] the writer
//! thread, which owns the output [`files`] (tied to one slot by [`meta`]) and the [`spool`]s of streamed transactions; [`run`]
//! manages slots, publications and reconnects; [`snapshot`] and [`ddl`] are the `--snapshot`
//! and `--ddl` extras; [`cli`] is the command line.

pub mod cli;
pub mod config;
pub mod ddl;
pub mod files;
pub mod meta;
pub mod output;
pub mod pgoutput;
pub mod retention;
pub mod run;
pub mod snapshot;
pub mod spool;
pub mod stream;
pub mod writer;
