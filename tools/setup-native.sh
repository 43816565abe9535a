#!/usr/bin/env bash
# Installs the native libraries detnas links against into .native/ (git-ignored):
#   .native/python/torch                          libtorch 2.11.0 (PyPI wheel, CPU + CUDA 13 runtime)
#   .native/python/onnxruntime/capi/libonnxruntime.so.1.31.1
# Idempotent: returns at once when the pinned versions are already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.native/python"
STAMP="$ROOT/.native/installed"
TORCH_VERSION="2.11.0"
ORT_VERSION="1.31.1"
WANT="torch==$TORCH_VERSION nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 onnxruntime==$ORT_VERSION"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" \
      && -f "$DEST/torch/lib/libtorch_cpu.so" \
      && -f "$DEST/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" ]]; then
    exit 0
fi

PY="${PYTHON:-python3}"
echo "detnas: installing native libraries ($WANT) into $DEST" >&2
rm -rf "$DEST.tmp"
# shellcheck disable=SC2086
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$DEST.tmp" $WANT
# torch-sys checks this file against the version it was written for: a mismatch becomes a clear error.
echo "$TORCH_VERSION" > "$DEST.tmp/torch/build-version"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$WANT" > "$STAMP"
echo "detnas: native libraries ready" >&2
