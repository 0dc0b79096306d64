# pgreceivewal: build, test, demo and install.
#
#   make build         release build of the workspace (--locked once Cargo.lock exists)
#   make deps          install what the tests need (scripts/install-deps.sh; quiet when done)
#   make test          deps, cargo tests against PostgreSQL 15 and 18, scripts/test-*.sh, the restore test
#   make demo          stream a pgbench run into a directory (PGRW_DEMO_VERSION=18 for 18)
#   make restore-test  scripts/restore-test.sh
#   make man           rewrite the OPTIONS sections of packaging/man/*.1 from the flag tables
#   make bench         scripts/bench.sh
#   make install       copy the binaries to $(DESTDIR)$(PREFIX)/bin
#   make static        fully static x86_64 binaries (musl, libpq and OpenSSL built in)
#   make deb           target/debian/pgreceivewal_<version>_amd64.deb from the static binaries
#   make fuzz          run each fuzz target for FUZZ_SECONDS (cargo-fuzz; fuzz/README.md)
#   make clean         cargo clean

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(DESTDIR)$(PREFIX)/bin
BINARIES := pgreceivewal pgrestorewal pgrecvlogical pgapplylogical
# Where cargo puts them (CARGO_TARGET_DIR moves it).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Tests start PostgreSQL clusters; two at a time suits a 2-core machine.
TEST_THREADS ?= 2

# A committed Cargo.lock is the dependency set we tested: hold builds to it.
LOCKED := $(if $(wildcard Cargo.lock),--locked,)
# Exports PG15_BINDIR, PG18_BINDIR (and PGRW_CACHE) for the recipe line it prefixes.
WITH_ENV := . scripts/env.sh &&

.PHONY: build deps test demo restore-test bench install clean static deb fuzz man

build:
	$(CARGO) build --release $(LOCKED) --workspace

deps:
	@bash scripts/install-deps.sh

# The man pages' OPTIONS sections come from the tools' flag tables (src/cli/render.rs); the
# unit test that checks them is current rewrites them when PGRW_UPDATE_MAN is set.
man:
	PGRW_UPDATE_MAN=1 $(CARGO) test --release $(LOCKED) --lib -- man_page_is_current

test: deps build
	$(WITH_ENV) $(CARGO) test --workspace --release $(LOCKED) -- --test-threads=$(TEST_THREADS)
	@shopt -s nullglob; \
	for script in scripts/test-*.sh scripts/restore-test.sh; do \
		echo "==> $$script"; \
		$(WITH_ENV) bash "$$script" || { echo "FAILED: $$script" >&2; exit 1; }; \
	done

# Targets backed by a script that does not exist yet fail, first, instead of pretending.
require/%:
	@test -f scripts/$* || { echo "make: scripts/$* does not exist yet" >&2; exit 1; }

demo: require/demo.sh deps build
	$(WITH_ENV) PGRECEIVEWAL=$(abspath $(TARGET_DIR))/release/pgreceivewal bash scripts/demo.sh

restore-test: require/restore-test.sh deps build
	$(WITH_ENV) bash scripts/restore-test.sh

bench: require/bench.sh deps build
	@bash scripts/install-deps.sh --bench
	$(WITH_ENV) bash scripts/bench.sh

install: build
	install -d $(BINDIR)
	install -m 0755 $(addprefix $(TARGET_DIR)/release/,$(BINARIES)) $(BINDIR)/

clean:
	$(CARGO) clean

# Release artifacts; docs/packaging.md says how to install and run them. Each script
# installs what it needs (musl-tools, rustup's musl target) when run as root.
# static: target/x86_64-unknown-linux-musl/release/{pgreceivewal,pgrestorewal}. The first
# build compiles OpenSSL and libpq from source (about 3 minutes on 2 cores).
static:
	bash scripts/build-static.sh

# deb: builds the static binaries (seconds when up to date), then the package.
deb:
	bash scripts/build-deb.sh

# Coverage-guided fuzzing of the parsers (fuzz/README.md); not part of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := replication_message wal_pages pgoutput history_and_names
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=40000 || exit 1; \
	done
