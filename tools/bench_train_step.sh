#!/usr/bin/env bash
# Training step time: detnas (tch) vs PyTorch-Python on the same network, batch and thread count.
#   tools/bench_train_step.sh [--config models/neon-trees.toml] [--threads 2] [--supernet]
# Installs PyTorch with its full dependency set (about 4.6 GB, once) into .native/torch-full.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="$ROOT/models/neon-trees.toml" THREADS=2 SUPER=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) CONFIG="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --supernet) SUPER="--supernet"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
"$ROOT/tools/setup-native.sh"
"$ROOT/tools/setup-python.sh"
if [[ ! -f "$ROOT/.native/torch-full/torch/__init__.py" ]]; then
    "$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --target "$ROOT/.native/torch-full" torch==2.11.0
fi
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
for i in 1 2; do
    "$ROOT/target/release/detnas" train bench-step --config "$CONFIG" --threads "$THREADS" $SUPER --steps 15
    "$ROOT/.venv/bin/python" "$ROOT/tools/bench_train_step.py" --config "$CONFIG" --threads "$THREADS" $SUPER --steps 15
done
