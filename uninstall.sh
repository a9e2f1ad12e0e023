#!/bin/sh
# Removes what install.sh added: the service link, the /data/rc.local line (other lines are
# kept; an rc.local left with only its shebang is removed), /data/dbus-modbus-client, settings
# included, and the gui-v2 plugin's app under /data/apps (restarting the GUI if there was one).
# Gives the tty back to serial-starter.
#
#   /data/dbus-modbus-client/uninstall.sh
#   ROOT=/tmp/fake ./uninstall.sh   tests: a fake root; nothing outside it is touched, and the
#                                   only command run is svc -t $ROOT/service/start-gui when a
#                                   plugin was removed and that directory exists
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

# The gui-v2 plugin, as install.sh lays it out. /data/apps/available and /data/apps/enabled are
# shared with other apps and stay.
plugin_app=$ROOT/data/apps/available/DynamicGeneration
plugin_link=$ROOT/data/apps/enabled/DynamicGeneration
if [ -L "$plugin_link" ] || [ -e "$plugin_app" ]; then
    rm -f "$plugin_link"
    rm -rf "$plugin_app"
    echo "GUI plugin removed"
    if [ -d "$ROOT/service/start-gui" ]; then
        svc -t "$ROOT/service/start-gui" || echo "uninstall.sh: warning: could not restart the GUI" >&2
        echo "restarted the GUI"
    fi
fi
