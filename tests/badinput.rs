//! Bad input: malformed command lines, servers and roles that cannot be archived from,
//! directories that cannot hold an archive, a second archiver, and garbage from the server.
//! Each must get one error line naming the cause (and, where it is ours to say, the fix), a
//! non-zero exit where it is fatal (2 for usage errors, 1 otherwise), no panic, and nothing in
//! the archive deleted or rewritten. docs/reliability.md has the table.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use pgreceivewal::lsn::Lsn;
use pgreceivewal::physical::walcheck::PageVerifier;
use pgreceivewal::physical::walfile::{SegmentId, WalName};
use pgreceivewal::protocol::{ProtocolError, ServerMessage};

use crate::faults::support::{
    check_timeline, fault_cluster, fmt_lsn, lines_at, lsn, messages_at, names, ours, read_log, reported,
    run_capture, segments, slot_restart_lsn, snapshot, Garble, Load, Proxy, ReadOnly, Rng, SEG,
};
use crate::util::{free_port, pgreceivewal, wait_until, Cluster, KillOnDrop, PgVersion, TestDir};

const QUICK: Duration = Duration::from_secs(20);
const TRY_HELP: &str = "pgreceivewal: hint: Try \"pgreceivewal --help\" for more information.";

/// The one error of a failed run (its line, with its detail and hint lines); panics if there
/// is not exactly one, on a panic, or on Rust's " (os error N)" anywhere.
fn one_error(out: &str) -> String {
    assert!(!out.contains("panicked"), "pgreceivewal panicked:\n{out}");
    assert!(!out.contains("(os error"), "an OS error as Rust prints it:\n{out}");
    let errors = messages_at(out, "error");
    assert_eq!(errors.len(), 1, "exactly one error line expected:\n{out}");
    errors[0].clone()
}

/// Runs `cmd` (which must not loop: the error is fatal) and checks it exits 1 with one error
/// line containing every one of `expect`. Returns that line.
fn fails_with(cmd: &mut Command, expect: &[&str]) -> String {
    let (code, out) = run_capture(cmd, QUICK);
    assert_eq!(code, Some(1), "{cmd:?} must exit 1:\n{out}");
    let line = one_error(&out);
    for e in expect {
        assert!(line.contains(e), "the error must say {e:?}: {line}");
    }
    eprintln!("refused: {}", line.split(": error: ").nth(1).unwrap_or(&line));
    line
}

/// An end position just inside the WAL written so far (`--endpos` stops once passed).
fn endpos_before_end(c: &Cluster) -> String {
    c.psql("SELECT pg_current_wal_lsn() - 1")
}

// ---------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------

/// A refusal's fix is its hint, apart from the primary message: its own line in a text log
/// (same prefix, level word "hint"), its own field of the one JSON object with
/// --log-format=json. The directory is checked before connecting, so no server is needed.
#[test]
fn hint_is_its_own_line_and_json_field() {
    let t = TestDir::new("hint");
    let file = t.join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let d = file.to_str().unwrap();
    let primary = format!("\"{d}\" exists but is not a directory");
    let hint = "Give -D a directory for the archive.";

    let (code, out) = run_capture(pgreceivewal().args(["-D", d, "-n"]), QUICK);
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "the error and its hint:\n{out}");
    assert!(lines[0].ends_with(&format!("] pgreceivewal: error: {primary}")), "{out}");
    assert!(lines[1].ends_with(&format!("] pgreceivewal: hint: {hint}")), "{out}");
    let prefix = |l: &str| l.split("] ").next().unwrap().to_owned();
    assert_eq!(prefix(lines[0]), prefix(lines[1]), "the same timestamp and process: {out}");

    let (code, out) = run_capture(pgreceivewal().args(["-D", d, "-n", "--log-format", "json"]), QUICK);
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object:\n{out}");
    let json_primary = primary.replace('"', "\\\"");
    assert!(lines[0].contains(&format!("\"msg\":\"{json_primary}\",\"hint\":\"{hint}\"")), "{out}");
    assert!(!out.contains("(os error"), "{out}");
}

