# shellcheck shell=bash
# Throwaway PostgreSQL clusters for the test, demo and bench scripts.
#
# Source it from a bash script (it is safe under `set -euo pipefail`):
#
#   . "$(dirname "$0")/lib/cluster.sh"
#   install_cleanup_trap                   # stops and removes everything on exit
#   cluster_init  primary 15 --wal-segsize=1
#   cluster_start primary
#   cluster_psql  primary 'SELECT 1'
#   pgreceivewal -p "$(cluster_port primary)" ... & register_pid $!
#   cluster_stop  primary fast
#
# Each cluster lives in its own directory under one base directory made with
# `mktemp -d /tmp/pgrw-clusters.XXXXXX` and owned by the `postgres` OS user
# (PostgreSQL refuses to run as root, so when we are root the server and initdb
# run as `postgres` through setpriv; as any other user they run as that user).
# The directory holds data/, server.log, initdb.log and the Unix socket.
# Clusters listen on 127.0.0.1 only, on a free port above 20000 and below the
# kernel's ephemeral range, trust every local and 127.0.0.1 connection
# including replication, and have wal_level=replica, 10 WAL senders and 10 slots.
#
# Functions that set up state (cluster_init, cluster_start, register_pid,
# new_tmpdir, cluster_free_port VAR) must run in the script's own shell, not
# in `$(...)`, or the cleanup never hears of what they made. Accessors print
# and are meant for `$(...)`. Every failure prints why on stderr and exits.

[[ -n ${_PGRW_CLUSTER_SH:-} ]] && return 0
_PGRW_CLUSTER_SH=1

# shellcheck source-path=SCRIPTDIR source=../env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/env.sh"

declare -gA _CL_VERSION=() _CL_BINDIR=() _CL_DIR=() _CL_PORT=() _CL_PID=()
declare -gA _CL_EXTRA_PIDS=()  # pid -> start time, so a reused pid is never killed
declare -ga _CL_NAMES=()
declare -g _CL_BASE=""
declare -g _CL_PORTS_GIVEN=" "

_cl_die() {
    printf 'cluster.sh: error: %s\n' "$*" >&2
    exit 1
}

_cl_is_root() { [[ $EUID == 0 ]]; }

# Runs a command as the `postgres` OS user when we are root, else as ourselves.
as_postgres() {
    if _cl_is_root; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

# pg_bindir VERSION: prints the bin directory of PostgreSQL 15 or 18.
pg_bindir() {
    local dir
    case ${1:-} in
        15) dir=$PG15_BINDIR ;;
        18) dir=$PG18_BINDIR ;;
        *) _cl_die "unsupported PostgreSQL version '${1:-}' (use 15 or 18)" ;;
    esac
    [[ -x $dir/postgres ]] ||
        _cl_die "PostgreSQL $1 binaries not found at $dir; run scripts/install-deps.sh or make test"
    printf '%s\n' "$dir"
}

