#!/usr/bin/env bash
# The golden restore test: a primary whose only WAL archive is written by pgreceivewal
# crashes under load, and is restored from a base backup plus that archive (served by
# pgrestorewal as restore_command) to its last committed transaction. PostgreSQL's own
# pg_receivewal archives the same server side by side, and the two archives must be
# byte for byte identical, before and after the promotion to timeline 2.
#
# For each PostgreSQL version in $RESTORE_TEST_VERSIONS and segment size in
# $RESTORE_TEST_SEGSIZE:
#   1. init and start a cluster whose synchronous standby is our archiver
#   2. start pgreceivewal (archive1) and pg_receivewal (archive2), each on its own slot
#   3. pg_basebackup -X none: the backup is useless without the archive
#   4. a writer commits a timestamp several times a second and logs each commit it saw
#   5. load: pgbench -i, pgbench, dozens of tables created/updated/deleted concurrently
#   6. stop the writer, dump, wait for both archivers to flush the same LSN, kill -9
#      the postmaster and every backend, delete PGDATA
#   7. restore the base backup with restore_command = pgrestorewal, recover to the end
#      of the archive, promote
#   8. check: the dump after equals the dump before, every logged commit is there, the
#      archives are identical
#   9. archive the promoted cluster (timeline 2) into the same directories, stop it
#      cleanly, compare the archives again (history file included)
#  10. restore again from the base backup, across the timeline switch, to the end of
#      timeline 2 (RESTORE_TEST_SECOND_RESTORE=0 skips it)
#
# Knobs (environment):
#   ARCHIVER=pgreceivewal|pg_receivewal   what writes archive1 (pg_receivewal: test the
#                                          test itself without our binary)
#   RESTORE_TEST_VERSIONS="15 18"          PostgreSQL versions
#   RESTORE_TEST_SEGSIZE="1 16"            initdb --wal-segsize values, MiB: 1 makes many
#                                          segments fast, 16 is PostgreSQL's default
#   RESTORE_TEST_SCALE=20                  pgbench -i scale (about 15 MiB of WAL per unit)
#   RESTORE_TEST_PGBENCH_SECONDS=15        pgbench run alongside the table jobs
#   RESTORE_TEST_TABLES=48 RESTORE_TEST_JOBS=6 RESTORE_TEST_ROWS=5000
#   RESTORE_TEST_SECOND_RESTORE=1
#   RESTORE_TEST_COMPRESS=none             -Z for archive1's archiver in every run (gzip,
#                                          lz4, zstd): the archives are then compared
#                                          decompressed, and pgrestorewal serves the
#                                          compressed files
#   RESTORE_TEST_COMPRESSED_RUN=gzip       when RESTORE_TEST_COMPRESS is none, one more run
#                                          (first version, first segment size) with this -Z;
#                                          empty skips it
#   RESTORE_TEST_TIMEOUT=600               seconds any one wait may take
#   PGRW_BIN_DIR=target/release            where pgreceivewal and pgrestorewal are
#                                          (or PGRECEIVEWAL=..., PGRESTOREWAL=...)
#   PGRW_KEEP_TEST_DIRS=1                  keep clusters, archives and logs afterwards
#
# Runs as root (PostgreSQL, the archivers and pg_basebackup run as `postgres` through
# setpriv, so the restored server can read the archive) or as an ordinary user.
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib/cluster.sh
. "$here/lib/cluster.sh"