/// Every kind of malformed command line: exit 2, the message on one line followed by the
/// pointer to --help, and the target directory not even created.
#[test]
fn usage_errors() {
    let t = TestDir::new("usage");
    let d = t.join("never-created");
    let d = d.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--foo", "-D", d], "unrecognized option \"--foo\""),
        (&["-x", "-D", d], "unrecognized option \"-x\""),
        (&["-D"], "option \"-D\" requires a value"),
        (&["-D", d, "--endpos"], "option \"--endpos\" requires a value"),
        (&["-D", d, "--slot"], "option \"--slot\" requires a value"),
        (
            &["-D", d, "--endpos", "xyz"],
            "could not parse end position \"xyz\": expected two hexadecimal numbers like 0/16B3748",
        ),
        (&["-D", d, "-E", "0/1/2"], "could not parse end position \"0/1/2\""),
        (&["-D", d, "-E", "-1/0"], "could not parse end position \"-1/0\""),
        (
            &["-D", d, "-s", "-1"],
            "invalid status interval \"-1\": must be a whole number of seconds, 0 or more",
        ),
        (&["-D", d, "--status-interval=-5"], "invalid status interval \"-5\""),
        (&["-D", d, "-s", "1.5"], "invalid status interval \"1.5\""),
        (&["-D", d, "-s", "99999999999"], "-s/--status-interval must be in range 0..2147483"),
        (&["--drop-slot", "--create-slot", "-S", "x"], "cannot use --create-slot together with --drop-slot"),
        (&["--create-slot"], "--create-slot needs a slot to be specified using --slot"),
        (&[], "no target directory specified"),
        (&["-n", "-S", "x"], "no target directory specified"),
        (&["-D", ""], "target directory name must not be empty"),
        (&["-D", d, "-S", "Bad-Name"], "replication slot name \"Bad-Name\" is invalid"),
        (&["-D", d, "-p", "0"], "invalid port number \"0\": must be a number from 1 to 65535"),
        (&["-D", d, "-p", "port"], "invalid port number \"port\""),
        (&["-D", d, "extra"], "too many command-line arguments (first is \"extra\")"),
        (&["-D", d, "--synchronous", "--no-sync"], "cannot use --synchronous together with --no-sync"),
        (
            &["-D", d, "-Z", "none:1"],
            "invalid compression specification: compression algorithm \"none\" does not accept a compression level",
        ),
        (&["-D", d, "--compress", "brotli"], "unrecognized compression algorithm: \"brotli\""),
        (&["-D", d, "--log-level", "loud"], "invalid log level \"loud\""),
        (&["-D", d, "--no-loop=yes"], "option \"--no-loop\" does not take a value"),
    ];
    for (args, expect) in cases {
        let (code, out) = run_capture(pgreceivewal().args(*args), QUICK);
        assert_eq!(code, Some(2), "{args:?} is a usage error (exit 2):\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: the error and the pointer to --help, nothing more:\n{out}");
        assert!(lines[0].starts_with("pgreceivewal: error: "), "{args:?}: {out}");
        assert!(lines[0].contains(expect), "{args:?}: expected {expect:?} in:\n{out}");
        assert_eq!(lines[1], TRY_HELP, "{args:?}");
        assert!(!Path::new(d).exists(), "{args:?}: a usage error must not create the directory");
    }
}

/// `--help`/`-?` and `--version`/`-V` are answered on stdout with exit 0 and nothing on
/// stderr, by both tools that share `tool::run` (which reports them as `Finished::Informed`).
#[test]
fn help_and_version_exit_0() {
    for tool in ["pgreceivewal", "pgrecvlogical"] {
        let command =
            || if tool == "pgreceivewal" { pgreceivewal() } else { crate::logical::pgrecvlogical() };
        for flag in ["--help", "-?", "--version", "-V"] {
            let o = command().arg(flag).output().unwrap();
            let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert_eq!(o.status.code(), Some(0), "{tool} {flag}:\n{out}{err}");
            assert!(err.is_empty(), "{tool} {flag} wrote to stderr: {err}");
            if flag.contains('?') || flag == "--help" {
                assert!(
                    out.starts_with(&format!("{tool} ")) && out.contains("Usage:"),
                    "{tool} {flag}: {out}"
                );
            } else {
                assert_eq!(
                    out,
                    format!("{tool} (pgreceivewal) {}\n", env!("CARGO_PKG_VERSION")),
                    "{tool} {flag}"
                );
            }
        }
    }
}

/// Nothing listens on the port, or the host name does not resolve: the first connection
/// failing is fatal even without -n (as in pg_receivewal), at once, with libpq's reason.
#[test]
fn unreachable_server() {
    let t = TestDir::new("unreach");
    let port = free_port().to_string();
    let refused = [&format!("127.0.0.1:{port}")[..], "could not connect", "Connection refused"];
    let mut to_port = pgreceivewal();
    to_port.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D"]).arg(t.join("a"));
    let mut to_name = pgreceivewal();
    to_name.args(["-h", "no-such-host.invalid", "-U", "postgres", "-D"]).arg(t.join("b"));
    let cases = [
        (&mut to_port, &refused[..]),
        (&mut to_name, &["could not translate host name \"no-such-host.invalid\""][..]),
    ];
    for (cmd, expect) in cases {
        // "At once" is a fact of the log, not of a clock: it exited by itself (with the error)
        // without a single retry, and every retry announces itself with a warning.
        let (code, out) = run_capture(cmd, QUICK);
        assert_eq!(code, Some(1), "{cmd:?} must exit 1:\n{out}");
        let line = one_error(&out);
        for e in expect {
            assert!(line.contains(e), "the error must say {e:?}: {line}");
        }
        assert!(lines_at(&out, "warning").is_empty(), "no retry loop on a first connection failure:\n{out}");
    }
}

// ---------------------------------------------------------------------------
// Roles, passwords, pg_hba.conf, slots
// ---------------------------------------------------------------------------

const SECRET: &str = "Sekr1t-pw-4417";
const WRONG: &str = "Wr0ng-pw-9931";

