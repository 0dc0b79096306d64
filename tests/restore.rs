//! pgrestorewal as PostgreSQL runs it: a command with `%f %p`, judged by its exit status and
//! stderr alone; and PostgreSQL's own reading of those exit statuses, on real servers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::{
    pg_tool, pgrestorewal, wait_for_exit, wait_until, Cluster, KillOnDrop, Mode, PgVersion, TestDir,
};

const MB: usize = 1 << 20;

/// An archive and a data directory's `pg_wal` in the test's directory.
struct Dirs {
    dir: TestDir,
    archive: PathBuf,
    pg_wal: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let dir = TestDir::for_test();
        let archive = dir.mkdir("archive");
        let pg_wal = dir.mkdir("data/pg_wal");
        Dirs { dir, archive, pg_wal }
    }

    /// A segment file that opens with the long page header its name calls for (pgrestorewal
    /// checks it), tagged at byte TAG_AT.
    fn put(&self, name: &str, size: usize, tag: u8) {
        let mut data = vec![0u8; size];
        data[..40].copy_from_slice(&long_header(name, size as u64, SYSID));
        data[TAG_AT] = tag;
        fs::write(self.archive.join(name), data).unwrap();
    }

    /// Runs as PostgreSQL does: from the data directory, `%p` relative to it.
    fn restore(&self, extra: &[&str], name: &str, dest: &str) -> Output {
        pgrestorewal()
            .current_dir(self.dir.join("data"))
            .args(extra)
            .arg("-D")
            .arg(&self.archive)
            .args([name, dest])
            .output()
            .unwrap()
    }
}

fn run(args: &[&str]) -> Output {
    pgrestorewal().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TAG_AT: usize = 100;
const SYSID: u64 = 7;

/// The long page header that opens segment `name` (`TTTTTTTTLLLLLLLLSSSSSSSS`, `.partial` or
/// not) of a cluster with `sysid` and `seg_size`-byte segments, written on its own timeline.
pub fn long_header(name: &str, seg_size: u64, sysid: u64) -> [u8; 40] {
    let hex = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).unwrap();
    let (tli, log, seg) = (hex(0..8), hex(8..16), hex(16..24));
    let mut h = [0u8; 40];
    h[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
    h[2..4].copy_from_slice(&2u16.to_le_bytes());
    h[4..8].copy_from_slice(&tli.to_le_bytes());
    let addr = (u64::from(log) << 32) + u64::from(seg) * seg_size;
    h[8..16].copy_from_slice(&addr.to_le_bytes());
    h[24..32].copy_from_slice(&sysid.to_le_bytes());
    h[32..36].copy_from_slice(&(seg_size as u32).to_le_bytes());
    h[36..40].copy_from_slice(&8192u32.to_le_bytes());
    h
}

fn first_byte(p: &Path) -> u8 {
    fs::read(p).unwrap()[TAG_AT]
}

#[test]
fn restores_segment_quietly() {
    let d = Dirs::new();
    d.put("000000010000000000000003", MB, 3);
    let o = d.restore(&[], "000000010000000000000003", "pg_wal/RECOVERYXLOG");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert!(o.stdout.is_empty());
    assert_eq!(first_byte(&d.pg_wal.join("RECOVERYXLOG")), 3);
}

#[test]
fn verbose_names_the_source() {
    let d = Dirs::new();
    d.put("000000010000000000000004.partial", MB, 4);
    let o = d.restore(&["-v"], "000000010000000000000004", "pg_wal/RECOVERYXLOG");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!(
        "pgrestorewal: restored \"000000010000000000000004\" from \"{}\"",
        d.archive.join("000000010000000000000004.partial").display()
    );
    assert!(stderr(&o).starts_with(&want), "{}", stderr(&o));
    assert_eq!(first_byte(&d.pg_wal.join("RECOVERYXLOG")), 4);
}

#[test]
fn missing_file_exits_1_without_a_word() {
    let d = Dirs::new();
    d.put("000000010000000000000003", MB, 3);
    for name in ["000000010000000000000004", "00000002.history"] {
        let o = d.restore(&[], name, "pg_wal/RECOVERYXLOG");
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert_eq!(stderr(&o), "", "{name}");
        assert!(!d.pg_wal.join("RECOVERYXLOG").exists());
    }
}

#[test]
fn refusals_exit_255() {
    let d = Dirs::new();
    d.put("000000010000000000000005.partial", MB, 5);
    d.put("000000010000000000000007", MB, 7);
    let o = d.restore(&[], "000000010000000000000005", "pg_wal/RECOVERYXLOG");
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        stderr(&o),
        "pgrestorewal: error: refusing to serve \"000000010000000000000005.partial\": later WAL \
         \"000000010000000000000007\" exists on the same timeline, so this segment is incomplete in the \
         archive\npgrestorewal: hint: Check the archive for missing segments.\n"
    );
    // The hole between them is no "not found" either.
    let o = d.restore(&[], "000000010000000000000006", "pg_wal/RECOVERYXLOG");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("refusing to report \"000000010000000000000006\" as missing"),
        "{}",
        stderr(&o)
    );
    assert!(!d.pg_wal.join("RECOVERYXLOG").exists());
}

