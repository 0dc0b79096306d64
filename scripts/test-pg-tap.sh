#!/usr/bin/env bash
# PostgreSQL's own test of pg_receivewal as the judge of "drop-in" (run by `make test`;
# alone: `bash scripts/test-pg-tap.sh` after `make deps build`).
#
# Runs src/bin/pg_basebackup/t/020_pg_receivewal.pl of the installed PostgreSQL 15 with
# `prove`, the way a user would try us: in a bin directory where `pg_receivewal` is a
# symlink to target/release/pgreceivewal and every other tool is PostgreSQL 15's own.
#
# Every subtest must pass but one, by name: "restart LSN of new slot is null". Our
# --create-slot reserves WAL at once on purpose (a slot that holds nothing until the first
# connection lets the server recycle WAL the archive still needs), so that subtest must
# FAIL: if it passes, --create-slot stopped reserving WAL. A skipped subtest counts as a
# failure (it checked nothing).
#
# What it needs, installed when missing (as root): perl's IPC::Run (libipc-run-perl) and the
# lz4 command. PostgreSQL::Test::Cluster/Utils and pg_regress come with postgresql-client-15
# (under /usr/lib/postgresql/15/lib/pgxs). The test file itself is not in any binary
# package: it is taken from the upstream tarball of Debian's postgresql-15 source package of
# the installed version (https from deb.debian.org, the tarball checked against the .dsc's
# SHA-256) and kept in $PGRW_CACHE/pg-tap, so later runs are offline. It is never copied
# into this repository.
#
# PostgreSQL refuses to run as root, so as root the suite runs as the `postgres` user
# (setpriv), in a scratch directory under /tmp that is removed afterwards (kept, with the
# suite's logs, when something failed). Takes about 10 s.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh

