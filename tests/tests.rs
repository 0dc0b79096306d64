//! The one integration-test binary: every module here drives the real
//! binaries against real PostgreSQL servers (see util/ for the harness).

mod util;

mod archiver;

mod infra_smoke;

mod restore;

mod faults;

mod badinput;

mod logical;

mod logical_integrity;