/// Wrong and missing passwords, a role without REPLICATION, pg_hba.conf rejecting
/// replication, a logical slot, and a slot that is missing: each a clean one-line error (the
/// missing slot is created, as --help says), and no password ever in any log line, even at
/// -vv.
fn roles_and_slots(version: PgVersion) {
    let c = Cluster::builder(version)
        .wal_segsize_mb(1)
        .conf("wal_level = logical\nautovacuum = off")
        .hba(
            "host    replication     pwuser      127.0.0.1/32    scram-sha-256\n\
             host    all             pwuser      127.0.0.1/32    scram-sha-256\n\
             host    replication     rejected    127.0.0.1/32    reject",
        )
        .start();
    c.psql(&format!(
        "CREATE ROLE pwuser LOGIN REPLICATION PASSWORD '{SECRET}';\n\
         CREATE ROLE norep LOGIN;\n\
         CREATE ROLE rejected LOGIN REPLICATION"
    ));
    let t = TestDir::new("roles");
    let d = t.join("archive");
    let as_user = |user: &str, extra: &[&str]| {
        let mut cmd = pgreceivewal();
        cmd.args(["-h", "127.0.0.1", "-p", &c.port().to_string(), "-U", user, "-vv", "-D"])
            .arg(&d)
            .args(extra);
        cmd
    };
    let no_secret = |out: &str| {
        assert!(!out.contains(SECRET) && !out.contains(WRONG), "a password appears in the log:\n{out}");
    };

    let (code, out) = run_capture(as_user("pwuser", &["-n"]).env("PGPASSWORD", WRONG), QUICK);
    assert_eq!(code, Some(1), "{out}");
    assert!(one_error(&out).contains("password authentication failed for user \"pwuser\""), "{out}");
    no_secret(&out);
    let (code, out) = run_capture(&mut as_user("pwuser", &["-n", "-d", &format!("password={WRONG}")]), QUICK);
    assert_eq!(code, Some(1), "{out}");
    assert!(one_error(&out).contains("password authentication failed"), "{out}");
    no_secret(&out);
    fails_with(&mut as_user("pwuser", &["-n", "-w"]), &["no password supplied", "~/.pgpass"]);

    // The right password, at the most verbose level: a slot action and a short stream.
    let (code, out) =
        run_capture(as_user("pwuser", &["-S", "pwslot", "--create-slot"]).env("PGPASSWORD", SECRET), QUICK);
    assert_eq!(code, Some(0), "{out}");
    no_secret(&out);
    c.generate_wal(1);
    let endpos = endpos_before_end(&c);
    let (code, out) = run_capture(
        &mut as_user("pwuser", &["-S", "pwslot", "-n", "-E", &endpos, "-d", &format!("password={SECRET}")]),
        QUICK,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("passed end position"), "{out}");
    no_secret(&out);

    let line = fails_with(&mut as_user("norep", &["-n"]), &[]);
    assert!(
        line.to_lowercase().contains("replication") || line.contains("WAL sender"),
        "must say the role lacks REPLICATION: {line}"
    );
    fails_with(
        &mut as_user("rejected", &["-n"]),
        &["pg_hba.conf rejects replication connection", "\"rejected\""],
    );

    // With --create-slot-if-missing a missing slot is created and streamed from (without it,
    // refused as by pg_receivewal: tests/slots.rs). With -n, losing the connection then ends
    // the run with exit 1, as pg_receivewal -n does.
    let log = t.join("missing.log");
    let mut child = KillOnDrop::spawn(&mut ours(
        &c,
        &t.join("missing"),
        &["-S", "brandnew", "--create-slot-if-missing", "-n"],
        &log,
    ));
    wait_until(QUICK, "streaming on the new slot", || reported(&c, "write_lsn").is_some());
    assert!(read_log(&log).contains("created replication slot \"brandnew\""), "{}", read_log(&log));
    assert!(slot_restart_lsn(&c, "brandnew").is_some(), "the created slot reserves WAL");
    c.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication");
    let status =
        crate::util::wait_for_exit(&mut child, QUICK).expect("-n ends the run when the connection is lost");
    assert_eq!(status.code(), Some(1), "{}", read_log(&log));
    one_error(&read_log(&log));
}

/// A slot of that name exists but is logical: refused with our message, which names the
/// slot and the fix, as archiver.rs intends (`SlotInfo::Logical`).
#[test]
fn logical_slot_18() {
    let c = Cluster::builder(PgVersion::V18).wal_segsize_mb(1).conf("wal_level = logical").start();
    c.psql("SELECT pg_create_logical_replication_slot('lg', 'pgoutput')");
    let t = TestDir::new("logical");
    let d = t.join("archive");
    fails_with(
        &mut ours_plain(&c, &d, &["-S", "lg"]),
        &["replication slot \"lg\" is a logical slot", "physical slot"],
    );
    fails_with(&mut ours_plain(&c, &d, &["-S", "lg", "-n"]), &["replication slot \"lg\" is a logical slot"]);
}

#[test]
fn roles_and_slots_15() {
    roles_and_slots(PgVersion::V15);
}

#[test]
fn roles_and_slots_18() {
    roles_and_slots(PgVersion::V18);
}

