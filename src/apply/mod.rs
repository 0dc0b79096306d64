//! pgapplylogical: applies pgrecvlogical's output directory to a target database, each
//! source transaction as one target transaction, exactly once.
//!
//! The pieces: [`json`] reads the lines and [`records`] turns them into checked units (both
//! pure); [`follow`] reads the directory in order as it grows; [`target`] applies a unit and
//! the position it reaches in one transaction; [`run`] is the loop, [`progress`] what its log
//! line and metrics show; [`cli`] the command line.
//! From `logical/` it uses only the output's definitions: file names, the metadata file and
//! the DDL trigger's own SQL (to recognise its records).

pub mod cli;
pub mod config;
pub mod follow;
pub mod json;
pub mod progress;
pub mod records;
pub mod run;
pub mod statement;
pub mod target;
