#!/usr/bin/env bash
# The GUI plugin's checks: builds it from gui/ (scripts/build-gui.sh, which installs the Qt tools
# through scripts/setup.sh), runs qmllint on gui/ against the gui-v2 stubs in tests/gui/stubs
# (any output fails), then tests/gui/check_plugin.py: the JSON and its resource as gui-v2 loads
# them, and the pages in a headless QML engine driven by tests/gui/tst_plugin.qml.
set -euo pipefail
cd "$(dirname "$0")/.."

plugin=target/gui/DynamicGeneration.json
OUT=$plugin scripts/build-gui.sh

qmllint=/usr/lib/qt6/bin/qmllint
lint=$("$qmllint" -I tests/gui/stubs gui/*.qml 2>&1) && status=0 || status=$?
if [ "$status" -ne 0 ] || [ -n "$lint" ]; then
    echo "$lint"
    echo "test-gui: qmllint is not clean (exit $status)" >&2
    exit 1
fi
echo "test-gui: qmllint clean ($(find gui -maxdepth 1 -name '*.qml' | wc -l) files)"

# Debian's python3: PyQt6 comes from its packages. Qt wants a private runtime directory.
runtime=$(mktemp -d)
trap 'rm -rf "$runtime"' EXIT
QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR=$runtime /usr/bin/python3 tests/gui/check_plugin.py "$plugin"