/// The server ends the stream with an error: an administrator terminates the walsender, and
/// (on a server without a slot) the WAL to resume from has been removed. With -n the run ends
/// with exit 1 and the error must be the server's, which says what happened, not a libpq
/// complaint about the COPY state.
#[test]
fn server_error_mid_stream_is_reported_18() {
    let c = Cluster::builder(PgVersion::V18)
        .wal_segsize_mb(1)
        .conf("wal_keep_size = 0\nmax_wal_size = '2MB'\nmin_wal_size = '2MB'\nautovacuum = off")
        .start();
    let t = TestDir::new("midstream");
    let (d, log) = (t.join("archive"), t.join("ours.log"));
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-n", "-s", "1"], &log));
    wait_until(QUICK, "streaming", || reported(&c, "write_lsn").is_some());
    c.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication");
    let status = crate::util::wait_for_exit(&mut child, QUICK).expect("-n ends the run");
    assert_eq!(status.code(), Some(1));
    let line = one_error(&read_log(&log));
    assert!(line.contains("terminating connection due to administrator command"), "{line}");

    // The archive resumes at its .partial; the server no longer has that segment.
    let partial = segments(&d, 1, SEG).last().unwrap().name.trim_end_matches(".partial").to_string();
    for _ in 0..3 {
        c.generate_wal(3);
        c.psql("CHECKPOINT");
    }
    assert!(!c.data_dir().join("pg_wal").join(&partial).exists(), "{partial} still in pg_wal");
    let line = fails_with(&mut ours_plain(&c, &d, &["-n"]), &[]);
    assert!(line.contains(&format!("requested WAL segment {partial} has already been removed")), "{line}");
}

/// max_wal_senders = 0, then wal_level = minimal: the server refuses replication connections;
/// the error says so and names the setting.
fn server_settings(version: PgVersion) {
    let mut c = Cluster::builder(version).wal_segsize_mb(1).conf("max_wal_senders = 0").start();
    let t = TestDir::new("walsenders");
    fails_with(&mut ours_plain(&c, &t.join("a"), &[]), &["max_wal_senders"]);
    c.stop(crate::util::Mode::Fast);
    c.set_conf("wal_level = minimal");
    c.start_again();
    assert_eq!(c.psql("SHOW wal_level"), "minimal");
    fails_with(&mut ours_plain(&c, &t.join("b"), &[]), &["max_wal_senders"]);
}

fn ours_plain(c: &Cluster, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).arg("-D").arg(dir).args(extra);
    cmd
}

/// The server's own HINT stays a hint: "all replication slots are in use" comes with "Free
/// one or increase max_replication_slots.", which is the error's hint line, not glued onto the
/// server's message.
fn server_hint(version: PgVersion) {
    let c = Cluster::builder(version).conf("max_replication_slots = 1").start();
    c.create_physical_slot("taken");
    let mut cmd = pgreceivewal();
    cmd.args(c.conn_args()).args(["--create-slot", "-S", "second"]);
    let error = fails_with(&mut cmd, &["all replication slots are in use"]);
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines.len(), 2, "the error and the server's hint: {error}");
    assert!(!lines[0].contains("Free one"), "the hint is glued on: {error}");
    assert!(lines[1].contains("] pgreceivewal: hint: Free one or increase"), "{error}");
}

#[test]
fn server_hint_15() {
    server_hint(PgVersion::V15);
}

#[test]
fn server_hint_18() {
    server_hint(PgVersion::V18);
}

#[test]
fn server_settings_15() {
    server_settings(PgVersion::V15);
}

