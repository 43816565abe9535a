#!/usr/bin/env bash
# The GPU check anyone can run (at most ~8 minutes on one GPU): CUDA against CPU for the same
# training steps, a training step's speed against PyTorch-Python, and ONNX Runtime's CUDA provider
# if present. Prints one summary table (Markdown) and writes the logs under OUT_DIR.
#   tools/gpu-check.sh [OUT_DIR]                   (default runs/gpu-check)
# The detnas binary: $DETNAS, else target/release/detnas. The native libraries: this checkout's
# .native/ when installed with tools/setup-native.sh --cuda, else a CUDA PyTorch installation found with
# `python -c "import torch"` (its torch/lib and nvidia/*/lib folders on LD_LIBRARY_PATH), so a
# prebuilt binary runs where there is no Rust toolchain and no network.
# Exit status: 0 every check passed, 1 a check failed, 3 no usable GPU here (nothing was run; the
# reason is printed), 2 bad usage.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-runs/gpu-check}"
[[ $# -le 1 ]] || { echo "usage: tools/gpu-check.sh [OUT_DIR]" >&2; exit 2; }
BIN="${DETNAS:-$ROOT/target/release/detnas}"
[[ -x "$BIN" ]] || { echo "gpu-check: no detnas binary at $BIN (build it, or set DETNAS)" >&2; exit 2; }
PY="${PYTHON:-python3}"
# OUT_DIR is this script's: new, empty, or written by it before (its marker file); it replaces
# only what it writes there.
if [[ -d "$OUT" && -n "$(ls -A "$OUT")" && ! -f "$OUT/.gpu-check" ]]; then
    echo "gpu-check: $OUT holds files this script did not write: choose another OUT_DIR" >&2
    exit 2
fi
mkdir -p "$OUT"
touch "$OUT/.gpu-check"

no_gpu() { echo "gpu-check: no usable GPU: $1" >&2; exit 3; }
command -v nvidia-smi > /dev/null 2>&1 || no_gpu "nvidia-smi is not installed"
GPUS="$(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader 2> /dev/null)" \
    || no_gpu "nvidia-smi lists no GPU"
[[ -n "$GPUS" ]] || no_gpu "nvidia-smi lists no GPU"

# Without this checkout's CUDA libraries (tools/setup-native.sh --cuda), a CUDA PyTorch
# installation's.
if ! grep -q onnxruntime-gpu "$ROOT/.native/installed" 2> /dev/null; then
    TORCH_DIR="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2> /dev/null)" \
        || no_gpu "neither this checkout's CUDA libraries (tools/setup-native.sh --cuda) nor a PyTorch installation"
    SITE="$(dirname "$TORCH_DIR")"
    LIBS="$TORCH_DIR/lib"
    for d in "$SITE"/nvidia/*/lib "$SITE"/nvidia/*/*/lib; do [[ -d "$d" ]] && LIBS+=":$d"; done
    export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "gpu-check: libraries from $SITE" >&2
fi
ENV_JSON="$("$BIN" env --json 2> "$OUT/env.log")" || no_gpu "detnas env failed: $(tail -1 "$OUT/env.log")"
echo "$ENV_JSON" > "$OUT/env.json"
DEVICES="$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1]).get("cuda_devices", 0))' "$ENV_JSON")"
[[ "$DEVICES" -ge 1 ]] || no_gpu "libtorch sees no CUDA device ($("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("libtorch_cuda_error") or "its CUDA library loaded")' "$ENV_JSON"))"

ROWS=()
FAILED=0
row() { ROWS+=("| $1 | $2 | $3 |"); [[ "$3" == pass* || "$3" == info* ]] || FAILED=1; }

# 1. The same training steps on CUDA and on CPU: the losses agree within 2% (float32 kernels
#    differ in summation order; cuDNN picks other algorithms).
loss_of() { # config device [--supernet] -> the first step's loss (weights and batch from the seeded CPU generator)
    "$BIN" train bench-step --config "$1" --device "$2" --steps 1 --warmup 1 --threads 4 $3 2>> "$OUT/steps.log" \
        | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["loss_first"])'
}
for case in "models/neon-trees.toml|RetinaNet|" "models/neon-trees-frcnn.toml|Faster R-CNN|" \
            "models/neon-trees-genes.toml|genes supernet|--supernet"; do
    IFS='|' read -r cfg name extra <<< "$case"
    cpu="$(loss_of "$ROOT/$cfg" cpu "$extra")" gpu="$(loss_of "$ROOT/$cfg" cuda:0 "$extra")"
    verdict="$("$PY" -c 'import sys; a,b=map(float,sys.argv[1:]); print("pass" if abs(a-b) <= 0.02*max(abs(a),1e-6) else "FAIL")' "$cpu" "$gpu" 2> /dev/null || echo FAIL)"
    row "training step, $name: first loss CUDA vs CPU" "$gpu vs $cpu" "$verdict (within 2%)"
