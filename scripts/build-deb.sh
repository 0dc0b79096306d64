#!/usr/bin/env bash
# Builds the Debian package (`make deb`): target/debian/pgreceivewal_<version>_amd64.deb.
#
# The package holds the static musl binaries from scripts/build-static.sh (run first; it
# takes seconds when they are up to date), so it depends on no library package. The tree is
# staged in target/debian/staging from packaging/ and packed with dpkg-deb: no debhelper or
# cargo-deb needed, and every file the package holds is named below.
#
#   /usr/bin/{pgreceivewal,pgrestorewal,pgrecvlogical,pgapplylogical} stripped static binaries
#   /usr/share/man/man1/{pgreceivewal,pgrestorewal,pgrecvlogical,pgapplylogical}.1.gz
#   /lib/systemd/system/pgreceivewal@.service          packaging/systemd/
#   /usr/share/pgreceivewal/example.conf               packaging/example.conf
#   /etc/pgreceivewal/                                 empty: the settings are the admin's
#   /usr/share/doc/pgreceivewal/{copyright,changelog.gz}
#   postinst, prerm, postrm                            packaging/deb/
#
# Environment: DEB_MAINTAINER overrides the Maintainer field; SOURCE_DATE_EPOCH (default: the
# last commit's time) fixes the timestamps, so the same tree gives the same package.
set -euo pipefail

readonly TARGET=x86_64-unknown-linux-musl
readonly PACKAGE=pgreceivewal

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'build-deb: %s\n' "$*"; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

for tool in dpkg-deb gzip strip; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

bash scripts/build-static.sh

# `cargo pkgid` prints path+file:///dir#pgreceivewal@0.1.0 (or ...#0.1.0 when the directory
# has the package's name).
pkgid=$(cargo pkgid --offline -p "$PACKAGE")
version=${pkgid##*[#@]}
[[ $version =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || die "cannot make a Debian version of \"$version\" (from $pkgid)"
# Cargo's pre-release 1.0.0-rc.1 must sort before 1.0.0 in Debian too: 1.0.0~rc.1.
version=${version/-/\~}
maintainer=${DEB_MAINTAINER:-pgreceivewal maintainers <maintainers@users.noreply.b-seed-4c7d3627.example>}
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

out_dir=target/debian
deb=$out_dir/${PACKAGE}_${version}_amd64.deb
root=$out_dir/staging
# Two builds in one tree at once would stage into the same directory.
mkdir -p "$out_dir"
exec 9>"$out_dir/.build.lock"
flock 9
rm -rf "$root"
install -d -m 0755 "$root"

# Everything staged gets its mode from here, whatever the umask.
dir() { install -d -m 0755 "$root/$1"; }
file() { install -D -m "$1" "$2" "$root/$3"; }

for bin in pgreceivewal pgrestorewal pgrecvlogical pgapplylogical; do
    dir usr/bin
    # Debug info stays in target/; the package gets the 8 MB, not the 35 MB, binary.
    strip --strip-all -o "$root/usr/bin/$bin" "target/$TARGET/release/$bin"
    chmod 0755 "$root/usr/bin/$bin"
    dir usr/share/man/man1
    sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$date/" "packaging/man/$bin.1" |
        gzip -9n >"$root/usr/share/man/man1/$bin.1.gz"
    chmod 0644 "$root/usr/share/man/man1/$bin.1.gz"
done
file 0644 packaging/systemd/pgreceivewal@.service lib/systemd/system/pgreceivewal@.service
file 0644 packaging/example.conf usr/share/pgreceivewal/example.conf
dir etc/pgreceivewal
file 0644 packaging/deb/copyright usr/share/doc/$PACKAGE/copyright
{
    printf '%s (%s) unstable; urgency=medium\n\n' "$PACKAGE" "$version"
    printf '  * Built from the pgreceivewal source tree; see its history for changes.\n\n'
    printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$root/usr/share/doc/$PACKAGE/changelog.gz"
chmod 0644 "$root/usr/share/doc/$PACKAGE/changelog.gz"
# Directories made along the way by install -D: the same 0755 everywhere.
find "$root" -type d -exec chmod 0755 {} +

dir DEBIAN
for script in postinst prerm postrm; do
    file 0755 "packaging/deb/$script" "DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@MAINTAINER@/$maintainer/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
    packaging/deb/control.in >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1))"
