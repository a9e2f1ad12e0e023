#!/bin/sh
# Activates the installed service: called by install.sh and, at every boot, by /data/rc.local
# (/service is a tmpfs rebuilt at boot, so the link must be made again each time).
# ROOT (tests only) prefixes every path and skips everything that touches the running system.
set -eu

ROOT=${ROOT:-}
app_dir=$ROOT/data/dbus-modbus-client
link=$ROOT/service/dbus-modbus-client

TTY=/dev/ttyUSB0
if [ -r "$app_dir/config" ]; then
    # The config is the user's (service/config.example is its template).
    # shellcheck source=/dev/null
    . "$app_dir/config"
fi

if [ -z "$ROOT" ]; then
    # Keep serial-starter from probing our port with other drivers (the original driver's way).
    stop_tty=/opt/victronenergy/serial-starter/stop-tty.sh
    if [ -x "$stop_tty" ]; then
        "$stop_tty" "$(basename "$(readlink -f "$TTY")")" || true
    fi
fi

if [ "$(readlink "$link" 2>/dev/null || true)" != "$app_dir/service" ]; then
    rm -f "$link"
    ln -s "$app_dir/service" "$link"
fi