# cluster_free_port [VAR]: a TCP port nothing listens on, not handed out before
# by this script. With VAR, stores it there (and remembers it); without, prints
# it (and, in `$(...)`, cannot remember it).
cluster_free_port() {
    # Locals are prefixed: printf -v would otherwise set ours, not the caller's VAR.
    local _fp_lo _fp_hi _fp_start _fp_end _fp_port _fp_listening _fp_tries
    read -r _fp_lo _fp_hi </proc/sys/net/ipv4/ip_local_port_range
    # Stay below the ephemeral range: outgoing connections' local ports and the
    # Rust tests' bind(0) ports come from there.
    if ((_fp_lo - 20000 >= 1000)); then _fp_start=20000 _fp_end=$_fp_lo; else _fp_start=$_fp_lo _fp_end=$((_fp_hi + 1)); fi
    _fp_listening=" $(ss -Hltn 2>/dev/null | awk '{ sub(/.*:/, "", $4); printf "%s ", $4 }') "
    for ((_fp_tries = 0; _fp_tries < 1000; _fp_tries++)); do
        _fp_port=$((_fp_start + (RANDOM * 32768 + RANDOM) % (_fp_end - _fp_start)))
        [[ $_fp_listening == *" $_fp_port "* || $_CL_PORTS_GIVEN == *" $_fp_port "* ]] && continue
        _CL_PORTS_GIVEN+="$_fp_port "
        if (($#)); then printf -v "$1" '%s' "$_fp_port"; else printf '%s\n' "$_fp_port"; fi
        return 0
    done
    _cl_die "no free TCP port found in $_fp_start-$_fp_end"
}

_cl_ensure_base() {
    [[ -n $_CL_BASE ]] && return 0
    _CL_BASE=$(mktemp -d /tmp/pgrw-clusters.XXXXXX)
    if _cl_is_root; then chown postgres:postgres "$_CL_BASE"; fi
}

# new_tmpdir VAR: makes a scratch directory (removed by cleanup_all) and stores
# its path in VAR.
new_tmpdir() {
    (($# == 1)) || _cl_die "usage: new_tmpdir VAR"
    _cl_ensure_base
    local _nt_dir
    _nt_dir=$(mktemp -d "$_CL_BASE/tmp.XXXXXX")
    printf -v "$1" '%s' "$_nt_dir"
}

_cl_require() {
    [[ -n ${1:-} && -n ${_CL_DIR[$1]+set} ]] || _cl_die "no cluster named '${1:-}' (call cluster_init first)"
}

# True if the process exists and is not a zombie. (`read`, not `$(<file)`:
# under set -e a missing file in `$(<file)` exits the script despite `||`.)
_cl_alive() {
    local stat
    [[ -n ${1:-} ]] || return 1
    { read -r stat </proc/"$1"/stat; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# The process's start time (field 22 of /proc/PID/stat), empty if it is gone.
_cl_starttime() {
    local stat
    { read -r stat </proc/"$1"/stat; } 2>/dev/null || return 0
    stat=${stat##*) }
    local -a fields
    read -r -a fields <<<"$stat"
    printf '%s' "${fields[19]}"
}

# _cl_wait_gone PID SECONDS: waits for the process to exit and reaps it if it
# is our child. Fails on timeout.
_cl_wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while _cl_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || true
}

# cluster_init NAME VERSION [initdb args...]: initdb a new cluster.
# Example: cluster_init primary 15 --wal-segsize=1
cluster_init() {
    (($# >= 2)) || _cl_die "usage: cluster_init NAME VERSION [initdb args...]"
    local name=$1 version=$2
    shift 2
    [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || _cl_die "bad cluster name '$name' (letters, digits, _ and - only)"
    [[ -z ${_CL_DIR[$name]+set} ]] || _cl_die "cluster '$name' already exists"
    local bindir dir port
    bindir=$(pg_bindir "$version")
    _cl_ensure_base
    dir=$_CL_BASE/$name
    mkdir "$dir"
    if _cl_is_root; then chown postgres:postgres "$dir"; fi
    cluster_free_port port

    # -N: the cluster is thrown away, so initdb need not fsync; the server does.
    if ! (cd "$dir" && as_postgres "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C -N "$@") >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        _cl_die "initdb failed for cluster '$name' (PostgreSQL $version)"
    fi

    # Writing into the existing files keeps them owned by postgres.
    cat >"$dir/data/pg_hba.conf" <<'EOF'
# written by scripts/lib/cluster.sh: trust everything local, replication included
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
EOF
    cat >>"$dir/data/postgresql.conf" <<EOF

# added by scripts/lib/cluster.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
cluster_name = 'pgrw-$name'
log_line_prefix = '%m [%p] %q%a '
EOF
    _CL_VERSION[$name]=$version
    _CL_BINDIR[$name]=$bindir
    _CL_DIR[$name]=$dir
    _CL_PORT[$name]=$port
    _CL_PID[$name]=""
    _CL_NAMES+=("$name")
}

# Accessors, for `$(...)`.
cluster_port() { _cl_require "${1:-}"; printf '%s\n' "${_CL_PORT[$1]}"; }
cluster_dir() { _cl_require "${1:-}"; printf '%s\n' "${_CL_DIR[$1]}"; }
cluster_datadir() { _cl_require "${1:-}"; printf '%s\n' "${_CL_DIR[$1]}/data"; }
cluster_logfile() { _cl_require "${1:-}"; printf '%s\n' "${_CL_DIR[$1]}/server.log"; }
cluster_bindir() { _cl_require "${1:-}"; printf '%s\n' "${_CL_BINDIR[$1]}"; }
cluster_version() { _cl_require "${1:-}"; printf '%s\n' "${_CL_VERSION[$1]}"; }
cluster_pid() { _cl_require "${1:-}"; printf '%s\n' "${_CL_PID[$1]}"; }
cluster_conninfo() {
    _cl_require "${1:-}"
    printf 'host=127.0.0.1 port=%s user=postgres dbname=postgres\n' "${_CL_PORT[$1]}"
}
# cluster_bin NAME TOOL: path of one of the cluster's own tools (pg_waldump, pgbench...).
cluster_bin() {
    _cl_require "${1:-}"
    [[ -x ${_CL_BINDIR[$1]}/${2:-} ]] || _cl_die "no tool '${2:-}' in ${_CL_BINDIR[$1]}"
    printf '%s\n' "${_CL_BINDIR[$1]}/$2"
}
cluster_is_running() { _cl_require "${1:-}"; _cl_alive "${_CL_PID[$1]}"; }

# cluster_conf NAME 'key = value'...: appends lines to postgresql.conf (takes
# effect at the next start or cluster_reload).
cluster_conf() {
    _cl_require "${1:-}"
    local name=$1 line
    shift
    for line in "$@"; do printf '%s\n' "$line" >>"${_CL_DIR[$name]}/data/postgresql.conf"; done
}

# cluster_start NAME: starts the postmaster in the background and waits (up to
# 60 s) until it accepts connections.
cluster_start() {
    _cl_require "${1:-}"
    local name=$1 dir=${_CL_DIR[$1]} bindir=${_CL_BINDIR[$1]} port=${_CL_PORT[$1]}
    ! _cl_alive "${_CL_PID[$name]}" || _cl_die "cluster '$name' is already running"
    # `exec` all the way down (subshell -> setpriv -> postgres) so that $! is
    # the postmaster itself, the process that takes the shutdown signals.
    if _cl_is_root; then
        (cd "$dir" && exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
            "$bindir/postgres" -D "$dir/data") </dev/null >>"$dir/server.log" 2>&1 &
    else
        (cd "$dir" && exec "$bindir/postgres" -D "$dir/data") </dev/null >>"$dir/server.log" 2>&1 &
    fi
    local pid=$!
    _CL_PID[$name]=$pid
    local deadline=$((SECONDS + 60))
    until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2; do
        if ! _cl_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            _CL_PID[$name]=""
            tail -n 30 "$dir/server.log" >&2
            _cl_die "postgres for cluster '$name' exited during startup (log above: $dir/server.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$dir/server.log" >&2
            _cl_die "cluster '$name' not ready after 60 s (log above: $dir/server.log)"
        fi
        sleep 0.1
    done
}

# cluster_stop NAME [fast|immediate|smart]: signals the postmaster (SIGINT,
# SIGQUIT, SIGTERM) and waits for it to exit; escalates to SIGQUIT after 60 s
# and SIGKILL after 10 s more. A cluster that is not running is left alone.
cluster_stop() {
    _cl_require "${1:-}"
    local name=$1 mode=${2:-fast} sig
    case $mode in
        fast) sig=INT ;;
        immediate) sig=QUIT ;;
        smart) sig=TERM ;;
        *) _cl_die "unknown stop mode '$mode' (fast, immediate or smart)" ;;
    esac
    local pid=${_CL_PID[$name]}
    if _cl_alive "$pid"; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        if ! _cl_wait_gone "$pid" 60; then
            printf 'cluster.sh: warning: cluster %s ignored SIG%s for 60 s; sending SIGQUIT\n' "$name" "$sig" >&2
            kill -s QUIT "$pid" 2>/dev/null || true
            if ! _cl_wait_gone "$pid" 10; then
                kill -s KILL "$pid" 2>/dev/null || true
                _cl_wait_gone "$pid" 10 || true
            fi
        fi
    elif [[ -n $pid ]]; then
        wait "$pid" 2>/dev/null || true
    fi
    _CL_PID[$name]=""
}

# cluster_restart NAME [mode]: stop (fast by default) then start, same port.
cluster_restart() {
    cluster_stop "$@"
    cluster_start "$1"
}

# cluster_psql NAME [SQL...]: runs each SQL argument as its own -c (in one
# session), or stdin when none is given; prints unaligned tuples only.
cluster_psql() {
    _cl_require "${1:-}"
    local name=$1 sql
    shift
    local -a args=(-X -q -At -h 127.0.0.1 -p "${_CL_PORT[$name]}" -U postgres -d postgres -v ON_ERROR_STOP=1)
    if (($#)); then
        for sql in "$@"; do args+=(-c "$sql"); done
    else
        args+=(-f -)
    fi
    "${_CL_BINDIR[$name]}/psql" "${args[@]}"
}

# cluster_reload NAME: reloads the configuration and waits until new sessions
# see it (pg_conf_load_time changes), so what follows runs with it.
cluster_reload() {
    _cl_require "${1:-}"
    local name=$1 before deadline=$((SECONDS + 30))
    before=$(cluster_psql "$name" 'SELECT pg_conf_load_time()')
    cluster_psql "$name" 'SELECT pg_reload_conf()' >/dev/null
    while [[ $(cluster_psql "$name" 'SELECT pg_conf_load_time()') == "$before" ]]; do
        ((SECONDS < deadline)) || _cl_die "cluster '$name' did not reload its configuration within 30 s"
        sleep 0.05
    done
}

# cluster_set NAME 'key = value'...: cluster_conf, then cluster_reload if running.
cluster_set() {
    cluster_conf "$@"
    if cluster_is_running "$1"; then cluster_reload "$1"; fi
}

# register_pid PID: a background process (pgreceivewal, pgbench...) for
# cleanup_all to end: SIGTERM, then SIGKILL after 10 s.
register_pid() {
    local pid=${1:-}
    [[ $pid =~ ^[0-9]+$ ]] || _cl_die "usage: register_pid PID"
    _CL_EXTRA_PIDS[$pid]=$(_cl_starttime "$pid")
}

# unregister_pid PID: forget a process the script has ended and reaped itself.
unregister_pid() { unset '_CL_EXTRA_PIDS[$1]'; }

# cleanup_all: ends registered processes, stops every cluster (immediate: they
# are thrown away) and removes the base directory, unless PGRW_KEEP_TEST_DIRS
# is set. Safe to call more than once; keeps the script's exit status.
cleanup_all() {
    local rc=$?
    local -
    set +e
    local pid name
    local -a pids=()
    for pid in "${!_CL_EXTRA_PIDS[@]}"; do
        # A pid whose start time changed belongs to someone else now.
        if _cl_alive "$pid" && [[ $(_cl_starttime "$pid") == "${_CL_EXTRA_PIDS[$pid]}" ]]; then
            kill -s TERM "$pid" 2>/dev/null
            pids+=("$pid")
        else
            wait "$pid" 2>/dev/null
        fi
    done
    for pid in "${pids[@]}"; do
        _cl_wait_gone "$pid" 10 || { kill -s KILL "$pid" 2>/dev/null; _cl_wait_gone "$pid" 5; }
    done
    _CL_EXTRA_PIDS=()
    for name in "${_CL_NAMES[@]}"; do
        pid=${_CL_PID[$name]}
        if _cl_alive "$pid"; then
            kill -s QUIT "$pid" 2>/dev/null
            _cl_wait_gone "$pid" 10 || { kill -s KILL "$pid" 2>/dev/null; _cl_wait_gone "$pid" 5; }
        fi
        _CL_PID[$name]=""
    done
    if [[ -n $_CL_BASE && -d $_CL_BASE ]]; then
        if [[ -n ${PGRW_KEEP_TEST_DIRS:-} ]]; then
            printf 'cluster.sh: keeping %s (PGRW_KEEP_TEST_DIRS is set)\n' "$_CL_BASE" >&2
        else
            rm -rf "$_CL_BASE"
            _CL_BASE=""
        fi
    fi
    return "$rc"
}

# install_cleanup_trap: run cleanup_all on exit, including on SIGINT/SIGTERM/SIGHUP.
install_cleanup_trap() {
    trap cleanup_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}
