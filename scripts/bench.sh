#!/usr/bin/env bash
# Benchmark: pgreceivewal against PostgreSQL's own pg_receivewal, side by side, in one run
# against one throwaway server, and the disk's own limits beside them. Prints a table with
# the ratio ours/theirs (docs/benchmarks.md records one run and how to read it).
#
#   1. Catch-up: a slot holds a backlog of BENCH_BACKLOG_GB GiB of WAL, written before any
#      archiver starts. Each tool fetches it to --endpos into its own empty directory, in the
#      default mode and with --synchronous. Runs alternate (ours first in odd runs, theirs
#      first in even ones); each run starts from a copy of the same slot, so both tools fetch
#      the very same bytes. Reported: MB/s (10^6 bytes), CPU seconds (user+sys) per GiB and
#      peak RSS, as medians with min-max, measured by /usr/bin/time.
#      With compression (BENCH_COMPRESS), the catch-up is run again with -Z for each method,
#      against pg_receivewal with the same method where it has it (it has no zstd; a build
#      without LZ4 has no lz4): MB/s, CPU s per GiB of WAL, and the compression ratio (WAL
#      bytes / bytes in the archive directory).
#   2. Synchronous commit: pgbench (BENCH_CLIENTS clients, BENCH_PGBENCH_SECONDS seconds,
#      synchronous_commit = on) with synchronous_standby_names naming each tool in turn
#      (running with -S and --synchronous), and with no synchronous standby as the ceiling.
#      Reported: TPS, average and p99 latency (p99 from pgbench's per-transaction log).
#   3. The limit: on the archive filesystem, sequential write with one fdatasync (dd), 16 MiB
#      writes each made durable (dd oflag=dsync, a WAL segment at a time) and the 8 kB
#      fdatasync rate (pg_test_fsync).
#   4. Restore: calls per second of pgrestorewal on an archive of 100 000 segments, against
#      cp (see the restore part below).
#   5. Logical: pgrecvlogical against pg_recvlogical with test_decoding and wal2json (ignored
#      tests, see below).
#   6. Apply: rows per second of pgapplylogical against PostgreSQL's own subscription on the
#      same changes (see the apply part below; its knobs are documented there).
#
# Knobs (environment):
#   BENCH_VERSION=18          PostgreSQL server, pg_receivewal and pgbench: 18 or 15
#   BENCH_BACKLOG_GB=2        catch-up backlog in GiB (decimals allowed: 0.2)
#   BENCH_RUNS=3              catch-up runs and pgbench rounds per tool (medians of these)
#   BENCH_PGBENCH_SECONDS=20  length of each pgbench run
#   BENCH_CLIENTS=4           pgbench clients (and threads)
#   BENCH_PLACEMENT=shared    part 2's CPU placement: shared (everything on every CPU) or
#                             pinned (the archiver alone on the last CPU, the server and
#                             pgbench on the others); the same for every tool
#   BENCH_DIR=/var/tmp        where the archive directories go (a real disk, not tmpfs)
#   BENCH_COMPRESS="gzip lz4 zstd"  -Z methods for the compressed catch-up runs ("" for none)
#   BENCH_MODES="default synchronous"  uncompressed catch-up modes ("" to measure only -Z)
#   BENCH_SKIP=               space-separated parts to skip: catchup sync disk restore logical apply
#   PGRECEIVEWAL=path         the binary to measure (default target/release/pgreceivewal)
#   BENCH_STATIC=path         the static (musl) build, measured beside it in parts 1 and 2
#                             (default target/x86_64-unknown-linux-musl/release/pgreceivewal
#                             when `make static` has built it; BENCH_STATIC= to leave it out)
#   PGRW_KEEP_TEST_DIRS=1     keep the cluster and logs afterwards
#
# Run it with `make bench` (deps and a release build first). Everything it makes (cluster,
# slots, archive directories) is removed on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/cluster.sh
. scripts/lib/cluster.sh

version=${BENCH_VERSION:-18}
backlog_gb=${BENCH_BACKLOG_GB:-2}
runs=${BENCH_RUNS:-3}
pgbench_seconds=${BENCH_PGBENCH_SECONDS:-20}
clients=${BENCH_CLIENTS:-4}
placement=${BENCH_PLACEMENT:-shared}
bench_base=${BENCH_DIR:-/var/tmp}
skip=" ${BENCH_SKIP:-} "
compress_methods=${BENCH_COMPRESS-gzip lz4 zstd}
plain_modes=${BENCH_MODES-default synchronous}
ours=${PGRECEIVEWAL:-$PWD/target/release/pgreceivewal}
static_bin=${BENCH_STATIC-$PWD/target/x86_64-unknown-linux-musl/release/pgreceivewal}
[[ -n $static_bin && -x $static_bin ]] || static_bin=
# The tools of parts 1 and 2, in the order of odd runs; even runs take them in reverse.
tools="ours theirs${static_bin:+ static}"
reversed() { local out="" t; for t in $1; do out="$t $out"; done; echo "${out% }"; }

fail() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench: %s\n' "$*" >&2; }
step() { printf '\n==> %s\n' "$*" >&2; }
skipped() { [[ $skip == *" $1 "* ]]; }

