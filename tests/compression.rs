//! `-Z/--compress` end to end, on PostgreSQL 15 and 18: every completed segment we write
//! compressed decompresses (with gzip, lz4 and zstd's own tools) to the bytes pg_receivewal
//! writes uncompressed; pg_receivewal and pgreceivewal resume each other's compressed
//! archives; a kill -9 loses nothing reported flushed; pgrestorewal serves what was written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{
    pg_tool, pgreceivewal, pgrestorewal, send_signal, wait_for_exit, wait_until, Cluster, KillOnDrop,
    PgVersion, TestDir,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const SEG: usize = 1 << 20;

fn ours(c: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd
}

fn theirs(c: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    fs::create_dir_all(dir).unwrap();
    let mut cmd = pg_tool(c.version(), "pg_receivewal");
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd
}

fn run_ok(cmd: &mut Command, log: &Path) -> String {
    cmd.stdout(Stdio::null()).stderr(fs::File::create(log).unwrap());
    let mut child = KillOnDrop::spawn(cmd);
    let status = wait_for_exit(&mut child, RUN_TIMEOUT).unwrap_or_else(|| panic!("{cmd:?} did not finish"));
    let out = fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{cmd:?} failed ({status}):\n{out}");
    out
}

fn wal_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn ext(method: &str) -> &'static str {
    match method {
        "gzip" => ".gz",
        "lz4" => ".lz4",
        "zstd" => ".zst",
        _ => panic!("{method}"),
    }
}

/// The file decompressed by its format's own command-line tool (`gzip -dc`, `lz4 -dc`,
/// `zstd -dc`): what a user or pg_receivewal's archive scripts would read.
fn decompress_with_tool(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.contains(".gz") {
        "gzip"
    } else if name.contains(".lz4") {
        "lz4"
    } else {
        "zstd"
    };
    let out = Command::new(tool).args(["-dc", "-q"]).arg(path).output().unwrap();
    assert!(out.status.success(), "{tool} -dc {name}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn endpos_before_end(c: &Cluster) -> String {
    c.psql("SELECT pg_current_wal_lsn() - 1")
}

/// Completed segments: `reference` (uncompressed, pg_receivewal's) and `dir` (compressed
/// with `method`) hold the same segments, byte for byte once decompressed.
fn assert_same_completed(reference: &Path, dir: &Path, method: &str) -> usize {
    let done = |d: &Path| -> Vec<String> {
        wal_files(d)
            .into_iter()
            .filter(|n| !n.ends_with(".partial") && !n.ends_with(".history"))
            .map(|n| n[..24].to_string())
            .collect()
    };
    let (a, b) = (done(reference), done(dir));
    assert_eq!(a, b, "completed segments differ: reference {a:?}, compressed {b:?}");
    assert!(a.len() >= 2, "several segments: {a:?}");
    for name in &a {
        let want = fs::read(reference.join(name)).unwrap();
        let got = decompress_with_tool(&dir.join(format!("{name}{}", ext(method))));
        assert!(got == want, "{name}{} does not decompress to the server's WAL", ext(method));
    }
    a.len()
}

/// The one compressed partial in `dir`, decompressed.
fn the_partial(dir: &Path, method: &str) -> (String, Vec<u8>) {
    let partials: Vec<String> = wal_files(dir).into_iter().filter(|n| n.ends_with(".partial")).collect();
    assert_eq!(partials.len(), 1, "exactly one .partial: {:?}", wal_files(dir));
    let p = &partials[0];
    assert!(p.ends_with(&format!("{}.partial", ext(method))), "{p}");
    (p[..24].to_string(), decompress_with_tool(&dir.join(p)))
}

/// For each method: pg_receivewal (uncompressed) and pgreceivewal -Z on the same WAL range,
/// each from its own slot; then pgrestorewal serves our compressed segments and partial.
fn compressed_archive_matches_pg_receivewal(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    let t = TestDir::new("zcmp");
    'attempt: for attempt in 1..=5 {
        let slots = ["theirs", "gzip", "lz4", "zstd"].map(|s| format!("{s}{attempt}"));
        for s in &slots {
            c.create_physical_slot(s);
        }
        c.generate_wal(4);
        c.switch_wal();
        c.generate_wal(1);
        let before = c.current_lsn();
        let endpos = endpos_before_end(&c);
        let reference = t.join(format!("theirs{attempt}"));
        run_ok(&mut theirs(&c, &reference, &["-S", &slots[0], "-n", "-E", &endpos]), &t.join("theirs.log"));
        let mut dirs = vec![];
        for (i, method) in ["gzip", "lz4", "zstd"].into_iter().enumerate() {
            let d = t.join(format!("{method}{attempt}"));
            let spec = if method == "gzip" { "gzip:level=5".to_string() } else { method.to_string() };
            run_ok(
                &mut ours(&c, &d, &["-S", &slots[i + 1], "-n", "-E", &endpos, "-Z", &spec]),
                &t.join("ours.log"),
            );
            dirs.push((method, d));
        }
        if c.current_lsn() != before {
            eprintln!("attempt {attempt}: the server wrote WAL during the runs; trying again");
            continue 'attempt;
        }
        let (their_partial_name, _) = {
            let p: Vec<String> =
                wal_files(&reference).into_iter().filter(|n| n.ends_with(".partial")).collect();
            assert_eq!(p.len(), 1);
            (p[0][..24].to_string(), ())
        };
        let their_partial = fs::read(reference.join(format!("{their_partial_name}.partial"))).unwrap();
        for (method, d) in &dirs {
            let n = assert_same_completed(&reference, d, method);
            let (name, content) = the_partial(d, method);
            assert_eq!(name, their_partial_name);
            assert!(
                !content.is_empty() && content.len() < SEG,
                "{method}: partial holds {} bytes",
                content.len()
            );
            assert!(
                their_partial[..content.len()] == content[..],
                "{method}: partial differs from pg_receivewal's"
            );
            // Not padded: a compressed partial is only as large as what it holds.
            let size = fs::metadata(d.join(format!("{name}{}.partial", ext(method)))).unwrap().len();
            assert!(size < SEG as u64 / 2, "{method}: compressed partial is {size} bytes");

            // pgrestorewal serves both, decompressed: a segment exactly, the partial padded.
            let seg = wal_files(&reference)[n - 1][..24].to_string();
            let dest = t.join(format!("restored-{method}"));
            let out = pgrestorewal().arg("-D").arg(d).arg(&seg).arg(&dest).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(fs::read(&dest).unwrap() == fs::read(reference.join(&seg)).unwrap(), "{method}: {seg}");
            let out = pgrestorewal().arg("-D").arg(d).arg(&name).arg(&dest).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let served = fs::read(&dest).unwrap();
            assert_eq!(served.len(), SEG, "{method}: the partial is served padded to the segment size");
            assert!(
                served[..content.len()] == content[..] && served[content.len()..].iter().all(|&b| b == 0)
            );
        }
        return;
    }
    panic!("the server never stayed idle long enough to compare the archives");
}

