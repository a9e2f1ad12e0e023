#!/usr/bin/env bash
# Release build for the GX (armv7, glibc): Docker-free, installs what it needs (idempotent).
#
# - Linker: cargo-zigbuild + ziglang from PyPI, targeting glibc 2.28, so the binary runs on
#   every Venus OS from v2.90 on (glibc 2.31 up to v3.5x, 2.39 from v3.60).
# - libdbus: linked dynamically against the GX's own /usr/lib/libdbus-1.so.3 (every Venus
#   service uses it, so it is always there). Here Debian's armhf libdbus-1-3 serves for linking
#   only, through a private pkg-config file, so that nothing else of the armhf tree (its
#   glibc 2.36 in particular) is on the link path.
# - The armhf libraries (libdbus-1-3 and what it needs at run time, for qemu-arm in
#   smoke-armv7.sh) are downloaded from Debian's archive and unpacked into target/armhf-sysroot,
#   not installed: multiarch installs need the armhf and amd64 versions of each shared package to
#   match, and a mirror mid-sync (an amd64 security update whose armhf index is stale) made that
#   impossible for hours.
# - Then: prints the size and the highest GLIBC symbol version, fails above 2.28, and packs
#   target/dist/dbus-modbus-client/ (binary, install.sh, uninstall.sh, service/, and the
#   architecture-independent gui-v2 plugin gui-v2/DynamicGeneration.json from
#   scripts/build-gui.sh) + a .tar.gz.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=armv7-unknown-linux-gnueabihf
GLIBC_MAX=2.28
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
scripts/setup.sh

# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh

apt_install --no-install-recommends -- binutils

# armhf libdbus for linking, with its run-time closure for qemu-arm, unpacked from the archive.
sysroot=$PWD/target/armhf-sysroot
# Under lib/ or usr/lib/, depending on the release's packaging.
find_libdbus() { find "$sysroot" -name libdbus-1.so.3 2>/dev/null | head -n 1; }
if [ -z "$(find_libdbus)" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx armhf; then
        echo "build-armv7: adding dpkg architecture armhf"
        $SUDO dpkg --add-architecture armhf
    fi
    # One failing index (a mirror mid-sync) must not stop the download from the others.
    $SUDO apt-get -o Acquire::Retries=3 update -qq || true
    # The closure of hard dependencies; libelogind0 is only an alternative to libsystemd0.
    mapfile -t debs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances libdbus-1-3:armhf |
        grep -v -e '^ ' -e '<' -e '^libelogind' | sort -u)
    echo "build-armv7: unpacking ${debs[*]} into $sysroot"
    downloads=$(mktemp -d)
    chmod a+rwx "$downloads" # apt downloads as its _apt user
    (cd "$downloads" && apt-get -o Acquire::Retries=3 download -qq "${debs[@]}")
    rm -rf "$sysroot"
    for deb in "$downloads"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
    rm -rf "$downloads"
fi

rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

if ! python3 -m ziglang version >/dev/null 2>&1 || ! command -v cargo-zigbuild >/dev/null 2>&1; then
    echo "build-armv7: installing ziglang and cargo-zigbuild from PyPI"
    python3 -m pip install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    hash -r
fi

# Link-only view of libdbus: one library, one .pc file.
libdbus=$(find_libdbus)
[ -n "$libdbus" ] || { echo "build-armv7: no libdbus-1.so.3 in $sysroot" >&2; exit 1; }
link_dir=$PWD/target/armv7-link
mkdir -p "$link_dir"
ln -sf "$libdbus" "$link_dir/libdbus-1.so"
cat >"$link_dir/dbus-1.pc" <<PC
Name: dbus-1
Description: link-only stand-in for the GX's libdbus-1.so.3
Version: 1.14.0
Libs: -L$link_dir -ldbus-1
Cflags:
PC
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR_armv7_unknown_linux_gnueabihf=$link_dir

start=$(date +%s)
cargo zigbuild --release --target "$TARGET.$GLIBC_MAX" --bin dbus-modbus-client
echo "build-armv7: cargo zigbuild took $(($(date +%s) - start)) s"

bin=target/$TARGET/release/dbus-modbus-client
size=$(stat -c %s "$bin")
glibc=$(readelf -V --wide "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
echo "build-armv7: $bin"
echo "build-armv7: size $size bytes (stripped)"
echo "build-armv7: needs $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
echo "build-armv7: highest GLIBC symbol version $glibc (limit $GLIBC_MAX)"
if [ "$(printf '%s\n%s\n' "$glibc" "$GLIBC_MAX" | sort -V | tail -n 1)" != "$GLIBC_MAX" ]; then
    echo "build-armv7: GLIBC_$glibc is newer than $GLIBC_MAX: would not run on Venus OS v2.90" >&2
    exit 1
fi

dist=target/dist/dbus-modbus-client
rm -rf "$dist"
mkdir -p "$dist/service/log" "$dist/gui-v2"
cp "$bin" "$dist/"
cp install.sh uninstall.sh "$dist/"
OUT=$dist/gui-v2/DynamicGeneration.json scripts/build-gui.sh
cp service/run service/enable.sh service/config.example "$dist/service/"
cp service/log/run "$dist/service/log/"
tar -C target/dist -czf target/dist/dbus-modbus-client-armv7.tar.gz dbus-modbus-client
echo "build-armv7: packed target/dist/dbus-modbus-client-armv7.tar.gz"
