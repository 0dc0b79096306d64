#!/usr/bin/env bash
# Tests what `make static` and `make deb` ship (run by `make test`; alone: `bash
# scripts/test-packaging.sh` after `make deps`):
#
#   1. the static binaries: `file`, `ldd` and readelf call them static, they run in an
#      empty chroot, and they archive WAL from a PostgreSQL 15 server over TLS
#      (sslmode=verify-full against the server's self-signed certificate, require,
#      sslrootcert=system with SSL_CERT_FILE), while pg_hba.conf rejects replication
#      without TLS and a wrong CA is refused; a SIGTERM stops them cleanly (exit 0);
#   2. the .deb: dpkg-deb --info/--contents show the right fields and exactly the right
#      files, the man pages cover every option of --help, postinst creates the postgres
#      user only when it is missing (in a private copy of /etc);
#   3. as root: dpkg -i installs it, the installed binaries run (and reach the TLS server
#      as the postgres user), systemd-analyze verify accepts the unit, a reinstall, dpkg -r
#      and dpkg --purge leave an existing archive and the admin's settings untouched.
#
# Reuses the static build of scripts/build-static.sh: only the first build in a tree is
# slow (about 3 minutes on 2 cores). The package is removed at the end, also on failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/cluster.sh
. scripts/lib/cluster.sh

readonly TARGET=x86_64-unknown-linux-musl
readonly PACKAGE=pgreceivewal
readonly STATIC=target/$TARGET/release
readonly SEG_RE='^[0-9A-F]{24}$'

say() { printf 'test-packaging: %s\n' "$*"; }
fail() {
    printf 'test-packaging: FAILED: %s\n' "$*" >&2
    exit 1
}
# wait_for DESCRIPTION SECONDS COMMAND...: polls until the command succeeds.
wait_for() {
    local what=$1 secs=$2
    local deadline=$((SECONDS + secs))
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out after $secs s waiting for $what"
        sleep 0.2
    done
}
is_root() { [[ $EUID == 0 ]]; }