done

# 2. A training step's speed against PyTorch-Python on the same GPU (when torch imports).
ips() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(round(d["batch"] * 1000 / d["ms_per_step_p50"], 1))'; }
ours="$("$BIN" train bench-step --config "$ROOT/models/neon-trees.toml" --device cuda:0 --steps 20 2>> "$OUT/steps.log" | ips)" || ours=""
theirs="$("$PY" "$ROOT/tools/bench_train_step.py" --config "$ROOT/models/neon-trees.toml" --device cuda --steps 20 2>> "$OUT/steps.log" | ips)" || theirs="n/a"
if [[ -n "$ours" ]]; then
    row "training step images/s (batch 4), detnas vs PyTorch" "$ours vs $theirs" "info"
else
    row "training step images/s, detnas vs PyTorch" "-" "FAIL (bench-step on cuda:0)"
fi

# 3. ONNX Runtime's CUDA provider, if this ONNX Runtime has it: the shipped model's detections on
#    CUDA match CPU's (fp32), and an fp16 export runs.
if "$PY" -c 'import json,sys; sys.exit(0 if "CUDAExecutionProvider" in json.loads(sys.argv[1]).get("onnxruntime_providers", []) else 1)' "$ENV_JSON"; then
    for dev in cpu cuda:0; do
        rm -rf "$OUT/detect-$dev"
        "$BIN" detect "$ROOT/models/neon-trees.onnx" "$ROOT/models/samples" --out "$OUT/detect-$dev" --device "$dev" --strict \
            > /dev/null 2>> "$OUT/detect.log"
    done
    same="$("$PY" - "$OUT/detect-cpu/detections.json" "$OUT/detect-cuda:0/detections.json" <<'PY' 2>> "$OUT/detect.log"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ok = len(a) == len(b) and all(abs(x["score"] - y["score"]) <= 1e-3 and max(abs(u - v) for u, v in zip(x["bbox"], y["bbox"])) <= 0.5 for x, y in zip(a, b))
print("pass" if ok else "FAIL")
PY
)" || same="FAIL"
    row "ONNX Runtime CUDA: shipped model's detections vs CPU" "$(ls "$OUT/detect-cuda:0" 2> /dev/null | wc -l) files" "${same:-FAIL} (score 1e-3, box 0.5 px)"
    "$BIN" quantize "$ROOT/models/neon-trees.onnx" --fp16 --out "$OUT/fp16.onnx" 2>> "$OUT/detect.log" \
        && "$BIN" bench "$OUT/fp16.onnx" --device cuda:0 --strict --iters 20 --json > "$OUT/fp16-bench.json" 2>> "$OUT/detect.log" \
        && row "ONNX Runtime CUDA: fp16 model runs" "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_run"]["p50_ms"], "ms")' "$OUT/fp16-bench.json")" "pass" \
        || row "ONNX Runtime CUDA: fp16 model runs" "-" "FAIL"
else
    row "ONNX Runtime CUDA provider" "absent (the CPU build)" "info"
fi

echo "GPU: $GPUS"
echo
echo "| check | result | verdict |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
exit "$FAILED"
