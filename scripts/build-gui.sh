#!/usr/bin/env bash
# Builds the gui-v2 UI plugin from gui/: every gui/*.qml and gui/*.js compiled by Qt's resource
# compiler into one binary resource under qrc:/DynamicGeneration/, base64-encoded into a JSON
# file in the format of gui-v2's own plugin compiler (tools/gui-v2-plugin-compiler.py; see
# NOTEBOOK.md, 2026-12-06). The plugin is architecture-independent.
#
#   scripts/build-gui.sh                  writes target/gui/DynamicGeneration.json
#   OUT=path scripts/build-gui.sh         writes it there
#
# Deterministic: the same sources give the same bytes (file times are fixed before rcc stores
# them), so install.sh restarts the GUI only when the plugin really changed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

name=DynamicGeneration
# The first gui-v2 with the list-item API the pages use (ListTextField.secondaryText, v1.3.4);
# gui-v2 from v1.3.9 refuses the plugin on an older GUI instead of failing on the page.
min_gui_version=v1.3.4
rcc=${RCC:-/usr/lib/qt6/libexec/rcc}
out=${OUT:-target/gui/$name.json}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -x "$rcc" ] || { echo "build-gui: no rcc at $rcc (scripts/setup.sh installs qt6-base-dev-tools)" >&2; exit 1; }
[ -n "$version" ] || { echo "build-gui: no version in Cargo.toml" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mapfile -t sources < <(find gui -maxdepth 1 -type f \( -name '*.qml' -o -name '*.js' \) -printf '%f\n' | LC_ALL=C sort)
[ ${#sources[@]} -gt 0 ] || { echo "build-gui: no sources in gui/" >&2; exit 1; }
{
    echo "<RCC>"
    echo "<qresource prefix=\"/$name\">"
    for f in "${sources[@]}"; do
        cp "gui/$f" "$stage/$f"
        touch -d @0 "$stage/$f"
        echo "<file>$f</file>"
    done
    echo "</qresource>"
    echo "</RCC>"
} >"$stage/$name.qrc"
# zlib as gui-v2's compiler does: Debian's rcc would otherwise pick zstd.
(cd "$stage" && "$rcc" --binary --compress-algo zlib -o "$name.rcc" "$name.qrc")

mkdir -p "$(dirname "$out")"
python3 - "$stage/$name.rcc" "$out" "$name" "$version" "$min_gui_version" <<'PY'
import base64, json, sys
rcc, out, name, version, min_gui = sys.argv[1:]
with open(rcc, "rb") as f:
    resource = base64.b64encode(f.read()).decode("ascii")
plugin = {
    "name": name,
    "version": version,
    "minRequiredVersion": min_gui,
    "maxRequiredVersion": "",
    "translations": [],
    "integrations": [
        # Settings -> Integrations -> UI Plugins -> DynamicGeneration
        {"type": 1, "url": f"qrc:/{name}/PageLimiter.qml"},
        # a card in the Controls pane (cardType 1), where gui-v2 shows plugin cards
        {"type": 5, "cardType": 1, "url": f"qrc:/{name}/LimiterCard.qml"},
    ],
    "resource": resource,
}
with open(out + ".new", "w", encoding="utf-8") as f:
    json.dump(plugin, f, indent=4)
    f.write("\n")
PY
mv -f "$out.new" "$out"
echo "build-gui: $out ($(stat -c %s "$out") bytes, ${#sources[@]} files, version $version)"
