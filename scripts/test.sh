#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
shellcheck scripts/*.sh .ci/run