readonly ARCHIVER=${ARCHIVER:-pgreceivewal}
readonly VERSIONS=${RESTORE_TEST_VERSIONS:-15 18}
readonly SEGSIZES=${RESTORE_TEST_SEGSIZE:-1 16}
readonly SCALE=${RESTORE_TEST_SCALE:-20}
readonly PGBENCH_SECONDS=${RESTORE_TEST_PGBENCH_SECONDS:-15}
readonly TABLES=${RESTORE_TEST_TABLES:-48}
readonly JOBS=${RESTORE_TEST_JOBS:-6}
readonly ROWS=${RESTORE_TEST_ROWS:-5000}
readonly SECOND_RESTORE=${RESTORE_TEST_SECOND_RESTORE:-1}
readonly COMPRESS_ALL=${RESTORE_TEST_COMPRESS:-none}
readonly COMPRESSED_RUN=${RESTORE_TEST_COMPRESSED_RUN-gzip}
COMPRESS=$COMPRESS_ALL # this run's -Z
readonly BIN_DIR=${PGRW_BIN_DIR:-$repo/target/release}
readonly PGRECEIVEWAL=${PGRECEIVEWAL:-$BIN_DIR/pgreceivewal}
readonly PGRESTOREWAL=${PGRESTOREWAL:-$BIN_DIR/pgrestorewal}
# Generous bounds for anything that waits on the server or the archivers.
readonly TIMEOUT=${RESTORE_TEST_TIMEOUT:-600}

if [[ $EUID == 0 ]]; then
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
else
    AS_PG=()
fi

STEP="setup"
VERSION="" SEGSIZE="" RUN=""
W=""                 # this version's work directory: archives, base backup, logs
C=""                 # this version's cluster name
A1_PID="" A2_PID="" WRITER_PID=""
FROZEN_PIDS=()       # server processes we SIGSTOPped, to SIGCONT whatever happens
declare -A TIMINGS=()

say() { printf 'restore-test: %s\n' "$*"; }

fail() {
    printf 'restore-test: FAILED in %s: %s\n' "$STEP" "$*" >&2
    exit 1
}

step() {
    STEP="$RUN step $1"
    say "$STEP ($((SECONDS - VERSION_T0)) s)"
}

