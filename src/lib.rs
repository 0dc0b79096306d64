//! pgreceivewal: stream PostgreSQL's write-ahead log into a directory, durably.
//!
//! The library holds everything the tools share at the top (connection, protocol, LSNs and
//! timeline ids, server queries, the session core, logging, configuration, durable files);
//! `physical/` is the WAL archiver and the restore helper, `logical/` the logical decoder, and
//! `src/bin/` holds thin mains. Neither tool's folder imports the other's.
#![forbid(unsafe_code)]

pub mod apply;
/// In the static build, one allocator for Rust and (through `override`) for libpq: see the
/// dependency in Cargo.toml. glibc's malloc needs no help.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cli;
pub mod compression;
pub mod config;
pub mod diskspace;
pub mod durable;
pub mod lag;
pub mod logging;
pub mod logical;
pub mod lsn;
pub mod metrics;
pub mod notify;
pub mod physical;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sql;
pub mod text;
pub mod tool;

#[cfg(test)]
mod tests {
    /// `unsafe` lives in `ffi/` only: the library forbids it above, and so must every binary's
    /// own crate root, or a new `src/bin/` file could bring it back unnoticed.
    #[test]
    fn every_binary_forbids_unsafe() {
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
        let mut seen = 0;
        for entry in std::fs::read_dir(&bin).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.contains("\n#![forbid(unsafe_code)]\n"),
                    "{} lacks #![forbid(unsafe_code)]",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(seen >= 3, "found {seen} binaries in {}", bin.display());
    }
}
