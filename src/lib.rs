//! pgreceivewal: stream PostgreSQL's write-ahead log into a directory, durably.
//!
//! The library holds everything the tools share; `src/bin/` holds thin mains.
#![forbid(unsafe_code)]

pub mod archive;
pub mod archiver;
pub mod cli;
pub mod config;
pub mod lag;
pub mod logging;
pub mod logical;
pub mod lsn;
pub mod notify;
pub mod protocol;
pub mod receiver;
pub mod restore;
pub mod server;
pub mod session;
pub mod sql;
pub mod text;
pub mod timeline;
pub mod tool;
pub mod walcheck;
pub mod walfile;
pub mod writer;

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