on_err() {
    local rc=$1 line=$2 cmd=$3
    if [[ $BASHPID != "$$" ]]; then
        # A subshell ($(...), a background job): say what failed; the main shell
        # then reports the step.
        printf 'restore-test: command failed with exit status %s at line %s: %s\n' "$rc" "$line" "$cmd" >&2
        exit "$rc"
    fi
    fail "command failed with exit status $rc at line $line: $cmd"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# Whatever happened, show what the server and archivers said, then let cluster.sh
# end every process and remove every directory.
on_exit() {
    local rc=$?
    trap - ERR
    set +e
    if ((${#FROZEN_PIDS[@]})); then kill -s CONT "${FROZEN_PIDS[@]}" 2>/dev/null; fi
    if ((rc != 0)) && [[ -n $C ]]; then
        local f
        for f in "$(cluster_logfile "$C" 2>/dev/null)" "$W/archiver1.log" "$W/archiver2.log"; do
            [[ -s $f ]] || continue
            printf '\n==> last lines of %s\n' "$f" >&2
            grep -v 'finished segment' "$f" | tail -n 15 >&2
        done
        [[ -n ${PGRW_KEEP_TEST_DIRS:-} ]] || say "set PGRW_KEEP_TEST_DIRS=1 to keep the directories" >&2
    fi
    (exit "$rc")
    cleanup_all
}
install_cleanup_trap
trap on_exit EXIT

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    { read -r stat </proc/"$1"/stat; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# wait_gone PID SECONDS WHAT: waits for a process to exit, reaps it if it is ours, and
# returns its status in WAIT_RC.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while alive "$pid"; do
        ((SECONDS < deadline)) || fail "$3 (pid $pid) still running after $2 s"
        sleep 0.1
    done
    WAIT_RC=0
    wait "$pid" 2>/dev/null || WAIT_RC=$?
}

psql_c() { cluster_psql "$C" "$@"; }

# The archivers ------------------------------------------------------------------------

# start_archivers: archive1 by $ARCHIVER with application_name pgreceivewal (the
# synchronous standby), archive2 by this version's pg_receivewal.
start_archivers() {
    local bindir conn a1
    bindir=$(cluster_bindir "$C")
    conn="host=127.0.0.1 port=$(cluster_port "$C") user=postgres"
    case $ARCHIVER in
        pgreceivewal) a1=$PGRECEIVEWAL ;;
        pg_receivewal) a1=$bindir/pg_receivewal ;;
    esac
    "${AS_PG[@]}" "$a1" -d "$conn application_name=pgreceivewal" -S slot1 -D "$W/archive1" \
        --synchronous -v -Z "$COMPRESS" >>"$W/archiver1.log" 2>&1 &
    A1_PID=$!
    register_pid "$A1_PID"
    "${AS_PG[@]}" "$bindir/pg_receivewal" -d "$conn application_name=pg_receivewal" -S slot2 -D "$W/archive2" \
        --synchronous -v >>"$W/archiver2.log" 2>&1 &
    A2_PID=$!
    register_pid "$A2_PID"

    local deadline=$((SECONDS + 60)) state
    while :; do
        alive "$A1_PID" || fail "archive1's $ARCHIVER exited (see $W/archiver1.log)"
        alive "$A2_PID" || fail "archive2's pg_receivewal exited (see $W/archiver2.log)"
        state=$(psql_c "SELECT string_agg(application_name || ':' || state || ':' || sync_state, ' '
                                          ORDER BY application_name) FROM pg_stat_replication")
        [[ $state == "pg_receivewal:streaming:async pgreceivewal:streaming:sync" ]] && break
        ((SECONDS < deadline)) || fail "archivers not streaming after 60 s (pg_stat_replication: $state)"
        sleep 0.2
    done
}

# stop_archivers: SIGINT, as a user would; both must exit cleanly.
stop_archivers() {
    local pid what
    kill -s INT "$A1_PID" "$A2_PID"
    for pid in "$A1_PID" "$A2_PID"; do
        if [[ $pid == "$A1_PID" ]]; then what="archive1's $ARCHIVER"; else what="archive2's pg_receivewal"; fi
        wait_gone "$pid" 60 "$what"
        unregister_pid "$pid"
        ((WAIT_RC == 0)) || fail "$what exited with status $WAIT_RC after SIGINT"
    done
    A1_PID="" A2_PID=""
}

# wait_caught_up: waits until the server has flushed all it wrote and both archivers
# report that same position flushed, twice in a row half a second apart.
wait_caught_up() {
    local deadline=$((SECONDS + TIMEOUT)) prev="" cur write flush a1 a2
    while :; do
        cur=$(psql_c "SELECT pg_current_wal_lsn() || ' ' || pg_current_wal_flush_lsn() || ' ' ||
            coalesce((SELECT max(flush_lsn)::text FROM pg_stat_replication WHERE application_name = 'pgreceivewal'), '-')
            || ' ' ||
            coalesce((SELECT max(flush_lsn)::text FROM pg_stat_replication WHERE application_name = 'pg_receivewal'), '-')")
        read -r write flush a1 a2 <<<"$cur"
        if [[ $write == "$flush" && $a1 == "$flush" && $a2 == "$flush" ]]; then
            if [[ $cur == "$prev" ]]; then
                CAUGHT_UP_LSN=$flush
                return 0
            fi
            prev=$cur
        else
            prev=""
        fi
        ((SECONDS < deadline)) ||
            fail "archivers did not catch up in $TIMEOUT s: server wrote $write flushed $flush, archive1 $a1, archive2 $a2"
        sleep 0.5
    done
}

# freeze_wal_producers: SIGSTOP the background writer and checkpointer, the only
# processes that write WAL on their own (autovacuum is off), and the WAL writer, which
# may flush (and so release to the walsenders) WAL inserted but not yet flushed: once
# the archivers have caught up, nothing new can reach one and not the other.
freeze_wal_producers() {
    local pids
    pids=$(psql_c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
                   WHERE backend_type IN ('background writer', 'checkpointer', 'walwriter')")
    [[ $(wc -w <<<"$pids") == 3 ]] || fail "expected a background writer, checkpointer and WAL writer, found pids '$pids'"
    # shellcheck disable=SC2206
    FROZEN_PIDS=($pids)
    kill -s STOP "${FROZEN_PIDS[@]}"
}

# crash_cluster: the primary is lost. Stop the postmaster so it forks nothing and
# restarts nothing, SIGKILL every child, then the postmaster.
crash_cluster() {
    local pm kids pid
    pm=$(cluster_pid "$C")
    alive "$pm" || fail "the postmaster is not running before the crash"
    kill -s STOP "$pm"
    kids=$(pgrep -P "$pm" || true)
    # shellcheck disable=SC2086
    [[ -z $kids ]] || kill -s KILL $kids
    kill -s KILL "$pm"
    wait_gone "$pm" 30 "killed postmaster"
    for pid in $kids; do wait_gone "$pid" 30 "killed backend"; done
    FROZEN_PIDS=()
}

# plain_name NAME: a WAL file name without its compression extension (.gz, .lz4, .zst).
plain_name() { sed -E 's/\.(gz|lz4|zst)(\.partial)?$/\2/' <<<"$1"; }

# decompressed FILE: the file's content, decompressed by its format's own tool when its name
# says it is compressed. A .partial may be an unfinished stream: the tools say so on stderr
# and still print all they decoded, which is what is compared.
decompressed() {
    case $1 in
        *.gz | *.gz.partial) gzip -dc <"$1" 2>/dev/null || true ;;
        *.lz4 | *.lz4.partial) lz4 -dc <"$1" 2>/dev/null || true ;;
        *.zst | *.zst.partial) zstd -dcq <"$1" 2>/dev/null || true ;;
        *) cat "$1" ;;
    esac
}

