//! The physical archiver (`pgreceivewal`) and its restore helper (`pgrestorewal`): the archive
//! directory, WAL file names, page checks, the receiver's stream handler, the writer thread, the
//! run loop, shipping completed files with `--segment-command`, and serving segments back to
//! PostgreSQL's `restore_command`; [`cli`] and [`restore_cli`] are the two command lines
//! (nothing else here imports them).

pub mod archive;
pub mod archiver;
pub mod cli;
pub mod compress;
pub mod receiver;
pub mod restore;
pub mod restore_cli;
pub mod ship;
pub mod timeline;
pub mod verify;
pub mod walcheck;
pub mod walfile;
pub mod writer;
pub mod xlogrecord;
