#!/usr/bin/env bash
# Runs the detnas command line (release build), installing the native libraries first if needed.
#   tools/detnas.sh tour
#   tools/detnas.sh arch info --arch coco-fpn-300m
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/tools/setup-native.sh"
exec cargo run --manifest-path "$ROOT/Cargo.toml" --release --quiet --bin detnas -- "$@"
