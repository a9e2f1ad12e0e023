#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian machine with Rust:
# libdbus headers, dbus-daemon and the dbus-send/gdbus clients, shellcheck, and the Rust components.
# Idempotent: does nothing that is already done.
set -euo pipefail

pkgs=(pkg-config libdbus-1-dev dbus dbus-daemon libglib2.0-bin shellcheck)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
