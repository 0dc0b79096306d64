//! `.pgrecvlogical.meta`: what an output directory holds the changes of (the cluster's system
//! identifier, the database, the slot) and how far the initial snapshot taken into it got.
//!
//! Like the physical archive's `.pgreceivewal.meta` it is replaced crash-safely (temporary
//! file, fsync, rename, fsync of the directory) and checked at every session start, before
//! anything on the server or in the directory changes: output resumed from another cluster,
//! database or slot would mix two histories, and the server would skip every transaction below
//! the position the foreign output ends at.
//!
//! The snapshot state closes a crash loop: the slot that exported a snapshot is useless for a
//! new snapshot once the copy is interrupted (its snapshot died with the connection), so the
//! directory records that we created the slot for a snapshot *before* creating it, and that the
//! snapshot is complete once it is durable; a slot created by us for a snapshot that never
//! completed is dropped and created again.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::durable::{fsync_dir, write_durably, TEMP_SUFFIX};
use crate::logging::Message;

use super::files::FilesError;

pub const META_FILE: &str = ".pgrecvlogical.meta";

/// What the output comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub system_id: u64,
    pub database_oid: u32,
    /// For messages: the oid is what identifies the database (a renamed one is the same).
    pub database: String,
    pub slot: String,
}

/// How far the initial snapshot into this directory got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SnapshotState {
    /// We took none (or the directory predates this file).
    #[default]
    None,
    /// The slot is being, or was, created by us for a snapshot that is not yet durable.
    Pending,
    /// The snapshot is complete and durable in the output.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: Identity,
    pub snapshot: SnapshotState,
}

/// A database name in one line: `\`, and control characters escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let bad = || format!("invalid escape in \"{s}\"");
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('u') => {
                if it.next() != Some('{') {
                    return Err(bad());
                }
                let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or_else(bad)?;
                out.push(c);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

impl Meta {
    pub fn render(&self) -> String {
        let mut s = format!(
            "# pgrecvlogical output metadata: the slot this directory holds the changes of; do not edit\n\
             system_identifier={}\ndatabase_oid={}\ndatabase={}\nslot={}\n",
            self.id.system_id,
            self.id.database_oid,
            escape(&self.id.database),
            escape(&self.id.slot)
        );
        match self.snapshot {
            SnapshotState::None => {}
            SnapshotState::Pending => s.push_str("snapshot=pending\n"),
            SnapshotState::Done => s.push_str("snapshot=done\n"),
        }
        s
    }

    pub fn parse(content: &[u8]) -> Result<Meta, String> {
        let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_string())?;
        let (mut sysid, mut oid, mut db, mut slot) = (None, None, None, None);
        let mut snapshot = SnapshotState::None;
        for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once('=').ok_or_else(|| format!("line \"{line}\" is not key=value"))?;
            let invalid = || format!("{k} has invalid value \"{v}\"");
            match k {
                "system_identifier" => sysid = Some(v.parse::<u64>().map_err(|_| invalid())?),
                "database_oid" => oid = Some(v.parse::<u32>().map_err(|_| invalid())?),
                "database" => db = Some(unescape(v)?),
                "slot" => slot = Some(unescape(v)?),
                "snapshot" => {
                    snapshot = match v {
                        "pending" => SnapshotState::Pending,
                        "done" => SnapshotState::Done,
                        _ => return Err(invalid()),
                    }
                }
                _ => {} // Keys from later versions.
            }
        }
        match (sysid, oid, db, slot) {
            (Some(system_id), Some(database_oid), Some(database), Some(slot)) => {
                Ok(Meta { id: Identity { system_id, database_oid, database, slot }, snapshot })
            }
            _ => Err("system_identifier, database_oid, database or slot is missing".into()),
        }
    }

    /// Why output of `self` cannot be continued from `server`, if it cannot.
    pub fn mismatch(&self, dir: &Path, server: &Identity, server_name: &str) -> Option<Message> {
        let (ours, theirs) = (&self.id, server);
        let d = dir.display();
        if ours.system_id != theirs.system_id {
            return Some(
                Message::new(format!(
                    "output directory \"{d}\" holds changes of database system {}, but the server is database system {} (server {server_name})",
                    ours.system_id, theirs.system_id
                ))
                .hint("Write each cluster's changes into its own directory."),
            );
        }
        if ours.database_oid != theirs.database_oid {
            return Some(
                Message::new(format!(
                    "output directory \"{d}\" holds changes of database \"{}\" (oid {}), but the connection is to database \"{}\" (oid {}) (server {server_name})",
                    escape(&ours.database),
                    ours.database_oid,
                    escape(&theirs.database),
                    theirs.database_oid
                ))
                .hint("Connect to that database, or write into another directory."),
            );
        }
        if ours.slot != theirs.slot {
            return Some(
                Message::new(format!(
                    "output directory \"{d}\" holds changes of replication slot \"{}\", not \"{}\"",
                    ours.slot, theirs.slot
                ))
                .hint(format!("Use -S {}, or write into another directory.", ours.slot)),
            );
        }
        None
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(META_FILE)
}