#[test]
fn leftover_partial_is_a_warning() {
    let d = Dirs::new();
    d.put("000000010000000000000005", MB, 50);
    d.put("000000010000000000000005.partial", MB, 5);
    let o = d.restore(&[], "000000010000000000000005", "pg_wal/RECOVERYXLOG");
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).starts_with("pgrestorewal: warning: served complete segment"), "{}", stderr(&o));
    assert_eq!(first_byte(&d.pg_wal.join("RECOVERYXLOG")), 50);
}

#[test]
fn wrong_size_exits_255() {
    let d = Dirs::new();
    d.put("000000010000000000000001", MB, 1);
    d.put("000000010000000000000002", MB - 8192, 2);
    let o = d.restore(&[], "000000010000000000000002", "pg_wal/RECOVERYXLOG");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("it is 1040384 bytes but the archive's segment size is 1048576 bytes"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn misconfiguration_exits_255() {
    let d = Dirs::new();
    // A mistyped archive directory must not look like the end of the archive.
    let o = run(&["-D", d.dir.join("nope").to_str().unwrap(), "00000002.history", "x"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).starts_with("pgrestorewal: error: could not open archive directory"),
        "{}",
        stderr(&o)
    );
    for args in
        [&["000000010000000000000001", "x"][..], &["-D", "/a", "f"], &["--bogus", "-D", "/a", "f", "p"]]
    {
        let o = run(args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        assert!(
            stderr(&o).ends_with("Try \"pgrestorewal --help\" for more information.\n"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn help_and_version() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8(o.stdout).unwrap();
    assert!(help.contains("restore_command = 'pgrestorewal -D /path/to/archive %f %p'"), "{help}");
    assert!(help.contains("Exit status:"));
    let o = run(&["-V"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8(o.stdout).unwrap().starts_with("pgrestorewal (pgreceivewal) "));
}

/// An archive of 100 000 segments of 16 MiB (1.6 TB of WAL, written sparse: a first page and a
/// hole each), with the damage each refusal is about scattered through it. pgrestorewal no
/// longer reads the whole archive to serve a segment, only its neighbours; at this size it
/// must still serve the right file and make every refusal a small archive gets, including
/// the ones that depend on WAL far from the segment asked for (a long hole, a stray segment
/// far after the `.partial`) and on neighbours across an xlogid boundary.
#[test]
fn large_archive_serves_and_refuses_as_a_small_one() {
    const SEG: u64 = 16 << 20;
    const PER_XLOGID: u64 = (1 << 32) / SEG;
    const COUNT: u64 = 100_000;
    let d = Dirs::new();
    let name = |segno: u64| format!("00000001{:08X}{:08X}", segno / PER_XLOGID, segno % PER_XLOGID);
    let tag = |segno: u64| (segno % 199 + 1) as u8;
    // `file` is segment `segno` (complete or `.partial`) of `size` bytes, opening with its long
    // page header unless `header` is false.
    let write = |file: &str, segno: u64, size: u64, header: bool| {
        let mut f = fs::File::create(d.archive.join(file)).unwrap();
        if header {
            let mut page = [0u8; TAG_AT + 1];
            page[..40].copy_from_slice(&long_header(&name(segno), SEG, SYSID));
            page[TAG_AT] = tag(segno);
            f.write_all(&page).unwrap();
        }
        f.set_len(size).unwrap();
    };
    let hole = 60_000;
    let long_hole = 80_000..80_010;
    // 8 kB short: the first segment of an xlogid, and the last of another.
    let short = PER_XLOGID * 300;
    let short_last = PER_XLOGID * 200 - 1;
    let zeros = 90_000;
    for segno in 1..=COUNT {
        if segno == hole || long_hole.contains(&segno) {
            continue;
        }
        let (file, size) = match segno {
            COUNT => (format!("{}.partial", name(segno)), SEG),
            s if s == short || s == short_last => (name(segno), SEG - 8192),
            _ => (name(segno), SEG),
        };
        write(&file, segno, size, segno != zeros);
    }

    let dest = d.pg_wal.join("RECOVERYXLOG");
    let expect = |segno: u64, code: i32, want: &str| {
        let _ = fs::remove_file(&dest);
        let o = d.restore(&["-v"], &name(segno), "pg_wal/RECOVERYXLOG");
        assert_eq!(o.status.code(), Some(code), "{}: {}", name(segno), stderr(&o));
        if code == 0 {
            assert!(stderr(&o).starts_with(want), "{}: {}", name(segno), stderr(&o));
            assert_eq!(first_byte(&dest), tag(segno), "{}", name(segno));
            assert_eq!(fs::metadata(&dest).unwrap().len(), SEG);
        } else {
            assert_eq!(stderr(&o), want, "{}", name(segno));
            assert!(!dest.exists(), "nothing served for {}", name(segno));
        }
    };
    let archived = |segno: u64| d.archive.join(name(segno)).display().to_string();
    let refused = |what: String| format!("pgrestorewal: error: refusing to {what}\n");
    let detail = |text: &str| format!("pgrestorewal: detail: {text}\n");
    let hint = |text: &str| format!("pgrestorewal: hint: {text}\n");

    // Complete segments, in the middle and on both sides of xlogid boundaries.
    for segno in [1, 50_000, PER_XLOGID - 1, PER_XLOGID, COUNT - 1] {
        expect(
            segno,
            0,
            &format!("pgrestorewal: restored \"{}\" from \"{}\"\n", name(segno), archived(segno)),
        );
    }
    // No metadata: sizes are compared with the neighbours, across xlogid boundaries too.
    let disagree = |segno: u64, other: u64| {
        refused(format!(
            "serve \"{}\": it is {SEG} bytes but \"{}\" in the same archive is {} bytes, so one of them is \
             damaged",
            name(segno),
            name(other),
            SEG - 8192
        )) + &hint("Repair or remove the damaged file.")
    };
    expect(short - 1, 255, &disagree(short - 1, short));
    expect(short_last + 1, 255, &disagree(short_last + 1, short_last));
    expect(short + 1, 255, &disagree(short + 1, short));
    // A size that is no segment size says nothing of where its xlogid ends: the neighbour
    // named is the one inside it.
    expect(
        short,
        255,
        &(refused(format!(
            "serve \"{}\": it is {} bytes but the archive's segment size is {SEG} bytes (the size of \"{}\")",
            name(short),
            SEG - 8192,
            name(short + 1)
        )) + &detail("The file is damaged.")
            + &hint("Restore it from a copy of the archive.")),
    );
    expect(
        zeros,
        255,
        &(refused(format!(
            "serve \"{}\": its first page has magic number 0000, which is no WAL page header",
            name(zeros)
        )) + &detail("The file is damaged or not WAL of this archive.")
            + &hint("Restore it from a copy of the archive.")),
    );
    let hole_refused = |segno: u64, earlier: String, later: String| {
        refused(format!(
            "report \"{}\" as missing: the archive has \"{earlier}\" before it and \"{later}\" after it on the \
             same timeline, so WAL is missing from the archive",
            name(segno)
        )) + &hint("Put the segment back into the archive (the base backup's pg_wal may have it) before recovering.")
    };
    expect(hole, 255, &hole_refused(hole, name(hole - 1), name(hole + 1)));
    // Five segments from either end of the hole.
    expect(80_005, 255, &hole_refused(80_005, name(79_999), name(80_010)));
    // The newest WAL is the .partial; after it and before the first segment is "not found".
    let partial_served = format!(
        "pgrestorewal: restored \"{}\" from \"{}.partial\" (the newest WAL of its timeline, from a .partial file)\n",
        name(COUNT),
        archived(COUNT)
    );
    expect(COUNT, 0, &partial_served);
    expect(COUNT + 1, 1, "");
    expect(0, 1, "");
    for other in ["00000002.history", "000000020000000100000000"] {
        let o = d.restore(&[], other, "pg_wal/RECOVERYXLOG");
        assert_eq!((o.status.code(), stderr(&o)), (Some(1), String::new()), "{other}");
    }

    // A segment far after the .partial (a copy from elsewhere): the .partial is no longer the
    // end of the timeline, and everything between is a hole.
    let stray = 150_000;
    write(&name(stray), stray, SEG, true);
    expect(
        COUNT,
        255,
        &(refused(format!(
            "serve \"{}.partial\": later WAL \"{}\" exists on the same timeline, so this segment is incomplete \
             in the archive",
            name(COUNT),
            name(stray)
        )) + &hint("Check the archive for missing segments.")),
    );
    expect(120_000, 255, &hole_refused(120_000, format!("{}.partial", name(COUNT)), name(stray)));
    fs::remove_file(d.archive.join(name(stray))).unwrap();
    expect(COUNT, 0, &partial_served);

    // With metadata the segment size is the archive's own record, not the neighbours'.
    fs::write(
        d.archive.join(".pgreceivewal.meta"),
        format!("system_identifier={SYSID}\nwal_segment_size={SEG}\n"),
    )
    .unwrap();
    expect(short - 1, 0, &format!("pgrestorewal: restored \"{}\"", name(short - 1)));
    expect(
        short,
        255,
        &(refused(format!(
            "serve \"{}\": it is {} bytes but the archive's segment size is {SEG} bytes (from \
             .pgreceivewal.meta)",
            name(short),
            SEG - 8192
        )) + &detail("The file is damaged.")
            + &hint("Restore it from a copy of the archive.")),
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL's side of the contract
// ---------------------------------------------------------------------------

/// The segment named `name` moved `n` segments on (small segment numbers only).
fn segment_after(name: &str, n: u32) -> String {
    let low = u32::from_str_radix(&name[16..], 16).unwrap();
    format!("{}{:08X}", &name[..16], low + n)
}

fn is_wal_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// A cleanly stopped cluster with some WAL, and an archive made from its pg_wal up to the
/// segment of its last checkpoint, that segment kept only as a `.partial`. pg_wal is emptied,
/// so recovery depends on the archive alone. Returns the cluster, the archive, the
/// partial's segment name and the number of rows to expect.
fn cluster_and_archive(version: PgVersion, dir: &TestDir) -> (Cluster, PathBuf, String, String) {
    let mut c = Cluster::builder(version).wal_segsize_mb(1).start();
    c.generate_wal(3);
    let rows = c.psql("SELECT count(*) FROM pgrw_filler");
    c.stop(Mode::Fast);

    let control = pg_tool(version, "pg_controldata").arg(c.data_dir()).output().unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    let redo = control
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint's REDO WAL file:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no REDO WAL file in pg_controldata output:\n{control}"));

    let archive = dir.mkdir("archive");
    let pg_wal = c.data_dir().join("pg_wal");
    for entry in fs::read_dir(&pg_wal).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !is_wal_segment(&name) {
            continue;
        }
        // Later names are recycled segments holding old WAL: not ours to archive.
        if name <= redo {
            let to = if name == redo { format!("{name}.partial") } else { name.clone() };
            // fs::copy keeps pg_wal's 0600: the server's user must be able to read it.
            fs::copy(pg_wal.join(&name), archive.join(&to)).unwrap();
            fs::set_permissions(archive.join(&to), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::remove_file(pg_wal.join(&name)).unwrap();
    }

    // The server runs pgrestorewal as its own user: give it a copy it can reach.
    let bin = dir.join("pgrestorewal");
    fs::copy(env!("CARGO_BIN_EXE_pgrestorewal"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(c.data_dir().join("recovery.signal"), "").unwrap();
    c.set_conf(&format!(
        "restore_command = '{} -v -D {} %f %p'\nrecovery_target_timeline = 'latest'",
        bin.display(),
        archive.display()
    ));
    (c, archive, redo, rows)
}

/// `postgres -D` of the cluster, as the `postgres` user when we are root, its output
/// appended to the cluster's log.
fn postgres(c: &Cluster) -> KillOnDrop {
    let root = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false);
    let postgres = c.bindir().join("postgres");
    let mut cmd = if root {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(postgres);
        cmd
    } else {
        Command::new(postgres)
    };
    let log = fs::OpenOptions::new().append(true).create(true).open(c.log_path()).unwrap();
    cmd.arg("-D")
        .arg(c.data_dir())
        .current_dir(c.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    KillOnDrop::spawn(&mut cmd)
}

/// Exit code 255 is what makes PostgreSQL stop recovery (FATAL) instead of taking a refusal
/// for the end of the archive and promoting; then, with the archive repaired, the same
/// server recovers through the `.partial` to its last commit.
#[test]
fn postgres_stops_on_refusal_and_recovers_through_partial() {
    for version in PgVersion::ALL {
        let dir = TestDir::new(&format!("restore-pg{}", version.major()));
        let (mut c, archive, partial_seg, rows) = cluster_and_archive(version, &dir);

        // Later WAL after the .partial: pgrestorewal refuses, PostgreSQL must not promote.
        let later = segment_after(&partial_seg, 2);
        fs::copy(archive.join(format!("{partial_seg}.partial")), archive.join(&later)).unwrap();
        fs::set_permissions(archive.join(&later), fs::Permissions::from_mode(0o644)).unwrap();
        let mut server = postgres(&c);
        let status = wait_for_exit(&mut server, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!("{version}: the server kept running after a refusal:\n{}", c.log_tail(30))
        });
        let log = c.log_contents();
        assert!(!status.success(), "{version}: {status}");
        assert!(
            log.contains(&format!("pgrestorewal: error: refusing to serve \"{partial_seg}.partial\"")),
            "{version}:\n{log}"
        );
        assert!(log.contains("FATAL") && log.contains("exit code 255"), "{version}:\n{log}");
        assert!(!log.contains("selected new timeline"), "{version} promoted:\n{log}");
        assert!(!c.data_dir().join("pg_wal").join("00000002.history").exists());

        // Repaired archive: the .partial is the newest WAL again and is served.
        fs::remove_file(archive.join(&later)).unwrap();
        c.start_again();
        wait_until(Duration::from_secs(60), "the end of recovery", || {
            c.psql("SELECT pg_is_in_recovery()") == "f"
        });
        assert_eq!(c.psql("SELECT count(*) FROM pgrw_filler"), rows, "{version}");
        let log = c.log_contents();
        assert!(
            log.contains(&format!("pgrestorewal: restored \"{partial_seg}\" from \"")),
            "{version}:\n{}",
            c.log_tail(30)
        );
        // Probes for files that do not exist (00000002.history, the segment after the
        // partial) leave no trace.
        assert_eq!(log.matches("pgrestorewal: error").count(), 1, "{version}:\n{log}");
        assert!(!log.contains("pgrestorewal: warning"), "{version}:\n{log}");
        c.stop(Mode::Fast);
    }
}