# What the package test changed on the machine, undone on exit whatever happens.
pkg_installed_by_us=false
created_paths=()  # removed in reverse order if they exist (directories only when empty)
cleanup_machine() {
    local i p
    if $pkg_installed_by_us && dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -qv 'not-installed'; then
        dpkg --purge "$PACKAGE" >/dev/null 2>&1 || printf 'test-packaging: warning: could not purge %s\n' "$PACKAGE" >&2
    fi
    for ((i = ${#created_paths[@]} - 1; i >= 0; i--)); do
        p=${created_paths[i]}
        if [[ -d $p && ! -L $p ]]; then
            # Archives the test made, or parents it created: only those (see remember_new).
            if [[ $p == /var/lib/pgreceivewal/pkgtest.* || $p == /etc/pgreceivewal/pkgtest.* ]]; then
                rm -rf -- "$p"
            else
                rmdir -- "$p" 2>/dev/null || true
            fi
        elif [[ -e $p || -L $p ]]; then
            rm -f -- "$p"
        fi
    done
}
on_exit() {
    local rc=$?
    set +e
    cleanup_machine
    (exit "$rc")
    cleanup_all  # stops the cluster and removes its directory
    exit "$rc"
}
install_cleanup_trap
trap on_exit EXIT
# remember_new PATH: PATH does not exist yet and the test is about to create it.
remember_new() {
    [[ ! -e $1 && ! -L $1 ]] || fail "$1 already exists; the test would not know what to leave behind"
    created_paths+=("$1")
}

# The tools the checks use. A CI machine may start with less than a desktop: install what
# is missing (as root), as scripts/install-deps.sh does for the rest.
declare -A tool_package=(
    [file]=file [readelf]=binutils [openssl]=openssl [groff]=groff-base [dpkg-deb]=dpkg
    [systemd-analyze]=systemd [unshare]=util-linux [setpriv]=util-linux [flock]=util-linux
)
missing=()
for tool in "${!tool_package[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${tool_package[$tool]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    is_root || fail "missing tools; install these Debian packages first: ${missing[*]}"
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
        "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------------------------------
say "building the static binaries (scripts/build-static.sh)"
start=$SECONDS
bash scripts/build-static.sh
say "static build took $((SECONDS - start)) s"
pkgid=$(cargo pkgid --offline -p "$PACKAGE")
version=${pkgid##*[#@]}
version=${version/-/\~}

work=""
new_tmpdir work
for bin in pgreceivewal pgrestorewal pgrecvlogical pgapplylogical; do
    path=$STATIC/$bin
    desc=$(file -b "$path")
    [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] ||
        fail "file does not call $path static: $desc"
    [[ $desc != *"dynamically linked"* && $desc != *"interpreter"* ]] || fail "file calls $path dynamic: $desc"
    # ldd prints "statically linked" for static-pie binaries (exit 0) and "not a dynamic
    # executable" for non-PIE ones (exit 1).
    lddout=$(ldd "$path" 2>&1 || true)
    [[ $lddout == *"statically linked"* || $lddout == *"not a dynamic executable"* ]] ||
        fail "ldd does not call $path static: $lddout"
    elf=$(LC_ALL=C readelf --program-headers --dynamic "$path")
    if grep -qE 'INTERP|\(NEEDED\)' <<<"$elf"; then
        fail "$path has an ELF interpreter or NEEDED libraries"
    fi
    got=$("$path" --version)
    [[ $got == "$bin (pgreceivewal) ${pkgid##*[#@]}" ]] || fail "$path --version printed \"$got\""
    say "$bin: $desc; ldd: $lddout"
done
if is_root; then
    # Nothing but the binary: no libc, no loader, no /etc. It still runs.
    chroot_dir=$work/chroot
    mkdir "$chroot_dir"
    cp "$STATIC/pgreceivewal" "$chroot_dir/"
    got=$(chroot "$chroot_dir" /pgreceivewal --version) || fail "the static binary does not run in an empty chroot"
    [[ $got == "pgreceivewal (pgreceivewal) "* ]] || fail "in an empty chroot, --version printed \"$got\""
    say "the static binary runs in an empty chroot"
fi

# ---------------------------------------------------------------------------------------
say "TLS: PostgreSQL 15 with a self-signed certificate"
cluster_init tls 15 --wal-segsize=1
datadir=$(cluster_datadir tls)
port=$(cluster_port tls)
# CN=localhost with localhost and 127.0.0.1 as subject alternative names: libpq's
# verify-full checks the name it connected to (127.0.0.1 here) against them.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$3" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$1" -out "$2" 2>"$work/openssl.log" || { cat "$work/openssl.log" >&2; fail "openssl could not make a certificate"; }
}
make_cert "$work/server.key" "$work/server.crt" localhost
make_cert "$work/other.key" "$work/other.crt" localhost  # same names, another key: not trusted
install -m 0600 "$work/server.key" "$datadir/server.key"
install -m 0644 "$work/server.crt" "$datadir/server.crt"
if is_root; then chown postgres:postgres "$datadir/server.key" "$datadir/server.crt"; fi
chmod a+r "$work/server.crt" "$work/other.crt"
cluster_conf tls "ssl = on" "ssl_cert_file = 'server.crt'" "ssl_key_file = 'server.key'"
# Replication over TCP only with TLS: these lines come before cluster.sh's trust lines.
hba=$datadir/pg_hba.conf
{
    printf 'hostssl    replication all 127.0.0.1/32 trust\n'
    printf 'hostnossl  replication all 127.0.0.1/32 reject\n'
    cat "$hba"
} >"$work/pg_hba.conf"
cat "$work/pg_hba.conf" >"$hba"  # into the existing file, which stays postgres's
cluster_start tls
[[ $(cluster_psql tls 'SHOW ssl') == on ]] || fail "the server did not turn ssl on"

base="host=127.0.0.1 port=$port user=postgres"
make_wal() {
    cluster_psql tls "SET client_min_messages = warning" "CREATE TABLE IF NOT EXISTS filler (i int)" \
        "INSERT INTO filler SELECT generate_series(1, 2000)" "SELECT pg_switch_wal()" \
        "INSERT INTO filler VALUES (1)" >/dev/null
}
# run_static NAME EXPECTED_STATUS ARGS...: runs the static pgreceivewal (at most 120 s),
# stderr in $work/NAME.log; fails unless it exits with EXPECTED_STATUS.
run_static() {
    local name=$1 want=$2 rc=0
    shift 2
    timeout 120 "$STATIC/pgreceivewal" "$@" 2>"$work/$name.log" || rc=$?
    if [[ $rc != "$want" ]]; then
        cat "$work/$name.log" >&2
        fail "$name: pgreceivewal exited with status $rc, expected $want"
    fi
}
complete_segments() { find "$1" -maxdepth 1 -type f -printf '%f\n' | grep -E "$SEG_RE" | LC_ALL=C sort; }

# Without TLS the server refuses: so every success below went over TLS.
run_static nossl 1 -d "$base sslmode=disable" -n -D "$work/nossl"
grep -q 'no encryption' "$work/nossl.log" || { cat "$work/nossl.log" >&2; fail "sslmode=disable failed for another reason than pg_hba's hostnossl reject"; }
say "sslmode=disable is rejected by the server, as pg_hba.conf says"

# verify-full with a CA that did not sign the server's certificate must fail.
run_static wrongca 1 -d "$base sslmode=verify-full sslrootcert=$work/other.crt" -n -D "$work/wrongca"
grep -q 'certificate verify failed' "$work/wrongca.log" || { cat "$work/wrongca.log" >&2; fail "verify-full with a wrong CA failed for another reason than certificate verification"; }
say "verify-full refuses a certificate its root does not vouch for"

# verify-full: create a slot, make WAL across a segment boundary, stream up to a position.
full="$base sslmode=verify-full sslrootcert=$work/server.crt"
run_static full-create 0 -d "$full" --create-slot -S pkgtest_full
make_wal
endpos=$(cluster_psql tls 'SELECT pg_current_wal_flush_lsn()')
run_static full 0 -d "$full" -S pkgtest_full -n -E "$endpos" -D "$work/full"
mapfile -t segs < <(complete_segments "$work/full")
((${#segs[@]} >= 1)) || fail "verify-full: no complete segment arrived in $work/full"
for seg in "${segs[@]}"; do
    [[ $(stat -c %s "$work/full/$seg") == 1048576 ]] || fail "verify-full: $seg is not 1 MiB"
    if [[ -r $datadir/pg_wal/$seg ]]; then
        cmp -s "$work/full/$seg" "$datadir/pg_wal/$seg" || fail "verify-full: $seg differs from the server's"
    fi
done
ls "$work/full"/*.partial >/dev/null 2>&1 || fail "verify-full: the segment holding the end position is not there as .partial"
say "sslmode=verify-full: ${segs[*]} archived (identical to the server's) up to $endpos"

# require, as a service runs: in the background, stopped by SIGTERM. The slot does not exist
# yet: streaming creates it, as the packaged example configuration asks.
"$STATIC/pgreceivewal" -d "$base sslmode=require application_name=pkgtest_require" \
    -S pkgtest_require --create-slot-if-missing --synchronous -D "$work/require" 2>"$work/require.log" &
req_pid=$!
register_pid "$req_pid"
ssl_in_use() {
    [[ $(cluster_psql tls "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
                           WHERE r.application_name = 'pkgtest_require'") == t ]]
}
wait_for "the sslmode=require archiver to stream over TLS" 60 ssl_in_use
make_wal
has_segment() { [[ -n $(complete_segments "$work/require") ]]; }
wait_for "a complete segment from the sslmode=require archiver" 60 has_segment
kill -TERM "$req_pid"
rc=0
wait "$req_pid" || rc=$?
unregister_pid "$req_pid"
[[ $rc == 0 ]] || { cat "$work/require.log" >&2; fail "sslmode=require: SIGTERM ended pgreceivewal with status $rc, expected 0"; }
if compgen -G "$work/require/*.pgreceivewal-tmp" >/dev/null; then fail "SIGTERM left temporary files behind"; fi
say "sslmode=require: streamed over TLS (pg_stat_ssl), $(complete_segments "$work/require" | tr '\n' ' ')archived, SIGTERM exit 0"

# sslrootcert=system: OpenSSL's default trust store, which SSL_CERT_FILE replaces (how the
# docs tell users of the static binary to trust Debian's CA bundle).
for slot in pkgtest_full pkgtest_require; do
    SSL_CERT_FILE=$work/server.crt run_static "drop-$slot" 0 -d "$base sslrootcert=system" --drop-slot -S "$slot"
done
[[ $(cluster_psql tls "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pkgtest%'") == 0 ]] ||
    fail "sslrootcert=system: the slots were not dropped"
say "sslrootcert=system with SSL_CERT_FILE: slots dropped over verify-full"

# ---------------------------------------------------------------------------------------
say "building the package (scripts/build-deb.sh)"
start=$SECONDS
bash scripts/build-deb.sh
say "package build took $((SECONDS - start)) s"
deb=target/debian/${PACKAGE}_${version}_amd64.deb
[[ -f $deb ]] || fail "$deb was not built"

info=$(dpkg-deb --info "$deb")
field() { dpkg-deb --field "$deb" "$1"; }
[[ $(field Package) == "$PACKAGE" ]] || fail "Package: $(field Package)"
[[ $(field Version) == "$version" ]] || fail "Version: $(field Version), expected $version"
[[ $(field Architecture) == amd64 ]] || fail "Architecture: $(field Architecture)"
# Static binaries: no library dependencies. adduser is for postinst's user creation.
[[ $(field Depends) == adduser ]] || fail "Depends: \"$(field Depends)\", expected \"adduser\""
[[ -z $(field Pre-Depends) ]] || fail "Pre-Depends: $(field Pre-Depends)"
[[ $(field Recommends) == systemd ]] || fail "Recommends: $(field Recommends)"
for script in postinst prerm postrm md5sums; do
    grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +(\* +)?$script( |$)" <<<"$info" || fail "dpkg-deb --info lists no $script"
done

mapfile -t contents < <(dpkg-deb --contents "$deb" | awk '{ print substr($1, 1, 1) " " $6 }' | LC_ALL=C sort)
expected=(
    "-" ./lib/systemd/system/pgreceivewal@.service
    "-" ./usr/bin/pgapplylogical
    "-" ./usr/bin/pgreceivewal
    "-" ./usr/bin/pgrecvlogical
    "-" ./usr/bin/pgrestorewal
    "-" ./usr/share/doc/pgreceivewal/changelog.gz
    "-" ./usr/share/doc/pgreceivewal/copyright
    "-" ./usr/share/man/man1/pgapplylogical.1.gz
    "-" ./usr/share/man/man1/pgreceivewal.1.gz
    "-" ./usr/share/man/man1/pgrecvlogical.1.gz
    "-" ./usr/share/man/man1/pgrestorewal.1.gz
    "-" ./usr/share/pgreceivewal/example.conf
    "d" ./etc/pgreceivewal/
)
files_got=$(printf '%s\n' "${contents[@]}" | grep -E '^- |^d \./etc/pgreceivewal/$' | LC_ALL=C sort)
files_want=$(printf '%s %s\n' "${expected[@]}" | LC_ALL=C sort)
[[ $files_got == "$files_want" ]] || fail "dpkg-deb --contents: got
$files_got
expected
$files_want"
# Nothing under /var/lib: the archives are never the package's files.
if grep -q '\./var/' <<<"${contents[*]}"; then fail "the package holds files under /var"; fi

unpacked=$work/unpacked
dpkg-deb -x "$deb" "$unpacked"
for bin in pgreceivewal pgrestorewal pgrecvlogical pgapplylogical; do
    desc=$(file -b "$unpacked/usr/bin/$bin")
    [[ $desc == *"static"*" linked"* && $desc == *", stripped"* ]] || fail "packaged $bin: $desc"
done
# Every option of --help is in the man page (as \-\-name, roff's spelling).
for bin in pgreceivewal pgrestorewal pgrecvlogical pgapplylogical; do
    page=$work/$bin.1
    gzip -dc "$unpacked/usr/share/man/man1/$bin.1.gz" >"$page"
    warnings=$(groff -man -ww -z "$page" 2>&1) || true
    [[ -z $warnings ]] || fail "groff warns about $bin.1: $warnings"
    if grep -q '@VERSION@\|@DATE@' "$page"; then fail "$bin.1 still has placeholders"; fi
    mapfile -t opts < <("$STATIC/$bin" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u)
    ((${#opts[@]} > 3)) || fail "found no options in $bin --help"
    for opt in "${opts[@]}"; do
        grep -qF -- "${opt//-/\\-}" "$page" || fail "$bin.1 does not document $opt (from $bin --help)"
    done
done
say "dpkg-deb --info/--contents: fields, files, static stripped binaries and man pages are right"

# Maintainer scripts: valid sh, and none deletes, moves or chowns anything.
ctl=$work/control
dpkg-deb -e "$deb" "$ctl"
for script in postinst prerm postrm; do
    sh -n "$ctl/$script" || fail "$script is not valid sh"
    code=$(grep -vE '^\s*#' "$ctl/$script")
    if grep -qwE 'rm|rmdir|mv|chown|chmod|find|deluser|delgroup' <<<"$code"; then
        fail "$script removes, moves or changes files or users; it must not"
    fi
done

# postinst creates the postgres user and group only when missing: tried in a private copy
# of /etc (a mount namespace), as the real machine has them already.
if is_root && unshare --mount true 2>/dev/null; then
    etc_copy=$work/etc
    cp -a /etc "$etc_copy"
    for f in passwd shadow group gshadow; do
        [[ -f $etc_copy/$f ]] && sed -i '/^postgres:/d' "$etc_copy/$f"
    done
    # shellcheck disable=SC2016 # $1 and $2 are the inner sh's arguments
    out=$(unshare --mount sh -c '
        mount --bind "$1" /etc || exit 90
        getent passwd postgres >/dev/null && exit 91
        sh "$2" configure "" || exit 92
        sh "$2" configure "" || exit 93   # a second run finds the user and changes nothing
        getent passwd postgres | cut -d: -f6,7
        id -gn postgres' sh "$etc_copy" "$ctl/postinst" 2>"$work/unshare.log") ||
        fail "postinst in a copy of /etc without postgres (status $?): $out $(cat "$work/unshare.log")"
    [[ $out == $'/var/lib/postgresql:/bin/bash\npostgres' ]] || fail "postinst made an unexpected postgres user: $out"
    say "postinst creates a missing postgres user (home /var/lib/postgresql, group postgres)"
else
    say "SKIPPED: postinst user creation (needs root and unshare --mount)"
fi

# ---------------------------------------------------------------------------------------
if ! is_root; then
    say "SKIPPED: dpkg -i/-r/--purge and the installed unit (needs root)"
    say "ok"
    exit 0
fi
command -v dpkg >/dev/null || fail "dpkg is missing"
# One package test at a time on this machine (dpkg is machine-wide).
exec 8>/run/lock/pgreceivewal-test-packaging.lock
flock -w 900 8 || fail "another packaging test holds /run/lock/pgreceivewal-test-packaging.lock"
if dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q 'ok installed\|config-files\|half'; then
    fail "$PACKAGE is already installed on this machine (dpkg -s $PACKAGE); the test would replace it: remove it first"
fi

# An archive that exists before the package: it must come through untouched.
[[ -d /var/lib/pgreceivewal ]] || remember_new /var/lib/pgreceivewal
install -d -m 0755 /var/lib/pgreceivewal
archive=/var/lib/pgreceivewal/pkgtest.$$
remember_new "$archive"
install -d -m 0700 -o postgres -g postgres "$archive"
head -c 1048576 /dev/urandom >"$archive/000000010000000000000001"
head -c 1048576 /dev/urandom >"$archive/000000010000000000000002.partial"
printf 'system_identifier=1\nwal_segment_size=1048576\n' >"$archive/.pgreceivewal.meta"
chown postgres:postgres "$archive"/* "$archive/.pgreceivewal.meta"
chmod 0600 "$archive"/* "$archive/.pgreceivewal.meta"
fingerprint() {
    (cd "$1" && find . -printf '%p %y %m %u %g %s %T@\n' | LC_ALL=C sort && find . -type f -exec md5sum {} + | LC_ALL=C sort)
}
archive_before=$(fingerprint "$archive")
check_archive() {
    [[ $(fingerprint "$archive") == "$archive_before" ]] || fail "$1 changed the archive $archive"
}

say "dpkg -i $deb"
[[ -d /etc/pgreceivewal ]] || remember_new /etc/pgreceivewal
pkg_installed_by_us=true
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; fail "dpkg -i failed"; }
check_archive "dpkg -i"
for bin in pgreceivewal pgrestorewal pgrecvlogical pgapplylogical; do
    got=$("/usr/bin/$bin" --version) || fail "/usr/bin/$bin does not run"
    [[ $got == "$bin (pgreceivewal) ${pkgid##*[#@]}" ]] || fail "/usr/bin/$bin --version printed \"$got\""
done
getent passwd postgres >/dev/null || fail "no postgres user after dpkg -i"
[[ -d /etc/pgreceivewal ]] || fail "no /etc/pgreceivewal after dpkg -i"
# The installed binary, as the service runs it: as postgres, the settings in the environment.
conf=/etc/pgreceivewal/pkgtest.$$.conf
remember_new "$conf"
printf 'PGHOST=127.0.0.1\nPGPORT=%s\nPGUSER=postgres\nPGSSLMODE=verify-full\nPGSSLROOTCERT=%s\n' \
    "$port" "$work/server.crt" >"$conf"
as_service() {
    # shellcheck disable=SC2046  # one VAR=value word per line of the settings file
    setpriv --reuid=postgres --regid=postgres --init-groups -- env -i $(grep -E '^[A-Z_]+=' "$conf") \
        /usr/bin/pgreceivewal --no-password "$@"
}
chmod a+rx "$work"
if ! as_service --create-slot -S pkgtest_installed 2>"$work/installed.log" ||
    ! as_service --drop-slot -S pkgtest_installed 2>>"$work/installed.log"; then
    cat "$work/installed.log" >&2
    fail "the installed pgreceivewal could not reach the server over verify-full as postgres"
fi
say "installed binaries run; /usr/bin/pgreceivewal works over verify-full as postgres"

unit=/lib/systemd/system/pgreceivewal@.service
[[ -f $unit ]] || fail "$unit is not installed"
verify_args=()
command -v man >/dev/null || verify_args=(--man=no)  # verify checks Documentation=man: with man
for what in "$unit" "pgreceivewal@pkgtest.service"; do
    out=$(cd / && systemd-analyze verify "${verify_args[@]}" "$what" 2>&1) || fail "systemd-analyze verify $what: $out"
    [[ -z $out ]] || fail "systemd-analyze verify $what warns: $out"
done
say "systemd-analyze verify accepts $unit and pgreceivewal@pkgtest.service"
man_page=$(man -w pgreceivewal 2>/dev/null || true)
[[ -z $(command -v man) || $man_page == /usr/share/man/man1/pgreceivewal.1.gz ]] || fail "man -w pgreceivewal: \"$man_page\""

# Reinstalling is what an upgrade does (postinst configure <old version>).
dpkg -i "$deb" >"$work/dpkg-i2.log" 2>&1 || { cat "$work/dpkg-i2.log" >&2; fail "dpkg -i over the installed package failed"; }
check_archive "reinstalling the package"

dpkg -r "$PACKAGE" >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log" >&2; fail "dpkg -r failed"; }
[[ ! -e /usr/bin/pgreceivewal && ! -e $unit ]] || fail "dpkg -r left the binary or the unit"
check_archive "dpkg -r"
[[ -f $conf ]] || fail "dpkg -r removed the admin's $conf"
dpkg --purge "$PACKAGE" >"$work/dpkg-purge.log" 2>&1 || { cat "$work/dpkg-purge.log" >&2; fail "dpkg --purge failed"; }
if dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q 'ok installed\|config-files'; then
    fail "$PACKAGE is still known to dpkg after --purge"
fi
check_archive "dpkg --purge"
[[ -f $conf ]] || fail "dpkg --purge removed the admin's $conf"
getent passwd postgres >/dev/null || fail "dpkg --purge removed the postgres user"
pkg_installed_by_us=false
say "dpkg -r and dpkg --purge left the archive $archive and $conf alone"
say "ok"