#[test]
fn compressed_archive_matches_pg_receivewal_15() {
    compressed_archive_matches_pg_receivewal(PgVersion::V15);
}

#[test]
fn compressed_archive_matches_pg_receivewal_18() {
    compressed_archive_matches_pg_receivewal(PgVersion::V18);
}

/// pgreceivewal, then pg_receivewal, then pgreceivewal again on one compressed archive and
/// slot: each resumes the other's `.gz`/`.lz4` files; the result equals an uncompressed
/// pg_receivewal run on the whole range, with no gap.
fn tools_resume_each_other(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    let t = TestDir::new("zresume");
    for method in ["gzip", "lz4"] {
        if !pg_receivewal_supports(&c, method) {
            assert_ne!(version, PgVersion::V15, "Debian's pg_receivewal 15 is built with {method}");
            // The embedded PostgreSQL 18 build has no LZ4; Debian's 15 has both.
            eprintln!("{version}: this pg_receivewal was built without {method}; skipping its resume checks");
            continue;
        }
        let (slot, refslot) = (format!("a{method}"), format!("ref{method}"));
        c.create_physical_slot(&slot);
        c.create_physical_slot(&refslot);
        let d = t.join(method);
        let log = t.join(format!("{method}.log"));
        c.generate_wal(2);
        let e1 = endpos_before_end(&c);
        run_ok(&mut ours(&c, &d, &["-S", &slot, "-n", "-E", &e1, "-Z", method]), &log);
        the_partial(&d, method);
        c.generate_wal(3);
        let e2 = endpos_before_end(&c);
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        run_ok(&mut theirs(&c, &d, &["-S", &slot, "-n", "-E", &e2, "--compress", method]), &log);
        the_partial(&d, method);
        c.generate_wal(3);
        let e3 = endpos_before_end(&c);
        run_ok(&mut ours(&c, &d, &["-S", &slot, "-n", "-E", &e3, "-Z", method]), &log);
        let reference = t.join(format!("ref{method}"));
        run_ok(&mut theirs(&c, &reference, &["-S", &refslot, "-n", "-E", &e3]), &log);
        let n = assert_same_completed(&reference, &d, method);
        assert!(n >= 7, "{method}: {n} segments");
        let (name, content) = the_partial(&d, method);
        let their = fs::read(reference.join(format!("{name}.partial"))).unwrap();
        assert!(their[..content.len()] == content[..], "{method}: partial");
    }
}