/// Reads the directory's metadata; `None` for a new directory, or one written by a version
/// without it. Removes our own temporary file left by a crash while replacing it.
pub fn read(dir: &Path) -> Result<Option<Result<Meta, String>>, FilesError> {
    let tmp = dir.join(format!("{META_FILE}{TEMP_SUFFIX}"));
    match fs::remove_file(&tmp) {
        Ok(()) => fsync_dir(dir).map_err(|err| FilesError::Io {
            path: dir.to_path_buf(),
            action: "fsync directory",
            err,
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(FilesError::Io { path: tmp, action: "remove leftover temporary file", err }),
    }
    let p = path(dir);
    match fs::read(&p) {
        Ok(content) => Ok(Some(Meta::parse(&content))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(FilesError::Io { path: p, action: "read", err }),
    }
}

/// Replaces the directory's metadata, durably, whatever `--no-sync` says: the next start
/// decides from it whether a slot may be dropped.
pub fn write(dir: &Path, meta: &Meta) -> Result<(), FilesError> {
    let p = path(dir);
    write_durably(&p, meta.render().as_bytes(), 0o600).map_err(|err| FilesError::Io {
        path: p,
        action: "write",
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            id: Identity {
                system_id: 7,
                database_oid: 5,
                database: "a\\b\nc=d é".into(),
                slot: "cdc".into(),
            },
            snapshot: SnapshotState::Pending,
        }
    }

    #[test]
    fn round_trip() {
        let m = meta();
        let text = m.render();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.contains("database=a\\\\b\\u{a}c=d é\n"), "{text}");
        assert_eq!(Meta::parse(text.as_bytes()).unwrap(), m);
        for s in [SnapshotState::None, SnapshotState::Done] {
            let m = Meta { snapshot: s, ..meta() };
            assert_eq!(Meta::parse(m.render().as_bytes()).unwrap(), m);
        }
        assert!(Meta::parse(b"system_identifier=1\n").is_err());
        assert!(Meta::parse(b"system_identifier=x\ndatabase_oid=1\ndatabase=a\nslot=b\n").is_err());
        assert!(Meta::parse(b"garbage\n").is_err());
        assert!(Meta::parse(b"system_identifier=1\ndatabase_oid=1\ndatabase=a\\q\nslot=b\n").is_err());
        assert!(Meta::parse(b"system_identifier=1\ndatabase_oid=1\ndatabase=a\nslot=b\nsnapshot=maybe\n")
            .is_err());
    }

    #[test]
    fn mismatches_name_both_sides() {
        let m = meta();
        let dir = Path::new("/out");
        assert_eq!(m.mismatch(dir, &m.id, "h:1"), None);
        let other = |f: &dyn Fn(&mut Identity)| {
            let mut id = m.id.clone();
            f(&mut id);
            m.mismatch(dir, &id, "h:1").unwrap().to_string()
        };
        let e = other(&|id| id.system_id = 8);
        assert!(e.contains("database system 7") && e.contains("database system 8"), "{e}");
        let e = other(&|id| id.database_oid = 6);
        assert!(e.contains("(oid 5)") && e.contains("(oid 6)") && e.contains("a\\\\b\\u{a}c"), "{e}");
        let mut id = m.id.clone();
        id.slot = "x".into();
        let e = m.mismatch(dir, &id, "h:1").unwrap();
        assert!(e.to_string().ends_with("\"cdc\", not \"x\""), "{e}");
        assert_eq!(e.hint.as_deref(), Some("Use -S cdc, or write into another directory."));
        // A renamed database is the same database.
        assert_eq!(m.mismatch(dir, &Identity { database: "new".into(), ..m.id.clone() }, "h:1"), None);
    }

    #[test]
    fn written_durably_and_leftovers_removed() {
        let d = std::env::temp_dir().join(format!("pgrl-meta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        assert_eq!(read(&d).unwrap(), None);
        write(&d, &meta()).unwrap();
        fs::write(d.join(format!("{META_FILE}{TEMP_SUFFIX}")), "torn").unwrap();
        assert_eq!(read(&d).unwrap(), Some(Ok(meta())));
        assert!(!d.join(format!("{META_FILE}{TEMP_SUFFIX}")).exists());
        fs::write(d.join(META_FILE), "slot=x\n").unwrap();
        assert!(matches!(read(&d).unwrap(), Some(Err(_))));
        fs::remove_dir_all(&d).unwrap();
    }
}
