#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, every test, the GUI
# plugin's checks, the README's first command (briefly) and the armv7 release build with its qemu
# smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The workspace: the daemon, sim/ and testkit/ (fuzz/ is a workspace of its own).
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run install.sh uninstall.sh service/run service/log/run service/enable.sh
scripts/test-gui.sh

# The README's first command must stay true: it has to show both services with live values.
demo=$(DEMO_SECONDS=15 scripts/demo.sh 2>&1)
for want in "== com.victronenergy.grid." "== com.victronenergy.pvinverter." "/dynamicGenerationStatus"; do
  grep -qF "$want" <<<"$demo" || { echo "demo: '$want' not shown"; echo "$demo" | tail -40; exit 1; }
done
# A value, not the invalid "---": both services' /Ac/L1/Power in watts.
[ "$(grep -cE '^ +/Ac/L1/Power +-?[0-9]+ W$' <<<"$demo")" -ge 2 ] ||
  { echo "demo: /Ac/L1/Power without a value"; echo "$demo" | tail -40; exit 1; }
echo "demo: both services published with values"

scripts/ci-armv7.sh