#[test]
fn server_settings_18() {
    server_settings(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------

/// Archives `c`'s WAL from slot `arch` into `dir` until just before the current end.
fn make_archive(c: &Cluster, dir: &Path) {
    c.generate_wal(3);
    let endpos = endpos_before_end(c);
    let (code, out) = run_capture(&mut ours_plain(c, dir, &["-S", "arch", "-n", "-E", &endpos]), QUICK);
    assert_eq!(code, Some(0), "{out}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != ".pgreceivewal.lock" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Refused without -n too (the error is fatal, not retried), one error line, the directory
/// exactly as it was.
fn refused(c: &Cluster, dir: &Path, expect: &[&str]) -> String {
    let before = snapshot(dir);
    let line = fails_with(&mut ours_plain(c, dir, &["-S", "arch"]), expect);
    assert!(snapshot(dir) == before, "a refused run changed {}", dir.display());
    line
}

/// A file, a read-only directory, a directory we may not write to: refused at once.
#[test]
fn unusable_directory_18() {
    let c = fault_cluster(PgVersion::V18, "");
    c.create_physical_slot("arch");
    let t = TestDir::new("unusable");
    let base = t.join("base");
    make_archive(&c, &base);

    let file = t.join("a-file");
    fs::write(&file, b"not an archive").unwrap();
    fails_with(
        &mut ours_plain(&c, &file, &[]),
        &[&format!("\"{}\" exists but is not a directory", file.display())],
    );
    assert_eq!(fs::read(&file).unwrap(), b"not an archive");

    let ro = t.join("read-only");
    copy_dir(&base, &ro);
    let before = snapshot(&ro);
    {
        let _guard = ReadOnly::mount(&ro);
        fails_with(
            &mut ours_plain(&c, &ro, &["-S", "arch"]),
            &[&ro.display().to_string(), "Read-only file system"],
        );
    }
    assert!(snapshot(&ro) == before);

    // Not ours to write: a root-owned directory, pgreceivewal run as the postgres user.
    let root_only = t.mkdir("root-only");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_pgreceivewal"))
        .args(c.conn_args())
        .arg("-D")
        .arg(&root_only)
        .stdin(Stdio::null());
    for var in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"] {
        cmd.env_remove(var);
    }
    fails_with(&mut cmd, &[&root_only.display().to_string(), "Permission denied"]);
    assert!(names(&root_only).is_empty() && !root_only.join(".pgreceivewal.lock").exists());
}

/// Files that are not WAL are reported once and left alone; a `.partial` of the wrong size,
/// an empty completed segment and WAL of a later timeline than the server's are refused.
#[test]
fn strange_files_in_directory_18() {
    let c = fault_cluster(PgVersion::V18, "");
    c.create_physical_slot("arch");
    let t = TestDir::new("strange");
    let base = t.join("base");
    make_archive(&c, &base);
    let segs = segments(&base, 1, SEG);
    let partial = segs.last().unwrap().name.clone();
    let complete = segs[segs.len() - 2].name.clone();

    // Foreign files: warned about, once each, untouched; the archive goes on.
    let foreign = t.join("foreign");
    copy_dir(&base, &foreign);
    let strays =
        ["README.txt", "notes.partial", "000000010000000000000001.backup", "00000001000000000000000g"];
    for (i, n) in strays.iter().enumerate() {
        fs::write(foreign.join(n), format!("stray {i}")).unwrap();
    }
    c.generate_wal(1);
    let endpos = endpos_before_end(&c);
    let (code, out) = run_capture(&mut ours_plain(&c, &foreign, &["-S", "arch", "-n", "-E", &endpos]), QUICK);
    assert_eq!(code, Some(0), "{out}");
    for (i, n) in strays.iter().enumerate() {
        let warned = lines_at(&out, "warning")
            .iter()
            .filter(|l| l.contains(&format!("ignoring file \"{n}\"")))
            .count();
        assert_eq!(warned, 1, "one warning for {n}:\n{out}");
        assert_eq!(fs::read_to_string(foreign.join(n)).unwrap(), format!("stray {i}"), "{n} was touched");
    }
    check_timeline(
        PgVersion::V18,
        &foreign,
        &c.data_dir().join("pg_wal"),
        1,
        SEG,
        lsn(&endpos),
        Some(segs[0].segno),
    );

    let short = t.join("short-partial");
    copy_dir(&base, &short);
    fs::OpenOptions::new().write(true).open(short.join(&partial)).unwrap().set_len(1000).unwrap();
    refused(&c, &short, &[&partial, "has 1000 bytes, should be 0 or 1048576", "Move it out of the archive"]);

    let empty = t.join("empty-segment");
    copy_dir(&base, &empty);
    fs::OpenOptions::new().write(true).open(empty.join(&complete)).unwrap().set_len(0).unwrap();
    refused(&c, &empty, &[&complete, "is empty"]);

    let later = t.join("later-timeline");
    copy_dir(&base, &later);
    fs::copy(base.join(&complete), later.join(format!("00000002{}", &complete[8..]))).unwrap();
    refused(&c, &later, &["timeline 2", "server is on timeline 1", "new directory"]);

    let history = t.join("later-history");
    copy_dir(&base, &history);
    fs::write(history.join("00000003.history"), "1\t0/3000000\tno recovery target specified\n").unwrap();
    refused(&c, &history, &["timeline 3", "server is on timeline 1"]);
}

/// An archive of another cluster (pg_receivewal's, no metadata file) is refused: found by the
/// system identifier in the newest segment's long page header.
#[test]
fn another_clusters_archive_18() {
    let a = fault_cluster(PgVersion::V18, "");
    let b = fault_cluster(PgVersion::V18, "");
    a.create_physical_slot("arch");
    let t = TestDir::new("othercluster");
    let base = t.join("base");
    make_archive(&a, &base);
    let a_id = a.psql("SELECT system_identifier FROM pg_control_system()");
    let b_id = b.psql("SELECT system_identifier FROM pg_control_system()");
    let last = segments(&base, 1, SEG).last().unwrap().segno;

    // b's WAL up past a's newest archived segment, so b has a segment of every number we use.
    while lsn(&b.current_lsn()) / SEG <= last + 2 {
        b.generate_wal(2);
    }
    b.switch_wal();
    let b_wal = b.data_dir().join("pg_wal");

    // pg_receivewal's archive of b (no metadata file): refused by the newest segment's header.
    let plain = t.mkdir("plain");
    for n in [last, last + 1] {
        let name = crate::faults::support::seg_name(1, n, SEG);
        fs::copy(b_wal.join(&name), plain.join(&name)).unwrap();
    }
    refused(
        &a,
        &plain,
        &[&format!("database system {b_id}"), &format!("database system {a_id}"), "own directory"],
    );
}

/// Our archive of cluster a (metadata file and all), into which a segment of cluster b was put
/// as the newest: the metadata says a, but that segment is b's and must not be taken for a's
/// (else the archive goes on after a foreign segment, and restoring through it fails).
#[test]
fn foreign_segment_in_our_archive_18() {
    let a = fault_cluster(PgVersion::V18, "");
    let b = fault_cluster(PgVersion::V18, "");
    a.create_physical_slot("arch");
    let t = TestDir::new("intruder");
    let base = t.join("base");
    make_archive(&a, &base);
    let b_id = b.psql("SELECT system_identifier FROM pg_control_system()");
    let last = segments(&base, 1, SEG).last().unwrap().segno;
    while lsn(&b.current_lsn()) / SEG <= last + 2 {
        b.generate_wal(2);
    }
    b.switch_wal();
    let b_wal = b.data_dir().join("pg_wal");
    let mixed = t.join("mixed");
    copy_dir(&base, &mixed);
    let intruder = crate::faults::support::seg_name(1, last + 1, SEG);
    fs::copy(b_wal.join(&intruder), mixed.join(&intruder)).unwrap();
    a.generate_wal(3);
    let line = refused(&a, &mixed, &[]);
    assert!(
        line.contains(&intruder) || line.contains(&format!("system {b_id}")) || line.contains(&b_id),
        "the error must name the foreign segment or its system: {line}"
    );
}

/// A second archiver on a directory in use is refused by the lock, at once, with a message
/// that says what to do; the first goes on undisturbed. (PostgreSQL 15 here; the e2e suite
/// has the same on 18.)
#[test]
fn second_archiver_is_refused_15() {
    let c = fault_cluster(PgVersion::V15, "");
    c.create_physical_slot("arch");
    let t = TestDir::new("lock");
    let (d, log) = (t.join("archive"), t.join("first.log"));
    let mut first = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    wait_until(QUICK, "the first archiver to stream", || reported(&c, "write_lsn").is_some());
    for extra in [&["-S", "arch"][..], &["-S", "other"][..], &["-n"][..]] {
        fails_with(
            &mut ours_plain(&c, &d, extra),
            &[
                &format!("another pgreceivewal is already archiving into \"{}\"", d.display()),
                "Stop it or use another directory",
            ],
        );
    }
    c.generate_wal(2);
    let target = lsn(&c.current_lsn());
    crate::faults::support::wait_received(&c, target, QUICK);
    assert!(first.signal_and_wait("TERM", Duration::from_secs(10)).success(), "{}", read_log(&log));
    let at = crate::faults::support::stopped_at(&read_log(&log));
    check_timeline(PgVersion::V15, &d, &c.data_dir().join("pg_wal"), 1, SEG, at, None);
}

// ---------------------------------------------------------------------------
// Garbage from the server side
// ---------------------------------------------------------------------------

/// A garbler that lets `skip` XLogData messages through, then rewrites the next one that
/// `pick` accepts with `f`.
fn garble_after(skip: usize, pick: fn(&[u8]) -> bool, f: fn(&[u8]) -> Vec<u8>) -> Garble {
    let mut seen = 0;
    Box::new(move |m: &[u8]| {
        if m.first() != Some(&b'w') {
            return None;
        }
        seen += 1;
        (seen > skip && pick(m)).then(|| f(m))
    })
}

fn any(_: &[u8]) -> bool {
    true
}

fn start_of(m: &[u8]) -> u64 {
    u64::from_be_bytes(m[1..9].try_into().unwrap())
}

/// Offsets in the message of the page boundaries its WAL crosses.
fn page_starts(m: &[u8]) -> Vec<usize> {
    let start = start_of(m);
    (25..m.len()).filter(|&i| (start + (i - 25) as u64).is_multiple_of(8192)).collect()
}

/// Through a proxy that rewrites one CopyData message coming from the server, mid-stream:
/// each kind of garbage must end the run (with -n) with one clean error line, no panic, and
/// nothing of it archived; a normal run afterwards completes the archive exactly.
fn garbage_from_server(version: PgVersion) {
    let c = fault_cluster(version, "");
    c.create_physical_slot("arch");
    let first = c.psql("SELECT restart_lsn FROM pg_replication_slots");
    let first = lsn(&first) / SEG;
    let t = TestDir::new("garbage");
    let d = t.join("archive");
    let load = Load::start(&c, 200, Duration::from_millis(20));
    type Case = (&'static str, Garble, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        (
            "unknown type",
            garble_after(3, any, |m| [b"z", &m[1..]].concat()),
            &["unrecognized streaming header: \"z\""],
        ),
        (
            "truncated XLogData",
            garble_after(3, any, |m| m[..10].to_vec()),
            &["streaming header too small", "'w' message of 10 bytes"],
        ),
        // libpq drops an empty CopyData, so the WAL it replaced is missing: a gap.
        ("empty message", garble_after(3, any, |_| Vec::new()), &["received WAL at", "expected"]),
        (
            "bad keepalive",
            garble_after(3, any, |_| {
                let mut k = vec![b'k'];
                k.extend_from_slice(&[0; 16]);
                k.push(7);
                k
            }),
            &["invalid reply-requested flag 7"],
        ),
        ("truncated keepalive", garble_after(3, any, |_| vec![b'k', 0, 0]), &["streaming header too small"]),
        (
            "WAL at the wrong place",
            garble_after(3, any, |m| {
                let mut v = m.to_vec();
                v[1..9].copy_from_slice(&(start_of(m) + 8192).to_be_bytes());
                v
            }),
            &["received WAL at", "expected"],
        ),
        (
            "corrupt page address",
            garble_after(
                3,
                |m| page_starts(m).len() >= 2,
                |m| {
                    let mut v = m.to_vec();
                    let p = page_starts(m)[0];
                    v[p + 8] ^= 0x10;
                    v
                },
            ),
            &["refusing to archive it"],
        ),
    ];
    let mut rng = Rng::new(&format!("garbage_from_server_{}", version.major()));
    let random_bytes: Vec<u8> = (0..57).map(|_| rng.next() as u8).collect();
    let mut all = cases;
    let rb = random_bytes.clone();
    all.push(("random bytes", Box::new(move |m: &[u8]| (m.first() == Some(&b'w')).then(|| rb.clone())), &[]));
    for (what, garble, expect) in all {
        let proxy = Proxy::start(c.port(), Some(garble));
        let mut cmd = pgreceivewal();
        cmd.args([
            "-d",
            "sslmode=disable gssencmode=disable",
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.port().to_string(),
            "-U",
            "postgres",
        ])
        .arg("-D")
        .arg(&d)
        .args(["-S", "arch", "-n"]);
        let (code, out) = run_capture(&mut cmd, Duration::from_secs(60));
        assert_eq!(code, Some(1), "{what}: garbage from the server must end the run with exit 1:\n{out}");
        let line = one_error(&out);
        for e in expect {
            assert!(line.contains(e), "{what}: the error must say {e:?}: {line}");
        }
        eprintln!("{version}, {what}: {}", line.split(": error: ").nth(1).unwrap_or(&line));
    }
    thread::sleep(Duration::from_millis(300));
    load.stop();
    let target = lsn(&c.current_lsn());
    let log = t.join("final.log");
    let mut child = KillOnDrop::spawn(&mut ours(&c, &d, &["-S", "arch", "-s", "1"], &log));
    crate::faults::support::wait_received(&c, target, Duration::from_secs(60));
    assert!(child.signal_and_wait("TERM", Duration::from_secs(10)).success());
    let at = crate::faults::support::stopped_at(&read_log(&log));
    check_timeline(version, &d, &c.data_dir().join("pg_wal"), 1, SEG, at, Some(first));
    eprintln!("{version}: archive complete up to {} after the garbage", fmt_lsn(at));
}

#[test]
fn garbage_from_server_15() {
    garbage_from_server(PgVersion::V15);
}

#[test]
fn garbage_from_server_18() {
    garbage_from_server(PgVersion::V18);
}

// ---------------------------------------------------------------------------
// Property tests of the parsers (the fuzzing)
// ---------------------------------------------------------------------------

fn no_panic<T>(what: &str, input: &dyn std::fmt::Debug, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what} panicked on {input:?}"),
    }
}

