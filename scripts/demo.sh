#!/usr/bin/env bash
# Demo: pgreceivewal as a synchronous standby under a pgbench load.
#
# Starts a throwaway PostgreSQL cluster (15; PGRW_DEMO_VERSION=18 for 18) with
# 1 MB WAL segments, streams its WAL into a scratch directory with
#   pgreceivewal -D <dir> -S demo_slot --create-slot-if-missing --synchronous
# (the slot is created by pgreceivewal), makes it the synchronous standby, runs
# `pgbench -i -s 5` and `pgbench -T 10 -c 2`, switches WAL, stops pgreceivewal
# with SIGTERM and shows the archive and a pg_waldump summary of its last
# complete segment. Everything is removed on exit (PGRW_KEEP_TEST_DIRS=1 keeps it).
#
# Run it with `make demo`, which builds target/release/pgreceivewal first.
# PGRECEIVEWAL=/path/to/binary runs another build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/cluster.sh
. scripts/lib/cluster.sh
install_cleanup_trap

version=${PGRW_DEMO_VERSION:-15}
receiver=${PGRECEIVEWAL:-$PWD/target/release/pgreceivewal}
[[ -x $receiver ]] || { echo "demo: $receiver not found; run make build (or make demo)" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out waiting for $what"
        sleep 0.1
    done
}

step "PostgreSQL $version cluster with 1 MB WAL segments"
cluster_init demo "$version" --wal-segsize=1
cluster_start demo
port=$(cluster_port demo)
cluster_psql demo 'SELECT version()'

work=""
new_tmpdir work
archive=$work/archive
mkdir -m 0700 "$archive"
receiver_log=$work/pgreceivewal.log

step "pgreceivewal -D $archive -S demo_slot --create-slot-if-missing --synchronous"
"$receiver" -D "$archive" -h 127.0.0.1 -p "$port" -U postgres -S demo_slot --create-slot-if-missing --synchronous \
    </dev/null >"$receiver_log" 2>&1 &
receiver_pid=$!
register_pid "$receiver_pid"

receiver_streaming() {
    if ! kill -0 "$receiver_pid" 2>/dev/null; then
        cat "$receiver_log" >&2
        fail "pgreceivewal exited (its output is above)"
    fi
    [[ $(cluster_psql demo "SELECT count(*) FROM pg_stat_replication
                            WHERE application_name = 'pgreceivewal' AND state = 'streaming'") == 1 ]]
}
wait_for 30 "pgreceivewal to stream (application_name 'pgreceivewal' in pg_stat_replication)" receiver_streaming

step "synchronous_standby_names = 'pgreceivewal'"
cluster_set demo "synchronous_standby_names = 'pgreceivewal'"
cluster_psql demo "SELECT application_name, state, sync_state FROM pg_stat_replication"

pgbench=$(cluster_bin demo pgbench)
step "pgbench -i -s 5"
"$pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s 5 -q postgres 2>&1
step "pgbench -T 10 -c 2 (each commit waits for pgreceivewal's fsync)"
"$pgbench" -h 127.0.0.1 -p "$port" -U postgres -T 10 -c 2 -P 5 postgres 2>&1

step "pg_switch_wal()"
cluster_psql demo "SELECT pg_logical_emit_message(false, 'demo', 'switch')" >/dev/null
switch_lsn=$(cluster_psql demo 'SELECT pg_switch_wal()')
last_segment=$(cluster_psql demo "SELECT pg_walfile_name('$switch_lsn')")
echo "completed segment $last_segment (switch at $switch_lsn)"
wait_for 30 "$last_segment to be complete in the archive" test -f "$archive/$last_segment"

step "stop pgreceivewal (SIGTERM)"
kill -s TERM "$receiver_pid"
deadline=$((SECONDS + 30))
while kill -0 "$receiver_pid" 2>/dev/null && [[ $(ps -o stat= -p "$receiver_pid") != Z* ]]; do
    ((SECONDS < deadline)) || fail "pgreceivewal did not exit within 30 s of SIGTERM"
    sleep 0.1
done
status=0
wait "$receiver_pid" || status=$?
unregister_pid "$receiver_pid"
echo "pgreceivewal exited with status $status; its output:"
sed 's/^/    /' "$receiver_log"

step "archive $archive ($(find "$archive" -mindepth 1 -maxdepth 1 | wc -l) files)"
# shellcheck disable=SC2012 # ls -l is the point: sizes and modes as a person reads them.
# Full listing of a short archive; first and last entries of a long one.
ls -l "$archive" | awk '{ line[NR] = $0 }
    END { for (i = 1; i <= NR; i++)
              if (NR <= 14 || i <= 6 || i > NR - 6) print line[i]
              else if (i == 7) printf "    ... %d more ...\n", NR - 12 }'

step "pg_waldump --stats $last_segment"
# Only the resource managers that wrote something.
"$(cluster_bin demo pg_waldump)" --stats "$archive/$last_segment" | grep -Ev '^[[:alnum:]]+ +0 \('

((status == 0)) || fail "pgreceivewal exited with status $status"
step "done"
