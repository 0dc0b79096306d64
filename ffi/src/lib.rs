//! The only home of `unsafe` in pgreceivewal: a small safe API over libpq (through `pq-sys`) and
//! the few libc calls the standard library does not offer.
//!
//! Every libpq object has exactly one owner that frees it in `Drop`; raw pointers never leave
//! this crate. `Conn` is deliberately `!Send`: libpq connections are used by one thread, the
//! receiver, which creates it.

mod conn;
mod error;
mod result;
pub mod sys;

pub use conn::{
    check_conninfo, conninfo_parse, is_thread_safe, Conn, ConnectError, CopyBuf, CopyRead, Piped,
};
pub use error::{os_error, Error};
pub use result::{PgResult, Status};