/// The CopyData parser on random, truncated and mutated messages: never a panic; valid
/// messages parse to what was encoded; too-short ones are `Truncated`, unknown types
/// `UnknownType`.
#[test]
fn copydata_parser_property() {
    let mut rng = Rng::new("copydata_parser_property");
    for _ in 0..200_000 {
        let len = rng.range(0, 80) as usize;
        let mut m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if !m.is_empty() && rng.range(0, 3) > 0 {
            m[0] = if rng.range(0, 2) == 0 { b'w' } else { b'k' };
        }
        let parsed =
            no_panic("ServerMessage::parse", &m, || ServerMessage::parse(&m).map(|x| format!("{x:?}")));
        match (m.first(), m.len(), &parsed) {
            (None, _, Err(e)) => assert_eq!(format!("{e:?}"), format!("{:?}", ProtocolError::Empty)),
            (Some(b'w'), n, r) => assert_eq!(r.is_ok(), n >= 25, "{m:?}: {r:?}"),
            (Some(b'k'), n, r) => assert_eq!(r.is_ok(), n >= 18 && m[17] <= 1, "{m:?}: {r:?}"),
            (Some(_), _, r) => assert!(r.is_err(), "{m:?}"),
            (None, _, Ok(_)) => panic!("empty message parsed"),
        }
    }
    // Valid messages round-trip, and every truncation of them is refused cleanly.
    for _ in 0..2_000 {
        let (start, end, time) = (rng.next(), rng.next(), rng.next() as i64);
        let data: Vec<u8> = (0..rng.range(0, 300)).map(|_| rng.next() as u8).collect();
        let mut w = vec![b'w'];
        w.extend_from_slice(&start.to_be_bytes());
        w.extend_from_slice(&end.to_be_bytes());
        w.extend_from_slice(&time.to_be_bytes());
        w.extend_from_slice(&data);
        assert_eq!(
            ServerMessage::parse(&w).unwrap(),
            ServerMessage::XLogData { start: Lsn(start), wal_end: Lsn(end), send_time: time, data: &data }
        );
        for cut in 0..25 {
            let r =
                no_panic("parse of a truncated XLogData", &cut, || ServerMessage::parse(&w[..cut]).is_err());
            assert!(r, "a {cut}-byte XLogData must be refused");
        }
        let mut k = vec![b'k'];
        k.extend_from_slice(&end.to_be_bytes());
        k.extend_from_slice(&time.to_be_bytes());
        k.push((start & 1) as u8);
        assert_eq!(
            ServerMessage::parse(&k).unwrap(),
            ServerMessage::Keepalive { wal_end: Lsn(end), send_time: time, reply_requested: start & 1 == 1 }
        );
    }
}

