//! Transactions the server streams before they commit (pgoutput `streaming`), held by the
//! writer thread until their Stream Commit (written out in commit order), Stream Abort
//! (discarded, whole or back to an aborted subtransaction), or Stream Prepare.
//!
//! A spool keeps the raw pgoutput messages, each framed with the LSN it arrived at, so a
//! transaction is decoded at its commit with the schema its own stream described (pgoutput
//! sends the relations a streamed transaction uses inside its stream). Together the spools
//! hold at most `--memory-limit` bytes in memory: past it the largest one moves to a file in
//! the spill directory and grows there. Spill files are scratch: never fsync'ed, removed when
//! done and at every start (an unconfirmed transaction is streamed again after a restart).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::lsn::Lsn;

const FRAME_HEADER: usize = 8 + 4;

/// Appends one message to a spool chunk: LSN, length, bytes.
pub fn push_frame(out: &mut Vec<u8>, lsn: Lsn, msg: &[u8]) {
    out.extend_from_slice(&lsn.0.to_be_bytes());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
}

struct Spool {
    mem: Vec<u8>,
    file: Option<(File, PathBuf)>,
    len: u64,
    /// Where each subtransaction's first change starts, in the order they appeared.
    subxacts: Vec<(u32, u64)>,
}

/// All open streamed transactions of one session.
pub struct Spools {
    dir: PathBuf,
    limit: u64,
    in_memory: u64,
    map: HashMap<u32, Spool>,
}

impl Spools {
    /// Spools spilling into `dir` (created when first needed) beyond `limit` bytes.
    pub fn new(dir: &Path, limit: u64) -> Spools {
        Spools { dir: dir.to_path_buf(), limit, in_memory: 0, map: HashMap::new() }
    }

    /// Empties the spill directory of an earlier run.
    pub fn clear_dir(dir: &Path) -> io::Result<()> {
        match fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    if e.file_name().to_string_lossy().ends_with(".spill") {
                        fs::remove_file(e.path())?;
                    }
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    #[cfg(test)]
    pub fn in_memory(&self) -> u64 {
        self.in_memory
    }

    pub fn open_transactions(&self) -> usize {
        self.map.len()
    }

    /// Whether the transaction's spool is on disk.
    #[cfg(test)]
    pub fn spilled(&self, xid: u32) -> bool {
        self.map.get(&xid).is_some_and(|s| s.file.is_some())
    }

    /// Adds a chunk of framed messages to `xid`'s spool. `subxacts` says where in `data` a
    /// change of a (sub)transaction starts; only each one's first is remembered.
    pub fn append(&mut self, xid: u32, data: &[u8], subxacts: &[(u32, usize)]) -> io::Result<()> {
        let spool = self.map.entry(xid).or_insert_with(|| Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            subxacts: Vec::new(),
        });
        for &(sub, off) in subxacts {
            if !spool.subxacts.iter().any(|&(s, _)| s == sub) {
                spool.subxacts.push((sub, spool.len + off as u64));
            }
        }
        match &mut spool.file {
            Some((f, _)) => {
                f.write_all(data)?;
                crate::metrics::get().spill_bytes.add(data.len() as u64);
            }
            None => {
                spool.mem.extend_from_slice(data);
                self.in_memory += data.len() as u64;
            }
        }
        spool.len += data.len() as u64;
        while self.in_memory > self.limit {
            self.spill_largest()?;
        }
        Ok(())
    }

    fn spill_largest(&mut self) -> io::Result<()> {
        let Some((&xid, _)) =
            self.map.iter().filter(|(_, s)| s.file.is_none()).max_by_key(|(_, s)| s.mem.len())
        else {
            return Ok(());
        };
        // Spilled rows are the database's data: readable by us only, like the output.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let path = self.dir.join(format!("{xid}.spill"));
        let mut f =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(&path)?;
        let spool = self.map.get_mut(&xid).expect("found above");
        f.write_all(&spool.mem)?;
        crate::metrics::get().spill_bytes.add(spool.mem.len() as u64);
        self.in_memory -= spool.mem.len() as u64;
        log::debug!(
            "spilled {} bytes of streamed transaction {xid} to \"{}\"",
            spool.mem.len(),
            path.display()
        );
        spool.mem = Vec::new();
        spool.file = Some((f, path));
        Ok(())
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction, whose
    /// changes, and those of its own subtransactions, are all the spool holds after its first.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> io::Result<()> {
        if xid == subxid {
            if let Some(s) = self.map.remove(&xid) {
                self.in_memory -= s.mem.len() as u64;
                if let Some((f, path)) = s.file {
                    drop(f);
                    fs::remove_file(&path)?;
                }
            }
            return Ok(());
        }
        let Some(spool) = self.map.get_mut(&xid) else { return Ok(()) };
        let Some(i) = spool.subxacts.iter().position(|&(s, _)| s == subxid) else { return Ok(()) };
        let cut = spool.subxacts[i].1;
        spool.subxacts.truncate(i);
        match &mut spool.file {
            Some((f, _)) => {
                f.set_len(cut)?;
                f.seek(SeekFrom::Start(cut))?;
            }
            None => {
                self.in_memory -= spool.mem.len() as u64 - cut;
                spool.mem.truncate(cut as usize);
            }
        }
        spool.len = cut;
        Ok(())
    }

    /// Removes `xid`'s spool for replay (an empty one if nothing was spooled).
    pub fn take(&mut self, xid: u32) -> io::Result<SpoolReader> {
        let Some(s) = self.map.remove(&xid) else {
            return Ok(SpoolReader { source: Source::Mem(Vec::new(), 0), path: None });
        };
        self.in_memory -= s.mem.len() as u64;
        Ok(match s.file {
            Some((mut f, path)) => {
                f.seek(SeekFrom::Start(0))?;
                SpoolReader { source: Source::File(BufReader::with_capacity(1 << 20, f)), path: Some(path) }
            }
            None => SpoolReader { source: Source::Mem(s.mem, 0), path: None },
        })
    }
}