# same_wal FILE1 FILE2: FILE1 (archive1's, maybe compressed) holds FILE2's WAL. A
# compressed .partial is not padded: it must equal the start of FILE2, and FILE2 must hold
# nothing but zeros after it.
same_wal() {
    local a=$1 b=$2 n
    if [[ $(plain_name "$(basename "$a")") == "$(basename "$a")" ]]; then
        cmp -s "$a" "$b"
        return
    fi
    decompressed "$a" >"$W/decompressed"
    n=$(stat -c %s "$W/decompressed")
    if [[ $a == *.partial ]]; then
        cmp -s -n "$n" "$W/decompressed" "$b" &&
            [[ $(tail -c +"$((n + 1))" "$b" | tr -d '\0' | wc -c) -eq 0 ]]
    else
        cmp -s "$W/decompressed" "$b"
    fi
}

# compare_archives LABEL: same WAL file names in both (archive1's without a compression
# extension), every file the same WAL, and nothing else in them but pgreceivewal's own dot
# files in archive1.
compare_archives() {
    local label=$1 n1 n2 name other mismatch=() wal='^([0-9A-F]{24}(\.(gz|lz4|zst))?(\.partial)?|[0-9A-F]{8}\.history)$'
    for other in "$W/archive1" "$W/archive2"; do
        find "$other" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -Ev "$wal" | sort >"$W/others" || true
        if [[ $other == "$W/archive1" ]]; then
            grep -v '^\.pgreceivewal' "$W/others" >"$W/others.bad" || true
            if [[ -s $W/others ]]; then
                say "$label: pgreceivewal's own files in archive1: $(tr '\n' ' ' <"$W/others")"
            fi
        else
            cp "$W/others" "$W/others.bad"
        fi
        if [[ -s $W/others.bad ]]; then
            fail "$label: unexpected files in $other: $(tr '\n' ' ' <"$W/others.bad")"
        fi
    done
    find "$W/archive1" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -E "$wal" | sort >"$W/files1" || true
    sed -E 's/\.(gz|lz4|zst)(\.partial)?$/\2/' "$W/files1" | sort >"$W/names1"
    find "$W/archive2" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -E "$wal" | sort >"$W/names2" || true
    if ! diff -u "$W/names2" "$W/names1" >"$W/names.diff"; then
        fail "$label: the archives hold different files (- pg_receivewal, + $ARCHIVER):
$(grep '^[-+][0-9A-F]' "$W/names.diff" | head -20)"
    fi
    if [[ $COMPRESS != none ]] && ! grep -qE '\.(gz|lz4|zst)$' "$W/files1"; then
        fail "$label: -Z $COMPRESS, but archive1 holds no compressed segment"
    fi
    while read -r name; do
        same_wal "$W/archive1/$name" "$W/archive2/$(plain_name "$name")" || mismatch+=("$name")
    done <"$W/files1"
    ((${#mismatch[@]} == 0)) ||
        fail "$label: ${#mismatch[@]} files differ between the archives: ${mismatch[*]:0:10}
(first difference: $(cmp "$W/archive1/${mismatch[0]}" "$W/archive2/$(plain_name "${mismatch[0]}")" 2>&1 || true))"
    n1=$(wc -l <"$W/names1")
    n2=$(grep -c '\.partial$' "$W/names1" || true)
    say "$label: archives hold the same WAL: $n1 files ($n2 .partial, $(grep -c 'history$' "$W/names1" || true) history; archive1 compressed: $COMPRESS)"
}

# dump FILE: pg_dumpall of the cluster, minus the \restrict/\unrestrict lines that
# recent minor releases write with a random key each time.
dump() {
    "$(cluster_bindir "$C")/pg_dumpall" -h 127.0.0.1 -p "$(cluster_port "$C")" -U postgres -f "$1.raw"
    sed -E '/^\\(un)?restrict /d' "$1.raw" >"$1"
}

# The restore -------------------------------------------------------------------------

# restore_from_base_backup: PGDATA from the base backup, restore_command pgrestorewal
# over archive1, then start and wait for the end of recovery (promotion).
restore_from_base_backup() {
    local data
    data=$(cluster_datadir "$C")
    rm -rf "$data"
    cp -a "$W/base" "$data"
    "${AS_PG[@]}" touch "$data/recovery.signal"
    cluster_conf "$C" "restore_command = '$W/pgrestorewal -v -D $W/archive1 %f %p'" \
        "recovery_target_timeline = 'latest'"
    local log_before
    log_before=$(wc -l <"$(cluster_logfile "$C")")
    cluster_start "$C"
    local deadline=$((SECONDS + TIMEOUT))
    until [[ $(psql_c "SELECT pg_is_in_recovery()") == f ]]; do
        cluster_is_running "$C" || fail "the server exited during recovery (log: $(cluster_logfile "$C"))"
        ((SECONDS < deadline)) || fail "recovery did not end within $TIMEOUT s"
        sleep 0.5
    done
    tail -n "+$((log_before + 1))" "$(cluster_logfile "$C")" >"$W/recovery.log"
    if grep -E 'pgrestorewal: (error|warning)' "$W/recovery.log"; then
        fail "pgrestorewal complained during recovery (above)"
    fi
}

# Load --------------------------------------------------------------------------------

table_job() {
    # Through stdin, so that each statement is its own transaction.
    local job=$1 k sql
    for ((k = job; k <= TABLES; k += JOBS)); do
        sql="CREATE TABLE load_$k (id int PRIMARY KEY, n int NOT NULL, v text NOT NULL);
INSERT INTO load_$k SELECT g, g % 97, md5(g::text) FROM generate_series(1, $ROWS) g;
UPDATE load_$k SET n = n + 1, v = v || 'u' WHERE id % 3 = 0;
DELETE FROM load_$k WHERE id % 7 = 0;
CREATE INDEX ON load_$k (n);
BEGIN; INSERT INTO load_$k SELECT g, -1, 'rolled back' FROM generate_series($ROWS + 1, 2 * $ROWS) g; ROLLBACK;
INSERT INTO load_$k SELECT g, 0, 'late' FROM generate_series($ROWS + 1, $ROWS + 100) g;"
        if ((k % 8 == 0)); then sql+="
DROP TABLE load_$k;"; fi
        timeout "$TIMEOUT" "$(cluster_bindir "$C")/psql" -X -q -h 127.0.0.1 -p "$(cluster_port "$C")" -U postgres \
            -d postgres -v ON_ERROR_STOP=1 -f - <<<"$sql" >/dev/null || return 1
    done
}

# The writer: one INSERT per transaction, logged only after psql reported success,
# so every line of ticks.log is a commit the client saw.
writer_loop() {
    local i=0 out psql port
    psql=$(cluster_bindir "$C")/psql
    port=$(cluster_port "$C")
    while [[ ! -e $W/writer.stop ]]; do
        i=$((i + 1))
        if out=$(timeout 60 "$psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -c "INSERT INTO ticks VALUES ($i, clock_timestamp()) RETURNING id || ' ' || t" 2>>"$W/writer.err"); then
            printf '%s\n' "$out" >>"$W/ticks.log"
        else
            printf 'insert %d failed\n' "$i" >>"$W/writer.err"
        fi
        sleep 0.1
    done
}

# One version ---------------------------------------------------------------------------

run_version() {
    VERSION=$1 SEGSIZE=$2
    RUN="PostgreSQL $VERSION (${SEGSIZE} MiB segments)"
    [[ $COMPRESS == none ]] || RUN+=" -Z $COMPRESS"
    VERSION_T0=$SECONDS
    C=pg${VERSION}_${SEGSIZE}mb
    # The compressed run repeats a version and size: its cluster needs a name of its own.
    [[ $COMPRESS == none ]] || C+=_$COMPRESS
    local bindir conn port lsn

    step "1: init and start a cluster (--wal-segsize=$SEGSIZE)"
    cluster_init "$C" "$VERSION" --wal-segsize="$SEGSIZE"
    bindir=$(cluster_bindir "$C")
    port=$(cluster_port "$C")
    conn="host=127.0.0.1 port=$port user=postgres"
    cluster_conf "$C" "synchronous_standby_names = 'pgreceivewal'" "synchronous_commit = on" \
        "autovacuum = off" "max_wal_size = '1GB'" "log_replication_commands = on"
    new_tmpdir W
    [[ $EUID != 0 ]] || chown postgres:postgres "$W"
    "${AS_PG[@]}" mkdir -m 0700 "$W/archive1" "$W/archive2"
    # Somewhere the server's user can run it from: the checkout may live under /root.
    install -m 0755 "$PGRESTOREWAL" "$W/pgrestorewal"
    cluster_start "$C"
    # Slots reserved at a fresh checkpoint: both archivers start in the same segment.
    psql_c "CHECKPOINT" >/dev/null
    psql_c "SELECT pg_create_physical_replication_slot('slot1', true),
                   pg_create_physical_replication_slot('slot2', true)" >/dev/null

    step "2: start $ARCHIVER (archive1, synchronous standby) and pg_receivewal (archive2)"
    start_archivers

    step "3: base backup without WAL"
    "${AS_PG[@]}" "$bindir/pg_basebackup" -d "$conn" -D "$W/base" -X none -c fast >"$W/basebackup.log" 2>&1 ||
        fail "pg_basebackup failed: $(tail -n 5 "$W/basebackup.log")"
    [[ -f $W/base/backup_label ]] || fail "the base backup has no backup_label"
    if compgen -G "$W/base/pg_wal/0*" >/dev/null; then fail "the base backup holds WAL despite -X none"; fi

    step "4: start the writer"
    psql_c "CREATE TABLE ticks (id bigint PRIMARY KEY, t timestamptz NOT NULL)" >/dev/null
    writer_loop &
    WRITER_PID=$!
    register_pid "$WRITER_PID"

    step "5: load (pgbench -i -s $SCALE, pgbench ${PGBENCH_SECONDS} s, $TABLES tables in $JOBS jobs)"
    timeout "$TIMEOUT" "$bindir/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres \
        >"$W/pgbench-init.log" 2>&1 || fail "pgbench -i failed: $(tail -n 5 "$W/pgbench-init.log")"
    local pids=() pid j
    timeout "$TIMEOUT" "$bindir/pgbench" -n -c 4 -j 2 -T "$PGBENCH_SECONDS" -h 127.0.0.1 -p "$port" -U postgres \
        postgres >"$W/pgbench.log" 2>&1 &
    pids+=($!)
    register_pid "$!"
    for ((j = 1; j <= JOBS; j++)); do
        table_job "$j" 2>>"$W/tables.err" &
        pids+=($!)
        register_pid "$!"
    done
    for pid in "${pids[@]}"; do
        wait_gone "$pid" "$TIMEOUT" "a load job"
        unregister_pid "$pid"
        ((WAIT_RC == 0)) || fail "a load job failed with status $WAIT_RC: $(tail -n 5 "$W/pgbench.log" "$W/tables.err")"
    done
    say "load done: $(psql_c "SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0'::pg_lsn)") of WAL written, \
$(wc -l <"$W/ticks.log") ticks so far"

    step "6: stop the writer, dump, crash (kill -9) and delete PGDATA"
    touch "$W/writer.stop"
    wait_gone "$WRITER_PID" 120 "the writer"
    unregister_pid "$WRITER_PID"
    ((WAIT_RC == 0)) || fail "the writer failed with status $WAIT_RC"
    [[ ! -s $W/writer.err ]] || fail "the writer saw errors: $(head -n 5 "$W/writer.err")"
    [[ -s $W/ticks.log ]] || fail "the writer committed nothing"
    dump "$W/before.sql"
    freeze_wal_producers
    wait_caught_up
    lsn=$CAUGHT_UP_LSN
    crash_cluster
    stop_archivers
    rm -rf "$(cluster_datadir "$C")"
    say "crashed at $lsn after $(wc -l <"$W/ticks.log") logged commits"

    step "7: restore the base backup with pgrestorewal as restore_command"
    restore_from_base_backup
    local restored partial
    restored=$(grep -c 'pgrestorewal: restored ' "$W/recovery.log" || true)
    partial=$(grep -c 'pgrestorewal: restored .* from a .partial file' "$W/recovery.log" || true)
    say "recovery done: pgrestorewal restored $restored files, $partial of them from a .partial"
    # The crash left the newest WAL in a .partial (unless it hit a segment boundary):
    # recovery must have replayed it.
    if compgen -G "$W/archive1/00000001*.partial" >/dev/null && ((partial == 0)); then
        fail "recovery did not use the archive's .partial segment: did it stop early?"
    fi

    step "8: check the restored cluster and compare the archives"
    dump "$W/after.sql"
    diff -u "$W/before.sql" "$W/after.sql" >"$W/dump.diff" ||
        fail "the restored cluster differs from the crashed one ($(wc -l <"$W/dump.diff") diff lines):
$(head -n 30 "$W/dump.diff")"
    psql_c "SELECT id || ' ' || t FROM ticks ORDER BY id" | sort >"$W/ticks.db"
    sort "$W/ticks.log" >"$W/ticks.sorted"
    comm -23 "$W/ticks.sorted" "$W/ticks.db" >"$W/ticks.lost"
    [[ ! -s $W/ticks.lost ]] || fail "$(wc -l <"$W/ticks.lost") committed ticks are lost, e.g. $(head -n 3 "$W/ticks.lost")"
    local last
    last=$(tail -n 1 "$W/ticks.log")
    [[ $(psql_c "SELECT id || ' ' || t FROM ticks WHERE id = ${last%% *}") == "$last" ]] ||
        fail "the last committed tick ($last) is not in the restored cluster"
    [[ $(psql_c "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == 00000002 ]] ||
        fail "the restored cluster is not on timeline 2"
    say "all $(wc -l <"$W/ticks.log") logged commits present, the last one: $last"
    compare_archives "after the crash"

    step "9: archive timeline 2 into the same directories, compare again"
    # The base backup leaves pg_replslot's contents out, so the slots are gone.
    psql_c "SELECT pg_create_physical_replication_slot(s) FROM unnest(ARRAY['slot1', 'slot2']) s
            WHERE s NOT IN (SELECT slot_name FROM pg_replication_slots)" >/dev/null
    start_archivers
    psql_c "CREATE TABLE after_promotion AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g" \
        "SELECT pg_switch_wal()" \
        "INSERT INTO after_promotion SELECT g, 'more' FROM generate_series(20001, 30000) g" \
        "UPDATE after_promotion SET v = v || '!' WHERE id % 5 = 0" >/dev/null
    dump "$W/before2.sql"
    # A clean shutdown makes each walsender send everything, the shutdown checkpoint
    # included, and wait for its archiver to confirm the flush: both end at one point.
    cluster_stop "$C" fast
    stop_archivers
    [[ -f $W/archive1/00000002.history ]] || fail "archive1 has no 00000002.history"
    compare_archives "on timeline 2"

    if [[ $SECOND_RESTORE == 1 ]]; then
        step "10: restore again, across the switch to timeline 2"
        restore_from_base_backup
        dump "$W/after2.sql"
        diff -u "$W/before2.sql" "$W/after2.sql" >"$W/dump2.diff" ||
            fail "the second restore differs from timeline 2's end ($(wc -l <"$W/dump2.diff") diff lines):
$(head -n 30 "$W/dump2.diff")"
        [[ $(psql_c "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == 00000003 ]] ||
            fail "the second restore did not promote to timeline 3"
        grep -q 'pgrestorewal: restored "00000002.history"' "$W/recovery.log" ||
            fail "the second restore did not fetch 00000002.history"
        say "second restore matches the end of timeline 2"
    fi

    cluster_stop "$C" fast
    TIMINGS[$RUN]=$((SECONDS - VERSION_T0))
    say "$RUN passed in ${TIMINGS[$RUN]} s"
    rm -rf "$W/base" "$(cluster_datadir "$C")"
}

main() {
    case $ARCHIVER in
        pgreceivewal) [[ -x $PGRECEIVEWAL ]] || fail "no pgreceivewal at $PGRECEIVEWAL (cargo build --release)" ;;
        pg_receivewal) say "ARCHIVER=pg_receivewal: archive1 is written by pg_receivewal, not by us" ;;
        *) fail "ARCHIVER must be pgreceivewal or pg_receivewal, not '$ARCHIVER'" ;;
    esac
    [[ -x $PGRESTOREWAL ]] || fail "no pgrestorewal at $PGRESTOREWAL (cargo build --release)"
    local v size total_t0=$SECONDS runs=()
    for v in $VERSIONS; do
        for size in $SEGSIZES; do
            run_version "$v" "$size"
            runs+=("$RUN")
        done
    done
    if [[ $COMPRESS_ALL == none && -n $COMPRESSED_RUN ]]; then
        COMPRESS=$COMPRESSED_RUN
        run_version "${VERSIONS%% *}" "${SEGSIZES%% *}"
        runs+=("$RUN")
    fi
    STEP="summary"
    for v in "${runs[@]}"; do say "$v: ${TIMINGS[$v]} s"; done
    say "passed: every version restored to its last commit, archives identical ($((SECONDS - total_t0)) s)"
}

main
