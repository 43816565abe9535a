#!/usr/bin/env bash
# Throughput of `detnas detect` vs the Python pipeline (tools/python_pipeline.py) on the same folder
# of 200 generated 1280x720 JPEGs, same model, same thread count. Prints both and the ratio.
#   tools/bench_cli_vs_python.sh [--head-conv dense|separable | --model M.onnx] [--threads N] [--workers N] [--count N]
# (default model: coco-retinanet-300m at 512x512 with random weights; --model: an exported model,
# e.g. the shipped models/neon-trees.onnx)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HEAD=separable THREADS=2 COUNT=200 WORKERS=2 MODEL=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --head-conv) HEAD="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --count) COUNT="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --model) MODEL="$(realpath "$2")"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
"$ROOT/tools/setup-native.sh"
"$ROOT/tools/setup-python.sh"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/detnas"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$ROOT/.venv/bin/python" - "$WORK/images" "$COUNT" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
for i in range(n):
    Image.fromarray(np.roll(base, i * 7, axis=1)).save(f"{out}/img{i:04d}.jpg", quality=90)
PY
if [[ -n "$MODEL" ]]; then
    cp "$MODEL" "$WORK/model.onnx"
    echo "model: $MODEL; $COUNT images; $THREADS threads ($WORKERS detnas workers)"
else
    "$BIN" export --arch coco-retinanet-300m --head-conv "$HEAD" --out "$WORK/model.onnx" 2>/dev/null
    echo "model: coco-retinanet-300m, 512x512, $HEAD head; $COUNT images; $THREADS threads ($WORKERS detnas workers)"
fi
S=$(date +%s.%N)
"$BIN" detect "$WORK/model.onnx" "$WORK/images" --out "$WORK/out" --exist-ok --threads "$THREADS" --workers "$WORKERS" | tail -1
E=$(date +%s.%N)
RUST=$(echo "$COUNT / ($E - $S)" | bc -l)
PYJSON=$("$ROOT/.venv/bin/python" "$ROOT/tools/python_pipeline.py" "$WORK/model.onnx" "$WORK/images" "$WORK/py.json" --threads "$THREADS")
PY=$(echo "$PYJSON" | "$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
printf 'detnas detect: %.2f images/s (whole process)\npython pipeline: %.2f images/s (loop only)\nratio: %.2fx\n' "$RUST" "$PY" "$(echo "$RUST / $PY" | bc -l)"