/// The WAL page checker on random data in random chunks at random positions, and real-looking
/// pages with one random byte changed: never a panic.
#[test]
fn wal_page_checker_property() {
    let mut rng = Rng::new("wal_page_checker_property");
    for _ in 0..3_000 {
        let seg = 1u64 << rng.range(20, 31);
        let mut v = PageVerifier::new(rng.next(), seg, 1 << rng.range(10, 16));
        let mut pos = rng.next() >> rng.range(0, 64);
        for _ in 0..rng.range(1, 8) {
            let len = rng.range(0, 20_000) as usize;
            let mut chunk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.range(0, 4) == 0 {
                chunk.fill(0);
            }
            let _ = no_panic("PageVerifier::check", &(pos, len), || v.check(Lsn(pos), &chunk));
            pos = pos.wrapping_add(if rng.range(0, 3) == 0 { rng.next() } else { len as u64 });
        }
    }
}

/// File names, history files, metadata, LSNs and whole command lines: random input never
/// panics, and valid names round-trip.
#[test]
fn name_and_argument_parsers_property() {
    let mut rng = Rng::new("name_and_argument_parsers_property");
    let alphabet = b"0123456789ABCDEFabcdefXx./-_ \t\n=#partialhistory";
    let pick = |rng: &mut Rng, n: usize| -> String {
        (0..n).map(|_| alphabet[rng.range(0, alphabet.len() as u64) as usize] as char).collect()
    };
    for _ in 0..50_000 {
        let n = rng.range(0, 40) as usize;
        let s = pick(&mut rng, n);
        let _ =
            no_panic("WalName::parse", &s, || WalName::parse(&s).map(|w| (w.segment(SEG), w.is_partial())));
        let _ = no_panic("Lsn::from_str", &s, || s.parse::<Lsn>());
        let _ = no_panic("parse_meta", &s, || pgreceivewal::physical::archive::parse_meta(s.as_bytes()));
        let tli = rng.range(0, 5) as u32;
        let _ = no_panic("parse_history", &s, || {
            pgreceivewal::physical::timeline::parse_history(s.as_bytes(), tli)
        });
        let raw: Vec<u8> = (0..rng.range(0, 60)).map(|_| rng.next() as u8).collect();
        let _ = no_panic("parse_history (bytes)", &raw, || {
            pgreceivewal::physical::timeline::parse_history(&raw, tli)
        });
        let _ = no_panic("parse_meta (bytes)", &raw, || pgreceivewal::physical::archive::parse_meta(&raw));
    }
    for _ in 0..10_000 {
        let seg_size = 1u64 << rng.range(20, 31);
        let id = SegmentId {
            tli: rng.range(1, u32::MAX as u64) as u32,
            segno: rng.next() % (u64::MAX / seg_size),
        };
        let name = id.file_name(seg_size);
        assert_eq!(WalName::parse(&name).and_then(|w| w.segment(seg_size)), Some(id), "{name}");
        assert!(WalName::parse(&id.partial_name(seg_size)).unwrap().is_partial());
        let l = Lsn(rng.next());
        assert_eq!(l.to_string().parse::<Lsn>().unwrap(), l);
    }
    let tokens = [
        "-D",
        "/x",
        "-E",
        "0/1",
        "-S",
        "slot",
        "-s",
        "5",
        "-n",
        "-v",
        "-vv",
        "--no-sync",
        "--synchronous",
        "--create-slot",
        "--drop-slot",
        "--if-not-exists",
        "-Z",
        "none",
        "-p",
        "5432",
        "-h",
        "h",
        "-U",
        "u",
        "-w",
        "-W",
        "--log-level",
        "info",
        "--log-format",
        "json",
        "--",
        "-",
        "--dir",
        "--s",
        "-Dx",
        "=",
        "--endpos=",
        "-?",
        "-V",
        "--port=0",
        "\u{e9}",
        "--help=1",
        "-E0/0",
    ];
    for _ in 0..20_000 {
        let args: Vec<OsString> = (0..rng.range(0, 8))
            .map(|_| OsString::from(tokens[rng.range(0, tokens.len() as u64) as usize]))
            .collect();
        let _ = no_panic("cli::parse", &args, || pgreceivewal::physical::cli::parse(args.clone()));
    }
}
