#!/usr/bin/env bash
# CI entry for the GX build: the armv7 release build (installing what it needs) and its smoke
# test under qemu-user. Prints each step's wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
scripts/build-armv7.sh
t1=$(date +%s)
scripts/smoke-armv7.sh
t2=$(date +%s)
echo "ci-armv7: build $((t1 - t0)) s, smoke $((t2 - t1)) s, total $((t2 - t0)) s"