/// Whether this server version's pg_receivewal was built with `method` (it says so before
/// connecting anywhere).
fn pg_receivewal_supports(c: &Cluster, method: &str) -> bool {
    let out = pg_tool(c.version(), "pg_receivewal")
        .args(["-D", "/nonexistent", "-h", "/nonexistent", "-n", "--compress", method])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stderr).contains("does not support compression")
}

#[test]
fn tools_resume_each_other_15() {
    tools_resume_each_other(PgVersion::V15);
}

#[test]
fn tools_resume_each_other_18() {
    tools_resume_each_other(PgVersion::V18);
}

/// The WAL position a segment file name plus an offset stands for (1 MiB segments).
fn lsn_of(name: &str, offset: u64) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (log << 32) + seg * SEG as u64 + offset
}

fn parse_lsn(s: &str) -> u64 {
    let (a, b) = s.split_once('/').unwrap();
    (u64::from_str_radix(a, 16).unwrap() << 32) + u64::from_str_radix(b, 16).unwrap()
}

/// kill -9 while streaming compressed with --synchronous: the `.partial` on disk decodes to at
/// least what the server was told is flushed (an unfinished stream, read up to its last flush
/// point), and a restart continues with no gap and the server's exact WAL.
fn kill9_with_compression(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    let t = TestDir::new("zkill");
    c.create_physical_slot("k");
    c.create_physical_slot("ref");
    let d = t.join("archive");
    let log = t.join("ours.log");
    for (round, method) in ["zstd", "gzip", "lz4"].into_iter().enumerate() {
        let mut child = KillOnDrop::spawn(
            ours(&c, &d, &["-S", "k", "--synchronous", "-Z", method]).stderr(fs::File::create(&log).unwrap()),
        );
        c.generate_wal(2 + round as u32);
        c.psql("CREATE TABLE IF NOT EXISTS k (v int); INSERT INTO k VALUES (1)");
        let target = c.current_lsn();
        wait_until(Duration::from_secs(60), "pgreceivewal to flush the WAL", || {
            c.psql(&format!(
                "SELECT flush_lsn >= '{target}' FROM pg_stat_replication WHERE application_name = 'pgreceivewal'"
            )) == "t"
        });
        let flushed = parse_lsn(
            &c.psql("SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'pgreceivewal'"),
        );
        send_signal(child.id(), "KILL");
        child.wait().unwrap();
        // Reported flushed is on disk: in a completed segment, or in the partial, whose stream
        // was never ended (read by our own decoder: the tools refuse an unfinished stream).
        let partials: Vec<String> = wal_files(&d).into_iter().filter(|n| n.ends_with(".partial")).collect();
        assert_eq!(partials.len(), 1, "{:?}", wal_files(&d));
        let p = &partials[0];
        let held = decoded_len(&d.join(p), method);
        assert!(
            lsn_of(p, held) >= flushed,
            "{method}: reported flushed {flushed:X}, but {p} holds only up to {:X}",
            lsn_of(p, held)
        );
    }
    let end = endpos_before_end(&c);
    run_ok(&mut ours(&c, &d, &["-S", "k", "-n", "-E", &end, "-Z", "lz4"]), &log);
    let reference = t.join("ref");
    run_ok(&mut theirs(&c, &reference, &["-S", "ref", "-n", "-E", &end]), &t.join("ref.log"));
    // Segments completed in earlier rounds are in their round's format; each decompresses
    // to the server's WAL, and none is missing.
    let done: Vec<String> = wal_files(&reference).into_iter().filter(|n| !n.ends_with(".partial")).collect();
    assert!(done.len() >= 9, "{done:?}");
    for name in &done {
        let forms: Vec<PathBuf> = [".gz", ".lz4", ".zst"]
            .iter()
            .map(|e| d.join(format!("{name}{e}")))
            .filter(|p| p.exists())
            .collect();
        assert_eq!(forms.len(), 1, "{name}: {:?}", wal_files(&d));
        assert!(decompress_with_tool(&forms[0]) == fs::read(reference.join(name)).unwrap(), "{name} differs");
    }
    let partials: Vec<String> = wal_files(&d).into_iter().filter(|n| n.ends_with(".partial")).collect();
    assert_eq!(
        partials,
        vec![format!("{}.lz4.partial", wal_files(&reference).last().unwrap()[..24].to_owned())]
    );
}

/// How many bytes a compressed file decodes to, with the archiver's own decoder (which reads
/// an unfinished stream up to its last complete block, as a resume or a restore does).
fn decoded_len(path: &Path, method: &str) -> u64 {
    let m = pgreceivewal::compression::parse(method).unwrap().method;
    let f = fs::File::open(path).unwrap();
    pgreceivewal::physical::compress::decode(m, f, u64::MAX - 1, &mut |_| Ok(())).unwrap().len
}

#[test]
fn kill9_with_compression_15() {
    kill9_with_compression(PgVersion::V15);
}

#[test]
fn kill9_with_compression_18() {
    kill9_with_compression(PgVersion::V18);
}
