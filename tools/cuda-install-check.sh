#!/usr/bin/env bash
# The CUDA installation, checked as far as a machine without a GPU can (docs/cuda.md):
# `tools/setup-native.sh --cuda` installs, the `cuda` feature builds, `detnas env` shows libtorch's
# CUDA library loaded, 0 devices and ONNX Runtime's CUDA provider, and `--device cuda:0` fails with
# one line in training and in `--strict` inference. Then the CPU set is put back (--keep: not).
# About 4 GB of downloads and a release build with the `cuda` feature.
#   tools/cuda-install-check.sh [--keep]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEP=0
[[ "${1:-}" == --keep ]] && KEEP=1
cd "$ROOT"
fail() { echo "cuda-install-check: FAIL: $1" >&2; exit 1; }
one_line_failure() { # what, needle, command...
    local what="$1" needle="$2"
    shift 2
    local err
    if err="$("$@" 2>&1 > /dev/null)"; then fail "$what succeeded"; fi
    [[ "$(printf '%s\n' "$err" | grep -c .)" == 1 ]] || fail "$what: not one line: $err"
    [[ "$err" == *"$needle"* ]] || fail "$what: '$needle' missing from: $err"
    echo "ok: $what fails with one line: $err"
}

tools/setup-native.sh --cuda
cargo build --release --quiet --features cuda
BIN="$ROOT/target/release/detnas"
ENV_JSON="$("$BIN" env --json)"
echo "$ENV_JSON"
python3 - "$ENV_JSON" <<'PY' || fail "detnas env"
import json, sys
e = json.loads(sys.argv[1])
assert e["libtorch_cuda_loaded"] is True, e.get("libtorch_cuda_error")
assert e["cuda_devices"] == 0, e["cuda_devices"]
assert "CUDAExecutionProvider" in e["onnxruntime_providers"], e["onnxruntime_providers"]
print("ok: libtorch's CUDA library loaded, 0 devices, providers", e["onnxruntime_providers"])
PY
one_line_failure "train bench-step --device cuda:0" "0 CUDA device" \
    "$BIN" train bench-step --config models/neon-trees.toml --device cuda:0
OUT="$(mktemp -d)"
one_line_failure "detect --device cuda:0 --strict" "cuda:0" \
    "$BIN" detect models/neon-trees.onnx models/samples --out "$OUT/out" --device cuda:0 --strict
rm -rf "$OUT"
if [[ "$KEEP" == 0 ]]; then
    tools/setup-native.sh --cpu
    cargo build --release --quiet
fi
echo "cuda-install-check: passed"
