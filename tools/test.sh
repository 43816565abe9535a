#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first (idempotent, fast when done):
# the native libraries (tools/setup-native.sh) and the Python reference tools (tools/setup-python.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tools/setup-native.sh
tools/setup-python.sh
cargo test --workspace --all-features "$@"
