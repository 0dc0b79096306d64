//! Files that survive a crash: fsync of a directory, a crash-safe replace, and a locked output
//! directory. Both tools write through these; neither tool's folder holds them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::text::os_error;

/// Suffix of files the writer is still preparing (a segment being padded, the metadata being
/// replaced). Only such files are ever removed, and only ours.
pub const TEMP_SUFFIX: &str = ".pgreceivewal-tmp";

/// fsync a directory so the names created, renamed or removed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `content`, crash-safely: write a temporary file, fsync it, rename it
/// over the target, fsync the directory (PostgreSQL's `durable_rename`).
pub fn write_durably(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path
        .with_file_name(format!("{}{TEMP_SUFFIX}", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    // Both names, as PostgreSQL's durable_rename reports a failed rename.
    fs::rename(&tmp, path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "could not rename file \"{}\" to \"{}\": {}",
                tmp.display(),
                path.display(),
                os_error(&e)
            ),
        )
    })?;
    fsync_dir(dir)
}

/// Why [`open_locked`] failed; each tool turns it into its own error with its own words.
#[derive(Debug)]
pub enum LockedDirError {
    NotADirectory(PathBuf),
    Locked(PathBuf),
    Io { path: PathBuf, action: &'static str, err: io::Error },
}

/// Opens an output directory, creating it (mode 0700, and its parent's entry fsync'ed) if
/// missing, and takes an exclusive flock on `lock_name` inside it. The lock lives as long as
/// the returned file: flock is released when the descriptor closes, also when the process is
/// killed, so no stale lock survives a crash.
pub fn open_locked(dir: &Path, lock_name: &str) -> Result<File, LockedDirError> {
    let io = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |err| LockedDirError::Io { path, action, err }
    };
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(LockedDirError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir, "create directory"))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent).map_err(io(parent, "fsync directory"))?;
            }
        }
        Err(e) => {
            return Err(LockedDirError::Io { path: dir.to_path_buf(), action: "access directory", err: e })
        }
    }
    let lock_path = dir.join(lock_name);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(&lock_path, "open lock file"))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(LockedDirError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => {
            return Err(LockedDirError::Io { path: lock_path, action: "lock", err: e })
        }
    }
    // The PID is for people looking at the directory; the lock itself is the flock.
    let _ = lock.set_len(0).and_then(|()| (&lock).write_all(format!("{}\n", std::process::id()).as_bytes()));
    Ok(lock)
}
