//! Retention of pgrecvlogical's output: `--retain-size` and `--retain-age` remove the oldest
//! complete files, never the `.partial` one or the newest, and never a file holding anything
//! past the position a consumer registered.
//!
//! A consumer registers by keeping a file `.consumer.<name>` in the directory, replaced
//! crash-safely, holding `position=<LSN>`: everything up to that position is done with (for
//! pgapplylogical: committed on its target). A file is done with once the next file starts at
//! or below every registered position, since a file starts where the previous one's last unit
//! ended. Files are removed oldest first and only as a prefix, so what is left is always one
//! unbroken stretch of the stream, and a consumer that finds its position before the first
//! file knows that something was removed (pgapplylogical stops with an error then).
//!
//! A registration that cannot be read holds everything (its consumer is protected, with a
//! warning), rather than nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::durable::{fsync_dir, write_durably};
use crate::lsn::Lsn;

use super::files::parse_file_name;

pub const CONSUMER_PREFIX: &str = ".consumer.";
/// Where the output left after retention begins (`position=<LSN>`), written durably before
/// anything is removed: a consumer below it, also a new one, knows it cannot catch up from
/// this directory.
pub const REMOVED_FILE: &str = ".pgrecvlogical.removed";

/// The retention rule; a file goes when either limit says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    /// Keep the output files (all of them, the partial one too) under this many bytes.
    pub max_size: Option<u64>,
    /// Remove complete files last changed longer ago than this.
    pub max_age: Option<Duration>,
}

impl Rule {
    pub fn is_set(&self) -> bool {
        self.max_size.is_some() || self.max_age.is_some()
    }
}

/// An output file as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub start: Lsn,
    pub len: u64,
    pub age: Duration,
    pub partial: bool,
}

/// Which files to remove (a prefix of `files`, which are in stream order).
pub fn select(files: &[FileInfo], consumers: &[Lsn], rule: Rule) -> Vec<String> {
    let mut total: u64 = files.iter().map(|f| f.len).sum();
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        // The newest file and the partial one are where the writer is or resumes.
        let Some(next) = files.get(i + 1) else { break };
        if f.partial {
            break;
        }
        if consumers.iter().any(|&c| c < next.start) {
            break;
        }
        let too_big = rule.max_size.is_some_and(|m| total > m);
        let too_old = rule.max_age.is_some_and(|m| f.age > m);
        if !too_big && !too_old {
            break;
        }
        total -= f.len;
        out.push(f.name.clone());
    }
    out
}

fn consumer_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{CONSUMER_PREFIX}{name}"))
}

/// Whether `name` can name a consumer: one path component, plain characters.
pub fn valid_consumer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Registers (or moves) a consumer's position, crash-safely.
pub fn register(dir: &Path, name: &str, position: Lsn) -> io::Result<()> {
    write_durably(&consumer_path(dir, name), format!("position={position}\n").as_bytes(), 0o644)
}

/// The registered positions; an unreadable registration counts as 0/0 (holds everything).
pub fn consumers(dir: &Path) -> io::Result<Vec<(String, Lsn)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().and_then(|n| n.strip_prefix(CONSUMER_PREFIX)) else { continue };
        if !valid_consumer_name(name) {
            // A temporary file of a registration being replaced, or something else.
            continue;
        }
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        let pos = text.trim().strip_prefix("position=").and_then(|p| p.parse().ok());
        if pos.is_none() {
            log::warn!(
                "consumer registration \"{}\" cannot be read; it holds every file until it is fixed or removed",
                entry.path().display()
            );
        }
        out.push((name.to_owned(), pos.unwrap_or(Lsn(0))));
    }
    Ok(out)
}

