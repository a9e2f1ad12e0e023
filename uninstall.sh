#!/bin/sh
# Removes what install.sh added: the service link, the /data/rc.local line (other lines are
# kept; an rc.local left with only its shebang is removed) and /data/dbus-modbus-client,
# settings included. Gives the tty back to serial-starter.
#
#   /data/dbus-modbus-client/uninstall.sh
#   ROOT=/tmp/fake ./uninstall.sh   tests: a fake root; nothing outside it is touched or run
set -eu

ROOT=${ROOT:-}
app_dir=$ROOT/data/dbus-modbus-client
rc_local=$ROOT/data/rc.local
boot_line=/data/dbus-modbus-client/enable.sh
service_link=$ROOT/service/dbus-modbus-client

TTY=/dev/ttyUSB0
if [ -r "$app_dir/config" ]; then
    # shellcheck source=/dev/null
    . "$app_dir/config"
fi

# The link goes first, so that svscan does not start the service again.
rm -f "$service_link"
if [ -z "$ROOT" ]; then
    if [ -p "$app_dir/service/supervise/control" ]; then
        svc -dx "$app_dir/service"
    fi
    if [ -p "$app_dir/service/log/supervise/control" ]; then
        svc -dx "$app_dir/service/log"
    fi
    start_tty=/opt/victronenergy/serial-starter/start-tty.sh
    if [ -x "$start_tty" ]; then
        "$start_tty" "$(basename "$(readlink -f "$TTY")")" || true
    fi
fi

if [ -f "$rc_local" ] && grep -qxF "$boot_line" "$rc_local"; then
    # Rewritten through cat, so the file keeps its mode and owner.
    grep -vxF "$boot_line" "$rc_local" >"$rc_local.tmp" || true
    cat "$rc_local.tmp" >"$rc_local"
    rm -f "$rc_local.tmp"
    echo "removed $boot_line from $rc_local"
    if [ "$(cat "$rc_local")" = '#!/bin/bash' ]; then
        rm -f "$rc_local"
        echo "removed $rc_local (nothing else in it)"
    fi
fi

rm -rf "$app_dir"
echo "dbus-modbus-client removed"
