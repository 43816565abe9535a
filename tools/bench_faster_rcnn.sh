#!/usr/bin/env bash
# FPN Faster R-CNN inference: our ONNX export vs torchvision's FasterRCNN (same DetNAS backbone, FPN and
# weights) exported by torch.onnx, checked for the same detections and timed in ONNX Runtime.
#   tools/bench_faster_rcnn.sh [--input 512] [--seconds 30] [--threads 2] [--out results.json] [...]
# (every option goes to tools/bench_faster_rcnn.py). Installs PyTorch and torchvision with their full
# dependency set (about 4.6 GB, once) into .native/torch-full.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_FULL="$ROOT/.native/torch-full"
"$ROOT/tools/setup-native.sh"
"$ROOT/tools/setup-python.sh"
PIP=("$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --target "$TORCH_FULL")
if [[ ! -f "$TORCH_FULL/torch/__init__.py" ]]; then
    "${PIP[@]}" torch==2.11.0 torchvision==0.26.0
elif [[ ! -f "$TORCH_FULL/torchvision/__init__.py" ]]; then
    # torch is there (tools/bench_train_step.sh): add torchvision alone, not a second copy of torch
    "${PIP[@]}" --no-deps torchvision==0.26.0 pillow
fi
cargo build --release --quiet --bin detnas --manifest-path "$ROOT/Cargo.toml"
exec "$ROOT/.venv/bin/python" "$ROOT/tools/bench_faster_rcnn.py" "$@"