[[ $version == 15 || $version == 18 ]] || fail "BENCH_VERSION must be 15 or 18, not '$version'"
[[ $backlog_gb =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "BENCH_BACKLOG_GB must be a number of GiB, not '$backlog_gb'"
[[ $runs =~ ^[1-9][0-9]*$ ]] || fail "BENCH_RUNS must be a positive integer, not '$runs'"
[[ $pgbench_seconds =~ ^[1-9][0-9]*$ ]] || fail "BENCH_PGBENCH_SECONDS must be a positive integer"
[[ $clients =~ ^[1-9][0-9]*$ ]] || fail "BENCH_CLIENTS must be a positive integer"
[[ $placement == shared || $placement == pinned ]] || fail "BENCH_PLACEMENT must be shared or pinned, not '$placement'"
ncpu=$(nproc)
[[ $placement == shared ]] || ((ncpu >= 2)) || fail "BENCH_PLACEMENT=pinned needs at least 2 CPUs"
# Part 2's placement: with pinned, the archiver gets the last CPU to itself, the server (and
# every backend it forks, which inherit its affinity) and pgbench the others.
archiver_cpus=() server_cpus=()
if [[ $placement == pinned ]]; then
    archiver_cpus=(taskset -c "$((ncpu - 1))")
    server_cpus=(taskset -c "0-$((ncpu - 2))")
fi
[[ -x $ours ]] || fail "$ours not found; run make build (or make bench)"
# GNU time, not the shell keyword: it reports peak RSS. Debian package `time`.
[[ -x /usr/bin/time ]] || fail "/usr/bin/time not found; install the Debian package 'time' (apt-get install time)"
[[ -d $bench_base ]] || fail "BENCH_DIR=$bench_base is not a directory"

# Our own scratch space on the archive filesystem, removed after the clusters are stopped.
work=""
bench_cleanup() {
    local rc=$?
    cleanup_all
    if [[ -n $work && -d $work && -z ${PGRW_KEEP_TEST_DIRS:-} ]]; then rm -rf "$work"; fi
    return "$rc"
}
install_cleanup_trap
trap bench_cleanup EXIT
work=$(mktemp -d "$bench_base/pgrw-bench.XXXXXX")
fstype=$(findmnt -n -o FSTYPE -T "$work" 2>/dev/null || echo unknown)
[[ $fstype != tmpfs && $fstype != ramfs ]] ||
    fail "$work is on $fstype: fsync costs nothing there; set BENCH_DIR to a directory on a disk"

# --- helpers ---------------------------------------------------------------------------

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out waiting for $what"
        sleep 0.1
    done
}

# lsn_to_int X/Y: prints the LSN as a decimal byte position.
lsn_to_int() {
    local hi=${1%/*} lo=${1#*/}
    printf '%d\n' $(((16#$hi << 32) | 16#$lo))
}

# stats VALUES...: prints "median min max" (median of an even count: mean of the middle two).
stats() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "- - -"; exit }
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.6g %.6g %.6g\n", m, v[1], v[NR] }'
}

# fmt_stat DECIMALS VALUES...: "median (min-max)", or the single value when there is one run.
fmt_stat() {
    local d=$1 med lo hi
    shift
    (($#)) || { printf -- '-'; return; }
    read -r med lo hi < <(stats "$@")
    if (($# == 1)); then
        printf "%.${d}f" "$med"
    else
        printf "%.${d}f (%.${d}f-%.${d}f)" "$med" "$lo" "$hi"
    fi
}

# ratio A B: A/B to two decimals, from the medians of two value lists "a1 a2 ..." "b1 b2 ...".
ratio() {
    local a b
    # shellcheck disable=SC2086 # word splitting of the value lists is the point
    read -r a _ _ < <(stats $1)
    # shellcheck disable=SC2086
    read -r b _ _ < <(stats $2)
    awk -v a="$a" -v b="$b" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

# drop_slot NAME [CLUSTER]: drops a slot (of cluster pg by default) once its walsender has
# let go of it.
drop_slot() {
    local deadline=$((SECONDS + 30)) cl=${2:-pg}
    until [[ $(cluster_psql "$cl" "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1' AND NOT active") == 1 ]]; do
        ((SECONDS < deadline)) || fail "replication slot $1 still active after 30 s"
        sleep 0.1
    done
    cluster_psql "$cl" "SELECT pg_drop_replication_slot('$1')" >/dev/null
}

# --- the server --------------------------------------------------------------------------

step "PostgreSQL $version cluster (16 MB WAL segments)"
cluster_init pg "$version"
# A big max_wal_size keeps checkpoints (and their full-page images) out of the way while
# the backlog is written; the slot keeps the WAL anyway.
cluster_conf pg "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" "synchronous_commit = on" \
    "shared_buffers = '256MB'"
cluster_start pg
port=$(cluster_port pg)
bindir=$(cluster_bindir pg)
theirs=$(cluster_bin pg pg_receivewal)
pgbench=$(cluster_bin pg pgbench)
seg_size=$(cluster_psql pg "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
server_version=$(cluster_psql pg 'SHOW server_version')
theirs_version=$("$theirs" --version)
say "server $server_version on port $port; segment size $seg_size bytes"
say "ours:   $ours ($("$ours" --version))"
say "theirs: $theirs ($theirs_version)"
[[ -z $static_bin ]] || say "static: $static_bin ($("$static_bin" --version))"
say "archive filesystem: $work ($fstype, $(findmnt -n -o SOURCE -T "$work"))"
start_time=$(date -u '+%Y-%m-%d %H:%M UTC')
started=$SECONDS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Common connection flags, the same for both tools.
conn=(-h 127.0.0.1 -p "$port" -U postgres)

# run_tool TOOL LABEL DIR TIMEFILE LOG ARGS...: runs one tool under /usr/bin/time in the
# foreground; fails with its output when it fails.
run_tool() {
    local bin=$1 label=$2 dir=$3 tf=$4 log=$5
    shift 5
    if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" "$bin" -D "$dir" "${conn[@]}" -n "$@" >"$log" 2>&1; then
        cat "$log" >&2
        fail "$label failed (output above)"
    fi
}

# --- 1. catch-up -------------------------------------------------------------------------

declare -A mbps=() cpu=() rss=() zratio=()  # key "tool mode" -> space-separated values, one per run

# theirs_has METHOD: whether this pg_receivewal compresses with METHOD (it says so before
# connecting anywhere).
theirs_has() {
    local out
    # Captured first: it exits non-zero whatever it says (pipefail would hide grep's answer).
    out=$("$theirs" -D /nonexistent -h /nonexistent -n --compress "$1" 2>&1 || true)
    ! grep -qE 'compression.*support|support.*compression' <<<"$out"
}

catchup() {
    step "catch-up: writing a backlog of $backlog_gb GiB of WAL behind slot bench_anchor"
    cluster_psql pg "SELECT pg_create_physical_replication_slot('bench_anchor', true)" >/dev/null
    local anchor target written=0
    anchor=$(cluster_psql pg "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'bench_anchor'")
    target=$(awk -v g="$backlog_gb" 'BEGIN { printf "%.0f\n", g * 1073741824 }')
    # Rows of 960 bytes: below the TOAST threshold, so the WAL is as large as the rows.
    cluster_psql pg "CREATE TABLE bench_fill (id bigint, pad text) WITH (autovacuum_enabled = off)"
    while ((written < target)); do
        # About 200 MB of WAL per batch, less for the last.
        local rows=$(((target - written) / 1050 + 1))
        ((rows <= 200000)) || rows=200000
        cluster_psql pg "INSERT INTO bench_fill SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, $rows) g"
        written=$(cluster_psql pg "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$anchor')::bigint")
    done
    # The end: strictly inside WAL the server has flushed (so it can send it while idle).
    local endpos start_seg_start bytes
    endpos=$(cluster_psql pg "SELECT pg_current_wal_flush_lsn() - 1::numeric")
    start_seg_start=$(($(lsn_to_int "$anchor") / seg_size * seg_size))
    bytes=$(($(lsn_to_int "$endpos") + 1 - start_seg_start))
    say "backlog: slot restart_lsn $anchor, --endpos $endpos: $bytes bytes to fetch from the start of the first segment"
    backlog_bytes=$bytes

    local run mode tool order dir tf log slot e u s m
    for ((run = 1; run <= runs; run++)); do
        for mode in $plain_modes $compress_methods; do
            if ((run % 2)); then order=$tools; else order=$(reversed "$tools"); fi
            for tool in $order; do
                if [[ $tool == theirs && $mode != default && $mode != synchronous ]] && ! theirs_has "$mode"; then
                    continue
                fi
                slot="bench_${tool}_${mode:0:4}_$run"
                cluster_psql pg "SELECT pg_copy_physical_replication_slot('bench_anchor', '$slot')" >/dev/null
                dir=$work/archive-$tool
                tf=$work/time-$tool-$mode-$run
                log=$work/log-$tool-$mode-$run
                mkdir -m 0700 "$dir"
                local -a extra=()
                case $mode in
                    default) ;;
                    synchronous) extra=(--synchronous) ;;
                    *) extra=(--compress "$mode") ;;
                esac
                local bin=$ours
                [[ $tool == theirs ]] && bin=$theirs
                [[ $tool == static ]] && bin=$static_bin
                sync  # start each run with nobody's dirty pages in the way
                run_tool "$bin" "$tool ($mode, run $run)" "$dir" "$tf" "$log" -S "$slot" -E "$endpos" "${extra[@]}"
                read -r e u s m <"$tf"
                # Both tools must have archived every segment up to the end position.
                local last_seg complete
                last_seg=$(cluster_psql pg "SELECT pg_walfile_name('$endpos')")
                complete=$(find "$dir" -maxdepth 1 -name '[0-9A-F]*' ! -name '*.partial' | wc -l)
                compgen -G "$dir/$last_seg*" >/dev/null ||
                    fail "$tool ($mode, run $run) did not archive $last_seg; its files: $(find "$dir" -mindepth 1 -printf "%f " | head -c 300)"
                local mb cps
                mb=$(awk -v b="$bytes" -v e="$e" 'BEGIN { printf "%.1f", b / 1e6 / (e > 0 ? e : 0.01) }')
                cps=$(awk -v b="$bytes" -v u="$u" -v s="$s" 'BEGIN { printf "%.3f", (u + s) / (b / 1073741824) }')
                mbps["$tool $mode"]+="$mb "
                cpu["$tool $mode"]+="$cps "
                rss["$tool $mode"]+="$(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }') "
                local stored
                stored=$(find "$dir" -maxdepth 1 -name '[0-9A-F]*' -printf '%s\n' | awk '{ t += $1 } END { print t + 0 }')
                zratio["$tool $mode"]+="$(awk -v b="$bytes" -v s="$stored" 'BEGIN { printf "%.2f", b / (s > 0 ? s : 1) }') "
                printf 'bench: catch-up run %d %-11s %-6s %6.2f s  %7.1f MB/s  user %6.2f s  sys %6.2f s  %6.3f CPU s/GiB  peak RSS %6.1f MiB  (%d complete segments)\n' \
                    "$run" "$mode" "$tool" "$e" "$mb" "$u" "$s" "$cps" "$(awk -v k="$m" 'BEGIN { print k / 1024 }')" "$complete" >&2
                rm -rf "$dir"
                drop_slot "$slot"
            done
        done
    done
    drop_slot bench_anchor
    cluster_psql pg "DROP TABLE bench_fill" "CHECKPOINT"
}

# --- 2. synchronous commit ---------------------------------------------------------------

declare -A tps=() lat=() p99=()  # key tool ("none" for no standby) -> values, one per round

# pgbench_round KEY: one pgbench run; appends TPS, average and p99 latency (ms) to KEY.
pgbench_round() {
    local key=$1 out logdir
    logdir=$work/pgbench-$key-$round
    mkdir "$logdir"
    cluster_psql pg "CHECKPOINT" >/dev/null
    out=$("${server_cpus[@]}" "$pgbench" "${conn[@]}" -n -c "$clients" -j "$clients" -T "$pgbench_seconds" \
        -l --log-prefix="$logdir/tx" postgres 2>&1) || { printf '%s\n' "$out" >&2; fail "pgbench ($key) failed"; }
    local t a p
    t=$(awk '/^tps = / { print $3; exit }' <<<"$out")
    a=$(awk '/^latency average = / { print $4; exit }' <<<"$out")
    # Field 3 of pgbench's per-transaction log is the latency in microseconds.
    p=$(cat "$logdir"/tx.* | awk '{ print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }')
    [[ -n $t && -n $a ]] || { printf '%s\n' "$out" >&2; fail "could not read pgbench's output ($key)"; }
    tps[$key]+="$t "
    lat[$key]+="$a "
    p99[$key]+="$p "
    printf 'bench: pgbench round %d %-6s %9.1f TPS  latency average %7.3f ms  p99 %7.3f ms\n' "$round" "$key" "$t" "$a" "$p" >&2
    rm -rf "$logdir"
}

# sync_round TOOL: TOOL as the synchronous standby for one pgbench run.
sync_round() {
    local tool=$1 bin app slot dir log pid
    case $tool in
        ours) bin=$ours app=pgreceivewal ;;
        static) bin=$static_bin app=pgreceivewal ;;
        *) bin=$theirs app=pg_receivewal ;;
    esac
    slot=bench_sync_$tool
    dir=$work/archive-sync-$tool
    log=$work/log-sync-$tool-$round
    mkdir -m 0700 "$dir"
    "${archiver_cpus[@]}" "$bin" -D "$dir" "${conn[@]}" -n -S "$slot" --synchronous </dev/null >"$log" 2>&1 &
    pid=$!
    register_pid "$pid"
    is_sync() {
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$app exited (output above)"; }
        [[ $(cluster_psql pg "SELECT count(*) FROM pg_stat_replication
                              WHERE application_name = '$app' AND sync_state = 'sync'") == 1 ]]
    }
    cluster_set pg "synchronous_standby_names = '$app'"
    wait_for 30 "$app to be the synchronous standby" is_sync
    pgbench_round "$tool"
    cluster_set pg "synchronous_standby_names = ''"
    kill -s TERM "$pid"
    wait "$pid" || true
    unregister_pid "$pid"
    drop_slot "$slot"
    rm -rf "$dir"
}

sync_commit() {
    step "synchronous commit: pgbench -c $clients -j $clients -T $pgbench_seconds, $runs rounds, placement $placement"
    if [[ $placement == pinned ]]; then
        # The postmaster and the processes it has started; later backends inherit it.
        local p
        for p in $(cluster_pid pg) $(pgrep -P "$(cluster_pid pg)"); do
            taskset -p -c "0-$((ncpu - 2))" "$p" >/dev/null
        done
    fi
    # Slots first: neither tool creates a missing slot by itself (ours only when asked to).
    "$pgbench" "${conn[@]}" -i -q -s 10 postgres >"$work/pgbench-init.log" 2>&1 ||
        { cat "$work/pgbench-init.log" >&2; fail "pgbench -i failed"; }
    cluster_psql pg "VACUUM ANALYZE"
    local order tool
    for ((round = 1; round <= runs; round++)); do
        if ((round % 2)); then order="none $tools"; else order="none $(reversed "$tools")"; fi
        for tool in $order; do
            if [[ $tool == none ]]; then
                pgbench_round none
            else
                cluster_psql pg "SELECT pg_create_physical_replication_slot('bench_sync_$tool', true)" >/dev/null
                sync_round "$tool"
            fi
        done
    done
}

# --- 3. the disk -------------------------------------------------------------------------

declare -a disk_seq=() disk_seg=() disk_fsync=()

disk_limit() {
    step "the disk: sequential write + fdatasync, 16 MiB dsync writes, 8 kB fdatasync rate in $work"
    local i t0 t1 f=$work/ddtest mib=1024
    for ((i = 1; i <= runs; i++)); do
        sync
        t0=$(date +%s%N)
        dd if=/dev/zero of="$f" bs=1M count=$mib conv=fdatasync status=none
        t1=$(date +%s%N)
        disk_seq+=("$(awk -v n=$mib -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", n * 1048576 / 1e6 / (ns / 1e9) }')")
        rm -f "$f"
        sync
        t0=$(date +%s%N)
        dd if=/dev/zero of="$f" bs=16M count=$((mib / 16)) oflag=dsync status=none
        t1=$(date +%s%N)
        disk_seg+=("$(awk -v n=$mib -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", n * 1048576 / 1e6 / (ns / 1e9) }')")
        rm -f "$f"
        say "disk round $i: sequential ${disk_seq[-1]} MB/s, 16 MiB dsync writes ${disk_seg[-1]} MB/s"
    done
    # One 8 kB write + fdatasync, as a synchronous standby does per flush.
    local out
    out=$("$bindir/pg_test_fsync" -f "$work/fsynctest" -s 2 2>&1) || { printf '%s\n' "$out" >&2; fail "pg_test_fsync failed"; }
    disk_fsync+=("$(awk '/one 8kB write/ { s = 1 } s && $1 == "fdatasync" { print $2; exit }' <<<"$out")")
    rm -f "$work/fsynctest"
    say "pg_test_fsync: one 8 kB write + fdatasync ${disk_fsync[0]} ops/s"
}

skipped disk || disk_limit
skipped catchup || catchup
skipped sync || sync_commit

# --- the table ---------------------------------------------------------------------------

elapsed=$((SECONDS - started))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
{
    echo
    echo "pgreceivewal vs pg_receivewal: PostgreSQL $server_version, $(nproc) CPUs, archive on $fstype"
    echo "started $start_time, took ${elapsed} s; load average before: $load_before, after: $load_after"
    echo "catch-up backlog ${backlog_gb} GiB (${backlog_bytes:-0} bytes), $runs runs each; pgbench -c $clients -j $clients -T $pgbench_seconds, $runs rounds each, placement $placement"
    echo "medians, (min-max) over the runs; ratio = median ours / median theirs"
    echo
    row "measure" "pgreceivewal (ours)" "pg_receivewal (theirs)" "ours/theirs" "limit"
    row "---" "---:" "---:" "---:" "---:"
    seq_limit=$(fmt_stat 0 "${disk_seq[@]}")
    # Both tools write every segment twice (zeros first, then WAL), so WAL can be archived
    # at no more than half the disk's sequential rate.
    half_limit=-
    if ((${#disk_seq[@]})); then
        read -r half_limit _ _ < <(stats "${disk_seq[@]}")
        half_limit="disk/2 $(awk -v m="$half_limit" 'BEGIN { printf "%.0f", m / 2 }')"
    fi
    for mode in $plain_modes; do
        skipped catchup && break
        o=${mbps["ours $mode"]} t=${mbps["theirs $mode"]}
        # shellcheck disable=SC2086 # value lists
        row "catch-up $mode, MB/s" "$(fmt_stat 1 $o)" "$(fmt_stat 1 $t)" "$(ratio "$o" "$t")" "$half_limit"
        o=${cpu["ours $mode"]} t=${cpu["theirs $mode"]}
        # shellcheck disable=SC2086
        row "catch-up $mode, CPU s/GiB" "$(fmt_stat 3 $o)" "$(fmt_stat 3 $t)" "$(ratio "$o" "$t")" ""
        o=${rss["ours $mode"]} t=${rss["theirs $mode"]}
        # shellcheck disable=SC2086
        row "catch-up $mode, peak RSS MiB" "$(fmt_stat 1 $o)" "$(fmt_stat 1 $t)" "$(ratio "$o" "$t")" ""
    done
    for mode in $compress_methods; do
        skipped catchup && break
        for what in mbps cpu zratio; do
            declare -n vals=$what
            o=${vals["ours $mode"]:-} t=${vals["theirs $mode"]:-}
            case $what in
                mbps) label="catch-up -Z $mode, MB/s" d=1 ;;
                cpu) label="catch-up -Z $mode, CPU s/GiB" d=3 ;;
                zratio) label="catch-up -Z $mode, WAL bytes / stored bytes" d=2 ;;
            esac
            # shellcheck disable=SC2086 # value lists
            row "$label" "$(fmt_stat $d $o)" "$(fmt_stat $d $t)" "$( [[ -n $t ]] && ratio "$o" "$t" || echo -)" ""
            unset -n vals
        done
    done
    if ! skipped sync; then
        # shellcheck disable=SC2086
        none_tps=$(fmt_stat 1 ${tps[none]})
        # shellcheck disable=SC2086
        row "sync commit, TPS" "$(fmt_stat 1 ${tps[ours]})" "$(fmt_stat 1 ${tps[theirs]})" \
            "$(ratio "${tps[ours]}" "${tps[theirs]}")" "no standby $none_tps"
        # shellcheck disable=SC2086
        row "sync commit, latency avg ms" "$(fmt_stat 3 ${lat[ours]})" "$(fmt_stat 3 ${lat[theirs]})" \
            "$(ratio "${lat[ours]}" "${lat[theirs]}")" "no standby $(fmt_stat 3 ${lat[none]})"
        # shellcheck disable=SC2086
        row "sync commit, latency p99 ms" "$(fmt_stat 3 ${p99[ours]})" "$(fmt_stat 3 ${p99[theirs]})" \
            "$(ratio "${p99[ours]}" "${p99[theirs]}")" "no standby $(fmt_stat 3 ${p99[none]})"
    fi
    if ! skipped disk; then
        row "disk: 1 GiB write + 1 fdatasync, MB/s" "" "" "" "$seq_limit"
        row "disk: 16 MiB writes with O_DSYNC, MB/s" "" "" "" "$(fmt_stat 0 "${disk_seg[@]}")"
        row "disk: 8 kB write + fdatasync, ops/s" "" "" "" "$(fmt_stat 0 "${disk_fsync[@]}")"
    fi
    if [[ -n $static_bin ]]; then
        echo
        echo "the static (musl) build against the glibc build (ours) in the same run; ratio = static / ours"
        echo
        row "measure" "static (musl)" "ours (glibc)" "static/ours" ""
        row "---" "---:" "---:" "---:" "---:"
        for mode in default synchronous; do
            skipped catchup && break
            st=${mbps["static $mode"]} o=${mbps["ours $mode"]}
            # shellcheck disable=SC2086 # value lists
            row "catch-up $mode, MB/s" "$(fmt_stat 1 $st)" "$(fmt_stat 1 $o)" "$(ratio "$st" "$o")" ""
            st=${cpu["static $mode"]} o=${cpu["ours $mode"]}
            # shellcheck disable=SC2086
            row "catch-up $mode, CPU s/GiB" "$(fmt_stat 3 $st)" "$(fmt_stat 3 $o)" "$(ratio "$st" "$o")" ""
            st=${rss["static $mode"]} o=${rss["ours $mode"]}
            # shellcheck disable=SC2086
            row "catch-up $mode, peak RSS MiB" "$(fmt_stat 1 $st)" "$(fmt_stat 1 $o)" "$(ratio "$st" "$o")" ""
        done
        if ! skipped sync; then
            # shellcheck disable=SC2086
            row "sync commit, TPS" "$(fmt_stat 1 ${tps[static]})" "$(fmt_stat 1 ${tps[ours]})" \
                "$(ratio "${tps[static]}" "${tps[ours]}")" ""
            # shellcheck disable=SC2086
            row "sync commit, latency p99 ms" "$(fmt_stat 3 ${p99[static]})" "$(fmt_stat 3 ${p99[ours]})" \
                "$(ratio "${p99[static]}" "${p99[ours]}")" ""
        fi
    fi
}

# --- pgrestorewal against cp ----------------------------------------------------------------
# PostgreSQL runs the restore_command once per segment, so what a recovery from a large
# archive costs is calls per second on a large archive. The archive: BENCH_RESTORE_SEGMENTS
# segments of 16 MiB on timeline 1 (1.6 TB of WAL for 100 000), sparse (each opens with the
# long page header pgrestorewal checks, then a hole), except the BENCH_RESTORE_CALLS
# consecutive segments from the middle that each run fetches, which are written out in full
# so that a copy costs what copying real WAL costs. Each run fetches those segments one call
# at a time into one destination, as recovery does: pgrestorewal (`-D ARCHIVE %f %p`), `cp
# ARCHIVE/%f %p` (PostgreSQL's documented example), and `cp` followed by `sync %p` (an fsync
# of the copy: the durability pgrestorewal gives, apart from its rename and directory fsync).
# Runs alternate the order; one untimed pass of cp first puts the files in the page cache.
# Twice: with .pgreceivewal.meta (pgreceivewal's archive) and without (pg_receivewal's).
#   BENCH_RESTORE_SEGMENTS=100000  segments in the archive
#   BENCH_RESTORE_CALLS=20         calls per run
#   PGRESTOREWAL=path              the binary to measure (default target/release/pgrestorewal)
restore_segments=${BENCH_RESTORE_SEGMENTS:-100000}
restore_calls=${BENCH_RESTORE_CALLS:-20}
restorewal=${PGRESTOREWAL:-$PWD/target/release/pgrestorewal}
declare -A restore_cps=()  # key "tool archive" -> calls per second, one per run

restore_speed() {
    [[ $restore_segments =~ ^[1-9][0-9]*$ ]] || fail "BENCH_RESTORE_SEGMENTS must be a positive integer"
    [[ $restore_calls =~ ^[1-9][0-9]*$ ]] || fail "BENCH_RESTORE_CALLS must be a positive integer"
    ((restore_calls < restore_segments)) || fail "BENCH_RESTORE_CALLS must be less than BENCH_RESTORE_SEGMENTS"
    [[ -x $restorewal ]] || fail "$restorewal not found; run make build (or make bench)"
    command -v perl >/dev/null || fail "perl not found; it writes the test archive"
    local seg=16777216 arch=$work/restore-archive dest=$work/restore-dest
    local first=$((restore_segments / 2)) per=$((4294967296 / 16777216))
    step "restore: $restore_calls calls per run on an archive of $restore_segments segments ($runs runs)"
    mkdir "$arch" "$dest"
    perl scripts/lib/fake-archive.pl "$arch" "$restore_segments" "$seg" 7 "$first" "$restore_calls"
    local -a names=()
    local segno
    for ((segno = first; segno < first + restore_calls; segno++)); do
        names+=("$(printf '%08X%08X%08X' 1 $((segno / per)) $((segno % per)))")
    done
    # restore_fetch TOOL: one run of the calls; prints the elapsed nanoseconds.
    restore_fetch() {
        local tool=$1 name t0 t1
        t0=$(date +%s%N)
        for name in "${names[@]}"; do
            case $tool in
                pgrestorewal) "$restorewal" -D "$arch" "$name" "$dest/RECOVERYXLOG" ;;
                cp) cp "$arch/$name" "$dest/RECOVERYXLOG" ;;
                cp+fsync) cp "$arch/$name" "$dest/RECOVERYXLOG" && sync "$dest/RECOVERYXLOG" ;;
            esac || fail "$tool could not fetch $name"
        done
        t1=$(date +%s%N)
        echo $((t1 - t0))
    }
    restore_fetch cp >/dev/null
    local kind run order tool ns cps
    for kind in meta no-meta; do
        if [[ $kind == meta ]]; then
            printf 'system_identifier=7\nwal_segment_size=%s\n' "$seg" >"$arch/.pgreceivewal.meta"
        else
            rm -f "$arch/.pgreceivewal.meta"
        fi
        for ((run = 1; run <= runs; run++)); do
            if ((run % 2)); then order="pgrestorewal cp cp+fsync"; else order="cp+fsync cp pgrestorewal"; fi
            for tool in $order; do
                sync
                ns=$(restore_fetch "$tool")
                cps=$(awk -v n="$restore_calls" -v ns="$ns" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
                restore_cps["$tool $kind"]+="$cps "
                printf 'bench: restore run %d %-7s %-12s %8.1f calls/s\n' "$run" "$kind" "$tool" "$cps" >&2
            done
        done
    done
    rm -rf "$arch" "$dest"
}

if ! skipped restore; then
    restore_speed
    {
        echo
        echo "pgrestorewal vs cp: $restore_calls consecutive 16 MiB segments fetched one call at a time from an archive of $restore_segments; $runs runs each"
        echo
        row "measure" "pgrestorewal" "cp" "pgrestorewal/cp" "cp + fsync"
        row "---" "---:" "---:" "---:" "---:"
        for kind in meta no-meta; do
            o=${restore_cps["pgrestorewal $kind"]} t=${restore_cps["cp $kind"]} f=${restore_cps["cp+fsync $kind"]}
            label="restore, calls/s, with .pgreceivewal.meta"
            [[ $kind == no-meta ]] && label="restore, calls/s, without metadata"
            # shellcheck disable=SC2086 # value lists
            row "$label" "$(fmt_stat 1 $o)" "$(fmt_stat 1 $t)" "$(ratio "$o" "$t")" "$(fmt_stat 1 $f)"
        done
    }
fi

# --- pgrecvlogical against pg_recvlogical (test_decoding, wal2json) ---------------------------
# The same workload's WAL decoded by both tools and written to a file: changes per second and
# MB/s, on PostgreSQL 15 and 18 (tests/logical.rs, `bench`; PGRL_BENCH_ROWS sets the size),
# and one transaction of a million rows (`bench_large_txn`), also against pg_recvlogical with
# wal2json where the server has it (`make bench` installs it for 15; 18's build has none).
if ! skipped logical; then
    step "pgrecvlogical vs pg_recvlogical"
    cargo test --release --locked --test tests logical::bench -- --ignored --nocapture --test-threads=1
fi

# --- pgapplylogical against PostgreSQL's subscription ------------------------------------------
# Apply throughput on the same data: a source cluster (wal_level = logical) with pgbench's
# tables plus two of ours gets a logical slot (the anchor) once its initial rows are in, then
# the workload: BENCH_APPLY_TXNS pgbench-like transactions (three updates, two inserts and a
# delete each: tpcb-like plus a row of bench_items deleted and written again), then
# BENCH_APPLY_BULK rows inserted into bench_bulk in transactions of 10 000, then a marker
# row. pgrecvlogical writes it into a directory once (from a copy of the anchor). Each round,
# on a target cluster of the same version, every contender gets a fresh database made from
# one template (the schema and the initial rows, from pg_dump of the source):
#   - pgapplylogical: `-D DIR --until-caught-up -n`, timed from its start to its exit;
#   - PostgreSQL's subscription, from its own copy of the anchor slot (CREATE SUBSCRIPTION
#     ... WITH (create_slot = false, copy_data = false)), timed from CREATE SUBSCRIPTION
#     until the marker row is there; once with the subscription's default
#     synchronous_commit = off, once with synchronous_commit = on, the durability
#     pgapplylogical commits with.
# Rounds alternate the order; after each, the database's tables are compared with the
# source's (count and a hash sum of every row). Rows/s = changes in the directory (inserts,
# updates, deletes) / seconds.
#   BENCH_APPLY_TXNS=5000    pgbench-like transactions (6 changes each)
#   BENCH_APPLY_BULK=100000  rows of the bulk insert
#   PGAPPLYLOGICAL=path      the binary to measure (default target/release/pgapplylogical)
apply_txns=${BENCH_APPLY_TXNS:-5000}
apply_bulk=${BENCH_APPLY_BULK:-100000}
applylogical=${PGAPPLYLOGICAL:-$PWD/target/release/pgapplylogical}
recvlogical=$PWD/target/release/pgrecvlogical
apply_contenders="pgapplylogical subscription subscription-sync"
declare -A apply_rps=() apply_secs=()  # key contender -> values, one per round
apply_rows=0

apply_speed() {
    [[ $apply_txns =~ ^[0-9]+$ ]] || fail "BENCH_APPLY_TXNS must be a number of transactions"
    [[ $apply_bulk =~ ^[0-9]+$ ]] || fail "BENCH_APPLY_BULK must be a number of rows"
    [[ -x $applylogical ]] || fail "$applylogical not found; run make build (or make bench)"
    [[ -x $recvlogical ]] || fail "$recvlogical not found; run make build (or make bench)"
    step "apply: pgapplylogical vs CREATE SUBSCRIPTION, $apply_txns pgbench-like transactions and $apply_bulk bulk rows, $runs rounds"
    cluster_init apply_src "$version"
    cluster_conf apply_src "wal_level = logical" "synchronous_commit = off" "max_wal_size = '4GB'"
    cluster_start apply_src
    cluster_init apply_dst "$version"
    # The launcher starts an apply worker at most once per wal_retrieve_retry_interval (on 15,
    # for all subscriptions together): 5 s by default, which a subscription created just after
    # another would wait out.
    cluster_conf apply_dst "max_wal_size = '4GB'" "shared_buffers = '256MB'" "wal_retrieve_retry_interval = '50ms'"
    cluster_start apply_dst
    local sport dport
    sport=$(cluster_port apply_src)
    dport=$(cluster_port apply_dst)
    local src_pgbench
    src_pgbench=$(cluster_bin apply_src pgbench)
    dst_psql() { local db=$1; shift; "$(cluster_bindir apply_dst)/psql" -X -q -At -h 127.0.0.1 -p "$dport" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }

    # The initial state, on the source and (through pg_dump) in the target's template.
    "$src_pgbench" -h 127.0.0.1 -p "$sport" -U postgres -i -q -s 1 postgres >"$work/apply-init.log" 2>&1 ||
        { cat "$work/apply-init.log" >&2; fail "pgbench -i failed"; }
    cluster_psql apply_src \
        "CREATE TABLE bench_items (id int PRIMARY KEY, v int, s text)" \
        "INSERT INTO bench_items SELECT g, g, md5(g::text) FROM generate_series(0, 100001) g" \
        "CREATE TABLE bench_bulk (id bigint PRIMARY KEY, a int, s text, n numeric, ts timestamptz)" \
        "CREATE TABLE bench_done (id int PRIMARY KEY)" \
        "CREATE PUBLICATION bench_apply FOR ALL TABLES" \
        "VACUUM ANALYZE" >/dev/null
    dst_psql postgres -c "CREATE DATABASE bench_template"
    "$(cluster_bin apply_src pg_dump)" -h 127.0.0.1 -p "$sport" -U postgres --no-publications --no-subscriptions postgres |
        dst_psql bench_template >/dev/null
    dst_psql bench_template -c "VACUUM ANALYZE"
    cluster_psql apply_src "SELECT pg_create_logical_replication_slot('bench_apply_anchor', 'pgoutput')" >/dev/null

    # The workload.
    cat >"$work/apply-tx.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
\set item random(0, 50000) * 2 + :client_id % 2
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
DELETE FROM bench_items WHERE id = :item;
INSERT INTO bench_items VALUES (:item, :delta, md5(:aid::text));
END;
SQL
    if ((apply_txns > 0)); then
        # Two clients, each with its own half of bench_items (even and odd ids).
        "$src_pgbench" -h 127.0.0.1 -p "$sport" -U postgres -n -c 2 -j 2 -t $(((apply_txns + 1) / 2)) \
            -f "$work/apply-tx.sql" postgres >"$work/apply-pgbench.log" 2>&1 ||
            { cat "$work/apply-pgbench.log" >&2; fail "pgbench (apply workload) failed"; }
    fi
    local done_rows=0
    while ((done_rows < apply_bulk)); do
        local n=$((apply_bulk - done_rows))
        ((n <= 10000)) || n=10000
        cluster_psql apply_src "INSERT INTO bench_bulk SELECT g, g, md5(g::text), g / 7.0, now() FROM generate_series($((done_rows + 1)), $((done_rows + n))) g"
        done_rows=$((done_rows + n))
    done
    cluster_psql apply_src "INSERT INTO bench_done VALUES (1)"
    local endpos
    # The insert position: with synchronous_commit = off the write position lags behind.
    endpos=$(cluster_psql apply_src "SELECT pg_current_wal_insert_lsn()")

    # pgrecvlogical writes the directory once.
    local dir=$work/apply-out
    cluster_psql apply_src "SELECT pg_copy_logical_replication_slot('bench_apply_anchor', 'bench_apply_recv')" >/dev/null
    "$recvlogical" -d "host=127.0.0.1 port=$sport user=postgres dbname=postgres" -S bench_apply_recv -P bench_apply \
        -D "$dir" -E "$endpos" -n >"$work/apply-recv.log" 2>&1 ||
        { cat "$work/apply-recv.log" >&2; fail "pgrecvlogical failed"; }
    drop_slot bench_apply_recv apply_src
    apply_rows=$(find "$dir" -maxdepth 1 -type f ! -name '.*' -exec cat {} + | grep -c '^{"op":"\(insert\|update\|delete\)"')
    say "apply: $apply_rows changes in $(find "$dir" -maxdepth 1 -type f ! -name '.*' | wc -l) files ($(du -sh "$dir" | cut -f1))"

    # What the target must hold: per table, the count and a sum of row hashes.
    local sums="SELECT string_agg(format('%s %s %s', t, n, h), ' ' ORDER BY t) FROM (
        SELECT 'accounts' t, count(*) n, sum(hashtext(x::text)::bigint) h FROM pgbench_accounts x
        UNION ALL SELECT 'tellers', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_tellers x
        UNION ALL SELECT 'branches', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_branches x
        UNION ALL SELECT 'history', count(*), sum(hashtext(x::text)::bigint) FROM pgbench_history x
        UNION ALL SELECT 'items', count(*), sum(hashtext(x::text)::bigint) FROM bench_items x
        UNION ALL SELECT 'bulk', count(*), sum(hashtext(x::text)::bigint) FROM bench_bulk x
        UNION ALL SELECT 'done', count(*), 0 FROM bench_done x) s"
    local want
    want=$(cluster_psql apply_src "$sums")

    local run order who db t0 t1 secs got
    for ((run = 1; run <= runs; run++)); do
        if ((run % 2)); then order=$apply_contenders; else order=$(reversed "$apply_contenders"); fi
        for who in $order; do
            db=bench_${who//-/_}_$run
            dst_psql postgres -c "CREATE DATABASE $db TEMPLATE bench_template"
            dst_psql postgres -c "CHECKPOINT"
            sync
            case $who in
                pgapplylogical)
                    t0=$(date +%s%N)
                    "$applylogical" -D "$dir" -d "host=127.0.0.1 port=$dport user=postgres dbname=$db" \
                        --until-caught-up -n >"$work/apply-$db.log" 2>&1 ||
                        { cat "$work/apply-$db.log" >&2; fail "pgapplylogical failed (round $run)"; }
                    t1=$(date +%s%N)
                    ;;
                subscription*)
                    local sync_commit=off
                    [[ $who == subscription-sync ]] && sync_commit=on
                    cluster_psql apply_src "SELECT pg_copy_logical_replication_slot('bench_apply_anchor', '$db')" >/dev/null
                    t0=$(date +%s%N)
                    dst_psql "$db" -c "CREATE SUBSCRIPTION $db CONNECTION 'host=127.0.0.1 port=$sport user=postgres dbname=postgres'
                        PUBLICATION bench_apply WITH (create_slot = false, slot_name = '$db', copy_data = false,
                        synchronous_commit = $sync_commit)"
                    # Waits in the server (a fresh snapshot per statement), not by polling with psql.
                    dst_psql "$db" -c "SET statement_timeout = '900s'" -c "DO \$\$ BEGIN
                        WHILE NOT EXISTS (SELECT 1 FROM bench_done) LOOP PERFORM pg_sleep(0.01); END LOOP; END \$\$"
                    t1=$(date +%s%N)
                    dst_psql "$db" -c "DROP SUBSCRIPTION $db"
                    ;;
            esac
            got=$(dst_psql "$db" -c "$sums")
            [[ $got == "$want" ]] || fail "$who (round $run) did not produce the source's rows: source $want, target $got"
            secs=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.3f", ns / 1e9 }')
            apply_secs[$who]+="$secs "
            apply_rps[$who]+="$(awk -v n="$apply_rows" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') "
            printf 'bench: apply round %d %-17s %7.2f s  %8.0f rows/s\n' "$run" "$who" "$secs" \
                "$(awk -v n="$apply_rows" -v s="$secs" 'BEGIN { print n / s }')" >&2
            dst_psql postgres -c "DROP DATABASE $db"
        done
    done
    drop_slot bench_apply_anchor apply_src
    cluster_stop apply_dst
    cluster_stop apply_src
    rm -rf "$dir"
}

if ! skipped apply; then
    apply_load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    apply_speed
    {
        echo
        echo "pgapplylogical vs PostgreSQL's subscription: PostgreSQL $server_version, $apply_rows changes ($apply_txns pgbench-like transactions of 6 changes, $apply_bulk bulk-inserted rows), $runs rounds each"
        echo "load average before: $apply_load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        row "measure" "pgapplylogical" "subscription" "ours/subscription" "subscription, synchronous_commit = on"
        row "---" "---:" "---:" "---:" "---:"
        o=${apply_rps[pgapplylogical]} t=${apply_rps[subscription]} s=${apply_rps[subscription-sync]}
        # shellcheck disable=SC2086 # value lists
        row "apply, rows/s" "$(fmt_stat 0 $o)" "$(fmt_stat 0 $t)" "$(ratio "$o" "$t")" "$(fmt_stat 0 $s) (ours/it $(ratio "$o" "$s"))"
        o=${apply_secs[pgapplylogical]} t=${apply_secs[subscription]} s=${apply_secs[subscription-sync]}
        # shellcheck disable=SC2086
        row "apply, seconds" "$(fmt_stat 2 $o)" "$(fmt_stat 2 $t)" "$(ratio "$o" "$t")" "$(fmt_stat 2 $s)"
    }
fi
