//! `--segment-command`: every completed segment is shipped exactly once, in order, by a
//! command that fails every other call (retried with back-off), and a `kill -9` and restart
//! neither skip a file nor repeat more than the one in flight.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::util::{
    pgreceivewal, send_signal, wait_for_exit, wait_until, Cluster, KillOnDrop, PgVersion, TestDir,
};

const SHIP_TIMEOUT: Duration = Duration::from_secs(90);

/// Fails every odd call (the first one included); on the others copies the file and records
/// its name, as `aws s3 cp` plus a ledger would.
const SHIP_SCRIPT: &str = r#"#!/bin/sh
set -e
state=$(dirname "$0")
n=$(cat "$state/calls" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$state/calls"
[ $((n % 2)) -eq 0 ] || exit 3
cp "$1" "$state/copies/$2.tmp"
mv "$state/copies/$2.tmp" "$state/copies/$2"
echo "$2" >> "$state/received"
"#;

/// The archive's completed files (segments and history files), in archive order (one
/// timeline here, so name order).
fn completed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| (n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())) || n.ends_with(".history"));
    names.sort();
    names
}

fn received(state: &Path) -> Vec<String> {
    fs::read_to_string(state.join("received")).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn ship(version: PgVersion) {
    let c = Cluster::builder(version).wal_segsize_mb(1).start();
    let t = TestDir::new("ship");
    let state = t.join("state");
    fs::create_dir_all(state.join("copies")).unwrap();
    fs::write(state.join("ship.sh"), SHIP_SCRIPT).unwrap();
    let dir = t.join("archive");
    let command = format!("sh {} %p %f", state.join("ship.sh").display());
    let start = |log: &str| {
        let mut cmd = pgreceivewal();
        cmd.args(c.conn_args())
            .arg("-D")
            .arg(&dir)
            .args(["-v", "--segment-command", &command])
            .stderr(fs::File::create(t.join(log)).unwrap());
        KillOnDrop::spawn(&mut cmd)
    };
    let all_shipped = |at_least: usize| {
        let done = completed(&dir);
        let got = received(&state);
        done.len() >= at_least && done.iter().all(|n| got.contains(n))
    };

    let mut first = start("first.log");
    c.generate_wal(3);
    c.switch_wal();
    wait_until(SHIP_TIMEOUT, "3 completed segments shipped", || all_shipped(3));
    // Every completed file once, in order, byte for byte, although every other call failed.
    let done = completed(&dir);
    assert_eq!(received(&state), done);
    for name in &done {
        assert!(
            fs::read(state.join("copies").join(name)).unwrap() == fs::read(dir.join(name)).unwrap(),
            "{name}"
        );
    }
    let log = fs::read_to_string(t.join("first.log")).unwrap();
    assert!(log.contains("segment command failed for") && log.contains("exit status 3"), "{log}");
    // The marker follows the command's success.
    let last = format!("{}\n", done.last().unwrap());
    wait_until(SHIP_TIMEOUT, "the marker to name the last file shipped", || {
        fs::read_to_string(dir.join(".pgreceivewal.shipped")).ok().as_deref() == Some(last.as_str())
    });

    // kill -9 while the next files are being shipped, more WAL while it is down, a restart.
    c.generate_wal(2);
    wait_until(SHIP_TIMEOUT, "a new segment", || completed(&dir).len() > done.len());
    send_signal(first.id(), "KILL");
    wait_for_exit(&mut first, Duration::from_secs(10)).expect("killed");
    c.generate_wal(2);
    let mut second = start("second.log");
    c.generate_wal(1);
    c.switch_wal();
    let before = done.len();
    wait_until(SHIP_TIMEOUT, "every completed segment shipped after the restart", || all_shipped(before + 4));
    assert!(second.signal_and_wait("TERM", Duration::from_secs(30)).success());

    let done = completed(&dir);
    let got = received(&state);
    let mut once = got.clone();
    once.dedup();
    // In archive order without a gap (a file completed just before the stop may be left for
    // the next run), nothing shipped twice but the one in flight at the kill, right again.
    assert!(
        once.len() >= before + 4 && once[..] == done[..once.len()],
        "shipped {got:?}\ncompleted {done:?}"
    );
    assert!(got.len() - once.len() <= 1, "more than the file in flight was shipped again: {got:?}");
    for name in &once {
        assert!(
            fs::read(state.join("copies").join(name)).unwrap() == fs::read(dir.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn segment_command_15() {
    ship(PgVersion::V15);
}

#[test]
fn segment_command_18() {
    ship(PgVersion::V18);
}

/// Across a promotion: the new timeline's history file is shipped after the old timeline's
/// last complete segment and before the new timeline's first, as the writer completed them;
/// the old timeline's last, partial segment is not shipped.
fn ship_across_timeline_switch(version: PgVersion) {
    let p = Cluster::builder(version).wal_segsize_mb(1).conf("autovacuum = off").start();
    p.generate_wal(2);
    let s = Cluster::builder(version).standby_of(&p).conf("autovacuum = off").start();
    let t = TestDir::new("ship-tli");
    let state = t.join("state");
    fs::create_dir_all(state.join("copies")).unwrap();
    fs::write(state.join("ship.sh"), SHIP_SCRIPT).unwrap();
    let dir = t.join("archive");
    let command = format!("sh {} %p %f", state.join("ship.sh").display());
    let mut cmd = pgreceivewal();
    cmd.args(s.conn_args())
        .arg("-D")
        .arg(&dir)
        .args(["-v", "--segment-command", &command])
        .stderr(fs::File::create(t.join("log")).unwrap());
    let mut ours = KillOnDrop::spawn(&mut cmd);
    p.generate_wal(2);
    let target = p.current_lsn();
    wait_until(Duration::from_secs(30), "the archiver to receive from the standby", || {
        s.psql(&format!("SELECT count(*) FROM pg_stat_replication WHERE write_lsn >= '{target}'")) == "1"
    });
    s.promote();
    s.generate_wal(2);
    s.switch_wal();
    wait_until(SHIP_TIMEOUT, "the new timeline's history and segments shipped", || {
        let done = completed(&dir);
        let got = received(&state);
        done.iter().any(|n| n.starts_with("00000002") && n.len() == 24)
            && done.iter().all(|n| got.contains(n))
    });
    assert!(ours.signal_and_wait("TERM", Duration::from_secs(30)).success());
    let done = completed(&dir);
    let (old, new): (Vec<&String>, Vec<&String>) =
        done.iter().filter(|n| n.len() == 24).partition(|n| n.starts_with("00000001"));
    let mut expected: Vec<String> = old.into_iter().cloned().collect();
    expected.push("00000002.history".to_string());
    expected.extend(new.into_iter().cloned());
    assert_eq!(received(&state), expected);
    let partial = fs::read_dir(&dir).unwrap().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.starts_with("00000001") && n.ends_with(".partial")
    });
    assert!(partial, "the old timeline ends in a .partial segment: {done:?}");
}

#[test]
fn segment_command_across_timeline_switch_15() {
    ship_across_timeline_switch(PgVersion::V15);
}

#[test]
fn segment_command_across_timeline_switch_18() {
    ship_across_timeline_switch(PgVersion::V18);
}
