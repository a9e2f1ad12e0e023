#!/usr/bin/env bash
# Smoke test of the armv7 release binary under qemu-user (Debian qemu-user, 7.2 on bookworm).
# Builds it first if needed (scripts/build-armv7.sh). BIN=path overrides the binary.
#
# The armhf runtime is target/armhf-sysroot, unpacked by build-armv7.sh from Debian's archive
# (libdbus-1-3 and its closure, libc6 included): QEMU_LD_PREFIX points qemu-arm at it. That glibc
# is 2.36, newer than a GX's: the 2.28 limit is checked on the symbols by build-armv7.sh, not here.
#
# What qemu-user 7.2 can and cannot cover (see NOTEBOOK.md):
# - can: start-up, the command line, D-Bus over a unix socket to a host dbus-daemon.
# - cannot: serialport's normal open of a tty, pty or real. serialport uses termios2 on Linux,
#   and qemu-user 7.2 does not emulate the TCGETS2 ioctl (0x802c542a): every
#   SerialPortBuilder::open/open_native (exclusive or not) fails with ENOSYS, "Function not
#   implemented". TTYPort::pair() works (plain TCGETS/TCSETS), and so does a port opened with
#   std::fs::OpenOptions + TTYPort::from_raw_fd (no termios call), as long as nothing later
#   reads or sets the baud rate or framing.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=armv7-unknown-linux-gnueabihf
BIN=${BIN:-target/$TARGET/release/dbus-modbus-client}
# Set to 0 to skip a part.
SMOKE_MODELS=${SMOKE_MODELS:-1}
SMOKE_PUBLISH=${SMOKE_PUBLISH:-1}

if [ ! -x "$BIN" ] || [ ! -d target/armhf-sysroot ]; then
    scripts/build-armv7.sh
fi
QEMU_LD_PREFIX=$PWD/target/armhf-sysroot
export QEMU_LD_PREFIX

if ! command -v qemu-arm >/dev/null 2>&1; then
    # shellcheck source=scripts/lib/apt.sh
    . scripts/lib/apt.sh
    apt_install --no-install-recommends -- qemu-user
fi
echo "smoke-armv7: $(qemu-arm --version | head -n 1)"

passed=0
pass() {
    echo "smoke-armv7: ok: $*"
    passed=$((passed + 1))
}

# 1. --version: the binary loads (interpreter, libdbus, glibc symbols) and parses its arguments.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
out=$(qemu-arm "$BIN" --version)
if [ "$out" != "dbus-modbus-client $version" ]; then
    echo "smoke-armv7: --version printed '$out', expected 'dbus-modbus-client $version'" >&2
    exit 1
fi
pass "--version: $out"

# 2. The packed release installs into a fake GX root, and the installed binary runs.
tarball=target/dist/dbus-modbus-client-armv7.tar.gz
if [ -f "$tarball" ] && [ "$BIN" = "target/$TARGET/release/dbus-modbus-client" ]; then
    fake=$(mktemp -d)
    mkdir -p "$fake/root/data" "$fake/root/service"
    tar -C "$fake" -xzf "$tarball"
    ROOT="$fake/root" "$fake/dbus-modbus-client/install.sh" >/dev/null
    installed=$fake/root/data/dbus-modbus-client/dbus-modbus-client
    out=$(qemu-arm "$installed" --version)
    link=$(readlink "$fake/root/service/dbus-modbus-client")
    rm -rf "$fake"
    if [ "$out" != "dbus-modbus-client $version" ] || [ "$link" != "${installed%/*}/service" ]; then
        echo "smoke-armv7: installed package: --version '$out', service link '$link'" >&2
        exit 1
    fi
    pass "$tarball installs into a fake root and its binary runs"
else
    echo "smoke-armv7: SKIP package install ($tarball missing, or BIN set)"
fi

# 3. --models: the device table is compiled in.
if [ "$SMOKE_MODELS" = 1 ]; then
    out=$(qemu-arm "$BIN" --models)
    for model in SDM230 Growatt; do
        grep -q "$model" <<<"$out" || { echo "smoke-armv7: --models lacks $model: $out" >&2; exit 1; }
    done
    pass "--models lists SDM230 and Growatt"
else
    echo "smoke-armv7: SKIP --models (SMOKE_MODELS=0)"
fi

# 4. Publishing on a private dbus-daemon: host dbus-daemon, settings stand-in and simulator,
# the armv7 daemon in qemu. Its serial open falls back to a plain open under qemu-user (see the
# header), so the whole chain runs: identification over the pty, D-Bus, values.
if [ "$SMOKE_PUBLISH" = 1 ]; then
    # modbus-sim is the sim/ crate of the workspace, fake-settings an example of the root package.
    cargo build --release -q --workspace --bin modbus-sim --example fake-settings
    work=$(mktemp -d)
    pids=()
    cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        rm -rf "$work"
    }
    trap cleanup EXIT
    dbus-daemon --session --nofork --print-address=3 3>"$work/address" 2>"$work/dbus.log" &
    pids+=($!)
    for _ in $(seq 50); do [ -s "$work/address" ] && break; sleep 0.1; done
    address=$(head -n 1 "$work/address")
    export DBUS_SESSION_BUS_ADDRESS=$address
    target/release/examples/fake-settings 2>"$work/settings.log" &
    pids+=($!)
    target/release/modbus-sim --link "$work/tty" </dev/null >"$work/sim.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do [ -e "$work/tty" ] && break; sleep 0.1; done

    qemu-arm "$BIN" -s "$work/tty" -r 9600 --dbus session >"$work/daemon.log" 2>&1 &
    pids+=($!)

    for service in com.victronenergy.grid com.victronenergy.pvinverter; do
        name=
        for _ in $(seq 300); do
            name=$(dbus-send --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.ListNames |
                grep -o "\"$service\.[A-Za-z0-9_]*\"" | tr -d '"' || true)
            [ -n "$name" ] && break
            sleep 0.1
        done
        [ -n "$name" ] || { echo "smoke-armv7: no $service.* on the bus" >&2; cat "$work/daemon.log" >&2; exit 1; }
        value=
        for _ in $(seq 100); do
            value=$(dbus-send --print-reply --dest="$name" /Ac/Power com.victronenergy.BusItem.GetText |
                sed -n 's/^ *string "\(.*\)"$/\1/p')
            # GetText of an invalid value is "---", as velib's.
            [ -n "$value" ] && [ "$value" != "---" ] && break
            sleep 0.1
        done
        if [ -z "$value" ] || [ "$value" = "---" ]; then
            echo "smoke-armv7: $name /Ac/Power stays invalid" >&2
            cat "$work/daemon.log" >&2
            exit 1
        fi
        pass "$name published, /Ac/Power = $value"
    done
else
    echo "smoke-armv7: SKIP publishing (SMOKE_PUBLISH=0)"
fi

echo "smoke-armv7: $passed passed, 0 failed"