impl Drop for Spools {
    fn drop(&mut self) {
        for (_, s) in self.map.drain() {
            if let Some((f, path)) = s.file {
                drop(f);
                let _ = fs::remove_file(path);
            }
        }
    }
}

enum Source {
    Mem(Vec<u8>, usize),
    File(BufReader<File>),
}

/// A spool being replayed; its spill file is removed when dropped.
pub struct SpoolReader {
    source: Source,
    path: Option<PathBuf>,
}

impl SpoolReader {
    /// The next message into `buf`, with its LSN; `None` at the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Lsn>> {
        buf.clear();
        let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "spool frame is truncated");
        match &mut self.source {
            Source::Mem(m, pos) => {
                if *pos == m.len() {
                    return Ok(None);
                }
                let h = m.get(*pos..*pos + FRAME_HEADER).ok_or_else(corrupt)?;
                let lsn = Lsn(u64::from_be_bytes(h[..8].try_into().expect("8 bytes")));
                let len = u32::from_be_bytes(h[8..].try_into().expect("4 bytes")) as usize;
                let body = m.get(*pos + FRAME_HEADER..*pos + FRAME_HEADER + len).ok_or_else(corrupt)?;
                buf.extend_from_slice(body);
                *pos += FRAME_HEADER + len;
                Ok(Some(lsn))
            }
            Source::File(r) => {
                let mut h = [0u8; FRAME_HEADER];
                match r.read_exact(&mut h[..1]) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(e),
                }
                r.read_exact(&mut h[1..]).map_err(|_| corrupt())?;
                let lsn = Lsn(u64::from_be_bytes(h[..8].try_into().expect("8 bytes")));
                let len = u32::from_be_bytes(h[8..].try_into().expect("4 bytes")) as usize;
                buf.resize(len, 0);
                r.read_exact(buf).map_err(|_| corrupt())?;
                Ok(Some(lsn))
            }
        }
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(label: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pgrl-spool-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn chunk(msgs: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (l, m) in msgs {
            push_frame(&mut v, Lsn(*l), m);
        }
        v
    }

    fn drain(mut r: SpoolReader) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(l) = r.next_into(&mut buf).unwrap() {
            out.push((l.0, buf.clone()));
        }
        out
    }

    #[test]
    fn keeps_order_in_memory_and_on_disk() {
        let dir = tmp("order");
        let mut s = Spools::new(&dir, 100);
        s.append(1, &chunk(&[(1, b"a"), (2, b"bb")]), &[(1, 0)]).unwrap();
        s.append(2, &chunk(&[(3, b"other")]), &[]).unwrap();
        assert!(!s.spilled(1));
        // Past the limit the largest spool moves to disk and the rest stays in memory.
        s.append(1, &chunk(&[(4, &[7u8; 120])]), &[]).unwrap();
        assert!(s.spilled(1) && !s.spilled(2));
        assert!(s.in_memory() <= 100);
        s.append(1, &chunk(&[(5, b"e")]), &[]).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let r = s.take(1).unwrap();
        assert_eq!(
            drain(r),
            vec![(1, b"a".to_vec()), (2, b"bb".to_vec()), (4, vec![7u8; 120]), (5, b"e".to_vec())]
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "spill file removed after replay");
        assert_eq!(drain(s.take(2).unwrap()), vec![(3, b"other".to_vec())]);
        assert_eq!(drain(s.take(99).unwrap()), vec![]);
        assert_eq!((s.in_memory(), s.open_transactions()), (0, 0));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn subtransaction_abort_truncates() {
        for limit in [1 << 20, 1] {
            let dir = tmp(&format!("sub{limit}"));
            let mut s = Spools::new(&dir, limit);
            let c1 = chunk(&[(1, b"top1"), (2, b"sub5")]);
            let off = chunk(&[(1, b"top1")]).len();
            s.append(10, &c1, &[(10, 0), (5, off)]).unwrap();
            let c2 = chunk(&[(3, b"sub6"), (4, b"sub5b")]);
            s.append(10, &c2, &[(6, 0), (5, chunk(&[(3, b"sub6")]).len())]).unwrap();
            // Aborting 6 keeps 5's first change and drops everything from 6's first on.
            s.abort(10, 6).unwrap();
            s.append(10, &chunk(&[(5, b"top2")]), &[(10, 0)]).unwrap();
            s.abort(10, 99).unwrap(); // unknown subtransaction: nothing to drop
            assert_eq!(
                drain(s.take(10).unwrap()),
                vec![(1, b"top1".to_vec()), (2, b"sub5".to_vec()), (5, b"top2".to_vec())],
                "limit {limit}"
            );
            s.append(11, &chunk(&[(1, b"x")]), &[(11, 0)]).unwrap();
            s.abort(11, 11).unwrap();
            assert_eq!(s.open_transactions(), 0);
            assert_eq!(s.in_memory(), 0);
            drop(s);
            assert!(fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) == 0);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn clear_dir_removes_only_spill_files() {
        let dir = tmp("clear");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1.spill"), "x").unwrap();
        fs::write(dir.join("keep"), "x").unwrap();
        Spools::clear_dir(&dir).unwrap();
        assert!(!dir.join("1.spill").exists() && dir.join("keep").exists());
        Spools::clear_dir(&dir.join("missing")).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut r = SpoolReader { source: Source::Mem(vec![0, 0, 0], 0), path: None };
        assert!(r.next_into(&mut Vec::new()).is_err());
    }
}
