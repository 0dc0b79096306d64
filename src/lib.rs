//! pgreceivewal: stream PostgreSQL's write-ahead log into a directory, durably.
//!
//! The library holds everything the tools share; `src/bin/` holds thin mains.
#![forbid(unsafe_code)]

pub mod archive;
pub mod archiver;
pub mod cli;
pub mod logging;
pub mod logical;
pub mod lsn;
pub mod protocol;
pub mod receiver;
pub mod restore;
pub mod server;
pub mod session;
pub mod timeline;
pub mod tool;
pub mod walcheck;
pub mod walfile;
pub mod writer;
