#!/usr/bin/env bash
# Builds fully static x86_64 binaries of pgreceivewal and pgrestorewal (`make static`):
#   target/x86_64-unknown-linux-musl/release/{pgreceivewal,pgrestorewal}
#
# The musl target with the `bundled` feature: libpq (pq-sys's pq-src) and OpenSSL
# (openssl-sys's `vendored`) are compiled from source with Debian's musl-gcc and linked in,
# so the binaries need no shared library at all, TLS included. Installs what it needs when
# it is missing and we are root (Debian's musl-tools, rustup's musl target); quiet then.
#
# The first build compiles OpenSSL and libpq: about 3 minutes on 2 cores. Later builds
# reuse them and take seconds.
set -euo pipefail

readonly TARGET=x86_64-unknown-linux-musl
readonly BINARIES=(pgreceivewal pgrestorewal pgrecvlogical pgapplylogical)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'build-static: %s\n' "$*"; }
die() { printf 'build-static: error: %s\n' "$*" >&2; exit 1; }

[[ $(uname -m) == x86_64 ]] || die "this builds x86_64 binaries on an x86_64 machine; this is $(uname -m)"

# musl-gcc compiles the C parts (libpq, OpenSSL) against musl's headers and libc.a.
if ! command -v musl-gcc >/dev/null; then
    [[ $EUID == 0 ]] || die "musl-gcc is missing: install Debian's musl-tools (apt-get install musl-tools) as root"
    say "installing Debian's musl-tools"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 musl-tools >/dev/null
fi
# OpenSSL's build is driven by perl and make.
for tool in perl make; do
    command -v "$tool" >/dev/null || die "$tool is missing; OpenSSL's build needs it"
done

# The Rust standard library for the target, from rustup (the toolchain cargo will use).
sysroot=$(rustc --print sysroot) || die "rustc does not run"
if [[ ! -d $sysroot/lib/rustlib/$TARGET ]]; then
    command -v rustup >/dev/null || die "the Rust standard library for $TARGET is missing and there is no rustup to add it"
    say "adding the Rust target $TARGET (rustup)"
    rustup target add "$TARGET"
fi

# cc-rs would find musl-gcc by itself; naming it keeps a cross gcc on PATH from winning.
export CC_x86_64_unknown_linux_musl=musl-gcc
# A committed Cargo.lock is the dependency set we tested: hold the build to it.
locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

bins=()
for bin in "${BINARIES[@]}"; do bins+=(--bin "$bin"); done
cargo build --release "${locked[@]}" --target "$TARGET" --features bundled "${bins[@]}"

# A dynamically linked result would run here and fail on a minimal host: refuse it now.
for bin in "${BINARIES[@]}"; do
    path=target/$TARGET/release/$bin
    # Captured first: grep -q quitting early under pipefail would hide a match.
    elf=$(LC_ALL=C readelf --program-headers --dynamic "$path")
    if grep -qE 'INTERP|\(NEEDED\)' <<<"$elf"; then
        die "$path is dynamically linked (it has an interpreter or NEEDED libraries)"
    fi
done
say "static binaries in target/$TARGET/release: ${BINARIES[*]}"