readonly SUITE=020_pg_receivewal.pl
readonly EXPECTED_FAILURE='restart LSN of new slot is null'
readonly PGXS=/usr/lib/postgresql/15/lib/pgxs
readonly TEST_PERL=$PGXS/src/test/perl
readonly PG_REGRESS=$PGXS/src/test/regress/pg_regress
readonly POOLS=(https://deb.debian.org/debian/pool/main https://deb.debian.org/debian-security/pool/updates/main)
ours=$(pwd)/${CARGO_TARGET_DIR:-target}/release/pgreceivewal
readonly ours

say() { printf 'test-pg-tap: %s\n' "$*"; }
fail() {
    printf 'test-pg-tap: FAILED: %s\n' "$*" >&2
    exit 1
}
is_root() { [[ $EUID == 0 ]]; }
as_postgres() {
    if is_root; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

# Debian packages this test needs beyond `make deps`.
ensure_packages() {
    local pkg status missing=()
    for pkg in libipc-run-perl lz4; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [[ $status == ii* ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    is_root || fail "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
}

# Prints the path of the cached suite for the installed PostgreSQL 15, fetching it first if
# needed.
suite_file() {
    local deb_version upstream dir
    deb_version=$(dpkg-query -W -f='${Version}' postgresql-client-15 2>/dev/null) ||
        fail "postgresql-client-15 is not installed (make deps)"
    deb_version=${deb_version#*:}
    upstream=${deb_version%%-*}
    dir=$PGRW_CACHE/pg-tap/postgresql-$upstream
    if [[ ! -s $dir/$SUITE ]]; then
        fetch_suite "$deb_version" "$upstream" "$dir" >&2
    fi
    printf '%s\n' "$dir/$SUITE"
}

# A subshell, so that its download directory goes on any exit.
fetch_suite() (
    deb_version=$1 upstream=$2 dir=$3
    orig=postgresql-15_$upstream.orig.tar.bz2
    mkdir -p "$PGRW_CACHE/pg-tap" || fail "cannot create $PGRW_CACHE/pg-tap"
    # Two runs at once must not fetch into the same place.
    exec 8>"$PGRW_CACHE/pg-tap/.lock"
    flock 8
    [[ -s $dir/$SUITE ]] && exit 0
    tmp=$(mktemp -d "$PGRW_CACHE/pg-tap/fetch.XXXXXX")
    trap 'rm -rf -- "$tmp"' EXIT
    say "fetching $SUITE of PostgreSQL $upstream (Debian source postgresql-15 $deb_version)"
    for pool in "${POOLS[@]}"; do
        if curl -fsS --retry 3 -o "$tmp/dsc" "$pool/p/postgresql-15/postgresql-15_$deb_version.dsc" 2>/dev/null; then
            break
        fi
        rm -f "$tmp/dsc"
    done
    [[ -s $tmp/dsc ]] || fail "postgresql-15_$deb_version.dsc is in none of ${POOLS[*]}"
    sha=$(awk -v f="$orig" '/^Checksums-Sha256:/ { in_sums = 1; next } /^[^ ]/ { in_sums = 0 }
        in_sums && $3 == f { print $1 }' "$tmp/dsc")
    [[ $sha =~ ^[0-9a-f]{64}$ ]] || fail "postgresql-15_$deb_version.dsc lists no SHA-256 for $orig"
    curl -fsS --retry 3 -o "$tmp/$orig" "$pool/p/postgresql-15/$orig" || fail "could not download $orig from $pool"
    got=$(sha256sum "$tmp/$orig" | cut -d' ' -f1)
    [[ $got == "$sha" ]] || fail "$orig has SHA-256 $got, but the .dsc says $sha"
    tar -xjf "$tmp/$orig" -C "$tmp" "postgresql-$upstream/src/bin/pg_basebackup/t/$SUITE" ||
        fail "$orig holds no src/bin/pg_basebackup/t/$SUITE"
    mkdir -p "$dir"
    install -m 0644 "$tmp/postgresql-$upstream/src/bin/pg_basebackup/t/$SUITE" "$dir/$SUITE.new"
    mv "$dir/$SUITE.new" "$dir/$SUITE"
    chmod a+rx "$PGRW_CACHE/pg-tap" "$dir"
)

# Stops every server the suite left running in $work (its END block normally does; not
# when prove was killed), as the user it runs as.
stop_servers() {
    local pidfile
    while IFS= read -r -d '' pidfile; do
        as_postgres "$PG15_BINDIR/pg_ctl" stop -m immediate -D "$(dirname "$pidfile")" >/dev/null 2>&1 || true
    done < <(find "$work" -name postmaster.pid -print0 2>/dev/null)
}

[[ -x $ours ]] || fail "$ours not found; run make build"
[[ -d $TEST_PERL/PostgreSQL/Test && -x $PG_REGRESS ]] ||
    fail "PostgreSQL 15's TAP modules are not in $PGXS (postgresql-client-15; make deps)"
ensure_packages
suite=$(suite_file)

work=$(mktemp -d /tmp/pgrw-tap.XXXXXX)
readonly work
ok=false
cleanup() {
    stop_servers
    if $ok; then
        rm -rf -- "$work"
    else
        printf 'test-pg-tap: kept %s (the suite log is %s)\n' "$work" "$work/tmp_check/log/regress_log_${SUITE%.pl}" >&2
    fi
}
trap cleanup EXIT
mkdir "$work/bin" "$work/t"
for tool in "$PG15_BINDIR"/*; do
    ln -s "$tool" "$work/bin/"
done
cp "$suite" "$work/t/$SUITE"
chmod -R a+rwX "$work"
# The suite runs it as `postgres`, which may not reach the build tree (a checkout under
# /root): then the symlink points at a copy.
target=$ours
if ! as_postgres test -x "$ours"; then
    target=$work/pgreceivewal
    install -m 0755 "$ours" "$target"
fi
ln -sfn "$target" "$work/bin/pg_receivewal"

pg_version=$(basename "$(dirname "$suite")")
say "running ${pg_version/-/ }'s $SUITE with $ours as pg_receivewal"
start=$SECONDS
# prove fails the file for its one expected failure; the verdict is ours, from the TAP lines.
(cd "$work" && as_postgres env -i HOME="$work" TMPDIR="$work" TESTDIR="$work" \
    PATH="$work/bin:/usr/bin:/bin" PG_REGRESS="$PG_REGRESS" \
    GZIP_PROGRAM="$(command -v gzip)" LZ4="$(command -v lz4)" \
    prove -v -I "$TEST_PERL" "t/$SUITE") >"$work/prove.out" 2>&1 || true
elapsed=$((SECONDS - start))

plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$work/prove.out" | head -n1)
mapfile -t results < <(grep -E '^(not )?ok [0-9]+' "$work/prove.out" || true)
mapfile -t failed < <(printf '%s\n' "${results[@]}" | sed -n 's/^not ok [0-9]* - //p')
mapfile -t skipped < <(printf '%s\n' "${results[@]}" | grep -iE '^ok [0-9]+ *# *skip' || true)
passed=$((${#results[@]} - ${#failed[@]} - ${#skipped[@]}))
say "$passed of ${plan:-?} subtests passed, ${#failed[@]} failed, ${#skipped[@]} skipped, in ${elapsed} s"
for f in "${failed[@]}"; do say "  failed: $f"; done
for s in "${skipped[@]}"; do say "  skipped: $s"; done

problems=()
grep -q '^Bail out!' "$work/prove.out" && problems+=("the suite bailed out: $(grep -m1 '^Bail out!' "$work/prove.out")")
[[ -n $plan ]] || problems+=("the suite printed no plan (it died before the end)")
[[ -z $plan || ${#results[@]} == "$plan" ]] || problems+=("the suite ran ${#results[@]} of its $plan subtests")
((${#skipped[@]} == 0)) || problems+=("${#skipped[@]} subtests were skipped")
unexpected=()
for f in "${failed[@]}"; do
    [[ $f == "$EXPECTED_FAILURE" ]] || unexpected+=("$f")
done
((${#unexpected[@]} == 0)) || problems+=("unexpected failures: $(printf '"%s" ' "${unexpected[@]}")")
expected_seen=$(printf '%s\n' "${failed[@]}" | grep -cxF "$EXPECTED_FAILURE" || true)
if [[ $expected_seen != 1 ]]; then
    if printf '%s\n' "${results[@]}" | grep -qE "^ok [0-9]+ - $EXPECTED_FAILURE\$"; then
        problems+=("\"$EXPECTED_FAILURE\" passed: --create-slot no longer reserves WAL at once")
    else
        problems+=("\"$EXPECTED_FAILURE\" did not fail exactly once")
    fi
fi

if ((${#problems[@]})); then
    log=$work/tmp_check/log/regress_log_${SUITE%.pl}
    if ((${#unexpected[@]})) && [[ -f $log ]]; then
        # Why each subtest failed, in the suite's own words, with the commands' output.
        printf '\n--- failures, from %s ---\n' "$log" >&2
        grep -A8 '#   Failed test' "$log" >&2 || true
    else
        printf '\n--- prove output ---\n' >&2
        cat "$work/prove.out" >&2
    fi
    for p in "${problems[@]}"; do printf 'test-pg-tap: FAILED: %s\n' "$p" >&2; done
    exit 1
fi
ok=true
say "ok: every subtest but \"$EXPECTED_FAILURE\" (our --create-slot reserves WAL) passed"