/// Where the output begins after retention removed files, `None` if it never did.
pub fn removed_up_to(dir: &Path) -> io::Result<Option<Lsn>> {
    match fs::read_to_string(dir.join(REMOVED_FILE)) {
        Ok(text) => {
            text.trim().strip_prefix("position=").and_then(|p| p.parse().ok()).map(Some).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid {REMOVED_FILE}: \"{}\"", text.trim()),
                )
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies `rule` to the directory: removes what [`select`] picks, then fsyncs the directory.
pub fn enforce(dir: &Path, rule: Rule) -> io::Result<Vec<String>> {
    let now = SystemTime::now();
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((start, _, partial)) = parse_file_name(name) else { continue };
        let meta = entry.metadata()?;
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
        files.push(FileInfo { name: name.to_owned(), start, len: meta.len(), age, partial });
    }
    files.sort_by_key(|f| f.start);
    let positions: Vec<Lsn> = consumers(dir)?.into_iter().map(|(_, p)| p).collect();
    let gone = select(&files, &positions, rule);
    if let Some(kept) = files.get(gone.len()).filter(|_| !gone.is_empty()) {
        write_durably(&dir.join(REMOVED_FILE), format!("position={}\n", kept.start).as_bytes(), 0o644)?;
    }
    for name in &gone {
        fs::remove_file(dir.join(name))?;
    }
    if !gone.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(start: u64, len: u64, age_s: u64, partial: bool) -> FileInfo {
        FileInfo {
            name: format!("{start:016X}.jsonl{}", if partial { ".partial" } else { "" }),
            start: Lsn(start),
            len,
            age: Duration::from_secs(age_s),
            partial,
        }
    }

    fn names(v: &[String]) -> Vec<u64> {
        v.iter().map(|n| u64::from_str_radix(&n[..16], 16).unwrap()).collect()
    }

    #[test]
    fn size_and_age_remove_the_oldest_complete_files() {
        let files = [
            f(0x10, 100, 50, false),
            f(0x20, 100, 40, false),
            f(0x30, 100, 30, false),
            f(0x40, 100, 0, true),
        ];
        let size = |m| Rule { max_size: Some(m), max_age: None };
        assert_eq!(names(&select(&files, &[], size(250))), vec![0x10, 0x20]);
        assert_eq!(names(&select(&files, &[], size(400))), Vec::<u64>::new());
        // Never the partial file, whatever the limit.
        assert_eq!(names(&select(&files, &[], size(0))), vec![0x10, 0x20, 0x30]);
        let age = Rule { max_size: None, max_age: Some(Duration::from_secs(35)) };
        assert_eq!(names(&select(&files, &[], age)), vec![0x10, 0x20]);
        assert!(select(&files, &[], Rule::default()).is_empty());
        // The newest file, complete (nothing written since its rotation), stays too.
        assert_eq!(names(&select(&files[..3], &[], size(0))), vec![0x10, 0x20]);
    }

    #[test]
    fn a_registered_position_holds_what_is_after_it() {
        let files = [
            f(0x10, 100, 50, false),
            f(0x20, 100, 40, false),
            f(0x30, 100, 30, false),
            f(0x40, 100, 0, true),
        ];
        let all = Rule { max_size: Some(0), max_age: None };
        // Done up to 0x20: the first file (units end at or below 0x20) may go, not the second.
        assert_eq!(names(&select(&files, &[Lsn(0x20)], all)), vec![0x10]);
        assert_eq!(names(&select(&files, &[Lsn(0x2F)], all)), vec![0x10]);
        assert_eq!(names(&select(&files, &[Lsn(0x30), Lsn(0x1F)], all)), Vec::<u64>::new());
        assert_eq!(names(&select(&files, &[Lsn(0x40)], all)), vec![0x10, 0x20, 0x30]);
        // An old file after a held one stays: only a prefix goes.
        let files = [f(0x10, 1, 0, false), f(0x20, 1, 99, false), f(0x30, 1, 0, true)];
        let age = Rule { max_size: None, max_age: Some(Duration::from_secs(10)) };
        assert!(select(&files, &[], age).is_empty());
    }

    #[test]
    fn registrations_round_trip_and_bad_ones_hold_everything() {
        let d = std::env::temp_dir().join(format!("pgrl-retention-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        register(&d, "app1", Lsn(0x1234)).unwrap();
        register(&d, "app1", Lsn(0x5678)).unwrap();
        fs::write(d.join(".consumer.broken"), "garbage").unwrap();
        let mut c = consumers(&d).unwrap();
        c.sort();
        assert_eq!(c, vec![("app1".into(), Lsn(0x5678)), ("broken".into(), Lsn(0))]);
        for (name, content) in [
            ("0000000000000010.jsonl", "a\n"),
            ("0000000000000020.jsonl", "b\n"),
            ("0000000000000030.jsonl.partial", ""),
        ] {
            fs::write(d.join(name), content).unwrap();
        }
        let all = Rule { max_size: Some(0), max_age: None };
        assert!(enforce(&d, all).unwrap().is_empty(), "the broken registration holds everything");
        fs::remove_file(d.join(".consumer.broken")).unwrap();
        assert_eq!(removed_up_to(&d).unwrap(), None);
        assert_eq!(enforce(&d, all).unwrap(), vec!["0000000000000010.jsonl", "0000000000000020.jsonl"]);
        assert_eq!(removed_up_to(&d).unwrap(), Some(Lsn(0x30)));
        assert!(d.join("0000000000000030.jsonl.partial").exists());
        assert!(
            !valid_consumer_name("../x") && !valid_consumer_name("") && valid_consumer_name("pgapplylogical")
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
