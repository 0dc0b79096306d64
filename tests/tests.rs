//! The one integration-test binary: every module here drives the real
//! binaries against real PostgreSQL servers (see util/ for the harness).
#![forbid(unsafe_code)]

mod util;

mod archiver;

mod infra_smoke;

mod restore;

mod faults;

mod badinput;

mod logical;

mod session;

mod physical_fixes;

mod logical_server;

mod slots;

mod logical_integrity;

mod notify;

mod dropin;

mod ship;

mod apply;
mod apply_ddl;
mod compression;
mod diskfull;
mod metrics;

mod verify;
