#!/bin/sh
# Installs dbus-modbus-client on a Venus OS GX device. Everything goes under /data, the only
# place that survives firmware updates; /data/rc.local re-creates the /service link at boot.
# On Venus OS v3.80 and later it also installs and enables the gui-v2 plugin (the limiter's
# settings page and Controls card) as an app under /data/apps, and restarts the GUI when the
# plugin changed.
# Idempotent: run it again after copying in a new binary; a second run changes nothing.
#
#   ./install.sh                    on the GX, as root, from the unpacked release directory
#   BIN=path/to/binary ./install.sh another binary than ./dbus-modbus-client
#   GUI_PLUGIN=path ./install.sh    another plugin than ./gui-v2/DynamicGeneration.json
#   ROOT=/tmp/fake ./install.sh     tests: a fake root; nothing outside it is touched, and the
#                                   only command run is svc -t $ROOT/service/start-gui when the
#                                   plugin changed and that directory exists
set -eu

ROOT=${ROOT:-}
src_dir=$(cd -P "$(dirname "$0")" && pwd)
BIN=${BIN:-$src_dir/dbus-modbus-client}
GUI_PLUGIN=${GUI_PLUGIN:-$src_dir/gui-v2/DynamicGeneration.json}
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

# The gui-v2 plugin (NOTEBOOK.md, 2026-12-06): gui-v2 loads the JSON files in the gui-v2/
# directory of every app linked from /data/apps/enabled to /data/apps/available.
plugin_name=DynamicGeneration
plugin_app=$ROOT/data/apps/available/$plugin_name
plugin_json=$plugin_app/gui-v2/$plugin_name.json
plugin_link=$ROOT/data/apps/enabled/$plugin_name
version_file=$ROOT/opt/victronenergy/version

# The Venus OS version, e.g. v3.80, v3.80~12 (a beta), v3.80-large-5; empty if unknown.
venus_version=$(head -n 1 "$version_file" 2>/dev/null || true)

# Plugins need Venus OS v3.80 or later: its gui-v2 (v1.3.x) has the list items the page uses;
# v3.7x's gui-v2 (v1.2.x) loads plugins too but with an older text-field API, and the betas
# of v3.80 began with that API. Betas of v3.80 itself (v3.80~N) are therefore left out.
gui_plugins_supported() {
    # v<major>.<minor>[~<beta>][-<suffix>] gives "major minor [beta]": word splitting wanted.
    # shellcheck disable=SC2046
    set -- $(echo "$venus_version" |
        sed -n 's/^v\([0-9][0-9]*\)\.\([0-9][0-9]*\)\(~\([0-9][0-9]*\)\)\{0,1\}\(-.*\)\{0,1\}$/\1 \2 \4/p')
    [ $# -ge 2 ] || return 1
    if [ "$1" -ne 3 ]; then
        [ "$1" -gt 3 ]
        return
    fi
    if [ "$2" -ne 80 ]; then
        [ "$2" -gt 80 ]
        return
    fi
    # v3.80 itself, not one of its betas.
    [ $# -eq 2 ]
}

remove_gui_plugin() {
    if [ -L "$plugin_link" ]; then
        rm -f "$plugin_link"
        changed=1
    fi
    if [ -e "$plugin_app" ]; then
        rm -rf "$plugin_app"
        changed=1
    fi
}

changed=
if ! gui_plugins_supported; then
    reason="Venus OS ${venus_version:-of unknown version} has no gui-v2 UI plugins (v3.80 and later); the README lists the settings' MQTT and dbus paths"
    if [ -e "$plugin_app" ] || [ -L "$plugin_link" ]; then
        remove_gui_plugin
        echo "GUI plugin: removed: $reason"
    else
        echo "GUI plugin: not installed: $reason"
    fi
elif [ ! -f "$GUI_PLUGIN" ]; then
    echo "GUI plugin: not installed: none at $GUI_PLUGIN (scripts/build-gui.sh builds it)"
else
    mkdir -p "$plugin_app/gui-v2" "$ROOT/data/apps/enabled"
    chmod 755 "$plugin_app" "$plugin_app/gui-v2"
    install_file "$GUI_PLUGIN" "$plugin_json" 644
    if [ "$(readlink "$plugin_link" 2>/dev/null || true)" != "$plugin_app" ]; then
        if [ -e "$plugin_link" ] && [ ! -L "$plugin_link" ]; then
            fail "$plugin_link is not a link: move it away and run install.sh again"
        fi
        rm -f "$plugin_link"
        ln -s "$plugin_app" "$plugin_link"
        changed=1
        echo "enabled $plugin_link"
    fi
    echo "GUI plugin installed: Settings -> Integrations -> UI Plugins -> $plugin_name"
fi
# gui-v2 reads its plugins when it starts. Under ROOT the svc on PATH is the tests' recorder.
if [ -n "$changed" ] && [ -d "$ROOT/service/start-gui" ]; then
    svc -t "$ROOT/service/start-gui" || echo "install.sh: warning: could not restart the GUI" >&2
    echo "restarted the GUI"
fi
