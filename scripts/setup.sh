#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian machine with Rust:
# libdbus headers, dbus-daemon and the dbus-send/gdbus clients, shellcheck, Qt 6's rcc, qmllint
# and QML modules with PyQt6 for the GUI plugin (scripts/build-gui.sh, scripts/test-gui.sh), and
# the Rust components.
# Idempotent: does nothing that is already done.
set -euo pipefail

pkgs=(pkg-config libdbus-1-dev dbus dbus-daemon libglib2.0-bin shellcheck)
# The GUI plugin: rcc (qt6-base-dev-tools), qmllint (qt6-declarative-dev-tools, with the QML
# builtins it lints against from qt6-declarative-dev), the QML modules the pages and the stubs
# import, and PyQt6 for the headless engine that loads the built plugin. Without recommends: no
# X11 or desktop pieces.
gui_pkgs=(qt6-base-dev-tools qt6-declarative-dev-tools qt6-declarative-dev qml6-module-qtqml
  qml6-module-qtqml-models qml6-module-qtqml-workerscript qml6-module-qtquick python3-pyqt6
  python3-pyqt6.qtquick)

# shellcheck source=scripts/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
apt_install -- "${pkgs[@]}"
apt_install --no-install-recommends -- "${gui_pkgs[@]}"

if command -v rustup >/dev/null 2>&1; then
  for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
