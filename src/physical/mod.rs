//! The physical archiver (`pgreceivewal`) and its restore helper (`pgrestorewal`): the archive
//! directory, WAL file names, page checks, the receiver's stream handler, the writer thread, the
//! run loop, shipping completed files with `--segment-command`, and serving segments back to
//! PostgreSQL's `restore_command`.

pub mod archive;
pub mod archiver;
pub mod receiver;
pub mod restore;
pub mod ship;
pub mod timeline;
pub mod walcheck;
pub mod walfile;
pub mod writer;
