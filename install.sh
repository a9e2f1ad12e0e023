#!/bin/sh
# Installs dbus-modbus-client on a Venus OS GX device. Everything goes under /data, the only
# place that survives firmware updates; /data/rc.local re-creates the /service link at boot.
# Idempotent: run it again after copying in a new binary; a second run changes nothing.
#
#   ./install.sh                    on the GX, as root, from the unpacked release directory
#   BIN=path/to/binary ./install.sh another binary than ./dbus-modbus-client
#   ROOT=/tmp/fake ./install.sh     tests: a fake root; nothing outside it is touched or run
set -eu

ROOT=${ROOT:-}
src_dir=$(cd -P "$(dirname "$0")" && pwd)
BIN=${BIN:-$src_dir/dbus-modbus-client}
app_dir=$ROOT/data/dbus-modbus-client
rc_local=$ROOT/data/rc.local
# What rc.local runs on the device itself, hence without ROOT.
boot_line=/data/dbus-modbus-client/enable.sh
service_link=$ROOT/service/dbus-modbus-client

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

[ -f "$BIN" ] || fail "no binary at $BIN (build it with scripts/build-armv7.sh, or set BIN=)"
[ -f "$src_dir/service/run" ] || fail "no service/run beside install.sh"
if [ ! -d "$ROOT/data" ] || [ ! -d "$ROOT/service" ]; then
    fail "no $ROOT/data or $ROOT/service: not a Venus OS device"
fi

changed=

# Copies only what differs (so a re-run changes nothing), through a rename, so that a
# running binary is replaced rather than overwritten in place.
install_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        [ "$(stat -c %a "$2")" = "$3" ] || chmod "$3" "$2"
        return 0
    fi
    cp "$1" "$2.new"
    chmod "$3" "$2.new"
    mv -f "$2.new" "$2"
    changed=1
    echo "installed $2"
}

mkdir -p "$app_dir/service/log"
chmod 755 "$app_dir" "$app_dir/service" "$app_dir/service/log"
install_file "$BIN" "$app_dir/dbus-modbus-client" 755
install_file "$src_dir/service/run" "$app_dir/service/run" 755
install_file "$src_dir/service/log/run" "$app_dir/service/log/run" 755
install_file "$src_dir/service/enable.sh" "$app_dir/enable.sh" 755
install_file "$src_dir/uninstall.sh" "$app_dir/uninstall.sh" 755
# The user's settings: written once, never overwritten.
if [ ! -e "$app_dir/config" ]; then
    install_file "$src_dir/service/config.example" "$app_dir/config" 644
fi

# Appended, never rewritten: rc.local may hold other drivers' lines.
if [ ! -e "$rc_local" ]; then
    printf '#!/bin/bash\n' >"$rc_local"
    echo "created $rc_local"
fi
if ! grep -qxF "$boot_line" "$rc_local"; then
    # A last line without its newline would otherwise swallow ours.
    if [ -n "$(tail -c 1 "$rc_local")" ]; then
        echo >>"$rc_local"
    fi
    echo "$boot_line" >>"$rc_local"
    echo "added $boot_line to $rc_local"
fi
[ -x "$rc_local" ] || chmod 755 "$rc_local"
if grep -qE '^[[:space:]]*exit([[:space:]]|$)' "$rc_local"; then
    echo "install.sh: warning: $rc_local has an exit line; lines after it never run" >&2
fi

ROOT=$ROOT "$app_dir/enable.sh"

if [ -z "$ROOT" ]; then
    # svscan notices the new link within 5 s; svc needs the running supervise.
    i=0
    while [ ! -p "$app_dir/service/supervise/control" ] && [ "$i" -lt 15 ]; do
        sleep 1
        i=$((i + 1))
    done
    svc -u "$service_link"
    if [ -n "$changed" ]; then
        svc -t "$service_link"
    fi
    svstat "$service_link"
fi
echo "dbus-modbus-client installed in $app_dir (settings: $app_dir/config)"
